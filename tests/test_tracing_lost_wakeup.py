"""tracing.lost_wakeup: who refers to what a parked greenlet waits on, decided
by a reference count audit and a search from the roots, in pieces, and by a
heap traversal only when those cannot tell -- with the verdicts the heap
traversal alone gives (the lint's definition)."""
import functools
import itertools
import sys

import greenlet
import pytest

import labkit
import tracing.lints
import tracing.lost_wakeup as lost_wakeup
import tracing.waited as waited
from labkit.event import Event
from labkit.lock import Semaphore
from labkit.queue import Queue
from labkit.threading import Lock
from tracing.lints import HeapCheck, lints

pytestmark = pytest.mark.timeout(60)

#: holders the cases below put their primitives in (a module's globals)
_GLOBAL = {}


class _Holder:
    def __init__(self):
        self.items = []


def _spawn(name, fn, *args):
    g = labkit.spawn(fn, *args)
    g.name = name
    return g


def _wait_on(obj):
    """What parks on ``obj`` with no timer, for each kind of primitive."""
    if isinstance(obj, Event):
        return obj.wait()
    if isinstance(obj, Queue):
        return obj.get()
    return obj.acquire()


def _make(kind):
    if kind == "Lock":
        lock = Lock()
        lock.acquire()    # taken, and never given back: acquire() parks
        return lock
    if kind == "Semaphore":
        return Semaphore(0)
    return {"Event": Event, "Queue": Queue}[kind]()


KINDS = ("Event", "Queue", "Lock", "Semaphore")


def _only_its_waiter(kind):
    def waiter():
        obj = _make(kind)
        _wait_on(obj)
    return [_spawn(f"only-{kind}", waiter)]


def _global(kind):
    _GLOBAL[kind] = _make(kind)

    def waiter():
        _wait_on(_GLOBAL[kind])
    return [_spawn(f"global-{kind}", waiter)]


def _closure_of_another(kind):
    obj = _make(kind)

    def setter():
        labkit.sleep(60)
        obj.release() if kind in ("Lock", "Semaphore") else \
            obj.set() if kind == "Event" else obj.put(1)

    def waiter(o):
        _wait_on(o)
    return [_spawn(f"cell-{kind}", waiter, obj), _spawn("setter", setter)]


def _list_in_another_object(kind):
    holder = _Holder()
    holder.items.append(_make(kind))
    _GLOBAL["holder-" + kind] = [holder]     # reached: globals -> list -> instance -> list

    def waiter(h):
        obj = h.items[0]
        h = None
        _wait_on(obj)
    return [_spawn(f"list-{kind}", waiter, holder)]


def _c_dict_of_a_module(kind):
    # a dict held by a C module (sys), a partial, a bound method inside
    sys._labkit_lost_wakeup_test = {"cb": functools.partial(print, _make(kind))}

    def waiter():
        _wait_on(sys._labkit_lost_wakeup_test["cb"].args[0])
    return [_spawn(f"cdict-{kind}", waiter)]


def _c_object(kind):
    # held only by a C object the search does not read: the heap traversal decides
    _GLOBAL["repeat-" + kind] = itertools.repeat(_make(kind))

    def waiter():
        _wait_on(next(_GLOBAL["repeat-" + kind]))
    return [_spawn(f"cobj-{kind}", waiter)]


#: The step that proves "only its waiters": the audit, except on 3.10, where
#: a call from Python to Python keeps its arguments on the caller's value
#: stack, which the audit cannot read (the heap traversal then decides).
PROVES = "audit" if sys.version_info >= (3, 11) else "traversal"

#: case -> (lost?, which step decides: "audit", "witness" or "traversal")
CASES = {
    _only_its_waiter: (True, PROVES),
    _global: (False, "witness"),
    _closure_of_another: (False, "witness"),
    _list_in_another_object: (False, "witness"),
    _c_dict_of_a_module: (False, "witness"),
    _c_object: (False, "traversal"),
}


def _lost(found):
    return {lint.greenlet for lint in found if lint.kind == "lost wake-up"}


def _cleanup(gs):
    labkit.killall(gs)
    _GLOBAL.clear()
    sys.__dict__.pop("_labkit_lost_wakeup_test", None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES), ids=lambda case: case.__name__.strip("_"))
def test_each_holder_gets_its_verdict_from_the_cheapest_step(case, kind, monkeypatch):
    lost, step = CASES[case]
    # Which step decides, with a search that can read the whole heap: in a
    # process as big as the whole suite's, a path four levels under a
    # module can lie past WITNESS_BUDGET objects, and the traversal (step
    # 3) then decides -- the same verdict, a longer pause (seen on 3.10).
    monkeypatch.setattr(lost_wakeup, "WITNESS_BUDGET", 10**8)
    gs = case(kind)
    labkit.sleep(0.01)
    name = gs[0].name
    try:
        heap = HeapCheck(after=0.0)
        found = _lost(lints(heap=heap, between=lambda: labkit.sleep(0)))
        assert (name in found) is lost
        assert "setter" not in found
        assert heap.runs == 1 and heap.audited == 1
        assert heap.witnessed == (step == "witness")
        assert heap.traversals == (step == "traversal")
        # the same verdict from the heap traversal alone (the lint's definition)
        assert (name in _lost_by_traversal_alone()) is lost
    finally:
        _cleanup(gs)


def _lost_by_traversal_alone():
    """The lint as it was decided before the audit and the search: the heap
    traversal (step 3), then the other greenlets' frames' locals (what the
    collector cannot see), one level into small lists and tuples."""
    saved = lost_wakeup._audit, lost_wakeup._witnesses
    lost_wakeup._audit = lambda group, pace: False
    lost_wakeup._witnesses = _in_other_greenlets_locals
    try:
        return _lost(lints())
    finally:
        lost_wakeup._audit, lost_wakeup._witnesses = saved


def _in_other_greenlets_locals(groups, greenlets, pace, budget=None):
    held = set()
    for obj, rows in groups:
        waiting = {id(row.greenlet) for row in rows}
        for g in [*greenlets, labkit.get_hub().parent]:
            if id(g) in waiting or g.dead:
                continue
            frame = sys._getframe() if g is greenlet.getcurrent() else g.gr_frame
            while frame is not None:
                if "tracing" not in frame.f_code.co_filename:
                    for value in frame.f_locals.values():
                        if value is obj or (type(value) in (list, tuple) and len(value) < 64
                                            and any(item is obj for item in value)):
                            held.add(id(obj))
                frame = frame.f_back
    return held


def test_the_audit_counts_private_containers_and_many_waiters():
    # 50 waiters, each reaching the Event through its own args tuple and a
    # list they share, a bound method as a greenlet's run: all private
    box = [Event()]

    def waiter(b):
        b[0].wait()

    gs = [_spawn(f"boxed-{n}", waiter, box) for n in range(50)]
    gs.append(_spawn("bound", box[0].wait))
    labkit.sleep(0.01)
    box = None
    try:
        heap = HeapCheck(after=0.0)
        assert _lost(lints(heap=heap)) >= {g.name for g in gs}
        assert heap.traversals == (PROVES == "traversal") and heap.witnessed == 0
    finally:
        labkit.killall(gs)


def test_a_reference_the_caller_holds_in_a_local_is_a_holder():
    ev = Event()
    g = _spawn("callers", ev.wait)
    labkit.sleep(0.01)
    try:
        heap = HeapCheck(after=0.0)
        assert "callers" not in _lost(lints(heap=heap))
        assert heap.witnessed == 1 and heap.traversals == 0
        ev = None
        heap = HeapCheck(after=0.0)
        assert "callers" in _lost(lints(heap=heap))
        assert heap.traversals == (PROVES == "traversal")
    finally:
        labkit.kill(g)


def test_a_path_gone_while_the_search_yields_is_not_a_holder(monkeypatch):
    # the holder is deep (a chain of lists): the search takes pieces, and the
    # first one drops the holder; the path it then finds no longer exists
    ev = Event()
    chain = [ev]
    for _ in range(50):
        chain = [chain]
    _GLOBAL["chain"] = chain
    chain = None

    def waiter():
        e = _GLOBAL["chain"]
        while type(e) is list:
            e = e[0]
        e.wait()

    g = _spawn("chained", waiter)
    labkit.sleep(0.01)
    ev = None
    calls = []

    def between():
        if sys._getframe(2).f_code.co_name == "_search":
            calls.append(1)
            _GLOBAL.clear()
        labkit.sleep(0)

    monkeypatch.setattr(tracing.lints, "PIECE_NS", 0)
    try:
        heap = HeapCheck(after=0.0)
        assert "chained" in _lost(lints(heap=heap, between=between))
        assert calls
    finally:
        _cleanup([g])


def test_a_waiter_on_a_lock_inside_with_is_decided_exactly():
    # ``with lock:`` keeps lock.__exit__ on the frame's value stack, which
    # the audit cannot see: the lock is still found held by its global
    _GLOBAL["outer"] = Lock()
    inner = Lock()
    inner.acquire()

    def waiter(i):
        with _GLOBAL["outer"]:
            i.acquire()

    g = _spawn("with", waiter, inner)
    labkit.sleep(0.01)
    inner = None
    try:
        assert "with" in _lost(lints())      # the inner lock: only its waiter
        assert "with" in _lost_by_traversal_alone()
    finally:
        _cleanup([g])


def test_the_search_does_not_pass_through_the_waiters():
    # two greenlets each parked on what the other holds: each object is held
    # by a greenlet that is not its waiter (the lint's definition)
    a, b = Event(), Event()

    def one(mine, other):
        mine.wait()

    g1, g2 = _spawn("one", one, a, b), _spawn("two", one, b, a)
    labkit.sleep(0.01)
    a = b = None
    try:
        found = _lost(lints(heap=HeapCheck(after=0.0)))
        assert not {"one", "two"} & found
        assert not {"one", "two"} & _lost_by_traversal_alone()
    finally:
        labkit.killall([g1, g2])


def test_a_global_of_the_waiting_code_is_found_in_a_program_bigger_than_the_budget(
        monkeypatch):
    # A full run of the suite (hundreds of modules) made the search run out
    # of its budget before it reached _GLOBAL, a few levels down in this
    # module: a heap traversal then decided. The search now looks first in
    # the modules the waiters' code runs in. 40,000 objects are too few for
    # the whole search even in this file's run alone (here it needs 40,000
    # to 60,000), and enough for a quarter of them to find the holder.
    monkeypatch.setattr(lost_wakeup, "WITNESS_BUDGET", 40_000)

    def make():     # (nothing but _GLOBAL keeps waiter once this returns)
        ev = Event()

        def waiter():
            ev.wait()
        _GLOBAL["big program"] = [{"waiter": waiter}]
        return _spawn("global in a big program", waiter)

    g = make()
    labkit.sleep(0.01)
    try:
        heap = HeapCheck(after=0.0)
        assert g.name not in _lost(lints(heap=heap))
        assert heap.witnessed == 1 and heap.traversals == 0
    finally:
        _GLOBAL.pop("big program", None)
        _cleanup([g])


def test_a_closure_only_its_waiter_runs_is_audited():
    # the Event in the waiter's own closure cell (a nested function, a
    # lambda): only the waiter refers to it (the heap traversal alone would
    # call the cell a holder); the same function kept in a global: held
    def make(keep):
        ev, q = Event(), Queue()

        def waiter():
            ev.wait()
        if keep:
            _GLOBAL["waiter"] = waiter
        return _spawn(f"closure-{keep}", waiter), _spawn(f"lambda-{keep}", lambda: q.get())

    gs = [*make(False), *make(True)]
    labkit.sleep(0.01)
    try:
        heap = HeapCheck(after=0.0)
        found = _lost(lints(heap=heap)) & {g.name for g in gs}
        # (3.10: the heap traversal decides, and calls the cells holders)
        assert found == ({"closure-False", "lambda-False", "lambda-True"}
                         if PROVES == "audit" else set())
        assert heap.traversals == (PROVES == "traversal") and heap.witnessed == 1
    finally:
        _cleanup(gs)


def test_a_cell_changed_while_the_audit_yields_is_not_counted(monkeypatch):
    # the waiter's closure cell is given another Event while the audit
    # yields (a stale count would be a wrong verdict): the audit cannot
    # tell, and the verdict comes from the later steps
    holder = {}

    def make():
        ev = Event()

        def waiter():
            ev.wait()

        def swap(new):
            nonlocal ev
            ev = new
        return _spawn("swapped", waiter), swap

    g, swap = make()
    labkit.sleep(0.01)
    monkeypatch.setattr(tracing.lints, "PIECE_NS", 0)

    def between():
        # (the audit's pace after its counts, before its check: the one
        # while it lets go of them, Pace.empty's)
        pacer = sys._getframe(2)
        if pacer.f_code.co_name == "empty":
            pacer = pacer.f_back
        if pacer.f_code.co_name == "_audit" and "new" not in holder:
            calls.append(1)
            if len(calls) == 2:
                holder["new"] = Event()
                swap(holder["new"])
        labkit.sleep(0)

    calls = []
    try:
        heap = HeapCheck(after=0.0)
        found = _lost(lints(heap=heap, between=between))
        assert holder and "swapped" in found    # its Event: nothing refers to it now
        assert _lost(lints()) >= {"swapped"}
    finally:
        labkit.kill(g)


def test_what_a_greenlet_waits_on_is_not_taken_from_a_reused_frame():
    # a loop parks on a new Event each time, at the same instruction: its
    # new frame may be made where the last one was (the same id), while the
    # old Event lives on
    events = []

    def looper():
        while True:
            ev = Event()
            events.append(ev)
            ev.wait()

    g = _spawn("looper", looper)
    labkit.sleep(0.01)
    try:
        for _ in range(5):
            assert waited._waited_object_cached(g)[0] is events[-1]
            events[-1].set()
            labkit.sleep(0.01)
        assert len(events) == 6
    finally:
        labkit.kill(g)


def test_what_a_greenlet_waits_on_is_cached_without_tracked_objects():
    # A console describes every parked greenlet each refresh: what it keeps
    # per greenlet must not be objects the collector tracks (a thousand
    # parked greenlets' entries promoted to the oldest generation set off a
    # full collection, a pause of the target).
    import gc
    event = Event()
    greenlets = [_spawn(f"parked-{i}", event.wait) for i in range(50)]
    labkit.sleep(0.01)
    try:
        for g in greenlets:
            assert waited._waited_object_cached(g)[0] is event
            assert waited._waited_object_cached(g)[0] is event   # from the cache
        gc.collect()
        entries = [waited._waited_cache[id(g)] for g in greenlets]
        assert not [entry for entry in entries if gc.is_tracked(entry)]
    finally:
        event.set()
        labkit.sleep(0.01)


@pytest.mark.parametrize("case", [_only_its_waiter, _c_object],
                         ids=lambda case: case.__name__.strip("_"))
def test_without_the_heap_traversal_what_only_it_decides_is_left_undecided(case, monkeypatch):
    # The attach server's HeapCheck(traverse=False): no pause longer than a
    # piece; a wait only step 3 could decide gives no lint, and is counted.
    monkeypatch.setattr(lost_wakeup, "WITNESS_BUDGET", 10**8)   # (see the test above)
    lost, step = CASES[case]
    gs = case("Event")
    labkit.sleep(0.01)
    name = gs[0].name
    try:
        heap = HeapCheck(after=0.0, traverse=False)
        found = _lost(lints(heap=heap, between=lambda: labkit.sleep(0)))
        assert heap.traversals == 0
        if step == "traversal":
            assert name not in found and heap.undecided == 1
        else:
            assert (name in found) is lost and heap.undecided == 0
        # asked again later like a held object (not remembered as lost)
        assert name not in _lost(lints(heap=heap)) or step != "traversal"
    finally:
        _cleanup(gs)


def test_heap_check_refuses_a_traverse_that_is_not_a_bool():
    with pytest.raises(TypeError, match="traverse"):
        HeapCheck(traverse="no")


def test_a_waiter_still_in_its_place_keeps_its_entry_from_run_to_run():
    # What the check remembers per waiter (where it is parked and since
    # when) is one flat tuple; a waiter that has not moved keeps the same
    # one, so a run over many waiters allocates nothing per waiter for the
    # next young collection to traverse.
    ev = Event()
    gs = [_spawn(f"still-{n}", ev.wait) for n in range(20)]
    labkit.sleep(0.01)
    try:
        heap = HeapCheck(after=0.0)
        lints(heap=heap)
        first = dict(heap._since)
        assert {id(g) for g in gs} <= set(first)
        lints(heap=heap)
        assert all(heap._since[id(g)] is first[id(g)] for g in gs)
    finally:
        labkit.killall(gs)


def test_the_audits_final_check_of_many_waiters_is_a_piece_of_its_own(monkeypatch):
    # One piece by design (the counts hold while every waiter stays put),
    # O(waiters): ~0.4-0.65 ms at 10,000. Once the waiters are many (here:
    # 5) it is a piece alone: it neither ends one already under way nor
    # starts the next (the search that follows it, say).
    monkeypatch.setattr(lost_wakeup, "_OWN_PIECE_WAITERS", 5)
    monkeypatch.setattr(tracing.lints, "PIECE_NS", 10**12)   # (no yield but the cuts)
    event = Event()
    gs = [_spawn(f"many-{n}", event.wait) for n in range(8)]
    labkit.sleep(0.01)
    steps = []      # "count" (a waiter's), "yield", "check", in order
    monkeypatch.setattr(lost_wakeup._Held, "still",
                        lambda self, still=lost_wakeup._Held.still:
                        steps.append("check") or still(self))
    monkeypatch.setattr(lost_wakeup, "_count_waiter",
                        lambda *args, count=lost_wakeup._count_waiter:
                        steps.append("count") or count(*args))
    try:
        heap = HeapCheck(after=0.0)
        lints(heap=heap, between=lambda: (steps.append("yield"), labkit.sleep(0)))
    finally:
        labkit.killall(gs)
    checks = [i for i, step in enumerate(steps) if step == "check"]
    assert checks and steps.count("count") >= 8
    assert all(steps[i - 1] == "yield" for i in checks), steps     # (not "count")
    assert all(steps[i + 1] == "yield" for i in checks), steps
