"""The loop's io watchers in C (loop_c/lk_io_py.c): who waits on which fd,
lazy interest removal, and what poll() does when its callbacks misbehave."""
import os

import pytest

from labkit._loop import READ, WRITE, ConcurrentObjectUseError, Loop, lib


@pytest.fixture
def loop(backend):
    loop = Loop(backend)
    yield loop
    loop.close()


def _unexpected(cb):
    raise AssertionError(f"callback {cb!r} raised")


def test_a_second_waiter_is_refused_and_the_first_still_fires_once(loop, pipe):
    r, w = pipe
    fired = []
    loop.io_start(r, READ, fired.append)
    with pytest.raises(ConcurrentObjectUseError, match=f"fd {r} already has a greenlet waiting to read"):
        loop.io_start(r, READ, lambda ev: fired.append("second"))
    assert loop.io_waiters == 1
    loop.io_start(w, WRITE, fired.append)       # the other direction, another fd: fine
    os.write(w, b"x")
    assert loop.poll(1.0, _unexpected) == 2
    assert sorted(fired) == [READ, WRITE] and loop.io_waiters == 0
    # Both still ready, and the interest stayed (lazy removal) ...
    assert loop.poll(0, _unexpected) == 2
    assert len(fired) == 2                     # ... but each callback was used up,
    assert lib.lk_io_get(loop.c_handle, r) == lib.lk_io_get(loop.c_handle, w) == 0
    assert loop.poll(0, _unexpected) == 0      # and with nobody waiting, dropped


def test_interest_stays_after_a_wake_up_and_goes_with_cancel(loop, pipe):
    r, w = pipe
    loop.io_start(r, READ, lambda ev: None)
    os.write(w, b"x")
    loop.poll(1.0, _unexpected)
    assert lib.lk_io_get(loop.c_handle, r) == READ      # lazy: no epoll_ctl per wait
    cb = print
    loop.io_start(r, READ, cb)                            # (no set: the bit is there)
    assert loop.io_cancel(r, READ, True) is cb
    assert lib.lk_io_get(loop.c_handle, r) == READ      # keep_interest
    assert loop.io_cancel(r, READ) is None
    assert lib.lk_io_get(loop.c_handle, r) == 0


def test_a_callback_that_raises_is_reported_against_itself_and_the_rest_run(loop, pipe):
    r, w = pipe
    reported, fired = [], []

    def bad(events):
        raise ValueError("boom")

    def on_error(cb):
        import sys
        reported.append((cb, sys.exc_info()[0]))

    loop.io_start(r, READ, bad)
    loop.io_start(w, WRITE, fired.append)
    os.write(w, b"x")
    assert loop.poll(1.0, on_error) == 2
    assert reported == [(bad, ValueError)] and fired == [WRITE]


def test_on_error_that_raises_ends_the_poll_with_its_exception(loop, pipe):
    r, w = pipe
    loop.io_start(r, READ, lambda ev: 1 / 0)

    def on_error(cb):
        raise KeyError("from on_error")

    os.write(w, b"x")
    with pytest.raises(KeyError, match="from on_error"):
        loop.poll(1.0, on_error)
    assert loop.poll(0, _unexpected) == 1   # a poll after it works


def test_forgetting_an_fd_while_watched_returns_its_callbacks_and_they_never_fire(loop, pipe):
    r, w = pipe
    fired = []
    loop.io_start(w, READ, fired.append)    # a pipe's write end: never readable
    loop.io_start(w, WRITE, fired.append)
    assert loop.io_forget(w) == [fired.append, fired.append]
    assert loop.io_waiters == 0 and not loop.io_waiting(w, WRITE)
    assert lib.lk_io_get(loop.c_handle, w) == 0
    os.close(w)
    loop.poll(0.01, _unexpected)
    assert fired == []


def test_a_reader_that_forgets_the_fd_keeps_its_writer_from_being_called(loop):
    import socket
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        calls = []

        def reader(events):
            calls.append("reader")
            assert loop.io_forget(fd) == [writer]

        def writer(events):
            calls.append("writer")

        loop.io_start(fd, READ, reader)
        loop.io_start(fd, WRITE, writer)
        b.send(b"x")                       # readable and writable: one event, both bits
        loop.poll(1.0, _unexpected)
        assert calls == ["reader"] and loop.io_waiters == 0


def test_a_callback_that_closes_the_loop_ends_the_dispatch_cleanly(backend, pipe):
    r, w = pipe
    loop = Loop(backend)
    fired = []

    def close(events):
        fired.append(events)
        loop.close()

    loop.io_start(r, READ, close)           # both fire in one poll, in the kernel's
    loop.io_start(w, WRITE, close)          # order: the first closes the loop
    os.write(w, b"x")
    loop.poll(1.0, _unexpected)             # nothing reported, nothing after the close
    assert len(fired) == 1 and loop.closed
    with pytest.raises(RuntimeError, match="closed"):
        loop.poll(0, _unexpected)
    with pytest.raises(RuntimeError, match="closed"):
        loop.io_start(r, READ, print)


def test_poll_from_its_own_callback_is_refused(loop, pipe):
    r, w = pipe
    caught = []

    def nested(events):
        try:
            loop.poll(0, _unexpected)
        except RuntimeError as exc:
            caught.append(str(exc))

    loop.io_start(r, READ, nested)
    os.write(w, b"x")
    loop.poll(1.0, _unexpected)
    assert caught and "callback" in caught[0]


def test_bad_arguments_change_nothing(loop, pipe):
    r, w = pipe
    os.close(w)
    with pytest.raises(TypeError, match="fd must be an int"):
        loop.io_start(float(r), READ, print)
    with pytest.raises(ValueError, match="fd must be between"):
        loop.io_start(-1, READ, print)
    with pytest.raises(ValueError, match="event must be READ or WRITE"):
        loop.io_start(r, 3, print)
    with pytest.raises(OSError, match=f"watching fd {w}"):
        loop.io_start(w, READ, print)          # closed: the kernel refuses it
    with pytest.raises(ValueError, match="NaN"):
        loop.poll(float("nan"), _unexpected)
    assert loop.io_waiters == 0 and not loop.io_waiting(w, READ)
    assert loop.io_cancel(10**30, READ) is None and loop.io_forget(-5) == []


# -- a socket's wait in one C call (Loop.io_park, through _park.wait_io) -------

def test_a_killed_socket_wait_takes_back_only_its_own_callback():
    import socket

    from labkit import get_hub, sleep, spawn
    from labkit._park import parked_readers, wait_io

    hub = get_hub()
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        parked = spawn(wait_io, hub, fd, READ, None, None, True)
        sleep(0)
        assert parked_readers.get(fd) is parked and hub.loop.io_waiting(fd, READ)
        # The fd is forgotten under it, and someone else starts waiting on
        # the same fd before the parked greenlet unwinds.
        assert hub.loop.io_forget(fd) == [parked.switch]
        fired = []
        hub.loop.io_start(fd, READ, fired.append)
        parked.kill()
        assert parked.dead and fd not in parked_readers
        assert hub.loop.io_waiting(fd, READ)       # not taken back by the killed one
        b.send(b"x")
        for _ in range(100):
            if fired:
                break
            sleep(0.01)
        assert fired == [READ] and hub.loop.io_waiters == 0


def test_a_socket_wait_in_the_hub_is_refused_and_registers_nothing():
    import socket

    from labkit import BlockingSwitchOutError, get_hub, sleep
    from labkit._park import wait_io

    hub = get_hub()
    a, b = socket.socketpair()
    caught = []

    def in_hub():
        try:
            wait_io(hub, a.fileno(), READ, None, None, True)
        except BlockingSwitchOutError as exc:
            caught.append(exc)

    with a, b:
        hub.run_callback(in_hub)
        sleep(0.01)
        assert len(caught) == 1 and hub.loop.io_waiters == 0
        assert not hub.loop.io_waiting(a.fileno(), READ)


def test_a_stray_value_switched_into_a_socket_wait_is_an_error_and_taken_back():
    import socket

    from labkit import get_hub, sleep, spawn
    from labkit._park import parked_readers

    hub = get_hub()
    a, b = socket.socketpair()
    with a, b:
        sock = __import__("labkit.socket", fromlist=["socket"]).socket(fileno=a.detach())
        with sock:
            reader = spawn(sock.recv, 10)
            sleep(0)
            fd = sock.fileno()
            assert parked_readers.get(fd) is reader
            hub.run_callback(reader.switch, "stray")
            reader.join(1)
            assert isinstance(reader.exception, Exception) and "stray" in str(reader.exception)
            assert fd not in parked_readers and not hub.loop.io_waiting(fd, READ)


# -- recv/send that never block (loop_c/lk_sock_py.c, under labkit.socket) ------

def test_recv_parks_even_if_someone_made_the_fd_blocking():
    import threading

    from labkit import sleep, spawn
    from labkit import socket as lsocket

    a, b = lsocket.socketpair()
    with a, b:
        os.set_blocking(a.fileno(), True)     # e.g. a library given the fd
        ticks = []

        def ticker():
            for _ in range(5):
                sleep(0.01)
                ticks.append(1)

        spawn(ticker)
        timer = threading.Timer(0.5, os.write, (b.fileno(), b"x"))
        timer.start()
        try:
            assert a.recv(10) == b"x"
        finally:
            timer.join()
        assert len(ticks) == 5                # the hub ran while recv waited


def test_recv_and_send_answer_as_the_stdlib_does():
    from labkit import socket as lsocket

    a, b = lsocket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="negative buffersize"):
            a.recv(-1)
        with pytest.raises(TypeError):
            a.recv(1.5)
        assert a.recv(0) == b""
        assert b.send(memoryview(b"abc")[1:]) == 2 and a.recv(10) == b"bc"
        b.sendall(b"y" * 5000)
        assert a.recv(100_000) == b"y" * 5000     # past the 64 KiB scratch buffer
        a.setblocking(False)
        with pytest.raises(BlockingIOError):
            a.recv(10)
        b.close()
        assert a.recv(10) == b""              # the end of the stream
        with pytest.raises(BrokenPipeError):
            a.sendall(b"x" * 10)


@pytest.mark.parametrize("timeout", [None, 60], ids=["io_park", "python_path"])
def test_a_killed_socket_wait_leaves_the_next_waiters_entry_and_callback(timeout):
    # g1 parks; its fd is forgotten (as forget_fd does, before _tell_closed
    # runs); g2 parks on the same fd and enters itself under it; g1 is
    # killed. Its take-back must remove neither g2's waits[fd] entry nor
    # g2's callback: g2 gets READ when data comes. (timeout=None goes
    # through Loop.io_park, a timeout through _park.wait_io's Python steps.)
    import socket

    from labkit import get_hub, sleep, spawn
    from labkit._park import parked_readers, wait_io

    hub = get_hub()
    a, b = socket.socketpair()
    with a, b:
        fd = a.fileno()
        g1 = spawn(wait_io, hub, fd, READ, timeout, None, True)
        sleep(0)
        assert parked_readers.get(fd) is g1
        assert hub.loop.io_forget(fd) == [g1.switch]
        g2 = spawn(wait_io, hub, fd, READ, timeout, None, True)
        sleep(0)
        assert parked_readers.get(fd) is g2
        g1.kill()
        assert g1.dead
        assert parked_readers.get(fd) is g2 and hub.loop.io_waiting(fd, READ)
        b.send(b"x")
        g2.join(timeout=5)
        assert g2.dead and g2.exception is None and g2.value & READ
        assert fd not in parked_readers and hub.loop.io_waiters == 0
