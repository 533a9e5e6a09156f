"""The lost wake-up lint: a greenlet parked, with no timer, on something
nothing can ever wake -- an Event, a Queue, a lock... that only its waiters
refer to, an fd that is closed, a join of a greenlet already dead.

Interface (:mod:`tracing.lints` runs it among the lints and re-exports the
public names):

    lost_wakeups(rows, pace=None, heap=None) -> [Finding]
        the findings for a snapshot's rows (call from the hub's thread);
        ``pace()`` is called after each step of work (a
        :class:`tracing.pace.Pace`: it yields to the loop between
        pieces); ``heap`` a :class:`HeapCheck` kept between calls.
    HeapCheck(after=LOST_WAKEUP_AFTER, recheck=2.0, max_recheck=30.0, traverse=True)

What a parked greenlet waits on is read by :func:`tracing.waited.waited_object`
(the console's wait-for graph asks it too).

Who refers to the object a parked greenlet waits on is decided in three
steps, cheapest first; each later step runs only for the objects the
earlier ones could not decide:

1. **Audit** (:func:`_audit`, O(waiters), no heap traversal):
   ``sys.getrefcount(obj)`` against the references the waiters' side
   accounts for -- their frames' plain locals, the dict a frame caches its
   locals in if it has one (3.10; on 3.11-3.12 only if something read
   ``f_locals``: the tracer reads the frames' slots, labkit._frame_locals),
   their greenlets' ``_run``/``args``/``kwargs``, the
   function labkit's ``Greenlet.run`` called and its own closure cells, and
   the dicts, lists, tuples, bound methods, functions and cells only they
   refer to (checked the same way, to a fixed point) -- and the lint's own
   temporaries. All accounted for: nothing else refers to it, "lost". A
   reference left over may be a holder or one the audit cannot attribute
   (a cell of a function it does not know, a frame's value stack --
   ``with lock:`` keeps ``lock.__exit__`` there --, C code): undecided.
   The counts are read in pieces; they stay true while every waiter stays
   suspended on the same frame (and each cell counted holds what it held),
   which is checked, with the final ``getrefcount``, in one piece. (On
   3.10 a call from Python to Python keeps its arguments on the caller's
   value stack: the audit rarely proves anything there, and step 3
   decides.)
2. **Witness** (:func:`tracing.witness.witnesses`, in pieces): a search
   forward from the roots Python can see -- the other greenlets' frames
   and fields, other threads' frames, ``sys.modules`` -- never through the
   waiters. A path found, and still there when walked again in one piece,
   means "held". It reads no C extension's objects and holds no list of
   the whole heap; it reads at most :data:`WITNESS_BUDGET` objects.
3. **Referrers** (:func:`_only_waiters_refer`): what the earlier steps left
   -- no path found, a reference the audit cannot attribute -- is asked of
   the collector, ``gc.get_referrers``: a pass over the whole heap (~1 ms
   per 10,000 objects here), one piece. That is the only step longer than
   a piece, and it runs only in those ambiguous cases: a wait on an object
   held only through a cell the audit does not know, a value stack, a
   generator or a C object (or an object past the search's budget).

The verdicts are those of step 3 with the other greenlets' locals -- the
lint's definition since it was written -- except where step 1 proves
more: an object reached only through private containers nested deeper
than the two levels step 3 looks through, or only through the waiter's
own closure (step 3 takes any cell for a holder), is "lost" (it is). A
lost verdict is never given for an object something other than its
waiters can reach through references the collector or the search can see.

(A search of a ``gc.get_objects()`` list in chunks, yielding between them,
was tried for step 3 and removed: on CPython 3.12, in a process that had
run Playwright's greenlets, one ``gc.get_referents`` of a chunk grew the
process by ~1 GB/s until the kernel killed it -- objects kept alive across
yields by that list, then traversed. Step 2 holds only objects reachable
from roots, as any code does, and reads their fields itself.)
"""
from __future__ import annotations

import gc
import operator
import os
import sys
import time
import types
from typing import NamedTuple

from greenlet import greenlet as _raw_greenlet

import labkit.greenlet as _lk_greenlet
from labkit._frame_locals import local as frame_local, locals_of
from labkit.util import greenlet_name

from tracing.pace import Pace
from tracing.waited import waited_object
from tracing.witness import witnesses as _witnesses

__all__ = ["Finding", "lost_wakeups", "HeapCheck",
           "LOST_WAKEUP_AFTER", "MAX_CONTAINERS", "WITNESS_BUDGET"]

#: seconds every waiter of an object must have been parked on it (on the
#: same frame) before a :class:`HeapCheck` asks who refers to it
LOST_WAKEUP_AFTER = 1.0
#: step 3: containers (tuples, dicts, bound methods) holding a waited-on
#: object that are looked through (a second gc.get_referrers); past this,
#: the object counts as held
MAX_CONTAINERS = 100
#: step 2: objects the forward search reads before it leaves the rest to
#: step 3 (the first level -- the greenlets' frames, the modules' globals --
#: is always read whole)
WITNESS_BUDGET = 100_000


class Finding(NamedTuple):
    """One lost wake-up: the greenlet's name, its line, the evidence, its
    id, and the greenlet."""
    name: str
    line: str
    evidence: str
    id: int
    greenlet: object


def _fd_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


# -- the lint -------------------------------------------------------------------------

def lost_wakeups(rows, pace=None, heap: "HeapCheck | None" = None) -> list[Finding]:
    """The lost wake-ups among a snapshot's ``rows`` (see the module
    docstring). ``heap``: see :class:`HeapCheck`; without one, every parked
    waiter's object is decided now."""
    pace = pace or Pace()
    out: list[Finding] = []
    # One list [object, rows] per waited-on object: the only reference this
    # module holds to it while the audit counts (see _audit).
    by_object: dict[int, list] = {}
    for row in rows:
        pace()
        g = row.greenlet
        if row.state != "parked" or g is None or g.dead or g.gr_frame is None:
            continue
        words = row.waits_on
        if words.startswith("fd "):
            fd = words.split()[1]
            if fd.isdigit() and _fd_closed(int(fd)):
                out.append(Finding(row.name, row.where,
                                   f"parked on {words}, and fd {fd} is closed", row.id, g))
            continue
        if words.startswith(("timer", "sleep", "not started", "select", "idle")):
            continue
        obj, timed = waited_object(g)
        if obj is None or timed:
            obj = None
            continue
        if isinstance(obj, _raw_greenlet):
            if obj.dead:
                out.append(Finding(row.name, row.where,
                                   f"joins {greenlet_name(obj)}, which is already dead, "
                                   f"with no timeout", row.id, g))
            obj = None
            continue
        group = by_object.get(id(obj))
        if group is None:
            group = by_object[id(obj)] = [obj, []]
        group[1].append(row)
        obj = None
    groups = list(by_object.values())
    by_object.clear()
    if not groups:
        return out
    pace()
    greenlets = []
    for part in pace.chunks(rows):
        greenlets += [row.greenlet for row in part if row.greenlet is not None]
    # No collection while deciding (in pieces, the caller's Pace turns it on
    # between them): one can run finalizers -- a collected greenlet is
    # killed, which switches into it -- between a count and its check.
    collecting = pace.between is None and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return out + _verdicts(groups, greenlets, pace, heap)
    finally:
        if collecting:
            gc.enable()
        for group in groups:
            group.clear()   # (no object kept by what outlives the call: a frame in a cycle)


def _verdicts(groups: list, greenlets: list, pace, heap) -> list[Finding]:
    out = []
    if heap is None:
        lost = _decide(groups, greenlets, pace, None)
    else:
        check, known = heap.select(groups, pace)
        start = time.perf_counter_ns()
        lost = _decide(check, greenlets, pace, heap) if check else []
        heap.record(lost, time.perf_counter_ns() - start if check else 0)
        lost += known
    # (in pieces: 10,000 waiters of one object are ~20 ms of findings)
    for group in lost:
        pace()
        waiters = group[1]
        if pace.cuts:   # the loop ran meanwhile: only those still parked on it
            still = []
            for part in pace.chunks(waiters, 128):
                still += [row for row in part if not row.greenlet.dead
                          and row.greenlet.gr_frame is not None
                          and waited_object(row.greenlet)[0] is group[0]]
            waiters = still
            if not waiters:
                continue
        kind = type(group[0]).__name__
        for part in pace.chunks(waiters, 128):
            for row in part:
                out.append(Finding(row.name, row.where,
                                   f"parked on {row.waits_on or kind} with no timeout; nothing "
                                   f"but its waiters ({len(waiters)}) refers to that {kind}, "
                                   f"so nothing can wake it", row.id, row.greenlet))
    return out


def _decide(groups: list, greenlets: list, pace, heap) -> list:
    """The groups whose object only its waiters refer to: steps 1, 2, 3
    (``greenlets``: the snapshot's, where step 2 starts)."""
    lost, rest = [], []
    for group in groups:
        if _audit(group, pace):
            lost.append(group)
        else:
            rest.append(group)
    if heap is not None:
        heap.audited += len(groups)
    if not rest:
        return lost
    held = _witnesses(rest, greenlets, pace, budget=WITNESS_BUDGET)
    rest = [group for group in rest if id(group[0]) not in held]
    if heap is not None:
        heap.witnessed += len(held)
    if not rest:
        return lost
    # The search read every other greenlet's frames' locals, which refreshes
    # the dict each of them caches its locals in: one read before, while the
    # frame held the object, kept a reference to it there (a stale one, that
    # the audit cannot attribute). Audit again.
    again = []
    for group in rest:
        (lost if _audit(group, pace) else again).append(group)
    rest = again
    if not rest:
        return lost
    if heap is not None and not heap.traverse:
        heap.undecided += len(rest)     # (not lost: asked again later, as held)
        return lost
    pace.cut()     # (the traversal starts a piece of its own)
    start = time.perf_counter_ns()
    lost += _only_waiters_refer(rest, pace)
    if heap is not None:
        heap.traversals += 1
        heap.traversal_ns = time.perf_counter_ns() - start
    return lost


# -- step 1: the audit -----------------------------------------------------------------

_CODE_FLAGS_NOT_PLAIN = 0x20 | 0x80 | 0x100 | 0x200   # generator, coroutine, iterable coro, async gen
#: what the audit looks through: what step 3 calls a container (a dict, a
#: list, a tuple, a bound method), so that both agree
_AUDITED = (dict, list, tuple, types.MethodType, types.FunctionType, types.CellType)


def _audit(group: list, pace) -> bool:
    """True if every reference to ``group[0]`` is accounted for by its
    waiters (``group[1]``: their rows) -- so nothing else refers to it,
    directly or through anything else. False: it cannot tell. The counts
    are read in pieces; the check is one piece of O(waiters) (see the
    module docstring)."""
    counts: dict[int, list] = {}    # id -> [container, references from the waiters' side]
    held = _Held()
    direct = 0
    for row in group[1]:
        pace()
        n = _count_waiter(group[0], row.greenlet, counts, held)
        if n is None:
            return False
        direct += n
    direct += _settle(group, counts, pace)
    # (freed in pieces too: a list per container, 20,000 of them at
    # 10,000 waiters, held the loop for ~1 ms when freed at once)
    pace.empty(counts)
    # One piece from here: the waiters as they were counted, and the count.
    # A piece of its own when they are many (~0.4-0.65 ms at 10,000 here,
    # up to ~1.5 ms with the other core busy), neither the end of one under
    # way nor the start of the next (the next group's audit, the search).
    own_piece = len(held.greenlets) >= _OWN_PIECE_WAITERS
    if own_piece:
        pace.cut()
    # (group's slot and getrefcount's argument are the audit's own references)
    unchanged = held.still() and sys.getrefcount(group[0]) - 2 == direct
    if own_piece:
        pace.cut()
    return unchanged


#: Waiters from which the audit's final check starts a piece of its own.
_OWN_PIECE_WAITERS = 1024


_GR_FRAME = operator.attrgetter("gr_frame")
_CELL_CONTENTS = operator.attrgetter("cell_contents")


class _Held:
    """What the audit's final check reads again: each greenlet counted and
    the frame it was on, each closure cell counted and what its frame's
    cached locals held. Flat lists, so that the check of 10,000 waiters
    is a loop in C (~0.4 ms here), where a Python call per waiter held the
    loop for ~3 ms. Each list holds one reference to each item, as the
    audit counts (see _count_waiter)."""

    __slots__ = ("greenlets", "frames", "cells", "contents")

    def __init__(self):
        self.greenlets: list = []
        self.frames: list = []
        self.cells: list = []
        self.contents: list = []

    def still(self) -> bool:
        """Every greenlet still suspended on the frame it was counted on,
        every cell still holding what it held (by identity: no __eq__ runs)."""
        try:
            return all(map(operator.is_, map(_GR_FRAME, self.greenlets), self.frames)) \
                and all(map(operator.is_, map(_CELL_CONTENTS, self.cells), self.contents))
        except ValueError:      # a cell emptied since
            return False


def _count_waiter(obj, g, counts: dict, held: "_Held") -> int | None:
    """The references ``g``'s frames and fields hold to ``obj`` (returned) and
    to containers (added to ``counts``); None if they cannot be counted.
    ``held`` gets what the caller checks again at the end: the greenlet
    and its innermost frame, and each cell counted with its contents."""
    frame = g.gr_frame
    if frame is None:
        return None
    held.greenlets.append(g)
    held.frames.append(frame)
    direct = 0
    # The function labkit's Greenlet.run called (its _run): its frame holds
    # the function (f_func, 3.11+) and, for its free variables, the
    # function's own cells -- which the audit can then count.
    run = getattr(g, "_run", None)
    if type(run) is not types.FunctionType or not _F_FUNC:
        run = None      # (a bound method's frame holds its function, not the method)
    closure = run.__closure__ if run is not None else None
    while frame is not None:
        code = frame.f_code
        if code.co_flags & _CODE_FLAGS_NOT_PLAIN:
            return None     # a generator's frame: its object may be held by anyone
        local, cached = locals_of(frame)   # cached: the dict the frame keeps (if any)
        if cached and sys.getrefcount(local) != 3:   # the frame, `local`, the argument
            return None     # someone kept it (locals()): it holds references too
        cells = code.co_cellvars + code.co_freevars
        called = run is not None and _called_by_greenlet_run(frame, g, run)
        if called:
            _add(counts, run, 1)     # the frame's function
        for name, value in local.items():
            if name in cells:
                if not (called and closure and name in code.co_freevars):
                    continue    # a cell's: who else holds the cell is not known here
                cell = closure[code.co_freevars.index(name)]
                held.cells.append(cell)       # (the cached dict must still match it)
                held.contents.append(value)
                _add(counts, cell, 2)         # the frame's slot, and `held` (ours)
                n = 2 if cached else 1        # the cached dict, and `held` (ours)
            else:
                n = 2 if cached else 1    # the frame's slot (and the cached dict's)
            if value is obj:
                direct += n
            elif type(value) in _AUDITED and value:   # (an empty one leads nowhere)
                _add(counts, value, n)
        value = local = None
        frame = frame.f_back
    for attr in ("_run", "args", "kwargs"):    # labkit's Greenlet: slots
        value = getattr(g, attr, None)
        if value is obj:
            direct += 1
        elif type(value) in _AUDITED and value:
            _add(counts, value, 1)
    return direct


def _add(counts: dict, value, n: int) -> None:
    entry = counts.get(id(value))
    if entry is None:
        counts[id(value)] = [value, n]
    else:
        entry[1] += n


#: an interpreter frame holds its function (3.11+: f_func, f_funcobj)
_F_FUNC = sys.version_info >= (3, 11)
_GREENLET_RUN_FILE = _lk_greenlet.__file__


def _called_by_greenlet_run(frame, g, run) -> bool:
    """Whether ``frame`` is the call of ``run`` (``g._run``, a function)
    that labkit's ``Greenlet.run`` is in: its caller is that method's frame
    (by its locals: ``self`` is g, ``run`` is run -- code objects of labkit
    functions are _park's to compare), it has run's name, and its free
    variables are run's closure, each holding what the frame sees (checked
    again at the end of the audit)."""
    back = frame.f_back
    if back is None or back.f_code.co_name != "run" or \
            back.f_code.co_filename != _GREENLET_RUN_FILE:
        return False
    if frame_local(back, "self") is not g or frame_local(back, "run") is not run:
        return False
    code = frame.f_code
    closure = run.__closure__ or ()
    if code.co_name != run.__name__ or len(code.co_freevars) != len(closure):
        return False
    for name, cell in zip(code.co_freevars, closure):
        try:
            if frame_local(frame, name) is not cell.cell_contents:
                return False
        except ValueError:
            return False
    return True


def _settle(group: list, counts: dict, pace) -> int:
    """The references to ``group[0]`` from containers only its waiters'
    side refers to (a fixed point: a container whose every reference is
    that side's is private, and its own references count for it too).
    In pieces: a container found private stays so while the waiters stay
    suspended (nothing else can reach it to take a reference), which the
    caller checks at the end."""
    obj = group[0]
    direct = 0
    private = set()
    changed = True
    steps = 0
    while changed:
        changed = False
        for key in list(counts):
            steps += 1      # (a private one too: 20,000 of them are ~1 ms)
            if steps & 15 == 0:
                obj = None
                pace()
                obj = group[0]
            if key in private:
                continue
            entry = counts[key]
            container = entry[0]
            # (its entry's slot, the local, getrefcount's argument: ours)
            if sys.getrefcount(container) - 3 != entry[1]:
                container = None
                continue
            private.add(key)
            changed = True
            for child in _contents(container):
                if child is obj:
                    direct += 1
                elif type(child) in _AUDITED and child:
                    found = counts.get(id(child))
                    if found is None:
                        counts[id(child)] = [child, 1]
                    else:
                        found[1] += 1
            child = container = None
    return direct


def _contents(container) -> list:
    """What a dict, list, tuple or bound method refers to, each as often as
    it does; of a function, a cell: what may lead to the object (its
    closure and defaults; its contents)."""
    kind = type(container)
    if kind is dict:
        return [*container.keys(), *container.values()]
    if kind is types.MethodType:
        return [container.__func__, container.__self__]
    if kind is types.FunctionType:
        return [x for x in (container.__closure__, container.__defaults__,
                            container.__kwdefaults__) if x is not None]
    if kind is types.CellType:
        try:
            return [container.cell_contents]
        except ValueError:
            return []
    return list(container)


# -- step 3: the collector's referrers --------------------------------------------------

def _only_waiters_refer(entries: list, pace=None) -> list:
    """The groups ([object, waiter rows]) of ``entries`` whose every
    referrer the collector knows belongs to their waiters: their frames,
    args, attribute dicts, or a small container or bound method only those
    refer to (a dict nothing refers to is a frame's f_locals cache).
    gc.get_referrers for all objects at once, then once more for the
    containers: two heap traversals however many objects, each one piece:
    ``pace`` is called between the pieces around them, not inside."""
    # Tuples, passed on as ``*objects``: gc.get_referrers then gets this very
    # tuple (in bookkeeping) as its arguments; from a list, 3.13 builds one
    # that the collector sees referring to every object (no lint ever).
    objects = tuple(group[0] for group in entries)
    index = {id(obj): i for i, obj in enumerate(objects)}
    pace = pace or Pace()
    ours = []
    for group in entries:
        mine = set()
        for row in group[1]:
            pace()
            g = row.greenlet
            mine.add(id(g))
            frame = g.gr_frame
            while frame is not None:
                # the frame, and the dict f_locals caches on it, if it has
                # one (3.10: reading a parked frame's locals leaves one)
                mine.add(id(frame))
                mapping, cached = locals_of(frame)
                if cached:
                    mine.add(id(mapping))
                mapping = None
                frame = frame.f_back
            for attr in ("args", "kwargs", "__dict__", "_run"):
                value = getattr(g, attr, None)
                if value is not None:
                    mine.add(id(value))
        ours.append(mine)
    # This function's own bookkeeping refers to the objects too.
    bookkeeping = {id(entries), id(objects), *(id(group) for group in entries)}
    clean = [True] * len(objects)
    containers: dict[int, tuple] = {}     # id -> (container, [object indices])
    referrers = gc.get_referrers(*objects)
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
            outer = gc.get_referrers(*held_list)
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
    return [group for group, ok in zip(entries, clean) if ok]


# -- the verdicts kept between live lints ----------------------------------------------

class HeapCheck:
    """What the lost wake-up lint learnt, kept between live lints (pass the
    same one as ``lints(heap=...)``; the console's and the attach's
    refreshes keep one), so that deciding runs rarely and only when it can
    matter:

    - only for objects whose waiters have all been parked on the same
      frame and instruction for ``after`` seconds, counted from the first
      call that saw them there (a waiter that moved starts its clock again);
    - a verdict is kept while the object's waiters stay as they were: "nothing
      else refers to it" stands for good (nothing can take a reference to
      an object nothing refers to), "something else refers to it" is asked
      again after ``recheck`` seconds, doubling each time it is confirmed,
      up to ``max_recheck`` (the referrer may let go: a lost wake-up is then
      reported up to that much later than without a HeapCheck).

    What it cost: ``last_ns`` (deciding, in the latest call: all its
    pieces; 0 if nothing was decided), ``total_ns`` and ``runs`` (calls
    that decided something); how: ``audited`` (objects audited, step 1),
    ``witnessed`` (found held by step 2), ``traversals`` (calls that needed
    step 3's heap traversal, the one step that is not in pieces) and
    ``traversal_ns`` (the latest one's).

    ``traverse=False``: never run step 3. What only it could decide is left
    undecided -- no lint, asked again like a held object, and counted in
    ``undecided`` (the latest call's). For a process that must never be
    paused for longer than a piece (the attach server: one traversal is
    ~1 ms per 10,000 objects): a wait held only by a C object, a value
    stack or a generator, or on 3.10 most lost wake-ups, then goes
    unreported there.
    """

    def __init__(self, after: float | None = None, recheck: float = 2.0,
                 max_recheck: float = 30.0, traverse: bool = True):
        if not isinstance(traverse, bool):
            raise TypeError(f"traverse must be a bool, not {type(traverse).__name__}")
        self.traverse = traverse
        self.undecided = 0
        after = LOST_WAKEUP_AFTER if after is None else after
        for name, value in (("after", after), ("recheck", recheck),
                            ("max_recheck", max_recheck)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        self.after, self.recheck, self.max_recheck = after, recheck, max_recheck
        # id(greenlet) -> (id(frame), f_lasti, first seen there): flat, so the
        # first young collection untracks it (a nested key tuple kept the
        # outer one tracked, and a thousand of them reached the oldest
        # generation: a full collection every ~130 console refreshes)
        self._since: dict = {}
        # id(object) -> (its waiters, when decided, lost, next look, interval)
        self._verdicts: dict = {}
        self._checking: list = []   # (id(object), waiters, same as before) of the latest select
        self._now = 0.0
        self.last_ns = self.total_ns = self.runs = 0
        self.audited = self.witnessed = self.traversals = self.traversal_ns = 0

    def select(self, groups: list, pace=None) -> tuple[list, list]:
        """(groups to decide now, groups known to be lost); ``pace()``
        after each waiter. A group: [object, its waiters' rows]."""
        pace = pace or Pace()
        now = time.monotonic()
        self.undecided = 0
        since, seen = self._since, {}
        check, lost, verdicts, checking = [], [], {}, []
        after = self.after
        for group in groups:
            latest = 0.0     # when the waiter that came to its place last did
            for row in group[1]:
                pace()
                g = row.greenlet
                frame = g.gr_frame
                fid, lasti = (id(frame), frame.f_lasti) if frame is not None else (None, None)
                first = since.get(id(g))
                if first is not None and first[0] == fid and first[1] == lasti:
                    # still in its place: the same entry, not a new tuple (a
                    # run over 10,000 waiters made 10,000, which the next
                    # young collection traversed: ~1.5 ms on the loop)
                    start = first[2]
                    seen[id(g)] = first
                else:
                    start = now
                    seen[id(g)] = (fid, lasti, start)
                if start > latest:
                    latest = start
            if now - latest < after:
                continue
            oid = id(group[0])
            count = len(group[1])
            verdict = self._verdicts.get(oid)
            # The same waiters as when it was decided: as many, each in its
            # place since before (one that came since started its clock
            # after; one seen nowhere in a call is forgotten)
            same = verdict is not None and verdict[0] == count and latest <= verdict[1]
            if same:
                verdicts[oid] = verdict
                if verdict[2]:
                    lost.append(group)
                    continue
                if now < verdict[3]:
                    continue
            check.append(group)
            checking.append((oid, count, same))
        self._since = seen      # (greenlets no longer parked are forgotten)
        self._verdicts = verdicts
        self._checking = checking
        self._now = now
        return check, lost

    def record(self, lost: list, cost_ns: int) -> None:
        """The verdicts for the groups of the latest :meth:`select`:
        ``lost`` those found lost."""
        lost_ids = {id(group[0]) for group in lost}
        made = self._now
        now = time.monotonic()
        for oid, count, same in self._checking:
            old = self._verdicts.get(oid)
            interval = self.recheck
            if same and old is not None and not old[2]:
                interval = min(self.max_recheck, old[4] * 2)
            self._verdicts[oid] = (count, made, oid in lost_ids, now + interval, interval)
        self._checking = []
        self.last_ns = cost_ns
        if cost_ns:
            self.total_ns += cost_ns
            self.runs += 1

