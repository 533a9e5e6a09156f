"""A merged trace of several processes as Perfetto's protobuf (TrackEvent):
tracing.merge.save(document, "x.pftrace") through tracing.export.events_to_proto.
The file is loaded back and held to what perfetto_check.problems asks of the
JSON, where it carries over (perfetto_check.proto_problems), and compared
with the JSON it came from."""
import bisect
import collections
import json
import subprocess
import sys

import pytest

import labkit
import perfetto_check
import tracing
from labkit._loop import lib
from tracing import export, merge

pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
pytestmark = pytest.mark.timeout(60)


def _child_document(tmp_path, pid):
    """A real trace (greenlets that switch and sleep) written as process ``pid``."""
    start_ns = lib.lk_now_ns()
    with tracing.trace() as t:
        def worker(n):
            for _ in range(3):
                labkit.sleep(0.001 * n)
                labkit.sleep(0)
        greenlets = [labkit.spawn(worker, n) for n in (1, 2)]
        for n, g in enumerate(greenlets):
            g.name = f"w{n}-of-{pid}"
        labkit.joinall(greenlets)
    path = tmp_path / f"{pid}.json"
    merge.write(t, path, pid=pid, start_ns=start_ns)
    return merge.read(path), start_ns


def _parent_document(pid, start_ns, forks):
    events = [{"ph": "M", "pid": pid, "name": "process_name", "args": {"name": "parent"}},
              {"ph": "M", "pid": pid, "tid": 1, "name": "thread_name",
               "args": {"name": "arbiter"}}]
    for child, ts in forks:
        events.append({"ph": "X", "pid": pid, "tid": 1, "name": f"fork worker {child}",
                       "ts": ts, "dur": 50.0, "args": {merge.FORK_KEY: child}})
    events.append({"ph": "i", "s": "t", "pid": pid, "tid": 1, "name": "ready", "ts": 1.0})
    return {"traceEvents": events, "metadata": {"labkit": {"pid": pid, "start_ns": start_ns}}}


def _json_view(document):
    """From the JSON: lanes, slice names per lane in time order, and each
    flow as (pid, lane, slice name) of the innermost slice at each end."""
    events = document["traceEvents"]
    lane = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") == "thread_name"}
    slices = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            slices[(e["pid"], e["tid"])].append((round(e["ts"] * 1000),
                                                 round(e["dur"] * 1000), e["name"]))
    for items in slices.values():
        items.sort(key=lambda s: (s[0], -s[1]))

    def innermost(e):
        items = slices[(e["pid"], e["tid"])]
        at = round(e["ts"] * 1000)
        i = bisect.bisect_right([s[0] for s in items], at) - 1
        while i >= 0 and not items[i][0] <= at <= items[i][0] + items[i][1]:
            i -= 1
        return (e["pid"], lane[(e["pid"], e["tid"])], items[i][2])

    pairs = collections.defaultdict(dict)
    for e in events:
        if e.get("ph") in ("s", "f"):
            pairs[(e["cat"], e["name"], e["id"])][e["ph"]] = e
    flows = sorted((innermost(p["s"]), innermost(p["f"])) for p in pairs.values())
    names = {(pid, lane[(pid, tid)]): [name for _ts, _dur, name in items]
             for (pid, tid), items in slices.items()}
    return set(lane.items()), names, flows


def test_a_merged_trace_as_protobuf_has_its_processes_lanes_slices_and_arrows(tmp_path):
    child, start = _child_document(tmp_path, 4444)
    other, _ = _child_document(tmp_path, 6666)
    # the parent began 10 ms before the first child's trace, forked 4444 and
    # 6666, and 5555, which left no trace (no arrow to nowhere)
    parent = _parent_document(1000, start - 10_000_000,
                              [(4444, 2000.0), (5555, 3000.0), (6666, 4000.0)])
    document = merge.merge_documents([child, other, parent])
    assert perfetto_check.problems(document, one_process=False) == []
    path = tmp_path / "merged.pftrace"
    assert merge.save(document, path) == str(path)
    proto = perfetto_check.proto_trace(path)
    assert perfetto_check.proto_problems(proto) == []
    structure = perfetto_check.proto_structure(proto)

    lanes, json_slices, json_flows = _json_view(document)
    # a ProcessDescriptor per process, named as in the JSON
    assert structure["processes"] == merge.process_tracks(document) == {
        1000: "parent", 4444: "labkit 4444", 6666: "labkit 6666"}
    # a thread track per greenlet lane, under its own process
    assert structure["threads"] == {(pid, name) for (pid, _tid), name in lanes}
    assert {(4444, "w0-of-4444"), (6666, "w1-of-6666"), (1000, "arbiter")} <= structure["threads"]
    # the same slices on each lane, in the same order
    proto_slices = {where: [name for _ts, name in items]
                    for where, items in structure["slices"].items()}
    assert proto_slices == json_slices
    # every arrow (switches and forks) bound to the slices the JSON's ends lie in
    proto_flows = sorted(structure["flows"].values())
    assert proto_flows == json_flows
    forks = [(s, t) for s, t in proto_flows if s[2].startswith("fork worker")]
    assert [(s[:3], t[0]) for s, t in forks] == [
        ((1000, "arbiter", "fork worker 4444"), 4444), ((1000, "arbiter", "fork worker 6666"), 6666)]
    assert sum(1 for s, t in proto_flows if s[0] == t[0] == 4444) >= 3   # switches
    # counters and waits per process, as many as the JSON's
    json_waits = collections.Counter(e["pid"] for e in document["traceEvents"]
                                     if e.get("ph") == "b" and e.get("cat") == "wait")
    proto_waits = collections.Counter()
    for (pid, name), begun in structure["async"].items():
        if name.endswith(": wait"):
            proto_waits[pid] += len(begun)
    assert proto_waits == json_waits and json_waits[4444] >= 6
    live = [e["args"]["greenlets"] for e in document["traceEvents"]
            if e.get("ph") == "C" and e["pid"] == 6666 and e["name"] == "live greenlets"]
    assert structure["counters"][(6666, "live greenlets")] == live and live
    # the parent's instant, on its lane
    assert any(p.track_event.name == "ready" for p in proto.packet if p.HasField("track_event"))
    assert path.stat().st_size < len(json.dumps(document))


def test_the_proto_checker_sees_broken_files_and_overlaps_are_cut(tmp_path):
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    # one slice overlaps its parent without ending inside it: cut at the parent's end
    events = [{"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "p"}},
              {"ph": "M", "pid": 7, "tid": 1, "name": "thread_name", "args": {"name": "a"}},
              {"ph": "M", "pid": 8, "tid": 1, "name": "thread_name", "args": {"name": "b"}},
              {"ph": "X", "pid": 7, "tid": 1, "name": "outer", "ts": 0.0, "dur": 10.0},
              {"ph": "X", "pid": 7, "tid": 1, "name": "over", "ts": 5.0, "dur": 10.0},
              {"ph": "X", "pid": 8, "tid": 1, "name": "there", "ts": 1.0, "dur": 2.0},
              {"ph": "s", "pid": 7, "tid": 1, "cat": "c", "name": "n", "id": 1, "ts": 6.0},
              {"ph": "f", "bp": "e", "pid": 8, "tid": 1, "cat": "c", "name": "n", "id": 1,
               "ts": 2.0},
              # an arrow with an end in no slice is left out, as viewers drop it
              {"ph": "s", "pid": 7, "tid": 1, "cat": "c", "name": "n", "id": 2, "ts": 50.0},
              {"ph": "f", "bp": "e", "pid": 8, "tid": 1, "cat": "c", "name": "n", "id": 2,
               "ts": 2.0}]
    path = tmp_path / "t.pftrace"
    counts = export.events_to_proto(events, path)
    assert counts == {"processes": 2, "threads": 2, "slices": 3, "flows": 1, "flows_dropped": 1}
    proto = perfetto_check.proto_trace(path)
    assert perfetto_check.proto_problems(proto) == []
    structure = perfetto_check.proto_structure(proto)
    # tids 1 and 1 of two processes: Perfetto keys threads by tid, so they differ
    tids = [p.track_descriptor.thread.tid for p in proto.packet
            if p.HasField("track_descriptor") and p.track_descriptor.HasField("thread")]
    assert len(set(tids)) == 2 and not set(tids) & {7, 8}
    assert list(structure["flows"].values()) == [((7, "a", "over"), (8, "b", "there"))]
    stamps = [(p.timestamp, p.track_event.type) for p in proto.packet
              if p.HasField("track_event") and p.track_event.track_uuid
              == next(u for u, n in structure["tracks"].items() if n == "a")]
    assert stamps[-2:] == [(10_000, pb.TrackEvent.TYPE_SLICE_END)] * 2   # cut at 10 µs

    def broken(edit):
        copy = pb.Trace()
        copy.CopyFrom(proto)
        edit(copy)
        return perfetto_check.proto_problems(copy)

    def drop_last_end(trace):
        ends = [i for i, p in enumerate(trace.packet) if p.HasField("track_event")
                and p.track_event.type == pb.TrackEvent.TYPE_SLICE_END]
        del trace.packet[ends[-1]]

    def second_terminus(trace):
        begins = [p for p in trace.packet if p.HasField("track_event")
                  and p.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN]
        begins[0].track_event.terminating_flow_ids.append(1)

    def lost_track(trace):
        next(p for p in trace.packet if p.HasField("track_event")).track_event.track_uuid = 999

    assert any("never end" in p for p in broken(drop_last_end))
    assert any("flow 1" in p for p in broken(second_terminus))
    assert any("undescribed track 999" in p for p in broken(lost_track))


def test_the_merge_command_writes_protobuf_by_its_name(tmp_path):
    _child_document(tmp_path, 3333)
    out = subprocess.run([sys.executable, "-m", "tracing.merge", str(tmp_path / "3333.json"),
                          "-o", str(tmp_path / "m.pftrace")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    proto = perfetto_check.proto_trace(tmp_path / "m.pftrace")
    assert perfetto_check.proto_problems(proto) == []
    assert perfetto_check.proto_structure(proto)["processes"] == {3333: "labkit 3333"}
