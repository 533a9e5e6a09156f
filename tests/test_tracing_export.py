"""tracing.export: Perfetto/Chrome JSON and speedscope files that load back."""
import json

import pytest

import perfetto_check
import tracing
from helpers import trace_two_players_and_a_blocker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def traced():
    return trace_two_players_and_a_blocker(player_pause=0.002, block=0.08)


def test_perfetto_json_has_one_named_thread_per_greenlet(traced, tmp_path):
    path = tmp_path / "trace.json"
    traced.to_perfetto(path)
    with open(path) as f:
        doc = json.load(f)
    events = doc["traceEvents"]
    names = [e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    assert sorted(names) == sorted(["main", "hub", "poll", "a", "b", "blocker"])
    assert len(set(names)) == len(names)


def test_perfetto_slices_nest_properly(traced, tmp_path):
    path = tmp_path / "trace.json"
    traced.to_perfetto(path)
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    by_tid = {}
    for e in events:
        if e["ph"] == "X" and e["cat"] != "blocking":
            assert e["dur"] >= 0
            by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            assert e1 <= s2 + 1e-3, "slices of one lane must not overlap"
    [block] = [e for e in events if e["ph"] == "X" and e["cat"] == "blocking"]
    assert block["dur"] >= 80_000   # the 80 ms sleep (load only adds) ...
    # ... and the block lies inside the blocked greenlet's running slices
    # (nesting), which bounds it from above.
    spans = by_tid[block["tid"]]
    assert any(s <= block["ts"] + 1 and block["ts"] + block["dur"] <= e + 1 for s, e in spans)


def test_perfetto_has_flows_and_counters(traced, tmp_path):
    path = tmp_path / "trace.json"
    traced.to_perfetto(path)
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    starts = {e["id"] for e in events if e["ph"] == "s"}
    finishes = {e["id"] for e in events if e["ph"] == "f"}
    assert starts and starts == finishes
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert counters == {"ready queue", "loop lag", "live greenlets", "switches/s"}


def _load(trace, tmp_path):
    path = tmp_path / "trace.json"
    trace.to_perfetto(path)
    with open(path) as f:
        return json.load(f)


def test_perfetto_json_has_the_structure_perfetto_requires(traced, tmp_path):
    doc = _load(traced, tmp_path)
    assert perfetto_check.problems(doc) == []
    # every switch between two lanes has its arrow (none dropped for want of a slice)
    events = doc["traceEvents"]
    switches = traced.switches()
    handoffs = sum(1 for prev, sw in zip(switches, switches[1:]) if prev.key != sw.key)
    assert len([e for e in events if e["ph"] == "s"]) == handoffs > 5


def test_the_checker_catches_an_arrow_outside_its_slices(traced, tmp_path):
    # The check above can fail: move one arrow's start off its slice.
    doc = _load(traced, tmp_path)
    arrow = next(e for e in doc["traceEvents"] if e["ph"] == "s")
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in doc["traceEvents"]
             if e["ph"] == "X" and e["tid"] == arrow["tid"]]
    arrow["ts"] = max(end for _, end in spans) + 1000.0
    assert any("outside every slice" in p for p in perfetto_check.problems(doc))


def test_perfetto_counters_say_what_the_loop_went_through(traced, tmp_path):
    events = _load(traced, tmp_path)["traceEvents"]
    series = {}
    for e in events:
        if e["ph"] == "C":
            [(unit, value)] = e["args"].items()
            series.setdefault((e["name"], unit), []).append(value)
    assert max(series[("loop lag", "ms")]) >= 80        # the 80 ms block, seen at the next poll
    assert max(series[("live greenlets", "greenlets")]) >= 4   # main, a, b, blocker
    assert series[("live greenlets", "greenlets")][-1] <= 1    # all but main exited
    assert max(series[("ready queue", "callbacks")]) >= 1


def test_perfetto_waits_are_async_slices_with_late_wake_ups_inside(traced, tmp_path):
    events = _load(traced, tmp_path)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    waits = [e for e in events if e["ph"] == "b" and e["cat"] == "wait"]
    assert {names[e["tid"]] for e in waits} >= {"a", "b", "main"}
    assert any(e["name"].startswith("sleeping 2") for e in waits)   # sleep(0.002): "2.0 ms"
    # "a" or "b" slept 2 ms while blocker held the loop 80 ms: woke late, inside its wait
    late = [e for e in waits if e["name"].startswith("woke ") and e["name"].endswith(" late")]
    assert late and {names[e["tid"]] for e in late} & {"a", "b"}
    assert not any("parked" in e["name"] or e["name"].startswith("throw") for e in waits)


def test_perfetto_protobuf_export(traced, tmp_path):
    pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    path = tmp_path / "trace.pftrace"
    traced.to_perfetto_proto(path)
    trace = pb.Trace()
    trace.ParseFromString(path.read_bytes())
    tracks, stacks, flows_out, flows_in, counters = {}, {}, set(), set(), {}
    last_ts = -1
    for packet in trace.packet:
        assert packet.trusted_packet_sequence_id == 1
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            tracks[d.uuid] = d.thread.thread_name or d.name or d.process.process_name
            continue
        if not packet.HasField("track_event"):
            continue
        event = packet.track_event
        assert event.track_uuid in tracks, "every event is on a described track"
        assert packet.timestamp >= last_ts or event.type == pb.TrackEvent.TYPE_COUNTER
        if event.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            last_ts = packet.timestamp
            stacks.setdefault(event.track_uuid, []).append(event.name)
            flows_out.update(event.flow_ids)
            flows_in.update(event.terminating_flow_ids)
        elif event.type == pb.TrackEvent.TYPE_SLICE_END:
            last_ts = packet.timestamp
            assert stacks.get(event.track_uuid), "an end without a begin on its track"
            stacks[event.track_uuid].pop()
        elif event.type == pb.TrackEvent.TYPE_COUNTER:
            counters.setdefault(tracks[event.track_uuid], []).append(event.double_counter_value)
    assert all(not stack for stack in stacks.values()), "every slice ends"
    assert flows_out and flows_out == flows_in
    assert set(counters) == {"ready queue", "loop lag", "live greenlets", "switches/s"}
    assert {"a", "b", "blocker", "hub", "poll"} <= set(tracks.values())
    traced.to_perfetto(tmp_path / "trace.json")
    assert path.stat().st_size < (tmp_path / "trace.json").stat().st_size


def test_speedscope_file_loads(traced, tmp_path):
    path = tmp_path / "trace.speedscope.json"
    traced.to_speedscope(path)
    with open(path) as f:
        doc = json.load(f)
    lanes = {p["name"] for p in doc["profiles"]}
    assert {"a", "b", "blocker", "hub"} <= lanes
    for profile in doc["profiles"]:
        kinds = [e["type"] for e in profile["events"]]
        assert kinds.count("O") == kinds.count("C")
