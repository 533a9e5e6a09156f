"""labkit.os: the os module, cooperative where it blocks (gevent.os)."""
import errno
import os as std_os
import sys

import pytest

import labkit
from labkit import os


def test_the_standard_names_are_there():
    assert os.pipe is std_os.pipe and os.getpid is std_os.getpid and os.path is std_os.path


def test_nb_read_parks_until_data_arrives():
    r, w = std_os.pipe()
    try:
        assert os.make_nonblocking(r) is True
        assert os.make_nonblocking(r) is None     # already non-blocking
        labkit.spawn_later(0.01, std_os.write, w, b"late")
        assert os.nb_read(r, 10) == b"late"
    finally:
        std_os.close(r)
        std_os.close(w)


def test_nb_write_parks_while_the_pipe_is_full():
    r, w = std_os.pipe()
    try:
        os.make_nonblocking(r)
        os.make_nonblocking(w)
        total = 4 * 65536       # more than a pipe holds
        received = []

        def reader():
            while sum(map(len, received)) < total:
                received.append(os.nb_read(r, 65536))

        g = labkit.spawn(reader)
        data = memoryview(b"x" * total)
        while data:
            data = data[os.nb_write(w, data):]
        g.join(5)
        assert sum(map(len, received)) == total
    finally:
        std_os.close(r)
        std_os.close(w)


def test_tp_read_and_tp_write_go_through_the_thread_pool():
    r, w = std_os.pipe()
    try:
        assert os.tp_write(w, b"abc") == 3
        assert os.tp_read(r, 3) == b"abc"
    finally:
        std_os.close(r)
        std_os.close(w)


def test_close_wakes_a_parked_reader_with_ebadf():
    r, w = std_os.pipe()
    os.make_nonblocking(r)
    seen = []

    def read():
        try:
            os.nb_read(r, 1)
        except OSError as exc:
            seen.append(exc.errno)

    g = labkit.spawn(read)
    labkit.sleep(0.001)
    os.close(r)
    g.join(1)
    std_os.close(w)
    assert seen == [errno.EBADF]
    with pytest.raises(OSError):
        os.close(r)


@pytest.mark.skipif(not hasattr(std_os, "fork"), reason="needs fork")
def test_fork_and_watch_calls_back_when_the_child_exits():
    from labkit.event import AsyncResult
    done = AsyncResult()
    pid = os.fork_and_watch(done.set)
    if pid == 0:
        std_os._exit(3)
    watcher = done.get(timeout=10)
    assert watcher.pid == pid and std_os.waitstatus_to_exitcode(watcher.rstatus) == 3


@pytest.mark.skipif(not hasattr(std_os, "fork"), reason="needs fork")
def test_waitpid_parks_the_greenlet_not_the_hub():
    pid = std_os.fork()
    if pid == 0:
        import time
        time.sleep(0.05)
        std_os._exit(0)
    ticks = []
    ticker = labkit.spawn(lambda: [ticks.append(labkit.sleep(0.005)) for _ in range(1000)])
    assert os.waitpid(pid, 0)[0] == pid
    ticker.kill()
    assert len(ticks) >= 3
