"""Locks that greenlets and OS threads share: the private half of
:mod:`labkit.thread` and :mod:`labkit.threading`.

When ``labkit.monkey.patch_thread`` replaces ``threading.Lock``, one lock may
be used at the same time by greenlets (on a thread that runs a hub) and by
plain OS threads (a kernel's service threads, a library's workers, the
user's own ``threading.Thread`` in mixed mode). Each side must wait in its
own way: a greenlet parks and lets its hub run the other greenlets, a thread
blocks in the kernel as the stdlib lock would. This module is that lock;
everything else in :mod:`labkit.threading` (Condition, Event, Semaphore,
Barrier, and through them the stdlib's ``queue`` and ``concurrent.futures``)
is the stdlib's own Python code running on top of it.

The lock, in three parts::

    _block   an original C lock. Held  <=>  the Lock is held. The fast path
             on either side is _block.acquire(False) / _block.release():
             one C call, no Python bookkeeping.
    _line    the greenlets parked in acquire(), oldest first (Tickets of
             labkit._park). OS threads never enter it: a thread that must
             wait blocks in _block.acquire(True, timeout), and the C lock
             wakes it when anyone -- greenlet or thread -- releases.
    _mutex   an original C lock guarding what a Ticket is told: servers pop
             a ticket and hand it the lock, and a leaving greenlet takes its
             ticket out, each under _mutex. Held for a few bytecodes, never
             across a switch or a blocking call.

Who may call what, from which thread:

- ``acquire``/``release``/``locked``: anyone, anywhere. Which way acquire
  waits is decided by the caller: a greenlet of a thread that has a hub
  (``hub_for_this_thread``; the main greenlet of the main thread included)
  parks; a thread without a hub, a kernel subshell and the hub greenlet
  itself (a loop callback: it cannot park) block the OS thread.
- ``_serve`` runs as a callback *in the hub of the greenlet it serves* (queued
  with ``hub.schedule`` from that hub's thread, ``run_callback_threadsafe``
  from any other): it takes ``_block`` on the waiter's behalf and hands it
  over, so a woken greenlet owns the lock without racing for it again.

What wakes whom:

- A release with greenlets in line queues one ``_serve`` (``_serving``
  de-duplicates: one pending serve per lock is enough, see below).
- A release wakes blocked OS threads by itself: ``_block.release()``.
- Barging is allowed, as in ``threading`` and gevent: a running greenlet or
  thread that finds ``_block`` free takes it, even with a line. A contended
  ``with lock:`` loop then costs no park per turn. Against starvation, as in
  labkit.lock.Semaphore: once the oldest parked greenlet of the *releasing*
  thread has waited :data:`labkit.lock.STARVATION_NS`, release() hands the
  lock straight to it without letting ``_block`` go.

Why no wake-up can be lost (the GIL orders the steps below):

1. A greenlet that finds the lock held appends its ticket to ``_line``, and
   only then tries ``_block.acquire(False)`` once more before it parks. A
   releaser does ``_block.release()`` and only then looks at ``_line``. So
   either the waiter's retry finds the lock free, or the releaser sees the
   ticket and queues a serve.
2. ``_serve`` clears ``_serving`` before it looks at ``_block`` and
   ``_line``; a release sets it after ``_block.release()``. So a release
   either queues a new serve or its effect is seen by the pending one.
3. A serve that finds ``_block`` taken (barged) does nothing: whoever holds it
   will release, and that release queues the next serve (1).
4. A served ticket is handed the lock (``value`` set, under ``_mutex``)
   before its wake-up is queued; a ticket whose wait ends for another reason
   (timeout, kill) leaves the line under ``_mutex``. It reads ``value``
   there: handed means the lock is its own -- kept after a timeout, passed
   on by release() after an exception. A handed lock is never dropped.
5. A parked greenlet counts as ``hub.keepalive`` while other OS threads
   exist or are being started (one of them may be the releaser); in a
   process of one thread its hub can see every possible releaser, so a wait
   nobody can end is LoopExit, as for labkit's own locks.

What this module must never do: block the OS thread while holding
``_mutex``, switch greenlets while holding it, or let a hub use these locks
for its own work (the hub, the loop and the thread pool use the originals
in :mod:`labkit._native`).
"""
from __future__ import annotations

from collections import deque
from time import monotonic_ns

from greenlet import getcurrent

from labkit import _native
from labkit import lock as _labkit_lock  # STARVATION_NS, read at each use (tests set it)
from labkit._lines import EMPTY, Ticket
from labkit._park import cannot_wait_in_hub, check_seconds, sleep
from labkit.hub import Hub, hub_for_this_thread

__all__ = ["Lock", "RLock", "Condition", "TIMEOUT_MAX"]

_get_ident = _native.get_ident
TIMEOUT_MAX = _native.TIMEOUT_MAX

#: a served Ticket's value: "the lock is yours"
_HANDED = True


def _check_timeout(blocking, timeout) -> float:
    """The C lock's argument rules; returns the timeout (seconds, -1: forever).
    None is accepted for -1, as gevent's lock does (labkit.lock.RLock's
    default, which threading.RLock shares)."""
    if timeout == -1 or timeout is None:
        return -1
    timeout = check_seconds(timeout, "timeout")
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout value must be positive")
    if timeout > TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


def _parking_hub(current):
    """The hub that may park ``current`` (the current greenlet), or None:
    block the thread."""
    hub = current.parent
    if hub.__class__ is Hub:  # a greenlet the hub spawned: in the hub's thread
        return hub
    hub = hub_for_this_thread()
    # A kernel subshell's placeholder hub has no thread: block there too.
    if hub is None or getattr(hub, "thread_ident", None) != _get_ident():
        return None
    if current is hub:
        # A loop callback cannot park. With other threads alive, one of
        # them holds the lock and will release it: block a moment. Alone,
        # only a parked greenlet of ours can hold it: that would hang.
        if not _native.other_threads_may_exist():
            raise cannot_wait_in_hub()
        return None
    return hub


def _failed_try() -> bool:
    """A non-blocking acquire failed: in a greenlet that could park, let the
    others run once first (``sleep(0)``), then return False. gevent does the
    same (its issue 1464): a spin loop ``while not lock.acquire(False):``
    in a greenlet would otherwise never let the holder -- another greenlet
    of this thread -- run, and spin forever. An OS thread without a hub, and
    the hub itself, just get False (the OS preempts threads; a loop callback
    cannot yield)."""
    current = getcurrent()
    hub = current.parent
    if hub.__class__ is not Hub:
        hub = hub_for_this_thread()
        if hub is None or current is hub or getattr(hub, "thread_ident", None) != _get_ident():
            return False
    sleep(0)
    return False


class Lock:
    """``threading.Lock`` for greenlets and threads at once (see the module
    docstring): not reentrant, released by anyone, FIFO among parked
    greenlets, barging allowed."""

    __slots__ = ("_block", "_line", "_mutex", "_serving", "_serve_cb", "_serve_hub",
                 "__weakref__")

    def __init__(self):
        #: the original C lock: held exactly while this Lock is held
        self._block = _native.allocate_lock()
        #: Tickets of the greenlets parked in acquire(), oldest first
        self._line: deque = deque()
        #: guards popping a ticket with a hand-off, and a ticket leaving
        self._mutex = _native.allocate_lock()
        #: a _serve callback is queued in some hub
        self._serving = False
        #: _serve, bound once per lock (so that it can be taken back), or None
        self._serve_cb = None
        #: the hub whose ready queue got the last _serve_cb by schedule()
        self._serve_hub = None

    # -- acquire ----------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock: True once taken; False if ``blocking`` is false
        and it is held, or if ``timeout`` seconds pass first."""
        if timeout == -1:
            if self._block.acquire(False):
                if self._serving:  # _take_back_serve, inlined: the contended hot path
                    hub = self._serve_hub
                    if hub is not None:
                        ready = hub.ready
                        cb = self._serve_cb
                        if ready and ready[-1] is cb and hub.thread_ident == _get_ident():
                            last = ready.pop()
                            if last is cb:
                                self._serving = False
                                self._serve_hub = None
                            else:
                                ready.append(last)
                return True
            if not blocking:
                return _failed_try()
            return self._wait(-1)
        timeout = _check_timeout(blocking, timeout)
        if self._block.acquire(False):
            if self._serving:
                self._take_back_serve()
            return True
        return self._wait(timeout)

    def __enter__(self) -> bool:
        if self._block.acquire(False):
            if self._serving:
                self._take_back_serve()
            return True
        return self._wait(-1)

    def _take_back_serve(self) -> None:
        """We barged past a serve queued in our own hub: it would find the
        lock taken and do nothing, so take it back if it is still the newest
        ready callback (Hub.take_back's newest-entry case, inlined as in
        labkit.lock: a contended ``with lock:`` loop then needs no trip
        through the hub per turn). Our release queues the next one."""
        hub = self._serve_hub
        if hub is None or hub.thread_ident != _get_ident():
            return
        ready = hub.ready
        cb = self._serve_cb
        if ready and ready[-1] is cb:
            last = ready.pop()
            if last is cb:
                self._serving = False
                self._serve_hub = None
            else:  # another thread appended in between: put it back
                ready.append(last)

    def _wait(self, timeout: float) -> bool:
        """The lock is held: wait for it as the caller must (module docstring)."""
        current = getcurrent()
        hub = _parking_hub(current)
        if hub is None:
            return self._block.acquire(True, timeout)
        ticket = Ticket(hub, current)
        # the same threshold as labkit's Semaphore (see lock.STARVATION_NS)
        ticket.deadline = monotonic_ns() + _labkit_lock.STARVATION_NS
        line = self._line
        line.append(ticket)
        if self._block.acquire(False):  # released before it could see us (rule 1)
            with self._mutex:
                line.remove(ticket)  # not served: a serve takes _block first
            ticket.greenlet = None
            return True
        keepalive = _native.other_threads_may_exist()
        try:
            ticket.park_shared(line, self._mutex, None if timeout == -1 else timeout,
                               "Lock", keepalive)
        except BaseException:
            if ticket.value is not EMPTY:
                self.release()  # handed to us, but we are leaving: pass it on
            raise
        if ticket.value is not EMPTY:
            return True  # handed over by a serve or a starving release
        return self._block.acquire(False)  # timed out: one last look

    # -- release ----------------------------------------------------------
    def release(self) -> None:
        """Release the lock (from any greenlet or thread); RuntimeError if
        it is not held. Never switches."""
        line = self._line
        if not line:
            self._block.release()
            if line:  # a greenlet appended meanwhile (rule 1)
                self._serve_soon()
            return
        # Greenlets are parked. The common case, inlined (a contended loop
        # runs it every turn): the oldest is ours and young enough to be
        # passed by: release, and queue one serve in our hub.
        try:
            ticket = line[0]
        except IndexError:
            ticket = None
        if ticket is not None:
            hub = ticket.hub
            if hub.last_poll_ns < ticket.deadline and hub.thread_ident == _get_ident():
                self._block.release()
                if not self._serving:
                    self._serving = True
                    cb = self._serve_cb
                    if cb is None:
                        cb = self._serve_cb = self._serve
                    self._serve_hub = hub
                    hub.schedule(cb)
                return
        self._release_to_line()

    def __exit__(self, typ, value, tb) -> None:
        if self._line:
            self._release_to_line()
            return
        self._block.release()
        if self._line:
            self._serve_soon()

    def _release_to_line(self) -> None:
        block = self._block
        if not block.locked():
            raise RuntimeError("release unlocked lock")
        line = self._line
        try:
            ticket = line[0]
        except IndexError:  # the waiters left meanwhile
            block.release()
            return
        hub = ticket.hub
        if hub.thread_ident != _get_ident():
            block.release()
            self._serve_soon()
            return
        if hub.last_poll_ns >= ticket.deadline:
            # The oldest waiter is ours and has waited long enough: hand the
            # lock over directly (it stays held: nobody can barge). Only in
            # its own thread, where it cannot be leaving at the same moment.
            with self._mutex:
                handed = bool(line) and line[0] is ticket
                if handed:
                    line.popleft()
                    ticket.value = _HANDED
            if handed:
                ticket.schedule_wake()
                return
        block.release()
        if not self._serving:  # (_serve_soon, inlined for our own hub)
            self._serving = True
            cb = self._serve_cb
            if cb is None:
                cb = self._serve_cb = self._serve
            self._serve_hub = hub
            hub.schedule(cb)

    def _serve_soon(self) -> None:
        """Queue one _serve in the hub of the oldest parked greenlet."""
        if self._serving:
            return  # the pending serve will see this release (rule 2)
        try:
            hub = self._line[0].hub
        except IndexError:
            return
        self._serving = True
        if hub.thread_ident == _get_ident():
            cb = self._serve_cb
            if cb is None:
                cb = self._serve_cb = self._serve
            self._serve_hub = hub
            hub.schedule(cb)
        else:
            hub.run_callback_threadsafe(self._serve)

    def _serve(self) -> None:
        """Hub callback: take the lock for the oldest parked greenlet and
        wake it (switching into it if it is ours: it comes back here)."""
        self._serving = False
        self._serve_hub = None
        line = self._line
        if not line or not self._block.acquire(False):
            return  # nobody waits, or someone barged: their release serves (rule 3)
        with self._mutex:
            ticket = line.popleft() if line else None
            if ticket is not None:
                ticket.value = _HANDED
        if not line:
            self._serve_cb = None  # (a reference cycle: only while contended)
        if ticket is None:  # the waiters left meanwhile
            self.release()
        elif ticket.hub.thread_ident == _get_ident():
            ticket.wake()
        else:
            ticket.wake_threadsafe()

    # -- state ------------------------------------------------------------
    def locked(self) -> bool:
        return self._block.locked()

    def _at_fork_reinit(self) -> None:
        """After fork, in the child (the stdlib calls it): a fresh, free lock."""
        self._block = _native.allocate_lock()
        self._line = deque()
        self._mutex = _native.allocate_lock()
        self._serving = False
        self._serve_cb = self._serve_hub = None

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        parked = f" parked={len(self._line)}" if self._line else ""
        return f"<{state} labkit.thread.LockType object at {id(self):#x}{parked}>"


class RLock(_labkit_lock.RLock):
    """``threading.RLock`` for greenlets and threads at once: labkit.lock's
    RLock (owned by a greenlet -- a thread's own greenlet, for plain
    threads -- so two greenlets of one thread exclude each other; the owner
    may re-acquire) on this module's :class:`Lock` instead of a Semaphore."""

    __slots__ = ()

    def __init__(self):
        self._block = Lock()
        self._owner = None   # the greenlet holding it, or None
        self._count = 0      # how many times the owner acquired it

    def _at_fork_reinit(self) -> None:
        self._block._at_fork_reinit()
        self._owner = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._block.locked() else "unlocked"
        return (f"<{state} labkit.threading.RLock object owner={self._owner!r} "
                f"count={self._count} at {id(self):#x}>")


class Condition(_native.Condition):
    """``threading.Condition`` whose waits go through :class:`Lock`: a
    greenlet parks, a thread blocks, a notify from either side wakes either.
    The default lock is an :class:`RLock` of this module."""

    def __init__(self, lock=None):
        super().__init__(RLock() if lock is None else lock)

    def _is_owned(self) -> bool:
        # The stdlib's test for a lock with no owner (it uses this method
        # only when the lock has no _is_owned of its own): "held by someone".
        # Asked with locked(), not with a failed acquire(False), which in a
        # greenlet yields (see _failed_try): notify() must not switch.
        lock = self._lock
        if lock.__class__ is Lock:
            return lock.locked()
        return _native.Condition._is_owned(self)

    def wait(self, timeout: float | None = None) -> bool:
        # The stdlib's wait, with this module's Lock as the waiter's lock
        # (the stdlib's takes threading._allocate_lock, which may be the
        # original: a greenlet waiting on it would block its hub).
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = Lock()
        waiter.acquire()
        self._waiters.append(waiter)
        saved_state = self._release_save()
        gotit = False
        try:  # restore state no matter what (e.g., KeyboardInterrupt)
            if timeout is None:
                waiter.acquire()
                gotit = True
            elif timeout > 0:
                gotit = waiter.acquire(True, timeout)
            else:
                gotit = waiter.acquire(False)
            return gotit
        finally:
            self._acquire_restore(saved_state)
            if not gotit:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._waiters.clear()
