"""labkit.subprocess: the stdlib's subprocess API, waiting cooperatively.

"Cooperatively" is checked the same way throughout: a ticker greenlet must
keep running while the test waits for a child.
"""
import os
import sys
import time

import pytest

import labkit
from helpers import run_python
from labkit import subprocess

pytestmark = pytest.mark.timeout(60)


def ticker(ticks):
    # Every 2 ms: a cooperative wait of 0.2 s gives ~100 ticks, so the
    # thresholds below hold even when a busy machine makes each tick late.
    while True:
        ticks.append(time.monotonic())
        labkit.sleep(0.002)


def test_twenty_concurrent_check_outputs_finish_together():
    order = []

    def run():
        order.append("started")
        output = subprocess.check_output(["sleep", "1"])
        order.append("finished")
        return output

    started = time.monotonic()
    jobs = [labkit.spawn(run) for _ in range(20)]
    labkit.joinall(jobs, raise_error=True)
    elapsed = time.monotonic() - started
    assert [job.value for job in jobs] == [b""] * 20
    # All twenty children were running at once: each was started before any
    # had finished (in series: started, finished, started, ...).
    assert order == ["started"] * 20 + ["finished"] * 20
    assert 1 <= elapsed < 20  # in series it would take 20 s


def test_wait_parks_only_the_waiting_greenlet():
    ticks = []
    tick = labkit.spawn(ticker, ticks)
    assert subprocess.call(["sleep", "0.2"]) == 0
    tick.kill()
    assert len(ticks) >= 5


def test_the_exit_is_noticed_without_a_pidfd(monkeypatch):
    monkeypatch.setattr(subprocess, "_pidfd_open", None)  # the polling fallback
    process = subprocess.Popen(["sh", "-c", "exit 7"])
    assert process._pidfd is None
    assert process.wait(timeout=5) == 7


def test_wait_timeout_raises_and_the_child_can_still_be_waited_for():
    process = subprocess.Popen(["sleep", "5"])
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.1)
    assert process.poll() is None
    process.kill()
    assert process.wait(timeout=5) == -9


def test_run_timeout_kills_and_reaps_the_child(tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 10"], timeout=0.3)
    assert time.monotonic() - started < 5
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed *and* reaped: no zombie left
        os.kill(pid, 0)


def test_communicate_timeout_keeps_partial_output_and_can_be_retried():
    process = subprocess.Popen(["sh", "-c", "echo first; sleep 0.4; echo second"],
                               stdout=subprocess.PIPE)
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        process.communicate(timeout=0.2)
    assert caught.value.output == b"first\n"
    out, err = process.communicate(timeout=5)
    assert out == b"first\nsecond\n" and err is None


def test_communicate_feeds_stdin_while_reading_both_pipes():
    # 1 MB each way: with blocking pipes and no concurrency this deadlocks.
    data = os.urandom(1 << 20)
    script = ("import sys; d = sys.stdin.buffer.read(); "
              "sys.stderr.buffer.write(d); sys.stdout.buffer.write(d[::-1])")
    result = subprocess.run([sys.executable, "-c", script], input=data,
                            capture_output=True, timeout=20)
    assert result.stdout == data[::-1] and result.stderr == data


def test_text_mode_and_errors_match_the_stdlib():
    result = subprocess.run(["cat"], input="héllo\r\nworld\n", capture_output=True, text=True)
    assert result.stdout == "héllo\nworld\n"
    with pytest.raises(subprocess.CalledProcessError) as caught:
        subprocess.check_output(["sh", "-c", "echo oops; exit 3"])
    assert caught.value.returncode == 3 and caught.value.output == b"oops\n"
    assert subprocess.getstatusoutput("echo hi; exit 2") == (2, "hi")
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.check_call(["false"])


def test_reading_stdout_line_by_line_is_cooperative():
    ticks = []
    tick = labkit.spawn(ticker, ticks)
    process = subprocess.Popen(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"],
                               stdout=subprocess.PIPE, text=True)
    with process:
        lines = list(process.stdout)
    tick.kill()
    assert lines == ["1\n", "2\n", "3\n"] and process.returncode == 0
    assert len(ticks) >= 10


def test_patch_subprocess_makes_the_stdlib_functions_ours():
    code = ("from labkit import monkey; monkey.patch_subprocess(); import subprocess, labkit; "
            "import labkit.subprocess as ours; assert subprocess.Popen is ours.Popen; "
            "jobs = [labkit.spawn(subprocess.check_output, ['sleep', '0.2']) for _ in range(5)]; "
            "labkit.joinall(jobs); print('ok')")
    assert run_python(code, timeout=30) == "ok\n"


def test_wait_on_popen_objects_returns_when_the_children_exit():
    import sys as _sys
    import labkit
    from labkit import subprocess as lsub
    popens = [lsub.Popen([_sys.executable, "-c", f"import sys; sys.exit({code})"])
              for code in (3, 4)]
    done = labkit.wait(popens, timeout=30)
    assert sorted(p.returncode for p in done) == [3, 4]
    seen = []
    popens[0].rawlink(seen.append)        # already exited: called at once (next pass)
    labkit.sleep(0.01)
    assert seen == [popens[0]]
