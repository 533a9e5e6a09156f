"""tracing/attach_group.py: `labkit console MASTER_PID` on a gunicorn master.

A real ``gunicorn -k labkit.gunicorn.Worker -w 2 -c python:labkit.gunicorn``
with ``LABKIT_CONSOLE=1``, started by the module's fixture on a free
loopback port with its own console directory (``XDG_RUNTIME_DIR``), and
stopped at the end. The master runs no hub: before this, attaching to it
timed out; now it shows its workers, found from /proc, with its own track.
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from helpers import stop_process

from tracing import attach, attach_group, merge

pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")

pytestmark = pytest.mark.timeout(90)

APP = textwrap.dedent('''
    import os, time
    import labkit

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            end = time.monotonic() + 0.3
            while time.monotonic() < end:   # GROUP-BLOCK: holds this worker's loop
                pass
        else:
            labkit.sleep(0.01)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
''')


def _get(port, path="/"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return int(response.read())


def _wait(condition, seconds=20, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    """(Popen of the master, port, runtime dir), both workers serving."""
    tmp = tmp_path_factory.mktemp("group")
    (tmp / "gapp.py").write_text(APP)
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), LABKIT_CONSOLE="1")
    env.pop("LABKIT_FLIGHT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "2",
         "-c", "python:labkit.gunicorn", "-b", f"127.0.0.1:{port}", "--no-control-socket",
         "--graceful-timeout", "5", "--chdir", str(tmp), "gapp:app"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait(lambda: process.poll() is not None or
              len(_serving(process.pid, runtime)) == 2, 30, "two workers serving")
        assert process.poll() is None, "gunicorn exited early"
        _wait(lambda: _answers(port), 20, "gunicorn to answer")
        yield process, port, str(runtime)
    finally:
        stop_process(process, timeout=20)


def _serving(pid, runtime):
    directory = os.path.join(runtime, "labkit")
    return [child for child in attach_group.children(pid)
            if os.path.exists(os.path.join(directory, f"console-{child}.sock"))]


def _answers(port):
    try:
        return _get(port)
    except OSError:
        return None


@pytest.fixture
def in_runtime(master, monkeypatch):
    """This test process looks for consoles in the master's directory."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", master[2])
    return master


def console(pid, *args, runtime):
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "labkit", "console", str(pid), *args],
                          env=env, capture_output=True, text=True, timeout=60)


def test_console_on_the_master_shows_every_worker_and_a_block_with_its_line(master):
    process, port, runtime = master
    workers = _serving(process.pid, runtime)
    blocked = _get(port, "/block")
    result = console(process.pid, "--once", "--rows", "50", runtime=runtime)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"gunicorn master {process.pid}: 2 workers" in out
    for worker in workers:
        assert f"│ {worker} " in out                 # a row of the worker list
    assert "labkit-console-accept" in out           # greenlets of both, one table
    assert sum(line.startswith(f"│ {w} ") and "labkit-console-accept" in line
               for line in out.splitlines() for w in workers) == 2
    line = next(n for n, text in enumerate(APP.splitlines(), 1) if "GROUP-BLOCK" in text)
    lint = next(text for text in out.splitlines() if "never yielded" in text)
    assert lint.startswith(f"│ {blocked} ") and f"gapp.py:{line}" in lint, out
    # the master's own doings, from its group file
    for worker in workers:
        assert f"fork worker {worker}" in out
    assert "ready" in out


def test_the_master_serves_no_socket_and_its_group_file_is_0600_data(master):
    process, _port, runtime = master
    directory = os.path.join(runtime, "labkit")
    assert not os.path.exists(os.path.join(directory, f"console-{process.pid}.sock"))
    path = os.path.join(directory, f"console-{process.pid}.group")
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700
    document = json.loads(open(path).read())
    assert document["labkit"] == "console-group" and document["pid"] == process.pid
    assert document["track"]["metadata"]["labkit"]["pid"] == process.pid
    for worker in _serving(process.pid, runtime):
        assert stat.S_IMODE(os.lstat(os.path.join(directory, f"console-{worker}.sock"))
                            .st_mode) == 0o600


def test_a_process_with_no_console_and_no_serving_children_is_named(in_runtime):
    with pytest.raises(FileNotFoundError, match="nor in its children"):
        attach_group.GroupClient(os.getpid())
    assert attach_group.is_group(os.getpid()) is False
    assert attach_group.children(in_runtime[0].pid)    # the workers are its children
    with pytest.raises(ValueError, match="pid"):
        attach_group.GroupClient(0)
    result = console(os.getpid(), "--once", runtime=in_runtime[2])
    assert result.returncode == 1 and "no labkit console" in result.stderr


def test_record_on_the_master_follows_a_restart_into_one_merged_trace(master, tmp_path):
    process, port, runtime = master
    record = tmp_path / "group.jsonl"
    trace = tmp_path / "merged.json"
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime, COLUMNS="160")
    viewer = subprocess.Popen(
        [sys.executable, "-m", "labkit", "console", str(process.pid), "--interval", "0.1",
         "--record", str(record), "--perfetto", str(trace)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def recorded():
        try:
            return attach.load_record(record)
        except (OSError, ValueError):
            return []   # not written yet, or a line half-written

    def pids_in(group):
        return {p["pid"] for p in group["processes"] if "frame" in p}

    try:
        first = _wait(lambda: [g for g in recorded() if len(pids_in(g)) == 2], 30,
                      "frames of both workers")[0]
        killed = min(pids_in(first))
        os.kill(killed, signal.SIGKILL)
        later = _wait(lambda: [g for g in recorded() if len(pids_in(g)) == 2
                               and killed not in pids_in(g)], 30, "the replacement's frames")
        (replacement,) = pids_in(later[0]) - pids_in(first)
        _wait(lambda: len([g for g in recorded() if replacement in pids_in(g)]) >= 3, 20,
              "three frames of the replacement")
    finally:
        viewer.send_signal(signal.SIGINT)
        try:
            _out, err = viewer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            viewer.kill()
            _out, err = viewer.communicate()
    assert viewer.returncode == 0, err
    groups = attach.load_record(record)
    assert all(g["kind"] == "group" and g["pid"] == process.pid for g in groups)
    # the master's track in the last frame: the kill's reaping and the new fork
    track = groups[-1]["track"]["traceEvents"]
    lanes = {e["args"]["pid"]: e["args"]["until"] for e in track
             if e.get("ph") == "X" and "until" in e.get("args", {})}
    assert lanes[killed] == "reaped" and lanes[replacement] == "not reaped yet"
    forks = {e["args"]["labkit_fork"] for e in track if "labkit_fork" in e.get("args", {})}
    assert {killed, replacement} <= forks
    # --perfetto: one merged trace, a process track per worker and the master's
    document = json.loads(trace.read_text())
    tracks = merge.process_tracks(document)
    workers = {pid for g in groups for pid in pids_in(g)}
    assert set(tracks) == workers | {process.pid} and replacement in workers
    import perfetto_check
    assert perfetto_check.problems(document, one_process=False) == []
    # each worker with more than one frame gets the arrow from its fork
    flows = [e for e in document["traceEvents"] if e.get("ph") in "sf" and e["cat"] == "fork"]
    targets = {e["pid"] for e in flows if e["ph"] == "f"}
    assert replacement in targets and targets <= workers
    assert {e["pid"] for e in flows if e["ph"] == "s"} == {process.pid}
    # the same frames as Perfetto's protobuf (--perfetto FILE.pftrace)
    proto_path = tmp_path / "merged.pftrace"
    attach.write_perfetto(groups, proto_path, group=True)
    proto = perfetto_check.proto_trace(proto_path)
    assert perfetto_check.proto_problems(proto) == []
    structure = perfetto_check.proto_structure(proto)
    assert structure["processes"] == tracks
    assert structure["threads"] == {(e["pid"], e["args"]["name"]) for e in document["traceEvents"]
                                    if e.get("name") == "thread_name"}
    arrows = [(source[0], target[0]) for source, target in structure["flows"].values()
              if source[2].startswith("fork worker ")]
    assert (process.pid, replacement) in arrows and {t for _, t in arrows} == targets


def test_serve_as_group_closes_the_hubs_console_and_the_file_goes_at_exit(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    script = textwrap.dedent('''
        import os, threading
        import labkit, labkit.console
        directory = labkit.console.socket_dir()
        before = sorted(os.listdir(directory))
        try:
            labkit.console.serve_as_group("")
        except TypeError as exc:
            print("TypeError", exc)
        path = labkit.console.serve_as_group("parent", {"traceEvents": []})
        print(before, sorted(os.listdir(directory)), os.path.basename(path))
        print(sorted(t.name for t in threading.enumerate()))
    ''')
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), LABKIT_CONSOLE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    pid = lines[1].split()[-1].split("-")[1].split(".")[0]
    assert lines[0].startswith("TypeError name must be a non-empty str")
    assert lines[1] == (f"['console-{pid}.sock'] ['console-{pid}.group'] "
                        f"console-{pid}.group")
    assert lines[2] == "['MainThread']"       # the console's block monitor stopped too
    assert os.listdir(runtime / "labkit") == []   # removed at exit
