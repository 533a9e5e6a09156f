"""Soak: a minute of churn, then nothing lost and nothing leaked.

For LABKIT_SOAK_SECONDS (default 60) seconds, in one hub:

- an echo server (StreamServer) and 1,000 client greenlets that connect,
  exchange 1-5 messages of 16 B to 20 KB, say goodbye and disconnect, over
  and over (the server closes first, so TIME_WAIT stays on its side and the
  clients never run out of ports);
- socket timeouts and ``Timeout`` blocks around every exchange, armed and
  cancelled thousands of times a second; timer greenlets whose Timeouts
  fire, are cancelled, and ``spawn_later`` greenlets that run or are killed;
- a ThreadPool of 4 threads kept busy by 8 greenlets, every result checked.

At the end every message came back intact, every timer did what it should,
and the open fds, live greenlets and threads are back to their starting
counts. RSS growth from the end of the warm-up to the end of the churn (both
sampled under full load) stays under RSS_GROWTH_BOUND_MB; the test prints
its figures.
"""
import gc
import hashlib
import os
import random
import resource
import threading
import time
from collections import Counter

import pytest
from greenlet import greenlet

from labkit import Timeout, joinall, sleep, socket, spawn, spawn_later
from labkit.hub import get_hub
from labkit.server import StreamServer
from labkit.threadpool import ThreadPool
from labkit.bench._net import recv_exactly

SECONDS = float(os.environ.get("LABKIT_SOAK_SECONDS", "60"))
CLIENTS = 1000
WARMUP = min(10.0, SECONDS / 4)   # RSS is measured from here on
#: measured over 60 s (Python 3.11, x86-64, 80k-150k connections): -0.2 MB
#: late minus warm-up; samples move by up to ~8 MB from allocator noise. A
#: leak of 100 bytes per connection would add 8-15 MB.
RSS_GROWTH_BOUND_MB = 16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 180)]

BYE = b"\0BYE"                         # never inside a message (hex + ':' + '\n')
NOISE = os.urandom(32768).hex().encode()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def echo_until_bye(sock, address) -> None:
    while True:
        data = sock.recv(65536)
        if not data or data[:1] == b"\0":   # the client's goodbye (or it vanished)
            return                           # we close first
        sock.sendall(data)


def run_soak(seconds: float, stats: Counter) -> dict:
    hub = get_hub()
    fds_before, greenlets_before = open_fds(), live_greenlets()
    threads_before = threading.active_count()
    rss = {"start": rss_mb()}
    deadline = time.monotonic() + seconds

    server = StreamServer(("127.0.0.1", 0), echo_until_bye, backlog=1024)
    server.start()
    address = ("127.0.0.1", server.server_port)
    pool = ThreadPool(4)

    def client(cid: int) -> None:
        rng = random.Random(cid)
        conn = 0
        while time.monotonic() < deadline:
            conn += 1
            with Timeout(30), socket.create_connection(address, timeout=30) as c:
                for k in range(rng.randint(1, 5)):
                    size = rng.choice((16, 100, 1000, 20000))
                    start = rng.randrange(len(NOISE) - size)
                    msg = b"%d:%d:%d:%s\n" % (cid, conn, k, NOISE[start:start + size])
                    c.sendall(msg)
                    got = recv_exactly(c, len(msg))
                    stats["messages"] += 1
                    if got != msg:
                        stats["corrupted_or_lost"] += 1
                c.sendall(BYE)
                if c.recv(1) != b"":
                    stats["server_did_not_close"] += 1
            stats["connections"] += 1
            if rng.random() < 0.1:
                sleep(rng.random() * 0.01)

    def timers(tid: int) -> None:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            with Timeout(0.002, False):          # fires
                sleep(5)
            stats["timeouts_fired"] += 1
            if time.monotonic() - t0 > 4:
                stats["timeout_did_not_fire"] += 1
            try:
                with Timeout(5):                 # cancelled
                    sleep(0.001)
                stats["timeouts_cancelled"] += 1
            except Timeout:
                stats["timeout_fired_late"] += 1
            ran = []
            g = spawn_later(0.001, ran.append, 1)
            g.join(timeout=5)
            stats["spawn_later_ran"] += len(ran)
            stats["spawn_later_lost"] += 1 - len(ran)
            doomed = spawn_later(5, ran.append, 2)
            sleep(0.001)
            doomed.kill()
            stats["spawn_later_killed"] += 1

    def threads(wid: int) -> None:
        rng = random.Random(wid)
        while time.monotonic() < deadline:
            data = rng.randbytes(rng.choice((64, 4096, 65536)))
            if rng.random() < 0.5:
                digest = pool.apply(lambda d: hashlib.sha256(d).hexdigest(), (data,))
            else:
                digest = pool.spawn(lambda d: hashlib.sha256(d).hexdigest(), data).get()
            stats["pool_jobs"] += 1
            if digest != hashlib.sha256(data).hexdigest():
                stats["pool_wrong_results"] += 1
            if rng.random() < 0.05:
                pool.apply(time.sleep, (0.002,))   # a job that really blocks
                stats["pool_jobs"] += 1

    def sample_rss() -> None:
        # Both samples under the same load, so the difference is what the
        # churn left behind, not buffers of the connections open right now.
        sleep(min(WARMUP, seconds))
        rss["warm"] = rss_mb()
        sleep(max(deadline - time.monotonic() - 0.5, 0))
        rss["late"] = rss_mb()

    workers = ([spawn(client, i) for i in range(CLIENTS)]
               + [spawn(timers, i) for i in range(20)]
               + [spawn(threads, i) for i in range(8)])
    sampler = spawn(sample_rss)
    joinall(workers + [sampler], timeout=seconds + 120)
    failed = [g for g in workers if not g.successful()]
    server.stop(timeout=5)
    pool.kill()
    deadline_threads = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline_threads:
        sleep(0.01)
    rss["end"] = rss_mb()
    del workers, sampler, pool, server
    return {
        "failed": failed,
        "fds": (fds_before, open_fds()),
        "greenlets": (greenlets_before, live_greenlets()),
        "threads": (threads_before, threading.active_count()),
        "rss": rss,
        "backend": hub.loop.backend_name,
    }


def test_a_minute_of_churn_loses_nothing_and_leaks_nothing(capsys):
    stats = Counter()
    started = time.monotonic()
    result = run_soak(SECONDS, stats)
    elapsed = time.monotonic() - started
    rss = result["rss"]
    growth = rss["late"] - rss["warm"]
    with capsys.disabled():
        print(f"\nsoak ({result['backend']}, {elapsed:.0f} s, {CLIENTS} clients): "
              f"{stats['connections']} connections ({stats['connections'] / elapsed:.0f}/s), "
              f"{stats['messages']} messages, {stats['corrupted_or_lost']} lost/corrupted; "
              f"timeouts fired {stats['timeouts_fired']}, cancelled {stats['timeouts_cancelled']}; "
              f"spawn_later ran {stats['spawn_later_ran']}, killed {stats['spawn_later_killed']}; "
              f"pool jobs {stats['pool_jobs']}\n"
              f"soak: fds {result['fds'][0]} -> {result['fds'][1]}, "
              f"live greenlets {result['greenlets'][0]} -> {result['greenlets'][1]}, "
              f"threads {result['threads'][0]} -> {result['threads'][1]}, "
              f"RSS {rss['start']:.1f} MB -> {rss['warm']:.1f} MB after warm-up -> "
              f"{rss['late']:.1f} MB at the end of the churn "
              f"(growth {growth:+.1f} MB, bound {RSS_GROWTH_BOUND_MB} MB) -> "
              f"{rss['end']:.1f} MB after shutdown")
    assert not result["failed"], [repr(g.exception) for g in result["failed"][:5]]
    problems = {k: v for k, v in stats.items() if k in (
        "corrupted_or_lost", "server_did_not_close", "timeout_did_not_fire",
        "timeout_fired_late", "spawn_later_lost", "pool_wrong_results") and v}
    assert not problems, problems
    assert stats["connections"] >= CLIENTS          # every client made at least one round
    assert stats["timeouts_fired"] and stats["timeouts_cancelled"] and stats["pool_jobs"]
    assert result["fds"][1] == result["fds"][0], "fd leak"
    assert result["greenlets"][1] == result["greenlets"][0], "greenlet leak"
    assert result["threads"][1] == result["threads"][0], "thread leak"
    assert growth < RSS_GROWTH_BOUND_MB
