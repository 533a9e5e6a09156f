"""labkit.pywsgi: gevent.pywsgi's names on labkit's WSGI server.

Servers run on the test's hub and are stopped at teardown. gevent's own
test__pywsgi.py and test__server_pywsgi.py are the wider measure
(``python -m labkit.bench.gevent_suite --group http``).
"""
import functools
import io
import logging
import pickle
import time

import pytest

import labkit
from labkit import pywsgi, socket

pytestmark = pytest.mark.timeout(60)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def serve(serve):
    """conftest's serve(), for pywsgi's server class."""
    return functools.partial(serve, server_class=pywsgi.WSGIServer)


def get(server, path="/") -> bytes:
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append((record.levelno, record.getMessage()))


@pytest.fixture
def logger():
    log = logging.getLogger("labkit.tests.pywsgi")
    records = Records()
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, records.records
    log.removeHandler(records)


# -- the server ---------------------------------------------------------------------

def test_a_logger_is_wrapped_and_gets_gevents_access_line_at_info(serve, logger):
    log, records = logger
    server = serve(hello, log=log, error_log=log)
    assert isinstance(server.log, pywsgi.LoggingLogAdapter)
    assert isinstance(server.error_log, pywsgi.LoggingLogAdapter)
    assert get(server).endswith(b"hello")
    labkit.sleep(0.01)
    ((level, line),) = records
    assert level == logging.INFO
    # client - - [date] "request line" status length seconds, no newline
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET / HTTP/1.1" 200 5 ' in line and not line.endswith("\n")
    float(line.rsplit(" ", 1)[1])


def test_log_defaults_to_stderr_and_none_silences_it(serve, capsys):
    server = serve(hello)
    get(server)
    labkit.sleep(0.01)
    assert '"GET / HTTP/1.1" 200 5' in capsys.readouterr().err
    quiet = serve(hello, log=None)
    get(quiet)
    labkit.sleep(0.01)
    assert capsys.readouterr().err == ""


def test_handler_class_is_made_per_connection_with_gevents_arguments(serve):
    made = []

    class Handler(pywsgi.WSGIHandler):
        def __init__(self, sock, address, server):
            made.append((address[0], server))
            super().__init__(sock, address, server)

        def format_request(self):
            return "custom " + self.requestline

    lines = io.StringIO()
    server = serve(hello, handler_class=Handler, log=lines)
    get(server, "/a?b=1")
    labkit.sleep(0.01)
    assert made == [("127.0.0.1", server)]
    assert lines.getvalue() == "custom GET /a?b=1 HTTP/1.1\n"


def test_environ_class_extra_environ_and_base_env(serve):
    seen = {}

    def app(environ, start_response):
        seen.update(type=type(environ), extra=environ.get("x.extra"),
                    gateway=environ.get("GATEWAY_INTERFACE"))
        start_response("200 OK", [])
        return [b""]

    server = serve(app, environ={"x.extra": 42}, log=None)
    server.environ_class = pywsgi.SecureEnviron
    get(server)
    assert seen == {"type": pywsgi.SecureEnviron, "extra": 42, "gateway": "CGI/1.1"}


def test_an_application_error_is_gevents_500_and_is_reported_with_a_masked_environ(serve):
    reported = []
    hub = labkit.get_hub()

    def fail(environ, start_response):
        raise RuntimeError("boom")

    server = serve(fail, log=None)
    original = hub.handle_error
    hub.handle_error = lambda context, *exc_info: reported.append((context, exc_info[1]))
    try:
        reply = get(server)
    finally:
        hub.handle_error = original
    assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert reply.endswith(b"\r\n\r\nInternal Server Error")
    ((context, error),) = reported
    assert isinstance(context, pywsgi.WSGISecureEnviron) and str(error) == "boom"
    assert "HTTP_HOST" in repr(context) and "PATH_INFO" not in repr(context)


def test_no_start_response_and_no_body_closes_without_a_reply(serve):
    server = serve(lambda environ, start_response: [], log=None)
    assert get(server) == b""


# -- the small classes ------------------------------------------------------------------

def test_secure_environ_masks_unless_told():
    environ = pywsgi.SecureEnviron(key="value")
    assert repr(environ).startswith("<pywsgi.SecureEnviron dict (keys: 1) at ")
    environ.whitelist_keys = ("other",)
    assert repr(environ) == repr({"key": "<MASKED>"})
    environ.secure_repr = False
    assert str(environ) == str({"key": "value"})
    wsgi = pywsgi.WSGISecureEnviron(REMOTE_ADDR="::1", HTTP_AUTHORIZATION="secret")
    assert repr(wsgi) == "{'REMOTE_ADDR': '::1', (hidden keys: 1)}"
    assert type(wsgi.copy()) is pywsgi.WSGISecureEnviron
    loaded = pickle.loads(pickle.dumps(wsgi))
    assert type(loaded) is dict and loaded == dict(wsgi)


def test_logging_log_adapter_writes_lines_and_proxies_attributes(logger):
    log, records = logger
    adapter = pywsgi.LoggingLogAdapter(log, logging.WARNING)
    adapter.write("one\n")
    adapter.writelines(["two", "three\n"])
    adapter.flush()
    assert records == [(logging.WARNING, "one"), (logging.WARNING, "two"),
                       (logging.WARNING, "three")]
    adapter.custom = 1
    assert log.custom == 1
    del adapter.custom
    assert not hasattr(log, "custom")


def test_format_date_time_is_an_http_date_in_bytes():
    assert pywsgi.format_date_time(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    assert pywsgi.format_date_time(time.time()).endswith(b" GMT")


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_input_reads_a_body_and_leaves_the_file_at_its_end():
    rfile = io.BytesIO(b"12345NEXT")
    body = pywsgi.Input(rfile, content_length=5)
    assert body.read() == b"12345"
    assert rfile.read() == b"NEXT"

    rfile = io.BytesIO(chunked(b"line one\nline", b" two\n", b"end") + b"NEXT")
    body = pywsgi.Input(rfile, None, chunked_input=True)
    assert list(body) == [b"line one\n", b"line two\n", b"end"]
    assert rfile.read() == b"NEXT"


@pytest.mark.parametrize("data, kwargs", [
    (b"1", {"content_length": 2}),
    (b"1\r\na\r\n", {"content_length": None, "chunked_input": True}),   # no last chunk
    (b"2\r\na", {"content_length": None, "chunked_input": True}),       # short chunk
    (b"zz\r\n", {"content_length": None, "chunked_input": True}),       # not a size
])
def test_input_that_ends_early_or_is_malformed_raises_ioerror(data, kwargs):
    with pytest.raises(IOError):
        pywsgi.Input(io.BytesIO(data), **kwargs).read()


def test_input_refuses_a_negative_length():
    with pytest.raises(ValueError, match="content_length"):
        pywsgi.Input(io.BytesIO(b""), -1)


def test_a_body_or_a_length_for_a_304_is_an_application_error(serve):
    raised = []

    def app(environ, start_response):
        try:
            if environ["PATH_INFO"] == "/length":
                start_response("304 Not Modified", [("Content-Length", "100")])
            else:
                start_response("304 Not Modified", [])("body")
        except AssertionError as exc:
            raised.append(str(exc))
            raise
        return []

    server = serve(app, log=None)
    hub = labkit.get_hub()
    original = hub.handle_error
    hub.handle_error = lambda *args: None   # the two errors are expected
    try:
        assert get(server, "/length").startswith(b"HTTP/1.1 500 ")
        assert get(server, "/body").startswith(b"HTTP/1.1 500 ")
    finally:
        hub.handle_error = original
    assert raised == ["Invalid Content-Length for 304 response: '100' (must be absent or zero)",
                      "The 304 response must have no body"]
