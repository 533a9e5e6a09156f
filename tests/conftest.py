"""Shared fixtures: every test starts with a fresh hub in the main thread.

A hub is per thread and created lazily, so without this fixture a test that
left a greenlet parked or a timer armed would leak it into the next test.
"""
import os

import pytest

from labkit.hub import _local


def _destroy_current_hub() -> None:
    hub = getattr(_local, "hub", None)
    if hub is not None:
        hub.destroy()


@pytest.fixture(autouse=True)
def fresh_hub():
    _destroy_current_hub()
    yield
    _destroy_current_hub()


@pytest.fixture(params=["epoll", "poll"])
def backend(request, monkeypatch):
    """Run the test once per C loop backend (the hub reads LABKIT_BACKEND)."""
    monkeypatch.setenv("LABKIT_BACKEND", request.param)
    _destroy_current_hub()
    return request.param


@pytest.fixture
def pair():
    """A connected pair of cooperative sockets, closed after the test."""
    from labkit import socket

    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    """An os.pipe() (read fd, write fd); both closed after the test, unless
    the test closed them itself."""
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def serve():
    """serve(app, server_class=WSGIServer, **kwargs) -> a started server on
    127.0.0.1, stopped when the test ends. (test_pywsgi narrows it to pywsgi's
    server class; test_server defines its own for its own servers.)"""
    from labkit.wsgi import WSGIServer
    servers = []

    def start(app, server_class=WSGIServer, **kwargs):
        server = server_class(("127.0.0.1", 0), app, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop(timeout=1)


@pytest.fixture
def recording():
    """A tracing session for the test (tracing.start()), stopped at its end
    unless the test stopped it itself."""
    import tracing
    t = tracing.start()
    try:
        yield t
    finally:
        if tracing._session is not None:
            tracing.stop()
