"""gevent's exception names, in one place (``gevent.exceptions``).

The classes are the ones labkit raises: :class:`LoopExit` and
:class:`BlockingSwitchOutError` are defined by the hub, and
:class:`ConcurrentObjectUseError` by the loop; this module re-exports them,
so ``except labkit.exceptions.LoopExit`` catches what the hub throws.

- :class:`LoopExit` -- a greenlet waits for something that nothing can ever
  deliver (no ready callback, timer, watched fd or pending thread job):
  "This operation would block forever". Its ``hub`` is the hub that gave up.
- :class:`BlockingSwitchOutError` -- code running *in* the hub (a loop
  callback) tried to wait.
- :class:`InvalidSwitchError` -- a greenlet parked on a watcher was resumed
  by something else (``Hub.wait``).
- :class:`ConcurrentObjectUseError` -- two greenlets wait on one fd in the
  same direction, or on one Waiter.
- :class:`InvalidThreadUseError` -- an object bound to one thread's hub was
  used from another thread in a way it does not support.
- :class:`HubDestroyed` -- thrown into a hub greenlet to stop it
  (``Hub.destroy``); a GreenletExit, so it ends the hub quietly.
"""
from greenlet import GreenletExit

from labkit._loop import ConcurrentObjectUseError
from labkit.hub import BlockingSwitchOutError, LoopExit

__all__ = ["LoopExit", "BlockingSwitchOutError", "InvalidSwitchError",
           "ConcurrentObjectUseError", "InvalidThreadUseError", "HubDestroyed"]


class InvalidSwitchError(AssertionError):
    """A greenlet waiting for one thing was switched to by another."""


class InvalidThreadUseError(RuntimeError):
    """An object was used from a thread it does not belong to."""


class HubDestroyed(GreenletExit):
    """Thrown into a hub to end it; ``destroy_loop`` says whether its loop
    is closed too."""

    def __init__(self, destroy_loop):
        GreenletExit.__init__(self, destroy_loop)
        self.destroy_loop = destroy_loop
