"""labkit.gunicorn.Worker: `gunicorn -k labkit.gunicorn.Worker` serves WSGI apps.

A real gunicorn arbiter with two labkit workers, on a free loopback port;
SIGTERM must stop it cleanly (exit status 0, workers gone).
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests

pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")

pytestmark = pytest.mark.timeout(60)

APP = textwrap.dedent('''
    import os
    import labkit

    def app(environ, start_response):
        labkit.sleep(0.01)  # patched hub: sleeping parks only this request
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"worker {os.getpid()}".encode()]
''')


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start listening")


@pytest.fixture
def gunicorn(tmp_path):
    (tmp_path / "gapp.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "2",
         "-b", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "5",
         "--chdir", str(tmp_path), "gapp:app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_gunicorn_with_labkit_workers_serves_and_stops_on_sigterm(gunicorn):
    process, port = gunicorn
    with requests.Session() as session:
        bodies = [session.get(f"http://127.0.0.1:{port}/", timeout=5).text for _ in range(20)]
    assert all(body.startswith("worker ") for body in bodies)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "Shutting down: Master" in output
    assert "Traceback" not in output, output


# -- Django + PostgreSQL: one DB connection per request, no lost commit ---------------

DJANGO_APP = textwrap.dedent('''
    import os, time
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False, SECRET_KEY="test", ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
        MIDDLEWARE=[], INSTALLED_APPS=[],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "postgres",
            "HOST": "127.0.0.1", "PORT": os.environ["PGPORT"], "USER": "labkit",
            "CONN_MAX_AGE": 0}})
    django.setup()

    from django.db import connection, transaction
    from django.http import JsonResponse
    from django.urls import path
    from django.core.wsgi import get_wsgi_application

    def insert(name):
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO rows (name) VALUES (%s)", [name])
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    def a(request):
        # A's transaction: insert, wait (B runs meanwhile), then fail.
        with transaction.atomic():
            pid = insert("a")
            time.sleep(float(request.GET.get("hold", "0.5")))
            raise RuntimeError(f"A fails after inserting on backend {pid}")

    def b(request):
        # B: autocommit, its row is committed when this returns.
        return JsonResponse({"backend": insert("b"),
                             "in_atomic_block": connection.in_atomic_block})

    urlpatterns = [path("a", a), path("b", b)]
    application = get_wsgi_application()
''')


@pytest.fixture
def postgres():
    pytest.importorskip("django", reason="django is not installed (pip install django)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install psycopg[binary])")
    from postgres import PostgresUnavailable, running_postgres
    try:
        with running_postgres() as pg:
            yield pg
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def test_django_on_postgres_two_concurrent_requests_get_their_own_connection(tmp_path, postgres):
    # Issue 15's data loss: with threading.local shared by every greenlet,
    # Django gave B the connection A held inside transaction.atomic(), and
    # A's rollback took B's committed row with it.
    import concurrent.futures
    import psycopg
    with psycopg.connect(postgres.dsn(), autocommit=True) as db:
        db.execute("CREATE TABLE rows (id serial PRIMARY KEY, name text NOT NULL)")
    (tmp_path / "djapp.py").write_text(DJANGO_APP)
    port = free_port()
    # psycopg 3 waits in C unless it sees gevent's patching: ask for poll(),
    # which labkit.monkey makes cooperative.
    env = dict(os.environ, PGPORT=str(postgres.port), PSYCOPG_WAIT_FUNC="wait_poll")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "1",
         "-b", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "5",
         "--chdir", str(tmp_path), "djapp:application"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_port(port, process)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            a = pool.submit(requests.get, f"http://127.0.0.1:{port}/a?hold=0.5", timeout=10)
            time.sleep(0.2)  # A is inside its transaction now
            b = pool.submit(requests.get, f"http://127.0.0.1:{port}/b", timeout=10)
            b_response = b.result()
            a_response = a.result()
        assert a_response.status_code == 500 and b_response.status_code == 200
        assert b_response.json()["in_atomic_block"] is False  # not inside A's transaction
        with psycopg.connect(postgres.dsn(), autocommit=True) as db:
            names = [name for (name,) in db.execute("SELECT name FROM rows ORDER BY id")]
        assert names == ["b"]  # A's row rolled back, B's committed row kept
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert f"inserting on backend {b_response.json()['backend']}" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


WEBSOCKET_APP = textwrap.dedent('''
    import flask
    import flask_sock

    app = flask.Flask(__name__)
    sock = flask_sock.Sock(app)

    @sock.route("/echo")
    def shout(ws):
        while (data := ws.receive()) != "bye":
            ws.send(data.upper())
''')


def test_flask_sock_websocket_under_gunicorn_with_labkit_worker(tmp_path):
    pytest.importorskip("flask_sock")
    websocket = pytest.importorskip("websocket")  # websocket-client
    (tmp_path / "wsapp.py").write_text(WEBSOCKET_APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "1",
         "-b", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "2",
         "--chdir", str(tmp_path), "wsapp:app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process)
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=5)
        try:
            ws.send("hello")
            assert ws.recv() == "HELLO"
            ws.send("bye")
        finally:
            ws.close()
    finally:
        process.kill()
        process.wait()


# -- tracing the workers: flight recorder files merged into one timeline -------------

TRACED_APP = textwrap.dedent('''
    import os, time
    import labkit

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            end = time.monotonic() + 0.3
            while time.monotonic() < end:   # blocks this worker's loop (time.sleep
                pass                        # is patched): the flight recorder notices
        else:
            labkit.sleep(0.05)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{os.getpid()}".encode()]
''')


def _children(pid):
    """The pids whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def test_four_workers_write_flight_traces_that_the_master_merges(tmp_path):
    import concurrent.futures
    import json
    traces = tmp_path / "traces"
    (tmp_path / "tapp.py").write_text(TRACED_APP)
    port = free_port()
    env = dict(os.environ, LABKIT_FLIGHT=f"{traces},exit=1,threshold=0.1,before=60,after=0.2")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "4",
         "-c", "python:labkit.gunicorn", "-b", f"127.0.0.1:{port}", "--no-control-socket",
         "--graceful-timeout", "10", "--chdir", str(tmp_path), "tapp:app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_port(port, process)

        def get(path):
            with requests.get(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                return int(response.text)

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            served = set(pool.map(get, ["/"] * 64))
            blocked_pid = get("/block")
            # the block was dumped by itself, in the worker that blocked
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and \
                    not list(traces.glob(f"labkit-flight-{blocked_pid}-*blocked*.json")):
                time.sleep(0.1)
            assert list(traces.glob(f"labkit-flight-{blocked_pid}-*blocked*.json"))
            # a worker dies (SIGKILL: no file of its own); the master starts another
            workers = _children(process.pid)
            assert len(workers) == 4 and blocked_pid in workers
            killed = min(workers - {blocked_pid})
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                    killed in _children(process.pid) or len(_children(process.pid)) < 4):
                time.sleep(0.05)
            (replacement,) = _children(process.pid) - workers
            # ... and serves: then it is running its flight recorder
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and replacement not in served:
                served |= set(pool.map(get, ["/"] * 16))
            assert replacement in served
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    merged_files = list(traces.glob("labkit-merged-*.json"))
    assert len(merged_files) == 1, output
    document = json.loads(merged_files[0].read_text())
    events = document["traceEvents"]
    tracks = {e["pid"]: e["args"]["name"] for e in events
              if e.get("ph") == "M" and e.get("name") == "process_name"}
    # five process tracks: the master and the four workers alive at the end
    # (plus the killed one only if a block of its own was dumped before: on a
    # loaded machine a worker can be descheduled past the threshold)
    assert tracks.pop(process.pid) == f"gunicorn master {process.pid}"
    assert set(tracks) - {killed} == (workers - {killed}) | {replacement}, \
        (tracks, workers, killed)
    assert killed not in tracks or all(
        "blocked" in f.name for f in traces.glob(f"labkit-flight-{killed}-*.json"))
    assert served - {killed} <= set(tracks)
    # greenlet lanes under each worker: the workers that served have request lanes
    lanes = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            lanes.setdefault(e["pid"], set()).add(e["args"]["name"])
    assert all({"hub", "main"} <= lanes[pid] for pid in tracks)
    assert all(len(lanes[pid]) > 3 for pid in served - {killed})
    blocks = [e for e in events if e.get("cat") == "blocking"]
    assert any(e["pid"] == blocked_pid and "tapp.py" in e["name"] for e in blocks)
    # the master's track: a lane per worker from its fork to its reaping, the
    # restart after the kill, the signal that stopped it -- on the workers' clock
    lives = {e["args"]["pid"]: (e["ts"], e["ts"] + e["dur"]) for e in events
             if e["pid"] == process.pid and e.get("ph") == "X" and "until" in e["args"]}
    assert set(lives) == workers | {replacement}
    assert lives[killed][1] <= lives[replacement][0]        # reaped, then replaced
    instants = [e["name"] for e in events if e["pid"] == process.pid and e.get("ph") == "i"]
    assert "ready" in instants and "signal SIGTERM" in instants
    for pid in tracks:
        stamps = [e["ts"] for e in events if e["pid"] == pid and "ts" in e]
        ends = [e["ts"] + e.get("dur", 0) for e in events if e["pid"] == pid and "ts" in e]
        forked, reaped = lives[pid]
        assert forked < min(stamps) and max(ends) < reaped, (pid, forked, reaped)
    # an arrow from each fork (a "fork worker PID" slice on the arbiter lane)
    # to the first slice of that worker's process track
    forks = {e["args"]["labkit_fork"]: e for e in events
             if e["pid"] == process.pid and e.get("ph") == "X" and "labkit_fork" in e["args"]}
    assert set(forks) == workers | {replacement}
    assert all(e["tid"] == 1 and e["name"] == f"fork worker {pid}" for pid, e in forks.items())
    flows = {}
    for e in events:
        if e.get("ph") in ("s", "f") and e.get("cat") == "fork":
            flows.setdefault(e["id"], {})[e["ph"]] = e
    assert sorted(flow["f"]["pid"] for flow in flows.values()) == sorted(tracks)
    for flow in flows.values():
        start, end = flow["s"], flow["f"]
        fork = forks[end["pid"]]
        assert start["pid"] == process.pid and fork["ts"] <= start["ts"] <= fork["ts"] + fork["dur"]
        first = min((e for e in events if e["pid"] == end["pid"] and e.get("ph") == "X"
                     and e["dur"] > 0), key=lambda e: e["ts"])
        assert end["tid"] == first["tid"] and first["ts"] <= end["ts"] <= first["ts"] + first["dur"]
    # the master's own file, and the merged one, are well-formed Perfetto traces
    import perfetto_check
    (master_file,) = traces.glob(f"labkit-flight-{process.pid}-master.json")
    assert perfetto_check.problems(json.loads(master_file.read_text())) == []
    assert perfetto_check.problems(document, one_process=False) == []
    # ... and the same merge as Perfetto's protobuf, written next to it
    from tracing import merge
    proto = perfetto_check.proto_trace(merged_files[0].with_suffix(".pftrace"))
    assert perfetto_check.proto_problems(proto) == []
    structure = perfetto_check.proto_structure(proto)
    assert structure["processes"] == merge.process_tracks(document)
    assert structure["threads"] == {(e["pid"], e["args"]["name"]) for e in events
                                    if e.get("name") == "thread_name"}
    fork_arrows = sorted((source, target) for source, target in structure["flows"].values()
                         if source[2].startswith("fork worker "))
    assert [(s[0], s[2], t[0]) for s, t in fork_arrows] == sorted(
        (process.pid, f"fork worker {pid}", pid) for pid in tracks)
