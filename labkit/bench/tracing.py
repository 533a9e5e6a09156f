"""Benchmarks of the tracer: what recording costs, and how well blocks are caught.

Registered benchmarks (labkit only; compare their rows with ``sleep0``):

- ``sleep0_traced``: the sleep0 benchmark while ``tracing`` records
  everything (one record per switch, one per hub pass);
- ``sleep0_flight`` and ``socket_recv_wait_flight``: sleep0 and
  socket_recv_wait with the flight recorder on (tracing/flight.py, issue 20:
  its cost should stay within 3%; compare with their untraced rows);
- ``sleep0_ring`` and ``socket_recv_wait_ring``: the same with the flight
  recorder's ring alone, no blocking watchdog. These are the rows to count
  instructions of (``python -m labkit.bench.callgrind --only
  sleep0,sleep0_ring,socket_recv_wait,socket_recv_wait_ring``): the
  watchdog's cost is per second, not per operation, and valgrind runs the
  program ~50x slower, so under callgrind the _flight rows charge each
  operation ~50x its share of the watchdog (socket_recv_wait_flight: +14%
  where the ring alone is +6%, before issue 20's one-call resume records);
- ``sleep0_ring_watched`` and ``socket_recv_wait_ring_watched``: the ring
  with a stall threshold set, as a blocking monitor sets it, but no
  watchdog thread: what the resume sites cost per switch (issue 19: each
  resume record also notes the frames the greenlet resumed in; see
  loop_c/lk_trace_py.c), countable by callgrind like the _ring rows;
- ``sleep0_settrace_noop``: the same with a no-op Python
  ``greenlet.settrace`` callback, the floor of any pure-Python tracer;
- ``sleep0_yappi``: the same under yappi with its greenlet backend (only
  registered if yappi is installed);
- ``snapshot_10k``: one ``tracing.snapshot()`` of 10,000 parked greenlets
  while recording (issue 19: < 20 ms);
- ``ledger_fold`` and ``ledger_fold_tapped``: the ledger's fold of the
  ring's records (tracing/ledger.py, loop_c/lk_fold.c), per record, in
  batches of ``Ledger.BATCH``, without and with a timeline's tap --
  countable by callgrind (``--only ledger_fold,ledger_fold_tapped``);
- ``strip_paint``: the live timeline's painting of those batches' Slices
  (tracing/live_timeline.py, loop_c/lk_strip.c), per record.

``python -m labkit.bench.tracing`` (:func:`main`) prints these side by side
with the untraced ``sleep0``, then the TCP echo benchmark at N = 50 with and
without tracing (labkit.bench.echo's "traced" row), and then measures the
blocking monitor: 20 blocks of 0.15 s at threshold 0.1 s (how many are
reported, mean duration error) and a cooperative-only run that must give no
report.

Targets (issue 6): tracing fully on costs at most 1.3× on sleep0 and 1.15×
on the echo benchmark.
"""
import importlib.util
import sys
import time

from labkit.bench.micro import LABKIT, Benchmark, register, sleep0_gevent_like


def _sleep0_with(setup, teardown):
    def run(n):
        state = setup()
        try:
            return sleep0_gevent_like(LABKIT, n)
        finally:
            teardown(state)
    return run


def _tracing_on():
    import tracing
    tracing.start()


def _tracing_off(_):
    import tracing
    tracing.stop()


def _settrace_on():
    import greenlet
    return greenlet.settrace(lambda event, args: None)


def _settrace_off(old):
    import greenlet
    greenlet.settrace(old)


def _yappi_on():
    import yappi
    yappi.set_context_backend("greenlet")
    yappi.start()


def _yappi_off(_):
    import yappi
    yappi.stop()
    yappi.clear_stats()


register(Benchmark(
    name="sleep0_traced",
    description="sleep0 while tracing records every switch",
    default_n=50_000, ops_per_n=2,
    impls={LABKIT: _sleep0_with(_tracing_on, _tracing_off)},
))

def _flight_on(threshold=0.1):
    import tempfile
    from tracing import flight
    return flight.start(tempfile.mkdtemp(prefix="labkit-bench-flight-"), threshold=threshold,
                        report=False)


def _flight_off(recorder):
    recorder.stop()


def _with_flight(benchmark, threshold=0.1):
    """``benchmark(LABKIT, n)`` while the flight recorder records (issue 20);
    ``threshold=None``: its ring only, no blocking watchdog."""
    def run(n):
        recorder = _flight_on(threshold)
        try:
            return benchmark(LABKIT, n)
        finally:
            _flight_off(recorder)
    return run


register(Benchmark(
    name="sleep0_flight",
    description="sleep0 with the flight recorder on (ring, bounded side table, watchdog)",
    default_n=50_000, ops_per_n=2,
    impls={LABKIT: _with_flight(sleep0_gevent_like)},
))


def _socket_recv_wait(impl, n):
    from labkit.bench.sync import socket_recv_wait_gevent_like
    return socket_recv_wait_gevent_like(impl, n)


register(Benchmark(
    name="socket_recv_wait_flight",
    description="socket_recv_wait with the flight recorder on, per round trip",
    default_n=20_000, ops_per_n=1,
    impls={LABKIT: _with_flight(_socket_recv_wait)},
))

register(Benchmark(
    name="sleep0_ring",
    description="sleep0 with the flight recorder's ring alone (no watchdog: for callgrind)",
    default_n=50_000, ops_per_n=2,
    impls={LABKIT: _with_flight(sleep0_gevent_like, threshold=None)},
))

register(Benchmark(
    name="socket_recv_wait_ring",
    description="socket_recv_wait with the flight recorder's ring alone (no watchdog)",
    default_n=20_000, ops_per_n=1,
    impls={LABKIT: _with_flight(_socket_recv_wait, threshold=None)},
))

def _with_watched_ring(benchmark):
    """``benchmark(LABKIT, n)`` with the flight recorder's ring and a stall
    threshold of 0.1 s on it (what a blocking monitor sets), no watchdog."""
    def run(n):
        from labkit._loop import lib
        from tracing import recorder as _recorder
        flight = _flight_on(None)
        ring = _recorder.active().ring
        lib.lk_trace_set_stall_threshold(ring, 100_000_000)
        try:
            return benchmark(LABKIT, n)
        finally:
            lib.lk_trace_set_stall_threshold(ring, 0)
            _flight_off(flight)
    return run


register(Benchmark(
    name="sleep0_ring_watched",
    description="sleep0 with the ring and a stall threshold (resume sites), no watchdog",
    default_n=50_000, ops_per_n=2,
    impls={LABKIT: _with_watched_ring(sleep0_gevent_like)},
))

register(Benchmark(
    name="socket_recv_wait_ring_watched",
    description="socket_recv_wait with the ring and a stall threshold, no watchdog",
    default_n=20_000, ops_per_n=1,
    impls={LABKIT: _with_watched_ring(_socket_recv_wait)},
))

register(Benchmark(
    name="sleep0_settrace_noop",
    description="sleep0 with a no-op Python greenlet.settrace callback",
    default_n=50_000, ops_per_n=2,
    impls={LABKIT: _sleep0_with(_settrace_on, _settrace_off)},
))

if importlib.util.find_spec("yappi") is not None:
    register(Benchmark(
        name="sleep0_yappi",
        description="sleep0 under yappi (greenlet context backend)",
        default_n=20_000, ops_per_n=2,
        impls={LABKIT: _sleep0_with(_yappi_on, _yappi_off)},
    ))


def snapshot_10k(n):
    """n calls of tracing.snapshot() on a hub of 10,000 parked greenlets
    (each waits on an Event), while a recorder runs (the live console's
    case: it refreshes every 250 ms; issue 19's target is < 20 ms each)."""
    from time import perf_counter
    import labkit
    import tracing
    from labkit.event import Event
    tracing.start()
    try:
        ev = Event()
        greenlets = [labkit.spawn(ev.wait) for _ in range(10_000)]
        labkit.sleep(0.01)
        tracing.snapshot()   # the first one meets every greenlet
        started = perf_counter()
        for _ in range(n):
            tracing.snapshot()
        elapsed = perf_counter() - started
        ev.set()
        labkit.joinall(greenlets)
        return elapsed
    finally:
        tracing.stop()


register(Benchmark(
    name="snapshot_10k",
    description="tracing.snapshot() of 10,000 parked greenlets (per snapshot)",
    default_n=20, ops_per_n=1,
    impls={LABKIT: snapshot_10k},
))


_fold_data: bytes | None = None
#: ledger_fold's unit: records folded per n
FOLD_RECORDS_PER_N = 64


def _fold_records() -> bytes:
    """~40,000 raw records (the ring's layout) of 50 greenlets switching
    with ``sleep(0)``: recorded once per process. Only sleep(0), so the
    records -- all but their timestamps -- are the same in every run."""
    global _fold_data
    if _fold_data is None:
        import labkit
        from labkit._loop import ffi, lib
        from tracing.recorder import Recorder
        recorder = Recorder(capacity=1 << 16).start()
        try:
            def worker():
                for _ in range(400):
                    labkit.sleep(0)
            labkit.joinall([labkit.spawn(worker) for _ in range(50)])
            count = lib.lk_trace_count(recorder.ring)
            buffer = ffi.new("lk_trace_entry[]", count)
            first = ffi.new("uint64_t *")
            n = lib.lk_trace_read(recorder.ring, buffer, count, 0, first)
            _fold_data = bytes(ffi.buffer(buffer, n * 32))
        finally:
            recorder.stop(read=False)
    return _fold_data


def ledger_fold(n, tapped=False, reference=False):
    """Fold ``n * FOLD_RECORDS_PER_N`` records into a fresh Ledger, in
    batches of Ledger.BATCH (cycling through :func:`_fold_records`);
    ``reference``: with the one-by-one Python reading instead of the C
    fold (``python -m labkit.bench.fold`` compares them)."""
    from tracing.ledger import Ledger
    data = memoryview(_fold_records())
    total = len(data) // 32
    ledger = Ledger()
    fold = ledger._fold_one_by_one if reference else ledger.fold
    tap = ledger.tap() if tapped else None
    left, pos = n * FOLD_RECORDS_PER_N, 0
    started = time.perf_counter()
    while left > 0:
        count = min(left, Ledger.BATCH, total - pos)
        fold(data[pos * 32:(pos + count) * 32])
        if tap is not None:
            tap.take()
        left -= count
        pos = (pos + count) % total
    return time.perf_counter() - started


register(Benchmark(
    name="ledger_fold",
    description="the ledger's fold of the ring's records, per record",
    default_n=5_000, ops_per_n=FOLD_RECORDS_PER_N,
    impls={LABKIT: ledger_fold},
))

register(Benchmark(
    name="ledger_fold_tapped",
    description="the same with a timeline's tap (Slices per batch), per record",
    default_n=5_000, ops_per_n=FOLD_RECORDS_PER_N,
    impls={LABKIT: lambda n: ledger_fold(n, tapped=True)},
))


def strip_paint(n):
    """Paint ``n * FOLD_RECORDS_PER_N`` records (to a batch) of Slices into
    a live timeline's Strip (tracing/live_timeline.py, loop_c/lk_strip.c),
    as its thread does each refresh: :func:`_fold_records` folded once
    with a tap, then its batches painted again and again into one Strip,
    without their spawns after the first time (painted again, a spawn
    under a known id would start a new lane). Only the painting is timed."""
    import numpy as np
    from tracing.ledger import Ledger, Slices
    from tracing.live_timeline import Strip
    data = memoryview(_fold_records())
    ledger = Ledger()
    tap = ledger.tap()
    for pos in range(0, len(data) // 32, Ledger.BATCH):
        ledger.fold(data[pos * 32:(pos + Ledger.BATCH) * 32])
    batches = tap.take()
    now = int(max(b.run_end.max() for b in batches if len(b.run_end)))
    strip = Strip(5.0, 1200, 0, 1)
    strip.add_slices(batches, now)
    none = np.zeros(0, np.int64)
    again = [Slices(*(none if name.startswith("spawn_") else getattr(b, name)
                      for name in Slices.__slots__)) for b in batches]
    left, i = n * FOLD_RECORDS_PER_N, 0
    started = time.perf_counter()
    while left > 0:
        batch = again[i % len(again)]
        strip.add_slices([batch], now)
        left -= batch.count
        i += 1
    return time.perf_counter() - started


register(Benchmark(
    name="strip_paint",
    description="the live timeline's painting of the fold's Slices, per record",
    default_n=5_000, ops_per_n=FOLD_RECORDS_PER_N,
    impls={LABKIT: strip_paint},
))


# --- blocking detection accuracy -------------------------------------------

def blocking_accuracy(blocks=20, block_s=0.15, threshold=0.1):
    """``blocks`` greenlets each block the loop for ``block_s`` with
    time.sleep; returns (reported, mean relative duration error)."""
    import labkit
    import tracing

    def blocker():
        labkit.sleep(0.001)
        time.sleep(block_s)

    monitor = tracing.monitor_blocking(threshold, report=False)
    try:
        for _ in range(blocks):
            labkit.spawn(blocker).join()
    finally:
        monitor.stop()
    errors = [abs(b.duration - block_s) / block_s for b in monitor.blocks]
    return len(monitor.blocks), (sum(errors) / len(errors) if errors else None)


def cooperative_false_reports(seconds=3.0, threshold=0.1):
    """Cooperative-only load (sleep(0) spinners, timers): blocks reported."""
    import labkit
    import tracing

    def worker(step):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            labkit.sleep(step)

    monitor = tracing.monitor_blocking(threshold, report=False)
    try:
        labkit.joinall([labkit.spawn(worker, s) for s in (0, 0, 0.001, 0.01, 0.05)])
    finally:
        monitor.stop()
    return len(monitor.blocks)


def echo_overhead(quick: bool = False) -> str:
    """TCP echo at N = 50, untraced and traced, as one line of text."""
    from labkit.bench import echo
    results = echo.measure(["labkit", "traced"], [50],
                           echo.QUICK_DURATION_S if quick else echo.DURATION_S,
                           1 if quick else 3)
    plain, traced = results["labkit"][50], results["traced"][50]
    slowdown = echo.ratio(plain, traced)
    if slowdown is None:
        return f"echo N=50: n/a ({plain.get('reason') or traced.get('reason')})"
    return (f"echo N=50: {plain['msgs_per_s']:,.0f} msg/s untraced, "
            f"{traced['msgs_per_s']:,.0f} traced -> {slowdown:.2f}× slower traced")


def main(argv=None):
    """Print the tracing benchmarks side by side, then the blocking figures."""
    from labkit.bench import format_duration, run_worker
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    names = ["sleep0", "sleep0_traced", "sleep0_settrace_noop", "sleep0_yappi"]
    base = None
    print("benchmark              per yield   vs sleep0")
    for name in names:
        n = 2_500 if quick else 50_000
        out = run_worker(LABKIT, name, n, 1 if quick else 5)
        if out.get("status") != "ok":
            print(f"{name:<22} n/a ({out.get('reason') or out.get('status')})")
            continue
        ns = out["per_op_ns"]
        base = base or ns
        print(f"{name:<22} {format_duration(ns):>9}   {ns / base:.2f}×")
    print()
    print(echo_overhead(quick))
    reported, error = blocking_accuracy()
    err = "n/a" if error is None else f"{error * 100:.1f}%"
    print(f"\nblocking: 20 blocks of 0.15 s at threshold 0.1 s -> {reported}/20 reported, "
          f"mean duration error {err}")
    print(f"cooperative-only load, 3 s at threshold 0.1 s -> "
          f"{cooperative_false_reports()} report(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
