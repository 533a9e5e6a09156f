"""labkit.signal: handlers run in a fresh greenlet on the hub.

Signals are sent to this very process (os.kill(os.getpid(), SIGUSR1)); every
handle is cancelled at teardown so the test runner's own handlers come back.
"""
import os
import signal as stdlib_signal
import threading

import pytest

import labkit
from helpers import run_python
from labkit import signal as lsignal
from labkit.event import Event

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def handles():
    made = []
    yield made
    for handle in made:
        handle.cancel()


def test_handler_runs_in_a_greenlet_that_may_block(handles):
    done = Event()
    seen = {}

    def on_usr1(tag):
        seen["greenlet"] = labkit.getcurrent()
        labkit.sleep(0.01)  # blocking is fine: this is not the hub
        seen["tag"] = tag
        done.set()

    handles.append(lsignal.signal_handler(stdlib_signal.SIGUSR1, on_usr1, "usr1"))
    os.kill(os.getpid(), stdlib_signal.SIGUSR1)
    assert done.wait(timeout=5)
    assert seen["tag"] == "usr1"
    assert isinstance(seen["greenlet"], labkit.Greenlet)


def test_signal_wakes_a_hub_that_sleeps_in_poll(handles):
    done = Event()
    handles.append(lsignal.signal_handler(stdlib_signal.SIGUSR1, done.set))
    # Sent from another thread while the main thread's hub waits in epoll.
    threading.Timer(0.1, os.kill, (os.getpid(), stdlib_signal.SIGUSR1)).start()
    assert done.wait(timeout=5)


def test_every_handle_runs_and_cancel_restores_the_previous_handler(handles):
    previous = stdlib_signal.getsignal(stdlib_signal.SIGUSR2)
    calls = []
    first = lsignal.signal_handler(stdlib_signal.SIGUSR2, calls.append, "first")
    second = lsignal.signal_handler(stdlib_signal.SIGUSR2, calls.append, "second")
    handles += [first, second]
    os.kill(os.getpid(), stdlib_signal.SIGUSR2)
    labkit.sleep(0.05)
    assert calls == ["first", "second"]
    first.cancel()
    first.cancel()  # idempotent
    os.kill(os.getpid(), stdlib_signal.SIGUSR2)
    labkit.sleep(0.05)
    assert calls == ["first", "second", "second"]
    second.cancel()
    assert stdlib_signal.getsignal(stdlib_signal.SIGUSR2) == previous


def test_signal_replacement_runs_stdlib_style_handlers_in_a_greenlet():
    got = []
    done = Event()

    def handler(signum, frame):
        got.append((signum, frame, labkit.getcurrent() is not labkit.get_hub()))
        done.set()

    old = lsignal.signal(stdlib_signal.SIGUSR1, handler)
    try:
        assert lsignal.getsignal(stdlib_signal.SIGUSR1) is handler
        os.kill(os.getpid(), stdlib_signal.SIGUSR1)
        assert done.wait(timeout=5)
        assert got == [(stdlib_signal.SIGUSR1, None, True)]
    finally:
        lsignal.signal(stdlib_signal.SIGUSR1, old)
    assert stdlib_signal.getsignal(stdlib_signal.SIGUSR1) == old


def test_patch_signal_routes_signal_signal_through_labkit():
    code = ("from labkit import monkey; monkey.patch_signal(); import signal, os, labkit; "
            "from labkit.event import Event; done = Event(); "
            "signal.signal(signal.SIGUSR1, lambda n, f: (labkit.sleep(0.01), done.set())); "
            "os.kill(os.getpid(), signal.SIGUSR1); assert done.wait(5); print('ok')")
    assert run_python(code, timeout=30) == "ok\n"


def test_an_exception_from_a_signal_handler_is_raised_in_the_main_greenlet():
    import signal as std_signal
    import labkit

    def fail():
        raise KeyError("from the handler")

    handle = labkit.signal_handler(std_signal.SIGUSR2, fail)    # gevent's top-level name
    try:
        assert handle.ref is False
        labkit.spawn_later(0.01, os.kill, os.getpid(), std_signal.SIGUSR2)
        with pytest.raises(KeyError):
            labkit.sleep(2)
    finally:
        handle.cancel()
