"""One WSGI connection: the handler greenlet's requests, in order (for labkit.wsgi).

Private to labkit: :class:`labkit.wsgi.WSGIServer` makes one
:class:`_Connection` per accepted socket and calls :meth:`_Connection.serve`
in the handler greenlet. The life of a connection, and the contract it
keeps, are in :mod:`labkit.wsgi`'s docstring; the parser and the response
head are :mod:`labkit._http`.

Why one send: a response written as two small segments (headers, then
body) meets Nagle's algorithm on the server and delayed ACKs on the client,
and a keep-alive request then waits ~40 ms for an ACK that the client holds
back. Coalescing the two (and TCP_NODELAY, which StreamServer sets) removes
the stall; measured, it is the difference between ~1k and >10k requests/s.
"""
from __future__ import annotations

import _socket as _c_socket
import os
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

import httptools
from greenlet import getcurrent

from labkit import socket as _socket
from labkit._http import (HTTPError, RequestBody, RequestParser, check_repeated_field,
                          error_response, response_fields, response_head)
from labkit import _lk_poll_py
from labkit._lk_http_py import environ_fields as _environ_fields
from labkit._loop import READ as _READ
from labkit._park import throw_parked
from labkit.hub import get_hub, wait_write

if TYPE_CHECKING:
    from labkit.wsgi import WSGIServer

#: bytes asked of one recv
RECV_SIZE = 65536
#: a head and a body up to this size go out in one send (copying is cheaper
#: than a second syscall below it)
COALESCE_LIMIT = 65536
#: unread request body the server will still read and discard after a
#: response to keep the connection; more than this and it closes instead
MAX_DRAIN = 65536
#: a larger send goes out in pieces of this size, each timed against the
#: I/O budget (see _Connection.charge), so that a slow reader is measured
#: as it reads and not only once a large send has ended
SEND_PIECE = 65536

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PERCENT, _SLASH = ord("%"), ord("/")
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
_MSG_MORE = getattr(_socket, "MSG_MORE", 0)
#: send(2) on a labkit socket's fd with MSG_DONTWAIT, keeping the GIL (the
#: C function labkit.socket's own send uses): BlockingIOError where
#: labkit.socket's send would park (see _Connection.sendall)
_send_fd = _lk_poll_py.send
_fileno = _c_socket.socket.fileno
#: an object of a class, without calling its Python __init__ (see make_environ)
_new_object = object.__new__


class ConnectionLost(OSError):
    """The client went away (or stopped reading) while we talked to it.
    Raised into the application by wsgi.input reads and write()."""


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks; the server sends a
    regular file with ``os.sendfile`` instead of iterating it."""

    def __init__(self, filelike, blksize: int = 65536):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            block = read(size)
            if not block:
                return
            yield block



_environ_keys: dict[bytes, str] = {}


def _environ_key(name: bytes) -> str:
    """``b"User-Agent"`` -> ``"HTTP_USER_AGENT"``; "" for a name to drop.

    Names with an underscore are dropped: after the dash-to-underscore
    mapping, ``X_User`` would be indistinguishable from ``X-User``, which a
    proxy in front may have checked or stripped (header spoofing).
    """
    key = _environ_keys.get(name)
    if key is None:
        text = name.decode("latin-1").upper()
        if "_" in text:
            key = ""
        else:
            key = text.replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
        if len(_environ_keys) < 1024:  # clients choose names: bound the cache
            _environ_keys[name] = key
    return key


def _repeated_field(environ: dict, key: str, name: bytes, value: str) -> None:
    """A field whose environ ``key`` is in ``environ`` already: refuse it
    if it must not repeat (HTTPError 400), else join it to the value there
    (with ","; cookies with "; ", as RFC 6265 sends them in one field)."""
    check_repeated_field(key, name)
    environ[key] += ("; " if key.startswith("HTTP_COOKIE") else ",") + value


class _Sleep(BaseException):
    """Thrown by :meth:`_Connection.fall_asleep` into a handler greenlet
    parked in recv for the next request: unwind, and sleep as a read watcher.
    A BaseException, so that no ``except Exception`` on the way swallows it."""


#: what next_request returns when the connection fell asleep (see _Connection)
_ASLEEP = object()


class _Connection:
    """Serves the requests of one client, in order, in a handler greenlet.

    Per-request state (``status`` .. ``body_sent``) is reset by
    :meth:`handle_request`; ``start_response`` and ``write`` are bound
    methods of this object.

    Asleep: a keep-alive connection idle for the server's ``sleep_after``
    seconds gives up its greenlet, which holds most of its memory (its
    saved C stack, the page of its frame stack: ~8 KiB together, against
    ~1 KiB for what is left). :meth:`serve` then returns True: the
    connection waits for its next request as a read watcher of the hub
    (:meth:`_wake`), with no parser (a fresh one is made when it wakes: it
    fell asleep between requests, where a parser holds no state), and the
    server starts a new greenlet on it when the client sends. Only
    :class:`labkit.wsgi.WSGIServer` puts connections to sleep (see its
    ``sleep_after``); a subclass of _Connection run by other code never
    sleeps unless its server says so.
    """

    __slots__ = ("server", "sock", "parser", "remote", "waiting", "idle_since", "expired",
                 "request", "io_budget", "hub", "greenlet", "asleep", "woken", "closed",
                 "timeout_set", "plain_socket", "log_hook",
                 # per request, reset by handle_request:
                 "status", "response_headers", "headers_sent", "chunked", "is_head",
                 "keep_alive", "continue_pending", "content_length", "body_sent")

    def __init__(self, server: WSGIServer, sock, address):
        self.server = server
        self.sock = sock
        self.parser = self.new_parser()
        if isinstance(address, tuple):
            self.remote = (str(address[0]), str(address[1]))
        else:
            self.remote = (str(address or ""), "")
        #: True while parked in recv for a request head (complete or not)
        self.waiting = False
        #: when the connection last became idle (monotonic)
        self.idle_since = 0.0
        #: set by expire(): the wait for a head was cut short on purpose
        self.expired = False
        self.request = None
        #: seconds the current request may still spend waiting on the client
        self.io_budget = server.io_timeout
        #: this connection's hub: its last_poll_ns tells whether a call parked
        self.hub = get_hub()
        #: the greenlet serving us now (None while asleep or not yet served)
        self.greenlet = None
        #: waiting for the next request as a read watcher, without a greenlet
        self.asleep = False
        #: woken from sleep, and not received since (the client sent: read it)
        self.woken = False
        #: the socket was closed by close_asleep
        self.closed = False
        self.status = None
        #: the socket's timeout is the I/O budget, set by the first call of
        #: a request that may park (see _arm); None between requests
        self.timeout_set = False
        #: a labkit socket (not TLS): sendall may try the C send first
        self.plain_socket = type(sock) is _socket.socket
        #: a subclass has its own log(): call it for every request (else
        #: only when the server logs)
        self.log_hook = type(self).log is not _Connection.log
        # The wait for a head has no timeout (the reaper enforces those):
        # not socket.getdefaulttimeout()'s, which an accepted socket gets.
        if sock.gettimeout() is not None:
            sock.settimeout(None)

    def new_parser(self) -> RequestParser:
        server = self.server
        return RequestParser(server.max_header_size, server.max_body_size,
                             server.max_request_line, server.max_field_size,
                             server.max_fields)

    def serve(self) -> bool:
        """Serve requests until the connection is done (False: the caller
        closes it) or falls asleep (True: it lives on without this greenlet;
        see the class docstring). Call in the greenlet that serves it."""
        self.greenlet = getcurrent()
        if self.parser is None:  # woken from sleep
            self.parser = self.new_parser()
        try:
            while True:
                request = self.next_request()
                if request is _ASLEEP:
                    return True
                if request is None or not self.handle_request(request):
                    return False
        finally:
            self.greenlet = None
            if not self.asleep:   # done (the caller closes it): see RequestParser.release
                self.parser.release()

    @property
    def idle(self) -> bool:
        """Waiting for a request, with no byte of it received yet."""
        return self.waiting and (self.asleep or not self.parser.in_head)

    def expire_if_late(self, now: float) -> None:
        """Called by the server's reaper: enforce the head timeouts."""
        if not self.waiting:
            return
        server = self.server
        if not self.asleep and self.parser.in_head:
            late = now - self.parser.started_at > server.header_timeout
        else:
            late = now - self.idle_since > server.keepalive_timeout
        if late:
            self.expire()

    def expire(self) -> None:
        """End the wait for a head: the parked recv returns EOF (an asleep
        connection is closed at once).

        SHUT_RD only: the handler may still send its 408 on the write side.
        """
        self.expired = True
        if self.asleep:
            self.close_asleep()
            return
        try:
            self.sock.shutdown(_socket.SHUT_RD)
        except OSError:
            pass

    # -- sleeping between requests ----------------------------------------------
    def fall_asleep(self) -> None:
        """From the hub: if the connection still waits for its next request
        with no byte of it received, make its greenlet leave that wait
        (:class:`_Sleep` thrown in at the park) and end; the connection
        then waits as a read watcher (:meth:`sleep`)."""
        g = self.greenlet
        if g is None or not self.waiting or self.asleep or self.parser.in_head or g.dead:
            return  # it woke meanwhile (the reaper's pass was before the hub's)
        if not throw_parked(g, _Sleep):
            g.throw(_Sleep)

    def sleep(self):
        """In the greenlet, instead of waiting in recv: hand the wait to a
        read watcher; return _ASLEEP (the greenlet then ends)."""
        self.asleep = True
        self.waiting = True
        # Nothing of a request is held between requests: let it all go.
        self.parser.release()
        self.parser = self.request = self.status = self.response_headers = None
        self.hub.loop.io_start(self.sock.fileno(), _READ, self._wake)
        return _ASLEEP

    def _wake(self, _events) -> None:
        """The read watcher's callback, in the hub: the client sent (or
        closed); serve it in a new greenlet. (Also called after close_asleep
        closed the socket: the loop hands a closing fd's callbacks back.)"""
        if self.closed or not self.asleep:
            return
        self.asleep = False
        self.waiting = False
        self.woken = True
        self.server.wake_connection(self)

    def close_asleep(self) -> None:
        """Close an asleep connection (from the reaper or the server's close)."""
        if self.closed:
            return
        self.closed = True
        self.asleep = False
        self.waiting = False
        self.server.connection_closed(self)

    # -- reading -------------------------------------------------------------
    def receive(self) -> int:
        """One recv into the parser; the bytes received, 0 at EOF.
        Raises OSError/TimeoutError."""
        data = self.sock.recv(RECV_SIZE)
        if data:
            self.parser.feed(data)
        return len(data)

    def charge(self, started: int, moved: int) -> None:
        """Account one body read or response write against the I/O budget.

        ``started``: the call's start, in ``time.monotonic_ns()``. A caller
        may skip a call that did not park (the hub did not poll after
        ``started``): it took no client time, and while the budget is full
        the cap would take back what it earned. ``sendall`` skips them, as
        it is on the hot path of every keep-alive response; a budget below
        the cap is then earned back by the calls that waited.

        The budget starts at ``io_timeout`` for each request; time spent in
        the socket call is taken from it, and every byte moved gives back
        ``1 / min_data_rate`` seconds, up to ``io_timeout`` again. So a
        client that moves data at least at ``min_data_rate`` is never cut,
        however long the body or response, and one that trickles (a byte a
        minute) runs out within ``io_timeout`` in total, not per call. Time
        the application spends between calls is not counted. The socket's
        timeout is the budget left: the next call raises when it runs out.
        """
        server = self.server
        budget = (self.io_budget - (time.monotonic_ns() - started) / 1e9
                  + moved / server.min_data_rate)
        if budget > server.io_timeout:
            budget = server.io_timeout
        if budget != self.io_budget or not self.timeout_set:  # fast transfers stay
            self.io_budget = budget                                  # at the cap: no call
            self.sock.settimeout(budget if budget > 0.001 else 0.001)
            self.timeout_set = True

    def _arm(self) -> None:
        """Before a call of the request that may park: the socket's timeout
        becomes the I/O budget left (see charge). A request whose calls
        never park (a small response the kernel takes at once) never sets
        it, nor sets it back to None after."""
        budget = self.io_budget
        self.sock.settimeout(budget if budget > 0.001 else 0.001)
        self.timeout_set = True

    def next_request(self):
        """The next request whose head is complete, or None: close the connection.

        Sends the error reply itself when the head is refused or too slow.
        The socket has no timeout here: the server's reaper enforces
        keepalive_timeout and header_timeout (see expire_if_late).
        """
        parser = self.parser
        while not parser.requests:
            if parser.error is not None:
                self.send_quietly(error_response(parser.error.status, parser.error.detail))
                return None
            if parser.upgraded or self.expired:
                return None
            if not parser.in_head:
                if self.server.stopping:
                    return None
                self.idle_since = time.monotonic()
                server = self.server
                drowsy = server.drowsy
                if drowsy is not None:  # the reaper puts it to sleep if it stays idle
                    drowsy.append(self)
                elif server.sleep_after == 0 and not self.woken and server.may_sleep(self):
                    return self.sleep()
            self.waiting = True
            self.woken = False
            try:
                data = self.sock.recv(RECV_SIZE)  # (self.receive(), inline)
                received = len(data)
                if received:
                    parser.feed(data)
            except OSError:
                return None
            except _Sleep:  # fall_asleep's: waiting stays True while asleep
                return self.sleep()
            finally:
                if not self.asleep:
                    self.waiting = False
            if not received:
                if self.expired and parser.in_head:  # an idle connection just closes
                    self.send_quietly(error_response(408, "request head not received in time"))
                return None
        return parser.requests.popleft()

    def receive_body(self, request) -> None:
        """Receive more of ``request``'s body (for wsgi.input and draining)."""
        if request is not self.request:
            raise ValueError("wsgi.input read after its response was sent")
        if self.continue_pending:
            self.continue_pending = False
            self.sendall(_CONTINUE)
        if not self.timeout_set:
            self._arm()
        started = time.monotonic_ns()
        try:
            received = self.receive()
            if not received:
                raise ConnectionLost("client closed the connection during the body")
            self.charge(started, received)
        except TimeoutError:
            raise HTTPError(408, "request body not received in time") from None
        except ConnectionLost:
            raise
        except OSError as exc:
            raise ConnectionLost(*exc.args) from None
        if request.error is None and not request.complete and self.parser.done:
            raise HTTPError(400, "request body cut short")

    # -- one request -----------------------------------------------------------
    def handle_request(self, request) -> bool:
        """Run the application for ``request``; True to keep the connection."""
        server = self.server
        if request.error is not None:  # its body was refused as soon as it came in
            self.send_quietly(error_response(request.error.status, request.error.detail))
            return False
        try:
            environ = self.make_environ(request)
        except HTTPError as exc:  # a field the head must not repeat, or no Host
            self.send_quietly(error_response(exc.status, exc.detail))
            return False
        self.request = request
        self.status = self.response_headers = None
        self.headers_sent = self.chunked = False
        self.is_head = request.method == "HEAD"
        self.keep_alive = request.keep_alive and not self.parser.upgraded
        self.continue_pending = request.expect_continue and not request.complete
        self.content_length = None
        self.body_sent = 0
        # The I/O budget bounds body reads and response writes; it becomes
        # the socket's timeout at the first call that may park (_arm).
        self.io_budget = server.io_timeout
        if request.upgrade:
            # It may be taken over by the application (the raw socket is in
            # its environ): no server deadline on what it does there.
            self.timeout_set = True  # (never armed: the budget stays off)
        try:
            result = server.application(environ, self.start_response)
            try:
                if request.upgrade and (self.status is None or self.status[:3] == "101"):
                    # Hijacked: the application answered on the socket itself
                    # (simple-websocket under gunicorn), or through a 101 whose
                    # head went out with its first write. The server steps
                    # aside: nothing more is sent, and the connection closes.
                    if self.status is not None and not self.headers_sent:
                        self.sendall(self.build_head(None))
                    self.log(environ)
                    return False
                self.send_result(result)
            finally:
                if result.__class__ is not list:  # (a list has no close)
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
        except HTTPError as exc:  # from wsgi.input: the body was refused
            if not self.headers_sent:
                self.status = f"{exc.status} -"
                self.send_quietly(error_response(exc.status, exc.detail))
            return False
        except ConnectionLost:
            return False
        except Exception as exc:
            if request.upgrade and type(exc) is StopIteration:
                return False  # how Flask-Sock leaves a request it hijacked under gunicorn
            self.report_error(environ)
            if not self.headers_sent:
                self.status = "500 Internal Server Error"
                self.send_quietly(self.error_page(500, "the application failed"))
                self.log(environ)
            return False
        if server.log is not None or self.log_hook:
            self.log(environ)
        if self.content_length is not None and self.body_sent != self.content_length:
            return False  # the client cannot find the next response's start
        if not request.complete and not self.drain(request):
            return False
        if self.timeout_set:  # back to waiting for a head: the reaper's job
            self.timeout_set = False
            self.sock.settimeout(None)
        return self.keep_alive and not server.stopping

    #: the complete reply for a request the server answers itself (refused, or
    #: the application failed): ``error_page(status, detail) -> bytes``
    error_page = staticmethod(error_response)

    def report_error(self, environ) -> None:
        """The application raised (we are in its except clause): report it
        to the hub's error handler (labkit.pywsgi's handler reports it as
        gevent's does)."""
        self.server.report_error(self.server.application)

    def log(self, environ) -> None:
        if self.server.log is not None and self.status is not None:
            self.server.log_request(environ, self.status, self.body_sent)

    def drain(self, request) -> bool:
        """Read and drop the body the application did not read, if short."""
        if self.continue_pending:
            return False  # the client still waits for our go-ahead: close
        request.discard_body = True
        request.body = ()
        limit = request.body_size + MAX_DRAIN
        try:
            while not request.complete:
                if request.error is not None or request.body_size > limit or (
                        request.content_length is not None
                        and request.content_length > limit):
                    return False
                self.receive_body(request)
        except (HTTPError, OSError):
            return False
        return True

    def make_environ(self, request) -> dict:
        environ = self.server.base_environ.copy()
        url = request.url
        path, _, query = url.partition(b"?")
        if url[0] != _SLASH and path != b"*":  # absolute form: http://host/path
            # (the parser let through only these forms, and never an empty target)
            try:
                parsed = httptools.parse_url(url)
                path, query = parsed.path or b"/", parsed.query or b""
            except httptools.HttpParserInvalidURLError:
                pass
        if _PERCENT in path:  # (an int: ``bytes in bytes`` costs 5x more)
            path = unquote_to_bytes(path)
        uri = url.decode("latin-1")
        environ["REQUEST_URI"] = uri
        environ["PATH_INFO"] = uri if path is url else path.decode("latin-1")
        environ["QUERY_STRING"] = query.decode("latin-1") if query else ""
        environ["REQUEST_METHOD"] = request.method
        environ["SERVER_PROTOCOL"] = _PROTOCOLS.get(request.version) or "HTTP/" + request.version
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = self.remote
        # RequestBody(request, self.receive_body), without a frame for its __init__
        environ["wsgi.input"] = body = _new_object(RequestBody)
        body._request, body._receive = request, self.receive_body
        if request.upgrade:  # the hijack path: see handle_request
            environ["labkit.socket"] = environ["gunicorn.socket"] = self.sock
        # For each field: environ[key] = value (latin-1), where key is
        # _environ_keys.get(name) or _environ_key(name), and an empty key
        # drops the field; a key already in environ goes to _repeated_field.
        # (In C, loop_c/lk_http_py.c: in Python this loop cost ~0.25 us a field.)
        _environ_fields(environ, request.headers, _environ_keys, _environ_key,
                        _repeated_field)
        if "HTTP_HOST" not in environ and request.version == "1.1":
            raise HTTPError(400, "HTTP/1.1 request without Host")  # RFC 9112 3.2
        return environ

    # -- writing ---------------------------------------------------------------
    def start_response(self, status, headers, exc_info=None):
        """PEP 3333 start_response; returns the legacy ``write`` callable."""
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        # Checked and rendered now, from a tuple copy of the fields: what was
        # checked here is what is sent, whatever the application does to its
        # list afterwards.
        fields = response_fields(status, headers)
        if status[0] == "1" and status.startswith("101") and not self.request.upgrade:
            raise ValueError("101 Switching Protocols answers only a request with Upgrade")
        self.status = status
        self.response_headers = fields
        return self.write

    def build_head(self, body_length: int | None) -> bytes:
        """The response head; records the framing it chose (see _http.response_head).

        ``body_length`` is the body's size when the server knows it (a list
        body, a file), None when it will be streamed.
        """
        if self.status is None:
            raise AssertionError("the application did not call start_response")
        data, self.content_length, self.chunked, self.is_head, self.keep_alive = response_head(
            self.response_headers, self.request.version, body_length,
            self.is_head, self.keep_alive and not self.server.stopping)
        self.headers_sent = True
        return data

    def send_result(self, result) -> None:
        """Send the application's return value (the body iterable)."""
        if not self.headers_sent:
            kind = type(result)
            if kind is list or kind is tuple:
                # The whole body is known: one send, with a Content-Length.
                body = result[0] if len(result) == 1 else b"".join(result)
                head = self.build_head(len(body))
                if self.is_head or not body:
                    return self.sendall(head)
                self.body_sent = len(body)
                if len(body) <= COALESCE_LIMIT:
                    return self.sendall(head + body)
                self.sendall(head, _MSG_MORE)
                return self.sendall(body)
            if kind is FileWrapper and self.send_file(result):
                return None
        for chunk in result:
            if chunk:
                self.write(chunk)
        if not self.headers_sent:
            self.sendall(self.build_head(0))
        elif self.chunked:
            self.sendall(b"0\r\n\r\n")

    def write(self, data: bytes) -> None:
        """Send ``data`` as (part of) the body; the first call sends the head."""
        if type(data) is not bytes:
            data = bytes(data)
        if not self.headers_sent:
            head = self.build_head(None)
            if self.is_head:
                return self.sendall(head)
        else:
            if self.is_head:
                return None
            head = b""
        if not data:  # a zero-size chunk would end a chunked body: send the head only
            if head:
                self.sendall(head)
            return None
        if self.chunked:
            frame = f"{len(data):x}\r\n".encode()
            if len(data) <= COALESCE_LIMIT:
                self.sendall(b"".join((head, frame, data, b"\r\n")))
            else:
                self.sendall(head + frame, _MSG_MORE)
                self.sendall(data + b"\r\n")
        else:
            if self.content_length is not None:  # never send past the declared end
                data = data[:self.content_length - self.body_sent]
            if len(data) <= COALESCE_LIMIT:
                self.sendall(head + data)
            else:
                if head:
                    self.sendall(head, _MSG_MORE)
                self.sendall(data)
        self.body_sent += len(data)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with os.sendfile; False if it is not one."""
        sock = self.sock
        if type(sock) is not _socket.socket or self.is_head:
            return False
        try:
            fd = wrapper.filelike.fileno()
            offset = wrapper.filelike.tell()
            size = os.fstat(fd).st_size - offset
        except (AttributeError, OSError, ValueError):
            return False
        head = self.build_head(size)
        remaining = self.content_length if self.content_length is not None else size
        self.sendall(head, _MSG_MORE)
        sock_fd = sock.fileno()
        try:
            while remaining > 0:
                started = time.monotonic_ns()
                try:
                    sent = os.sendfile(sock_fd, fd, offset, remaining)
                except BlockingIOError:
                    wait_write(sock_fd, max(self.io_budget, 0.001))
                    self.charge(started, 0)
                    continue
                if sent == 0:
                    break  # the file shrank
                self.charge(started, sent)
                offset += sent
                remaining -= sent
                self.body_sent += sent
        except OSError as exc:
            raise ConnectionLost(*exc.args) from None
        return True

    def sendall(self, data: bytes, flags: int = 0) -> None:
        """Send all of ``data`` within the I/O budget (see charge)."""
        sock = self.sock
        try:
            if len(data) <= SEND_PIECE:
                if self.plain_socket:
                    # The common case, a response the kernel takes at once:
                    # one C send, no clock, no timeout to set (nothing parks).
                    try:
                        # (fileno is -1 once the socket is closed: EBADF)
                        sent = _send_fd(_fileno(sock), data, flags)
                    except BlockingIOError:
                        sent = 0
                    if sent == len(data):
                        return
                    data = data[sent:]
                if not self.timeout_set:
                    self._arm()
                started = time.monotonic_ns()
                sock.sendall(data, flags)
                if self.hub.last_poll_ns >= started:  # it parked: see charge
                    self.charge(started, len(data))
                return
            rate = self.server.min_data_rate
            with memoryview(data) as view:
                for start in range(0, len(view), SEND_PIECE):
                    piece = view[start:start + SEND_PIECE]
                    # this piece may take what it earns at min_data_rate
                    sock.settimeout(max(self.io_budget, 0.0) + len(piece) / rate)
                    started = time.monotonic_ns()
                    sock.sendall(piece, flags)
                    self.charge(started, len(piece))
            sock.settimeout(max(self.io_budget, 0.001))
            self.timeout_set = True
        except OSError as exc:  # reset, broken pipe, or out of I/O budget
            raise ConnectionLost(*exc.args) from None

    def send_quietly(self, data: bytes) -> None:
        """Best effort, for error replies on a connection about to close."""
        try:
            self.sock.settimeout(1.0)
            self.sock.sendall(data)
        except OSError:
            pass
