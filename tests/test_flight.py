"""tracing.flight: the always-on ring, dumped on request, on a signal, after a block.

Each dump is a real file read back as JSON; a fork test runs a real child
process and merges the two processes' files (tracing/merge.py).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import labkit
import tracing
from tracing import flight, merge

pytestmark = pytest.mark.timeout(60)


def _events(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["traceEvents"]


def _lane_names(events):
    return {e["args"]["name"] for e in events if e.get("name") == "thread_name"}


def _wait_until(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        labkit.sleep(0.01)
    return predicate()


@pytest.fixture
def recorder(tmp_path):
    started = []

    def start(**options):
        options.setdefault("report", False)
        fr = flight.start(tmp_path, **options)
        started.append(fr)
        return fr

    yield start
    for fr in started:
        fr.wait_for_dumps(10)
        fr.stop()


def test_a_block_longer_than_the_threshold_is_dumped_with_the_seconds_around_it(recorder):
    fr = recorder(threshold=0.05, before=1.0, after=0.3)

    def before_block():
        labkit.sleep(0.001)

    def blocker():
        time.sleep(0.15)   # not cooperative: the loop is stuck here

    def after_block():
        labkit.sleep(0.001)

    labkit.spawn(before_block).name = "before-block"
    labkit.sleep(0.02)
    labkit.spawn(blocker).name = "blocker"
    labkit.sleep(0.01)
    labkit.spawn(after_block).name = "after-block"
    assert _wait_until(lambda: fr.dumps, 10), "no automatic dump"
    assert fr.wait_for_dumps(10)
    path = fr.dumps[0]
    assert os.path.basename(path).startswith(f"labkit-flight-{os.getpid()}-")
    assert "blocked" in path
    events = _events(path)
    # (Under load a descheduled process may add a shorter block past the
    # 0.05 s threshold elsewhere: seen once in the full suite.)
    blocks = [e for e in events if e.get("cat") == "blocking" and e["dur"] >= 0.15e6 * 0.9]
    assert len(blocks) == 1 and "test_flight.py" in blocks[0]["name"]
    # the seconds before (a greenlet that ran and exited) and after (one spawned later)
    assert {"before-block", "blocker", "after-block"} <= _lane_names(events)
    assert all(e["pid"] == os.getpid() for e in events if "pid" in e)


def test_dump_on_request_holds_only_the_last_seconds(recorder):
    fr = recorder()
    labkit.spawn(labkit.sleep, 0.001).name = "old"
    labkit.sleep(0.3)
    labkit.spawn(labkit.sleep, 0.001).name = "recent"
    labkit.sleep(0.01)
    path = fr.dump(before=0.15)
    lanes = _lane_names(_events(path))
    assert "recent" in lanes and "old" not in lanes
    assert merge.read(path)["metadata"]["labkit"]["reason"] == "request"
    with pytest.raises(ValueError, match="before"):
        fr.dump(before=-1)
    with pytest.raises(ValueError, match="after"):
        fr.dump(after="1")


def test_a_signal_dumps_when_asked_for(recorder):
    fr = recorder(signal="USR2", before=1.0, after=0.0)
    labkit.spawn(labkit.sleep, 0.001).name = "worked"
    labkit.sleep(0.01)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert _wait_until(lambda: fr.dumps and not fr._busy, 10)
    assert "signal-SIGUSR2" in fr.dumps[0]
    assert "worked" in _lane_names(_events(fr.dumps[0]))
    fr.stop()
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None) or \
        signal.getsignal(signal.SIGUSR2) != fr._on_signal


def test_automatic_dumps_stop_at_max_dumps(recorder):
    fr = recorder(threshold=0.03, before=0.1, after=0.0, max_dumps=1)
    for _ in range(3):   # three blocks, while main waits on a timer
        labkit.spawn(time.sleep, 0.06)
        labkit.sleep(0.1)
    assert fr.wait_for_dumps(10)
    assert len(fr.dumps) == 1 and fr.skipped >= 1


def test_the_flight_recorder_steps_aside_for_a_trace_and_resumes(recorder):
    fr = recorder()
    first = fr.recorder
    with tracing.trace() as t:
        labkit.spawn(labkit.sleep, 0).join()
    assert t.greenlets()
    assert fr.running and fr.recorder is not first   # a fresh ring after the trace
    labkit.spawn(labkit.sleep, 0.001).name = "after-trace"
    labkit.sleep(0.01)
    assert "after-trace" in _lane_names(_events(fr.dump()))


def test_the_side_table_forgets_what_the_ring_forgot(recorder):
    fr = recorder(capacity=1024)
    fr.recorder.PRUNE_EVERY = 256
    keeper = labkit.spawn(labkit.sleep, 5)
    keeper.name = "long-lived"
    for _ in range(40):
        labkit.joinall([labkit.spawn(labkit.sleep, 0) for _ in range(100)])
    rec = fr.recorder
    assert rec.spawn_base > 3000            # 4,000 spawns, most forgotten
    assert len(rec.spawns) + len(rec._old_live) < 1500
    assert rec.name_of(id(keeper)) == "long-lived"   # alive: still known
    keeper.kill()


def test_config_from_the_environment():
    assert flight.parse_config("/tmp/x,threshold=0.2,before=3,after=0.5,signal=USR2,"
                               "capacity=4096,max_dumps=2,exit=1,report=no") == {
        "directory": "/tmp/x", "threshold": 0.2, "before": 3.0, "after": 0.5,
        "signal": "USR2", "capacity": 4096, "max_dumps": 2, "dump_at_exit": True,
        "report": False}
    assert flight.parse_config("1") == {"directory": "."}
    with pytest.raises(ValueError, match="threshold"):
        flight.parse_config("/tmp/x,threshold=soon")
    with pytest.raises(ValueError, match="colour"):
        flight.parse_config("/tmp/x,colour=red")
    with pytest.raises(ValueError, match="signal"):
        flight.parse_config("/tmp/x,signal=NOPE")
    assert flight.start_from_env({}) is None
    with pytest.raises(ValueError, match="threshold"):
        flight.FlightRecorder(".", threshold=0)
    with pytest.raises(TypeError, match="directory"):
        flight.FlightRecorder(3)


FORKING = textwrap.dedent('''
    import os, sys, time, labkit
    from tracing import flight
    fr = flight.start(sys.argv[1], report=False, before=5, after=0, threshold=0.05)
    labkit.spawn(labkit.sleep, 0.001).name = "before-fork"
    labkit.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        labkit.spawn(labkit.sleep, 0.001).name = "in-child"
        labkit.spawn(time.sleep, 0.1)   # a block: the child's watchdog must see it
        labkit.sleep(0.3)
        fr.wait_for_dumps(10)
        blocked = [p for p in fr.dumps if "blocked" in p]
        fr.dump(reason="child")
        os._exit(0 if blocked else 3)
    labkit.spawn(labkit.sleep, 0.001).name = "in-parent"
    labkit.sleep(0.01)
    fr.dump()
    _, status = os.waitpid(pid, 0)
    print(pid, status)
''')


def test_after_fork_the_child_records_afresh_and_the_files_merge(tmp_path):
    script = tmp_path / "forking.py"
    script.write_text(FORKING)
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    child_pid, status = map(int, out.stdout.split())
    assert status == 0, "the child's blocking monitor did not dump its block"
    files = sorted(tmp_path.glob("labkit-flight-*.json"))
    by_pid = {merge.read(f)["metadata"]["labkit"]["pid"]: f for f in files
              if "blocked" not in f.name}
    assert len(by_pid) == 2
    child = _lane_names(_events(by_pid[child_pid]))
    assert "in-child" in child and "before-fork" not in child and "in-parent" not in child
    parent_pid = next(p for p in by_pid if p != child_pid)
    assert {"before-fork", "in-parent"} <= _lane_names(_events(by_pid[parent_pid]))
    merged = merge.merge(tmp_path, tmp_path / "merged.out")
    assert set(merge.process_tracks(merged)) == {child_pid, parent_pid}


def test_stopped_while_a_trace_pushed_it_aside_it_stays_stopped(recorder):
    fr = recorder()
    with tracing.trace():
        fr.stop()
    assert not fr.running and flight.current() is None
    assert tracing.recorder.active() is None


def test_a_dump_that_cannot_be_written_raises_and_recording_goes_on(recorder, tmp_path):
    fr = recorder()
    with pytest.raises(RuntimeError, match="converter"):
        fr.dump(tmp_path / "no-such-dir" / "x.json")
    assert fr.running
    labkit.spawn(labkit.sleep, 0.001).name = "still-recorded"
    labkit.sleep(0.01)
    assert "still-recorded" in _lane_names(_events(fr.dump()))
