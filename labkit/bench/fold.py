"""What the ledger's fold costs per record: ``python -m labkit.bench.fold``.

    python -m labkit.bench.fold                  batches of 4,096 (the ledger's)
    python -m labkit.bench.fold --batch 16384 --rounds 9

tracing.ledger folds the ring's records into per-greenlet accounts (and,
for a timeline, Slices) in C (loop_c/lk_fold.c), checked against the
one-by-one Python reading it replaced on the hot path. This records an
echo-like load -- 50 greenlets switching with ``sleep(0)``, every tenth
also sleeping 0.1 ms -- ~300,000 records, then folds them in batches with
each fold, without and with a tap (a timeline's Slices), alternating, and
prints nanoseconds per record: median and spread of ``--rounds`` rounds,
and the ratio to the reference. CPU-bound and single-threaded; still,
compare figures from one run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time


def record(count: int = 300_000) -> bytes:
    """Raw records (the ring's layout) of an echo-like load."""
    import labkit
    from labkit._loop import ffi, lib
    from tracing.recorder import Recorder
    recorder = Recorder(capacity=1 << 20).start()
    stop = []

    def worker(i):
        while not stop:
            labkit.sleep(0)
            labkit.sleep(0.0001 if i % 10 == 0 else 0)

    try:
        workers = [labkit.spawn(worker, i) for i in range(50)]
        while lib.lk_trace_count(recorder.ring) < count:
            labkit.sleep(0.01)
        stop.append(1)
        labkit.joinall(workers)
        total = lib.lk_trace_count(recorder.ring)
        buffer = ffi.new("lk_trace_entry[]", total)
        first = ffi.new("uint64_t *")
        n = lib.lk_trace_read(recorder.ring, buffer, total, 0, first)
        return bytes(ffi.buffer(buffer, n * 32))
    finally:
        recorder.stop(read=False)


def fold_ns(data: bytes, batch: int, reference: bool, tap: bool) -> float:
    """ns per record to fold ``data`` in batches of ``batch`` records."""
    from tracing.ledger import Ledger
    ledger = Ledger()
    taps = ledger.tap() if tap else None
    fold = ledger._fold_one_by_one if reference else ledger.fold
    step = batch * 32
    chunks = [data[i:i + step] for i in range(0, len(data) - step + 1, step)]
    start = time.perf_counter_ns()
    for chunk in chunks:
        fold(chunk)
        if taps is not None:
            taps.take()
    return (time.perf_counter_ns() - start) / (len(chunks) * batch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.fold", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=300_000,
                        help="records to record and fold (default 300,000)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.records < args.batch:
        parser.error("--batch and --rounds must be positive, --records at least --batch")
    data = record(args.records)
    print(f"{len(data) // 32:,} records, batches of {args.batch:,}, {args.rounds} rounds")
    print(f"{'fold':<28}{'ns/record':>10}{'spread':>16}{'vs reference':>14}")
    for tap in (False, True):
        runs = {"C (lk_fold.c)": [], "one by one (reference)": []}
        for _ in range(args.rounds):     # alternating
            runs["C (lk_fold.c)"].append(fold_ns(data, args.batch, False, tap))
            runs["one by one (reference)"].append(fold_ns(data, args.batch, True, tap))
        ref = statistics.median(runs["one by one (reference)"])
        for name, values in runs.items():
            med = statistics.median(values)
            label = name + (", tapped" if tap else "")
            print(f"{label:<28}{med:>10.0f}{f'{min(values):.0f}-{max(values):.0f}':>16}"
                  f"{med / ref:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
