"""A WSGI server on StreamServer: HTTP/1.1, one greenlet per connection.

    from labkit.wsgi import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\\n"]

    WSGIServer(("127.0.0.1", 8080), app).serve_forever()

The life of a connection (the handler greenlet that StreamServer spawns)::

    loop:
        wait for a request head  -- idle: keepalive_timeout, then close quietly
                                 -- partial head: header_timeout, then 408
        bad head?                --> 400 / 413 / 431 / 417, close
        call application(environ, start_response)
            wsgi.input.read()    --> [100 Continue], recv + parse the body on demand
        send status + headers + first body chunk in ONE send (TCP_NODELAY is on)
        send the rest (Content-Length, or chunked when the length is unknown)
        unread body left?        --> drain a little, or close
        keep-alive?              --> loop, else close

The contract:

- ``application`` is a WSGI 1.0 callable (PEP 3333). ``wsgi.input`` streams
  the body: reading it receives from the socket as needed, and sends
  ``100 Continue`` first if the client asked for it. ``wsgi.input_terminated``
  is True: reading to EOF is safe, also for chunked uploads.
- Keep-alive and pipelining per HTTP/1.1 (HTTP/1.0 keep-alive on request).
  Requests on one connection are answered in order, one at a time.
- A response with no Content-Length is sent chunked to HTTP/1.1 clients and
  ended by closing the connection for HTTP/1.0 ones. A list or tuple body
  gets its Content-Length computed. ``wsgi.file_wrapper`` responses from a
  regular file go out with ``os.sendfile``.
- Limits and the replies that enforce them (the connection is closed after
  each): malformed request 400 (what else is refused, and why, is listed in
  :mod:`labkit._http`), request line longer than ``max_request_line`` 414,
  a field line longer than ``max_field_size``, more than ``max_fields``
  fields, or a head larger than ``max_header_size`` 431, body larger than
  ``max_body_size`` 413, an HTTP version other than 1.0/1.1 505, head not
  complete within ``header_timeout`` 408. The defaults for the request line,
  field size and count are gunicorn's (4094, 8190, 100). An idle keep-alive connection is
  closed without a reply after ``keepalive_timeout``. (These two are
  enforced by one reaper greenlet per server, to within a quarter of the
  shorter timeout, so that waiting for the next request arms no timer.)
  Body reads and response writes share one budget per request: they may
  wait on the client ``io_timeout`` seconds in total, and every byte moved
  earns back ``1 / min_data_rate`` s (Kestrel's minimum data rate model),
  so any transfer at ``min_data_rate`` or faster goes on for as long as it
  needs, and a client trickling a byte a minute is cut within
  ``io_timeout`` (408 while reading the body; the connection is closed
  while writing). One bad client never affects the others: each has its
  own greenlet, and errors end only it.
- At most ``max_connections`` (1000, gevent's and gunicorn's
  ``worker_connections``) connections are served at once; further clients
  wait in the listen backlog until one ends (see labkit.server).
- The hijack path, for protocol upgrades (WebSockets): for a request with
  ``Upgrade`` (and ``Connection: upgrade``), the raw socket is in the environ
  as ``gunicorn.socket`` and ``labkit.socket`` (the keys libraries such as
  simple-websocket look for), it has no server timeout, and the application
  may answer ``101 Switching Protocols`` with its ``Upgrade`` header (its
  first ``write`` sends the head, as given plus Date) or answer on the
  socket itself without calling start_response. Either way the server then
  steps aside: it sends nothing more and closes the connection when the
  application returns (``StopIteration``, Flask-Sock's way out of a gunicorn
  request, is not an error). A 101 or an ``Upgrade`` header in answer to
  any other request is refused (500). Bytes the client sent after the
  upgrade request, before the 101, are lost: clients must wait for the 101.
- An application that raises before sending headers gets a 500 (and the
  traceback is reported); after headers, the connection is cut, since the
  client could not tell a truncated body from a complete one otherwise.
- ``log``: None (the default) logs nothing; a file-like object or a
  ``logging.Logger`` receives one line per request in the combined log format.
- ``stop(timeout)`` is graceful: the listener closes, idle keep-alive
  connections close at once, requests in progress finish (their responses
  say ``Connection: close``) for up to ``timeout`` seconds, then are killed.

Layout: this module is the server (options, the base environ, the reaper,
graceful stop, logging). What happens on one connection -- the loop above,
the environ, start_response and the sends -- is
:class:`labkit._wsgi_connection._Connection`; the HTTP parser and response
heads are in :mod:`labkit._http`. ``FileWrapper``, ``ConnectionLost`` and
the size constants live with the connection and are re-exported here.
"""
from __future__ import annotations

import logging
import sys
import time

from labkit._wsgi_connection import (COALESCE_LIMIT, MAX_DRAIN, RECV_SIZE,  # noqa: F401
                                     ConnectionLost, FileWrapper, _Connection)
from labkit.greenlet import Greenlet
from labkit.hub import get_hub, sleep
from labkit.server import StreamServer

__all__ = ["WSGIServer", "FileWrapper"]


class WSGIServer(StreamServer):
    """Serve ``application`` on ``listener``; see the module docstring.

    Every keyword has a class attribute of the same name as its default, so
    a subclass can change defaults too.
    """

    keepalive_timeout = 20.0
    header_timeout = 10.0
    io_timeout = 60.0
    min_data_rate = 240.0       # bytes/s, for the I/O budget (Kestrel's default)
    max_header_size = 65536
    max_request_line = 4094     # gunicorn's limit_request_line
    max_field_size = 8190       # gunicorn's limit_request_field_size
    max_fields = 100            # gunicorn's limit_request_fields
    max_body_size: int | None = 1 << 30

    def __init__(self, listener, application, *, log=None, error_log=None,
                 environ=None, keepalive_timeout=None, header_timeout=None,
                 io_timeout=None, min_data_rate=None, max_header_size=None,
                 max_request_line=None, max_field_size=None, max_fields=None,
                 max_body_size=-1, spawn="default", max_connections=-1,
                 backlog=None, ssl_context=None, **ssl_args):
        super().__init__(listener, backlog=backlog, spawn=spawn,
                         max_connections=max_connections,
                         ssl_context=ssl_context, **ssl_args)
        self.application = application
        self.log = log
        self.error_log = error_log if error_log is not None else sys.stderr
        for name, value in (("keepalive_timeout", keepalive_timeout),
                            ("header_timeout", header_timeout),
                            ("io_timeout", io_timeout),
                            ("min_data_rate", min_data_rate),
                            ("max_header_size", max_header_size),
                            ("max_request_line", max_request_line),
                            ("max_field_size", max_field_size),
                            ("max_fields", max_fields)):
            if value is not None:
                setattr(self, name, value)
        if max_body_size != -1:
            self.max_body_size = max_body_size
        self.environ = dict(environ or {})
        #: live connections, so that stop() can close the idle ones
        self.connections: set = set()
        self.stopping = False
        self._reaper = None  # the greenlet that enforces the head timeouts

    def init_socket(self) -> None:
        super().init_socket()
        host, port = self.address[:2]
        base = {
            "SERVER_NAME": host, "SERVER_PORT": str(port), "SCRIPT_NAME": "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.ssl_context is not None else "http",
            "wsgi.errors": self.error_log, "wsgi.multithread": False,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.file_wrapper": FileWrapper,
        }
        base.update(self.environ)
        self.base_environ = base

    def start(self) -> None:
        self.stopping = False
        super().start()
        if self._reaper is None or self._reaper.dead:
            self._reaper = Greenlet.spawn(self._reap_slow_connections)

    def handle(self, sock, address) -> None:
        connection = _Connection(self, sock, address)
        self.connections.add(connection)
        try:
            connection.serve()
        finally:
            self.connections.discard(connection)

    def close(self) -> None:
        """Stop accepting; close keep-alive connections that wait for a request."""
        self.stopping = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.kill(block=False)
        super().close()
        for connection in list(self.connections):
            if connection.idle:
                connection.expire()

    def _reap_slow_connections(self) -> None:
        """Expire connections that wait too long for a request head.

        One greenlet and one timer per server, instead of a timer armed and
        cancelled around every wait for a request: that wait is on the hot
        path of every keep-alive request, and with no timeout it is a bare
        park (see labkit.socket). Deadlines are therefore enforced with a
        granularity of a quarter of the shortest timeout (at most 1 s).
        """
        interval = max(0.01, min(1.0, self.keepalive_timeout / 4, self.header_timeout / 4))
        while True:
            sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.expire_if_late(now)

    # -- logging -------------------------------------------------------------
    def log_request(self, environ, status: str, size: int) -> None:
        """Write one combined-format line (only called when ``log`` is set)."""
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        request_line = (f"{environ['REQUEST_METHOD']} {environ['REQUEST_URI']} "
                        f"{environ['SERVER_PROTOCOL']}")
        line = (f'{environ.get("REMOTE_ADDR", "-")} - - [{when}] "{request_line}" '
                f'{status.split(" ", 1)[0]} {size or "-"} '
                f'"{environ.get("HTTP_REFERER", "-")}" '
                f'"{environ.get("HTTP_USER_AGENT", "-")}"')
        log = self.log
        if isinstance(log, logging.Logger):
            log.info(line)
        else:
            log.write(line + "\n")

    def report_error(self, context) -> None:
        exc_type, exc, tb = sys.exc_info()
        get_hub().handle_error(context, exc_type, exc, tb)
