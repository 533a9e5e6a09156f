"""HTTP/1.1 on the wire, for labkit.wsgi: requests in (httptools), responses out.

This module knows bytes and HTTP, not sockets, greenlets or WSGI:

- :class:`RequestParser` is fed the bytes a connection receives and turns
  them into :class:`Request` objects. The parsing itself is llhttp (Node.js's
  parser, through ``httptools``): a hand-written parser is where request
  smuggling bugs live. What this class adds is the server's *limits*.
- :class:`RequestBody` is the file-like body a WSGI app reads (``wsgi.input``).
- :func:`response_head` decides how a response is framed (Content-Length,
  chunked, or ended by closing) and renders its head as one ``bytes``, so
  that the caller can send head and a small body in a single ``send``.
- :func:`error_response` is the complete reply to a refused request.

How bytes become requests (pipelining included)::

    feed(data) --> llhttp --> on_message_begin     new Request, header budget starts
                              on_url / on_header    counted against max_header_size
                              on_headers_complete   Request appended to .requests
                              on_body               chunk appended to Request.body
                              on_message_complete   Request.complete = True
                         (repeat: one feed may hold several requests)

The contract:

- ``feed`` never raises for bad input. A request the server must refuse sets
  ``parser.error`` to an :class:`HTTPError` (400, 413, 431) and the parser
  accepts nothing more; requests completed *before* the bad one stay in
  ``.requests``, so that a pipelining client gets its earlier answers first.
- Header bytes are counted in the callbacks (exact) and, as a backstop
  against a header line that never ends (llhttp buffers it internally, and
  calls us only at its end), per ``feed`` while headers are incomplete: the
  memory one connection can make us hold is bounded by about
  ``max_header_size`` + one receive buffer.
- Limits inside the head budget, after gunicorn's defaults: a request line
  longer than ``max_request_line`` is refused with 414, a field line longer
  than ``max_field_size`` or more than ``max_fields`` fields with 431.
- What llhttp lets through and a server must still refuse (RFC 9110/9112):
  HTTP versions other than 1.0 and 1.1 (505); a request target
  that is not origin-form (``/path``), absolute-form (``http(s)://host/...``),
  ``*`` for OPTIONS or authority-form for CONNECT (400); Transfer-Encoding on
  HTTP/1.0 (400: a 1.0 peer or proxy may frame the body differently), and
  a transfer coding other than plain ``chunked`` (501).
- HTTP/1.1 without Host, two Host fields, or a repeat of another
  single-valued field are refused (400) by the caller, where it joins
  repeated fields: :func:`check_repeated_field`, :data:`SINGLE_VALUED`.
- Field values lose trailing spaces and tabs (llhttp drops leading ones);
  a ``#fragment`` is cut from the target (clients must not send one).
- Trailer fields (after a chunked body) are counted against the head budget
  and dropped: they must never reach the application as request headers
  (a proxy checked only the head).
- A declared Content-Length above ``max_body_size`` is refused (413) as soon
  as the headers are complete, before the body is sent (that is what
  ``Expect: 100-continue`` is for); a chunked body is counted as it
  arrives, and a chunk-size line declaring more than the body may still
  hold is refused (413) as soon as that line is parsed, before any of the
  chunk's data is read (see :meth:`RequestParser.feed`).
- Upgrade and CONNECT requests are parsed as ordinary requests; the bytes
  after them belong to another protocol, so ``.upgraded`` tells the caller to
  close the connection after answering.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from types import SimpleNamespace
from typing import NamedTuple

import httptools

from labkit._lk_http_py import HeadFields

__all__ = ["HTTPError", "Request", "RequestBody", "RequestParser", "ResponseHead",
           "ResponseFields", "SINGLE_VALUED", "check_repeated_field",
           "response_fields", "response_head", "error_response", "http_date"]


class HTTPError(Exception):
    """A request the server refuses with ``status`` and then closes the connection."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


class Request:
    """One parsed request head, and its body as it arrives.

    ``headers`` is the list of (name, value) byte pairs as received. ``body``
    holds the byte chunks not yet consumed, oldest first (a deque once a
    chunk arrived; an empty tuple before); ``complete`` turns True when the
    last byte of the body has been parsed (at once for a bodiless request).

    The defaults are class attributes and the parser sets only what differs
    (``headers`` always): a request is made per message, and a Python
    ``__init__`` would cost a frame for each.
    """

    url = b""
    body = ()                   # chunks not yet consumed: () until the first one
    body_size = 0               # body bytes parsed so far
    complete = False
    discard_body = False        # set once the response is sent: drop chunks
    content_length = None
    chunked = False
    expect_continue = False
    error = None                # the HTTPError that cut this request's body short
    method = version = None
    keep_alive = upgrade = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url!r} HTTP/{self.version}>"


class RequestParser:
    """Bytes in, :class:`Request` objects out, for one connection.

    ``requests`` holds the requests whose head is complete and that the
    connection has not taken yet, oldest first. ``current`` is the request
    llhttp is parsing now (its head or its body), or None between requests.
    ``started_at`` is the monotonic time the first byte of an incomplete head
    arrived (None when no head is in progress): the header timeout runs from it.

    llhttp's target and field callbacks are C: ``self._head``, a HeadFields
    (loop_c/lk_http_py.c), is called for the target and once per field
    line, where in Python those callbacks cost more than the rest of a
    small request's parse. It keeps the head budget (``head_bytes``), the
    target (``url``), appends each field of a head to ``fields`` (the
    current request's ``headers``; None outside a head, where trailer
    fields are only counted), and sets ``framing`` for a field
    :meth:`on_headers_complete` must read; over a limit it calls
    :func:`_refuse`.
    """

    def __init__(self, max_header_size: int, max_body_size: int | None,
                 max_request_line: int = 4094, max_field_size: int = 8190,
                 max_fields: int = 100):
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.max_request_line = max_request_line
        self.max_field_size = max_field_size
        self.max_fields = max_fields
        self.requests: deque[Request] = deque()
        self.current: Request | None = None
        self.in_head = False            # between message begin and headers complete
        self.started_at: float | None = None
        self.error: HTTPError | None = None
        self.upgraded = False
        # The target and field callbacks and the head budget (see the class docstring)
        self._head = HeadFields(_c_limit(max_header_size), _c_limit(max_field_size),
                                _c_limit(max_request_line), _refuse)
        self._unparsed_head_feed = 0    # the backstop, counted per feed
        self._in_trailers = False       # after a chunk header, before its data
        self._last_request = None       # the last request whose head completed
        # Where llhttp is in the byte stream, so that feed() can hand it the
        # stream in pieces that end where a chunk-size line ends (see feed).
        self._stage = _HEAD             # _HEAD, _BODY, _CHUNK_LINE or _CHUNK_DATA
        self._left = 0                  # _BODY/_CHUNK_DATA: bytes of it still to come
        self._head_tail = b""           # _HEAD: the last bytes of a head cut by a feed
        self._line = b""                # _CHUNK_LINE: the line so far (its start)
        self._line_size = 0             # _CHUNK_LINE: its length so far
        self._trailers = False          # _CHUNK_LINE: past the last chunk
        self._chunk_header = False      # set by on_chunk_header
        self._chunked_head = False      # set by on_headers_complete for a chunked request
        # What feed() is parsing from a message boundary, until the first
        # head in it completes (see on_headers_complete), else None.
        self._first_data: bytes | None = None
        # llhttp's callbacks: ours, and the C ones for the target and the
        # fields (httptools looks each up once, here, on the object it is given)
        self._llhttp = httptools.HttpRequestParser(SimpleNamespace(
            on_message_begin=self.on_message_begin, on_url=self._head.on_url,
            on_header=self._head.on_header, on_headers_complete=self.on_headers_complete,
            on_body=self.on_body, on_message_complete=self.on_message_complete,
            on_chunk_header=self.on_chunk_header))

    @property
    def done(self) -> bool:
        """True when no more requests can come from this connection."""
        return self.error is not None or self.upgraded

    def release(self) -> None:
        """Let llhttp go; call when the parser is dropped, and feed it no more.

        llhttp holds this parser's bound methods as its callbacks, so the
        two make a reference cycle: without this, a dropped parser (a
        closed connection's, one that fell asleep, a shadow) waits for the
        cyclic collector, with its llhttp buffers -- ~1 KiB of a sleeping
        connection's memory, and garbage for every connection a server
        closes. The requests already parsed stay readable.
        """
        self._llhttp = None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; see the module docstring for what it may set.

        llhttp frames the stream; it does not tell its callbacks a chunk's
        declared size. So that a chunk-size line can be checked against the
        body limit before its data is read, ``data`` goes to llhttp in
        pieces: a head ends a piece, a Content-Length body or a chunk's data
        is one piece of the length llhttp will take for it, and in between a
        chunked body goes a line at a time. When ``on_chunk_header`` fires
        during a line, that line was the chunk-size line, and its hex digits
        are the size. Cutting the input into pieces never changes what
        llhttp parses; this reading of the size only ever refuses (413), so
        a mistake in it could never let a smuggled request through.

        The common read -- heads, from a message boundary -- is one piece,
        with nothing to search. If a chunked request began in it, the read
        is parsed again in pieces by a parser of our own (:meth:`_replay`);
        for a Content-Length body, what is left of it is known exactly.
        """
        if self._stage is not _HEAD or self.in_head:  # in a body, or a head cut by a read
            return self._feed_in_pieces(data)
        # At a message boundary (the common case): one llhttp call for all of
        # it. If a request with a body began in it, find out where llhttp is.
        if self.error is not None or self.upgraded:
            return
        self._chunked_head = False
        self._first_data = data  # (see on_headers_complete)
        try:  # (self._feed(data), inline: a frame less on every request)
            self._llhttp.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(exc)
        self._first_data = None
        if self.in_head or self._in_trailers or self.error is not None:
            self._fed_unfinished(len(data))
        if self._chunked_head:
            if not self.done:
                self._replay(data)
        elif self._stage is _BODY:
            request = self.current
            self._left = request.content_length - request.body_size
        elif self.in_head:
            self._head_tail = data[-3:]  # the next read may finish this head's blank line

    def _replay(self, data: bytes) -> None:
        """A chunked request began in ``data``, which llhttp took in one
        piece from a message boundary: parse the same bytes again, in
        pieces, with a parser of our own, to check the chunk sizes in them
        and to learn where in the chunked body llhttp now is. (Rare: only
        the read that holds a chunked request's head pays for it.)"""
        shadow = RequestParser(self.max_header_size, self.max_body_size,
                               self.max_request_line, self.max_field_size, self.max_fields)
        shadow._feed_in_pieces(data)
        shadow.release()
        if shadow.error is not None:
            # A refused chunk-size line (llhttp itself accepted them all). The
            # shadow's requests are the last ones llhttp gave us, in order:
            # the refused one gets the error, the ones after it are dropped.
            self.error = shadow.error
            begun = len(shadow.requests)
            refused = begun - 1 - shadow.requests.index(shadow.current) \
                if shadow.current in shadow.requests else 0
            for _ in range(refused):
                self.requests.pop()
            if self.requests:
                self.requests[-1].error = self.error
            if self.current is not None:
                self.current.error = self.error
            return
        self._stage, self._left, self._head_tail = shadow._stage, shadow._left, shadow._head_tail
        self._line, self._line_size, self._trailers = (shadow._line, shadow._line_size,
                                                       shadow._trailers)

    def _feed_in_pieces(self, data: bytes) -> None:
        """feed() for anything but heads that end with ``data``."""
        while data and not self.done:
            stage = self._stage
            if stage is _HEAD:
                end = self._head_end(data)
                end = len(data) if end < 0 else end
            elif stage is _CHUNK_LINE:
                end = data.find(b"\n") + 1 or len(data)
            else:  # a body or a chunk's data: exactly the bytes llhttp takes for it
                end = min(self._left, len(data))
                self._left -= end
            piece, data = data[:end], data[end:]
            if stage is _CHUNK_LINE:
                if len(self._line) < 64:  # the size is at the start of the line
                    self._line += piece[:64]
                self._line_size += len(piece)
                if self._line_size > self.max_field_size and not self._trailers:
                    # chunk extensions that never end: bound them as a field
                    self.error = HTTPError(400, f"chunk-size line longer than "
                                                f"{self.max_field_size} bytes")
                    if self.current is not None:
                        self.current.error = self.error
                    return
                self._chunk_header = False
                self._feed(piece)
                if self._chunk_header and not self.done:
                    self._check_chunk_size(self._line)
                if piece[-1:] == b"\n":
                    self._line, self._line_size = b"", 0
            else:
                self._feed(piece)
                if stage is _HEAD and self._stage is _HEAD:
                    self._head_tail = piece[-3:] if piece[-4:] != b"\r\n\r\n" else b""
                elif stage is _CHUNK_DATA and not self._left and self._stage is _CHUNK_DATA:
                    self._stage = _CHUNK_LINE  # the CRLF after the data, then a size line

    def wanted(self) -> int | None:
        """How many bytes the parser can take now without reading past the
        end of the message in progress: a count (0: the message ended), or
        None: one line (a chunk-size line or a trailer), or a head.
        For a caller that reads from a stream shared with what follows
        (labkit.pywsgi.Input)."""
        if self._stage is _BODY or self._stage is _CHUNK_DATA:
            return self._left
        if self._stage is _HEAD and self.current is None:
            return 0
        return None

    def _head_end(self, data: bytes) -> int:
        """Where in ``data`` the head in progress ends (past its blank
        line), or -1 if it does not end in ``data``."""
        tail = self._head_tail
        if tail:
            self._head_tail = b""
            end = (tail + data[:3]).find(b"\r\n\r\n")
            if end >= 0:
                return end + 4 - len(tail)
        end = data.find(b"\r\n\r\n")
        return end + 4 if end >= 0 else -1

    def _check_chunk_size(self, line: bytes) -> None:
        """``line`` (its start) is the chunk-size line llhttp just accepted."""
        digits = len(line) - len(line.lstrip(b"0123456789abcdefABCDEF"))
        if not digits:
            return  # not what we expected to read: llhttp's framing stands
        size = int(line[:digits], 16)
        request = self.current
        limit = self.max_body_size
        if limit is not None and request is not None and request.body_size + size > limit:
            self.error = request.error = HTTPError(
                413, f"a chunk of {size} bytes declared: request body larger than "
                     f"{limit} bytes")
            return
        if size:
            self._stage, self._left = _CHUNK_DATA, size
        else:
            self._trailers = True  # the last chunk: trailer lines (or the end) follow

    def _feed(self, data: bytes) -> None:
        """One llhttp call; what it may set is in the module docstring.
        (feed's common path has a copy of these lines.)"""
        if self.error is not None or self.upgraded:
            return
        try:
            self._llhttp.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_failed(exc)
        if self.in_head or self._in_trailers or self.error is not None:
            self._fed_unfinished(len(data))

    def _parse_failed(self, exc: Exception) -> None:
        """llhttp raised ``exc`` from a feed: an upgrade, or a refusal."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            # llhttp stops parsing after the head of an Upgrade or CONNECT
            # request: the bytes after it belong to another protocol.
            self.upgraded = True
            self._last_request.upgrade = True
        elif isinstance(exc, httptools.HttpParserCallbackError):
            error = exc.__context__
            self.error = error if isinstance(error, HTTPError) else HTTPError(400, str(exc))
        else:
            self.error = HTTPError(400, str(exc) or "malformed request")

    def _fed_unfinished(self, size: int) -> None:
        """After a feed of ``size`` bytes that left a head (or trailers)
        unfinished, or failed: the head's clock and the backstop count."""
        if (self.in_head or self._in_trailers) and self.error is None:
            if self.in_head and self.started_at is None:
                # (here and not in on_message_begin: a head that arrives
                # whole, the common case, never reads the clock)
                self.started_at = time.monotonic()
            self._unparsed_head_feed += size
            if self._unparsed_head_feed > self.max_header_size + 65536:
                self.error = HTTPError(431, "request header fields too large")
        if self.error is not None and self.current is not None:
            # The request being parsed will never complete; whoever reads
            # its body must learn that instead of waiting for more.
            self.current.error = self.error

    # -- llhttp callbacks (called during feed) -----------------------------
    def on_message_begin(self) -> None:
        self.current = request = Request()
        request.headers = fields = []
        self._head.begin(fields)  # (on_header appends to fields)
        # (set, not left to the class defaults: every request reads these,
        # and Python 3.11 reads an instance's own attributes much faster)
        request.content_length = request.error = None
        request.chunked = request.expect_continue = False
        self.in_head = True  # (started_at is set by the feed, if the head is cut)
        self._unparsed_head_feed = 0
        self._in_trailers = False

    # on_url(piece) and on_header(name, value) are self._head's (C).
    # on_url counts the target against the head budget and the request
    # line's limit, and appends it to head.url (llhttp may deliver it in
    # pieces, one per feed it spans). on_header counts the field line
    # against the limits, and keeps (name, value without trailing spaces
    # and tabs) in the head; a trailer field (after a chunked body) is
    # counted, then dropped. The field count is checked once, in
    # on_headers_complete: until then the head budget bounds how many
    # fields we hold.

    def on_chunk_header(self) -> None:
        # Either a chunk's data or (after the last chunk) trailers follow;
        # on_body tells which. Until then the feed backstop counts bytes.
        self._in_trailers = True
        self._chunk_header = True  # feed() reads the size from the line

    def on_headers_complete(self) -> None:
        request = self.current
        head = self._head
        request.url = url = head.end()  # (a field after it is a trailer: counted, not kept)
        llhttp = self._llhttp
        method = llhttp.get_method()
        request.method = _METHODS.get(method) or method.decode("ascii")
        data = self._first_data
        if data is None:
            version = llhttp.get_http_version()
        else:
            # The first head of a feed that began at a message boundary: its
            # request line starts the data (after the CRLFs llhttp skips
            # between messages, if any). llhttp is strict (one space after
            # the method and after the target, and CRLF right after the
            # version), so if there are no such CRLFs the version is at a
            # known place; if there are, the window below is shifted into
            # the version itself and cannot match. llhttp's own
            # get_http_version() formats a str: as costly as a tenth of
            # the parse.
            self._first_data = None
            at = len(method) + len(url) + 1
            version = "1.1" if data[at:at + 11] == b" HTTP/1.1\r\n" \
                else llhttp.get_http_version()
        request.version = version
        request.keep_alive = llhttp.should_keep_alive()
        request.upgrade = llhttp.should_upgrade()
        if len(request.headers) > self.max_fields:
            raise HTTPError(431, f"more than {self.max_fields} header fields")
        for name, value in request.headers if head.framing else ():
            lname = name.lower()
            if lname not in _FRAMING_FIELDS:  # most fields: one set look-up
                continue
            if lname == b"content-length":
                request.content_length = int(value)  # llhttp checked the digits
            elif lname == b"transfer-encoding":
                if version == "1.0":
                    raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
                if value.lower() != b"chunked":  # gzip, chunked: the app could not tell
                    raise HTTPError(501, "only Transfer-Encoding: chunked is supported")
                request.chunked = True
            elif lname == b"expect":
                if value.lower() != b"100-continue":
                    raise HTTPError(417, "only Expect: 100-continue is supported")
                request.expect_continue = version == "1.1"
        if version != "1.1" and version != "1.0":
            raise HTTPError(505, f"HTTP/{version} is not supported")
        if url[0] != _SLASH:
            _check_target(url, request.method)
        if _HASH in url:  # (an int: ``bytes in bytes`` costs 5x more)
            request.url = url.partition(b"#")[0]
        limit = self.max_body_size
        if limit is not None and request.content_length is not None \
                and request.content_length > limit:
            raise HTTPError(413, f"request body larger than {limit} bytes")
        self.in_head = False
        self.started_at = None
        self._last_request = request
        self.requests.append(request)
        if request.chunked:
            self._stage, self._line, self._line_size = _CHUNK_LINE, b"", 0
            self._trailers = False
            self._chunked_head = True  # see feed
        elif request.content_length:
            self._stage, self._left = _BODY, request.content_length

    def on_body(self, chunk: bytes) -> None:
        self._in_trailers = False
        self._unparsed_head_feed = 0
        request = self.current
        request.body_size += len(chunk)
        limit = self.max_body_size
        if limit is not None and request.body_size > limit:
            raise HTTPError(413, f"request body larger than {limit} bytes")
        if not request.discard_body:
            body = request.body
            if body.__class__ is tuple:  # the first chunk
                request.body = body = deque()
            body.append(chunk)

    def on_message_complete(self) -> None:
        self._stage = _HEAD
        self._in_trailers = False
        self.current.complete = True
        self.current = None


def _c_limit(value: int) -> int:
    """A size limit as HeadFields keeps it (a C integer): an int above
    sys.maxsize is no limit, and becomes sys.maxsize."""
    return value if value <= sys.maxsize else sys.maxsize


def _refuse(head: HeadFields, kind: str, size: int) -> None:
    """HeadFields's refusal, when a piece of the head (counted in
    ``head.head_bytes`` already) is over a limit. Raises HTTPError.

    ``kind`` "field": a field line of ``size`` bytes; "url": the request
    target, ``size`` bytes so far.
    """
    if kind == "field" and size > head.max_field_size:
        raise HTTPError(431, f"header field longer than {head.max_field_size} bytes")
    if head.head_bytes > head.max_header_size:
        raise HTTPError(431, "request header fields too large")
    if kind == "url":
        raise HTTPError(414, f"request line longer than {head.max_request_line} bytes")
    raise AssertionError(f"HeadFields refused a {kind} of {size} bytes within the limits")


_SLASH, _HASH = ord("/"), ord("#")
#: the request fields on_headers_complete reads for the framing
_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"expect"))
#: the usual methods' names as str, decoded once (llhttp gives bytes)
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                     "PATCH", "CONNECT", "TRACE")}

# Where llhttp is in the stream, for RequestParser.feed (compared by identity)
_HEAD, _BODY, _CHUNK_LINE, _CHUNK_DATA = "head", "body", "chunk-size line", "chunk data"

#: Fields a request may carry once, as environ keys: a second Host or
#: Content-Type could be read differently by a proxy in front and by the
#: application (joined, first or last wins), which is how routing and checks
#: are bypassed. Checked where repeated fields are joined (see
#: :func:`check_repeated_field`), so that the common request pays nothing.
SINGLE_VALUED = frozenset(("HTTP_HOST", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_AUTHORIZATION",
                           "HTTP_PROXY_AUTHORIZATION", "HTTP_RANGE"))


def check_repeated_field(key: str, name: bytes) -> None:
    """Called when field ``name`` (environ ``key``) occurs again in a head:
    refuse it (400) if it is single-valued."""
    if key in SINGLE_VALUED:
        raise HTTPError(400, f"repeated {name.decode('latin-1')} field")


def _check_target(url: bytes, method: str) -> None:
    """Refuse a request target that is not origin-form (checked by the caller)."""
    if url == b"*":
        if method == "OPTIONS":
            return
    elif method == "CONNECT":
        return  # authority-form (host:port); llhttp checked its characters
    else:
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            parsed = None
        if parsed is not None and parsed.schema in (b"http", b"https") and parsed.host \
                and (parsed.path or b"/")[:1] == b"/":
            return
    raise HTTPError(400, "malformed request target")


class RequestBody:
    """A request's body as a read-only file (``wsgi.input``).

    Chunks come from ``request.body``; when it is empty and the body is not
    complete, ``receive(request)`` is called to receive and parse more (it
    parks the greenlet, and raises if the client is too slow or gone). A
    body that was cut short raises its HTTPError instead of ending quietly.

    The server makes one per request without calling ``__init__`` (a frame
    less): it sets ``_request`` and ``_receive`` and nothing else, so every
    other attribute's default is a class attribute.
    """

    _buffer = b""  # read but not yet returned

    def __init__(self, request: Request, receive):
        self._request = request
        self._receive = receive

    def _next_chunk(self) -> bytes:
        """The next chunk of the body, b"" at its end."""
        request = self._request
        while not request.body:  # (read each time: the first chunk makes a deque)
            if request.error is not None:
                raise request.error
            if request.complete:
                return b""
            self._receive(request)
        return request.body.popleft()

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buffer]
            while chunk := self._next_chunk():
                parts.append(chunk)
            self._buffer = b""
            return b"".join(parts)
        if len(self._buffer) < size:
            buffer = bytearray(self._buffer)
            while len(buffer) < size:
                chunk = self._next_chunk()
                if not chunk:
                    break
                buffer += chunk
            self._buffer = bytes(buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else sys.maxsize
        buffer = self._buffer
        start = 0
        while True:
            end = buffer.find(b"\n", start, limit)
            if end >= 0:
                end += 1
                break
            if len(buffer) >= limit:
                end = limit
                break
            start = len(buffer)
            chunk = self._next_chunk()
            if not chunk:
                end = len(buffer)
                break
            buffer += chunk
        line, self._buffer = buffer[:end], buffer[end:]
        return line

    def readlines(self, hint: int = -1) -> list:
        lines, total = [], 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        while line := self.readline():
            yield line


# -- responses ------------------------------------------------------------------

_date_cache = [0, "", b""]


def http_date() -> str:
    """The current time as an HTTP Date value, recomputed once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
        _date_cache[2] = b"Date: " + _date_cache[1].encode("latin-1") + b"\r\n"
    return _date_cache[1]


class ResponseHead(NamedTuple):
    """A rendered response head and the framing decisions it announces.
    (A tuple, so that the server unpacks it in one step.)"""

    data: bytes                 # status line + headers + blank line
    content_length: int | None  # body bytes to send, None if not counted
    chunked: bool               # body goes out in chunked frames
    bodiless: bool              # no body may follow (HEAD, 1xx, 204, 304)
    keep_alive: bool            # the connection stays open afterwards


_new_head = tuple.__new__  # ResponseHead(...) without its Python __new__

# Fields that belong to the connection, which the server manages; an
# application that sets them would corrupt the framing.
_HOP_BY_HOP = frozenset(("transfer-encoding", "upgrade", "keep-alive"))


class ResponseFields:
    """An application's status and fields, checked and rendered: what
    :func:`response_fields` returns and :func:`response_head` takes.

    ``data`` is the status line and the fields as bytes; ``content_length``
    the application's Content-Length (None if it set none), ``close`` its
    ``Connection: close``, ``has_date`` whether it set Date. ``heads``
    remembers the heads rendered from it (see response_head).
    """

    __slots__ = ("status", "data", "content_length", "close", "has_date", "heads")


def _render_fields(status: str, headers) -> ResponseFields:
    """Check ``status`` and ``headers`` (ValueError) and render them."""
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit():
        raise ValueError(f"status must be a str like '200 OK', not {status!r}")
    if "\n" in status or "\r" in status:  # the reply's head would be the app's to write
        raise ValueError("carriage return or newline in status")
    lines = ["HTTP/1.1 ", status, "\r\n"]
    content_length = None
    close = has_date = False
    for name, value in headers:
        if "\n" in name or "\r" in name:
            raise ValueError("carriage return or newline in header name")
        if "\n" in value or "\r" in value:
            raise ValueError("carriage return or newline in header value")
        lname = name.lower()
        if lname in _HOP_BY_HOP and not (lname == "upgrade" and status.startswith("101")):
            raise ValueError(f"hop-by-hop header {name!r}: the server frames responses")
        lines += (name, ": ", value, "\r\n")
        if lname == "content-length":
            content_length = int(value)
        elif lname == "connection":
            if value.lower() == "close":
                close = True
        elif lname == "date":
            has_date = True
    fields = ResponseFields()
    fields.status = status
    fields.data = "".join(lines).encode("latin-1")
    fields.content_length, fields.close, fields.has_date = content_length, close, has_date
    fields.heads = {}
    return fields


#: (status, fields as a tuple) -> their ResponseFields. An application
#: answers with the same status and fields (a framework's constant list)
#: far more often than not: checking and rendering them once saves most of a
#: small response's head. Only tuples of exact str pairs go in (a str
#: subclass could compare equal and render differently), so equal keys
#: render to equal bytes; the cache is emptied when full, so that fields
#: that change with every response (cookies, ETags) cost one failed look-up
#: and no memory.
_fields_cache: dict = {}
_FIELDS_CACHE_MAX = 256
#: heads remembered per ResponseFields (one per version, body length,
#: bodiless, keep-alive: a handful, unless the body length varies)
_HEADS_PER_FIELDS = 16


def response_fields(status: str, headers) -> ResponseFields:
    """Check and render an application's ``status`` and ``headers``
    ((str, str) pairs, read once here: what is checked is what is sent).

    Raises ValueError for what would let the application write the head's
    framing: a malformed status, a CR or LF in a name, value or the status,
    a hop-by-hop field (Transfer-Encoding, Keep-Alive; Upgrade except with
    101). The result is shared between responses with equal status and
    fields: treat it as immutable.
    """
    if headers.__class__ is not tuple:
        try:
            headers = tuple(headers)  # (an iterator is read once, here)
        except TypeError:
            raise TypeError(f"response headers must be an iterable of (name, value) "
                            f"pairs, not {type(headers).__name__}") from None
    key = (status, headers)
    try:
        fields = _fields_cache.get(key)
    except TypeError:  # pairs that cannot be hashed (lists): checked and rendered each time
        return _render_fields(status, headers)
    if fields is None:
        fields = _render_fields(status, headers)
        if type(status) is str and all(
                type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str
                and type(pair[1]) is str for pair in headers):
            if len(_fields_cache) >= _FIELDS_CACHE_MAX:
                _fields_cache.clear()
            _fields_cache[key] = fields
    return fields


def response_head(fields: ResponseFields, version: str, body_length: int | None,
                  bodiless: bool, keep_alive: bool) -> ResponseHead:
    """Render the head of a response to an HTTP/``version`` request.

    ``fields`` (from :func:`response_fields`) are sent as given; the server
    adds Date (if missing) and the framing: the application's
    Content-Length if it set one, else ``body_length`` when the body's size
    is known, else chunked (HTTP/1.1) or close-delimited (HTTP/1.0, which
    turns keep-alive off). ``bodiless``: a HEAD request (1xx, 204 and 304
    are bodiless whatever the request). ``keep_alive``: the connection may
    stay open as far as the caller knows; ``Connection: close`` from the
    application turns it off.

    A head depends on nothing but these arguments and the Date: it is
    remembered per ``fields`` and key, and only its Date line is renewed,
    once a second.
    """
    key = (version, body_length, bodiless, keep_alive)
    heads = fields.heads
    cached = heads.get(key)
    now = int(time.time())
    if cached is not None:
        if cached[0] == now or fields.has_date:
            return cached[1]
    elif len(heads) >= _HEADS_PER_FIELDS:
        heads.clear()
    if now != _date_cache[0]:
        http_date()
    if cached is None:
        cached = _framing(fields, version, body_length, bodiless, keep_alive)
    before, after, head = cached[2], cached[3], cached[1]
    data = before + after if fields.has_date else b"".join((before, _date_cache[2], after))
    head = _new_head(ResponseHead, (data,) + head[1:])
    heads[key] = (now, head, before, after)
    return head


def _framing(fields: ResponseFields, version: str, body_length: int | None,
             bodiless: bool, keep_alive: bool) -> tuple:
    """response_head's decisions: (None, a ResponseHead without its data,
    the bytes before the Date line, the bytes after it)."""
    content_length = fields.content_length
    if fields.close:
        keep_alive = False
    parts = []
    chunked = False
    code = fields.status[:3]
    if code[0] == "1" or code == "204" or code == "304":
        bodiless = True
    elif content_length is None:
        if body_length is not None:
            content_length = body_length
            parts.append(b"Content-Length: %d\r\n" % body_length)
        elif bodiless:
            pass
        elif version == "1.1":
            chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep_alive = False  # HTTP/1.0: the close ends the body
    if bodiless:
        content_length = None  # nothing to count
    if code == "101":
        keep_alive = False  # the connection now speaks the application's protocol,
        # and its Connection: Upgrade is the only Connection field it may carry
    elif not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif version == "1.0":
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    head = _new_head(ResponseHead, (b"", content_length, chunked, bodiless, keep_alive))
    return (None, head, fields.data, b"".join(parts))


def error_response(status: int, detail: str = "") -> bytes:
    """A complete ``Connection: close`` response for a refused request."""
    reason = HTTPStatus(status).phrase
    body = f"{status} {reason}\n{detail}\n".encode("latin-1", "replace")
    return (f"HTTP/1.1 {status} {reason}\r\nDate: {http_date()}\r\n"
            f"Content-Type: text/plain; charset=latin-1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1") + body
