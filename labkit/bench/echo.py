"""TCP echo: messages per second through a server, driven from another process.

    python -m labkit.bench.echo              N = 1 and 50 connections, ~2 s each
    python -m labkit.bench.echo --full       also N = 500
    python -m labkit.bench.echo --idle       also hold 10,000 idle connections
    python -m labkit.bench.echo --quick      a smoke run (N = 1, 0.3 s)

What is measured. A closed loop: each of N connections sends 1 KiB and waits
for all 1024 bytes to come back before it sends again, so the rate is set by
the round trip through the server. The same client drives every server:

    ============ ============================================================
    labkit       labkit.server.StreamServer, a greenlet per connection
    labkit-loop  labkit's loop with no greenlet: a read callback per
                 connection (``hub.loop.io_start``), the counterpart of
                 uvloop-proto: what the loop costs, without the greenlet
                 switches and socket methods of a StreamServer handler
    traced       the same while ``tracing`` records everything
    flight       the same with the flight recorder on (tracing/flight.py: the
                 ring always on, blocking monitor at 100 ms)
    console      the same with a ``tracing.Console`` open and refreshing every
                 250 ms, its timeline tab shown (its widgets talk to no
                 frontend; opt-in: --impls); the server starts serving once
                 the Console has drawn its first frame (see until_drawn)
    attached     the same serving the console (labkit.console.serve()), with
                 ``python -m labkit console PID`` attached from another
                 process, refreshing every 250 ms (opt-in: --impls)
    gevent       gevent.server.StreamServer, the same handler, textually
    asyncio      asyncio streams (``start_server``, read/write/drain)
    uvloop       the same streams code on uvloop
    uvloop-proto uvloop with a bare Protocol (``data_received`` -> write)
    ============ ============================================================

The numbers are messages per second: **higher is better**, and the ratio
column is labkit / peer, so above 1.00× labkit is faster (the opposite of
the micro benchmarks' per-operation times). For the traced row the ratio is
untraced / traced: the slowdown tracing costs.

Three processes, so that nothing but the kernel's loopback sits between
client and server::

    driver (main)  --starts-->  server:  python -m labkit.bench.echo _serve IMPL
                                         prints "PORT <n>", serves until killed
                   --starts-->  client:  python -m labkit.bench.echo _load PORT N S PID
                                         prints one JSON line: msgs/s, CPU use

Why the load client is uvloop with a Protocol (plain asyncio if uvloop is
missing): per message it runs one small Python callback, and the socket work
(epoll, recv, send, buffering) is C. A selectors-based Python client would
spend about as much Python per message as the server under test, so on a
two-core machine the client, not the server, would set the pace. The client
reports its own and the server's CPU use over the measured window: a server
near 100% while the client has headroom is a server-bound measurement.

``--idle`` holds 10,000 (``--idle-conns``) concurrent idle connections to a
labkit StreamServer and reports its memory per connection: the server's RSS
after one warm-up connection, and again once every connection has echoed one
byte (which proves that every handler is running and parked in recv), and
SETTLE_S seconds more. Both processes raise RLIMIT_NOFILE to the hard limit
first. RSS is the process's own memory: the kernel's socket structures and
buffers are not in it (a plain epoll loop holding the same connections adds
~0.2 KiB each).

``--idle-impls`` also takes HTTP keep-alive servers, measured only here:
each connection sends one ``GET /`` and, once answered, stays open idle.

    ============ ============================================================
    wsgi         labkit.wsgi.WSGIServer: an idle keep-alive connection falls
                 asleep after ``sleep_after`` (0.1 s): a read watcher, no greenlet
    wsgi-awake   the same with ``sleep_after=None``: a greenlet parked in recv
                 per connection (what every connection cost before)
    gevent-wsgi  gevent.pywsgi.WSGIServer
    ============ ============================================================

Timings on a shared machine are noisy: compare rows of one run, and use
``--repeats`` (the best run counts) for anything you quote.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

LABKIT = "labkit"
IMPLS = ("labkit", "labkit-loop", "traced", "flight", "gevent", "asyncio", "uvloop",
         "uvloop-proto")
#: measured only when named in --impls
OPT_IN_IMPLS = ("console", "attached")
#: HTTP servers, for --idle-impls only (see the module docstring)
IDLE_HTTP_IMPLS = ("wsgi", "wsgi-awake", "gevent-wsgi")
DESCRIPTIONS = {
    "labkit": "labkit StreamServer",
    "labkit-loop": "labkit loop, a callback per fd",
    "traced": "labkit StreamServer, traced",
    "flight": "labkit StreamServer, flight recorder",
    "console": "labkit StreamServer, Console open",
    "attached": "labkit StreamServer, console attached",
    "gevent": "gevent StreamServer",
    "asyncio": "asyncio streams",
    "uvloop": "uvloop streams",
    "uvloop-proto": "uvloop protocol",
    "wsgi": "labkit WSGIServer, keep-alive",
    "wsgi-awake": "labkit WSGIServer sleep_after=None, keep-alive",
    "gevent-wsgi": "gevent pywsgi WSGIServer, keep-alive",
}
#: what must import for an implementation to run (else it reads "n/a")
REQUIRES = {"labkit": "labkit", "labkit-loop": "labkit", "traced": "tracing",
            "flight": "tracing", "console": "ipywidgets",
            "attached": "rich", "gevent": "gevent",
            "asyncio": "asyncio", "uvloop": "uvloop", "uvloop-proto": "uvloop",
            "wsgi": "labkit", "wsgi-awake": "labkit", "gevent-wsgi": "gevent"}

MESSAGE_SIZE = 1024
CONNS = (1, 50)
FULL_CONNS = (1, 50, 500)
DURATION_S = 2.0
WARMUP_S = 0.3
QUICK_DURATION_S = 0.3
IDLE_CONNS = 10_000
#: idle connections opened from one source address (see hold_idle)
IDLE_PER_SOURCE = 20_000
#: seconds the --idle driver waits after the last connection answered, before
#: it reads the server's RSS: an idle labkit WSGI connection falls asleep
#: after its sleep_after (0.1 s) and the reaper's next pass (<= 1 s)
SETTLE_S = 2.5
#: what the HTTP idle client sends on each connection
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
BACKLOG = 1024
#: seconds a server or client may take before it is declared stuck
STARTUP_TIMEOUT_S = 30

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --- servers (each runs in a process of its own) ---------------------------

def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit -- or, where the
    process may (root), both to 2**20 (50,000 idle connections need more
    than the usual 20,000 hard limit); return the soft limit now."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1 << 20:
        hard = 1 << 20
    if hard < 1 << 20:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
            return 1 << 20
        except (ValueError, OSError):   # not privileged: up to the hard limit
            pass
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def announce_port(port: int) -> None:
    print(f"PORT {port}", flush=True)


def echo_handler_gevent_like(gk_socket):
    """The per-connection handler, identical for labkit and gevent."""
    nodelay = (gk_socket.IPPROTO_TCP, gk_socket.TCP_NODELAY, 1)

    def handle(sock, address):
        sock.setsockopt(*nodelay)   # labkit does this already; gevent does not
        recv, sendall = sock.recv, sock.sendall
        try:
            while True:
                data = recv(65536)
                if not data:
                    break
                sendall(data)
        except ConnectionResetError:
            pass   # the client ends a run without reading its last echo
    return handle


def until_drawn(console, timeout: float = STARTUP_TIMEOUT_S) -> float:
    """Run the hub until ``console`` has shown a frame and its timeline has
    drawn a picture; the process CPU seconds that took. The measured runs
    then see the Console open and refreshing, as on a service it was opened
    on, not opening: its one-time start (matplotlib's import, axes and
    legend, the first look at every greenlet) took ~0.7 s of CPU here, a
    third of a 2 s run."""
    import labkit
    cpu, deadline = time.process_time(), time.monotonic() + timeout
    while not (console.refreshes and console.dashboard is not None
               and console.dashboard.pictures):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Console drew no frame in {timeout:g} s")
        labkit.sleep(0.02)
    return time.process_time() - cpu


def serve_gevent_like(impl: str) -> None:
    if impl == "gevent":
        import gevent.server as server
        import gevent.socket as gk_socket
    else:
        import labkit.server as server
        import labkit.socket as gk_socket
    if impl == "traced":
        import tracing
        tracing.start()
    if impl == "flight":
        import tempfile
        from tracing import flight
        flight.start(tempfile.mkdtemp(prefix="labkit-bench-flight-"), threshold=0.1)
    if impl == "console":
        import tracing
        console = tracing.Console(refresh=0.25)
        console.show_timeline()
        until_drawn(console)
    if impl == "attached":
        import os
        import subprocess
        import labkit.console
        labkit.console.serve()
        subprocess.Popen([sys.executable, "-m", "labkit", "console", str(os.getpid()),
                          "--interval", "0.25"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)   # ends when this server is killed
    # labkit bounds a server's connections (1,000 by default); gevent does
    # not: unbounded for both, or the --idle run stalls at the bound.
    unbounded = {} if impl == "gevent" else {"max_connections": None}
    listener = server.StreamServer(("127.0.0.1", 0), echo_handler_gevent_like(gk_socket),
                                   backlog=BACKLOG, **unbounded)
    listener.start()
    announce_port(listener.server_port)
    listener.serve_forever()


def serve_labkit_loop(impl: str) -> None:
    """Echo with labkit's loop and no greenlet per connection: each
    connection's fd has a one-shot read callback (``Loop.io_start``), which
    receives, sends back and registers itself again -- uvloop-proto's
    ``data_received -> write`` on labkit's loop. A send the kernel does not
    take whole waits for the fd to be writable before reading again."""
    import socket as stdlib_socket
    import labkit
    from labkit._loop import READ, WRITE
    from labkit._lk_poll_py import recv as recv_fd, send as send_fd
    hub = labkit.get_hub()
    loop = hub.loop
    listener = stdlib_socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    listener.setblocking(False)
    connections = {}    # fd -> socket (kept open while served)

    def close(fd: int) -> None:
        # (the loop keeps an fd's interest after a callback fired: forget
        # it before the fd goes, or a new socket given the same number is
        # never watched)
        loop.io_forget(fd)
        connections.pop(fd).close()

    def serve(fd: int) -> None:
        def readable(_events) -> None:
            try:
                data = recv_fd(fd, 65536, 0)
            except BlockingIOError:
                loop.io_start(fd, READ, readable)
                return
            except OSError:
                data = b""
            if not data:
                return close(fd)
            send(data)

        def send(data: bytes) -> None:
            try:
                sent = send_fd(fd, data, 0)
            except BlockingIOError:
                sent = 0
            except OSError:
                return close(fd)
            if sent == len(data):
                loop.io_start(fd, READ, readable)
            else:
                loop.io_start(fd, WRITE, lambda _events: send(data[sent:]))

        loop.io_start(fd, READ, readable)

    def accept(_events) -> None:
        while True:
            try:
                conn, _addr = listener.accept()
            except OSError:    # EAGAIN: all taken; ECONNABORTED, EMFILE: try later
                break
            conn.setblocking(False)
            connections[conn.fileno()] = conn
            serve(conn.fileno())
        loop.io_start(listener.fileno(), READ, accept)

    loop.io_start(listener.fileno(), READ, accept)
    announce_port(listener.getsockname()[1])
    hub.join()


def serve_asyncio_like(impl: str) -> None:
    import asyncio

    async def handle(reader, writer):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionResetError:
            pass   # the client ends a run without reading its last echo
        writer.close()

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        if impl == "uvloop-proto":
            server = await asyncio.get_running_loop().create_server(
                EchoProtocol, "127.0.0.1", 0, backlog=BACKLOG)
        else:
            server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=BACKLOG)
        announce_port(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    run_asyncio(main(), impl)


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def serve_wsgi(impl: str) -> None:
    """An HTTP keep-alive server for the --idle measurement."""
    if impl == "gevent-wsgi":
        from gevent.pywsgi import WSGIServer
        server = WSGIServer(("127.0.0.1", 0), hello_app, log=None, backlog=BACKLOG)
    else:
        from labkit.wsgi import WSGIServer
        options = {"sleep_after": None} if impl == "wsgi-awake" else {}
        server = WSGIServer(("127.0.0.1", 0), hello_app, backlog=BACKLOG,
                            max_connections=None, keepalive_timeout=3600, **options)
    server.start()
    announce_port(server.server_port)
    server.serve_forever()


def run_asyncio(coro, impl: str):
    """Run ``coro`` on uvloop for the uvloop implementations, else asyncio."""
    import asyncio
    if impl.startswith("uvloop"):
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


SERVERS = {
    "labkit": serve_gevent_like, "labkit-loop": serve_labkit_loop,
    "traced": serve_gevent_like, "flight": serve_gevent_like,
    "console": serve_gevent_like, "attached": serve_gevent_like,
    "gevent": serve_gevent_like,
    "asyncio": serve_asyncio_like, "uvloop": serve_asyncio_like,
    "uvloop-proto": serve_asyncio_like,
    "wsgi": serve_wsgi, "wsgi-awake": serve_wsgi, "gevent-wsgi": serve_wsgi,
}


# --- the load client -------------------------------------------------------

def client_loop_impl() -> str:
    """uvloop if installed (see the module docstring for why), else asyncio."""
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:
        return "asyncio"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def closed_loop(port: int, conns: int, seconds: float, server_pid: int,
                warmup: float = WARMUP_S) -> dict:
    """N connections, each: send 1 KiB, wait for all of it, repeat.

    Counts round trips completed during ``seconds`` after ``warmup``.
    """
    import asyncio
    message = b"x" * MESSAGE_SIZE
    done = [0]

    class Client(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.missing = MESSAGE_SIZE
            transport.write(message)

        def data_received(self, data):
            self.missing -= len(data)
            if self.missing <= 0:   # the whole message is back: send the next
                done[0] += 1
                self.missing = MESSAGE_SIZE
                self.transport.write(message)

    async def main():
        loop = asyncio.get_running_loop()
        transports = []
        for _ in range(conns):
            transport, _ = await loop.create_connection(Client, "127.0.0.1", port)
            transports.append(transport)
        await asyncio.sleep(warmup)
        count0, t0 = done[0], time.perf_counter()
        cpu0, server_cpu0 = time.process_time(), cpu_seconds(server_pid)
        await asyncio.sleep(seconds)
        count1, t1 = done[0], time.perf_counter()
        cpu1, server_cpu1 = time.process_time(), cpu_seconds(server_pid)
        for transport in transports:
            transport.close()
        elapsed = t1 - t0
        return {
            "status": "ok", "conns": conns, "seconds": elapsed,
            "msgs_per_s": (count1 - count0) / elapsed,
            "client_cpu": (cpu1 - cpu0) / elapsed,
            "server_cpu": None if server_cpu0 is None or server_cpu1 is None
            else (server_cpu1 - server_cpu0) / elapsed,
        }

    return run_asyncio(main(), client_loop_impl())


def hold_idle(port: int, count: int, http: bool = False) -> None:
    """The ``--idle`` client, step by step with the driver (stdin/stdout):
    warm the server up with one connection ("WARM"), wait for "go", open
    ``count`` connections and echo one byte on each -- or, with ``http``,
    send one GET and read its answer -- ("READY"), wait for "done", close
    them all."""
    ping = HTTP_REQUEST if http else b"!"
    import asyncio
    raise_fd_limit()

    class Pinger(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            self.echoed = asyncio.get_running_loop().create_future()

        def data_received(self, data):
            if not self.echoed.done():
                self.echoed.set_result(data)

    async def connect_and_ping(loop, index=0):
        # One source address has ~28,000 ephemeral ports towards one server
        # port (ip_local_port_range): past IDLE_PER_SOURCE connections the
        # next ones come from 127.0.0.2, 127.0.0.3 ... (all of 127/8 is local).
        source = None
        if count > IDLE_PER_SOURCE:
            k = index // IDLE_PER_SOURCE
            source = (f"127.0.{k // 250}.{2 + k % 250}", 0)
        transport, protocol = await loop.create_connection(Pinger, "127.0.0.1", port,
                                                           local_addr=source)
        transport.write(ping)
        await protocol.echoed
        return transport

    async def main():
        loop = asyncio.get_running_loop()
        (await connect_and_ping(loop)).close()
        print("WARM", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        start = time.perf_counter()
        transports = []
        batch = 200   # connects in flight at once: below the listen backlog
        for first in range(0, count, batch):
            transports += await asyncio.gather(
                *(connect_and_ping(loop, first + i) for i in range(min(batch, count - first))))
        print(f"READY {len(transports)} {time.perf_counter() - start:.2f}", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        for transport in transports:
            transport.close()
        await asyncio.sleep(0.1)

    run_asyncio(main(), client_loop_impl())


# --- the driver ------------------------------------------------------------

def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labkit.bench.echo", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _read_line(proc: subprocess.Popen, timeout: float = STARTUP_TIMEOUT_S) -> str:
    """The next stdout line of ``proc``; RuntimeError with its stderr if it
    dies or says nothing for ``timeout`` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        _stop(proc)
        last = (proc.stderr.read().strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(last)
    return line.strip()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_server(impl: str) -> tuple[subprocess.Popen, int]:
    server = _spawn("_serve", impl)
    line = _read_line(server)
    if not line.startswith("PORT "):
        _stop(server)
        raise RuntimeError(f"unexpected server output {line!r}")
    return server, int(line.split()[1])


def run_client(server: subprocess.Popen, port: int, conns: int, seconds: float) -> dict:
    """One closed-loop run against a running server: the client's JSON dict,
    or ``{"status": "failed", "reason": ...}``."""
    client = _spawn("_load", str(port), str(conns), str(seconds), str(server.pid))
    try:
        out = json.loads(_read_line(client, STARTUP_TIMEOUT_S + seconds))
    except (RuntimeError, ValueError) as exc:
        out = {"status": "failed", "reason": str(exc)}
    finally:
        _stop(client)
    if server.poll() is not None:
        out = {"status": "failed", "reason": "the server died: " +
               (server.stderr.read().strip().splitlines() or ["?"])[-1]}
    return out


def measure(impls, conns_list, seconds: float, repeats: int) -> dict:
    """``{impl: {conns: result dict}}``, the best of ``repeats`` runs each
    (its ``"runs"``: msgs/s and server µs/msg of every run, for medians
    and spreads).

    Every server is started first and the client runs take turns (labkit,
    gevent, ..., labkit, gevent, ...), so that a burst of load from other
    programs on the machine hits all of them alike rather than one row.
    A server that cannot run reads ``{"status": "n/a" | "failed"}``.
    """
    results, servers = {}, {}
    all_runs: dict = {}   # (impl, conns) -> msgs/s of every run ("runs" in the result)
    try:
        for impl in impls:
            try:
                __import__(REQUIRES[impl])
                servers[impl] = start_server(impl)
                results[impl] = {}
            except ImportError as exc:
                results[impl] = {n: {"status": "n/a", "reason": str(exc)} for n in conns_list}
            except RuntimeError as exc:
                results[impl] = {n: {"status": "failed", "reason": str(exc)}
                                 for n in conns_list}
        for conns in conns_list:
            for _ in range(repeats):
                for impl, (server, port) in servers.items():
                    out = run_client(server, port, conns, seconds)
                    samples = all_runs.setdefault((impl, conns), [])
                    rate, cpu = out.get("msgs_per_s"), out.get("server_cpu")
                    samples.append({"msgs_per_s": rate, "srv_us_per_msg":
                                    cpu / rate * 1e6 if cpu and rate else None})
                    best = results[impl].get(conns)
                    if best is None or out.get("msgs_per_s", -1) > best.get("msgs_per_s", -1):
                        results[impl][conns] = out
                    results[impl][conns]["runs"] = samples   # every run, in order
    finally:
        for server, _ in servers.values():
            _stop(server)
    return results


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/PID/status")


def measure_idle(impl: str, count: int) -> dict:
    """Hold ``count`` idle connections to a server of ``impl``; its memory."""
    server, port = start_server(impl)
    client = _spawn("_idle", str(port), str(count),
                    "http" if impl in IDLE_HTTP_IMPLS else "echo")
    try:
        if _read_line(client) != "WARM":
            raise RuntimeError("idle client did not warm up")
        time.sleep(0.3)   # let the warm-up connection's handler finish
        before = rss_bytes(server.pid)
        client.stdin.write("go\n")
        client.stdin.flush()
        _, held, connect_s = _read_line(client, STARTUP_TIMEOUT_S + count / 100).split()
        time.sleep(SETTLE_S)
        after = rss_bytes(server.pid)
        client.stdin.write("done\n")
        client.stdin.flush()
        client.wait(STARTUP_TIMEOUT_S)
    finally:
        _stop(client)
        _stop(server)
    held = int(held)
    return {"impl": impl, "held": held, "connect_s": float(connect_s),
            "rss_before": before, "rss_after": after,
            "per_conn": (after - before) / held if held else None}


# --- results -> text (pure functions) --------------------------------------

def ratio(labkit_result, peer_result):
    """labkit msgs/s / peer msgs/s, or None if either is missing."""
    if not labkit_result or not peer_result:
        return None
    a, b = labkit_result.get("msgs_per_s"), peer_result.get("msgs_per_s")
    return a / b if a and b else None


def format_table(results: dict, conns_list) -> str:
    """``results[impl][conns]`` -> the table: one row per server, per N the
    msgs/s, the ratio labkit/peer, and CPU use of server/client."""
    header = ["server"]
    for conns in conns_list:
        header += [f"N={conns} msg/s", "labkit/peer", "srv µs/msg", "cpu srv/cli"]
    rows = [header]
    base = results.get(LABKIT, {})
    for impl, by_conns in results.items():
        row = [DESCRIPTIONS.get(impl, impl)]
        for conns in conns_list:
            result = by_conns.get(conns) or {}
            if result.get("status") != "ok":
                row += [result.get("status", "n/a"), "", "", ""]
                continue
            r = None if impl == LABKIT else ratio(base.get(conns), result)
            cpu = [result.get("server_cpu"), result.get("client_cpu")]
            per_msg = (None if not cpu[0] or not result["msgs_per_s"]
                       else cpu[0] / result["msgs_per_s"] * 1e6)
            row += [f"{result['msgs_per_s']:,.0f}",
                    "-" if impl == LABKIT else "n/a" if r is None else f"{r:.2f}×",
                    "?" if per_msg is None else f"{per_msg:.1f}",
                    "/".join("?" if c is None else f"{c * 100:.0f}%" for c in cpu)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0])] +
                  [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]).rstrip()
        for row in rows)


def format_idle(idle: dict) -> str:
    mib = 1024 * 1024
    return (f"{DESCRIPTIONS.get(idle['impl'], idle['impl'])}: held {idle['held']:,} idle "
            f"connections (opened in {idle['connect_s']:.1f} s); server RSS "
            f"{idle['rss_before'] / mib:.1f} MiB -> {idle['rss_after'] / mib:.1f} MiB, "
            f"{idle['per_conn'] / 1024:.1f} KiB per connection")


LEGEND = ("msg/s: higher is better. labkit/peer = labkit msg/s / peer msg/s: above "
          "1.00× labkit is faster; on the traced row it is the slowdown tracing costs.\n"
          "srv µs/msg: server CPU time per message (lower is better; steadier than msg/s "
          "when other programs load the machine).\n"
          "cpu srv/cli: CPU use of server and client over the measured window "
          "(100% = one core).")


# --- command line ----------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m labkit.bench.echo",
        description="TCP echo benchmark: labkit StreamServer against gevent, asyncio "
                    "and uvloop, load from a uvloop client in another process.")
    parser.add_argument("--full", action="store_true", help="also N = 500 connections")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: N = 1, {QUICK_DURATION_S} s per run")
    parser.add_argument("--idle", action="store_true",
                        help="also hold --idle-conns idle connections and report memory")
    parser.add_argument("--idle-conns", type=int, default=IDLE_CONNS, metavar="COUNT")
    parser.add_argument("--idle-impls", default=LABKIT, metavar="IMPL[,IMPL]",
                        help="servers to hold idle connections to (default: %(default)s)")
    parser.add_argument("--conns", metavar="N[,N]", help="connection counts to run")
    parser.add_argument("--impls", default=",".join(IMPLS), metavar="IMPL[,IMPL]",
                        help="servers to measure (default: %(default)s)")
    parser.add_argument("--seconds", type=float, help=f"measured seconds per run "
                                                      f"(default {DURATION_S})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="client runs per server and N; the best counts")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.impls = [name.strip() for name in args.impls.split(",") if name.strip()]
    args.idle_impls = [name.strip() for name in args.idle_impls.split(",") if name.strip()]
    for name in args.impls:
        if name not in IMPLS + OPT_IN_IMPLS:
            parser.error(f"unknown server {name!r}; choose from "
                         f"{', '.join(IMPLS + OPT_IN_IMPLS)}")
    for name in args.idle_impls:
        if name not in IMPLS + OPT_IN_IMPLS + IDLE_HTTP_IMPLS:
            parser.error(f"unknown server {name!r} for --idle-impls; choose from "
                         f"{', '.join(IMPLS + OPT_IN_IMPLS + IDLE_HTTP_IMPLS)}")
    if args.conns:
        args.conns = [int(n) for n in args.conns.split(",")]
    else:
        args.conns = list(CONNS[:1] if args.quick else FULL_CONNS if args.full else CONNS)
    if args.seconds is None:
        args.seconds = QUICK_DURATION_S if args.quick else DURATION_S
    return args


def main(argv=None) -> int:
    """Entry point: run the selected servers, print the table; returns the
    exit status (1 if a labkit server failed)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = measure(args.impls, args.conns, args.seconds, args.repeats)
    print(f"TCP echo, {MESSAGE_SIZE}-byte messages, closed loop, {args.seconds:g} s per "
          f"run, best of {args.repeats}; load client: {client_loop_impl()} protocol "
          f"in another process; {os.cpu_count()} CPUs")
    print()
    print(format_table(results, args.conns))
    print()
    print(LEGEND)
    for impl, by_conns in results.items():
        for conns, result in by_conns.items():
            if result.get("status") not in ("ok", None):
                print(f"{impl} N={conns}: {result['status']} ({result.get('reason')})")
    idle = []
    if args.idle:
        print()
        for impl in args.idle_impls:
            try:
                idle.append(measure_idle(impl, args.idle_conns))
                print(format_idle(idle[-1]))
            except (RuntimeError, OSError) as exc:
                print(f"{impl}: idle connections failed ({exc})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"results": {impl: {str(n): r for n, r in by.items()}
                                   for impl, by in results.items()},
                       "idle": idle}, f, indent=2)
    labkit_failed = any(r.get("status") == "failed"
                        for impl in (LABKIT, "traced", "flight")
                        for r in results.get(impl, {}).values())
    return 1 if labkit_failed else 0


def _subcommand(argv) -> int:
    """The hidden commands the driver starts processes with."""
    command, rest = argv[0], argv[1:]
    if command == "_serve":
        raise_fd_limit()
        SERVERS[rest[0]](rest[0])
    elif command == "_load":
        port, conns, seconds, server_pid = rest
        print(json.dumps(closed_loop(int(port), int(conns), float(seconds),
                                     int(server_pid))), flush=True)
    elif command == "_idle":
        hold_idle(int(rest[0]), int(rest[1]), rest[2:] == ["http"])
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_subcommand(sys.argv[1:]))
    sys.exit(main())
