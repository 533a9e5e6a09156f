"""Client-side helpers shared by the benchmarks and the tests that drive servers."""


def recv_exactly(sock, size: int) -> bytes:
    """Read ``size`` bytes from ``sock``; fewer only if the peer closed first.

    Works on stdlib and labkit sockets alike (a stream may deliver a message
    in several pieces, so a single recv is never enough).
    """
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        if not chunk:
            break
        got += chunk
    return got
