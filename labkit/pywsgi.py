"""gevent.pywsgi's names on labkit's WSGI server, for code written against gevent.

    from labkit.pywsgi import WSGIServer      # was: from gevent.pywsgi import WSGIServer

    WSGIServer(("127.0.0.1", 8080), app, log=logger, handler_class=MyHandler).serve_forever()

This is an adapter, not a second server: the HTTP, the limits and the
hijack path are :mod:`labkit.wsgi`'s (see there for the contract). What it
adds is what gevent's users import and subclass:

- :class:`WSGIServer` takes gevent's arguments: ``log`` and ``error_log``
  default to ``sys.stderr`` (gevent's default; ``labkit.wsgi`` logs nothing
  by default), ``None`` silences them, and a ``logging.Logger`` (anything
  with ``log`` and no ``write``) is wrapped in a :class:`LoggingLogAdapter`
  (INFO for requests, ERROR for errors); ``handler_class``; ``environ``
  (extra base environ keys); the class attributes ``environ_class`` (the
  type of each request's environ: ``dict``, or :class:`SecureEnviron` to
  keep it from being printed), ``secure_environ_class`` and ``base_env``.
  An access-log line is gevent's: ``client - - [date] "request line"
  status length seconds``.
- :class:`WSGIHandler` is the per-connection object (``handler_class``):
  constructed as ``handler_class(socket, address, server)``, run by
  ``handle()``, with gevent's attributes (``socket``, ``client_address``,
  ``server``, ``environ``, ``status``, ``response_length``, ``requestline``,
  ``time_start``/``time_finish``) and hooks a subclass may override:
  ``get_environ()``, ``format_request()``, ``log_request()``,
  ``log_error(msg, *args)``, ``handle_error(type, value, tb)`` (the
  application raised). ``ApplicationError`` is the exception type the server
  reports for a broken application (one that never called
  ``start_response``, or sent a body with a 304).
  gevent's handler reads the request itself (``read_requestline``,
  ``read_request``, ``rfile``); labkit's parses with llhttp below these hooks,
  so overriding those methods has no effect (see the README's "Where
  labkit differs").
- :class:`Input` is gevent's body reader over a file object (``rfile``),
  with a Content-Length or chunked framing, on labkit's parser: it never
  reads past the body's end, and a body cut short raises ``IOError``.
- :class:`Environ`, :class:`SecureEnviron`, :class:`WSGISecureEnviron`,
  :class:`LoggingLogAdapter`, :func:`format_date_time` and
  ``MAX_REQUEST_LINE`` as gevent has them.
"""
from __future__ import annotations

import sys
import time
import traceback
from datetime import datetime

from greenlet import GreenletExit

from labkit import wsgi as _wsgi
from labkit._http import HTTPError, RequestBody, RequestParser
from labkit._wsgi_connection import _Connection
from labkit.hub import get_hub

__all__ = ["WSGIServer", "WSGIHandler", "LoggingLogAdapter", "Environ", "SecureEnviron",
           "WSGISecureEnviron", "Input", "format_date_time", "MAX_REQUEST_LINE"]

#: gevent's constant (its longest request line). labkit's server takes
#: ``max_request_line`` (gunicorn's 4094 by default) instead.
MAX_REQUEST_LINE = 8192

_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = (None, "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
           "Nov", "Dec")


def format_date_time(timestamp: float) -> bytes:
    """An HTTP date (RFC 9110 IMF-fixdate) for ``timestamp``, as bytes (gevent's type)."""
    year, month, day, hh, mm, ss, weekday, _, _ = time.gmtime(timestamp)
    return (f"{_WEEKDAYS[weekday]}, {day:02d} {_MONTHS[month]} {year:4d} "
            f"{hh:02d}:{mm:02d}:{ss:02d} GMT").encode("latin-1")


# -- the body, over a file ------------------------------------------------------------

class Input(RequestBody):
    """gevent's ``Input(rfile, content_length, socket=None, chunked_input=False)``:
    the body of one request, read from the file object ``rfile``.

    The framing is parsed by labkit's parser (llhttp), fed only as many bytes
    as the body still needs (a line at a time between chunks), so ``rfile``
    is left at the body's end. ``read``/``readline``/``readlines``/iteration
    are :class:`labkit._http.RequestBody`'s. A body that ends early (EOF on
    ``rfile``) or a malformed chunk raises ``IOError``. ``socket`` is
    accepted for gevent's signature (``100 Continue`` is the server's job
    here).
    """

    def __init__(self, rfile, content_length, socket=None, chunked_input=False):
        if content_length is not None and not chunked_input:
            content_length = int(content_length)
            if content_length < 0:
                raise ValueError(f"content_length must not be negative: {content_length}")
        self.rfile = rfile
        self.content_length = content_length
        self.socket = socket
        self.chunked_input = chunked_input
        parser = RequestParser(max_header_size=65536, max_body_size=None)
        framing = (b"Transfer-Encoding: chunked" if chunked_input
                   else b"Content-Length: %d" % (content_length or 0))
        parser.feed(b"POST / HTTP/1.1\r\nHost: input\r\n" + framing + b"\r\n\r\n")
        self._parser = parser
        super().__init__(parser.requests.popleft(), self._receive)

    def _receive(self, request) -> None:
        wanted = self._parser.wanted()
        if wanted is None:
            data = self.rfile.readline(MAX_REQUEST_LINE)
        else:
            data = self.rfile.read(min(wanted, 65536)) if wanted else b""
        if not data:
            raise OSError("the request body ended early")
        self._parser.feed(data)
        if self._parser.error is not None:
            raise OSError(self._parser.error.detail)

    def _next_chunk(self) -> bytes:
        try:
            return super()._next_chunk()
        except HTTPError as exc:  # a body the parser refused: gevent raises IOError
            raise OSError(exc.detail) from None


# -- environ classes -------------------------------------------------------------------

class Environ(dict):
    """A dict for WSGI environs: ``copy()`` keeps the class; pickles as a dict."""

    __slots__ = ()

    def copy(self):
        return self.__class__(self)

    def iteritems(self):
        return self.items()

    def __reduce_ex__(self, proto):
        return (dict, (), None, None, iter(self.items()))


class SecureEnviron(Environ):
    """An environ that does not print its values (cookies, authorization).

    ``repr``/``str`` show ``<pywsgi.SecureEnviron dict (keys: N) at ID>``
    unless ``secure_repr`` is false (then as a dict). With
    ``whitelist_keys`` (a container of keys) those keys' values are shown
    and the others ``"<MASKED>"`` -- or left out, counted as hidden, when
    ``print_masked_keys`` is false. Each is an instance attribute that falls
    back to the class's ``default_<name>``.
    """

    default_secure_repr = True
    default_whitelist_keys = ()
    default_print_masked_keys = True

    __slots__ = ("secure_repr", "whitelist_keys", "print_masked_keys")

    def __getattr__(self, name):
        if name in SecureEnviron.__slots__:
            return getattr(type(self), "default_" + name)
        raise AttributeError(name)

    def __repr__(self):
        if not self.secure_repr:
            return dict.__repr__(self)
        whitelist = self.whitelist_keys
        if not whitelist:
            return f"<pywsgi.SecureEnviron dict (keys: {len(self)}) at {id(self)}>"
        show_masked = self.print_masked_keys
        safe = {key: self[key] if key in whitelist else "<MASKED>"
                for key in self if key in whitelist or show_masked}
        text = repr(safe)
        if not show_masked and len(safe) != len(self):
            text = text[:-1] + f", (hidden keys: {len(self) - len(safe)})}}"
        return text

    __str__ = __repr__


class WSGISecureEnviron(SecureEnviron):
    """A SecureEnviron that shows the client's address and the Host, and
    only counts the other keys."""

    default_whitelist_keys = ("REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST")
    default_print_masked_keys = False


# -- logs --------------------------------------------------------------------------------

class _NoopLog:
    """``log=None``: a file that writes nothing."""

    def write(self, *args, **kwargs):
        pass

    def flush(self):
        pass

    def writelines(self, *args, **kwargs):
        pass


class LoggingLogAdapter:
    """A ``logging.Logger`` as the file-like log a WSGIServer writes to.

    ``write(msg)`` logs ``msg`` (without its trailing newline) at ``level``
    (INFO by default); other attributes are the logger's (reading, setting
    and deleting them go to it).
    """

    __slots__ = ("_logger", "_level")

    def __init__(self, logger, level: int = 20):
        self._logger = logger
        self._level = level

    def write(self, msg) -> None:
        if msg and msg.endswith("\n"):
            msg = msg[:-1]
        self._logger.log(self._level, msg)

    def flush(self) -> None:
        """Nothing to flush: a file object's method."""

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._logger, name)

    def __setattr__(self, name, value):
        if name in LoggingLogAdapter.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._logger, name, value)

    def __delattr__(self, name):
        delattr(self._logger, name)


def _make_log(log, level: int = 20):
    if isinstance(log, str) and log == "default":
        return sys.stderr
    if log is None:
        return _NoopLog()
    if not hasattr(log, "write") and hasattr(log, "log"):
        return LoggingLogAdapter(log, level)
    return log


_BODILESS = ("204", "304")
_INTERNAL_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                   b"Connection: close\r\nContent-Length: 21\r\n\r\nInternal Server Error")


# -- the handler ---------------------------------------------------------------------------

class WSGIHandler(_Connection):
    """One connection, as gevent's ``WSGIHandler(sock, address, server)``.

    See the module docstring for the attributes and hooks; the request
    loop itself is :class:`labkit._wsgi_connection._Connection`'s.
    """

    #: raised (and reported) when the application breaks the protocol
    ApplicationError = AssertionError
    #: how an unexpected error while reading a request is printed
    _print_unexpected_exc = staticmethod(traceback.print_exc)

    environ = None
    requestline = None
    status = None
    response_length = 0
    time_start = 0.0
    time_finish = 0.0

    def __init__(self, sock, address, server, rfile=None):
        _Connection.__init__(self, server, sock, address)
        self.socket = sock
        self.client_address = address

    def handle(self) -> None:
        """Serve the connection's requests until it closes."""
        self.serve()

    # -- environ -----------------------------------------------------------
    def make_environ(self, request) -> dict:
        self.time_start = time.time()
        self.time_finish = 0.0
        self.requestline = (f"{request.method} {request.url.decode('latin-1')} "
                            f"HTTP/{request.version}")
        self._request_for_environ = request
        environ = self.get_environ()
        self.environ = environ
        return environ

    def get_environ(self) -> dict:
        """The environ of the request being handled: the server's base
        (``server.get_environ()``) plus the request's keys."""
        environ = _Connection.make_environ(self, self._request_for_environ)
        environ_class = self.server.environ_class
        if type(environ) is not environ_class:
            environ = environ_class(environ)
        return environ

    # -- errors and logs ------------------------------------------------------
    def report_error(self, environ) -> None:
        self.handle_error(*sys.exc_info())

    def handle_error(self, t, v, tb) -> None:
        """The application raised ``v``: report it to the hub's error
        handler with the (masked) environ as context. The 500 reply is sent
        by the caller."""
        if not issubclass(t, GreenletExit):
            context = self.environ
            if not isinstance(context, self.server.secure_environ_class):
                context = self.server.secure_environ_class(context or {})
            get_hub().handle_error(context, t, v, tb)

    def log_error(self, msg, *args) -> None:
        """Write ``msg % args`` (or ``msg`` if that fails) to the error log."""
        try:
            message = msg % args
        except Exception:
            traceback.print_exc()
            message = f"{msg!r} {args!r}"
        try:
            self.server.error_log.write(message + "\n")
        except Exception:
            traceback.print_exc()

    def log(self, environ) -> None:
        # (called by the request loop when a response was sent)
        if self.status is None:
            return
        self.response_length = self.body_sent
        self.time_finish = time.time()
        self.log_request()

    def log_request(self) -> None:
        self.server.log.write(self.format_request() + "\n")

    def format_request(self) -> str:
        """gevent's access-log line: ``client - - [date] "request line"
        status length seconds``."""
        now = datetime.now().replace(microsecond=0)
        length = self.response_length or "-"
        delta = f"{self.time_finish - self.time_start:.6f}" if self.time_finish else "-"
        client = (self.client_address[0] if isinstance(self.client_address, tuple)
                  else self.client_address)
        status = (self.status or "000").split()[0]
        return f'{client or "-"} - - [{now}] "{self.requestline or ""}" {status} {length} {delta}'

    @staticmethod
    def error_page(status: int, detail: str = "") -> bytes:
        if status == 500:  # gevent's page, which its users' tests look for
            return _INTERNAL_ERROR
        return _Connection.error_page(status, detail)

    def send_result(self, result) -> None:
        if type(result) in (list, tuple):
            if self.status is None and not any(result):
                # No start_response and nothing to send: gevent sends nothing
                # and closes the connection, and reports no error.
                self.keep_alive = False
                return None
            if any(result):
                self._check_bodiless()
        return _Connection.send_result(self, result)

    # gevent refuses a body, or a non-zero Content-Length, for 204 and 304
    # (labkit.wsgi drops it): the application is told, not the client.
    def start_response(self, status, headers, exc_info=None):
        if isinstance(status, str) and status[:3] in _BODILESS:
            for name, value in headers:
                if name.lower() == "content-length" and value != "0":
                    raise self.ApplicationError(
                        f"Invalid Content-Length for {status[:3]} response: {value!r} "
                        "(must be absent or zero)")
        return _Connection.start_response(self, status, headers, exc_info)

    def write(self, data) -> None:
        if data:
            self._check_bodiless()
        return _Connection.write(self, data)

    def _check_bodiless(self) -> None:
        if self.status is not None and self.status[:3] in _BODILESS:
            raise self.ApplicationError(f"The {self.status[:3]} response must have no body")

    def build_head(self, body_length):
        if self.status is None:
            raise self.ApplicationError("The application did not call start_response()")
        return _Connection.build_head(self, body_length)


# -- the server ------------------------------------------------------------------------------

class WSGIServer(_wsgi.WSGIServer):
    """labkit's :class:`labkit.wsgi.WSGIServer` with gevent's constructor
    and extension points (see the module docstring)."""

    handler_class = WSGIHandler
    #: the type of each request's environ
    environ_class = dict
    #: what an error report's environ is shown as
    secure_environ_class = WSGISecureEnviron
    base_env = {"GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_SOFTWARE": "labkit Python/%d.%d" % sys.version_info[:2],
                "SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.multithread": False,
                "wsgi.multiprocess": False, "wsgi.run_once": False}

    def __init__(self, listener, application=None, backlog=None, spawn="default",
                 log="default", error_log="default", handler_class=None, environ=None,
                 **ssl_args):
        if application is None:
            application = getattr(type(self), "application", None)
        log = _make_log(log)
        error_log = _make_log(error_log, 40)  # logging.ERROR
        base = dict(self.base_env)
        if environ:
            base.update(environ)
        super().__init__(listener, application, log=log, error_log=error_log,
                         environ=base, backlog=backlog, spawn=spawn, **ssl_args)
        if handler_class is not None:
            self.handler_class = handler_class

    def get_environ(self) -> dict:
        """A fresh copy of the base environ, as ``environ_class``."""
        return self.environ_class(self.base_environ)

    def handle(self, sock, address) -> None:
        handler = self.handler_class(sock, address, self)
        self.connections.add(handler)
        try:
            handler.handle()
        finally:
            self.connections.discard(handler)
