"""Timeout and with_timeout: firing, suppression, nesting, cancellation."""
import pytest

import labkit
from labkit import Timeout, get_hub, sleep, spawn, with_timeout

pytestmark = pytest.mark.timeout(30)


def test_timeout_raises_itself_in_the_guarded_block():
    t = Timeout(0.01)
    with pytest.raises(Timeout) as info:
        with t:
            sleep(1)
    assert info.value is t


def test_timeout_with_false_ends_the_block_quietly():
    reached = []
    with Timeout(0.01, False):
        sleep(1)
        reached.append("not here")
    assert reached == []


def test_timeout_with_a_custom_exception_raises_that():
    with pytest.raises(ValueError, match="too slow"):
        with Timeout(0.01, ValueError("too slow")):
            sleep(1)


def test_timeout_that_does_not_expire_is_disarmed_on_exit():
    with Timeout(0.5) as t:
        sleep(0.001)
    assert not t.pending
    assert get_hub().loop.active_timers == 0


def test_none_seconds_never_fires():
    with Timeout(None) as t:
        sleep(0.01)
    assert not t.pending


def test_nested_timeouts_each_raise_their_own():
    outer = Timeout(0.05)
    inner = Timeout(0.01)
    with pytest.raises(Timeout) as info:
        with outer:
            try:
                with inner:
                    sleep(1)
            except Timeout as t:
                assert t is inner  # the inner deadline passed first
            sleep(1)
    assert info.value is outer


def test_inner_timeout_longer_than_outer_lets_outer_fire():
    outer = Timeout(0.01)
    with pytest.raises(Timeout) as info:
        with outer:
            with Timeout(1):
                sleep(2)
    assert info.value is outer


def test_cancelled_timeout_does_not_fire():
    t = Timeout.start_new(0.01)
    t.cancel()
    sleep(0.03)  # would have raised here
    assert not t.pending


def test_start_new_accepts_an_existing_timeout():
    t = Timeout(0.5)
    assert Timeout.start_new(t) is t
    assert t.pending
    t.cancel()


def test_starting_a_pending_timeout_twice_is_an_error():
    t = Timeout.start_new(1)
    with pytest.raises(AssertionError, match="already"):
        t.start()
    t.cancel()


def test_timeout_only_hits_the_greenlet_that_started_it():
    def guarded():
        with Timeout(0.01, False):
            sleep(1)
        return "guarded done"

    other = spawn(lambda: (sleep(0.03), "other done")[1])
    assert spawn(guarded).get() == "guarded done"
    assert other.get() == "other done"


def test_timeout_is_not_caught_by_except_exception():
    caught = []
    with pytest.raises(Timeout):
        with Timeout(0.01):
            try:
                sleep(1)
            except Exception:
                caught.append("wrongly caught")
    assert caught == []


def test_with_timeout_returns_the_value_or_the_timeout_value():
    assert with_timeout(1, lambda: "fast") == "fast"
    assert with_timeout(0.01, sleep, 1, timeout_value="default") == "default"
    with pytest.raises(Timeout):
        with_timeout(0.01, sleep, 1)


def test_timeout_validates_its_seconds():
    with pytest.raises(TypeError, match="seconds"):
        Timeout("soon")
    with pytest.raises(TypeError, match="seconds"):
        Timeout(True)
    with pytest.raises(ValueError, match="NaN"):
        Timeout(float("nan"))
    from fractions import Fraction
    assert Timeout(Fraction(1, 4)).seconds == 0.25 and Timeout(3).seconds == 3


def test_a_started_timeout_holds_a_timer_of_the_hub_until_cancelled():
    t = Timeout.start_new(10)
    try:
        assert t.pending and get_hub().loop.active_timers == 1
        with pytest.raises(AssertionError, match="already started"):
            t.start()
    finally:
        t.cancel()
    assert not t.pending and get_hub().loop.active_timers == 0
    unref = Timeout.start_new(10, ref=False)
    assert unref.pending and get_hub().loop.active_timers == 0   # ref=False
    unref.cancel()


def test_a_string_exception_raises_the_timeout_with_the_string_in_its_message():
    # gevent: "str values are accepted ... they change the message"
    with pytest.raises(Timeout) as caught:
        with Timeout(0.01, "the cache is slow"):
            sleep(1)
    assert str(caught.value) == "0.01 seconds: the cache is slow"


def test_a_non_exception_object_reaches_the_greenlet_as_the_typeerror_of_throwing_it():
    # gevent's behaviour: the object is thrown as is; throwing it fails in
    # the hub, and the hub reports that TypeError to the main greenlet.
    hub = labkit.get_hub()
    reported = []
    hub.print_exception = lambda context, kind, value, tb: reported.append(kind)
    t = Timeout(0.01, exception=42)
    t.start()
    sleep(0.05)
    t.cancel()
    assert reported == [TypeError]


def test_an_unreferenced_timeout_does_not_keep_the_loop_alive():
    # A watchdog (ref=False) around a wait that can never end: LoopExit,
    # not a wait for the watchdog to fire.
    from labkit.event import Event
    with Timeout(5, ref=False):
        with pytest.raises(labkit.LoopExit):
            Event().wait()


def test_the_expiration_hook_is_gevents_so_subclasses_written_for_gevent_work():
    fired = []

    class Noting(Timeout):
        def _on_expiration(self, prev_greenlet, ex):
            fired.append((prev_greenlet, ex))
            Timeout._on_expiration(self, prev_greenlet, ex)

    with pytest.raises(Timeout):
        with Noting(0.01, "why"):
            sleep(1)
    [(g, ex)] = fired
    assert g is labkit.getcurrent() and isinstance(ex, Noting)


def test_timeouts_compare_by_seconds():
    assert Timeout(0) < 1 and Timeout(0.1) < Timeout(0.2)


def test_timeout_str_names_the_seconds():
    assert str(Timeout(2)) == "2 seconds"
    assert str(Timeout(1)) == "1 second"


def test_get_with_timeout_on_greenlet_uses_timeout():
    g = spawn(sleep, 1)
    with pytest.raises(Timeout):
        g.get(timeout=0.01)
    labkit.kill(g)


def test_a_timeout_object_stands_for_the_seconds_of_any_wait_and_raises_itself():
    # gevent's rule: q.get(timeout=Timeout(...)) raises that Timeout, not Empty.
    from labkit.event import AsyncResult, Event
    from labkit.queue import Queue
    waits = [Queue().get, AsyncResult().get, labkit.spawn(sleep, 10).get,
             lambda timeout: Event().wait(timeout) or None]
    for wait in waits:
        t = Timeout(0.01)
        with pytest.raises(Timeout) as caught:
            wait(timeout=t)
        assert caught.value is t and not t.pending
    custom = Timeout(0.01, KeyError("mine"))
    with pytest.raises(KeyError):
        Queue().get(timeout=custom)


def test_a_timeout_object_is_cancelled_when_the_wait_ends_first():
    from labkit.queue import Queue
    q = Queue()
    q.put(1)
    labkit.spawn_later(0.001, q.put, 2)
    q.get()
    t = Timeout(0.5)
    assert q.get(timeout=t) == 2
    assert not t.pending


# --- the C half (TimeoutBase, loop_c/lk_timeout_py.c) ------------------------

def test_a_started_timeout_is_its_own_entry_in_the_loop_timer_table():
    # No Timer object: the table counts the Timeout itself, and ref=False
    # ones as pending but not keeping the loop alive.
    loop = get_hub().loop
    before = loop.pending_timers
    t, unref = Timeout.start_new(10), Timeout.start_new(10, ref=False)
    assert loop.pending_timers == before + 2 and loop.active_timers == 1
    t.close()
    unref.cancel()
    unref.cancel()                     # twice: harmless
    assert loop.pending_timers == before and loop.active_timers == 0


def test_a_timeout_that_fired_is_no_longer_pending_and_may_be_restarted():
    t = Timeout(0.001)
    for _ in range(2):
        t.start()
        with pytest.raises(Timeout):
            sleep(1)
        assert not t.pending and get_hub().loop.pending_timers == 0
    t.cancel()                         # after it fired: harmless


def test_overrides_of_start_and_cancel_are_called_by_the_c_methods():
    calls = []

    class Counting(Timeout):
        def start(self):
            calls.append("start")
            super().start()

        def cancel(self):
            calls.append("cancel")
            super().cancel()

    with Counting(10) as t:
        assert t.pending
    assert calls == ["start", "cancel"] and not t.pending
    Counting.start_new(10).cancel()
    assert calls == ["start", "cancel"] * 2


def test_start_new_calls_a_subclass_init_with_gevents_arguments():
    seen = []

    class Harness(Timeout):            # the shape of gevent.testing's TestTimeout
        def __init__(self, timeout, method="?"):
            seen.append((timeout, method))
            Timeout.__init__(self, timeout, f"{method} timed out", ref=False)

    t = Harness.start_new(10, "test_x")
    try:
        assert seen == [(10, "test_x")] and t.pending and not t.ref
        assert get_hub().loop.active_timers == 0
    finally:
        t.cancel()


def test_timeout_arguments_like_gevents():
    assert Timeout(1, "why").args == () and Timeout().seconds is None
    t = Timeout(0.5)
    assert Timeout.start_new(t) is t and t.pending
    assert Timeout.start_new(t) is t   # pending: not restarted (no AssertionError)
    t.cancel()
    with pytest.raises(TypeError, match="later"):
        Timeout.start_new(1, later=True)
    with pytest.raises(TypeError, match="seconds"):
        Timeout.start_new("1")
    with pytest.raises(TypeError):
        t.start(1)


def test_a_started_timeout_in_a_reference_cycle_is_collected_after_cancel():
    import gc
    import weakref

    class Guarded:
        pass

    holder = Guarded()
    holder.timeout = Timeout.start_new(10, KeyError(holder))   # cycle via the exception
    holder.timeout.cancel()
    gone = weakref.ref(holder)
    del holder
    gc.collect()
    assert gone() is None


def test_a_timeout_of_a_destroyed_hub_is_not_pending_and_cancels_harmlessly():
    # In a thread of its own, so that it has a hub of its own to destroy.
    import threading
    seen = []

    def body():
        t = Timeout.start_new(10)
        seen.append(t.pending)
        get_hub().destroy(destroy_loop=True)
        seen.append(t.pending)
        t.cancel()                     # the C loop is gone: must not touch it
        seen.append("cancelled")

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert seen == [True, False, "cancelled"]


def test_timeouts_and_timers_fire_in_deadline_then_start_order():
    # One heap and one table for both: a Timeout started between two timers
    # of the same delay fires between them.
    order = []
    me = labkit.getcurrent()

    class Recording(Timeout):
        def _on_expiration(self, prev_greenlet, ex):   # runs in the hub
            order.append(("timeout", prev_greenlet is me and ex is self))

    loop = get_hub().loop
    # (0.2 s: a stall of the test between these lines must not reorder them)
    loop.start_timer(0.2, order.append, "started first, due later")
    loop.start_timer(0, order.append, "timer 1")
    t = Recording.start_new(0)
    loop.start_timer(0, order.append, "timer 2")
    for _ in range(100):                       # at most ~5 s
        if len(order) == 4:
            break
        sleep(0.05)
    assert order == ["timer 1", ("timeout", True), "timer 2", "started first, due later"]
    assert not t.pending


def test_timeouts_of_every_state_are_freed_without_crashing_the_interpreter():
    # In a child: a bad dealloc (BaseException's, called on an object the C
    # Timeout had already untracked, crashed 3.10) kills the process, not a test.
    import subprocess
    import sys
    import textwrap
    child = textwrap.dedent("""
        import gc, labkit
        class Mine(labkit.Timeout):
            pass
        for cls in (labkit.Timeout, Mine):
            cls(1)                                    # never started
            with cls(2):                              # started, cancelled on exit
                labkit.sleep(0)
            try:
                with cls(0.001):                      # fired
                    labkit.sleep(1)
            except labkit.Timeout:
                pass
            t = cls(1); t.start(); t.cancel(); del t  # start, cancel, drop
        gc.collect()
        print("freed")
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "freed", (done.returncode,
                                                                    done.stderr[-2000:])
