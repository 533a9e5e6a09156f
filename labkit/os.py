"""The ``os`` module, cooperative where it can block (gevent's ``gevent.os``).

    from labkit import os
    os.make_nonblocking(fd)
    data = os.nb_read(fd, 4096)      # parks the greenlet until fd is readable
    data = os.tp_read(fd, 4096)      # the read runs in the hub's thread pool

Everything of the standard ``os`` module is here under its own name (this
module copies its public names, as gevent's does), except:

- :func:`nb_read` / :func:`nb_write` -- one read or write on a
  *non-blocking* fd, parking the greenlet while it would block;
- :func:`tp_read` / :func:`tp_write` -- one read or write in the hub's thread
  pool (any fd: regular files too);
- :func:`make_nonblocking` -- set O_NONBLOCK; True if it was not set;
- :func:`close` -- wakes greenlets parked on the fd (with ``OSError(EBADF)``)
  before closing it, so they do not wait on a number that may be reused;
- :func:`waitpid` -- parks the greenlet until the child changes state (a
  pidfd for one child, else a backing-off poll); ``WNOHANG`` as usual;
- :func:`fork`, :func:`forkpty` -- the originals: labkit's at-fork hooks give
  each hub of the child a fresh poller; :func:`fork_and_watch` also calls
  ``callback(watcher)`` in the parent when the child exits.

In a thread without a hub these behave as the originals.
"""
from __future__ import annotations

import errno as _errno
import os as _os
import sys as _sys

from labkit._loop import READ, WRITE

__implements__ = ["close", "fork", "waitpid"]
__extensions__ = ["make_nonblocking", "nb_read", "nb_write", "tp_read", "tp_write",
                  "fork_and_watch", "fork_gevent"]

_read = _os.read
_write = _os.write
_close = _os.close
_raw_fork = getattr(_os, "fork", None)
_raw_waitpid = _os.waitpid

#: errors that mean "try again when ready"
ignored_errors = [_errno.EAGAIN, _errno.EINTR]


def make_nonblocking(fd: int):
    """Put ``fd`` in non-blocking mode; True if it was blocking before."""
    if not _os.get_blocking(fd):
        return None
    _os.set_blocking(fd, False)
    return True


def nb_read(fd: int, n: int) -> bytes:
    """Read up to ``n`` bytes from non-blocking ``fd``; park while there is
    nothing to read. b"" at end of file."""
    from labkit._park import wait_fd
    while True:
        try:
            return _read(fd, n)
        except OSError as exc:
            if exc.errno not in ignored_errors:
                raise
        wait_fd(fd, READ)


def nb_write(fd: int, buf) -> int:
    """Write some of ``buf`` to non-blocking ``fd``; park while it would
    block. Returns how many bytes were written."""
    from labkit._park import wait_fd
    while True:
        try:
            return _write(fd, buf)
        except OSError as exc:
            if exc.errno not in ignored_errors:
                raise
        wait_fd(fd, WRITE)


def tp_read(fd: int, n: int) -> bytes:
    """``os.read(fd, n)`` in the hub's thread pool."""
    from labkit.hub import get_hub
    return get_hub().threadpool.apply(_read, (fd, n))


def tp_write(fd: int, buf) -> int:
    """``os.write(fd, buf)`` in the hub's thread pool."""
    from labkit.hub import get_hub
    return get_hub().threadpool.apply(_write, (fd, buf))


def close(fd: int) -> None:
    """Close ``fd``; greenlets parked on it first get ``OSError(EBADF)``."""
    from labkit._park import forget_fd
    from labkit.hub import hub_for_this_thread
    _os.fstat(fd)   # an invalid fd fails here, as os.close would
    hub = hub_for_this_thread()
    if hub is None or not forget_fd(hub, fd, _close):
        _close(fd)


def waitpid(pid: int, options: int):
    """``os.waitpid`` that parks the greenlet until the child changes state."""
    from greenlet import getcurrent
    from labkit.hub import hub_for_this_thread, sleep
    hub = hub_for_this_thread()
    if hub is None or options & _os.WNOHANG or getcurrent() is hub:
        return _raw_waitpid(pid, options)
    if pid > 0 and not options and hasattr(_os, "pidfd_open"):
        try:
            pidfd = _os.pidfd_open(pid)
        except OSError:   # not our child, or no pidfd: the original says why
            pidfd = None
        if pidfd is not None:
            from labkit._park import wait_fd
            try:
                wait_fd(pidfd, READ)   # readable once the process exited
            finally:
                _close(pidfd)
            return _raw_waitpid(pid, options)
    pause = 0.001   # any child, or a stop/continue: poll, backing off to 50 ms
    while True:
        result = _raw_waitpid(pid, options | _os.WNOHANG)
        if result != (0, 0):
            return result
        sleep(pause)
        pause = min(pause * 2, 0.05)


if _raw_fork is not None:
    def fork_gevent() -> int:
        """``os.fork``. In the child, labkit's at-fork hooks have given each
        hub a fresh poller and wake-up fd, and the thread pools start afresh."""
        return _raw_fork()

    fork = fork_gevent

    class _ChildWatcher:
        """What fork_and_watch's callback receives: ``pid``, and once the
        child exited, ``rpid`` and ``rstatus`` (as os.waitpid reports them)."""

        def __init__(self, pid: int):
            self.pid = pid
            self.rpid = None
            self.rstatus = 0

        def __repr__(self) -> str:
            return f"<child watcher pid={self.pid} rstatus={self.rstatus}>"

    def fork_and_watch(callback=None, loop=None, ref=False, fork=fork_gevent) -> int:
        """Fork; in the parent, wait for the child in a greenlet and call
        ``callback(watcher)`` (see _ChildWatcher) when it exits. ``loop``
        and ``ref`` are accepted for gevent; the waiting greenlet keeps the
        hub alive while the child runs."""
        pid = fork()
        if pid:
            watcher = _ChildWatcher(pid)

            def watch():
                watcher.rpid, watcher.rstatus = waitpid(pid, 0)
                if callback is not None:
                    callback(watcher)

            from labkit.hub import spawn_raw
            spawn_raw(watch)
        return pid

    if hasattr(_os, "forkpty"):
        _raw_forkpty = _os.forkpty

        def forkpty_gevent():
            """``os.forkpty`` (see fork_gevent)."""
            return _raw_forkpty()

        forkpty = forkpty_gevent
        __implements__.append("forkpty")
        __extensions__.append("forkpty_gevent")


def _copy_os_names() -> list:
    """The standard os module's public names we do not replace."""
    ours = set(__implements__) | set(__extensions__) | {"_read", "_write", "_close"}
    copied = []
    module = _sys.modules[__name__]
    for name in dir(_os):
        if name.startswith("__") or name in ours or hasattr(module, name) and name != "path":
            continue
        setattr(module, name, getattr(_os, name))
        copied.append(name)
    return copied


__imports__ = _copy_os_names()
__all__ = sorted(set(__implements__ + __extensions__))
