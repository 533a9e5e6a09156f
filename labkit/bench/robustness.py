"""``python -m labkit bench --robustness``: faults and hostile input, summarised.

Each scenario below throws one kind of trouble at labkit and checks that the
contract still holds: the hub keeps running, the server keeps serving, and
nothing that was accepted is lost (a message, a timer, a permit, a queue
item). It returns an :class:`Outcome`; ``main`` runs them all and prints::

    scenario                              inputs  survived  lost
    peer_reset_mid_sendall                     4  yes          0
    ...
    inputs tried: 151   faults survived: 11/11   items lost: 0

The same functions are the bodies of ``tests/test_faults.py``, so the
figures quoted from this report are the ones CI checks. Scenarios that need
a process of their own (a lowered fd limit, SIGINT, fork) run this module
as ``python -m labkit.bench.robustness --child NAME``; the child prints one
JSON line and the parent judges it. The child bodies are in
:mod:`labkit.bench._robustness_children`.

Run one scenario: ``python -m labkit.bench.robustness --only fork_with_live_servers``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

from labkit.bench._net import recv_exactly

__all__ = ["Outcome", "SCENARIOS", "run", "format_summary", "main"]


@dataclass
class Outcome:
    """What one scenario found."""

    name: str
    inputs: int        # faulty or hostile inputs thrown at labkit
    survived: bool     # the contract held throughout
    lost: int = 0      # accepted items that vanished (must be 0)
    detail: str = ""   # figures worth quoting, or what went wrong


# -- helpers -------------------------------------------------------------------

class _Reports(io.StringIO):
    """The hub's exception stream during a scenario: keeps the expected
    tracebacks off the terminal and lets the scenario count them."""

    def count(self, text: str) -> int:
        return self.getvalue().count(text)


class _quiet_hub:
    def __enter__(self) -> _Reports:
        from labkit.hub import get_hub
        self.hub = get_hub()
        self.saved = self.hub.exception_stream
        self.hub.exception_stream = _Reports()
        return self.hub.exception_stream

    def __exit__(self, *exc_info) -> None:
        self.hub.exception_stream = self.saved


def _wait_until(predicate, timeout: float, step: float = 0.005) -> bool:
    """Cooperatively poll ``predicate`` for at most ``timeout`` seconds."""
    from labkit import sleep
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        sleep(step)
    return True


def _echo_once(port: int, payload: bytes, timeout: float = 10.0) -> bool:
    """A labkit client: send ``payload``, True if it comes back intact."""
    from labkit import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(payload)
        return recv_exactly(c, len(payload)) == payload


def _echo_handler(sock, address) -> None:
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)


def _reset(sock) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, zero seconds)."""
    import socket as _stdlib
    sock.setsockopt(_stdlib.SOL_SOCKET, _stdlib.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _run_child(name: str, timeout: float = 60.0) -> dict:
    """Run ``--child name`` in a fresh interpreter; its JSON answer."""
    proc = subprocess.run(
        [sys.executable, "-m", "labkit.bench.robustness", "--child", name],
        capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"ok": False, "error": f"child exited {proc.returncode}: "
                                      f"{proc.stderr[-2000:]}"}
    return json.loads(lines[-1])


# -- in-process scenarios ------------------------------------------------------

def peer_reset_mid_sendall(connections: int = 3) -> Outcome:
    """A peer resets the connection while the other side is in sendall():
    sendall raises ConnectionResetError/BrokenPipeError (no hang, no crash),
    in both directions, and the server goes on serving."""
    from labkit import Timeout, socket
    from labkit.server import StreamServer

    big = b"x" * (32 << 20)
    server_errors = []

    def handle(sock, address):
        mode = sock.recv(1)
        if mode == b"R":          # we send; the client resets
            try:
                sock.sendall(big)
                server_errors.append("completed")
            except OSError as exc:
                server_errors.append(type(exc).__name__)
        elif mode == b"S":        # the client sends; we reset
            sock.recv(65536)
            _reset(sock)
        elif mode == b"E":
            sock.sendall(mode)
            _echo_handler(sock, address)

    client_errors = []
    with _quiet_hub():
        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        try:
            with Timeout(30):
                for _ in range(connections):
                    c = socket.create_connection(("127.0.0.1", server.server_port))
                    c.sendall(b"R")
                    c.recv(65536)           # the server's sendall is under way
                    _reset(c)
                _wait_until(lambda: len(server_errors) == connections, 10)
                c = socket.create_connection(("127.0.0.1", server.server_port))
                try:
                    c.sendall(b"S" + big)
                    client_errors.append("completed")
                except OSError as exc:
                    client_errors.append(type(exc).__name__)
                finally:
                    c.close()
                payload = b"E" + os.urandom(1000).hex().encode()
                still_serving = _echo_once(server.server_port, payload)
        finally:
            server.stop()
    expected = {"ConnectionResetError", "BrokenPipeError"}
    ok = (len(server_errors) == connections and set(server_errors) <= expected
          and set(client_errors) <= expected and len(client_errors) == 1 and still_serving)
    return Outcome("peer_reset_mid_sendall", connections + 1, ok, 0 if still_serving else 1,
                   f"server sendall: {server_errors}; client sendall: {client_errors}")


def handler_raises_memoryerror(bad: int = 5, good: int = 5) -> Outcome:
    """A handler raising MemoryError is reported and its connection closed;
    other connections (before and after) are served; so is a bare greenlet."""
    from labkit import Timeout, socket, spawn
    from labkit.server import StreamServer

    def handle(sock, address):
        data = sock.recv(65536)
        if data.startswith(b"boom"):
            raise MemoryError("simulated: the handler ran out of memory")
        sock.sendall(data)

    lost = 0
    closed_by_server = 0
    with _quiet_hub() as reports:
        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        try:
            with Timeout(30):
                for i in range(max(bad, good)):
                    if i < bad:
                        with socket.create_connection(("127.0.0.1", server.server_port)) as c:
                            c.sendall(b"boom")
                            closed_by_server += c.recv(10) == b""
                    if i < good:
                        lost += not _echo_once(server.server_port, f"hello {i}".encode())
                g = spawn(lambda: (_ for _ in ()).throw(MemoryError("bare greenlet")))
                g.join()
                after = _echo_once(server.server_port, b"still there")
        finally:
            server.stop()
        reported = reports.count("failed with MemoryError")
    ok = (closed_by_server == bad and lost == 0 and after
          and isinstance(g.exception, MemoryError) and reported >= bad + 1)
    return Outcome("handler_raises_memoryerror", bad + 1, ok, lost + (not after),
                   f"{reported} MemoryError reports, {closed_by_server}/{bad} "
                   f"bad connections closed, {good - lost}/{good} good ones served")


def killed_while_holding_lock() -> Outcome:
    """A greenlet killed inside ``with lock:`` releases it; one killed while
    in line (before or after a permit was handed to it) loses no permit."""
    from labkit import sleep, spawn
    from labkit.lock import BoundedSemaphore, RLock, Semaphore

    problems = []
    inputs = 0
    for make in (Semaphore, BoundedSemaphore, RLock):
        lock = make()
        got = []

        def holder():
            with lock:
                sleep(30)

        def waiter(tag):
            with lock:
                got.append(tag)

        h = spawn(holder)
        sleep(0)
        in_line = [spawn(waiter, i) for i in range(3)]
        sleep(0)
        in_line[0].kill()            # 1. killed while waiting in line
        h.kill()                     # 2. killed while holding the lock
        inputs += 2
        for g in in_line:
            g.join(timeout=5)
        if got != [1, 2]:
            problems.append(f"{make.__name__}: waiters got {got}, expected [1, 2]")
        # 3. the permit is handed to a waiter, which is killed before it runs
        if make is not RLock:
            lock.acquire()
            late = spawn(waiter, "late")
            sleep(0)
            lock.release()           # hands the permit to `late` ...
            late.kill(block=False)   # ... which dies before it runs
            late.join(timeout=5)
            inputs += 1
        if lock.locked() or getattr(lock, "_waiters", ()):
            problems.append(f"{make.__name__}: still locked after every holder died")
    return Outcome("killed_while_holding_lock", inputs, not problems,
                   len(problems), "; ".join(problems) or "every permit came back")


def killed_while_waiting_in_queue() -> Outcome:
    """A getter killed while parked leaves no stale waiter; an item handed
    to a getter that is killed before it runs goes back to the queue; a
    putter killed while parked does not add its item."""
    from labkit import sleep, spawn
    from labkit.queue import Channel, Queue

    problems = []
    lost = 0
    for make in (Queue, Channel):
        q = make() if make is Queue else make(1)
        g = spawn(q.get)
        sleep(0)
        g.kill()                                 # 1. killed while parked
        if q.getting():
            problems.append(f"{make.__name__}: a dead getter is still in line")
        if make is Queue:
            q.put("a")
            if q.qsize() != 1 or q.get_nowait() != "a":
                problems.append("Queue: item went to a dead getter")
                lost += 1
            g = spawn(q.get)
            sleep(0)
            q.put("b")                           # 2. handed to g ...
            g.kill(block=False)                  # ... which dies before it runs
            g.join(timeout=5)
            back = [q.get_nowait() for _ in range(q.qsize())]
            taken = [g.value] if g.successful() and g.value == "b" else []
            if back + taken != ["b"]:
                problems.append(f"Queue: handed item accounted {back + taken}")
                lost += 1
        full = Queue(1)
        full.put("kept")
        p = spawn(full.put, "never")
        sleep(0)
        p.kill()                                 # 3. putter killed while parked
        items = [full.get_nowait() for _ in range(full.qsize())]
        if items != ["kept"] or full.putting():
            problems.append(f"{make.__name__}: after a dead putter the queue holds {items}")
    return Outcome("killed_while_waiting_in_queue", 6, not problems, lost,
                   "; ".join(problems) or "no stale waiter, no lost item")


def hostile_clients(good: int = 20, lines: int = 10) -> Outcome:
    """Bad input at an echo server: instant disconnects, resets, garbage
    without a newline, a 1 MiB line, a slow drip, a half-close, idle
    connections -- while well-behaved clients must get every line back."""
    from labkit import Timeout, joinall, sleep, socket, spawn
    from labkit.server import StreamServer

    def handle(sock, address):
        for line in sock.makefile("rb"):
            sock.sendall(line)

    def conn():
        return socket.create_connection(("127.0.0.1", server.server_port), timeout=20)

    lost = [0]
    bad_outcomes = []

    def well_behaved(i):
        with conn() as c:
            f = c.makefile("rb")
            for j in range(lines):
                msg = f"{i}:{j}:{random.getrandbits(64):x}\n".encode()
                c.sendall(msg)
                lost[0] += f.readline() != msg

    def instant_close():
        conn().close()

    def instant_reset():
        _reset(conn())

    def garbage():
        with conn() as c:
            c.sendall(os.urandom(4096).replace(b"\n", b"."))

    def huge_line():
        msg = b"y" * (1 << 20) + b"\n"
        with conn() as c:
            sender = spawn(c.sendall, msg)
            got = c.makefile("rb").readline()
            sender.join()
            lost[0] += got != msg

    def slow_drip():
        with conn() as c:
            msg = b"d" * 200 + b"\n"
            for k in range(len(msg)):
                c.sendall(msg[k:k + 1])
                if k % 20 == 0:
                    sleep(0.001)
            lost[0] += c.makefile("rb").readline() != msg

    def half_close():
        with conn() as c:
            c.sendall(b"half\n")
            c.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := c.recv(100):
                data += chunk
            lost[0] += data != b"half\n"

    hostile = ([instant_close] * 20 + [instant_reset] * 20 + [garbage] * 10
               + [huge_line] * 2 + [slow_drip] * 3 + [half_close] * 5)
    with _quiet_hub():
        server = StreamServer(("127.0.0.1", 0), handle, backlog=256)
        server.start()
        try:
            idle = [conn() for _ in range(10)]            # never send a byte
            with Timeout(60):
                jobs = [spawn(f) for f in hostile] + [spawn(well_behaved, i) for i in range(good)]
                random.shuffle(jobs)
                joinall(jobs)
                bad_outcomes = [g for g in jobs if not g.successful()]
                still = _echo_once(server.server_port, b"after the storm\n")
            for c in idle:
                c.close()
        finally:
            server.stop()
    ok = not bad_outcomes and lost[0] == 0 and still and server.closed
    detail = (f"{len(hostile) + len(idle)} hostile connections, {good} clients x {lines} "
              f"lines echoed")
    if bad_outcomes:
        detail += f"; client errors: {[repr(g.exception) for g in bad_outcomes[:3]]}"
    return Outcome("hostile_clients", len(hostile) + len(idle), ok, lost[0], detail)


def bad_api_inputs() -> Outcome:
    """Nonsense arguments get the documented exception, never a crash, and
    the hub works afterwards."""
    import math

    from labkit import Timeout, sleep, socket, spawn
    from labkit._loop import READ, Loop, ffi, lib
    from labkit.hub import get_hub
    from labkit.lock import Semaphore
    from labkit.threadpool import ThreadPool

    loop = get_hub().loop
    s = socket.socket()
    r, w = os.pipe()
    os.close(w)
    os.close(r)                       # r is a closed fd number (nothing opened after)
    nothing = lambda events: None     # noqa: E731
    cases = [
        ("sleep(nan)", lambda: sleep(math.nan), ValueError),
        ("sleep('1')", lambda: sleep("1"), TypeError),
        ("Timeout(nan)", lambda: Timeout(math.nan), ValueError),
        ("Timeout('1')", lambda: Timeout("1"), TypeError),   # (exception= may be any object: gevent)
        ("io_start(fd=-1)", lambda: loop.io_start(-1, READ, nothing), ValueError),
        ("io_start(event=99)", lambda: loop.io_start(0, 99, nothing), ValueError),
        ("io_start(closed fd)", lambda: loop.io_start(r, READ, nothing), OSError),
        ("timer(nan)", lambda: loop.timer(math.nan, nothing), ValueError),
        ("Loop(backend='kqueue')", lambda: Loop("kqueue"), ValueError),
        ("settimeout(-1)", lambda: s.settimeout(-1), ValueError),
        ("settimeout('x')", lambda: s.settimeout("x"), TypeError),
        ("settimeout(nan)", lambda: s.settimeout(math.nan), ValueError),
        ("Semaphore(-1)", lambda: Semaphore(-1), ValueError),
        ("ThreadPool(-1)", lambda: ThreadPool(-1), ValueError),
        ("spawn(42)", lambda: spawn(42).get(), TypeError),
        ("connect(port 1)", lambda: socket.create_connection(("127.0.0.1", 1), timeout=5),
         ConnectionRefusedError),
        ("recv on an unconnected socket", lambda: s.recv(1), OSError),
    ]
    out = ffi.new("lk_event[]", 1)
    c_cases = [
        ("lk_poll(max_events=0)", lambda: lib.lk_poll(loop.c_handle, 0, out, 0), lambda rc: rc < 0),
        ("lk_poll(NULL)", lambda: lib.lk_poll(loop.c_handle, 0, ffi.NULL, 8), lambda rc: rc < 0),
        ("lk_timer_cancel(-1)", lambda: lib.lk_timer_cancel(loop.c_handle, -1), lambda rc: rc == 0),
        ("lk_timer_cancel(2**31-1)", lambda: lib.lk_timer_cancel(loop.c_handle, 2**31 - 1),
         lambda rc: rc == 0),
        ("lk_io_set(fd=2**30)", lambda: lib.lk_io_set(loop.c_handle, 2**30, READ), lambda rc: rc < 0),
        ("lk_io_set(mask=0xff)", lambda: lib.lk_io_set(loop.c_handle, 0, 0xFF), lambda rc: rc < 0),
        ("lk_loop_new(backend=99)", lambda: lib.lk_loop_new(99), lambda p: p == ffi.NULL),
    ]
    wrong = []
    try:
        for name, call, expected in cases:
            try:
                call()
                wrong.append(f"{name}: no error")
            except expected:
                pass
            except Exception as exc:  # noqa: BLE001 - any other type is the finding
                wrong.append(f"{name}: {type(exc).__name__} instead of {expected.__name__}")
        for name, call, good in c_cases:
            if not good(call()):
                wrong.append(f"{name}: unexpected result")
    finally:
        s.close()
    hub_works = spawn(lambda: (sleep(0.001), "ok")[1]).get() == "ok"
    return Outcome("bad_api_inputs", len(cases) + len(c_cases), not wrong and hub_works, 0,
                   "; ".join(wrong) or "every bad argument got its documented error")


def fd_closed_and_reused() -> Outcome:
    """An fd waited on with wait_read, closed with plain os.close (as
    subprocess, select users and libraries do), whose number is reused by a
    new pipe: waiting on the new fd must wake when it is readable."""
    from labkit import Timeout
    from labkit.hub import get_hub, wait_read

    woke = 0
    rounds = 2
    for _ in range(rounds):
        r, w = os.pipe()
        os.write(w, b"x")
        wait_read(r)
        os.close(r)
        os.close(w)
        r2, w2 = os.pipe()               # usually the same numbers again
        os.write(w2, b"y")
        try:
            with Timeout(1):
                wait_read(r2)
            woke += 1
        except Timeout:
            pass
        finally:
            get_hub().loop.io_forget(r2)
            os.close(r2)
            os.close(w2)
    return Outcome("fd_closed_and_reused", rounds, woke == rounds, rounds - woke,
                   f"{woke}/{rounds} waits on a reused fd number woke"
                   + ("" if woke == rounds else
                      " -- the loop's fd table kept the closed fd's mask, so the "
                      "new fd was never registered with epoll"))


# -- scenarios in a process of their own ----------------------------------------
#
# Each judges the JSON line of its child, the function of the same name in
# labkit/bench/_robustness_children.py.

def emfile_accept_backoff(clients: int = 30, spare_fds: int = 10) -> Outcome:
    """The server process hits its fd limit (RLIMIT_NOFILE lowered in a
    child): accept() fails with EMFILE; the accept loop must back off (not
    spin), keep the pending connections, and serve them all once fds are
    freed."""
    import select as _select
    import socket as _stdlib

    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.bench.robustness", "--child", "emfile_server",
         str(spare_fds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks = []
    try:
        port = json.loads(proc.stdout.readline())["port"]
        for i in range(clients):
            s = _stdlib.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"ping {i}\n".encode())
            socks.append(s)
        echoed = set()

        def collect(wait: float, hang_up: bool) -> None:
            deadline = time.monotonic() + wait
            while len(echoed) < clients and time.monotonic() < deadline:
                rest = [s for i, s in enumerate(socks) if i not in echoed]
                readable, _, _ = _select.select(rest, [], [], 0.1)
                for s in readable:
                    i = socks.index(s)
                    if s.recv(100) == f"ping {i}\n".encode():
                        echoed.add(i)
                        if hang_up:        # a finished client frees a server fd
                            s.close()

        collect(1.5, hang_up=False)        # the first few are served; then EMFILE
        stalled = len(echoed)
        for i in sorted(echoed):           # free fds in the server: it must recover
            socks[i].close()
        collect(20, hang_up=True)
        recovered = len(echoed) - stalled
        for s in socks:
            s.close()
        s = _stdlib.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"after\n")
        s.settimeout(10)
        fresh_ok = s.recv(100) == b"after\n"
        s.close()
        out, _ = proc.communicate("", timeout=30)
        stats = json.loads(out.strip().splitlines()[-1])
    finally:
        for s in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rate = stats["emfile_reports"] / max(stats["emfile_span"], 0.5)
    ok = (stats["emfile_reports"] >= 1 and rate < 50 and len(echoed) == clients
          and fresh_ok and stalled < clients)
    return Outcome("emfile_accept_backoff", stats["emfile_reports"], ok, clients - len(echoed),
                   f"{stalled} served before EMFILE, {recovered} after fds were freed; "
                   f"{stats['emfile_reports']} EMFILE reports in {stats['emfile_span']:.1f} s "
                   f"({rate:.0f}/s: backing off, not spinning)")


def keyboard_interrupt_while_dispatching(signals: int = 5) -> Outcome:
    """SIGINT (from a thread) while the hub is busy dispatching callbacks
    and timers: each one reaches the main greenlet as exactly one
    KeyboardInterrupt; no timer is dropped; the hub works afterwards."""
    answer = _run_child(f"keyboard_interrupt:{signals}")
    if "error" in answer:
        return Outcome("keyboard_interrupt_while_dispatching", signals, False, 0,
                       answer["error"])
    ok = (answer["interrupts"] == signals and answer["timers_lost"] == 0
          and answer["after_ok"])
    return Outcome("keyboard_interrupt_while_dispatching", signals, ok, answer["timers_lost"],
                   f"{answer['interrupts']}/{signals} KeyboardInterrupts in main, "
                   f"{answer['in_hub']} caught while the hub ran, "
                   f"{answer['workers_interrupted']} worker greenlets interrupted, "
                   f"{answer['timers']} timers all fired, {answer['switches']} switches")


def fork_with_live_servers() -> Outcome:
    """fork() in a process with a live server: the child closes the
    inherited server, starts its own hub work and server and serves; the
    parent's server keeps serving during and after the child's life."""
    answer = _run_child("fork")
    if "error" in answer:
        return Outcome("fork_with_live_servers", 1, False, 0, answer["error"])
    lost = answer["parent_lost"] + answer["child_lost"]
    ok = answer["child_exit"] == 0 and lost == 0 and answer["parent_after_ok"]
    return Outcome("fork_with_live_servers", 1, ok, lost,
                   f"child served {answer['child_served']} on its own server and reached "
                   f"the parent's; parent served {answer['parent_served']} while the "
                   f"child lived (child exit {answer['child_exit']})")


# -- the report ----------------------------------------------------------------

SCENARIOS = {f.__name__: f for f in (
    peer_reset_mid_sendall, handler_raises_memoryerror, killed_while_holding_lock,
    killed_while_waiting_in_queue, hostile_clients, bad_api_inputs,
    fd_closed_and_reused, emfile_accept_backoff, keyboard_interrupt_while_dispatching,
    fork_with_live_servers,
)}

def _fresh_hub() -> None:
    from labkit.hub import _local
    hub = getattr(_local, "hub", None)
    if hub is not None:
        hub.destroy()


def run(names=None) -> list:
    """Run the named scenarios (default: all), each on a fresh hub."""
    outcomes = []
    for name in names or SCENARIOS:
        _fresh_hub()
        try:
            outcomes.append(SCENARIOS[name]())
        except Exception as exc:  # noqa: BLE001 - a crash is an outcome too
            outcomes.append(Outcome(name, 1, False, 0, f"crashed: {exc!r}"))
        _fresh_hub()
    return outcomes


def format_summary(outcomes) -> str:
    """The table and the one-line summary (a pure function, for tests)."""
    width = max([len(o.name) for o in outcomes] + [8])
    rows = [f"{'scenario':<{width}}  inputs  survived  lost  detail"]
    for o in outcomes:
        rows.append(f"{o.name:<{width}}  {o.inputs:>6}  {'yes' if o.survived else 'NO':<8}"
                    f"  {o.lost:>4}  {o.detail}")
    survived = sum(o.survived for o in outcomes)
    rows.append("")
    rows.append(f"inputs tried: {sum(o.inputs for o in outcomes)}   "
                f"faults survived: {survived}/{len(outcomes)}   "
                f"items lost: {sum(o.lost for o in outcomes)}")
    return "\n".join(rows)


def main(argv=None) -> int:
    """Run the scenarios and print the summary; 0 if all survived with
    nothing lost. ``--child`` is the entry point of the subprocess ones."""
    parser = argparse.ArgumentParser(prog="python -m labkit bench --robustness",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help=f"run only these scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        # Imported here: only the child process runs these.
        from labkit.bench._robustness_children import CHILDREN
        name, _, arg = args.child.partition(":")
        CHILDREN[name](*([arg] if arg else args.child_args))
        return 0
    names = [n.strip() for n in args.only.split(",")] if args.only else None
    unknown = [n for n in names or () if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    from labkit.hub import get_hub
    print(f"labkit robustness, backend {os.environ.get('LABKIT_BACKEND') or 'default'} "
          f"({get_hub().loop.backend_name})\n")
    outcomes = run(names)
    print(format_summary(outcomes))
    return 0 if all(o.survived and o.lost == 0 for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
