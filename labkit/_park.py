"""How a greenlet waits, and how the hub wakes it: the one home of parking.

Every way a greenlet blocks in labkit -- ``sleep``, a Waiter, an Event, a
place in a Semaphore's or Queue's line, an fd wait with or without a
timeout, ``select`` -- is written here, once. The rest of labkit calls these
and never switches to the hub itself. What lives here, and nowhere else:

- **the refusal** to park inside the hub (a hub callback that tried to wait
  would deadlock the loop): :func:`cannot_wait_in_hub` builds the one error;
- **the take-back** of a queued wake-up: a greenlet that stops waiting for
  another reason (a timeout, a kill) must make sure its wake-up can never
  fire into some later, unrelated wait. Queued switches are taken back with
  :meth:`Hub.take_back`, timers are cancelled, fd interest is cancelled,
  links are unlinked -- always before the wait returns or raises;
- **the tracer's resume record**, written by the greenlet right after it
  resumed, with why it woke and what it waited on (``_resume``);
- **the fd close**: :func:`forget_fd` wakes every greenlet parked on a
  closing fd with ``EBADF``;
- **the no-hub fallback**: :func:`wait_fd` blocks the thread (poll(2)) when
  the calling thread has no hub, as the stdlib would;
- **what a greenlet waits on**, in plain words, for ``%labkit_status``:
  :func:`waiting_on`.

Four shapes of parking, cheapest first::

    the greenlet's own switch      sleep, Event.wait, fd waits     hub calls g.switch(value)
    Ticket in a FIFO line          Semaphore, Queue                server sets .value, wakes
    Linkable's one-shot links      Event, AsyncResult, Semaphore   hub calls link(obj)
    Waiter                         joins, thread-pool replies,     anyone in the hub calls
                                   Pool slots, other threads        waiter.switch(value)

The second and third shapes -- a greenlet waiting in a line that a server
pops -- are classes of :mod:`labkit._lines` (``Ticket``, ``Linkable``: the
lines and what their servers do); how a greenlet parks in them is written
here (``_TicketWaits``, ``_LinkableWaits``, which they inherit), and this
module re-exports them.

The first three put a bound ``greenlet.switch`` (or a small object around
it) where the waker will find it: the hub then resumes the greenlet with one
C call. That is only safe because of the take-back rule above. A
:class:`Waiter` keeps a value that arrives before ``get()``, which makes it
the right tool when the waker may run first or from a stranger's callback.

Who may call: every ``park`` here runs in a greenlet of the hub's thread
(the main greenlet included), never in the hub itself. Wakers run in the hub
(``Waiter.switch``), or queue the wake-up with ``hub.schedule`` from the
hub's thread, or ``hub.run_callback_threadsafe`` from any thread.
"""
from __future__ import annotations

import numbers
from collections import deque
from errno import EBADF
from select import POLLIN, POLLOUT
from select import poll as _blocking_poll
from time import monotonic_ns
from typing import Callable

from greenlet import getcurrent, greenlet

from labkit import _native
from labkit._frame_locals import locals_of
from labkit._lk_poll_py import sleep0 as _sleep0
from labkit._lk_poll_py import sleep0_setup as _sleep0_setup
from labkit._loop import ERROR, READ, WRITE, ConcurrentObjectUseError
from labkit.hub import (_TR_RESUME, _WHY_READY, _WHY_THROW, _WHY_TIMER, _WHY_WAITER,
                        BlockingSwitchOutError, Hub, get_hub, hub_for_this_thread)

__all__ = [
    "Waiter", "wake_waiter", "Linkable", "Ticket", "EMPTY", "sleep", "idle", "wait_io", "wait_fd",
    "wait_read", "wait_write", "wait_any_fd", "forget_fd", "waiting_on",
    "check_seconds", "check_timeout", "deadline", "cannot_wait_in_hub", "throw_parked",
]

#: unbound: calling it saves a bound-method allocation per park
_switch = greenlet.switch
_get_ident = _native.get_ident

#: what switch() returns to a greenlet resumed with no arguments
_NO_VALUE = ()

#: what a timer passes to a parked greenlet, to tell "timed out" from "woken"
_TIMED_OUT = object()

#: a _Thrown's context before it raised
_NOT_RAISED = object()


class _Thrown:
    """What :func:`throw_parked` switches into a greenlet parked here: raise
    ``exception`` (a BaseException class or instance) at the park point.

    Why not ``greenlet.throw``: greenlet turns the pending exception into a
    C++ exception and rethrows it on its way into the target (~38k
    instructions of unwinding per throw, the largest single cost of killing
    a parked greenlet); a plain switch and a Python ``raise`` cost a tenth.
    Only the sites listed in ``_UNDERSTANDS_THROWN`` may receive one: each
    checks ``value.__class__ is _Thrown`` (a private class: no value anyone
    else switches in can pass for it) and raises :meth:`raised`, and its
    ``except BaseException`` calls :meth:`unchain` -- so the exception looks
    exactly as greenlet.throw makes it: raised at the park site, a fresh
    traceback, no implicit ``__context__`` from an exception the greenlet
    was handling when it parked."""

    __slots__ = ("exception", "context")

    def __init__(self, exception):
        self.exception = exception
        self.context = _NOT_RAISED

    def raised(self) -> BaseException:
        """The exception to raise, made in the woken greenlet (as greenlet
        does when it is given a class)."""
        exc = self.exception
        if isinstance(exc, type):
            exc = exc()
        # greenlet.throw starts a new traceback, and leaves __context__ as
        # it was; a raise statement would chain the exception being handled
        exc.__traceback__ = None
        self.context = exc.__context__
        self.exception = exc
        return exc

    def unchain(self) -> None:
        """Undo the raise statement's implicit chaining (see the class)."""
        if self.context is not _NOT_RAISED:
            self.exception.__context__ = self.context


def throw_parked(g, exception) -> bool:
    """Raise ``exception`` (a BaseException class or instance) in greenlet
    ``g`` if it is parked at one of this module's park sites that
    understands a :class:`_Thrown` -- by a plain switch; return True.
    Otherwise do nothing and return False: the caller uses
    ``greenlet.throw`` (a greenlet never started, parked elsewhere, any
    other form of exception). Call from the hub, as greenlet.throw."""
    if not isinstance(exception, BaseException) and not (
            isinstance(exception, type) and issubclass(exception, BaseException)):
        return False
    frame = g.gr_frame   # where g is suspended: None if never started or running
    # (by id: a code object's hash is not cached -- hashing one walked its
    # names and constants, ~1,400 instructions per kill; these functions'
    # code objects live as long as this module)
    if frame is None or id(frame.f_code) not in _UNDERSTANDS_THROWN:
        return False
    _switch(g, _Thrown(exception))
    return True

# -- tracing hooks ---------------------------------------------------------
#
# Set by tracing/recorder.py while it records (see the comment in
# labkit/hub.py): one branch each when tracing is off. ``_resume(g, why,
# label)`` writes the resume record -- ``current`` woke for ``why`` after
# waiting on ``label`` (a short string, or None for "no label": b = 0) --
# and ``_resume_fd(g, why, fd, event)`` the same for label ``(fd, event)``,
# each in one C call (loop_c/lk_trace_py.c: id, label number and record
# together; the Python helper they replace cost ~4x as much, the larger
# part of the flight recorder's cost). A socket's wait (wait_io's first
# branch, Loop.io_park) has its C call write the record itself
# (labkit._loop.set_io_resumer): no Python runs for it at all.
_trace = None
_tracer = None
_resume = None
_resume_fd = None


def _resumed(current, why: int, label) -> None:
    """``_resume`` for modules that import it by name (labkit.event).
    Tracing is on."""
    _resume(current, why, label)


# -- arguments -------------------------------------------------------------

def check_seconds(seconds, name: str = "seconds") -> float:
    """Validate a duration argument: a real number (not bool), not NaN.

    Returns it as an int or float; raises TypeError/ValueError naming
    ``name``. Negative values are the caller's business (``sleep(-1)`` has
    a meaning; a negative timeout usually means "now")."""
    if type(seconds) is not float and type(seconds) is not int:
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise TypeError(f"{name} must be a number, not {type(seconds).__name__}")
        seconds = float(seconds)
    if seconds != seconds:
        raise ValueError(f"{name} must not be NaN")
    return seconds


def check_timeout(timeout):
    """``check_seconds`` for an optional ``timeout`` argument (None: forever).

    A :class:`labkit.Timeout` object is returned as is: gevent lets one stand
    for the seconds of any wait, and then the wait raises *that* Timeout
    (or its exception) when it fires, instead of timing out its own way.
    The parking functions below take it where they take seconds."""
    if timeout is None or timeout.__class__ is float or timeout.__class__ is int:
        return timeout
    if _is_timeout_object(timeout):
        return timeout
    return check_seconds(timeout, "timeout")


def _is_timeout_object(timeout) -> bool:
    # labkit.timeout imports this module: recognise a Timeout by its shape.
    return isinstance(timeout, BaseException) and hasattr(timeout, "pending") \
        and hasattr(timeout, "start")


def deadline(hub, timeout, callback: Callable, *args):
    """The deadline of a park: for ``timeout`` seconds, a loop timer that
    calls ``callback(*args)``; for a Timeout object (see check_timeout), the
    object itself, started if it is not pending already -- it will throw
    into the parked greenlet. Either way the caller ``cancel()``s it when the
    park ends (gevent cancels a Timeout it was given, too). Call in the
    greenlet that parks."""
    if timeout.__class__ is float or timeout.__class__ is int or not _is_timeout_object(timeout):
        return hub.loop.start_timer(timeout, callback, *args)
    if not timeout.pending:
        timeout.start()
    return timeout


def invalid_switch(current, value, waiting_for: str):
    """The error for a greenlet parked on ``waiting_for`` that something
    other than its waker switched to (with ``value``): gevent's
    InvalidSwitchError (an AssertionError). Raise it."""
    from labkit.exceptions import InvalidSwitchError
    return InvalidSwitchError(
        f"Invalid switch into {current!r} while waiting for {waiting_for}: got {value!r}")


def cannot_wait_in_hub() -> BlockingSwitchOutError:
    """The error for a hub callback that tried to park (raise it)."""
    return BlockingSwitchOutError(
        "cannot wait inside the hub (a loop callback): spawn a greenlet instead")


# -- Waiter ------------------------------------------------------------------

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
            raise cannot_wait_in_hub()
        self.greenlet = current
        value = None
        try:
            value = hub.switch()
            if value.__class__ is _Thrown:  # throw_parked
                raise value.raised()
        except BaseException:
            self.greenlet = None
            if value.__class__ is _Thrown:
                value.unchain()
            if _trace is not None:
                _resume(current, _WHY_THROW, self.reason)
            raise
        self.greenlet = None
        if _trace is not None:
            _resume(current, _WHY_WAITER, self.reason)
        return value

    def __str__(self) -> str:
        # gevent's form: <Waiter greenlet=... value=...> / exc_info=...
        # (str only: a greenlet's repr may show a Waiter's bound method,
        # and the Waiter's repr must not show that greenlet back)
        text = f"<{type(self).__name__} greenlet={self.greenlet!r}"
        if self._exception is not None:
            text += f" exc_info={self._exception!r}"
        elif self.value is not Waiter._EMPTY:
            text += f" value={self.value!r}"
        return text + ">"


def wake_waiter(waiter: Waiter, value) -> None:
    """Switch ``value`` into ``waiter`` from wherever the caller runs in the
    waiter's thread: at once if that is the hub, else from the hub's next
    pass (Waiter.switch may only run in the hub)."""
    hub = waiter.hub
    if getcurrent() is hub:
        waiter.switch(value)
    else:
        hub.run_callback(waiter.switch, value)


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


# -- sleep and idle ------------------------------------------------------------

def sleep(seconds: float = 0) -> None:
    """Park the current greenlet for ``seconds``.

    ``sleep(0)`` lets every other ready greenlet run once, then continues.
    When nobody else could run, it continues at once, without a switch;
    I/O and timers are still checked every 0.2 ms (hub.IO_CHECK_INTERVAL_NS).
    A negative value waits until the loop is idle (see :func:`idle`).
    """
    if seconds == 0 and _trace is None:
        # The common case -- a greenlet of a Hub yielding while others are
        # ready -- in one C call (loop_c/lk_poll_py.c, sleep0): the steps
        # below, from ``hub = current.parent`` to the switch, in the same
        # order. False when it is not that case: then the code below runs.
        try:
            switched = _sleep0()
        except BaseException:
            if _trace is not None:    # the tracer started while we slept
                _resume(getcurrent(), _WHY_THROW, None)
            raise
        if switched:
            if _trace is not None:
                _resume(getcurrent(), _WHY_READY, None)
            return
    current = getcurrent()
    # A spawned greenlet's parent is its hub: skip the thread-local lookup.
    hub = current.parent
    if hub.__class__ is not Hub:
        hub = get_hub()
        if current is hub:
            raise cannot_wait_in_hub()
    if seconds == 0:
        ready = hub.ready
        if not ready and monotonic_ns() < hub._next_poll_ns and not hub._ticking:
            # A round trip through the hub would run our own switch and
            # nothing else: no callback is ready, no poll is due, no host
            # loop waits for this pass to end (tick), and the hub is
            # suspended in its own pass loop -- not in the middle of a
            # callback (waking several waiters, dispatching io events) that
            # still has work to do. So sleep(0) costs no switch when nobody
            # else could run; I/O is still checked every 0.2 ms.
            # (Hub.owns_frame, inlined: a call here costs 3% of a yield.)
            frame = hub.gr_frame
            if frame is not None and frame is hub._run_frame:
                return
        # The hot path: queue our own switch behind the ready callbacks.
        switch = current.switch
        ready.append(switch)   # (hub.schedule, with the queue already at hand)
        # (No _Thrown check here, unlike every other switch of this module:
        # it would cost this hottest path 2%; throw_parked knows.)
        try:
            # yield0: switch straight to the next ready greenlet when the
            # hub's pass allows it (one switch instead of two; the pass
            # count and the PASS record are kept as the hub keeps them:
            # loop_c/lk_poll_py.c, Passes), else through the hub. Not while
            # the tracer records raw switches (settrace mode): it would
            # count the direct switch as one more resume.
            if (_trace is not None and _tracer.settrace) or not hub._passes.yield0(_trace):
                _switch(hub)
        except BaseException:
            # Woken by an exception (kill, Timeout): our switch must not
            # fire later and wake us from some unrelated wait.
            hub.take_back(switch)
            if _trace is not None:
                _resume(current, _WHY_THROW, None)
            raise
        if _trace is not None:
            _resume(current, _WHY_READY, None)
        return
    seconds = check_seconds(seconds)
    if seconds > 0:
        _sleep_timed(hub, current, seconds)
    else:
        idle()


_sleep0_setup(Hub)


def _sleep_timed(hub, current, seconds) -> None:
    # sleep(seconds > 0), a function of its own: its switch understands a
    # _Thrown (throw_parked), sleep(0)'s does not (see sleep).
    # The timer's entry in the loop's timer table is the greenlet itself
    # (switch_after, loop_c/lk_timers_py.c): no Timer object and no bound
    # switch while it sleeps -- two objects fewer per sleeping greenlet for
    # the allocator and the collector's passes (a million sleepers, issue
    # 21). The table is the one the C Timeout arms in (hub.loop._timer_table).
    timers = hub.loop._timer_table
    timer_id = timers.switch_after(seconds, current)
    woken_with = None
    try:
        woken_with = _switch(hub)
        if woken_with.__class__ is _Thrown:  # throw_parked
            raise woken_with.raised()
    except BaseException:
        timers.cancel(timer_id, current)
        if woken_with.__class__ is _Thrown:
            woken_with.unchain()
        if _trace is not None:
            _resume(current, _WHY_THROW, None)
        raise
    # (A no-op after the timer fired: take() forgot the entry. Not after a
    # stray switch, which must not leave our timer to fire later.)
    timers.cancel(timer_id, current)
    if woken_with is not _NO_VALUE:  # the timer switches with no value
        raise invalid_switch(current, woken_with, "sleep")
    if _trace is not None:
        # b < 0: "slept as asked for -b ns" -- the tracer puts the due
        # time beside the actual wake-up (late wake-ups on its timeline).
        _trace(_TR_RESUME, id(current), _WHY_TIMER, -int(seconds * 1e9))


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


# -- fd waits --------------------------------------------------------------------
#
# An fd wait's wake-up is the greenlet's own switch, registered with the
# loop (loop.io_start); the loop's dispatch removes it before calling it.
# Each parked greenlet is also entered in _readers/_writers (fd -> greenlet)
# for exactly as long as it waits: that is how forget_fd finds whom to tell
# that the fd is closing, and how waiting_on names the fd.

#: fd -> the greenlet parked in wait_io/wait_any_fd until fd is readable.
#: Read-only outside this module (``fd in parked_readers``: is someone
#: already waiting to read it? -- a dict lookup, no call, for sockets' recv).
_readers: dict = {}
parked_readers = _readers
#: fd -> the greenlet parked in wait_io/wait_any_fd until fd is writable
_writers: dict = {}


def wait_io(hub, fd: int, event: int, timeout: float | None = None,
            timeout_exc: BaseException | None = None,
            keep_interest: bool = False) -> int:
    """Park the current greenlet until ``fd`` is ready for ``event`` (READ or
    WRITE); return the fired event bits. After ``timeout`` seconds raise
    ``timeout_exc`` (default ``TimeoutError("timed out")``). If the fd is
    closed meanwhile (:func:`forget_fd`), raise ``OSError(EBADF)``.

    ``keep_interest``: see :meth:`Loop.io_cancel` -- only for an fd whose
    owner calls :func:`forget_fd` before closing it, as labkit's sockets do.
    Call in a greenlet of ``hub``'s thread, not in the hub.
    """
    if timeout is None and keep_interest:
        # A socket's wait, once per message on a busy connection: the same
        # steps as below, in one C call (Loop.io_park, loop_c/lk_io_py.c),
        # which also takes the wait back when it is not the loop that woke
        # us, and writes the tracer's resume record (set_io_resumer).
        fired = None
        try:
            fired = hub.loop.io_park(hub, fd, event, _readers if event == READ else _writers,
                                     cannot_wait_in_hub)
            if fired.__class__ is not int:
                if fired.__class__ is _Thrown:  # throw_parked
                    raise fired.raised()
                raise invalid_switch(getcurrent(), fired, f"a wait on fd {fd}")
        except BaseException:
            if fired.__class__ is _Thrown:
                fired.unchain()
            raise
        return fired
    current = getcurrent()
    if current is hub:
        raise cannot_wait_in_hub()
    loop = hub.loop
    timer = None
    if timeout is not None:
        timer = loop.start_timer(timeout, current.throw,
                           timeout_exc if timeout_exc is not None else TimeoutError("timed out"))
    try:
        loop.io_start(fd, event, current.switch)
    except BaseException:
        if timer is not None:
            timer.cancel()
        raise
    # (Nobody else can be in waits[fd] now: io_start refuses a second
    # waiter for the same fd and direction.)
    waits = _readers if event == READ else _writers
    waits[fd] = current
    fired = None
    try:
        fired = _switch(hub)
        if fired.__class__ is not int:  # the loop switches with the event bits
            if fired.__class__ is _Thrown:  # throw_parked
                raise fired.raised()
            raise invalid_switch(current, fired, f"a wait on fd {fd}")
    except BaseException:
        # The take-back: a timeout, a kill, EBADF or a stray switch woke
        # us, and the loop still holds our switch as this fd's callback.
        if fired.__class__ is _Thrown:
            fired.unchain()
        if waits.get(fd) is current:  # never another greenlet's: see below
            del waits[fd]
        if timer is not None:
            timer.cancel()
        # io_cancel goes by fd and event: if the callback it took is not
        # ours (the fd was forgotten and someone parked on it since), it
        # goes back, or that greenlet would sleep for good.
        taken = loop.io_cancel(fd, event, keep_interest)
        if taken is not None and taken != current.switch:
            loop.io_start(fd, event, taken)
        if _trace is not None:
            _resume_fd(current, _WHY_THROW, fd, event)
        raise
    # The loop's dispatch woke us, and it took our callback back before it
    # called it: only the interest bit is left to drop -- unless we may
    # keep it for the next wait (the hot path of a socket: no call at all).
    # waits[fd] is ours to remove only while it is ours: once the fd was
    # forgotten (forget_fd's io_forget, before _tell_closed runs) another
    # greenlet may have parked on it and entered itself under fd.
    if waits.get(fd) is current:
        del waits[fd]
    if timer is not None:
        timer.cancel()
    if not keep_interest:
        loop.io_cancel(fd, event, False)
    if _trace is not None:
        _resume_fd(current, _WHY_WAITER, fd, event)
    return fired


def wait_fd(fd: int, event: int, timeout: float | None = None,
            timeout_exc: BaseException | None = None,
            keep_interest: bool = False) -> None:
    """:func:`wait_io` on the calling thread's hub, or -- in a thread that
    has no hub (see ``hub_for_this_thread``) -- block the thread in
    poll(2), as the stdlib would. The one no-hub fallback for sockets,
    pipes and subprocesses."""
    hub = hub_for_this_thread()
    if hub is not None:
        wait_io(hub, fd, event, timeout, timeout_exc, keep_interest)
        return
    poller = _blocking_poll()
    poller.register(fd, POLLIN if event == READ else POLLOUT)
    if not poller.poll(None if timeout is None else timeout * 1000):
        raise timeout_exc if timeout_exc is not None else TimeoutError("timed out")


def wait_read(fd: int, timeout: float | None = None,
              timeout_exc: BaseException | None = None) -> None:
    """Park until ``fd`` is readable (gevent.socket.wait_read)."""
    wait_io(get_hub(), fd, READ, timeout, timeout_exc)


def wait_write(fd: int, timeout: float | None = None,
               timeout_exc: BaseException | None = None) -> None:
    """Park until ``fd`` is writable (gevent.socket.wait_write)."""
    wait_io(get_hub(), fd, WRITE, timeout, timeout_exc)


def wait_any_fd(hub, interest: dict, timeout: float | None) -> None:
    """Park until any fd of ``interest`` ({fd: READ|WRITE bits}) is ready,
    or ``timeout`` seconds pass; ``OSError(EBADF)`` if one of them is
    closed meanwhile (forget_fd), as the stdlib's select reports a closed
    fd. The caller looks again at what is ready: this is select()'s wait."""
    current = getcurrent()
    if current is hub:
        raise cannot_wait_in_hub()
    loop = hub.loop
    started = []
    timer = None
    try:
        for fd, events in interest.items():
            for event, waits in ((READ, _readers), (WRITE, _writers)):
                if events & event:
                    loop.io_start(fd, event, current.switch)
                    waits[fd] = current
                    started.append((fd, event, waits))
        if timeout is not None:
            timer = loop.start_timer(timeout, current.switch, _TIMED_OUT)
        woken_with = None
        try:
            woken_with = _switch(hub)
            if woken_with.__class__ is _Thrown:  # throw_parked
                raise woken_with.raised()
        except BaseException:
            if woken_with.__class__ is _Thrown:
                woken_with.unchain()
            if _trace is not None:
                _resume(current, _WHY_THROW, "select")
            raise
        if _trace is not None:
            _resume(current, _WHY_WAITER, "select")
    finally:
        if timer is not None:
            timer.cancel()
        for fd, event, waits in started:
            del waits[fd]
            loop.io_cancel(fd, event)


def forget_fd(hub, fd: int, then: Callable[[int], object]) -> bool:
    """``fd`` is about to be closed: stop watching it, and raise
    ``OSError(EBADF)`` in every greenlet parked on it (an fd wait or a
    select), from hub callbacks.

    Returns False if nobody was parked (the caller closes the fd now).
    Otherwise ``then(fd)`` is queued after the wake-ups and must do the
    closing: the fd has to outlive the woken greenlets' unwinding, or a new
    file could get its number while they still refer to it.
    """
    callbacks = hub.loop.io_forget(fd)
    if not callbacks:
        return False
    parked = []
    for waits in (_readers, _writers):
        g = waits.get(fd)
        if g is not None:
            parked.append(g.switch)
            hub.run_callback(_tell_closed, g, fd, waits)
    for callback in callbacks:
        if callback not in parked:  # a raw loop.io_start watcher: let it look
            hub.run_callback(callback, READ | WRITE | ERROR)
    hub.run_callback(then, fd)
    return True


def _tell_closed(g, fd: int, waits: dict) -> None:
    # Runs in the hub. If g is no longer parked on fd (a kill or a Timeout
    # woke it first), it is not told; if it parked on fd again meanwhile,
    # it is -- the fd is closing under that wait too.
    if waits.get(fd) is g:
        g.throw(OSError(EBADF, "File descriptor was closed in another greenlet"))


# -- waiting in a line: the parking halves of labkit._lines' classes --------------
#
# Ticket and Linkable live in labkit._lines (the server's side: lines, links,
# notifications); how a greenlet waits in them is written here, with every
# other park, and they inherit it. (Here, too, the tracer's hook is one
# global read.)

#: a Ticket's value while it is still in line
EMPTY = object()


class _TicketWaits:
    """Ticket's park (see :class:`labkit._lines.Ticket`)."""

    __slots__ = ()

    def park(self, line: deque, timeout: float | None, reason: str = "line") -> bool:
        """Join ``line`` and wait to be served (True), at most ``timeout``
        seconds (False: the ticket has left the line). Exceptions thrown in
        (kill, Timeout, LoopExit) propagate after leaving the line, unless
        the ticket was served: then the caller must pass its value on.
        ``reason`` labels the wait for the tracer ("Queue.get")."""
        hub = self.hub
        current = self.greenlet
        if current is hub:
            raise cannot_wait_in_hub()
        line.append(self)
        timer = None if timeout is None else deadline(hub, timeout, self.wake)
        woken_with = None
        try:
            while self.greenlet is not None:  # else: a stray switch, park again
                if woken_with is not None and woken_with.__class__ is _Thrown:
                    raise woken_with.raised()   # throw_parked
                woken_with = _switch(hub)
        except BaseException:
            if woken_with.__class__ is _Thrown:
                woken_with.unchain()
            if _trace is not None:
                _resume(current, _WHY_THROW, reason)
            raise
        finally:
            self.greenlet = None
            if timer is not None:
                timer.cancel()
            if self.value is EMPTY:
                line.remove(self)
        if _trace is not None:
            _resume(current, _WHY_WAITER if self.value is not EMPTY else _WHY_TIMER,
                        reason)
        return self.value is not EMPTY


class _LinkableWaits:
    """Linkable's waits (see :class:`labkit._lines.Linkable`)."""

    __slots__ = ()

    def _wait_core(self, timeout: float | None) -> bool:
        """Park the current greenlet until notified (True) or ``timeout``
        seconds passed (False). ``timeout`` is already validated."""
        hub = get_hub()
        if hub is not self.hub:
            self._bind_hub(hub)
            if hub is not self.hub:
                return self._wait_from_other_thread(hub, timeout)
        current = getcurrent()
        if current is hub:
            raise cannot_wait_in_hub()
        # The link is the greenlet's own switch, not a Waiter: the hub then
        # resumes us with one C call. This is safe because a link is popped
        # before it is called, and we unlink it ourselves whenever we wake
        # up for another reason, so it can never fire after this wait.
        link = current.switch
        self._links.append(link)
        # set() from another thread may have run between the caller's check
        # and the append, and found nobody to notify.
        self._check_and_notify()
        timer = None
        if timeout is not None:
            timer = deadline(hub, timeout, link, _TIMED_OUT)
        woken = False
        woken_with = None
        try:
            woken_with = _switch(hub)
            woken = woken_with is self
            if not woken and woken_with.__class__ is _Thrown:  # throw_parked
                raise woken_with.raised()
        except BaseException:
            if woken_with.__class__ is _Thrown:
                woken_with.unchain()
            if _trace is not None:
                _resume(current, _WHY_THROW, type(self).__name__)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if not woken:
                self.unlink(link)
        if _trace is not None:
            _resume(current, _WHY_WAITER if woken else _WHY_TIMER, type(self).__name__)
        return woken

    def _wait_from_other_thread(self, hub, timeout: float | None) -> bool:
        # Our notifications run in self.hub's thread; the wake-up must be
        # posted to this thread's hub. A Waiter absorbs a late post (one
        # that arrives after our timeout) harmlessly.
        waiter = Waiter(hub)
        link = ThreadsafeLink(hub, waiter.switch)
        hub.keepalive(1)  # only the other thread can end this wait
        self._links.append(link)
        self._check_and_notify()
        timer = None
        if timeout is not None:
            timer = deadline(hub, timeout, waiter.switch, _TIMED_OUT)
        woken = False
        try:
            woken = waiter.get() is self
        finally:
            if timer is not None:
                timer.cancel()
            if not woken:
                self.unlink(link)
            hub.keepalive(-1)
        return woken


# -- what a parked greenlet waits on -----------------------------------------------

def waiting_on(g) -> str | None:
    """What greenlet ``g`` is parked on, in plain words, or None.

    ``"fd 7 read"``, ``"sleep(0.3)"``, ``"select"``, a Waiter's reason
    (``"join"``, ``"idle"``), a line's or a Linkable's label
    (``"Semaphore"``, ``"Queue.get"``, ``"Event"``). None when ``g`` is not
    parked by this module (running, ready to run, dead, or switched away
    by code outside labkit). Reads ``g``'s suspended frames: call it from
    the hub's thread, for another greenlet than the current one.
    """
    frame = g.gr_frame
    while frame is not None:
        describe = _DESCRIBE.get(frame.f_code)
        if describe is not None:
            return describe(locals_of(frame)[0])
        frame = frame.f_back
    return None


def _fd_words(local) -> str:
    return f"fd {local['fd']} {'read' if local['event'] == READ else 'write'}"


def _waiter_words(local) -> str | None:
    reason = local["self"].reason
    if isinstance(reason, tuple):
        fd, event = reason
        return f"fd {fd} {'read' if event == READ else 'write'}"
    return reason if isinstance(reason, str) else None


# The parking functions of this module, and how to read their own locals.
# (Only this module knows its functions' local names.)
_DESCRIBE = {
    wait_io.__code__: _fd_words,
    wait_any_fd.__code__: lambda local: "select",
    sleep.__code__: lambda local: f"sleep({local['seconds']})",
    _sleep_timed.__code__: lambda local: f"sleep({local['seconds']})",
    Waiter.get.__code__: _waiter_words,
    _TicketWaits.park.__code__: lambda local: local["reason"],
    _LinkableWaits._wait_core.__code__: lambda local: type(local["self"]).__name__,
    _LinkableWaits._wait_from_other_thread.__code__: lambda local: type(local["self"]).__name__,
}


def describe_parking(code, describe: Callable[[dict], str | None]) -> None:
    """Register a parking function defined elsewhere (a fast path inlined
    into its class, such as ``Event.wait``) for :func:`waiting_on`: ``describe(frame_locals)`` names
    what it waits on. ``code``: the function, or its code object."""
    _DESCRIBE[getattr(code, "__code__", code)] = describe


#: the park sites that raise a _Thrown switched into them (throw_parked):
#: every switch to the hub in these functions checks for one. Not sleep:
#: its sleep(0) switch does not (its hot path), _sleep_timed's does. (A site
#: elsewhere, Event.wait's fast path say, is not here: greenlet.throw it.)
#: Held here, so their ids (the set's keys) stay theirs.
_THROWN_SITES = tuple(f.__code__ for f in (
    _sleep_timed, Waiter.get, wait_io, wait_any_fd, _TicketWaits.park,
    _LinkableWaits._wait_core))
_UNDERSTANDS_THROWN = frozenset(map(id, _THROWN_SITES))


# Lines and links (Ticket, Linkable) live in labkit._lines, which builds on
# the above; imported last, and re-exported under their old names here.
from labkit._lines import Linkable, ThreadsafeLink, Ticket  # noqa: E402,F401

