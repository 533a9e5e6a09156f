"""labkit.gunicorn.Worker: `gunicorn -k labkit.gunicorn.Worker` serves WSGI apps.

A real gunicorn arbiter with two labkit workers, on a free loopback port;
SIGTERM must stop it cleanly (exit status 0, workers gone).
"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests

pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install gunicorn)")

pytestmark = pytest.mark.timeout(60)

APP = textwrap.dedent('''
    import os
    import labkit

    def app(environ, start_response):
        labkit.sleep(0.01)  # patched hub: sleeping parks only this request
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"worker {os.getpid()}".encode()]
''')


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited early"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start listening")


@pytest.fixture
def gunicorn(tmp_path):
    (tmp_path / "gapp.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", "labkit.gunicorn.Worker", "-w", "2",
         "-b", f"127.0.0.1:{port}", "--no-control-socket", "--graceful-timeout", "5",
         "--chdir", str(tmp_path), "gapp:app"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, process)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_gunicorn_with_labkit_workers_serves_and_stops_on_sigterm(gunicorn):
    process, port = gunicorn
    with requests.Session() as session:
        bodies = [session.get(f"http://127.0.0.1:{port}/", timeout=5).text for _ in range(20)]
    assert all(body.startswith("worker ") for body in bodies)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "Shutting down: Master" in output
    assert "Traceback" not in output, output
