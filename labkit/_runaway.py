"""Stopping a greenlet that never yields: the REPLs' interrupt, made firm.

In a kernel, Ctrl-C (the stop button, SIGINT) belongs to the cell: when it
lands while a background greenlet runs, that greenlet is usually about to
switch back to the hub, and the hub hands KeyboardInterrupt to the cell at a
safe point; the greenlet survives. A greenlet that never yields
(``while True: pass``, a loop around the real ``time.sleep``) never gives
the hub that chance, and the whole kernel is stuck with it. So::

    SIGINT while greenlet G runs
        |
        |  note when the hub last polled; a helper thread watches it
        v
    the hub polls within GRACE seconds ---- yes --> the interrupt goes where
        |                                          it always went (the cell)
        no: G holds the loop
        v
    KeyboardInterrupt is raised in G, at its next bytecode boundary

The helper thread re-sends SIGINT to the main thread (``pthread_kill``, which
also cuts a real ``time.sleep`` short), and the signal handler -- which
Python runs in whatever greenlet is current -- raises there. A second
interrupt before the hub has polled again escalates at once: it raises in
the running greenlet without waiting (and again, for a greenlet that
swallows KeyboardInterrupt). The hub, the kernel and the other greenlets go
on; the stopped greenlet ends with KeyboardInterrupt, which the hub hands to
the main greenlet as for any greenlet (the waiting cell fails with it).

A hub callback that never returns (``hub.run_callback(f)``, a core watcher)
is stopped the same way, but only by a second interrupt: the first goes to
the cell, as it must while the hub waits in poll.

Signal handlers run in the main thread; the guard's methods are called from
a SIGINT handler only: the kernel's (labkit.jupyter's _ChainedSigint) and
``python -m labkit``'s (labkit._console). In scripts and plain python,
labkit.hub's handler raises in whatever greenlet runs, at once.
"""
from __future__ import annotations

import signal
import time

from labkit import _native

__all__ = ["RunawayGuard", "GRACE"]

#: seconds the hub has to get control back before the running greenlet is
#: stopped (a well-behaved greenlet yields within milliseconds)
GRACE = 0.3
#: how often the helper thread looks whether the hub polled
_LOOK_EVERY = 0.01


class RunawayGuard:
    """One per kernel guest. Decides, for a SIGINT that arrived while a
    greenlet (neither the hub nor the main greenlet) runs, whether that
    greenlet is stuck."""

    def __init__(self, hub, where=None):
        self.hub = hub
        #: where(frame) -> "file.py, line 3" (the kernel says "In[7], line 3")
        self.where = where or _where
        #: hub.last_poll_ns when the pending interrupt arrived, or None
        self._polled_at: int | None = None
        #: when the pending interrupt arrived (time.monotonic)
        self._since = 0.0
        #: set by the helper thread just before it re-sends SIGINT
        self._recheck = False

    def on_sigint(self, greenlet, frame) -> bool:
        """Called by the SIGINT handler while ``greenlet`` runs. Raises
        KeyboardInterrupt (in ``greenlet``, whose running ``frame`` the
        message names) if it has held the loop since an
        earlier interrupt; returns False if the decision is deferred (the
        helper thread will re-send SIGINT), True if the hub has polled since,
        so that the interrupt should go where it normally goes."""
        recheck, self._recheck = self._recheck, False
        if self._polled_at is not None and self.hub.last_poll_ns == self._polled_at:
            # Stuck since the earlier interrupt: stop it (stay armed, so that
            # a greenlet that swallows this is stopped by the next one too).
            raise KeyboardInterrupt(
                f"labkit stopped {_describe(greenlet)} at {self.where(frame)}: it had not "
                f"yielded to the hub for {time.monotonic() - self._since:.1f} s "
                f"since the interrupt")
        self._polled_at = None
        if recheck:
            return True  # the hub ran in between: this greenlet is not stuck
        self._polled_at, self._since = self.hub.last_poll_ns, time.monotonic()
        _native.start_thread(self._watch, (self._polled_at,), name="labkit-interrupt")
        return False

    def on_sigint_in_hub(self, frame) -> None:
        """Called by the SIGINT handler while the hub runs one of its
        callbacks (not its own loop). The interrupt goes to the cell as
        usual -- the hub delivers it at its next safe point -- but if an
        earlier one is still waiting for that point (the callback holds
        the loop), this one raises KeyboardInterrupt in the callback."""
        if self._polled_at is not None and self.hub.last_poll_ns == self._polled_at:
            raise KeyboardInterrupt(
                f"labkit stopped a hub callback at {self.where(frame)}: it had not "
                f"returned for {time.monotonic() - self._since:.1f} s since the interrupt")
        self._recheck = False
        self._polled_at, self._since = self.hub.last_poll_ns, time.monotonic()

    def settle(self) -> None:
        """The interrupt was handled elsewhere (the main greenlet or the hub
        got it): forget a pending one."""
        self._polled_at = None
        self._recheck = False

    def _watch(self, polled_at: int) -> None:
        # Helper thread: wait until the hub polls or GRACE passes, then hand
        # the decision back to the main thread's signal handler.
        deadline = time.monotonic() + GRACE
        pause = _native.Event()
        while time.monotonic() < deadline and self.hub.last_poll_ns == polled_at:
            pause.wait(_LOOK_EVERY)
        if self._polled_at != polled_at:
            return  # settled, or a newer interrupt has its own watcher
        self._recheck = True
        try:
            signal.pthread_kill(self.hub.thread_ident, signal.SIGINT)
        except (OSError, ValueError):
            pass


def _describe(greenlet) -> str:
    name = getattr(greenlet, "name", None)
    return f"greenlet {name!r}" if isinstance(name, str) else repr(greenlet)


def _where(frame) -> str:
    if frame is None:
        return "an unknown line"
    return f"{frame.f_code.co_filename}, line {frame.f_lineno}"
