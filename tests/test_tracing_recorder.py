"""tracing.recorder and tracing.model: the C ring, the hub's hooks, the Trace.

Small deterministic programs must record exactly the switches their known
interleaving implies; the ring keeps the newest records and counts the rest.
"""
import pytest

import labkit
import tracing
from labkit._loop import ffi, lib
from labkit.hub import Waiter

pytestmark = pytest.mark.timeout(60)


def _named(fn, name, *args):
    g = labkit.spawn(fn, *args)
    g.name = name
    return g


def test_sleep0_ping_pong_records_the_exact_interleaving():
    def player(rounds):
        for _ in range(rounds):
            labkit.sleep(0)

    with tracing.trace() as t:
        a, b = _named(player, "a", 3), _named(player, "b", 3)
        labkit.joinall([a, b])

    switches = [(s.greenlet, s.reason) for s in t.switches()]
    assert switches == [("a", "start"), ("b", "start")] + [("a", "ready"), ("b", "ready")] * 3 \
        + [("main", "join")]
    assert [s.previous for s in t.switches()][:3] == ["main", "a", "b"]
    names = [g.name for g in t.greenlets()]
    assert names[0] == "main" and "a" in names and "b" in names
    a_info = next(g for g in t.greenlets() if g.name == "a")
    assert a_info.parent == "main" and a_info.exit == "value NoneType"
    assert a_info.spawn_site.startswith("test_tracing_recorder.py:")


def test_waiter_handoff_records_the_waiter_label():
    hub = labkit.get_hub()
    box = []

    def consumer():
        for _ in range(2):
            w = Waiter(hub, "handoff")
            box.append(w)
            w.get()

    def producer():
        for _ in range(2):
            while not box:
                labkit.sleep(0)
            hub.run_callback(box.pop().switch, None)
            labkit.sleep(0)

    with tracing.trace() as t:
        labkit.joinall([_named(consumer, "consumer"), _named(producer, "producer")])

    seq = [(s.greenlet, s.reason) for s in t.switches() if s.greenlet != "main"]
    assert seq == [("consumer", "start"), ("producer", "start"),
                   ("consumer", "handoff"), ("producer", "ready"),
                   ("consumer", "handoff"), ("producer", "ready")]


def _traced_queue_ping_pong(maxsize):
    """Three round trips through two labkit Queues, traced."""
    queue = pytest.importorskip("labkit.queue")
    ping, pong = queue.Queue(maxsize), queue.Queue(maxsize)

    def pinger():
        for i in range(3):
            ping.put(i)
            pong.get()

    def ponger():
        for _ in range(3):
            pong.put(ping.get())

    with tracing.trace() as t:
        labkit.joinall([_named(pinger, "pinger"), _named(ponger, "ponger")])
    return t


def test_queue_ping_pong_alternates():
    t = _traced_queue_ping_pong(None)
    seq = [s.greenlet for s in t.switches() if s.greenlet != "main"]
    # Strict alternation: each one runs until it waits on the other's queue.
    assert seq[:2] == ["pinger", "ponger"]
    assert all(x != y for x, y in zip(seq, seq[1:]))


def test_queue_of_one_ping_pong_records_the_exact_switches_and_reasons():
    t = _traced_queue_ping_pong(1)

    # Each get parks until the other side's put hands it the item; no put
    # ever waits (one item in flight per queue of one).
    assert [(s.greenlet, s.previous, s.reason) for s in t.switches()] == [
        ("pinger", "main", "start"),
        ("ponger", "pinger", "start"),
        ("pinger", "ponger", "Queue.get"),
        ("ponger", "pinger", "Queue.get"),
        ("pinger", "ponger", "Queue.get"),
        ("ponger", "pinger", "Queue.get"),
        ("pinger", "ponger", "Queue.get"),
        ("main", "pinger", "join"),
    ]


def test_event_semaphore_and_full_queue_waits_are_labelled():
    from labkit.event import Event
    from labkit.lock import Semaphore
    from labkit.queue import Queue
    event, sem, full = Event(), Semaphore(0), Queue(1)
    full.put("x")

    def waiter():
        event.wait()
        sem.acquire()
        full.put("y")

    def releaser():
        event.set()
        labkit.sleep(0)
        sem.release()
        labkit.sleep(0)
        full.get()

    with tracing.trace() as t:
        labkit.joinall([_named(waiter, "waiter"), _named(releaser, "releaser")])

    reasons = [s.reason for s in t.switches() if s.greenlet == "waiter"]
    assert reasons == ["start", "Event", "Semaphore", "Queue.put"]


def test_timer_and_fd_reasons():
    import os
    r, w = os.pipe()

    def reader():
        labkit.wait_read(r)
        os.read(r, 1)

    def sleeper():
        labkit.sleep(0.01)
        os.write(w, b"x")

    try:
        with tracing.trace() as t:
            labkit.joinall([_named(reader, "reader"), _named(sleeper, "sleeper")])
    finally:
        os.close(r)
        os.close(w)
    reasons = {(s.greenlet, s.reason) for s in t.switches()}
    assert ("sleeper", "timer") in reasons
    assert ("reader", f"fd {r} read") in reasons
    parked = [p for p in t.parked() if p.lane == "reader"]
    assert parked[-1].reason == f"fd {r} read" and parked[-1].duration >= 0.009
    assert any(it.timers == 1 for it in t.loop_iterations())


def test_exception_exit_is_recorded(capsys):
    def boom():
        raise ValueError("x")

    with tracing.trace() as t:
        g = _named(boom, "boom")
        g.join()
    info = next(g for g in t.greenlets() if g.name == "boom")
    assert info.exit == "raised ValueError"


def test_summary_counts_runs_and_renders():
    def player():
        for _ in range(4):
            labkit.sleep(0)

    # Two players: a lone greenlet's sleep(0) does not switch at all.
    with tracing.trace() as t:
        labkit.joinall([_named(player, "p"), _named(player, "q")])
    row = t.summary().row("p")
    assert row.runs == 5 and row.switches_in == 5 and row.switches_out == 4
    assert 0 < row.running <= t.duration and row.longest_run <= row.running
    text = str(t.summary())
    assert text.splitlines()[0].split()[:2] == ["greenlet", "runs"] and "p" in text
    assert "<table>" in t.summary()._repr_html_()


def test_settrace_mode_records_raw_switches():
    from greenlet import getcurrent, greenlet
    main = getcurrent()

    def body():
        main.switch()

    with tracing.trace(settrace=True) as t:
        g = greenlet(body)
        g.switch()
        g.switch()
    raw = [s for s in t.switches() if s.reason.startswith("switch")]
    assert len(raw) >= 3   # main -> g, g -> main, main -> g


def test_ring_wraps_and_counts_drops():
    ring = lib.lk_trace_new(5)          # rounded up to 8
    try:
        assert lib.lk_trace_capacity(ring) == 8
        for i in range(20):
            lib.lk_trace_record(ring, lib.LK_TR_MARK, i, 0, -i)
        assert lib.lk_trace_count(ring) == 20
        assert lib.lk_trace_dropped(ring) == 12
        out = ffi.new("lk_trace_entry[]", 16)
        first = ffi.new("uint64_t *")
        n = lib.lk_trace_read(ring, out, 16, 0, first)
        assert n == 8 and first[0] == 12
        assert [out[i].a for i in range(n)] == list(range(12, 20))
        assert all(out[i].ts_ns <= out[i + 1].ts_ns for i in range(n - 1))
        n = lib.lk_trace_read(ring, out, 3, 15, first)
        assert n == 3 and first[0] == 15 and [out[i].a for i in range(3)] == [15, 16, 17]
    finally:
        lib.lk_trace_free(ring)


def test_small_capacity_trace_reports_dropped_records():
    def player():
        for _ in range(100):
            labkit.sleep(0)

    with tracing.trace(capacity=64) as t:
        labkit.joinall([labkit.spawn(player), labkit.spawn(player)])
    assert t.dropped > 0
    assert len(t.switches()) < 200


def test_hooks_are_off_after_stop_and_one_trace_at_a_time():
    import labkit.hub as hub_module
    tracing.start()
    with pytest.raises(RuntimeError):
        tracing.start()
    tracing.stop()
    assert hub_module._trace is None and hub_module._tracer is None
    with pytest.raises(RuntimeError):
        tracing.stop()


def test_a_background_recorder_steps_aside_for_a_trace_and_comes_back():
    from tracing.recorder import Recorder, active, set_background
    events, background = [], []

    def start_background():
        background.append(Recorder(capacity=64).start())
        set_background(background[-1], pause, start_background)

    def pause():
        events.append("paused")
        set_background(None)
        background[-1].stop(read=False)

    start_background()
    try:
        with tracing.trace() as t:        # no "already recording"
            assert active() is not background[0]
            labkit.sleep(0)
        assert events == ["paused"] and t.summary() is not None
        assert len(background) == 2 and active() is background[1]
        tracing.measure_switch_overhead(n=50, repeats=1)   # steps it aside too
        assert events == ["paused", "paused"] and active() is background[2]
    finally:
        set_background(None)
        if active() is not None:
            active().stop(read=False)


def test_measure_switch_overhead_reports_each_operation():
    result = tracing.measure_switch_overhead(n=500, repeats=1)
    assert set(result) == {"raw_switch", "sleep0", "spawn_join", "wakeup"}
    for numbers in result.values():
        assert numbers["untraced_ns"] > 0 and numbers["traced_ns"] > 0


def test_hooks_write_through_the_gil_holding_writer_into_the_same_ring():
    from labkit import _lk_trace_py
    from tracing.recorder import record_function
    ring = lib.lk_trace_new(4)
    try:
        record = record_function(ring)
        assert type(record) is type(_lk_trace_py.writer)   # a builtin, not cffi
        record(lib.LK_TR_MARK, -5, 7, 2**62)
        lib.lk_trace_record(ring, lib.LK_TR_MARK, 1, 2, 3)   # the C side, same ring
        out = ffi.new("lk_trace_entry[]", 2)
        assert lib.lk_trace_read(ring, out, 2, 0, ffi.NULL) == 2
        assert (out[0].kind, out[0].a, out[0].arg, out[0].b) == (lib.LK_TR_MARK, -5, 7, 2**62)
        assert (out[1].a, out[1].arg, out[1].b) == (1, 2, 3)
        assert 0 < out[0].ts_ns <= out[1].ts_ns
        with pytest.raises(TypeError):
            record(1, 2, 3)
        with pytest.raises(OverflowError):
            record(1, 2**64, 0, 0)
        assert lib.lk_trace_count(ring) == 2
    finally:
        lib.lk_trace_free(ring)
