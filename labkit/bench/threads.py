"""Patched threading benchmarks: what ``threading.Lock`` costs after monkey patching.

Registered like the micro benchmarks (see ``labkit.bench.micro``); each
implementation patches its own worker process (``labkit.monkey.patch_all()``
or gevent's), which is why these live in a suite of their own. Rows:

- ``patched_lock_contention``: ``semaphore_contention`` with a patched
  ``threading.Lock()`` instead of ``Semaphore(1)``: 10 greenlets loop on
  acquire, ``sleep(0)``, release; per acquire. Read it beside
  ``semaphore_contention``: the patched lock should cost no more than
  labkit's own Semaphore.
- ``patched_lock_native_thread``: an uncontended ``acquire(); release()`` of
  a patched lock from a plain OS thread (no hub there), per pair;
- ``original_lock_native_thread``: the same with the interpreter's C lock
  (``monkey.get_original``), the floor for the row above (labkit's target:
  at most 2x). Both columns run the same C lock there ("same").
"""

from time import perf_counter

from labkit.bench.micro import Benchmark, LABKIT, import_gevent_like, register

CONTENDERS = 10


def _monkey(gk):
    import importlib
    monkey = importlib.import_module(f"{gk.__name__}.monkey")
    if gk.__name__ == "gevent":
        import warnings
        with warnings.catch_warnings():  # threading was imported before: expected here
            warnings.simplefilter("ignore")
            monkey.patch_all()
    else:
        monkey.patch_all()
    return monkey


def patched_lock_contention(impl, n):
    gk = import_gevent_like(impl)
    _monkey(gk)
    import threading
    lock = threading.Lock()
    rounds = n // CONTENDERS

    def contender():
        for _ in range(rounds):
            lock.acquire()
            gk.sleep(0)
            lock.release()

    start = perf_counter()
    gk.joinall([gk.spawn(contender) for _ in range(CONTENDERS)])
    return perf_counter() - start


def _in_os_thread(monkey, lock, n):
    """Time n acquire/release pairs of ``lock`` in a real OS thread."""
    start_new_thread = monkey.get_original("_thread", "start_new_thread")
    allocate_lock = monkey.get_original("_thread", "allocate_lock")
    done, box = allocate_lock(), []
    done.acquire()

    def run():
        acquire, release = lock.acquire, lock.release
        start = perf_counter()
        for _ in range(n):
            acquire()
            release()
        box.append(perf_counter() - start)
        done.release()

    start_new_thread(run, ())
    done.acquire()  # (the hub has nothing to do meanwhile)
    return box[0]


def patched_lock_native_thread(impl, n):
    monkey = _monkey(import_gevent_like(impl))
    import threading
    return _in_os_thread(monkey, threading.Lock(), n)


def original_lock_native_thread(impl, n):
    monkey = _monkey(import_gevent_like(LABKIT))
    return _in_os_thread(monkey, monkey.get_original("threading", "Lock")(), n)


register(Benchmark(
    name="patched_lock_contention",
    description="10 greenlets acquire/sleep(0)/release a patched threading.Lock, per acquire",
    default_n=50_000,
    ops_per_n=1,
    impls={LABKIT: lambda n: patched_lock_contention(LABKIT, n),
           "gevent": lambda n: patched_lock_contention("gevent", n)},
))

register(Benchmark(
    name="patched_lock_native_thread",
    description="uncontended acquire+release of a patched threading.Lock in an OS thread",
    default_n=300_000,
    ops_per_n=1,
    impls={LABKIT: lambda n: patched_lock_native_thread(LABKIT, n),
           "gevent": lambda n: patched_lock_native_thread("gevent", n)},
))

register(Benchmark(
    name="original_lock_native_thread",
    description="the same with the interpreter's C lock: the floor for the row above",
    default_n=300_000,
    ops_per_n=1,
    impls={"original": lambda n: original_lock_native_thread(LABKIT, n)},
    aliases={LABKIT: "original", "gevent": "original"},
))
