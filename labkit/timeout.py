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
from labkit.hub import Hub, get_hub

__all__ = ["Timeout", "with_timeout"]


class Timeout(BaseException):
    """``Timeout(seconds=None, exception=None, ref=True)``: after ``seconds``,
    raise ``exception`` in the greenlet that called :meth:`start`.

    ``exception``: None (the default) raises this Timeout itself; ``False``
    raises it too, but the ``with`` block swallows it; a string raises this
    Timeout with the string in its message; an exception class or instance
    raises that. Anything else is thrown as is, and the greenlet gets the
    TypeError that throwing it causes (gevent's behaviour).
    ``seconds=None`` never fires. ``ref=False``: the pending timeout does not
    keep the loop alive (a hub with nothing else to do declares LoopExit).
    ``priority`` is accepted for gevent and ignored.
    """

    # Slots: timeouts are created and cancelled around every guarded call.
    __slots__ = ("seconds", "exception", "timer", "ref", "_one_shot")

    def __init__(self, seconds: float | None = None, exception=None,
                 ref: bool = True, priority: int = -1, _one_shot: bool = False):
        BaseException.__init__(self)
        # check_seconds, inlined for the common types (a call here costs
        # ~5% of a start + cancel).
        if seconds.__class__ is float:
            if seconds != seconds:
                raise ValueError("seconds must not be NaN")
        elif seconds is not None and seconds.__class__ is not int:
            seconds = check_seconds(seconds)
        self.seconds = seconds
        self.exception = exception
        self.timer = None
        self.ref = ref
        self._one_shot = _one_shot

    def start(self) -> None:
        """Arm the timer for the current greenlet."""
        timer = self.timer
        if timer is not None and timer.active:
            raise AssertionError(f"{self!r} is already started; cancel() it first")
        seconds = self.seconds
        if seconds is None:
            return
        exc = self.exception
        throws = self if exc is None or exc is False or isinstance(exc, str) else exc
        current = getcurrent()
        # A spawned greenlet's parent is its hub: skip the thread-local lookup.
        hub = current.parent
        if hub.__class__ is not Hub:
            hub = get_hub()
        timer = self.timer = hub.loop.start_timer(seconds, self._on_expiration, current, throws)
        if not self.ref:
            timer.ref = False

    def _on_expiration(self, prev_greenlet, ex) -> None:
        """The timer fired (in the hub): throw ``ex`` into ``prev_greenlet``,
        the greenlet that started us. gevent's hook, kept by its signature so
        that subclasses written for gevent (its test harness's) work."""
        self.timer = None
        if prev_greenlet.dead:
            return
        prev_greenlet.throw(ex)

    @classmethod
    def start_new(cls, timeout=None, exception=None, ref: bool = True,
                  _one_shot: bool = False) -> "Timeout":
        """Create and start a Timeout (or start the given Timeout instance)."""
        if isinstance(timeout, Timeout):
            if not timeout.pending:
                timeout.start()
            return timeout
        # Keywords only where they differ from the defaults: passing them
        # costs a dict per call (and gevent's subclasses take ref= only).
        if _one_shot:
            t = cls(timeout, exception, ref=ref, _one_shot=True)
        elif ref:
            t = cls(timeout, exception)
        else:
            t = cls(timeout, exception, ref=False)
        t.start()
        return t

    @staticmethod
    def _start_new_or_dummy(timeout, exception=None, ref: bool = True):
        if timeout is None:
            return _DummyTimeout()
        return Timeout.start_new(timeout, exception, ref, _one_shot=True)

    @property
    def pending(self) -> bool:
        """True while the timer is armed."""
        return self.timer is not None and self.timer.active

    def cancel(self) -> None:
        """Disarm (harmless if it already fired or never started)."""
        timer = self.timer
        if timer is not None:
            timer.cancel()
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

    def __lt__(self, other):
        """Timeouts compare with numbers and with each other by ``seconds``
        (gevent's convenience: ``Timeout(0) < 1``)."""
        try:
            return self.seconds < other.seconds
        except AttributeError:
            try:
                return self.seconds < other
            except TypeError:
                return NotImplemented

    def __repr__(self) -> str:
        exc = "" if self.exception is None else f" exception={self.exception!r}"
        state = " pending" if self.pending else ""
        return f"<{type(self).__name__} at {id(self):#x} seconds={self.seconds}{exc}{state}>"

    def __str__(self) -> str:
        if self.seconds is None:
            return ""
        suffix = "" if self.seconds == 1 else "s"
        if self.exception is None:
            return f"{self.seconds} second{suffix}"
        if self.exception is False:
            return f"{self.seconds} second{suffix} (silent)"
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
