"""The HTTP server's per-field work in C (loop_c/lk_http_py.c): HeadFields,
llhttp's target and field callbacks, and environ_fields, make_environ's
field loop.

Each is also exercised end to end by tests/test_wsgi.py; here the contract
of each function is checked directly, error paths included.
"""
import gc
import os
import shutil
import socket
import subprocess
import sys

import pytest

from labkit._http import HTTPError, RequestParser
from labkit._lk_http_py import HeadFields, environ_fields
from labkit.wsgi import WSGIServer


def refuse_with(seen):
    def refuse(head, kind, size):
        seen.append((head, kind, size))
        raise HTTPError(431, f"refused {kind} {size}")
    return refuse


def test_on_header_keeps_fields_without_trailing_blanks_and_counts_them():
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    head.fields = kept = []
    head.on_header(b"Host", b"example.com \t ")
    head.on_header(b"X-Empty", b"")
    head.on_header(b"X-Inner", b"a \t b")
    assert kept == [(b"Host", b"example.com"), (b"X-Empty", b""), (b"X-Inner", b"a \t b")]
    # each line counts name + value as received, + ": " and CRLF
    assert head.head_bytes == (4 + 14 + 4) + (7 + 0 + 4) + (7 + 5 + 4)
    assert head.framing is False


@pytest.mark.parametrize("name", [b"Content-Length", b"content-length", b"TRANSFER-ENCODING",
                                  b"Transfer-Encoding", b"Expect", b"eXpEcT"])
def test_framing_fields_in_any_case_set_framing(name):
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    head.fields = []
    head.on_header(b"Accept", b"*/*")  # (6 letters, like Expect)
    head.on_header(b"Content-Lengthy", b"1")  # (one longer than Content-Length)
    assert head.framing is False
    head.on_header(name, b"1")
    assert head.framing is True


def test_a_field_after_the_head_is_counted_not_kept():
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    head.fields = None
    head.on_header(b"X-Trailer", b"value")
    assert head.head_bytes == 9 + 5 + 4
    assert head.fields is None


def test_a_field_over_a_limit_calls_refuse_and_its_exception_propagates():
    seen = []
    head = HeadFields(1000, 20, 4094, refuse_with(seen))
    head.fields = kept = []
    with pytest.raises(HTTPError, match="refused field 21"):
        head.on_header(b"X-Long", b"a" * 11)  # 6 + 11 + 4 = 21 > 20
    assert seen == [(head, "field", 21)] and kept == []
    seen.clear()
    head = HeadFields(30, 100, 4094, refuse_with(seen))
    head.fields = kept = []
    head.on_header(b"A", b"1" * 10)  # 15 bytes
    with pytest.raises(HTTPError):
        head.on_header(b"B", b"2" * 11)  # 31 in all > 30
    assert seen == [(head, "field", 16)] and kept == [(b"A", b"1" * 10)]


def test_a_refuse_that_returns_lets_the_field_in():
    head = HeadFields(10, 10, 4094, lambda head, kind, size: None)
    head.fields = kept = []
    head.on_header(b"Name", b"value")
    assert kept == [(b"Name", b"value")]


def test_on_url_joins_the_pieces_and_counts_them():
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    assert head.url == b""
    head.on_url(b"/path")
    head.on_url(b"?q=1")
    assert head.url == b"/path?q=1" and head.head_bytes == 9
    head.url = b""  # (what on_message_begin does for the next request)
    head.on_url(b"/next")
    assert head.url == b"/next" and head.head_bytes == 14


def test_on_url_over_a_limit_calls_refuse_with_the_target_so_far():
    seen = []
    head = HeadFields(1000, 100, 14 + 10, refuse_with(seen))  # targets up to 10 bytes
    head.on_url(b"/" + b"a" * 5)
    with pytest.raises(HTTPError, match="refused url 11"):
        head.on_url(b"b" * 5)
    assert seen == [(head, "url", 11)] and head.url == b"/aaaaa"
    seen.clear()
    head = HeadFields(8, 100, 4094, refuse_with(seen))  # the head budget, not the line
    with pytest.raises(HTTPError):
        head.on_url(b"/" + b"a" * 8)
    assert seen == [(head, "url", 9)]


def test_the_parsers_refusals_name_the_limit():
    def status_of(data, **limits):
        parser = RequestParser(**{"max_header_size": 65536, "max_body_size": None, **limits})
        parser.feed(data)
        return parser.error and (parser.error.status, str(parser.error))

    assert status_of(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", max_request_line=100) \
        == (414, "414 request line longer than 100 bytes")
    assert status_of(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n", max_header_size=50) \
        == (431, "431 request header fields too large")
    assert status_of(b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n", max_field_size=50) \
        == (431, "431 header field longer than 50 bytes")
    assert status_of(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is None


def test_head_fields_refuses_bad_arguments():
    with pytest.raises(TypeError):
        HeadFields("1000", 100, 4094, print)
    with pytest.raises(ValueError, match="max_header_size"):
        HeadFields(0, 100, 4094, print)
    with pytest.raises(ValueError, match="max_request_line"):
        HeadFields(1000, 100, 0, print)
    with pytest.raises(TypeError, match="refuse must be callable"):
        HeadFields(1000, 100, 4094, None)
    head = HeadFields(1000, 100, 4094, print)
    with pytest.raises(TypeError):
        head.on_url("/str")
    with pytest.raises(TypeError):
        head.on_header("str", b"bytes")
    with pytest.raises(TypeError):
        head.on_header(b"one")
    head.fields = ("not", "a list")
    with pytest.raises(TypeError, match="list or None"):
        head.on_header(b"Name", b"value")
    with pytest.raises(AttributeError):
        head.max_field_size = 5  # read-only: the parser's limits are fixed at creation


def test_environ_fields_maps_decodes_drops_and_hands_repeats_over():
    keys = {b"Host": "HTTP_HOST"}
    missed = []

    def new_key(name):
        missed.append(name)
        return "" if b"_" in name else "HTTP_" + name.decode().upper().replace("-", "_")

    def repeated(environ, key, name, value):
        environ[key] += "," + value

    environ = {"REQUEST_METHOD": "GET"}
    fields = [(b"Host", b"example.com"), (b"X-Thing", b"caf\xe9"), (b"X_Sneaky", b"1"),
              (b"X-Thing", b"two")]
    assert environ_fields(environ, fields, keys, new_key, repeated) is None
    assert environ == {"REQUEST_METHOD": "GET", "HTTP_HOST": "example.com",
                       "HTTP_X_THING": "caf\xe9,two"}
    assert missed == [b"X-Thing", b"X_Sneaky", b"X-Thing"]  # (the cache is the caller's)


def test_environ_fields_passes_the_callbacks_exceptions_on():
    def repeated(environ, key, name, value):
        raise HTTPError(400, f"repeated {name.decode()}")

    environ = {}
    with pytest.raises(HTTPError, match="repeated Host"):
        environ_fields(environ, [(b"Host", b"a"), (b"Host", b"b")], {b"Host": "HTTP_HOST"},
                       None, repeated)
    assert environ == {"HTTP_HOST": "a"}

    def new_key(name):
        raise LookupError(name)

    with pytest.raises(LookupError):
        environ_fields({}, [(b"X", b"1")], {}, new_key, repeated)


def test_environ_fields_refuses_bad_arguments():
    ok = ({}, [], {}, str, print)
    assert environ_fields(*ok) is None
    with pytest.raises(TypeError):
        environ_fields({}, [], {})
    with pytest.raises(TypeError, match="must be dicts"):
        environ_fields([], [], {}, str, print)
    with pytest.raises(TypeError, match="pair of bytes"):
        environ_fields({}, [(b"X", "str value")], {b"X": "HTTP_X"}, str, print)
    with pytest.raises(TypeError, match="pair of bytes"):
        environ_fields({}, [(b"X", b"1", b"extra")], {b"X": "HTTP_X"}, str, print)
    with pytest.raises(TypeError, match="not a str"):
        environ_fields({}, [(b"X", b"1")], {b"X": 5}, str, print)


def test_the_parser_counts_url_and_fields_in_one_budget():
    # 431 comes from the head as a whole: the URL's bytes and the fields'.
    parser = RequestParser(max_header_size=200, max_body_size=None)
    url = b"/" + b"u" * 150
    parser.feed(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 40 + b"\r\n\r\n")
    assert parser.error is not None and parser.error.status == 431
    parser = RequestParser(max_header_size=200, max_body_size=None)
    parser.feed(b"GET " + url + b" HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20 + b"\r\n\r\n")
    assert parser.error is None and len(parser.requests) == 1


def test_a_trailer_never_becomes_a_request_field():
    parser = RequestParser(max_header_size=65536, max_body_size=None)
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Trailer: sneaky\r\n\r\n"
                b"GET /next HTTP/1.1\r\nHost: y\r\n\r\n")
    first, second = parser.requests
    assert first.chunked and first.complete and b"".join(first.body) == b"abc"
    assert first.headers == [(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")]
    assert second.headers == [(b"Host", b"y")] and second.content_length is None


@pytest.mark.parametrize("name, value, error", [
    ("max_header_size", "64k", TypeError), ("max_field_size", 8190.0, TypeError),
    ("max_fields", True, TypeError), ("max_request_line", 0, ValueError),
])
def test_wsgi_server_refuses_a_bad_limit_by_name(name, value, error):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        with pytest.raises(error, match=name):
            WSGIServer(listener, lambda environ, start_response: [], **{name: value})


def test_wsgi_server_checks_a_limit_assigned_after_it_was_made_when_it_starts():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        server = WSGIServer(listener, lambda environ, start_response: [])
        server.max_field_size = 8190.0
        with pytest.raises(TypeError, match="max_field_size"):
            server.start()


def test_a_limit_above_sys_maxsize_means_no_limit():
    parser = RequestParser(max_header_size=2 ** 64, max_body_size=None,
                           max_request_line=2 ** 70, max_field_size=sys.maxsize + 1)
    parser.feed(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 20000
                + b"\r\n\r\n")
    assert parser.error is None and len(parser.requests) == 1


def test_head_bytes_saturates_instead_of_overflowing():
    seen = []
    head = HeadFields(sys.maxsize, sys.maxsize, sys.maxsize, refuse_with(seen))
    head.fields = []
    head.head_bytes = sys.maxsize - 2
    head.on_header(b"Name", b"value")  # would pass sys.maxsize: stays there, within the limit
    assert head.head_bytes == sys.maxsize and seen == []
    head.on_url(b"/abc")
    assert head.head_bytes == sys.maxsize and seen == []


def test_on_header_with_the_fields_deleted_refuses_instead_of_dropping_them():
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    head.fields = []
    del head.fields
    with pytest.raises(TypeError, match="list or None"):
        head.on_header(b"Host", b"x")


def test_a_finalizer_that_replaces_the_fields_during_on_header_loses_nothing():
    # Making the (name, value) pair may run the cyclic collector (3.10,
    # 3.11), and a finalizer may then drop the list on_header appends to:
    # on_header holds it across the allocation, so the pair goes into a
    # live list and is freed with it.
    head = HeadFields(1 << 20, 1 << 20, 1 << 20, refuse_with([]))
    ran = []

    class DropsTheFields:
        def __del__(self):
            if ran is not None:
                ran.append(True)
                head.fields = None

    name = b"X-Name-" + bytes([65]) * 10  # (a fresh object: its own refcount)
    before = sys.getrefcount(name)
    threshold = gc.get_threshold()
    gc.disable()
    tuples = [(i, -i) for i in range(3000)]  # empty the 2-tuple free list
    head.fields = [bytes(100) for _ in range(50)]  # a list only head holds
    cycle = DropsTheFields()
    cycle.self = cycle
    del cycle
    gc.enable()
    gc.set_threshold(1)
    try:
        head.on_header(name, b"value")
    finally:
        gc.set_threshold(*threshold)
    del tuples
    gc.collect()
    assert ran  # (the finalizer ran: inside on_header on 3.10/3.11, else here)
    ran = None
    head.fields = None
    assert sys.getrefcount(name) == before  # the pair was freed with its list


LOCALE_CHECK = """
import locale
from labkit._http import RequestParser
assert locale.setlocale(locale.LC_CTYPE).startswith("tr_TR"), locale.setlocale(locale.LC_CTYPE)
head = b"POST / HTTP/1.1\\r\\nHost: x\\r\\nTRANSFER-ENCODING: %s\\r\\n\\r\\n"
parser = RequestParser(max_header_size=65536, max_body_size=None)
parser.feed(head % b"gzip, chunked")
print(parser.error and parser.error.status)
parser = RequestParser(max_header_size=65536, max_body_size=None)
parser.feed(head % b"chunked")
print(parser.requests[0].chunked)
"""


def test_framing_fields_are_found_whatever_the_c_locale(tmp_path):
    # In a Turkish locale, C's case-insensitive comparisons do not take
    # "I" for "i": a TRANSFER-ENCODING field must still be read, as it is
    # what the 501 and HTTP/1.0 checks on the body's framing look at.
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("localedef is not installed")
    subprocess.run([localedef, "-i", "tr_TR", "-f", "UTF-8", str(tmp_path / "tr_TR.UTF-8")],
                   capture_output=True, timeout=120)
    if not (tmp_path / "tr_TR.UTF-8" / "LC_CTYPE").exists():
        pytest.skip("localedef could not build tr_TR.UTF-8 here (no locale sources)")
    env = dict(os.environ, LOCPATH=str(tmp_path), LC_ALL="tr_TR.UTF-8")
    result = subprocess.run([sys.executable, "-c", LOCALE_CHECK], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["501", "True"]


def test_begin_starts_a_head_and_end_closes_it():
    head = HeadFields(1000, 100, 4094, refuse_with([]))
    head.begin(first := [])
    head.on_url(b"/a")
    head.on_header(b"Content-Length", b"0")
    assert head.end() == b"/a" and head.fields is None and head.framing is True
    head.on_header(b"X-Trailer", b"t")  # after end(): counted, not kept
    assert first == [(b"Content-Length", b"0")]
    head.begin(second := [])
    assert (head.url, head.fields, head.framing, head.head_bytes) == (b"", second, False, 0)
    with pytest.raises(TypeError, match="takes a list"):
        head.begin(None)
