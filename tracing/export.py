"""Exporters: Chrome trace-event JSON (Perfetto, chrome://tracing) and speedscope.

Chrome trace-event format, as ui.perfetto.dev reads it:

- one process ("labkit"), one *thread* per greenlet, plus "hub" and "poll"
  lanes, named with ``"M"`` ``thread_name`` metadata events (tid = lane
  number, sorted by ``thread_sort_index``);
- each running slice is an ``"X"`` (complete) event on its greenlet's lane,
  named after why it resumed; blocks found by the blocking monitor are
  ``"X"`` events of category ``"blocking"`` on the blocked greenlet's lane;
  no two slices of one lane overlap, except a block, which lies inside
  the slices it covers;
- a switch is a flow arrow (``"s"`` on the previous greenlet's lane, ``"f"``
  on the resumed one's, same id);
- ``"C"`` counters: ready callbacks per hub pass, switches per second.

Timestamps are microseconds since the trace started.
"""
from __future__ import annotations

import json

from tracing.lanes import HUB, POLL

_PID = 1


def _lanes(trace) -> dict:
    """(lane name, key) -> tid, in order of first appearance."""
    lanes = {}
    for s in trace.slices():
        lanes.setdefault((s.lane, s.key), len(lanes) + 1)
    for g in trace.greenlets():
        lanes.setdefault((g.name, g.key), len(lanes) + 1)
    return lanes


def perfetto_events(trace) -> list[dict]:
    """The trace as a list of Chrome trace events (see the module docstring)."""
    lanes = _lanes(trace)
    events = [{"ph": "M", "pid": _PID, "name": "process_name", "args": {"name": "labkit"}}]
    for (name, key), tid in lanes.items():
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_name",
                       "args": {"name": name}})
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})
    us = 1e6
    for s in trace.slices():
        cat = "poll" if s.lane == POLL else "hub" if s.lane == HUB else "run"
        events.append({"ph": "X", "pid": _PID, "tid": lanes[(s.lane, s.key)], "cat": cat,
                       "name": s.reason or cat, "ts": s.start * us,
                       "dur": max(0.0, s.duration) * us})
    by_name = {}
    for (name, key), tid in lanes.items():
        by_name.setdefault(name, tid)
    for block in trace.blocking():
        tid = by_name.get(block.greenlet, by_name.get(HUB, 1))
        events.append({"ph": "X", "pid": _PID, "tid": tid, "cat": "blocking",
                       "name": f"blocked {block.duration * 1e3:.0f} ms at {block.location}",
                       "ts": block.start * us, "dur": block.duration * us,
                       "args": {"function": block.function, "stack": block.stack}})
    key_lane = {key: tid for (name, key), tid in lanes.items() if key >= 0}
    previous_tid = None
    for i, sw in enumerate(trace.switches()):
        tid = key_lane.get(sw.key)
        if previous_tid is not None and tid is not None and previous_tid != tid:
            events.append({"ph": "s", "pid": _PID, "tid": previous_tid, "id": i,
                           "cat": "switch", "name": sw.reason, "ts": sw.time * us})
            events.append({"ph": "f", "bp": "e", "pid": _PID, "tid": tid, "id": i,
                           "cat": "switch", "name": sw.reason, "ts": sw.time * us})
        previous_tid = tid
    for ts, ready in trace.ready_counts():
        events.append({"ph": "C", "pid": _PID, "name": "ready callbacks",
                       "ts": ts * us, "args": {"ready": ready}})
    for ts, rate in _switch_rate(trace):
        events.append({"ph": "C", "pid": _PID, "name": "switches/s",
                       "ts": ts * us, "args": {"switches": rate}})
    return events


def _switch_rate(trace, bucket: float = 0.01) -> list[tuple[float, float]]:
    """Switches per second in buckets of ``bucket`` seconds."""
    counts: dict[int, int] = {}
    for sw in trace.switches():
        counts[int(sw.time // bucket)] = counts.get(int(sw.time // bucket), 0) + 1
    if not counts:
        return []
    return [(i * bucket, counts.get(i, 0) / bucket)
            for i in range(min(counts), max(counts) + 2)]


def to_perfetto(trace, path) -> None:
    """Write the trace as Chrome trace-event JSON to ``path``."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"traceEvents": perfetto_events(trace), "displayTimeUnit": "ms"}, f)


def to_speedscope(trace, path) -> None:
    """Write an "evented" speedscope profile: one profile per greenlet lane,
    each running slice an open/close pair of the frame named after it."""
    frames: list[dict] = []
    frame_index: dict[str, int] = {}
    profiles = {}
    for s in trace.slices():
        name = s.reason or s.lane
        if name not in frame_index:
            frame_index[name] = len(frames)
            frames.append({"name": name})
        prof = profiles.setdefault((s.lane, s.key), [])
        prof.append({"type": "O", "frame": frame_index[name], "at": s.start})
        prof.append({"type": "C", "frame": frame_index[name], "at": s.end})
    document = {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{"type": "evented", "name": lane, "unit": "seconds",
                      "startValue": 0, "endValue": trace.duration, "events": events}
                     for (lane, key), events in profiles.items()],
        "name": "labkit trace",
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f)
