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
