"""The teaching notebooks run top to bottom on a real kernel, say what their
prose says they say, and their exercises check themselves.

Each lesson in notebooks/ is executed with nbclient (a real ipykernel, as
Jupyter would), in a scratch directory so that files they write stay out of
the tree, with the reference solutions in its exercise cells (see
notebooks/_build.py). Cells tagged in the lesson modules are then checked:
the tag names what the cell demonstrates, the test checks that its output
shows it. Every exercise's checker must pass on the reference solution and,
run again after the committed stub in the same kernel, fail on the stub.

The executed lessons are rendered to tests/artifacts/lessons/*.html (with an
index.html), the teacher's preview; ``python notebooks/_build.py --html DIR``
builds the same pages, and a test runs it.
"""
import importlib.util
import os
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
HTML_OUT = os.path.join(ROOT, "tests", "artifacts", "lessons")


def _load_build():
    spec = importlib.util.spec_from_file_location(
        "_notebooks_build", os.path.join(NOTEBOOKS, "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
#: Each lesson must run well within a minute (the issue's bound).
TIME_LIMIT = build.TIME_LIMIT


def execute(name, tmp_path):
    """Run lesson ``name`` (reference solutions in), check its exercises both
    ways, render it to HTML_OUT; return its tagged cells by tag."""
    lesson = build.LESSONS[name]
    stub_failures = {}

    def run_the_stubs(client):
        # Each committed stub, then its checker: the checker must fail.
        for number, exercise in enumerate(lesson.EXERCISES, 1):
            stub = nbformat.v4.new_code_cell(exercise.source("stub"))
            check = nbformat.v4.new_code_cell(exercise.source("check"))
            client.execute_cell(stub, 0)
            try:
                client.execute_cell(check, 0)
            except nbclient.exceptions.CellExecutionError as exc:
                stub_failures[number] = str(exc)

    start = time.monotonic()
    nb = build.execute(name, str(tmp_path), then=run_the_stubs)
    elapsed = time.monotonic() - start
    assert elapsed < TIME_LIMIT, f"{name} took {elapsed:.0f} s"
    cells = {cell.metadata["tags"][0]: cell for cell in nb.cells
             if cell.cell_type == "code" and cell.metadata.get("tags")}
    assert lesson.EXERCISES, f"{name} has no exercises"
    for number in range(1, len(lesson.EXERCISES) + 1):
        assert cells[f"exercise-{number}"].source == \
            lesson.EXERCISES[number - 1].source("solution")
        assert f"exercise {number}: passed" in stream(cells[f"check-{number}"]), \
            (name, number, cells[f"check-{number}"].outputs)
        assert number in stub_failures, \
            f"{name}: exercise {number}'s checker passes on the stub: it checks nothing"
    build.write_html(name, nb, HTML_OUT)
    return cells


def stream(cell, name="stdout"):
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


def data(cell, mime):
    return [o.data[mime] for o in cell.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.data]


def line_in_cell(cell, marker):
    for number, text in enumerate(cell.source.splitlines(), 1):
        if marker in text:
            return number
    raise AssertionError(f"{marker!r} not in the cell")


def test_the_notebooks_are_numbered_01_to_10():
    names = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))
    assert [n[:3] for n in names] == [f"{i:02d}_" for i in range(1, 11)]
    assert names == list(build.LESSONS)


def test_the_committed_notebooks_have_no_outputs():
    for name in os.listdir(NOTEBOOKS):
        if name.endswith(".ipynb"):
            nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
            assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name


def test_the_committed_notebooks_are_built_from_their_lessons():
    # notebooks/_lessons/ is the source; after editing a lesson, run
    # python notebooks/_build.py and commit both.
    for name in build.NOTEBOOKS:
        with open(os.path.join(NOTEBOOKS, name), encoding="utf-8") as f:
            assert f.read() == build.render(name), \
                f"{name} differs from its lesson: run python notebooks/_build.py"


def test_01_cooperative_multitasking(tmp_path):
    cells = execute("01_cooperative_multitasking.ipynb", tmp_path)
    assert "['ping 0', 'pong 0', 'ping 1', 'pong 1', 'ping 2', 'pong 2']" in \
        stream(cells["raw-pingpong"])
    assert "['A0', 'B0', 'A1', 'B1', 'A2']" in stream(cells["tiny-scheduler"])
    assert "['A0', 'B0', 'A1', 'B1', 'A2']" in stream(cells["hub-workers"])
    sleepers = stream(cells["sleepers"])
    assert "woke in this order: [100, 200, 300]" in sleepers
    took = int(re.search(r"took (\d+) ms", sleepers).group(1))
    # Concurrently: about the longest, not the sum. The sum is 300 ms above
    # the longest, which no scheduling delay on a busy machine makes up.
    assert 300 <= took < 600
    trace = cells["trace-steppers"]
    assert any("stepper-A" in html for html in data(trace, "text/html"))
    assert len(data(trace, "image/png")) == 1


def test_02_a_server_in_the_notebook(tmp_path):
    cells = execute("02_a_server_in_the_notebook.ipynb", tmp_path)
    status = stream(cells["status-idle"])
    assert re.search(r"echo-server\s+waiting\s+socket\.accept", status)
    clients = stream(cells["clients"])
    assert "['client 2, message 0', 'client 2, message 1', 'client 2, message 2']" in clients
    assert "connections served so far: 3" in clients
    assert "from a thread 2" in stream(cells["thread-client"])
    assert data(cells["dashboard"], "application/vnd.jupyter.widget-view+json")
    cleanup = stream(cells["cleanup"])
    assert "labkit threads left: []" in cleanup and "server closed: True" in cleanup


def test_03_blocking_reports_name_the_line_and_the_fixes_silence_them(tmp_path):
    cells = execute("03_finding_blocking_calls.ipynb", tmp_path)
    for tag, marker, function in [("blocking-sleep", "time.sleep", "fetch_slowly"),
                                  ("blocking-cpu", "total += i % 7", "crunch"),
                                  ("blocking-library", "urlopen", "fetch_with_urllib")]:
        cell = cells[tag]
        report = stream(cell, "stderr")
        line = line_in_cell(cell, marker)
        assert "labkit: blocked the loop for" in report, tag
        assert f", line {line} in {function} ({function})" in report, (tag, report)
    for tag in ("fixed-sleep", "fixed-cpu-slices", "fixed-library"):
        assert "blocked the loop" not in stream(cells[tag], "stderr"), tag
    # The heartbeat felt the 200 ms blocking calls, and not their cooperative
    # twins: it stopped beating while they ran (at most a beat on either
    # side), and kept beating every 20 ms while the fixes ran. Counts and an
    # ordering, not milliseconds: scheduling delays on a loaded machine make
    # the fixes' lateness anything from 0 to tens of ms, and cost a beat or
    # two, not six.
    def heartbeat(tag):
        found = re.search(r"late by ([\d.]+) ms; beats while it ran: (\d+)",
                          stream(cells[tag]))
        assert found, (tag, stream(cells[tag]))
        return float(found.group(1)), int(found.group(2))
    for blocking, fixed in [("blocking-sleep", "fixed-sleep"),
                            ("blocking-library", "fixed-library")]:
        (blocked_late, blocked_beats), (fixed_late, fixed_beats) = \
            heartbeat(blocking), heartbeat(fixed)
        assert blocked_late >= 150 and blocked_beats <= 2, blocking
        assert fixed_beats >= 4 and fixed_late < blocked_late, fixed


def test_04_what_a_switch_costs(tmp_path):
    cells = execute("04_what_a_switch_costs.ipynb", tmp_path)
    report = stream(cells["switchcost"])
    figure = r"\s+(-?[\d.]+) ns\s+\((-?[\d.]+) \.\. (-?[\d.]+)\)"
    spreads = {}
    for name in ("greenlet switch", "sleep(0)", "sleep(0) traced", "poll"):
        found = re.search(rf"^  {re.escape(name)}{figure}\s+spread (\d+)%$", report, re.M)
        assert found, (name, report)
        median, low, high = map(float, found.groups()[:3])
        assert low <= median <= high
        spreads[name] = int(found.group(4))
    parts = {}
    for part in ("2 greenlet switches", "the poll (its share)", "the hub's pass (the rest)",
                 "the tracer (traced - untraced)"):
        found = re.search(rf"^  {re.escape(part)}{figure}\s+-?\d+% of an untraced yield$",
                          report, re.M)
        assert found, (part, report)
        parts[part] = float(found.group(1))
    # The noise warning is there exactly when a figure's rounds spread wide.
    # (A spread printed as exactly 20% may be either side of the line.)
    if 20 not in spreads.values():
        assert ("NOISE WARNING" in report) == any(v > 20 for v in spreads.values()), report
    # The sentences printed under it agree with the figures printed above.
    said = stream(cells["breakdown"])
    largest = re.search(r"the largest part of it here: (.+) \(\d+%\)", said).group(1)
    inside = {p: v for p, v in parts.items() if not p.startswith("the tracer")}
    assert inside[largest] == max(inside.values()), (largest, inside)
    tracer_said = float(re.search(r"the tracer adds (-?\d+) ns per yield", said).group(1))
    assert abs(tracer_said - parts["the tracer (traced - untraced)"]) <= 1, said
    assert len(data(cells["breakdown"], "image/png")) == 1
    peers = stream(cells["peers"])
    assert re.search(r"^labkit\s+\d+ ns per sleep\(0\)\s+\(\d+ \.\. \d+, spread \d+%\)",
                     peers, re.M), peers
    for peer in ("gevent", "asyncio"):
        installed = importlib.util.find_spec(peer) is not None
        assert bool(re.search(rf"^{peer}\s+\d+ ns per sleep", peers, re.M)) == installed, peers
    assert len(data(cells["peers"], "image/png")) == 1


def test_04_states_no_figure_it_does_not_measure():
    # Issue 18: the text said "the same" and "a few tens of nanoseconds" while
    # the cells printed 0.48x-1.37x and microseconds. The prose now points at
    # the printed figures instead of stating its own.
    prose = "\n".join(c.source for c in build.NOTEBOOKS["04_what_a_switch_costs.ipynb"]
                      if c.cell_type == "markdown")
    assert not re.search(r"\d\s*(ns|µs|nanosecond|microsecond)", prose)
    for claim in ("the same", "tens of", "a few hundred"):
        assert claim not in prose


def test_05_reading_a_trace(tmp_path):
    cells = execute("05_reading_a_trace.ipynb", tmp_path)
    assert "1 blocks" in data(cells["record"], "text/plain")[0]
    summary = data(cells["summary"], "text/html")[0]
    for name in ("producer", "consumer", "careless", "longest run"):
        assert name in summary
    assert "producer" in stream(cells["switches"]) and "because: start" in stream(cells["switches"])
    blocks = stream(cells["blocks"])
    record_cell = cells["record"]
    assert re.search(rf"careless blocked the loop for \d+ ms in consumer, at In\[\d+\], "
                     rf"line {line_in_cell(record_cell, 'time.sleep(0.08)')}$", blocks, re.M), blocks
    assert "threads: ['main', 'hub', 'producer', 'consumer', 'careless', 'poll']" in \
        stream(cells["perfetto"]) or "'careless'" in stream(cells["perfetto"])
    assert (tmp_path / "reading-a-trace.perfetto.json").exists()
    assert len(data(cells["percent-trace"], "image/png")) == 1


def test_06_timeouts_and_cancellation(tmp_path):
    cells = execute("06_timeouts_and_cancellation.ipynb", tmp_path)
    assert re.search(r"gave up after [\d.]+ s: 0.1 seconds\nanswer: None", stream(cells["timeout-raises"]))
    forms = stream(cells["timeout-forms"])
    assert "silent timeout: no answer" in forms and "with_timeout: too slow" in forms
    assert "in time:      42" in forms
    kill = stream(cells["kill"])
    assert "'d1: connect'" in kill and kill.rstrip().splitlines()[0].endswith("'d1: disconnect']")
    assert "dead: True | successful: True" in kill
    race = stream(cells["race"])
    assert "first answer from: fast" in race and "cancelled: ['slow', 'medium']" in race
    assert "all dead: True" in race
    cooperative = re.search(r"slices finished: (\d+); dead: True", stream(cells["cooperative"]))
    assert cooperative and int(cooperative.group(1)) >= 1


def test_07_errors_in_greenlets(tmp_path):
    cells = execute("07_errors_in_greenlets.ipynb", tmp_path)
    one_fails = cells["one-fails"]
    assert "ZeroDivisionError: division by zero" in stream(one_fails, "stderr")
    lines = stream(one_fails).splitlines()
    assert [line.split()[1] for line in lines] == ["True", "False", "True"], lines
    assert "caught here: ZeroDivisionError" in stream(cells["get-raises"])
    assert "joinall raised: ZeroDivisionError" in stream(cells["joinall-raises"])
    assert stream(cells["supervise"]).splitlines() == [
        "RuntimeError('worker 0 crashed')", "RuntimeError('worker 1 crashed')",
        "worker 2 finished"]
    assert "killed: successful = True" in stream(cells["greenlet-exit"])
    assert not stream(cells["greenlet-exit"], "stderr")


def test_08_the_primitives(tmp_path):
    cells = execute("08_the_primitives.ipynb", tmp_path)
    assert "['w1 waits', 'w2 waits', 'w3 waits', '-- set --', 'w1 goes', 'w2 goes', 'w3 goes']" \
        in stream(cells["event"])
    queue = stream(cells["queue"])
    sizes = [int(n) for n in re.findall(r"\(queue: (\d+)\)", queue)]
    assert len(sizes) == 6 and max(sizes) == 2, queue       # back-pressure: never more than 2
    assert sorted(re.findall(r"did (\d)", queue)) == list("012345")
    assert "at most inside at once: 2" in stream(cells["semaphore"])
    pool = stream(cells["pool"])
    assert "[0, 1, 4, 9, 16]" in pool
    unordered = re.search(r"as done\): \[([\d, ]+)\]", pool).group(1)
    assert sorted(map(int, unordered.split(", "))) == [0, 1, 4, 9, 16]


def test_09_my_notebook_is_stuck(tmp_path):
    cells = execute("09_my_notebook_is_stuck.ipynb", tmp_path)
    assert "blocking detector: on, threshold 0.1 s" in stream(cells["detector-on"])
    nap = stream(cells["blocking-sleep"], "stderr")
    assert "RuntimeWarning: time.sleep(0.15) in a greenlet" in nap
    assert re.search(r"blocked the loop for \d+ ms at In\[\d+\], line 2 in nap", nap), nap
    runaway = cells["runaway"]
    spin_line = line_in_cell(runaway, "while True")
    # The watchdog spoke while the loop was stuck, naming the greenlet and the line ...
    assert re.search(rf"loop stuck for 1\.\d s in greenlet spin at In\[\d+\], line {spin_line}",
                     stream(runaway, "stderr")), stream(runaway, "stderr")
    # ... and the interrupt stopped that greenlet, not the kernel.
    errors = [o for o in runaway.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "KeyboardInterrupt"
    assert "stopped greenlet 'spin'" in errors[0].evalue
    after = stream(cells["after-interrupt"])
    assert "spin dead: True" in after and "KeyboardInterrupt" in after
    assert re.search(r"the last time it was stuck: loop stuck for [\d.]+ s in greenlet spin", after)
    in_use = cells["address-in-use"]
    error = [o for o in in_use.outputs if o.output_type == "error"][0]
    port = re.search(r"listening on port (\d+)", stream(cells["first-server"])).group(1)
    shown = "\n".join(error.traceback) + stream(in_use, "stderr")
    assert "Address already in use" in error.evalue
    assert re.search(rf"StreamServer.*{port}", re.sub(r"\x1b\[[\d;]*m", "", shown)), shown
    stopped = stream(cells["servers-stopped"]).splitlines()
    assert f"'127.0.0.1', {port})" in stopped[0] and stopped[1] == "live servers: []"
    assert f"started again on port {port}" in stream(cells["restarted"])


def test_10_the_socket_wait_by_hand(tmp_path):
    cells = execute("10_the_socket_wait_by_hand.ipynb", tmp_path)
    toy = stream(cells["toy-run"])
    real = stream(cells["labkit-run"])
    toy_runs = int(re.search(r"(\d+) runs, \d+ polls", toy).group(1))
    real_resumes = int(re.search(r"(\d+) resumes", real).group(1))
    names = {"client-1", "server-1", "client-2", "server-2"}
    toy_order, real_order = toy.splitlines()[1].split(), real.splitlines()[1].split()
    assert set(toy_order) == set(real_order) == names
    # The text's claim: the toy parks before every recv, labkit only on
    # EAGAIN, so labkit resumes the greenlets fewer times for the same work.
    assert real_resumes == len(real_order) < toy_runs == len(toy_order)
    assert len(data(cells["side-by-side"], "image/png")) == 1


def test_build_html_renders_an_executed_lesson_for_the_teacher(tmp_path):
    # The command a teacher runs; one quick lesson keeps it short (the
    # lesson tests above render every lesson into tests/artifacts/lessons/).
    out = tmp_path / "site"
    subprocess.run([sys.executable, os.path.join(NOTEBOOKS, "_build.py"), "--html", str(out),
                    "--only", "08"], check=True, timeout=TIME_LIMIT + 30,
                   capture_output=True, cwd=str(tmp_path))
    page = (out / "08_the_primitives.html").read_text(encoding="utf-8")
    assert "Teacher&#39;s edition" in page or "Teacher's edition" in page
    assert "at most inside at once: 2" in page          # an output, executed
    assert "exercise 2: passed" in page                  # the checkers, on the solutions
    index = (out / "index.html").read_text(encoding="utf-8")
    assert 'href="08_the_primitives.html"' in index


def test_build_refuses_an_unknown_lesson_number():
    with pytest.raises(ValueError, match="99"):
        build.select("01,99")
