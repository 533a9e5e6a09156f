"""A WSGI server on StreamServer: HTTP/1.1, one greenlet per connection.

    from labkit.wsgi import WSGIServer

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\\n"]

    WSGIServer(("127.0.0.1", 8080), app).serve_forever()

The life of a connection (the handler greenlet that StreamServer spawns)::

    loop:
        wait for a request head  -- idle: keepalive_timeout, then close quietly
                                 -- idle sleep_after: fall asleep (below)
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
  ``worker_connections``; with ``spawn`` a Pool, its size) connections are
  open at once, asleep ones (next item) included: further clients wait in
  the listen backlog until one ends (see labkit.server).
- Asleep: a keep-alive connection idle for ``sleep_after`` seconds (0.1,
  give or take a quarter of it; 0 at once, None never) gives up its
  greenlet: it waits for its next request as a read watcher of the hub, and
  a new greenlet serves it when the client sends. That is ~1 KiB of objects
  per idle connection instead of ~12 KiB (a parked greenlet keeps a page of
  frame stack and its saved C stack; the parser is dropped too), without a
  spawn per request on a busy connection. Why 0.1 s: a request that wakes
  a connection costs ~12 us more than one on an awake connection (measured
  under wrk, sleep_after 0 against None), nothing beside a client's 0.1 s
  of silence; and the shorter the wait, the fewer greenlets a burst of new
  connections has parked at once -- the memory they leave behind in the
  allocator is most of the server's RSS per idle connection (10,000
  connections opened within a second: ~1.6 KiB each with 0.1 s, 3.3-5.5
  KiB with 0.5 s). An asleep connection keeps its
  greenlet's slot of the pool (``Pool.keep_slot``): it counts toward
  ``max_connections``, and when it wakes its new greenlet starts on that
  slot at once. Only for ``spawn`` a Group or Pool (the default is one)
  and a server whose ``handle`` is this class's: a subclass that overrides
  ``handle`` (labkit.pywsgi's) keeps a greenlet per connection.
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
from collections import deque

from labkit._wsgi_connection import (COALESCE_LIMIT, MAX_DRAIN, RECV_SIZE,  # noqa: F401
                                     ConnectionLost, FileWrapper, _Connection)
from labkit.greenlet import Greenlet
from labkit.hub import get_hub, getcurrent, sleep
from labkit.server import StreamServer

__all__ = ["WSGIServer", "FileWrapper"]

#: a keyword not given (-1 would be a number of seconds, for sleep_after)
_UNSET = object()


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
    #: seconds a keep-alive connection waits in its greenlet before it falls
    #: asleep (see the module docstring); 0 at once, None never
    sleep_after: float | None = 0.1

    def __init__(self, listener, application, *, log=None, error_log=None,
                 environ=None, keepalive_timeout=None, header_timeout=None,
                 io_timeout=None, min_data_rate=None, max_header_size=None,
                 max_request_line=None, max_field_size=None, max_fields=None,
                 max_body_size=-1, sleep_after=_UNSET, spawn="default", max_connections=-1,
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
        self._check_limits()
        if max_body_size != -1:
            self.max_body_size = max_body_size
        if sleep_after is not _UNSET:
            if sleep_after is not None:
                if isinstance(sleep_after, bool) or not isinstance(sleep_after, (int, float)):
                    raise TypeError(f"sleep_after must be a number of seconds or None, "
                                    f"not {type(sleep_after).__name__}")
                if not sleep_after >= 0:
                    raise ValueError(f"sleep_after must be >= 0 seconds, not {sleep_after!r}")
            self.sleep_after = sleep_after
        self.environ = dict(environ or {})
        #: live connections, so that stop() can close the idle ones
        self.connections: set = set()
        self.stopping = False
        self._reaper = None  # the greenlet that enforces the head timeouts
        #: connections as they began to wait for their next request, oldest
        #: first (a connection may be in it more than once; stale entries are
        #: skipped): the reaper puts those idle for sleep_after to sleep
        #: without looking at every connection. None when no connection
        #: falls asleep later than at once (see start).
        self.drowsy: deque | None = None
        #: woken connections whose greenlet has not run yet, by greenlet
        #: (see wake_connection)
        self._waking: dict = {}

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

    def _check_limits(self) -> None:
        """Refuse a size limit that is not an int >= 1, naming it. Called by
        __init__ and again by start(), for a limit assigned in between."""
        for name in ("max_header_size", "max_request_line", "max_field_size", "max_fields"):
            value = getattr(self, name)  # (given, or a class attribute)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")

    def start(self) -> None:
        self._check_limits()
        self.stopping = False
        if self.sleep_after and self._connections_may_sleep():
            if self.drowsy is None:
                self.drowsy = deque()
        else:
            self.drowsy = None
        super().start()
        if self._reaper is None or self._reaper.dead:
            self._reaper = Greenlet.spawn(self._reap_slow_connections)

    def handle(self, sock, address) -> bool:
        """Serve one connection; True if it fell asleep (it stays open)."""
        connection = _Connection(self, sock, address)
        self.connections.add(connection)
        asleep = False
        try:
            asleep = connection.serve()
        finally:
            if asleep:
                self._keep_slot(connection)
            else:
                self.connections.discard(connection)
        return asleep

    def _handle_connection(self, sock, address) -> None:
        # StreamServer's, except that a connection that fell asleep stays open.
        asleep = False
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            asleep = self.handle(sock, address) is True
        except Exception:
            self._report(self.handle)
        finally:
            if not asleep:
                sock.close()

    # -- asleep connections (see the module docstring) --------------------------
    def _connections_may_sleep(self) -> bool:
        return self.sleep_after is not None and self.pool is not None \
            and type(self).handle is WSGIServer.handle

    def may_sleep(self, connection) -> bool:
        """May ``connection`` give up its greenlet between requests?"""
        if not self._connections_may_sleep() or connection.greenlet not in self.pool:
            return False  # (not a member: it would have no slot to keep)
        pending = getattr(connection.sock, "pending", None)  # TLS: decrypted, unread bytes
        return pending is None or not pending()

    def _drowsy_ones(self, now: float) -> list:
        """Take from ``drowsy`` the connections idle for sleep_after by ``now``."""
        drowsy, sleep_after = self.drowsy, self.sleep_after
        sleepy = []
        while drowsy:
            connection = drowsy[0]
            # (connection.idle and not asleep, inline: an entry per request
            # comes through here, most of them stale: busy again)
            idle = connection.waiting and not connection.asleep \
                and not connection.parser.in_head
            if idle and now - connection.idle_since < sleep_after:
                break   # not yet; the entries behind it wait as long at most
            drowsy.popleft()
            if idle and self.may_sleep(connection):
                sleepy.append(connection)
        return sleepy

    def wake_connection(self, connection) -> None:
        """From the hub: the asleep ``connection`` is readable; serve it in a
        new greenlet of the pool, on the slot the connection kept."""
        g = self.pool.greenlet_class(self._serve_awake, connection)
        # Killed before it runs (pool.kill, a stop that kills): its link
        # closes the connection, which no greenlet will serve. Linked before
        # the pool's, so the socket is closed before the slot is free.
        self._waking[g] = connection
        g.rawlink(self._woken_ended)
        self.pool.start_on_kept_slot(g)

    def _woken_ended(self, g) -> None:
        connection = self._waking.pop(g, None)
        if connection is not None:  # it never ran _serve_awake
            self.connection_closed(connection)

    def _serve_awake(self, connection) -> None:
        self._waking.pop(getcurrent(), None)
        asleep = False
        try:
            asleep = connection.serve()
        except Exception:
            self._report(self.handle)
        finally:
            if asleep:
                self._keep_slot(connection)
            else:
                self.connection_closed(connection)

    def _keep_slot(self, connection) -> None:
        """In the greenlet that served ``connection``, which fell asleep:
        the connection keeps the greenlet's slot of the pool (it counts
        toward max_connections while asleep)."""
        if self.pool.keep_slot(getcurrent()):
            return
        # Not the pool's member (may_sleep checks that it is; user code took
        # it out since): with no slot it could not be counted, so it is
        # closed, as an idle keep-alive connection may be. (closed first:
        # the read watcher's callback, handed back by the close, then does
        # nothing, and there is no kept slot to give back.)
        connection.closed = True
        connection.asleep = connection.waiting = False
        self.connections.discard(connection)
        connection.sock.close()

    def connection_closed(self, connection) -> None:
        """``connection`` is done: forget it and close its socket. One that
        was asleep (closed by close_asleep, which sets ``closed``) gives
        back the slot of the pool it kept."""
        self.connections.discard(connection)
        connection.sock.close()
        if connection.closed:
            self.pool.release_kept_slot()

    def _put_to_sleep(self, connections) -> None:
        # a hub callback: fall_asleep switches into each greenlet, which
        # unwinds and ends at once (may_sleep again: the pool may have
        # changed since the reaper chose them)
        for connection in connections:
            if self.may_sleep(connection):
                connection.fall_asleep()

    def close(self) -> None:
        """Stop accepting; close keep-alive connections that wait for a request."""
        self.stopping = True
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.kill(block=False)
        super().close()
        if self.drowsy:
            self.drowsy.clear()
        for connection in list(self.connections):
            if connection.idle:
                connection.expire()

    def _reap_slow_connections(self) -> None:
        """Expire connections that wait too long for a request head; put
        those idle for ``sleep_after`` to sleep.

        One greenlet and one timer per server, instead of a timer armed and
        cancelled around every wait for a request: that wait is on the hot
        path of every keep-alive request, and with no timeout it is a bare
        park (see labkit.socket). Deadlines are therefore enforced with a
        granularity of a quarter of the shortest timeout (at most 1 s), by a
        pass over every connection. Connections fall asleep at most a
        quarter of sleep_after late (plus the queueing in ``drowsy``): the
        reaper finds them there without such a pass.
        """
        interval = max(0.01, min(1.0, self.keepalive_timeout / 4, self.header_timeout / 4))
        tick = interval
        if self.drowsy is not None:
            tick = max(0.01, min(interval, self.sleep_after / 4))
        next_pass = time.monotonic() + interval
        hub = get_hub()
        while True:
            sleep(tick)
            now = time.monotonic()
            if self.drowsy:
                sleepy = self._drowsy_ones(now)
                if sleepy:  # fall_asleep switches into each one's greenlet: from the hub
                    hub.run_callback(self._put_to_sleep, sleepy)
            if now >= next_pass:
                next_pass = now + interval
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
