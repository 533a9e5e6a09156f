"""Cooperative ``select.select`` and ``select.poll``: readiness waits that park
the greenlet, not the thread.

Both work the same way::

    ask the kernel without waiting (the stdlib call, timeout 0)
        |-- something is ready, or timeout == 0 --> return it
        `-- nothing: watch each fd on the hub's loop (READ/WRITE), park until
            one fires or the timeout passes, stop watching, ask again

Asking the stdlib again after a wake-up keeps the answer exact (the loop's
wake-ups may be spurious, and the stdlib reports errors and hang-ups its own
way) and keeps this module small.

Limits, stated plainly:

- Exceptional conditions (``xlist``, ``POLLPRI``) are reported if present when
  we ask, but never waited for: the loop watches only READ and WRITE.
- The loop allows one waiting reader and one waiting writer per fd; a select
  on an fd that another greenlet is already reading raises
  ConcurrentObjectUseError.
- In a thread without a hub (see ``labkit.hub.hub_for_this_thread``) the
  calls block the thread, exactly as the stdlib's.
"""
from __future__ import annotations

import select as _stdlib
from select import *  # noqa: F401,F403 - constants, error
from time import monotonic

from labkit._loop import READ, WRITE
from labkit._park import check_seconds, wait_any_fd
from labkit.hub import hub_for_this_thread

__all__ = ["select", "poll", "error"] + [
    name for name in dir(_stdlib) if name.startswith(("POLL", "EPOLL", "PIPE_BUF"))]

# Captured before monkey patching can replace them in the stdlib module.
_blocking_select = _stdlib.select
_blocking_poll = _stdlib.poll

def _fileno(obj) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def select(rlist, wlist, xlist, timeout=None):
    """``select.select``, parking the greenlet until an fd is ready.

    Returns three lists holding the very objects passed in, like the stdlib.
    ``xlist`` is checked but not waited on (see the module docstring).
    """
    if timeout is not None:
        timeout = check_seconds(timeout, "timeout")
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    ready = _blocking_select(rlist, wlist, xlist, 0)
    if ready[0] or ready[1] or ready[2] or timeout == 0:
        return ready
    hub = hub_for_this_thread()
    if hub is None:
        return _blocking_select(rlist, wlist, xlist, timeout)
    interest: dict[int, int] = {}
    for objects, event in ((rlist, READ), (wlist, WRITE)):
        for obj in objects:
            fd = _fileno(obj)
            interest[fd] = interest.get(fd, 0) | event
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - monotonic())
        wait_any_fd(hub, interest, left)
        ready = _blocking_select(rlist, wlist, xlist, 0)
        if ready[0] or ready[1] or ready[2]:
            return ready
        if deadline is not None and monotonic() >= deadline:
            return ready


class poll:
    """``select.poll()``: register fds, then ``poll(timeout_ms)`` parks the
    greenlet until one is ready. Results are ``[(fd, revents)]`` from the
    stdlib poll, so POLLHUP/POLLERR/POLLNVAL mean what they always mean."""

    def __init__(self):
        self._poller = _blocking_poll()  # keeps the registrations, answers
        self._masks: dict[int, int] = {}

    def register(self, fd, eventmask=POLLIN | POLLPRI | POLLOUT) -> None:
        fd = _fileno(fd)
        self._poller.register(fd, eventmask)
        self._masks[fd] = eventmask

    def modify(self, fd, eventmask) -> None:
        fd = _fileno(fd)
        self._poller.modify(fd, eventmask)
        self._masks[fd] = eventmask

    def unregister(self, fd) -> None:
        fd = _fileno(fd)
        self._poller.unregister(fd)
        del self._masks[fd]

    def poll(self, timeout=None):
        """Wait at most ``timeout`` milliseconds (None or negative: forever)."""
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
            timeout = None if timeout < 0 else timeout / 1000.0
        ready = self._poller.poll(0)
        if ready or timeout == 0:
            return ready
        hub = hub_for_this_thread()
        if hub is None:
            return self._poller.poll(None if timeout is None else timeout * 1000.0)
        interest = {}
        for fd, mask in self._masks.items():
            events = (READ if mask & (POLLIN | POLLRDNORM) else 0) | \
                     (WRITE if mask & (POLLOUT | POLLWRNORM) else 0)
            if events:
                interest[fd] = events
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            wait_any_fd(hub, interest, left)
            ready = self._poller.poll(0)
            if ready or (deadline is not None and monotonic() >= deadline):
                return ready
