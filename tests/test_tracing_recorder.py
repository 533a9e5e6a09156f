"""tracing.recorder and tracing.model: the C ring, the hub's hooks, the Trace.

Small deterministic programs must record exactly the switches their known
interleaving implies; the ring keeps the newest records and counts the rest.
"""
import pytest

import labkit
import tracing
from labkit._loop import READ, WRITE, ffi, lib
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


def _read_all(ring, count):
    out = ffi.new("lk_trace_entry[]", count)
    assert lib.lk_trace_read(ring, out, count, 0, ffi.NULL) == count
    return [(r.kind, r.a, r.arg, r.b) for r in out]


@pytest.mark.parametrize("fallback", [False, True], ids=["builtin", "python"])
def test_resume_and_resume_fd_write_what_record_with_the_label_number_writes(
        fallback, monkeypatch):
    # The hooks' one-call resume records (loop_c/lk_trace_py.c) against the
    # record they stand for; the Python fallback (built without the
    # builtin) must write the same.
    import greenlet
    from tracing import recorder as rec
    if fallback:
        monkeypatch.setattr(rec, "_gil_holding_resumers", None)
    ring = lib.lk_trace_new(64)
    try:
        labels = rec._Labels({None: 0})
        resume, resume_fd = rec.resume_functions(ring, labels)
        g = greenlet.getcurrent()
        resume(g, lib.LK_WHY_READY, None)
        resume(g, lib.LK_WHY_WAITER, "Event")           # new label: numbered 1
        resume_fd(g, lib.LK_WHY_WAITER, 7, READ)   # (7, READ): 2
        resume_fd(g, lib.LK_WHY_THROW, 7, READ)    # known: still 2
        resume(g, lib.LK_WHY_WAITER, (7, READ))    # the same label by tuple
        resume_fd(g, lib.LK_WHY_WAITER, 7, WRITE)  # another event: 3
        resume_fd(g, lib.LK_WHY_WAITER, 1 << 20, 1)       # beyond the fd table: 4
        resume_fd(g, lib.LK_WHY_WAITER, 1 << 20, 1)
        resume_fd(g, lib.LK_WHY_WAITER, -1, 1)            # no table slot: 5
        resume_fd(g, lib.LK_WHY_WAITER, 2**70, 1)         # not a C long: 6
        labels[(9, READ)]                          # numbered elsewhere: 7
        resume_fd(g, lib.LK_WHY_WAITER, 9, READ)
        resume(g, lib.LK_WHY_WAITER, "Event")
        R, W, T = lib.LK_TR_RESUME, lib.LK_WHY_WAITER, lib.LK_WHY_THROW
        assert _read_all(ring, 12) == [
            (R, id(g), lib.LK_WHY_READY, 0), (R, id(g), W, 1), (R, id(g), W, 2),
            (R, id(g), T, 2), (R, id(g), W, 2), (R, id(g), W, 3), (R, id(g), W, 4),
            (R, id(g), W, 4), (R, id(g), W, 5), (R, id(g), W, 6), (R, id(g), W, 7),
            (R, id(g), W, 1)]
        assert labels == {None: 0, "Event": 1, (7, READ): 2, (7, WRITE): 3,
                          (1 << 20, 1): 4, (-1, 1): 5, (2**70, 1): 6, (9, READ): 7}
        with pytest.raises(TypeError):
            resume(g, W)
        with pytest.raises(TypeError):
            resume_fd(g, W, 7)
        with pytest.raises(TypeError):
            resume(g, W, ["unhashable"])
        with pytest.raises(OverflowError):
            resume(g, 2**40, None)
        assert lib.lk_trace_count(ring) == 12   # a refused call writes nothing
    finally:
        lib.lk_trace_free(ring)


def test_a_sockets_wait_writes_its_resume_record_from_c():
    """labkit.socket's recv parks through Loop.io_park, which writes the
    resume record itself while tracing records (labkit._loop.set_io_resumer):
    woken by the data, the reason is the fd; woken by a kill, a throw.
    After the trace, the hook is off and the same waits still work."""
    import labkit._park as park
    import labkit.socket as lsocket

    left, right = lsocket.socketpair()
    try:
        def reader():
            assert right.recv(1) == b"x"
            right.recv(1)   # killed here

        with tracing.trace() as t:
            g = _named(reader, "reader")
            labkit.sleep(0.01)
            left.sendall(b"x")
            labkit.sleep(0.01)
            g.kill()
        assert park._resume_fd is None   # (the Python hook too: the wait never calls it)
        reasons = [s.reason for s in t.switches() if s.greenlet == "reader"]
        fd = right.fileno()
        assert reasons == ["start", f"fd {fd} read", f"throw (fd {fd} read)"], reasons
        waits = [p.duration for p in t.parked()
                 if p.lane == "reader" and p.reason == f"fd {fd} read"]
        assert len(waits) == 1 and waits[0] >= 0.009   # from its park to the data

        # untraced now: the C hook must be off (it would write into a freed ring)
        def echo():
            right.sendall(right.recv(1))
        g = labkit.spawn(echo)
        left.sendall(b"y")
        assert left.recv(1) == b"y"
        g.join()
    finally:
        left.close()
        right.close()


def test_set_io_resumer_takes_a_callable_or_none():
    from labkit._loop import set_io_resumer
    with pytest.raises(TypeError, match="callable or None"):
        set_io_resumer(42)
    set_io_resumer(None)
