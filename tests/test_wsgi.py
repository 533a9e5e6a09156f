"""labkit.wsgi: WSGIServer against real clients, bad clients and random bytes.

The server runs on the test's hub (the main greenlet drives it). Blocking
clients (requests, http.client, wrk) run in a thread or a child process
while the main greenlet parks; raw-socket clients are labkit sockets in the
main greenlet itself. Every server is started through the ``serve`` fixture
and stopped at teardown, even when the test fails.
"""
import http.client
import io
import json
import os
import re
import shutil
import socket as stdlib_socket

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

import labkit
from helpers import trickle_until_reply
from labkit import socket, subprocess
from labkit.threadpool import ThreadPool
from labkit.wsgi import WSGIServer

pytestmark = pytest.mark.timeout(60)


# -- apps -----------------------------------------------------------------------

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def echo(environ, start_response):
    """Echo the body; say where the request came from in headers."""
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("X-Remote-Port", environ["REMOTE_PORT"]),
                              ("X-Path", environ["PATH_INFO"]),
                              ("X-Query", environ["QUERY_STRING"])])
    return [body]


# -- fixtures and helpers -----------------------------------------------------------

@pytest.fixture
def in_thread():
    """in_thread(fn, *args): run a blocking client in a thread, park meanwhile."""
    pool = ThreadPool(2)
    yield lambda fn, *args: pool.apply(fn, args)
    pool.kill()


def url(server, path="/"):
    return f"http://127.0.0.1:{server.server_port}{path}"


def raw_exchange(server, data: bytes, timeout=5.0, shut=True) -> bytes:
    """Send ``data`` on a fresh connection; return all bytes until the server closes."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, f"not an HTTP response: {response[:200]!r}"
    return int(match.group(1))


def assert_still_serving(server):
    reply = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 200


def wait_until_no_connections(server, seconds=3.0):
    """The handler greenlets of closed connections have all exited."""
    for _ in range(int(seconds / 0.01)):
        if not len(server.pool) and not server.connections:
            return
        labkit.sleep(0.01)
    raise AssertionError(f"{len(server.pool)} handler(s) still alive")


# -- real clients -------------------------------------------------------------------

def test_requests_session_reuses_one_keepalive_connection(serve, in_thread):
    server = serve(echo)

    def client():
        with requests.Session() as session:
            return [session.get(url(server, f"/n%20{i}?q={i}")) for i in range(5)]

    responses = in_thread(client)
    assert [r.status_code for r in responses] == [200] * 5
    assert {r.headers["X-Remote-Port"] for r in responses} == {
        responses[0].headers["X-Remote-Port"]}  # one TCP connection for all five
    assert responses[3].headers["X-Path"] == "/n 3"
    assert responses[3].headers["X-Query"] == "q=3"
    assert "Date" in responses[0].headers


def test_http_client_gets_content_length_and_keeps_connection(serve, in_thread):
    server = serve(hello)

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=5)
        bodies = []
        for _ in range(3):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.getheader("Content-Length") == "13"
            assert not response.will_close
            bodies.append(response.read())
        conn.close()
        return bodies

    assert in_thread(client) == [b"Hello, World!"] * 3


def test_chunked_upload_is_streamed_to_wsgi_input(serve, in_thread):
    seen = {}

    def app(environ, start_response):
        seen["content_length"] = environ.get("CONTENT_LENGTH")
        seen["lines"] = list(environ["wsgi.input"])  # iterate lines as they arrive
        start_response("200 OK", [])
        return [str(sum(map(len, seen["lines"]))).encode()]

    server = serve(app)
    chunks = [b"line %d\n" % i * 100 for i in range(50)]
    response = in_thread(lambda: requests.post(url(server), data=iter(chunks)))
    assert response.text == str(sum(map(len, chunks)))
    assert seen["content_length"] is None  # chunked: no length was declared
    assert b"".join(seen["lines"]) == b"".join(chunks)


def test_expect_100_continue_is_sent_when_the_app_reads_the_body(serve):
    server = serve(echo)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        reply = sock.recv(65536)
    assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\nhello")


def test_expect_100_continue_gets_413_without_continue_when_too_large(serve):
    server = serve(echo, max_body_size=1000)
    reply = raw_exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                                 b"Expect: 100-continue\r\n\r\n")
    assert status_of(reply) == 413 and b"100 Continue" not in reply


def test_large_download_list_generator_and_file(serve, in_thread, tmp_path):
    blob = os.urandom(4 << 20)
    path = tmp_path / "blob"
    path.write_bytes(blob)

    def app(environ, start_response):
        start_response("200 OK", [])
        kind = environ["PATH_INFO"]
        if kind == "/list":
            return [blob]
        if kind == "/file":  # wsgi.file_wrapper: sent with os.sendfile
            return environ["wsgi.file_wrapper"](open(path, "rb"))
        return (blob[i:i + 100_000] for i in range(0, len(blob), 100_000))  # chunked

    server = serve(app)

    def client():
        with requests.Session() as session:
            return {kind: session.get(url(server, "/" + kind))
                    for kind in ("list", "file", "gen")}

    responses = in_thread(client)
    for kind, response in responses.items():
        assert response.content == blob, kind
    assert responses["file"].headers["Content-Length"] == str(len(blob))
    assert responses["gen"].headers["Transfer-Encoding"] == "chunked"


def test_pipelined_requests_are_answered_in_order(serve):
    server = serve(echo)
    requests_ = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(10))
    reply = raw_exchange(server, requests_ + b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    paths = re.findall(rb"X-Path: (\S+)", reply)
    assert paths == [b"/%d" % i for i in range(10)] + [b"/last"]


def test_http10_head_and_bodiless_statuses(serve):
    def app(environ, start_response):
        status = "204 No Content" if environ["PATH_INFO"] == "/empty" else "200 OK"
        start_response(status, [])
        return iter([b"body"])

    server = serve(app)
    reply = raw_exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert status_of(reply) == 200 and reply.endswith(b"\r\n\r\nbody")
    assert b"Transfer-Encoding" not in reply  # HTTP/1.0: the close ends the body
    reply = raw_exchange(server, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.endswith(b"\r\n\r\n")
    reply = raw_exchange(server, b"GET /empty HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 204 and reply.endswith(b"\r\n\r\n")


def test_application_error_is_a_500_and_the_server_goes_on(serve):
    def app(environ, start_response):
        raise RuntimeError("boom (expected by the test)")

    errors = io.StringIO()
    labkit.get_hub().exception_stream = errors
    server = serve(app)
    reply = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(reply) == 500
    assert "boom" in errors.getvalue()
    server.application = hello
    assert_still_serving(server)


def test_access_log_is_off_by_default_and_combined_when_on(serve):
    log = io.StringIO()
    server = serve(hello, log=log)
    raw_exchange(server, b"GET /x?y=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent\r\n"
                         b"Referer: http://ref/\r\nConnection: close\r\n\r\n")
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /x\?y=1 HTTP/1\.1" 200 13 '
                        r'"http://ref/" "test-agent"\n', log.getvalue())
    assert WSGIServer(("127.0.0.1", 0), hello).log is None


# -- bad clients -------------------------------------------------------------------

def show_environ(environ, start_response):
    """Answer with the request's CGI variables, as JSON."""
    environ["wsgi.input"].read()
    body = json.dumps({k: v for k, v in environ.items() if k.isupper()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def exchange_until_close(server, data: bytes) -> bytes:
    """Send ``data`` and keep the write side open: return what the server
    sends before IT closes the connection (a reset after the reply counts
    as a close). Times out, failing the test, if the server keeps it open."""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


CHUNKED_POST = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"

# Requests the server must refuse: (id, exact bytes, status). After the
# reply the server closes the connection, and goes on serving others.
ATTACKS = [
    ("garbage", b"garbage garbage garbage\r\n\r\n", 400),
    ("head-over-64KiB", b"GET / HTTP/1.1\r\nHost: x\r\n"
     + b"X-Big-%d: " % 0 + b"a" * 8000 + b"\r\n" + b"".join(
         b"X-Big-%d: %s\r\n" % (i, b"a" * 8000) for i in range(1, 10)) + b"\r\n", 431),
    ("request-line-over-4094", b"GET /" + b"a" * 4090 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("url-100KB", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("field-over-8190", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8190 + b"\r\n\r\n", 431),
    ("101-fields", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: a\r\n" * 100 + b"\r\n", 431),
    ("10000-copies-of-a-field", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 10_000
     + b"\r\n", 431),
    ("negative-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello", 400),
    ("invalid-length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: five\r\n\r\nhello", 400),
    ("two-lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                    b"Content-Length: 4\r\n\r\nabcd", 400),
    ("length-and-chunked", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("gzip-chunked", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                     b"0\r\n\r\n", 501),
    ("chunked-on-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("bare-lf", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("nul-in-name", b"GET / HTTP/1.1\r\nHost: x\r\nX\x00: a\r\n\r\n", 400),
    ("body-over-limit", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
                        + b"x" * 5000, 413),
    ("chunked-over-limit", CHUNKED_POST + b"\r\n3e8\r\n" + b"x" * 1000 + b"\r\n3e8\r\n"
     + b"x" * 1000 + b"\r\n0\r\n\r\n", 413),
    # a declared chunk larger than the body limit is refused at its size
    # line: the client here never sends the data (nor closes)
    ("chunk-size-2^63", CHUNKED_POST + b"\r\n8000000000000000\r\nabc", 413),
    ("chunk-extension-over-8190", CHUNKED_POST + b"\r\n2;token=" + b"x" * 9000
     + b"\r\noh\r\n0\r\n\r\n", 400),
    ("second-chunk-size-over-limit", CHUNKED_POST + b"\r\n3e8\r\n" + b"x" * 1000
     + b"\r\n3e8;ext=1\r\n", 413),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: good\r\nHost: evil\r\n\r\n", 400),
    ("http11-without-host", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    ("two-content-types", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 0\r\n\r\n", 400),
    ("malformed-target", b"PUT s://]ufd/: HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 400),
    ("asterisk-get", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("relative-target", b"GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("http-2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ("http-0.9", b"GET / HTTP/0.9\r\n\r\n", 505),
]


@pytest.mark.parametrize("request_bytes, status", [a[1:] for a in ATTACKS],
                         ids=[a[0] for a in ATTACKS])
def test_attack_is_refused_with_its_status_and_the_connection_closed(serve, request_bytes,
                                                                     status):
    server = serve(show_environ, max_body_size=1500)
    reply = exchange_until_close(server, request_bytes)
    assert status_of(reply) == status, reply[:300]
    assert b"Connection: close" in reply
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", reply)) == 1  # nothing served after it
    assert_still_serving(server)


def test_the_parser_reads_the_same_requests_however_the_bytes_are_cut():
    # RequestParser.feed hands llhttp the stream in pieces (heads, bodies,
    # chunk-size lines, chunk data) to read chunk sizes: wherever a read
    # cuts the stream, the requests and bodies must come out the same.
    from labkit._http import RequestParser
    stream = (CHUNKED_POST + b"\r\n5;ext=\"a\"\r\nab\r\nc\r\n10\r\n" + b"\n\r" * 8
              + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
              + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n\r\n\r\nab"
              + b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
              + CHUNKED_POST + b"\r\n3\r\nxyz\r\n0\r\n\r\n")
    expected = [("POST", b"/", b"ab\r\nc" + b"\n\r" * 8), ("POST", b"/b", b"\r\n\r\nab"),
                ("GET", b"/c", b""), ("POST", b"/", b"xyz")]

    def parse(pieces):
        parser = RequestParser(65536, 1500)
        for piece in pieces:
            parser.feed(piece)
        assert parser.error is None, parser.error
        return [(r.method, r.url, b"".join(r.body)) for r in parser.requests
                if r.complete]

    assert parse([stream]) == expected
    assert parse([stream[i:i + 1] for i in range(len(stream))]) == expected
    for cut in range(1, len(stream)):
        assert parse([stream[:cut], stream[cut:]]) == expected, cut
    for size in (2, 3, 5, 7):
        assert parse([stream[i:i + size] for i in range(0, len(stream), size)]) == expected


def test_a_refused_chunk_size_refuses_its_request_and_drops_the_ones_after_it():
    from labkit._http import RequestParser
    stream = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + CHUNKED_POST + b"\r\n3\r\nabc\r\n"
              + b"8000000000000000\r\nxyz\r\n0\r\n\r\n" + b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
    for cut in range(0, len(stream)):
        parser = RequestParser(65536, 1500)
        parser.feed(stream[:cut])
        parser.feed(stream[cut:])
        assert parser.error is not None and parser.error.status == 413, cut
        first, refused = parser.requests   # the GET after it never comes out
        assert first.url == b"/a" and first.error is None
        assert refused.url == b"/" and refused.error is parser.error, cut


# Requests that are served, but only with what the head said: (id, exact
# bytes, CGI variables the app must see; None: must not see it).
SANITIZED = [
    ("trailers-are-not-headers", CHUNKED_POST + b"X-Forwarded-For: 10.0.0.1\r\n\r\n"
     b"3\r\nabc\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\nX-Auth-User: admin\r\n\r\n",
     {"HTTP_X_FORWARDED_FOR": "10.0.0.1", "HTTP_X_AUTH_USER": None}),
    ("trailing-whitespace-is-not-value", b"GET / HTTP/1.1\r\nHost: x\r\n"
     b"X-Value: value \t \r\n\r\n", {"HTTP_X_VALUE": "value"}),
    ("fragment-is-cut", b"GET /a?b=1#frag HTTP/1.1\r\nHost: x\r\n\r\n",
     {"PATH_INFO": "/a", "QUERY_STRING": "b=1"}),
    ("absolute-form", b"GET http://x/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
     {"PATH_INFO": "/p", "QUERY_STRING": "q=1"}),
    ("list-fields-are-joined", b"GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\n\r\n",
     {"HTTP_ACCEPT": "a,b"}),
    ("http10-without-host", b"GET / HTTP/1.0\r\n\r\n", {"SERVER_PROTOCOL": "HTTP/1.0"}),
    ("cookie-fields-are-joined-with-semicolons", b"GET / HTTP/1.1\r\nHost: x\r\n"
     b"Cookie: a=1\r\nCookie: b=2\r\n\r\n", {"HTTP_COOKIE": "a=1; b=2"}),
]


@pytest.mark.parametrize("request_bytes, expected", [a[1:] for a in SANITIZED],
                         ids=[a[0] for a in SANITIZED])
def test_request_reaches_the_app_only_as_its_head_says(serve, request_bytes, expected):
    server = serve(show_environ)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(request_bytes)  # one send: trailers arrive in the head's read
        reply = b""
        while b"}" not in reply and (chunk := sock.recv(65536)):
            reply += chunk
    assert status_of(reply) == 200, reply[:300]
    environ = json.loads(reply.partition(b"\r\n\r\n")[2])
    assert {key: environ.get(key) for key in expected} == expected


def test_trickled_body_runs_out_of_io_budget_in_total_not_per_read(serve):
    server = serve(show_environ, io_timeout=0.5)  # min_data_rate: 240 bytes/s
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n")
        # a byte every 0.1 s: each read is quick, the rate is not
        reply = trickle_until_reply(sock)
    assert status_of(reply) == 408


def test_body_at_a_steady_rate_outlasts_io_timeout(serve):
    server = serve(echo, io_timeout=0.3, min_data_rate=50)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for _ in range(10):  # 1 s in all, at 100 bytes/s
            labkit.sleep(0.1)
            sock.sendall(b"y" * 10)
        reply = b""
        while not reply.endswith(b"y" * 100) and (chunk := sock.recv(65536)):
            reply += chunk
    assert status_of(reply) == 200


def test_half_a_request_then_stall_gets_408_while_others_are_served(serve):
    server = serve(hello, header_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: ")
        assert_still_serving(server)  # while the slow client stalls
        reply = slow.recv(65536)
    assert status_of(reply) == 408


def test_idle_keepalive_connection_is_closed_quietly(serve):
    server = serve(hello, keepalive_timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(sock.recv(65536)) == 200
        assert sock.recv(65536) == b""  # closed after 0.3 s idle, no 408
    wait_until_no_connections(server)


def test_stop_closes_idle_connections_and_finishes_requests_in_progress(serve):
    def slow(environ, start_response):
        labkit.sleep(0.3)
        start_response("200 OK", [])
        return [b"done"]

    server = serve(slow)
    port = server.server_port
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    labkit.sleep(0.05)  # both accepted; the busy one is in the app
    stopper = labkit.spawn(server.stop, 5)
    assert idle.recv(100) == b""  # closed at once, not after the slow request
    reply = busy.recv(65536)
    assert status_of(reply) == 200 and b"Connection: close" in reply and reply.endswith(b"done")
    stopper.join(5)
    assert stopper.dead and not server.connections
    idle.close()
    busy.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n",
                               b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"]),
              st.binary(max_size=200))))
def test_random_bytes_never_crash_the_server_or_leak_a_connection(data):
    server = WSGIServer(("127.0.0.1", 0), echo, header_timeout=2, io_timeout=2)
    server.start()
    try:
        fds_before = len(os.listdir("/proc/self/fd"))
        reply = raw_exchange(server, data)
        if reply:
            assert status_of(reply) in (200, 400, 408, 413, 414, 417, 431, 501, 505)
        wait_until_no_connections(server)
        assert len(os.listdir("/proc/self/fd")) <= fds_before
        assert_still_serving(server)
    finally:
        server.stop(timeout=1)


# -- load ------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("wrk") is None,
                    reason="wrk is not installed (apt-get install wrk; .ci/run does)")
def test_wrk_for_two_seconds_without_socket_errors(serve):
    server = serve(hello)
    # labkit.subprocess: the hub keeps serving while we wait for wrk.
    result = subprocess.run(["wrk", "-t1", "-c20", "-d2s", url(server)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Socket errors" not in result.stdout, result.stdout
    assert "Non-2xx" not in result.stdout, result.stdout
    completed = int(re.search(r"(\d+) requests in", result.stdout).group(1))
    assert completed > 100, result.stdout


def test_tcp_nodelay_is_set_on_accepted_connections(serve):
    seen = {}

    def app(environ, start_response):
        sock = [c for c in server.connections][0].sock
        seen["nodelay"] = sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY)
        return hello(environ, start_response)

    server = serve(app)
    raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert seen["nodelay"]


# -- the hijack path (protocol upgrades) ----------------------------------------------

UPGRADE_REQUEST = (b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                   b"Upgrade: echo\r\n\r\n")


def read_head(sock) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"closed after {head!r}"
        head += chunk
    return head


def test_upgrade_app_answers_101_and_owns_the_raw_socket_without_a_deadline(serve):
    def app(environ, start_response):
        if "gunicorn.socket" not in environ:  # not an Upgrade request
            return hello(environ, start_response)
        sock = environ["gunicorn.socket"]
        assert environ["labkit.socket"] is sock
        write = start_response("101 Switching Protocols",
                               [("Upgrade", "echo"), ("Connection", "Upgrade")])
        write(b"")  # sends the head; from here on the socket is the app's
        while (data := sock.recv(100)) and data != b"bye":
            sock.sendall(data.upper())
        return []

    server = serve(app, io_timeout=0.2)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(UPGRADE_REQUEST)
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Upgrade: echo\r\n" in head and b"Connection: Upgrade\r\n" in head
        assert b"Connection: close" not in head and b"Content-Length" not in head
        assert b"Transfer-Encoding" not in head
        labkit.sleep(0.5)  # longer than io_timeout: the server stepped aside
        sock.sendall(b"hello")
        assert sock.recv(100) == b"HELLO"
        sock.sendall(b"bye")
        assert sock.recv(100) == b""  # the app returned: the server adds nothing, closes
    assert_still_serving(server)


def test_app_that_answers_an_upgrade_on_the_socket_itself_gets_no_reply_from_the_server(serve):
    def app(environ, start_response):  # simple-websocket's way under gunicorn
        environ["gunicorn.socket"].sendall(b"HTTP/1.1 101 Switching Protocols\r\n"
                                           b"Upgrade: echo\r\nConnection: Upgrade\r\n\r\nhi")
        raise StopIteration  # Flask-Sock's way out of a gunicorn request

    errors = io.StringIO()
    labkit.get_hub().exception_stream = errors
    server = serve(app)
    reply = raw_exchange(server, UPGRADE_REQUEST)
    assert reply == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                     b"Connection: Upgrade\r\n\r\nhi")
    assert errors.getvalue() == ""


def test_101_and_upgrade_are_refused_for_a_request_without_upgrade(serve):
    def app(environ, start_response):
        start_response("101 Switching Protocols", [("Upgrade", "echo")])
        return []

    errors = io.StringIO()
    labkit.get_hub().exception_stream = errors
    server = serve(app)
    reply = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(reply) == 500 and "101 Switching Protocols answers only" in errors.getvalue()
    assert "gunicorn.socket" not in json.loads(
        raw_exchange(serve(show_environ), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .partition(b"\r\n\r\n")[2])


def test_a_newline_in_the_status_or_a_header_is_refused_by_start_response(serve):
    errors = []

    def app(environ, start_response):
        status, headers = {
            "/status": ("200 OK\r\nSet-Cookie: evil=1", []),
            "/name": ("200 OK", [("X-A\r\nSet-Cookie", "evil=1")]),
            "/value": ("200 OK", [("X-A", "a\r\nSet-Cookie: evil=1")]),
        }[environ["PATH_INFO"]]
        try:
            start_response(status, headers)
        except ValueError as exc:
            errors.append(str(exc))
            start_response("400 Bad Request", [])
        return [b""]

    server = serve(app)
    for path in ("/status", "/name", "/value"):
        reply = raw_exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             % path.encode())
        assert status_of(reply) == 400 and b"evil" not in reply
    assert errors == ["carriage return or newline in status",
                      "carriage return or newline in header name",
                      "carriage return or newline in header value"]


def test_an_empty_write_sends_no_chunk(serve):
    # a zero-size chunk is the end of a chunked body: write(b"") must not send one
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"")
        write(b"hello")
        write(b"")
        return [b" world"]

    server = serve(app)
    reply = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.partition(b"\r\n\r\n")[2] == b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


# -- asleep: an idle keep-alive connection without a greenlet ------------------------

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def wait_for(condition, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        labkit.sleep(0.01)
    raise AssertionError("condition not met in time")


def asleep_connections(server):
    return [c for c in server.connections if c.asleep]


def test_idle_keepalive_connection_falls_asleep_without_a_greenlet_and_wakes(serve):
    server = serve(echo, sleep_after=0.05)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(GET)
        port = status_and_port(sock)
        wait_for(lambda: len(asleep_connections(server)) == 1)
        assert len(server.pool) == 0  # no handler greenlet while it waits
        (connection,) = server.connections
        assert connection.parser is None and connection.greenlet is None
        for _ in range(3):  # woken each time by the next request, same TCP connection
            sock.sendall(GET)
            assert status_and_port(sock) == port
            wait_for(lambda: len(asleep_connections(server)) == 1)
        # pipelined requests after a wake are all answered, in order
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        replies = b""
        while replies.count(b"X-Path") < 2:
            replies += sock.recv(65536)
        assert replies.index(b"X-Path: /a") < replies.index(b"X-Path: /b")
    wait_until_no_connections(server)  # the client's close woke and ended it


def status_and_port(sock) -> str:
    reply = sock.recv(65536)
    assert status_of(reply) == 200
    return re.search(rb"X-Remote-Port: (\d+)", reply).group(1)


def test_sleep_after_zero_sleeps_between_every_two_requests(serve):
    server = serve(hello, sleep_after=0)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        for _ in range(20):
            sock.sendall(GET)
            assert status_of(sock.recv(65536)) == 200
            wait_for(lambda: len(server.pool) == 0)
            assert len(asleep_connections(server)) == 1
    wait_until_no_connections(server)


def test_asleep_connection_is_closed_by_keepalive_timeout_and_by_stop(serve):
    server = serve(hello, sleep_after=0, keepalive_timeout=0.3)
    fds_before = len(os.listdir("/proc/self/fd"))
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(GET)
        assert status_of(sock.recv(65536)) == 200
        assert sock.recv(65536) == b""  # closed quietly after 0.3 s idle, asleep
    wait_until_no_connections(server)
    other = serve(hello, sleep_after=0)
    idle = socket.create_connection(("127.0.0.1", other.server_port), timeout=5)
    idle.sendall(GET)
    assert status_of(idle.recv(65536)) == 200
    wait_for(lambda: len(asleep_connections(other)) == 1)
    other.stop(timeout=5)
    assert idle.recv(100) == b"" and not other.connections
    idle.close()
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_a_server_that_overrides_handle_keeps_a_greenlet_per_connection(serve):
    class Custom(WSGIServer):
        def handle(self, sock, address):
            return super().handle(sock, address)

    server = Custom(("127.0.0.1", 0), hello, sleep_after=0)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
            sock.sendall(GET)
            assert status_of(sock.recv(65536)) == 200
            labkit.sleep(0.1)
            assert len(server.pool) == 1 and not asleep_connections(server)
    finally:
        server.stop(timeout=1)


@pytest.mark.parametrize("value, error", [("1", TypeError), (True, TypeError),
                                          (-1.0, ValueError), (float("nan"), ValueError)])
def test_bad_sleep_after_is_refused_by_name(value, error):
    with pytest.raises(error, match="sleep_after"):
        WSGIServer(("127.0.0.1", 0), hello, sleep_after=value)


def test_tls_keepalive_connection_sleeps_and_wakes_between_requests(serve):
    trustme = pytest.importorskip("trustme")
    from labkit import ssl
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_context)
    server = serve(hello, sleep_after=0, ssl_context=server_context)
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as raw, \
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        for _ in range(5):
            sock.sendall(GET)
            assert status_of(sock.recv(65536)) == 200
            wait_for(lambda: len(asleep_connections(server)) == 1 and len(server.pool) == 0)
    wait_until_no_connections(server)
