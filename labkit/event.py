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


from greenlet import getcurrent

from labkit import _native
from labkit._lines import EMPTY, Linkable, Ticket  # noqa: F401 - event.Linkable is public
from labkit._park import (_NO_VALUE, _WHY_THROW, _WHY_WAITER, _resumed,  # noqa: F401
                          _switch, check_seconds, check_timeout, describe_parking)
from labkit.hub import get_hub
from labkit.timeout import Timeout

__all__ = ["Event", "AsyncResult"]

_get_ident = _native.get_ident

# Set by the tracer while it records (see labkit/hub.py): Event.wait's fast
# path checks it with one branch, and records through labkit._park.
_trace = None
_tracer = None


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
    no-op (Hub.take_back). (So set() wakes the waiters linked when it is called; with
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
                hub.loop.run_callback_threadsafe(self._notify_links)  # see Linkable
            elif len(links) == 1 and links[0] is self._parked:
                self._parked = None  # the fast path, see the class docstring
                hub.schedule(links.popleft())
            else:
                self._notifier = True
                hub.schedule(self._notify_links)

    def clear(self) -> None:
        """Lower the flag: later calls to wait() will park again."""
        self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Park until the flag is set; the flag's value (False on timeout).
        While set() is still waking the greenlets that waited before, a new
        waiter parks too and is woken after them (gevent's order)."""
        if self._flag and self._notifier is None:
            return True
        if timeout is not None:
            return self._wait_core(check_timeout(timeout))
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
                _resumed(current, _WHY_THROW, "Event")
            raise
        # () from set()'s fast path, self from a notification
        woken = value is _NO_VALUE or value is self
        if not woken:
            self._stop_waiting(link)
        elif self._parked is link:
            self._parked = None
        if _trace is not None:
            _resumed(current, _WHY_WAITER, "Event")
        return woken

    def _stop_waiting(self, link) -> None:
        """wait()'s fast path ends without set(): forget ``link`` wherever it
        is -- in the line, or already scheduled by set() in the hub's ready
        queue, where it becomes a no-op (the hub may be mid-pass: overwrite,
        do not remove)."""
        if self._parked is link:
            self._parked = None
        if not self.unlink(link):
            self.hub.take_back(link)

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
            timeout = check_timeout(timeout)
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
            self._wait_core(check_timeout(timeout))
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


# Event.wait's untimed fast path parks right here, not in labkit._park.
describe_parking(Event.wait.__code__, lambda local: "Event")
