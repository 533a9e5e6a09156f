"""tracing.console and tracing.frames: the live console widget and what it shows.

The widget runs in this process (its widgets talk to no frontend; the
browser test in tests/e2e/ drives it in JupyterLab), and one test runs a
real kernel for the asyncio Tasks of top-level ``await`` cells. Waits are
bounded loops on the console's own refresh counter, never fixed sleeps.
"""
import threading
import time

import pytest

import labkit
import tracing.recorder
from labkit.event import Event
from tracing import frames
from tracing.introspect import live_greenlets

pytest.importorskip("ipywidgets")

from tracing.console import Console, row_label, table_rows  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def wait_for_refreshes(console, count, limit=20.0):
    """Run the hub (cooperatively) until ``console`` applied ``count`` more views."""
    target = console.refreshes + count
    deadline = time.monotonic() + limit
    while console.refreshes < target:
        assert time.monotonic() < deadline, f"only {console.refreshes} refreshes in {limit} s"
        labkit.sleep(0.05)


def _waiter(event):
    event.wait()   # CONSOLE-WAIT


def _ticker():
    while True:
        labkit.sleep(0.01)


@pytest.fixture
def scene():
    """A ticker, a greenlet parked on an Event, one joining it."""
    event = Event()
    ticker = labkit.spawn(_ticker)
    ticker.name = "ticker"
    waiter = labkit.spawn(_waiter, event)
    waiter.name = "waiter"
    joiner = labkit.spawn(waiter.join)
    joiner.name = "joiner"
    labkit.sleep(0.02)
    yield {"event": event, "ticker": ticker, "waiter": waiter, "joiner": joiner}
    event.set()
    labkit.killall([ticker, waiter, joiner])


@pytest.fixture
def console():
    c = Console(refresh=0.25, timeline=False)
    yield c
    c.close()


def _labels(console):
    return [label for label, _value in console._table.options]


# -- the widget ---------------------------------------------------------------------

def test_the_table_lists_the_greenlets_and_what_they_wait_on(scene, console):
    wait_for_refreshes(console, 2)
    labels = {label.split()[0]: label for label in _labels(console)}
    assert {"ticker", "waiter", "joiner"} <= set(labels)
    assert "Event" in labels["waiter"] and "test_console.py" in labels["waiter"]
    assert "join waiter" in labels["joiner"]
    assert not any("labkit-console" in label for label in labels)   # not its own greenlet
    ticker_row = next(r for r in console.ring[-1]["rows"] if r["name"] == "ticker")
    assert ticker_row["switches"] > 0 and ticker_row["busy"] > 0   # it records for the times


def test_the_wait_for_graph_follows_a_join_to_the_event(scene, console):
    wait_for_refreshes(console, 2)
    graph = console._waits.value
    assert "joiner --join--&gt; waiter --Event 0x" in graph
    assert f"Event {id(scene['event']):#x} &lt;- waited on by waiter" in graph
    assert "others refer to it" in graph   # the fixture holds the Event


def test_a_lost_wake_up_is_in_the_lints_and_the_graph(console):
    def park_on_a_private_event():
        Event().wait()   # CONSOLE-LOST

    lost = labkit.spawn(park_on_a_private_event)
    lost.name = "lost-one"
    try:
        deadline = time.monotonic() + 20
        while "lost-one" not in console._lints.value:
            assert time.monotonic() < deadline, console._lints.value
            labkit.sleep(0.05)
        assert "lost wake-up" in console._lints.value
        wait_for_refreshes(console, 1)
        assert "waited on by lost-one; nobody else refers to it (lost wake-up)" \
            in console._waits.value
    finally:
        labkit.kill(lost)


def test_filter_and_sort(scene, console):
    wait_for_refreshes(console, 2)
    console._filter_box.value = "join"
    wait_for_refreshes(console, 1)
    assert [label.split()[0] for label in _labels(console)] == ["joiner"]
    console._filter_box.value = ""
    console._sort_buttons.value = "sw"
    wait_for_refreshes(console, 1)
    assert _labels(console)[0].split()[0] == "ticker"   # the most switches first


def test_pause_scrub_back_and_see_the_table_as_it_was(scene, console):
    brief = labkit.spawn(labkit.sleep, 0.6)
    brief.name = "brief"
    wait_for_refreshes(console, 2)
    brief.join()
    deadline = time.monotonic() + 20
    while "brief" in {label.split()[0] for label in _labels(console)}:
        assert time.monotonic() < deadline
        labkit.sleep(0.05)
    console.pause()
    wait_for_refreshes(console, 1)
    recorded = len(console.ring)
    labkit.sleep(0.6)   # paused: no new frames
    assert len(console.ring) == recorded
    index = max(i for i, frame in enumerate(console.ring)
                if any(r["name"] == "brief" for r in frame["rows"]))
    console.show(index)
    wait_for_refreshes(console, 1)
    assert "brief" in {label.split()[0] for label in _labels(console)}
    assert "paused, showing -" in console._status.value
    console.resume()
    wait_for_refreshes(console, 2)
    assert len(console.ring) > recorded
    assert "brief" not in {label.split()[0] for label in _labels(console)}
    assert "live" in console._status.value


def test_a_click_shows_the_rows_stack_and_history(scene, console):
    wait_for_refreshes(console, 3)
    console.select(id(scene["waiter"]))
    wait_for_refreshes(console, 1)
    detail = console._detail.value
    assert "stack (now)" in detail and "in _waiter" in detail and "in wait" in detail
    assert detail.count(" parked ") >= 2   # one history line per recorded frame


def test_show_needs_pause_and_a_recorded_index(console):
    with pytest.raises(RuntimeError, match="pause"):
        console.show(0)
    wait_for_refreshes(console, 1)
    console.pause()
    with pytest.raises(IndexError):
        console.show(len(console.ring))


def test_the_views_are_built_off_the_hubs_thread(scene, monkeypatch):
    threads = []
    real = Console._view

    def spy(self):
        threads.append(threading.current_thread().name)
        return real(self)

    monkeypatch.setattr(Console, "_view", spy)
    c = Console(refresh=0.25, timeline=False)
    try:
        wait_for_refreshes(c, 2)
    finally:
        c.close()
    assert threads and set(threads) == {"labkit-console"}


def test_close_leaves_no_thread_greenlet_or_recorder_behind(scene):
    threads_before = set(threading.enumerate())
    greenlets_before = set(live_greenlets())
    c = Console(refresh=0.25)
    wait_for_refreshes(c, 1)
    assert c.dashboard is None   # the timeline runs only while its tab is open
    c.show_timeline()
    assert c.dashboard is not None and c.dashboard.running
    wait_for_refreshes(c, 1)
    c.show_timeline(False)
    assert c.dashboard is None and tracing.recorder.active() is not None   # ours again
    c.show_timeline()
    c.close()
    labkit.sleep(0.05)
    assert set(threading.enumerate()) <= threads_before
    assert set(live_greenlets()) <= greenlets_before
    assert tracing.recorder.active() is None
    c.close()   # idempotent


def test_a_new_console_closes_the_previous_one(console):
    second = Console(refresh=0.25, timeline=False)
    try:
        assert console._closed
    finally:
        second.close()


def test_bad_arguments_are_named():
    for kwargs, name in (({"refresh": 0}, "refresh"), ({"history": -1}, "history"),
                         ({"max_rows": 0}, "max_rows")):
        with pytest.raises(ValueError, match=name):
            Console(timeline=False, **kwargs)
    with pytest.raises(ValueError, match="sort"):
        table_rows({"rows": []}, sort="colour")


# -- frames ---------------------------------------------------------------------------

def _frame(t, *rows):
    base = dict(dict.fromkeys(frames.ROW_KEYS), kind="greenlet", state="parked",
                waits_on="", where="", busy=0.0, scheduled=0.0, idle=0.0, switches=0,
                parent="")
    full = [{**base, **row} for row in rows]
    return {"time": t, "rows": full, "lints": [], "loop": {}}


def test_frame_ring_keeps_the_last_seconds_and_finds_the_frame_in_force():
    ring = frames.FrameRing(seconds=10, max_frames=100)
    for t in range(30):
        ring.add(_frame(float(t)))
    assert [f["time"] for f in ring][0] == 19.0
    assert ring.at(25.5)["time"] == 25.0
    assert ring.at(3.0) is None
    with pytest.raises(ValueError, match="time order"):
        ring.add(_frame(1.0))
    small = frames.FrameRing(seconds=100, max_frames=3)
    for t in range(5):
        small.add(_frame(float(t)))
    assert [f["time"] for f in small] == [2.0, 3.0, 4.0]
    rows = frames.FrameRing(seconds=100, max_rows=5)
    for t in range(4):
        rows.add(_frame(float(t), {"id": 1, "name": "a"}, {"id": 2, "name": "b"}))
    assert [f["time"] for f in rows] == [2.0, 3.0]   # 4 rows kept, at most 5
    big = frames.FrameRing(max_rows=1)
    big.add(_frame(9.0, {"id": 1, "name": "a"}, {"id": 2, "name": "b"}))
    assert len(big) == 1   # the newest is kept, whatever its size
    with pytest.raises(ValueError, match="max_rows"):
        frames.FrameRing(max_rows=0)
    with pytest.raises(ValueError, match="seconds"):
        frames.FrameRing(seconds=0)
    with pytest.raises(ValueError, match="max_frames"):
        frames.FrameRing(max_frames=0)


def test_spawn_tree_puts_children_under_their_spawner():
    frame = _frame(0.0, {"id": 1, "name": "server"},
                   {"id": 2, "name": "conn-1", "parent": "server"},
                   {"id": 3, "name": "conn-2", "parent": "server"},
                   {"id": 4, "name": "reader", "parent": "conn-1"},
                   {"id": 5, "name": "orphan", "parent": "exited-long-ago"})
    tree = [(depth, row["name"]) for depth, row in frames.spawn_tree(frame)]
    assert tree == [(0, "server"), (1, "conn-1"), (2, "reader"), (1, "conn-2"), (0, "orphan")]


def test_wait_for_chains_and_objects():
    frame = _frame(0.0, {"id": 1, "name": "a", "waits_on": "join b"},
                   {"id": 2, "name": "b", "waits_on": "join c"},
                   {"id": 3, "name": "c", "waits_on": "Event", "object": "Event 0x1"},
                   {"id": 4, "name": "d", "waits_on": "Event", "object": "Event 0x1"},
                   {"id": 5, "name": "t", "kind": "task", "waits_on": "await Task-9"})
    frame["lints"] = [{"kind": "lost wake-up", "id": 3}, {"kind": "lost wake-up", "id": 4}]
    lines = frames.format_wait_for(frame)
    assert "a --join--> b --join--> c --Event 0x1" in lines
    assert "d --Event 0x1" in lines
    assert "t --await Task-9" in lines
    assert "Event 0x1 <- waited on by c, d; nobody else refers to it (lost wake-up)" in lines


def test_row_label_and_table_rows():
    frame = _frame(0.0, {"id": 1, "name": "a", "busy": 0.5}, {"id": 2, "name": "b", "busy": 2.0},
                   {"id": 3, "name": "Task-1", "kind": "task", "waits_on": "await Future"})
    assert [r["name"] for r in table_rows(frame, sort="busy")][:2] == ["b", "a"]
    assert [r["name"] for r in table_rows(frame, "future")] == ["Task-1"]
    assert row_label(frame["rows"][2]).startswith("Task-1 (task)")


def test_asyncio_tasks_of_a_running_loop_are_rows():
    import asyncio

    async def napper():
        await asyncio.sleep(5)   # CONSOLE-NAP

    async def main():
        task = asyncio.get_running_loop().create_task(napper(), name="napper")
        await asyncio.sleep(0.01)
        rows = {row["name"]: row for row in frames.task_rows()}
        task.cancel()
        return rows

    rows = asyncio.run(main())
    assert rows["napper"]["kind"] == "task" and rows["napper"]["state"] == "parked"
    assert rows["napper"]["waits_on"] == "await Future"
    assert "test_console.py" in rows["napper"]["where"] and "napper" in rows["napper"]["where"]
    running = [row for row in rows.values() if row["state"] == "running"]
    assert len(running) == 1 and "in main" in running[0]["where"]


# -- a real kernel -------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_a_kernels_top_level_await_cell_is_a_row_beside_the_greenlets():
    from kernel_harness import run_cell, running_kernel
    with running_kernel() as (_km, kc):
        for code in ("%load_ext labkit\nimport asyncio, labkit\nfrom tracing import frames",
                     "async def napper():\n    await asyncio.sleep(30)\n"
                     "nap = asyncio.get_running_loop().create_task(napper(), name='napper')\n"
                     "g = labkit.spawn(labkit.sleep, 30); g.name = 'sleepy'"):
            assert run_cell(kc, code, timeout=30).status == "ok"
        result = run_cell(kc, "await asyncio.sleep(0.01)\n"
                              "for r in frames.capture()['rows']:\n"
                              "    print(r['kind'], r['name'], r['state'], r['waits_on'], "
                              "r['where'], sep='|')", timeout=30)
        assert result.status == "ok", result.evalue
        lines = result.stdout.splitlines()
        assert "greenlet|sleepy|parked|timer 30 s|" in lines
        assert "task|napper|parked|await Future|In[2], line 2 in napper" in lines
        # the cell itself: a Task, running, at its own line
        assert any(line.startswith("task|") and "|running||In[3], line 2 in <module>" in line
                   for line in lines), lines
        run_cell(kc, "nap.cancel(); g.kill()", timeout=30)


def test_the_capturer_spaces_out_the_lints():
    capturer = frames.Capturer(min_interval=60)
    first = capturer.capture()
    second = capturer.capture()
    assert first["lints_age"] == 0 and second["lints_age"] > 0
    assert second["lints"] is first["lints"]   # repeated, not recomputed
    assert frames.capture(with_lints=False)["lints"] is None
    with pytest.raises(ValueError, match="budget"):
        frames.Capturer(budget=0)


def test_to_perfetto_splits_a_track_where_the_state_changes(tmp_path):
    import json
    recorded = [_frame(0.0, {"id": 1, "name": "a", "waits_on": "Event"}),
                _frame(0.5, {"id": 1, "name": "a", "waits_on": "Event"},
                       {"id": 2, "name": "b", "state": "ready"}),
                _frame(1.0, {"id": 1, "name": "a", "state": "ready"}),
                _frame(1.5, {"id": 1, "name": "a", "state": "ready"})]
    recorded[2]["lints"] = [{"kind": "starved", "greenlet": "a", "id": 1, "line": "x.py:3"}]
    recorded[3]["lints"] = recorded[2]["lints"]
    path = tmp_path / "frames.json"
    frames.to_perfetto(recorded, path)
    events = json.loads(path.read_text())["traceEvents"]
    slices = [(e["tid"], e["name"], e["ts"], e["dur"]) for e in events if e["ph"] == "X"]
    assert sorted(slices) == [(1, "parked: Event", 0.0, 1e6), (1, "ready", 1e6, 0.5e6),
                              (2, "ready", 0.5e6, 0.5e6)]
    assert [e["name"] for e in events if e["ph"] == "i"] == ["starved: a"]   # once
