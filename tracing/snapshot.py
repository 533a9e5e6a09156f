"""What every greenlet of the hub is doing now: the live table (tokio-console's).

    snap = tracing.snapshot()        # call in the hub's thread, as often as every 250 ms
    print(snap)                      # the table, then the loop's own rows
    for row in snap.rows: ...        # one Row per greenlet (see Row for the columns)
    snap.loop                        # LoopStats: poll time, callbacks per pass, loop lag

A row, column by column (:class:`Row`):

    id          id() of the greenlet (CPython reuses ids once a greenlet is freed)
    name        its name ("Greenlet-12", the function of a raw greenlet)
    state       "running" (the caller), "ready" (queued in the hub, not running
                yet), "parked" (waiting for something), "dead" (exited since
                the previous snapshot: shown once, then dropped)
    waits_on    what a parked greenlet waits on, in plain words: "fd 7 read",
                "Event", "Queue.get", "timer 0.3 s", "join Greenlet-12",
                "Semaphore", "threading.Lock" (once patched), "not started";
                "" unless parked
    where       the user's line it is at: "In[5], line 3 in worker" or
                "server.py:40 in handle" ("" if it has not started)
    spawn_site  the user's line that spawned it ("In[3], line 2", "app.py:12"),
                "" if it was spawned while nothing recorded
    cell        the execution count of the notebook cell that spawned it, or None
    parent      the name of the greenlet that spawned it ("" if unknown)
    switches    how many times it was switched into (resumes), since recorded
    busy        seconds it ran
    scheduled   seconds it was ready but not running (a lower bound: see below)
    idle        seconds it was parked (including the park going on now)
    greenlet    the object itself (not shown; None in Trace.snapshot_at rows)

The time columns need a recording: a :class:`~tracing.recorder.Recorder`
must be running (``%load_ext labkit`` runs one in the background, and so do
``tracing.start()``, ``%%trace`` and a Dashboard). Without one they are 0 and
``snap.loop.recording`` is False; the other columns are read from the live
objects and are always there. Each snapshot brings the recorder's
:class:`~tracing.ledger.Ledger` up to date -- it reads only the records
written since the previous one and keeps running totals -- so its cost is
the number of greenlets plus the number of new records, not the length of
the run. A
small ring (the background recorder's) can overwrite records between two
snapshots: ``snap.loop.lost_records`` counts them, and the times miss them.

How the time is split. A greenlet is *busy* from its resume record to the
next record that hands the thread on. Between two of its slices it is off
the CPU; that gap is *scheduled* when it was ready to run and *idle* when it
was waiting. The ring records resumes, not wake-ups, so "ready since" is
known exactly only for a ``sleep(0)`` (ready the whole gap); for any other
wake-up it is bounded below by the start of the hub's pass (or the end of
the poll) that resumed it -- callbacks queued before that pass ran in it.

Cost: while recording, a greenlet that has not run since the previous
snapshot and is still parked (the ledger's ``touched`` set says who ran)
gets its previous row with the idle time moved on: a dict lookup, a float
addition and a tuple. Others are looked at again, but a greenlet parked on
the same frame and instruction reuses the words read before (``waits_on``,
``where``; cached by the frame's id, never the frame, which would keep the
greenlet alive through its locals). The collector is paused while the rows
are built. ``python -m labkit bench --only snapshot_10k`` measures a quiet
hub of 10,000 parked greenlets (the issue's target: < 20 ms; ~7 ms of CPU
on the 2-core CI machine). The cost of reading the ring grows with the
records written since the previous snapshot (~0.3 us each under load;
tracing/ledger.py). A live view passes ``between`` (see :func:`snapshot`):
the snapshot is then read in pieces of ~:data:`PIECE_NS`, the loop
running between them.

Who finds the greenlets: with a recorder running, the greenlets spawned
since it started come from its spawn table (``recorder.spawns``), and the
ones from before from one look at the hub's referrers (``gc.get_referrers``:
a greenlet refers to its parent), kept as weak references. Without a
recorder every snapshot looks again (O(heap), a few ms per 100,000 objects).
A greenlet renamed while it stays parked shows its new name once it runs.

Contract: call :func:`snapshot` from the hub's thread (frames of another
thread's greenlets change under the reader), outside a hub callback or
inside one -- it never switches.
"""
from __future__ import annotations

import gc
import operator
import os
import threading
import weakref
from dataclasses import dataclass

from greenlet import getcurrent, greenlet as _raw_greenlet

#: the greenlet's own "finished" (labkit's Greenlet.dead is a Python property)
_raw_dead = _raw_greenlet.dead.__get__

import labkit.hub as _lk_hub
# (the name column's "Greenlet-<minimal_ident>" needs it, and the hub
# imports it on first use: here, not in a console's first refresh (~0.7 ms))
import labkit._ident  # noqa: F401
from labkit._frame_locals import local
from labkit._longlived import LongLivedDict
from labkit._loop import lib
from labkit._park import waiting_on
from labkit.util import greenlet_name

from tracing import recorder as _recorder_module
from tracing.introspect import INTERNAL_DIRS, ipython_shell, cell_location
from tracing import pace as _pace
from tracing.ledger import Account, ledger_for
from tracing.pace import Pace   # (its home is tracing.pace; kept importable from here)

# An account's fields (tracing.ledger.Account: a tuple)
_SWITCHES, _BUSY, _SCHEDULED, _IDLE, _OUT = (Account.SWITCHES, Account.BUSY, Account.SCHEDULED,
                                             Account.IDLE, Account.OUT)

__all__ = ["snapshot", "snapshot_at", "track", "Snapshot", "Row", "LoopStats", "Pace",
           "PIECE_NS"]

# -- the rows ---------------------------------------------------------------------

_COLUMNS = ("id", "name", "state", "waits_on", "where", "spawn_site", "cell", "parent",
            "switches", "busy", "scheduled", "idle")


class Row(tuple):
    """One greenlet in a :class:`Snapshot`: an immutable named tuple of the
    columns described in the module docstring, plus ``greenlet`` (the
    object, or None). A tuple because ten thousand are made per snapshot:
    building one costs a tuple, not a Python ``__init__``."""

    __slots__ = ()
    _fields = _COLUMNS + ("greenlet",)

    def __new__(cls, id, name, state, waits_on="", where="", spawn_site="", cell=None,
                parent="", switches=0, busy=0.0, scheduled=0.0, idle=0.0, greenlet=None):
        return tuple.__new__(cls, (id, name, state, waits_on, where, spawn_site, cell, parent,
                                   switches, busy, scheduled, idle, greenlet))

    def as_dict(self) -> dict:
        """The columns as a plain dict (no ``greenlet``): for JSON, widgets."""
        return dict(zip(_COLUMNS, self))

    def replace(self, **changes) -> "Row":
        """A copy with some columns changed."""
        values = dict(zip(self._fields, self))
        values.update(changes)
        return Row(**values)

    def __eq__(self, other):
        if not isinstance(other, Row):
            return NotImplemented
        return tuple.__eq__(self[:12], other[:12])

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(_COLUMNS, self))
        return f"Row({fields})"


for _index, _name in enumerate(Row._fields):
    setattr(Row, _name, property(operator.itemgetter(_index), doc=f"column {_name!r}"))
del _index, _name
#: Row(...) without the keyword handling: tuple.__new__(Row, (13 values))
_new_row = tuple.__new__


@dataclass
class LoopStats:
    """The loop's own rows. ``window`` figures cover the time since the
    previous snapshot of the same recorder (the whole recording for the
    first one); counts of now are read from the hub."""
    recording: bool = False     #: a recorder was running (else the figures below are 0)
    window: float = 0.0         #: seconds the window figures cover
    polls: int = 0              #: poll calls completed in the window
    poll_time: float = 0.0      #: seconds spent waiting in poll in the window
    passes: int = 0             #: hub passes over the ready callbacks in the window
    callbacks_per_pass: float = 0.0  #: mean ready callbacks a pass ran
    lag_max: float = 0.0        #: longest time between leaving poll and entering it again
    lag_mean: float = 0.0       #: the mean of the same (the loop's latency to new I/O)
    ready: int = 0              #: callbacks queued now
    timers: int = 0             #: active timers now
    fd_waits: int = 0           #: fds watched now
    lost_records: int = 0       #: records overwritten before this snapshot read them
    live: bool = True           #: of a live hub (False: Trace.snapshot_at, no counts of now)

    def rows(self) -> list[tuple[str, str]]:
        """(name, value) pairs, as the table prints them."""
        if not self.recording:
            rec = [("recording", "off (start one for the time columns)")]
        else:
            rec = [("window", f"{self.window:.3f} s"),
                   ("poll time", f"{_ms(self.poll_time)} in {self.polls} polls"),
                   ("callbacks per pass", f"{self.callbacks_per_pass:.1f} ({self.passes} passes)"),
                   ("loop lag", f"max {_ms(self.lag_max)}, mean {_ms(self.lag_mean)}")]
            if self.lost_records:
                rec.append(("lost records", str(self.lost_records)))
        if not self.live:
            return rec
        return rec + [("queued now", f"{self.ready} callbacks, {self.timers} timers, "
                                     f"{self.fd_waits} fd waits")]


@dataclass
class Snapshot:
    """The table at one instant: ``rows`` (one :class:`Row` per greenlet,
    in spawn order where known) and ``loop`` (:class:`LoopStats`).
    ``time`` is the loop clock (seconds, CLOCK_MONOTONIC) when it began.
    ``changed``: ids of rows whose greenlet ran, or was spawned or exited,
    while a snapshot taken in pieces (``between``) let the hub run: their
    row was read before that, or partly after, and may be out of date
    (empty for a snapshot in one piece)."""
    time: float
    rows: list
    loop: LoopStats
    changed: frozenset = frozenset()

    def row(self, name_or_id) -> Row | None:
        """The row of the greenlet with this name (the first) or id."""
        for row in self.rows:
            if row.id == name_or_id or row.name == name_or_id:
                return row
        return None

    def format(self, limit: int | None = 200) -> str:
        """The table as text: one line per greenlet, then the loop rows."""
        header = (f"{'name':<22} {'state':<8} {'waits on':<22} {'busy':>8} {'sched':>8} "
                  f"{'idle':>8} {'sw':>6}  {'where':<28} spawned at")
        lines = [header]
        rows = self.rows if limit is None else self.rows[:limit]
        for r in rows:
            spawned = r.spawn_site + (f" by {r.parent}" if r.parent else "")
            lines.append(f"{r.name[:22]:<22} {r.state:<8} {r.waits_on[:22]:<22} "
                         f"{_ms(r.busy):>8} {_ms(r.scheduled):>8} {_ms(r.idle):>8} "
                         f"{r.switches:>6}  {r.where[:28]:<28} {spawned}".rstrip())
        if limit is not None and len(self.rows) > limit:
            lines.append(f"... and {len(self.rows) - limit} more")
        if not self.rows:
            lines.append("no greenlets alive")
        lines.append("")
        lines.extend(f"loop: {name:<19} {value}" for name, value in self.loop.rows())
        return "\n".join(lines)

    __str__ = format


def _ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# -- who is alive: the registry ----------------------------------------------------

class _Registry:
    """The hub's greenlets as weak references: seeded by one scan of the
    collector's objects, then extended from the recorder's spawn table."""

    def __init__(self, hub, recorder):
        self.hub_ref = weakref.ref(hub)   # (weak: the registry is kept per hub)
        self.recorder = recorder
        # (an entry per greenlet in each map: see labkit._longlived)
        self.known: dict[int, weakref.ref] = LongLivedDict()   # id -> weakref, spawn order
        self.spawn_info: dict[int, object] = LongLivedDict()   # id -> the recorder's SpawnInfo
        self.spawns_read = 0
        self.exited_unseen: list = []             # SpawnInfo of greenlets gone before a look
        #: id -> (id(frame), lasti, waits_on, where, state, code)
        self.frames: dict[int, tuple] = LongLivedDict()
        self.static: dict[int, tuple] = LongLivedDict()   # id -> (spawn_site, cell, parent)
        #: id -> (row columns but idle, idle - now in s)
        self.parked: dict[int, tuple] = LongLivedDict()
        self.busy = False      # a snapshot in pieces is under way (it yields)
                                                  # of a greenlet parked at the last look
        # A greenlet refers to its parent: the hub's referrers hold its
        # children (one pass of the collector's C traversal, no list of the
        # whole heap).
        for obj in gc.get_referrers(hub):
            if isinstance(obj, _raw_greenlet) and obj.parent is hub and obj is not hub \
                    and not obj.dead:
                self.known[id(obj)] = weakref.ref(obj)

    def refresh(self, pace=None) -> None:
        """Add the greenlets spawned since the last refresh (the recorder's
        spawn table). ``pace``: called every :data:`_SPAWNS_PER_LOOK`
        entries (a thousand spawns since the last look take ~0.5 ms);
        the table is read again after it, as the hub may have spawned
        more, or (a bounded recorder) dropped old entries."""
        if self.recorder is None:
            return
        hub = self.hub_ref()
        while True:
            # Spawn indices are absolute; a bounded recorder drops old
            # entries from the front of its list (spawn_base counts them).
            spawns = self.recorder.spawns
            base = getattr(self.recorder, "spawn_base", 0)
            start = max(self.spawns_read, base) - base
            end = len(spawns)
            if pace is not None:
                end = min(end, start + _SPAWNS_PER_LOOK)
            for index in range(start, end):
                info = spawns[index]
                g = info.ref
                if g is not None and g.parent is hub:
                    self.known.pop(info.gid, None)     # a reused id: the new one goes last
                    self.known[info.gid] = weakref.ref(g)
                    self.spawn_info[info.gid] = info
                elif g is None and info.exit is not None:
                    self.exited_unseen.append(info)
            self.spawns_read = base + end
            if pace is None or end >= len(spawns):
                return
            pace()

    def greenlets(self):
        """(id, greenlet) of the known greenlets still referenced, in order."""
        dead_refs = []
        for gid, ref in self.known.items():
            g = ref()
            if g is None:
                dead_refs.append(gid)
            else:
                yield gid, g
        for gid in dead_refs:
            self._forget(gid)

    def _forget(self, gid: int) -> None:
        self.known.pop(gid, None)
        self.spawn_info.pop(gid, None)
        self.frames.pop(gid, None)
        self.static.pop(gid, None)
        self.parked.pop(gid, None)


#: hub -> its registry, while a recorder runs (without one, each snapshot
#: looks again and keeps nothing)
_registries: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def track(hub=None) -> None:
    """Find ``hub``'s live greenlets now, for the recording that runs (if
    any), so that its first snapshot does not have to.

    A snapshot knows the greenlets spawned while a recording runs from the
    recorder's spawn table; those spawned before it started are found once,
    by a search of the collector's objects (``gc.get_referrers(hub)``). That
    search is one C call, O(heap) -- ~2.6 ms for 35,000 objects on this
    2-core VM, and it grows with the program -- and cannot be cut into
    pieces, so a console's first refresh would hold the loop for all of it.
    A recording started for a console calls this right after it starts
    (:class:`tracing.frames.BackgroundRecording`): with ``LABKIT_CONSOLE=1``
    that is at ``import labkit``, when the heap is small and no greenlet is
    alive yet. Call from the hub's thread; without a recording of this hub,
    nothing to keep, and nothing is done.

    It also makes, empty, the other maps a first snapshot fills with an
    entry per greenlet -- the recorder's ledger, the hub's numbering of its
    greenlets -- so that they are old by then, as the registry's are (see
    labkit._longlived: the collector's younger generations are not walked
    for their 10,000 entries)."""
    hub = hub if hub is not None else _lk_hub.get_hub()
    recorder = _recorder_module.active()
    if recorder is not None and recorder.ring is not None and recorder.hub is hub:
        _registry_for(hub, recorder)
        ledger_for(recorder)
        hub.ident_registry  # noqa: B018 (made now, empty)


#: Spawn-table entries a paced refresh of the registry reads between two
#: calls of its pace (~0.5 us each; ~2.5 us in a console's first refresh
#: of 10,000 greenlets, each entry's memory touched for the first time).
_SPAWNS_PER_LOOK = 128


def _registry_for(hub, recorder, pace=None) -> _Registry:
    if recorder is None:
        _registries.pop(hub, None)
        reg = _Registry(hub, None)
    else:
        reg = _registries.get(hub)
        if reg is None or reg.recorder is not recorder:
            reg = _registries[hub] = _Registry(hub, recorder)
        reg.refresh(pace)
    return reg


# -- the snapshot ------------------------------------------------------------------

#: The most work (ns) a snapshot in pieces does between two calls of its
#: ``between``, give or take one step (a few greenlets' rows, a batch of records).
#: (Read at each call: set it to change the pieces.)
PIECE_NS = _pace.PIECE_NS
#: Rows read between two looks at the clock in a snapshot in pieces (a
#: row read afresh costs ~13 us: 16 keep a piece within ~0.2 ms of PIECE_NS).
_ROWS_PER_LOOK = 16
#: A row whose frames are read afresh (~13 us, against ~1 us for a parked
#: row reused from the last snapshot) counts as this many towards the next
#: look: a first snapshot of many greenlets, all of them fresh, looks at the
#: clock about as often in time as a later one.
_FRESH_ROW_LOOKS = 4


def snapshot(hub=None, *, between=None) -> Snapshot:
    """The table of the hub's greenlets now. See the module docstring for
    the columns and the contract (call from the hub's thread).

    ``between``: called whenever :data:`PIECE_NS` of work has passed --
    ``labkit.sleep(0)`` in a greenlet lets the loop run in between, so a
    snapshot of a thousand greenlets (or of a ring full of new records)
    never holds the loop for more than about that long (the console's
    refresh, the attach). The rows are then read in pieces: each at the
    moment of its piece, and those whose greenlet ran, was spawned or
    exited meanwhile are listed in ``Snapshot.changed`` (which needs a
    recording: without one nothing says who ran, and it stays empty). Greenlets spawned
    after the snapshot began are not in it. Without ``between`` the
    snapshot is one piece and never switches."""
    hub = hub if hub is not None else _lk_hub.get_hub()
    if not isinstance(hub, _lk_hub.Hub):
        raise TypeError(f"hub must be a labkit Hub, not {type(hub).__name__}")
    if between is not None and not callable(between):
        raise TypeError(f"between must be callable, not {type(between).__name__}")
    if hub.loop.closed:
        raise RuntimeError("the hub's loop is closed")
    # A snapshot allocates a row (a tuple) per greenlet and frees nothing:
    # the collector would run a young-generation pass every 700 of them,
    # which doubled the time of a snapshot of 10,000. It runs after (and
    # while the snapshot lets the hub run).
    collecting = gc.isenabled()
    pace = Pace(between, PIECE_NS, gc_off=collecting) if between is not None else None
    gc.disable()
    try:
        return _snapshot(hub, pace)
    finally:
        if collecting:
            gc.enable()


def _snapshot(hub, pace=None) -> Snapshot:
    now_ns = lib.lk_now_ns()
    recorder = _recorder_module.active()
    if recorder is not None and (recorder.ring is None or recorder._hub is not hub):
        recorder = None
    ledger = None
    if recorder is not None:
        ledger = ledger_for(recorder)
        ledger.update(pace)
        reg = _registry_for(hub, recorder, pace)
        if pace is not None and (recorder.ring is None or _recorder_module.active()
                                 is not recorder):
            # it stopped while the hub ran: a snapshot without the time columns
            return _snapshot(hub, None)
        now_ns = lib.lk_now_ns()
    else:
        reg = _registry_for(hub, None)
    # Another snapshot in pieces of this hub is under way (this one runs
    # while it yields): leave the registry's row cache and the ledger's
    # touched set to it.
    nested = reg.busy
    reg.busy = reg.busy or pace is not None
    try:
        return _rows(hub, reg, recorder, ledger, now_ns, pace, nested)
    finally:
        if not nested:
            reg.busy = False


def _rows(hub, reg, recorder, ledger, now_ns, pace, nested) -> Snapshot:
    current = getcurrent()
    ready = _ready_ids(hub)
    accounts = ledger.accounts if ledger is not None else {}
    idents = hub.ident_registry    # (whose weak references the registry keeps: see below)
    # Greenlets that have not run since the previous snapshot, are still
    # parked and not queued to run: their row is the previous one with the
    # idle time moved on (a tuple slice, no frame walk). Needs a recording:
    # without one, nothing says who ran.
    touched = ledger.take_touched() if ledger is not None and not nested else None
    previous = reg.parked if touched is not None else {}
    now_s = start_s = now_ns / 1e9
    rows = []
    append = rows.append
    frames, static = reg.frames, reg.static
    gone, collected = [], []
    # Paced, a copy: the hub may spawn while this yields. A copy of the
    # dict, not a list of its items: ~20 us at 10,000, where the list's
    # 10,000 tuples took ~0.4 ms to make and ~0.2-0.7 ms to free after the
    # last piece. (The copy is let go in pieces too: 0.12-0.34 ms at once.)
    copied = reg.known.copy() if pace is not None else None
    known = copied.items() if copied is not None else reg.known.items()
    if copied is not None:
        # (previous is a throwaway {} when this snapshot keeps no row cache)
        _grow_ahead((frames, static, previous) if previous is reg.parked
                    else (frames, static), copied, pace)
    look = 0
    for gid, ref in known:
        if pace is not None:
            look += 1
            if look >= _ROWS_PER_LOOK:
                look = 0
                cuts = pace.cuts
                pace()
                if pace.cuts != cuts:   # the hub ran: read what changes again
                    current = getcurrent()
                    ready = _ready_ids(hub)
                    now_ns = lib.lk_now_ns()
                    now_s = now_ns / 1e9
        g = ref()
        if g is None:
            collected.append(gid)
            continue
        entry = previous.get(gid)
        if entry is not None and gid not in touched and gid not in ready:
            # its columns but idle, then idle's base: idle = base + now (seconds)
            append(_new_row(Row, entry[:11] + (entry[11] + now_s, g)))
            continue
        waits = where = ""
        if _raw_dead(g):
            gone.append(gid)
            state = "dead"
        else:
            state = ("running" if g is current else "ready" if gid in ready else "parked")
            frame = g.gr_frame
            cached = frames.get(gid)
            # (The frame's id, not the frame: a frame refers to its locals,
            # and a parked greenlet nothing else refers to must stay
            # collectable. Same id, code and instruction: the same wait.)
            if cached is not None and frame is not None and cached[0] == id(frame) \
                    and cached[1] == frame.f_lasti and cached[5] is frame.f_code \
                    and cached[4] == state:
                waits, where = cached[2], cached[3]
            else:
                look += _FRESH_ROW_LOOKS - 1
                waits, where = _words(g, frame, state)
                if frame is not None:
                    frames[gid] = (id(frame), frame.f_lasti, waits, where, state, frame.f_code)
        fixed = static.get(gid)
        if fixed is None:
            fixed = static[gid] = _spawn_columns(reg.spawn_info.get(gid), recorder)
        name = greenlet_name(g)
        if type(ref) is weakref.ref:
            # Named by its number just now (or before): the reference that
            # holds the number is a weak reference to it too, kept as long.
            # One long-lived object per greenlet instead of two (each one
            # the collector tracks, towards the full collection that
            # enough of them set off).
            numbered = idents.ref_of(g)
            if numbered is not None:
                reg.known[gid] = numbered
        acc = accounts.get(gid)
        if acc is None:
            row = (gid, name, state, waits, where, fixed[0], fixed[1], fixed[2],
                   0, 0.0, 0.0, 0.0)
        else:
            busy, idle, out = acc[_BUSY], acc[_IDLE], acc[_OUT]
            running = ledger.running()
            if state == "parked" and out is not None:
                idle += now_ns - out
            elif state == "running" and running is not None and running[0] == gid:
                busy += now_ns - running[1]
            row = (gid, name, state, waits, where, fixed[0], fixed[1], fixed[2],
                   acc[_SWITCHES], busy / 1e9, acc[_SCHEDULED] / 1e9, idle / 1e9)
        if touched is not None:
            if state == "parked" and acc is not None and acc[_OUT] is not None:
                # (without the greenlet: the registry must not keep it alive;
                # floats, not ns: big ints allocate at every operation)
                # (one flat tuple: a young collection untracks it, where a
                # nested one stayed tracked and was promoted to the oldest
                # generation, bringing full collections nearer)
                previous[gid] = row[:11] + ((acc[_IDLE] - acc[_OUT]) / 1e9,)
            else:
                previous.pop(gid, None)
        append(_new_row(Row, row + (g,)))
    if pace is not None:
        pace()    # (the rows since the last look, then the rest: not one piece)
        # Let go in pieces: the copy, and the ids of who ran since the last
        # snapshot -- every greenlet's, the first time (~0.3 ms at 10,000).
        known = None
        pace.empty(copied)
        if type(touched) is set:
            pace.empty(touched)
    changed = frozenset()
    if pace is not None and pace.cuts and ledger is not None:
        # Who ran meanwhile (read, not taken: the next snapshot must still
        # see them as touched, or it would reuse rows read before they ran).
        ledger.update(pace)
        moved = ledger.touched
        found = []
        for part in pace.chunks(rows):
            found.extend(row.id for row in part if row.id in moved)
        changed = frozenset(found)
        if not nested:
            for gid in changed:   # their cached rows may be from before
                previous.pop(gid, None)
    for gid in collected:
        reg._forget(gid)
    for gid in gone:      # shown once as dead, then dropped
        reg._forget(gid)
    for look, info in enumerate(reg.exited_unseen):   # born and gone between two snapshots
        if pace is not None and look % _ROWS_PER_LOOK == _ROWS_PER_LOOK - 1:
            pace()
        site, cell, parent = _spawn_columns(info, recorder)
        acc = accounts.get(info.gid)
        if acc is None or acc[Account.EXITED] is None:
            acc = Account.new()
        rows.append(Row(info.gid, info.name or f"greenlet-{info.gid:#x}", "dead", "", "", site,
                        cell, parent, acc[_SWITCHES], acc[_BUSY] / 1e9, acc[_SCHEDULED] / 1e9,
                        acc[_IDLE] / 1e9))
    reg.exited_unseen = []
    if ledger is not None:
        loop = LoopStats(recording=True, **ledger.take_window(now_ns))
        ledger.forget_exited()
    else:
        loop = LoopStats()
    loop.ready = hub.ready_count
    loop.timers = hub.loop.active_timers
    loop.fd_waits = hub.loop.io_waiters
    return Snapshot(time=start_s, rows=rows, loop=loop, changed=changed)


def _grow_ahead(caches: tuple, known: dict, pace) -> None:
    """Give each of ``caches`` (the registry's, keyed by greenlet id) an
    entry (None: nothing cached yet, as a missing one) for each greenlet
    of ``known`` it lacks, a cache at a time, if it holds fewer than half
    as many entries as there are greenlets: a console's first snapshot
    fills them all, an entry per greenlet, and each doubles its table on
    the way. Three of
    them doubling at the same row made one piece of ~1 ms at 10,000
    greenlets (their new tables, ~300 KB each, touched for the first
    time: ~225 page faults); made here, each doubling is a step of its own
    between two looks at the clock."""
    ids = None
    for cache in caches:
        if 2 * len(cache) < len(known):
            ids = list(known) if ids is None else ids
            for part in pace.chunks(ids, 512):
                for gid in part:
                    cache.setdefault(gid, None)


def _spawn_columns(info, recorder) -> tuple:
    """(spawn_site, cell, parent) of a SpawnInfo (None: unknown), once per greenlet."""
    if info is None:
        return "", None, ""
    site, cell = _site(info)
    return site, cell, recorder.name_of(info.parent) if recorder is not None else ""


def _ready_ids(hub) -> set:
    """ids of the greenlets whose switch is queued in the hub (sleep(0), a
    start, a Ticket's wake, a Callback around a switch)."""
    ids = set()
    for cb in hub.ready_callbacks():
        target = getattr(cb, "__self__", None)
        if target is None:
            inner = getattr(cb, "callback", None)
            target = getattr(inner, "__self__", None)
            if target is None:
                continue
        if isinstance(target, _raw_greenlet):
            ids.add(id(target))
        else:   # a Ticket's or a Waiter's bound wake: its greenlet
            g = getattr(target, "greenlet", None)
            if isinstance(g, _raw_greenlet):
                ids.add(id(g))
    return ids


#: the standard library's threading module, and labkit's patched halves of
#: its locks: a wait inside them is named after the threading API
_THREADING_FILE = threading.__file__
_TWOSIDED_MODULE = "labkit._twosided"


def _words(g, frame, state: str) -> tuple[str, str]:
    """(waits_on, where) for a greenlet not seen on this frame before."""
    if frame is None:
        return ("not started" if state == "parked" else ""), ""
    where = ""
    api = None      # the outermost threading-module call it is in ("Event.wait")
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename == _THREADING_FILE:
            api = getattr(code, "co_qualname", code.co_name)
        elif not code.co_filename.startswith(INTERNAL_DIRS):
            where = f"{cell_location(code.co_filename, f.f_lineno)} in {code.co_name}"
            break
        f = f.f_back
    if state != "parked":
        return "", where
    if api is not None:       # a patched threading.Event/Condition/...: say which
        return f"threading.{api}", where
    words = waiting_on(g) or ""
    patched = _patched_lock(frame)
    if patched is not None:
        return f"threading.{patched}", where
    return _plain(words, g), where


def _patched_lock(frame) -> str | None:
    """The class name of the outermost patched threading primitive
    (labkit._twosided) a frame of this stack is a method of, if any:
    "Lock", "RLock", "Condition" (whose wait parks on a Lock of its own)."""
    depth, found = 0, None
    while frame is not None and depth < 8:
        if frame.f_code.co_filename.startswith(INTERNAL_DIRS) and frame.f_code.co_argcount:
            obj = local(frame, "self")
            if obj is not None and type(obj).__module__ == _TWOSIDED_MODULE:
                found = type(obj).__name__
        frame = frame.f_back
        depth += 1
    return found


def _plain(words: str, g) -> str:
    """labkit's words, made plainer: "sleep(0.3)" -> "timer 0.3 s", a join
    names the greenlet it waits for."""
    if words.startswith("sleep(") and words.endswith(")"):
        return f"timer {words[6:-1]} s"
    if words == "join":
        target = _joined(g)
        if target is not None:
            return f"join {greenlet_name(target)}"
    return words or "?"


def _joined(g):
    """The greenlet ``g`` waits to join, read from its suspended frames."""
    frame = g.gr_frame
    depth = 0
    while frame is not None and depth < 6:
        obj = local(frame, "obj")
        if isinstance(obj, _raw_greenlet):
            return obj
        frame = frame.f_back
        depth += 1
    return None


_cell_files: dict[str, str] = {}


def _site(info) -> tuple[str, int | None]:
    """A SpawnInfo's site -> ("In[3], line 12", 3) for a notebook cell, else
    ("app.py:12", None). Uses the full file name where the recorder keeps
    it (``path``), else finds the cell by the base name (IPython names cell
    files by a hash of their code, so a base name is enough)."""
    site = info.site
    name, _, line = site.rpartition(":")
    if not name:
        return site, None
    path = getattr(info, "path", None)
    count = _cell_number(os.path.basename(path) if path else name)
    if count is None:
        return site, None
    return f"In[{count}], line {line}", count


def _cell_number(basename: str) -> int | None:
    ipython = ipython_shell()
    if ipython is None:
        return None
    mapping = getattr(getattr(ipython, "compile", None), "_filename_map", None)
    if not mapping:
        return None
    full = _cell_files.get(basename)
    if full is None or full not in mapping:
        for filename in mapping:
            _cell_files[os.path.basename(filename)] = filename
        full = _cell_files.get(basename)
    count = mapping.get(full) if full is not None else None
    return count if isinstance(count, int) else None


# -- the table as it was: a finished Trace ---------------------------------------------

#: The window, in seconds before ``t``, that Trace.snapshot_at's loop rows cover.
LOOP_WINDOW = 1.0

_trace_index: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class _TraceIndex:
    """A Trace's slices grouped by greenlet, sorted: built once per Trace."""

    def __init__(self, trace):
        import bisect
        self.bisect = bisect
        self.greenlets = [g for g in trace.greenlets() if g.name not in ("hub", "main")]
        self.running: dict[int, list] = {}
        self.parked: dict[int, list] = {}
        for s in trace.slices():
            if s.key >= 0:
                self.running.setdefault(s.key, []).append(s)
        for s in trace.parked():
            self.parked.setdefault(s.key, []).append(s)
        for table in (self.running, self.parked):
            for slices in table.values():
                slices.sort(key=lambda s: s.start)
        self.running_starts = {k: [s.start for s in v] for k, v in self.running.items()}
        self.parked_starts = {k: [s.start for s in v] for k, v in self.parked.items()}
        self.iterations = trace.loop_iterations()
        self.passes = trace.ready_counts()

    def covering(self, table, starts, key, t):
        """The slice of ``key`` in ``table`` that covers ``t`` (or None), and
        how many of its slices began at or before ``t``."""
        index = self.bisect.bisect_right(starts.get(key, ()), t)
        if index and table[key][index - 1].end > t:
            return table[key][index - 1], index
        return None, index


def snapshot_at(trace, t: float) -> Snapshot:
    """The table as it was ``t`` seconds into a finished ``trace``
    (``Trace.snapshot_at`` calls this): one row per greenlet alive at ``t``.

    From a recording, not live objects: ``waits_on`` is what ended the
    park ("Event", "fd 5 read", "timer"; "?" for a park that lasted past the
    end of the trace), ``where`` is unknown (""), ``scheduled`` counts the
    gaps that ended in a ``sleep(0)`` resume (other wake-ups count as idle),
    ``greenlet`` is None. The loop rows cover the :data:`LOOP_WINDOW`
    seconds before ``t``.
    """
    if isinstance(t, bool) or not isinstance(t, (int, float)) or t != t:
        raise TypeError(f"t must be a number of seconds, not {t!r}")
    if not 0 <= t <= trace.duration:
        raise ValueError(f"t must be within the trace (0 to {trace.duration:.3f} s), not {t}")
    index = _trace_index.get(trace)
    if index is None:
        index = _trace_index[trace] = _TraceIndex(trace)
    rows = []
    for g in index.greenlets:
        if g.spawned_at is not None and g.spawned_at > t:
            continue
        if g.exited_at is not None and g.exited_at <= t:
            continue
        key = g.key
        busy = scheduled = idle = 0.0
        for s in index.running.get(key, ()):
            if s.start >= t:
                break
            busy += min(s.end, t) - s.start
        for s in index.parked.get(key, ()):
            if s.start >= t:
                break
            part = min(s.end, t) - s.start
            if s.reason == "ready":
                scheduled += part
            else:
                idle += part
        run, started = index.covering(index.running, index.running_starts, key, t)
        park, _ = index.covering(index.parked, index.parked_starts, key, t)
        waits = ""
        if run is not None:
            state = "running"
        elif park is not None:
            state = "ready" if park.reason == "ready" else "parked"
            waits = "" if state == "ready" else park.reason
        elif not started:
            state, waits = "parked", "not started"
        else:   # parked until the end of the trace: what would have woken it is unknown
            state, waits = "parked", "?"
            last = index.running[key][started - 1]
            idle += t - max(last.end, 0.0)
        site = g.spawn_site or ""
        rows.append(Row(g.id, g.name, state, waits, "", site,
                        _cell_of_site(site), g.parent or "", started, busy, scheduled, idle))
    return Snapshot(time=t, rows=rows, loop=_loop_at(index, t))


def _cell_of_site(site: str) -> int | None:
    if site.startswith("In[") and "]" in site:
        number = site[3:site.index("]")]
        return int(number) if number.isdigit() else None
    return None


def _loop_at(index, t: float) -> LoopStats:
    start = max(0.0, t - LOOP_WINDOW)
    its = [it for it in index.iterations if it.end > start and it.start < t]
    passes = [count for ts, count in index.passes if start <= ts <= t]
    lags, since = [], None
    for it in index.iterations:
        if it.start > t:
            break
        if since is not None and it.start >= start:
            lags.append(it.start - since)
        since = it.end
    return LoopStats(recording=True, window=t - start, polls=len(its),
                     poll_time=sum(min(it.end, t) - max(it.start, start) for it in its),
                     passes=len(passes), live=False,
                     callbacks_per_pass=sum(passes) / len(passes) if passes else 0.0,
                     lag_max=max(lags, default=0.0),
                     lag_mean=sum(lags) / len(lags) if lags else 0.0)
