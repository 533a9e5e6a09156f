"""What the ledger's fold costs per record: ``python -m labkit.bench.fold``.

    python -m labkit.bench.fold                  5 rounds of 320,000 records
    python -m labkit.bench.fold --rounds 9 --records 1000000

tracing.ledger folds the ring's records into per-greenlet accounts (and,
for a timeline, Slices) in C (loop_c/lk_fold.c), checked against the
one-by-one Python reading it replaced on the hot path. This folds the
records of :func:`labkit.bench.tracing.ledger_fold` (50 greenlets switching
with ``sleep(0)``) in batches of ``Ledger.BATCH`` with each fold, without
and with a tap (a timeline's Slices), alternating, and prints nanoseconds
per record: median and spread of ``--rounds`` rounds, and the ratio to
the reference. For instructions per record, which machine noise does not
move: ``python -m labkit.bench.callgrind --only ledger_fold,ledger_fold_tapped``.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from labkit.bench.tracing import FOLD_RECORDS_PER_N, ledger_fold

FOLDS = {"C (lk_fold.c)": False, "one by one (reference)": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.fold", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=320_000,
                        help="records folded per round and fold (default 320,000)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.records < FOLD_RECORDS_PER_N:
        parser.error(f"--rounds must be positive, --records at least {FOLD_RECORDS_PER_N}")
    n = args.records // FOLD_RECORDS_PER_N
    records = n * FOLD_RECORDS_PER_N
    print(f"{records:,} records a round, {args.rounds} rounds")
    print(f"{'fold':<32}{'ns/record':>10}{'spread':>16}{'vs reference':>14}")
    for tapped in (False, True):
        runs = {name: [] for name in FOLDS}
        for _ in range(args.rounds):     # alternating
            for name, reference in FOLDS.items():
                seconds = ledger_fold(n, tapped=tapped, reference=reference)
                runs[name].append(seconds * 1e9 / records)
        ref = statistics.median(runs["one by one (reference)"])
        for name, values in runs.items():
            med = statistics.median(values)
            label = name + (", tapped" if tapped else "")
            print(f"{label:<32}{med:>10.0f}{f'{min(values):.0f}-{max(values):.0f}':>16}"
                  f"{med / ref:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
