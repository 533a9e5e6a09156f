"""labkit.wsgi's per-request fast path (issue 21, round three): what the
shortcuts must never change.

- the parser reads a request's HTTP version from its request line when the
  line is where it expects it, and asks llhttp otherwise;
- response heads are remembered per (status, fields) and per (version,
  body length, HEAD, keep-alive): one request's head never answers another's;
- the socket's timeout is set only when a call of the request may park,
  and the wait for a head never has one;
- requests share no mutable state (bodies, fields).

Raw exchanges with a real WSGIServer on 127.0.0.1.
"""
import time

import httptools
import pytest

from helpers import trickle_until_reply
from labkit import sleep, socket
from labkit._http import RequestParser

pytestmark = pytest.mark.timeout(60)


def read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(server, data: bytes) -> bytes:
    """Send ``data`` (whole requests; the last one must close) and return
    every byte of the answer."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(data)
        return read_all(sock)


def split_responses(raw: bytes) -> list:
    """[(head lines, body)] for responses framed by Content-Length."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        length = int(fields[b"Content-Length"])
        out.append((lines, raw[:length]))
        raw = raw[length:]
    return out


def llhttp_versions(data: bytes) -> list:
    """The version of every request llhttp completes in ``data``, asked of
    llhttp itself: the reference."""
    versions = []

    class Protocol:
        def on_headers_complete(self):
            versions.append(parser.get_http_version())

    parser = httptools.HttpRequestParser(Protocol())
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return versions


@pytest.mark.parametrize("pieces", [
    [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"],
    [b"GET / HTTP/1.0\r\n\r\n"],
    [b"GET /x?HTTP/1.1 HTTP/1.0\r\n\r\n"],          # the text, in the target
    [b"GET /HTTP/1.1\r\n HTTP/1.0\r\n\r\n"],          # refused by llhttp
    [b"GET /a#HTTP/1.1 HTTP/1.0\r\n\r\n"],            # a fragment (cut later)
    [b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.0\r\nHost: b\r\n\r\n"],
    [b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", b"\r\nGET /b HTTP/1.0\r\n\r\n"],  # CRLF between
    [b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", b"\r\n\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n"],
    [b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     b"GET /c HTTP/1.1\r\nHost: c\r\n\r\n"],
    [b"GET /long HTTP/1.", b"0\r\n\r\n"],              # a head cut by a read
    [b"GET /long HTTP/1.1\r", b"\nHost: a\r\n\r\n"],
    [b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET /q HTTP/1.0\r\n\r\n"],
])
def test_parser_versions_are_llhttps(pieces):
    parser = RequestParser(65536, None)
    for piece in pieces:
        parser.feed(piece)
    got = [request.version for request in parser.requests]
    assert got == llhttp_versions(b"".join(pieces))


def test_head_cache_answers_each_request_with_its_own_head(serve):
    # The same application fields, answered to requests that differ by
    # path (status, fields), version, method and keep-alive, pipelined on
    # one connection: each head must be the one its request calls for.
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("X-Path", path)])
        else:
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Path", path)])
        return [path.encode()]

    raw = exchange(serve(app), b"".join([
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /missing HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"HEAD /a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /bb HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]))
    heads = []
    while raw:  # (the HEAD answer has a Content-Length and no body)
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        heads.append(lines)
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        if len(heads) != 4:  # the 4th answers the HEAD: no body
            raw = raw[int(fields[b"Content-Length"]):]
    status = [lines[0] for lines in heads]
    assert status == [b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK",
                      b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    fields = [dict(line.split(b": ", 1) for line in lines[1:]) for lines in heads]
    assert [f[b"X-Path"] for f in fields] == [b"/a", b"/missing", b"/a", b"/a", b"/bb", b"/a"]
    assert [f[b"Content-Length"] for f in fields] == [b"2", b"8", b"2", b"2", b"3", b"2"]
    # keep-alive as each request asked: 1.0 with keep-alive says so, the last closes
    assert [f.get(b"Connection") for f in fields] == [None, None, None, None, b"keep-alive",
                                                      b"close"]


def test_head_cache_frames_by_version_and_body(serve):
    # One status and one field list, no Content-Length from the app: a
    # streamed body is chunked for HTTP/1.1 and close-delimited for 1.0;
    # a list body gets its own length each time.
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/stream":
            return (part for part in [b"ab", b"c"])
        return [environ["PATH_INFO"].encode()]

    server = serve(app)
    raw = exchange(server, b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
                           b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
                           b"GET /xyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    assert rest.startswith(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    rest = rest[len(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"):]
    assert [body for _, body in split_responses(rest)] == [b"/x", b"/xyz"]
    raw = exchange(server, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"abc"


def test_cached_head_gets_a_new_date_each_second(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app)

    def date() -> bytes:
        raw = exchange(server, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        (lines, _), = split_responses(raw)
        return dict(line.split(b": ", 1) for line in lines[1:])[b"Date"]

    first = date()
    deadline = time.monotonic() + 5
    while date() == first:
        assert time.monotonic() < deadline, "the Date line never changed"
        sleep(0.2)
    assert date() != first


def test_application_date_is_kept_over_many_requests(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Date", "Mon, 01 Jan 2001 00:00:00 GMT")])
        return [b"ok"]

    raw = exchange(serve(app), b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3
                   + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    heads = [lines for lines, _ in split_responses(raw)]
    assert len(heads) == 4
    for lines in heads:
        assert [line for line in lines if line.startswith(b"Date")] == [
            b"Date: Mon, 01 Jan 2001 00:00:00 GMT"]


def test_the_wait_for_a_head_has_no_timeout_even_with_a_default_one(serve):
    # An accepted socket starts with socket.getdefaulttimeout(); the server
    # waits for heads without one (keepalive_timeout is the reaper's), before
    # the first request and between requests, whether or not a request set
    # its I/O budget on the socket.
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)  # (its listening socket has no timeout)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.3)
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sleep(0.1)  # the server accepts it now, with the default timeout
            socket.setdefaulttimeout(old)
            for _ in range(2):
                sleep(0.6)  # longer than the default timeout
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                reply = b""
                while not reply.endswith(b"ok"):
                    chunk = sock.recv(65536)
                    assert chunk, "the server closed the connection"
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200 OK")
    finally:
        socket.setdefaulttimeout(old)


def test_a_trickled_body_still_runs_out_of_io_budget_after_fast_responses(serve):
    # The first responses go out without parking (no timeout is set on the
    # socket for them); a body trickled on the same connection afterwards
    # must still run out of the I/O budget (408), not wait forever.
    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body) + 2))])
        return [b"ok" + body]

    server = serve(app, io_timeout=0.5)  # min_data_rate: 240 bytes/s
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 2)
        got = b""
        while got.count(b"ok") < 2:
            got += sock.recv(65536)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n")
        # a byte every 0.1 s: each read is quick, the rate is not
        reply = trickle_until_reply(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")


def test_pipelined_requests_share_no_body_or_fields(serve):
    # A body left unread by its application is drained, never seen by the
    # next request; fields of one request never show in the next's environ.
    seen = []

    def app(environ, start_response):
        seen.append((environ["PATH_INFO"], environ["wsgi.input"].read(),
                     sorted(k for k in environ if k.startswith("HTTP_X"))))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def unread(environ, start_response):
        return app(environ, start_response) if environ["PATH_INFO"] != "/skip" else (
            start_response("200 OK", [("Content-Length", "2")]) and [b"ok"])

    raw = exchange(serve(unread), b"".join([
        b"POST /read HTTP/1.1\r\nHost: t\r\nX-One: 1\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /skip HTTP/1.1\r\nHost: t\r\nX-Two: 2\r\nContent-Length: 4\r\n\r\nzzzz",
        b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nde\r\n0\r\n\r\n",
        b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ]))
    assert len(split_responses(raw)) == 4
    assert seen == [("/read", b"abc", ["HTTP_X_ONE"]), ("/chunked", b"de", []),
                    ("/last", b"", [])]


def test_malformed_requests_still_get_an_error_reply(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    for bad, status in [(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n", b"400"),
                        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", b"505"),
                        (b"GET / HTTP/1.1\r\n\r\n", b"400")]:
        raw = exchange(server, bad)
        assert raw.count(b"HTTP/1.1 " + status) == 1, (bad, raw)
