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

The lock is :class:`labkit.lock.Semaphore` with one permit -- labkit's one
lock mechanism -- given ``threading.Lock``'s interface (argument rules,
RuntimeError on releasing an unlocked lock, ``locked()``, ``_at_fork_reinit``,
a failed non-blocking try that lets other greenlets run). So its two modes
are the semaphore's:

    one thread   the lock belongs to the OS thread that first uses it; the
                 permit is a plain counter, read and written with no call in
                 between (the GIL never splits that), and greenlets of that
                 thread park in the semaphore's FIFO line (Tickets of
                 labkit._lines). No native lock at all: an uncontended
                 acquire/release is a few bytecodes.
    shared       the first use from a second OS thread makes it shared for
                 good: from then on every acquire and release, in any
                 thread, holds a native mutex (an original C lock) while it
                 reads or changes the counter and the waiters' line.

Who may call what, from which thread:

- ``acquire``/``release``/``locked``: anyone, anywhere. How acquire waits
  is decided by the caller: a greenlet of a thread that has a hub (the main
  greenlet included) parks; a thread without a hub, a kernel subshell, and
  the hub greenlet itself (a loop callback cannot park) block the OS thread
  on a native lock of their own (shared mode; a lock still in one thread
  becomes shared for it). A loop callback that waits for a lock nobody but
  this thread ever used would wait forever: it raises BlockingSwitchOutError.

What wakes whom:

- one thread: release() gives the permit back and has the hub serve the
  oldest parked greenlet soon (barging allowed, bounded: once the oldest has
  waited :data:`labkit.lock.STARVATION_NS` the permit is handed to it), as
  for any Semaphore;
- shared: release(), under the mutex, hands the permit to the oldest waiter
  of any thread and wakes it its own way -- a native lock's release for a
  thread, ``run_callback_threadsafe`` into its hub for a greenlet. Greenlets
  that were parked in the owner's line when the lock became shared are
  served first, by their own hub.

Why no wake-up can be lost:

1. One thread: every step is in that thread, in greenlets; the semaphore's
   take-back rules (labkit._park) cover timeouts and kills.
2. Becoming shared happens under the GIL between two of the owner's fast
   paths, never inside one (no call between reading and writing the
   counter): an owner that was past its thread check finishes that step on
   the counter, and its next call takes the shared path.
3. Shared: a waiter is put in the line, and a release takes it out and
   marks it ``handed``, both under the mutex; a waiter that stops waiting
   (timeout, kill) leaves the line under the mutex and reads ``handed``
   there -- handed means the lock is its own, and it is passed on if the
   waiter is leaving by an exception. A handed lock is never dropped.
4. A greenlet waiting for a release that another OS thread may make counts
   as ``hub.keepalive``: its hub cannot see that thread. A wait that only
   this thread could end, with no other thread alive, is LoopExit, as for
   labkit's own locks.

What this module must never do: block the OS thread while holding the
mutex, switch greenlets while holding it, or let a hub use these locks for
its own work (the hub, the loop and the thread pool use the originals in
:mod:`labkit._native`).
"""
from __future__ import annotations

from greenlet import getcurrent

from labkit import _native
from labkit import lock as _labkit_lock
from labkit._park import cannot_wait_in_hub, check_seconds, sleep
from labkit.hub import Hub, hub_for_this_thread

__all__ = ["Lock", "RLock", "Condition", "TIMEOUT_MAX"]

_get_ident = _native.get_ident
_Semaphore = _labkit_lock.Semaphore
TIMEOUT_MAX = _native.TIMEOUT_MAX


def _check_timeout(blocking, timeout):
    """The C lock's argument rules; returns the timeout in seconds, or None
    for forever (-1, and None as gevent's lock accepts it)."""
    if timeout == -1 or timeout is None:
        return None
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
    block the thread (a thread without a hub, a kernel subshell's
    placeholder hub, the hub greenlet itself)."""
    hub = current.parent
    if hub.__class__ is Hub:  # a greenlet the hub spawned: in the hub's thread
        return hub
    hub = hub_for_this_thread()
    if hub is None or current is hub or getattr(hub, "thread_ident", None) != _get_ident():
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
    if _parking_hub(getcurrent()) is not None:
        sleep(0)
    return False


class Lock(_Semaphore):
    """``threading.Lock`` for greenlets and threads at once (see the module
    docstring): labkit's Semaphore with one permit and threading's
    interface. Not reentrant, released by anyone, FIFO among waiters,
    barging allowed (bounded)."""

    __slots__ = ()

    _label = "Lock"

    def __init__(self):
        _Semaphore.__init__(self, 1)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock: True once taken; False if ``blocking`` is false
        and it is held, or if ``timeout`` seconds pass first."""
        if timeout == -1 or timeout is None:
            if _get_ident() == self._thread_ident and self.counter > 0:
                # Semaphore.acquire's one-thread fast path, inlined (this is
                # what a contended `with lock:` loop runs every turn).
                self.counter = 0
                if self._serving:
                    # We took the permit right after a release queued the
                    # line's serve: take it back if it is still the newest
                    # ready callback (Semaphore.acquire says why).
                    ready = self.hub.ready
                    if ready and ready[-1] is self._serve_cb:
                        last = ready.pop()
                        if last is self._serve_cb:
                            self._serving = False
                            if not self._waiters:
                                self._serve_cb = None
                        else:
                            ready.append(last)
                return True
            timeout = None
        else:
            timeout = _check_timeout(blocking, timeout)
        if _Semaphore.acquire(self, blocking, timeout):
            return True
        return _failed_try() if not blocking else False

    def _wait_in_line(self, timeout) -> bool:
        """One-thread mode, the lock is held: park -- or, where the caller
        cannot park, block this OS thread in shared mode."""
        current = getcurrent()
        hub = _parking_hub(current)
        if hub is None:
            if current is hub_for_this_thread():
                # A loop callback, and only this thread ever used the lock:
                # its holder is a greenlet of this hub, which cannot run.
                raise cannot_wait_in_hub()
            self._become_shared()
            return self._shared_acquire(True, timeout)
        if not _native.other_threads_may_exist():
            return _Semaphore._wait_in_line(self, timeout)
        hub.keepalive(1)  # another thread may be the one to release (rule 4)
        try:
            return _Semaphore._wait_in_line(self, timeout)
        finally:
            hub.keepalive(-1)

    def _waiting_hub(self):
        return _parking_hub(getcurrent())

    def release(self) -> None:
        """Release the lock (from any greenlet or thread); RuntimeError if
        it is not held. Never switches."""
        if _get_ident() != self._thread_ident and self._check_thread():
            if self.counter > 0:
                raise RuntimeError("release unlocked lock")
            return self._shared_release()
        if self.counter > 0:
            raise RuntimeError("release unlocked lock")
        # Semaphore.release's one-thread path, inlined (the hot path).
        waiters = self._waiters
        if not waiters:
            self.counter = 1
            if self._links:
                self._check_and_notify()
        elif self.hub.last_poll_ns >= waiters[0].deadline:
            self._hand_on()  # the oldest waiter has waited long enough
        else:
            self.counter = 1
            if not self._serving:
                self._serving = True
                self.hub.schedule(self._serve_cb or self._make_serve_cb())

    __enter__ = acquire

    def __exit__(self, typ, value, tb) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        """After fork, in the child (the stdlib calls it): a fresh, free lock."""
        _Semaphore.__init__(self, 1)

    def __repr__(self) -> str:
        state = "locked" if self.counter <= 0 else "unlocked"
        parked = len(self._waiters) + len(self._shared_line or ())
        parked = f" parked={parked}" if parked else ""
        return f"<{state} labkit.thread.LockType object at {id(self):#x}{parked}>"


class RLock(_labkit_lock.RLock):
    """``threading.RLock`` for greenlets and threads at once: labkit.lock's
    RLock (owned by a greenlet -- a thread's own greenlet, for plain
    threads -- so two greenlets of one thread exclude each other; the owner
    may re-acquire) on this module's :class:`Lock`, threading's interface
    for the same Semaphore."""

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
