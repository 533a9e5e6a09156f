"""labkit.core: gevent's watcher API on hub.loop (timer, io, async_, callback,
prepare/check/idle), built on the loop's one-shot registrations."""
import os
import threading
import time

import pytest

import labkit
from labkit import core
from labkit.event import Event


@pytest.fixture
def loop():
    return labkit.get_hub().loop


def test_gevent_core_names_the_loop_class(loop):
    assert isinstance(loop, core.loop)


def test_a_timer_watcher_is_not_started_until_start(loop):
    fired = []
    t = loop.timer(0.01)
    assert not t.active
    labkit.sleep(0.03)
    t.start(fired.append, "once")
    assert t.active
    labkit.sleep(0.03)
    assert fired == ["once"] and not t.active
    t.close()


def test_a_repeating_timer_fires_until_stopped(loop):
    fired = []
    with loop.timer(0.002, 0.002) as t:
        t.start(lambda: fired.append(1))
        labkit.sleep(0.05)
        t.stop()
        count = len(fired)
        labkit.sleep(0.02)
    assert count >= 3 and len(fired) == count


def test_the_loop_keeps_its_own_timer_form_for_labkit(loop):
    fired = []
    t = loop.timer(0.001, fired.append, "x")   # a callable second argument: started
    labkit.sleep(0.01)
    assert fired == ["x"] and not t.active


def test_an_unreferenced_timer_watcher_does_not_keep_the_loop_alive(loop):
    t = loop.timer(10, ref=False)
    t.start(lambda: None)
    with pytest.raises(labkit.LoopExit):
        Event().wait()
    t.close()


def test_hub_wait_parks_until_the_watcher_fires_once(loop):
    start = time.monotonic()
    labkit.get_hub().wait(loop.timer(0.02))
    assert time.monotonic() - start >= 0.015


def test_an_io_watcher_fires_each_time_the_fd_is_readable(loop):
    r, w = os.pipe()
    got = []

    def on_readable(events):
        got.append((events, os.read(r, 10)))

    watcher = loop.io(r, 1)
    try:
        watcher.start(on_readable, pass_events=True)
        for chunk in (b"a", b"b"):
            os.write(w, chunk)
            labkit.sleep(0.01)
        watcher.stop()
        os.write(w, b"c")
        labkit.sleep(0.01)
    finally:
        watcher.close()
        os.close(r)
        os.close(w)
    assert got == [(1, b"a"), (1, b"b")]


def test_an_io_watcher_refuses_a_bad_event_mask(loop):
    with pytest.raises(ValueError):
        loop.io(0, 4)


def test_an_async_watcher_runs_its_callback_once_for_sends_from_another_thread(loop):
    got = []
    done = Event()
    watcher = loop.async_()

    def callback():
        got.append(threading.get_ident())
        done.set()

    watcher.start(callback)
    thread = threading.Thread(target=lambda: (watcher.send(), watcher.send()))
    thread.start()
    assert done.wait(5)
    thread.join()
    watcher.close()
    assert got == [threading.get_ident()]


def test_a_started_async_watcher_keeps_the_loop_alive_until_stopped(loop):
    watcher = loop.async_()
    watcher.start(lambda: None)
    assert not labkit.wait(timeout=0.02)      # the loop would run on: timed out
    watcher.stop()
    assert labkit.wait(timeout=1)             # nothing left: it finishes


def test_a_callback_watcher_runs_once_and_can_be_stopped_first(loop):
    got = []
    cb = loop.callback()
    cb.start(got.append, 1)
    assert cb.pending
    labkit.sleep(0)
    stopped = loop.callback()
    stopped.start(got.append, 2)
    stopped.stop()
    labkit.sleep(0)
    assert got == [1]


def test_loop_run_callback_is_the_hubs(loop):
    got = []
    loop.run_callback(got.append, "hi")
    labkit.sleep(0)
    assert got == ["hi"]


def test_prepare_and_check_run_around_each_poll_and_idle_when_nothing_else(loop):
    seen = []
    prepare, check, idle = loop.prepare(), loop.check(), loop.idle()
    prepare.start(seen.append, "prepare")
    check.start(seen.append, "check")
    idle.start(seen.append, "idle")
    labkit.sleep(0.01)
    for w in (prepare, check, idle):
        w.close()
    assert "prepare" in seen and "check" in seen and "idle" in seen
    first_prepare = seen.index("prepare")
    assert seen[first_prepare + 1] == "check"


def test_update_now_exists_and_now_reads_the_loop_clock(loop):
    loop.update_now()
    assert abs(loop.now() - time.monotonic()) < 1


def test_a_signal_watcher_fires_when_the_signal_arrives(loop):
    import signal as std_signal
    got = []
    watcher = loop.signal(std_signal.SIGUSR1)
    watcher.start(got.append, "usr1")
    try:
        os.kill(os.getpid(), std_signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            labkit.sleep(0.001)
    finally:
        watcher.close()
    assert got == ["usr1"]


def test_a_child_watcher_fires_with_the_exit_status(loop):
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    watcher = loop.child(pid)
    done = Event()
    watcher.start(done.set)
    assert done.wait(10)
    assert watcher.rpid == pid and os.waitstatus_to_exitcode(watcher.rstatus) == 7


def test_a_stat_watcher_fires_when_the_file_changes(loop, tmp_path):
    path = tmp_path / "watched"
    path.write_text("a")
    watcher = loop.stat(str(path), 0.01)
    fired = Event()
    watcher.start(fired.set)
    try:
        path.write_text("bb")
        assert fired.wait(5)
        assert watcher.attr.st_size == 2 and watcher.prev.st_size == 1
    finally:
        watcher.close()


def test_a_fork_watcher_runs_in_the_child(loop):
    r, w = os.pipe()
    watcher = loop.fork()
    watcher.start(lambda: os.write(w, b"child"))
    pid = os.fork()
    if pid == 0:
        labkit.sleep(0.01)      # the child's hub runs the callback
        os._exit(0)
    os.waitpid(pid, 0)
    watcher.close()
    assert os.read(r, 10) == b"child"
    os.close(r)
    os.close(w)


def test_the_main_threads_loop_is_the_default_one(loop):
    assert loop.default is True
    other = []
    thread = threading.Thread(target=lambda: other.append(labkit.get_hub().loop.default))
    thread.start()
    thread.join(5)
    assert other == [False]


def test_closing_fd_wakes_what_waits_on_it(loop):
    from labkit.hub import wait_read
    r, w = os.pipe()
    outcome = []

    def reader():
        try:
            wait_read(r)
        except OSError as exc:
            outcome.append(exc.errno)

    g = labkit.spawn(reader)
    labkit.sleep(0.001)
    assert loop.closing_fd(r) is True
    g.join(1)
    import errno
    assert outcome == [errno.EBADF]
    os.close(r)
    os.close(w)


def test_the_loop_implements_gevents_loop_interface(loop):
    verify = pytest.importorskip("zope.interface.verify")
    from labkit._interfaces import ICallback, ILoop, IWatcher
    assert verify.verifyObject(ILoop, loop)
    assert verify.verifyObject(ICallback, loop.run_callback(lambda: None))
    assert verify.verifyObject(IWatcher, loop.timer(1))
