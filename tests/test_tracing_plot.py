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
