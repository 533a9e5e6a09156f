"""labkit.select: select() and poll() that park the greenlet until an fd is ready."""
import time

import pytest

import labkit
from labkit import select, socket

pytestmark = pytest.mark.timeout(60)


def count_ticks(ticks):
    # Every 1 ms: ~80 ticks in the waits below, so ">= 5" holds even when a
    # busy machine makes each tick late; a blocked thread gives 0.
    while True:
        ticks.append(1)
        labkit.sleep(0.001)


def test_select_returns_at_once_what_is_ready(pair):
    a, b = pair
    b.sendall(b"x")
    assert select.select([a], [a], [], 1) == ([a], [a], [])


def test_select_parks_until_readable_while_others_run(pair):
    a, b = pair
    ticks = []
    ticker = labkit.spawn(count_ticks, ticks)
    labkit.spawn_later(0.1, b.sendall, b"late")
    start = time.monotonic()
    assert select.select([a.fileno()], [], [], 2) == ([a.fileno()], [], [])
    assert 0.09 < time.monotonic() - start < 1
    assert len(ticks) >= 5
    ticker.kill()


def test_select_times_out_with_empty_lists(pair):
    a, _ = pair
    start = time.monotonic()
    assert select.select([a], [], [], 0.05) == ([], [], [])
    assert time.monotonic() - start >= 0.045


def test_select_zero_timeout_polls(pair):
    a, _ = pair
    assert select.select([a], [], [], 0) == ([], [], [])


def test_select_rejects_negative_timeout(pair):
    with pytest.raises(ValueError):
        select.select([pair[0]], [], [], -1)


def test_select_on_a_socket_closed_meanwhile_raises_ebadf(pair):
    a, _ = pair
    labkit.spawn_later(0.02, a.close)
    with pytest.raises(OSError):
        select.select([a], [], [], 2)


def test_poll_register_modify_unregister(pair):
    a, b = pair
    poller = select.poll()
    poller.register(a, select.POLLIN)
    assert poller.poll(0) == []
    labkit.spawn_later(0.05, b.sendall, b"x")
    assert poller.poll(2000) == [(a.fileno(), select.POLLIN)]
    poller.modify(a, select.POLLOUT)
    assert poller.poll(100) == [(a.fileno(), select.POLLOUT)]
    poller.unregister(a)
    assert poller.poll(10) == []


def test_poll_timeout_is_in_milliseconds_and_parks(pair):
    a, _ = pair
    poller = select.poll()
    poller.register(a.fileno(), select.POLLIN)
    ticks = []
    ticker = labkit.spawn(count_ticks, ticks)
    start = time.monotonic()
    assert poller.poll(80) == []
    assert 0.075 < time.monotonic() - start < 1
    assert len(ticks) >= 5
    ticker.kill()


def test_poll_reports_hangup(pair):
    a, b = pair
    poller = select.poll()
    poller.register(a, select.POLLIN)
    labkit.spawn_later(0.02, b.close)
    [(fd, events)] = poller.poll(2000)
    assert fd == a.fileno() and events & (select.POLLIN | select.POLLHUP)


def test_select_on_an_fd_closed_before_it_is_waited_on_asks_the_stdlib_again():
    # The loop refuses a closed fd (EBADF); select then gives the stdlib's
    # answer for it, which for a closed pipe fd is EBADF too.
    import os
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(OSError):
            select.select([r], [], [], 0.01)
    finally:
        os.close(w)


def test_poll_refuses_to_register_a_closed_fd():
    import os
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(ValueError, match="Invalid file descriptor"):
        select.poll().register(r)
