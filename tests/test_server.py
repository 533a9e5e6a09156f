"""labkit.server: StreamServer and DatagramServer.

Every server is started through the ``serve`` fixture (or a ``with`` block),
so every server a test starts is stopped, even when the test fails.
"""
import errno
import io
import struct
import time

import pytest

import labkit
from helpers import echo
from labkit import socket
from labkit.event import Event
from labkit.pool import Group, Pool
from labkit.server import DatagramServer, StreamServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def serve():
    """serve(handle, **kwargs) -> a started StreamServer on 127.0.0.1."""
    servers = []

    def start(handle, listener=("127.0.0.1", 0), **kwargs):
        server = StreamServer(listener, handle, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop(timeout=0.5)


def connect(server, timeout=5):
    return socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout)


def round_trip(server, message=b"hello", reply_size=None):
    """Send ``message``; return the reply (``reply_size`` bytes, default
    as many as sent), or what came before the server closed."""
    reply_size = len(message) if reply_size is None else reply_size
    with connect(server) as client:
        client.sendall(message)
        received = b""
        while len(received) < reply_size:
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


# -- serving ------------------------------------------------------------------------

def test_start_binds_a_free_port_and_serves(serve):
    server = serve(echo)
    assert server.started and not server.closed
    assert server.server_host == "127.0.0.1" and server.server_port > 0
    assert round_trip(server) == b"hello"


def test_accepted_tcp_sockets_have_nodelay(serve):
    seen = []
    server = serve(lambda sock, addr: seen.append(
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
    with connect(server) as client:
        client.recv(1)  # EOF once the handler returned and closed
    assert seen and seen[0] != 0


def test_echo_under_load_loses_corrupts_and_reorders_nothing(serve):
    server = serve(echo)
    clients, trips = 200, 100

    def client(number):
        with connect(server, timeout=10) as sock:
            for trip in range(trips):
                message = struct.pack("!II", number, trip) * 8
                sock.sendall(message)
                received = b""
                while len(received) < len(message):
                    chunk = sock.recv(65536)
                    assert chunk, "connection closed early"
                    received += chunk
                assert received == message
        return trips

    start = time.monotonic()
    greenlets = [labkit.spawn(client, n) for n in range(clients)]
    labkit.joinall(greenlets, raise_error=True, timeout=20)
    assert sum(g.value for g in greenlets) == clients * trips
    assert time.monotonic() - start < 10


def test_listener_may_be_a_listening_socket(serve):
    listener = socket.create_server(("127.0.0.1", 0))
    server = serve(echo, listener=listener)
    assert server.server_port == listener.getsockname()[1]
    assert round_trip(server) == b"hello"


def test_context_manager_starts_and_stops():
    with StreamServer(("127.0.0.1", 0), echo) as server:
        assert round_trip(server) == b"hello"
    assert server.closed and not server.started


def test_serve_forever_returns_after_stop_from_another_greenlet():
    server = StreamServer(("127.0.0.1", 0), echo)
    labkit.spawn_later(0.1, server.stop)
    start = time.monotonic()
    server.serve_forever()
    assert time.monotonic() - start < 2
    assert server.closed


# -- where handlers run ---------------------------------------------------------------

@pytest.mark.parametrize("spawn, most", [(None, 1), (2, 2), (Pool(2), 2)],
                         ids=["None: one at a time", "int", "Pool"])
def test_spawn_bounds_concurrent_handlers(serve, spawn, most):
    active, peak = [0], [0]

    def handle(sock, address):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        labkit.sleep(0.03)
        sock.sendall(b"ok")
        active[0] -= 1

    server = serve(handle, spawn=spawn)

    def client():
        with connect(server) as sock:
            return sock.recv(10)

    results = [labkit.spawn(client) for _ in range(6)]
    labkit.joinall(results, raise_error=True)
    assert [g.value for g in results] == [b"ok"] * 6 and peak == [most]


# -- bad input and failing handlers -------------------------------------------------

def test_a_handler_exception_closes_that_connection_and_the_server_serves_on(serve, capsys):
    def handle(sock, address):
        if sock.recv(10) == b"boom":
            raise RuntimeError("handler failed")
        sock.sendall(b"fine")

    server = serve(handle)
    with connect(server) as doomed:
        doomed.sendall(b"boom")
        assert doomed.recv(10) == b"", "the failed connection was closed"
    assert round_trip(server, b"hello", reply_size=4) == b"fine"
    assert "handler failed" in capsys.readouterr().err


def test_bad_clients_do_not_stop_the_others(serve):
    received = []

    def handle(sock, address):
        data = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\n"):
                sock.sendall(b"%d\n" % len(data))
                data = b""
        received.append(len(data))

    server = serve(handle)
    silent = connect(server)                     # connects, never sends
    resetter = connect(server)
    resetter.sendall(b"half a mess")             # then resets mid-message
    resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    resetter.close()
    big = connect(server, timeout=10)
    payload = b"x" * (10 * 1024 * 1024) + b"\n"  # 10 MB in one write

    def send_big():
        big.sendall(payload)
        return big.makefile("rb").readline()

    big_reply = labkit.spawn(send_big)
    assert round_trip(server, b"small\n", reply_size=2) == b"6\n"
    assert big_reply.get(timeout=10) == b"%d\n" % len(payload)
    assert round_trip(server, b"still here\n", reply_size=3) == b"11\n"
    silent.close()
    big.close()


def test_accept_loop_survives_running_out_of_file_descriptors(serve):
    class FlakyListener:
        """A listener whose first two accepts fail with EMFILE, then ENFILE."""

        def __init__(self):
            self.real = socket.create_server(("127.0.0.1", 0))
            self.failures = [OSError(errno.EMFILE, "Too many open files"),
                             OSError(errno.ENFILE, "File table overflow"),
                             OSError(errno.ECONNABORTED, "aborted")]

        def accept(self):
            if self.failures:
                raise self.failures.pop(0)
            return self.real.accept()

        def __getattr__(self, name):
            return getattr(self.real, name)

    listener = FlakyListener()
    server = serve(echo, listener=listener)
    server.accept_backoff = 0.01
    assert round_trip(server) == b"hello"
    assert listener.failures == []


def test_a_run_of_failing_accepts_is_reported_once_not_per_retry(serve):
    class ExhaustedListener:
        """Every accept fails with EMFILE until ``freed``."""

        def __init__(self):
            self.real = socket.create_server(("127.0.0.1", 0))
            self.failures = 0
            self.freed = False

        def accept(self):
            if not self.freed:
                self.failures += 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.real.accept()

        def __getattr__(self, name):
            return getattr(self.real, name)

    reports = io.StringIO()
    labkit.get_hub().exception_stream = reports
    listener = ExhaustedListener()
    server = serve(echo, listener=listener)
    server.accept_backoff = 0.005
    for _ in range(400):  # bounded: until the loop retried a few times
        if listener.failures >= 5:
            break
        labkit.sleep(0.005)
    assert listener.failures >= 5
    assert reports.getvalue().count("OSError: [Errno 24]") == 1
    listener.freed = True
    assert round_trip(server) == b"hello"


def test_connections_are_bounded_by_default_and_extra_clients_wait_in_the_backlog(serve):
    assert StreamServer(("127.0.0.1", 0), echo).pool.size == 1000
    assert type(StreamServer(("127.0.0.1", 0), echo, max_connections=None).pool) is Group
    release = Event()
    served = []

    def handle(sock, address):
        served.append(address)
        release.wait()
        sock.sendall(b"ok")

    server = serve(handle, max_connections=2)
    clients = [connect(server) for _ in range(3)]  # the third connects (backlog)
    labkit.sleep(0.1)
    assert len(served) == 2  # ... but is not accepted while two are served
    release.set()
    assert [client.recv(10) for client in clients] == [b"ok"] * 3
    assert len(served) == 3
    for client in clients:
        client.close()


# -- stopping ----------------------------------------------------------------------

def test_stop_lets_running_handlers_finish_within_the_timeout(serve):
    finished = []

    def handle(sock, address):
        labkit.sleep(0.1)
        finished.append(True)

    server = serve(handle)
    client = connect(server)
    labkit.sleep(0.02)  # the handler is running
    server.stop(timeout=2)
    assert finished == [True]
    with pytest.raises(OSError):
        connect(server, timeout=1)
    client.close()


def test_stop_kills_handlers_that_outlive_the_timeout(serve):
    outcome = []

    def handle(sock, address):
        try:
            labkit.sleep(30)
        except labkit.GreenletExit:
            outcome.append("killed")
            raise

    server = serve(handle)
    client = connect(server)
    labkit.sleep(0.02)
    start = time.monotonic()
    server.stop(timeout=0.1)
    assert outcome == ["killed"] and time.monotonic() - start < 1
    assert client.recv(10) == b"", "the killed handler's connection was closed"
    client.close()


# -- datagrams ---------------------------------------------------------------------

def test_datagram_server_answers_with_sendto():
    def handle(data, address):
        server.sendto(data.upper(), address)

    server = DatagramServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2)
            for word in (b"one", b"two"):
                client.sendto(word, ("127.0.0.1", server.server_port))
                assert client.recvfrom(100)[0] == word.upper()
    finally:
        server.stop()


def test_stopping_a_server_reports_no_error():
    hub = labkit.get_hub()
    hub.exception_stream = io.StringIO()
    server = StreamServer(("127.0.0.1", 0), lambda sock, address: None)
    server.start()
    labkit.sleep(0.01)
    server.stop()
    labkit.sleep(0.01)
    assert hub.exception_stream.getvalue() == ""


def test_set_handle_replaces_the_handler_and_the_repr_shows_it():
    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()
    try:
        def shout(sock, address):
            sock.sendall(sock.recv(10).upper())
        server.set_handle(shout)
        assert "handle=<function" in repr(server)
        with socket.create_connection(("127.0.0.1", server.server_port)) as client:
            client.sendall(b"hi")
            assert client.recv(10) == b"HI"
    finally:
        server.stop()


def test_stop_accepting_keeps_the_listener_and_start_accepting_resumes():
    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()
    try:
        server.stop_accepting()
        assert server.started
        client = socket.create_connection(("127.0.0.1", server.server_port))  # in the backlog
        client.sendall(b"x")
        with pytest.raises(socket.timeout):
            client.settimeout(0.05)
            client.recv(1)
        server.start_accepting()
        client.settimeout(5)
        assert client.recv(1) == b"x"
        client.close()
    finally:
        server.stop()


def test_a_spawn_that_fails_drops_that_connection_and_serving_goes_on():
    calls = []

    def failing_spawn(function, *args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("no greenlet for you")
        return labkit.spawn(function, *args)

    hub = labkit.get_hub()
    hub.print_exception = lambda *args: None
    server = StreamServer(("127.0.0.1", 0), echo, spawn=failing_spawn)
    server.start()
    try:
        first = socket.create_connection(("127.0.0.1", server.server_port))
        assert first.recv(10) == b""             # closed by the server
        second = socket.create_connection(("127.0.0.1", server.server_port))
        second.sendall(b"ok")
        assert second.recv(10) == b"ok"
        first.close()
        second.close()
    finally:
        server.stop()


def test_servers_and_the_address_in_use_note_survive_a_dead_weakref_proxy(serve):
    # The collector holds objects whose __class__ lookup raises (a proxy to a
    # dead object raises ReferenceError); one such object once hid every server.
    import weakref

    from labkit._servers import address_in_use_note

    class Gone:
        pass

    target = Gone()
    proxy = weakref.proxy(target)
    del target
    held = serve(lambda sock, address: None)
    assert held in labkit.servers()
    with pytest.raises(OSError) as raised:
        StreamServer(("127.0.0.1", held.server_port), lambda s, a: None).start()
    assert raised.value.errno == errno.EADDRINUSE
    note = address_in_use_note(raised.value)
    assert note is not None and f"port {held.server_port} is held by {held!r}" in note
    del proxy


def test_a_stopped_server_frees_its_port_at_once():
    # The accept loop is parked on the listener when stop() closes it; the
    # fd is closed only after that greenlet unwinds, but the port must be
    # free already (a notebook cell that stops and restarts its server).
    first = StreamServer(("127.0.0.1", 0), lambda sock, address: None)
    first.start()
    port = first.server_port
    labkit.sleep(0.01)  # the accept loop parks
    first.stop()
    again = StreamServer(("127.0.0.1", port), lambda sock, address: None)
    again.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        again.stop()


def test_a_listener_with_a_default_timeout_keeps_serving_after_idle_spells(capsys):
    # socket.setdefaulttimeout() gives every new socket a timeout, the
    # servers' own listeners too: a spell with no client longer than it is
    # not an error, and must not end the accept (or receive) loop.
    socket.setdefaulttimeout(0.05)
    try:
        stream = StreamServer(("127.0.0.1", 0), echo)
        datagram = DatagramServer(("127.0.0.1", 0), lambda data, address:
                                  datagram.sendto(data.upper(), address))
        stream.start()   # binds its listener now
        datagram.start()
    finally:
        socket.setdefaulttimeout(None)
    try:
        assert stream.socket.gettimeout() == datagram.socket.gettimeout() == 0.05
        labkit.sleep(0.3)  # several of the listeners' timeouts, with no client
        with socket.create_connection(("127.0.0.1", stream.server_port), timeout=2) as client:
            client.sendall(b"still here")
            assert client.recv(100) == b"still here"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2)
            client.sendto(b"still here", ("127.0.0.1", datagram.server_port))
            assert client.recvfrom(100)[0] == b"STILL HERE"
    finally:
        stream.stop()
        datagram.stop()
    assert "Traceback" not in capsys.readouterr().err
