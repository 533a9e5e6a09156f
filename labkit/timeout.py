"""Timeout: raise an exception in a greenlet after a while (gevent's Timeout).

    with Timeout(0.5):                 # raises Timeout in this greenlet
        slow()

    with Timeout(0.5, False):          # same, but the block just ends quietly
        slow()

    t = Timeout.start_new(0.5, MyError("too slow"))   # raises MyError
    try:
        slow()
    finally:
        t.cancel()

A Timeout is a BaseException, so ``except Exception`` in the guarded code does
not swallow it. Each Timeout is its own exception instance, which is how
nested timeouts tell whose deadline passed: ``except Timeout as t: if t is
mine``. The timer fires in the hub and throws into the greenlet that started
it; cancelling a Timeout that already fired is harmless.
"""
from __future__ import annotations

from typing import Callable

from greenlet import getcurrent

from labkit._park import check_seconds
from labkit.hub import get_hub

__all__ = ["Timeout", "with_timeout"]


class Timeout(BaseException):
    """``Timeout(seconds=None, exception=None)``: after ``seconds``, raise
    ``exception`` (default: this Timeout itself; ``False``: raise this
    Timeout but let the ``with`` block swallow it) in the greenlet that
    called :meth:`start`. ``seconds=None`` never fires."""

    # Slots: timeouts are created and cancelled around every guarded call.
    __slots__ = ("seconds", "exception", "timer")

    def __init__(self, seconds: float | None = None, exception=None,
                 ref: bool = True, priority: int = -1):
        BaseException.__init__(self)
        if seconds is not None:
            seconds = check_seconds(seconds)
        if exception is not None and exception is not False and \
                not isinstance(exception, BaseException) and \
                not (isinstance(exception, type) and issubclass(exception, BaseException)):
            raise TypeError(f"exception must be an exception, False or None, "
                            f"not {exception!r}")
        self.seconds = seconds
        self.exception = exception
        self.timer = None

    def start(self) -> None:
        """Arm the timer for the current greenlet."""
        timer = self.timer
        if timer is not None and timer.active:
            raise AssertionError(f"{self!r} is already started; cancel() it first")
        if self.seconds is None:
            return
        self.timer = get_hub().loop.timer(self.seconds, self._on_expiration, getcurrent())

    def _on_expiration(self, target) -> None:
        self.timer = None
        if target.dead:
            return
        exc = self.exception
        if exc is None or exc is False:
            target.throw(self)
        else:
            target.throw(exc)

    @classmethod
    def start_new(cls, timeout=None, exception=None, ref: bool = True) -> "Timeout":
        """Create and start a Timeout (or start the given Timeout instance)."""
        if isinstance(timeout, Timeout):
            if not timeout.pending:
                timeout.start()
            return timeout
        t = cls(timeout, exception)
        t.start()
        return t

    @staticmethod
    def _start_new_or_dummy(timeout, exception=None):
        if timeout is None:
            return _DummyTimeout()
        return Timeout.start_new(timeout, exception)

    @property
    def pending(self) -> bool:
        """True while the timer is armed."""
        return self.timer is not None and self.timer.active

    def cancel(self) -> None:
        """Disarm (harmless if it already fired or never started)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    close = cancel

    def __enter__(self) -> "Timeout":
        if not self.pending:
            self.start()
        return self

    def __exit__(self, typ, value, tb) -> bool | None:
        self.cancel()
        if value is self and self.exception is False:
            return True
        return None

    def __repr__(self) -> str:
        exc = "" if self.exception is None else f" exception={self.exception!r}"
        state = " pending" if self.pending else ""
        return f"<Timeout seconds={self.seconds}{exc}{state}>"

    def __str__(self) -> str:
        if self.seconds is None:
            return ""
        suffix = "" if self.seconds == 1 else "s"
        if self.exception is None or self.exception is False:
            return f"{self.seconds} second{suffix}"
        return f"{self.seconds} second{suffix}: {self.exception}"


class _DummyTimeout:
    """Stands in for ``Timeout(None)`` where a real one would cost a timer."""

    pending = False

    def cancel(self) -> None:
        pass

    close = cancel

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


_NONE = object()


def with_timeout(seconds: float, function: Callable, *args,
                 timeout_value=_NONE, **kwargs):
    """Call ``function(*args, **kwargs)``; if it takes longer than ``seconds``,
    raise :class:`Timeout` -- or return ``timeout_value`` if one was given."""
    timeout = Timeout.start_new(seconds)
    try:
        return function(*args, **kwargs)
    except Timeout as t:
        if t is timeout and timeout_value is not _NONE:
            return timeout_value
        raise
    finally:
        timeout.cancel()
