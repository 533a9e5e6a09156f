"""Exporters: Chrome trace-event JSON (Perfetto, chrome://tracing), Perfetto's
native protobuf, and speedscope.

Chrome trace-event JSON, as ui.perfetto.dev reads it (:func:`perfetto_events`):

- one process ("labkit"), one *thread* per greenlet, plus "hub" and "poll"
  lanes, named with ``"M"`` ``thread_name`` metadata events (tid = lane
  number, sorted by ``thread_sort_index``); every event carries that pid;
- each running slice is an ``"X"`` (complete) event on its greenlet's lane,
  named in plain words after why it ran (tracing/legend.py); blocks found by
  the blocking monitor are ``"X"`` events of category ``"blocking"`` on the
  lane of the greenlet that held the loop, clipped to the running slice
  they lie in, so that every lane's slices nest properly (no two overlap
  unless one contains the other) -- Perfetto drops slices that do not;
- a switch is a flow arrow from the slice that ran last to the slice that
  runs next: ``"s"`` inside the first, ``"f"`` (``bp: "e"``) inside the
  second, on their own lanes -- an arrow whose ends lie outside any slice
  is one a viewer may drop;
- what each greenlet waited for (a sleep, a socket, an Event) is an async
  slice (``"b"``/``"e"``, category ``"wait"``, one id per greenlet); a
  sleep that ended late (``legend.LATE`` or more) holds a nested "woke ... late" slice from when it
  was due to when it ran;
- ``"C"`` counters: ``ready queue`` (callbacks at each hub pass), ``loop
  lag`` (ms the loop had gone without polling, at each poll: Trace.loop_lag),
  ``live greenlets`` and ``switches/s``.

- spans of other tracers (OpenTelemetry, through tracing/otel.py's bridge:
  :func:`add_span_source`) are slices of category ``"otel"`` on the lane of
  the greenlet they ran in (``tid``; for a greenlet's own lifetime span,
  that greenlet's lane), args ``trace_id``, ``span_id``, ``parent_id``,
  ``greenlet``. Where they nest -- with each other, and with the lane's
  blocks -- they are ``"X"`` slices on the greenlet's thread, parents of its
  running slices, which are cut where a span begins or ends (a span
  begins while its greenlet runs, so the running slice it begins in would
  otherwise overlap it: Perfetto drops slices that do not nest). Perfetto's
  JSON importer puts async slices on tracks of the process and ignores
  their tid, so only ``"X"`` slices sit on the greenlet's own track. A span
  that does not nest (it overlaps another without containing it, or begins
  or ends inside a block) stays an async slice on its lane, a second async
  id only where needed. In the protobuf every span is on a
  ``"<lane>: otel"`` track under the greenlet's thread track. Spans of no
  traced greenlet (a thread-pool job's) go on a lane of their own,
  ``otel: other threads``.

Timestamps are microseconds since the trace started, computed from whole
nanoseconds so that a flow's ends stay inside their slices.

:func:`to_perfetto_proto` writes the same trace as Perfetto's own protobuf
(TrackEvent), which loads faster than JSON; it needs the ``perfetto``
package (``pip install perfetto``, Google's Python API; its trace builder).
"""
from __future__ import annotations

import bisect
import json
import os

from tracing import legend
from tracing.lanes import HUB, POLL, blocking_lane

_PID = 1
#: How far inside a slice a flow's end is placed (ns), at most half the slice.
_FLOW_INSET_NS = 10


#: The lane of spans that ran in no traced greenlet.
OTHER_SPANS_LANE = "otel: other threads"

_span_sources: list = []


def add_span_source(source) -> None:
    """Have ``source(pid, start_ns, stop_ns)`` add spans to every Perfetto
    export of process ``pid`` covering [start_ns, stop_ns] (lk_now_ns
    instants): an iterable of dicts with ``start_ns``, ``end_ns`` (the
    same clock), ``name``, ``greenlet_id`` (``id()`` of the greenlet the
    span belongs to, or None), ``greenlet`` (its name, or None) and
    ``args`` (JSON-able). The OpenTelemetry bridge (tracing/otel.py) is one."""
    if not callable(source):
        raise TypeError(f"source must be callable, not {source!r}")
    if source not in _span_sources:
        _span_sources.append(source)


def remove_span_source(source) -> None:
    if source in _span_sources:
        _span_sources.remove(source)


def span_records(pid: int, start_ns: int, stop_ns: int) -> list[dict]:
    """The spans the sources (:func:`add_span_source`) give for this window."""
    spans = []
    for source in list(_span_sources):
        try:
            spans.extend(source(pid, start_ns, stop_ns))
        except Exception:   # a bridge's bug must not cost the trace
            import traceback
            traceback.print_exc()
    return spans


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _us(ns: int) -> float:
    return ns / 1000


def _lanes(trace) -> dict:
    """(lane name, key) -> tid, in order of first appearance."""
    lanes = {}
    for s in trace.slices():
        lanes.setdefault((s.lane, s.key), len(lanes) + 1)
    for g in trace.greenlets():
        lanes.setdefault((g.name, g.key), len(lanes) + 1)
    return lanes


class _Layout:
    """What both Perfetto exports draw: lanes, slices in whole ns, blocks
    clipped into the slices they lie in, flows with both ends inside slices,
    waits, counters, and other tracers' spans.

    ``spans``: span records (see :func:`add_span_source`) whose times are on
    the lk_now_ns clock with the trace's zero at ``origin_ns``; default:
    those the sources give for the trace (if it knows its zero)."""

    def __init__(self, trace, spans=None, origin_ns=None):
        other_spans = spans
        self.lanes = _lanes(trace)
        self.slices = []     # (tid, start_ns, end_ns, name, category)
        running: dict = {}   # (lane, key) -> [(start, end)] (seconds, for blocking_lane)
        spans_ns: dict = {}  # tid -> [(start_ns, end_ns)] by start
        for s in trace.slices():
            tid = self.lanes[(s.lane, s.key)]
            start, end = _ns(s.start), max(_ns(s.start), _ns(s.end))
            cat = "poll" if s.lane == POLL else "hub" if s.lane == HUB else "run"
            self.slices.append((tid, start, end, legend.run_words(s.reason), cat))
            spans_ns.setdefault(tid, []).append((start, end))
            running.setdefault((s.lane, s.key), []).append((s.start, s.end))
        for spans in spans_ns.values():
            spans.sort()
        self.blocks = []     # (tid, start_ns, end_ns, name, block)
        for block in trace.blocking():
            lane = blocking_lane(block, running, list(self.lanes))
            tid = self.lanes.get(lane, self.lanes.get((HUB, -1), 1))
            start, end = _ns(block.start), _ns(block.start + block.duration)
            inside = self._enclosing(spans_ns.get(tid, []), (start + end) // 2)
            if inside is not None:   # nest it in the slice it lies in
                start, end = max(start, inside[0]), min(end, inside[1])
            self.blocks.append((tid, start, end,
                                f"blocked the loop {legend.format_seconds(block.duration)} "
                                f"at {block.location}", block))
        self.flows = []      # (id, from tid, from ns, to tid, to ns, name)
        key_lane = {key: tid for (name, key), tid in self.lanes.items() if key >= 0}
        previous_tid = None
        for i, sw in enumerate(trace.switches()):
            tid = key_lane.get(sw.key)
            if previous_tid is not None and tid is not None and previous_tid != tid:
                at = _ns(sw.time)
                source = self._last_started(spans_ns.get(previous_tid, []), at)
                target = self._last_started(spans_ns.get(tid, []), at)
                if source is not None and target is not None:
                    inset_s = min((source[1] - source[0]) // 2, _FLOW_INSET_NS)
                    inset_t = min((target[1] - target[0]) // 2, _FLOW_INSET_NS)
                    self.flows.append((i, previous_tid, source[1] - inset_s,
                                       tid, target[0] + inset_t, legend.run_words(sw.reason)))
            previous_tid = tid
        self.waits = []      # (tid, key, start_ns, end_ns, words, late: (due_ns, words) | None)
        for p in trace.parked():
            tid = self.lanes.get((p.lane, p.key))
            start, end = _ns(p.start), _ns(p.end)
            if tid is None or end <= start:
                continue
            asked = p.due - p.start if p.due is not None else None
            late = None
            if p.due is not None and p.late >= legend.LATE:
                due = min(max(_ns(p.due), start), end - 1)
                if due < end - 1:
                    late = (due, f"woke {legend.format_seconds(p.late)} late")
            self.waits.append((tid, p.key, start, end, legend.wait_words(p.reason, asked), late))
        self.counters = {   # name -> (unit, [(ns, value)])
            "ready queue": ("callbacks", [(_ns(t), n) for t, n in trace.ready_counts()]),
            "loop lag": ("ms", [(_ns(t), lag * 1e3) for t, lag in trace.loop_lag()]),
            "live greenlets": ("greenlets", [(_ns(t), n) for t, n in trace.live_counts()]),
            "switches/s": ("switches", [(_ns(t), rate) for t, rate in _switch_rate(trace)]),
        }
        origin = origin_ns if origin_ns is not None else getattr(trace, "start_ns", None)
        if other_spans is None:
            other_spans = [] if origin is None else \
                span_records(os.getpid(), origin, origin + _ns(trace.duration))
        self.span_items: dict = {}   # tid -> [(start, end, name, args)], by _place_spans
        self.spans = self._place_spans(trace, other_spans, origin) \
            if other_spans and origin is not None else []

    def _place_spans(self, trace, spans, origin: int) -> list:
        """[(tid, async id, [(ns, "b"|"e", name, args)])]: each span on its
        greenlet's lane, clipped to the trace, in rows that nest (a row is
        one async id; the events of a row in the order they must be read)."""
        stop = _ns(trace.duration)
        incarnations: dict = {}   # id() -> [Greenlet], oldest first
        for g in trace.greenlets():
            incarnations.setdefault(g.id, []).append(g)
        key_tid: dict = {}
        for (_name, key), tid in self.lanes.items():
            key_tid.setdefault(key, tid)
        names = {tid: name for (name, _key), tid in self.lanes.items()}
        other_tid = None
        by_tid: dict = {}
        for span in spans:
            start = max(0, span["start_ns"] - origin)
            end = min(stop, span["end_ns"] - origin)
            if end < start:
                continue   # outside the trace
            end = max(end, start + 1)   # a zero-length slice would close before it opens
            tid = None
            candidates = incarnations.get(span.get("greenlet_id"), ())
            alive = [g for g in candidates
                     if (g.spawned_at is None or _ns(g.spawned_at) <= start)
                     and (g.exited_at is None or start <= _ns(g.exited_at))]
            chosen = (alive or list(candidates))[-1:] if candidates else []
            if chosen:
                tid = key_tid.get(chosen[0].key)
            if tid is None:
                if other_tid is None:
                    other_tid = max(self.lanes.values(), default=0) + 1
                    self.lanes[(OTHER_SPANS_LANE, -2)] = other_tid
                    names[other_tid] = OTHER_SPANS_LANE
                tid = other_tid
            args = dict(span.get("args") or {})
            args["greenlet"] = span.get("greenlet") if tid == other_tid else names.get(tid)
            by_tid.setdefault(tid, []).append((start, end, span["name"], args))
        self.span_items = by_tid
        return self.async_rows(by_tid)

    @staticmethod
    def async_rows(by_tid) -> list:
        """[(tid, async id, events)]: the spans of ``by_tid`` (tid ->
        [(start, end, name, args)]) in rows that nest, one async id each."""
        placed, next_id = [], 1
        for tid, items in sorted(by_tid.items()):
            items = sorted(items, key=lambda item: (item[0], -item[1]))
            rows: list = []   # [(stack of (end, name), events)]
            for start, end, name, args in items:
                for stack, events in rows:
                    while stack and stack[-1][0] <= start:
                        events.append((stack[-1][0], "e", stack.pop()[1], None))
                    if not stack or end <= stack[-1][0]:
                        break
                else:
                    stack, events = [], []
                    rows.append((stack, events))
                stack.append((end, name))
                events.append((start, "b", name, args))
            for stack, events in rows:
                while stack:
                    events.append((stack[-1][0], "e", stack.pop()[1], None))
                placed.append((tid, next_id, events))
                next_id += 1
        return placed

    def spans_on_threads(self):
        """The spans as the JSON export draws them: ``(span slices, running
        slices, async rows)``. Span slices ``(tid, start, end, name, args)``
        are the spans that nest with the other spans of their lane and with
        its blocks; the running slices are :attr:`slices` cut at their ends,
        so that they nest under them; the async rows (as :meth:`async_rows`)
        hold the spans that do not nest."""
        blocks: dict = {}
        for tid, start, end, *_ in self.blocks:
            blocks.setdefault(tid, []).append((start, end))
        nested, apart, cuts = [], {}, {}
        for tid, items in self.span_items.items():
            stack: list = []   # ends of the enclosing nested spans
            for item in sorted(items, key=lambda item: (item[0], -item[1])):
                start, end = item[0], item[1]
                while stack and stack[-1] <= start:
                    stack.pop()
                inside_block = any(b_start < at < b_end for at in (start, end)
                                   for b_start, b_end in blocks.get(tid, ()))
                if (stack and end > stack[-1]) or inside_block:
                    apart.setdefault(tid, []).append(item)
                    continue
                stack.append(end)
                nested.append((tid, *item))
                cuts.setdefault(tid, set()).update((start, end))
        cut_lists = {tid: sorted(points) for tid, points in cuts.items()}
        running = []
        for tid, start, end, name, cat in self.slices:
            points = cut_lists.get(tid, ())
            i = bisect.bisect_right(points, start)
            while i < len(points) and points[i] < end:
                running.append((tid, start, points[i], name, cat))
                start = points[i]
                i += 1
            running.append((tid, start, end, name, cat))
        return nested, running, self.async_rows(apart)

    @staticmethod
    def _enclosing(spans, at):
        i = bisect.bisect_right(spans, (at, float("inf"))) - 1
        if i >= 0 and spans[i][0] <= at <= spans[i][1]:
            return spans[i]
        return None

    @staticmethod
    def _last_started(spans, at):
        """The last slice that started at or before ``at`` (the one that
        handed off, or the one that starts there)."""
        i = bisect.bisect_right(spans, (at, float("inf"))) - 1
        return spans[i] if i >= 0 else None


def perfetto_events(trace, spans=None, origin_ns=None) -> list[dict]:
    """The trace as a list of Chrome trace events (see the module docstring).
    ``spans`` and ``origin_ns``: other tracers' spans, as :class:`_Layout`
    takes them (default: the span sources', if the trace knows its zero)."""
    layout = _Layout(trace, spans, origin_ns)
    events = [{"ph": "M", "pid": _PID, "name": "process_name", "args": {"name": "labkit"}}]
    for (name, key), tid in layout.lanes.items():
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_name",
                       "args": {"name": name}})
        events.append({"ph": "M", "pid": _PID, "tid": tid, "name": "thread_sort_index",
                       "args": {"sort_index": tid}})
    span_slices, running, async_spans = layout.spans_on_threads()
    # spans first: at one instant, a span is the parent of the running
    # slice cut there (viewers keep the file's order for equal ts)
    for tid, start, end, name, args in span_slices:
        events.append({"ph": "X", "pid": _PID, "tid": tid, "cat": "otel", "name": name,
                       "ts": _us(start), "dur": _us(end - start), "args": args})
    for tid, start, end, name, cat in running:
        events.append({"ph": "X", "pid": _PID, "tid": tid, "cat": cat, "name": name,
                       "ts": _us(start), "dur": _us(end - start)})
    for tid, start, end, name, block in layout.blocks:
        events.append({"ph": "X", "pid": _PID, "tid": tid, "cat": "blocking", "name": name,
                       "ts": _us(start), "dur": _us(end - start),
                       "args": {"greenlet": block.greenlet, "function": block.function,
                                "measured_ms": block.duration * 1e3, "stack": block.stack}})
    for fid, from_tid, from_ns, to_tid, to_ns, name in layout.flows:
        events.append({"ph": "s", "pid": _PID, "tid": from_tid, "id": fid,
                       "cat": "switch", "name": name, "ts": _us(from_ns)})
        events.append({"ph": "f", "bp": "e", "pid": _PID, "tid": to_tid, "id": fid,
                       "cat": "switch", "name": name, "ts": _us(to_ns)})
    names = {tid: name for (name, key), tid in layout.lanes.items()}
    for tid, key, start, end, words, late in layout.waits:
        common = {"pid": _PID, "tid": tid, "cat": "wait", "id": tid}
        events.append({"ph": "b", "name": words, "ts": _us(start),
                       "args": {"greenlet": names[tid]}, **common})
        if late is not None:
            due, late_words = late
            events.append({"ph": "b", "name": late_words, "ts": _us(due), **common})
            events.append({"ph": "e", "name": late_words, "ts": _us(end - 1), **common})
        events.append({"ph": "e", "name": words, "ts": _us(end), **common})
    for name, (unit, samples) in layout.counters.items():
        for ns, value in samples:
            events.append({"ph": "C", "pid": _PID, "name": name, "ts": _us(ns),
                           "args": {unit: value}})
    for tid, async_id, row in async_spans:
        for ns, phase, name, args in row:
            event = {"ph": phase, "pid": _PID, "tid": tid, "cat": "otel", "id": async_id,
                     "name": name, "ts": _us(ns)}
            if args is not None:
                event["args"] = args
            events.append(event)
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
    # json.dumps, not json.dump: dump streams through the pure-Python
    # encoder, dumps uses the C one (several times faster on a big trace).
    text = json.dumps({"traceEvents": perfetto_events(trace), "displayTimeUnit": "ms"},
                      separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


class _ProtoWriter:
    """Perfetto's TrackEvent protobuf, one trusted packet sequence: the one
    home of what both protobuf exports (:func:`to_perfetto_proto`,
    :func:`events_to_proto`) write. Needs the ``perfetto`` package (its
    trace builder); ModuleNotFoundError naming ``who`` when it is missing."""

    SEQUENCE = 1

    def __init__(self, who: str):
        try:
            from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
            from perfetto.trace_builder.proto_builder import TraceProtoBuilder
        except ImportError as exc:
            raise ModuleNotFoundError(
                f"{who} needs the perfetto package (pip install perfetto); "
                "the JSON export works without it") from exc
        self.pb = pb
        self.BEGIN, self.END = pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END
        self.INSTANT, self.COUNTER = pb.TrackEvent.TYPE_INSTANT, pb.TrackEvent.TYPE_COUNTER
        self.builder = TraceProtoBuilder()
        first = self.builder.add_packet()
        first.trusted_packet_sequence_id = self.SEQUENCE
        first.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED

    def describe(self, uuid: int, **fields) -> None:
        """A track descriptor: ``process=(pid, name)``, ``thread=(pid, tid,
        name)``, ``counter=unit``, or any TrackDescriptor field."""
        packet = self.builder.add_packet()
        packet.trusted_packet_sequence_id = self.SEQUENCE
        descriptor = packet.track_descriptor
        descriptor.uuid = uuid
        for name, value in fields.items():
            if name == "process":
                descriptor.process.pid, descriptor.process.process_name = value
            elif name == "thread":
                descriptor.thread.pid, descriptor.thread.tid, descriptor.thread.thread_name = value
            elif name == "counter":
                descriptor.counter.unit_name = value
            else:
                setattr(descriptor, name, value)

    def event(self, ns: int, track: int, kind, name=None, category=None, flows_out=None,
              flows_in=None, args=None, value=None) -> None:
        packet = self.builder.add_packet()
        packet.timestamp = ns
        packet.trusted_packet_sequence_id = self.SEQUENCE
        event = packet.track_event
        event.type = kind
        event.track_uuid = track
        if name is not None:
            event.name = name
            if category:
                event.categories.append(category)
        if flows_out:
            event.flow_ids.extend(flows_out)
        if flows_in:
            event.terminating_flow_ids.extend(flows_in)
        if value is not None:
            event.double_counter_value = float(value)
        for key, item in (args or {}).items():
            _annotate(event.debug_annotations.add(), str(key), item)

    def write(self, path) -> None:
        data = self.builder.serialize()
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)   # readers never see half a file


def _annotate(annotation, name: str, value) -> None:
    annotation.name = name
    if isinstance(value, bool):
        annotation.bool_value = value
    elif isinstance(value, int) and -2**63 <= value < 2**63:
        annotation.int_value = value
    elif isinstance(value, float):
        annotation.double_value = value
    elif isinstance(value, str):
        annotation.string_value = value
    else:
        annotation.string_value = json.dumps(value, default=str)


def to_perfetto_proto(trace, path) -> None:
    """Write the trace as Perfetto's native protobuf (TrackEvent) to ``path``
    (name it ``.pftrace``): the same lanes, slices, arrows, waits and
    counters as :func:`to_perfetto`, smaller and faster to load.

    Needs the ``perfetto`` package; raises ModuleNotFoundError saying so
    when it is missing.
    """
    out = _ProtoWriter("to_perfetto_proto")
    layout = _Layout(trace)
    process_uuid = 1
    describe = out.describe
    describe(process_uuid, process=(_PID, "labkit"))
    thread_uuid = {}
    for (name, key), tid in layout.lanes.items():
        thread_uuid[tid] = 100 + tid
        describe(100 + tid, thread=(_PID, tid, name))
    wait_uuid = {}
    for tid in sorted({w[0] for w in layout.waits}):
        wait_uuid[tid] = 100_000 + tid
        describe(100_000 + tid, parent_uuid=process_uuid,
                 name=f"{_lane_name(layout, tid)}: waits")
    span_uuid = {}
    for n, (tid, async_id, _row) in enumerate(layout.spans):
        span_uuid[async_id] = 300_000 + n
        describe(300_000 + n, parent_uuid=thread_uuid[tid],
                 name=f"{_lane_name(layout, tid)}: otel")
    counter_uuid = {}
    for i, (name, (unit, _)) in enumerate(layout.counters.items()):
        counter_uuid[name] = 200_000 + i
        describe(200_000 + i, parent_uuid=process_uuid, name=name, counter=unit)

    # Events: (ns, order, fill). At one instant ends come before begins,
    # inner ends before outer ends, outer begins before inner begins.
    events = []
    flows_out = {}   # (tid, slice start ns) -> flow ids leaving that slice
    flows_in = {}
    starts = {}
    for tid, start, end, *_ in layout.slices:
        starts.setdefault(tid, []).append(start)
    for fid, from_tid, from_ns, to_tid, to_ns, _ in layout.flows:
        s_list, t_list = starts[from_tid], starts[to_tid]
        flows_out.setdefault((from_tid, s_list[bisect.bisect_right(s_list, from_ns) - 1]),
                             []).append(fid + 1)
        flows_in.setdefault((to_tid, t_list[bisect.bisect_right(t_list, to_ns) - 1]),
                            []).append(fid + 1)
    BEGIN, END = out.BEGIN, out.END
    for tid, start, end, name, cat in layout.slices:
        events.append((start, 2, thread_uuid[tid], BEGIN, name, cat,
                       flows_out.get((tid, start)), flows_in.get((tid, start))))
        events.append((end, 1, thread_uuid[tid], END, None, None, None, None))
    for tid, start, end, name, _block in layout.blocks:
        events.append((start, 3, thread_uuid[tid], BEGIN, name, "blocking", None, None))
        events.append((end, 0, thread_uuid[tid], END, None, None, None, None))
    for tid, _key, start, end, words, late in layout.waits:
        events.append((start, 2, wait_uuid[tid], BEGIN, words, "wait", None, None))
        events.append((end, 1, wait_uuid[tid], END, None, None, None, None))
        if late is not None:
            events.append((late[0], 3, wait_uuid[tid], BEGIN, late[1], "wait", None, None))
            events.append((end - 1, 0, wait_uuid[tid], END, None, None, None, None))
    for _tid, async_id, row in layout.spans:
        # a row's events are in the order they must be read: keep it at one ns
        for ns, phase, name, _args in row:
            events.append((ns, 1 if phase == "e" else 2, span_uuid[async_id],
                           END if phase == "e" else BEGIN,
                           None if phase == "e" else name, "otel", None, None))
    events.sort(key=lambda e: (e[0], e[1]))
    for ns, _order, track, kind, name, cat, out_ids, in_ids in events:
        out.event(ns, track, kind, name, cat, out_ids, in_ids)
    for name, (_unit, samples) in layout.counters.items():
        for ns, value in samples:
            out.event(ns, counter_uuid[name], out.COUNTER, value=value)
    out.write(path)


#: How many slices back :func:`events_to_proto` looks for the one a flow's
#: end lies in (properly nested slices: the latest that began and contains it).
_FLOW_LOOKBACK = 4096


def events_to_proto(events, path) -> dict:
    """Write Chrome trace events -- one process's (:func:`perfetto_events`)
    or several processes' on one timeline (a tracing.merge document's
    ``traceEvents``) -- as Perfetto's native protobuf (TrackEvent) to
    ``path`` (name it ``.pftrace``): smaller and faster to load than the
    JSON, with the same structure. Needs the ``perfetto`` package
    (ModuleNotFoundError saying so).

    - each pid is a process track (ProcessDescriptor, its ``process_name``);
    - each (pid, tid) that has events or a ``thread_name`` is a thread track
      under it (ThreadDescriptor; the tid is renumbered so that no two
      processes share one and none equals a pid: Perfetto keys threads by
      tid alone);
    - ``"X"`` slices are begin/end pairs on their thread track, nested as
      they nest (one that overlaps its parent is cut at the parent's end,
      where a JSON viewer would drop it); their ``args`` are debug
      annotations; ``"i"`` instants go on their thread track (``"s": "p"``
      or ``"g"``: the process's);
    - a flow (``"s"``/``"f"`` of one cat, name and id, any two processes) is
      a flow id on the begin of the slice each end lies in (the innermost):
      ``flow_ids`` on the first, ``terminating_flow_ids`` on the second; a
      flow with an end in no slice is left out, as viewers drop it;
    - async slices (``"b"``/``"e"``) of one (pid, cat, id) are one track
      ``"<thread name>: <cat>"`` under the thread track of the tid they name
      (else under the process);
    - counters (``"C"``): a counter track per (pid, name, arg) under the
      process (named after the counter, plus the arg when it has several).

    Timestamps are the events' ``ts`` in whole nanoseconds (moved up so that
    none is negative). Returns counts: ``processes``, ``threads``,
    ``slices``, ``flows``, ``flows_dropped``.
    """
    out = _ProtoWriter("events_to_proto")
    events = [e for e in events if isinstance(e, dict) and e.get("ph")]
    process_names: dict = {}
    thread_names: dict = {}
    sort_index: dict = {}
    for e in events:
        if e["ph"] != "M":
            continue
        args = e.get("args") or {}
        if e.get("name") == "process_name":
            process_names[e.get("pid", 0)] = str(args.get("name", ""))
        elif e.get("name") == "thread_name":
            thread_names[(e.get("pid", 0), e.get("tid", 0))] = str(args.get("name", ""))
        elif e.get("name") == "thread_sort_index":
            sort_index[(e.get("pid", 0), e.get("tid", 0))] = args.get("sort_index")
    timed = [e for e in events if e["ph"] != "M" and isinstance(e.get("ts"), (int, float))]
    base = min([0] + [round(e["ts"] * 1000) for e in timed])

    def ns(e, key="ts"):
        return round(e[key] * 1000) - base

    pids = sorted(set(process_names) | {e.get("pid", 0) for e in timed}
                  | {pid for pid, _tid in thread_names})
    uuids = iter(range(1, 1 << 62))
    process_uuid = {}
    for pid in pids:
        process_uuid[pid] = next(uuids)
        out.describe(process_uuid[pid], process=(pid, process_names.get(pid, f"process {pid}")))
    thread_uuid: dict = {}
    next_tid = [max([0] + [p for p in pids if isinstance(p, int)]) + 1]

    def thread(pid, tid):
        key = (pid, tid)
        if key not in thread_uuid:
            thread_uuid[key] = next(uuids)
            # (no parent_uuid: the descriptor's pid ties a thread to its process)
            fields = {"thread": (pid, next_tid[0], thread_names.get(key, f"thread {tid}"))}
            rank = sort_index.get(key)
            if isinstance(rank, int) and not isinstance(rank, bool) \
                    and "sibling_order_rank" in out.pb.TrackDescriptor.DESCRIPTOR.fields_by_name:
                fields["sibling_order_rank"] = rank
            next_tid[0] += 1
            out.describe(thread_uuid[key], **fields)
        return thread_uuid[key]

    for key in sorted(thread_names, key=lambda k: (k[0], sort_index.get(k, 0) or 0, k[1])):
        thread(*key)

    # (ns, order, track, kind, name, cat, args, value, begin record) --
    # emitted in (ns, order); order keeps each track's own sequence.
    out_events: list = []

    def emit(at, track, kind, name=None, cat=None, args=None, value=None):
        record = [at, len(out_events), track, kind, name, cat, args, value, None, None]
        out_events.append(record)
        return record

    slices: dict = {}    # (pid, tid) -> [(start, end, index)]
    instants, asyncs, flows, counters = [], {}, {}, {}
    for index, e in enumerate(events):
        ph, pid, tid = e["ph"], e.get("pid", 0), e.get("tid", 0)
        if ph == "M" or not isinstance(e.get("ts"), (int, float)):
            continue
        if ph == "X":
            start = ns(e)
            slices.setdefault((pid, tid), []).append(
                (start, start + max(0, round(e.get("dur", 0) * 1000)), index))
        elif ph in ("i", "I"):
            instants.append(e)
        elif ph in ("b", "e"):
            asyncs.setdefault((pid, e.get("cat"), e.get("id")), []).append(index)
        elif ph in ("s", "f"):
            flows.setdefault((e.get("cat"), e.get("name"), e.get("id")), {})[ph] = e
        elif ph == "C":
            for arg, value in (e.get("args") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    counters.setdefault((pid, e.get("name")), {}).setdefault(
                        arg, []).append((ns(e), value))

    begins: dict = {}    # (pid, tid) -> ([start ns], [(end ns, begin record)]) by start
    n_slices = 0
    for key, items in slices.items():
        track = thread(*key)
        items.sort(key=lambda item: (item[0], -item[1], item[2]))
        stack: list = []   # ends of the open slices
        starts, spans = [], []
        for start, end, index in items:
            while stack and stack[-1] <= start:
                emit(stack.pop(), track, out.END)
            if stack:
                end = min(end, stack[-1])   # cut where its parent ends
            e = events[index]
            record = emit(start, track, out.BEGIN, str(e.get("name", "")), e.get("cat"),
                          e.get("args"))
            stack.append(end)
            starts.append(start)
            spans.append((end, record))
            n_slices += 1
        while stack:
            emit(stack.pop(), track, out.END)
        begins[key] = (starts, spans)

    def slice_at(pid, tid, at):
        starts, spans = begins.get((pid, tid), ((), ()))
        i = bisect.bisect_right(starts, at) - 1
        for j in range(i, max(-1, i - _FLOW_LOOKBACK), -1):
            if starts[j] <= at <= spans[j][0]:
                return spans[j][1]
        return None

    n_flows = dropped = 0
    for pair in flows.values():
        ends = [slice_at(pair[ph].get("pid", 0), pair[ph].get("tid", 0), ns(pair[ph]))
                if ph in pair else None for ph in ("s", "f")]
        if None in ends:
            dropped += 1
            continue
        n_flows += 1
        ends[0][8] = (ends[0][8] or []) + [n_flows]
        ends[1][9] = (ends[1][9] or []) + [n_flows]

    for e in instants:
        pid = e.get("pid", 0)
        track = process_uuid[pid] if e.get("s") in ("p", "g") or "tid" not in e \
            else thread(pid, e["tid"])
        emit(ns(e), track, out.INSTANT, str(e.get("name", "")), e.get("cat"), e.get("args"))

    for (pid, cat, _id), indexes in asyncs.items():
        first = events[indexes[0]]
        uuid = next(uuids)
        if "tid" in first:
            parent = thread(pid, first["tid"])
            label = f"{thread_names.get((pid, first['tid']), first['tid'])}: {cat or 'async'}"
        else:
            parent, label = process_uuid[pid], f"{cat or 'async'}"
        out.describe(uuid, parent_uuid=parent, name=label)
        depth = 0
        for index in sorted(indexes, key=lambda i: (ns(events[i]), events[i]["ph"] == "b", i)):
            e = events[index]
            if e["ph"] == "b":
                depth += 1
                emit(ns(e), uuid, out.BEGIN, str(e.get("name", "")), e.get("cat"), e.get("args"))
            elif depth:   # an end with nothing open is dropped, as viewers do
                depth -= 1
                emit(ns(e), uuid, out.END)

    for (pid, name), by_arg in counters.items():
        for arg, samples in by_arg.items():
            uuid = next(uuids)
            label = str(name) if len(by_arg) == 1 else f"{name} {arg}"
            out.describe(uuid, parent_uuid=process_uuid[pid], name=label, counter=str(arg))
            for at, value in samples:
                emit(at, uuid, out.COUNTER, value=value)

    out_events.sort(key=lambda r: (r[0], r[1]))
    for at, _order, track, kind, name, cat, args, value, flows_out, flows_in in out_events:
        out.event(at, track, kind, name, cat, flows_out, flows_in, args, value)
    out.write(path)
    return {"processes": len(process_uuid), "threads": len(thread_uuid), "slices": n_slices,
            "flows": n_flows, "flows_dropped": dropped}


def _lane_name(layout, tid: int) -> str:
    for (name, _key), lane_tid in layout.lanes.items():
        if lane_tid == tid:
            return name
    return str(tid)


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
        f.write(json.dumps(document, separators=(",", ":")))
