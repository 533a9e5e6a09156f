"""The hub: scheduling order, waiting, errors, LoopExit, signals, threads, fork.

Every test here runs on both C loop backends (epoll and poll).
"""
import io
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import labkit
from greenlet import greenlet

from labkit import (
    BlockingSwitchOutError, LoopExit, Waiter, get_hub, getcurrent, sleep, spawn,
)
from labkit.event import Event
from labkit.hub import wait_read

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("backend")]


def test_get_hub_is_one_hub_per_thread():
    here = get_hub()
    assert get_hub() is here
    other = []
    t = threading.Thread(target=lambda: other.append(get_hub()))
    t.start()
    t.join()
    assert other[0] is not here
    assert other[0].thread_ident != here.thread_ident


def test_hub_uses_the_backend_asked_for(backend):
    assert get_hub().loop.backend_name == backend


def test_sleep_zero_interleaves_ready_greenlets_in_fifo_order():
    out = []

    def worker(name):
        for i in (1, 2, 3):
            out.append(f"{name}{i}")
            sleep(0)

    labkit.joinall([spawn(worker, "A"), spawn(worker, "B")])
    assert out == ["A1", "B1", "A2", "B2", "A3", "B3"]


def test_a_callback_may_take_back_callbacks_queued_behind_it():
    # Semaphore.acquire takes back a serve callback made pointless: the pass
    # that counted it must not fail when the ready queue runs out early.
    hub = get_hub()
    errors = io.StringIO()
    hub.exception_stream = errors
    ran = []

    def b():
        ran.append("b")

    def taker():
        assert hub.take_back(b)   # the newest entry: popped, not overwritten
        ran.append("taker")

    hub.schedule(taker)
    hub.schedule(b)
    sleep(0.01)       # the pass counted taker and b, so it pops once more,
    assert ran == ["taker"]       # from an empty queue
    assert errors.getvalue() == ""
    assert not hub.take_back(b)   # gone: nothing left to take back


def test_a_lone_greenlets_sleep0_does_not_switch_when_nobody_else_could_run():
    switches = []

    def count(event, args):
        if event in ("switch", "throw"):
            switches.append(args)

    def lone():
        for _ in range(1000):
            sleep(0)

    g = spawn(lone)
    sleep(0)                      # g starts
    old = greenlet.settrace(count)
    try:
        g.join()
    finally:
        greenlet.settrace(old)
    # One round trip through the hub per sleep(0) would be 2000 switches;
    # only the polls due every 0.2 ms of running still switch.
    assert len(switches) < 1000


def test_a_busy_hub_does_not_starve_a_thread_that_wants_the_gil():
    # The busy hub polls every 0.2 ms. Through cffi each poll gave the GIL
    # up and took it straight back, which woke the waiting thread just too
    # late, every time: it waited for as long as the hub stayed busy.
    # Polls that cannot wait now keep the GIL (loop_c/lk_poll_py.c), and
    # CPython's 5 ms switch interval lets the thread in.
    stamps = {}
    start = time.monotonic()

    def thread_body():
        time.sleep(0.003)
        stamps["thread"] = time.monotonic() - start

    def busy():
        while time.monotonic() - start < 0.5:
            sleep(0)
        stamps["busy"] = time.monotonic() - start

    thread = threading.Thread(target=thread_body)
    g = spawn(busy)
    thread.start()
    g.join()
    thread.join()
    assert stamps["thread"] < stamps["busy"] - 0.1


def test_sleep0_in_a_greenlet_ends_a_hosts_tick_as_before():
    # A host loop (Jupyter) asked for one pass: a greenlet yielding with
    # sleep(0) must give the thread back, not loop for 0.2 ms.
    hub = get_hub()
    yields = []

    def yielder():
        for _ in range(10_000):
            yields.append(1)
            sleep(0)

    g = spawn(yielder)
    try:
        for _ in range(3):
            before = len(yields)
            hub.tick()
            assert len(yields) - before <= 2
    finally:
        g.kill(block=False)
        hub.tick()


def test_sleep0_after_the_hub_died_does_not_raise():
    hub = get_hub()
    sleep(0)
    sleep(0)          # a pass that polled: a busy-poll deadline is set
    hub.throw()       # the hub dies (GreenletExit); its frame is gone
    sleep(0)


def test_sleep0_lets_a_half_done_wake_up_finish_first():
    # The hub is in the middle of waking two waiters when the first one
    # sleeps(0): the second must run before it continues.
    ev = Event()
    order = []

    def first():
        ev.wait()
        sleep(0)
        order.append("first, after sleep(0)")

    def second():
        ev.wait()
        order.append("second")

    greenlets = [spawn(first), spawn(second)]
    sleep(0)
    ev.set()
    labkit.joinall(greenlets, timeout=1)
    assert order == ["second", "first, after sleep(0)"]


def test_a_sleep0_loop_still_sees_io_and_timers():
    a, b = socket.socketpair()
    try:
        got = []
        spawn(lambda: got.append(wait_read(a.fileno())))
        labkit.spawn_later(0.01, got.append, "timer")
        threading.Timer(0.005, b.send, args=(b"x",)).start()
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            sleep(0)
        assert len(got) == 2
    finally:
        a.close()
        b.close()


def test_sleep_waits_at_least_the_time_asked():
    start = time.monotonic()
    sleep(0.05)
    assert time.monotonic() - start >= 0.05


def test_sleeping_greenlets_wake_in_deadline_order():
    out = []
    for delay in (0.03, 0.01, 0.02):
        spawn(lambda d=delay: (sleep(d), out.append(d)))
    sleep(0.06)
    assert out == [0.01, 0.02, 0.03]


def test_negative_sleep_waits_until_the_loop_is_idle():
    out = []

    def busy():
        for i in range(3):
            out.append(f"busy{i}")
            sleep(0)

    def patient():
        sleep(-1)
        out.append("idle")

    labkit.joinall([spawn(patient), spawn(busy)])
    assert out == ["busy0", "busy1", "busy2", "idle"]


@pytest.mark.parametrize("bad, error", [("1", TypeError), (None, TypeError),
                                        (True, TypeError), (float("nan"), ValueError)])
def test_sleep_rejects_what_is_not_a_duration(bad, error):
    with pytest.raises(error, match="seconds"):
        sleep(bad)


def test_waiter_returns_a_value_delivered_before_get():
    w = Waiter()
    get_hub().run_callback(w.switch, "early")
    sleep(0)  # the callback runs before we call get()
    assert w.get() == "early"


def test_waiter_throw_raises_in_the_waiting_greenlet():
    w = Waiter()
    get_hub().run_callback(w.throw, ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        w.get()


def test_waiter_switch_from_outside_the_hub_is_refused():
    w = Waiter()
    w.greenlet = getcurrent()  # pretend someone waits
    with pytest.raises(AssertionError, match="hub"):
        w.switch(1)
    w.greenlet = None


def test_callbacks_run_in_fifo_order_and_can_be_cancelled():
    hub = get_hub()
    out = []
    hub.run_callback(out.append, 1)
    cancelled = hub.run_callback(out.append, 2)
    hub.run_callback(out.append, 3)
    cancelled.stop()
    assert not cancelled.pending
    sleep(0)
    assert out == [1, 3]


def test_waiting_on_nothing_raises_loop_exit_and_the_hub_stays_usable():
    with pytest.raises(LoopExit):
        Waiter().get()  # nobody will ever switch it
    # the hub survived: ordinary waiting still works
    g = spawn(lambda: sleep(0.01) or "ok")
    assert g.get() == "ok"


def test_loop_exit_names_the_hub():
    with pytest.raises(LoopExit) as info:
        Waiter().get()
    assert info.value.args[1] is get_hub()


def test_an_error_in_a_greenlet_is_printed_and_kills_only_that_greenlet():
    hub = get_hub()
    hub.exception_stream = io.StringIO()

    def bad():
        raise ZeroDivisionError("division by zero, on purpose")

    survivor = spawn(lambda: (sleep(0.01), "alive")[1])
    failed = spawn(bad)
    assert survivor.get() == "alive"
    assert isinstance(failed.exception, ZeroDivisionError)
    report = hub.exception_stream.getvalue()
    assert "Traceback" in report and "on purpose" in report
    assert "failed with ZeroDivisionError" in report


def test_an_error_in_a_callback_is_printed_and_the_loop_goes_on():
    hub = get_hub()
    hub.exception_stream = io.StringIO()
    out = []
    hub.run_callback(lambda: 1 / 0)
    hub.run_callback(out.append, "after")
    sleep(0.001)
    assert out == ["after"]
    assert "ZeroDivisionError" in hub.exception_stream.getvalue()


def test_blocking_inside_a_hub_callback_is_an_error_not_a_deadlock():
    hub = get_hub()
    hub.exception_stream = io.StringIO()
    hub.run_callback(sleep, 1)
    sleep(0.001)
    assert "BlockingSwitchOutError" in hub.exception_stream.getvalue()


def test_a_waiter_cannot_wait_inside_the_hub():
    hub = get_hub()
    errors = []

    def callback():
        try:
            Waiter().get()
        except BlockingSwitchOutError as exc:
            errors.append(exc)

    hub.run_callback(callback)
    sleep(0)
    assert len(errors) == 1


def test_keyboard_interrupt_in_a_greenlet_is_raised_in_the_main_greenlet():
    def interrupted():
        raise KeyboardInterrupt

    spawn(interrupted)
    with pytest.raises(KeyboardInterrupt):
        sleep(1)
    assert spawn(lambda: 5).get() == 5  # hub still works


def test_run_callback_threadsafe_wakes_a_sleeping_hub():
    hub = get_hub()
    woke = Waiter()
    hub.keepalive(+1)  # the loop cannot see the thread coming

    def from_thread():
        time.sleep(0.05)
        hub.run_callback_threadsafe(woke.switch, "from thread")

    t = threading.Thread(target=from_thread)
    t.start()
    try:
        start = time.monotonic()
        assert woke.get() == "from thread"
        assert time.monotonic() - start < 2
    finally:
        hub.keepalive(-1)
        t.join()


def test_wait_read_parks_until_the_fd_is_readable():
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        out = []

        def reader():
            labkit.wait_read(a.fileno())
            out.append(a.recv(10))

        g = spawn(reader)
        sleep(0.01)
        assert out == []  # still parked
        b.send(b"ping")
        g.join(timeout=2)
        assert out == [b"ping"]


def test_wait_read_times_out():
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(TimeoutError):
            labkit.wait_read(a.fileno(), timeout=0.02)
        assert get_hub().loop.io_waiters == 0


def test_two_readers_on_one_fd_is_an_error():
    a, b = socket.socketpair()
    with a, b:
        spawn(labkit.wait_read, a.fileno(), 1)
        sleep(0)
        with pytest.raises(labkit.ConcurrentObjectUseError, match="already"):
            labkit.wait_read(a.fileno(), timeout=0.01)
        b.send(b"x")
        sleep(0.01)


def test_spawn_raw_runs_a_bare_greenlet_with_arguments():
    out = []
    labkit.spawn_raw(out.append, 1)
    labkit.spawn_raw(lambda **kw: out.append(kw), a=2)
    sleep(0)
    assert out == [1, {"a": 2}]


def test_spawn_raw_rejects_what_is_not_callable():
    with pytest.raises(TypeError, match="function"):
        labkit.spawn_raw(42)


def test_hub_join_runs_the_loop_until_nothing_is_left():
    out = []
    spawn(lambda: (sleep(0.02), out.append("done")))
    assert get_hub().join() is True
    assert out == ["done"]


def test_hub_join_with_timeout_returns_false_while_work_remains():
    spawn(sleep, 5)
    assert get_hub().join(timeout=0.02) is False


def test_wait_with_no_objects_is_hub_join():
    spawn(sleep, 0.01)
    assert labkit.wait() is True


def _run_script(code: str, timeout: float = 20) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_sigint_while_the_main_greenlet_sleeps_raises_keyboard_interrupt_there():
    # In a child process: a real SIGINT, delivered while the hub sits in
    # epoll_wait/poll on behalf of the main greenlet's sleep(10).
    result = _run_script("""
        import os, signal, threading, time, labkit
        ticks = []
        def ticker():
            while True:
                labkit.sleep(0.01)
                ticks.append(1)
        labkit.spawn(ticker)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            labkit.sleep(10)
        except KeyboardInterrupt:
            print("interrupted after %.2f s" % (time.monotonic() - start))
        before = len(ticks)
        labkit.sleep(0.1)                      # the hub keeps working
        print("ticks advanced:", len(ticks) > before)
        print("spawn works:", labkit.spawn(lambda: 42).get() == 42)
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("interrupted after")
    assert float(lines[0].split()[2]) < 2.0
    assert lines[1:] == ["ticks advanced: True", "spawn works: True"]


def test_keepalive_on_a_destroyed_hub_is_only_bookkeeping():
    # A thread pool can outlive its hub (and reset itself in a fork child).
    hub = get_hub()
    hub.destroy()
    hub.keepalive(1, soon=True)
    hub.keepalive(-1, soon=True)


def test_sigint_during_a_spin_for_a_thread_reply_is_not_held_until_the_reply():
    # A spinning poll makes no syscall that a signal could interrupt; if it
    # went on to sleep, Ctrl-C would wait for the 3 s job to finish.
    result = _run_script("""
        import os, signal, threading, time, labkit.hub, labkit.threadpool
        labkit.hub.SPIN_SECONDS = 0.5          # a long spin, to widen the window
        pool = labkit.threadpool.ThreadPool(1)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            pool.apply(time.sleep, (3,))
        except KeyboardInterrupt:
            print("interrupted after %.2f s" % (time.monotonic() - start))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("interrupted after"), result.stdout
    assert float(result.stdout.split()[2]) < 2.0


def test_fork_child_gets_its_own_loop_and_parent_is_unaffected():
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    a, b = socket.socketpair()
    sleep(0.001)  # the hub exists and has run
    pid = os.fork()
    if pid == 0:  # child: a working hub with timers and io
        code = 1
        try:
            sleep(0.01)
            g = spawn(lambda: labkit.wait_read(a.fileno(), timeout=2) or "readable")
            b.send(b"x")
            code = 0 if g.get(timeout=2) == "readable" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's loop still works, including io on the same fds
    a.recv(1)  # drain the byte the child sent through the shared socket
    g = spawn(lambda: labkit.wait_read(a.fileno(), timeout=2) or "parent ok")
    b.send(b"y")
    assert g.get(timeout=2) == "parent ok"
    a.close()
    b.close()


def test_tick_runs_one_pass_without_blocking_and_returns():
    hub = get_hub()
    out = []

    def worker():
        for i in range(3):
            out.append(i)
            sleep(0)

    spawn(worker)
    spawn(sleep, 30)  # a far timer must not make tick() wait for it
    start = time.monotonic()
    delays = [hub.tick() for _ in range(4)]
    assert time.monotonic() - start < 1
    assert out == [0, 1, 2]
    assert delays[0] == 0.0  # the worker was still ready after pass one
    assert 29 < delays[-1] <= 30  # then only the 30 s sleeper is left


def test_tick_delivers_io_and_timers_that_are_due():
    hub = get_hub()
    a, b = socket.socketpair()
    with a, b:
        out = []
        spawn(lambda: (labkit.wait_read(a.fileno()), out.append("io")))
        spawn(lambda: (sleep(0.01), out.append("timer")))
        hub.tick()
        b.send(b"x")
        deadline = time.monotonic() + 2
        while len(out) < 2 and time.monotonic() < deadline:
            hub.tick()
            time.sleep(0.005)  # the host loop's own idle wait
        assert sorted(out) == ["io", "timer"]


def test_tick_from_a_spawned_greenlet_is_refused():
    errors = []

    def bad():
        try:
            get_hub().tick()
        except BlockingSwitchOutError as exc:
            errors.append(exc)

    spawn(bad).join()
    assert len(errors) == 1


def test_blocking_in_the_main_greenlet_after_ticks_runs_the_loop_normally():
    hub = get_hub()
    hub.tick()
    g = spawn(lambda: (sleep(0.02), "done")[1])
    hub.tick()
    assert g.get(timeout=2) == "done"


def test_a_greenlet_interrupted_in_sleep0_leaves_no_stale_wakeup_and_no_error():
    hub = get_hub()
    hub.exception_stream = io.StringIO()
    woken = []

    def sleeper():
        try:
            sleep(0)
        except labkit.GreenletExit:
            # now wait for something else: a stale switch would wake us early
            woken.append(Waiter().get())

    def interrupter():
        sleep(0)
        g.throw(labkit.GreenletExit)  # while g's switch is queued in this pass

    spawn(interrupter)
    g = spawn(sleeper)
    sleep(0)      # both are now parked in sleep(0), in that order
    sleep(0)      # the pass that resumes the interrupter, then g's stale switch
    sleep(0.01)   # let the pass finish and another one run
    assert woken == []
    assert hub.exception_stream.getvalue() == ""


def test_a_tick_after_an_interrupt_delivered_from_the_loop_does_not_block():
    # Ctrl-C noted while a background greenlet ran is delivered to the main
    # greenlet from inside the hub's poll phase; a host loop's next tick()
    # resumes the hub there and must still not wait in the kernel.
    hub = get_hub()
    a, b = socket.socketpair()
    with a, b:
        spawn(labkit.wait_read, a.fileno())   # something the loop could wait for

        def flag_interrupt():
            hub.interrupt_main()              # what the SIGINT handler does

        spawn(flag_interrupt)
        with pytest.raises(KeyboardInterrupt):
            sleep(0.5)
        start = time.monotonic()
        hub.tick()
        assert time.monotonic() - start < 0.5
        b.send(b"x")
        sleep(0.01)


# -- the hub as gevent exposes it ---------------------------------------------------

def test_get_hub_if_exists_never_creates_a_hub():
    from labkit.hub import get_hub_if_exists
    get_hub().destroy()
    assert get_hub_if_exists() is None
    hub = get_hub()
    assert get_hub_if_exists() is hub


def test_set_default_hub_class_decides_what_get_hub_creates():
    from labkit import hub as hub_module

    class Quiet(hub_module.Hub):
        pass

    get_hub().destroy()
    hub_module.set_default_hub_class(Quiet)
    try:
        assert type(get_hub()) is Quiet and hub_module.get_hub_class() is Quiet
    finally:
        get_hub().destroy()
        hub_module.set_default_hub_class(hub_module.Hub)
    with pytest.raises(TypeError):
        hub_module.set_default_hub_class(object)


def test_destroy_without_destroying_the_loop_hands_it_to_the_next_hub():
    old = get_hub()
    loop = old.loop
    fired = []
    loop.timer(0.01, fired.append, "kept")
    old.destroy(destroy_loop=False)
    new = get_hub()
    assert new is not old and new.loop is loop and loop.hub is new
    labkit.sleep(0.03)
    assert fired == ["kept"]


def test_not_errors_are_not_printed():
    hub = get_hub()
    printed = []
    hub.print_exception = lambda *args: printed.append(args[1])
    g = labkit.spawn(lambda: (_ for _ in ()).throw(SystemExit) if False else None)
    g.join()
    hub.handle_error(None, labkit.GreenletExit, labkit.GreenletExit(), None)
    hub.handle_error(None, ValueError, ValueError(), None)
    assert printed == [ValueError]
    assert issubclass(SystemExit, hub.NOT_ERROR) and issubclass(labkit.GreenletExit, hub.NOT_ERROR)
