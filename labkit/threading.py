"""The cooperative twin of :mod:`threading` (gevent.threading): what
``labkit.monkey.patch_thread()`` puts in ``threading``.

Its locks work from both sides at once (the lock itself, and why no wake-up
is lost, is explained in :mod:`labkit._twosided`):

    Lock, RLock             a greenlet parks and lets its hub run; an OS thread
    Condition               blocks natively; a release, notify or set() from
    Event, Semaphore,       either side wakes a waiter on either side
    BoundedSemaphore,
    Barrier, Timer
    local                   labkit.local.local: keyed by the current greenlet,
                            so greenlet-local for greenlets, thread-local for
                            plain threads (each runs in its own greenlet)

Condition, Event, Semaphore, BoundedSemaphore, Barrier and Timer are the
stdlib's own classes, given this module's Lock: their logic is the stdlib's,
only the waiting changed. The stdlib's ``queue.Queue`` and
``concurrent.futures`` build on these names, which is how ``patch_queue()``
and ``patch_thread()`` make them cooperative.

What a *thread* is depends on the mode ``patch_thread`` was given:

- green (gevent's semantics; the default in a script and the gunicorn
  worker): ``threading.Thread`` runs as a greenlet (``_start_new_thread``
  below spawns one), ``get_ident`` is per greenlet;
- native (mixed; the default inside a kernel or IPython): threads stay OS
  threads, ``get_ident`` is the OS thread's, and only the locks, ``local``
  and ``Thread.join`` (which parks a greenlet that joins) change.
"""
from __future__ import annotations

import weakref

from greenlet import getcurrent

from labkit import _native, _twosided, thread as _green_thread
from labkit.local import local

__all__ = ["Lock", "RLock", "Condition", "Event", "Semaphore", "BoundedSemaphore",
           "Barrier", "Timer", "local", "get_ident", "Thread"]

Lock = _allocate_lock = allocate_lock = _twosided.Lock
RLock = _twosided.RLock
Condition = _twosided.Condition
local = local
get_ident = _green_thread.get_ident
#: the stdlib's class: green patching makes its start() spawn a greenlet
Thread = _native.Thread


class Event(_native.Event):
    """``threading.Event`` on :class:`Lock`: set() from anywhere wakes
    every waiter, greenlet or thread."""

    def __init__(self):
        super().__init__()
        self._cond = Condition(Lock())


class Semaphore(_native.Semaphore):
    """``threading.Semaphore`` on :class:`Lock`."""

    def __init__(self, value: int = 1):
        super().__init__(value)
        self._cond = Condition(Lock())


class BoundedSemaphore(_native.BoundedSemaphore):
    """``threading.BoundedSemaphore`` on :class:`Lock`."""

    def __init__(self, value: int = 1):
        super().__init__(value)
        self._cond = Condition(Lock())


class Barrier(_native.Barrier):
    """``threading.Barrier`` on :class:`Lock`."""

    def __init__(self, parties: int, action=None, timeout=None):
        super().__init__(parties, action, timeout)
        self._cond = Condition(Lock())


class Timer(_native.Timer):
    """``threading.Timer`` whose cancel() Event is this module's."""

    def __init__(self, interval, function, args=None, kwargs=None):
        super().__init__(interval, function, args, kwargs)
        self.finished = Event()


# -- green mode: what patch_thread() sets in threading besides the above -------------

_start_new_thread = _green_thread.start_new_thread
_set_sentinel = _green_thread._set_sentinel
_start_joinable_thread = _green_thread.start_joinable_thread
_ThreadHandle = _green_thread._ThreadHandle
_make_thread_handle = _green_thread._make_thread_handle


def _make_dummy_thread_class():
    import threading as stdlib

    class _DummyThread(stdlib._DummyThread):
        """``current_thread()`` of a greenlet that no Thread started (a
        ``labkit.spawn``). The stdlib's would stay in ``threading._active``
        forever; this one leaves when its greenlet ends (gevent's rule): a
        Greenlet's link removes it, before anyone who joins the greenlet
        wakes; a raw greenlet, which has no links, when it is freed."""

        def __init__(self):
            super().__init__()
            active, ident = stdlib._active, self._ident
            me = weakref.ref(self)

            def forget(_greenlet_or_ref):
                if me() is not None and active.get(ident) is me():
                    del active[ident]
            current = getcurrent()
            rawlink = getattr(current, "rawlink", None)
            if rawlink is not None:
                rawlink(forget)
            else:
                self._labkit_greenlet_ref = weakref.ref(current, forget)

    return _DummyThread


_DummyThread = _make_dummy_thread_class()


class _DeleteDummyThreadOnDel:
    """Green mode, 3.13+: what ``threading._DeleteDummyThreadOnDel`` becomes.

    The stdlib's (3.13) removes a dummy thread from ``threading._active``
    when an object kept in a ``_thread._local`` is freed, i.e. when the OS
    thread ends. Greenlets share their OS thread's ``_thread._local``: the
    dummy thread of each new greenlet replaced the last one's keeper, which
    took that greenlet's (live) dummy thread out of ``_active`` --
    ``current_thread()`` changed under a running greenlet -- and the main
    thread's last keeper was freed only at interpreter shutdown, after
    ``threading``'s globals were None ("Exception ignored in ... __del__").
    Our :class:`_DummyThread` leaves ``_active`` when its greenlet ends, so
    this keeper keeps nothing."""

    def __init__(self, dummy_thread):
        pass


# -- native (mixed) mode: Thread.join parks a greenlet ---------------------------------

def _join_native(self, timeout=None):
    """``Thread.join`` in mixed mode: a greenlet that joins an OS thread
    parks until the thread ends (the thread's own _bootstrap_inner signals
    it, see :func:`_bootstrap_inner_native`; for a thread started before
    patching, a watcher thread does, see :func:`_end_of`); anywhere else,
    the stdlib's."""
    if _twosided._parking_hub(getcurrent()) is not None and self.is_alive():
        if self is _native.current_thread():
            raise RuntimeError("cannot join current thread")
        done = self.__dict__.get("_labkit_done")
        if done is None:  # started before patching: its bootstrap tells nobody
            done = _end_of(self)
        if not done.wait(timeout):
            return  # timed out: the thread is alive, as the caller will see
        timeout = None  # ended: the stdlib's join only tidies up now
    _native_join(self, timeout)


#: guards making one watcher per thread (an original lock: never held across a wait)
_watchers_lock = _native.allocate_lock()


def _end_of(thread) -> "Event":
    """The Event set when ``thread`` -- started before patching, so no
    patched bootstrap will set one -- has ended. One watcher OS thread per
    such thread waits in the stdlib's join, which is the interpreter's own
    end-of-thread signal, and sets it: the joining greenlets park on it and
    are woken by that set (through their hub's thread-safe path), instead
    of polling."""
    with _watchers_lock:
        done = thread.__dict__.get("_labkit_done")
        if done is None:
            done = thread.__dict__["_labkit_done"] = Event()
            _native.start_thread(_set_when_ended, (thread, done),
                                 name=f"labkit: end of {thread.name}", daemon=True)
    return done


def _set_when_ended(thread, done) -> None:
    try:
        _native_join(thread)
    finally:
        done.set()


_native_join = _native.Thread.join
_native_bootstrap_inner = _native.Thread._bootstrap_inner


def _bootstrap_inner_native(self):
    # Started after patching: whoever joins from a greenlet waits on this.
    done = self.__dict__.setdefault("_labkit_done", Event())
    try:
        _native_bootstrap_inner(self)
    finally:
        done.set()

