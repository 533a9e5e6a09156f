"""Round-trip latency to an echo server spawned in a notebook kernel.

The question this answers: while the kernel sits idle between cells, how
quickly does a greenlet spawned in a cell answer? It starts a real ipykernel
(through jupyter_client, on loopback), runs ``ECHO_SERVER_CODE`` in a cell,
lets the kernel go idle, then sends ``requests`` small messages one at a
time from this process and times each round trip::

    this process                     kernel process (idle between cells)
    ------------                     -----------------------------------
    send 16 bytes  --- TCP --->      asyncio select wakes on the hub's epoll fd
                                     tick: echo greenlet recv()s, send()s
    recv 16 bytes  <--- TCP ---      back to asyncio select
    one sample = send .. recv

Two modes: ``guest`` (``%load_ext labkit``: the kernel loop watches the hub's
epoll fd, event-driven) and ``gui`` (``%gui labkit``: the kernel polls the hub
about every millisecond). The target for guest mode is p99 <= 2 ms.

``notebook_latency(mode)`` returns the figures; ``main()`` prints both modes.
The kernel helpers (``running_kernel``, ``run_cell``) are shared with the
tests (tests/kernel_harness.py).
"""
from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field

from labkit.bench._net import recv_exactly

#: A cell that starts a TCP echo server and a pinger, with plain stdlib
#: sockets made cooperative by labkit.wait_read / wait_write. Defines
#: ``echo_port`` (where it listens) and ``pings`` (one timestamp per 50 ms).
ECHO_SERVER_CODE = r'''
import socket as _socket, time as _time
import labkit

def _echo_connection(conn):
    conn.setblocking(False)
    try:
        while True:
            labkit.wait_read(conn.fileno())
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue                      # spurious wake-up: wait again
            if not data:
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[conn.send(view):]
                except BlockingIOError:
                    labkit.wait_write(conn.fileno())
    finally:
        # The hub must forget an fd before it is closed: the number will be
        # reused by the next accept(), and a stale registration would hide it
        # from epoll. (labkit.socket does this for you.)
        labkit.get_hub().loop.io_forget(conn.fileno())
        conn.close()

def _echo_accept(listener):
    while True:
        labkit.wait_read(listener.fileno())
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        labkit.spawn(_echo_connection, conn)

def _pinger(pings):
    while True:
        pings.append(_time.monotonic())
        labkit.sleep(0.05)

echo_listener = _socket.create_server(("127.0.0.1", 0))
echo_listener.setblocking(False)
echo_port = echo_listener.getsockname()[1]
echo_server = labkit.spawn(_echo_accept, echo_listener)
pings = []
pinger = labkit.spawn(_pinger, pings)
print("echo_port", echo_port)
'''


@dataclass
class CellResult:
    """What one executed cell produced, as seen by the client."""
    status: str                      # "ok", "error", or "timeout"
    stdout: str = ""
    stderr: str = ""
    ename: str | None = None         # exception class name when status == "error"
    evalue: str | None = None
    msg_id: str | None = None
    outputs: list = field(default_factory=list)   # every iopub message, in order
    reply: dict | None = None        # the execute_reply's content (None on a timeout)


@contextlib.contextmanager
def running_kernel(startup_timeout: float = 30):
    """A fresh ipykernel (this interpreter), and a client with its channels
    started. The kernel is always shut down on exit."""
    from jupyter_client import KernelManager
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = None
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=startup_timeout)
        yield km, kc
    finally:
        if kc is not None:
            kc.stop_channels()
        km.shutdown_kernel(now=True)


def run_cell(kc, code: str, timeout: float = 10, subshell_id: str | None = None) -> CellResult:
    """Execute ``code``; collect its stream output and outcome until it is
    idle, then read its execute_reply from the shell channel (replies to
    other requests read on the way are dropped).

    Waiting for the reply, as nbclient does, is what keeps a kernel on
    ipykernel 7.0-7.3 answering: those releases (7.3 is the last for Python
    3.10) send replies past the shell socket's stream, and a request that
    arrives while a reply is being sent can stay unread for good -- the
    kernel then never answers again (fixed in ipykernel 7.4). A client that
    sends its next request only once the previous reply is in never sends
    into that moment.

    ``subshell_id`` sends the request to a kernel subshell (ipykernel 7).
    """
    msg = kc.session.msg("execute_request", {
        "code": code, "silent": False, "store_history": True,
        "user_expressions": {}, "allow_stdin": False, "stop_on_error": False})
    if subshell_id is not None:
        msg["header"]["subshell_id"] = subshell_id
    kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    result = CellResult(status="timeout", msg_id=msg_id)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return result
        try:
            out = kc.get_iopub_msg(timeout=remaining)
        except Exception:  # queue.Empty
            return result
        if out["parent_header"].get("msg_id") != msg_id:
            continue
        result.outputs.append(out)
        kind, content = out["msg_type"], out["content"]
        if kind == "stream":
            if content["name"] == "stdout":
                result.stdout += content["text"]
            else:
                result.stderr += content["text"]
        elif kind == "error":
            result.ename, result.evalue = content["ename"], content["evalue"]
        elif kind == "status" and content["execution_state"] == "idle":
            break
    # The kernel sends the reply just before idle, through one more thread:
    # it may come a little after, even when idle came at the deadline.
    deadline = max(deadline, time.monotonic() + 2)
    while result.reply is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return result
        try:
            reply = kc.get_shell_msg(timeout=remaining)
        except Exception:  # queue.Empty
            return result
        if reply["parent_header"].get("msg_id") == msg_id:
            result.reply = reply["content"]
    result.status = "error" if result.ename else "ok"
    return result


def echo_round_trips(port: int, requests: int, payload: bytes = b"x" * 16) -> list[float]:
    """Send ``payload`` ``requests`` times, one at a time; seconds per round trip."""
    samples = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(requests):
            start = time.perf_counter()
            conn.sendall(payload)
            if len(recv_exactly(conn, len(payload))) < len(payload):
                raise ConnectionError("the echo server closed the connection")
            samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], fraction: float) -> float:
    """The sample below which ``fraction`` of the samples lie (nearest rank)."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


ENABLE_CODE = {
    "guest": "%load_ext labkit",
    "gui": "import labkit, labkit.jupyter\n%gui labkit",
}


def notebook_latency(mode: str = "guest", requests: int = 1000, warmup: int = 50) -> dict:
    """Median and p99 round trip (milliseconds) to a notebook-spawned echo
    server while the kernel is idle. ``mode`` is "guest" or "gui"."""
    if mode not in ENABLE_CODE:
        raise ValueError(f"mode must be one of {sorted(ENABLE_CODE)}, not {mode!r}")
    with running_kernel() as (_km, kc):
        for code in (ENABLE_CODE[mode], ECHO_SERVER_CODE):
            cell = run_cell(kc, code, timeout=20)
            if cell.status != "ok":
                raise RuntimeError(f"kernel cell failed: {cell.ename}: {cell.evalue}\n"
                                   f"{cell.stderr}")
        port = int(cell.stdout.split()[-1])
        time.sleep(0.2)  # let the kernel settle into idle
        echo_round_trips(port, warmup)
        samples = echo_round_trips(port, requests)
    return {
        "mode": mode,
        "requests": requests,
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": percentile(samples, 0.99) * 1e3,
        "max_ms": max(samples) * 1e3,
    }


def format_result(result: dict) -> str:
    return (f"{result['mode']:>6}: median {result['median_ms']:.3f} ms   "
            f"p99 {result['p99_ms']:.3f} ms   max {result['max_ms']:.3f} ms   "
            f"({result['requests']} requests)")


def main(argv: list[str] | None = None) -> int:
    """Print the latency in guest mode and with the %gui fallback."""
    requests = int(argv[0]) if argv else 1000
    print("round trip to a notebook-spawned echo server, kernel idle")
    for mode in ("guest", "gui"):
        try:
            print(format_result(notebook_latency(mode, requests)))
        except Exception as exc:  # no ipykernel/jupyter_client: report, don't crash
            print(f"{mode:>6}: n/a ({type(exc).__name__}: {exc})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
