"""The trace model: from raw records to greenlets, run slices, switches, blocks.

A recording (tracing/recorder.py) is a flat list of records
``(ts_ns, kind, arg, a, b)``. This module reads it once, top to bottom, and
builds what people ask about. The reading rules:

- a greenlet runs from its *resume* record to the next record that hands
  the thread to someone else: another resume, the hub starting a pass of
  ready callbacks, a poll, the greenlet's exit, or the end of the trace.
  Parks are not recorded: they are implied by the next record;
- between two of its slices a greenlet is *parked*, waiting for what its
  next resume record names (a ready callback, a timer, a Waiter's label
  such as "Event" or "join", an fd, an exception thrown into it);
- the hub runs from a pass or a "poll left" record to the next record;
  the time between "poll entered" and "poll left" is the loop waiting;
- ids are ``id(g)`` and CPython reuses them, so each spawn record starts a
  new greenlet (an *incarnation*) for its id;
- a sleep's resume record carries what it asked for (``b = -ns``), so its
  parked slice knows when it was *due*; a wake-up after that is late;
- a greenlet nobody named (labkit's and gevent's default "Greenlet-N") is
  named after its function, "work #N", plus "(In[7])" when it was spawned
  from a notebook cell (:func:`display_name`).

Times in the dataclasses are seconds since the trace started.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from labkit._loop import lib

from tracing import export as _export
from tracing import introspect as _introspect
from tracing import plot as _plot
from tracing import summary as _summary
from tracing.lanes import HUB, POLL, is_default_name, lane_name

_WHY_NAMES = {
    lib.LK_WHY_START: "start",
    lib.LK_WHY_READY: "ready",
    lib.LK_WHY_TIMER: "timer",
    lib.LK_WHY_WAITER: "waiter",
    lib.LK_WHY_THROW: "throw",
    lib.LK_WHY_SWITCH: "switch",
}


@dataclass
class Greenlet:
    """One greenlet (one incarnation of an id) seen during the trace."""
    key: int                #: trace-local number, unique
    id: int                 #: id() of the greenlet object
    name: str
    parent: str | None = None
    spawn_site: str | None = None
    function: str | None = None
    spawned_at: float | None = None
    exited_at: float | None = None
    exit: str | None = None     #: "value int", "raised ValueError", None if alive


@dataclass
class Slice:
    """A stretch of time: a greenlet running, parked, or the loop polling."""
    lane: str               #: greenlet name, "hub" or "poll"
    key: int                #: Greenlet.key (-1 for hub and poll)
    start: float
    end: float
    reason: str = ""        #: why it resumed (running) / what it waited for (parked)
    due: float | None = None    #: parked in a sleep: when the sleep was over

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def late(self) -> float:
        """Parked in a sleep: how long after it was due it ran (else 0)."""
        return max(0.0, self.end - self.due) if self.due is not None else 0.0


@dataclass
class Switch:
    """Control passed to ``greenlet`` (from ``previous``, the last greenlet
    that ran), because of ``reason``."""
    time: float
    greenlet: str
    previous: str | None
    reason: str
    key: int = -1


@dataclass
class LoopIteration:
    """One lk_poll call: how long it waited and what it found."""
    start: float
    end: float
    timeout_ms: int         #: -1: wait forever
    io_events: int
    timers: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Block:
    """The loop was blocked: control did not come back to the hub."""
    start: float            #: seconds since the trace (or monitor) started
    duration: float         #: measured: last hand-off to the hub's next record
    greenlet: str           #: who blocked ("hub" for a hub callback)
    file: str
    line: int
    function: str
    stack: list = field(default_factory=list)   #: "file:line in func", innermost last
    #: why it took its time (tracing.causes.Cause: CPU, GC, a syscall, descheduled)
    cause: object = None
    #: (file, line, function) where the block started when known (its
    #: greenlet's resume site: the user frame it resumed in, at the line
    #: of the call that had parked it), else of the first sample that saw it
    first: tuple | None = None
    #: (file, line, function) of the user frame where the blocking run
    #: started -- the line after its greenlet's last switch, recorded as it
    #: resumed (loop_c/lk_trace_py.c's resume sites) -- or None if unknown
    #: (a block in a hub callback, or no site was kept)
    started: tuple | None = None
    #: what that frame had called and resumed from: "sleep() (timer)",
    #: "recv() (fd 7 read)", "wait() (Event)"; None if unknown
    resumed_from: str | None = None
    #: whether the frame where it started was still on the sampled stack
    #: (the same call, by identity); None if no sample or no start is known
    started_frame_sampled: bool | None = None
    #: the block was in its greenlet's first run: it had not switched since
    #: it started, so ``started`` is the first line of the function it runs
    #: (its ``def``; where it was spawned if that is gone), not a resume site
    first_run: bool = False

    @property
    def sampled(self) -> bool:
        """Whether a stack sample caught the block. False when the watchdog
        thread got no CPU while it lasted (a busy machine): then where it
        happened is unknown, and the report says so rather than "?:0"."""
        return self.line > 0

    @property
    def location(self) -> str:
        if not self.sampled:
            return "a line no stack sample caught"
        return f"{os.path.basename(self.file)}:{self.line}"

    @property
    def start_text(self) -> str | None:
        """"started at app.py:12 in worker after sleep() (timer)", or None
        when the start is unknown or is the reported line itself."""
        if self.started is None:
            return None
        file, line, function = self.started
        if self.sampled and (file, line) == (self.file, self.line):
            return None
        text = f"started at {os.path.basename(file)}:{line} in {function}"
        if self.first_run:
            text += ", its first run"
        if self.resumed_from:
            text += f" after {self.resumed_from}"
        if self.started_frame_sampled:
            text += " (a frame the sample found still running)"
        return text

    def __str__(self) -> str:
        where = f"{self.location} in {self.function}" if self.sampled else self.location
        who = self.greenlet if self.greenlet != "?" else "greenlet unknown"
        text = f"blocked the loop for {self.duration * 1e3:.0f} ms at {where} ({who})"
        start = self.start_text
        return f"{text}; {start}" if start else text


#: How many of the latest spawns a window of a running recording searches
#: for the function of a greenlet whose spawn it does not hold.
_NAME_LOOKBACK = 2000

def display_name(name: str | None, function: str | None, path: str | None = None,
                 line: int | None = None) -> str | None:
    """The name a trace shows for a greenlet (:func:`tracing.lanes.lane_name`),
    with " (In[7])" when it was spawned from a notebook cell (``path`` is
    the cell's file)."""
    cell = cell_of(path, line) if path else None
    return lane_name(name, function, cell.split(",")[0] if cell else None)


def cell_of(path: str, line: int | None) -> str | None:
    """"In[7], line 3" when ``path`` is a notebook cell's file, else None."""
    if "IPython" not in sys.modules:
        return None   # no cells without IPython: do not import it to find none
    location = _introspect.cell_location(path, line or 0)
    return location if location.startswith("In[") else None


def describe_reason(why: int, detail: int, labels: dict) -> str:
    """A readable reason for a resume record: "timer", "Event", "fd 5 read"."""
    name = _WHY_NAMES.get(why, f"why {why}")
    if why in (lib.LK_WHY_WAITER, lib.LK_WHY_THROW):
        label = labels.get(detail)
        if isinstance(label, tuple) and len(label) == 2:
            fd, event = label
            direction = "read" if event == lib.LK_READ else "write"
            label = f"fd {fd} {direction}"
        if why == lib.LK_WHY_THROW:
            return f"throw ({label})" if label else "throw"
        return str(label) if label else "waiter"
    return name


class Trace:
    """What happened while tracing. Built by ``tracing.stop()`` or at the
    end of ``with tracing.trace() as t``; empty until then."""

    def __init__(self, recording=None):
        self._loaded = False
        self.dropped = 0
        #: the trace's time zero on the lk_now_ns clock (None for an empty Trace)
        self.start_ns: int | None = None
        self.duration = 0.0
        self._greenlets: list[Greenlet] = []
        self._slices: list[Slice] = []
        self._parked: list[Slice] = []
        self._switches: list[Switch] = []
        self._iterations: list[LoopIteration] = []
        self._passes: list[tuple[float, int]] = []
        self._blocks: list[Block] = []
        if recording is not None:
            self._load(recording)

    # -- public accessors -------------------------------------------------
    def greenlets(self) -> list[Greenlet]:
        return list(self._greenlets)

    def switches(self) -> list[Switch]:
        return list(self._switches)

    def slices(self) -> list[Slice]:
        """Running slices of greenlets and the hub, and poll waits, by start."""
        return list(self._slices)

    def parked(self) -> list[Slice]:
        """The gaps between a greenlet's slices, labelled with what ended them."""
        return list(self._parked)

    def blocking(self) -> list[Block]:
        return list(self._blocks)

    def loop_iterations(self) -> list[LoopIteration]:
        return list(self._iterations)

    def ready_counts(self) -> list[tuple[float, int]]:
        """(time, ready callbacks) at the start of each hub pass."""
        return list(self._passes)

    def late_wakeups(self, at_least: float = 0.0) -> list[Slice]:
        """The sleeps that ended at least ``at_least`` s after they were due
        (parked slices: ``due``, ``end`` = when it ran again, ``late``)."""
        return [p for p in self._parked if p.due is not None and p.late >= at_least
                and p.late > 0]

    def loop_lag(self) -> list[tuple[float, float]]:
        """(time, seconds) at each poll: how long the loop had gone without
        polling -- what an fd or a timer that became ready just after the
        previous poll waited before the loop could even see it. A block of
        150 ms shows as a lag of 150 ms at the next poll."""
        lags, since = [], 0.0
        for it in self._iterations:
            lags.append((it.start, max(0.0, it.start - since)))
            since = it.end
        return lags

    def live_counts(self) -> list[tuple[float, int]]:
        """(time, greenlets alive) at every spawn and exit; the greenlets that
        were alive when the trace started (and ran in it) count from 0 s.
        The hub is not counted."""
        steps = [(0.0, 1) for g in self._greenlets
                 if g.spawned_at is None and g.name != HUB]
        steps += [(g.spawned_at, 1) for g in self._greenlets if g.spawned_at is not None]
        steps += [(g.exited_at, -1) for g in self._greenlets if g.exited_at is not None]
        steps.sort(key=lambda step: (step[0], -step[1]))
        counts, alive = [], 0
        for ts, step in steps:
            alive += step
            counts.append((ts, alive))
        return counts

    def lints(self, **thresholds) -> list:
        """What looks wrong in the recording: never yielded, spinning,
        starved (tracing/lints.py; ``thresholds`` are its keyword arguments)."""
        from tracing.lints import trace_lints   # (lints imports the live side too)
        return trace_lints(self, **thresholds)

    def snapshot_at(self, t: float):
        """The table of greenlets as it was ``t`` seconds into the trace
        (a :class:`tracing.snapshot.Snapshot`; see ``snapshot_at`` there)."""
        from tracing.snapshot import snapshot_at
        return snapshot_at(self, t)

    def summary(self) -> "_summary.Summary":
        return _summary.summarize(self)

    def timeline(self, ax=None, window=None):
        return _plot.timeline(self, ax=ax, window=window)

    def to_perfetto(self, path) -> None:
        _export.to_perfetto(self, path)

    def to_perfetto_proto(self, path) -> None:
        """Perfetto's native protobuf (needs ``pip install perfetto``)."""
        _export.to_perfetto_proto(self, path)

    def to_speedscope(self, path) -> None:
        _export.to_speedscope(self, path)

    def __repr__(self) -> str:
        return (f"<Trace {self.duration:.3f} s, {len(self._greenlets)} greenlets, "
                f"{len(self._switches)} switches, {len(self._blocks)} blocks, "
                f"{self.dropped} records dropped>")

    # -- reading a recording ----------------------------------------------
    def _load(self, rec) -> None:
        t0 = rec.start_ns
        seconds = lambda ns: (ns - t0) / 1e9  # noqa: E731
        self.dropped = rec.dropped
        self.start_ns = rec.start_ns
        self.duration = (rec.stop_ns - t0) / 1e9
        self._blocks = list(rec.blocks)
        labels = rec.labels

        current: dict[int, Greenlet] = {}   # id -> its latest incarnation
        slice_ended: dict[int, float] = {}  # key -> when its last slice ended
        spawned_before: dict = {}           # id -> SpawnInfo, for a window
        unread = len(rec.spawns)            # spawns not looked at yet, from the end

        def earlier_spawn(gid: int):
            # A window of a running recording (the dashboard) starts after
            # some spawns: their greenlets are named as the spawn would name
            # them. Looked up from the newest spawn back, at most
            # _NAME_LOOKBACK of them (a window is redrawn a few times a second).
            nonlocal unread
            floor = max(0, len(rec.spawns) - _NAME_LOOKBACK)
            while gid not in spawned_before and unread > floor:
                unread -= 1
                info = rec.spawns[unread]   # None: a bounded recorder forgot it
                if info is not None:
                    spawned_before.setdefault(info.gid, info)
            return spawned_before.get(gid)

        def incarnation(gid: int) -> Greenlet:
            g = current.get(gid)
            if g is None:
                name = rec.names.get(gid)
                if gid not in (rec.hub_id, rec.main_id) and (
                        name is None or is_default_name(name)):
                    info = earlier_spawn(gid)
                    if info is not None and (info.name or name):
                        name = _spawn_name(info, info.name or name)
                name = name or ("hub" if gid == rec.hub_id else "main" if gid == rec.main_id
                                else f"greenlet-{gid:#x}")
                g = current[gid] = Greenlet(key=len(self._greenlets), id=gid, name=name)
                self._greenlets.append(g)
            return g

        running = None          # (lane, key, start, reason) of the open slice
        previous = None         # name of the last greenlet that ran
        poll_start = None
        poll_timeout = -1

        def close(ts):
            nonlocal running
            if running is not None:
                lane, key, start, reason = running
                self._slices.append(Slice(lane, key, start, ts, reason))
                if key >= 0:
                    slice_ended[key] = ts
                running = None

        for ts_ns, kind, arg, a, b in rec.records:
            ts = seconds(ts_ns)
            if kind == lib.LK_TR_RESUME:
                close(ts)
                g = incarnation(a)
                reason = describe_reason(arg, b, labels)
                if arg == lib.LK_WHY_SWITCH and b in current:
                    reason = f"switch from {current[b].name}"
                parked_since = slice_ended.get(g.key)
                if parked_since is not None:
                    due = None
                    if arg == lib.LK_WHY_TIMER and b < 0:   # a sleep of -b ns
                        due = parked_since - b / 1e9
                    self._parked.append(Slice(g.name, g.key, parked_since, ts, reason, due))
                self._switches.append(Switch(ts, g.name, previous, reason, g.key))
                previous = g.name
                running = (g.name, g.key, ts, reason)
            elif kind == lib.LK_TR_SPAWN:
                info = rec.spawns[arg] if arg < len(rec.spawns) else None
                parent = current.get(b)
                g = Greenlet(key=len(self._greenlets), id=a,
                             name=(_spawn_name(info, info.name) if info and info.name
                                   else f"greenlet-{a:#x}"),
                             parent=(parent.name if parent else rec.names.get(b)),
                             spawn_site=_spawn_site(info) if info else None,
                             function=info.function if info else None,
                             spawned_at=ts)
                self._greenlets.append(g)
                current[a] = g
                slice_ended[g.key] = ts    # parked from birth until it starts
            elif kind == lib.LK_TR_EXIT:
                g = incarnation(a)
                close(ts)
                g.exited_at = ts
                g.exit = labels.get(b)
                slice_ended.pop(g.key, None)
            elif kind == lib.LK_TR_PASS:
                close(ts)
                self._passes.append((ts, arg))
                running = (HUB, -1, ts, "pass")
            elif kind == lib.LK_TR_POLL_ENTER:
                close(ts)
                poll_start, poll_timeout = ts, a
            elif kind == lib.LK_TR_POLL_LEAVE:
                if poll_start is not None:
                    self._slices.append(Slice(POLL, -1, poll_start, ts, "poll"))
                    self._iterations.append(LoopIteration(poll_start, ts, poll_timeout, a, b))
                poll_start = None
                running = (HUB, -1, ts, "dispatch")
            elif kind == lib.LK_TR_HOST:
                close(ts)
            elif kind == lib.LK_TR_MARK:
                close(ts)
                if arg == 0:   # start: whoever called start() runs
                    g = incarnation(a)
                    running = (g.name, g.key, ts, "trace start")
                    previous = g.name
        self._slices.sort(key=lambda s: s.start)
        self._loaded = True


def _spawn_name(info, name: str) -> str:
    line = _site_line(info.site)
    return display_name(name, info.function, getattr(info, "path", None), line) or name


def _site_line(site: str) -> int | None:
    _, _, line = (site or "").rpartition(":")
    return int(line) if line.isdigit() else None


def _spawn_site(info) -> str:
    """"In[7], line 3" for a cell, else the recorder's "file.py:3"."""
    path = getattr(info, "path", None)
    cell = cell_of(path, _site_line(info.site)) if path else None
    return cell or info.site
