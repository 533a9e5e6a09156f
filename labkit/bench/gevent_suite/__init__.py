"""gevent's own test files, run unchanged against labkit: the compatibility measure.

    python -m labkit.bench.gevent_suite                  # the issue's file set
    python -m labkit.bench.gevent_suite test__queue.py test__event.py
    python -m labkit.bench.gevent_suite --group primitives --failures
    python -m labkit.bench.gevent_suite --targets labkit,gevent,gevent-own --json out.json

Each test file of the installed gevent (``gevent/tests/``) runs in a fresh
interpreter per target, with a timeout, as ``python test__x.py`` would run it:

- ``labkit``: ``gevent`` and ``gevent.X`` resolve to ``labkit`` and
  ``labkit.X`` themselves (a meta-path finder, :mod:`.alias`), and
  ``gevent.testing`` -- gevent's test helpers -- to a stand-in that is
  gevent's own helper files except the few that reach into gevent's
  implementation (``standin/``, each saying why it differs);
- ``gevent``: the real gevent under the same stand-in -- the reference.
  Same harness, so a test that passes there and fails under labkit is a
  labkit gap, not a harness problem;
- ``gevent-own`` (opt-in): the real gevent under its own ``gevent.testing``,
  which shows what the stand-in itself changes.

Per file it prints how many tests passed (a test passes when unittest counts
it as a success or an expected failure) and how many of the tests that
gevent passed labkit passed too; the total of the latter over gevent's is the
measure. ``--failures`` lists those labkit tests with the first line of
their error. The child's output goes to ``--logs DIR`` (default: a temp dir).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from labkit.bench.gevent_suite.alias import gevent_dir

#: the files measured, by group (gevent/tests/test__<name>.py): issue 16's
#: primitives and io, issue 17's http
GROUPS = {
    "primitives": ["pool", "queue", "event", "semaphore", "timeout", "api", "iwait",
                   "joinall", "order", "greenletset"],
    "io": ["socket", "server", "select", "selectors", "subprocess", "signal", "ssl",
           "monkey", "threading", "threadpool", "local", "greenlet", "hub", "lock",
           "fileobject"],
    # issue 17: labkit.pywsgi against gevent's pywsgi tests
    "http": ["pywsgi", "server_pywsgi"],
}
TARGETS = ("labkit", "gevent", "gevent-own")
#: the child's argument for each target (see child.py)
CHILD_TARGET = {"labkit": "labkit", "gevent": "gevent-standin", "gevent-own": "gevent"}
DEFAULT_TIMEOUT_S = 300
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
#: what every child sees: gevent's testrunner defaults, minus the network
CHILD_ENV = {"GEVENTTEST_USE_RESOURCES": "-network", "PYTHONFAULTHANDLER": "1",
             "PYTHONDONTWRITEBYTECODE": "1"}


def test_files(names, group) -> list[str]:
    """Paths of the test files named (``queue``, ``test__queue``,
    ``test__queue.py``), or of the group's files."""
    tests = os.path.join(gevent_dir(), "tests")
    if not names:
        names = [name for g in (GROUPS if group == "all" else [group]) for name in GROUPS[g]]
    paths = []
    for name in names:
        base = os.path.basename(name)
        if base.endswith(".py"):
            base = base[:-3]
        if not base.startswith("test"):
            base = f"test__{base}"
        path = os.path.join(tests, base + ".py")
        if not os.path.exists(path):
            raise SystemExit(f"no such gevent test file: {path}")
        paths.append(path)
    return paths


def run_file(path: str, target: str, timeout: float, log_dir: str) -> dict:
    """Run one file under one target in a child; return its outcome:
    ``{"tests": {id: (outcome, why)}, "status": "ok"|"timeout"|"exit N",
    "seconds": s, "log": path}``."""
    name = os.path.basename(path)[:-3]
    records = os.path.join(log_dir, f"{name}.{target}.jsonl")
    log = os.path.join(log_dir, f"{name}.{target}.log")
    if os.path.exists(records):
        os.unlink(records)
    env = dict(os.environ, **CHILD_ENV)
    start = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, CHILD, CHILD_TARGET[target], path, records],
            cwd=os.path.dirname(path), env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = child.wait(timeout)
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            status = "timeout"
    tests = {}
    if os.path.exists(records):
        with open(records) as f:
            for line in f:
                record = json.loads(line)
                tests[record["id"]] = (record["outcome"], record["why"])
    if not tests and status == "ok":
        status = "no tests"
    return {"tests": tests, "status": status, "log": log,
            "seconds": round(time.monotonic() - start, 1)}


def passed(result: dict) -> set:
    return {test for test, (outcome, _why) in result["tests"].items() if outcome == "pass"}


def last_error_line(log: str) -> str:
    """The last line of a child's output that names an exception: why a
    file that recorded no test died."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        if "Error" in line or "Exception" in line:
            return line.strip()[:160]
    return lines[-1].strip()[:160] if lines else ""


def format_report(results: dict, targets) -> list[str]:
    """The table: per file, each target's passed/ran, then labkit's share of
    gevent's passes; then the totals."""
    head = f"{'file':<24}" + "".join(f"{t:>14}" for t in targets)
    compare = "labkit" in targets and "gevent" in targets
    if compare:
        head += f"{'labkit/gevent':>16}  notes"
    lines = [head, "-" * len(head)]
    total_ref = total_both = 0
    for name, by_target in results.items():
        row = f"{name:<24}"
        notes = []
        for t in targets:
            r = by_target[t]
            ran = sum(1 for o, _ in r["tests"].values() if o != "skip")
            row += f"{len(passed(r)):>7}/{ran:<6}"
            if r["status"] != "ok":
                why = f" ({last_error_line(r['log'])})" if not r["tests"] else ""
                notes.append(f"{t}: {r['status']}{why}")
        if compare:
            ref = passed(by_target["gevent"])
            both = ref & passed(by_target["labkit"])
            total_ref += len(ref)
            total_both += len(both)
            row += f"{len(both):>8}/{len(ref):<7}"
        lines.append(row + ("  " + "; ".join(notes) if notes else ""))
    if compare:
        share = 100.0 * total_both / total_ref if total_ref else 0.0
        lines.append("-" * len(head))
        lines.append(f"labkit passes {total_both} of the {total_ref} tests gevent passes "
                     f"({share:.1f}%)")
    return lines


def format_failures(results: dict) -> list[str]:
    """Each test gevent passes and labkit does not, with labkit's reason."""
    lines = []
    for name, by_target in results.items():
        lab = by_target["labkit"]["tests"]
        for test in sorted(passed(by_target["gevent"]) - passed(by_target["labkit"])):
            outcome, why = lab.get(test, ("not run", by_target["labkit"]["status"]))
            lines.append(f"{name}: {test}: {outcome}: {why}")
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m labkit.bench.gevent_suite",
        description="Run gevent's own test files against labkit and against gevent.")
    parser.add_argument("files", nargs="*",
                        help="test files (queue, test__queue, test__queue.py); "
                             "default: the --group's files")
    parser.add_argument("--group", choices=sorted(GROUPS) + ["all"], default="all")
    parser.add_argument("--targets", default="labkit,gevent",
                        help=f"comma-separated, from {', '.join(TARGETS)} (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds per file and target (default: %(default)s)")
    parser.add_argument("--failures", action="store_true",
                        help="list the tests gevent passes and labkit does not")
    parser.add_argument("--json", metavar="FILE", help="write every outcome to FILE")
    parser.add_argument("--logs", metavar="DIR", help="keep the children's output in DIR")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in args.targets:
        if t not in TARGETS:
            parser.error(f"unknown target {t!r}: choose from {', '.join(TARGETS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log_dir = args.logs or tempfile.mkdtemp(prefix="gevent-suite-")
    os.makedirs(log_dir, exist_ok=True)
    results = {}
    for path in test_files(args.files, args.group):
        name = os.path.basename(path)[:-3]
        results[name] = {}
        for target in args.targets:
            r = results[name][target] = run_file(path, target, args.timeout, log_dir)
            print(f"  {name} [{target}]: {len(passed(r))}/{len(r['tests'])} passed, "
                  f"{r['status']}, {r['seconds']}s", file=sys.stderr, flush=True)
    print("\n".join(format_report(results, args.targets)))
    if args.failures and "labkit" in args.targets and "gevent" in args.targets:
        print("\n".join(["", "gevent passes, labkit does not:"] + format_failures(results)))
    print(f"\n(children's output: {log_dir})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: {t: {"status": r["status"], "seconds": r["seconds"],
                                  "tests": r["tests"]} for t, r in by.items()}
                       for name, by in results.items()}, f, indent=1, sort_keys=True)
    return 0
