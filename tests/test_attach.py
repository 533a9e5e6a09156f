"""tracing/attach.py and labkit/console.py: attaching to a running process.

Each test starts a real labkit process (with ``LABKIT_CONSOLE=1`` or an
explicit ``labkit.console.serve(path)``) running named greenlets, and reads
it the way a user would: ``python -m labkit console PID``, or the client
class, or a raw socket. The processes are always stopped. Sockets live in
the test's own directory (``XDG_RUNTIME_DIR``), never in the real one.
"""
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import stop_process

from tracing import attach

pytestmark = pytest.mark.timeout(60)

TARGET = """\
import os, sys
import labkit
import labkit.console
from labkit.event import Event

def ticker(period):
    while True:
        labkit.sleep(period)

def waiter(event):
    event.wait()

if len(sys.argv) > 1:            # serve on this path, with these modes
    server = labkit.console.serve(sys.argv[1])
    os.chmod(os.path.dirname(sys.argv[1]), int(sys.argv[2], 8))
    os.chmod(sys.argv[1], int(sys.argv[3], 8))
event = Event()
fast = labkit.spawn(ticker, 0.005); fast.name = "ticker-fast"
slow = labkit.spawn(ticker, 0.05); slow.name = "ticker-slow"
w = labkit.spawn(waiter, event); w.name = "event-waiter"
j = labkit.spawn(w.join); j.name = "joiner"
labkit.sleep(0.05)
print("ready", flush=True)
labkit.sleep(30)
"""


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("attach")


@pytest.fixture(scope="module")
def runtime_dir(shared_dir):
    path = shared_dir / "run"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture(scope="module")
def shared_target(start_targets):
    """One target for the tests that only read it."""
    return start_targets()


@pytest.fixture
def start_target(start_targets):
    return start_targets


@pytest.fixture(scope="module")
def start_targets(shared_dir, runtime_dir):
    """start_targets(*args, console="1", runtime=runtime_dir) -> Popen of a
    labkit process that printed "ready"; all stopped at the end of the module."""
    script = shared_dir / "target.py"
    script.write_text(TARGET)
    children = []

    def start(*args, console="1", runtime=runtime_dir):
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime, LABKIT_CONSOLE=console)
        child = subprocess.Popen([sys.executable, str(script), *args], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append(child)
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            pytest.fail(f"target did not start: {line!r} {child.stderr.read()[-2000:]}")
        return child

    yield start
    for child in children:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
        child.stderr.close()


def console(pid, *args, runtime_dir):
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "labkit", "console", str(pid), *args],
                          env=env, capture_output=True, text=True, timeout=30)


def test_console_once_shows_the_greenlets_of_a_running_process(shared_target, runtime_dir):
    target = shared_target
    result = console(target.pid, "--once", runtime_dir=runtime_dir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("ticker-fast", "ticker-slow", "event-waiter", "joiner"):
        assert name in out
    assert "Event" in out and "join event-waiter" in out
    assert "target.py:11 in waiter" in out          # the line it waits at
    assert f"pid {target.pid}" in out
    assert "lints" in out and "timeline" in out


def test_the_socket_is_0600_in_a_0700_directory_of_this_user(shared_target, runtime_dir):
    target = shared_target
    path = os.path.join(runtime_dir, "labkit", f"console-{target.pid}.sock")
    info = os.lstat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    directory = os.lstat(os.path.dirname(path))
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert directory.st_uid == os.getuid()


def test_labkit_console_unset_or_0_serves_nothing(start_target, runtime_dir):
    target = start_target(console="0")
    assert not os.path.exists(os.path.join(runtime_dir, "labkit", f"console-{target.pid}.sock"))
    result = console(target.pid, "--once", runtime_dir=runtime_dir)
    assert result.returncode == 1
    assert "no labkit console" in result.stderr and "LABKIT_CONSOLE=1" in result.stderr


def test_record_writes_every_frame_and_load_record_reads_them(shared_target, runtime_dir,
                                                              tmp_path):
    target = shared_target
    record = tmp_path / "trace.jsonl"
    result = console(target.pid, "--once", "--record", str(record), runtime_dir=runtime_dir)
    assert result.returncode == 0, result.stderr
    frames = attach.load_record(record)
    assert len(frames) == 1
    names = {row["name"] for row in frames[0]["rows"]}
    assert {"ticker-fast", "ticker-slow", "event-waiter", "joiner"} <= names
    assert frames[0]["pid"] == target.pid
    not_a_record = tmp_path / "other.jsonl"
    not_a_record.write_text('{"rows": []}\n')
    with pytest.raises(ValueError, match="not a labkit console record"):
        attach.load_record(not_a_record)


def test_perfetto_writes_a_track_per_greenlet_with_its_states(shared_target, runtime_dir,
                                                             tmp_path):
    out = tmp_path / "console.json"
    result = console(shared_target.pid, "--once", "--perfetto", str(out),
                     runtime_dir=runtime_dir)
    assert result.returncode == 0, result.stderr
    events = json.loads(out.read_text())["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"ticker-fast", "event-waiter", "joiner"} <= set(tracks.values())
    slices = {tracks[e["tid"]]: e["name"] for e in events if e["ph"] == "X"}
    assert slices["event-waiter"] == "parked: Event"
    assert slices["joiner"] == "parked: join event-waiter"
    assert any(e["ph"] == "C" and e["name"] == "loop" for e in events)
    with pytest.raises(ValueError, match="no frames"):
        __import__("tracing.frames").frames.to_perfetto([], tmp_path / "empty.json")


def test_frames_over_time_show_the_busy_greenlet_and_a_measured_pause(shared_target,
                                                                      runtime_dir):
    target = shared_target
    path = os.path.join(runtime_dir, "labkit", f"console-{target.pid}.sock")
    with attach.AttachClient(target.pid, path=path) as client:
        first = client.frame()
        time.sleep(0.3)
        second = client.frame()
    fast = {r["name"]: r for r in second["rows"]}["ticker-fast"]
    before = {r["name"]: r for r in first["rows"]}["ticker-fast"]
    assert second["loop"]["recording"] is True       # serve() started a background ring
    assert fast["switches"] > before["switches"]     # it kept running between frames
    served = second["served"]
    assert served["pause_ms"] > 0
    # each piece's CPU time is within its wall time (clock reads apart)
    assert 0 < served["pause_cpu_ms"] <= served["pause_ms"] + 0.05
    assert served["pieces"] >= 2           # capture, then the rows in chunks
    lanes = dict(attach.timeline_lanes([first, second]))
    assert lanes["ticker-fast"][1] != " "


def test_only_read_requests_are_served(shared_target, runtime_dir):
    target = shared_target
    path = os.path.join(runtime_dir, "labkit", f"console-{target.pid}.sock")
    marker = os.path.join(runtime_dir, "pwned")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        reader = sock.makefile("rb")
        for request in ({"op": "exec", "code": f"open({marker!r}, 'w')"},
                        {"op": "eval", "expr": "1"}, "not a dict", [1, 2]):
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = json.loads(reader.readline())
            assert "read-only" in answer["error"]
        sock.sendall(b"not json at all\n")
        assert "read-only" in json.loads(reader.readline())["error"]
        sock.sendall(b'{"op": "hello"}\n')
        assert json.loads(reader.readline()) == {"labkit": "console", "pid": target.pid,
                                                 "ops": ["hello", "frame"]}
        sock.sendall(b"x" * (attach.MAX_REQUEST + 10))   # no newline: dropped
        assert reader.readline() == b""
    assert not os.path.exists(marker)
    assert target.poll() is None


def _as_nobody(path: str) -> str:
    """Connect to ``path`` from a forked child running as uid 65534 and
    ask for a frame; what happened, as one word or the server's error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        outcome = "?"
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                try:
                    sock.connect(path)
                except PermissionError:
                    outcome = "EACCES"
                else:
                    try:
                        sock.sendall(b'{"op": "frame"}\n')
                    except BrokenPipeError:
                        pass   # a refusal is sent at once, and the socket closed
                    line = sock.makefile("rb").readline()
                    answer = json.loads(line) if line else {}
                    outcome = answer.get("error") or ("FRAME" if "rows" in answer else "EOF")
        except BaseException as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        outcome = f.read().decode()
    os.waitpid(pid, 0)
    return outcome


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid needs root")


@needs_root
def test_another_user_cannot_open_the_socket(start_target):
    # A runtime directory everyone may pass through (as /tmp is): only the
    # console's own 0700 directory and 0600 socket keep the other user out.
    runtime = tempfile.mkdtemp(prefix="labkit-attach-test-")
    try:
        os.chmod(runtime, 0o755)
        target = start_target(runtime=runtime)
        path = os.path.join(runtime, "labkit", f"console-{target.pid}.sock")
        assert os.path.exists(path)
        assert _as_nobody(path) == "EACCES"
        os.chmod(os.path.dirname(path), 0o755)   # the directory opened by mistake:
        assert _as_nobody(path) == "EACCES"      # the socket's own mode still holds
        assert target.poll() is None
    finally:
        target.kill()
        target.wait(timeout=10)
        for directory, _dirs, files in os.walk(runtime, topdown=False):
            for name in files:
                os.unlink(os.path.join(directory, name))
            os.rmdir(directory)


@needs_root
def test_another_user_is_refused_by_peer_credentials_even_through_open_modes(start_target):
    # A directory and socket made world-accessible by mistake: the kernel's
    # SO_PEERCRED still tells the server who connected, and it says no.
    directory = tempfile.mkdtemp(prefix="labkit-attach-test-")
    try:
        path = os.path.join(directory, "console.sock")
        target = start_target(path, "777", "666", console="0")
        outcome = _as_nobody(path)
        assert outcome.startswith("refused: uid 65534"), outcome
        with attach.AttachClient(path=path) as client:   # our own uid still may
            assert any(r["name"] == "joiner" for r in client.frame()["rows"])
        assert target.poll() is None
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def test_peer_allowed_is_the_same_uid_only():
    assert attach.peer_allowed(1000, own_uid=1000)
    assert not attach.peer_allowed(0, own_uid=1000)     # root is not special
    assert not attach.peer_allowed(65534, own_uid=1000)


def test_peer_uid_reads_the_kernels_credentials():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert attach.peer_uid(a) == os.getuid()


def test_a_shared_or_foreign_socket_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with pytest.raises(PermissionError, match="must be 0700"):
        attach._private_dir(str(shared))
    plain_file = tmp_path / "file"
    plain_file.write_text("")
    with pytest.raises(PermissionError, match="not a directory"):
        attach._private_dir(str(plain_file))
    fresh = tmp_path / "fresh"
    attach._private_dir(str(fresh))
    assert stat.S_IMODE(os.lstat(fresh).st_mode) == 0o700


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="pid"):
        attach.AttachClient(-3)
    with pytest.raises(TypeError, match="path"):
        attach.AttachServer(path=12)
    with pytest.raises(SystemExit) as exited:
        attach.main(["12", "--interval", "0"])
    assert exited.value.code == 2


# -- a gunicorn worker with a blocking view ----------------------------------------------

BLOCKING_APP = """\
import os, time
import labkit

def app(environ, start_response):
    if environ["PATH_INFO"] == "/block":
        end = time.monotonic() + 0.3
        while time.monotonic() < end:   # ATTACH-BLOCK: holds this worker's loop
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


@pytest.mark.timeout(90)
def test_a_gunicorn_workers_console_shows_a_block_with_its_line(tmp_path, runtime_dir):
    pytest.importorskip("gunicorn")
    import urllib.request
    (tmp_path / "bapp.py").write_text(BLOCKING_APP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir, LABKIT_CONSOLE="1")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "1",
         "-b", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "5",
         "--chdir", str(tmp_path), "bapp:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    worker = int(r.read())
                break
            except OSError:
                time.sleep(0.1)
        # Under load (the "under wrk"), where wrk is installed
        # (.ci/run installs it): the worker serves wrk's requests meanwhile.
        load = None
        if shutil.which("wrk") is not None:
            load = subprocess.Popen(["wrk", "-t1", "-c10", "-d4s", f"http://127.0.0.1:{port}/"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/block", timeout=10) as r:
                assert int(r.read()) == worker
            result = console(worker, "--once", runtime_dir=runtime_dir)
        finally:
            if load is not None:
                served = load.communicate(timeout=30)[0]
        if load is not None:   # (wrk's requests were served, none failed)
            assert "requests in" in served and "Non-2xx" not in served, served
        assert result.returncode == 0, result.stderr
        line = next(n for n, text in enumerate(BLOCKING_APP.splitlines(), 1)
                    if "ATTACH-BLOCK" in text)
        assert "never yielded" in result.stdout, result.stdout
        assert f"bapp.py:{line}" in result.stdout, result.stdout
    finally:
        stop_process(server, timeout=15)


def test_labkit_console_serves_only_when_asked():
    import labkit.console
    assert labkit.console.serve_if_requested({}) is None
    assert labkit.console.serve_if_requested({"LABKIT_CONSOLE": "0"}) is None
    assert labkit.console.ENV_VAR == "LABKIT_CONSOLE"


def test_a_stale_socket_is_reported_as_no_console(tmp_path):
    path = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(path)   # bound, never listening: what a killed process leaves
        with pytest.raises(FileNotFoundError, match="nobody serves it"):
            attach.AttachClient(path=path)


def test_sockets_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    for pid in (dead_pid, os.getpid()):
        (tmp_path / f"console-{pid}.sock").write_text("")
    (tmp_path / "other-file").write_text("")
    removed = attach.sweep_stale_sockets(str(tmp_path))
    assert removed == [str(tmp_path / f"console-{dead_pid}.sock")]
    assert sorted(os.listdir(tmp_path)) == sorted([f"console-{os.getpid()}.sock", "other-file"])


def test_the_pause_benchmark_runs():
    from labkit.bench.console_pause import measure
    result = measure(5, frames=1, interval=0.0)
    assert result["rows"] >= 6 and result["pause_ms_max"] > 0 and result["pieces"] >= 2
    assert result["first_cpu_ms"] > 0 and 0 <= result["own_ms_max"] and result["gc_ms_max"] >= 0
    # the machine's share: a fixed ~0.3 ms of work timed in the target
    assert result["control_runs"] >= 10
    assert 0 < result["control_ms_median"] <= result["control_ms_max"]


def test_the_pause_benchmarks_control_alone_counts_its_runs(capsys):
    from labkit.bench.console_pause import machine, main
    result = machine(0.3)
    assert result["runs"] > 10 and 0 < result["median_ms"] <= result["max_ms"]
    assert 0 <= result["over_1ms"] <= result["runs"]
    assert main(["--machine", "0.2"]) == 0
    assert "over 1 ms:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--machine", "0"])


def test_the_pause_benchmark_pins_the_target_apart_and_gives_the_cpus_back():
    from labkit.bench.console_pause import _pinning, measure
    before = os.sched_getaffinity(0)
    child_cpus, own_cpus = _pinning(True)
    if len(before) >= 2:
        assert child_cpus and own_cpus and not child_cpus & own_cpus
        assert child_cpus | own_cpus == before
    else:
        assert child_cpus is None
    assert _pinning(False) == (None, None)
    result = measure(5, frames=1, interval=0.0, pin=True)
    assert result["rows"] >= 6
    assert os.sched_getaffinity(0) == before
