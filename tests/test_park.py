"""labkit._park: the one home of waiting -- how a greenlet parks, how it is
woken, and how every wait takes its wake-up back."""
import os
import threading
import time

import pytest

import labkit
from labkit import _park
from labkit._loop import READ, WRITE
from labkit.event import Event
from labkit.hub import BlockingSwitchOutError, get_hub
from labkit.lock import Semaphore
from labkit.queue import Queue


def test_wait_io_returns_the_fired_events_and_leaves_no_waiter_behind(pipe):
    r, w = pipe
    hub = get_hub()
    labkit.spawn_later(0.01, os.write, w, b"x")
    assert _park.wait_io(hub, r, READ) & READ
    assert hub.loop.io_waiters == 0 and not hub.loop.io_waiting(r, READ)


def test_wait_io_timeout_raises_the_given_exception_and_takes_the_wait_back(pipe):
    r, _ = pipe
    hub = get_hub()
    with pytest.raises(LookupError):
        _park.wait_io(hub, r, READ, timeout=0.01, timeout_exc=LookupError("late"))
    with pytest.raises(TimeoutError):
        _park.wait_io(hub, r, READ, timeout=0.01)
    assert hub.loop.io_waiters == 0 and hub.loop.active_timers == 0


def test_forget_fd_raises_ebadf_in_the_parked_greenlet_then_closes(pipe):
    r, _ = pipe
    hub = get_hub()
    order = []

    def reader():
        try:
            _park.wait_io(hub, r, READ)
        except OSError as exc:
            order.append(("woken", exc.errno))

    g = labkit.spawn(reader)
    labkit.sleep(0.01)
    assert _park.forget_fd(hub, r, lambda fd: order.append(("closed", fd)))
    g.join(timeout=2)
    assert order == [("woken", 9), ("closed", r)]   # EBADF, then the close


def test_forget_fd_with_nobody_parked_says_so(pipe):
    r, _ = pipe
    assert not _park.forget_fd(get_hub(), r, lambda fd: pytest.fail("must not run"))


def test_a_greenlet_that_left_before_the_close_is_not_told(pipe):
    r, _ = pipe
    hub = get_hub()
    seen = []

    def reader():
        try:
            _park.wait_io(hub, r, READ, timeout=5)
        except BaseException as exc:  # the kill, not EBADF
            seen.append(type(exc).__name__)
            raise

    g = labkit.spawn(reader)
    labkit.sleep(0.01)
    _park.forget_fd(hub, r, lambda fd: None)
    g.kill(block=False)       # queued before forget_fd's EBADF? no: after it
    g.join(timeout=2)
    assert seen == ["OSError"]  # the EBADF callback was queued first


def test_a_closed_pipe_wakes_a_greenlet_reading_from_a_subprocess():
    # Closing a cooperative pipe while a greenlet waits on it used to forget
    # the wait without waking the greenlet: it slept forever.
    from labkit import subprocess
    proc = subprocess.Popen(["sleep", "5"], stdout=subprocess.PIPE)
    try:
        raw = proc.stdout.raw   # (a buffered reader locks out a close from
        g = labkit.spawn(raw.read, 10)   # its own thread while it reads)
        labkit.sleep(0.05)
        raw.close()
        g.join(timeout=2)
        assert g.dead and isinstance(g.exception, OSError) and g.exception.errno == 9
    finally:
        proc.kill()
        proc.wait()


def test_wait_fd_without_a_hub_blocks_the_thread_like_the_stdlib(pipe):
    r, w = pipe
    outcome = []

    def thread_body():
        try:
            _park.wait_fd(r, READ, timeout=0.05)
        except TimeoutError:
            outcome.append("timeout")
        os.write(w, b"x")
        _park.wait_fd(r, READ, timeout=5)
        outcome.append("readable")
        outcome.append(labkit.hub._get_hub_if_any())

    t = threading.Thread(target=thread_body)
    t.start()
    t.join(10)
    assert outcome == ["timeout", "readable", None]   # no hub was made for it


def test_waiting_inside_the_hub_is_refused_with_one_message(pipe):
    r, _ = pipe
    hub = get_hub()
    errors = []

    def in_hub(wait):
        try:
            wait()
        except BlockingSwitchOutError as exc:
            errors.append(str(exc))

    for wait in (lambda: _park.wait_io(hub, r, READ), lambda: labkit.sleep(0.1),
                 lambda: Event().wait(), lambda: _park.Waiter(hub).get()):
        hub.run_callback(in_hub, wait)
    labkit.sleep(0.01)
    assert len(errors) == 4 and len(set(errors)) == 1
    assert "cannot wait inside the hub" in errors[0]


def test_waiting_on_names_what_each_parked_greenlet_waits_for(pipe):
    r, w = pipe
    hub = get_hub()
    event, queue, lock = Event(), Queue(), Semaphore(1)
    lock.acquire()
    other = labkit.spawn(labkit.sleep, 5)
    parked = {
        "fd": labkit.spawn(_park.wait_io, hub, r, READ),
        "fd write": labkit.spawn(_park.wait_io, hub, w, WRITE),
        "sleep": labkit.spawn(labkit.sleep, 5),
        "event": labkit.spawn(event.wait),
        "event timed": labkit.spawn(event.wait, 5),
        "queue": labkit.spawn(queue.get),
        "lock": labkit.spawn(lock.acquire),
        "join": labkit.spawn(other.join),
    }
    labkit.sleep(0.01)
    words = {name: _park.waiting_on(g) for name, g in parked.items()}
    assert words["fd"] == f"fd {r} read"
    assert words["sleep"] == "sleep(5)"
    assert words["event"] == words["event timed"] == "Event"
    assert words["queue"] == "Queue.get"
    assert words["lock"] == "Semaphore"
    assert words["join"] == "join"
    assert _park.waiting_on(labkit.getcurrent()) is None   # running, not parked
    # (the pipe is writable at once: that greenlet is done, not parked)
    assert parked["fd write"].dead and words["fd write"] in (None, f"fd {w} write")
    labkit.killall(list(parked.values()) + [other])


def test_check_seconds_names_the_argument():
    assert _park.check_seconds(1) == 1 and _park.check_seconds(0.5) == 0.5
    with pytest.raises(TypeError, match="timeout must be a number, not str"):
        _park.check_seconds("1", "timeout")
    with pytest.raises(TypeError, match="seconds"):
        _park.check_seconds(True)
    with pytest.raises(ValueError, match="delay must not be NaN"):
        _park.check_seconds(float("nan"), "delay")
    assert _park.check_timeout(None) is None


def test_a_timed_wait_that_is_woken_leaves_no_timer_to_fire_later():
    event = Event()
    labkit.spawn_later(0.01, event.set)
    assert event.wait(timeout=5)
    hub = get_hub()
    deadline = time.monotonic() + 2
    while hub.loop.active_timers and time.monotonic() < deadline:
        labkit.sleep(0.001)
    assert hub.loop.active_timers == 0


def test_a_stray_switch_into_a_sleeping_greenlet_is_an_invalid_switch():
    from labkit.exceptions import InvalidSwitchError
    from labkit.util import wrap_errors
    g = labkit.spawn(wrap_errors(InvalidSwitchError, labkit.sleep), 2)
    labkit.sleep(0)
    labkit.spawn(g.switch, None)
    assert isinstance(g.get(timeout=1), InvalidSwitchError)


def test_waiter_repr_is_gevents():
    w = _park.Waiter()
    assert str(w) == "<Waiter greenlet=None>"
    w.switch(25)
    assert str(w) == "<Waiter greenlet=None value=25>"
