"""What sleep(0) between greenlets promises, whichever way it switches:
through the hub (greenlet -> hub -> next greenlet) or by a direct hand-off
to the next ready greenlet (Passes.yield0, loop_c/lk_poll_py.c), and
whichever code runs it: its common case in C (sleep0, same file) or the
Python body of labkit._park.sleep. A pass runs what was ready
when it began, FIFO; I/O and timers are checked every 0.2 ms under a
sleep(0) ping-pong; a tick() host gets the thread back after one pass; a
kill during sleep(0) leaves no queued switch behind; a failure is reported
against the greenlet that failed; the tracer sees one resume per yield and
each pass with its count. A hand-off that skipped the pass accounting fails
the pass-order test (checked against a prototype)."""
import io
import os
import time

import pytest

import labkit
from labkit import GreenletExit, Timeout, get_hub, sleep, spawn
from labkit.hub import spawn_raw, wait_read

pytestmark = pytest.mark.timeout(60)


def test_a_pass_runs_what_was_ready_when_it_began_in_order():
    # A callback scheduled during a pass runs after the greenlets that were
    # already ready, and before the greenlet that scheduled it runs again.
    hub = get_hub()
    order = []

    def player(name):
        for i in range(3):
            order.append(f"{name}{i}")
            if name == "a" and i == 0:
                hub.schedule(lambda: order.append("callback"))
            sleep(0)

    players = [spawn(player, "a"), spawn(player, "b"), spawn(player, "c")]
    labkit.joinall(players, timeout=5)
    assert order == ["a0", "b0", "c0", "callback", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_a_greenlet_spawned_during_a_pass_starts_in_the_next_one():
    order = []

    def late():
        order.append("late")

    def player(name):
        for i in range(2):
            order.append(f"{name}{i}")
            if name == "b" and i == 0:
                spawn(late)
            sleep(0)

    labkit.joinall([spawn(player, "a"), spawn(player, "b"), spawn(player, "c")], timeout=5)
    assert order == ["a0", "b0", "c0", "a1", "late", "b1", "c1"]


def test_an_fd_becoming_readable_is_noticed_under_a_sleep0_ping_pong():
    r, w = os.pipe()
    try:
        woke = []
        spins = [0]

        def reader():
            wait_read(r)
            woke.append(spins[0])

        def player():
            deadline = time.monotonic() + 10
            while not woke and time.monotonic() < deadline:
                spins[0] += 1
                if spins[0] == 100:
                    os.write(w, b"x")
                sleep(0)

        labkit.joinall([spawn(reader), spawn(player), spawn(player)], timeout=15)
        assert woke, "the poll due every 0.2 ms never ran under the ping-pong"
    finally:
        os.close(r)
        os.close(w)


def test_a_timer_fires_and_a_timeout_interrupts_a_sleep0_ping_pong():
    stop = []

    def partner():
        while not stop:
            sleep(0)

    other = spawn(partner)
    timed = spawn(lambda: (sleep(0.002), stop.append("timer")))
    deadline = time.monotonic() + 10
    with pytest.raises(Timeout):
        with Timeout(0.005):
            while time.monotonic() < deadline:
                sleep(0)
    assert time.monotonic() < deadline
    timed.join(timeout=5)
    assert stop == ["timer"]
    other.join(timeout=5)
    assert other.dead


def test_tick_hosts_get_the_thread_back_after_one_pass():
    hub = get_hub()
    yields = []

    def yielder(name):
        for _ in range(10_000):
            yields.append(name)
            sleep(0)

    greenlets = [spawn(yielder, "a"), spawn(yielder, "b")]
    try:
        hub.tick()    # they start
        for _ in range(5):
            before = len(yields)
            hub.tick()
            # one pass: each of them once, never a chain of hand-offs
            assert yields[before:] == ["a", "b"]
    finally:
        for g in greenlets:
            g.kill(block=False)
        hub.tick()
        hub.tick()


def test_a_kill_during_a_handed_off_sleep0_takes_its_switch_back():
    hub = get_hub()
    events = []

    def victim():
        try:
            while True:
                sleep(0)
        except GreenletExit:
            events.append("victim killed")
            raise

    def killer():
        for i in range(20):
            sleep(0)
        # The victim is parked in sleep(0) now (with a hand-off: in its
        # switch to us).
        assert labkit._park.waiting_on(v) == "sleep(0)"
        v.kill()
        events.append("killer done killing")
        for _ in range(20):
            sleep(0)     # its switch, if left queued, would resume a dead greenlet

    v = spawn(victim)
    k = spawn(killer)
    labkit.joinall([v, k], timeout=5)
    assert events == ["victim killed", "killer done killing"]
    assert k.successful() and v.dead
    assert not any(getattr(cb, "__self__", None) is v for cb in hub.ready)


def test_a_failure_after_a_hand_off_is_reported_against_the_greenlet_that_failed():
    hub = get_hub()
    stream = io.StringIO()
    hub.exception_stream = stream

    def failing():
        sleep(0)
        sleep(0)
        raise ValueError("boom")

    def player():
        for _ in range(5):
            sleep(0)

    try:
        bad = spawn_raw(failing)
        good = spawn(player)
        good.join(timeout=5)
        sleep(0.01)
    finally:
        del hub.exception_stream
    report = stream.getvalue()
    assert "ValueError: boom" in report
    # The context line names the failed greenlet's switch, as when the hub
    # itself switched to it.
    context = report.strip().splitlines()[-1]
    assert context.endswith("failed with ValueError")
    assert f"{id(bad):#x}" in context and f"{id(good):#x}" not in context


def test_the_tracer_sees_what_it_saw_from_the_hub():
    import tracing

    def player():
        for _ in range(50):
            sleep(0)

    def run():
        with tracing.trace() as t:
            a, b = spawn(player), spawn(player)
            a.name, b.name = "a", "b"
            labkit.joinall([a, b])
        return t

    t = run()
    for name in ("a", "b"):
        row = t.summary().row(name)
        assert row.switches_in == 51     # started, then woken by each sleep(0)
    reasons = [s.reason for s in t.switches() if s.greenlet == "a"]
    assert reasons.count("ready") == 50
    # the passes are recorded, and count what they run: each one of the
    # ping-pong's passes runs both players
    assert sum(1 for _, n in t.ready_counts() if n == 2) >= 40


def test_the_settrace_mode_does_not_count_a_hand_off_twice():
    import tracing

    def player():
        for _ in range(20):
            sleep(0)

    with tracing.trace(settrace=True) as t:
        a, b = spawn(player), spawn(player)
        a.name, b.name = "a", "b"
        labkit.joinall([a, b])
    assert t.summary().row("a").switches_in == 21


def test_sleep0_between_greenlets_hands_off_without_the_hub():
    # The hand-off itself (loop_c/lk_poll_py.c, Passes.yield0): a ping-pong
    # of sleep(0)s switches greenlet to greenlet. Through the hub it was
    # two switches per yield, one of them into the hub; now the hub is
    # entered only for its polls (every IO_CHECK_INTERVAL_NS) and the ends.
    import greenlet as greenlet_module

    hub = get_hub()
    into_hub = []
    yields = 2000

    def player():
        for _ in range(yields // 2):
            sleep(0)

    def count(event, args):
        if event in ("switch", "throw") and args[1] is hub:
            into_hub.append(1)

    old = greenlet_module.settrace(count)
    try:
        started = time.monotonic()
        labkit.joinall([spawn(player), spawn(player)])
        elapsed = time.monotonic() - started
    finally:
        greenlet_module.settrace(old)
    polls = elapsed / (labkit.hub.IO_CHECK_INTERVAL_NS / 1e9)
    # Through the hub: >= yields. Allow every poll a few switches of its own.
    assert len(into_hub) < min(yields / 4, 10 + 4 * polls)


def test_greenlets_started_one_after_another_by_sleep0_do_not_pile_up_recursion_depth():
    # A greenlet's first switch starts it at the recursion depth of whoever
    # switches to it: the hub, shallow. A hand-off from a sleeping greenlet
    # would start it inside that greenlet's depth instead; when each
    # started greenlet's own sleep(0) started the next one, the depth grew
    # with every start until RecursionError (gevent's test__pool
    # imap_it_large). sleep(0) hands off only to greenlets already running.
    done = []

    def child(k):
        sleep(0)
        done.append(k)

    def spawner():
        for k in range(3000):
            spawn(child, k)
        sleep(0)

    labkit.joinall([spawn(spawner)], raise_error=True)
    deadline = time.monotonic() + 10
    while len(done) < 3000 and time.monotonic() < deadline:
        labkit.sleep(0.01)
    assert len(done) == 3000


def test_sleep0_wakes_a_greenlet_through_its_own_switch_override():
    # sleep(0) queues ``current.switch``: a greenlet class that overrides
    # switch() is woken through its override, whichever path sleep(0)
    # takes (its C fast path, loop_c/lk_poll_py.c sleep0, only serves the
    # plain greenlet.switch and leaves the rest to the Python code).
    from greenlet import greenlet
    hub = get_hub()
    calls = []

    class Counting(greenlet):
        def switch(self, *args, **kwargs):
            calls.append(self)
            return greenlet.switch(self, *args, **kwargs)

    def yielder():
        for _ in range(3):
            sleep(0)

    counted = Counting(yielder, parent=hub)
    hub.schedule(counted.switch)
    other = spawn(yielder)
    labkit.joinall([other], timeout=5)
    assert counted.dead
    # the hub's first switch plus one per sleep(0)
    assert calls.count(counted) == 4


def test_a_sleep0_from_a_greenlet_whose_parent_is_not_the_hub_still_yields():
    # Only a greenlet of the hub takes the fast path; a greenlet with
    # another parent (its parent a plain greenlet) goes through get_hub().
    from greenlet import greenlet
    order = []

    def busy():
        for i in range(2):
            order.append(f"busy{i}")
            sleep(0)

    def inner():
        order.append("inner0")
        sleep(0)
        order.append("inner1")

    def outer():
        child = greenlet(inner)      # parent: this greenlet, not the hub
        child.switch()
        order.append("outer")

    labkit.joinall([spawn(outer), spawn(busy)], timeout=5)
    # inner's sleep(0) yields to busy; when inner ends, its parent resumes
    assert order == ["inner0", "busy0", "inner1", "outer", "busy1"]


def test_a_lone_sleep0_does_not_switch_while_no_poll_is_due(monkeypatch):
    # Nothing else ready, no poll due: sleep(0) returns without a round
    # trip through the hub (loop_c/lk_poll_py.c sleep0 decides this in C,
    # with the Python code's condition).
    from greenlet import settrace
    monkeypatch.setattr(labkit.hub, "IO_CHECK_INTERVAL_NS", 1 << 62)
    hub = get_hub()
    to_hub = []

    def loner():
        sleep(0)                     # one pass through the hub: polls, sets the deadline
        previous = settrace(lambda event, args: to_hub.append(args[1] is hub))
        try:
            for _ in range(100):
                sleep(0)
        finally:
            settrace(previous)

    spawn(loner).join(timeout=5)
    assert sum(to_hub) == 0


def test_a_lone_sleep0_loop_still_lets_timers_fire():
    # ...but once a poll is due (every IO_CHECK_INTERVAL_NS), it goes
    # through the hub: a timer fires under a loop that only sleeps(0).
    fired = []
    labkit.spawn_later(0.01, fired.append, True)

    def loner():
        deadline = time.monotonic() + 5
        while not fired and time.monotonic() < deadline:
            sleep(0)

    spawn(loner).join(timeout=10)
    assert fired == [True]
