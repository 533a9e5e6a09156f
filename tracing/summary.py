"""The summary table of a trace: one row per greenlet.

Columns: runs (slices), time running, time waiting (its lifetime within the
trace minus its running time), longest run, switches in (resumes) and out
(slices that ended with the greenlet still alive). Plain text for
``print(t.summary())``, HTML for notebooks (``_repr_html_``).
"""
from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass
class Row:
    greenlet: str
    runs: int
    running: float          #: seconds
    waiting: float          #: seconds
    longest_run: float      #: seconds
    switches_in: int
    switches_out: int


COLUMNS = ("greenlet", "runs", "running", "waiting", "longest run",
           "switches in", "switches out")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


class Summary:
    """Rows (``.rows``) plus text and HTML renderings."""

    def __init__(self, rows: list[Row], duration: float, dropped: int, blocks: int):
        self.rows = rows
        self.duration = duration
        self.dropped = dropped
        self.blocks = blocks

    def row(self, greenlet: str) -> Row:
        for row in self.rows:
            if row.greenlet == greenlet:
                return row
        raise KeyError(greenlet)

    def _cells(self) -> list[list[str]]:
        return [[r.greenlet, str(r.runs), _ms(r.running), _ms(r.waiting),
                 _ms(r.longest_run), str(r.switches_in), str(r.switches_out)]
                for r in self.rows]

    def _footer(self) -> str:
        text = f"trace: {self.duration:.3f} s, {self.blocks} blocking call(s)"
        if self.dropped:
            text += f", {self.dropped} records dropped (ring full: oldest lost)"
        return text

    def __str__(self) -> str:
        rows = [list(COLUMNS)] + self._cells()
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        lines = ["  ".join([row[0].ljust(widths[0])] +
                           [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
                 for row in rows]
        return "\n".join(lines + [self._footer()])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
            for cells in self._cells())
        return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self._footer())}</p>")


def summarize(trace) -> Summary:
    """One row per greenlet that ran, plus the hub, in order of first appearance."""
    stats: dict[int, dict] = {}
    for s in trace.slices():
        if s.lane == "poll":
            continue
        st = stats.setdefault(s.key, {"name": s.lane, "runs": 0, "running": 0.0,
                                      "longest": 0.0})
        st["runs"] += 1
        st["running"] += s.duration
        st["longest"] = max(st["longest"], s.duration)
    greenlets = {g.key: g for g in trace.greenlets()}
    rows = []
    for key, st in stats.items():
        g = greenlets.get(key)
        begin = g.spawned_at if g is not None and g.spawned_at is not None else 0.0
        end = g.exited_at if g is not None and g.exited_at is not None else trace.duration
        lifetime = max(0.0, end - begin)
        switches_out = st["runs"] - (1 if g is not None and g.exited_at is not None else 0)
        rows.append(Row(greenlet=st["name"], runs=st["runs"], running=st["running"],
                        waiting=max(0.0, lifetime - st["running"]) if key >= 0 else 0.0,
                        longest_run=st["longest"], switches_in=st["runs"] if key >= 0 else 0,
                        switches_out=switches_out if key >= 0 else 0))
    return Summary(rows, trace.duration, trace.dropped, len(trace.blocking()))
