"""Asleep keep-alive connections of labkit.wsgi and the pool (issue 21).

An asleep connection has no greenlet, but it is still a connection: it
keeps its greenlet's slot of the pool, so it counts toward
``max_connections``, and it gives the slot back when it closes. A woken
connection whose new greenlet is killed before it runs is closed, not left
open with nobody to serve it.
"""
import gc
import re

import pytest

import labkit
from labkit import select, socket
from labkit.wsgi import WSGIServer

pytestmark = pytest.mark.timeout(60)

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def wait_for(condition, seconds=5.0):
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        labkit.sleep(0.01)
    raise AssertionError("condition not met in time")


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    assert match, f"not an HTTP response: {response[:200]!r}"
    return int(match.group(1))


def asleep(server):
    return [c for c in server.connections if c.asleep]


def connect(server):
    return socket.create_connection(("127.0.0.1", server.server_port), timeout=5)


def test_asleep_connections_count_toward_max_connections(serve):
    n = 2
    server = serve(hello, sleep_after=0, max_connections=n)
    clients = [connect(server) for _ in range(n)]
    try:
        for sock in clients:
            sock.sendall(GET)
            assert status_of(sock.recv(65536)) == 200
        wait_for(lambda: len(asleep(server)) == n and len(server.pool) == 0)
        assert server.pool.free_count() == 0 and server.pool.full()
        extra = connect(server)  # (the kernel completes the handshake: backlog)
        clients.append(extra)
        extra.sendall(GET)
        labkit.sleep(0.3)
        assert len(server.connections) == n  # not accepted: it waits in the backlog
        assert select.select([extra], [], [], 0)[0] == []
        # an asleep one that wakes is served at once, on the slot it kept
        clients[0].sendall(GET)
        assert status_of(clients[0].recv(65536)) == 200
        assert len(server.connections) == n
        # one closes (the close wakes it, and it ends): the waiting one is served
        clients[1].close()
        assert status_of(extra.recv(65536)) == 200
        wait_for(lambda: len(asleep(server)) == n)
    finally:
        for sock in clients:
            sock.close()
    wait_for(lambda: not server.connections and len(server.pool) == 0)
    assert server.pool.free_count() == n


def test_an_asleep_connection_closed_by_the_server_gives_its_slot_back(serve):
    server = serve(hello, sleep_after=0, max_connections=1, keepalive_timeout=0.3)
    with connect(server) as first:
        first.sendall(GET)
        assert status_of(first.recv(65536)) == 200
        wait_for(lambda: len(asleep(server)) == 1)
        with connect(server) as second:
            second.sendall(GET)
            # keepalive_timeout closes the asleep first one; its slot serves the second
            assert first.recv(100) == b""
            assert status_of(second.recv(65536)) == 200
    wait_for(lambda: not server.connections and server.pool.free_count() == 1)


def test_a_woken_connection_whose_greenlet_is_killed_before_it_runs_is_closed(serve):
    class KillOnWake(WSGIServer):
        kill_next_wake = False

        def wake_connection(self, connection):
            super().wake_connection(connection)
            if self.kill_next_wake:  # in the same hub pass: the new greenlet has not run yet
                self.kill_next_wake = False
                self.pool.kill(block=False)

    server = serve(hello, server_class=KillOnWake, sleep_after=0, max_connections=1)
    with connect(server) as sock:
        sock.sendall(GET)
        assert status_of(sock.recv(65536)) == 200
        wait_for(lambda: len(asleep(server)) == 1 and len(server.pool) == 0)
        server.kill_next_wake = True
        sock.sendall(GET)
        # closed, not left open with nobody serving it (a reset: the server
        # closed with the request unread)
        with pytest.raises(ConnectionResetError):
            assert sock.recv(65536) == b""
    wait_for(lambda: not server.connections and server.pool.free_count() == 1)
    # its slot is free again: a new connection is served
    with connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(sock.recv(65536)) == 200


def _live_parsers() -> int:
    from labkit._http import RequestParser
    return sum(1 for o in gc.get_objects() if type(o) is RequestParser)


def test_a_dropped_parser_is_freed_without_the_cyclic_collector(serve):
    # llhttp holds its parser's bound methods: a parser dropped without
    # RequestParser.release() is a cycle that only a collection frees (with
    # its buffers), for every connection that closes or falls asleep.
    server = serve(hello, sleep_after=0)
    gc.collect()
    gc.disable()
    try:
        before = _live_parsers()
        for close in (True, False) * 5:
            sock = connect(server)
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             if close else GET)
                assert status_of(sock.recv(65536)) == 200
                if close:
                    assert sock.recv(65536) == b""
                else:
                    wait_for(lambda: len(asleep(server)) == 1)
            finally:
                sock.close()
            wait_for(lambda: not server.connections)
        # (a handler greenlet may still be ending, its connection in a local)
        wait_for(lambda: _live_parsers() == before)
    finally:
        gc.enable()
