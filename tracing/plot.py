"""The timeline: one horizontal lane per greenlet, drawn with matplotlib.

Lanes, top to bottom: "poll" (the loop waiting in lk_poll), "hub" (the hub
running callbacks), then one per greenlet in order of first appearance.
Colours and words are the legend's (tracing/legend.py), shown under the
plot: on a greenlet's lane, running slices are dark bars, at least
:data:`MIN_WIDTH_POINTS` wide so that a greenlet that runs for 20 us is
still seen (and two that take turns are seen taking turns); the gaps in
which it waited are light bars coloured by what it waited for; a sleep that
ended late is a hatched orange bar from when it was due to when it ran,
with a tick at the due time and, for the latest one of a lane, how late in
words. Blocks found by the blocking monitor are red bars on the lane of the
greenlet that ran during them. Works with any backend, Agg included (no
pyplot window is ever shown).
"""
from __future__ import annotations

import collections
import io

from tracing import legend
from tracing.lanes import HUB, POLL, blocking_lane

RUN_COLOR = legend.color("running")
POLL_COLOR = legend.color("idle")
BLOCK_COLOR = legend.color("blocked")
LATE_COLOR = legend.color("late")
#: The narrowest a running slice is drawn: seen, if short. (An edge of this
#: width in the bar's colour: points, so it holds at any size and dpi.)
MIN_WIDTH_POINTS = 1.5
#: A sleep that ends later than this after it was due is marked late.
LATE_MARK = legend.LATE
#: ... and the latest of its lane says how late in words if at least this.
LATE_LABEL = 0.01
FONT_SIZE = 11


def _clip(start: float, end: float, window):
    if window is None:
        return start, end
    lo, hi = window
    return max(start, lo), min(end, hi)


def timeline(trace, ax=None, window=None, now: float | None = None):
    """Draw ``trace``; returns the matplotlib Figure.

    ``ax``: draw into this Axes (default: a new Figure). ``window``:
    ``(start, end)`` in seconds since the trace started, to zoom in.
    ``now``: a live view -- label the time axis in seconds before this
    instant, and show every entry of the legend, not only those drawn (the
    picture then keeps its layout from one refresh to the next).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    lanes: list[tuple[str, int]] = [(POLL, -1), (HUB, -1)]
    for s in trace.slices():
        if (s.lane, s.key) not in lanes:
            lanes.append((s.lane, s.key))
    row = {lane: i for i, lane in enumerate(lanes)}
    if ax is None:
        fig = Figure(figsize=(12, 2.2 + 0.42 * len(lanes)))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    lo, hi = window if window is not None else (0.0, max(trace.duration, 1e-9))
    shown = {"running", "idle"}

    def bars(items, lane, color, height=0.8, keep_empty=False, **style):
        spans = []
        for start, end in items:
            start, end = _clip(start, end, window)
            if end > start or (keep_empty and end == start and lo <= start <= hi):
                spans.append((start, end - start))
        if spans:
            y = row[lane] - height / 2
            ax.broken_barh(spans, (y, height), facecolors=color, **style)

    # What each greenlet waited for: light bars, under the rest.
    parked_by: dict = collections.defaultdict(list)
    late = []
    for p in trace.parked():
        if (p.lane, p.key) not in row:
            continue
        kind = legend.wait_kind(p.reason)
        parked_by[((p.lane, p.key), kind)].append((p.start, p.end))
        if p.due is not None and p.late >= LATE_MARK:
            late.append(p)
    for (lane, kind), spans in parked_by.items():
        bars(spans, lane, legend.color(kind), height=0.4)
        shown.add(kind)

    # Sleeps that ended late: from when they were due to when they ran, and
    # a tick at the due time. (One call per lane and one for all the ticks:
    # each matplotlib call costs ~10 ms, and a live view redraws often.)
    worst: dict = {}
    late_by_lane: dict = collections.defaultdict(list)
    ticks = []
    for p in late:
        lane = (p.lane, p.key)
        late_by_lane[lane].append((p.due, p.end))
        if lo <= p.due <= hi:
            ticks.append((p.due, row[lane]))
        if p.late >= LATE_LABEL and p.late > worst.get(lane, (0, None))[0]:
            worst[lane] = (p.late, p)
        shown.add("late")
    for lane, spans in late_by_lane.items():
        bars(spans, lane, "none", height=0.56, edgecolor=LATE_COLOR,
             hatch=legend.entry("late").hatch, linewidth=1.0)
    if ticks:
        ax.vlines([x for x, _ in ticks], [y - 0.34 for _, y in ticks],
                  [y + 0.34 for _, y in ticks], colors=LATE_COLOR, linewidth=1.5)
    for lane, (lateness, p) in worst.items():
        if lo <= p.end <= hi:
            # Right of the wake-up, or left of it near the right edge.
            right = p.end < lo + 0.75 * (hi - lo)
            ax.annotate(f"woke {legend.format_seconds(lateness)} late", (p.end, row[lane]),
                        xytext=(4 if right else -4, 0), textcoords="offset points",
                        va="center", ha="left" if right else "right",
                        fontsize=FONT_SIZE - 2, color=LATE_COLOR, fontweight="bold",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})

    # Running: dark bars, never thinner than MIN_WIDTH_POINTS.
    by_lane: dict = {}
    for s in trace.slices():
        by_lane.setdefault((s.lane, s.key), []).append((s.start, s.end))
    for lane, spans in by_lane.items():
        if lane[0] == POLL:
            bars(spans, lane, POLL_COLOR)
        else:
            bars(spans, lane, RUN_COLOR, keep_empty=True, edgecolor=RUN_COLOR,
                 linewidth=MIN_WIDTH_POINTS)

    for block in trace.blocking():
        lane = blocking_lane(block, by_lane, lanes)
        if lane in row:
            bars([(block.start, block.start + block.duration)], lane, BLOCK_COLOR,
                 height=0.9, alpha=0.85)
            shown.add("blocked")

    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([name for name, _ in lanes], fontsize=FONT_SIZE)
    ax.tick_params(axis="x", labelsize=FONT_SIZE - 1)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the trace started", fontsize=FONT_SIZE)
    if window is not None:
        ax.set_xlim(*window)
    if now is not None:
        _seconds_before(ax, now)
    handles = []
    for e in legend.ENTRIES:
        if now is not None or e.key in shown:
            style = ({"facecolor": "none", "edgecolor": e.color, "hatch": e.hatch}
                     if e.hatch else {"color": e.color})
            handles.append(Patch(label=e.words, **style))
    # Under the axes, in plain words: to the right it would squeeze the lanes.
    # (borderaxespad is in font sizes: below the tick labels and the x label.)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0),
              ncol=2, fontsize=FONT_SIZE - 1, frameon=False, borderaxespad=3.4)
    fig.tight_layout(rect=(0, 0, 1, 0.94))  # room above for a caller's suptitle
    return fig


def _seconds_before(ax, now: float) -> None:
    """Label the x axis in seconds before ``now``, with ticks at round
    distances before it (-4, -3, ... now), not at round times."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator
    lo, hi = ax.get_xlim()
    back = MaxNLocator(nbins=6).tick_values(0, max(now - lo, 1e-9))
    ax.xaxis.set_major_locator(FixedLocator([now - b for b in back if lo <= now - b <= hi]))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda x, _: "now" if abs(x - now) < 1e-9 else f"{x - now:.3g}"))
    ax.set_xlabel("seconds before now", fontsize=FONT_SIZE)


# -- a PNG, for notebooks and the live dashboard (any thread) -----------------------

class _LaneView:
    """A Trace seen through a filter: poll, hub and the ``max_lanes`` greenlets
    that ran longest, with their lanes in the order given by ``rank``.

    It offers what :func:`timeline` reads (slices, parked, blocking, duration);
    timeline() orders lanes by first appearance, so the slices are handed
    over lane by lane, in rank order, which keeps a live picture from
    reshuffling its lanes at every refresh.
    """

    def __init__(self, trace, max_lanes: int, rank=None):
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
                by_lane[(s.lane, s.key)].append(s)
        fixed = {POLL: 0, HUB: 1}

        def order(lane):
            name, key = lane
            return (fixed.get(name, 2), rank.get(name, len(rank)), key)

        self._slices = [s for lane in sorted(by_lane, key=order) for s in by_lane[lane]]
        self._parked = [p for p in trace.parked() if p.key in keep]
        self._blocks = trace.blocking()
        self.duration = trace.duration

    def slices(self):
        return self._slices

    def parked(self):
        return self._parked

    def blocking(self):
        return self._blocks


def render_timeline_png(trace, window=None, max_lanes: int = 30, rank=None,
                        title: str | None = None, size=None, dpi: int = 144,
                        now: float | None = None) -> bytes:
    """The timeline of ``trace`` as PNG bytes, drawn with Agg (any thread).

    At most ``max_lanes`` greenlet lanes (the busiest; a note says how many
    were left out). ``window``: ``(start, end)`` seconds to show. ``size``:
    (width, height) in inches; default grows with the lanes. ``dpi``: 144,
    twice a screen's 72, so that it stays sharp on a slide. ``rank``:
    name -> position, to keep lane order stable across calls. ``now``: label
    the time axis in seconds before this instant (a live view) instead of
    seconds since the trace started, and show the whole legend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    lanes = len({(s.lane, s.key) for s in trace.slices()}) or 1
    if size is None:
        size = (12, 2.4 + 0.4 * min(max(lanes, 2), max_lanes + 2))
    view = _LaneView(trace, max_lanes, rank)
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    notes = [title] if title else []
    if view.hidden:
        notes.append(f"({view.hidden} quieter greenlets not shown)")
    if notes:   # before timeline(), whose one tight_layout makes room for it
        ax.set_title("  ".join(notes), fontsize="medium")
    timeline(view, ax=ax, window=window, now=now)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
