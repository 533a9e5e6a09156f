"""labkit.event: Event and AsyncResult.

Specification:
- wait() returns at once when the flag is set; otherwise it parks until
  set() (True) or the timeout (False); set() wakes waiters in the order they
  began waiting, from the hub, while the setter keeps running;
- rawlink callbacks are one-shot, called with the object, in the hub;
- a waiter that times out or is killed leaves no link behind;
- waiting on something nobody will ever set raises LoopExit in the main
  greenlet;
- AsyncResult.get returns the value, raises the stored exception, or raises
  Timeout; an AsyncResult works as a greenlet's link callback;
- set() from another OS thread wakes the waiters through the hub's
  thread-safe path.
"""
import threading
import time

import pytest

import labkit
from labkit import LoopExit, Timeout, get_hub, sleep, spawn
from labkit.event import AsyncResult, Event

pytestmark = pytest.mark.timeout(30)


# -- Event ------------------------------------------------------------------

def test_wait_on_a_set_event_returns_true_without_switching():
    e = Event()
    e.set()
    ran = []
    spawn(ran.append, "other")
    assert e.wait() is True
    assert ran == []  # nobody else ran: wait() did not yield
    assert e.is_set() and e.isSet() and e.ready()


def test_waiters_wake_in_fifo_order_after_the_setter_yields():
    e = Event()
    log = []

    def waiter(i):
        log.append(("wait", i))
        log.append(("woke", i, e.wait()))

    greenlets = [spawn(waiter, i) for i in range(3)]
    sleep(0)
    e.set()
    log.append("setter still running")
    labkit.joinall(greenlets)
    assert log == [("wait", 0), ("wait", 1), ("wait", 2), "setter still running",
                   ("woke", 0, True), ("woke", 1, True), ("woke", 2, True)]


def test_a_waiter_woken_by_set_gets_true_even_if_cleared_before_it_runs():
    e = Event()
    g = spawn(e.wait)
    sleep(0)
    e.set()
    e.clear()
    assert g.get() is True


def test_one_waiter_is_woken_by_its_own_switch_in_the_ready_queue():
    # The fast path: set() queues the waiter itself, no notification.
    ev = Event()
    g = spawn(ev.wait)
    sleep(0)
    ev.set()
    scheduled = get_hub().ready[-1]
    assert scheduled == g.switch and ev._notifier is None
    assert g.get(timeout=1) is True
    assert ev.linkcount() == 0 and ev._parked is None


def test_a_waiter_killed_after_set_queued_its_wake_up_is_not_woken_by_it_later():
    ev, other = Event(), Event()
    log = []

    def stubborn():
        try:
            ev.wait()
        except labkit.GreenletExit:
            log.append("killed")
        log.append(other.wait())  # must wait for other.set(), not a stale wake-up

    g = spawn(stubborn)
    sleep(0)
    g.kill(block=False)  # the kill is queued first ...
    ev.set()             # ... then set() queues g's wake-up behind it
    sleep(0)
    sleep(0)
    assert log == ["killed"]
    other.set()
    g.join(timeout=1)
    assert log == ["killed", True]


def test_a_waiter_and_a_rawlink_are_both_notified_in_link_order():
    ev = Event()
    order = []
    g = spawn(lambda: order.append(("waiter", ev.wait())))
    sleep(0)
    ev.rawlink(lambda e: order.append(("rawlink", e is ev)))
    ev.set()
    g.join(timeout=1)
    assert order == [("waiter", True), ("rawlink", True)]


def test_wait_times_out_with_false():
    e = Event()
    start = time.monotonic()
    assert e.wait(0.05) is False
    assert time.monotonic() - start >= 0.04


def test_clear_makes_wait_block_again():
    e = Event()
    e.set()
    e.clear()
    assert e.wait(0.01) is False


@pytest.mark.parametrize("bad", ["1", [], object()])
def test_wait_rejects_a_timeout_that_is_not_a_number(bad):
    with pytest.raises(TypeError, match="timeout"):
        Event().wait(bad)


def test_a_timed_out_waiter_leaves_no_link_behind():
    e = Event()
    e.wait(0.01)
    assert e.linkcount() == 0


def test_a_killed_waiter_leaves_no_link_behind_and_others_still_wake():
    e = Event()
    victim = spawn(e.wait)
    survivor = spawn(e.wait)
    sleep(0)
    assert e.linkcount() == 2
    victim.kill()
    assert e.linkcount() == 1
    e.set()
    assert survivor.get() is True


def test_waiting_for_an_event_nobody_sets_raises_loop_exit():
    with pytest.raises(LoopExit):
        Event().wait()


def test_rawlink_is_called_once_in_the_hub_with_the_event():
    e = Event()
    calls = []
    e.rawlink(lambda ev: calls.append((ev, labkit.getcurrent() is get_hub())))
    e.set()
    sleep(0)
    e.clear()
    e.set()
    sleep(0)
    assert calls == [(e, True)]  # one-shot


def test_rawlink_on_a_set_event_runs_soon():
    e = Event()
    e.set()
    calls = []
    e.rawlink(calls.append)
    assert calls == []
    sleep(0)
    assert calls == [e]


def test_unlink_removes_a_rawlink():
    e = Event()
    calls = []
    e.rawlink(calls.append)
    e.unlink(calls.append)
    e.unlink(calls.append)  # absent: no error
    e.set()
    sleep(0)
    assert calls == []


def test_rawlink_rejects_a_non_callable():
    with pytest.raises(TypeError):
        Event().rawlink(42)


def test_events_work_with_iwait():
    a, b = Event(), Event()
    spawn(b.set)
    assert list(labkit.iwait([a, b], count=1)) == [b]


def test_set_from_another_thread_wakes_the_waiting_greenlet():
    e = Event()
    hub = get_hub()
    hub.keepalive(1)  # the thread's set() is a wake-up the loop cannot see
    try:
        thread = threading.Thread(target=lambda: (time.sleep(0.05), e.set()))
        thread.start()
        assert e.wait(timeout=5) is True
    finally:
        hub.keepalive(-1)
    thread.join()


def test_a_greenlet_of_another_thread_can_wait_for_our_event():
    e = Event()
    e.wait(0)  # binds the event to this thread's hub
    results = []
    thread = threading.Thread(target=lambda: results.append(e.wait(timeout=5)))
    thread.start()
    while not e.linkcount():
        sleep(0.001)
    e.set()
    sleep(0)  # our hub runs the notification, which posts to theirs
    thread.join(5)
    assert results == [True]


# -- AsyncResult ------------------------------------------------------------

def test_get_returns_the_value_set_later():
    r = AsyncResult()
    spawn(r.set, "v")
    assert r.get() == "v"
    assert r.ready() and r.successful() and r.value == "v"
    assert r.exception is None and r.exc_info == ()


def test_get_raises_the_stored_exception_with_its_traceback():
    r = AsyncResult()
    try:
        raise KeyError("k")
    except KeyError as exc:
        r.set_exception(exc, exc_info=(type(exc), exc, exc.__traceback__))
    with pytest.raises(KeyError) as info:
        r.get()
    assert info.value is r.exception
    assert r.ready() and not r.successful() and r.value is None
    assert r.exc_info[0] is KeyError


def test_get_raises_timeout_when_not_ready():
    r = AsyncResult()
    with pytest.raises(Timeout):
        r.get(block=False)
    with pytest.raises(Timeout):
        r.get_nowait()
    with pytest.raises(Timeout):
        r.get(timeout=0.01)
    assert r.linkcount() == 0


def test_wait_returns_the_value_or_none_and_never_raises():
    r = AsyncResult()
    assert r.wait(0.01) is None
    r.set_exception(ValueError("x"))
    assert r.wait() is None
    ok = AsyncResult()
    spawn(ok.set, 7)
    assert ok.wait() == 7


def test_all_waiters_get_the_result_in_fifo_order():
    r = AsyncResult()
    order = []

    def getter(i):
        order.append((i, r.get()))

    greenlets = [spawn(getter, i) for i in range(3)]
    sleep(0)
    r.set("x")
    labkit.joinall(greenlets)
    assert order == [(0, "x"), (1, "x"), (2, "x")]


def test_an_async_result_is_a_link_callback_for_a_greenlet():
    ok, failed = AsyncResult(), AsyncResult()
    spawn(lambda: 42).link(ok)
    hub = get_hub()
    hub.exception_stream = __import__("io").StringIO()  # keep the report quiet
    spawn(lambda: 1 / 0).rawlink(failed)
    assert ok.get(timeout=1) == 42
    with pytest.raises(ZeroDivisionError):
        failed.get(timeout=1)


def test_waiting_for_a_result_nobody_sets_raises_loop_exit():
    r = AsyncResult()
    with pytest.raises(LoopExit):
        r.get()
    assert r.linkcount() == 0


def test_a_waiter_arriving_while_set_still_notifies_is_woken_after_the_earlier_ones():
    from labkit.event import Event
    event = Event()
    results = []

    def wait_then_append(arg):
        event.wait()
        results.append(arg)

    labkit.spawn(wait_then_append, 1)
    labkit.spawn(wait_then_append, 2)
    labkit.sleep(0.001)
    event.set()
    wait_then_append(3)            # the flag is up, but 1 and 2 are not woken yet
    assert results == [1, 2, 3]
