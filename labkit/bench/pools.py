"""Pool benchmarks: Pool.map over many items, ThreadPool.apply round trip.

Registered like the micro benchmarks (see ``labkit.bench.micro``): the gevent
and labkit versions are one helper that receives the module as ``gk``;
asyncio and uvloop get the idiomatic equivalent.

- ``pool_map``: ``Pool(100).map`` of a trivial function over N items, per
  item. asyncio: ``gather`` of N tasks that each hold a ``Semaphore(100)``.
- ``threadpool_apply``: ``ThreadPool(1).apply(trivial)``, one round trip
  hub -> worker thread -> hub per op. asyncio:
  ``await loop.run_in_executor(ThreadPoolExecutor(1), fn)``.
"""

import asyncio
from time import perf_counter

from labkit.bench.micro import (
    Benchmark, import_gevent_like, impls_for, register, run_asyncio,
)

POOL_SIZE = 100


def identity(x):
    return x


# --- pool_map ------------------------------------------------------------------

def pool_map_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    pool_module = __import__(f"{gk.__name__}.pool", fromlist=["Pool"])
    pool = pool_module.Pool(POOL_SIZE)
    start = perf_counter()
    results = pool.map(identity, range(n))
    elapsed = perf_counter() - start
    assert len(results) == n
    return elapsed


def pool_map_asyncio(impl, n):
    async def main():
        semaphore = asyncio.Semaphore(POOL_SIZE)

        async def limited(x):
            async with semaphore:
                return identity(x)

        start = perf_counter()
        results = await asyncio.gather(*[limited(i) for i in range(n)])
        elapsed = perf_counter() - start
        assert len(results) == n
        return elapsed

    return run_asyncio(main, impl)


# --- threadpool_apply ------------------------------------------------------------

def threadpool_apply_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    threadpool_module = __import__(f"{gk.__name__}.threadpool", fromlist=["ThreadPool"])
    pool = threadpool_module.ThreadPool(1)
    pool.apply(identity, (0,))  # start the worker thread outside the timing
    start = perf_counter()
    for i in range(n):
        pool.apply(identity, (i,))
    elapsed = perf_counter() - start
    pool.kill()
    return elapsed


def threadpool_apply_asyncio(impl, n):
    from concurrent.futures import ThreadPoolExecutor

    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            await loop.run_in_executor(executor, identity, 0)  # start the thread
            start = perf_counter()
            for i in range(n):
                await loop.run_in_executor(executor, identity, i)
            return perf_counter() - start

    return run_asyncio(main, impl)


register(Benchmark(
    name="pool_map",
    description=f"Pool({POOL_SIZE}).map of a trivial function, per item",
    default_n=10_000,
    ops_per_n=1,
    impls=impls_for(pool_map_gevent_like, pool_map_asyncio),
))

register(Benchmark(
    name="threadpool_apply",
    description="ThreadPool(1).apply(trivial): hub -> thread -> hub round trip",
    default_n=3_000,
    ops_per_n=1,
    impls=impls_for(threadpool_apply_gevent_like, threadpool_apply_asyncio),
))
