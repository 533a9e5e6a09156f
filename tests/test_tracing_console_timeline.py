"""The console's timeline: the ring's records folded in once (tracing.live_timeline),
drawn without a Trace, and rewound by the console's scrub.

In-process, with real recordings of real greenlets; waits are bounded loops
on counters, never fixed sleeps.
"""
import io
import time

import numpy as np
import pytest

import labkit
from labkit._loop import ffi, lib

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (matplotlib brings Pillow)

from tracing.live_timeline import KINDS, Picture, Strip  # noqa: E402
from tracing.recorder import _RECORD, Recorder  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def _ticker(period):
    while True:
        labkit.sleep(period)


def _spinner():
    while True:
        labkit.sleep(0)


@pytest.fixture
def recorded():
    """A recording of three tickers and a spinner, ~0.6 s: (recorder, raw
    record chunks as read 0.1 s apart, the hub). The recorder is stopped
    (its side table stays readable)."""
    recorder = Recorder(capacity=1 << 17).start()
    gs = [labkit.spawn(_ticker, p) for p in (0.005, 0.02)] + [labkit.spawn(_spinner)]
    gs[0].name = "fast-ticker"
    buffer = ffi.new("lk_trace_entry[]", 1 << 17)
    first = ffi.new("uint64_t *")
    seq, chunks = 0, []
    try:
        for _ in range(6):
            labkit.sleep(0.1)
            n = lib.lk_trace_read(recorder.ring, buffer, 1 << 17, seq, first)
            assert first[0] == seq, "the ring overwrote records: make it bigger"
            seq = first[0] + n
            chunks.append((bytes(ffi.buffer(buffer, n * _RECORD.size)), lib.lk_now_ns()))
    finally:
        labkit.killall(gs)
        trace_recording = recorder.stop()
    hub = labkit.get_hub()
    return recorder, chunks, hub, gs, trace_recording


def _strip(recorder, hub, columns=400, window=1.0):
    return Strip(window, columns, id(hub), id(hub.parent), labels=recorder.labels)


def test_records_are_folded_in_once_and_batches_do_not_matter(recorded):
    recorder, chunks, hub, _gs, _ = recorded
    piecewise = _strip(recorder, hub)
    for data, now in chunks:
        piecewise.add(data, now)
    whole = _strip(recorder, hub)
    whole.add(b"".join(data for data, _ in chunks), chunks[-1][1])
    total = sum(len(data) // _RECORD.size for data, _ in chunks)
    assert piecewise.records == whole.records == total
    lanes = len(whole.gid_of)
    assert piecewise.gid_of == whole.gid_of
    cols = whole.window()
    np.testing.assert_allclose(piecewise.run[:lanes, cols], whole.run[:lanes, cols], atol=2)
    assert (piecewise.park[:lanes, cols] == whole.park[:lanes, cols]).all()
    assert (piecewise.switches[cols] == whole.switches[cols]).all()


def test_the_columns_agree_with_the_trace_of_the_same_records(recorded):
    """Per greenlet, the time the strip says it ran is the time the model's
    slices say (tracing.model reads the same records its own way)."""
    import tracing.model
    recorder, chunks, hub, gs, recording = recorded
    strip = _strip(recorder, hub, columns=2000, window=2.0)   # the whole recording
    for data, now in chunks:
        strip.add(data, now)
    trace = tracing.model.Trace(recording)
    ran = {}
    for s in trace.slices():
        g = next((g for g in trace.greenlets() if g.key == s.key), None)
        if g is not None:
            ran[g.id] = ran.get(g.id, 0.0) + s.duration
    cols = strip.window()
    for g in gs:
        lane = strip.lane_of[id(g)]
        in_strip = float(strip.run[lane, cols].sum()) / 1e9
        # The strip leaves out the last record's open run (it ends at the
        # next one), the trace closes it at the stop: a few microseconds.
        assert in_strip == pytest.approx(ran[id(g)], abs=2e-3, rel=0.02)
    # The tickers' waits are painted as sleeps; the spinner runs most.
    sleeping = KINDS.index("sleeping")
    assert (strip.park[strip.lane_of[id(gs[1])], cols] == sleeping).sum() > 10
    busiest = strip.busiest(cols, 1)
    assert strip.gid_of[busiest[0]] == id(gs[2])
    assert strip.counters(cols)["switches/s"] > 100


def test_the_picture_shows_each_lane_in_the_running_colour(recorded):
    recorder, chunks, hub, gs, _ = recorded
    picture = Picture(size=(8, 4), dpi=72, max_lanes=4, window=1.0)
    strip = _strip(recorder, hub, columns=picture.columns)
    for data, now in chunks:
        strip.add(data, now)
    shown = picture.lanes(strip, strip.window())
    assert strip.lane_of[id(gs[2])] in shown
    png = picture.render(strip, {strip.lane_of[id(gs[0])]: "fast-ticker"},
                         blocks=[(chunks[2][1] - 50_000_000, chunks[2][1])])
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == "P"
        pixels = np.asarray(image)
    area = pixels[:, picture.x0:picture.x1]
    for slot, lane in enumerate(shown):
        y0, y1 = picture._band(slot, 0.8)
        colour = picture.idle_i if slot == 0 else picture.run_i
        assert (area[y0:y1] == colour).any(), f"lane {slot} shows no run"
    assert (area == picture.block_i).any()
    assert (pixels[:, :picture.x0] >= picture.gray0).any()   # the names are written


def test_bad_arguments_are_refused(recorded):
    recorder, _chunks, hub, _gs, _ = recorded
    with pytest.raises(ValueError, match="window"):
        Strip(0, 100, id(hub), id(hub.parent))
    with pytest.raises(ValueError, match="columns"):
        Strip(1.0, 3, id(hub), id(hub.parent))
    from tracing.dashboard import Dashboard
    with pytest.raises(ValueError, match="history"):
        Dashboard(history=-1, autostart=False)


def _wait(condition, limit=30.0, what="condition"):
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {limit} s"
        labkit.sleep(0.05)


def test_scrubbing_back_rewinds_the_timeline_picture():
    import tracing
    gs = [labkit.spawn(_ticker, p) for p in (0.01, 0.03)]
    con = tracing.Console(refresh=0.25, timeline_refresh=0.25, history=60, window=1.0)
    try:
        con.show_timeline()
        dash = con.dashboard
        assert dash is not None
        dash._image._view_count = 1    # shown, as a front-end's view counts itself

        def older_distinct():
            # a recorded frame whose picture differs from the newest one
            latest = dash.picture_at(time.monotonic())
            for i, frame in enumerate(list(con.ring)[:-1]):
                png = dash.picture_at(frame["time"])
                if png is not None and latest is not None and png != latest:
                    return i
            return None

        _wait(lambda: older_distinct() is not None, what="pictures to scrub through")
        con.pause()
        index = older_distinct()
        con.show(index)
        when = con.ring[index]["time"]
        _wait(lambda: dash.frozen == when, what="rewound timeline")
        assert dash._image.value == dash.picture_at(when)
        live = dash.picture_at(time.monotonic())
        assert dash._image.value != live
        refreshes = dash.refreshes
        _wait(lambda: dash.refreshes > refreshes + 1, what="refreshes while held")
        assert dash._image.value == dash.picture_at(when)   # held while it records
        con.resume()
        _wait(lambda: dash.frozen is None, what="live timeline again")
        _wait(lambda: dash._image.value != dash.picture_at(when), what="live picture")
    finally:
        con.close()
        labkit.killall(gs)


# -- asyncio Tasks as lanes ------------------------------------------------------------

def test_the_steps_of_an_asyncio_loops_tasks_are_recorded_as_lanes():
    import asyncio

    import tracing.model
    from tracing.tasks import AWAIT_LABEL, TaskSteps
    loop = asyncio.new_event_loop()
    recorder = Recorder(capacity=1 << 16).start()
    steps = TaskSteps(loop).install(recorder)
    try:
        async def worker():
            for _ in range(5):
                await asyncio.sleep(0.01)
                sum(range(20000))   # a little CPU in each step
            await asyncio.sleep(0)

        async def main():
            task = asyncio.get_running_loop().create_task(worker(), name="worker")
            await task
            return task

        task = loop.run_until_complete(main())
    finally:
        steps.uninstall()
        recording = recorder.stop()
        loop.close()
    assert "call_soon" not in vars(loop)   # the loop's own method is back
    assert steps.steps >= 7
    assert steps.names()[id(task)] == "worker (task)"
    trace = tracing.model.Trace(recording)
    ran = [s for s in trace.slices() if s.lane != "hub" and
           any(g.id == id(task) and g.key == s.key for g in trace.greenlets())]
    assert len(ran) >= 7 and sum(s.duration for s in ran) > 0
    waits = [p.reason for p in trace.parked()
             if any(g.id == id(task) and g.key == p.key for g in trace.greenlets())]
    assert waits.count(AWAIT_LABEL) >= 5 and "ready" in waits   # sleeps, then sleep(0)


def test_a_loop_can_be_wrapped_once():
    import asyncio

    from tracing.tasks import TaskSteps
    loop = asyncio.new_event_loop()
    try:
        first = TaskSteps(loop).install(None)
        with pytest.raises(RuntimeError, match="wrapped already"):
            TaskSteps(loop).install(None)
        assert loop.run_until_complete(asyncio.sleep(0, "done")) == "done"   # no recorder
        first.uninstall()
        assert "call_soon" not in vars(loop)
        with pytest.raises(TypeError, match="loop"):
            TaskSteps(object())
    finally:
        loop.close()


def test_a_kernels_top_level_await_cell_is_a_lane_of_the_console_timeline():
    from kernel_harness import run_cell, running_kernel
    with running_kernel() as (_km, kc):
        for code in ("%load_ext labkit\nimport asyncio, time, labkit, tracing",
                     "con = tracing.Console(refresh=0.25, timeline_refresh=0.25)\n"
                     "con.show_timeline()"):
            assert run_cell(kc, code, timeout=60).status == "ok"
        # (bounded waits: the first picture's axes take a while on a busy machine)
        result = run_cell(kc, "deadline = time.monotonic() + 60\n"
                              "while not con.dashboard.refreshes and time.monotonic() < deadline:\n"
                              "    await asyncio.sleep(0.1)\n"
                              "seen = set()\n"
                              "while time.monotonic() < deadline:\n"
                              "    await asyncio.sleep(0.02)\n"
                              "    t = time.perf_counter()\n"
                              "    while time.perf_counter() - t < 0.005: pass\n"
                              "    seen.update(con.dashboard.lanes)\n"
                              "    if any(l.endswith('(task)') for l in seen): break\n"
                              "print(sorted(seen))", timeout=90)
        assert result.status == "ok", result.evalue
        assert "(task)'" in result.stdout, result.stdout
        assert run_cell(kc, "con.close()", timeout=60).status == "ok"


# -- lock holders in the wait-for graph -----------------------------------------------

@pytest.mark.parametrize("make_lock", ["labkit.lock.RLock", "labkit._twosided.RLock"])
def test_the_wait_for_graph_shows_who_holds_a_lock(make_lock):
    import importlib

    from labkit.event import Event
    from tracing import frames
    module, _, name = make_lock.rpartition(".")
    lock = getattr(importlib.import_module(module), name)()
    release = Event()

    def holder():
        with lock:
            release.wait()

    def contender():
        with lock:
            pass

    h = labkit.spawn(holder)
    h.name = "holder"
    labkit.sleep(0)
    cs = [labkit.spawn(contender) for _ in range(2)]
    for n, g in enumerate(cs):
        g.name = f"contender-{n}"
    try:
        labkit.sleep(0.01)
        assert lock.owner is h
        frame = frames.capture()
        rows = {r["name"]: r for r in frame["rows"]}
        obj = f"{type(lock).__name__} {id(lock):#x}"
        for n in range(2):
            assert rows[f"contender-{n}"]["object"] == obj
            assert rows[f"contender-{n}"]["holder"] == id(h)
        lines = frames.format_wait_for(frame)
        assert f"contender-0 --{obj} held by--> holder --Event {id(release):#x}" in lines, lines
        assert f"{obj} <- waited on by contender-0, contender-1; held by holder; " \
               f"others refer to it" in lines, lines
    finally:
        release.set()
        labkit.joinall([h, *cs], timeout=5)
    assert lock.owner is None
    with pytest.raises(AttributeError):
        lock.owner = h   # read-only


def test_a_batch_longer_than_the_kept_columns_does_not_wrap_around(recorded):
    """After the hub was held longer than the strip keeps (the dashboard got
    no snapshot meanwhile), old records are dropped, not folded into the
    newest columns."""
    from tracing.live_timeline import RECORD_DTYPE
    recorder, chunks, hub, _gs, _ = recorded
    whole = b"".join(data for data, _ in chunks)
    records = np.frombuffer(whole, RECORD_DTYPE)
    strip = _strip(recorder, hub, columns=100, window=0.1)   # keeps ~0.1 s
    strip.add(b"", int(records["ts"][0]))   # its clock starts at the first record ...
    strip.add(whole, chunks[-1][1])          # ... and one batch spans ~0.6 s
    # The window holds the resumes of its own columns, no more. (The last
    # record's run is still open: it is folded in with the next batch.)
    folded = records[:-1]
    in_window = folded[folded["ts"] // strip.col_ns > strip.last_col - strip.columns]
    assert strip.switches[strip.window()].sum() == (in_window["kind"] == lib.LK_TR_RESUME).sum()
    assert len(in_window) < len(folded) / 2   # most of the batch was older
