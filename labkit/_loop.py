"""The thin Python face of the C loop (loop_c/).

The C loop knows nothing about Python: it keeps an fd -> interest-mask table,
a timer heap, and a wake-up fd, and ``lk_poll`` writes the events that fired
into an array we own. This module is the other half of that bargain:

- it maps watcher ids back to Python objects -- an fd to the two callbacks
  waiting on it (one reader, one writer), a timer id to its :class:`Timer`
  or started Timeout. Both maps are C, CPython builtins beside the cffi
  loop (loop_c/lk_io_py.c, loop_c/lk_timers_py.c): a wait, a timer start
  and a cancel cost one builtin call each, and no Python frame;
- it makes exactly one call into C per loop iteration (``poll``: lk_poll,
  then the dispatch of the fired events, each to exactly one callback).

Callbacks are invoked directly from :meth:`Loop.poll`, in the order the C loop
reported them (io events first, then timers in (deadline, start) order). The
hub passes the callbacks that switch into waiting greenlets, so a dispatch is
a greenlet switch and nothing more.

Who may call what: everything here belongs to the thread that created the
loop, except :meth:`Loop.wake`, which any thread may call.
"""
from __future__ import annotations

import os
import sysconfig
from typing import Callable


def refuse_free_threaded(gil_disabled) -> None:
    """Raise ImportError if ``gil_disabled`` -- this CPython's
    ``sysconfig.get_config_var("Py_GIL_DISABLED")``: 1 on a free-threaded
    build, 0 or None otherwise -- says there is no GIL.

    labkit's C parts assume one: the trace ring's writer
    (loop_c/lk_trace_py.c) relies on it to keep two writers apart, and the
    frame-stack block cache (loop_c/lk_arena_cache.c) is not installed
    without it. Refusing here, before the C loop loads, says so plainly
    instead of letting a race corrupt a trace.
    """
    if gil_disabled:
        raise ImportError(
            "labkit does not support free-threaded CPython yet: this interpreter "
            "is built without a GIL (Py_GIL_DISABLED), and labkit's trace ring "
            "writer and frame-stack arena cache (loop_c/) assume a GIL. Use a "
            "CPython build with the GIL.")


refuse_free_threaded(sysconfig.get_config_var("Py_GIL_DISABLED"))

from labkit import _native  # the original lock: see labkit/_native.py

try:
    from labkit._lk_loop import ffi, lib
    from labkit._lk_poll_py import Timer as _TimerType
    from labkit._lk_poll_py import io_table as _io_table
    from labkit._lk_poll_py import set_resumer as _set_resumer
    from labkit._lk_poll_py import timer_table as _timer_table
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "labkit's C event loop (labkit._lk_loop, and its helper "
        "labkit._lk_poll_py) is not built. Install labkit with `pip install .` "
        "(or `pip install -e .`) from the repository root so that setup.py "
        "compiles loop_c/; a C compiler and the Python headers are required. "
        f"Original error: {exc}"
    ) from exc

# Reuse the frame-stack blocks of dead greenlets (loop_c/lk_arena_cache.c):
# it made starting a greenlet about 10x cheaper on the machine we measured
# (python -m labkit bench --only fresh_greenlet measures yours).
# LABKIT_ARENA_CACHE=0 turns it off, for measuring what it buys.
if os.environ.get("LABKIT_ARENA_CACHE", "1") != "0":
    lib.lk_arena_cache_install()


def give_back_after_from_environment() -> int:
    """``LABKIT_GIVE_BACK_AFTER``: how many greenlets must have ended (and
    at least half of those alive at the peak) before the loop gives the
    memory they freed back to the system, before its next long sleep
    (malloc_trim; see loop_c/lk_memory.c). 4096 by default; 0 never.
    Counted by the frame-stack block cache: with ``LABKIT_ARENA_CACHE=0``,
    or on CPython 3.10 (no frame-stack blocks), nothing is counted, and
    nothing given back."""
    raw = os.environ.get("LABKIT_GIVE_BACK_AFTER", "4096")
    try:
        blocks = int(raw)
    except ValueError:
        raise ValueError("LABKIT_GIVE_BACK_AFTER must be a whole number of greenlets, "
                         f"not {raw!r}") from None
    if not 0 <= blocks < 2 ** 62:
        raise ValueError("LABKIT_GIVE_BACK_AFTER must be 0 (never) or a positive number "
                         f"of greenlets, not {raw!r}")
    return blocks


lib.lk_memory_set_give_back(give_back_after_from_environment())


def set_io_resumer(resume_fd: Callable | None) -> None:
    """While ``resume_fd`` is set, every loop's :meth:`Loop.io_park` (a
    socket's wait) writes the woken greenlet's resume record itself, in C,
    with ``resume_fd(g, why, fd, event)`` -- ``why`` ``LK_WHY_WAITER`` when
    the dispatch woke it, ``LK_WHY_THROW`` otherwise -- right after it
    resumed, where labkit._park.wait_io wrote it before. The tracer's hook
    (tracing/recorder.py sets it while it records, beside the Python hooks
    ``_park._resume_fd``; None: off). Process-wide, as those hooks are."""
    _set_resumer(resume_fd)


def spin_seconds_from_environment() -> float:
    """How long a poll spins before it sleeps while another thread is about
    to wake it -- a thread-pool reply is due (see :meth:`Hub.keepalive`), or
    a thread keeps posting callbacks (``Loop.set_wake_spin``):
    ``LABKIT_SPIN_US`` microseconds, 50 by default; 0 on a single CPU, where
    spinning would take the very CPU the other thread needs."""
    raw = os.environ.get("LABKIT_SPIN_US", "50")
    try:
        micros = float(raw)
    except ValueError:
        raise ValueError(f"LABKIT_SPIN_US must be a number of microseconds, not {raw!r}") from None
    if not 0 <= micros <= 10_000:  # a spin delays Ctrl-C by up to its length
        raise ValueError(f"LABKIT_SPIN_US must be between 0 and 10000, not {raw!r}")
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count() or 1
    if cpus < 2:
        return 0.0
    return micros / 1e6


def _address(cdata) -> int:
    """A cffi pointer as an int, for the CPython helpers that take one."""
    return int(ffi.cast("uintptr_t", cdata))


def arena_cache_stats() -> dict:
    """Whether the frame-stack block cache is installed (``LABKIT_ARENA_CACHE``
    not ``0``), its hits and misses, and the blocks it holds now."""
    hits = ffi.new("uint64_t *")
    misses = ffi.new("uint64_t *")
    cached = ffi.new("int *")
    installed = ffi.new("int *")
    lib.lk_arena_cache_stats(hits, misses, cached, installed)
    return {"installed": bool(installed[0]), "hits": hits[0], "misses": misses[0],
            "cached": cached[0]}


def memory_stats() -> dict:
    """The loop's giving back of freed memory (see
    :func:`give_back_after_from_environment`): frame-stack blocks
    outstanding now (one per live greenlet that has run Python code, plus
    a thread's or a deep recursion's own) and at their high-water mark
    since the last trim, the trims made and their total time in seconds."""
    outstanding = ffi.new("int64_t *")
    high_water = ffi.new("int64_t *")
    trims = ffi.new("uint64_t *")
    trim_ns = ffi.new("uint64_t *")
    lib.lk_memory_stats(outstanding, high_water, trims, trim_ns)
    return {"outstanding": outstanding[0], "high_water": high_water[0], "trims": trims[0],
            "trim_seconds": trim_ns[0] / 1e9}


READ: int = lib.LK_READ
WRITE: int = lib.LK_WRITE
ERROR: int = lib.LK_ERROR
TIMER: int = lib.LK_TIMER

#: How many fired events one ``lk_poll`` call may report. More stay pending in
#: the kernel (io) or the heap (timers) and are reported by the next call.
MAX_EVENTS = 1024

_BACKENDS = {
    "default": lib.LK_BACKEND_DEFAULT,
    "epoll": lib.LK_BACKEND_EPOLL,
    "poll": lib.LK_BACKEND_POLL,
}

_NS = 1_000_000_000


class ConcurrentObjectUseError(AssertionError, RuntimeError):
    """Two greenlets tried to wait on the same fd in the same direction
    (gevent's name; also a RuntimeError, which is what it is)."""


def _check(rc: int, what: str) -> int:
    """Turn a ``-errno`` return from C into an OSError naming the operation."""
    if rc < 0:
        code = -rc
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return rc


#: A one-shot timer: ``callback(*args)`` runs once, from the loop's thread.
#: Made by :meth:`Loop.timer` / ``Loop.start_timer``; ``cancel()`` (or
#: gevent's ``stop()``) may be called any number of times, also after it
#: fired. ``active``: until it fires or is cancelled; ``ref``: whether it
#: keeps the loop alive (``ref=False``: a hub whose only pending work is
#: unreferenced timers declares LoopExit -- a test's watchdog, a periodic
#: report); ``id``, ``callback``, ``args``. Implemented in C
#: (loop_c/lk_timers_py.c): a start and a cancel are one builtin call each,
#: keeping the GIL.
Timer = _TimerType


def _spin_ns(seconds: float) -> int:
    """A spin budget in ns, validated; at most a second."""
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, not {seconds!r}")
    return int(min(seconds, 1.0) * _NS)


class Loop:
    """One C loop: io interest, timers, wake-up, and the dispatch of what fired.

    ``backend`` is ``"epoll"``, ``"poll"`` or ``None`` for the platform default;
    the environment variable ``LABKIT_BACKEND`` overrides the default, which is
    how the test suite runs everything on both backends.
    """

    def __init__(self, backend: str | None = None):
        name = backend or os.environ.get("LABKIT_BACKEND") or "default"
        if name not in _BACKENDS:
            raise ValueError(
                f"backend must be one of {sorted(_BACKENDS)}, not {name!r}"
            )
        ptr = lib.lk_loop_new(_BACKENDS[name])
        if ptr == ffi.NULL:
            code = ffi.errno
            raise OSError(code, f"lk_loop_new({name!r}): {os.strerror(code)}")
        self._ptr = ptr
        #: held by wake() (other threads) and close(), never while polling
        self._close_lock = _native.allocate_lock()
        #: The pending timers, id -> Timer or Timeout, keeping the GIL for
        #: start and cancel: see loop_c/lk_timers_py.c. Timeout.start
        #: (loop_c/lk_timeout_py.c) arms itself here, as hub.loop._timer_table.
        self._timer_table = _timer_table(
            _address(ffi.addressof(lib, "lk_timer_start")),
            _address(ffi.addressof(lib, "lk_timer_cancel")),
            _address(ptr))
        #: take(id) -> (callback, args) | None, for poll's dispatch
        self._take_timer = self._timer_table.take
        #: ``start_timer(seconds, callback, *args) -> Timer``: :meth:`timer`
        #: without its gevent form and ``ref``, one builtin call for the hot
        #: paths (sleep, waits with a timeout). ``seconds`` must be
        #: a number (check it first: NaN raises ValueError, <= 0 fires at
        #: the next poll, past ~146 years never).
        self.start_timer = self._timer_table.start
        #: Who waits on which fd, and the poll: loop_c/lk_io_py.c. Its
        #: methods are this loop's io_start, io_cancel, io_waiting,
        #: io_forget and poll (documented below, under "io"), bound once
        #: here: each is one builtin call, with no Python frame.
        self._io = _io_table(
            _address(ffi.addressof(lib, "lk_poll")),
            _address(ffi.addressof(lib, "lk_io_set")),
            _address(ffi.addressof(lib, "lk_io_get")),
            _address(ptr), MAX_EVENTS, self._take_timer, ConcurrentObjectUseError)
        self.io_start = self._io.start
        self.io_park = self._io.park
        self.io_cancel = self._io.cancel
        self.io_waiting = self._io.waiting
        self.io_forget = self._io.forget
        self.poll = self._io.poll
        #: the hub that runs this loop (set by the Hub); gevent's watcher API
        #: (labkit/core.py) queues callbacks and keeps it alive through it
        self.hub = None
        #: gevent's per-pass watchers (labkit/core.py), run by the hub:
        #: prepares before each poll, checks after it, idles in passes that
        #: had nothing else to do
        self.prepares: list = []
        self.checks: list = []
        self.idles: list = []
        #: how many watchers the three lists hold: the hub's pass reads this
        #: one number, and looks at the lists only when it is not 0
        self.pass_watchers = 0

    # -- lifecycle --------------------------------------------------------
    def close(self) -> None:
        """Free the C loop. Pending timers and io callbacks are forgotten."""
        with self._close_lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._timer_table.close()
            self._io.close()
            lib.lk_loop_free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: lib may already be gone
            pass

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _live_ptr(self):
        if self._ptr is None:
            raise RuntimeError("the loop is closed")
        return self._ptr

    @property
    def c_handle(self):
        """The ``lk_loop *`` under this loop, for code that calls the C API
        directly: fault injection (labkit.bench.robustness) and C-level
        tests. RuntimeError once the loop is closed. Everything else uses
        this class's methods."""
        return self._live_ptr()

    def after_fork(self) -> None:
        """In a fork child: give this loop its own poller and wake-up fd."""
        self._live_ptr()
        # A thread of the parent may have held the lock when we forked.
        self._close_lock = _native.allocate_lock()
        _check(lib.lk_loop_after_fork(self._ptr), "lk_loop_after_fork")

    @property
    def backend_name(self) -> str:
        return ffi.string(lib.lk_loop_backend_name(self._live_ptr())).decode()

    @property
    def backend_fd(self) -> int:
        """The poller's fd (epoll), readable when the loop has work; -1 for poll(2)."""
        return lib.lk_loop_backend_fd(self._live_ptr())

    def stats(self) -> dict:
        out = ffi.new("lk_stats *")
        lib.lk_loop_get_stats(self._live_ptr(), out)
        return {name: getattr(out, name) for name in
                ("iterations", "poll_ns", "io_events", "timer_events", "wakeups",
                 "spins", "spin_hits")}

    def set_trace_ring(self, ring) -> None:
        """Have the C loop write its own records (poll begin/end, events
        fired) into ``ring`` (an ``lk_trace *`` from lk_trace_new), or stop
        with None. The tracer's one hook into the C loop."""
        lib.lk_loop_set_trace(self._live_ptr(), ffi.NULL if ring is None else ring)

    def set_spin(self, seconds: float) -> None:
        """The next polls that would sleep poll without sleeping instead, for
        up to ``seconds``, until one of them catches nothing (0: never, the
        default). For a reply due from another thread within microseconds:
        see loop_c/README.md, phase 3."""
        lib.lk_loop_set_spin(self._live_ptr(), _spin_ns(seconds))

    def set_wake_spin(self, seconds: float) -> None:
        """Spin up to ``seconds`` before sleeping while other threads'
        wake-ups keep ending polls within that time (0: never, the
        default): a thread in a conversation with this loop. See
        loop_c/README.md, phases 3 and 6."""
        lib.lk_loop_set_wake_spin(self._live_ptr(), _spin_ns(seconds))

    # -- time ---------------------------------------------------------------
    @staticmethod
    def now() -> float:
        """The loop's clock (CLOCK_MONOTONIC) in seconds."""
        return lib.lk_now_ns() / _NS

    def next_timeout(self) -> float | None:
        """Seconds until the earliest timer is due (0 if due), None if no timer."""
        ns = lib.lk_next_timeout_ns(self._live_ptr())
        return None if ns < 0 else ns / _NS

    # -- timers -------------------------------------------------------------
    def timer(self, seconds: float, callback: Callable | None = None, *args,
              ref: bool = True, priority=None):
        """Run ``callback(*args)`` once, ``seconds`` from now (negative = now);
        return the started :class:`Timer`. ``ref=False``: see Timer.ref.

        gevent's form -- no callback, ``loop.timer(after, repeat=0.0,
        ref=True)`` -- returns a watcher that is not started yet
        (:class:`labkit.core.timer`: ``start(callback, *args)``, ``stop()``).
        The two are told apart by the second argument: a callable, or not.
        """
        if callback is None or not callable(callback):
            from labkit.core import timer
            return timer(self, seconds, callback or 0.0, ref=ref, priority=priority)
        t = self.start_timer(seconds, callback, *args)
        if not ref:
            t.ref = False
        return t

    @property
    def active_timers(self) -> int:
        """How many timers (and started Timeouts) are pending that keep the
        loop alive (ref=True)."""
        return self._timer_table.referenced

    @property
    def pending_timers(self) -> int:
        """How many timers (and started Timeouts) are pending, ref or not."""
        return self._timer_table.pending

    # -- gevent's watcher API (labkit/core.py) --------------------------------
    #: gevent's name: the finest wait the poll honours (epoll/poll take ms)
    approx_timer_resolution = 0.001

    def update_now(self) -> None:
        """gevent's loop.update_now(): labkit reads the clock on every
        :meth:`now`, so there is no cached time to refresh."""

    def io(self, fd: int, events: int, ref: bool = True, priority=None):
        """An io watcher for ``fd`` (events: 1 read, 2 write, 3 both), not
        started: :class:`labkit.core.io`."""
        from labkit.core import io
        return io(self, fd, events, ref=ref, priority=priority)

    def async_(self, ref: bool = True, priority=None):
        """A watcher that another thread may ``send()`` to, waking this
        loop to run its callback: :class:`labkit.core.async_`."""
        from labkit.core import async_
        return async_(self, ref=ref, priority=priority)

    def callback(self, priority=None):
        """A callback watcher: ``start(f, *args)`` runs ``f(*args)`` once,
        soon, from the hub (:class:`labkit.core.callback`)."""
        from labkit.core import callback
        return callback(self, priority=priority)

    def run_callback(self, func: Callable, *args):
        """Run ``func(*args)`` from the hub soon: the hub's run_callback."""
        return self._owning_hub().run_callback(func, *args)

    def run_callback_threadsafe(self, func: Callable, *args):
        """run_callback from any thread (wakes the loop)."""
        return self._owning_hub().run_callback_threadsafe(func, *args)

    def check(self, ref: bool = True, priority=None):
        """A watcher whose callback runs once per loop pass, after the poll
        (:class:`labkit.core.check`)."""
        from labkit.core import check
        return check(self, ref=ref, priority=priority)

    def prepare(self, ref: bool = True, priority=None):
        """A watcher whose callback runs once per loop pass, before the poll
        (:class:`labkit.core.prepare`)."""
        from labkit.core import prepare
        return prepare(self, ref=ref, priority=priority)

    def idle(self, ref: bool = True, priority=None):
        """A watcher whose callback runs when a loop pass had nothing else
        to do (:class:`labkit.core.idle`)."""
        from labkit.core import idle
        return idle(self, ref=ref, priority=priority)

    def signal(self, signum: int, ref: bool = True, priority=None):
        """A watcher firing when ``signum`` arrives (:class:`labkit.core.signal`)."""
        from labkit.core import signal
        return signal(self, signum, ref=ref, priority=priority)

    def fork(self, ref: bool = True, priority=None):
        """A watcher firing in a fork child (:class:`labkit.core.fork`)."""
        from labkit.core import fork
        return fork(self, ref=ref, priority=priority)

    def child(self, pid: int, trace: int = 0, ref: bool = True):
        """A watcher firing when child ``pid`` exits (:class:`labkit.core.child`)."""
        from labkit.core import child
        return child(self, pid, trace, ref=ref)

    def stat(self, path, interval: float = 0.0, ref: bool = True, priority=None):
        """A watcher firing when ``path``'s stat changes (:class:`labkit.core.stat`)."""
        from labkit.core import stat
        return stat(self, path, interval, ref=ref, priority=priority)

    @property
    def default(self) -> bool:
        """gevent's: whether this is the loop of the main thread's hub."""
        hub = self.hub
        return hub is not None and hub.thread_ident == _native._main_ident

    def run(self, nowait: bool = False, once: bool = False) -> None:
        """gevent's loop.run, for code that drives the loop itself: with
        ``nowait`` or ``once`` let the hub run one pass, else run it until
        it has nothing left to do. (The hub owns labkit's loop; this asks it.)
        Call from a greenlet of the hub's thread."""
        hub = self._owning_hub()
        if nowait or once:
            from labkit.hub import sleep
            sleep(0)
        else:
            hub.join()

    def destroy(self) -> None:
        """gevent's name for close()."""
        self.close()

    def closing_fd(self, fd: int) -> bool:
        """``fd`` is about to be closed: stop watching it, and wake what waits
        on it with EBADF; True if something waited (gevent's loop.closing_fd).
        The caller closes the fd, after the waiters ran (a hub pass)."""
        from labkit._park import forget_fd
        return forget_fd(self._owning_hub(), fd, _ignore)

    def _owning_hub(self):
        if self.hub is None:
            raise RuntimeError("no hub runs this loop yet")
        return self.hub

    # -- io -----------------------------------------------------------------
    # io_start, io_cancel, io_waiting, io_forget and poll are the io table's
    # builtins (loop_c/lk_io_py.c). __init__ binds each to the instance, so
    # a call skips these methods' frames; the methods say what they do (and
    # do the same, for a caller that goes through the class).
    def io_start(self, fd: int, event: int, callback: Callable[[int], object]) -> None:
        """Call ``callback(events)`` once, when ``fd`` is ready for ``event``.

        ``event`` is READ or WRITE (else ValueError); ``fd`` an int in
        [0, 2**31 - 1] (else TypeError/ValueError), which the kernel must
        accept (else OSError, and nothing is registered). One callback per
        (fd, direction): a second one raises ConcurrentObjectUseError,
        because two greenlets reading one socket would steal each other's
        data. Wake-ups may be spurious (the fd can be drained by someone
        else first); callers retry their syscall. RuntimeError once the loop
        is closed.

        Interest is added eagerly but removed lazily: the kernel goes on
        watching a direction after its callback was called, on the bet that
        the caller waits again soon (no epoll_ctl per wait); a direction that
        fires with nobody waiting is dropped then.
        """
        return self._io.start(fd, event, callback)

    def io_park(self, hub, fd: int, event: int, waits: dict, in_hub: Callable) -> object:
        """A socket's fd wait in one call, for labkit._park.wait_io only:
        park the current greenlet until ``fd`` is ready for ``event``, with
        no timeout and the interest kept between waits (see io_cancel).

        Registers ``current.switch`` as :meth:`io_start` does (and raises
        as it does), enters ``waits[fd] = current``, and switches to
        ``hub``. Woken by this loop's dispatch: removes ``waits[fd]`` and
        returns the fired bits (an int). Woken any other way: takes the
        wait back (``waits[fd]`` and its own callback, never another's) and
        raises what was thrown in, or returns the value switched in. In
        the hub itself: raises ``in_hub()``, registering nothing. While
        the tracer records, writes the resume record after a switch back
        (:func:`set_io_resumer`).
        """
        return self._io.park(hub, fd, event, waits, in_hub)

    def io_cancel(self, fd: int, event: int, keep_interest: bool = False) -> Callable | None:
        """The wait on (fd, event) is over: forget its callback; return it (or None).

        ``keep_interest`` leaves the kernel watching the fd for the next
        wait (lazy removal, see io_start). Only an owner that calls
        :meth:`io_forget` before it closes the fd may ask for that, as
        labkit's sockets do: epoll drops a closed fd on its own, so a cached
        interest bit would hide the *next* file that gets the same number,
        and a greenlet waiting on it would sleep forever. Everyone else (raw
        ``wait_read`` callers, select, pipes) pays one epoll_ctl per wait.
        """
        return self._io.cancel(fd, event, keep_interest)

    def io_waiting(self, fd: int, event: int) -> bool:
        """True if a callback waits on (fd, event) now (READ or WRITE)."""
        return self._io.waiting(fd, event)

    def io_forget(self, fd: int) -> list[Callable]:
        """The fd is about to be closed: stop watching it now.

        Returns the callbacks that were waiting on it, so the caller can wake
        them with an error. (Closing an fd that epoll still watches would leave
        a stale registration if the fd had been dup'ed.) A poll dispatching
        an event of this fd that was already reported skips them.
        """
        return self._io.forget(fd)

    @property
    def io_waiters(self) -> int:
        """How many io callbacks are registered (readers + writers)."""
        return self._io.waiters

    # -- the one crossing per iteration ------------------------------------
    def poll(self, timeout: float, on_error: Callable[[Callable], None]) -> int:
        """Wait for events, at most ``timeout`` seconds (-1: until one happens),
        then run the callbacks of everything that fired.

        The C loop shortens the wait to the next timer; a wait of 0 keeps
        the GIL (see loop_c/lk_poll_py.c). Returns the number of events
        dispatched. An exception from a callback is passed to
        ``on_error(callback)`` (while ``sys.exc_info()`` describes it) and
        dispatching goes on; if on_error raises, poll raises it. A signal
        ends the wait early (returns 0; Python runs its handler next).
        RuntimeError if the loop is closed, or if a callback of this poll
        calls it again.
        """
        return self._io.poll(timeout, on_error)

    def wake(self) -> None:
        """Make a poll that is waiting return soon. Any thread may call this."""
        # cffi releases the GIL inside lk_wake; the lock keeps close() from
        # freeing the loop while another thread is still in there.
        with self._close_lock:
            ptr = self._ptr
            if ptr is not None:
                lib.lk_wake(ptr)

    def __repr__(self) -> str:
        if self._ptr is None:
            return "<Loop closed>"
        return (f"<Loop backend={self.backend_name} timers={self._timer_table.pending} "
                f"io_waiters={self.io_waiters}>")


def _ignore(_fd) -> None:
    """closing_fd's "then": the caller closes the fd itself."""
