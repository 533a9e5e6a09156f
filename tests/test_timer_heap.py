"""The timer heap of the C loop (loop_c/lk_timer_heap.c), seen through lk_poll.

Specification:
- due timers fire in (deadline, start order), each exactly once, at most
  `max_events` per lk_poll; the rest fire on later calls;
- lk_timer_cancel returns 1 for a pending timer and 0 for anything else
  (fired, cancelled, never started, out of range), and never crashes;
- a fired id is quarantined: lk_timer_start does not hand it out again
  before the next lk_poll, so the ids in an event array stay unambiguous;
- lk_timer_count and lk_next_timeout_ns describe the pending timers.
"""
import sys

import pytest
from hypothesis import given, settings, strategies as st

from labkit._lk_loop import ffi, lib

pytestmark = pytest.mark.timeout(30)

BACKENDS = ["epoll", "poll"] if sys.platform.startswith("linux") else ["poll"]
BACKEND_IDS = {"epoll": lib.LK_BACKEND_EPOLL, "poll": lib.LK_BACKEND_POLL}


def new_loop(backend):
    loop = lib.lk_loop_new(BACKEND_IDS[backend])
    assert loop != ffi.NULL
    return loop


@pytest.fixture(params=BACKENDS)
def loop(request):
    loop = new_loop(request.param)
    yield loop
    lib.lk_loop_free(loop)


def poll_timers(loop, max_events):
    """One non-blocking lk_poll; the ids of the timers it reports, in order."""
    out = ffi.new("lk_event[]", max_events)
    n = lib.lk_poll(loop, 0, out, max_events)
    assert 0 <= n <= max_events
    assert all(out[i].events == lib.LK_TIMER for i in range(n))
    return [out[i].id for i in range(n)]


def test_equal_deadlines_fire_in_start_order(loop):
    deadline = lib.lk_now_ns() - 1
    ids = [lib.lk_timer_start_at(loop, deadline) for _ in range(10)]
    assert poll_timers(loop, 64) == ids


def test_earlier_deadline_fires_first_whatever_the_start_order(loop):
    now = lib.lk_now_ns()
    late = lib.lk_timer_start_at(loop, now - 10)
    early = lib.lk_timer_start_at(loop, now - 20)
    assert poll_timers(loop, 64) == [early, late]


def test_at_most_max_events_per_poll_and_the_rest_later(loop):
    deadline = lib.lk_now_ns() - 1
    ids = [lib.lk_timer_start_at(loop, deadline) for _ in range(5)]
    assert poll_timers(loop, 2) == ids[:2]
    assert lib.lk_timer_count(loop) == 3
    assert poll_timers(loop, 2) == ids[2:4]
    assert poll_timers(loop, 2) == ids[4:]
    assert lib.lk_timer_count(loop) == 0


def test_cancel_returns_1_only_for_a_pending_timer(loop):
    t = lib.lk_timer_start(loop, 10**12)
    assert lib.lk_timer_cancel(loop, t) == 1
    assert lib.lk_timer_cancel(loop, t) == 0          # already cancelled
    fired = lib.lk_timer_start(loop, -5)              # negative delay: due now
    assert poll_timers(loop, 8) == [fired]
    assert lib.lk_timer_cancel(loop, fired) == 0      # already fired
    for bad in (-1, -(2**31), 2**31 - 1, 12345):
        assert lib.lk_timer_cancel(loop, bad) == 0    # never started / out of range


def test_fired_id_is_quarantined_until_the_next_poll(loop):
    fired = lib.lk_timer_start(loop, 0)
    assert poll_timers(loop, 8) == [fired]
    # Cancelling a quarantined id must not free it early either.
    assert lib.lk_timer_cancel(loop, fired) == 0
    started = [lib.lk_timer_start(loop, 10**12) for _ in range(50)]
    assert fired not in started
    for t in started:
        assert lib.lk_timer_cancel(loop, t) == 1
    assert poll_timers(loop, 8) == []                 # releases the quarantine
    assert fired in [lib.lk_timer_start(loop, 10**12) for _ in range(51)]


def test_count_and_next_timeout(loop):
    assert lib.lk_timer_count(loop) == 0
    assert lib.lk_next_timeout_ns(loop) == -1
    far = lib.lk_timer_start(loop, 10**9)
    assert lib.lk_timer_count(loop) == 1
    assert 0 < lib.lk_next_timeout_ns(loop) <= 10**9
    near = lib.lk_timer_start_at(loop, lib.lk_now_ns() - 1)
    assert lib.lk_timer_count(loop) == 2
    assert lib.lk_next_timeout_ns(loop) == 0
    assert lib.lk_timer_cancel(loop, near) == 1
    assert 0 < lib.lk_next_timeout_ns(loop) <= 10**9
    assert lib.lk_timer_cancel(loop, far) == 1
    assert lib.lk_next_timeout_ns(loop) == -1


def test_ids_are_small_and_recycled(loop):
    ids = [lib.lk_timer_start(loop, 10**12) for _ in range(1000)]
    assert sorted(ids) == list(range(1000))
    for t in ids:
        assert lib.lk_timer_cancel(loop, t) == 1
    assert 0 <= lib.lk_timer_start(loop, 10**12) < 1000


# ---------------------------------------------------------------- property

operations = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.integers(0, 4)),          # deadline offset: many ties
        st.tuples(st.just("cancel_live"), st.integers(0, 10**6)),
        st.tuples(st.just("cancel_dead"), st.integers(0, 10**6)),
        st.tuples(st.just("cancel_any"), st.integers(-3, 40)),
        st.tuples(st.just("poll"), st.integers(1, 4)),
    ),
    max_size=80,
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_timers_fire_exactly_once_in_deadline_then_start_order(backend, ops):
    loop = new_loop(backend)
    try:
        base = lib.lk_now_ns() - 10**9   # every deadline is in the past: all due
        live = {}         # id -> (deadline, start number): what must still fire
        dead = []         # ids that fired or were cancelled (may be reused later)
        quarantined = set()   # ids fired by the latest poll
        starts = 0

        def expect_poll(max_events):
            expected = sorted(live, key=live.__getitem__)[:max_events]
            assert poll_timers(loop, max_events) == expected
            for t in expected:
                del live[t]
            dead.extend(expected)
            quarantined.clear()
            quarantined.update(expected)

        for op, arg in ops:
            if op == "start":
                t = lib.lk_timer_start_at(loop, base + arg)
                assert t >= 0
                assert t not in live and t not in quarantined
                live[t] = (base + arg, starts)
                starts += 1
            elif op == "cancel_live" and live:
                t = sorted(live)[arg % len(live)]
                assert lib.lk_timer_cancel(loop, t) == 1
                del live[t]
                dead.append(t)
            elif op == "cancel_dead" and dead:
                t = dead[arg % len(dead)]
                expected = 1 if t in live else 0     # a dead id may have been reused
                assert lib.lk_timer_cancel(loop, t) == expected
                if expected:
                    del live[t]
            elif op == "cancel_any":
                expected = 1 if arg in live else 0
                assert lib.lk_timer_cancel(loop, arg) == expected
                if expected:
                    del live[arg]
                    dead.append(arg)
            elif op == "poll":
                expect_poll(arg)
            assert lib.lk_timer_count(loop) == len(live)
            assert lib.lk_next_timeout_ns(loop) == (0 if live else -1)

        while live:
            expect_poll(3)
        assert poll_timers(loop, 3) == []
    finally:
        lib.lk_loop_free(loop)
