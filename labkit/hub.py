"""The hub: one greenlet per thread that runs the event loop.

Design principles (read these before changing anything here):

- Greenlets never wait for each other directly. A greenlet that must wait
  *parks*: it arranges for something to switch back to it later (a ready
  callback, a timer, an fd becoming ready) and switches to the hub. The hub
  *wakes* it by calling that something. Every way of parking is written
  once, in :mod:`labkit._park` (Waiter, sleep, fd waits, lines, links);
  the hub offers it the small interface below, and nothing else.
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

import functools
import os
import sys
import traceback
from collections import deque
from time import monotonic_ns
from typing import Callable

from greenlet import GreenletExit, getcurrent, greenlet

from labkit import _native
from labkit import config
from labkit._lk_poll_py import Passes as _Passes
from labkit._loop import (READ, WRITE,  # noqa: F401 (re-exported for hub users)
                          ConcurrentObjectUseError, Loop, lib as _lib,
                          spin_seconds_from_environment)

__all__ = [
    "Hub", "Waiter", "LoopExit", "BlockingSwitchOutError",
    "ConcurrentObjectUseError", "get_hub", "sleep", "idle", "spawn_raw",
    "kill", "wait_read", "wait_write", "getcurrent", "GreenletExit",
    "get_hub_if_exists", "get_hub_class", "set_default_hub_class", "set_hub",
]

#: While callbacks keep being ready, poll for I/O at most this often. A poll
#: is a syscall (about 0.3 us on a 2-core VM in 2026); skipping it keeps ``sleep(0)`` ping-pong at the
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

    @property
    def hub(self):
        """The hub that gave up, when the hub raised this (else None)."""
        return self.args[1] if len(self.args) > 1 else None


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


class _Batch(Callback):
    """Hub.run_batch's ready entry: ``callback(item, *args)`` for each item.

    ``args`` holds ``(items, args, on_error)``. Unlike a plain Callback it
    stays pending while it runs, and it looks before each item whether it
    was stopped meanwhile: stop() from inside an item cancels the rest."""

    __slots__ = ()

    def __call__(self) -> None:
        callback = self.callback
        if callback is None or not self.args:
            return   # stopped, or already running (called again from an item)
        items, args, on_error = self.args
        self.args = ()
        try:
            if len(args) == 1:
                # (spelled out: a call with *args enters the callee through
                # C, one more interpreter C frame on the hub's stack per
                # item -- and killall switches into each greenlet from there)
                arg = args[0]
                for item in items:
                    if self.callback is None:
                        return   # stopped by an earlier item
                    try:
                        callback(item, arg)
                    except BaseException:
                        on_error(callback)
                return
            for item in items:
                if self.callback is None:
                    return
                try:
                    callback(item, *args)
                except BaseException:
                    on_error(callback)
        finally:
            self.callback = None


class Hub(greenlet):
    """The event-loop greenlet of one thread. Get it with :func:`get_hub`.

    Its parent is the thread's main greenlet: when the loop has nothing left
    that could ever wake it, the hub throws :class:`LoopExit` there.
    """

    #: exceptions that are reported to the main greenlet rather than printed
    SYSTEM_ERROR = (KeyboardInterrupt, SystemExit, SystemError)
    #: exceptions that end a greenlet without being an error: never printed
    NOT_ERROR = (GreenletExit, SystemExit)

    # Slots, not the instance dict: the interpreter reads a slot without a
    # dictionary lookup, and these are read between every two switches.
    __slots__ = ("loop", "thread_ident", "schedule", "last_poll_ns", "_exception_stream",
                 "ready", "_idle", "_keepalive", "_due_soon", "_next_poll_ns",
                 "_interrupted", "_ticking", "_run_frame", "_ident_registry", "_passes",
                 "_threadpool", "_resolver", "periodic_monitoring_thread")

    def __init__(self, loop: Loop | None = None):
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        super().__init__(parent=root)
        self.loop = loop if loop is not None else _take_kept_loop() or Loop()
        self.loop.hub = self  # gevent's watcher API reaches the hub through it
        if SPIN_SECONDS:  # answer a thread that keeps posting to us promptly
            self.loop.set_wake_spin(SPIN_SECONDS)
        self.thread_ident = _native.get_ident()
        #: callables ready to run, FIFO; other threads may append (a deque
        #: append is atomic under the GIL) and then wake the loop. Outside
        #: the hub: read it freely; queue with schedule/run_callback; remove
        #: only with take_back (Semaphore inlines take_back's newest-entry
        #: case, measured: a call there costs 7% of a contended acquire)
        self.ready: deque = deque()
        #: schedule(fn): queue ``fn()`` to run from the hub, after the
        #: callbacks already ready (FIFO). The hub's thread only. The
        #: cheapest wake-up there is: ``schedule(g.switch)`` -- it *is*
        #: the deque's append, no Python frame, no Callback object; take
        #: it back with :meth:`take_back`. (run_callback returns a
        #: cancellable Callback; run_callback_threadsafe: other threads.)
        self.schedule = self.ready.append
        #: greenlets parked in idle(), released when a pass finds no work
        self._idle: deque = deque()
        #: outstanding reasons to stay alive that the loop cannot see
        #: (thread-pool jobs, cross-thread waits); see keepalive()
        self._keepalive = 0
        #: how many of those are due within microseconds (keepalive(soon=True))
        self._due_soon = 0
        #: monotonic_ns when the last poll began (read-only outside the hub):
        #: skips polls while busy, and is the loop's cheap clock (lock.py) --
        #: at most IO_CHECK_INTERVAL_NS stale while callbacks keep running,
        #: as old as the wait after one
        self.last_poll_ns = monotonic_ns()
        #: when a busy loop polls again (see run); sleep(0) reads it too
        self._next_poll_ns = 0
        self._exception_stream = None  # None: sys.stderr at the time of the error
        self._threadpool = None
        #: the monitor thread (labkit._monitor), once started; see
        #: start_periodic_monitoring_thread and labkit.config.monitor_thread
        self.periodic_monitoring_thread = None
        #: set by the SIGINT handler when Ctrl-C arrives while the hub runs
        self._interrupted = False
        #: set by tick(): run one non-blocking pass, then switch back
        self._ticking = False
        #: run()'s own frame, once it runs: the hub is suspended "between
        #: callbacks" exactly when its current frame is this one
        self._run_frame = None
        #: phase 1 of run() and sleep(0)'s direct hand-off, in C: where the
        #: current pass stands (loop_c/lk_poll_py.c, Passes)
        self._passes = _Passes(self.ready, self._handle_dispatch_error, self, _TR_PASS)
        if _native.is_main_thread():
            _install_sigint_handler()

    # -- gevent's identities --------------------------------------------------
    @property
    def ident_registry(self):
        """Numbers this hub's greenlets (their ``minimal_ident``)."""
        registry = getattr(self, "_ident_registry", None)
        if registry is None:
            from labkit._ident import IdentRegistry
            registry = self._ident_registry = IdentRegistry()
        return registry

    @property
    def minimal_ident(self) -> int:
        """A small non-negative integer unique among live hubs."""
        return _hub_idents.get_ident(self)

    @property
    def name(self) -> str:
        return f"Hub-{self.minimal_ident}"

    @property
    def threadpool(self):
        """This hub's default thread pool (labkit.threadpool.ThreadPool of
        ``labkit.config.threadpool_size`` threads), made on first use:
        gevent's ``hub.threadpool``, used by FileObjectThread and os.tp_read."""
        pool = getattr(self, "_threadpool", None)
        if pool is None:
            from labkit.threadpool import ThreadPool
            pool = self._threadpool = ThreadPool(config.threadpool_size, hub=self)
        return pool

    @threadpool.setter
    def threadpool(self, pool) -> None:
        self._threadpool = pool

    @threadpool.deleter
    def threadpool(self) -> None:
        self._threadpool = None

    @property
    def resolver(self):
        """The name resolver ``labkit.config.resolver`` names (labkit.resolver),
        made on first use; assign another to replace it."""
        resolver = getattr(self, "_resolver", None)
        if resolver is None:
            from labkit.resolver import Resolver
            resolver = self._resolver = Resolver(self)
        return resolver

    @resolver.setter
    def resolver(self, resolver) -> None:
        self._resolver = resolver

    @resolver.deleter
    def resolver(self) -> None:
        self._resolver = None

    @property
    def exception_stream(self):
        """Where errors are printed: a file, or None for sys.stderr at the
        time of the error (deleting it means None again)."""
        return self._exception_stream

    @exception_stream.setter
    def exception_stream(self, stream) -> None:
        self._exception_stream = stream

    @exception_stream.deleter
    def exception_stream(self) -> None:
        self._exception_stream = None

    def start_periodic_monitoring_thread(self):
        """Start this hub's monitor thread (labkit._monitor: blocked-loop and
        memory reports) if it does not run yet, and return it. Call in the
        hub's thread. A hub starts it itself when it first runs if
        ``labkit.config.monitor_thread`` is true."""
        monitor = self.periodic_monitoring_thread
        if monitor is None or not monitor.should_run:
            from labkit._monitor import PeriodicMonitoringThread
            monitor = self.periodic_monitoring_thread = PeriodicMonitoringThread(self)
        return monitor

    # -- scheduling ---------------------------------------------------------
    def run_callback(self, callback: Callable, *args) -> Callback:
        """Run ``callback(*args)`` from the hub soon, after those already ready.

        Call from this hub's thread only (other threads: run_callback_threadsafe).
        """
        cb = Callback(callback, args)
        self.ready.append(cb)
        return cb

    def run_callback_threadsafe(self, callback: Callable, *args) -> Callback:
        """Like run_callback, callable from any thread: wakes the loop if it sleeps."""
        cb = Callback(callback, args)
        self.ready.append(cb)
        if _native.get_ident() != self.thread_ident:
            self.loop.wake()
        return cb

    def run_batch(self, callback: Callable, items: list, *args) -> Callback:
        """Run ``callback(item, *args)`` for each of ``items``, in order,
        from the hub soon (as run_callback): what one run_callback per item
        would do, in one ready entry -- without a Callback, a bound method
        and an args tuple per item (killall of a million greenlets). A
        failure is reported as a failed callback's is, and the rest still
        run. The hub's thread only.

        The Callback returned cancels the items not run yet when stopped:
        before the batch starts, all of them; from inside one of its items
        (or from a greenlet an item switched to), the items after that
        one. It is ``pending`` until its last item ran or it was stopped.
        ``items`` is read as the batch runs: do not change it after."""
        cb = _Batch(callback, (items, args, self._handle_dispatch_error))
        self.ready.append(cb)
        return cb

    def take_back(self, callback: Callable) -> bool:
        """A greenlet that stopped waiting takes back the wake-up it queued
        with :meth:`schedule`, so that it cannot fire into a later wait.
        True if ``callback`` was still queued. The hub's thread only.

        The newest entry (a greenlet that barged past the line it just
        scheduled, Semaphore) is popped; any other is overwritten with a
        no-op, because the hub may be in the middle of a pass that counted
        the queue when it began. (So a pass may find the queue shorter than
        it counted: see run.)"""
        ready = self.ready
        if ready and ready[-1] is callback:
            last = ready.pop()
            if last is callback:
                return True
            ready.append(last)  # another thread appended in between
        try:
            ready[ready.index(callback)] = _noop
        except ValueError:
            return False
        return True

    # -- for observers (the tracer, %labkit_status): read-only -------------
    def ready_callbacks(self) -> list:
        """A copy of the callbacks queued now, oldest first."""
        return list(self.ready)

    @property
    def ready_count(self) -> int:
        """How many callbacks are queued now."""
        return len(self.ready)

    def owns_frame(self, frame) -> bool:
        """True if ``frame`` is the hub loop's own (:meth:`run`'s) frame: a
        stack whose outermost frame it is belongs to the hub greenlet, and a
        suspended hub whose *current* frame it is sits between callbacks,
        with nothing half-done."""
        return frame is not None and frame is self._run_frame

    def interrupt_main(self) -> None:
        """Deliver KeyboardInterrupt to the main greenlet at the hub's next
        safe point, and wake the loop if it sleeps. Any greenlet of the hub's
        thread, or a signal handler; the hub and other greenlets survive."""
        self._interrupted = True
        self.loop.wake()

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

        Phase 1 is C (``self._passes.run``: it runs between every two
        greenlet switches, and sleep(0) hands off from greenlet to greenlet
        within its pass, which needs the pass's state where C can read it);
        phases 2-5 are in :meth:`poll_for_events`. :meth:`tick` makes it
        stop after one pass.
        """
        self._run_frame = sys._getframe()
        from labkit import config
        if config.monitor_thread and self.periodic_monitoring_thread is None:
            self.start_periodic_monitoring_thread()
        ready = self.ready
        passes = self._passes
        run_ready = passes.run
        next_poll_ns = 0
        while True:
            try:
                while True:
                    # Phase 1: run the callbacks that are ready now, and only
                    # those (each guarded: _handle_dispatch_error reports).
                    run_ready(_trace, self._ticking)
                    # Phases 2-5, unless busy and the last poll was recent.
                    if not ready or monotonic_ns() >= next_poll_ns:
                        if not self.poll_for_events(block=not self._ticking):
                            break
                        next_poll_ns = self._next_poll_ns = passes.next_poll_ns = \
                            self.last_poll_ns + IO_CHECK_INTERVAL_NS
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
        if self.ready:
            return 0.0
        return self.loop.next_timeout()

    def poll_for_events(self, block: bool) -> bool:
        """Phases 2-5 of a pass: decide the timeout, poll, dispatch, idle."""
        if self._interrupted:
            self._deliver_interrupt()
            # We were suspended in there; whoever switched back to us may be
            # a host loop's tick(), which must not wait in the kernel.
            block = block and not self._ticking
        ready = self.ready
        loop = self.loop
        # gevent's per-pass watchers (labkit/core.py): prepare, check, idle.
        # Usually none, and then one attribute read is all they cost here.
        watchers = loop.pass_watchers
        if watchers and loop.prepares:
            self._run_watchers(loop.prepares)
        # Phase 2: how long may the poll wait?
        if ready or self._idle or not block or (watchers and loop.idles):
            timeout = 0
        else:
            # Phase 3: would we wait for something that can never come?
            if not loop.active_timers and not loop.io_waiters and not self._keepalive:
                return False
            timeout = -1
        # Phase 4: poll and dispatch.
        self.last_poll_ns = monotonic_ns()
        fired = loop.poll(timeout, self._handle_dispatch_error)
        if self._interrupted:
            self._deliver_interrupt()
        if watchers and loop.checks:
            self._run_watchers(loop.checks)
        # Phase 5: idle greenlets run when a pass had nothing else to do.
        if not fired and not ready:
            if self._idle:
                ready.extend(self._idle)
                self._idle.clear()
            if watchers and loop.idles:
                self._run_watchers(loop.idles)
        return True

    def _run_watchers(self, watchers: list) -> None:
        for watcher in list(watchers):  # a callback may stop (remove) one
            try:
                watcher()
            except BaseException:
                self._handle_dispatch_error(watcher)

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
        try:
            self.handle_error(callback, exc_type, exc, tb)
        except GreenletExit:
            if getcurrent() is self:
                raise
        except BaseException:
            # A handle_error replaced by the user (gevent allows assigning
            # hub.handle_error) that raises must not end the loop: say so.
            try:
                traceback.print_exc()
            except Exception:
                pass

    def handle_error(self, context, exc_type, exc, tb) -> None:
        """Report an exception that escaped a greenlet or callback.

        KeyboardInterrupt, SystemExit and SystemError are re-raised in the main
        greenlet (so Ctrl-C works); anything else is printed with its
        traceback and the loop goes on.
        """
        if issubclass(exc_type, self.SYSTEM_ERROR):
            self.handle_system_error(exc_type, exc, tb)
        elif not issubclass(exc_type, self.NOT_ERROR):
            self.print_exception(context, exc_type, exc, tb)

    def handle_system_error(self, exc_type, exc: BaseException | None = None,
                            tb=None) -> None:
        """Raise a system error in the main greenlet: now if called from the
        hub or the main greenlet, else from the hub's next pass. gevent's
        signature ``(type, value, tb)``; ``handle_system_error(exc)`` too."""
        if exc is None:
            exc = exc_type if isinstance(exc_type, BaseException) else exc_type()
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
        """Park the current greenlet until ``fd`` is ready for ``event``:
        :func:`labkit._park.wait_io` on this hub (see there)."""
        return _park.wait_io(self, fd, event, timeout, timeout_exc, keep_interest)

    def join(self, timeout: float | None = None) -> bool:
        """Run the loop until it has nothing left to do (True) or ``timeout``
        passes (False). Call from the main greenlet."""
        if getcurrent() is self:
            raise BlockingSwitchOutError("cannot join the hub from inside the hub")
        timer = None
        if timeout is not None:
            # Unreferenced: the deadline alone must not keep the loop running.
            timer = self.loop.timer(timeout, getcurrent().switch, ref=False)
        try:
            self.switch()
        except LoopExit:
            return True
        finally:
            if timer is not None:
                timer.cancel()
        return False

    def wait(self, watcher) -> None:
        """Park the current greenlet until ``watcher`` (a labkit.core
        watcher: ``loop.timer(1)``, ``loop.io(fd, 1)``) fires once; then stop
        it. gevent's ``hub.wait``; anything else that wakes the greenlet
        raises InvalidSwitchError."""
        waiter = Waiter(self, "watcher")
        watcher.start(waiter.switch, waiter)
        try:
            result = waiter.get()
            if result is not waiter:
                from labkit.exceptions import InvalidSwitchError
                raise InvalidSwitchError(
                    f"Invalid switch into {getcurrent()!r}: got {result!r} "
                    f"(expected {waiter!r}; waiting on {self!r} with {watcher!r})")
        finally:
            watcher.stop()

    def cancel_wait(self, watcher, error, close_watcher: bool = False) -> None:
        """Wake the greenlet parked in :meth:`wait` on ``watcher`` with
        ``error`` raised, from the hub's next pass; with ``close_watcher``
        close the watcher too."""
        if watcher.callback is not None:
            self.run_callback(self._cancel_wait, watcher, error, close_watcher)
        elif close_watcher:
            watcher.close()

    def _cancel_wait(self, watcher, error, close_watcher: bool) -> None:
        active = watcher.active
        callback = watcher.callback
        if close_watcher:
            watcher.close()
        if active and callback is not None:
            glet = getattr(callback, "__self__", None)
            if glet is not None:  # a Waiter's switch: throw into its greenlet
                glet.throw(error)

    def destroy(self, destroy_loop: bool | None = None) -> None:
        """Forget this hub; the next get_hub() makes a new one. Its loop is
        closed unless ``destroy_loop`` is False: then the next hub of this
        thread takes it over, pending timers and watchers included (gevent's
        ``destroy(destroy_loop=False)`` keeps the default loop). Call from
        outside the hub, in its thread."""
        if getattr(_local, "hub", None) is self:
            del _local.hub
        if destroy_loop is False and not self.loop.closed:
            self.loop.hub = None
            _local.kept_loop = self.loop
        else:
            self.loop.close()

    def __repr__(self) -> str:
        return (f"<Hub thread={self.thread_ident} ready={len(self.ready)} "
                f"{self.loop!r}>")


# -- one hub per thread ------------------------------------------------------

# The OS thread's own local (labkit._native): under green patching
# threading.local is per greenlet, and every greenlet shares its thread's hub.
_local = _native.local()


#: the class get_hub() instantiates (set_default_hub_class changes it)
_hub_class = Hub


class _LazyIdents:
    """The registry numbering hubs, made on first use."""
    registry = None

    def get_ident(self, hub) -> int:
        if self.registry is None:
            from labkit._ident import IdentRegistry
            self.registry = IdentRegistry()
        return self.registry.get_ident(hub)


_hub_idents = _LazyIdents()


def get_hub() -> Hub:
    """This thread's hub, created on first use."""
    try:
        return _local.hub
    except AttributeError:
        hub = _local.hub = _hub_class()
        return hub


#: This thread's hub or None: ``getattr(_local, "hub", None)`` as a partial of
#: the builtin, so that calling it runs no Python frame -- sockets ask it
#: once per message (labkit/socket.py).
_get_hub_if_any = functools.partial(getattr, _local, "hub", None)


def get_hub_if_exists() -> Hub | None:
    """This thread's hub if it has one; never creates one."""
    return getattr(_local, "hub", None)


#: gevent's private spelling, which some gevent tests import
_get_hub = get_hub_if_exists


def get_hub_class() -> type:
    """The class get_hub() instantiates for a thread without a hub."""
    return _hub_class


def set_default_hub_class(hubtype: type) -> None:
    """Make get_hub() create ``hubtype`` (a Hub subclass) from now on;
    hubs that exist already stay as they are."""
    global _hub_class
    if not (isinstance(hubtype, type) and issubclass(hubtype, Hub)):
        raise TypeError(f"hubtype must be a subclass of Hub, not {hubtype!r}")
    _hub_class = hubtype


def set_hub(hub: Hub) -> None:
    """Make ``hub`` this thread's hub (gevent's set_hub)."""
    _local.hub = hub


def _take_kept_loop():
    # A loop that Hub.destroy(destroy_loop=False) left to this thread's next hub.
    loop = getattr(_local, "kept_loop", None)
    if loop is not None:
        del _local.kept_loop
    return loop


def hub_for_this_thread() -> Hub | None:
    """The hub that may park the caller, or None if the caller must block.

    The main thread always gets a hub (created on first use). Any other
    thread uses its own hub if it made one, and otherwise behaves like plain
    Python: a library's worker thread must not grow a hub behind its back.
    This is how cooperative I/O and monkey-patched functions decide.
    """
    hub = getattr(_local, "hub", None)
    if hub is None and _native.is_main_thread():
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
        hub.interrupt_main()
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
        hub.thread_ident = _native.get_ident()


os.register_at_fork(after_in_child=_reinit_after_fork)


# -- spawning and killing -----------------------------------------------------

def _noop() -> None:
    pass


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
        hub.schedule(g.switch)
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


# The ways to park, and gevent's names for them in this module (labkit.hub.sleep,
# labkit.hub.Waiter ...). Imported last: labkit._park builds on the Hub above.
from labkit import _park  # noqa: E402
from labkit._park import Waiter, idle, sleep, wait_read, wait_write  # noqa: E402,F401
