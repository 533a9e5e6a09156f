"""A parent that runs its own hub and serves its console (LABKIT_CONSOLE=1)
forks children: each child that runs its hub serves its own console (the
same way: labkit.console), one whose hub never runs opens no socket, and
``python -m labkit console PARENT_PID`` shows the parent and its serving
children in one table (tracing/attach_group.py). Real processes; every child
is stopped and reaped by the parent, with a deadline."""
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import stop_process

pytestmark = pytest.mark.timeout(90)

PARENT = textwrap.dedent(r'''
    import multiprocessing, os, signal, sys, time
    import labkit

    stop_file = sys.argv[1]

    def ticker(name):
        labkit.getcurrent().name = name
        while not os.path.exists(stop_file):
            labkit.sleep(0.02)

    def child_with_hub(n):
        t = labkit.spawn(ticker, f"child{n}-ticker")
        t.join(60)

    def child_without_hub():
        deadline = time.monotonic() + 60
        while not os.path.exists(stop_file) and time.monotonic() < deadline:
            time.sleep(0.02)   # never yields to labkit: its hub never runs

    def fork(body, *args):
        pid = os.fork()
        if pid == 0:
            try:
                body(*args)
            finally:
                os._exit(0)
        return pid

    def forker():
        pids = [fork(child_with_hub, 0), fork(child_without_hub)]
        process = multiprocessing.get_context("fork").Process(target=child_with_hub, args=(9,))
        process.start()
        return pids, process

    labkit.spawn(ticker, "parent-ticker")
    g = labkit.spawn(forker)
    (with_hub, without_hub), process = g.get()
    print(with_hub, without_hub, process.pid, flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(stop_file) and time.monotonic() < deadline:
        labkit.sleep(0.05)
    for pid in (with_hub, without_hub):
        end = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            labkit.sleep(0.02)
    process.join(10)
    if process.is_alive():
        process.kill()
        process.join()
''')


def test_a_parent_with_its_own_hub_is_shown_with_the_children_it_forked(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    stop = tmp_path / "stop"
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = dict(os.environ, LABKIT_CONSOLE="1", XDG_RUNTIME_DIR=str(runtime), COLUMNS="160")
    parent = subprocess.Popen([sys.executable, str(script), str(stop)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with_hub, without_hub, mp_child = (int(p) for p in parent.stdout.readline().split())
        sockets = runtime / "labkit"
        serving = [parent.pid, with_hub, mp_child]
        deadline = time.monotonic() + 30
        while not all((sockets / f"console-{pid}.sock").exists() for pid in serving):
            assert time.monotonic() < deadline, sorted(os.listdir(sockets))
            time.sleep(0.05)
        for pid in serving:   # each child's own socket, private as the parent's
            info = os.lstat(sockets / f"console-{pid}.sock")
            assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        # the child whose hub never runs opened nothing it could not answer on
        assert not (sockets / f"console-{without_hub}.sock").exists()

        def shown():
            result = subprocess.run([sys.executable, "-m", "labkit", "console",
                                     str(parent.pid), "--once"], env=env,
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            return result.stdout

        out = shown()
        deadline = time.monotonic() + 20
        while "child9-ticker" not in out or "child0-ticker" not in out:
            assert time.monotonic() < deadline, out
            time.sleep(0.2)
            out = shown()
        assert f"process {parent.pid}: 3 processes serving a console" in out
        rows = [line for line in out.splitlines() if "-ticker" in line]
        for pid, name in ((parent.pid, "parent-ticker"), (with_hub, "child0-ticker"),
                          (mp_child, "child9-ticker")):
            assert any(line.startswith(f"│ {pid} ") and name in line for line in rows), out
        # in a child, the parent's greenlets live on (fork copies them), under the child's pid
        assert any(line.startswith(f"│ {with_hub} ") and "parent-ticker" in line
                   for line in rows), out
        assert str(without_hub) not in out
    finally:
        stop.write_text("")
        try:
            parent.wait(timeout=30)
        finally:
            stop_process(parent)
    assert parent.returncode == 0, parent.stderr.read()
    # the parent removed its socket at exit; children that left by os._exit
    # (as forked children and multiprocessing's do) cannot: theirs are swept
    # as any dead process's are
    from tracing import attach
    left = sorted(name for name in os.listdir(runtime / "labkit") if name.endswith(".sock"))
    assert left == sorted(f"console-{pid}.sock" for pid in (with_hub, mp_child))
    attach.sweep_stale_sockets(str(runtime / "labkit"))
    assert not any(name.endswith(".sock") for name in os.listdir(runtime / "labkit"))
