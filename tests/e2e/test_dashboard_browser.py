"""The dashboard, seen in a real browser: JupyterLab + Debian's chromium + Playwright.

What a person sees is the point of the dashboard, so this test looks at it
the way a person would: it starts JupyterLab on loopback (with a token),
opens a notebook whose one cell starts background greenlets and shows a
``Dashboard``, runs that cell, and then -- while no cell runs -- takes two
screenshots of the timeline image a second apart. The timeline must have
changed: the kernel is idle, yet the hub (and the dashboard's drawing
thread) keep going. Screenshots are kept in tests/artifacts/.

Needs: ``jupyterlab`` and ``playwright`` (pip) and chromium at
/usr/bin/chromium (apt). ``.ci/system-deps.sh`` installs them; without them
the test skips and says what is missing. Playwright's own browser download
is not used: the test points it at the system chromium.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "artifacts")

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


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"no chromium at {CHROMIUM} (apt-get install chromium; see .ci/system-deps.sh)"
    for module in ("playwright", "jupyterlab", "jupyterlab_widgets"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module} is not installed (see .ci/system-deps.sh)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except Exception:
        return 0


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving tmp_path; always stopped."""
    reason = _missing()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path / "root"
    root.mkdir()
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "dash",
                     "metadata": {}, "outputs": [], "source": NOTEBOOK_CELL}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (root / "dashboard.ipynb").write_text(json.dumps(nb))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while _get(f"{base}/api/status?token={token}") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" +
                            (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.25)
        yield base, token
    finally:
        # Ask politely (kernels are shut down too), then make sure.
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}",
                                             method="POST", data=b"")
            urllib.request.urlopen(request, timeout=5).close()
            server.wait(timeout=15)
        except Exception:
            pass
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


def _accept_kernel_dialog(page) -> None:
    """JupyterLab sometimes asks "Select Kernel" for a notebook whose session
    it lost while starting (seen on a loaded machine, Python 3.12): accept
    its default, the notebook's own kernelspec, so the run can go on."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        dialog.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def _run_first_cell(page, editor, attempts: int = 4) -> None:
    """Shift+Enter in the first cell until the kernel has taken it.

    JupyterLab shows "Idle" a moment before the kernel's session is wired to
    the notebook; a cell run in that moment moves the cursor on but is never
    sent (seen here about one run in three). So check that the first cell's
    prompt left "[ ]" -- it shows [*] or [1] once the kernel has it -- and
    try again if not. Never re-runs a cell that started.
    """
    prompt = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-prompt")
    for _ in range(attempts):
        _accept_kernel_dialog(page)
        editor.click()
        page.keyboard.press("Shift+Enter")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if prompt.inner_text().strip() not in ("[ ]:", "[ ]"):
                return
            page.wait_for_timeout(200)
    raise AssertionError(f"the kernel never took the cell after {attempts} tries")


def test_the_dashboard_timeline_changes_while_no_cell_runs(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright
    from PIL import Image, ImageChops
    base, token = jupyterlab
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
            _run_first_cell(page, editor)
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
