"""The hub as a guest of an asyncio loop: the half shared by labkit.jupyter
(the kernel's loop) and labkit.repl (IPython's terminal loop).

labkit's hub owns no thread when it lives inside IPython; the host's asyncio
loop owns the main thread. The host calls :meth:`AsyncioGuest.tick` -- one
non-blocking pass of the hub -- whenever the hub could have work, and the
tick tells the host when to call again::

      asyncio loop (the host)                       labkit hub greenlet
      -----------------------                       -------------------
      select() on the host's fds + the epoll fd
         |  epoll fd readable / timer due / request_tick()
         v
      AsyncioGuest.tick() -- switch -------------->  one pass: ready callbacks,
                                                     poll(timeout=0), dispatch
      re-arm one handle for the delay <-- switch --  hub.tick() returns the delay
         |                                           (0, seconds, or None)
         v
      select() again

Three things make the hub's work visible to the host loop:

- ``add_reader(hub.loop.backend_fd)``: the C loop's epoll fd is readable when
  any fd the hub watches is ready or another thread called ``wake()``;
- one timer handle, re-armed after every tick (``call_soon`` for 0,
  ``call_later`` for the next hub timer): hub timers live in the C heap, and
  no fd tells about them;
- :meth:`request_tick`, which the host calls after running code that may
  have added work to the hub's ready deque (a cell, a widget callback) --
  appending to a deque touches no fd.

With the poll(2) backend there is no fd to give the host: the guest then
asks for a tick at least every :data:`POLL_BACKEND_INTERVAL` seconds.

A tick never blocks and never raises into the host loop: errors are printed
through the hub, and the host goes on. Subclasses add what their host needs
(kernel message hooks, interrupt chaining) through :meth:`_after_tick`.
"""
from __future__ import annotations

import sys

from greenlet import getcurrent

__all__ = ["AsyncioGuest", "POLL_BACKEND_INTERVAL"]

#: With no backend fd (the poll(2) backend), tick at least this often.
POLL_BACKEND_INTERVAL = 0.01


class AsyncioGuest:
    """The glue between one hub and one asyncio loop: a reader and a timer.

    Everything here runs in the host loop's thread, in the main greenlet,
    except :meth:`request_tick`, which any thread may call.
    """

    def __init__(self, hub, aio):
        self.hub = hub
        self.aio = aio                #: the host's asyncio loop
        self.attached = False
        self.ticks = 0                #: how many passes the host loop asked for
        self._fd = -1                 # the hub's backend fd, while we watch it
        self._timer = None            # the one pending asyncio handle
        self._soon_requested = False  # a call_soon_threadsafe is in flight
        self._in_tick = False         # True while hub.tick() runs

    # -- attaching ---------------------------------------------------------
    def attach(self) -> None:
        """Watch the hub's backend fd in the host loop and tick once soon."""
        self._fd = self.hub.loop.backend_fd
        if self._fd >= 0:
            self.aio.add_reader(self._fd, self.tick)
        self.attached = True
        self.request_tick()

    def detach(self) -> None:
        """Undo attach(). Parked greenlets stay parked until the hub runs again."""
        if not self.attached:
            return
        self.attached = False
        if self._fd >= 0 and not self.aio.is_closed():
            self.aio.remove_reader(self._fd)
        self._fd = -1
        self._cancel_timer()

    @property
    def in_tick(self) -> bool:
        """True while the hub runs inside :meth:`tick` (for signal handlers)."""
        return self._in_tick

    # -- ticking -------------------------------------------------------------
    def tick(self) -> None:
        """One pass of the hub, then re-arm the timer. Never raises."""
        self._soon_requested = False
        if not self.attached or self._in_tick:
            return
        hub = self.hub
        if hub.loop.closed or hub.dead:
            # The hub was destroyed (the next get_hub() makes a new one, and
            # the next %load_ext attaches that). Its fd is closed: stop
            # watching it before the number is reused.
            self.detach()
            return
        if getcurrent() is not hub.parent:
            return  # asyncio runs inside some greenlet: not ours to tick
        self._in_tick = True
        delay = 0.0
        try:
            delay = hub.tick()
            self.ticks += 1
        except KeyboardInterrupt as exc:
            # A greenlet was interrupted (labkit._runaway): its message says
            # which and where; the tick's own frames would only add noise.
            hub.print_exception(None, type(exc), exc, None)
        except BaseException:
            # SystemExit from a greenlet, thrown into the main greenlet: it
            # must not stop the host's loop.
            hub.print_exception("labkit tick", *sys.exc_info())
        finally:
            self._in_tick = False
        self._after_tick()
        self._arm(delay)

    def _after_tick(self) -> None:
        """Hook for subclasses: runs after every tick, outside the hub."""

    def _arm(self, delay: float | None) -> None:
        """Keep exactly one pending handle: soon, later, or none (fd only)."""
        self._cancel_timer()
        if self._fd < 0:
            # No fd tells the host about I/O: look again soon.
            delay = POLL_BACKEND_INTERVAL if delay is None else min(delay, POLL_BACKEND_INTERVAL)
        if delay is None:
            return
        if delay <= 0:
            self._timer = self.aio.call_soon(self.tick)
        else:
            self._timer = self.aio.call_later(delay, self.tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_tick(self) -> None:
        """Tick soon. Any thread; many requests before the tick make one tick."""
        if self._soon_requested or not self.attached:
            return
        self._soon_requested = True
        try:
            self.aio.call_soon_threadsafe(self.tick)
        except RuntimeError:  # the host's loop is closed: shutting down
            self._soon_requested = False
