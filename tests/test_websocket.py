"""labkit.websocket: WebSockets on wsproto over WSGIServer's hijack path.

Servers are started through the ``serve`` fixture and stopped at teardown.
The independent client is websocket-client (blocking, so it runs in a
thread while the main greenlet parks).
"""
import resource

import pytest

import labkit
from labkit.threadpool import ThreadPool
from labkit.websocket import ConnectionClosed, WebSocketApp, connect

pytestmark = pytest.mark.timeout(60)


def echo(ws):
    while (message := ws.receive()) is not None:
        ws.send(message)


def ws_url(server, path="/"):
    return f"ws://127.0.0.1:{server.server_port}{path}"


def test_labkit_client_and_server_exchange_text_and_binary_and_close_cleanly(serve):
    seen_close = []

    def handler(ws):
        echo(ws)
        seen_close.append(ws.close_code)

    server = serve(WebSocketApp(handler))
    ws = connect(ws_url(server))
    ws.send("hello")
    assert ws.receive(timeout=5) == "hello"
    ws.send(b"\x00\x01" * 40_000)  # larger than one recv: reassembled
    assert ws.receive(timeout=5) == b"\x00\x01" * 40_000
    ws.ping(b"are you there")  # answered with a pong, which receive skips
    ws.send("after ping")
    assert ws.receive(timeout=5) == "after ping"
    ws.close()
    assert ws.close_code == 1000
    for _ in range(300):  # bounded: the handler saw the close
        if seen_close:
            break
        labkit.sleep(0.01)
    assert seen_close == [1000]
    with pytest.raises(ConnectionClosed):
        ws.send("too late")


def test_message_over_the_size_limit_closes_with_1009(serve):
    server = serve(WebSocketApp(echo, max_message_size=100))
    ws = connect(ws_url(server))
    ws.send("x" * 50)
    assert ws.receive(timeout=5) == "x" * 50
    ws.send("x" * 1000)
    assert ws.receive(timeout=5) is None
    assert ws.close_code == 1009
    ws.close()


def test_a_request_that_is_not_an_upgrade_gets_400(serve):
    from labkit import socket
    server = serve(WebSocketApp(echo))
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400 ")


def test_websocket_client_library_talks_to_the_server(serve):
    websocket = pytest.importorskip("websocket")  # websocket-client
    server = serve(WebSocketApp(echo))
    pool = ThreadPool(1)

    def client():
        ws = websocket.create_connection(ws_url(server, "/chat?room=1"), timeout=5)
        try:
            ws.send("ping pong")
            first = ws.recv()
            ws.send_binary(b"\xff" * 3000)
            second = ws.recv()
            ws.close()
            return first, second
        finally:
            ws.close()

    try:
        assert pool.apply(client) == ("ping pong", b"\xff" * 3000)
    finally:
        pool.kill()


def test_send_parks_when_the_peer_does_not_read(serve):
    sent = []

    def flood(ws):
        for _ in range(2000):  # 128 MiB if nothing pushed back
            ws.send(b"x" * 65536)
            sent.append(1)

    server = serve(WebSocketApp(flood, max_message_size=1 << 17))
    ws = connect(ws_url(server))
    labkit.sleep(0.3)  # the client reads nothing meanwhile
    parked_at = len(sent)
    assert 0 < parked_at < 2000  # the kernel buffers filled, then send parked
    assert ws.receive(timeout=5) == b"x" * 65536  # reading lets it go on
    ws.sock.close()


def flask_sock_app():
    flask = pytest.importorskip("flask")
    flask_sock = pytest.importorskip("flask_sock")
    app = flask.Flask(__name__)
    sock = flask_sock.Sock(app)

    @sock.route("/echo")
    def shout(ws):
        while (data := ws.receive()) != "bye":
            ws.send(data.upper())

    return app


def test_flask_sock_app_on_wsgiserver_with_a_real_client(serve):
    websocket = pytest.importorskip("websocket")
    server = serve(flask_sock_app())
    pool = ThreadPool(1)

    def client():
        ws = websocket.create_connection(ws_url(server, "/echo"), timeout=5)
        try:
            replies = []
            for word in ("hello", "labkit"):
                ws.send(word)
                replies.append(ws.recv())
            ws.send("bye")
            return replies
        finally:
            ws.close()

    try:
        assert pool.apply(client) == ["HELLO", "LABKIT"]
    finally:
        pool.kill()


def test_a_thousand_idle_websockets_all_get_a_broadcast(serve):
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2200:
        pytest.skip("needs 2,200 file descriptors (ulimit -n)")
    clients_count = 1000
    joined = set()

    def member(ws):  # notebook-style: the handler only registers, then idles
        joined.add(ws)
        try:
            while ws.receive() is not None:
                pass
        finally:
            joined.discard(ws)

    server = serve(WebSocketApp(member))
    clients = []
    try:
        for _ in range(clients_count):
            clients.append(connect(ws_url(server), timeout=10))
        for _ in range(500):  # bounded: every handler has registered
            if len(joined) == clients_count:
                break
            labkit.sleep(0.01)
        assert len(joined) == clients_count
        for ws in list(joined):  # the broadcast
            ws.send("news")
        assert [ws.receive(timeout=10) for ws in clients] == ["news"] * clients_count
    finally:
        for ws in clients:
            ws.sock.close()


def test_a_greenlet_waiting_for_the_next_frame_shows_as_websocket_receive(serve):
    # in %labkit_status (labkit._park.waiting_on) and in the trace's switch reasons
    import tracing
    from labkit._park import waiting_on

    server = serve(WebSocketApp(echo))
    ws = connect(ws_url(server))
    received = []

    def reader():
        received.append(ws.receive(timeout=5))

    with tracing.trace() as t:
        g = labkit.spawn(reader)
        g.name = "reader"
        labkit.sleep(0.05)
        assert waiting_on(g) == "websocket receive"
        ws.send("ping me")
        g.join(5)
    assert received == ["ping me"]
    assert ("reader", "websocket receive") in {(s.greenlet, s.reason) for s in t.switches()}
    ws.close()


def test_receive_with_a_timeout_raises_timeout_error_and_the_socket_stays_usable(serve):
    server = serve(WebSocketApp(echo))
    ws = connect(ws_url(server))
    with pytest.raises(TimeoutError):
        ws.receive(timeout=0.05)
    ws.send("still there")
    assert ws.receive(timeout=5) == "still there"
    ws.close()
