"""Small helpers shared by several test files."""
import subprocess
import sys
import textwrap


def run_python(code: str, *args: str, timeout: float = 45) -> str:
    """Run ``code`` in a new interpreter; return its stdout (fail on error)."""
    command = [sys.executable, "-c", textwrap.dedent(code), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
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
