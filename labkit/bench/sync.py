"""Synchronization benchmarks: what a Queue, Event or Semaphore hand-off costs.

Registered like the micro benchmarks (see ``labkit.bench.micro``): the gevent
and labkit versions are one helper that receives the module as ``gk`` (and
its ``queue``/``event``/``lock`` submodules through :func:`submodule`);
asyncio and uvloop get the idiomatic equivalent.

- ``queue_pingpong``: a producer puts N items into ``Queue(1)``, a consumer
  gets them; per item. Back-pressure makes the two greenlets alternate.
- ``event_roundtrip``: two greenlets ping-pong through two Events
  (set / wait / clear); per round trip (two wake-ups).
- ``semaphore_contention``: 10 greenlets loop on ``Semaphore(1)``:
  acquire, ``sleep(0)``, release; per acquire. Every release hands the
  permit to a waiter.
"""

import asyncio
import importlib
from time import perf_counter

from labkit.bench.micro import (LABKIT, Benchmark, import_gevent_like, impls_for, register,
                                 run_asyncio)

CONTENDERS = 10


def submodule(gk, name):
    """``gevent.queue`` or ``labkit.queue`` (etc.), for the shared helpers."""
    return importlib.import_module(f"{gk.__name__}.{name}")


# --- queue_pingpong ------------------------------------------------------------

def queue_pingpong_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    q = submodule(gk, "queue").Queue(1)

    def producer():
        for i in range(n):
            q.put(i)

    def consumer():
        for _ in range(n):
            q.get()

    start = perf_counter()
    gk.joinall([gk.spawn(producer), gk.spawn(consumer)])
    return perf_counter() - start


def queue_pingpong_asyncio(impl, n):
    async def main():
        q = asyncio.Queue(1)

        async def producer():
            for i in range(n):
                await q.put(i)

        async def consumer():
            for _ in range(n):
                await q.get()

        start = perf_counter()
        await asyncio.gather(producer(), consumer())
        return perf_counter() - start

    return run_asyncio(main, impl)


# --- event_roundtrip -------------------------------------------------------------

def event_roundtrip_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    Event = submodule(gk, "event").Event
    ping, pong = Event(), Event()

    def pinger():
        for _ in range(n):
            ping.set()
            pong.wait()
            pong.clear()

    def ponger():
        for _ in range(n):
            ping.wait()
            ping.clear()
            pong.set()

    start = perf_counter()
    gk.joinall([gk.spawn(pinger), gk.spawn(ponger)])
    return perf_counter() - start


def event_roundtrip_asyncio(impl, n):
    async def main():
        ping, pong = asyncio.Event(), asyncio.Event()

        async def pinger():
            for _ in range(n):
                ping.set()
                await pong.wait()
                pong.clear()

        async def ponger():
            for _ in range(n):
                await ping.wait()
                ping.clear()
                pong.set()

        start = perf_counter()
        await asyncio.gather(pinger(), ponger())
        return perf_counter() - start

    return run_asyncio(main, impl)


# --- semaphore_contention ----------------------------------------------------------

def semaphore_contention_gevent_like(impl, n):
    gk = import_gevent_like(impl)
    sem = submodule(gk, "lock").Semaphore(1)
    rounds = n // CONTENDERS

    def contender():
        for _ in range(rounds):
            sem.acquire()
            gk.sleep(0)
            sem.release()

    start = perf_counter()
    gk.joinall([gk.spawn(contender) for _ in range(CONTENDERS)])
    return perf_counter() - start


def semaphore_contention_asyncio(impl, n):
    async def main():
        sem = asyncio.Semaphore(1)
        rounds = n // CONTENDERS

        async def contender():
            for _ in range(rounds):
                await sem.acquire()
                await asyncio.sleep(0)
                sem.release()

        start = perf_counter()
        await asyncio.gather(*[contender() for _ in range(CONTENDERS)])
        return perf_counter() - start

    return run_asyncio(main, impl)


register(Benchmark(
    name="queue_pingpong",
    description="Queue(1) between a producer and a consumer greenlet, per item",
    default_n=50_000,
    ops_per_n=1,
    impls=impls_for(queue_pingpong_gevent_like, queue_pingpong_asyncio),
))

register(Benchmark(
    name="event_roundtrip",
    description="two greenlets ping-pong through two Events, per round trip",
    default_n=30_000,
    ops_per_n=1,
    impls=impls_for(event_roundtrip_gevent_like, event_roundtrip_asyncio),
))

register(Benchmark(
    name="semaphore_contention",
    description="10 greenlets acquire/sleep(0)/release a Semaphore(1), per acquire",
    default_n=50_000,
    ops_per_n=1,
    impls=impls_for(semaphore_contention_gevent_like, semaphore_contention_asyncio),
))


# --- socket_recv_wait ------------------------------------------------------------

def socket_recv_wait_gevent_like(impl, n):
    """A one-byte ping-pong over a socketpair: every recv finds nothing yet
    and parks on the fd, so each round trip is two fd waits and two wake-ups."""
    gk = import_gevent_like(impl)
    left, right = submodule(gk, "socket").socketpair()

    def echo():
        for _ in range(n):
            right.sendall(right.recv(1))

    server = gk.spawn(echo)
    start = perf_counter()
    for _ in range(n):
        left.sendall(b"x")
        left.recv(1)
    elapsed = perf_counter() - start
    server.join()
    left.close()
    right.close()
    return elapsed


def socket_recv_wait_asyncio(impl, n):
    import socket

    async def main():
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        left.setblocking(False)
        right.setblocking(False)

        async def echo():
            for _ in range(n):
                await loop.sock_sendall(right, await loop.sock_recv(right, 1))

        server = asyncio.ensure_future(echo())
        start = perf_counter()
        for _ in range(n):
            await loop.sock_sendall(left, b"x")
            await loop.sock_recv(left, 1)
        elapsed = perf_counter() - start
        await server
        left.close()
        right.close()
        return elapsed

    return run_asyncio(main, impl)


register(Benchmark(
    name="socket_recv_wait",
    description="one-byte ping-pong over a socketpair, each recv parks, per round trip",
    default_n=20_000,
    ops_per_n=1,
    impls=impls_for(socket_recv_wait_gevent_like, socket_recv_wait_asyncio),
))


# --- wsgi_request ------------------------------------------------------------------

def _hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


def wsgi_request_labkit(n):
    """Keep-alive GET requests to labkit.wsgi.WSGIServer from a client
    greenlet of the same hub, one at a time: per request, the server's
    parse, environ, application call and response, plus the client's send
    and parked recv. In-process, so that callgrind counts it (the HTTP
    throughput with wrk is ``python -m labkit bench --http``)."""
    import labkit.socket
    from labkit.wsgi import WSGIServer
    server = WSGIServer(("127.0.0.1", 0), _hello_app)
    server.start()
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    client = labkit.socket.create_connection(("127.0.0.1", server.server_port))
    try:
        client.sendall(request)
        size = len(client.recv(65536))    # (one response: its length, to read whole)

        def respond():
            got = 0
            while got < size:
                got += len(client.recv(65536))

        start = perf_counter()
        for _ in range(n):
            client.sendall(request)
            respond()
        return perf_counter() - start
    finally:
        client.close()
        server.stop()


register(Benchmark(
    name="wsgi_request",
    description="a keep-alive GET to a WSGI server from a greenlet of the same hub, per request",
    default_n=10_000,
    ops_per_n=1,
    # (gevent.pywsgi is left out here: it writes a response's head and body
    # in two sends, and against a client that delays its ACKs -- any plain
    # socket -- Nagle's algorithm holds the body for ~40 ms. Peers' HTTP
    # figures come from wrk: python -m labkit bench --http.)
    impls={LABKIT: wsgi_request_labkit},
))
