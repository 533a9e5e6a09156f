"""The hub: one greenlet per thread that runs the event loop.

Design principles (read these before changing anything here):

- Greenlets never wait for each other directly. A greenlet that must wait
  *parks*: it arranges for something to switch back to it later (a ready
  callback, a timer, an fd becoming ready) and switches to the hub. The hub
  *wakes* it by calling that something. :class:`Waiter` is the one object that
  packages this protocol for everything above the hub.
- The hub is the parent of every greenlet it runs, so a greenlet that returns
  or dies hands control back to the hub, never to a random greenlet.
- Ready callbacks live in a Python deque and run in FIFO order: the hot path
  (``sleep(0)``, spawn, waking a greenlet from an Event) never crosses into C,
  and a program gives the same interleaving every time it runs.
- One crossing into C per loop iteration: ``Loop.poll`` waits in the kernel
  and dispatches what fired.
- Nothing that blocks may run *in* the hub: a hub callback that tries to wait
  gets :class:`BlockingSwitchOutError` instead of deadlocking.

The loop (:meth:`Hub.run`), one pass:

1. run the callbacks that were ready when this pass began (bounded, so that
   callbacks scheduling callbacks cannot starve I/O);
2. compute the timeout: 0 if callbacks are ready (the poll itself is skipped
   while the last one is recent, see IO_CHECK_INTERVAL_NS), else wait for the
   next timer or fd;
3. if nothing can ever wake the loop, report it (the hub throws LoopExit into
   the main greenlet);
4. poll the C loop and dispatch fired watchers, each waking one waiter;
5. if the pass found nothing at all to do, release the greenlets in ``idle()``.
"""
from __future__ import annotations

import numbers
import os
import sys
import threading
import traceback
from collections import deque
from time import monotonic_ns
from typing import Callable

from greenlet import GreenletExit, getcurrent, greenlet

from labkit._loop import (READ, WRITE, ConcurrentObjectUseError, Loop, lib as _lib,
                          spin_seconds_from_environment)

__all__ = [
    "Hub", "Waiter", "LoopExit", "BlockingSwitchOutError",
    "ConcurrentObjectUseError", "get_hub", "sleep", "idle", "spawn_raw",
    "kill", "wait_read", "wait_write", "getcurrent", "GreenletExit",
]

#: While callbacks keep being ready, poll for I/O at most this often. A poll
#: is a syscall (~0.3 us); skipping it keeps ``sleep(0)`` ping-pong at the
#: cost of two switches, while I/O and timers still get checked every 0.2 ms.
IO_CHECK_INTERVAL_NS = 200_000

#: How long a poll spins instead of sleeping while another thread is about
#: to wake it (LABKIT_SPIN_US; see labkit._loop.spin_seconds_from_environment).
SPIN_SECONDS = spin_seconds_from_environment()

# -- tracing hooks -----------------------------------------------------------
#
# The tracer (tracing/recorder.py) sets these two globals while it records
# and resets them to None when it stops. Every hook is written as
# ``if _trace is not None: ...``: one branch when tracing is off (the
# interpreter caches the global lookup). ``_trace`` is ``record`` from
# labkit._lk_trace_py bound to the ring: a CPython builtin that writes
# without releasing the GIL (loop_c/lk_trace_py.c), so a record costs one C
# call and no Python frame; ``_tracer`` receives the rare events
# that need strings (spawn: name and site) as method calls.
#
# One record per switch INTO a greenlet, written by that greenlet right after
# its switch to the hub returns, with the reason it woke. Switching out is
# not recorded: a greenlet runs from its resume record to the next record.
_trace = None
_tracer = None
_TR_RESUME = _lib.LK_TR_RESUME
_TR_PASS = _lib.LK_TR_PASS
_TR_HOST = _lib.LK_TR_HOST
_WHY_READY = _lib.LK_WHY_READY
_WHY_TIMER = _lib.LK_WHY_TIMER
_WHY_WAITER = _lib.LK_WHY_WAITER
_WHY_THROW = _lib.LK_WHY_THROW


class LoopExit(Exception):
    """Raised in the main greenlet when it waits for something that nothing
    (no ready callback, timer, watched fd or pending thread job) can ever
    deliver: "This operation would block forever"."""


class BlockingSwitchOutError(AssertionError):
    """A hub callback tried to wait (for example called ``sleep``)."""


class Callback:
    """A ready callback that can still be cancelled (gevent's ``callback``)."""

    __slots__ = ("callback", "args")

    def __init__(self, callback: Callable, args: tuple):
        self.callback = callback
        self.args = args

    def __call__(self) -> None:
        cb = self.callback
        if cb is not None:
            self.callback = None
            cb(*self.args)

    def stop(self) -> None:
        """Do not run after all (a no-op once it ran)."""
        self.callback = None
        self.args = ()

    close = stop

    @property
    def pending(self) -> bool:
        return self.callback is not None

    def __repr__(self) -> str:
        return f"<Callback {self.callback!r} pending={self.pending}>"


class Waiter:
    """One-shot rendezvous between a greenlet that parks and the hub that wakes it.

    The waiting greenlet calls :meth:`get`; the hub (a callback, a timer, an
    fd watcher) calls :meth:`switch` or :meth:`throw`. Whichever comes first
    is fine: a value delivered before ``get`` is kept and returned at once.

    >>> from labkit import get_hub, Waiter
    >>> w = Waiter()
    >>> _ = get_hub().run_callback(w.switch, "hello")
    >>> w.get()
    'hello'

    ``switch``/``throw`` must be called from the hub greenlet (that is what
    makes the wake-up a plain greenlet switch). A Waiter is single-use; the
    woken greenlet must not rely on being woken only once by anything else.

    ``reason`` says what the greenlet waits for, for the tracer: a short
    label (``"Event"``, ``"Queue.get"``, ``"join"``) or ``(fd, READ|WRITE)``
    for fd readiness. It costs nothing when tracing is off.
    """

    __slots__ = ("hub", "greenlet", "value", "_exception", "reason")

    _EMPTY = object()

    def __init__(self, hub: "Hub | None" = None, reason=None):
        self.hub = hub if hub is not None else get_hub()
        self.greenlet = None
        self.value = Waiter._EMPTY
        self._exception = None
        self.reason = reason

    def ready(self) -> bool:
        return self.value is not Waiter._EMPTY or self._exception is not None

    def switch(self, value=None) -> None:
        """Wake the waiting greenlet with ``value`` (hub only)."""
        g = self.greenlet
        if g is None:
            self.value = value
            return
        if getcurrent() is not self.hub:
            raise AssertionError("Waiter.switch must be called from the hub greenlet")
        self.greenlet = None
        g.switch(value)

    def switch_args(self, *args) -> None:
        """Like switch, for callbacks that pass several arguments."""
        self.switch(args)

    def throw(self, *throw_args) -> None:
        """Raise an exception in the waiting greenlet (hub only)."""
        g = self.greenlet
        if g is None:
            self._exception = throw_args
            return
        if getcurrent() is not self.hub:
            raise AssertionError("Waiter.throw must be called from the hub greenlet")
        self.greenlet = None
        g.throw(*throw_args)

    def get(self):
        """Park until switched; return the value (or raise what was thrown)."""
        if self._exception is not None:
            exc, self._exception = self._exception, None
            raise _exception_from(exc)
        if self.value is not Waiter._EMPTY:
            value, self.value = self.value, Waiter._EMPTY
            return value
        if self.greenlet is not None:
            raise ConcurrentObjectUseError(
                f"this Waiter is already used by {self.greenlet!r}")
        hub = self.hub
        current = getcurrent()
        if current is hub:
            raise BlockingSwitchOutError(
                "cannot wait inside the hub (a loop callback): spawn a greenlet instead")
        self.greenlet = current
        try:
            value = hub.switch()
        except BaseException:
            self.greenlet = None
            if _trace is not None:
                _trace(_TR_RESUME, id(current), _WHY_THROW, _tracer.labels[self.reason])
            raise
        self.greenlet = None
        if _trace is not None:
            _trace(_TR_RESUME, id(current), _WHY_WAITER, _tracer.labels[self.reason])
        return value

    def __repr__(self) -> str:
        state = "ready" if self.ready() else "waiting" if self.greenlet else "empty"
        return f"<Waiter {state} greenlet={self.greenlet!r}>"


def _exception_from(throw_args: tuple) -> BaseException:
    """The exception object for ``Waiter.throw(type[, value[, tb]])`` args."""
    kind = throw_args[0]
    value = throw_args[1] if len(throw_args) > 1 else None
    if isinstance(kind, BaseException):
        return kind
    exc = value if isinstance(value, BaseException) else (
        kind() if value is None else kind(value))
    if len(throw_args) > 2 and throw_args[2] is not None:
        exc = exc.with_traceback(throw_args[2])
    return exc


class Hub(greenlet):
    """The event-loop greenlet of one thread. Get it with :func:`get_hub`.

    Its parent is the thread's main greenlet: when the loop has nothing left
    that could ever wake it, the hub throws :class:`LoopExit` there.
    """

    #: exceptions that are reported to the main greenlet rather than printed
    SYSTEM_ERROR = (KeyboardInterrupt, SystemExit, SystemError)

    # Slots, not the instance dict: the interpreter reads a slot without a
    # dictionary lookup, and these are read between every two switches.
    __slots__ = ("loop", "thread_ident", "_ready", "_idle", "_keepalive", "_due_soon",
                 "_last_poll_ns", "_next_poll_ns", "exception_stream", "_interrupted", "_ticking")

    def __init__(self, loop: Loop | None = None):
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        super().__init__(parent=root)
        self.loop = loop if loop is not None else Loop()
        if SPIN_SECONDS:  # answer a thread that keeps posting to us promptly
            self.loop.set_wake_spin(SPIN_SECONDS)
        self.thread_ident = threading.get_ident()
        #: callables ready to run, FIFO; other threads may append (a deque
        #: append is atomic under the GIL) and then wake the loop
        self._ready: deque = deque()
        #: greenlets parked in idle(), released when a pass finds no work
        self._idle: deque = deque()
        #: outstanding reasons to stay alive that the loop cannot see
        #: (thread-pool jobs, cross-thread waits); see keepalive()
        self._keepalive = 0
        #: how many of those are due within microseconds (keepalive(soon=True))
        self._due_soon = 0
        #: monotonic_ns when the last poll began: skips polls while busy, and
        #: is the loop's cheap clock (lock.py) -- at most IO_CHECK_INTERVAL_NS
        #: stale while callbacks keep running, as old as the wait after one
        self._last_poll_ns = monotonic_ns()
        #: when a busy loop polls again (see run); sleep(0) reads it too
        self._next_poll_ns = 0
        self.exception_stream = None  # None: sys.stderr at the time of the error
        #: set by the SIGINT handler when Ctrl-C arrives while the hub runs
        self._interrupted = False
        #: set by tick(): run one non-blocking pass, then switch back
        self._ticking = False
        if threading.current_thread() is threading.main_thread():
            _install_sigint_handler()

    # -- scheduling ---------------------------------------------------------
    def run_callback(self, callback: Callable, *args) -> Callback:
        """Run ``callback(*args)`` from the hub soon, after those already ready.

        Call from this hub's thread only (other threads: run_callback_threadsafe).
        """
        cb = Callback(callback, args)
        self._ready.append(cb)
        return cb

    def run_callback_threadsafe(self, callback: Callable, *args) -> Callback:
        """Like run_callback, callable from any thread: wakes the loop if it sleeps."""
        cb = Callback(callback, args)
        self._ready.append(cb)
        if threading.get_ident() != self.thread_ident:
            self.loop.wake()
        return cb

    def _disarm(self, callback: Callable) -> None:
        """Make ``callback``, if it is still queued, a no-op: a greenlet that
        stopped waiting takes back the switch that would wake it. Overwrite
        rather than remove: the hub may be in the middle of a pass that
        counted the queue's length when it began."""
        ready = self._ready
        try:
            ready[ready.index(callback)] = _noop
        except ValueError:
            pass

    def keepalive(self, delta: int = 1, soon: bool = False) -> None:
        """Count (+1) or uncount (-1) a pending wake-up the loop cannot see,
        such as a job in another thread that will call run_callback_threadsafe.
        While the count is positive the hub never declares LoopExit.

        ``soon=True`` (on both the +1 and its -1) says the wake-up is likely
        due within microseconds, as a thread-pool job's is. Then the next
        poll that would sleep spins instead, for up to :data:`SPIN_SECONDS`
        (with the GIL released): a sleeping thread's CPU goes idle, and
        waking it costs more than the job itself. A spin that catches
        nothing turns spinning off until the next such change."""
        self._keepalive += delta
        if soon and SPIN_SECONDS:
            # (Re-)arm on every change while any is pending: the loop turns
            # the spin off after one that catches nothing, so a long job
            # costs one spin, and the next submit or reply re-arms it.
            self._due_soon = pending = self._due_soon + delta
            if not self.loop.closed:  # (a pool may outlive its hub)
                self.loop.set_spin(SPIN_SECONDS if pending > 0 else 0)

    # -- the loop -----------------------------------------------------------
    def run(self) -> None:
        """The hub greenlet's body: loop forever (LoopExit is thrown, not returned).

        Phase 1 is inline (it runs between every two greenlet switches, so
        it is kept in one frame with local variables); phases 2-5 are in
        :meth:`poll_for_events`. :meth:`tick` makes it stop after one pass.
        """
        ready = self._ready
        popleft = ready.popleft
        next_poll_ns = 0
        while True:
            try:
                while True:
                    # Phase 1: run the callbacks that are ready now, and only those.
                    count = len(ready)
                    if count and _trace is not None:
                        _trace(_TR_PASS, 0, count, 0)
                    while count:
                        count -= 1
                        try:
                            cb = popleft()
                        except IndexError:  # a callback took back some queued
                            break           # after it (Semaphore.acquire does)
                        try:
                            cb()
                        except BaseException:
                            self._handle_dispatch_error(cb)
                    # Phases 2-5, unless busy and the last poll was recent.
                    if not ready or monotonic_ns() >= next_poll_ns:
                        if not self.poll_for_events(block=not self._ticking):
                            break
                        next_poll_ns = self._next_poll_ns = \
                            self._last_poll_ns + IO_CHECK_INTERVAL_NS
                    if self._ticking:  # a host loop asked for one pass only
                        self._ticking = False
                        if _trace is not None:  # the host waits: not a block
                            _trace(_TR_HOST, 0, 0, 0)
                        self.parent.switch()
            except GreenletExit:
                raise  # the hub itself is being killed
            except BaseException:
                # Only the hub's own bookkeeping can get here (callbacks are
                # guarded one by one); report it and keep the loop alive.
                self._handle_dispatch_error(None)
                continue
            # Nothing can ever wake us. The main greenlet (our parent) is the
            # one stuck waiting: tell it. If it switches back to us later, we
            # continue from here.
            self.parent.throw(LoopExit("This operation would block forever", self))

    def tick(self) -> float | None:
        """Run one non-blocking pass of the loop, then come back.

        For host loops that own the thread (the Jupyter kernel's asyncio
        loop, a REPL's input hook): they call ``tick()`` when the backend fd
        is readable or the next timer is due. Call from the thread's main
        greenlet (the hub's parent). Returns how soon the hub wants the next
        tick: 0 if callbacks are ready, the seconds until the next timer, or
        None if only an fd event (or nothing) can bring new work.
        """
        if getcurrent() is not self.parent:
            raise BlockingSwitchOutError(
                "tick() must be called from the main greenlet of the hub's thread")
        self._ticking = True
        try:
            self.switch()
        finally:
            self._ticking = False
        if self._ready:
            return 0.0
        return self.loop.next_timeout()

    def poll_for_events(self, block: bool) -> bool:
        """Phases 2-5 of a pass: decide the timeout, poll, dispatch, idle."""
        if self._interrupted:
            self._deliver_interrupt()
            # We were suspended in there; whoever switched back to us may be
            # a host loop's tick(), which must not wait in the kernel.
            block = block and not self._ticking
        ready = self._ready
        # Phase 2: how long may the poll wait?
        if ready or self._idle or not block:
            timeout = 0
        else:
            # Phase 3: would we wait for something that can never come?
            if not self.loop.active_timers and not self.loop.io_waiters \
                    and not self._keepalive:
                return False
            timeout = -1
        # Phase 4: poll and dispatch.
        self._last_poll_ns = monotonic_ns()
        fired = self.loop.poll(timeout, self._handle_dispatch_error)
        if self._interrupted:
            self._deliver_interrupt()
        # Phase 5: idle greenlets run when a pass had nothing else to do.
        if self._idle and not fired and not ready:
            ready.extend(self._idle)
            self._idle.clear()
        return True

    # -- errors -------------------------------------------------------------
    def _deliver_interrupt(self) -> None:
        # Ctrl-C arrived while the hub was running (typically asleep in
        # epoll). It belongs to the main greenlet, which is parked waiting.
        self._interrupted = False
        self.parent.throw(KeyboardInterrupt())

    def _handle_dispatch_error(self, callback) -> None:
        exc_type, exc, tb = sys.exc_info()
        if exc_type is GreenletExit and getcurrent() is self:
            raise  # the hub itself is being killed (garbage collected)
        self.handle_error(callback, exc_type, exc, tb)

    def handle_error(self, context, exc_type, exc, tb) -> None:
        """Report an exception that escaped a greenlet or callback.

        KeyboardInterrupt, SystemExit and SystemError are re-raised in the main
        greenlet (so Ctrl-C works); anything else is printed with its
        traceback and the loop goes on.
        """
        if issubclass(exc_type, self.SYSTEM_ERROR):
            self.handle_system_error(exc)
        else:
            self.print_exception(context, exc_type, exc, tb)

    def handle_system_error(self, exc: BaseException) -> None:
        current = getcurrent()
        if current is self or current is self.parent:
            self.parent.throw(exc)
        else:
            self.run_callback(self.parent.throw, exc)

    def print_exception(self, context, exc_type, exc, tb) -> None:
        stream = self.exception_stream or sys.stderr
        try:
            traceback.print_exception(exc_type, exc, tb, file=stream)
            if context is not None:
                stream.write(f"{context!r} failed with {exc_type.__name__}\n\n")
            stream.flush()
        except Exception:  # a broken stream must not kill the hub
            pass

    # -- waiting on behalf of the current greenlet -------------------------
    def wait_io(self, fd: int, event: int, timeout: float | None = None,
                timeout_exc: BaseException | None = None,
                keep_interest: bool = False) -> int:
        """Park the current greenlet until ``fd`` is ready for ``event``
        (READ or WRITE). Returns the fired event bits. Raises ``timeout_exc``
        (default: ``TimeoutError``) after ``timeout`` seconds.

        ``keep_interest``: see :meth:`Loop.io_cancel` -- only for an fd whose
        owner calls ``loop.io_forget(fd)`` before closing it."""
        waiter = Waiter(self)
        if _trace is not None:
            waiter.reason = (fd, event)
        self.loop.io_start(fd, event, waiter.switch)
        timer = None
        if timeout is not None:
            exc = timeout_exc if timeout_exc is not None else TimeoutError("timed out")
            timer = self.loop.timer(timeout, waiter.throw, exc)
        try:
            return waiter.get()
        finally:
            if timer is not None:
                timer.cancel()
            self.loop.io_cancel(fd, event, keep_interest)

    def join(self, timeout: float | None = None) -> bool:
        """Run the loop until it has nothing left to do (True) or ``timeout``
        passes (False). Call from the main greenlet."""
        if getcurrent() is self:
            raise BlockingSwitchOutError("cannot join the hub from inside the hub")
        timer = None
        if timeout is not None:
            timer = self.loop.timer(timeout, getcurrent().switch)
        try:
            self.switch()
        except LoopExit:
            return True
        finally:
            if timer is not None:
                timer.cancel()
        return False

    def destroy(self) -> None:
        """Close the loop and forget this hub; the next get_hub() makes a new one."""
        if getattr(_local, "hub", None) is self:
            del _local.hub
        self.loop.close()

    def __repr__(self) -> str:
        return (f"<Hub thread={self.thread_ident} ready={len(self._ready)} "
                f"{self.loop!r}>")


# -- one hub per thread ------------------------------------------------------

_local = threading.local()


def get_hub() -> Hub:
    """This thread's hub, created on first use."""
    try:
        return _local.hub
    except AttributeError:
        hub = _local.hub = Hub()
        return hub


def _get_hub_if_any() -> Hub | None:
    return getattr(_local, "hub", None)


def hub_for_this_thread() -> Hub | None:
    """The hub that may park the caller, or None if the caller must block.

    The main thread always gets a hub (created on first use). Any other
    thread uses its own hub if it made one, and otherwise behaves like plain
    Python: a library's worker thread must not grow a hub behind its back.
    This is how cooperative I/O and monkey-patched functions decide.
    """
    hub = getattr(_local, "hub", None)
    if hub is None and threading.current_thread() is threading.main_thread():
        hub = get_hub()
    return hub


def _sigint_handler(signum, frame) -> None:
    """SIGINT: KeyboardInterrupt where the user's code runs, deferred in the hub.

    Python runs signal handlers between two bytecodes of the main thread, in
    whatever greenlet is current. Raising in the hub at an arbitrary point
    could drop events that lk_poll already took from the kernel (a timer
    would never fire), so the hub instead notes the interrupt, wakes its
    poll, and throws KeyboardInterrupt into the main greenlet at a safe point.
    """
    hub = getattr(_local, "hub", None)
    if hub is not None and getcurrent() is hub:
        hub._interrupted = True
        hub.loop.wake()
        return
    raise KeyboardInterrupt


def _install_sigint_handler() -> None:
    # Only replace Python's default handler; a handler installed by the user
    # or the host (IPython, a test runner) is left alone.
    import signal
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _sigint_handler)
    except (ValueError, OSError):  # not the main thread, or no signals here
        pass


def _reinit_after_fork() -> None:
    # The child has only the thread that forked. Its hub's loop shares the
    # parent's epoll set and wake-up fd; give it fresh ones.
    hub = getattr(_local, "hub", None)
    if hub is not None and not hub.loop.closed:
        hub.loop.after_fork()
        hub.thread_ident = threading.get_ident()


os.register_at_fork(after_in_child=_reinit_after_fork)


# -- blocking-style primitives built directly on the hub -------------------

def sleep(seconds: float = 0) -> None:
    """Park the current greenlet for ``seconds``.

    ``sleep(0)`` lets every other ready greenlet run once, then continues.
    When nobody else could run, it continues at once, without a switch;
    I/O and timers are still checked every 0.2 ms (IO_CHECK_INTERVAL_NS).
    A negative value waits until the loop is idle (see :func:`idle`).
    """
    current = getcurrent()
    # A spawned greenlet's parent is its hub: skip the thread-local lookup.
    hub = current.parent
    if hub.__class__ is not Hub:
        hub = get_hub()
        if current is hub:
            raise BlockingSwitchOutError("cannot sleep inside the hub (a loop callback)")
    if seconds == 0:
        ready = hub._ready
        if not ready and monotonic_ns() < hub._next_poll_ns and not hub._ticking:
            # A round trip through the hub would run our own switch and
            # nothing else: no callback is ready, no poll is due, no host
            # loop waits for this pass to end (tick), and the hub is
            # suspended in its own pass loop -- not in the middle of a
            # callback (waking several waiters, dispatching io events) that
            # still has work to do. So sleep(0) costs no switch when nobody
            # else could run; I/O is still checked every 0.2 ms.
            frame = hub.gr_frame
            if frame is not None and frame.f_code is _HUB_RUN_CODE:
                return
        # The hot path: queue our own switch behind the ready callbacks.
        switch = current.switch
        ready.append(switch)
        try:
            _switch(hub)
        except BaseException:
            # Woken by an exception (kill, Timeout): our switch must not
            # fire later and wake us from some unrelated wait.
            hub._disarm(switch)
            if _trace is not None:
                _trace(_TR_RESUME, id(current), _WHY_THROW, 0)
            raise
        if _trace is not None:
            _trace(_TR_RESUME, id(current), _WHY_READY, 0)
        return
    seconds = _check_seconds(seconds)
    if seconds > 0:
        timer = hub.loop.timer(seconds, current.switch)
        try:
            _switch(hub)
        except BaseException:
            timer.cancel()
            if _trace is not None:
                _trace(_TR_RESUME, id(current), _WHY_THROW, 0)
            raise
        timer.cancel()
        if _trace is not None:
            _trace(_TR_RESUME, id(current), _WHY_TIMER, 0)
    else:
        idle()


#: the code of the hub's loop, where a hub with nothing half-done is suspended
_HUB_RUN_CODE = Hub.run.__code__


def _noop() -> None:
    pass


_switch = greenlet.switch  # unbound: saves a bound-method allocation per call


def _check_seconds(seconds, name: str = "seconds") -> float:
    """Validate a duration argument: a real number (not bool), not NaN."""
    if type(seconds) is not float and type(seconds) is not int:
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise TypeError(f"{name} must be a number, not {type(seconds).__name__}")
        seconds = float(seconds)
    if seconds != seconds:
        raise ValueError(f"{name} must not be NaN")
    return seconds


def idle() -> None:
    """Park until a loop pass finds no callbacks ready and no events fired."""
    hub = get_hub()
    waiter = Waiter(hub, "idle")
    hub._idle.append(waiter.switch)
    try:
        waiter.get()
    except BaseException:
        try:
            hub._idle.remove(waiter.switch)
        except ValueError:
            pass
        raise


def wait_read(fd: int, timeout: float | None = None,
              timeout_exc: BaseException | None = None) -> None:
    """Park until ``fd`` is readable (gevent.socket.wait_read)."""
    get_hub().wait_io(fd, READ, timeout, timeout_exc)


def wait_write(fd: int, timeout: float | None = None,
               timeout_exc: BaseException | None = None) -> None:
    """Park until ``fd`` is writable (gevent.socket.wait_write)."""
    get_hub().wait_io(fd, WRITE, timeout, timeout_exc)


def spawn_raw(function: Callable, *args, **kwargs) -> greenlet:
    """Start ``function(*args, **kwargs)`` in a bare greenlet (no links, no
    join): the cheapest way to run something concurrently. Runs in a copy of
    the caller's contextvars context."""
    if not callable(function):
        raise TypeError(f"function must be callable, not {function!r}")
    import contextvars
    hub = get_hub()
    if kwargs:
        g = greenlet(lambda: function(*args, **kwargs), hub)
        hub._ready.append(g.switch)
    else:
        g = greenlet(function, hub)
        hub.run_callback(g.switch, *args)
    g.gr_context = contextvars.copy_context()
    if _trace is not None:
        _tracer.on_spawn(g)
    return g


def kill(glet, exception=GreenletExit) -> None:
    """Kill a greenlet (a Greenlet or a raw one) asynchronously."""
    kill_method = getattr(glet, "kill", None)
    if kill_method is not None:
        kill_method(exception=exception, block=False)
        return
    if not glet.dead:
        get_hub().run_callback(glet.throw, exception)
