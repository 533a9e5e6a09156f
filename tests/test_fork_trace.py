"""Fork-based setups beyond gunicorn: a parent that runs its own hub, its
greenlets and the flight recorder forks children (``os.fork()`` from a
greenlet, and multiprocessing's "fork" start method) that run hubs too.

In each child the tracer restarts cleanly (tracing/recorder.py): the ring
holds none of the parent's records, the clock origin and pid are the
child's, the blocking monitor has a new watchdog thread, the flight
recorder's dump count starts again; and one merged trace (tracing/merge.py)
shows the parent and every child, with an arrow from the greenlet that
forked (tracing.recorder.fork_origin) to each child's first slice, in the
JSON and in the protobuf.

The processes are real; the script below runs in its own interpreter (a
fork of pytest's process would copy its threads), every child is reaped
with a deadline, and the script reports what it saw as JSON.
"""
import json
import subprocess
import sys
import textwrap

import pytest

import perfetto_check
from tracing import merge

pytestmark = pytest.mark.timeout(90)

SCRIPT = textwrap.dedent(r'''
    import json, multiprocessing, os, signal, sys, threading, time
    import labkit, tracing
    from labkit._loop import lib
    from tracing import flight, recorder

    directory, report_dir = sys.argv[1], sys.argv[2]
    recorded = flight.start(directory, threshold=5.0, capacity=1 << 16, report=False)
    parent_monitor = recorded.monitor

    def finished_before_fork():
        labkit.sleep(0.001)

    done = labkit.spawn(finished_before_fork)
    done.name = "done-before-fork"
    done.join()

    def ticker():
        while True:
            labkit.sleep(0.002)

    tick = labkit.spawn(ticker)
    tick.name = "parent-ticker"

    def spin():
        for _ in range(1500):
            labkit.sleep(0)

    labkit.joinall([labkit.spawn(spin) for _ in range(2)])
    # the parent's ledger has read its records, thousands more than a child
    # writes before its snapshot: the child's must start over
    tracing.snapshot()

    def child(n):
        """In the forked child: look at the restarted tracer, work, dump."""
        me = flight.current()
        origin = recorder.fork_origin()
        rec = me.recorder
        ring = rec.copy_ring()
        first_ts = min(r[0] for r in recorder._RECORD.iter_unpack(ring)) if ring else None
        tick.kill()   # the parent's ticker, copied into the child: not the child's business

        def work():
            for _ in range(20):
                labkit.sleep(0)
            labkit.sleep(0.002)
            for _ in range(20):
                labkit.sleep(0)

        workers = [labkit.spawn(work) for _ in range(2)]
        for i, g in enumerate(workers):
            g.name = f"child{n}-work{i}"
        labkit.sleep(0.001)
        rows = {r.name: [r.state, r.switches] for r in tracing.snapshot().rows}
        labkit.joinall(workers)
        dumps_before = list(me.dumps)
        path = me.dump(reason=f"child{n}", before=120)
        seen = {
            "pid": os.getpid(), "n": n, "origin": origin, "start_ns": rec.start_ns, "rec_pid": rec.pid,
            "first_ts": first_ts, "records_at_start": len(ring) // recorder._RECORD.size,
            "monitor_new": me.monitor is not None and me.monitor is not parent_monitor,
            "threads": sorted(t.name for t in threading.enumerate()),
            "dumps_before": dumps_before, "dumps": me.dumps, "path": path, "rows": rows,
        }
        with open(os.path.join(report_dir, f"child-{os.getpid()}.json"), "w") as f:
            json.dump(seen, f)

    def in_forked_child(n):
        try:
            child(n)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def reap(pid, deadline):
        while time.monotonic() < deadline:
            done_pid, status = os.waitpid(pid, os.WNOHANG)
            if done_pid:
                return os.waitstatus_to_exitcode(status)
            labkit.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "killed"

    def forker():
        forks = []
        for n in range(2):
            pid = os.fork()
            if pid == 0:
                in_forked_child(n)
            forks.append(pid)
        process = multiprocessing.get_context("fork").Process(target=child, args=(9,))
        process.start()
        tick.kill()   # (fewer records while the children run)
        deadline = time.monotonic() + 40
        codes = {pid: reap(pid, deadline) for pid in forks}
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
        codes[process.pid] = process.exitcode
        return codes

    g = labkit.spawn(forker)
    g.name = "forker"
    codes = g.get()
    tick.kill()
    # the whole run (a loaded machine may take seconds), the fork included
    recorded.dump(reason="parent", before=120)
    merged = flight.merge_dumps(directory=directory)
    print(json.dumps({"pid": os.getpid(), "codes": codes, "merged": merged,
                      "parent_start_ns": recorded.recorder.start_ns,
                      "origin": recorder.fork_origin()}))
''')


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    base = tmp_path_factory.mktemp("fork")
    traces, reports = base / "traces", base / "reports"
    traces.mkdir()
    reports.mkdir()
    script = base / "forking.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(traces), str(reports)],
                          capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    children = {}
    for path in reports.glob("child-*.json"):
        seen = json.loads(path.read_text())
        children[seen["pid"]] = seen
    return result, children, done.stderr


def test_each_forked_child_records_afresh(forked):
    result, children, stderr = forked
    parent = result["pid"]
    assert result["origin"] is None   # the parent was not forked
    # every child was reaped, and exited well: two os.fork()s and a multiprocessing Process
    assert sorted(result["codes"].values()) == [0, 0, 0], stderr
    assert set(children) == {int(pid) for pid in result["codes"]}
    for pid, seen in children.items():
        origin = seen["origin"]
        assert origin["pid"] == parent
        # the ring is fresh: its records begin after the fork, the clock
        # origin and pid are the child's
        assert seen["rec_pid"] == pid
        assert origin["ns"] < seen["start_ns"] and result["parent_start_ns"] < origin["ns"]
        assert seen["first_ts"] is None or seen["first_ts"] >= seen["start_ns"]
        assert seen["records_at_start"] < 100
        # a new watchdog (threads do not survive fork), no dump of the parent's
        assert seen["monitor_new"] and "labkit-blocking-monitor" in seen["threads"]
        assert seen["dumps_before"] == [] and seen["dumps"] == [seen["path"]]
        # the snapshot: the child's own greenlets, none that ended before the fork
        assert "done-before-fork" not in seen["rows"]
        assert {f"child{seen['n']}-work{i}" for i in range(2)} <= set(seen["rows"])


def test_a_forked_childs_snapshot_counts_its_own_switches_and_no_stale_rows(forked):
    _result, children, _stderr = forked
    for seen in children.values():
        rows = seen["rows"]
        counts = [switches for name, (_state, switches) in rows.items() if "-work" in name]
        assert len(counts) == 2 and all(n >= 1 for n in counts), rows
        # the parent's ticker, killed first thing in the child, is no longer parked
        assert rows.get("parent-ticker", ["dead"])[0] == "dead", rows


def test_one_merged_trace_shows_the_parent_and_every_child_with_fork_arrows(forked):
    result, children, _stderr = forked
    parent = result["pid"]
    with open(result["merged"]) as f:
        document = json.load(f)
    events = document["traceEvents"]
    assert set(merge.process_tracks(document)) == {parent} | set(children)
    assert perfetto_check.problems(document, one_process=False) == []
    lanes = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    for pid in children:
        names = {name for (p, _tid), name in lanes.items() if p == pid}
        n = children[pid]["n"]
        assert {f"child{n}-work0", f"child{n}-work1", "forker"} <= names
        assert "done-before-fork" not in names
        # none of the parent's records: nothing in the child's track before the fork
        fork_us = (children[pid]["origin"]["ns"] - document["metadata"]["labkit"]["start_ns"]) / 1e3
        assert min(e["ts"] for e in events if e.get("pid") == pid and "ts" in e) > fork_us
    # one arrow per child, from the parent's "forker" greenlet, at the fork, to
    # the child's first slice
    flows = {}
    for e in events:
        if e.get("cat") == "fork" and e.get("ph") in ("s", "f"):
            flows.setdefault(e["id"], {})[e["ph"]] = e
    assert sorted(flow["f"]["pid"] for flow in flows.values()) == sorted(children)
    for flow in flows.values():
        start, end = flow["s"], flow["f"]
        assert start["pid"] == parent and lanes[(parent, start["tid"])] == "forker"
        origin = children[end["pid"]]["origin"]["ns"]
        at_us = (origin - document["metadata"]["labkit"]["start_ns"]) / 1e3
        assert abs(start["ts"] - at_us) <= 1.0
        first = min((e for e in events if e.get("pid") == end["pid"] and e.get("ph") == "X"
                     and e["dur"] > 0), key=lambda e: e["ts"])
        assert end["tid"] == first["tid"] and first["ts"] <= end["ts"] <= first["ts"] + first["dur"]
    # the same, as Perfetto's protobuf written next to it
    pytest.importorskip("perfetto")
    proto = perfetto_check.proto_trace(result["merged"].replace(".json", ".pftrace"))
    assert perfetto_check.proto_problems(proto) == []
    structure = perfetto_check.proto_structure(proto)
    arrows = sorted((s[:2], t[0]) for s, t in structure["flows"].values()
                    if s[0] == parent and t[0] != parent)
    assert arrows == sorted(((parent, "forker"), pid) for pid in children)
