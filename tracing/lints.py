"""Lints: greenlets that are probably wrong, each with its line and the evidence.

    for lint in tracing.lints.lints(): print(lint)  # live, from the hub's thread
    trace.lints()                                   # on a finished Trace
    tracing.silence(g, "spinning")                  # this greenlet may spin

Each :class:`Lint` names a ``kind``, the ``greenlet``, the ``line`` to look
at and the ``evidence``. The kinds (tokio-console's, and two of labkit's),
with the default thresholds (each a keyword argument of :func:`lints`):

never yielded   ran >= ``never_yielded`` (NEVER_YIELDED = 0.1 s) without a
                switch. Evidence: the measured duration and the block's
                cause (CPU, GC, a blocking syscall, descheduled:
                tracing/causes.py) with its split. The line is where the
                blocking monitor first saw it (the nearest sample to the
                start of the block), when a monitor watched; else its line now.
lost wake-up    parked, with no timer, on something nothing can ever wake:
                an Event, a Queue, a lock... that only its waiters refer to
                (``gc.get_referrers``, only here, only when lints are asked
                for), an fd that is closed, a join of a greenlet that is
                already dead. Live only.
spinning        more than SPINNING_RATIO (0.5) of its wake-ups (at least
                ``spinning_wakes`` = 20) came from its own ``sleep(0)`` or a
                timeout shorter than 1 ms: it polls instead of waiting.
starved         was ready to run for >= ``starved`` (STARVED = 0.1 s)
                without running, in one stretch after a wake-up (something
                else held the loop; the wait to start the first time is not
                counted: a spawn storm is not starvation).
leaked          alive ``leaked_after`` (LEAKED_AFTER = 30 s) after the
                notebook cell that spawned it finished, and referred to by no
                object in the notebook's namespace (looked for through
                containers, Groups and instances, a few levels deep). Live,
                IPython only.

The timing lints (never yielded, spinning, starved) need a recording (any
running recorder: ``%load_ext labkit`` keeps one); for a live hub they
cover what the ring held since :func:`snapshot` first read it. The main
greenlet and the hub are not linted for spinning or starving (the main
greenlet's waits are the host's).

Lints state what happened, in wall time. On a busy machine a greenlet can
be descheduled in the middle of a short step and "never yield" for 0.3 s, or
keep others waiting: the evidence then carries the block's cause, which says
so ("descheduled: the machine was busy", or "...; descheduled 200 ms").

Silencing: :func:`silence` a greenlet (the object, or its name for a Trace)
for some kinds or all of them; its lints are then left out.

Cost: unlike :func:`tracing.snapshot`, asking for lints is not meant for
every refresh. The lost wake-up check reads every waiter's frames and
traverses the heap twice (``gc.get_referrers`` of all waited-on objects at
once, then of the containers holding them): ~0.1 s for 10,000 greenlets
parked on one Event, during which the loop waits. A live view passes a
:class:`HeapCheck` (``lints(heap=...)``; the console and the attach do):
the traversal then runs only for waiters parked on the same frame for
:data:`LOST_WAKEUP_AFTER` seconds and not already judged, and each run's
cost is kept (``HeapCheck.last_ns``; a console frame's ``heap_ms``). It is
still one piece when it runs: a search of the heap in chunks, the hub
running between them, was tried and removed (see
:func:`_only_waiters_refer`).
"""
from __future__ import annotations

import gc
import os
import sys
import time
import weakref
from dataclasses import dataclass

from greenlet import greenlet as _raw_greenlet

import labkit.hub as _lk_hub
import labkit.lock as _lk_lock
from labkit.util import greenlet_name

from tracing import recorder as _recorder_module
from tracing.introspect import ipython_shell, cell_location
from tracing.ledger import ZERO_TIMEOUT_NS, ledger_for
from tracing.snapshot import Pace, snapshot

__all__ = ["Lint", "lints", "trace_lints", "silence", "unsilence", "watch_cells",
           "KINDS", "NEVER_YIELDED", "STARVED", "SPINNING_RATIO", "SPINNING_WAKES",
           "LEAKED_AFTER", "LOST_WAKEUP_AFTER", "PIECE_NS", "HeapCheck", "waited_object",
           "holder_of"]

KINDS = ("never yielded", "lost wake-up", "spinning", "starved", "leaked")

#: seconds a greenlet may run without a switch
NEVER_YIELDED = 0.1
#: seconds a greenlet may stay ready without running
STARVED = 0.1
#: share of self wake-ups (sleep(0), zero timeouts) above which it spins ...
SPINNING_RATIO = 0.5
#: ... once it has been woken at least this many times
SPINNING_WAKES = 20
#: seconds a greenlet may outlive the cell that spawned it, unreferenced
LEAKED_AFTER = 30.0

_NOT_LINTED = ("main", "hub")
#: lost wake-up: containers (tuples, dicts, bound methods) holding a waited-on
#: object that are looked through (a second gc.get_referrers); past this, the
#: object counts as held
MAX_CONTAINERS = 100


@dataclass
class Lint:
    """One finding: ``kind`` (one of :data:`KINDS`), the greenlet's name and
    id (None on a Trace), the line to look at, and the evidence."""
    kind: str
    greenlet: str
    line: str
    evidence: str
    id: int | None = None

    def __str__(self) -> str:
        at = f" at {self.line}" if self.line else ""
        return f"{self.kind}: {self.greenlet}{at} -- {self.evidence}"


# -- silencing ------------------------------------------------------------------------

_silenced_objects: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_silenced_names: dict[str, frozenset] = {}


def silence(greenlet_or_name, *kinds: str) -> None:
    """Leave this greenlet's lints of ``kinds`` (default: all) out of every
    report. A greenlet object silences it while it lives; a name silences
    every greenlet of that name (and works on a finished Trace)."""
    chosen = frozenset(kinds) if kinds else frozenset(KINDS)
    unknown = chosen - set(KINDS)
    if unknown:
        raise ValueError(f"kinds must be among {KINDS}, not {sorted(unknown)}")
    if isinstance(greenlet_or_name, str):
        _silenced_names[greenlet_or_name] = chosen
    elif isinstance(greenlet_or_name, _raw_greenlet):
        _silenced_objects[greenlet_or_name] = chosen
    else:
        raise TypeError(f"greenlet_or_name must be a greenlet or a name, "
                        f"not {type(greenlet_or_name).__name__}")


def unsilence(greenlet_or_name) -> None:
    """Undo :func:`silence` for this greenlet or name."""
    if isinstance(greenlet_or_name, str):
        _silenced_names.pop(greenlet_or_name, None)
    else:
        _silenced_objects.pop(greenlet_or_name, None)


def _silenced(lint: Lint, g=None) -> bool:
    if g is not None and lint.kind in _silenced_objects.get(g, ()):
        return True
    return lint.kind in _silenced_names.get(lint.greenlet, ())


# -- cells: when each one finished -------------------------------------------------

#: execution count -> loop-clock time its cell finished (post_run_cell)
cell_finished: dict[int, float] = {}
_watching_since: float | None = None


def watch_cells(ipython) -> None:
    """Note when each cell finishes (for the leaked lint). ``%load_ext
    labkit`` calls it; cells that ran before count as finished then."""
    global _watching_since
    if _watching_since is None:
        _watching_since = time.monotonic()
    try:
        ipython.events.unregister("post_run_cell", _cell_done)
    except ValueError:
        pass
    ipython.events.register("post_run_cell", _cell_done)


def unwatch_cells(ipython) -> None:
    try:
        ipython.events.unregister("post_run_cell", _cell_done)
    except ValueError:
        pass


def _cell_done(result) -> None:
    count = getattr(result, "execution_count", None)
    if isinstance(count, int):
        cell_finished[count] = time.monotonic()


# -- live lints -------------------------------------------------------------------

def lints(hub=None, *, never_yielded: float | None = None, starved: float | None = None,
          spinning_ratio: float | None = None, spinning_wakes: int | None = None,
          leaked_after: float | None = None, snap=None, between=None,
          heap: "HeapCheck | None" = None) -> list[Lint]:
    """The lints of the hub's greenlets now (see the module docstring).
    Call from the hub's thread. A threshold left None is the module's
    constant at the time of the call (NEVER_YIELDED, STARVED, ...: set
    them to change the defaults everywhere, %labkit_status included).
    ``snap``: a :func:`snapshot` just taken (else one is taken).

    ``between``: called whenever :data:`PIECE_NS` of work has passed since
    the last call (or the start) -- ``labkit.sleep(0)`` in a greenlet lets
    the loop run in between, so that lints over a thousand greenlets never
    hold it for more than about that long at a stretch (the console's
    refresh). Only gc.get_referrers, one heap traversal, is one piece
    whatever its length. What runs in between cannot make a lint wrong: a
    greenlet that left its wait meanwhile gets no lost wake-up (each is
    checked again at the end), and a reference taken or dropped meanwhile
    is seen or not, as it would be a moment later.

    ``heap``: a :class:`HeapCheck` kept from call to call (the console's
    and the attach's refreshes keep one): the lost wake-up's heap
    traversal then runs only for objects whose waiters have all been
    parked, on the same frame, for :data:`LOST_WAKEUP_AFTER` seconds, and
    whose verdict is not known yet (see :class:`HeapCheck`); without one,
    every call traverses the heap for every parked waiter."""
    never_yielded = NEVER_YIELDED if never_yielded is None else never_yielded
    starved = STARVED if starved is None else starved
    spinning_ratio = SPINNING_RATIO if spinning_ratio is None else spinning_ratio
    spinning_wakes = SPINNING_WAKES if spinning_wakes is None else spinning_wakes
    leaked_after = LEAKED_AFTER if leaked_after is None else leaked_after
    _check(never_yielded=never_yielded, starved=starved, leaked_after=leaked_after,
           spinning_ratio=spinning_ratio, spinning_wakes=spinning_wakes)
    hub = hub if hub is not None else _lk_hub.get_hub()
    snap = snap if snap is not None else snapshot(hub)
    # In pieces, the collector runs between them, not inside one (a full
    # collection of a big heap takes ~15 ms here).
    gc_off = between is not None and gc.isenabled()
    pace = _Pace(between, gc_off)
    if gc_off:
        gc.disable()
    try:
        rows = {row.id: row for row in snap.rows}
        found: list[tuple[Lint, object]] = []
        recorder = _recorder_module.active()
        if recorder is not None and recorder.ring is not None:
            found += _timing_lints(recorder, rows, never_yielded, starved, spinning_ratio,
                                   spinning_wakes, pace)
        found += _lost_wakeups(snap.rows, pace, heap)
        found += _leaks(snap.rows, leaked_after)
    finally:
        if gc_off:
            gc.enable()
    return [lint for lint, g in found if not _silenced(lint, g)]


#: The most work (ns) ``lints(between=...)`` does between two calls of
#: ``between``, give or take one step (one greenlet's frames).
PIECE_NS = 400_000


def _Pace(between=None, gc_off: bool = False):
    """A :class:`tracing.snapshot.Pace` at this module's :data:`PIECE_NS`
    (read at each call of :func:`lints`: set it to change the pieces)."""
    return Pace(between, PIECE_NS, gc_off)


def _check(**thresholds) -> None:
    """TypeError/ValueError naming a threshold that is not a number >= 0."""
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, not {value!r}")


def _row_line(row) -> str:
    return row.where if row is not None else ""


def _timing_lints(recorder, rows, never_yielded, starved, ratio, min_wakes, pace=None):
    pace = pace or _Pace()
    ledger = ledger_for(recorder)
    ledger.update()
    out = []
    blocks = list(recorder.blocks)
    accounts = [(gid, None, acc) for gid, acc in list(ledger.accounts.items())]
    accounts += [(None, name, acc) for name, acc in list(ledger.finished)]
    t0 = recorder.start_ns
    never_ns, starved_ns = never_yielded * 1e9, starved * 1e9
    reported_blocks = set()
    for gid, name, acc in accounts:
        pace()
        if not (acc.longest >= never_ns or acc.most_scheduled >= starved_ns or
                (acc.wakes >= min_wakes and acc.self_wakes > ratio * acc.wakes)):
            continue    # (most accounts: no name looked up)
        if name is None:
            name = recorder.name_of(gid)
        row = rows.get(gid) if gid is not None else None
        g = row.greenlet if row is not None else None
        if name in _NOT_LINTED:
            continue
        if acc.longest >= never_yielded * 1e9:
            start = (acc.longest_at - t0) / 1e9
            block = _block_at(blocks, start, acc.longest / 1e9)
            if block is not None:
                reported_blocks.add(id(block))
            out.append((_never_yielded(name, gid, acc.longest / 1e9, block,
                                       _row_line(row)), g))
        if acc.wakes >= min_wakes and acc.self_wakes > ratio * acc.wakes:
            out.append((Lint("spinning", name, _row_line(row),
                             f"{acc.self_wakes} of its {acc.wakes} wake-ups were its own "
                             f"sleep(0) or a timeout under {ZERO_TIMEOUT_NS / 1e6:g} ms", gid), g))
        if acc.most_scheduled >= starved * 1e9:
            end = (acc.most_scheduled_at - t0) / 1e9
            length = acc.most_scheduled / 1e9
            behind = _block_at(blocks, end - length, length)
            why = _behind(behind)
            out.append((Lint("starved", name, _row_line(row),
                             f"ready for {length:.2f} s without running{why}", gid), g))
    # Blocks of greenlets the ledger never saw (the ring overwrote them), and of hub callbacks
    for block in blocks:
        if id(block) in reported_blocks or block.duration < never_yielded:
            continue
        if block.greenlet in ("main", "?"):
            continue   # ("?": no switch yet since the trace began -- its starter, main)
        out.append((_never_yielded(block.greenlet, None, block.duration, block, ""), None))
    return out


def _behind(block) -> str:
    """The starved lint's "behind whom": the block that held the loop, its
    line and its cause (a busy machine shows as "descheduled")."""
    if block is None:
        return ""
    cause = getattr(block, "cause", None)
    return (f" (behind {block.greenlet}, which blocked the loop {block.duration:.2f} s "
            f"at {_place(block.file, block.line)}{': ' + str(cause) if cause else ''})")


def _block_at(blocks, start: float, length: float):
    """The monitor's block that overlaps [start, start + length] most. (One
    thing runs at a time: a block that overlaps a greenlet's slice is that
    greenlet's, whatever name the monitor and the trace gave it --
    "Greenlet-3", "worker #3".)"""
    best, best_overlap = None, 0.0
    for block in blocks:
        overlap = min(start + length, block.start + block.duration) - max(start, block.start)
        if overlap > best_overlap:
            best, best_overlap = block, overlap
    return best


def _place(file: str, line: int) -> str:
    return cell_location(file, line) if file and file != "?" else "?"


def _never_yielded(name, gid, seconds, block, fallback_line) -> Lint:
    evidence = f"ran {seconds:.2f} s without yielding"
    line = fallback_line
    if block is None:
        # No monitor watched, or its report is still on the way (it comes a
        # few ms after the block ended): the line is where it is now, if alive.
        evidence += " (no blocking-monitor report of it yet: line unknown)"
    else:
        file, lineno, function = getattr(block, "first", (block.file, block.line, block.function))
        line = f"{_place(file, lineno)} in {function}"
        cause = getattr(block, "cause", None)
        if cause is not None:
            evidence += f": {cause} ({cause.split()})"
        if not block.sampled:
            # (the watchdog got no CPU while it lasted: the line above is
            # where the run started, from the resume record, and no sample
            # says where it went from there)
            evidence += "; no stack sample caught it"
        elif (file, lineno) != (block.file, block.line):
            evidence += f"; most samples at {_place(block.file, block.line)}"
    return Lint("never yielded", name, line, evidence, gid)


# -- lost wake-ups ---------------------------------------------------------------

_PRIMITIVE_MODULES = ("labkit.event", "labkit.lock", "labkit.queue", "labkit.threading",
                      "labkit._twosided", "labkit._lines", "labkit._park", "labkit.pool")
_NOT_THE_OBJECT = ("Waiter", "Ticket", "_ThreadsafeWake", "Hub")
_LABKIT_DIR = os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep


#: seconds every waiter of an object must have been parked on it (on the
#: same frame) before a :class:`HeapCheck` asks the heap about it
LOST_WAKEUP_AFTER = 1.0


class HeapCheck:
    """What the lost wake-up lint learnt about the heap, kept between live
    lints (pass the same one as ``lints(heap=...)``), so that its heap
    traversal (``gc.get_referrers``: one piece, ~1 ms per 10,000 objects
    here, whatever the number of greenlets) runs rarely and only when it
    can matter:

    - only for objects whose waiters have all been parked on the same
      frame and instruction for ``after`` seconds, counted from the first
      call that saw them there (a waiter that moved starts its clock again);
    - a verdict is kept while the object's waiters stay as they were: "nothing
      else refers to it" stands for good (nothing can take a reference to
      an object nothing refers to), "something else refers to it" is asked
      again after ``recheck`` seconds, doubling each time it is confirmed,
      up to ``max_recheck`` (the referrer may let go: a lost wake-up is then
      reported up to that much later than without a HeapCheck).

    What it cost: ``last_ns`` (the traversal of the latest call, 0 if none
    ran), ``total_ns`` and ``runs``.
    """

    def __init__(self, after: float | None = None, recheck: float = 2.0,
                 max_recheck: float = 30.0):
        after = LOST_WAKEUP_AFTER if after is None else after
        _check(after=after, recheck=recheck, max_recheck=max_recheck)
        self.after, self.recheck, self.max_recheck = after, recheck, max_recheck
        self._since: dict = {}       # id(greenlet) -> (frame key, first seen there)
        self._verdicts: dict = {}    # id(object) -> (waiters' signature, lost, next look, interval)
        self._checking: list = []   # (id(object), signature) of the latest select
        self.last_ns = self.total_ns = self.runs = 0

    def select(self, entries: list, pace=None) -> tuple[list, list]:
        """(entries to look up in the heap now, entries known to be lost);
        ``pace()`` after each waiter."""
        pace = pace or _Pace()
        now = time.monotonic()
        since, seen = self._since, {}
        check, lost, verdicts = [], [], {}
        for obj, waiters in entries:
            signature = []
            settled = True
            for row in waiters:
                pace()
                g = row.greenlet
                frame = g.gr_frame
                key = (id(frame), frame.f_lasti) if frame is not None else None
                first = since.get(id(g))
                start = first[1] if first is not None and first[0] == key else now
                seen[id(g)] = (key, start)
                signature.append((id(g), key))
                settled = settled and now - start >= self.after
            if not settled:
                continue
            signature = frozenset(signature)
            verdict = self._verdicts.get(id(obj))
            if verdict is not None and verdict[0] == signature:
                verdicts[id(obj)] = verdict
                if verdict[1]:
                    lost.append((obj, waiters))
                    continue
                if now < verdict[2]:
                    continue
            check.append((obj, waiters, signature))
        self._since = seen      # (greenlets no longer parked are forgotten)
        self._verdicts = verdicts
        self._checking = [(id(obj), signature) for obj, _w, signature in check]
        return [(obj, waiters) for obj, waiters, _s in check], lost

    def record(self, suspects: list, cost_ns: int) -> None:
        """The heap's answer for the entries of the latest :meth:`select`."""
        lost = {id(obj) for obj, _waiters in suspects}
        now = time.monotonic()
        for oid, signature in self._checking:
            old = self._verdicts.get(oid)
            interval = self.recheck
            if old is not None and old[0] == signature and not old[1]:
                interval = min(self.max_recheck, old[3] * 2)
            self._verdicts[oid] = (signature, oid in lost, now + interval, interval)
        self._checking = []
        self.last_ns = cost_ns
        if cost_ns:
            self.total_ns += cost_ns
            self.runs += 1


def _lost_wakeups(rows, pace=None, heap=None) -> list:
    pace = pace or _Pace()
    out = []
    by_object: dict[int, tuple] = {}
    for row in rows:
        pace()
        g = row.greenlet
        if row.state != "parked" or g is None or g.dead or g.gr_frame is None:
            continue
        words = row.waits_on
        if words.startswith("fd "):
            fd = words.split()[1]
            if fd.isdigit() and _fd_closed(int(fd)):
                out.append((Lint("lost wake-up", row.name, row.where,
                                 f"parked on {words}, and fd {fd} is closed", row.id), g))
            continue
        if words.startswith(("timer", "sleep", "not started", "select", "idle")):
            continue
        obj, timed = _waited_object_cached(g)
        if obj is None or timed:
            continue
        if isinstance(obj, _raw_greenlet):
            if obj.dead:
                out.append((Lint("lost wake-up", row.name, row.where,
                                 f"joins {greenlet_name(obj)}, which is already dead, "
                                 f"with no timeout", row.id), g))
            continue
        entry = by_object.get(id(obj))
        if entry is None:
            entry = by_object[id(obj)] = (obj, [])
        entry[1].append(row)
        del obj
    if not by_object:
        return out
    entries = list(by_object.values())
    by_object.clear()
    # First what the collector sees (one heap traversal for all of them),
    # then, for the few nothing else refers to, the frames' locals.
    if heap is None:
        suspects = _only_waiters_refer(entries, pace)
    else:
        entries, known = heap.select(entries, pace)
        cost = 0
        suspects = []
        if entries:
            pace.cut()     # (the traversal starts a piece of its own)
            start = time.perf_counter_ns()
            suspects = _only_waiters_refer(entries, pace)
            cost = time.perf_counter_ns() - start
        heap.record(suspects, cost)
        suspects += known
    if not suspects:
        return out
    held_by = _locals_index(rows, pace)
    for obj, waiters in suspects:
        if pace.cuts:   # the loop ran meanwhile: only those still parked on it
            waiters = [row for row in waiters if not row.greenlet.dead
                       and row.greenlet.gr_frame is not None
                       and _waited_object_cached(row.greenlet)[0] is obj]
            if not waiters:
                continue
        waiting = {id(row.greenlet) for row in waiters}
        oid = id(obj)
        if any(oid in ids for owner, ids in held_by if owner not in waiting):
            continue   # another greenlet (or the caller) has it in a local variable
        kind = type(obj).__name__
        for row in waiters:
            out.append((Lint("lost wake-up", row.name, row.where,
                             f"parked on {row.waits_on or kind} with no timeout; nothing "
                             f"but its waiters ({len(waiters)}) refers to that {kind}, "
                             f"so nothing can wake it", row.id), row.greenlet))
    return out


#: id(greenlet) -> (id(frame), f_lasti, weakref to what it waits on or None, timed):
#: a greenlet parked on the same frame waits on the same object
_waited_cache: dict = {}


def _waited_object_cached(g):
    frame = g.gr_frame
    key = (id(frame), frame.f_lasti)
    cached = _waited_cache.get(id(g))
    if cached is not None and cached[0] == key:
        obj = cached[1]() if cached[1] is not None else None
        if obj is not None or cached[1] is None:
            return obj, cached[2]
    obj, timed = _waited_object(g)
    try:
        ref = weakref.ref(obj) if obj is not None else None
    except TypeError:    # no weak references to it: look again next time
        return obj, timed
    if len(_waited_cache) > 100_000:
        _waited_cache.clear()
    _waited_cache[id(g)] = (key, ref, timed)
    return obj, timed


def _locals_index(rows, pace=None) -> list:
    """(id of a greenlet, ids of the objects its frames' locals and closure
    cells hold) for the hub's greenlets, the main greenlet and the caller's
    stack (this module's frames left out). The collector cannot see a
    suspended or running frame's locals, so they are read here."""
    out = []
    greenlets = [row.greenlet for row in rows if row.greenlet is not None
                 and row.state != "dead"]
    hub = _lk_hub.get_hub()
    if hub.parent is not None and hub.parent not in greenlets:
        greenlets.append(hub.parent)
    from greenlet import getcurrent
    current = getcurrent()
    pace = pace or _Pace()
    for g in greenlets:
        pace()
        if g.dead:
            continue
        frame = sys._getframe() if g is current else g.gr_frame
        ids = set()
        while frame is not None:
            if frame.f_code.co_filename != __file__:
                for value in frame.f_locals.values():
                    ids.add(id(value))
                    if isinstance(value, (list, tuple, set, frozenset)) and len(value) < 64:
                        ids.update(id(item) for item in value)
            frame = frame.f_back
        out.append((id(g), ids))
    return out


def _fd_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def _waited_object(g):
    """(the labkit object ``g`` is parked on, whether the wait has a timer),
    read from its suspended frames: the innermost ``self`` or ``obj`` that
    is a labkit primitive (an Event, a Queue, a lock) or the greenlet a join
    waits for."""
    frame = g.gr_frame
    timed = False
    depth = 0
    while frame is not None and depth < 12:
        local = frame.f_locals
        if frame.f_code.co_filename.startswith(_LABKIT_DIR):
            timeout = local.get("timeout")
            if timeout is not None and not isinstance(timeout, bool):
                timed = True
            obj = local.get("obj")
            if isinstance(obj, _raw_greenlet) and frame.f_code.co_name == "_wait_on":
                return obj, timed
        obj = local.get("self")
        if obj is not None and obj is not g and _is_primitive(obj):
            # An RLock waits on a lock of its own: the RLock is what the
            # caller waits on (and it knows its holder).
            outer = frame.f_back
            for _ in range(4):   # past the lock's own methods calling each other
                if outer is None or outer.f_locals.get("self") is not obj:
                    break
                outer = outer.f_back
            outer = outer.f_locals.get("self") if outer is not None else None
            if isinstance(outer, _lk_lock.RLock):
                return outer, timed
            return obj, timed
        frame = frame.f_back
        depth += 1
    return None, timed


def holder_of(obj):
    """The greenlet holding ``obj``, if it is a lock that knows its holder
    (:class:`labkit.lock.RLock` and the patched ``threading.RLock``: their
    ``owner``), else None: a Semaphore or a plain Lock counts permits, not
    holders."""
    return obj.owner if isinstance(obj, _lk_lock.RLock) else None


#: The public name of :func:`_waited_object`: the console's wait-for graph
#: asks it which object a parked greenlet waits on (one home for that).
waited_object = _waited_object


def _is_primitive(obj) -> bool:
    cls = type(obj)
    return cls.__module__ in _PRIMITIVE_MODULES and cls.__name__ not in _NOT_THE_OBJECT


def _only_waiters_refer(entries: list, pace=None) -> list:
    """The (object, waiter rows) of ``entries`` whose every referrer the
    collector knows belongs to their waiters: their frames, args, attribute
    dicts, or a small container or bound method only those refer to (a
    dict nothing refers to is a frame's f_locals cache). gc.get_referrers
    for all objects at once, then once more for the containers: two heap
    traversals however many objects (lints only), each one piece: ``pace``
    is called between the pieces around them, not inside.

    (A search of a ``gc.get_objects()`` snapshot in chunks, yielding to the
    hub between them, was tried: on CPython 3.12, in a process that had run
    Playwright's greenlets, one ``gc.get_referents`` of a chunk grew the
    process by ~1 GB/s until the kernel killed it; not understood, so the
    heap is traversed only while nothing else runs.)"""
    return _only_waiters_refer_scan(entries, pace, gc.get_referrers)


def _only_waiters_refer_scan(entries: list, pace, referrers_of) -> list:
    """:func:`_only_waiters_refer`'s check, with ``referrers_of(*objects)``
    (gc.get_referrers)."""
    # Tuples, passed on as ``*objects``: gc.get_referrers then gets this very
    # tuple (in bookkeeping) as its arguments; from a list, 3.13 builds one
    # that the collector sees referring to every object (no lint ever).
    objects = tuple(obj for obj, _ in entries)
    index = {id(obj): i for i, obj in enumerate(objects)}
    pace = pace or _Pace()
    ours = []
    for _obj, rows in entries:
        mine = set()
        for row in rows:
            pace()
            g = row.greenlet
            mine.add(id(g))
            frame = g.gr_frame
            while frame is not None:
                # the frame, and the dict f_locals caches on it (reading a
                # parked frame's locals -- as waiting_on does -- leaves one)
                mine.add(id(frame))
                mine.add(id(frame.f_locals))
                frame = frame.f_back
            for attr in ("args", "kwargs", "__dict__", "_run"):
                value = getattr(g, attr, None)
                if value is not None:
                    mine.add(id(value))
        ours.append(mine)
    # This function's own bookkeeping refers to the objects too.
    bookkeeping = {id(entries), id(objects), *(id(entry) for entry in entries)}
    clean = [True] * len(objects)
    containers: dict[int, tuple] = {}     # id -> (container, [object indices])
    referrers = referrers_of(*objects)
    bookkeeping.add(id(referrers))
    # One object (the usual case: many waiters on one Event): every referrer
    # refers to it, no need to ask each one what it refers to.
    only = objects if len(objects) == 1 else None
    try:
        for ref in referrers:
            if id(ref) in bookkeeping:
                continue
            for item in (only if only is not None and id(ref) not in ours[0]
                         else () if only is not None else gc.get_referents(ref)):
                i = index.get(id(item))
                if i is None or id(ref) in ours[i]:
                    continue
                if isinstance(ref, (dict, tuple, list)) or hasattr(ref, "__self__"):
                    held = containers.get(id(ref))
                    if held is None:
                        held = containers[id(ref)] = (ref, [])
                        bookkeeping.add(id(held))
                    held[1].append(i)
                else:
                    clean[i] = False
        if len(containers) > MAX_CONTAINERS:
            # gc.get_referrers of n objects costs n times a heap traversal:
            # beyond this, count the objects held (no lint rather than a wrong one)
            for _ref, indices in list(containers.values())[MAX_CONTAINERS:]:
                for i in indices:
                    clean[i] = False
            for key in list(containers)[MAX_CONTAINERS:]:
                del containers[key]
        if containers:
            # The second traversal is a piece of its own: let the loop run
            # first (holding only the containers; a waiter that leaves
            # meanwhile is dropped by the caller's check).
            referrers = ()
            pace()
            held_list = tuple(ref for ref, _ in containers.values())
            bookkeeping.add(id(held_list))
            outer = referrers_of(*held_list)
            bookkeeping.add(id(outer))
            for r in outer:
                if id(r) in bookkeeping:
                    continue
                for item in gc.get_referents(r):
                    held = containers.get(id(item))
                    if held is not None:
                        for i in held[1]:
                            if id(r) not in ours[i]:
                                clean[i] = False
            del held_list, outer
    finally:
        del referrers
        containers.clear()
    return [entry for entry, ok in zip(entries, clean) if ok]


# -- leaks -----------------------------------------------------------------------

def _leaks(rows, leaked_after: float) -> list:
    candidates = [row for row in rows if row.cell is not None and row.state != "dead"]
    if not candidates:
        return []
    ipython = ipython_shell()
    if ipython is None:
        return []
    now = time.monotonic()
    running = getattr(ipython, "execution_count", None)
    old = []
    for row in candidates:
        finished = cell_finished.get(row.cell)
        if finished is None:
            if _watching_since is None or row.cell == running:
                continue
            finished = _watching_since   # ran before we watched
        if now - finished >= leaked_after:
            old.append((row, now - finished))
    if not old:
        return []
    held = _user_reachable_greenlets(ipython)
    out = []
    for row, age in old:
        if row.id in held:
            continue
        out.append((Lint("leaked", row.name, row.spawn_site,
                         f"alive {age:.0f} s after In[{row.cell}] finished "
                         f"({row.state}{', on ' + row.waits_on if row.waits_on else ''}); "
                         f"nothing in the notebook's namespace refers to it", row.id),
                    row.greenlet))
    return out


def _user_reachable_greenlets(ipython, depth: int = 4, budget: int = 200_000) -> set:
    """ids of the greenlets reachable from the user's namespace (names not
    starting with "_", not IPython's own), through containers, Groups and
    instances' attributes, ``depth`` levels deep."""
    ns = ipython.user_ns
    hidden = getattr(ipython, "user_ns_hidden", {})
    level = [v for k, v in list(ns.items())
             if not k.startswith("_") and k not in hidden and k not in ("In", "Out")]
    seen, found = set(), set()
    for _ in range(depth + 1):
        nxt = []
        for obj in level:
            if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type(None))):
                continue
            seen.add(id(obj))
            if len(seen) > budget:
                return found
            if isinstance(obj, _raw_greenlet):
                found.add(id(obj))
                continue
            if isinstance(obj, dict):
                nxt.extend(obj.values())
            elif isinstance(obj, (list, tuple, set, frozenset)):
                nxt.extend(obj)
            elif type(obj).__module__ in ("builtins",) or isinstance(obj, type):
                continue
            else:
                greenlets = getattr(obj, "greenlets", None)   # Group, Pool
                if isinstance(greenlets, (set, list, tuple, frozenset)):
                    nxt.extend(greenlets)
                d = getattr(obj, "__dict__", None)
                if isinstance(d, dict):
                    nxt.extend(d.values())
        level = nxt
    return found


# -- on a finished Trace -------------------------------------------------------------

def trace_lints(trace, *, never_yielded: float | None = None, starved: float | None = None,
                spinning_ratio: float | None = None,
                spinning_wakes: int | None = None) -> list[Lint]:
    """The lints a recording shows: never yielded, spinning, starved (the
    others need the live objects). Silenced names are left out; thresholds
    as for :func:`lints`. ``Trace.lints()`` calls it."""
    never_yielded = NEVER_YIELDED if never_yielded is None else never_yielded
    starved = STARVED if starved is None else starved
    spinning_ratio = SPINNING_RATIO if spinning_ratio is None else spinning_ratio
    spinning_wakes = SPINNING_WAKES if spinning_wakes is None else spinning_wakes
    _check(never_yielded=never_yielded, starved=starved, spinning_ratio=spinning_ratio,
           spinning_wakes=spinning_wakes)
    names = {g.key: g.name for g in trace.greenlets()}
    out = []
    longest: dict[int, object] = {}
    for s in trace.slices():
        if s.key >= 0 and s.duration >= never_yielded:
            if s.key not in longest or s.duration > longest[s.key].duration:
                longest[s.key] = s
    blocks = trace.blocking()
    for key, s in longest.items():
        name = names.get(key, s.lane)
        if name in _NOT_LINTED:
            continue
        block = _block_at(blocks, s.start, s.duration)
        out.append(_never_yielded(name, None, s.duration, block, ""))
    wakes: dict[int, list] = {}
    for sw in trace.switches():
        if sw.key >= 0 and sw.reason not in ("start", "trace start"):
            counts = wakes.setdefault(sw.key, [0, 0])
            counts[0] += 1
            if sw.reason == "ready":
                counts[1] += 1
    for parked in trace.parked():
        if parked.reason == "timer" and parked.duration < ZERO_TIMEOUT_NS / 1e9 \
                and parked.key in wakes:
            wakes[parked.key][1] += 1
    for key, (total, own) in wakes.items():
        name = names.get(key, "?")
        if name in _NOT_LINTED:
            continue
        if total >= spinning_wakes and own > spinning_ratio * total:
            out.append(Lint("spinning", name, "",
                            f"{own} of its {total} wake-ups were its own sleep(0) or a "
                            f"timeout under {ZERO_TIMEOUT_NS / 1e6:g} ms"))
    worst: dict[int, object] = {}
    for parked in trace.parked():
        # A gap that ended in a "ready" resume was ready all along (sleep(0)).
        if parked.reason == "ready" and parked.duration >= starved:
            if parked.key not in worst or parked.duration > worst[parked.key].duration:
                worst[parked.key] = parked
    for key, parked in worst.items():
        name = names.get(key, "?")
        if name in _NOT_LINTED:
            continue
        why = _behind(_block_at(blocks, parked.start, parked.duration))
        out.append(Lint("starved", name, "",
                        f"ready for {parked.duration:.2f} s without running{why}"))
    return [lint for lint in out if not _silenced(lint)]
