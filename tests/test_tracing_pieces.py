"""The console's capture in pieces (issues 19/20: attaching must not hold the
target's loop for long): the snapshot yields between pieces and says which
rows changed meanwhile, and the lost wake-up's heap traversal runs only for
waiters parked long enough, with its verdicts kept (tracing.lints.HeapCheck)."""
import sys
import time

import pytest

import labkit
from labkit.event import Event
from labkit.queue import Queue
from tracing.frames import capture
from tracing.lints import HeapCheck, lints
from tracing.snapshot import snapshot

pytestmark = pytest.mark.timeout(60)
snapshot_module = sys.modules["tracing.snapshot"]


def test_a_snapshot_in_pieces_yields_and_marks_the_rows_that_ran_meanwhile(recording,
                                                                          monkeypatch):
    event, queue = Event(), Queue()

    def mover():
        event.wait()
        queue.get()

    first = labkit.spawn(mover)          # read in the first piece, then it runs
    first.name = "mover"
    others = [labkit.spawn(Event().wait) for _ in range(200)]
    labkit.sleep(0.01)
    try:
        whole = snapshot()
        assert whole.changed == frozenset()
        assert whole.row("mover").waits_on == "Event"
        cuts, nested = [], []

        def between():
            cuts.append(1)
            if len(cuts) == 1:
                event.set()              # mover runs while the snapshot yields
            if len(cuts) == 2:
                nested.append(snapshot())   # another snapshot meanwhile: no harm
            labkit.spawn(lambda: None)   # greenlets spawned meanwhile are not rows
            labkit.sleep(0)

        monkeypatch.setattr(snapshot_module, "PIECE_NS", 0)
        paced = snapshot(between=between)
        assert len(cuts) >= 200 // 32
        assert {row.id for row in paced.rows} == {row.id for row in whole.rows}
        # read before it ran: marked, and the next snapshot reads it again
        assert paced.row("mover").waits_on == "Event"
        assert id(first) in paced.changed
        assert not paced.changed & {id(g) for g in others}
        assert nested and nested[0].row("mover") is not None
        assert snapshot().row("mover").waits_on == "Queue.get"
        assert snapshot(between=between).row("mover").waits_on == "Queue.get"
    finally:
        labkit.killall([first, *others])


def test_a_snapshot_in_pieces_refuses_a_between_that_is_not_callable():
    with pytest.raises(TypeError, match="between"):
        snapshot(between=3)


def _forgotten(name):
    def wait():
        Event().wait()

    g = labkit.spawn(wait)
    g.name = name
    return g


def _lost(found):
    return {lint.greenlet for lint in found if lint.kind == "lost wake-up"}


def test_the_heap_is_asked_once_waiters_settled_and_a_lost_verdict_is_kept():
    heap = HeapCheck(after=0.2)
    g = _forgotten("forgotten")
    labkit.sleep(0.01)
    try:
        assert "forgotten" in _lost(lints())          # without a HeapCheck: at once
        assert "forgotten" not in _lost(lints(heap=heap))   # not parked long enough yet
        assert heap.runs == 0 and heap.last_ns == 0
        labkit.sleep(0.25)
        assert "forgotten" in _lost(lints(heap=heap))
        assert heap.runs == 1 and heap.last_ns > 0
        assert "forgotten" in _lost(lints(heap=heap))   # the verdict stands: no traversal
        assert heap.runs == 1 and heap.last_ns == 0
    finally:
        labkit.kill(g)


_HELD = {}


def test_a_held_object_is_asked_about_again_and_found_once_let_go():
    # (recheck: long enough that two lints in a row fall within it even
    # when the whole suite's heap makes each take ~0.1 s)
    heap = HeapCheck(after=0.05, recheck=1.0, max_recheck=1.0)
    _HELD["event"] = Event()     # a referrer the collector sees: a module's dict

    def wait():
        event = _HELD["event"]
        event.wait()

    g = labkit.spawn(wait)
    g.name = "held"
    labkit.sleep(0.01)
    try:
        assert "held" not in _lost(lints(heap=heap))   # its clock starts
        assert heap.runs == 0
        labkit.sleep(0.06)
        assert "held" not in _lost(lints(heap=heap))
        assert heap.runs == 1
        assert "held" not in _lost(lints(heap=heap))   # within recheck: not asked
        assert heap.runs == 1
        labkit.sleep(1.05)
        assert "held" not in _lost(lints(heap=heap))
        assert heap.runs == 2
        _HELD.clear()        # nobody but its waiter refers to it now
        deadline = time.monotonic() + 10
        while "held" not in _lost(lints(heap=heap)):
            assert time.monotonic() < deadline
            labkit.sleep(0.05)
        assert heap.runs >= 3
    finally:
        _HELD.clear()
        labkit.kill(g)


def test_a_frame_says_what_the_heap_traversal_cost(recording):
    heap = HeapCheck(after=0.0)
    g = _forgotten("lost-in-frame")
    labkit.sleep(0.01)
    try:
        frame = capture(between=lambda: labkit.sleep(0), heap=heap)
        assert frame["heap_ms"] > 0 and heap.runs == 1
        assert any(lint["greenlet"] == "lost-in-frame" for lint in frame["lints"])
        frame = capture(between=lambda: labkit.sleep(0), heap=heap)
        assert frame["heap_ms"] == 0.0     # the verdict is kept
        assert any(lint["greenlet"] == "lost-in-frame" for lint in frame["lints"])
        assert isinstance(frame["changed"], list)
    finally:
        labkit.kill(g)


def test_heap_check_thresholds_are_checked():
    with pytest.raises(ValueError, match="after"):
        HeapCheck(after=-1)
    with pytest.raises(TypeError, match="recheck"):
        HeapCheck(recheck="soon")


def test_pace_empty_lets_go_of_a_dict_or_a_set_in_slices_with_a_yield_after_each():
    from tracing.pace import Pace
    yields = []
    d, s = {n: [n] for n in range(2500)}, set(range(2100))
    pace = Pace(lambda: yields.append((len(d), len(s))), piece_ns=0)
    pace.empty(d)
    pace.empty(s, size=1000)
    assert not d and not s
    assert yields == [(1476, 2100), (452, 2100), (0, 2100), (0, 1100), (0, 100), (0, 0)]


def test_a_first_snapshot_in_pieces_lets_go_of_what_it_read_in_pieces(recording, monkeypatch):
    # The first snapshot after a recording starts takes every greenlet's
    # id as "ran since the last one", and reads the registry from a copy:
    # 10,000 of each, freed when the snapshot returned, held the loop for
    # ~0.6 ms after its last piece.
    from tracing.pace import Pace
    greenlets = [labkit.spawn(Event().wait) for _ in range(300)]
    labkit.sleep(0)
    emptied = []
    real = Pace.empty
    monkeypatch.setattr(Pace, "empty", lambda self, c, size=1024:
                        emptied.append((type(c).__name__, len(c))) or real(self, c, size))
    try:
        snapshot(between=lambda: labkit.sleep(0))
    finally:
        labkit.killall(greenlets)
    sizes = dict(emptied)
    assert sizes.get("dict", 0) >= 300 and sizes.get("set", 0) >= 300, emptied


def test_the_caches_a_first_snapshot_fills_grow_one_at_a_time_between_yields():
    # Each doubles its table on the way to an entry per greenlet; three of
    # them doubling in the same row made one piece of ~1 ms at 10,000.
    from tracing.pace import Pace
    known = {gid: None for gid in range(1000)}
    frames, static, parked, full = {7: "cached"}, {}, {}, {n: 0 for n in range(600)}
    seen = []
    pace = Pace(lambda: seen.append((len(frames), len(static), len(parked))), piece_ns=0)
    snapshot_module._grow_ahead((frames, static, parked, full), known, pace)
    assert frames.keys() == static.keys() == parked.keys() == known.keys()
    assert frames[7] == "cached" and frames[8] is None     # (None: nothing cached yet)
    assert len(full) == 600          # more than half there already: left to grow as it fills
    # a yield after each slice of 512: the caches grew one after the other
    assert seen == [(512, 0, 0), (1000, 0, 0), (1000, 512, 0), (1000, 1000, 0),
                    (1000, 1000, 512), (1000, 1000, 1000)]
