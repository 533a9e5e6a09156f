"""labkit.wsgi's response heads on the fast path (issue 21): a status and
fields seen before are rendered from a cache and not checked again, and
that must never change what goes on the wire or what is refused.

Raw keep-alive exchanges with a real WSGIServer on 127.0.0.1.
"""
import pytest

from labkit import socket

pytestmark = pytest.mark.timeout(60)


def exchange(server, paths) -> bytes:
    """GET each of ``paths`` on one connection (the last one closes it);
    every byte the server sent."""
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: t\r\n{'Connection: close' if i == len(paths) - 1 else ''}"
        f"\r\n\r\n".encode() for i, path in enumerate(paths))
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(requests)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def heads(raw: bytes) -> list:
    """The response heads in ``raw`` (bodies are all 2 bytes: b"ok")."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        out.append(head)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        raw = rest[length:]
    return out


def test_fields_changed_after_start_response_are_not_sent(serve):
    # PEP 3333: the application hands its fields to start_response; what the
    # server checked there is what it sends. A CR/LF slipped in afterwards
    # would otherwise inject a field (response splitting).
    def app(environ, start_response):
        fields = [("Content-Type", "text/plain")]
        start_response("200 OK", fields)
        fields.append(("X-Late", "a\r\nInjected: 1"))
        return [b"ok"]

    server = serve(app)
    raw = exchange(server, ["/", "/"])
    assert b"Injected" not in raw and b"X-Late" not in raw
    assert [h.split(b"\r\n")[0] for h in heads(raw)] == [b"HTTP/1.1 200 OK"] * 2


def test_a_cached_head_does_not_let_a_bad_one_through(serve):
    # The same status, then fields that differ only by a CR/LF: the first
    # response's check must not answer for the second.
    def app(environ, start_response):
        value = "x\r\nInjected: 1" if environ["PATH_INFO"] == "/bad" else "x"
        start_response("200 OK", [("X-V", value)])
        return [b"ok"]

    server = serve(app)
    raw = exchange(server, ["/good", "/good", "/bad"])
    assert b"Injected: 1\r\n" not in raw
    first, second, third = heads(raw)
    assert first.split(b"\r\n")[0] == second.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert b"X-V: x" in first and b"X-V: x" in second
    assert third.split(b"\r\n")[0] == b"HTTP/1.1 500 Internal Server Error"


def test_fields_from_a_generator_are_checked_and_sent(serve):
    def app(environ, start_response):
        start_response("200 OK", ((name, value) for name, value in [("X-Gen", "1")]))
        return [b"ok"]

    raw = exchange(serve(app), ["/", "/"])
    assert [b"X-Gen: 1" in head for head in heads(raw)] == [True, True]


def test_many_distinct_heads_each_render_their_own_fields(serve):
    # More distinct (status, fields) than the caches hold: each response
    # still carries exactly its own fields, and Date and framing are added.
    def app(environ, start_response):
        n = environ["PATH_INFO"][1:]
        start_response(f"{200 + int(n) % 3} S{n}", [("X-N", n), ("Connection", "keep-alive")])
        return [b"ok"]

    paths = [f"/{n}" for n in range(300)] + ["/5", "/5"]
    for head, path in zip(heads(exchange(serve(app), paths)), paths):
        n = path[1:]
        lines = head.split(b"\r\n")
        assert lines[0] == f"HTTP/1.1 {200 + int(n) % 3} S{n}".encode()
        assert f"X-N: {n}".encode() in lines
        assert any(line.startswith(b"Date: ") for line in lines)
        assert b"Content-Length: 2" in lines


def test_list_pairs_are_checked_every_time_and_copied(serve):
    # [name, value] lists cannot be cached (unhashable): each response is
    # checked, and the list of them is still copied at start_response.
    def app(environ, start_response):
        value = "x\r\nInjected: 1" if environ["PATH_INFO"] == "/bad" else "x"
        fields = [["X-L", value]]
        start_response("200 OK", fields)
        fields.append(["X-Late", "1"])
        return [b"ok"]

    first, second, third = heads(exchange(serve(app), ["/good", "/good", "/bad"]))
    assert b"X-L: x" in first and b"X-L: x" in second
    assert b"X-Late" not in first + second
    assert third.split(b"\r\n")[0] == b"HTTP/1.1 500 Internal Server Error"
