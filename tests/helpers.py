"""Small helpers shared by several test files."""


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
