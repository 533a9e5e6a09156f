"""tracing.plot: the timeline renders with Agg, one lane per greenlet; as a PNG
it keeps the busiest lanes."""
import io

import pytest

import labkit
import tracing
from helpers import trace_two_players_and_a_blocker

pytestmark = pytest.mark.timeout(60)

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _trace():
    return trace_two_players_and_a_blocker(player_pause=0.002, block=0.07)


def test_timeline_draws_one_lane_per_greenlet():
    from matplotlib.colors import to_hex
    t = _trace()
    fig = t.timeline()
    ax = fig.axes[0]
    labels = [label.get_text() for label in ax.get_yticklabels()]
    assert labels == ["poll", "hub", "main", "a", "b", "blocker"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig).draw()   # renders with Agg, no window
    colors = set()
    for collection in ax.collections:
        colors.update(to_hex(c) for c in collection.get_facecolors())
    from tracing.plot import BLOCK_COLOR, RUN_COLOR, POLL_COLOR
    assert {BLOCK_COLOR, RUN_COLOR, POLL_COLOR} <= colors
    # Each lane of a greenlet has running bars centered on its row.
    rows = {round(path.get_extents().y0 + path.get_extents().height / 2)
            for c in ax.collections for path in c.get_paths()}
    assert {0, 1, 2, 3, 4, 5} <= rows


def test_timeline_window_and_given_axes():
    from matplotlib.figure import Figure
    t = _trace()
    fig = Figure()
    ax = fig.add_subplot()
    assert t.timeline(ax=ax, window=(0.0, 0.01)) is fig
    assert ax.get_xlim() == (0.0, 0.01)


def test_render_keeps_the_busiest_lanes_and_says_how_many_it_hid():
    from PIL import Image   # matplotlib brings Pillow
    from tracing.plot import _LaneView, render_timeline_png

    def worker(n):
        for _ in range(n):
            labkit.sleep(0)

    with tracing.trace() as t:
        labkit.joinall([labkit.spawn(worker, n) for n in range(1, 8)])
    png = render_timeline_png(t, max_lanes=3)
    with Image.open(io.BytesIO(png)) as image:
        image.load()
    view = _LaneView(t, max_lanes=3)
    lanes = {(s.lane, s.key) for s in view.slices() if s.key >= 0}
    assert len(lanes) == 3 and view.hidden == len(t.greenlets()) - 3   # main counts too


# -- timelines that teach ---------------------------------------------------------

def _lane_pixels(fig, lane_name, color, tolerance=40):
    """How many pixels of the row through ``lane_name``'s centre are ``color``."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_rgb
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[:, :, :3].astype(int)
    ax = fig.axes[0]
    row = [label.get_text() for label in ax.get_yticklabels()].index(lane_name)
    y = image.shape[0] - 1 - round(ax.transData.transform((0, row))[1])
    target = np.array([round(c * 255) for c in to_rgb(color)])
    return int((np.abs(image[y] - target).max(axis=1) <= tolerance).sum())


def test_microsecond_slices_are_drawn_at_least_the_minimum_width():
    from tracing.plot import RUN_COLOR

    def ping_pong(n):
        for _ in range(n):
            labkit.sleep(0)

    # A turn is a few us; one the OS preempts (two loaded cores), or the
    # process's first greenlet exit, can take a millisecond, which would draw
    # wide anyway: trace again (a bounded number of times) until every turn
    # is under half a pixel, which is what this test needs to draw.
    for _attempt in range(5):
        with tracing.trace() as t:
            gs = [labkit.spawn(ping_pong, 5), labkit.spawn(ping_pong, 5)]
            labkit.joinall(gs)
            labkit.sleep(0.3)   # a long trace: each turn is far under a pixel
        players = sorted({s.lane for s in t.slices() if s.lane.startswith("ping_pong #")})
        assert len(players) == 2
        turns = [s for s in t.slices() if s.lane in players]
        longest = max(s.duration for s in turns)
        if longest < 0.3 / 2000:   # under half a pixel
            break
    else:
        raise AssertionError(f"5 traces each had a turn of at least {longest * 1e6:.0f} us")
    fig = t.timeline()
    for lane in players:   # each player's turns show in the bars' own colour
        assert _lane_pixels(fig, lane, RUN_COLOR) >= 2


def test_a_late_wake_up_is_marked_from_its_due_time_and_says_how_late():
    import time

    from matplotlib.colors import to_hex

    from tracing.plot import LATE_COLOR

    def napper():
        labkit.sleep(0.02)

    def blocker():
        labkit.sleep(0.005)
        time.sleep(0.12)

    with tracing.trace() as t:
        nap = labkit.spawn(napper)
        nap.name = "napper"
        labkit.joinall([nap, labkit.spawn(blocker)])
    [late] = t.late_wakeups(at_least=0.05)
    assert late.lane == "napper"
    assert late.due - late.start == pytest.approx(0.02, abs=1e-6)   # due = parked + asked
    assert late.late == pytest.approx(late.end - late.due) and late.late >= 0.05
    fig = t.timeline()
    ax = fig.axes[0]
    words = [text.get_text() for text in ax.texts]
    assert any(w.startswith("woke ") and w.endswith(" late") for w in words), words
    edges = {to_hex(c) for coll in ax.collections for c in coll.get_edgecolors()}
    assert LATE_COLOR in edges
    napper_row = [lbl.get_text() for lbl in ax.get_yticklabels()].index("napper")
    hatched = [coll for coll in ax.collections if coll.get_hatch()]
    spans = [p.get_extents() for coll in hatched for p in coll.get_paths()]
    assert any(abs(b.x0 - late.due) < 1e-4 and abs(b.x1 - late.end) < 1e-4
               and b.y0 < napper_row < b.y1 for b in spans)


def test_the_legend_is_in_plain_words_from_the_one_legend():
    from tracing import legend
    fig = _trace().timeline()
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    words = [e.words for e in legend.ENTRIES]
    assert texts and all(t in words for t in texts)
    assert {"running: its code is executing", legend.entry("blocked").words} <= set(texts)
    assert not any(t.startswith("parked:") for t in texts)


def test_the_png_is_drawn_at_twice_screen_resolution():
    from PIL import Image
    from tracing.plot import render_timeline_png
    with Image.open(io.BytesIO(render_timeline_png(_trace()))) as image:
        width, _ = image.size
        dpi = image.info.get("dpi", (0, 0))[0]
    assert round(dpi) == 144 and width >= 12 * 144 * 0.95


def test_unnamed_greenlets_are_named_after_their_function_and_cell():
    # A real IPython shell (in a child: get_ipython() must stay None here).
    from helpers import run_python
    out = run_python("""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("import labkit, tracing", store_history=True)
        shell.run_cell("def worker(n):\\n    labkit.sleep(0.001)", store_history=True)
        r = shell.run_cell(
            "with tracing.trace() as t:\\n"
            "    gs = [labkit.spawn(worker, i) for i in range(2)]\\n"
            "    named = labkit.spawn(worker, 9); named.name = 'mine'\\n"
            "    labkit.joinall(gs + [named])\\n"
            "lanes = [lbl.get_text() for lbl in t.timeline().axes[0].get_yticklabels()]",
            store_history=True)
        r.raise_error()
        print(shell.user_ns["lanes"])
        print([g.spawn_site for g in shell.user_ns["t"].greenlets()][1:])
    """)
    lanes, sites = out.splitlines()
    lanes = eval(lanes)
    workers = [name for name in lanes if name.startswith("worker #")]
    assert len(workers) == 2 and all(name.endswith(" (In[3])") for name in workers), lanes
    assert "mine" in lanes and not any(name.startswith("Greenlet-") for name in lanes)
    assert "In[3], line 2" in sites and ".py:" not in sites


def test_a_script_greenlet_is_named_after_its_function_only():
    def fetch():
        labkit.sleep(0)

    with tracing.trace() as t:
        labkit.spawn(fetch).join()
    [g] = [g for g in t.greenlets() if g.function and "fetch" in g.function]
    assert g.function.endswith("<locals>.fetch")
    assert g.name.startswith("fetch #") and "(" not in g.name
    assert g.spawn_site.startswith("test_tracing_plot.py:")


def test_a_window_without_the_spawn_names_the_greenlet_the_same_way():
    # The dashboard draws windows of a running recording: a greenlet spawned
    # before the window keeps the name it had in the full trace.
    import dataclasses

    from labkit._loop import lib
    from tracing.model import Trace
    from tracing.recorder import Recorder

    def worker():
        for _ in range(3):
            labkit.sleep(0.001)

    recorder = Recorder(capacity=10_000).start()
    try:
        g = labkit.spawn(worker)
        g.join()
    finally:
        recording = recorder.stop()
    full = Trace(recording)
    window = Trace(dataclasses.replace(
        recording, records=[r for r in recording.records if r[1] != lib.LK_TR_SPAWN]))
    [name] = {gr.name for gr in full.greenlets() if gr.name.startswith("worker #")}
    assert name in {gr.name for gr in window.greenlets()}


def test_a_greenlet_spawned_before_the_trace_is_named_after_its_function_too():
    stop = []

    def ticker():
        while not stop:
            labkit.sleep(0.001)

    g = labkit.spawn(ticker)
    labkit.sleep(0.003)
    try:
        with tracing.trace() as t:
            labkit.sleep(0.005)
    finally:
        stop.append(True)
        g.join()
    names = {gr.name for gr in t.greenlets()}
    assert any(name.startswith("ticker #") for name in names), names
    assert not any(name.startswith("Greenlet-") for name in names)


def test_naming_greenlets_does_not_import_ipython_in_a_script():
    # A gunicorn worker's flight dump names greenlets too: finding no cells
    # must not cost an IPython import.
    from helpers import run_python
    out = run_python("""
        import sys, labkit, tracing
        def job():
            labkit.sleep(0)
        with tracing.trace() as t:
            labkit.spawn(job).join()
        print([g.name for g in t.greenlets()][1], "IPython" in sys.modules)
    """)
    name, imported = out.strip().rsplit(" ", 1)
    assert name.startswith("job #") and imported == "False"
