"""Micro benchmarks: what one switch, spawn, timer or wake-up costs.

Each benchmark is written once per implementation, so that labkit is measured
with exactly the code a gevent user would write (``s/gevent/labkit/``) and
asyncio/uvloop with the idiomatic asyncio equivalent. The registry
``BENCHMARKS`` maps a benchmark name to a ``Benchmark`` record; ``_worker.py``
looks a benchmark up there and runs one implementation of it in a process of
its own.

The contract of an implementation function is ``fn(n) -> seconds``: do the
operation ``n`` times (or ``n`` rounds of ``ops_per_n`` operations each) and
return the seconds spent in the measured part only. The function times itself
because setup (creating an asyncio loop, starting a thread) must not be
counted, and only the function knows where setup ends.

Rules for these functions:

- import the implementation's package inside the function, never at module
  level: this module is imported by the benchmark driver, which must not load
  gevent, asyncio loops or labkit's hub into its own process;
- keep the gevent and labkit versions textually identical: they share one
  helper that receives the module (``gevent`` or ``labkit``) as ``gk``.

To add a suite (queues, TCP echo, HTTP ...), write its functions in a new
module and call ``register(Benchmark(...))`` for each; ``_worker.py`` imports
the suite modules listed in ``SUITES``.
"""

import asyncio
import os
import threading
from dataclasses import dataclass, field
from time import perf_counter, process_time
from typing import Callable, Dict

# Implementation names, in the order the table shows them. "greenlet" is the
# bare greenlet package: the floor under both labkit and gevent.
LABKIT = "labkit"
PEERS = ("gevent", "asyncio", "uvloop", "rloop")
GREENLET = "greenlet"

# Modules that register benchmarks; the worker imports them all.
SUITES = ("labkit.bench.micro", "labkit.bench.pools", "labkit.bench.tracing",
          "labkit.bench.sync", "labkit.bench.threads")


def load_suites():
    """Import every suite module, so that BENCHMARKS holds all benchmarks.

    Both the driver (to validate --only and order the table) and the worker
    call this; suite modules import their implementations lazily, so loading
    them is cheap and loads no event loop.
    """
    import importlib
    for suite in SUITES:
        importlib.import_module(suite)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its implementations and how to turn time into per-op time.

    ``impls`` maps an implementation name to ``fn(n) -> seconds``.
    ``ops_per_n``: operations performed per unit of ``n`` (a ping-pong round
    of two switches counts 2), so per-op time = seconds / (n * ops_per_n).
    ``default_n`` is chosen so that one run takes roughly 0.1-0.3 s.
    ``aliases`` lets a column borrow another implementation's measurement when
    both would run the very same code (labkit and gevent both switch with the
    greenlet package, so ``greenlet_switch`` is measured once as "greenlet").
    """

    name: str
    description: str
    default_n: int
    ops_per_n: int
    impls: Dict[str, Callable[[int], float]]
    aliases: Dict[str, str] = field(default_factory=dict)


BENCHMARKS: Dict[str, Benchmark] = {}


def register(bench):
    """Add ``bench`` to the registry; names must be unique."""
    if bench.name in BENCHMARKS:
        raise ValueError(f"benchmark {bench.name!r} is already registered")
    BENCHMARKS[bench.name] = bench
    return bench


def import_gevent_like(impl):
    """Return the ``gevent`` or ``labkit`` module, for the shared helpers."""
    if impl == LABKIT:
        import labkit
        return labkit
    import gevent
    return gevent


def run_asyncio(coro_fn, impl):
    """Run ``coro_fn()`` on a fresh asyncio or uvloop loop and return its result.

    The loop is created before the coroutine starts, so loop creation is
    never inside the coroutine's own timing.
    """
    loop_factory = None
    if impl == "uvloop":
        import uvloop
        loop_factory = uvloop.new_event_loop
    elif impl == "rloop":  # the Rust asyncio loop
        import rloop
        loop_factory = rloop.new_event_loop
    if hasattr(asyncio, "Runner"):  # Python 3.11+
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro_fn())
    loop = loop_factory() if loop_factory else asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn())
    finally:
        loop.close()


# --- greenlet_switch -------------------------------------------------------

def greenlet_switch(n):
    """n round trips main -> partner -> main: 2n bare greenlet switches."""
    from greenlet import getcurrent, greenlet

    main = getcurrent()

    def partner():
        while True:
            main.switch()

    other = greenlet(partner)
    other.switch()  # start it; it parks at once in main.switch()
    start = perf_counter()
    for _ in range(n):
        other.switch()
    elapsed = perf_counter() - start
    other.throw()  # GreenletExit: let the partner finish cleanly
    return elapsed


register(Benchmark(
    name="greenlet_switch",
    description="bare greenlet.switch() ping-pong (the floor for labkit and gevent)",
    default_n=300_000,
    ops_per_n=2,
    impls={GREENLET: greenlet_switch},
    aliases={LABKIT: GREENLET, "gevent": GREENLET},
))


# --- sleep0 ----------------------------------------------------------------

def sleep0_gevent_like(impl, n):
    gk = import_gevent_like(impl)

    def yield_n_times():
        for _ in range(n):
            gk.sleep(0)

    start = perf_counter()
    gk.joinall([gk.spawn(yield_n_times), gk.spawn(yield_n_times)])
    return perf_counter() - start


def sleep0_asyncio(impl, n):
    async def yield_n_times():
        for _ in range(n):
            await asyncio.sleep(0)

    async def main():
        start = perf_counter()
        await asyncio.gather(yield_n_times(), yield_n_times())
        return perf_counter() - start

    return run_asyncio(main, impl)


# --- spawn_join ------------------------------------------------------------

def identity(x):
    return x


async def identity_async(x):
    return x


def spawn_join_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    start = perf_counter()
    greenlets = [gk.spawn(identity, i) for i in range(n)]
    gk.joinall(greenlets)
    return perf_counter() - start


def spawn_join_asyncio(impl, n):
    async def main():
        start = perf_counter()
        tasks = [asyncio.create_task(identity_async(i)) for i in range(n)]
        await asyncio.gather(*tasks)
        return perf_counter() - start

    return run_asyncio(main, impl)



# --- fresh_greenlet --------------------------------------------------------
#
# Start a greenlet and run it to its end, n times, with labkit or gevent
# imported. Both spawn on the greenlet package, so the code is the same; what
# differs is the memory under it. On CPython 3.11+ the greenlet's one Python
# call allocates it a 16 KiB frame stack through the interpreter's arena
# allocator (an mmap) and its death frees it (a munmap). Importing labkit
# wraps that allocator with a cache of freed blocks (loop_c/lk_arena_cache.c;
# LABKIT_ARENA_CACHE=0 turns it off, to measure what it buys).

def fresh_greenlet_gevent_like(impl, n):
    import_gevent_like(impl)
    from greenlet import greenlet

    start = perf_counter()
    for i in range(n):
        greenlet(identity).switch(i)
    return perf_counter() - start


register(Benchmark(
    name="fresh_greenlet",
    description="start a greenlet whose one call returns at once, run it to its end",
    default_n=20_000,
    ops_per_n=1,
    impls={LABKIT: lambda n: fresh_greenlet_gevent_like(LABKIT, n),
           "gevent": lambda n: fresh_greenlet_gevent_like("gevent", n)},
))


# --- timer_cancel ----------------------------------------------------------

def timer_cancel_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    start = perf_counter()
    for _ in range(n):
        timeout = gk.Timeout.start_new(10)
        timeout.cancel()
    return perf_counter() - start


def timer_cancel_asyncio(impl, n):
    def never_called():
        raise AssertionError("a cancelled timer fired")

    async def main():
        loop = asyncio.get_running_loop()
        start = perf_counter()
        for _ in range(n):
            loop.call_later(10, never_called).cancel()
        return perf_counter() - start

    return run_asyncio(main, impl)


# --- mass_sleep ------------------------------------------------------------
#
# n greenlets (tasks) each sleep(5): spawn them all, let every one start and
# park in its sleep, then kill them all. Per greenlet: the time of the whole,
# the process's CPU time of it (user + system: on a shared machine the wall
# clock also counts the time other processes had the CPU), and the resident
# memory (RSS) each parked one adds -- its objects, its timer, the saved
# slice of its C stack and, on CPython 3.11+, its frame stack (a 16 KiB
# block of which the first page is touched). A benchmark may return
# (seconds, extras): the worker reports the extras' median. After the run
# the greenlets must all be gone (a weak sample of them is checked) and, for
# labkit, no timer left pending: nothing leaked.

def resident_bytes():
    """This process's resident set size (Linux: /proc/self/statm), else 0."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return 0


try:
    _PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _PAGE_SIZE = 4096

MASS_SLEEP_SECONDS = 5


def mass_sleep_seconds(n):
    """How long each of n sleepers sleeps: 5 s (the issue's 100,000), longer
    for more (a second per 20,000), so that none wakes up by itself before
    the last one has started -- a million take longer than 5 s to spawn."""
    return max(MASS_SLEEP_SECONDS, n / 20_000)


def mass_sleep_gevent_like(impl, n):
    from greenlet import greenlet
    gk = import_gevent_like(impl)
    before = resident_bytes()
    start, cpu_start = perf_counter(), process_time()
    seconds = mass_sleep_seconds(n)
    greenlets = [gk.spawn(gk.sleep, seconds) for _ in range(n)]
    # Every greenlet starts and parks in its sleep: one pass of the hub
    # usually, more when the hub ends a pass early (gevent does, after a
    # while, so that a flood of callbacks does not starve I/O).
    waiting = greenlets
    deadline = start + 60 + n / 1000
    while waiting:
        gk.sleep(0)
        waiting = [g for g in waiting if not greenlet.__bool__(g) and not g.dead]
        if waiting and perf_counter() > deadline:
            raise AssertionError(f"{len(waiting)} greenlets did not start")
    if any(g.dead for g in greenlets):
        raise AssertionError(f"a sleep({seconds}) ended before the last greenlet started")
    parked = resident_bytes()
    gk.killall(greenlets)
    elapsed, cpu = perf_counter() - start, process_time() - cpu_start
    if any(not g.dead for g in greenlets):
        raise AssertionError("killall left greenlets alive")
    sample = _weak_sample(greenlets)
    del greenlets, waiting
    # The loop goes idle once, as a service's does after a burst: labkit
    # gives back what the greenlets freed before such a sleep (and the hub
    # may still have been inside a join's link).
    gk.sleep(0.05)
    left = _left(before, n)
    _check_released(sample, "greenlets")
    if impl == LABKIT and gk.get_hub().loop.pending_timers:
        raise AssertionError(f"{gk.get_hub().loop.pending_timers} timers left pending")
    return elapsed, {"bytes_per_op": (parked - before) / n, "left_per_op": left,
                     "cpu_ns_per_op": cpu / n * 1e9}


def _left(before, n):
    """Resident bytes per op still held after the ops ended and a collection
    ran (what the allocators keep for reuse, or a leak)."""
    import gc
    gc.collect()
    return (resident_bytes() - before) / n


def _weak_sample(objects, size=1000):
    """Weak references to ``size`` of ``objects``, spread over the list."""
    import weakref
    return [weakref.ref(obj) for obj in objects[::max(1, len(objects) // size)]]


def _check_released(sample, what):
    """Nothing leaked: every sampled object is gone once the run dropped its
    references and a collection ran (AssertionError otherwise)."""
    alive = sum(ref() is not None for ref in sample)
    if alive:
        raise AssertionError(f"{alive} of {len(sample)} sampled {what} still alive "
                             "after they ended and a collection ran")


def mass_sleep_asyncio(impl, n):
    async def main():
        before = resident_bytes()
        start, cpu_start = perf_counter(), process_time()
        seconds = mass_sleep_seconds(n)
        tasks = [asyncio.ensure_future(asyncio.sleep(seconds)) for _ in range(n)]
        await asyncio.sleep(0)  # every task starts and parks in its sleep
        parked = resident_bytes()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed, cpu = perf_counter() - start, process_time() - cpu_start
        if not all(task.cancelled() for task in tasks):
            raise AssertionError("a task was not cancelled")
        del tasks[:]
        return elapsed, {"bytes_per_op": (parked - before) / n, "left_per_op": _left(before, n),
                         "cpu_ns_per_op": cpu / n * 1e9}

    return run_asyncio(main, impl)


# --- threadsafe_wakeup -----------------------------------------------------
#
# A plain thread posts a callback into the loop and blocks until the loop has
# run it: one round trip = wake the sleeping loop + run a callback + signal a
# real lock. The thread times itself, so how promptly the main greenlet or
# task notices the end does not count.

def post_and_wait_n_times(post, n, result):
    """Thread body: n round trips through ``post(callback)``; store seconds."""
    ran = threading.Event()
    start = perf_counter()
    for _ in range(n):
        ran.clear()
        post(ran.set)
        ran.wait()
    result.append(perf_counter() - start)


def threadsafe_wakeup_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    if impl == LABKIT:
        post = gk.get_hub().run_callback_threadsafe
    else:
        post = gk.get_hub().loop.run_callback_threadsafe
    result = []
    thread = threading.Thread(target=post_and_wait_n_times, args=(post, n, result))
    thread.start()
    # Keep the hub looping (and sleeping in its poller) until the thread is
    # done; each posted callback has to wake it up from there.
    while thread.is_alive():
        gk.sleep(0.01)
    thread.join()
    return result[0]


def threadsafe_wakeup_asyncio(impl, n):
    async def main():
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        result = []

        def thread_body():
            try:
                post_and_wait_n_times(loop.call_soon_threadsafe, n, result)
            finally:
                loop.call_soon_threadsafe(finished.set_result, None)

        thread = threading.Thread(target=thread_body)
        thread.start()
        await finished
        thread.join()
        return result[0]

    return run_asyncio(main, impl)


# --- registration of the four loop benchmarks ------------------------------

def impls_for(gevent_like, asyncio_like):
    """The five implementations of a benchmark, from its two shared helpers."""
    return {
        LABKIT: lambda n: gevent_like(LABKIT, n),
        "gevent": lambda n: gevent_like("gevent", n),
        "asyncio": lambda n: asyncio_like("asyncio", n),
        "uvloop": lambda n: asyncio_like("uvloop", n),
        "rloop": lambda n: asyncio_like("rloop", n),
    }


register(Benchmark(
    name="sleep0",
    description="two greenlets/tasks yielding with sleep(0), per yield",
    default_n=50_000,
    ops_per_n=2,
    impls=impls_for(sleep0_gevent_like, sleep0_asyncio),
))

register(Benchmark(
    name="spawn_join",
    description="spawn a trivial greenlet/task, then join them all, per spawn",
    default_n=20_000,
    ops_per_n=1,
    impls=impls_for(spawn_join_gevent_like, spawn_join_asyncio),
))

register(Benchmark(
    name="timer_cancel",
    description="start a 10 s timer and cancel it",
    default_n=100_000,
    ops_per_n=1,
    impls=impls_for(timer_cancel_gevent_like, timer_cancel_asyncio),
))

register(Benchmark(
    name="mass_sleep",
    description="100,000 greenlets/tasks each sleep(5): spawn, park, kill all; "
                "per greenlet, with the memory each parked one holds",
    default_n=100_000,
    ops_per_n=1,
    impls=impls_for(mass_sleep_gevent_like, mass_sleep_asyncio),
))

register(Benchmark(
    name="threadsafe_wakeup",
    description="thread posts a callback to the loop and waits for it to run",
    default_n=5_000,
    ops_per_n=1,
    impls=impls_for(threadsafe_wakeup_gevent_like, threadsafe_wakeup_asyncio),
))
