"""Small helpers shared by several test files."""
import subprocess
import sys
import textwrap


def run_python(code: str, *args: str, timeout: float = 45, env: dict | None = None) -> str:
    """Run ``code`` in a new interpreter; return its stdout (fail on error).
    ``env``: its whole environment (default: this process's)."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def trace_two_players_and_a_blocker(player_pause: float, block: float):
    """A small trace to export or draw: greenlets "a" and "b" yield 3 and 2
    times with ``sleep(player_pause)``, "blocker" holds the loop ``block`` s."""
    import time

    import labkit
    import tracing

    def player(rounds):
        for _ in range(rounds):
            labkit.sleep(player_pause)

    def blocker():
        time.sleep(block)

    with tracing.trace(blocking=0.05, report=False) as t:
        gs = [labkit.spawn(player, 3), labkit.spawn(player, 2), labkit.spawn(blocker)]
        for g, name in zip(gs, ("a", "b", "blocker")):
            g.name = name
        labkit.joinall(gs)
    return t


def echo(sock, address):
    """A StreamServer handler: send back whatever arrives, until the peer closes."""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)


def line_of(path: str, marker: str) -> int:
    """The number of the line of ``path`` that contains ``marker`` (the test
    checks that a report points at that line)."""
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if marker in text and "line_of(" not in text:
                return number
    raise AssertionError(f"{marker!r} not found in {path}")


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` s."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def trickle_until_reply(sock, byte: bytes = b"x", every: float = 0.1, most: int = 40) -> bytes:
    """Send ``byte`` every ``every`` seconds (cooperatively), at most
    ``most`` times, until the server replies; return the reply, or raise
    AssertionError if the whole trickle was taken without one.

    The server answers on its own clock (a budget running out), so its reply
    may come between a look and the next byte; it then closes with that byte
    unread, and the reset fails the send while the reply is still queued
    here (Linux keeps it): read it then too."""
    import select as _select

    import labkit
    for _ in range(most):
        labkit.sleep(every)
        if _select.select([sock], [], [], 0)[0]:
            return sock.recv(65536)
        try:
            sock.sendall(byte)
        except OSError:
            return sock.recv(65536)
    raise AssertionError(f"the {most * every:g} s trickle was served to the end")
