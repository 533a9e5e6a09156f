"""tracing.dashboard: the live view refreshes off the hub's thread, shows what
the hub does, and leaves nothing behind when closed.

These run the Dashboard in this process (its widgets talk to no frontend; the
browser test in tests/e2e/ checks what a person sees). Waits are bounded
loops on the dashboard's own refresh counter, never fixed sleeps, so a busy
machine makes them slower, not flaky.
"""
import io
import threading
import time

import pytest
from helpers import line_of

import labkit
import labkit.hub
import tracing.recorder
from tracing.introspect import live_greenlets

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (matplotlib brings Pillow)

from tracing.dashboard import Dashboard, MAX_REFRESH_HZ  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def _line_of(marker):
    return line_of(__file__, marker)


def wait_for_refreshes(dash, count, limit=20.0):
    """Run the hub (cooperatively) until ``dash`` refreshed ``count`` more times."""
    target = dash.refreshes + count
    deadline = time.monotonic() + limit
    while dash.refreshes < target:
        assert time.monotonic() < deadline, f"only {dash.refreshes} refreshes in {limit} s"
        labkit.sleep(0.05)


@pytest.fixture
def background():
    """Three named greenlets ticking at different rates; killed afterwards."""
    def ticker(period):
        while True:
            labkit.sleep(period)

    gs = [labkit.spawn(ticker, p) for p in (0.01, 0.02, 0.05)]
    for n, g in enumerate(gs):
        g.name = f"ticker-{n}"
    yield gs
    labkit.killall(gs)


def shown(d):
    """Mark ``d``'s image as shown by one front-end view, as ipywidgets'
    front-end does when it displays it (it counts views in ``_view_count``)."""
    d._image._view_count = 1
    return d


@pytest.fixture
def dash():
    d = shown(Dashboard(window=2))
    yield d
    d.close()


def test_a_dashboard_nobody_sees_draws_now_and_then(background):
    """No view of the image: the lanes are brought up to date every refresh
    but a picture is drawn only every ``unseen_refresh`` seconds; once a
    view appears, every refresh draws one."""
    with pytest.raises(ValueError, match="unseen_refresh"):
        Dashboard(unseen_refresh=0)
    d = Dashboard(window=2, refresh=0.25, unseen_refresh=3600)
    try:
        assert not d.seen
        wait_for_refreshes(d, 4)
        assert d.pictures == 1          # the first one, then none for an hour
        shown(d)
        assert d.seen
        drawn = d.pictures
        wait_for_refreshes(d, 3)
        assert d.pictures >= drawn + 2
    finally:
        d.close()
    d = Dashboard(window=2, refresh=0.25, unseen_refresh=None)   # draws regardless
    try:
        wait_for_refreshes(d, 3)
        assert d.pictures >= 2
    finally:
        d.close()


def _blocker():
    time.sleep(0.12)  # DASH-BLOCK


def test_refreshes_draw_a_png_timeline_of_the_running_greenlets(background, dash):
    wait_for_refreshes(dash, 2)
    with Image.open(io.BytesIO(dash._image.value)) as image:
        image.load()
        assert image.format == "PNG" and image.size[0] > 300


def test_the_picture_changes_while_greenlets_run(background, dash):
    wait_for_refreshes(dash, 1)
    first = dash._image.value
    wait_for_refreshes(dash, 2)
    assert dash._image.value != first


def test_counters_count_live_greenlets_and_switches(background, dash):
    wait_for_refreshes(dash, 2)
    counters = dash._counters.value
    live = int(counters.split("live greenlets</td><td style='text-align:right'><b>")[1]
               .split("<")[0])
    assert live >= len(background)
    assert "switches/s" in counters and "loop utilisation" in counters


def test_a_blocking_call_appears_in_the_table_with_its_line(background, dash):
    labkit.spawn(_blocker).join()
    wait_for_refreshes(dash, 2)
    assert f"test_dashboard.py:{_line_of('DASH-BLOCK')}" in dash._table.value
    assert "_blocker" in dash._table.value


def test_the_drawing_runs_off_the_hubs_thread(background, monkeypatch):
    import tracing.live_timeline
    threads = []
    real = tracing.live_timeline.Picture.render

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(tracing.live_timeline.Picture, "render", spy)
    d = Dashboard(window=1)
    try:
        wait_for_refreshes(d, 2)
    finally:
        d.close()
    assert threads and set(threads) == {"labkit-dashboard"}


def test_stop_start_and_clear(background, dash):
    wait_for_refreshes(dash, 1)
    dash.stop()
    assert not dash.running and tracing.recorder.active() is None
    frozen = dash.refreshes
    labkit.sleep(3 / MAX_REFRESH_HZ)
    assert dash.refreshes == frozen
    dash.start()
    wait_for_refreshes(dash, 1)
    dash.clear()
    assert dash.running and dash._image.value in (b"", dash._image.value)
    wait_for_refreshes(dash, 1)
    assert dash._image.value != b""


def test_close_leaves_no_thread_greenlet_or_hook_behind(background):
    threads_before = set(threading.enumerate())
    greenlets_before = set(live_greenlets())
    d = Dashboard(window=1)
    wait_for_refreshes(d, 2)
    d.close()
    assert set(threading.enumerate()) <= threads_before
    assert set(live_greenlets()) <= greenlets_before
    assert tracing.recorder.active() is None and labkit.hub._trace is None
    d.close()   # idempotent


def test_a_new_dashboard_replaces_the_previous_one(background):
    first = Dashboard(window=1)
    second = Dashboard(window=1)
    try:
        assert not first.running and second.running
    finally:
        second.close()
        first.close()


def test_refresh_is_capped_at_four_per_second():
    d = Dashboard(refresh=0.01, autostart=False)
    try:
        assert d.refresh == 1 / MAX_REFRESH_HZ
    finally:
        d.close()
