"""Pacing long work on the hub's thread: do a step, and let the loop run
once a piece's worth of time has passed.

    pace = Pace(lambda: labkit.sleep(0))     # in a greenlet
    for batch in work:
        do(batch)
        pace()          # yields if PIECE_NS have passed since the last yield

The one pacing of the snapshot (:func:`tracing.snapshot.snapshot`), the
ledger's update (:meth:`tracing.ledger.Ledger.update`), the lints and the
Dashboard's fold: a live view calls them every refresh, and each must hold
the loop for about :data:`PIECE_NS` at most, not for the whole of its work.
Contract: ``between`` is called from the thread doing the work; it may
switch greenlets (so the caller must re-read anything the loop can change);
nothing here touches the hub itself.
"""
from __future__ import annotations

import gc
import time

__all__ = ["Pace", "PIECE_NS"]

#: The default piece (ns): work done between two calls of ``between``,
#: give or take one step. The attach's target is at most 1 ms a piece:
#: a step, a tail of work no pace looks into, or a machine that slows the
#: target down for a moment come on top of it. (From 400_000: the median
#: piece of a refresh of 10,000 greenlets went from ~0.5 ms to ~0.4 ms.)
PIECE_NS = 300_000


class Pace:
    """``pace()`` after each step of work: calls ``between`` once
    ``piece_ns`` (default :data:`PIECE_NS`) has passed since the last call
    or the start. ``pace.cuts``: how many times it did. The one pacing of
    the snapshot, the ledger's update and the lints.

    ``gc_off``: the caller has disabled the collector for its pieces (so
    that a collection its allocations set off does not land inside one,
    making it as long as the collection); it is enabled while ``between``
    runs."""

    __slots__ = ("between", "start", "cuts", "piece_ns", "gc_off")

    def __init__(self, between=None, piece_ns: int | None = None, gc_off: bool = False):
        self.between = between
        self.piece_ns = PIECE_NS if piece_ns is None else piece_ns
        self.gc_off = gc_off
        self.start = time.perf_counter_ns()
        self.cuts = 0

    def __call__(self) -> None:
        if self.between is not None and time.perf_counter_ns() - self.start >= self.piece_ns:
            if self.gc_off:
                gc.enable()
            try:
                self.between()
            finally:
                if self.gc_off:
                    gc.disable()
            self.cuts += 1
            self.start = time.perf_counter_ns()

    def chunks(self, items, size: int = 1024):
        """``items`` (a sequence) in consecutive slices of ``size``, with a
        call of this pace after each: a pass over many cheap items (rows
        into a dict, a membership check) done in pieces, not in one --
        10,000 of them at ~0.1 us each are a piece of ~1 ms."""
        for lo in range(0, len(items), size):
            yield items[lo:lo + size]
            self()

    def empty(self, container, size: int = 1024) -> None:
        """Empty ``container`` (a dict or a set) ``size`` entries at a
        time, with a call of this pace after each: what it held is let go
        in pieces, not in one -- 10,000 entries freed at once held the
        loop for ~0.1-0.6 ms, each entry's objects read back from all over
        memory."""
        pop = container.popitem if isinstance(container, dict) else container.pop
        while container:
            for _ in range(min(len(container), size)):
                pop()
            self()

    def cut(self) -> None:
        """Call ``between`` now (if any): the next step starts a piece."""
        if self.between is not None:
            self.start = 0
            self()
