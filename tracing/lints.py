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
                an Event, a Queue, a lock... that only its waiters refer to,
                an fd that is closed, a join of a greenlet that is already
                dead. Live only. Its own module: tracing/lost_wakeup.py
                (how "only its waiters" is decided, and what it costs).
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
decides, per waited-on object, whether anything but its waiters refers to
it: a reference count audit, then a search from the roots, both in pieces;
only what those cannot tell goes to a heap traversal (``gc.get_referrers``,
one piece of ~1 ms per 10,000 objects): see :mod:`tracing.lost_wakeup`. A
live view passes a :class:`HeapCheck` (``lints(heap=...)``; the console
and the attach do): an object is then decided only once its waiters have
been parked on the same frame for :data:`LOST_WAKEUP_AFTER` seconds, and
its verdict is kept; what deciding cost is kept too
(``HeapCheck.last_ns``, ``.traversals``; a console frame's ``heap_ms``).
"""
from __future__ import annotations

import gc
import itertools
import time
import weakref
from dataclasses import dataclass

from greenlet import greenlet as _raw_greenlet

import labkit.hub as _lk_hub

from tracing import pace as _pace
from tracing import recorder as _recorder_module
from tracing.introspect import ipython_shell, cell_location
from tracing.ledger import ZERO_TIMEOUT_NS, Account, ledger_for

# An account's fields (tracing.ledger.Account: a tuple)
_LONGEST, _LONGEST_AT, _MOST, _MOST_AT, _WAKES, _SELF_WAKES = (
    Account.LONGEST, Account.LONGEST_AT, Account.MOST_SCHEDULED, Account.MOST_SCHEDULED_AT,
    Account.WAKES, Account.SELF_WAKES)
# The lost wake-up check has a module of its own; its public names are
# this module's too (the console and the attach import them from here).
from tracing.lost_wakeup import LOST_WAKEUP_AFTER, HeapCheck, lost_wakeups
from tracing.waited import holder_of, waited_object
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
    ``snap``: a :func:`snapshot` just taken (else one is taken, in pieces
    with ``between``).

    ``between``: called at the start (the lints begin a piece of their
    own: they cannot know how long the caller's piece has run) and then
    whenever :data:`PIECE_NS` of work has passed since the last call --
    ``labkit.sleep(0)`` in a greenlet lets the loop run in between, so that
    lints over a thousand greenlets never hold it for more than about that
    long at a stretch (the console's refresh). Only the lost wake-up's heap
    traversal (gc.get_referrers, for what its audit and search cannot tell:
    tracing.lost_wakeup) is one piece whatever its length. What runs in
    between cannot make a lint wrong: a greenlet that left its wait
    meanwhile gets no lost wake-up (each is checked again at the end), and
    a reference taken or dropped meanwhile is seen or not, as it would be a
    moment later.

    ``heap``: a :class:`HeapCheck` kept from call to call (the console's
    and the attach's refreshes keep one): the lost wake-up check then
    decides only objects whose waiters have all been parked, on the same
    frame, for :data:`LOST_WAKEUP_AFTER` seconds, and whose verdict is not
    known yet (see :class:`HeapCheck`); without one, every call decides
    every parked waiter's object."""
    never_yielded = NEVER_YIELDED if never_yielded is None else never_yielded
    starved = STARVED if starved is None else starved
    spinning_ratio = SPINNING_RATIO if spinning_ratio is None else spinning_ratio
    spinning_wakes = SPINNING_WAKES if spinning_wakes is None else spinning_wakes
    leaked_after = LEAKED_AFTER if leaked_after is None else leaked_after
    _check(never_yielded=never_yielded, starved=starved, leaked_after=leaked_after,
           spinning_ratio=spinning_ratio, spinning_wakes=spinning_wakes)
    hub = hub if hub is not None else _lk_hub.get_hub()
    snap = snap if snap is not None else snapshot(hub, between=between)   # (in pieces too)
    # In pieces, the collector runs between them, not inside one (a full
    # collection of a big heap takes ~15 ms here).
    gc_off = between is not None and gc.isenabled()
    pace = _Pace(between, gc_off)
    if gc_off:
        gc.disable()
    try:
        # A piece of its own from here: this Pace cannot know how long the
        # caller's piece (a snapshot in pieces) has already run.
        pace.cut()
        rows = {}
        for part in pace.chunks(snap.rows):
            rows.update({row.id: row for row in part})
        found: list[tuple[Lint, object]] = []
        recorder = _recorder_module.active()
        if recorder is not None and recorder.ring is not None:
            found += _timing_lints(recorder, rows, never_yielded, starved, spinning_ratio,
                                   spinning_wakes, pace)
        # (lists of findings in pieces too: 10,000 waiters of one forgotten
        # Event are 10,000 findings, ~10 ms of lints made and filtered)
        for part in pace.chunks(lost_wakeups(snap.rows, pace, heap), 256):
            found += [(Lint("lost wake-up", f.name, f.line, f.evidence, f.id), f.greenlet)
                      for f in part]
        found += _leaks(snap.rows, leaked_after, pace)
        kept = []
        for part in pace.chunks(found, 256):
            kept += [lint for lint, g in part if not _silenced(lint, g)]
    finally:
        if gc_off:
            gc.enable()
    return kept


#: The most work (ns) ``lints(between=...)`` does between two calls of
#: ``between``, give or take one step (one greenlet's frames): the
#: snapshot's (tracing.pace.PIECE_NS), unless set here.
PIECE_NS = _pace.PIECE_NS


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
    ledger.update(pace=pace if pace.between is not None else None)
    pace()
    out = []
    blocks = list(recorder.blocks)
    # (gid, acc) of the live, then (name, acc) of the finished: told apart
    # by the first item's type (no tuple made per account: 10,000 of them
    # were a piece of ~1 ms). The live from a copy of the dict, which the
    # hub may change while this yields: ~20 us at 10,000 and as much to
    # free, where a list of its items took ~0.4 ms and ~0.2 ms.
    accounts = itertools.chain(ledger.accounts.copy().items(), list(ledger.finished))
    pace()
    t0 = recorder.start_ns
    never_ns, starved_ns = never_yielded * 1e9, starved * 1e9
    reported_blocks = set()
    for key, acc in accounts:
        pace()
        if not (acc[_LONGEST] >= never_ns or acc[_MOST] >= starved_ns or
                (acc[_WAKES] >= min_wakes and acc[_SELF_WAKES] > ratio * acc[_WAKES])):
            continue    # (most accounts: no name looked up)
        gid, name = (None, key) if isinstance(key, str) else (key, None)
        if name is None:
            name = recorder.name_of(gid)
        row = rows.get(gid) if gid is not None else None
        g = row.greenlet if row is not None else None
        if name in _NOT_LINTED:
            continue
        if acc[_LONGEST] >= never_yielded * 1e9:
            start = (acc[_LONGEST_AT] - t0) / 1e9
            block = _block_at(blocks, start, acc[_LONGEST] / 1e9)
            if block is not None:
                reported_blocks.add(id(block))
            out.append((_never_yielded(name, gid, acc[_LONGEST] / 1e9, block,
                                       _row_line(row)), g))
        if acc[_WAKES] >= min_wakes and acc[_SELF_WAKES] > ratio * acc[_WAKES]:
            out.append((Lint("spinning", name, _row_line(row),
                             f"{acc[_SELF_WAKES]} of its {acc[_WAKES]} wake-ups were its own "
                             f"sleep(0) or a timeout under {ZERO_TIMEOUT_NS / 1e6:g} ms", gid), g))
        if acc[_MOST] >= starved * 1e9:
            end = (acc[_MOST_AT] - t0) / 1e9
            length = acc[_MOST] / 1e9
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


# -- leaks -----------------------------------------------------------------------

def _leaks(rows, leaked_after: float, pace) -> list:
    """Greenlets spawned by a cell that finished ``leaked_after`` seconds
    ago or more, that nothing in the notebook's namespace refers to (in
    IPython only); ``pace()`` between steps, as the other lints."""
    candidates = []
    for part in pace.chunks(rows):
        candidates += [row for row in part if row.cell is not None and row.state != "dead"]
    if not candidates:
        return []
    ipython = ipython_shell()
    if ipython is None:
        return []
    now = time.monotonic()
    running = getattr(ipython, "execution_count", None)
    old = []
    for part in pace.chunks(candidates, 256):
        for row in part:
            finished = cell_finished.get(row.cell)
            if finished is None:
                if _watching_since is None or row.cell == running:
                    continue
                finished = _watching_since   # ran before we watched
            if now - finished >= leaked_after:
                old.append((row, now - finished))
    if not old:
        return []
    held = _user_reachable_greenlets(ipython, pace=pace)
    out = []
    for part in pace.chunks(old, 256):
        for row, age in part:
            if row.id in held:
                continue
            out.append((Lint("leaked", row.name, row.spawn_site,
                             f"alive {age:.0f} s after In[{row.cell}] finished "
                             f"({row.state}{', on ' + row.waits_on if row.waits_on else ''}); "
                             f"nothing in the notebook's namespace refers to it", row.id),
                        row.greenlet))
    return out


def _user_reachable_greenlets(ipython, depth: int = 4, budget: int = 200_000,
                              pace=None) -> set:
    """ids of the greenlets reachable from the user's namespace (names not
    starting with "_", not IPython's own), through containers, Groups and
    instances' attributes, ``depth`` levels deep. ``pace()`` every 256
    objects (a namespace changed meanwhile is seen in part: a greenlet
    just stored may be missed once, and reported the next time round)."""
    pace = pace or Pace()
    ns = ipython.user_ns
    hidden = getattr(ipython, "user_ns_hidden", {})
    level = [v for k, v in list(ns.items())
             if not k.startswith("_") and k not in hidden and k not in ("In", "Out")]
    seen, found = set(), set()
    looked = 0
    for _ in range(depth + 1):
        nxt = []
        for obj in level:
            looked += 1
            if looked & 255 == 0:
                pace()
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
