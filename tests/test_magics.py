"""tracing.magics: %%trace, %trace_blocking and %labkit_status in a real kernel
(the status report they print is tested in tests/test_tracing_introspect.py).

The kernel tests share one kernel (see tests/kernel_harness.py): starting one
takes a second, and the magics are meant to be used cell after cell.
"""
import re
import time

import pytest

from kernel_harness import run_cell, running_kernel

pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def kc():
    with running_kernel() as (_km, client):
        ok(client, "%load_ext labkit\nimport time, labkit")
        yield client


def ok(kc, code, timeout=20):
    cell = run_cell(kc, code, timeout=timeout)
    assert cell.status == "ok", (cell.ename, cell.evalue, cell.stderr)
    return cell


def displayed(cell, mime):
    return [m["content"]["data"][mime] for m in cell.outputs
            if m["msg_type"] in ("display_data", "execute_result")
            and mime in m["content"]["data"]]


def test_load_ext_turns_the_blocking_detector_on_with_rate_limited_reports(kc):
    # (First in this file: the tests after it turn the detector off.)
    assert ok(kc, "%trace_blocking").stdout.strip() == \
        "blocking detector: on, threshold 0.1 s, each line reported at most every 10 s"
    ok(kc, "def careless():\n"
           "    time.sleep(0.15)\n")
    again = ok(kc, "for _ in range(3):\n"
                   "    labkit.spawn(careless).join()")
    assert again.stderr.count("labkit: blocked the loop for") == 1, again.stderr
    assert "line 2 in careless" in again.stderr
    try:
        later = ok(kc, "import tracing.magics\ntracing.magics.REPORT_EVERY = 0\n"
                       "labkit.spawn(careless).join()")
    finally:
        ok(kc, "tracing.magics.REPORT_EVERY = 10.0")
    assert "(2 more like it not shown since)" in later.stderr, later.stderr


def test_percent_trace_shows_summary_blocks_and_timeline(kc):
    cell = ok(kc, "%%trace t\n"
                  "def worker():\n"
                  "    labkit.sleep(0.01)\n"
                  "def careless():\n"     # 5x the threshold: a busy machine's watchdog
                  "    time.sleep(0.25)\n"  # still gets CPU to sample it
                  "g = labkit.spawn(careless); g.name = 'careless'\n"
                  "labkit.joinall([labkit.spawn(worker), g])\n"
                  "'the value'")
    assert displayed(cell, "text/plain")[0] == "'the value'"
    [summary] = [html for html in displayed(cell, "text/html") if "<table>" in html]
    assert "careless" in summary and "switches in" in summary
    [blocks] = [html for html in displayed(cell, "text/html") if "Blocking calls" in html]
    assert "line 5 of this cell in careless" in blocks
    assert len(displayed(cell, "image/png")) == 1
    # (A loaded machine may add a block of its own; careless's must be there once.)
    assert ok(kc, "print(type(t).__name__, [b.function for b in t.blocking()]"
                  ".count('careless'))").stdout.split() == ["Trace", "1"]


def test_percent_trace_lets_errors_through_and_stops_tracing(kc):
    cell = run_cell(kc, "%%trace\nraise ValueError('boom')")
    # (Once, in a fresh-clone run, this was a TypeError that never came
    # back: the message carries the kernel's traceback for the next time.)
    assert cell.ename == "ValueError", (cell.ename, cell.evalue, cell.stderr, [
        "\n".join(m["content"]["traceback"]) for m in cell.outputs if m["msg_type"] == "error"])
    # What records now is the blocking detector %load_ext labkit turned on, if anything.
    assert ok(kc, "import tracing.recorder, tracing.magics\n"
                  "monitor = tracing.magics._session_monitor\n"
                  "print(tracing.recorder.active() is (monitor and monitor._recorder))"
              ).stdout.strip() == "True"


def test_trace_blocking_reports_in_the_cell_that_blocked(kc):
    assert "on, threshold 50 ms" in ok(kc, "%trace_blocking on 0.05").stdout
    try:
        cell = ok(kc, "def careless():\n"
                      "    time.sleep(0.1)\n"
                      "g = labkit.spawn(careless); g.name = 'careless'\n"
                      "g.join()")
        assert "labkit: blocked the loop for" in cell.stderr
        assert ", line 2 in careless (careless)" in cell.stderr
        quiet = ok(kc, "labkit.spawn(labkit.sleep, 0.1).join()")
        assert "blocked" not in quiet.stderr
    finally:
        assert "off" in ok(kc, "%trace_blocking off").stdout
    after = ok(kc, "labkit.spawn(time.sleep, 0.1).join()")
    assert "blocked" not in after.stderr


def test_a_report_goes_to_the_cell_that_spawned_the_blocker(kc):
    ok(kc, "%trace_blocking on 0.05")
    try:
        spawner = ok(kc, "import labkit.event\n"
                         "go = labkit.event.Event()\n"
                         "def later():\n"
                         "    go.wait()\n"
                         "    time.sleep(0.1)\n"
                         "late = labkit.spawn(later); late.name = 'later'")
        # Read every message (run_cell would drop those of other cells).
        trigger = kc.execute("go.set(); late.join(); labkit.sleep(0.1)")
        deadline, texts, idle = time.monotonic() + 10, [], False
        while time.monotonic() < deadline and not (idle and texts):
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            parent = msg["parent_header"].get("msg_id")
            if parent == trigger and msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            assert not (parent == trigger and msg["msg_type"] == "stream"), msg["content"]
            if parent == spawner.msg_id and msg["msg_type"] == "stream":
                texts.append(msg["content"]["text"])
        kc.get_shell_msg(timeout=5)   # the trigger's reply
        assert texts and "line 5 in later (later)" in texts[0]
    finally:
        ok(kc, "%trace_blocking off")


def test_a_loop_that_stays_stuck_is_reported_while_it_is_stuck(kc, tmp_path):
    release = tmp_path / "release"
    ok(kc, "import tracing.magics\ntracing.magics.STUCK_AFTER = 0.3\n%trace_blocking on 0.05")
    try:
        # The greenlet holds the loop until the test sees the report: a report
        # made only once the block ends would never come.
        spawner = ok(kc, "import os\n"
                         "def holder():\n"
                         f"    while not os.path.exists({str(release)!r}):\n"
                         "        pass\n"
                         "stuck = labkit.spawn(holder); stuck.name = 'holder'")
        deadline, seen = time.monotonic() + 15, ""
        while time.monotonic() < deadline and "loop stuck" not in seen:
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            if msg["parent_header"].get("msg_id") == spawner.msg_id \
                    and msg["msg_type"] == "stream":
                seen += msg["content"]["text"]
        release.touch()
        assert "loop stuck for" in seen and "in greenlet holder at In[" in seen, seen
        assert ", line 3 in holder" in seen, seen
        status = ok(kc, "stuck.join(5)\n%labkit_status").stdout
        assert "loop: the last time it was stuck: loop stuck for" in status, status
        assert "in greenlet holder at In[" in status, status
    finally:
        release.touch()
        ok(kc, "%trace_blocking off\ntracing.magics.STUCK_AFTER = 5.0")


def test_trace_blocking_rejects_bad_arguments(kc):
    cell = run_cell(kc, "%trace_blocking sideways")
    assert "UsageError: usage: %trace_blocking on [THRESHOLD] | off" in cell.stderr


def test_labkit_status_lists_greenlets_and_their_waits(kc):
    ok(kc, "def napper():\n"
           "    labkit.sleep(30)\n"
           "nap = labkit.spawn(napper); nap.name = 'napper'")
    try:
        text = ok(kc, "%labkit_status").stdout
        assert text.startswith("hub: ") and "guest of the kernel" in text
        [line] = [l for l in text.splitlines() if l.startswith("napper")]
        assert "waiting" in line and "sleep(30)" in line and "line 2" not in line
        stacks = ok(kc, "%labkit_status --stacks napper").stdout
        assert "in napper" in stacks and "in sleep" in stacks
    finally:
        ok(kc, "nap.kill()")


def test_labkit_status_prints_the_table_and_a_greenlet_leaked_by_a_cell(kc):
    # The spawning cell is known to a recorder: the blocking detector's
    # (%load_ext labkit turns it on; a test above turned it off).
    ok(kc, "%trace_blocking on 0.1")
    ok(kc, "import tracing.lints\n"
           "def forever():\n"
           "    while True:\n"
           "        labkit.sleep(0.02)\n")
    ok(kc, "labkit.spawn(forever).name = 'forgotten'   # nothing keeps it")
    ok(kc, "kept = labkit.spawn(forever); kept.name = 'kept'")
    try:
        ok(kc, "tracing.lints.LEAKED_AFTER = 0.3\nlabkit.sleep(0.5)")
        text = ok(kc, "%labkit_status").stdout
        assert "busy" in text and "sched" in text and "idle" in text, text
        assert "lints (" in text
        table = text[text.index("times (tracing.snapshot()):"):]
        [row] = [l for l in table.splitlines() if l.startswith("  forgotten ")]
        assert "parked" in row and "timer 0.02 s" in row and "line 4 in forever" in row
        cell = re.search(r"In\[(\d+)\], line 1 by main", row).group(1)   # the spawning cell
        assert "loop: callbacks per pass" in text
        [lint] = [l.strip() for l in text.splitlines() if l.strip().startswith("leaked:")]
        assert lint.startswith(f"leaked: forgotten at In[{cell}], line 1 -- alive ")
        assert f"after In[{cell}] finished" in lint and "nothing in the notebook" in lint
        assert "leaked: kept" not in text          # the notebook's `kept` refers to it
    finally:
        ok(kc, "%trace_blocking off\ntracing.lints.LEAKED_AFTER = 30.0\n"
               "import gc\n"
               "labkit.killall([g for g in gc.get_objects() if isinstance(g, labkit.Greenlet)"
               " and g.name in ('forgotten', 'kept')])")
