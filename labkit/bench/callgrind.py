"""Instructions per operation, counted by valgrind: a speed gate that noise
cannot move.

Wall-clock timings on a shared two-core machine wander by 10-30% from run to
run; the number of instructions the CPU executes for the same work does not.
This script runs a benchmark of :mod:`labkit.bench` under
``valgrind --tool=callgrind`` twice, with ``n1`` and ``n2`` operations, and
reports ``(I(n2) - I(n1)) / (n2 - n1)``: the instructions one more operation
costs. Start-up, imports and the warm-up cancel out in the difference. The
interpreter runs with ``PYTHONHASHSEED=0`` and the garbage collector off.

Two of labkit's decisions depend on the wall clock, and valgrind runs code
~50x slower, so they would fire at a different rate under it than in real
life, and differently in each run: a busy hub polls for I/O every
``hub.IO_CHECK_INTERVAL_NS`` (0.2 ms), and a semaphore waiter older than
``lock.STARVATION_NS`` (1 ms) gets a direct hand-off. The child turns both
off (:data:`FROZEN_CLOCK_SETTINGS`), so the count is that of the steady path
and repeats to within a fraction of a percent. (In a real run the I/O check
adds one poll per 0.2 ms of busy time, about one per hundred switches.)

Usage::

    python -m labkit.bench.callgrind                      # the gate's five + timers, mass sleep
    python -m labkit.bench.callgrind --only sleep0,event_roundtrip
    python -m labkit.bench.callgrind --json after.json --baseline before.json

With ``--baseline`` it compares with an earlier ``--json`` file and exits
with status 1 if any benchmark grew by more than ``--max-growth`` percent
(2 by default): run it before a change on a hot path, keep the file, run it
again after.

Counts include everything the process executes for one operation: the
interpreter, greenlet's switch, labkit's C loop and the kernel-crossing
syscalls' user-side code (not the kernel's own work) -- except glibc's
malloc internals (``_int_malloc``, ``unlink_chunk`` ...). Greenlet switches
copy stack slices to and from malloc'd memory, and which path glibc takes
for them depends on the heap's whole history: importing one more module, or
renaming an attribute, moved the sleep(0) count by 1.5% with the Python code
per operation unchanged to the instruction. The report gives that part in
its own column ("malloc"); the gate compares the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: the hot paths every change to parking and waking must not slow down
GATE_BENCHMARKS = ("sleep0", "event_roundtrip", "queue_pingpong",
                   "semaphore_contention", "socket_recv_wait")
#: rows reported by default besides the gate's: a Timeout start + cancel,
#: and one greenlet of many that sleep, park and are killed (issue 21)
DEFAULT_BENCHMARKS = GATE_BENCHMARKS + ("timer_cancel", "mass_sleep")
#: operations in the two runs whose difference is measured
DEFAULT_N1, DEFAULT_N2 = 2_000, 12_000
DEFAULT_MAX_GROWTH_PERCENT = 2.0
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The child: load the suites, warm up, then run the benchmark once with the
# collector off. The warm-up runs the same n in both children, so it cancels.
#: module globals the child sets before running labkit (see the docstring)
FROZEN_CLOCK_SETTINGS = {"labkit.hub": {"IO_CHECK_INTERVAL_NS": 1 << 62},
                         "labkit.lock": {"STARVATION_NS": 1 << 62}}

_CHILD = """
import gc, importlib, json, sys
if sys.argv[2] == "labkit":
    for module, values in json.loads(sys.argv[4]).items():
        for name, value in values.items():
            setattr(importlib.import_module(module), name, value)
from labkit.bench import micro
micro.load_suites()
bench = micro.BENCHMARKS[sys.argv[1]]
fn = bench.impls[sys.argv[2]]
fn(200)
gc.collect()
gc.disable()
fn(int(sys.argv[3]))
"""

#: glibc's allocator internals, counted apart (see the module docstring)
MALLOC_FUNCTIONS = frozenset((
    "_int_malloc", "_int_free", "_int_realloc", "unlink_chunk.constprop.0", "unlink_chunk",
    "malloc", "free", "cfree", "realloc", "calloc", "malloc_consolidate",
    "tcache_get", "tcache_put", "_int_free_merge_chunk", "_int_free_create_chunk",
    "_int_free_maybe_consolidate"))
_FUNCTION_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)$")


def count_instructions(bench: str, impl: str, n: int, python: str = sys.executable) -> tuple[int, int]:
    """(all instructions, of which in glibc malloc) of one child process that
    runs ``bench`` ``n`` times."""
    # OpenBLAS (numpy's, which tracing imports) starts worker threads that
    # spin for a while after a call: valgrind counts their instructions,
    # and how many depends on time, not on the work (it added ~2,000 to
    # the socket_recv_wait_ring row, differently each run). One thread: none.
    env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if impl != "labkit":
        # as the timing driver does: peers run without labkit's arena cache
        # (importing labkit.bench would install it under their greenlets)
        env["LABKIT_ARENA_CACHE"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               python, "-c", _CHILD, bench, impl, str(n), json.dumps(FROZEN_CLOCK_SETTINGS)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{bench}/{impl} n={n} failed under valgrind:\n{proc.stderr[-3000:]}")
        annotated = subprocess.run(["callgrind_annotate", "--threshold=100", out],
                                   capture_output=True, text=True, check=True).stdout
    total = in_malloc = 0
    for line in annotated.splitlines():
        match = _FUNCTION_LINE.match(line)
        if match is None:
            continue
        count = int(match.group(1).replace(",", ""))
        where = match.group(2)
        if where.startswith("PROGRAM TOTALS"):
            total = count
        elif where.split(" [")[0].rsplit(":", 1)[-1] in MALLOC_FUNCTIONS and "libc" in where:
            in_malloc += count
    if not total:
        raise RuntimeError(f"no PROGRAM TOTALS in callgrind_annotate's output for {bench}/{impl}")
    return total, in_malloc


def instructions_per_op(bench: str, impl: str = "labkit", n1: int = DEFAULT_N1,
                        n2: int = DEFAULT_N2) -> tuple[float, float]:
    """(instructions outside glibc malloc, instructions in it) that one more
    operation costs (see the module docstring)."""
    from labkit.bench import micro
    micro.load_suites()
    if bench not in micro.BENCHMARKS:
        raise ValueError(f"unknown benchmark {bench!r}; known: {', '.join(sorted(micro.BENCHMARKS))}")
    if not 0 < n1 < n2:
        raise ValueError(f"need 0 < n1 < n2, got n1={n1}, n2={n2}")
    ops = (n2 - n1) * micro.BENCHMARKS[bench].ops_per_n
    low_total, low_malloc = count_instructions(bench, impl, n1)
    high_total, high_malloc = count_instructions(bench, impl, n2)
    in_malloc = (high_malloc - low_malloc) / ops
    return (high_total - low_total) / ops - in_malloc, in_malloc


def compare(before: dict, after: dict, max_growth: float) -> tuple[list[str], bool]:
    """Table lines comparing two result dicts ({bench: instructions}); and
    whether every benchmark present in both stayed within ``max_growth`` %."""
    lines = [f"{'benchmark':<22} {'before':>10} {'after':>10} {'change':>8}"]
    ok = True
    for name, now in after.items():
        was = before.get(name)
        if was is None:
            lines.append(f"{name:<22} {'-':>10} {now:>10.0f} {'new':>8}")
            continue
        change = (now - was) / was * 100
        flag = "" if change <= max_growth else "  <-- over the limit"
        ok = ok and change <= max_growth
        lines.append(f"{name:<22} {was:>10.0f} {now:>10.0f} {change:>+7.1f}%{flag}")
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.callgrind",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(DEFAULT_BENCHMARKS),
                        help="comma-separated benchmark names (default: the gate's five, "
                             "timer_cancel and mass_sleep)")
    parser.add_argument("--impl", default="labkit", help="implementation to count (default labkit)")
    parser.add_argument("--n1", type=int, default=DEFAULT_N1)
    parser.add_argument("--n2", type=int, default=DEFAULT_N2)
    parser.add_argument("--json", metavar="FILE",
                        help="write {benchmark: instructions per op, malloc excluded}")
    parser.add_argument("--baseline", metavar="FILE", help="compare with an earlier --json file")
    parser.add_argument("--max-growth", type=float, default=DEFAULT_MAX_GROWTH_PERCENT,
                        help="percent growth that fails the comparison (default 2)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    results = {}
    print(f"{'benchmark':<22} {'instructions per op':>20} {'malloc':>8}")
    for name in names:
        results[name], in_malloc = instructions_per_op(name, args.impl, args.n1, args.n2)
        print(f"{name:<22} {results[name]:>20.0f} {in_malloc:>8.0f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.baseline:
        before = json.loads(Path(args.baseline).read_text())
        lines, ok = compare(before, results, args.max_growth)
        print()
        print("\n".join(lines))
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
