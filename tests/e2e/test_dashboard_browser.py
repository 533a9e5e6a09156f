"""The dashboard, seen in a real browser: JupyterLab + Debian's chromium + Playwright.

What a person sees is the point of the dashboard, so this test looks at it
the way a person would: it starts JupyterLab on loopback (with a token),
opens a notebook whose one cell starts background greenlets and shows a
``Dashboard``, runs that cell, and then -- while no cell runs -- takes two
screenshots of the timeline image a second apart. The timeline must have
changed: the kernel is idle, yet the hub (and the dashboard's drawing
thread) keep going. Screenshots are kept in tests/artifacts/.

The JupyterLab server and what it needs: _browser.py.
"""
import json
import os

import pytest

from _browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, jupyterlab, run_first_cell  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

NOTEBOOK_CELL = """\
%load_ext labkit
import labkit
from tracing.dashboard import Dashboard

def ticker(period):
    while True:
        labkit.sleep(period)

tickers = [labkit.spawn(ticker, p) for p in (0.01, 0.03, 0.1)]
for n, g in enumerate(tickers):
    g.name = f"ticker-{n}"
dash = Dashboard(window=2)
dash"""


def test_the_dashboard_timeline_changes_while_no_cell_runs(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright
    from PIL import Image, ImageChops
    base, token, root = jupyterlab
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "dash",
                     "metadata": {}, "outputs": [], "source": NOTEBOOK_CELL}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "dashboard.ipynb").write_text(json.dumps(nb))
    os.makedirs(ARTIFACTS, exist_ok=True)
    shots = [os.path.join(ARTIFACTS, f"dashboard-{i}.png") for i in (1, 2)]
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(f"{base}/lab/tree/dashboard.ipynb?token={token}")
            editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            editor.wait_for(timeout=60_000)
            # The kernel must be up before the cell is sent.
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                         "#jp-main-statusbar :text('Idle')").first.wait_for(timeout=60_000)
            run_first_cell(page, editor)
            image = page.locator(".jp-OutputArea-output img").first
            image.wait_for(timeout=60_000)
            # Wait until the dashboard drew something and the cell is done.
            page.wait_for_function(
                "() => { const i = document.querySelector('.jp-OutputArea-output img');"
                " return i && i.naturalWidth > 100; }", timeout=60_000)
            page.locator(".jp-Notebook .jp-InputArea-prompt:text-matches('\\\\[1\\\\]')")\
                .first.wait_for(timeout=30_000)
            image.scroll_into_view_if_needed()
            image.screenshot(path=shots[0])
            page.wait_for_timeout(1000)   # no cell runs meanwhile
            image.screenshot(path=shots[1])
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-page.png"))
        except Exception:
            # What the page looked like when it went wrong: the first thing to read.
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-failure.png"))
            raise
        finally:
            browser.close()
    with Image.open(shots[0]) as first, Image.open(shots[1]) as second:
        assert first.size == second.size
        diff = ImageChops.difference(first.convert("RGB"), second.convert("RGB"))
        assert diff.getbbox() is not None, "the timeline did not change in a second"
