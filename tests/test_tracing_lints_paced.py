"""tracing.lints in pieces: lints(between=...) yields to the loop at most
every PIECE_NS of work (the console's refresh on a thousand greenlets), and
what runs in between does not make a lint wrong."""
import sys

import pytest

import labkit
import tracing.lints
from labkit.event import Event
from tracing.lints import lints

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
