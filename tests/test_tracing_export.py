"""tracing.export: Perfetto/Chrome JSON and speedscope files that load back."""
import json

import pytest

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
    assert counters == {"ready callbacks", "switches/s"}


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
