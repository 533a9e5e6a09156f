"""tracing.lints in pieces: lints(between=...) yields to the loop at most
every PIECE_NS of work (the console's refresh on a thousand greenlets), and
what runs in between does not make a lint wrong."""
import sys

import pytest

import labkit
import tracing.lints
import tracing.snapshot   # noqa: F401  (the module: tracing.snapshot is also the function)
from labkit.event import Event
from tracing.lints import lints

_snapshot_module = sys.modules["tracing.snapshot"]

pytestmark = pytest.mark.timeout(60)


def _forgotten_waiters(count):
    """``count`` greenlets parked on an Event only their frames refer to
    (not their args: a greenlet keeps those after it exits). Killed, one
    returns quietly (a kill's traceback would keep its frames, and the
    Event, referred to)."""
    def wait(box):
        event = box[0]
        try:
            event.wait()
        except labkit.GreenletExit:
            return

    box = [Event()]
    gs = [labkit.spawn(wait, box) for _ in range(count)]
    for n, g in enumerate(gs):
        g.name = f"forgotten-{n}"
    labkit.sleep(0)
    box.clear()
    return gs


def _lost(found):
    return {lint.id for lint in found if lint.kind == "lost wake-up"}


def test_lints_in_pieces_find_what_lints_in_one_go_find(monkeypatch):
    gs = _forgotten_waiters(300)
    try:
        whole = lints()
        monkeypatch.setattr(tracing.lints, "PIECE_NS", 0)   # a piece per step
        cuts = []
        paced = lints(between=lambda: (cuts.append(1), labkit.sleep(0)))
        assert len(cuts) >= 300 * 2   # each waiter's rows, frames and locals apart
        assert _lost(paced) == _lost(whole) == {id(g) for g in gs}
        monkeypatch.setattr(tracing.lints, "PIECE_NS", 10**12)   # never due
        monkeypatch.setattr(_snapshot_module, "PIECE_NS", 10**12)   # (its snapshot's too)
        cuts.clear()
        assert _lost(lints(between=lambda: cuts.append(1))) == _lost(whole)
        # at the start (the lints begin a piece of their own), and before the
        # lost wake-up's heap traversal if it runs (3.10: see test_tracing_lost_wakeup)
        assert len(cuts) == (1 if sys.version_info >= (3, 11) else 2)
    finally:
        labkit.killall(gs)


def test_a_greenlet_that_leaves_its_wait_meanwhile_gets_no_lint(monkeypatch):
    gs = _forgotten_waiters(20)
    gone = gs[:10]
    monkeypatch.setattr(tracing.lints, "PIECE_NS", 0)

    def between():
        # once the waiters are collected and their frames are being counted
        # (tracing.lost_wakeup's audit, between two waiters)
        if not gone[0].dead and sys._getframe(2).f_code.co_name == "_audit":
            labkit.killall(gone)
        labkit.sleep(0)

    try:
        found = lints(between=between)
        assert all(g.dead for g in gone)
        assert _lost(found) == {id(g) for g in gs[10:]}
    finally:
        labkit.killall(gs)


def _longest_stretch(count: int, held: bool, what: str, monkeypatch) -> int:
    """The most lines of Python run between two yields (a piece per step:
    every PIECE_NS 0) by ``what`` -- the lost wake-up check, all the lints,
    or a console frame's capture with its lints --, for ``count`` greenlets
    parked on one Event, held by this frame or only by its waiters. Lines,
    not time: a count that a loaded machine does not change."""
    import tracing.frames
    import tracing.pace
    from tracing.lost_wakeup import lost_wakeups
    from tracing.recorder import Recorder
    from tracing.pace import Pace
    from tracing.snapshot import snapshot
    monkeypatch.setattr(tracing.lints, "PIECE_NS", 0)
    monkeypatch.setattr(tracing.pace, "PIECE_NS", 0)
    monkeypatch.setattr(_snapshot_module, "PIECE_NS", 0)
    box = [Event()]
    keep = box[0] if held else None

    def wait():
        event = box[0]
        try:
            event.wait()
        except labkit.GreenletExit:
            return

    # (recorded, as the console and the attach do: a snapshot then finds the
    # greenlets in the recorder's spawn table, in pieces)
    recorder = Recorder(capacity=1 << 16).start()
    gs = [labkit.spawn(wait) for _ in range(count)]
    ids = {id(g) for g in gs}
    labkit.sleep(0)
    box.clear()
    lines = [0]
    stretches = []

    def local(frame, event, arg):
        if event == "line":
            lines[0] += 1
        return local

    def between():
        stretches.append(lines[0])
        lines[0] = 0
        labkit.sleep(0)

    try:
        rows = snapshot().rows
        sys.settrace(lambda frame, event, arg: local)
        try:
            if what == "lost_wakeups":
                found = lost_wakeups(rows, Pace(between, piece_ns=0))
            elif what == "lints":
                found = lints(between=between)
            else:
                found = tracing.frames.capture(between=between)["lints"]
        finally:
            sys.settrace(None)
        if what == "lost_wakeups":
            lost = {f.id for f in found}
        elif what == "lints":
            lost = _lost(found)
        else:
            lost = {lint["id"] for lint in found if lint["kind"] == "lost wake-up"}
        assert len(lost & ids) == (0 if held else count)
        assert keep is None or not keep.is_set()
        return max(stretches + lines)
    finally:
        labkit.killall(gs)
        recorder.stop(read=False)


@pytest.mark.parametrize("what", ["lost_wakeups", "lints", "capture"])
@pytest.mark.parametrize("held", [False, True], ids=["lost", "held"])
def test_no_piece_grows_with_the_waiters_of_one_object(held, what, monkeypatch):
    if not held and sys.version_info < (3, 11):
        pytest.skip("3.10: the heap traversal decides a lost wake-up (its audit rarely "
                    "can: tracing.lost_wakeup), one piece whatever its length")
    # Ten thousand waiters of one object held the loop for milliseconds in
    # one piece (the search's set of waiters, the findings and the lints
    # made of them, the freeing of the audit's counts, the lints made
    # plain): each is now done in pieces of a bounded size, so the longest
    # stretch is the same at 1,100 waiters and at 4,400 (the passes in
    # chunks of 1,024 bound both).
    small = _longest_stretch(1100, held, what, monkeypatch)
    large = _longest_stretch(4400, held, what, monkeypatch)
    assert large <= small * 1.25 + 50, (small, large)
