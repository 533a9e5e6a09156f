"""WebSockets for greenlets, on wsproto: a server side for WSGIServer, and a client.

    from labkit.websocket import WebSocketApp, connect
    from labkit.wsgi import WSGIServer

    def echo(ws):                      # runs in the connection's greenlet
        while (message := ws.receive()) is not None:
            ws.send(message)

    WSGIServer(("127.0.0.1", 8080), WebSocketApp(echo)).start()
    ws = connect("ws://127.0.0.1:8080/")
    ws.send("hi"); ws.receive()        # -> "hi"
    ws.close()

The framing, masking, fragmentation and close rules are wsproto's (a
sans-I/O protocol library): this module only moves its bytes over a labkit
socket. Sends park in the socket's own wait; a receive parks on a Waiter
named "websocket receive" (see :meth:`WebSocket._wait_for_frame`), which is
what ``%labkit_status`` and the tracer show for it.

The contract:

- :class:`WebSocketApp` is a WSGI application that answers an RFC 6455
  upgrade through WSGIServer's hijack path (``labkit.socket``, a ``101``) and
  then calls ``handler(ws)``; a request that is not a WebSocket upgrade gets
  400. When the handler returns (or raises) the connection is closed with
  the close handshake (1000, or 1011 when it raised).
- :meth:`WebSocket.receive` returns the next whole message (``str`` for
  text, ``bytes`` for binary), or None once the peer closed (the close is
  answered; ``close_code`` and ``close_reason`` say how). Pings are answered
  with pongs as they arrive. A message larger than ``max_message_size``
  closes the connection with 1009 and raises :class:`ConnectionClosed`.
- :meth:`WebSocket.send` returns when the frame is in the kernel's send
  buffer: a slow reader makes the sender park (backpressure), it never
  queues unboundedly in Python. Sending after the close raises
  :class:`ConnectionClosed`.
- :meth:`WebSocket.close` sends a close frame, waits up to ``timeout`` for
  the peer's, and closes the socket.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping,
                            RejectConnection, Request, TextMessage)
from wsproto.utilities import generate_accept_token

from labkit import socket as _socket
from labkit._park import Waiter
from labkit.hub import get_hub
from labkit.timeout import Timeout

__all__ = ["WebSocket", "WebSocketApp", "ConnectionClosed", "connect"]

RECV_SIZE = 65536
#: what a greenlet parked in :meth:`WebSocket.receive` waits on, for
#: ``%labkit_status`` and the tracer
WAIT_LABEL = "websocket receive"


class ConnectionClosed(Exception):
    """The WebSocket is closed: ``code`` and ``reason`` say how."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"WebSocket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class WebSocket:
    """One open WebSocket over ``sock``; ``protocol`` is wsproto's state machine.

    Used by one greenlet at a time for receiving (messages are whole); sends
    from several greenlets are framed whole too (one sendall each).
    """

    def __init__(self, sock, protocol, max_message_size: int = 1 << 20):
        self.sock = sock
        self.protocol = protocol
        self.max_message_size = max_message_size
        self.close_code: int | None = None
        self.close_reason = ""
        self._parts: list = []       # fragments of the message being received
        self._size = 0
        self._messages: list = []    # whole messages received, not yet returned

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def send(self, message) -> None:
        """Send ``message`` (str: a text message, bytes: binary)."""
        if self.protocol.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        self._send(TextMessage(data=message) if isinstance(message, str)
                   else BytesMessage(data=bytes(message)))

    def ping(self, payload: bytes = b"") -> None:
        self._send(Ping(payload=payload))

    def receive(self, timeout: float | None = None):
        """The next message, or None once the peer has closed.

        ``timeout``: seconds to wait (TimeoutError after); None waits forever.
        """
        self.sock.settimeout(timeout)
        while not self._messages:
            if self.closed:
                return None
            try:
                self._wait_for_frame(timeout)
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                raise
            except OSError:
                data = b""
            if not data:  # gone without a close frame
                self._closed(1006, "connection lost")
                return None
            self.protocol.receive_data(data)
            self._handle_events()
        return self._messages.pop(0)

    def _wait_for_frame(self, timeout: float | None) -> None:
        """Park until the socket has bytes (of the next frame) to read.

        A Waiter named ``"websocket receive"`` woken by a watcher on the fd,
        rather than the socket's own wait inside ``recv``: ``%labkit_status``
        and the trace then say what the greenlet waits for ("websocket
        receive") instead of "fd 7 read". Raises TimeoutError after
        ``timeout`` seconds (None: no limit).
        """
        hub = get_hub()
        waiter = Waiter(hub, WAIT_LABEL)
        watcher = hub.loop.io(self.sock.fileno(), 1)  # 1: readable
        watcher.start(waiter.switch, None)
        try:
            if timeout is None:
                waiter.get()
            else:
                with Timeout(timeout, TimeoutError("timed out")):
                    waiter.get()
        finally:
            watcher.stop()
            watcher.close()

    def close(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """Close the WebSocket (handshake bounded by ``timeout``) and its socket."""
        try:
            if self.protocol.state is ConnectionState.OPEN:
                self._send(CloseConnection(code=code, reason=reason))
                self.sock.settimeout(timeout)
                while self.protocol.state is not ConnectionState.CLOSED:
                    data = self.sock.recv(RECV_SIZE)
                    if not data:
                        break
                    self.protocol.receive_data(data)
                    self._handle_events()
        except OSError:
            pass
        finally:
            if self.close_code is None:
                self._closed(code, reason)
            self.sock.close()

    # -- inside ---------------------------------------------------------------
    def _send(self, event) -> None:
        try:
            self.sock.sendall(self.protocol.send(event))
        except OSError as exc:
            self._closed(1006, "connection lost")
            raise ConnectionClosed(1006, str(exc)) from None

    def _closed(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    def _handle_events(self) -> None:
        for event in self.protocol.events():
            if isinstance(event, Message):
                self._size += len(event.data)
                if self._size > self.max_message_size:
                    self._send(CloseConnection(code=1009, reason="message too big"))
                    self._closed(1009, "message too big")
                    raise ConnectionClosed(1009, "message too big")
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts, self._size = self._parts, [], 0
                    joiner = "" if isinstance(event, TextMessage) else b""
                    self._messages.append(parts[0] if len(parts) == 1 else joiner.join(parts))
            elif isinstance(event, Ping):
                self._send(event.response())
            elif isinstance(event, CloseConnection):
                self._closed(event.code, event.reason or "")
                if self.protocol.state is ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())
            elif isinstance(event, RejectConnection):
                self._closed(1006, f"rejected with {event.status_code}")


class WebSocketApp:
    """A WSGI application serving WebSockets with ``handler(ws)``; see the
    module docstring."""

    def __init__(self, handler, max_message_size: int = 1 << 20):
        self.handler = handler
        self.max_message_size = max_message_size

    def __call__(self, environ, start_response):
        sock = environ.get("labkit.socket")
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY")
        if sock is None or key is None or environ.get("HTTP_UPGRADE", "").lower() != "websocket" \
                or environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"a WebSocket upgrade (version 13) was expected\n"]
        write = start_response("101 Switching Protocols", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept",
             generate_accept_token(key.encode("latin-1")).decode("ascii"))])
        write(b"")  # the head goes out; from here the socket speaks WebSocket
        ws = WebSocket(sock, Connection(ConnectionType.SERVER), self.max_message_size)
        code = 1000
        try:
            self.handler(ws)
        except ConnectionClosed:
            pass
        except Exception:
            code = 1011  # the handler failed: say so to the peer, then re-raise
            raise
        finally:
            if ws.protocol.state is ConnectionState.OPEN:
                ws.close(code)
        return []


def connect(url: str, timeout: float = 10.0, max_message_size: int = 1 << 20) -> WebSocket:
    """Open a WebSocket to ``url`` (``ws://host[:port]/path``; no TLS yet)."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"only ws:// URLs are supported, not {url!r}")
    host, port = parts.hostname, parts.port or 80
    sock = _socket.create_connection((host, port), timeout=timeout)
    protocol = WSConnection(ConnectionType.CLIENT)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    try:
        sock.sendall(protocol.send(Request(host=parts.netloc, target=target)))
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                raise ConnectionClosed(1006, "closed during the handshake")
            protocol.receive_data(data)
            ws = WebSocket(sock, protocol, max_message_size)
            for event in protocol.events():
                if isinstance(event, AcceptConnection):
                    return ws
                if isinstance(event, RejectConnection):
                    raise ConnectionClosed(1006, f"handshake rejected with {event.status_code}")
    except BaseException:
        sock.close()
        raise
