"""What the browser tests share: a JupyterLab server on loopback, and the
ways to drive it from Playwright with the system chromium. (A module the
tests import, not a conftest.py: tests/conftest.py is "conftest" already.)

``jupyterlab`` (fixture) starts JupyterLab with a token on 127.0.0.1,
serving a fresh directory, and always stops it; it yields
``(base_url, token, root)``: write the notebooks to open into ``root``.

Needs: ``jupyterlab`` and ``playwright`` (pip) and chromium at
/usr/bin/chromium (apt). ``.ci/system-deps.sh`` installs them; without them
the tests skip and say what is missing. Playwright's own browser download is
not used: the tests point it at the system chromium.
"""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "artifacts")


def missing() -> str | None:
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


def _served_url(runtime_dir, pid: int) -> str | None:
    """The URL JupyterLab (process ``pid``) serves at, from the server file
    it writes in its runtime directory; None until it has written it."""
    try:
        with open(os.path.join(runtime_dir, f"jpserver-{pid}.json")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return f"http://127.0.0.1:{info['port']}"


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except Exception:
        return 0


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving tmp_path/root; always stopped.
    Yields (base_url, token, root)."""
    reason = missing()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    root = tmp_path / "root"
    root.mkdir()
    port, token = _free_port(), secrets.token_hex(16)
    # User settings of its own: never fetch news, never ask -- the "Would
    # you like to get notified about official Jupyter news?" toast once sat
    # over the notebook and Run All never ran a cell.
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false, "doNotDisturbMode": true}')
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=20", "--allow-root",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = None
    try:
        deadline = time.monotonic() + 60
        while base is None or _get(f"{base}/api/status?token={token}") != 200:
            # The port we picked may be taken before JupyterLab binds it (seen
            # with several suites at once): it then tries the next ones, and
            # says which it got in its runtime file.
            base = base or _served_url(tmp_path / "runtime", server.pid)
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" +
                            (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.25)
        yield base, token, root
    finally:
        # Ask politely (kernels are shut down too), then make sure.
        try:
            if base is None:
                raise RuntimeError("never served")
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


def accept_kernel_dialog(page) -> None:
    """JupyterLab sometimes asks "Select Kernel" for a notebook whose session
    it lost while starting (seen on a loaded machine, Python 3.12): accept
    its default, the notebook's own kernelspec, so the run can go on."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() and dialog.first.is_visible():
        # in the test's output, should a run fail after it
        print("accepting a JupyterLab dialog:", " ".join((dialog.first.text_content() or "").split()))
        dialog.locator(".jp-mod-accept").first.click()
        page.wait_for_timeout(500)


def kernel_activity(page) -> tuple | None:
    """(execution_state, last_activity) of the kernel of the notebook the
    page shows, from the server's /api/sessions; None while the server has
    no session with a kernel for it. last_activity changes whenever the
    kernel publishes anything -- the "busy" of an execute_request included
    -- so it tells whether a cell reached the kernel, whatever the page
    shows."""
    url = urllib.parse.urlsplit(page.url)
    path = urllib.parse.unquote(url.path.partition("/lab/tree/")[2])
    try:   # the page's own request context: its login cookie, as JupyterLab drops the token
        response = page.request.get(f"{url.scheme}://{url.netloc}/api/sessions", timeout=5000)
        sessions = response.json() if response.ok else []
    except Exception:
        return None
    for session in sessions:
        kernel = session.get("kernel") or {}
        if session.get("path") == path and kernel:
            return kernel.get("execution_state"), kernel.get("last_activity")
    return None


def run_first_cell(page, editor, attempts: int = 4, timeout: float = 60) -> None:
    """Shift+Enter in the first cell, once the kernel has taken it.

    JupyterLab shows "Idle" a moment before the kernel's session is wired to
    the notebook; a cell run in that moment moves the cursor on but is never
    sent (seen here about one run in three), or waits for the kernel to
    start and runs late. So: wait until the server has the notebook's kernel
    idle; run the cell; and run it again only if its prompt still shows
    "[ ]" *and* the kernel has published nothing since (its last_activity):
    a cell that reached the kernel, however slowly the page shows it, is
    never run twice (a second run on a loaded machine made the console
    test's prompt [2]).
    """
    prompt = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-prompt")
    deadline = time.monotonic() + timeout
    while (kernel_activity(page) or ("",))[0] != "idle":
        accept_kernel_dialog(page)
        if time.monotonic() > deadline:
            raise AssertionError(f"the notebook's kernel was not idle within {timeout} s")
        page.wait_for_timeout(250)
    for _ in range(attempts):
        before = kernel_activity(page)
        accept_kernel_dialog(page)
        editor.click()
        page.keyboard.press("Shift+Enter")
        wait_until = time.monotonic() + 10
        while True:
            # text_content, not inner_text: a cell scrolled out of view
            # (JupyterLab's windowing) has no rendered text
            if (prompt.text_content() or "").strip() not in ("[ ]:", "[ ]"):
                return
            accept_kernel_dialog(page)
            if time.monotonic() > wait_until and kernel_activity(page) == before:
                break   # never reached the kernel: send it again
            if time.monotonic() > deadline:
                raise AssertionError(f"the first cell's prompt still shows [ ] after {timeout} s")
            page.wait_for_timeout(200)
    raise AssertionError(f"the kernel never took the cell after {attempts} tries")
