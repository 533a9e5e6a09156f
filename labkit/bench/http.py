"""HTTP hello-world throughput: labkit's WSGIServer against other Python servers.

    python -m labkit.bench.http [--duration 2] [--connections 50] [--only labkit,uvicorn]

Unlike the micro benchmarks (time per operation, lower is better), this one
counts requests per second, so its ratio is labkit / peer and HIGHER IS
BETTER: 2.00× means labkit served twice as many requests.

How it measures: for each server, a fresh process serves the same
hello-world app (WSGI, or ASGI for uvicorn) on a free loopback port, one
process and one worker each, so that every server gets one core; then
``wrk -t1 -c50`` runs a 1 s warm-up and the measured run. wrk and the
server share the machine: on a small or busy machine the absolute numbers
say as much about the neighbours as about the servers, the ratios less so.

The servers:

- ``labkit``: labkit.wsgi.WSGIServer.
- ``labkit-flight``: the same with the flight recorder on (tracing/flight.py,
  blocking monitor at 100 ms): the always-on tracing's cost.
- ``labkit-gunicorn``: the same behind ``gunicorn -k labkit.gunicorn.Worker -w 1``.
- ``gevent-pywsgi``: gevent.pywsgi.WSGIServer (``log=None``).
- ``gunicorn-gevent``: ``gunicorn -k gevent -w 1``.
- ``uvicorn``: ``uvicorn --loop uvloop --http httptools`` with an ASGI app.
- ``granian``: granian (a Rust HTTP server) with its WSGI interface, one worker.

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
    "gunicorn-gevent": ("gevent", _gunicorn("gevent"), "gunicorn -k gevent -w 1"),
    "gevent-pywsgi": ("gevent", lambda port: [sys.executable, "-c", GEVENT_SERVER, str(port)],
                      "gevent.pywsgi.WSGIServer"),
}
LABKIT = "labkit"
RATIO_LEGEND = ("ratio = labkit req/s / peer req/s: HIGHER is better "
                "(above 1.00× labkit serves more requests per second).")
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


def run_wrk(port: int, duration: int, connections: int) -> dict:
    """One wrk run; returns req/s and the error counts wrk reported."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s",
               f"http://127.0.0.1:{port}/"]
    out = subprocess.run(command, capture_output=True, text=True,
                         timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(rps.group(1)) if rps else None,
            "errors": errors.group(1).strip() if errors else None,
            "non_2xx": "Non-2xx" in out}


def measure(name: str, workdir: Path, duration: int, connections: int) -> dict:
    """Start server ``name`` in its own process, warm it up, measure, stop it."""
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
    try:
        if not wait_until_serving(port, process):
            return {"status": "failed", "reason": "did not start listening"}
        run_wrk(port, 1, connections)  # warm-up: first requests pay for imports and caches
        result = run_wrk(port, duration, connections)
        if result["rps"] is None:
            return {"status": "failed", "reason": "wrk printed no Requests/sec"}
        return {"status": "ok", **result}
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def format_table(results: dict) -> str:
    """The results as text: one row per server, ratio labkit / that server."""
    labkit = results.get(LABKIT, {}).get("rps")
    rows = [("server", "req/s", "labkit/peer", "errors")]
    for name, result in results.items():
        rps = result.get("rps")
        ratio = "—" if name == LABKIT else (
            f"{labkit / rps:.2f}×" if labkit and rps else "n/a")
        rows.append((f"{name} ({SERVERS[name][2]})",
                     f"{rps:,.0f}" if rps else result.get("reason", "n/a"),
                     ratio, result.get("errors") or ("non-2xx" if result.get("non_2xx") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
        .rstrip() for row in rows)


def main(argv=None) -> int:
    """Entry point (``python -m labkit.bench.http``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.http",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=2, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--only", help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
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
        for name in names:
            if sys.stderr.isatty():
                print(f"\r\033[K{name} ...", end="", file=sys.stderr, flush=True)
            results[name] = measure(name, Path(workdir), args.duration, args.connections)
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr)
    print(f"HTTP hello world, wrk -t1 -c{args.connections} -d{args.duration:g}s, "
          f"one server process each, {os.cpu_count()} CPUs\n")
    print(format_table(results))
    print("\n" + RATIO_LEGEND)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(results, file, indent=2)
    labkit = results.get(LABKIT)
    return 1 if labkit is not None and labkit["status"] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
