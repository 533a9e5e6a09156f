"""``python -m labkit bench``: how labkit compares with gevent, asyncio,
uvloop and rloop.

The driver in this module never runs a benchmark itself. For every
(benchmark, implementation) pair it starts a fresh interpreter::

    python -m labkit.bench._worker IMPL BENCH N REPEATS

reads the one JSON line the worker prints, and finally prints a table of
per-operation times with the ratio labkit / peer. One process per pair keeps
the implementations apart: gevent's hub, labkit's hub and an asyncio loop in
one process would share imports, garbage and the main thread, and the first
benchmark would pay for the others' warm-up.

Rounds: each benchmark runs ``DEFAULT_ROUNDS`` rounds, each round one worker
per implementation, in alternating order (labkit first, then last, ...), so
that a burst of load on the machine falls on all of them alike. A round's
value is the best of the worker's ``DEFAULT_REPEATS`` runs; the table shows
the median of the rounds and their spread (``±``: half the range, in % of
the median). Benchmarks that measure more than time (``mass_sleep``: memory
per parked greenlet) get a row per extra figure.

``--callgrind`` reports instructions per operation instead (valgrind,
:mod:`labkit.bench.callgrind`): a figure that machine noise cannot move,
slow to take (minutes per benchmark and implementation).

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
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from labkit.bench import micro

#: rounds of alternating workers per benchmark (median and spread of these)
DEFAULT_ROUNDS = 3
#: runs inside one worker; the round's value is the best of them
DEFAULT_REPEATS = 2
# --quick: a smoke run. N shrinks by this factor and each pair runs once.
QUICK_DIVISOR = 20
QUICK_REPEATS = 1
QUICK_ROUNDS = 1
#: --scale: one round of mass_sleep with this many greenlets, and this many
#: idle connections held to labkit's and the peers' servers
SCALE_SLEEPERS = 1_000_000
SCALE_IDLE_CONNS = 50_000
#: a StreamServer handler parked in recv per connection, labkit's WSGIServer
#: (whose idle keep-alive connections give their greenlets up), and peers
SCALE_IDLE_SERVERS = ("labkit", "wsgi", "gevent", "uvloop-proto")
#: seconds a --scale worker may take
SCALE_WORKER_TIMEOUT_S = 1800
#: what --callgrind counts when --only does not say (a row of the table
#: takes minutes per implementation under valgrind)
CALLGRIND_BENCHMARKS = ("sleep0", "timer_cancel", "spawn_join", "mass_sleep")
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
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"alternating rounds per benchmark (default {DEFAULT_ROUNDS}; "
                             f"--quick: {QUICK_ROUNDS})")
    parser.add_argument("--scale", action="store_true",
                        help=f"also {SCALE_SLEEPERS:,} sleeping greenlets (time, memory, what "
                             f"is left after) and {SCALE_IDLE_CONNS:,} idle connections "
                             "(memory): minutes, and GiBs of memory")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per operation under valgrind instead of "
                             "timing (default benchmarks: "
                             + ", ".join(CALLGRIND_BENCHMARKS) + ")")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    elif args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")

    args.benchmarks = list(CALLGRIND_BENCHMARKS if args.callgrind else micro.BENCHMARKS)
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


def run_worker(impl, bench_name, n, repeats, timeout=WORKER_TIMEOUT_S):
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
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return dict(failed, stderr=f"timed out after {timeout} s\n"
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
    """Run every selected (benchmark, implementation) pair, ``args.rounds``
    times, alternating the order of the implementations from round to round.

    Returns ``(results, outcomes)``: ``results[bench][impl]`` holds the
    successful measurements (see :func:`summarize_rounds`), ``outcomes``
    every worker's dict in run order.
    """
    repeats = QUICK_REPEATS if args.quick else DEFAULT_REPEATS
    columns = [micro.LABKIT] + args.peers
    results, outcomes = {}, []
    for bench_name in args.benchmarks:
        bench = micro.BENCHMARKS[bench_name]
        n = max(1, bench.default_n // QUICK_DIVISOR) if args.quick else bench.default_n
        results[bench_name] = alternate_rounds(bench_name, impls_to_run(bench, columns), n,
                                               repeats, args.rounds, outcomes)
    show_progress("")
    return results, outcomes


def alternate_rounds(bench_name, impls, n, repeats, rounds, outcomes,
                     timeout=WORKER_TIMEOUT_S):
    """Run ``bench_name`` with ``n`` for each of ``impls``, ``rounds``
    times, the order of the implementations reversed every other round (so
    that a drift of the machine does not favour one); return ``{impl:
    summarize_rounds(...)}`` of those that succeeded at least once. Every
    worker's dict is appended to ``outcomes``."""
    done = {impl: [] for impl in impls}
    unavailable = set()
    for round_index in range(rounds):
        order = impls if round_index % 2 == 0 else impls[::-1]
        for impl in order:
            if impl in unavailable:
                continue  # the same next round: do not ask again
            show_progress(f"{bench_name}: {impl}, round {round_index + 1} ...")
            outcome = run_worker(impl, bench_name, n, repeats, timeout)
            outcomes.append(outcome)
            if outcome["status"] == "ok":
                done[impl].append(outcome)
            elif outcome["status"] == "unavailable":
                unavailable.add(impl)
    return {impl: summarize_rounds(ok) for impl, ok in done.items() if ok}


def summarize_rounds(outcomes):
    """One implementation's result from its workers' outcomes (one per
    round): ``per_op_ns``, the median of the rounds; ``rounds_ns``, each
    round's value; ``spread``, (max - min) / median; ``extras``, the median
    of each extra figure over the rounds; ``n``, ``repeats``, ``rounds``."""
    values = [outcome["per_op_ns"] for outcome in outcomes]
    median = statistics.median(values)
    extras = {}
    for outcome in outcomes:
        for name, value in outcome.get("extras", {}).items():
            extras.setdefault(name, []).append(value)
    return {"per_op_ns": median, "rounds_ns": values,
            "spread": (max(values) - min(values)) / median if median else 0.0,
            "extras": {name: statistics.median(v) for name, v in extras.items()},
            "n": outcomes[0]["n"], "repeats": outcomes[0]["repeats"],
            "rounds": len(outcomes)}


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


def format_bytes(size):
    """812 B, 7.3 KiB, 1.50 MiB; "n/a" for None."""
    if size is None:
        return "n/a"
    for unit, scale in (("B", 1), ("KiB", 1024), ("MiB", 1024 ** 2)):
        if abs(size) < 1024 * scale:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size / scale:.1f} {unit}"
    return f"{size / 1024 ** 3:.2f} GiB"


#: extra figures a benchmark may report, and how the table shows them
EXTRA_FORMATS = {"cpu_ns_per_op": ("CPU time per op", format_duration),
                 "bytes_per_op": ("memory per op", format_bytes),
                 "left_per_op": ("left after, per op", format_bytes)}


def format_cell(entry):
    """A table cell: the time, with the rounds' spread when there were
    several (``1.2 µs ±4%``: half the range, in % of the median)."""
    if entry is None:
        return "n/a"
    text = format_duration(entry["per_op_ns"])
    if entry.get("rounds", 1) > 1:
        text += f" ±{entry['spread'] * 50:.0f}%"
    return text


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
        entries = results.get(bench_name, {})
        row = [bench_name, format_cell(entries.get(labkit_impl))]
        for peer in peers:
            peer_impl, peer_ns = lookup(results, aliases, bench_name, peer)
            ratio = ratios[bench_name].get(peer)
            same = peer_impl == labkit_impl and peer_ns is not None
            row += [format_cell(entries.get(peer_impl)), "same" if same else format_ratio(ratio)]
        rows.append(row)
        rows.extend(extra_rows(bench_name, entries, labkit_impl, peers, aliases))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- metadata and report ---------------------------------------------------

def run_scale(args):
    """--scale: mass_sleep with SCALE_SLEEPERS greenlets per implementation
    (``args.rounds`` alternating rounds of one run each; the worker also
    checks that nothing of them is left alive after, see
    micro.mass_sleep_gevent_like); then SCALE_IDLE_CONNS idle connections
    per server."""
    bench = micro.BENCHMARKS["mass_sleep"]
    outcomes = []
    results = {"mass_sleep": alternate_rounds(
        "mass_sleep", impls_to_run(bench, [micro.LABKIT] + args.peers), SCALE_SLEEPERS, 1,
        args.rounds, outcomes, SCALE_WORKER_TIMEOUT_S)}
    for outcome in outcomes:
        if outcome["status"] == "failed":
            last = (outcome["stderr"].strip().splitlines() or ["?"])[-1]
            print(f"mass_sleep x {SCALE_SLEEPERS:,}/{outcome['impl']}: FAILED ({last})",
                  file=sys.stderr)
    show_progress("")
    print(f"{SCALE_SLEEPERS:,} greenlets/tasks each sleep(5): spawn, park, kill all "
          f"(one run per round, {args.rounds} alternating rounds: median ±half the range)\n")
    print(format_table(results, args.peers, benchmark_aliases()))
    from labkit.bench import echo
    print()
    # Each connection is an fd in the server: a hard RLIMIT_NOFILE below the
    # count (20,000 in some containers; only root may raise it) caps it.
    limit = echo.raise_fd_limit()
    count = min(SCALE_IDLE_CONNS, limit - 1000)
    if count < SCALE_IDLE_CONNS:
        print(f"(RLIMIT_NOFILE is {limit:,} here and cannot be raised: "
              f"{count:,} idle connections instead of {SCALE_IDLE_CONNS:,})")
    idle = []
    for impl in SCALE_IDLE_SERVERS:
        try:
            idle.append(echo.measure_idle(impl, count))
            print(echo.format_idle(idle[-1]))
        except (RuntimeError, OSError) as exc:
            print(f"{impl}: {count:,} idle connections failed ({exc})")
    return {"sleepers": results, "idle": idle}


def extra_rows(bench_name, entries, labkit_impl, peers, aliases):
    """Rows for the figures besides time a benchmark reported (memory)."""
    rows = []
    names = sorted({name for entry in entries.values() for name in entry.get("extras", {})})
    for name in names:
        label, fmt = EXTRA_FORMATS.get(name, (name, lambda v: "n/a" if v is None else f"{v:.3g}"))
        labkit_value = entries.get(labkit_impl, {}).get("extras", {}).get(name)
        row = [f"  {label}", fmt(labkit_value)]
        for peer in peers:
            peer_impl = aliases.get(bench_name, {}).get(peer, peer)
            value = entries.get(peer_impl, {}).get("extras", {}).get(name)
            ratio = labkit_value / value if labkit_value is not None and value else None
            row += [fmt(value), format_ratio(ratio)]
        rows.append(row)
    return rows


# --- --callgrind: instructions per operation ---------------------------------

def callgrind_sizes(bench):
    """(n1, n2) for a callgrind count: the default 2,000 / 12,000, smaller
    for benchmarks whose one operation is heavy."""
    from labkit.bench import callgrind
    n1 = min(callgrind.DEFAULT_N1, max(1, bench.default_n // 10))
    return n1, n1 + 5 * n1


def run_callgrind(args):
    """``{bench: {impl: instructions per op}}`` for the selected benchmarks
    and every installed implementation (valgrind, both runs per pair)."""
    from labkit.bench import callgrind
    columns = [micro.LABKIT] + args.peers
    results = {}
    for bench_name in args.benchmarks:
        bench = micro.BENCHMARKS[bench_name]
        n1, n2 = callgrind_sizes(bench)
        results[bench_name] = {}
        for impl in impls_to_run(bench, columns):
            module = _worker_requirement(impl)
            if importlib.util.find_spec(module) is None:
                continue
            show_progress(f"{bench_name}: {impl} under valgrind ...")
            try:
                outside, in_malloc = callgrind.instructions_per_op(bench_name, impl, n1, n2)
            except RuntimeError as exc:
                print(f"{bench_name}/{impl}: FAILED under valgrind "
                      f"({str(exc).splitlines()[0]})", file=sys.stderr)
                continue
            results[bench_name][impl] = outside + in_malloc
    show_progress("")
    return results


def _worker_requirement(impl):
    from labkit.bench import _worker
    return _worker.REQUIREMENTS.get(impl, (impl, ()))[0]


def format_callgrind_table(results, peers, aliases=None):
    """The --callgrind table: instructions per operation and labkit / peer."""
    aliases = aliases or {}
    header = ["benchmark", micro.LABKIT]
    for peer in peers:
        header += [peer, "ratio"]
    rows = [header]
    for bench_name, counts in results.items():
        labkit_impl = aliases.get(bench_name, {}).get(micro.LABKIT, micro.LABKIT)
        labkit_count = counts.get(labkit_impl)
        row = [bench_name, "n/a" if labkit_count is None else f"{labkit_count:,.0f}"]
        for peer in peers:
            peer_impl = aliases.get(bench_name, {}).get(peer, peer)
            count = counts.get(peer_impl)
            same = peer_impl == labkit_impl and count is not None
            ratio = labkit_count / count if labkit_count and count and not same else None
            row += ["n/a" if count is None else f"{count:,.0f}",
                    "same" if same else format_ratio(ratio)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join([row[0].ljust(widths[0])]
                               + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip()
                     for row in rows)


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
                     for name in ("greenlet", "gevent", "uvloop", "rloop")},
        "quick": args.quick,
        "repeats": QUICK_REPEATS if args.quick else DEFAULT_REPEATS,
        "rounds": args.rounds,
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
        f"per-operation time: median of {meta.get('rounds', 1)} alternating round(s) "
        f"± half their range, each the best of {meta['repeats']} run(s)"
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
    if args.callgrind:
        counts = run_callgrind(args)
        print("instructions per operation (valgrind --tool=callgrind; "
              "python -m labkit.bench.callgrind for one benchmark)\n")
        print(format_callgrind_table(counts, args.peers, benchmark_aliases()))
        print("\nratio = labkit instructions / peer instructions per operation.")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as file:
                json.dump({"callgrind": counts}, file, indent=2)
                file.write("\n")
        aliases = benchmark_aliases()
        missing = [name for name, found in counts.items()
                   if aliases.get(name, {}).get(micro.LABKIT, micro.LABKIT) not in found]
        return 1 if missing else 0   # labkit failing under valgrind is a failure
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
    scale = None
    if args.scale:
        print()
        scale = run_scale(args)
    if args.notebook:
        from labkit.bench.notebook import main as notebook_main
        print()
        notebook_main(["100" if args.quick else "1000"])
    if args.json:
        document = {"meta": meta, "results": results,
                    "ratios": compute_ratios(results, args.peers, benchmark_aliases())}
        if scale is not None:
            document["scale"] = scale
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, ensure_ascii=False)
            file.write("\n")
    labkit_failures = [o for o in outcomes
                       if o["status"] == "failed" and o["impl"] == micro.LABKIT]
    for outcome in labkit_failures:
        print(f"\n--- labkit failed in {outcome['bench']}; its stderr: ---\n"
              f"{outcome['stderr']}", file=sys.stderr)
    return 1 if labkit_failures else 0
