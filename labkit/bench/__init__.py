"""``python -m labkit bench``: how labkit compares with gevent, asyncio, uvloop.

The driver in this module never runs a benchmark itself. For every
(benchmark, implementation) pair it starts a fresh interpreter::

    python -m labkit.bench._worker IMPL BENCH N REPEATS

reads the one JSON line the worker prints, and finally prints a table of
per-operation times with the ratio labkit / peer. One process per pair keeps
the implementations apart: gevent's hub, labkit's hub and an asyncio loop in
one process would share imports, garbage and the main thread, and the first
benchmark would pay for the others' warm-up.

What counts as a failure:

- a peer (gevent, asyncio, uvloop) that is not installed is reported "n/a";
  a peer that crashes is reported "n/a" with a warning. Neither changes the
  exit status: the benchmark is about labkit;
- labkit crashing is a failure: its stderr is printed and ``main`` returns 1.
  labkit not being importable at all (the hub is not built) is "n/a", with
  the reason printed under the table.

The benchmarks themselves live in ``labkit.bench.micro`` (see its docstring to
add one); ``format_table`` is a pure function of the results, for tests.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from labkit.bench import micro

DEFAULT_REPEATS = 5
# --quick: a smoke run. N shrinks by this factor and each pair runs once.
QUICK_DIVISOR = 20
QUICK_REPEATS = 1
# A worker that takes this long is stuck (a lost wake-up, a deadlock).
WORKER_TIMEOUT_S = 120

RATIO_LEGEND = ("ratio = labkit time / peer time per operation: "
                "below 1.00× labkit is faster, above 1.00× it is slower.")

# The directory holding the labkit package, so that workers import this same
# labkit even when it is not installed (run from a source checkout).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --- command line ----------------------------------------------------------

def split_names(text):
    """'a, b,,c' -> ['a', 'b', 'c']"""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_args(argv):
    """Parse ``argv`` (without "bench"); unknown names exit via argparse."""
    micro.load_suites()
    parser = argparse.ArgumentParser(
        prog="python -m labkit bench",
        description="Micro benchmarks of labkit against gevent, asyncio and uvloop, "
                    "each implementation in its own process.")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: N / {QUICK_DIVISOR}, one repeat")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the results to FILE as JSON")
    parser.add_argument("--only", metavar="NAME[,NAME]",
                        help="run only these benchmarks: " + ", ".join(micro.BENCHMARKS))
    parser.add_argument("--peers", metavar="NAME[,NAME]", default=",".join(micro.PEERS),
                        help="compare with these (default: %(default)s)")
    parser.add_argument("--echo", action="store_true",
                        help="also run the TCP echo benchmark (msg/s, higher is better; "
                             "python -m labkit.bench.echo --help for --full, --idle)")
    parser.add_argument("--http", action="store_true",
                        help="also run the HTTP hello-world benchmark with wrk "
                             "(labkit WSGIServer vs gevent, gunicorn -k gevent, uvicorn, "
                             "granian)")
    parser.add_argument("--notebook", action="store_true",
                        help="also measure round trips to an echo server spawned in a "
                             "real Jupyter kernel (guest mode and %%gui), median and p99")
    args = parser.parse_args(argv)

    args.benchmarks = list(micro.BENCHMARKS)
    if args.only is not None:
        args.benchmarks = split_names(args.only)
        unknown = [name for name in args.benchmarks if name not in micro.BENCHMARKS]
        if unknown or not args.benchmarks:
            parser.error(f"unknown benchmark {', '.join(map(repr, unknown)) or '(none)'}"
                         f"; choose from: {', '.join(micro.BENCHMARKS)}")
    args.peers = split_names(args.peers)
    unknown = [name for name in args.peers if name not in micro.PEERS]
    if unknown:
        parser.error(f"unknown peer {', '.join(map(repr, unknown))}"
                     f"; choose from: {', '.join(micro.PEERS)}")
    return args


# --- running the workers ---------------------------------------------------

def impls_to_run(bench, columns):
    """The implementations to measure so that every table column has a value.

    A column aliased to another implementation ("labkit" -> "greenlet" for
    greenlet_switch) is measured once, under the alias.
    """
    impls = []
    for column in columns:
        impl = bench.aliases.get(column, column)
        if impl in bench.impls and impl not in impls:
            impls.append(impl)
    return impls


def run_worker(impl, bench_name, n, repeats):
    """Run one worker process; return its JSON dict, or a "failed" dict.

    A failed dict carries the worker's stderr, so that the caller can show
    why it failed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    if impl != micro.LABKIT:
        # Every worker imports labkit (this package lives in it), and
        # importing labkit wraps CPython's arena allocator with its block
        # cache (loop_c/lk_arena_cache.c): without this, gevent's greenlets
        # would run on labkit's cache. For labkit the caller's setting holds.
        env["LABKIT_ARENA_CACHE"] = "0"
    command = [sys.executable, "-m", "labkit.bench._worker",
               impl, bench_name, str(n), str(repeats)]
    failed = {"impl": impl, "bench": bench_name, "status": "failed"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True,
                              env=env, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        return dict(failed, stderr=f"timed out after {WORKER_TIMEOUT_S} s\n"
                                   f"{exc.stderr or ''}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return dict(failed, stderr=proc.stderr or f"exit status {proc.returncode}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        return dict(failed, stderr=f"unreadable worker output: {lines[-1]!r}\n{proc.stderr}")


def show_progress(text):
    """One overwritten status line on a terminal; nothing when redirected."""
    if sys.stderr.isatty():
        print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)


def run_all(args):
    """Run every selected (benchmark, implementation) pair.

    Returns ``(results, outcomes)``: ``results[bench][impl]`` holds the
    successful measurements, ``outcomes`` every worker's dict in run order.
    """
    repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    columns = [micro.LABKIT] + args.peers
    results, outcomes = {}, []
    for bench_name in args.benchmarks:
        bench = micro.BENCHMARKS[bench_name]
        n = max(1, bench.default_n // QUICK_DIVISOR) if args.quick else bench.default_n
        results[bench_name] = {}
        for impl in impls_to_run(bench, columns):
            show_progress(f"{bench_name}: {impl} ...")
            outcome = run_worker(impl, bench_name, n, repeats)
            outcomes.append(outcome)
            if outcome["status"] == "ok":
                results[bench_name][impl] = {key: outcome[key]
                                             for key in ("per_op_ns", "n", "repeats")}
    show_progress("")
    return results, outcomes


# --- results -> numbers and text (pure functions) --------------------------

def lookup(results, aliases, bench_name, column):
    """Per-op ns shown in ``column`` for a benchmark, or None.

    Returns ``(impl, ns)``: the implementation actually measured (after
    aliases) and its time.
    """
    impl = aliases.get(bench_name, {}).get(column, column)
    entry = results.get(bench_name, {}).get(impl)
    return impl, (entry["per_op_ns"] if entry else None)


def compute_ratios(results, peers, aliases):
    """``{bench: {peer: labkit_ns / peer_ns}}`` where both were measured.

    A peer that ran the very same code as labkit (an alias to the same
    implementation) gets no ratio: it would be 1.0 by construction.
    """
    ratios = {}
    for bench_name in results:
        labkit_impl, labkit_ns = lookup(results, aliases, bench_name, micro.LABKIT)
        row = {}
        for peer in peers:
            peer_impl, peer_ns = lookup(results, aliases, bench_name, peer)
            if labkit_ns and peer_ns and peer_impl != labkit_impl:
                row[peer] = labkit_ns / peer_ns
        ratios[bench_name] = row
    return ratios


def format_duration(ns):
    """87.3 ns, 12.4 µs, 1.23 ms, 1.50 s; "n/a" for None."""
    if ns is None:
        return "n/a"
    for unit, scale in (("ns", 1), ("µs", 1e3), ("ms", 1e6)):
        if ns < 1000 * scale:
            value = ns / scale
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{ns / 1e9:.2f} s"


def format_ratio(ratio):
    """0.62×; "n/a" for None."""
    return "n/a" if ratio is None else f"{ratio:.2f}×"


def format_table(results, peers, aliases=None):
    """The results table as text, one row per benchmark.

    ``results``: ``{bench: {impl: {"per_op_ns": float, ...}}}``.
    ``peers``: the peer columns, in order. ``aliases``: ``{bench: {column:
    impl}}``, for columns that show another implementation's measurement;
    their ratio reads "same". Missing measurements read "n/a".
    """
    aliases = aliases or {}
    ratios = compute_ratios(results, peers, aliases)
    header = ["benchmark", micro.LABKIT]
    for peer in peers:
        header += [peer, "ratio"]
    rows = [header]
    for bench_name in results:
        labkit_impl, labkit_ns = lookup(results, aliases, bench_name, micro.LABKIT)
        row = [bench_name, format_duration(labkit_ns)]
        for peer in peers:
            peer_impl, peer_ns = lookup(results, aliases, bench_name, peer)
            ratio = ratios[bench_name].get(peer)
            same = peer_impl == labkit_impl and peer_ns is not None
            row += [format_duration(peer_ns), "same" if same else format_ratio(ratio)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- metadata and report ---------------------------------------------------

def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def labkit_backend_name():
    """The C loop's backend ("epoll", "poll"), or None if labkit won't say.

    This creates labkit's hub in the driver process; the driver runs no
    benchmark, so that costs nothing but a few file descriptors.
    """
    try:
        import labkit
        return labkit.get_hub().loop.backend_name
    except Exception:
        return None


def gather_meta(args, outcomes):
    """Where and how the numbers were taken, plus what could not run."""
    unavailable, failed = {}, {}
    for outcome in outcomes:
        if outcome["status"] == "unavailable":
            unavailable.setdefault(outcome["impl"], outcome["reason"])
        elif outcome["status"] == "failed":
            failed[f"{outcome['bench']}/{outcome['impl']}"] = outcome["stderr"]
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "labkit_backend": labkit_backend_name(),
        "versions": {name: package_version(name)
                     for name in ("greenlet", "gevent", "uvloop")},
        "quick": args.quick,
        "repeats": QUICK_REPEATS if args.quick else DEFAULT_REPEATS,
        "peers": args.peers,
        "unavailable": unavailable,
        "failed": failed,
    }


def format_report(meta, results, peers):
    """Everything printed on stdout: context, table, legend, notes."""
    backend = meta["labkit_backend"] or "n/a"
    lines = [
        f"Python {meta['python']} ({meta['python_implementation']}) on "
        f"{meta['platform']}, {meta['cpus']} CPUs; labkit loop backend: {backend}",
        f"per-operation time, best of {meta['repeats']} run(s)"
        + (" (--quick: smoke run, not for comparison)" if meta["quick"] else ""),
        "",
        format_table(results, peers, benchmark_aliases()),
        "",
        RATIO_LEGEND,
    ]
    if "greenlet_switch" in results:
        lines.append("greenlet_switch is the greenlet package itself, "
                     "which labkit and gevent both switch with.")
    for impl, reason in meta["unavailable"].items():
        lines.append(f"{impl}: n/a ({reason})")
    for pair, stderr in meta["failed"].items():
        last_line = (stderr.strip().splitlines() or ["?"])[-1]
        lines.append(f"{pair}: FAILED ({last_line})")
    return "\n".join(lines)


def benchmark_aliases():
    """``{bench: {column: impl}}``. A peer's column borrows another
    implementation's figure only when that peer is installed: without gevent,
    "gevent 289 ns" in the greenlet_switch row would report a run that gevent
    never took part in."""
    return {name: {column: impl for column, impl in bench.aliases.items()
                   if column == micro.LABKIT or peer_installed(column)}
            for name, bench in micro.BENCHMARKS.items()}


def peer_installed(name):
    """Whether the peer's package can be found, without importing it here."""
    import importlib.util
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def main(argv=None):
    """Entry point of ``python -m labkit bench``; returns the exit status.

    ``--robustness`` is a different report (faults and hostile input tried,
    survived, items lost), with options of its own: it takes over the
    command line.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--robustness" in argv:
        from labkit.bench.robustness import main as robustness_main
        return robustness_main([a for a in argv if a != "--robustness"])
    args = parse_args(argv)
    results, outcomes = run_all(args)
    meta = gather_meta(args, outcomes)
    print(format_report(meta, results, args.peers))
    if args.echo:
        from labkit.bench.echo import main as echo_main
        print()
        echo_main(["--quick"] if args.quick else [])
    if args.http:
        from labkit.bench.http import main as http_main
        print()
        http_main(["--duration", "1"] if args.quick else [])
    if args.notebook:
        from labkit.bench.notebook import main as notebook_main
        print()
        notebook_main(["100" if args.quick else "1000"])
    if args.json:
        document = {"meta": meta, "results": results,
                    "ratios": compute_ratios(results, args.peers, benchmark_aliases())}
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, ensure_ascii=False)
            file.write("\n")
    labkit_failures = [o for o in outcomes
                       if o["status"] == "failed" and o["impl"] == micro.LABKIT]
    for outcome in labkit_failures:
        print(f"\n--- labkit failed in {outcome['bench']}; its stderr: ---\n"
              f"{outcome['stderr']}", file=sys.stderr)
    return 1 if labkit_failures else 0
