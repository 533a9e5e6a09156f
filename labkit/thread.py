"""The green twin of :mod:`_thread` (gevent.thread): what ``patch_thread()`` puts
in ``_thread`` in green mode.

    get_ident()                 id of the current greenlet: one "thread" per greenlet
    start_new_thread(f, args)   spawns a greenlet running f(*args); returns its ident
    allocate_lock(), LockType   labkit's two-sided lock (labkit._twosided.Lock):
                                a greenlet parks, an OS thread blocks
    _local                      labkit.local.local: one namespace per greenlet
    exit()                      raises GreenletExit: ends the green "thread"

Like gevent's, this module is a helper for :mod:`labkit.monkey`; to run
something concurrently, call ``labkit.spawn``. The names it does not
implement (``error``, ``TIMEOUT_MAX``, ``interrupt_main``, ``get_native_id``
...) are the originals.

One exception to "a thread is a greenlet": a ``threading.Thread`` started by
:func:`labkit._native.start_thread` (labkit's thread pools, the blocking
monitor) gets an OS thread, so that labkit's own machinery keeps working
under patching.
"""
from __future__ import annotations

import _thread as _original
import sys

from greenlet import GreenletExit, getcurrent

from labkit import _native, _twosided
from labkit.local import local as _local

__all__ = ["get_ident", "start_new_thread", "start_new", "allocate_lock", "allocate",
           "LockType", "lock", "exit", "exit_thread", "stack_size", "error",
           "TIMEOUT_MAX", "interrupt_main", "get_native_id", "RLock"]

error = _original.error
TIMEOUT_MAX = _original.TIMEOUT_MAX
interrupt_main = _original.interrupt_main
get_native_id = _original.get_native_id
RLock = _twosided.RLock

LockType = lock = allocate_lock = allocate = _twosided.Lock

PY313 = sys.version_info >= (3, 13)
#: where 3.13's Thread keeps its handle (renamed in a 3.13 bugfix release)
HANDLE_ATTRIBUTE = "_os_thread_handle" if PY313 and not hasattr(
    __import__("threading").main_thread(), "_handle") else "_handle"


def get_ident(gr=None) -> int:
    """A number for the current greenlet (or ``gr``), unique while it lives."""
    return id(getcurrent() if gr is None else gr)


def exit() -> None:
    """End the current green thread (raises GreenletExit)."""
    raise GreenletExit


exit_thread = exit


def stack_size(size=None) -> int:
    """The original's answer; greenlets have no stack size of their own, so
    only a size the original accepts is accepted (and it applies to OS
    threads)."""
    return _native.stack_size() if size is None else _native.stack_size(size)


# -- starting green threads ----------------------------------------------------------

#: green thread -> the sentinel locks released when it ends (see _set_sentinel)
_sentinels: dict = {}


def _wants_os_thread(function) -> bool:
    """Was this ``threading.Thread._bootstrap`` of a thread that
    labkit._native.start_thread marked for a real OS thread?"""
    owner = getattr(function, "__self__", None)
    return getattr(owner, "_labkit_native", False)


def _run_green_thread(function, args, kwargs) -> None:
    try:
        function(*args, **kwargs)
    except SystemExit:
        pass  # _thread's rule: SystemExit ends the thread quietly
    finally:
        # What the interpreter does when a thread state is deleted.
        for sentinel in _sentinels.pop(getcurrent(), ()):
            if sentinel.locked():
                sentinel.release()


def _spawn(function, args, kwargs):
    from labkit.greenlet import Greenlet
    return Greenlet.spawn(_run_green_thread, function, args, kwargs or {})


def start_new_thread(function, args=(), kwargs=None) -> int:
    """Start ``function(*args, **kwargs)`` in a new greenlet; its ident."""
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if _wants_os_thread(function):
        return _native.start_new_thread(function, args, kwargs or {})
    return get_ident(_spawn(function, args, kwargs))


start_new = start_new_thread


def _set_sentinel():
    """threading's (3.10 - 3.12) lock that the "interpreter" releases when the
    current thread ends: for a green thread, when its greenlet ends."""
    current = getcurrent()
    if current.parent is None:  # an OS thread's own greenlet: the original
        return _native.set_sentinel()
    sentinel = allocate_lock()
    _sentinels.setdefault(current, []).append(sentinel)
    return sentinel


# -- Python 3.13+: thread handles ------------------------------------------------------

class _ThreadHandle:
    """3.13's handle of a started thread (``Thread._handle``), for a greenlet."""

    __slots__ = ("_greenlet", "_done", "_ident", "__weakref__")

    def __init__(self, *args, **kwargs):
        self._greenlet = None
        self._ident = None
        #: held until the green thread ends; joiners wait on it
        self._done = allocate_lock()
        self._done.acquire()

    def _set_greenlet(self, glet) -> None:
        self._greenlet = glet
        self._ident = get_ident(glet)

    @property
    def ident(self):
        return self._ident

    def is_done(self) -> bool:
        return not self._done.locked()

    def _set_done(self) -> None:
        if self._done.locked():
            self._done.release()

    def join(self, timeout=None) -> None:
        if timeout is not None and timeout < 0:
            timeout = None
        if self._greenlet is not None and self._greenlet is getcurrent():
            raise RuntimeError("Cannot join current thread")
        if self._done.acquire(True, -1 if timeout is None else timeout):
            self._done.release()

    def __repr__(self) -> str:
        return f"<labkit.thread._ThreadHandle ident={self._ident} done={self.is_done()}>"


def start_joinable_thread(function, handle=None, daemon=True):
    """3.13's start: a greenlet, with a handle that is done when it ends."""
    if _wants_os_thread(function):
        thread = function.__self__
        handle = _native.start_joinable_thread(function, daemon=daemon)
        setattr(thread, HANDLE_ATTRIBUTE, handle)
        return handle
    if handle is None or not isinstance(handle, _ThreadHandle):
        handle = _ThreadHandle()

    def run():
        try:
            _run_green_thread(function, (), {})
        finally:
            handle._set_done()

    handle._set_greenlet(_spawn(run, (), None))
    return handle


def _make_thread_handle(ident):
    """3.13: a handle for the current (main or dummy) thread."""
    handle = _ThreadHandle()
    handle._set_greenlet(getcurrent())
    return handle
