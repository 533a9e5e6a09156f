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

import collections
import dataclasses
import io

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


# -- a PNG, for notebooks and the live dashboard (any thread) -----------------------

class _LaneView:
    """A Trace seen through a filter: poll, hub and the ``max_lanes`` greenlets
    that ran longest, with their lanes in the order given by ``rank``.

    Slices shorter than ``min_width`` seconds are widened to it: a greenlet
    that runs for 20 us every 20 ms would otherwise be drawn as nothing at
    all. It offers what :func:`timeline` reads (slices, parked, blocking);
    timeline() orders lanes by first appearance, so the slices are handed
    over lane by lane, in rank order, which keeps a live picture from
    reshuffling its lanes at every refresh.
    """

    def __init__(self, trace, max_lanes: int, rank=None, min_width: float = 0.0):
        running = collections.Counter()
        for s in trace.slices():
            if s.key >= 0:
                running[s.key] += s.duration
        keep = {key for key, _ in running.most_common(max_lanes)}
        self.hidden = len(running) - len(keep)
        rank = rank or {}
        by_lane = collections.defaultdict(list)
        for s in trace.slices():
            if s.key < 0 or s.key in keep:
                if s.duration < min_width:   # at least a pixel: seen, if short
                    s = dataclasses.replace(s, end=s.start + min_width)
                by_lane[(s.lane, s.key)].append(s)
        fixed = {POLL: 0, HUB: 1}

        def order(lane):
            name, key = lane
            return (fixed.get(name, 2), rank.get(name, len(rank)), key)

        self._slices = [s for lane in sorted(by_lane, key=order) for s in by_lane[lane]]
        self._parked = [p for p in trace.parked() if p.key in keep]
        self._blocks = trace.blocking()

    def slices(self):
        return self._slices

    def parked(self):
        return self._parked

    def blocking(self):
        return self._blocks


def render_timeline_png(trace, window=None, max_lanes: int = 30, rank=None,
                        title: str | None = None, size=None, dpi: int = 72,
                        now: float | None = None) -> bytes:
    """The timeline of ``trace`` as PNG bytes, drawn with Agg (any thread).

    At most ``max_lanes`` greenlet lanes (the busiest; a note says how many
    were left out). ``window``: ``(start, end)`` seconds to show. ``size``:
    (width, height) in inches; default grows with the lanes. ``rank``:
    name -> position, to keep lane order stable across calls. ``now``: label
    the time axis in seconds before this instant (a live view) instead of
    seconds since the trace started.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    lanes = len({(s.lane, s.key) for s in trace.slices()}) or 1
    if size is None:
        size = (10, 1.4 + 0.32 * min(max(lanes, 2), max_lanes + 2))
    lo, hi = window if window is not None else (0.0, max(trace.duration, 1e-6))
    pixel = (hi - lo) / (size[0] * dpi * 0.8)   # the plot is ~80% of the width
    view = _LaneView(trace, max_lanes, rank, min_width=pixel)
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    timeline(view, ax=ax, window=window)
    if now is not None:
        from matplotlib.ticker import FuncFormatter
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x - now:.2f}"))
        ax.set_xlabel("seconds before now")
    notes = [title] if title else []
    if view.hidden:
        notes.append(f"({view.hidden} quieter greenlets not shown)")
    if notes:
        ax.set_title("  ".join(notes), fontsize="medium")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
