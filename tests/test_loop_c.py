"""The C event loop (loop_c/), driven directly through cffi.

Each test reads as one sentence of the contract in loop_c/lk_loop.cdef and
loop_c/README.md, and runs on both backends.  Everything is local
(socketpairs) and bounded in time; timing bounds are deliberately loose.
"""
import errno
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

import pytest

from labkit._lk_loop import ffi, lib

pytestmark = pytest.mark.timeout(30)

LOOP_C = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "loop_c")
LINUX = sys.platform.startswith("linux")
BACKENDS = ["epoll", "poll"] if LINUX else ["poll"]
BACKEND_IDS = {"epoll": lib.LK_BACKEND_EPOLL, "poll": lib.LK_BACKEND_POLL}
RW = lib.LK_READ | lib.LK_WRITE


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def loop(backend):
    loop = lib.lk_loop_new(BACKEND_IDS[backend])
    assert loop != ffi.NULL
    yield loop
    lib.lk_loop_free(loop)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def poll(loop, timeout_s=0.0, max_events=64):
    """One lk_poll; the events as a {id: bits} dict (ids are unique per call)."""
    out = ffi.new("lk_event[]", max_events)
    n = lib.lk_poll(loop, -1 if timeout_s is None else int(timeout_s * 1e9), out, max_events)
    assert n >= 0, os.strerror(-n)
    events = {}
    for i in range(n):
        assert out[i].id not in events
        events[out[i].id] = out[i].events
    return events


def stats(loop):
    s = ffi.new("lk_stats *")
    lib.lk_loop_get_stats(loop, s)
    return s


# ------------------------------------------------------------------ contract

def _declarations(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return " ".join(text.split())


def test_header_mirrors_the_cdef():
    with open(os.path.join(LOOP_C, "lk_loop.cdef")) as f:
        cdef = _declarations(f.read())
    with open(os.path.join(LOOP_C, "lk_loop.h")) as f:
        header = f.read()
    mirror = re.search(r"mirror of lk_loop.cdef: begin ---- \*/(.*)/\* ---- mirror", header, re.S)
    assert _declarations(mirror.group(1)) == cdef


# ------------------------------------------------------------------- backends

def test_default_backend_is_epoll_on_linux_else_poll():
    loop = lib.lk_loop_new(lib.LK_BACKEND_DEFAULT)
    try:
        assert ffi.string(lib.lk_loop_backend_name(loop)) == (b"epoll" if LINUX else b"poll")
    finally:
        lib.lk_loop_free(loop)


def test_backend_name_and_fd(loop, backend):
    assert ffi.string(lib.lk_loop_backend_name(loop)).decode() == backend
    fd = lib.lk_loop_backend_fd(loop)
    if backend == "poll":
        assert fd == -1
    else:
        assert fd >= 0 and os.get_inheritable(fd) is False   # CLOEXEC


def test_unknown_backend_is_refused():
    assert lib.lk_loop_new(99) == ffi.NULL
    assert ffi.errno == errno.EINVAL


def test_free_accepts_null():
    lib.lk_loop_free(ffi.NULL)


def test_clock_is_pythons_monotonic_clock():
    before = time.monotonic_ns()
    now = lib.lk_now_ns()
    assert before <= now <= time.monotonic_ns()


# ------------------------------------------------------------------------ io

def test_readable_after_the_peer_writes(loop, pair):
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
    assert poll(loop) == {}
    b.send(b"x")
    assert poll(loop, 5) == {a.fileno(): lib.LK_READ}
    # Level-triggered: still readable until the data is read.
    assert poll(loop) == {a.fileno(): lib.LK_READ}
    a.recv(1)
    assert poll(loop) == {}


def test_an_empty_socket_is_writable(loop, pair):
    a, _ = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_WRITE) == 0
    assert poll(loop, 5) == {a.fileno(): lib.LK_WRITE}


def test_mask_changes_select_the_reported_bits(loop, pair):
    a, b = pair
    b.send(b"x")
    fd = a.fileno()
    assert lib.lk_io_set(loop, fd, RW) == 0
    assert poll(loop) == {fd: RW}
    assert lib.lk_io_set(loop, fd, lib.LK_WRITE) == 0
    assert lib.lk_io_get(loop, fd) == lib.LK_WRITE
    assert poll(loop) == {fd: lib.LK_WRITE}
    assert lib.lk_io_set(loop, fd, lib.LK_READ) == 0
    assert poll(loop) == {fd: lib.LK_READ}


def test_stopping_to_watch_means_no_more_events(loop, pair):
    a, b = pair
    fd = a.fileno()
    assert lib.lk_io_count(loop) == 0
    assert lib.lk_io_set(loop, fd, RW) == 0
    assert lib.lk_io_set(loop, fd, RW) == 0          # unchanged: no-op
    assert lib.lk_io_set(loop, b.fileno(), lib.LK_WRITE) == 0
    assert lib.lk_io_count(loop) == 2
    assert lib.lk_io_set(loop, fd, 0) == 0
    assert lib.lk_io_set(loop, fd, 0) == 0           # unchanged: no-op
    assert lib.lk_io_count(loop) == 1
    assert lib.lk_io_get(loop, fd) == 0
    b.send(b"x")
    assert poll(loop) == {b.fileno(): lib.LK_WRITE}


def test_more_ready_fds_than_room_are_all_reported_in_turn(loop):
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        fds = {a.fileno() for a, _ in pairs}
        for fd in fds:
            assert lib.lk_io_set(loop, fd, lib.LK_WRITE) == 0
        seen = set()
        for _ in range(3):
            events = poll(loop, max_events=2)
            assert len(events) == 2
            seen |= set(events)
        assert seen == fds
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_hangup_is_reported_as_error_plus_the_registered_interest(loop, pair):
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_WRITE) == 0
    b.close()
    events = poll(loop, 5)
    assert events[a.fileno()] & lib.LK_ERROR
    assert events[a.fileno()] & lib.LK_WRITE


def test_peer_close_wakes_a_reader_with_error(loop, pair):
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
    b.close()
    assert poll(loop, 5) == {a.fileno(): lib.LK_READ | lib.LK_ERROR}


def test_an_fd_closed_behind_the_loops_back(loop, backend):
    a, b = socket.socketpair()
    fd = a.fileno()
    assert lib.lk_io_set(loop, fd, lib.LK_READ) == 0
    a.close()
    events = poll(loop)
    if backend == "poll":
        # POLLNVAL: reported once, with the interest, and the fd forgotten.
        assert events == {fd: lib.LK_ERROR | lib.LK_READ}
        assert lib.lk_io_get(loop, fd) == 0
        assert poll(loop) == {}
    else:
        # epoll forgets a closed fd by itself: nothing to report.
        assert events == {}
    assert lib.lk_io_set(loop, fd, 0) == 0            # must not error
    assert lib.lk_io_count(loop) == 0
    b.close()


# -------------------------------------------------------------------- timers

def test_a_timer_fires_after_roughly_its_delay(loop):
    start = time.monotonic()
    t = lib.lk_timer_start(loop, 50_000_000)
    events = {}
    while not events:
        events = poll(loop, None)        # forever: only the timer can end it
    elapsed = time.monotonic() - start
    assert events == {t: lib.LK_TIMER}
    assert 0.045 <= elapsed < 5


def test_poll_with_a_timeout_returns_nothing_after_about_the_timeout(loop):
    start = time.monotonic()
    assert poll(loop, 0.05) == {}
    assert 0.045 <= time.monotonic() - start < 5


def test_a_cancelled_timer_does_not_fire(loop):
    t = lib.lk_timer_start(loop, 20_000_000)
    assert lib.lk_timer_cancel(loop, t) == 1
    assert poll(loop, 0.1) == {}


def test_io_events_come_before_timers(loop, pair):
    a, _ = pair
    t = lib.lk_timer_start(loop, 0)
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_WRITE) == 0
    out = ffi.new("lk_event[4]")
    assert lib.lk_poll(loop, 0, out, 4) == 2
    assert (out[0].id, out[0].events) == (a.fileno(), lib.LK_WRITE)
    assert (out[1].id, out[1].events) == (t, lib.LK_TIMER)


# ------------------------------------------------------------------- wake-up

def test_wake_from_another_thread_ends_an_infinite_poll(loop):
    waker = threading.Timer(0.05, lib.lk_wake, args=(loop,))
    start = time.monotonic()
    waker.start()
    try:
        assert poll(loop, None) == {}     # the wake-up fd is never reported
    finally:
        waker.join()
    assert time.monotonic() - start < 5
    assert stats(loop).wakeups == 1


def test_concurrent_wakes_coalesce(loop, pair):
    calls_per_thread, n_threads = 2000, 8
    barrier = threading.Barrier(n_threads)

    def hammer():
        barrier.wait()
        for _ in range(calls_per_thread):
            lib.lk_wake(loop)

    threads = [threading.Thread(target=hammer) for _ in range(n_threads)]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        poll(loop, 0.001)
    for th in threads:
        th.join()
    assert 1 <= stats(loop).wakeups <= calls_per_thread * n_threads

    # Still works: a pending wake is drained, then nothing until the next one.
    poll(loop)
    assert poll(loop) == {}
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
    b.send(b"x")
    assert poll(loop, 5) == {a.fileno(): lib.LK_READ}
    before = stats(loop).wakeups
    lib.lk_wake(loop)
    lib.lk_wake(loop)
    assert stats(loop).wakeups == before + 1


# ------------------------------------------------------------------- signals

def test_a_signal_ends_the_wait_so_python_can_run_its_handler(loop):
    ran = []
    old_handler = signal.signal(signal.SIGALRM, lambda signum, frame: ran.append(signum))
    # pytest-timeout may own ITIMER_REAL: take it over, then give it back.
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, 0.05)
    start = time.monotonic()
    try:
        out = ffi.new("lk_event[4]")
        n = lib.lk_poll(loop, 5 * 10**9, out, 4)
        elapsed = time.monotonic() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL,
                             max(old_delay - (time.monotonic() - start), 0.001), old_interval)
    assert n == 0
    assert elapsed < 2
    assert ran == [signal.SIGALRM]


# ------------------------------------------------------------- bad arguments

def test_bad_arguments_return_errors(loop, backend, pair):
    a, _ = pair
    assert lib.lk_io_set(loop, -1, lib.LK_READ) == -errno.EINVAL
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_ERROR) == -errno.EINVAL
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_TIMER) == -errno.EINVAL
    assert lib.lk_io_set(loop, a.fileno(), 1 << 31) == -errno.EINVAL
    assert lib.lk_io_get(loop, -1) == 0
    assert lib.lk_io_get(loop, 10**6) == 0
    assert lib.lk_timer_cancel(loop, -1) == 0
    assert lib.lk_timer_cancel(loop, 2**31 - 1) == 0
    out = ffi.new("lk_event[1]")
    assert lib.lk_poll(loop, 0, out, 0) == -errno.EINVAL
    assert lib.lk_poll(loop, 0, ffi.NULL, 1) == -errno.EINVAL
    assert lib.lk_io_count(loop) == 0


def test_a_closed_fd_is_refused_with_ebadf(loop):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert lib.lk_io_set(loop, r, lib.LK_READ) == -errno.EBADF
    assert lib.lk_io_set(loop, 2**31 - 1, lib.LK_READ) == -errno.EBADF
    assert lib.lk_io_count(loop) == 0


def test_a_regular_file(loop, backend):
    with tempfile.TemporaryFile() as f:
        rc = lib.lk_io_set(loop, f.fileno(), lib.LK_READ)
        if backend == "epoll":
            assert rc == -errno.EPERM      # epoll refuses files: always ready
            assert lib.lk_io_count(loop) == 0
        else:
            assert rc == 0                 # poll(2) reports them always ready
            assert poll(loop) == {f.fileno(): lib.LK_READ}
            assert lib.lk_io_set(loop, f.fileno(), 0) == 0


@pytest.mark.skipif(LINUX, reason="epoll exists on Linux")
def test_epoll_is_refused_where_it_does_not_exist():
    assert lib.lk_loop_new(lib.LK_BACKEND_EPOLL) == ffi.NULL
    assert ffi.errno == errno.ENOSYS


# ---------------------------------------------------------------------- fork

def test_after_fork_the_child_gets_a_working_loop_and_the_parent_keeps_its(loop, backend, pair):
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
    parent_backend_fd = lib.lk_loop_backend_fd(loop)

    pid = os.fork()
    if pid == 0:                              # child: report through the exit code
        code = 1
        try:
            code = 2
            assert lib.lk_loop_after_fork(loop) == 0
            code = 3
            if backend == "epoll":
                assert lib.lk_loop_backend_fd(loop) >= 0
            assert lib.lk_io_get(loop, a.fileno()) == lib.LK_READ
            assert lib.lk_io_count(loop) == 1
            code = 4
            assert poll(loop) == {}
            b.send(b"c")
            assert poll(loop, 5) == {a.fileno(): lib.LK_READ}
            assert a.recv(1) == b"c"
            code = 5
            t = lib.lk_timer_start(loop, 0)
            assert poll(loop, 5) == {t: lib.LK_TIMER}
            code = 6
            lib.lk_wake(loop)
            assert poll(loop, 5) == {}
            code = 0
        finally:
            os._exit(code)

    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The child closed its copy of the poller without editing it.
    assert lib.lk_loop_backend_fd(loop) == parent_backend_fd
    b.send(b"p")
    assert poll(loop, 5) == {a.fileno(): lib.LK_READ}


# --------------------------------------------------------------------- stats

def test_stats_count_iterations_and_events(loop, pair):
    a, _ = pair
    lib.lk_io_set(loop, a.fileno(), lib.LK_WRITE)
    lib.lk_timer_start(loop, 0)
    poll(loop)
    poll(loop)
    s = stats(loop)
    assert s.iterations == 2
    assert s.io_events == 2
    assert s.timer_events == 1
    assert s.wakeups == 0


def test_due_timers_fire_even_when_more_fds_are_ready_than_the_array_holds(loop):
    # Eight always-readable fds and an array of four: io must not take every
    # slot on every call, or a due timer would never be reported.
    pairs = [socket.socketpair() for _ in range(8)]
    try:
        for a, b in pairs:
            b.send(b"x")
            assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
        timer = lib.lk_timer_start(loop, 0)
        events = poll(loop, 0.0, max_events=4)
        assert events.get(timer) == lib.LK_TIMER
        assert len(events) == 4
    finally:
        for a, b in pairs:
            lib.lk_io_set(loop, a.fileno(), 0)
            a.close()
            b.close()


# ---------------------------------------------------------------------- spin

def test_no_spin_by_default_and_none_for_a_zero_timeout(loop):
    poll(loop, 0.001)
    lib.lk_loop_set_spin(loop, 10_000_000)
    poll(loop, 0)                       # a non-blocking poll never spins
    assert stats(loop).spins == 0


def test_a_spinning_poll_catches_an_event_written_by_another_thread(loop, pair):
    # The writer waits 1 ms, far inside a 5 s spin budget: the event must be
    # caught by the spin itself, before the poll ever sleeps.
    a, b = pair
    assert lib.lk_io_set(loop, a.fileno(), lib.LK_READ) == 0
    lib.lk_loop_set_spin(loop, 5_000_000_000)
    writer = threading.Timer(0.001, b.send, args=(b"x",))
    writer.start()
    try:
        assert poll(loop, None) == {a.fileno(): lib.LK_READ}
    finally:
        writer.join()
    s = stats(loop)
    assert (s.spins, s.spin_hits) == (1, 1)


def test_a_spin_ends_at_the_callers_timeout_and_at_the_next_timer(loop):
    lib.lk_loop_set_spin(loop, 60_000_000_000)   # a minute: far beyond both
    start = time.monotonic()
    assert poll(loop, 0.02) == {}
    lib.lk_loop_set_spin(loop, 60_000_000_000)   # (a miss turned it off)
    timer = lib.lk_timer_start(loop, 20_000_000)
    assert poll(loop, None) == {timer: lib.LK_TIMER}   # due when the spin ends
    assert time.monotonic() - start < 10         # not a minute per call
    s = stats(loop)
    assert (s.spins, s.spin_hits) == (2, 0)


def test_a_spin_cut_short_by_a_timer_stays_asked_for(loop):
    # The reply the spin waits for may still be due after the timer.
    lib.lk_loop_set_spin(loop, 60_000_000_000)
    timer = lib.lk_timer_start(loop, 2_000_000)
    assert poll(loop, None) == {timer: lib.LK_TIMER}
    assert poll(loop, 0.002) == {}               # spins again, to its timeout
    assert stats(loop).spins == 2


def test_a_spin_that_catches_nothing_returns_and_the_next_wait_sleeps(loop, pair):
    # Returning lets Python run a signal handler that fired during the spin
    # (no syscall was interrupted), and a late reply costs one spin only.
    a, b = pair
    lib.lk_io_set(loop, a.fileno(), lib.LK_READ)
    lib.lk_loop_set_spin(loop, 1_000_000)        # 1 ms
    start = time.monotonic()
    assert poll(loop, None) == {}                # forever, but the spin ran out
    assert time.monotonic() - start < 5
    writer = threading.Timer(0.005, b.send, args=(b"x",))
    writer.start()
    try:
        assert poll(loop, None) == {a.fileno(): lib.LK_READ}   # slept, no spin
    finally:
        writer.join()
    s = stats(loop)
    assert (s.spins, s.spin_hits) == (1, 0)


def test_spin_zero_or_negative_turns_spinning_off(loop):
    lib.lk_loop_set_spin(loop, 10_000_000)
    lib.lk_loop_set_spin(loop, -5)
    poll(loop, 0.001)
    lib.lk_loop_set_spin(loop, 0)
    poll(loop, 0.001)
    assert stats(loop).spins == 0


def _wake_soon(loop, delay=0.001):
    waker = threading.Timer(delay, lib.lk_wake, args=(loop,))
    waker.start()
    return waker


def test_a_wait_ended_quickly_by_a_wake_up_makes_the_next_wait_spin(loop):
    lib.lk_loop_set_wake_spin(loop, 5_000_000_000)    # 5 s: "quickly" is certain
    waker = _wake_soon(loop)
    assert poll(loop, None) == {}                     # slept, ended by lk_wake
    waker.join()
    assert stats(loop).spins == 0                     # no history yet: no spin
    waker = _wake_soon(loop)
    assert poll(loop, None) == {}                     # this one spins, and catches it
    waker.join()
    s = stats(loop)
    assert (s.spins, s.spin_hits) == (1, 1)


def test_a_wait_that_ends_any_other_way_turns_the_learned_spin_off(loop, pair):
    a, b = pair
    lib.lk_loop_set_wake_spin(loop, 5_000_000_000)
    waker = _wake_soon(loop)
    poll(loop, None)
    waker.join()
    assert poll(loop, 0.02) == {}          # spins (learned), times out: no wake-up
    assert stats(loop).spins == 1
    assert poll(loop, 0.02) == {}          # so this one sleeps at once
    assert stats(loop).spins == 1
    # An io event is not a wake-up either.
    waker = _wake_soon(loop)
    poll(loop, None)
    waker.join()
    lib.lk_io_set(loop, a.fileno(), lib.LK_READ)
    b.send(b"x")
    poll(loop, 5)                          # spins, catches the io event
    spins = stats(loop).spins
    a.recv(1)
    assert poll(loop, 0.02) == {}
    assert stats(loop).spins == spins


def test_no_learned_spin_without_a_wake_spin_budget(loop):
    for _ in range(2):
        waker = _wake_soon(loop)
        poll(loop, None)
        waker.join()
    assert stats(loop).spins == 0


# ------------------------------------------------- poll without the GIL trip

def test_the_nowait_poller_is_lk_poll_with_timeout_zero(loop, pair):
    from labkit._lk_poll_py import nowait
    a, b = pair
    out = ffi.new("lk_event[]", 4)
    addr = lambda p: int(ffi.cast("uintptr_t", p))
    poll0 = nowait(addr(ffi.addressof(lib, "lk_poll")), addr(loop), addr(out), 4)
    assert poll0() == 0
    lib.lk_io_set(loop, a.fileno(), lib.LK_READ)
    b.send(b"x")
    assert poll0() == 1 and (out[0].id, out[0].events) == (a.fileno(), lib.LK_READ)
    assert stats(loop).iterations == 2


@pytest.mark.parametrize("args, error", [
    ((1, 2, 3), TypeError),
    ((0, 1, 1, 4), ValueError),        # a NULL function
    (("f", 1, 1, 4), ValueError),      # not an address
    ((1, 1, 1, 0), ValueError),        # max_events < 1
])
def test_the_nowait_poller_rejects_bad_arguments(args, error):
    from labkit._lk_poll_py import nowait
    with pytest.raises(error):
        nowait(*args)


# ------------------------------------------ timers as CPython objects (Loop)

@pytest.fixture
def pyloop(backend):
    from labkit._loop import Loop
    loop = Loop(backend)
    yield loop
    loop.close()


def _dispatch_until(pyloop, predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        pyloop.poll(0.01, lambda cb: pytest.fail(f"callback {cb!r} raised"))


def test_start_timer_runs_its_callback_once_with_its_args(pyloop):
    fired = []
    t = pyloop.start_timer(0, fired.append, "x")
    assert t.active and t.args == ("x",) and t.callback == fired.append
    assert pyloop.active_timers == 1
    _dispatch_until(pyloop, lambda: fired)
    assert fired == ["x"] and not t.active and pyloop.active_timers == 0
    t.cancel()                      # after it fired: harmless
    t.stop()


def test_a_cancelled_start_timer_never_fires_and_frees_its_id(pyloop):
    fired = []
    t = pyloop.start_timer(0.0, fired.append, 1)
    t.cancel()
    t.cancel()
    assert not t.active and pyloop.pending_timers == 0
    assert lib.lk_timer_count(pyloop.c_handle) == 0
    pyloop.poll(0, lambda cb: None)
    assert fired == []


def test_start_timer_clamps_long_and_negative_delays(pyloop):
    for forever in (float("inf"), 10**30, 5e9):
        t = pyloop.start_timer(forever, print)
        assert pyloop.next_timeout() > 100 * 365 * 86400
        t.cancel()
    fired = []
    pyloop.start_timer(-5, fired.append, "now")
    assert pyloop.next_timeout() == 0
    _dispatch_until(pyloop, lambda: fired)
    assert fired == ["now"]


@pytest.mark.parametrize("args, error, words", [
    ((float("nan"), print), ValueError, "NaN"),
    (("1", print), TypeError, "number"),
    ((1.0, 42), TypeError, "callable"),
    ((1.0,), TypeError, "seconds, callback"),
])
def test_start_timer_rejects_bad_arguments(pyloop, args, error, words):
    with pytest.raises(error, match=words):
        pyloop.start_timer(*args)
    assert pyloop.pending_timers == 0 and lib.lk_timer_count(pyloop.c_handle) == 0


def test_timers_of_a_closed_loop(backend):
    from labkit._loop import Loop
    loop = Loop(backend)
    t = loop.start_timer(10, print)
    loop.close()
    assert not t.active
    t.cancel()                      # the C loop is gone: must not touch it
    with pytest.raises(RuntimeError, match="closed"):
        loop.start_timer(1, print)


def test_an_unreferenced_timer_is_pending_but_not_counted_as_keeping_the_loop(pyloop):
    t = pyloop.timer(10, print, ref=False)
    assert t.ref is False and pyloop.active_timers == 0
    t.ref = True
    assert t.ref is True and pyloop.active_timers == 1
    t.cancel()
    assert pyloop.active_timers == 0 and pyloop.pending_timers == 0
    t.ref = False                   # on a cancelled timer: no count changes
    assert pyloop.active_timers == 0 and pyloop.pending_timers == 0


def test_a_timer_in_a_reference_cycle_is_collected(pyloop):
    # The Timer's callback refers back to the object holding the timer:
    # without tp_traverse/tp_clear the cycle would never be freed.
    import gc
    import weakref

    class Holder:
        def fire(self):
            pass

    holder = Holder()
    holder.timer = pyloop.start_timer(10, holder.fire)
    holder.timer.cancel()
    gone = weakref.ref(holder)
    del holder
    gc.collect()
    assert gone() is None


@pytest.mark.parametrize("args, error", [
    ((0, 1, 1), ValueError),                   # a NULL function
    (("f", 1, 1), ValueError),                 # not an address
    ((1, 1, 0), ValueError),                   # a NULL loop
    ((1, 1, 1, {}, set()), TypeError),         # too many
    ((1, 1), TypeError),
])
def test_the_timer_table_rejects_bad_arguments(args, error):
    from labkit._lk_poll_py import timer_table
    with pytest.raises(error):
        timer_table(*args)
