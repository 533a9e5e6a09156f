"""Event and AsyncResult: wait until something has happened (gevent.event).

    done = Event()
    spawn(lambda: (work(), done.set()))
    done.wait()                       # parks until set() (True), or timeout (False)

    result = AsyncResult()
    spawn(compute).link(result)       # the greenlet's value or exception lands here
    result.get(timeout=5)             # returns it, raises it, or raises Timeout

The contract, shared by everything built on :class:`Linkable` (Event,
AsyncResult, and the lock module's Semaphore):

- Waiters park in the hub and are woken *from the hub*, never by a direct
  switch from the greenlet that calls ``set()``: the setter keeps running
  until it next blocks (gevent does the same).
- One hub callback wakes every waiter that was linked when it runs, in the
  order they started waiting (FIFO). Waiters that arrive while it runs are
  handled by the next notification, if the object is still ready then.
- ``rawlink(callback)`` callbacks are one-shot: each is called once, as
  ``callback(obj)``, in the hub, and then forgotten. They must not block.
- A greenlet that stops waiting early (timeout, kill) removes its link
  before it leaves: nothing stale stays behind.
- Threads: ``set()`` may be called from any thread; the wake-up then goes
  through the waiters' hub's thread-safe path. A greenlet of another thread
  (another hub) may wait too; while it does, its hub is kept alive, because
  only the other thread can end that wait. A wait that nothing in its own
  thread can ever end otherwise raises :class:`~labkit.LoopExit` as usual.
"""
from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Callable

from greenlet import getcurrent, greenlet

#: unbound: calling it saves a bound-method allocation per park
_switch = greenlet.switch

#: what switch() returns to a greenlet resumed with no arguments
_NO_VALUE = ()

from labkit.hub import (_TR_RESUME, _WHY_THROW, _WHY_TIMER, _WHY_WAITER,
                        BlockingSwitchOutError, Waiter, _check_seconds, get_hub)
from labkit.timeout import Timeout

__all__ = ["Event", "AsyncResult"]

_get_ident = threading.get_ident

# Tracing hooks, set by tracing/recorder.py while it records (see the
# comment in labkit/hub.py). The parking paths here switch to the hub
# without a Waiter, so they write their own "resumed, and why" record:
# the label is what the greenlet waited on ("Event", "Queue.get" ...).
_trace = None
_tracer = None


def _trace_resume(current, why: int, label) -> None:
    """Record that ``current`` resumed (tracing is on: _trace is set)."""
    _trace(_TR_RESUME, id(current), why, _tracer.labels[label])

#: what a timer passes to a waiter, to tell "timed out" from "woken"
_TIMED_OUT = object()


class Linkable:
    """Base class: a FIFO of one-shot callbacks, run in the hub when ready().

    Subclasses define :meth:`ready` and call :meth:`_check_and_notify` when
    they may have become ready. ``_notify_all`` says whether a notification
    wakes every linked callback (Event) or stops as soon as the object is no
    longer ready (a Semaphore whose permits ran out).
    """

    __slots__ = ("hub", "_links", "_batch", "_notifier", "__weakref__")

    _notify_all = True

    def __init__(self):
        #: the hub whose thread runs our notifications; bound by the first
        #: waiter or rawlink, re-bound whenever nobody is linked
        self.hub = None
        #: callbacks waiting for the next notification, oldest first
        self._links: deque = deque()
        #: callbacks of the notification that is running now (else None);
        #: kept apart so that unlink() can still take one out of it
        self._batch: deque | None = None
        #: the scheduled notification (a hub Callback), or None
        self._notifier = None

    def ready(self) -> bool:  # pragma: no cover - always overridden
        raise NotImplementedError

    # -- links ------------------------------------------------------------
    def rawlink(self, callback: Callable) -> None:
        """Call ``callback(self)`` once, in the hub, when ready (at once if
        it already is). It must not block."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        self._bind_hub(get_hub())
        self._links.append(callback)
        self._check_and_notify()

    def unlink(self, callback: Callable) -> bool:
        """Forget a callback added with rawlink (no error if it is not
        there); True if it was there."""
        for links in (self._links, self._batch):
            if links:
                try:
                    links.remove(callback)
                    return True
                except ValueError:
                    pass
        return False

    def linkcount(self) -> int:
        return len(self._links) + len(self._batch or ())

    def _bind_hub(self, hub) -> None:
        # Nobody linked: the caller's hub becomes ours. (This also forgets a
        # hub that was destroyed and replaced since the last wait.)
        if self.hub is not hub and not self._links and not self._batch:
            self.hub = hub

    # -- notification -----------------------------------------------------
    def _check_and_notify(self) -> None:
        """Schedule a notification if ready, linked, and none is pending."""
        if self._links and self._notifier is None and self.ready():
            self._schedule_notify()

    def _schedule_notify(self) -> None:
        hub = self.hub
        self._notifier = True
        if hub.thread_ident == _get_ident():
            # A bare bound method, not hub.run_callback's Callback wrapper:
            # one C-level call less on the hub's stack, which every switch
            # into a waiter has to save and restore.
            hub._ready.append(self._notify_links)
        else:  # set() from another thread: wake that hub's loop
            hub.run_callback_threadsafe(self._notify_links)

    def _notify_links(self) -> None:
        """The hub callback: call the links present now, oldest first."""
        self._notifier = None
        links = self._links
        if len(links) == 1 and (self._notify_all or self.ready()):
            # The common case, one waiter: no batch to set aside.
            link = links.popleft()
            try:
                link(self)  # may switch into a waiter; it comes back here
            except BaseException:
                self.hub.handle_error((link, self), *sys.exc_info())
        else:
            self._notify_batch()
        if self._links and self._notifier is None and self.ready():
            self._schedule_notify()

    def _notify_batch(self) -> None:
        # Links added while we notify (a woken waiter that waits again)
        # go to a fresh deque, for the next notification.
        batch = self._batch = self._links
        self._links = deque()
        only_while_ready = not self._notify_all
        try:
            while batch:
                if only_while_ready and not self.ready():
                    break
                link = batch.popleft()
                try:
                    link(self)
                except BaseException:
                    self.hub.handle_error((link, self), *sys.exc_info())
        finally:
            self._batch = None
            if batch:  # stopped early: the rest keep their place in line
                batch.extend(self._links)
                self._links = batch

    # -- waiting ----------------------------------------------------------
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
            raise BlockingSwitchOutError(
                "cannot wait inside the hub (a loop callback): spawn a greenlet instead")
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
            timer = hub.loop.timer(timeout, link, _TIMED_OUT)
        woken = False
        try:
            woken = _switch(hub) is self
        except BaseException:
            if _trace is not None:
                _trace_resume(current, _WHY_THROW, type(self).__name__)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if not woken:
                self.unlink(link)
        if _trace is not None:
            _trace_resume(current, _WHY_WAITER if woken else _WHY_TIMER, type(self).__name__)
        return woken

    def _wait_from_other_thread(self, hub, timeout: float | None) -> bool:
        # Our notifications run in self.hub's thread; the wake-up must be
        # posted to this thread's hub. A Waiter absorbs a late post (one
        # that arrives after our timeout) harmlessly.
        waiter = Waiter(hub)
        link = _ThreadsafeWake(waiter)
        hub.keepalive(1)  # only the other thread can end this wait
        self._links.append(link)
        self._check_and_notify()
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(timeout, waiter.switch, _TIMED_OUT)
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


class _ThreadsafeWake:
    """A link for a waiter that belongs to another thread's hub: the
    notification runs in our hub, the switch must happen in theirs."""

    __slots__ = ("waiter",)

    def __init__(self, waiter: Waiter):
        self.waiter = waiter

    def __call__(self, source) -> None:
        self.waiter.hub.run_callback_threadsafe(self.waiter.switch, source)


#: a Ticket's value while it is still in line
EMPTY = object()


class Ticket:
    """A parked greenlet's place in a line, and what it was handed.

    Semaphores and queues keep their blocked greenlets in lines: deques of
    tickets, oldest first. To serve the first one, pop it, set its ``value``
    (a permit, an item, "accepted") and call :meth:`schedule_wake`. So
    "still in line" and "``value is EMPTY``" are the same thing, which is
    what lets a greenlet that resumes for another reason (timeout, kill)
    know whether it must leave the line or pass on what it was handed::

        ticket = Ticket(hub, getcurrent())
        try:
            served = ticket.park(line, timeout)   # False: timed out, left the line
        except BaseException:
            if ticket.value is not EMPTY:
                ...pass it on...                  # killed after being served
            raise

    The wake-up is a bound method in the hub's ready deque, not a Waiter:
    the cheapest way back into the greenlet. ``wake`` is a no-op once the
    greenlet has resumed, so a late one (timer and hand-off in the same
    pass) can never wake it from some later, unrelated wait.
    """

    __slots__ = ("hub", "greenlet", "value", "item", "deadline")

    def __init__(self, hub, greenlet, item=None):
        self.hub = hub
        self.greenlet = greenlet   # None once woken or gone
        self.value = EMPTY         # what the server handed us
        self.item = item           # what a putter offers
        self.deadline = 0          # loop-clock ns; its meaning is the line's (Semaphore)

    def schedule_wake(self) -> None:
        """Server side: resume the greenlet soon, from the hub."""
        self.hub._ready.append(self.wake)

    def wake(self) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            g.switch()

    def park(self, line: deque, timeout: float | None, reason: str = "line") -> bool:
        """Join ``line`` and wait to be served (True), at most ``timeout``
        seconds (False: the ticket has left the line). Exceptions thrown in
        (kill, Timeout, LoopExit) propagate after leaving the line, unless
        the ticket was served: then the caller must pass its value on.
        ``reason`` labels the wait for the tracer ("Queue.get")."""
        hub = self.hub
        current = self.greenlet
        if current is hub:
            raise BlockingSwitchOutError(
                "cannot wait inside the hub (a loop callback): spawn a greenlet instead")
        line.append(self)
        timer = None if timeout is None else hub.loop.timer(timeout, self.wake)
        try:
            while self.greenlet is not None:  # else: a stray switch, park again
                _switch(hub)
        except BaseException:
            if _trace is not None:
                _trace_resume(current, _WHY_THROW, reason)
            raise
        finally:
            self.greenlet = None
            if timer is not None:
                timer.cancel()
            if self.value is EMPTY:
                line.remove(self)
        if _trace is not None:
            _trace_resume(current, _WHY_WAITER if self.value is not EMPTY else _WHY_TIMER,
                          reason)
        return self.value is not EMPTY


def _check_timeout(timeout):
    return None if timeout is None else _check_seconds(timeout, "timeout")


class Event(Linkable):
    """A flag that greenlets can wait for.

    ``set()`` raises the flag and wakes every waiter; ``clear()`` lowers it;
    ``wait(timeout=None)`` returns at once if it is raised, else parks until
    ``set()`` (True) or until ``timeout`` seconds passed (False). A waiter
    woken by ``set()`` gets True even if someone cleared the flag again
    before it ran.

    The one-waiter fast path: when the only thing linked is a greenlet
    parked in ``wait()`` (two greenlets handing an Event back and forth),
    ``set()`` puts that greenlet's own ``switch`` in the hub's ready queue,
    instead of a notification that would then switch into it: one Python
    call less per wake-up, a tenth of an Event ping-pong. The waiter
    resumes with no value, which it takes as "set". If it stops waiting
    before the hub gets there (killed), it turns its queued switch into a
    no-op (Hub._disarm). (So set() wakes the waiters linked when it is called; with
    several waiters, as in gevent, those linked by the time the hub runs
    the notification.)
    """

    __slots__ = ("_flag", "_parked")

    def __init__(self):
        Linkable.__init__(self)
        self._flag = False
        #: the link of the greenlet parked by wait()'s fast path, while it
        #: was the first to link; None otherwise
        self._parked = None

    def is_set(self) -> bool:
        return self._flag

    isSet = is_set
    ready = is_set

    def set(self) -> None:
        """Raise the flag and schedule the wake-up of all waiters (any thread)."""
        self._flag = True
        links = self._links
        if links and self._notifier is None:
            hub = self.hub  # (_schedule_notify, inlined: this is a hot path)
            if hub.thread_ident != _get_ident():
                self._notifier = True
                hub.run_callback_threadsafe(self._notify_links)
            elif len(links) == 1 and links[0] is self._parked:
                self._parked = None  # the fast path, see the class docstring
                hub._ready.append(links.popleft())
            else:
                self._notifier = True
                hub._ready.append(self._notify_links)

    def clear(self) -> None:
        """Lower the flag: later calls to wait() will park again."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Park until the flag is set; the flag's value (False on timeout)."""
        if self._flag:
            return True
        if timeout is not None:
            return self._wait_core(_check_seconds(timeout, "timeout"))
        # The hot path of _wait_core, inlined: no timer, a greenlet spawned
        # by our hub. (Its parent is our hub only in our hub's thread, so
        # this also checks the thread, without a call to get_hub.)
        current = getcurrent()
        hub = self.hub
        if hub is None or current.parent is not hub:
            hub = get_hub()
            self._bind_hub(hub)  # the first wait binds us to its hub
            if hub is not self.hub or current.parent is not hub:
                return self._wait_core(None)  # main greenlet, other thread...
        link = current.switch
        links = self._links
        if not links:
            self._parked = link
        links.append(link)
        if self._flag:
            # set() from another thread may have run between our check of
            # the flag and the append, and found nobody to notify.
            self._check_and_notify()
        try:
            value = _switch(hub)
        except BaseException:
            self._stop_waiting(link)
            if _trace is not None:
                _trace_resume(current, _WHY_THROW, "Event")
            raise
        # () from set()'s fast path, self from a notification
        woken = value is _NO_VALUE or value is self
        if not woken:
            self._stop_waiting(link)
        elif self._parked is link:
            self._parked = None
        if _trace is not None:
            _trace_resume(current, _WHY_WAITER, "Event")
        return woken

    def _stop_waiting(self, link) -> None:
        """wait()'s fast path ends without set(): forget ``link`` wherever it
        is -- in the line, or already scheduled by set() in the hub's ready
        queue, where it becomes a no-op (the hub may be mid-pass: overwrite,
        do not remove)."""
        if self._parked is link:
            self._parked = None
        if not self.unlink(link):
            self.hub._disarm(link)

    def __repr__(self) -> str:
        state = "set" if self._flag else "clear"
        return f"<Event {state} waiters={self.linkcount()}>"


#: AsyncResult's "no value yet"
_UNSET = object()


class AsyncResult(Linkable):
    """A one-time result: a value or an exception, that greenlets can wait for.

    ``set(value)`` or ``set_exception(exc)`` stores the outcome and wakes the
    waiters; ``get()`` returns the value or raises the exception (after
    waiting if needed; :class:`~labkit.Timeout` if ``timeout`` passes, or at
    once if ``block`` is false). Calling an AsyncResult with a finished
    greenlet copies its outcome, so ``g.link(result)`` works.
    """

    __slots__ = ("_value", "_exc_info")

    def __init__(self):
        Linkable.__init__(self)
        self._value = _UNSET
        self._exc_info = ()

    # -- state ------------------------------------------------------------
    def ready(self) -> bool:
        """True once a value or an exception is stored."""
        return self._value is not _UNSET or bool(self._exc_info)

    def successful(self) -> bool:
        """True once a value (not an exception) is stored."""
        return self._value is not _UNSET

    @property
    def value(self):
        """The value passed to set(), else None."""
        return None if self._value is _UNSET else self._value

    @property
    def exception(self) -> BaseException | None:
        """The exception passed to set_exception(), else None."""
        return self._exc_info[1] if self._exc_info else None

    @property
    def exc_info(self) -> tuple:
        """``(type, value, traceback)`` after set_exception(), else ()."""
        return self._exc_info

    # -- producing --------------------------------------------------------
    def set(self, value=None) -> None:
        """Store ``value`` and wake all waiters (any thread)."""
        self._value = value
        self._check_and_notify()

    def set_exception(self, exception: BaseException, exc_info=None) -> None:
        """Store ``exception`` (raised by get(), with the traceback from
        ``exc_info`` if given) and wake all waiters (any thread)."""
        if exc_info:
            self._exc_info = (exc_info[0], exc_info[1], exc_info[2])
        else:
            self._exc_info = (type(exception), exception, exception.__traceback__)
        self._check_and_notify()

    def __call__(self, source) -> None:
        """Link callback: copy the outcome of ``source`` (a finished greenlet)."""
        if source.successful():
            self.set(source.value)
        else:
            self.set_exception(source.exception, getattr(source, "exc_info", None))

    # -- consuming --------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None):
        """Return the value or raise the exception, waiting for it if needed.

        Raises :class:`~labkit.Timeout` if it is not ready and ``block`` is
        false, or still not ready after ``timeout`` seconds.
        """
        if not self.ready():
            if not block:
                raise Timeout()
            timeout = _check_timeout(timeout)
            if not self._wait_core(timeout):
                raise Timeout(timeout)
        return self._outcome()

    def get_nowait(self):
        """get(block=False)."""
        return self.get(block=False)

    def wait(self, timeout: float | None = None):
        """Park until ready (at most ``timeout``); return the value, or None
        (timed out, or an exception was stored). Never raises it."""
        if not self.ready():
            self._wait_core(_check_timeout(timeout))
        return self.value

    def _outcome(self):
        if self._exc_info:
            raise self._exc_info[1].with_traceback(self._exc_info[2])
        return self._value

    def __repr__(self) -> str:
        if self._exc_info:
            state = f"exception={self._exc_info[1]!r}"
        elif self._value is not _UNSET:
            state = f"value={self._value!r}"
        else:
            state = "unset"
        return f"<AsyncResult {state} waiters={self.linkcount()}>"
