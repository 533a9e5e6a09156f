"""Run blocking calls in real OS threads without stalling the hub (gevent.threadpool).

    pool = ThreadPool(4)
    digest = pool.apply(hashlib.sha256, (big_bytes,)).hexdigest()  # parks this greenlet only
    result = pool.spawn(requests_get, url)   # an AsyncResult; result.get() parks
    pages = pool.map(blocking_fetch, urls)

    with ThreadPoolExecutor(4) as ex:        # a concurrent.futures.Executor
        fut = ex.submit(time.sleep, 1)
        fut.result()                         # parks the greenlet, not the thread

How a job travels::

    greenlet (hub thread)            worker thread                hub
    spawn(fn) --job--> SimpleQueue --> fn() runs, GIL released
                                       while it blocks
                                     run_callback_threadsafe ---> eventfd wakes poll
                                                                  job.deliver():
                                                                  keepalive(-1), wake waiter

The contract:

- A pool belongs to the hub of the thread that created it. ``spawn``,
  ``apply``, ``map``... must be called from that thread; another thread gets
  ``RuntimeError`` (its greenlets could not be woken by our hub). The one
  exception, as in gevent: ``apply`` called from inside one of our worker
  threads runs the function right there (a nested ``apply`` would otherwise
  wait for a worker that is itself).
- Results come back through the hub's thread-safe callback path (the loop's
  eventfd wake-up), never by polling. Each submitted job counts as a
  ``hub.keepalive(+1, soon=True)`` until its result is delivered, so a
  greenlet waiting only for a thread job does not get LoopExit, and the hub
  spins briefly for the reply instead of letting its CPU fall asleep.
- ``maxsize`` bounds the threads. Threads start lazily, when a job arrives and
  every thread is busy; ``spawn`` parks while ``maxsize`` jobs are unfinished
  (gevent's back-pressure). Worker threads are daemon threads; ``kill()``
  lets each one finish its current job and exit.
- A job's exception is delivered to whoever waits for its result, traceback
  included; it is not printed.
- :class:`ThreadPoolExecutor` futures are real ``concurrent.futures.Future``
  objects, completed by the worker thread itself, so
  ``concurrent.futures.wait``/``as_completed`` and ``result()`` from any
  thread work; from a greenlet, ``result()``/``exception()`` park only that
  greenlet, and ``labkit.wait``/``iwait`` accept the futures.
"""
from __future__ import annotations

import concurrent.futures as _cf
import itertools
import os
import sys
import threading
import weakref
from contextvars import copy_context
from typing import Callable, Iterable

from greenlet import getcurrent

from labkit import _native
from labkit._imap import IMap, IMapUnordered
from labkit.lock import FifoSemaphore
from labkit.event import AsyncResult
from labkit.greenlet import Greenlet
from labkit._lines import Links
from labkit._park import Waiter, check_seconds
from labkit.hub import _get_hub_if_any, get_hub

__all__ = ["ThreadPool", "ThreadPoolExecutor"]

#: the ThreadPool whose worker is running in this thread (for nested apply)
_worker_local = _native.local()


# -- jobs ----------------------------------------------------------------------

class _Job:
    """One call to run in a worker thread, and where its outcome goes.

    ``run`` executes in the worker thread and posts ``deliver`` to the hub;
    ``deliver`` runs in the hub. Subclasses decide what delivering means.
    """

    __slots__ = ("pool", "func", "args", "kwargs", "value", "exc_info", "context")

    def __init__(self, pool: "ThreadPool", func: Callable, args: tuple, kwargs: dict):
        self.pool = pool
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.value = None
        self.exc_info = None
        # The job runs in a copy of the submitter's contextvars, as a spawned
        # greenlet does (and asyncio.to_thread): OpenTelemetry's current span,
        # a notebook cell's output, follow the work into the thread.
        self.context = copy_context()

    def run(self) -> None:  # in a worker thread
        try:
            self.value = self.context.run(self.func, *self.args, **self.kwargs)
        except BaseException:
            self.exc_info = sys.exc_info()
        self.func = self.args = self.kwargs = self.context = None
        self.pool.hub.run_callback_threadsafe(self.deliver)

    def deliver(self) -> None:  # in the hub
        pool = self.pool
        pool._job_done()
        self.deliver_outcome()
        if pool._unfinished == 0 and pool._join_waiters:
            pool._wake_joiners()

    def deliver_outcome(self) -> None:
        raise NotImplementedError


class _ResultJob(_Job):
    """Delivers into an AsyncResult (what ``spawn`` returns)."""

    __slots__ = ("result",)

    def __init__(self, pool, func, args, kwargs, result: AsyncResult):
        _Job.__init__(self, pool, func, args, kwargs)
        self.result = result

    def deliver_outcome(self) -> None:
        if self.exc_info is None:
            self.result.set(self.value)
        else:
            self.result.set_exception(self.exc_info[1], self.exc_info)
        self.pool._slots.release()


class _WaiterJob(_Job):
    """Delivers straight into the Waiter of the greenlet parked in ``apply``:
    the cheapest round trip, one hub callback and one switch."""

    __slots__ = ("waiter",)

    def __init__(self, pool, func, args, kwargs, waiter: Waiter):
        _Job.__init__(self, pool, func, args, kwargs)
        self.waiter = waiter

    def deliver_outcome(self) -> None:
        self.pool._slots.release()
        self.waiter.switch(self)


class _FutureJob(_Job):
    """Completes a Future in the worker thread (so that threads blocked in
    concurrent.futures.wait see it at once); the hub only balances keepalive."""

    __slots__ = ("future",)

    def __init__(self, pool, func, args, kwargs, future: "_Future"):
        _Job.__init__(self, pool, func, args, kwargs)
        self.future = future

    def run(self) -> None:  # in a worker thread
        future = self.future
        if future.set_running_or_notify_cancel():
            try:
                result = self.context.run(self.func, *self.args, **self.kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        self.func = self.args = self.kwargs = self.future = self.context = None
        self.pool.hub.run_callback_threadsafe(self.deliver)

    def deliver_outcome(self) -> None:
        pass


# -- worker threads ------------------------------------------------------------

_STOP = None  # the job that tells one worker thread to exit


def _worker(pool_ref, jobs: _native.SimpleQueue) -> None:
    """Body of a worker thread: run jobs until told to stop.

    It holds only a weak reference to its pool, so that a forgotten pool can
    be collected (and then its finalizer stops the threads).
    """
    _worker_local.pool_ref = pool_ref
    get = jobs.get
    while True:
        job = get()  # blocks with the GIL released
        if job is _STOP:
            return
        job.run()
        job = None  # do not keep the last job's objects alive while idle


def _stop_threads(jobs: _native.SimpleQueue, threads: list) -> None:
    for _ in threads:
        jobs.put(_STOP)
    threads.clear()


#: every ThreadPool alive, so a fork child can reset them (see below)
_live_pools: "weakref.WeakSet[ThreadPool]" = weakref.WeakSet()


def _reset_pools_after_fork() -> None:
    for pool in list(_live_pools):
        pool._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_pools_after_fork)


class ThreadPool:
    """At most ``maxsize`` OS threads running blocking calls for the greenlets
    of one hub (by default the current thread's)."""

    def __init__(self, maxsize: int, hub=None, thread_name_prefix: str = "labkit-threadpool"):
        if not isinstance(thread_name_prefix, str):
            raise TypeError(f"thread_name_prefix must be a str, not "
                            f"{type(thread_name_prefix).__name__}")
        self.hub = hub if hub is not None else get_hub()
        #: worker threads are named PREFIX-0, PREFIX-1 ...
        self.thread_name_prefix = thread_name_prefix
        #: jobs waiting for a thread; thread-safe, C implemented
        self._jobs: _native.SimpleQueue = _native.SimpleQueue()
        #: live worker threads
        self._threads: list = []
        #: jobs submitted and not yet delivered (hub thread only)
        self._unfinished = 0
        #: greenlets parked in join()
        self._join_waiters: list = []
        self._maxsize = 0
        self._slots = FifoSemaphore(0)
        self.maxsize = maxsize
        # A pool that is garbage collected stops its threads.
        self._finalizer = weakref.finalize(self, _stop_threads, self._jobs, self._threads)
        _live_pools.add(self)

    def _after_fork_in_child(self) -> None:
        """The child has none of the parent's worker threads: start afresh.

        Jobs in flight belonged to the parent; their results will never come
        here, so they stop counting (and stop keeping the hub alive).
        """
        if self._unfinished:
            self.hub.keepalive(-self._unfinished, soon=True)
        self._jobs = _native.SimpleQueue()
        self._threads = []
        self._unfinished = 0
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_threads, self._jobs, self._threads)

    # -- size ---------------------------------------------------------------
    @property
    def maxsize(self) -> int:
        """The most threads this pool runs (and unfinished jobs before spawn parks)."""
        return self._maxsize

    @maxsize.setter
    def maxsize(self, maxsize: int) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must not be negative: {maxsize!r}")
        grow = maxsize - self._maxsize
        self._maxsize = maxsize
        if grow > 0:
            for _ in range(grow):
                self._slots.release()  # hands the new slots to parked spawners
        else:
            self._slots.counter += grow  # a debt the next releases pay off
        while len(self._threads) > maxsize:
            self._threads.pop()
            self._jobs.put(_STOP)

    @property
    def size(self) -> int:
        """How many worker threads are running now."""
        return len(self._threads)

    @size.setter
    def size(self, size: int) -> None:
        """Start or stop worker threads until ``size`` run (0..maxsize);
        the pool still starts more on demand, up to maxsize. A thread asked
        to stop finishes the job it runs first."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, not {type(size).__name__}")
        if not 0 <= size <= self._maxsize:
            raise ValueError(f"size must be between 0 and maxsize ({self._maxsize}), "
                             f"not {size!r}")
        while len(self._threads) < size:
            self._start_thread()
        while len(self._threads) > size:
            self._threads.pop()
            self._jobs.put(_STOP)

    def __len__(self) -> int:
        """Unfinished jobs (gevent's meaning)."""
        return self._unfinished

    def __repr__(self) -> str:
        return (f"<ThreadPool at {id(self):#x} jobs={self._unfinished} "
                f"size={self.size} maxsize={self._maxsize}>")

    # -- submitting -----------------------------------------------------------
    def _check_thread(self) -> None:
        if _native.get_ident() != self.hub.thread_ident:
            from labkit.exceptions import InvalidThreadUseError   # a RuntimeError
            raise InvalidThreadUseError(
                f"{self!r} belongs to the hub of thread {self.hub.thread_ident}; "
                "submit jobs from that thread (create a ThreadPool per thread)")

    def _submit(self, job: _Job) -> None:
        """Queue ``job``; start a thread if every thread is busy (hub thread only)."""
        self._unfinished += 1
        self.hub.keepalive(1, soon=True)  # the hub spins for the reply, see there
        if self._unfinished > len(self._threads) < self._maxsize:
            self._start_thread()
        self._jobs.put(job)

    def _start_thread(self) -> None:
        # A real OS thread even under green patching (labkit._native).
        thread = _native.start_thread(_worker, (weakref.ref(self), self._jobs),
                                      f"{self.thread_name_prefix}-{len(self._threads)}")
        self._threads.append(thread)

    def _job_done(self) -> None:  # in the hub, once per delivered job
        self.hub.keepalive(-1, soon=True)
        self._unfinished -= 1

    def _wake_joiners(self) -> None:  # in the hub
        waiters, self._join_waiters = self._join_waiters, []
        for waiter in waiters:
            waiter.switch(True)

    def spawn(self, func: Callable, *args, **kwargs) -> AsyncResult:
        """Run ``func(*args, **kwargs)`` in a worker thread; return an
        AsyncResult whose ``get()`` parks until the outcome arrives.
        Parks first while ``maxsize`` jobs are unfinished."""
        self._check_thread()
        self._slots.acquire()
        result = AsyncResult()
        self._submit(_ResultJob(self, func, args, kwargs, result))
        return result

    def apply(self, func: Callable, args=(), kwds=None):
        """Call ``func(*args, **kwds)`` in a worker thread and return its result
        (or raise its exception), parking only the calling greenlet."""
        args = () if args is None else args
        kwds = {} if kwds is None else kwds
        if getattr(_worker_local, "pool_ref", None) is not None and \
                _worker_local.pool_ref() is self:
            return func(*args, **kwds)  # nested apply from our own worker
        self._check_thread()
        self._slots.acquire()
        waiter = Waiter(self.hub)
        job = _WaiterJob(self, func, args, kwds, waiter)
        self._submit(job)
        waiter.get()
        if job.exc_info is not None:
            exc = job.exc_info[1]
            job.exc_info = None  # no cycle through the traceback
            raise exc
        return job.value

    def apply_cb(self, func: Callable, args=(), kwds=None, callback=None):
        """apply(), then ``callback(result)`` in this greenlet."""
        result = self.apply(func, args, kwds)
        if callback is not None:
            callback(result)
        return result

    def apply_async(self, func: Callable, args=(), kwds=None, callback=None) -> Greenlet:
        """A new greenlet running apply_cb(); returns at once."""
        return Greenlet.spawn(self.apply_cb, func, args, kwds, callback)

    def map(self, func: Callable, iterable: Iterable) -> list:
        """``[func(x) for x in iterable]``, computed in the worker threads."""
        results = [self.spawn(func, item) for item in iterable]
        return [result.get() for result in results]

    def map_async(self, func: Callable, iterable: Iterable, callback=None) -> Greenlet:
        def map_cb():
            result = self.map(func, iterable)
            if callback is not None:
                callback(result)
            return result
        return Greenlet.spawn(map_cb)

    def imap(self, func: Callable, *iterables, maxsize: int | None = None):
        """Like map, lazily, in input order."""
        self._check_thread()
        return IMap.spawn(func, zip(*iterables), self.spawn, maxsize)

    def imap_unordered(self, func: Callable, *iterables, maxsize: int | None = None):
        """Like imap, each result as soon as it is ready."""
        self._check_thread()
        return IMapUnordered.spawn(func, zip(*iterables), self.spawn, maxsize)

    # -- waiting and stopping -------------------------------------------------
    def join(self, timeout: float | None = None) -> bool:
        """Park until every submitted job is delivered; False on timeout."""
        if self._unfinished == 0:
            return True
        hub = self.hub
        waiter = Waiter(hub)
        self._join_waiters.append(waiter)
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(check_seconds(timeout, "timeout"), waiter.switch, False)
        try:
            return waiter.get()
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._join_waiters:
                self._join_waiters.remove(waiter)

    def kill(self) -> None:
        """Stop the threads: they run the jobs already queued, then exit.
        Does not wait. The pool stays usable: a later job starts new threads."""
        _stop_threads(self._jobs, self._threads)

    close = kill


# -- concurrent.futures --------------------------------------------------------

class _Future(_cf.Future):
    """A concurrent.futures.Future that a greenlet can wait for cooperatively.

    The worker thread completes it (``set_result``), which also runs its
    done callbacks in that thread; the callbacks added here post the wake-up
    to the waiting greenlet's hub.
    """

    def result(self, timeout: float | None = None):
        if self._wait_cooperatively(timeout):
            timeout = 0  # done: Future.result returns (or raises) at once
        return _cf.Future.result(self, timeout)

    def exception(self, timeout: float | None = None):
        if self._wait_cooperatively(timeout):
            timeout = 0
        return _cf.Future.exception(self, timeout)

    def _wait_cooperatively(self, timeout: float | None) -> bool:
        """In a greenlet: park it until done (True) or ``timeout`` passed
        (raise TimeoutError). Elsewhere (a thread without a hub, the hub
        itself) return False at once: Future's own blocking wait is right."""
        if self.done():
            return True
        hub = _get_hub_if_any()
        if hub is None or getcurrent() is hub:
            return False
        waiter = Waiter(hub)
        switch = waiter.switch
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(check_seconds(timeout, "timeout"), switch, None)
        # rawlink posts the wake-up through the hub (the future completes in
        # a worker thread), and unlink disarms it if we stop waiting first:
        # a result(timeout=...) polled in a loop leaves no live wake-ups.
        self.rawlink(switch)
        hub.keepalive(1)  # only another thread can end this wait
        try:
            waiter.get()
        finally:
            hub.keepalive(-1)
            if timer is not None:
                timer.cancel()
            self.unlink(switch)
        if not self.done():
            raise _cf.TimeoutError()
        return True

    # -- the rawlink protocol: labkit.wait / iwait / joinall ----------------
    def ready(self) -> bool:
        return self.done()

    def successful(self) -> bool:
        return self.done() and not self.cancelled() and self._exception is None

    def rawlink(self, callback: Callable) -> None:
        """Call ``callback(self)`` in the current thread's hub once done
        (Linkable's mechanism: labkit._lines.Links, fired by a done
        callback in whatever thread completes the future)."""
        links = self.__dict__.get("_labkit_links")
        if links is None:
            with self._condition:
                links = self.__dict__.get("_labkit_links")
                made = links is None
                if made:
                    links = self._labkit_links = Links()
            if made:
                self.add_done_callback(links.fire)
        links.add(callback, self)

    def unlink(self, callback: Callable) -> None:
        links = self.__dict__.get("_labkit_links")
        if links is not None:
            links.unlink(callback)


_executor_numbers = itertools.count()


class ThreadPoolExecutor(_cf.Executor):
    """A concurrent.futures.Executor on a :class:`ThreadPool`.

    ``submit`` never parks (jobs queue up behind ``max_workers`` threads) and,
    like the pool, must be called from the thread that created the executor.
    ``shutdown(wait=True)`` called from a greenlet parks it, not the thread.
    """

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = ""):
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        # Worker threads are named PREFIX-0, PREFIX-1 ... (without a prefix,
        # ThreadPoolExecutor-N-0, after concurrent.futures' ThreadPoolExecutor-N_0).
        self._pool = ThreadPool(max_workers, thread_name_prefix=(
            thread_name_prefix or f"ThreadPoolExecutor-{next(_executor_numbers)}"))
        self._shutdown = False
        #: futures not yet done, for shutdown(cancel_futures=True)
        self._pending = weakref.WeakSet()

    def submit(self, fn: Callable, /, *args, **kwargs) -> _cf.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        self._pool._check_thread()
        future = _Future()
        self._pending.add(future)
        self._pool._submit(_FutureJob(self._pool, fn, args, kwargs, future))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more jobs; the threads exit once the queued jobs ran.
        With ``wait``, return after that (a greenlet parks, a thread blocks).
        ``cancel_futures`` cancels the jobs no thread has started yet."""
        self._shutdown = True
        pool = self._pool
        if cancel_futures:
            for future in list(self._pending):
                future.cancel()  # a no-op for running ones; the worker skips the rest
        threads = list(pool._threads)
        pool.kill()
        if not wait:
            return
        if _native.get_ident() == pool.hub.thread_ident and getcurrent() is not pool.hub:
            pool.join()
        else:
            for thread in threads:
                thread.join()

    kill = shutdown
