"""Run one benchmark for one implementation and print one JSON line.

Usage::

    python -m labkit.bench._worker IMPL BENCH N REPEATS

The driver (``labkit/bench/__init__.py``) starts one of these processes per
(benchmark, implementation) pair, so that gevent, asyncio and labkit never
share a process: each would otherwise inherit the others' imports, hubs and
garbage, and gevent's hub and labkit's hub would compete for the main thread.

Output, always a single JSON object on stdout, exit status 0:

- ``{"status": "ok", "impl", "bench", "n", "repeats", "per_op_ns",
  "runs_s", "extras"}``: ``per_op_ns`` is the best (smallest) of the runs,
  divided by the number of operations in a run; ``extras`` the largest over the
  runs of what a benchmark that returns ``(seconds, {name: value})``
  measured besides time (``bytes_per_op``: memory), else ``{}``;
- ``{"status": "unavailable", "impl", "bench", "reason"}``: the
  implementation's package cannot be imported. That is not an error: the
  table reports it as "n/a".

Anything else (the benchmark raised) prints a traceback on stderr and exits
with status 1.
"""

import gc
import importlib
import json
import sys

# What must import for an implementation to be "available". For labkit the
# hub's public names must be there too: the package directory always exists
# (this file lives in it), but the hub may not be built yet.
REQUIREMENTS = {
    "labkit": ("labkit", ("spawn", "sleep", "joinall", "Timeout", "get_hub")),
    "gevent": ("gevent", ()),
    "uvloop": ("uvloop", ()),
    "greenlet": ("greenlet", ()),
    "asyncio": ("asyncio", ()),
    "rloop": ("rloop", ()),
    # the interpreter's own primitive, the floor of a patched one (bench/threads.py)
    "original": ("threading", ()),
}


def unavailable_reason(impl):
    """Return why ``impl`` cannot run here, or None if it can."""
    module_name, names = REQUIREMENTS.get(impl, (impl, ()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        return f"{module_name} has no {', '.join(missing)} yet"
    return None


def time_runs(fn, n, repeats):
    """Call ``fn(n)`` ``repeats`` times after a short warm-up; return
    ``(seconds of each run, {extra: largest over the runs})``.

    The garbage collector is off during each run, as in ``timeit``: a
    collection triggered by one implementation's allocation pattern would
    otherwise land in a random run and blur the comparison.
    """
    fn(max(1, n // 20))  # warm-up: first-call imports, interpreter caches
    runs, extras = [], {}
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            outcome = fn(n)
        finally:
            gc.enable()
        if isinstance(outcome, tuple):
            outcome, measured = outcome
            for name, value in measured.items():
                extras.setdefault(name, []).append(value)
        runs.append(outcome)
    # The largest, not the median: the first run in a fresh process grows
    # the heap, later runs reuse what it left behind (memory per greenlet
    # read 7.2 KiB, then 5.2 KiB), and what a user meets is the first.
    return runs, {name: max(values) for name, values in extras.items()}


def run(impl, bench_name, n, repeats):
    """Run the benchmark and return the JSON-ready result dict."""
    from labkit.bench import micro

    micro.load_suites()
    bench = micro.BENCHMARKS[bench_name]  # KeyError: the driver validated it
    if impl not in bench.impls:
        raise KeyError(f"benchmark {bench_name!r} has no {impl!r} implementation")
    result = {"impl": impl, "bench": bench_name}
    reason = unavailable_reason(impl)
    if reason is not None:
        return dict(result, status="unavailable", reason=reason)
    runs, extras = time_runs(bench.impls[impl], n, repeats)
    per_op_ns = min(runs) / (n * bench.ops_per_n) * 1e9
    return dict(result, status="ok", n=n, repeats=repeats,
                per_op_ns=per_op_ns, runs_s=runs, extras=extras)


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    impl, bench_name, n, repeats = argv[0], argv[1], int(argv[2]), int(argv[3])
    print(json.dumps(run(impl, bench_name, n, repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
