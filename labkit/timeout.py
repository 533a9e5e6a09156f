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

from labkit._lk_poll_py import TimeoutBase, configure_timeouts
from labkit.hub import Hub, get_hub

__all__ = ["Timeout", "with_timeout"]

# How TimeoutBase.start finds the current greenlet's hub, and through it the
# loop's timer table (hub.loop._timer_table): see loop_c/lk_timeout_py.c.
configure_timeouts(getcurrent, Hub, get_hub)


class Timeout(TimeoutBase):
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

    The hot half is C (``TimeoutBase``, loop_c/lk_timeout_py.c):
    ``__init__``, ``start()`` (arm the timer for the current greenlet;
    AssertionError if it is armed), ``cancel()``/``close()`` (disarm;
    harmless if it already fired or never started), ``pending`` (True while
    armed), ``start_new(timeout=None, exception=None, ref=True)`` (create
    and start one; a Timeout given as ``timeout`` is started unless pending
    and returned), ``__enter__`` (start unless pending) and ``__exit__``
    (cancel; swallow this Timeout if its exception is False). A started
    Timeout is itself the entry of its loop's timer table, under an int id:
    there is no Timer object. Subclasses may override ``__init__``,
    ``start``, ``cancel`` and ``_on_expiration``: the C code calls the
    override. Attributes: ``seconds``, ``exception``, ``ref``.
    """

    __slots__ = ()

    def _on_expiration(self, prev_greenlet, ex) -> None:
        """The timer fired (in the hub): throw ``ex`` into ``prev_greenlet``,
        the greenlet that started us. gevent's hook, kept by its signature so
        that subclasses written for gevent (its test harness's) work."""
        if prev_greenlet.dead:
            return
        prev_greenlet.throw(ex)

    @staticmethod
    def _start_new_or_dummy(timeout, exception=None, ref: bool = True):
        if timeout is None:
            return _DummyTimeout()
        return Timeout.start_new(timeout, exception, ref, _one_shot=True)

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
