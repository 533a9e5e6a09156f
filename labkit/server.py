"""TCP and UDP servers: one greenlet accepts, one greenlet per connection handles.

    def echo(sock, address):
        for line in sock.makefile("rb"):
            sock.sendall(line)

    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()                 # accept in the background, return at once
    ...                            # server.server_port is the port it got
    server.stop(timeout=1)         # stop accepting; let handlers finish; kill the rest

The life of a connection::

    accept loop (one greenlet)            handler greenlet (one per connection)
    wait for a pool slot                  [TLS handshake, if ssl_context]
    accept() --> TCP_NODELAY --spawn-->   handle(sock, address)
    back to accept()                      sock.close() when handle returns or raises

The contract (gevent's StreamServer, with a stricter stop):

- ``listener`` is a listening socket, or an ``(host, port)`` address to bind
  (``port`` 0 picks a free one; ``server_port`` tells which).
- ``spawn`` decides where ``handle`` runs: ``"default"`` a new Greenlet per
  connection, at most ``max_connections`` at once (default 1000, gevent's
  and gunicorn's ``worker_connections``; None for no bound); a
  :class:`~labkit.pool.Pool` (or an int, its size) at most that many at
  once; ``None`` in the accept loop itself, one connection at a time. When
  the bound is reached the accept loop waits for a free slot before
  accepting again: further clients wait in the listen backlog (``backlog``),
  they are not accepted and dropped.
- A handler that raises is reported (printed with its traceback); its
  connection is closed and the server goes on serving.
- The accept loop survives running out of file descriptors (EMFILE, ENFILE,
  ENOBUFS, ENOMEM: it backs off ``accept_backoff`` seconds and retries; the
  first failure of a run is reported with its traceback, the retries that
  fail the same way are not) and connections that die before they are
  accepted (ECONNABORTED, EPROTO).
- ``stop(timeout)`` is graceful: it closes the listener at once, waits at most
  ``timeout`` seconds (default ``stop_timeout``) for running handlers, then
  kills those still running. ``close()`` only stops accepting.
"""
from __future__ import annotations

import errno
import sys

from labkit import socket as _socket
from labkit.event import Event
from labkit.greenlet import Greenlet
from labkit.hub import get_hub, getcurrent, sleep
from labkit.pool import Group, Pool

__all__ = ["StreamServer", "DatagramServer"]

# accept() failures that say "try again later", not "the listener is broken"
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_CONNECTION_GONE = frozenset((errno.ECONNABORTED, errno.EPROTO, errno.EINTR,
                              errno.EAGAIN, errno.ECONNRESET))


class _BaseServer:
    """What stream and datagram servers share: the listener, the serving
    greenlet, start/stop/serve_forever and the address properties."""

    #: seconds stop() waits for running handlers before killing them
    stop_timeout = 1.0
    #: handlers running at once with spawn="default" (None: no bound)
    max_connections: int | None = 1000

    def __init__(self, listener, handle=None, spawn="default", max_connections=-1):
        if handle is not None:
            self.handle = handle
        if isinstance(listener, tuple):
            self.address = listener
            self.socket = None
        else:
            self.socket = listener
            self.address = listener.getsockname()
        if max_connections != -1:  # -1: the class attribute's default
            self.max_connections = max_connections
        self._serving = None            # the accept/receive loop greenlet
        self._started = False           # between start() and close()/stop()
        self._stopped_event = Event()   # set when stop() ran; serve_forever waits on it
        self.set_spawn(spawn)

    def set_spawn(self, spawn) -> None:
        """How handlers run: "default" (a Pool of max_connections), None
        (inline, in the accept loop's greenlet), an int (a Pool that size),
        a Pool or Group, or a callable like ``labkit.spawn``."""
        if spawn == "default":
            bound = self.max_connections
            self.pool = Group() if bound is None else Pool(bound)
        elif spawn is None:
            self.pool = None
        elif isinstance(spawn, int) and not isinstance(spawn, bool):
            self.pool = Pool(spawn)
        elif isinstance(spawn, Group):
            self.pool = spawn
        elif callable(spawn):
            self.pool = None
        else:
            raise TypeError(f"spawn must be 'default', None, an int, a Pool or "
                            f"a callable, not {spawn!r}")
        #: what starts a handler (None: call it inline); gevent's name
        self._spawn = self.pool.spawn if self.pool is not None else spawn

    _set_spawn = set_spawn

    def set_handle(self, handle) -> None:
        """Serve connections (datagrams) with ``handle`` from now on."""
        if not callable(handle):
            raise TypeError(f"handle must be callable, not {handle!r}")
        self.handle = handle

    def _run_handler(self, function, *args) -> None:
        """Run ``function(*args)`` as ``spawn`` says."""
        if self._spawn is not None:
            self._spawn(function, *args)
        else:
            function(*args)

    # -- properties -----------------------------------------------------------
    @property
    def started(self) -> bool:
        """Between start() and stop()/close() (also while not accepting)."""
        return self._started

    @property
    def closed(self) -> bool:
        return self.socket is None or self.socket.fileno() < 0

    @property
    def server_host(self) -> str:
        return self.address[0]

    @property
    def server_port(self) -> int:
        return self.address[1]

    # -- lifecycle ------------------------------------------------------------
    def init_socket(self) -> None:
        """Create and bind the listener if we were given an address."""
        if self.socket is None:
            self.socket = self.get_listener(self.address)
        self.address = self.socket.getsockname()

    def start(self) -> None:
        """Start serving in the background; return at once."""
        if self.started:
            return
        self.init_socket()
        self._stopped_event.clear()
        self._started = True
        self.start_accepting()

    def start_accepting(self) -> None:
        """(Re)start the accept loop on the open listener."""
        if self._serving is None or self._serving.dead:
            self._serving = Greenlet.spawn(self._serve_loop)

    def stop_accepting(self) -> None:
        """Stop accepting for now; the listener stays open (connections
        wait in its backlog) and start_accepting() resumes."""
        serving, self._serving = self._serving, None
        if serving is not None and not serving.dead and serving is not getcurrent():
            serving.kill(block=True)

    def serve_forever(self, stop_timeout: float | None = None) -> None:
        """Serve until stop() is called (from another greenlet), or until
        this greenlet is killed; then stop gracefully."""
        self.start()
        try:
            self._stopped_event.wait()
        finally:
            self.stop(timeout=stop_timeout)

    def close(self) -> None:
        """Stop accepting and close the listener; running handlers go on."""
        self._started = False
        serving, self._serving = self._serving, None
        current = getcurrent()
        if serving is not None and not serving.dead and serving is not current:
            # Unwind the accept loop first where we may wait (not in the hub):
            # with nobody parked on the listener, close() releases the fd --
            # and the port -- at once, so a server stopped and started again
            # in one notebook cell does not meet EADDRINUSE. (A parked
            # waiter makes close() keep the fd until the next hub pass.)
            serving.kill(block=current is not get_hub())
        if self.socket is not None:
            self.socket.close()
        self._stopped_event.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, wait up to ``timeout`` seconds (default
        ``stop_timeout``) for running handlers, then kill the rest."""
        self.close()
        if self.pool is not None:
            if timeout is None:
                timeout = self.stop_timeout
            if not self.pool.join(timeout=timeout):
                self.pool.kill(block=True, timeout=timeout)

    def _report(self, context) -> None:
        exc_type, exc, tb = sys.exc_info()
        get_hub().handle_error(context, exc_type, exc, tb)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "serving" if self.started else "closed" if self.closed else "stopped"
        text = f"<{type(self).__name__} {self.address!r} {state}"
        handle = self.__dict__.get("handle")
        if handle is not None:   # set by handle= or set_handle (gevent's repr shows it)
            if getattr(handle, "__self__", None) is self:
                text += f" handle=<bound method {type(self).__name__}.{handle.__name__} of self>"
            else:
                text += f" handle={handle!r}"
        return text + ">"


class StreamServer(_BaseServer):
    """A TCP (or Unix stream) server calling ``handle(sock, address)`` per
    connection; see the module docstring for the contract."""

    #: seconds the accept loop sleeps after running out of file descriptors
    accept_backoff = 0.1
    backlog = 128

    def __init__(self, listener, handle=None, backlog=None, spawn="default",
                 max_connections=-1, ssl_context=None, **ssl_args):
        super().__init__(listener, handle, spawn, max_connections)
        if backlog is not None:
            if not isinstance(listener, tuple):
                raise TypeError("backlog applies only when the server binds "
                                "the listener itself (listener=(host, port))")
            self.backlog = backlog
        if ssl_args and ssl_context is None:
            from labkit import ssl
            ssl_context = ssl.SSLContext(ssl_args.pop("ssl_version", ssl.PROTOCOL_TLS_SERVER))
            ssl_context.load_cert_chain(ssl_args.pop("certfile"), ssl_args.pop("keyfile", None))
        self.ssl_context = ssl_context

    def get_listener(self, address):
        family = _socket.AF_INET6 if ":" in address[0] else _socket.AF_INET
        return _socket.create_server(address, family=family, backlog=self.backlog)

    def handle(self, sock, address) -> None:  # pragma: no cover - replaced
        raise NotImplementedError("pass handle= or override handle in a subclass")

    def _serve_loop(self) -> None:
        listener = self.socket
        pool = self.pool
        nodelay = listener.family in (_socket.AF_INET, _socket.AF_INET6)
        out_of_resources = None  # errno of the failing run of accepts, if any
        # One bound method for every handler greenlet, which holds it as its
        # run for as long as the connection lives (64 bytes each otherwise).
        handle_connection = self._handle_connection
        while True:
            if pool is not None:
                pool.wait_available()
            try:
                sock, address = listener.accept()
            except _socket.timeout:
                # A listener with a timeout (its own, or the default one
                # socket.setdefaulttimeout() gave it): idle is not an error
                continue
            except OSError as exc:
                if listener.fileno() < 0:
                    return  # closed: stop serving
                if exc.errno in _CONNECTION_GONE:
                    continue
                if exc.errno in _OUT_OF_RESOURCES:
                    if exc.errno != out_of_resources:  # once per run, not per retry
                        out_of_resources = exc.errno
                        self._report(self)
                    sleep(self.accept_backoff)
                    continue
                raise
            out_of_resources = None
            if nodelay:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            try:
                self._run_handler(handle_connection, sock, address)
            except Exception:
                # Starting the handler failed (a custom spawn): report it,
                # drop this connection, keep serving the others.
                self._report(self._spawn)
                sock.close()

    def _handle_connection(self, sock, address) -> None:
        """Run the handler for one connection; always close the connection."""
        try:
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_side=True)
            self.handle(sock, address)
        except Exception:
            self._report(self.handle)
        finally:
            sock.close()


class DatagramServer(_BaseServer):
    """A UDP server calling ``handle(data, address)`` per datagram; reply
    with ``sendto(data, address)``."""

    #: the largest datagram received whole
    max_datagram = 65536
    #: datagrams have no connection to hold: handlers are not bounded by default
    max_connections = None

    def get_listener(self, address):
        family = _socket.AF_INET6 if ":" in address[0] else _socket.AF_INET
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
        sock.bind(address)
        return sock

    def handle(self, data, address) -> None:  # pragma: no cover - replaced
        raise NotImplementedError("pass handle= or override handle in a subclass")

    def sendto(self, data, address) -> int:
        return self.socket.sendto(data, address)

    def _serve_loop(self) -> None:
        sock = self.socket
        while True:
            try:
                data, address = sock.recvfrom(self.max_datagram)
            except _socket.timeout:
                continue  # a socket with a timeout: no datagram yet is not an error
            except OSError:
                if sock.fileno() < 0:
                    return
                self._report(self)
                continue
            self._run_handler(self._handle_datagram, data, address)

    def _handle_datagram(self, data, address) -> None:
        try:
            self.handle(data, address)
        except Exception:
            self._report(self.handle)
