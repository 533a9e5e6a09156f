"""OpenTelemetry beside labkit's tracer: the same story told to both.

Context first. OpenTelemetry keeps the current span in a ``contextvars``
variable, and labkit runs every greenlet -- and every thread-pool job -- in
a copy of its spawner's context (labkit/greenlet.py, labkit/threadpool.py).
So a span started in a spawned greenlet, a Pool worker, a ``spawn_later``
or a ThreadPool job has the spawner's current span as its parent, with no
bridge at all (tests/test_otel.py proves it on 1,000 spans with the real
SDK); gevent, which does not copy contexts, gives such spans no parent.

The bridge (:func:`instrument`, opt-in) adds three things:

- **greenlet lifetimes as spans** (``greenlets=True``): each greenlet
  spawned while a recorder runs -- a labkit Greenlet or a bare one from
  ``spawn_raw`` -- gets a span ``greenlet <name>`` from its spawn to its
  exit (error status if it raised), child of the spawner's current span,
  and that span is current inside the greenlet -- so the spans a request
  handler makes hang under its greenlet's span. Attributes:
  ``labkit.greenlet.id``, ``labkit.spawn_site``, ``labkit.function``
  (and ``labkit.raw`` for a bare greenlet, whose ``run`` the bridge wraps
  before it starts to see it end: bare greenlets have no exit hook);
- **blocks as spans** (``blocking=True``): each block a blocking monitor
  reports (labkit.events' EventLoopBlocked) becomes a span
  ``labkit.blocked`` covering the measured block, with ``code.filepath``,
  ``code.lineno``, ``code.function`` (the line sampled most often, or
  where the block started if no sample caught it: ``labkit.sampled``
  says which), the greenlet and the stack; it is a
  child of the blocked greenlet's span when the bridge knows it (and an
  event on that span);
- **OTel spans on the labkit timeline** (``timeline=True``): a span
  processor remembers the spans that ended (the last ``max_spans``), with
  labkit's clock and the greenlet that started each (for a greenlet's
  lifetime span, that greenlet); every Perfetto export of this process --
  ``Trace.to_perfetto``/``to_perfetto_proto``, the flight recorder's dumps,
  tracing.merge's files -- shows them on the greenlet lanes as async
  slices of category ``otel`` whose args hold ``trace_id``, ``span_id``,
  ``parent_id`` (hex, as tracing backends print them) and ``greenlet``, so
  a trace from Jaeger/Tempo/Honeycomb and a labkit trace line up (it is a
  span source of tracing.export).

Contract: call :func:`instrument` from the loop thread, with an SDK
``TracerProvider`` (the API's no-op provider cannot take a span
processor). ``greenlets=True`` needs a running recorder (the flight
recorder, or ``tracing.start()``). ``Bridge.close()`` undoes all of it:
exports made after it have no OTel spans (export a trace before closing).
Costs: with ``greenlets=True`` a spawn creates an OTel span (several µs);
the rest costs nothing until a span ends or a block is reported.
"""
from __future__ import annotations

import collections
import functools
import os
import time
import weakref

from greenlet import GreenletExit, getcurrent
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import SpanProcessor

from labkit._loop import lib
import labkit.greenlet as _lk_greenlet

from tracing import export as _export
from tracing import recorder as _recorder

#: Ended spans the timeline keeps, at most (the newest).
DEFAULT_MAX_SPANS = 10_000
#: Greenlet spans open at once, at most: beyond, new greenlets get none.
MAX_OPEN_GREENLET_SPANS = 100_000


def _hex(number: int, width: int) -> str:
    return format(number, f"0{width}x")


def _wall_ns(mono_ns: int) -> int:
    """An lk_now_ns (monotonic) instant on the wall clock OTel stamps with."""
    return time.time_ns() - (lib.lk_now_ns() - mono_ns)


class _TimelineProcessor(SpanProcessor):
    """Remembers ended spans with labkit's clock and greenlet (any thread)."""

    def __init__(self, bridge: "Bridge", max_spans: int):
        self._bridge = bridge
        self.ended: collections.deque = collections.deque(maxlen=max_spans)
        self._started: dict = {}   # span_id -> (mono start, greenlet id)

    def on_start(self, span, parent_context=None) -> None:
        if len(self._started) < MAX_OPEN_GREENLET_SPANS:
            # a greenlet's lifetime span belongs to that greenlet, not its spawner
            gid = (span.attributes or {}).get("labkit.greenlet.id") or id(getcurrent())
            self._started[span.context.span_id] = (lib.lk_now_ns(), gid)

    def on_end(self, span) -> None:
        start, gid = self._started.pop(span.context.span_id, (None, None))
        end = lib.lk_now_ns()
        if start is None:   # started before the bridge: OTel's own clock
            start = end - max(0, (span.end_time or 0) - (span.start_time or 0))
        parent = span.parent.span_id if span.parent is not None else None
        self.ended.append((start, end, span.name, span.context.trace_id,
                           span.context.span_id, parent, gid,
                           self._bridge.greenlet_name(gid) if gid else None, os.getpid()))

    def shutdown(self) -> None:
        self.ended.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Bridge:
    """What :func:`instrument` installed; :meth:`close` removes it."""

    def __init__(self, tracer_provider, greenlets: bool, blocking: bool, timeline: bool,
                 max_spans: int):
        self.tracer = tracer_provider.get_tracer("labkit")
        self._provider = tracer_provider
        self._greenlet_spans: dict = {}   # id(g) -> (span, weakref to g)
        self._recorder_owner = None
        self.processor = None
        self._closed = False
        if timeline:
            self.processor = _TimelineProcessor(self, max_spans)
            tracer_provider.add_span_processor(self.processor)
            _export.add_span_source(self.span_records)
        if greenlets:
            owner = _observable_recorder()
            if owner is None:
                self.close()
                raise RuntimeError("greenlets=True needs a running recorder: start "
                                   "tracing.flight or tracing.start() first")
            owner.add_observer(self)
            self._recorder_owner = owner
        self._blocking = blocking
        if blocking:
            from labkit import events
            events.subscribers.append(self._on_labkit_event)

    # -- greenlet lifetimes (recorder observer, in the spawning/exiting greenlet)
    def on_spawn(self, g, info) -> None:
        if len(self._greenlet_spans) >= MAX_OPEN_GREENLET_SPANS:
            return
        raw = not isinstance(g, _lk_greenlet.Greenlet)
        if raw and (g.dead or g.gr_frame is not None):
            return   # a bare greenlet already running: its end cannot be seen
        attributes = {"labkit.greenlet.id": id(g),
                      "labkit.spawn_site": info.site if info else "?",
                      "labkit.function": info.function if info else "?"}
        if raw:
            attributes["labkit.raw"] = True
        span = self.tracer.start_span(f"greenlet {info.function if info else '?'}",
                                      attributes=attributes)
        key = id(g)
        # Ends the span if the greenlet is freed without running (killed early).
        ref = weakref.ref(g, lambda _ref, key=key: self._abandon(key, _ref))
        self._greenlet_spans[key] = (span, ref)
        # Current inside the greenlet: its own spans become the span's children.
        g.gr_context.run(otel_context.attach, otel_trace.set_span_in_context(span))
        if raw:
            g.run = self._ending_span(g.run, key)

    def _ending_span(self, run, key):
        """``run`` of a bare greenlet, ending its span when it returns or
        raises (labkit's Greenlet tells the recorder; a bare one cannot)."""
        @functools.wraps(run)
        def run_then_end_span(*args, **kwargs):
            error = None
            try:
                return run(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._end_raw(key, error)
        return run_then_end_span

    def _end_raw(self, key, error) -> None:
        entry = self._greenlet_spans.pop(key, None)
        if entry is None:
            return
        span = entry[0]
        if error is not None and not isinstance(error, GreenletExit):
            span.record_exception(error)
            span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR,
                                              f"raised {type(error).__name__}"))
        span.end()

    def on_exit(self, g, info) -> None:
        entry = self._greenlet_spans.pop(id(g), None)
        if entry is None:
            return
        span, _ = entry
        name = getattr(g, "name", None) or (info.name if info else None)
        if name:
            span.update_name(f"greenlet {name}")
        exc_info = getattr(g, "_exc_info", None)
        if exc_info is not None:
            span.record_exception(exc_info[1])
            span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR,
                                              f"raised {exc_info[0].__name__}"))
        span.end()

    def _abandon(self, key, ref) -> None:
        entry = self._greenlet_spans.get(key)
        if entry is not None and entry[1] is ref:
            del self._greenlet_spans[key]
            entry[0].set_attribute("labkit.never_ran", True)
            entry[0].end()

    def after_fork_in_child(self, recorder) -> None:
        # The parent ends its own greenlets' spans; ending copies here would
        # export the same span ids twice.
        self._greenlet_spans.clear()
        if self.processor is not None:
            self.processor.ended.clear()
            self.processor._started.clear()

    def greenlet_name(self, gid: int) -> str | None:
        """The name of the greenlet with this id, as the tracer knows it."""
        recorder = _recorder.active()
        if recorder is not None:
            return recorder.name_of(gid)
        g = getcurrent()
        return getattr(g, "name", None) if id(g) == gid else None

    def _span_of(self, name: str):
        """The open span of the live greenlet called ``name``, if exactly one."""
        found = []
        for span, ref in list(self._greenlet_spans.values()):
            g = ref()
            if g is not None and getattr(g, "name", None) == name:
                found.append(span)
        return found[0] if len(found) == 1 else None

    # -- blocks (labkit.events subscriber: the watchdog thread) ----------------
    def _on_labkit_event(self, event) -> None:
        from labkit.events import EventLoopBlocked
        if not isinstance(event, EventLoopBlocked):
            return
        block, start_mono = _find_block(event)
        duration_ns = int(event.blocking_time * 1e9)
        if start_mono is None:   # a monitor without a recorder: it ended just now
            start_mono = lib.lk_now_ns() - duration_ns
        name = event.greenlet if isinstance(event.greenlet, str) else \
            getattr(event.greenlet, "name", str(event.greenlet))
        attributes = {"labkit.greenlet": name, "labkit.blocked_ms": duration_ns / 1e6}
        if block is not None:
            attributes.update(_code_attributes(block))
        parent = self._span_of(name)
        context = otel_trace.set_span_in_context(parent) if parent is not None \
            else otel_context.Context()
        start_wall = _wall_ns(start_mono)
        span = self.tracer.start_span("labkit.blocked", context=context,
                                      start_time=start_wall, attributes=attributes)
        span.end(end_time=start_wall + duration_ns)
        if parent is not None:
            parent.add_event("labkit.blocked", attributes=attributes, timestamp=start_wall)

    # -- the timeline (a tracing.export span source) ----------------------------
    def span_records(self, pid: int, start_ns: int, stop_ns: int) -> list[dict]:
        """The spans that ended in process ``pid`` and overlap [start_ns,
        stop_ns], as tracing.export places them on the greenlet lanes."""
        if self.processor is None:
            return []
        spans = []
        for start, end, name, trace_id, span_id, parent, gid, greenlet, span_pid in \
                list(self.processor.ended):
            if span_pid != pid or end < start_ns or start > stop_ns:
                continue
            spans.append({"start_ns": start, "end_ns": end, "name": name,
                          "greenlet_id": gid, "greenlet": greenlet,
                          "args": {"trace_id": _hex(trace_id, 32), "span_id": _hex(span_id, 16),
                                   "parent_id": _hex(parent, 16) if parent else None}})
        return spans

    def close(self) -> None:
        """Remove the bridge: no more greenlet spans, block spans or timeline.
        Greenlet spans still open are ended now."""
        if self._closed:
            return
        self._closed = True
        if self._recorder_owner is not None:
            self._recorder_owner.remove_observer(self)
        for span, _ in list(self._greenlet_spans.values()):
            span.end()
        self._greenlet_spans.clear()
        if getattr(self, "_blocking", False):
            from labkit import events
            if self._on_labkit_event in events.subscribers:
                events.subscribers.remove(self._on_labkit_event)
        if self.processor is not None:
            _export.remove_span_source(self.span_records)
            # an SDK provider cannot drop a processor: this one goes quiet
            self.processor._bridge = _Closed()
            self.processor.ended = collections.deque(maxlen=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Closed:
    def greenlet_name(self, gid):
        return None


def _observable_recorder():
    """Where greenlet observers go: the flight recorder (which keeps them
    across its pauses), else the running recorder, else None."""
    from tracing import flight
    current = flight.current()
    if current is not None and current.running:
        return current
    return _recorder.active()


def _code_attributes(block) -> dict:
    """A block's OTel ``code.*`` attributes: the line sampled most often;
    if no sample caught it (the watchdog got no CPU on a busy machine),
    where it started (its greenlet's resume site or first run), marked
    ``labkit.sampled`` False -- never the report's placeholder "?:0"."""
    attributes = {"labkit.sampled": block.sampled, "labkit.stack": list(block.stack)}
    if block.sampled:
        place = (block.file, block.line, block.function)
    else:
        place = block.started or block.first
    if place is not None and place[1] > 0:
        attributes.update(zip(("code.filepath", "code.lineno", "code.function"), place))
    return attributes


def _find_block(event):
    """The tracing Block behind an EventLoopBlocked, and its start (lk_now_ns):
    the running recorder appended it just before telling the subscribers."""
    recorder = _recorder.active()
    if recorder is None:
        return None, None
    for block in reversed(list(recorder.blocks)):
        if abs(block.duration - event.blocking_time) < 1e-9:
            return block, recorder.start_ns + int(block.start * 1e9)
    return None, None


def instrument(tracer_provider=None, *, greenlets: bool = False, blocking: bool = True,
               timeline: bool = True, max_spans: int = DEFAULT_MAX_SPANS) -> Bridge:
    """Bridge OpenTelemetry and labkit's tracer (see the module docstring).

    ``tracer_provider``: an SDK TracerProvider (default: the global one).
    Returns the :class:`Bridge`; ``close()`` it (or use ``with``) to undo.
    """
    provider = tracer_provider if tracer_provider is not None else \
        otel_trace.get_tracer_provider()
    if not hasattr(provider, "get_tracer") or (
            timeline and not hasattr(provider, "add_span_processor")):
        raise TypeError(f"tracer_provider must be an OpenTelemetry SDK TracerProvider "
                        f"(opentelemetry.sdk.trace), not {type(provider).__name__}")
    if isinstance(max_spans, bool) or not isinstance(max_spans, int) or max_spans < 0:
        raise ValueError(f"max_spans must be an int >= 0, not {max_spans!r}")
    return Bridge(provider, greenlets=greenlets, blocking=blocking, timeline=timeline,
                  max_spans=max_spans)
