"""sleep(seconds)'s timer is the sleeping greenlet itself in the loop's timer
table (TimerTable.switch_after, loop_c/lk_timers_py.c), and killall kills
each run of started Greenlets of its hub from one hub callback, still in
list order (issue 21: a million sleepers). What a sleeper, a killer and a
Timeout see must not change; what a sleeper and a pending kill leave for
the collector must shrink."""
import collections
import gc
import io
import math
import time
import weakref

import pytest
from greenlet import greenlet

from labkit import (Greenlet, GreenletExit, Timeout, get_hub, killall, sleep, spawn,
                    spawn_raw)
from labkit.event import Event
from labkit.exceptions import InvalidSwitchError


def _pending():
    return get_hub().loop.pending_timers


def _started(greenlets):
    """Let every greenlet of the list start (bounded)."""
    for _ in range(100):
        if all(greenlet.__bool__(g) or g.dead for g in greenlets):
            return
        sleep(0)
    raise AssertionError("greenlets did not start")


# -- sleep --------------------------------------------------------------------

def test_sleepers_wake_in_deadline_order_not_before_their_time():
    woke = []

    def sleeper(name, seconds):
        start = time.monotonic()
        sleep(seconds)
        woke.append((name, time.monotonic() - start, seconds))

    durations = {"c": 0.06, "a": 0.02, "d": 0.08, "b": 0.04, "a2": 0.02}
    gs = [spawn(sleeper, name, seconds) for name, seconds in durations.items()]
    _started(gs)
    assert _pending() == len(durations)
    for g in gs:
        g.join(timeout=5)
    assert [name for name, _, _ in woke] == ["a", "a2", "b", "c", "d"]  # equal: start order
    assert all(slept >= seconds * 0.999 for _, slept, seconds in woke)
    assert _pending() == 0


def test_a_sleeper_leaves_only_its_greenlet_in_the_timer_table():
    # The table's entry is the greenlet: no Timer object, no bound switch.
    # Before, each sleeper held a Timer and a bound g.switch besides its
    # Greenlet, Context and bound run (5 tracked objects, now 3).
    n = 500
    gc.collect()
    gc.disable()
    try:
        before = collections.Counter(type(o).__name__ for o in gc.get_objects())
        gs = [spawn(sleep, 30) for _ in range(n)]
        _started(gs)
        gc.collect()
        after = collections.Counter(type(o).__name__ for o in gc.get_objects())
    finally:
        gc.enable()
    grown = after - before
    assert _pending() == n
    assert grown["Timer"] == 0 and grown["builtin_function_or_method"] < n / 10, grown
    assert sum(grown.values()) < 3.2 * n, grown
    killall(gs)
    assert _pending() == 0


def test_a_stray_switch_ends_the_sleep_and_cancels_its_timer():
    hub = get_hub()
    outcome = []

    def sleeper():
        try:
            sleep(30)
            outcome.append("returned")
        except InvalidSwitchError:
            outcome.append("invalid")
        sleep(0.05)   # its old timer must not cut this one short
        outcome.append("slept again")

    g = spawn(sleeper)
    _started([g])
    hub.run_callback(g.switch, "stray")
    start = time.monotonic()
    g.join(timeout=5)
    assert outcome == ["invalid", "slept again"]
    assert time.monotonic() - start >= 0.049
    assert _pending() == 0

    # no value: sleep returns early (as before), and its timer goes too
    h = spawn(sleeper)
    _started([h])
    hub.run_callback(h.switch)
    sleep(0)
    sleep(0)
    assert outcome[-1] == "returned" and _pending() == 1   # the 0.05 s one only
    h.join(timeout=5)
    assert _pending() == 0


def test_a_killed_sleepers_timer_never_fires_into_its_next_wait():
    outcome = []

    def sleeper():
        try:
            sleep(0.05)
        except GreenletExit:
            outcome.append("killed")
        # parked on something else past the old sleep's deadline
        outcome.append(Event().wait(0.2))

    g = spawn(sleeper)
    _started([g])
    g.kill(block=False)
    sleep(0)
    assert _pending() == 1   # the Event's timeout, not the sleep
    g.join(timeout=5)
    assert outcome == ["killed", False]
    assert _pending() == 0


def test_a_timeout_interrupts_a_sleep_and_both_timers_go():
    with pytest.raises(Timeout):
        with Timeout(0.01):
            sleep(30)
    assert _pending() == 0

    # a sleep shorter than its Timeout: the Timeout is cancelled, not fired
    with Timeout(30):
        sleep(0.01)
    assert _pending() == 0


def test_sleeps_and_timeouts_due_together_fire_in_start_order():
    order = []

    def sleeper(name):
        sleep(0.03)
        order.append(name)

    def guarded(name):
        try:
            with Timeout(0.03):
                sleep(30)
        except Timeout:
            order.append(name)

    gs = [spawn(sleeper, "s1"), spawn(guarded, "t1"), spawn(sleeper, "s2"),
          spawn(guarded, "t2")]
    for g in gs:
        g.join(timeout=5)
    assert sorted(order) == ["s1", "s2", "t1", "t2"]
    assert order.index("s1") < order.index("s2") and order.index("t1") < order.index("t2")
    assert _pending() == 0


# -- the table's calls ----------------------------------------------------------

def test_switch_after_and_cancel_refuse_bad_arguments_by_name():
    timers = get_hub().loop._timer_table
    g = greenlet(lambda: None)
    with pytest.raises(TypeError, match="g must be a greenlet"):
        timers.switch_after(1, lambda: None)
    with pytest.raises(TypeError, match="seconds"):
        timers.switch_after("1", g)
    with pytest.raises(ValueError, match="NaN"):
        timers.switch_after(math.nan, g)
    with pytest.raises(TypeError):
        timers.switch_after(1)
    with pytest.raises(TypeError):
        timers.cancel(1)
    with pytest.raises(TypeError):
        timers.cancel("1", g)
    assert _pending() == 0


def test_cancel_disarms_only_the_entry_it_is_given():
    hub = get_hub()
    timers = hub.loop._timer_table
    me = greenlet.getcurrent()
    other = greenlet(lambda: None)
    tid = timers.switch_after(30, me)
    assert _pending() == 1
    assert timers.cancel(tid, other) is False      # not its entry
    assert timers.cancel(-1, me) is False and timers.cancel(1 << 40, me) is False
    assert _pending() == 1
    assert timers.cancel(tid, me) is True
    assert timers.cancel(tid, me) is False         # any number of times
    assert _pending() == 0
    # a stale id now names another timer: a late cancel must leave it alone
    t = hub.loop.start_timer(30, lambda: None)
    assert t.id == tid
    assert timers.cancel(tid, me) is False and t.active
    t.cancel()


def test_switch_after_wakes_with_no_value_and_refuses_a_closed_loop():
    hub = get_hub()
    timers = hub.loop._timer_table
    tid = timers.switch_after(0, greenlet.getcurrent())
    assert hub.switch() == ()
    assert timers.cancel(tid, greenlet.getcurrent()) is False
    hub.destroy(destroy_loop=True)
    with pytest.raises(RuntimeError, match="closed"):
        timers.switch_after(1, greenlet.getcurrent())


# -- killall ---------------------------------------------------------------------

def test_killall_of_many_sleepers_kills_each_in_order_and_leaves_nothing():
    n = 2000
    order = []

    def sleeper(i):
        try:
            sleep(30)
        except GreenletExit:
            order.append(i)
            raise

    gs = [spawn(sleeper, i) for i in range(n)]
    _started(gs)
    assert _pending() == n
    refs = [weakref.ref(g) for g in gs[::100]]
    killall(gs)
    assert order == list(range(n))
    assert all(g.dead and isinstance(g.value, GreenletExit) for g in gs)
    assert _pending() == 0 and get_hub().ready_count == 0
    del gs
    sleep(0.01)   # the hub finishes the callback it was in (a join's link)
    gc.collect()
    assert all(ref() is None for ref in refs)   # nothing keeps them alive


def test_killall_leaves_no_object_per_greenlet_while_the_kills_are_pending():
    n = 500
    gs = [spawn(sleep, 30) for _ in range(n)]
    _started(gs)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        killall(gs, block=False)
        gc.collect()
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    # one callback for all (before: a Callback, a bound method and a tuple each)
    assert grown < n / 10, grown
    assert get_hub().ready_count == 1
    sleep(0)
    assert all(g.dead for g in gs) and _pending() == 0


def test_killall_of_a_mixed_list():
    hub = get_hub()
    seen = []

    class OwnKill(Greenlet):
        def kill(self, exception=GreenletExit, block=True, timeout=None):
            seen.append("own kill")
            super().kill(exception, block=False)

    def survivor():
        # catches the kill once and sleeps on: killall's timeout ends the wait
        try:
            sleep(30)
        except KeyError:
            seen.append("caught")
        sleep(30)

    raw = spawn_raw(sleep, 30)
    started = spawn(sleep, 30)
    own = OwnKill.spawn(sleep, 30)
    stubborn = spawn(survivor)
    dead = spawn(lambda: None)
    _started([raw, started, own, stubborn, dead])
    never_started = spawn(sleep, 30)    # still only scheduled
    with pytest.raises(Timeout):
        killall([raw, started, own, stubborn, dead, never_started], KeyError, timeout=0.2)
    assert seen == ["own kill", "caught"]
    assert raw.dead and started.dead and own.dead and never_started.dead
    assert isinstance(started.exception, KeyError) and isinstance(never_started.exception,
                                                                   KeyError)
    assert not stubborn.dead
    killall([stubborn])
    assert stubborn.dead and _pending() == 0
    assert hub.ready_count == 0


def test_a_failing_kill_in_the_batch_is_reported_and_the_rest_still_die():
    hub = get_hub()
    hub.exception_stream = stream = io.StringIO()

    class Refuses(Greenlet):
        def throw(self, *args):
            raise RuntimeError("refused")

    first = spawn(sleep, 30)
    refuses = Refuses.spawn(sleep, 30)
    last = spawn(sleep, 30)
    _started([first, refuses, last])
    killall([first, refuses, last], block=False)
    sleep(0)
    assert first.dead and last.dead and not refuses.dead
    assert "RuntimeError: refused" in stream.getvalue()
    hub.run_callback(greenlet.throw, refuses, GreenletExit)
    refuses.join(timeout=5)
    assert refuses.dead and _pending() == 0


def test_run_batch_runs_each_item_in_order_reports_a_failure_and_can_be_cancelled():
    hub = get_hub()
    hub.exception_stream = stream = io.StringIO()
    seen = []

    def each(item, tag):
        if item == 2:
            raise ValueError("two")
        seen.append((item, tag))

    hub.run_batch(each, [1, 2, 3], "x")
    stopped = hub.run_batch(each, [4], "y")
    stopped.stop()
    hub.run_batch(lambda item, *rest: seen.append((item, rest)), [5, 6], "a", "b")
    hub.run_batch(lambda item: seen.append(item), [7])
    assert hub.ready_count == 4   # one entry per batch
    sleep(0.001)
    assert seen == [(1, "x"), (3, "x"), (5, ("a", "b")), (6, ("a", "b")), 7]
    assert "ValueError: two" in stream.getvalue()


def test_killall_kills_a_mixed_list_in_list_order():
    # Raw greenlets and kill() overrides go through kill(); runs of Greenlets
    # go in batches: the kills still land in list order (as one kill() per
    # greenlet, and gevent, do it).
    order = []

    class OwnKill(Greenlet):
        def kill(self, exception=GreenletExit, block=True, timeout=None):
            super().kill(exception, block=False)

    class Keeps(Greenlet):   # keeps Greenlet.kill: batched
        pass

    def body(name):
        try:
            sleep(30)
        except GreenletExit:
            order.append(name)
            raise

    g1, g2, g3, g4 = (spawn(body, f"G{i}") for i in range(1, 5))
    raw1, raw2 = spawn_raw(body, "raw1"), spawn_raw(body, "raw2")
    own = OwnKill.spawn(body, "own")
    keeps = Keeps.spawn(body, "keeps")
    dead = spawn(lambda: None)
    _started([g1, g2, g3, g4, raw1, raw2, own, keeps, dead])
    never_started = spawn(body, "never")
    killall([g1, raw1, own, dead, g2, never_started, g3, raw2, keeps, g4], timeout=5)
    assert order == ["G1", "raw1", "own", "G2", "G3", "raw2", "keeps", "G4"]
    assert never_started.dead


def test_killall_batches_each_run_of_greenlets_and_a_dead_one_does_not_split_it():
    hub = get_hub()
    run1 = [spawn(sleep, 30) for _ in range(3)]
    raw = spawn_raw(sleep, 30)
    dead = spawn(lambda: None)
    run2 = [spawn(sleep, 30) for _ in range(2)]
    _started(run1 + [raw, dead] + run2)
    assert hub.ready_count == 0
    killall(run1 + [raw] + run2[:1] + [dead] + run2[1:], block=False)
    assert hub.ready_count == 3   # a batch, raw's kill, a batch
    sleep(0)
    assert all(g.dead for g in run1 + run2 + [raw]) and _pending() == 0


def test_run_batch_stopped_from_inside_an_item_runs_no_more_items():
    hub = get_hub()
    ran = []

    def each(item):
        ran.append((item, batch.pending))
        if item == 1:
            batch.stop()
            batch()   # called again from inside: runs nothing

    batch = hub.run_batch(each, [0, 1, 2, 3])
    sleep(0)
    assert ran == [(0, True), (1, True)] and not batch.pending

    # stopped by a greenlet an item switched to (killall's case: the killed
    # greenlet runs, then the hub goes on with the batch)
    ran.clear()

    def stopper(name):
        ran.append(name)
        batch.stop()

    items = [greenlet(stopper, parent=hub), greenlet(ran.append, parent=hub)]
    batch = hub.run_batch(greenlet.switch, items, "x")
    sleep(0)
    assert ran == ["x"] and not batch.pending

    # a batch that ran to the end is no longer pending either
    batch = hub.run_batch(ran.append, [5, 6])
    assert batch.pending
    sleep(0)
    assert ran == ["x", 5, 6] and not batch.pending
