"""Semaphores and locks for greenlets (gevent.lock).

    sem = Semaphore(2)               # at most two greenlets inside at a time
    with sem:
        fetch(url)

    lock = RLock()                   # one owner greenlet, may re-enter
    with lock:
        with lock:
            ...

The contract:

- **FIFO wake-up, bounded barging, no starvation.** A greenlet that cannot
  get a permit joins the end of a line, and the line is served oldest first.
  ``release()`` with someone in line normally puts the permit back and has
  the hub serve the oldest waiter soon -- if the permit is still free then.
  Meanwhile a greenlet that is running may take it ("barging"): a loop of
  ``with sem: ...`` does not have to park and be woken on every turn, which
  is what makes a contended lock cheap (gevent, :mod:`threading` and Go's
  ``sync.Mutex`` all allow it). But once the oldest waiter has waited
  :data:`STARVATION_NS` (1 ms), ``release()`` hands the permit straight to
  it and schedules its wake-up; until it runs, the permit is reserved for it
  and nobody can barge ahead (Go's "starvation mode"). So a waiter is passed
  over for about 1 ms plus one holder's turn at most -- unlike gevent, where
  a greenlet that re-acquires in a loop keeps the others out until it is done.
- A waiter that leaves early (timeout, kill) takes itself out of the line;
  if the permit had already been handed to it, it passes it on, so no
  permit is ever lost with a dead greenlet.
- ``release()`` never switches: the releasing greenlet keeps running.
- **One thread, fast; several, shared.** A semaphore belongs to the OS
  thread that first acquires, releases or waits on it, and there it costs
  no lock of its own. The first use from another thread makes it *shared*
  for good (as gevent's are): from then on every acquire and release, in
  any thread, goes through a native mutex. A waiter then waits its own
  way -- a greenlet of a thread with a hub parks (its hub kept alive), a
  thread without a hub blocks in the kernel -- and a release hands the
  permit to the oldest waiter of any thread and wakes it there. (The
  greenlets that were already parked in the owner's line when it became
  shared are served by the owner's hub, first.)

``rawlink(callback)`` and ``wait()`` observe the semaphore without taking a
permit: callbacks run (in the hub, one-shot) when the counter is positive.
"""
from __future__ import annotations

import sys
from collections import deque
from time import monotonic_ns

from greenlet import getcurrent

from labkit import _native
from labkit._lines import EMPTY, Linkable, Ticket
from labkit._park import Waiter, cannot_wait_in_hub, check_seconds, check_timeout, deadline
from labkit.hub import Hub, get_hub, hub_for_this_thread

__all__ = ["Semaphore", "BoundedSemaphore", "FifoSemaphore", "DummySemaphore", "RLock"]

_get_ident = _native.get_ident

#: A waiter in line this long (ns) gets the next released permit handed to
#: it directly: no more barging past it. 0 makes every hand-off direct
#: (strict FIFO, one park and wake-up per contended acquire). release()
#: reads no clock: it compares with the hub's loop clock, the time of its
#: last poll (like libuv's uv_now), which while the hub is busy is at most
#: 0.2 ms old -- so the hand-off comes that much late at most.
STARVATION_NS = 1_000_000

class Semaphore(Linkable):
    """``Semaphore(value=1, hub=None)``: ``value`` permits; acquire() takes
    one, release() gives one back (to the longest waiter, if any).

    A semaphore belongs to one hub and its thread: the one given as ``hub``,
    or else the thread that first uses it. Used from another thread too, it
    becomes shared (see the module docstring): slower, correct everywhere."""

    __slots__ = ("counter", "_waiters", "_thread_ident", "_serving", "_serve_cb",
                 "_mutex", "_shared_line", "_owner_hub")

    _notify_all = False  # rawlinks: only while permits are left
    #: strict FIFO: nobody ever barges past the line (see FifoSemaphore)
    _fifo = False
    #: what a greenlet parked here waits on, for the tracer and waiting_on
    _label = "Semaphore"

    def __init__(self, value: int = 1, hub=None):
        Linkable.__init__(self)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"semaphore initial value must be >= 0, not {value}")
        #: permits free now
        self.counter = value
        #: Tickets of the greenlets blocked in acquire(), oldest first
        self._waiters: deque = deque()
        #: the OS thread this semaphore belongs to (None until first use)
        self._thread_ident = None
        #: a _serve_line callback is scheduled in the hub
        self._serving = False
        #: _serve_line bound once (see _make_serve_cb), or None
        self._serve_cb = None
        #: shared mode (see the contract): the native mutex guarding counter
        #: and lines, the waiters of every thread (oldest first), and the hub
        #: that serves the owner's greenlets parked before it was shared
        self._mutex = None
        self._shared_line = None
        self._owner_hub = None
        if hub is not None:
            if not isinstance(hub, Hub):
                raise TypeError(f"hub must be a labkit Hub or None, not {type(hub).__name__}")
            self.hub = hub
            self._thread_ident = hub.thread_ident

    # -- state ------------------------------------------------------------
    def locked(self) -> bool:
        """True if acquire() would block."""
        return self.counter <= 0

    def ready(self) -> bool:
        """True if acquire() would not block."""
        return self.counter > 0

    # -- acquire ----------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a permit: True once taken; False if ``blocking`` is false and
        none is free, or if ``timeout`` seconds pass first."""
        if _get_ident() != self._thread_ident and self._check_thread():
            return self._shared_acquire(blocking, timeout)
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        if self.counter > 0:  # free (perhaps barging past a young line)
            self.counter -= 1
            if self._serving and not self.counter:
                # We took the last free permit right after a release queued
                # _serve_line (a greenlet that re-acquires in a loop): if
                # nothing was queued since, take it back -- it would find no
                # permit. (Hub.take_back's newest-entry case, inlined: this
                # is the hot path of a contended lock, and the call costs 7%.)
                ready = self.hub.ready
                if ready and ready[-1] is self._serve_cb:
                    last = ready.pop()
                    if last is self._serve_cb:
                        self._serving = False
                        if not self._waiters:  # the line emptied meanwhile
                            self._serve_cb = None
                    else:  # another thread appended in between: put it back
                        ready.append(last)
            return True
        if not blocking:
            return False
        return self._wait_in_line(timeout)

    def _wait_in_line(self, timeout: float | None) -> bool:
        hub = self.hub = get_hub()  # (one thread: always the same hub)
        ticket = Ticket(hub, getcurrent())
        # After ``deadline`` nobody may barge past this ticket. (The real
        # clock here: the loop clock is as old as the last sleep.)
        ticket.deadline = monotonic_ns() + STARVATION_NS if STARVATION_NS and not self._fifo else 0
        try:
            return ticket.park(self._waiters, timeout, self._label)
        except BaseException:  # killed, Timeout, LoopExit ...
            if ticket.value is not EMPTY:
                self._hand_on()  # the permit was already ours: pass it on
            raise
        finally:
            if not self._waiters and not self._serving:
                self._serve_cb = None  # the line is empty: see _make_serve_cb

    # -- release ----------------------------------------------------------
    def release(self) -> None:
        """Give a permit back, for the longest waiter (see the contract for
        when a running greenlet may take it first). Never switches."""
        if _get_ident() != self._thread_ident and self._check_thread():
            return self._shared_release()
        waiters = self._waiters
        if not waiters:
            self.counter += 1
            if self._links:
                self._check_and_notify()
        elif self.hub.last_poll_ns >= waiters[0].deadline:
            self._hand_on()  # the oldest waiter has waited long enough
        else:
            self.counter += 1
            if not self._serving:
                self._serving = True
                self.hub.schedule(self._serve_cb or self._make_serve_cb())

    def _hand_on(self) -> None:
        """Hand a permit straight to the oldest waiter, reserved for it
        until it runs; or, with nobody in line (or a debt to pay off: a
        negative counter, see FifoSemaphore), put it back."""
        if self._waiters and self.counter >= 0:
            ticket = self._waiters.popleft()
            ticket.value = True
            ticket.schedule_wake()
            return
        self.counter += 1
        if self._links:
            self._check_and_notify()

    def _make_serve_cb(self):
        # The bound method, made once per spell of contention: a contended
        # release then allocates nothing. It is a reference cycle, so it is
        # dropped whenever the line empties with no serve pending.
        self._serve_cb = self._serve_line
        return self._serve_cb

    def _serve_line(self) -> None:
        """Hub callback: give the permits still free to the oldest waiters,
        switching into each (it comes back here when it blocks again)."""
        self._serving = False
        waiters = self._waiters
        while waiters and self.counter > 0:
            self.counter -= 1   # (no call between the test and this: see below)
            ticket = waiters.popleft()
            ticket.value = True
            try:
                ticket.wake()
            except BaseException:
                ticket.hub.handle_error((self._serve_line, self), *sys.exc_info())
        if not waiters and not self._serving:
            self._serve_cb = None  # see _make_serve_cb
        if self.counter > 0 and self._links:
            self._check_and_notify()

    # -- observing --------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int:
        """Park until a permit is free (without taking it), at most
        ``timeout`` seconds; return the counter."""
        if _get_ident() != self._thread_ident:
            self._check_thread()
        if self.counter <= 0:
            self._wait_core(None if timeout is None else check_seconds(timeout, "timeout"))
        return self.counter

    def rawlink(self, callback) -> None:
        if _get_ident() != self._thread_ident:
            self._check_thread()
        Linkable.rawlink(self, callback)

    # Why the thread checks read ``_get_ident()`` first and ``_thread_ident``
    # after: the GIL may pass to another thread at a call's end, and that
    # thread may make us shared there. Read after the call, the ident is
    # current, and the owner's path that follows reads and writes the
    # counter with no call in between -- so no other thread runs inside it.
    # (Read before the call, a stale ident sent the owner down the one-thread
    # path of a semaphore already shared: a release that woke nobody.)

    def _check_thread(self) -> bool:
        """Called when the caller is not the owner thread: the first use
        binds us to this thread (False: go on, single-thread); a use from
        another thread makes us shared (True: take the shared path)."""
        if self._thread_ident is None:
            self._thread_ident = _get_ident()
            return False
        self._become_shared()
        return True

    def _become_shared(self) -> None:
        """From now on every call takes the shared path (see the contract)."""
        if self._mutex is None:
            # The owner's fast paths read and write the counter with no call
            # in between, so the GIL never splits them; one already past its
            # thread check keeps its meaning.
            self._owner_hub = self.hub
            self._mutex = _native.allocate_lock()
            self._shared_line = deque()
            self._thread_ident = _SHARED   # every later call: the shared path

    def _waiting_hub(self):
        """Shared mode: the hub that parks the current greenlet while it
        waits, or None: block the OS thread (see _ThreadWaiter)."""
        return hub_for_this_thread()

    # -- shared mode (used from several threads) --------------------------
    def _shared_acquire(self, blocking: bool, timeout) -> bool:
        timeout = check_timeout(timeout)
        with self._mutex:
            if self.counter > 0:
                self.counter -= 1
                return True
            if not blocking:
                return False
            waiter = _ThreadWaiter(self._waiting_hub(), self._label)
            self._shared_line.append(waiter)
        try:
            if waiter.wait(timeout):
                return True
        except BaseException:
            with self._mutex:
                handed = waiter.handed
                if not handed:
                    self._shared_line.remove(waiter)
            if handed:
                self._shared_release()   # the permit was ours already: pass it on
            raise
        with self._mutex:   # timed out -- unless the permit came meanwhile
            if waiter.handed:
                return True
            self._shared_line.remove(waiter)
        return False

    def _shared_release(self) -> None:
        waiter = None
        serve_owner = False
        with self._mutex:
            if self._waiters:     # the owner's greenlets parked before sharing
                self.counter += 1
                serve_owner = True
            elif self._shared_line:
                waiter = self._shared_line.popleft()
                waiter.handed = True
            else:
                self.counter += 1
        if waiter is not None:
            waiter.wake()
        if serve_owner:
            self._owner_hub.run_callback_threadsafe(self._serve_owner_line)
        if self._links:
            self._check_and_notify()

    def _serve_owner_line(self) -> None:
        """In the owner's hub: permits to its greenlets parked before sharing."""
        while True:
            with self._mutex:
                if not self._waiters or self.counter <= 0:
                    return
                ticket = self._waiters.popleft()
                self.counter -= 1
                ticket.value = True
            ticket.wake()

    # -- context manager --------------------------------------------------
    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, typ, value, tb) -> None:
        self.release()

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} counter={self.counter} "
                f"waiters={len(self._waiters)}>")


#: the owner thread of a shared semaphore: no thread's ident, so every call
#: takes the shared path
_SHARED = object()


class _ThreadWaiter:
    """A waiter of a shared semaphore, in any thread: a greenlet parks on
    its thread's hub, a thread without one blocks on a native lock.
    ``handed`` (under the semaphore's mutex): the permit is this waiter's."""

    __slots__ = ("hub", "waiter", "lock", "handed")

    def __init__(self, hub, label: str = "Semaphore"):
        self.handed = False
        if hub is not None and getcurrent() is hub:
            raise cannot_wait_in_hub()
        self.hub = hub
        if hub is None:
            self.waiter = None
            self.lock = _native.allocate_lock()
            self.lock.acquire()
        else:
            self.waiter = Waiter(hub, label)
            self.lock = None

    def wait(self, timeout) -> bool:
        """Wait to be handed the permit: True; False if ``timeout`` passed."""
        if self.lock is not None:
            return self.lock.acquire(True, -1 if timeout is None else max(timeout, 0))
        hub = self.hub
        hub.keepalive(1)   # only another thread's release may end this wait
        timer = None if timeout is None else deadline(hub, timeout, self.waiter.switch, False)
        try:
            return self.waiter.get()
        finally:
            if timer is not None:
                timer.cancel()
            hub.keepalive(-1)

    def wake(self) -> None:
        """Any thread, after ``handed`` was set."""
        if self.lock is not None:
            self.lock.release()
        else:
            self.hub.run_callback_threadsafe(self.waiter.switch, True)


class BoundedSemaphore(Semaphore):
    """A Semaphore that refuses to be released more often than acquired:
    ``release()`` beyond the initial value raises ValueError."""

    __slots__ = ("_initial_value",)

    def __init__(self, value: int = 1, hub=None):
        Semaphore.__init__(self, value, hub)
        self._initial_value = value

    def release(self) -> None:
        if self.counter >= self._initial_value:
            raise ValueError("semaphore released too many times")
        Semaphore.release(self)


class FifoSemaphore(Semaphore):
    """A Semaphore whose line is never passed: while anyone waits, every
    released permit is handed to the oldest waiter (no barging, no 1 ms of
    grace). For admission that must be first come, first served: Pool
    slots, imap's ``maxsize``, ThreadPool's job slots.

    ``counter`` may be set below zero (a pool that shrank while its slots
    were taken): releases then pay the debt off before anyone is admitted.
    A burst of releases wakes each waiter it admits once, from the hub; a
    greenlet woken with one permit finds the rest of the burst's permits
    free when it runs, so a spawner parked in a full pool does not
    ping-pong with the hub once per slot.
    """

    __slots__ = ()

    _fifo = True


class DummySemaphore:
    """Semaphore's API with infinite permits: nothing ever blocks. Use it
    where a resource may or may not need limiting, without changing code."""

    def __init__(self, value=None):
        pass

    def locked(self) -> bool:
        return False

    def ready(self) -> bool:
        return True

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 1

    def rawlink(self, callback) -> None:
        pass

    def unlink(self, callback) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, typ, value, tb) -> None:
        pass

    def __repr__(self) -> str:
        return "<DummySemaphore>"


class RLock:
    """A reentrant lock owned by a greenlet: the owner may acquire it again
    (each acquire needs its release); anyone else waits in FIFO order.
    Releasing a lock you do not own raises RuntimeError. ``hub``: as for
    :class:`Semaphore`.

    The one home of the reentrant bookkeeping (owner, count, and the
    interface ``threading.Condition`` uses to release a lock fully while it
    waits): :class:`labkit.threading.RLock` is this class on the patched
    ``threading.Lock`` (labkit._twosided: a Semaphore(1) with threading's
    interface). The lock underneath is ``_block``; it only needs
    ``acquire(blocking, timeout)``, ``release()`` and ``locked()``.
    """

    __slots__ = ("_block", "_owner", "_count", "__weakref__")

    def __init__(self, hub=None):
        self._block = Semaphore(1, hub)
        self._owner = None   # the greenlet holding the lock, or None
        self._count = 0      # how many times the owner acquired it

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = getcurrent()
        if self._owner is me:
            self._count += 1
            return True
        if not self._block.acquire(blocking, timeout):
            return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        if self._owner is not getcurrent():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = None
            self._block.release()

    def __exit__(self, typ, value, tb) -> None:
        self.release()

    def locked(self) -> bool:
        return self._block.locked()

    @property
    def owner(self):
        """The greenlet holding the lock now, or None. Read-only: for
        observers (the tracer's wait-for graph shows who holds a lock its
        waiters wait on); a Semaphore has no owner, only permits."""
        return self._owner

    # threading.Condition's interface for reentrant locks
    def _is_owned(self) -> bool:
        return self._owner is getcurrent()

    def _recursion_count(self) -> int:
        return self._count if self._owner is getcurrent() else 0

    def _release_save(self):
        if not self._count or self._owner is not getcurrent():
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = None
        self._block.release()
        return state

    def _acquire_restore(self, state) -> None:
        self._block.acquire()
        self._count, self._owner = state

    def __repr__(self) -> str:
        return f"<RLock owner={self._owner!r} count={self._count}>"
