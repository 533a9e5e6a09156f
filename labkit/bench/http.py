"""HTTP hello-world throughput: labkit's WSGIServer against other Python servers.

    python -m labkit.bench.http [--duration 2] [--connections 50] [--rounds 3] [--only labkit,uvicorn]
                                [--head wrk|browser]

Unlike the micro benchmarks (time per operation, lower is better), this one
counts requests per second, so its ratio is labkit / peer and HIGHER IS
BETTER: 2.00× means labkit served twice as many requests.

How it measures: for each server, a fresh process serves the same
hello-world app (WSGI, or ASGI for uvicorn) on a free loopback port, one
process and one worker each; then ``wrk -t1 -c50`` runs a 1 s warm-up and
the measured run. Every server is started first and the wrk runs take
turns, ``--rounds`` times (labkit, granian, ..., labkit, granian, ...); the
table shows the median and the spread (half the range) of the rounds.

wrk and the server share the machine: on a small or busy machine the
absolute numbers say as much about the neighbours as about the servers.
So the table also shows the server's CPU time per request (``srv µs/req``:
user + system time of the server's whole process tree, every thread,
over the measured run, divided by the requests): that is the work a
server does per request, and it is steadier than req/s. It is also the
fair comparison with a server that uses more than one core: granian's one
worker runs its Rust I/O runtime in threads beside the Python thread
(``cpu`` > 100% when it does), while labkit, gevent and uvicorn are one
thread each.

The servers:

- ``labkit``: labkit.wsgi.WSGIServer.
- ``labkit-flight``: the same with the flight recorder on (tracing/flight.py,
  blocking monitor at 100 ms): the always-on tracing's cost.
- ``labkit-gunicorn``: the same behind ``gunicorn -k labkit.gunicorn.Worker -w 1``.
- ``gevent-pywsgi``: gevent.pywsgi.WSGIServer (``log=None``).
- ``gunicorn-gevent``: ``gunicorn -k gevent -w 1``.
- ``uvicorn``: ``uvicorn --loop uvloop --http httptools`` with an ASGI app.
- ``granian``: granian (a Rust HTTP server) with its WSGI interface, one worker.
- ``granian-st``: the same with its leanest threads: a single-threaded Rust
  runtime and one blocking (Python) thread. On two cores shared with wrk
  its default threads compete with the load generator; this is granian
  tuned for that machine, so labkit is compared with granian at its best.

``--head browser`` adds to each request the nine fields a browser sends
with a page request (``BROWSER_FIELDS``: User-Agent, Accept, Cookie, ...),
so that the head is ten fields instead of wrk's one (Host): the per-field work
(parsing, counting, the environ) then weighs as it does on a real site.

A server whose package is missing (or that fails to start) is "n/a"; wrk
missing is an error, with the command to install it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP_MODULE = '''
BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]

async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
'''

LABKIT_SERVER = '''
import sys
from labkit.wsgi import WSGIServer
from benchapp import app
WSGIServer(("127.0.0.1", int(sys.argv[1])), app).serve_forever()
'''

LABKIT_FLIGHT_SERVER = '''
import sys, tempfile
from labkit.wsgi import WSGIServer
from tracing import flight
from benchapp import app
flight.start(tempfile.mkdtemp(prefix="labkit-bench-flight-"), threshold=0.1)
WSGIServer(("127.0.0.1", int(sys.argv[1])), app).serve_forever()
'''

GEVENT_SERVER = '''
import sys
from gevent import monkey; monkey.patch_all()
from gevent.pywsgi import WSGIServer
from benchapp import app
WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None).serve_forever()
'''


def _gunicorn(worker):
    return lambda port: [sys.executable, "-m", "gunicorn", "-k", worker, "-w", "1",
                         "--no-control-socket", "--log-level", "warning",
                         "-b", f"127.0.0.1:{port}", "benchapp:app"]


#: name -> (package that must be importable, port -> command, description)
SERVERS = {
    "labkit": ("labkit", lambda port: [sys.executable, "-c", LABKIT_SERVER, str(port)],
               "labkit.wsgi.WSGIServer"),
    "labkit-flight": ("labkit", lambda port: [sys.executable, "-c", LABKIT_FLIGHT_SERVER,
                                              str(port)],
                      "labkit.wsgi.WSGIServer, flight recorder on"),
    "labkit-gunicorn": ("gunicorn", _gunicorn("labkit.gunicorn.Worker"),
                        "gunicorn -k labkit.gunicorn.Worker -w 1"),
    "uvicorn": ("uvicorn", lambda port: [
        sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--port", str(port),
        "benchapp:asgi_app"], "uvicorn, uvloop + httptools (ASGI)"),
    "granian": ("granian", lambda port: [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
        "benchapp:app"], "Rust HTTP server, WSGI interface, 1 worker"),
    "granian-st": ("granian", lambda port: [
        sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", "1",
        "--runtime-mode", "st", "--runtime-threads", "1", "--blocking-threads", "1",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
        "benchapp:app"], "granian, 1 worker, single-threaded runtime, 1 blocking thread"),
    "gunicorn-gevent": ("gevent", _gunicorn("gevent"), "gunicorn -k gevent -w 1"),
    "gevent-pywsgi": ("gevent", lambda port: [sys.executable, "-c", GEVENT_SERVER, str(port)],
                      "gevent.pywsgi.WSGIServer"),
}
LABKIT = "labkit"
RATIO_LEGEND = ("req/s ratio = labkit req/s / peer req/s: HIGHER is better "
                "(above 1.00× labkit serves more requests per second).\n"
                "srv µs/req: the server's CPU time per request (all its processes and "
                "threads; ratio labkit / peer, LOWER is better); cpu: the server's CPU use "
                "during the run (100% = one core). Median ± half the range of the rounds.")
START_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(port: int, process: subprocess.Popen) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and all its descendants
    (every thread of each; Linux /proc), or None if ``pid`` is gone."""
    total, todo, seen = 0.0, [pid], set()
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="ascii") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            if p == pid:
                return None
    return total


#: ``--head browser``: the fields a browser sends with a page request
#: (besides Host, which wrk sends itself)
BROWSER_FIELDS = (
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Cookie", "session=4f2a9c1e8b7d; theme=dark"),
    ("Upgrade-Insecure-Requests", "1"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Connection", "keep-alive"),
)
#: --head choices: the fields added to wrk's own
HEADS = {"wrk": (), "browser": BROWSER_FIELDS}


def wrk_command(port: int, duration: float, connections: int, fields=()) -> list:
    """wrk's command line: one thread, ``connections`` keep-alive
    connections, each request with ``fields`` ((name, value) pairs) added."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s"]
    for name, value in fields:
        command += ["-H", f"{name}: {value}"]
    return command + [f"http://127.0.0.1:{port}/"]


def run_wrk(port: int, duration: float, connections: int, server_pid: int | None = None,
            fields=()) -> dict:
    """One wrk run; returns req/s, the error counts wrk reported and, given
    the server's pid, its CPU seconds per second of the run (``cpu``)."""
    command = wrk_command(port, duration, connections, fields)
    cpu0 = tree_cpu_seconds(server_pid) if server_pid else None
    t0 = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True,
                         timeout=duration + 30).stdout
    elapsed = time.perf_counter() - t0
    cpu1 = tree_cpu_seconds(server_pid) if server_pid else None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / elapsed
    rps = float(rps.group(1)) if rps else None
    return {"rps": rps, "cpu": cpu,
            "us_per_req": cpu / rps * 1e6 if cpu and rps else None,
            "errors": errors.group(1).strip() if errors else None,
            "non_2xx": "Non-2xx" in out}


def start(name: str, workdir: Path):
    """Start server ``name`` in its own process: (process, port), or a result
    dict saying why it cannot run."""
    package, command, _ = SERVERS[name]
    if package != "labkit":
        import importlib.util
        if importlib.util.find_spec(package) is None:
            return {"status": "unavailable", "reason": f"{package} is not installed"}
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(workdir), str(Path(__file__).resolve().parents[2]),
                      os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(command(port), cwd=workdir, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not wait_until_serving(port, process):
        stop(process)
        return {"status": "failed", "reason": "did not start listening"}
    return process, port


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _median_spread(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None, None
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return median, (values[-1] - values[0]) / 2 / median if median else None


def measure_all(names, workdir: Path, duration: float, connections: int,
                rounds: int = 1, fields=()) -> dict:
    """Start every server, warm each up, then ``rounds`` rounds of one wrk
    run per server, taking turns; ``{name: result}`` with the median req/s
    and server µs/request, their spreads, and every run (``runs``)."""
    results, running = {}, {}
    try:
        for name in names:
            started = start(name, workdir)
            if isinstance(started, dict):
                results[name] = started
            else:
                running[name] = started
                run_wrk(started[1], 1, connections, fields=fields)  # warm-up: imports, caches
        runs: dict = {name: [] for name in running}
        for _ in range(rounds):
            for name, (process, port) in running.items():
                runs[name].append(run_wrk(port, duration, connections, process.pid, fields))
        for name in running:
            good = [r for r in runs[name] if r["rps"] is not None]
            if not good:
                results[name] = {"status": "failed", "reason": "wrk printed no Requests/sec"}
                continue
            rps, rps_spread = _median_spread([r["rps"] for r in good])
            per_req, per_req_spread = _median_spread([r["us_per_req"] for r in good])
            cpu, _ = _median_spread([r["cpu"] for r in good])
            results[name] = {"status": "ok", "rps": rps, "rps_spread": rps_spread,
                             "us_per_req": per_req, "us_per_req_spread": per_req_spread,
                             "cpu": cpu, "errors": good[-1]["errors"],
                             "non_2xx": any(r["non_2xx"] for r in good), "runs": runs[name]}
    finally:
        for process, _ in running.values():
            stop(process)
    return {name: results[name] for name in names}


def measure(name: str, workdir: Path, duration: float, connections: int) -> dict:
    """One server alone: start it, warm it up, measure once, stop it."""
    return measure_all([name], workdir, duration, connections)[name]


def format_table(results: dict) -> str:
    """The results as text: one row per server, ratio labkit / that server."""
    labkit = results.get(LABKIT, {})
    rows = [("server", "req/s", "labkit/peer", "srv µs/req", "labkit/peer", "cpu", "errors")]

    def spread(value):
        return f" ±{value * 100:.0f}%" if value else ""

    for name, result in results.items():
        rps, per_req, cpu = result.get("rps"), result.get("us_per_req"), result.get("cpu")
        ratio = "—" if name == LABKIT else (
            f"{labkit['rps'] / rps:.2f}×" if labkit.get("rps") and rps else "n/a")
        # CPU per request: labkit's work / the peer's, LOWER is better
        cpu_ratio = "—" if name == LABKIT else (
            f"{labkit['us_per_req'] / per_req:.2f}×"
            if labkit.get("us_per_req") and per_req else "n/a")
        rows.append((f"{name} ({SERVERS[name][2]})",
                     f"{rps:,.0f}{spread(result.get('rps_spread'))}" if rps
                     else result.get("reason", "n/a"),
                     ratio,
                     f"{per_req:.1f}{spread(result.get('us_per_req_spread'))}" if per_req else "",
                     cpu_ratio, f"{cpu * 100:.0f}%" if cpu else "",
                     result.get("errors") or ("non-2xx" if result.get("non_2xx") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
        .rstrip() for row in rows)


def main(argv=None) -> int:
    """Entry point (``python -m labkit.bench.http``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.http",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=2,
                        help="whole seconds per wrk run (wrk takes no fractions)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="wrk runs per server, taking turns (default 3)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--head", choices=list(HEADS), default="wrk",
                        help="the request head: wrk's own (Host alone), or with the "
                             "nine fields a browser adds (default: wrk)")
    parser.add_argument("--only", help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error(f"--duration must be at least 1 second, not {args.duration}")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    names = list(SERVERS) if not args.only else [
        n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {list(SERVERS)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="labkit-bench-http-") as workdir:
        (Path(workdir) / "benchapp.py").write_text(APP_MODULE)
        results = measure_all(names, Path(workdir), args.duration, args.connections,
                              max(1, args.rounds), HEADS[args.head])
    fields = len(HEADS[args.head]) + 1  # (+ wrk's Host)
    print(f"HTTP hello world, wrk -t1 -c{args.connections} -d{args.duration:g}s, "
          f"{fields} request fields ({args.head}), "
          f"{max(1, args.rounds)} alternating rounds, one server process each, "
          f"{os.cpu_count()} CPUs\n")
    print(format_table(results))
    print("\n" + RATIO_LEGEND)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    labkit = results.get(LABKIT)
    return 1 if labkit is not None and labkit["status"] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
