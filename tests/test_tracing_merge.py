"""tracing.merge: per-process Perfetto files on one timeline."""
import json
import subprocess
import sys

import pytest

import labkit
import tracing
from labkit._loop import lib
from tracing import merge

pytestmark = pytest.mark.timeout(60)


def _traced_file(path, pid, name):
    start_ns = lib.lk_now_ns()
    with tracing.trace() as t:
        def ping():
            for _ in range(3):
                labkit.sleep(0)
        g = labkit.spawn(ping)
        g.name = name
        g.join()
    merge.write(t, path, pid=pid, start_ns=start_ns)
    return start_ns


def test_files_of_two_processes_merge_onto_one_timeline(tmp_path):
    first = _traced_file(tmp_path / "a.json", 1111, "in-a")
    labkit.sleep(0.05)
    second = _traced_file(tmp_path / "b.json", 2222, "in-b")
    document = merge.merge(tmp_path, tmp_path / "merged.out")
    assert merge.process_tracks(document) == {1111: "labkit 1111", 2222: "labkit 2222"}
    events = document["traceEvents"]
    lanes = {(e["pid"], e["args"]["name"]) for e in events if e.get("name") == "thread_name"}
    assert {(1111, "in-a"), (2222, "in-b")} <= lanes
    # the second file's events are shifted by the distance between the two origins
    shift_us = (second - first) / 1e3
    b_slices = [e for e in events if e.get("ph") == "X" and e["pid"] == 2222]
    assert b_slices and min(e["ts"] for e in b_slices) >= shift_us - 1
    a_slices = [e for e in events if e.get("ph") == "X" and e["pid"] == 1111]
    assert max(e["ts"] for e in a_slices) < shift_us
    # flow ids of the two files do not collide
    flows = {}
    for e in events:
        if e.get("ph") in ("s", "f"):
            flows.setdefault(e["id"], set()).add(e["pid"])
    assert flows and all(len(pids) == 1 for pids in flows.values())
    assert json.loads((tmp_path / "merged.out").read_text())["traceEvents"]


def test_a_file_from_elsewhere_is_refused_and_the_command_line_merges(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(ValueError, match="not a labkit process trace"):
        merge.merge(tmp_path / "other.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="paths"):
        merge.merge(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        merge.merge(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="pid"):
        merge.process_events(tracing.Trace(), pid=0, start_ns=0)
    _traced_file(tmp_path / "a.json", 3333, "x")
    out = subprocess.run([sys.executable, "-m", "tracing.merge", str(tmp_path / "a.json"),
                          "-o", str(tmp_path / "m.json")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "1 processes (3333)" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "tracing.merge", str(tmp_path / "other.json"),
                          "-o", str(tmp_path / "m2.json")], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "not a labkit process trace" in bad.stderr


def _parent_document(pid, start_ns, forks):
    """A parent's process file, as labkit/gunicorn.py's MasterTrack writes
    one: a "fork worker PID" slice (args.labkit_fork) per child forked."""
    events = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": "parent"}},
              {"ph": "M", "pid": pid, "tid": 1, "name": "thread_name", "args": {"name": "arbiter"}}]
    for child, ts in forks:
        events.append({"ph": "X", "pid": pid, "tid": 1, "name": f"fork worker {child}",
                       "ts": ts, "dur": 50.0, "args": {merge.FORK_KEY: child}})
    return {"traceEvents": events, "metadata": {"labkit": {"pid": pid, "start_ns": start_ns}}}


def test_a_fork_is_an_arrow_from_the_parents_slice_to_the_childs_first_slice(tmp_path):
    import perfetto_check
    start = _traced_file(tmp_path / "child.json", 4444, "in-child")
    child = merge.read(tmp_path / "child.json")
    # the parent began 10 ms before the child's trace and forked 4444 (and 5555,
    # which left no trace: no arrow to nowhere) 2 ms after its own start
    parent = _parent_document(1000, start - 10_000_000, [(4444, 2000.0), (5555, 3000.0)])
    document = merge.merge_documents([child, parent], tmp_path / "m.json")
    flows = [e for e in document["traceEvents"] if e.get("cat") == "fork"]
    assert [(e["ph"], e["pid"]) for e in flows] == [("s", 1000), ("f", 4444)]
    s, f = flows
    assert s["id"] == f["id"] and s["id"] >= 2 * merge.ID_STRIDE   # beyond both files' ids
    assert 2000.0 < s["ts"] < 2050.0 and s["tid"] == 1
    first = min((e for e in document["traceEvents"] if e["pid"] == 4444 and e.get("ph") == "X"
                 and e["dur"] > 0), key=lambda e: e["ts"])
    assert f["tid"] == first["tid"] and first["ts"] < f["ts"] < first["ts"] + first["dur"]
    assert f["ts"] > 10_000   # on one timeline: the child's zero is 10 ms after the parent's
    assert perfetto_check.problems(document, one_process=False) == []
    # the checker would see an arrow whose end left its slice, across processes too
    f["ts"] = first["ts"] - 5_000
    assert any("outside every slice" in p
               for p in perfetto_check.problems(document, one_process=False))
    # the input documents are not changed
    assert not any(e.get("cat") == "fork" for e in child["traceEvents"] + parent["traceEvents"])


def test_merge_documents_names_what_is_wrong():
    with pytest.raises(ValueError, match="documents: no traces"):
        merge.merge_documents([])
    with pytest.raises(ValueError, match=r"documents\[1\] is not a labkit process trace"):
        merge.merge_documents([_parent_document(1, 0, []), {"traceEvents": []}])
    assert merge.fork_flows([{"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 1,
                              "args": {merge.FORK_KEY: True}}]) == []   # not a pid
