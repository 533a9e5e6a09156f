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

import errno as _errno
import os as _os
import select as _stdlib
from select import *  # noqa: F401,F403 - constants, error
from time import monotonic

from labkit._loop import READ, WRITE
from labkit._park import check_seconds, wait_any_fd
from labkit.hub import hub_for_this_thread

__all__ = ["select", "poll", "error"] + [
    name for name in dir(_stdlib) if name.startswith(("POLL", "EPOLL", "PIPE_BUF"))]

# Captured before monkey patching can replace them in the stdlib module.
# (gevent's name for the first, which tests replace to make a select wait.)
_original_select = _stdlib.select
_blocking_poll = _stdlib.poll

def _fileno(obj) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def _wait_or_closed(hub, interest: dict, timeout) -> bool:
    """wait_any_fd; False if one of the fds was closed before or during the
    wait (EBADF: the loop refused it, or its closer woke us)."""
    try:
        wait_any_fd(hub, interest, timeout)
    except OSError as exc:
        if exc.errno != _errno.EBADF:
            raise
        # Its closer queued the close itself right after our wake-up: let
        # it run, so that asking again sees the fd closed (POLLNVAL).
        from labkit.hub import sleep
        sleep(0)
        return False
    return True


def select(rlist, wlist, xlist, timeout=None):
    """``select.select``, parking the greenlet until an fd is ready.

    Returns three lists holding the very objects passed in, like the stdlib.
    ``xlist`` is checked but not waited on (see the module docstring).
    """
    if timeout is not None:
        timeout = check_seconds(timeout, "timeout")
        if timeout < 0:
            raise ValueError("timeout must be non-negative")
    ready = _original_select(rlist, wlist, xlist, 0)
    if ready[0] or ready[1] or ready[2] or timeout == 0:
        return ready
    hub = hub_for_this_thread()
    if hub is None:
        return _original_select(rlist, wlist, xlist, timeout)
    interest: dict[int, int] = {}
    for objects, event in ((rlist, READ), (wlist, WRITE)):
        for obj in objects:
            fd = _fileno(obj)
            interest[fd] = interest.get(fd, 0) | event
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - monotonic())
        if not _wait_or_closed(hub, interest, left):
            # An fd was closed before or during the wait: the stdlib's
            # answer now says what it says about a closed fd (for a closed
            # socket object, whose fileno is -1: EBADF, as before the wait).
            try:
                return _original_select(rlist, wlist, xlist, 0)
            except ValueError:
                raise OSError(_errno.EBADF, "File descriptor was closed in another greenlet") \
                    from None
        ready = _original_select(rlist, wlist, xlist, 0)
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
        """Watch ``fd`` (an int or an object with fileno()); a closed fd is
        refused with ValueError now, not reported as POLLNVAL later."""
        fd = _fileno(fd)
        try:
            _os.fstat(fd)
        except OSError:
            raise ValueError(f"Invalid file descriptor: {fd}") from None
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
            if not _wait_or_closed(hub, interest, left):
                return self._poller.poll(0)   # POLLNVAL for the closed fd
            ready = self._poller.poll(0)
            if ready or (deadline is not None and monotonic() >= deadline):
                return ready
