"""labkit.socket: stdlib sockets whose blocking calls park the greenlet.

Each test is one rule of the contract in labkit/socket.py's docstring.
Loopback only; every wait is bounded.
"""
import errno
import fcntl
import os
import socket as stdlib_socket
import sys
import threading
import time

import pytest

import labkit
from labkit import socket

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def listener():
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def ticker(ticks):
    """A greenlet body that counts how often it gets to run: every 1 ms, so
    that a wait of 0.1 s gives ~100 ticks and the tests' thresholds hold
    even when a busy machine makes each tick late."""
    while True:
        ticks.append(time.monotonic())
        labkit.sleep(0.001)


# -- the module replaces `socket` ---------------------------------------------

def test_module_reexports_the_stdlib_names():
    for name in ("AF_INET", "SOCK_STREAM", "SOL_SOCKET", "error", "timeout",
                 "gaierror", "herror", "has_ipv6", "inet_aton", "htons"):
        assert getattr(socket, name) is getattr(stdlib_socket, name)
    assert set(stdlib_socket.__all__) <= set(socket.__all__)
    assert socket.timeout is TimeoutError


def test_socket_is_a_stdlib_socket_and_nonblocking_underneath(pair):
    a, _ = pair
    assert isinstance(a, stdlib_socket.socket)
    assert isinstance(a, socket.SocketType)
    assert a.gettimeout() is None and a.getblocking()  # blocking for the caller,
    assert fcntl.fcntl(a.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK  # not for the fd


# -- timeouts, exactly as the stdlib's ----------------------------------------

def test_default_timeout_comes_from_getdefaulttimeout():
    assert socket.socket().gettimeout() is None
    socket.setdefaulttimeout(2.5)
    try:
        with socket.socket() as sock:
            assert sock.gettimeout() == 2.5
    finally:
        socket.setdefaulttimeout(None)


def test_settimeout_validates_like_the_stdlib():
    with socket.socket() as ours, stdlib_socket.socket() as theirs:
        for bad, kind in ((-1, ValueError), (float("nan"), ValueError), ("1", TypeError)):
            with pytest.raises(kind):
                theirs.settimeout(bad)
            with pytest.raises(kind):
                ours.settimeout(bad)


def test_setblocking_and_settimeout_agree_like_the_stdlib():
    with socket.socket() as sock:
        sock.setblocking(False)
        assert sock.gettimeout() == 0.0 and not sock.getblocking()
        sock.setblocking(True)
        assert sock.gettimeout() is None and sock.getblocking()
        sock.settimeout(1)
        assert sock.gettimeout() == 1.0 and sock.getblocking()
        assert sock.timeout == 1.0


def test_recv_times_out_with_socket_timeout_while_others_run(pair):
    a, _ = pair
    a.settimeout(0.1)
    ticks = []
    t = labkit.spawn(ticker, ticks)
    start = time.monotonic()
    with pytest.raises(socket.timeout, match="timed out"):
        a.recv(10)
    elapsed = time.monotonic() - start
    t.kill()
    assert 0.09 < elapsed < 1.0
    assert len(ticks) >= 5, "the hub ran other greenlets during the wait"


def test_nonblocking_socket_raises_blockingioerror(pair):
    a, _ = pair
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        a.recv(10)


def test_sendall_timeout_covers_the_whole_call(pair):
    # The reader makes progress every 20 ms, so no single wait times out,
    # but the whole sendall takes far longer than its 0.2 s timeout.
    a, b = pair
    a.settimeout(0.2)

    def slow_reader():
        while True:
            b.recv(65536)
            labkit.sleep(0.02)

    reader = labkit.spawn(slow_reader)
    start = time.monotonic()
    with pytest.raises(socket.timeout):
        a.sendall(b"x" * (20 * 1024 * 1024))
    assert time.monotonic() - start < 1.0
    reader.kill()


def test_accept_times_out(listener):
    listener.settimeout(0.05)
    with pytest.raises(TimeoutError):
        listener.accept()


# -- cooperative data transfer ------------------------------------------------

def test_recv_and_send_interleave_with_other_greenlets(pair):
    a, b = pair
    log = []

    def ping():
        for i in range(5):
            a.sendall(b"ping %d" % i)
            log.append(a.recv(100))

    def pong():
        for _ in range(5):
            data = b.recv(100)
            log.append(data)
            b.sendall(data.replace(b"ping", b"pong"))

    labkit.joinall([labkit.spawn(ping), labkit.spawn(pong)], raise_error=True)
    assert log == [m for i in range(5) for m in (b"ping %d" % i, b"pong %d" % i)]


def test_sendall_of_a_large_buffer_arrives_whole(pair):
    a, b = pair
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB, far above the socket buffer
    received = bytearray()

    def reader():
        while len(received) < len(payload):
            received.extend(b.recv(65536))

    r = labkit.spawn(reader)
    a.sendall(memoryview(payload))
    r.join(timeout=5)
    assert bytes(received) == payload


def test_recv_into_and_recvfrom_into(pair):
    a, b = pair
    buf = bytearray(10)
    labkit.spawn_later(0.01, b.sendall, b"hello")
    assert a.recv_into(buf) == 5 and buf[:5] == b"hello"
    labkit.spawn_later(0.01, b.sendall, b"again")
    n, _ = a.recvfrom_into(buf)
    assert buf[:n] == b"again"


def test_udp_sendto_and_recvfrom():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        labkit.spawn_later(0.01, client.sendto, b"datagram", server.getsockname())
        data, address = server.recvfrom(100)
        assert data == b"datagram" and address[1] == client.getsockname()[1]


def test_makefile_readline_parks_until_a_line_is_complete(pair):
    a, b = pair
    reader = a.makefile("rb")

    def writer():
        for part in (b"hel", b"lo\nwor", b"ld\n"):
            b.sendall(part)
            labkit.sleep(0.01)
        b.close()

    labkit.spawn(writer)
    assert reader.readline() == b"hello\n"
    assert reader.readline() == b"world\n"
    assert reader.readline() == b""
    reader.close()


# -- connecting and accepting ---------------------------------------------------

def test_accept_and_create_connection(listener):
    port = listener.getsockname()[1]

    def serve_one():
        conn, _ = listener.accept()
        with conn:
            assert isinstance(conn, socket.socket)
            conn.sendall(conn.recv(100).upper())

    server = labkit.spawn(serve_one)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
        client.sendall(b"shout")
        assert client.recv(100) == b"SHOUT"
    server.get(timeout=2)


def test_create_connection_all_errors(listener):
    port = listener.getsockname()[1]
    listener.close()
    if sys.version_info < (3, 11):   # no ExceptionGroup: refused, as the stdlib does
        with pytest.raises(TypeError):
            socket.create_connection(("127.0.0.1", port), all_errors=True)
        return
    with pytest.raises(ExceptionGroup) as caught:  # noqa: F821 - a builtin since 3.11
        socket.create_connection(("127.0.0.1", port), timeout=2, all_errors=True)
    assert [type(exc) for exc in caught.value.exceptions] == [ConnectionRefusedError]


def test_connect_to_a_closed_port_is_refused(listener):
    port = listener.getsockname()[1]
    listener.close()
    with socket.socket() as sock:
        with pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED


def test_connect_resolves_localhost(listener):
    port = listener.getsockname()[1]
    with socket.socket() as sock:
        sock.connect(("localhost", port))
        assert sock.getpeername() == ("127.0.0.1", port)


# -- close wakes the greenlets parked on the socket ---------------------------

def test_close_wakes_a_waiting_reader_with_ebadf(pair):
    a, b = pair
    outcome = []

    def reader():
        try:
            a.recv(10)
        except OSError as exc:
            outcome.append(exc.errno)

    r = labkit.spawn(reader)
    labkit.sleep(0.01)
    a.close()
    assert a.fileno() == -1
    r.join(timeout=2)
    assert outcome == [errno.EBADF]
    assert b.recv(10) == b"", "the fd really got closed: the peer sees EOF"


def test_closing_and_reopening_does_not_disturb_a_new_socket_on_the_same_fd(pair):
    # The woken greenlet must unwind before the fd number can be reused.
    a, _ = pair
    errors = []

    def reader():
        try:
            a.recv(10)
        except OSError as exc:
            errors.append(exc)

    labkit.spawn(reader)
    labkit.sleep(0.01)
    a.close()
    c, d = socket.socketpair()
    labkit.spawn_later(0.05, d.sendall, b"fresh")
    with c, d:
        assert c.recv(10) == b"fresh"
    assert len(errors) == 1


def test_dup_and_detach(pair):
    a, b = pair
    a.settimeout(3)
    twin = a.dup()
    assert twin.gettimeout() == 3 and isinstance(twin, socket.socket)
    fd = twin.detach()
    assert twin.fileno() == -1
    with socket.socket(fileno=fd) as again:
        b.sendall(b"x")
        assert again.recv(1) == b"x"


def test_fromfd_makes_a_cooperative_socket(pair):
    a, b = pair
    with socket.fromfd(a.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as twin:
        labkit.spawn_later(0.01, b.sendall, b"y")
        assert twin.recv(1) == b"y"


# -- threads without a hub block like the stdlib ----------------------------------

def test_a_thread_without_a_hub_blocks_instead_of_creating_one(pair):
    a, b = pair
    result = []

    def in_thread():
        a.settimeout(2)
        result.append(a.recv(10))
        result.append(labkit.hub._get_hub_if_any())

    thread = threading.Thread(target=in_thread)
    thread.start()
    time.sleep(0.05)
    b.sendall(b"thread")
    thread.join(5)
    assert result == [b"thread", None]


# -- DNS -------------------------------------------------------------------------

def test_getaddrinfo_answers_numeric_hosts_and_localhost():
    info = socket.getaddrinfo("127.0.0.1", 80, socket.AF_INET, socket.SOCK_STREAM)
    assert info[0][4] == ("127.0.0.1", 80)
    assert any(i[4][0] == "127.0.0.1" for i in socket.getaddrinfo("localhost", 80))
    assert socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert socket.gethostbyname("localhost") == "127.0.0.1"


def test_a_slow_resolver_does_not_block_the_hub(monkeypatch):
    pytest.importorskip("labkit.threadpool")

    def slow_getaddrinfo(*args):
        time.sleep(0.3)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80))]

    monkeypatch.setattr(socket, "_blocking_getaddrinfo", slow_getaddrinfo)
    ticks = []
    t = labkit.spawn(ticker, ticks)
    info = socket.getaddrinfo("slow.example", 80)
    t.kill()
    assert info[0][4] == ("10.0.0.1", 80)
    assert len(ticks) >= 10, "greenlets ran while the resolver thread worked"


def test_closing_after_a_kill_does_not_throw_into_the_victims_cleanup():
    # The kill is queued first, so the reader leaves recv() with GreenletExit;
    # the EBADF meant for that recv must not land in the wait of its cleanup.
    a, b = socket.socketpair()
    log = []

    def reader():
        try:
            a.recv(10)
        except labkit.GreenletExit:
            try:
                labkit.sleep(0.02)
                log.append("cleanup ok")
            except BaseException as exc:
                log.append(f"cleanup got {exc!r}")
            raise

    g = labkit.spawn(reader)
    labkit.sleep(0.01)
    g.kill(block=False)
    a.close()
    g.join()
    b.close()
    assert log == ["cleanup ok"]
