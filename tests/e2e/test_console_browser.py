"""The console, driven in a real browser: JupyterLab + Debian's chromium + Playwright.

A notebook's one cell starts a ticker and a greenlet that lives 1.5 s, and
shows a ``tracing.Console``. Then, with no cell running, the test does what
a person would: it watches the short-lived greenlet leave the table (the
console refreshes while the kernel is idle), presses Pause, drags the scrub
slider back to the oldest recorded frame -- and the greenlet is in the table
again, as it was, and the timeline tab (open from the start) holds the
picture of that moment, or says it has none -- then clicks the ticker's row
and reads its stack.
Screenshots are kept in tests/artifacts/.

The JupyterLab server and what it needs: _browser.py.
"""
import json
import os

import pytest

from _browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, jupyterlab, run_first_cell  # noqa: F401 (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

NOTEBOOK_CELL = """\
%load_ext labkit
import labkit, tracing

def ticker(period):
    while True:
        labkit.sleep(period)

t = labkit.spawn(ticker, 0.02)
t.name = "ticker"
brief = labkit.spawn(labkit.sleep, 1.5)
brief.name = "brief-one"
con = tracing.Console(refresh=0.25)
con.show_timeline()
con"""

OPTIONS = ".labkit-console-table select option"


def _option_texts(page) -> list[str]:
    return page.locator(OPTIONS).all_inner_texts()


def _wait_until(page, predicate, what: str, timeout_ms: int = 30_000) -> None:
    waited = 0
    while not predicate():
        if waited > timeout_ms:
            raise AssertionError(f"timed out waiting for {what}")
        page.wait_for_timeout(100)
        waited += 100


def test_pause_scrub_back_and_click_a_row(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright
    base, token, root = jupyterlab
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "console",
                     "metadata": {}, "outputs": [], "source": NOTEBOOK_CELL}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "console.ipynb").write_text(json.dumps(nb))
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1100})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(f"{base}/lab/tree/console.ipynb?token={token}")
            editor = page.locator(".jp-Notebook .jp-Cell .cm-content").first
            editor.wait_for(timeout=60_000)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                         "#jp-main-statusbar :text('Idle')").first.wait_for(timeout=60_000)
            run_first_cell(page, editor)
            page.locator(OPTIONS).first.wait_for(timeout=60_000)
            page.locator(".jp-Notebook .jp-InputArea-prompt:text-matches('\\\\[1\\\\]')")\
                .first.wait_for(timeout=30_000)
            # Live, while no cell runs: the short-lived greenlet is listed, then gone.
            _wait_until(page, lambda: any(t.startswith("brief-one") for t in _option_texts(page)),
                        "brief-one in the table")
            _wait_until(page, lambda: not any(t.startswith("brief-one")
                                              for t in _option_texts(page)),
                        "brief-one to leave the table")
            assert any(t.startswith("ticker") for t in _option_texts(page))
            page.screenshot(path=os.path.join(ARTIFACTS, "console-live.png"))

            # Pause, then drag the slider's handle all the way back.
            page.get_by_role("button", name="Pause").click()
            status = page.locator(".labkit-console .widget-html-content", has_text="labkit console")
            _wait_until(page, lambda: "paused" in status.first.inner_text(), "the paused status")
            handle = page.locator(".labkit-console .noUi-handle").first
            track = page.locator(".labkit-console .noUi-target").first
            h, t = handle.bounding_box(), track.bounding_box()
            page.mouse.move(h["x"] + h["width"] / 2, h["y"] + h["height"] / 2)
            page.mouse.down()
            page.mouse.move(t["x"] + 1, h["y"] + h["height"] / 2, steps=10)
            page.mouse.up()
            _wait_until(page, lambda: any(t.startswith("brief-one") for t in _option_texts(page)),
                        "brief-one back in the scrubbed table")
            assert "showing -" in status.first.inner_text()
            # The timeline rewound with the table (the Dashboard's status line).
            timeline = page.locator(".labkit-console .widget-html-content",
                                    has_text="labkit dashboard")
            _wait_until(page, lambda: any(words in timeline.first.inner_text() for words in
                                          ("showing the picture of", "no picture kept")),
                        "the timeline to rewind")
            page.screenshot(path=os.path.join(ARTIFACTS, "console-scrubbed.png"))

            # Click the ticker's row: its stack and history appear.
            page.locator(OPTIONS, has_text="ticker").first.click()
            detail = page.locator(".labkit-console .widget-html-content", has_text="stack (now)")
            detail.first.wait_for(timeout=30_000)
            text = detail.first.inner_text()
            assert "in ticker" in text and "history" in text
            page.screenshot(path=os.path.join(ARTIFACTS, "console-row.png"))
        except Exception:
            page.screenshot(path=os.path.join(ARTIFACTS, "console-failure.png"))
            raise
        finally:
            browser.close()
