"""labkit.selectors: the stdlib selectors API, with select() parking the greenlet."""
import selectors as stdlib_selectors
import time

import pytest

import labkit
from labkit import selectors, socket

pytestmark = pytest.mark.timeout(60)


def test_default_selector_is_a_stdlib_base_selector():
    with selectors.DefaultSelector() as sel:
        assert isinstance(sel, stdlib_selectors.BaseSelector)
    assert selectors.SelectSelector is selectors.DefaultSelector


def test_select_parks_until_an_fd_is_ready(pair):
    a, b = pair
    ticks = []

    def ticker():
        while True:
            ticks.append(1)
            labkit.sleep(0.001)   # ~100 ticks in the wait; 0 if it blocked

    t = labkit.spawn(ticker)
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, data="reader")
        labkit.spawn_later(0.1, b.sendall, b"x")
        [(key, events)] = sel.select(timeout=2)
        assert key.fileobj is a and key.data == "reader"
        assert events == selectors.EVENT_READ
    assert len(ticks) >= 5
    t.kill()


def test_select_times_out_empty(pair):
    a, _ = pair
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ)
        start = time.monotonic()
        assert sel.select(timeout=0.05) == []
        assert time.monotonic() - start >= 0.045


def test_read_and_write_readiness_are_reported_together(pair):
    a, b = pair
    b.sendall(b"x")
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ | selectors.EVENT_WRITE)
        [(key, events)] = sel.select(timeout=1)
        assert events == selectors.EVENT_READ | selectors.EVENT_WRITE
        sel.modify(a, selectors.EVENT_WRITE)
        [(key, events)] = sel.select(timeout=1)
        assert events == selectors.EVENT_WRITE
        sel.unregister(a)
        assert sel.get_map() == {}


def test_gevents_selector_name_is_the_cooperative_selector():
    from labkit import selectors
    assert selectors.GeventSelector is selectors.DefaultSelector
