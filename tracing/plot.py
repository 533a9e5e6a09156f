"""The timeline: one horizontal lane per greenlet, drawn with matplotlib.

Lanes, top to bottom: "poll" (the loop waiting in lk_poll), "hub" (the hub
running callbacks), then one per greenlet in order of first appearance.
On a greenlet's lane, running slices are dark bars (``broken_barh``) and the
gaps in which it was parked are light bars colored by what ended the wait
(ready callback, timer, fd, a Waiter's label such as "Event" or "join").
Blocks found by the blocking monitor are red bars on the lane of the
greenlet that blocked. Works with any backend, Agg included (no pyplot
window is ever shown).
"""
from __future__ import annotations

from tracing.lanes import HUB, POLL

RUN_COLOR = "#1f4e79"
POLL_COLOR = "#7f7f7f"
BLOCK_COLOR = "#d62728"
_PARK_COLORS = {"ready": "#c6dbef", "timer": "#fdd0a2", "start": "#e5e5e5",
                "throw": "#fcbba1"}
_OTHER_PARK_COLORS = ["#c7e9c0", "#dadaeb", "#fee391", "#d9f0d3", "#f2f0f7"]


def _park_color(reason: str, assigned: dict) -> str:
    key = reason.split(" ")[0] if reason.startswith("fd ") else reason
    if key in _PARK_COLORS:
        return _PARK_COLORS[key]
    if key not in assigned:
        assigned[key] = _OTHER_PARK_COLORS[len(assigned) % len(_OTHER_PARK_COLORS)]
    return assigned[key]


def _clip(start: float, end: float, window):
    if window is None:
        return start, end
    lo, hi = window
    return max(start, lo), min(end, hi)


def timeline(trace, ax=None, window=None):
    """Draw ``trace``; returns the matplotlib Figure.

    ``ax``: draw into this Axes (default: a new Figure). ``window``:
    ``(start, end)`` in seconds since the trace started, to zoom in.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    lanes: list[tuple[str, int]] = [(POLL, -1), (HUB, -1)]
    for s in trace.slices():
        if (s.lane, s.key) not in lanes:
            lanes.append((s.lane, s.key))
    row = {lane: i for i, lane in enumerate(lanes)}
    if ax is None:
        fig = Figure(figsize=(10, 1.2 + 0.4 * len(lanes)))
        ax = fig.add_subplot()
    else:
        fig = ax.figure

    def bars(items, lane, color, height=0.8):
        spans = []
        for start, end in items:
            start, end = _clip(start, end, window)
            if end > start:
                spans.append((start, end - start))
        if spans:
            y = row[lane] - height / 2
            ax.broken_barh(spans, (y, height), facecolors=color)

    by_lane: dict = {}
    for s in trace.slices():
        by_lane.setdefault((s.lane, s.key), []).append((s.start, s.end))
    for lane, spans in by_lane.items():
        bars(spans, lane, POLL_COLOR if lane[0] == POLL else RUN_COLOR)

    assigned: dict = {}
    legend = {}
    parked_by: dict = {}
    for p in trace.parked():
        color = _park_color(p.reason, assigned)
        parked_by.setdefault(((p.lane, p.key), color), []).append((p.start, p.end))
        legend.setdefault(color, f"parked: {p.reason.split(' ')[0] if p.reason.startswith('fd ') else p.reason}")
    for (lane, color), spans in parked_by.items():
        if lane in row:
            bars(spans, lane, color, height=0.4)

    lane_of_name = {}
    for lane in lanes:
        lane_of_name.setdefault(lane[0], lane)
    for block in trace.blocking():
        lane = lane_of_name.get(block.greenlet, (HUB, -1))
        bars([(block.start, block.start + block.duration)], lane, BLOCK_COLOR, height=0.9)

    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([name for name, _ in lanes])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the trace started")
    if window is not None:
        ax.set_xlim(*window)
    handles = [Patch(color=RUN_COLOR, label="running"), Patch(color=POLL_COLOR, label="poll")]
    handles += [Patch(color=c, label=label) for c, label in legend.items()]
    if trace.blocking():
        handles.append(Patch(color=BLOCK_COLOR, label="blocking"))
    # Outside the axes, to the right: inside, it would hide the lanes' ends.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize="small", borderaxespad=0.0)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # room above for a caller's suptitle
    return fig
