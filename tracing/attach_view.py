"""Drawing a console frame in the terminal (rich): the greenlet table, the
lints and a timeline of the last refreshes. Used by ``python -m labkit
console PID`` (tracing/attach.py) and, for a group of workers, by
tracing/attach_group.py. Frames are plain data (tracing/frames.py).
"""
from __future__ import annotations

__all__ = ["format_loop", "timeline_lanes", "render", "SORT_KEYS"]

SORT_KEYS = {"name": lambda r: r["name"] or "", "state": lambda r: r["state"] or "",
              "busy": lambda r: -(r["busy"] or 0.0), "switches": lambda r: -(r["switches"] or 0)}
_LEVELS = " ▁▂▃▄▅▆▇█"


def _seconds(value) -> str:
    if value is None:
        return ""
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.1f} s"


def format_loop(loop: dict) -> str:
    """The loop's numbers in one line."""
    text = (f"ready {loop.get('ready', 0)}, timers {loop.get('timers', 0)}, "
            f"fd waits {loop.get('fd_waits', 0)}")
    if loop.get("recording"):
        text += (f", loop lag max {_seconds(loop.get('lag_max'))}, "
                 f"{loop.get('callbacks_per_pass', 0):.1f} callbacks/pass")
    return text


def timeline_lanes(history: list[dict], width: int = 60, max_lanes: int = 12) -> list:
    """(name, cells) per greenlet over the last ``width`` frames of ``history``:
    a cell per frame, its height the share of that refresh the greenlet ran
    (from its busy time), "·" parked, "r" ready, blank when not alive.
    Rows that carry a ``process`` (several workers' frames flattened,
    tracing.attach_group) are told apart by it and named "pid:name"."""
    history = history[-width:]
    lanes: dict = {}

    def key(row):
        return (row.get("process"), row["id"])

    for index, frame in enumerate(history):
        previous = {key(r): r for r in history[index - 1]["rows"]} if index else {}
        span = frame["time"] - history[index - 1]["time"] if index else 0.0
        for row in frame["rows"]:
            name = row["name"] if row.get("process") is None else \
                f"{row['process']}:{row['name']}"
            cells = lanes.setdefault((key(row), name), [" "] * len(history))
            before = previous.get(key(row))
            if frame["loop"].get("recording") and before is not None and span > 0:
                share = min(1.0, max(0.0, (row["busy"] - before["busy"]) / span))
                level = max(1, round(share * (len(_LEVELS) - 1))) if share > 0 else 0
                cells[index] = _LEVELS[level] if level else "·"
            elif row["state"] == "running":
                cells[index] = "█"
            elif row["state"] == "ready":
                cells[index] = "r"
            else:
                cells[index] = "·"
    busiest = sorted(lanes.items(), key=lambda item: -sum(c not in " ·" for c in item[1]))
    return [(name, "".join(cells)) for (_key, name), cells in busiest[:max_lanes]]


def render(frame: dict, history: list[dict] | None = None, sort: str = "busy",
           max_rows: int = 30, width: int = 60, title: str | None = None):
    """One screen: the table, the lints and the timeline, as a rich renderable.
    Rows and lints that carry a ``process`` (tracing.attach_group's
    flattened frames) get a pid column; ``title`` replaces "pid N"."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    rows = sorted(frame["rows"], key=SORT_KEYS.get(sort, SORT_KEYS["busy"]))
    by_process = any(row.get("process") is not None for row in rows)
    served = frame.get("served", {})
    title = (f"labkit console — {title or 'pid ' + str(frame.get('pid'))} — {len(rows)} rows — "
             f"{format_loop(frame.get('loop', {}))}"
             + (f" — served in pieces of ≤ {served['pause_ms']:.2f} ms" if served else "")
             + (f" (garbage collection {served['pause_gc_ms']:.2f} ms of it)"
                if served.get("pause_gc_ms", 0) >= 0.01 else ""))
    table = Table(title=title, expand=True, show_lines=False)
    for column in ("pid",) * by_process + ("name", "state", "waits on", "where", "busy",
                                           "sched", "sw"):
        table.add_column(column, no_wrap=True, overflow="ellipsis",
                         justify="right" if column in ("busy", "sched", "sw") else "left")
    for row in rows[:max_rows]:
        name = str(row["name"]) + (" (task)" if row["kind"] == "task" else "")
        table.add_row(*(str(row.get("process")),) * by_process,
                      name, row["state"], row["waits_on"] or "",
                      row["where"] or "", _seconds(row["busy"]), _seconds(row["scheduled"]),
                      "" if row["switches"] is None else str(row["switches"]))
    if len(rows) > max_rows:
        table.caption = f"{len(rows) - max_rows} more rows not shown"
    age = frame.get("lints_age")
    lints = Table(title="lints" + (f" (as of {age:.1f} s ago)" if age else ""), expand=False)
    for column in ("pid",) * by_process + ("kind", "greenlet", "line", "evidence"):
        lints.add_column(column)
    for lint in frame.get("lints", []):
        lints.add_row(*(str(lint.get("process")),) * by_process,
                      str(lint.get("kind")), str(lint.get("greenlet")),
                      str(lint.get("line") or ""), str(lint.get("evidence") or ""))
    if not frame.get("lints"):
        lints.add_row(*("",) * by_process, "none", "", "", "")
    if frame.get("undecided"):
        lints.caption = (f"{frame['undecided']} wait(s) not decided: only a heap traversal "
                         f"could tell a lost wake-up, and an attached target runs none")
    lanes = timeline_lanes(history or [frame], width=width)
    timeline = "\n".join(f"{name[:20]:<20} |{cells}|" for name, cells in lanes)
    span = (history[-1]["time"] - history[-width:][0]["time"]) if history else 0.0
    return Group(table, lints, Panel(timeline or "(no greenlets)",
                                     title=f"timeline, last {span:.1f} s (one column per refresh)"))


