"""FIFO slots: the counting semaphore under Pool, imap's ``maxsize`` and ThreadPool.

Private to labkit. :class:`_Slots` hands slots to parked greenlets oldest
first; :func:`_wake` is how a non-hub greenlet wakes a parked Waiter.
Both are re-exported by :mod:`labkit.pool`, where they started.
"""
from __future__ import annotations

from collections import deque

from greenlet import getcurrent

from labkit._park import Waiter
from labkit.hub import get_hub


def _wake(waiter: Waiter, value) -> None:
    """Switch ``value`` into a parked waiter: at once from the hub, else via
    a hub callback (Waiter.switch may only run in the hub)."""
    hub = waiter.hub
    if getcurrent() is hub:
        waiter.switch(value)
    else:
        hub.run_callback(waiter.switch, value)


class _Slots:
    """A counting semaphore for one hub: ``free`` slots, FIFO hand-off.

    Released slots go to the parked greenlets, oldest first, and a newcomer
    only takes a free slot when nobody is parked: nobody is overtaken.
    The hand-off is one hub callback per burst of releases, not one per
    release: when a pool's greenlets finish in the same loop pass, a
    spawner parked in a full pool wakes once and finds all their slots
    free, instead of ping-ponging with the hub once per slot.
    """

    __slots__ = ("free", "waiters", "_handing_off")

    def __init__(self, free: int):
        self.free = free
        #: parked acquirers, oldest first
        self.waiters: deque = deque()
        #: a hand-off callback is scheduled in the hub
        self._handing_off = False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot, parking until one is free (at most ``timeout``)."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        if not blocking:
            return False
        hub = get_hub()
        waiter = Waiter(hub)
        self.waiters.append(waiter)
        timer = hub.loop.timer(timeout, waiter.switch, False) if timeout is not None else None
        got_slot = False
        try:
            # True: _hand_off gave us a slot; False: the timer fired.
            got_slot = waiter.get()
            return got_slot
        finally:
            if timer is not None:
                timer.cancel()
            if not got_slot:  # timed out or killed: leave the line
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass

    def release(self) -> None:
        self.free += 1
        if self.waiters and not self._handing_off:
            self._handing_off = True
            self.waiters[0].hub.run_callback(self._hand_off)

    def _hand_off(self) -> None:  # runs in the hub
        self._handing_off = False
        waiters = self.waiters
        while self.free > 0 and waiters:
            self.free -= 1
            waiters.popleft().switch(True)  # runs it until it parks again
