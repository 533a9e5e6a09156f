"""tracing: what labkit's greenlets did, when, and what blocked the loop.

    import tracing

    with tracing.trace(blocking=0.05) as t:    # record, and watch for blocks
        labkit.joinall([labkit.spawn(work, i) for i in range(3)])
    print(t.summary())                         # one row per greenlet
    t.timeline()                               # matplotlib, one lane per greenlet
    t.to_perfetto("trace.json")                # open in ui.perfetto.dev

    tracing.start(); ...; t = tracing.stop()   # the same without a with block
    m = tracing.monitor_blocking(0.05)         # only the blocking monitor
    tracing.measure_switch_overhead()          # what a switch costs, traced or not
    print(tracing.snapshot())                  # every greenlet now: state, waits on, times
    tracing.lints.lints()                      # never yielded, lost wake-up, spinning, ...
    tracing.Console()                          # in a notebook: all of it live, record & scrub

The pieces, one module each: ``recorder`` (the C ring, the hub's hooks, the
side table of strings), ``blocking`` (the watchdog thread), ``model`` (records
-> greenlets, slices, switches), ``lanes`` (the hub's and the poll's lanes,
greenlets' lane names), ``legend`` (the timeline's colours in plain words,
used by every picture and the README), ``summary`` (the table), ``export``
(Perfetto/Chrome JSON, Perfetto protobuf, speedscope), ``plot`` (the
timeline, also as a PNG), ``overhead``
(switch-cost measurements), ``introspect`` (what live greenlets are doing
now), ``snapshot`` (the live table: one row per greenlet, with its times),
``ledger`` (its per-greenlet running totals, read from the ring),
``lints`` (what looks wrong, with line and evidence), ``causes`` (a block's
time split into CPU, GC and off-CPU); ``tracing.snapshot`` is the function
(import that module's other names with ``from tracing.snapshot import ...``),
and in a notebook ``magics`` and
``dashboard``, which use the others and never each other. ``frames``
(the console's data: rows, lints, graphs, the ring it scrubs) is shown by
``console`` (the widget, ``tracing.Console``) and by ``attach`` (a
terminal, ``python -m labkit console PID``). Outside the notebook:
``flight`` (the always-on recorder, dumped on request, a signal or a long
block), ``merge`` (several processes' traces on one timeline) and ``otel``
(OpenTelemetry beside the tracer; needs opentelemetry-sdk).

Cost: with tracing off, each hook in the hub is one ``is not None`` branch.
With tracing on, each switch into a greenlet writes one 32-byte record with
one call into C (no Python frame). Contract: one trace at a time, started and
stopped in the thread whose hub it records.
"""
from __future__ import annotations

from tracing.blocking import BlockingMonitor
from tracing.model import Block, Greenlet, LoopIteration, Slice, Switch, Trace
from tracing.overhead import measure_switch_overhead
from tracing.recorder import DEFAULT_CAPACITY, Recorder
from tracing import lints   # the module: tracing.lints.lints(), .silence(), thresholds
from tracing.lints import Lint, silence, unsilence
from tracing.snapshot import LoopStats, Row, Snapshot, snapshot

__all__ = ["trace", "start", "stop", "monitor_blocking", "measure_switch_overhead", "Dashboard",
           "Trace", "Greenlet", "Slice", "Switch", "LoopIteration", "Block",
           "BlockingMonitor", "DEFAULT_CAPACITY", "snapshot", "Snapshot", "Row", "LoopStats",
           "lints", "Lint", "silence", "unsilence", "Console"]

_session: "_Session | None" = None


class _Session:
    """A running trace: its recorder, its monitor, and the Trace to fill."""

    def __init__(self, capacity, blocking, settrace, callback, report):
        self.trace = Trace()
        self.recorder = Recorder(capacity=capacity, settrace=settrace).start()
        self.monitor = None
        if blocking is not None:
            try:
                self.monitor = BlockingMonitor(blocking, callback=callback, report=report,
                                               recorder=self.recorder).start()
            except BaseException:
                self.recorder.stop()
                raise

    def finish(self) -> Trace:
        self.trace._load(self.recorder.stop())   # stops the monitor too
        return self.trace


def start(capacity: int = DEFAULT_CAPACITY, blocking: float | None = None,
          settrace: bool = False, callback=None, report: bool = True) -> Trace:
    """Start recording. Returns the (still empty) Trace that stop() fills.

    ``capacity``: records in the ring (32 bytes each; the oldest are
    overwritten when full, and counted in ``Trace.dropped``). ``blocking``:
    also run the blocking monitor with this threshold in seconds (see
    :func:`monitor_blocking` for ``callback`` and ``report``). ``settrace``:
    also record raw ``greenlet.switch()`` calls that bypass the hub.
    """
    global _session
    if _session is not None:
        raise RuntimeError("tracing is already on; call tracing.stop() first")
    _session = _Session(capacity, blocking, settrace, callback, report)
    return _session.trace


def stop() -> Trace:
    """Stop recording and return the filled Trace."""
    global _session
    if _session is None:
        raise RuntimeError("tracing is not on")
    session, _session = _session, None
    return session.finish()


class trace:
    """``with tracing.trace(...) as t:`` -- start() on entry, stop() on exit.

    Takes the arguments of :func:`start`; ``t`` is filled when the block ends.
    """

    def __init__(self, blocking: float | None = None, capacity: int = DEFAULT_CAPACITY,
                 settrace: bool = False, callback=None, report: bool = True):
        self._args = (capacity, blocking, settrace, callback, report)

    def __enter__(self) -> Trace:
        return start(*self._args)

    def __exit__(self, *exc) -> None:
        stop()


def monitor_blocking(threshold: float = 0.05, callback=None,
                     report: bool = True) -> BlockingMonitor:
    """Watch the calling thread's loop for blocks longer than ``threshold`` s.

    Returns a running :class:`BlockingMonitor`; call its ``stop()`` (or use
    it as a context manager). Each block is appended to ``monitor.blocks``,
    passed to ``callback(block)`` (from the watchdog thread) and, if
    ``report``, printed to stderr as one line. To record a full trace at the
    same time, use ``trace(blocking=threshold)`` instead.
    """
    return BlockingMonitor(threshold, callback=callback, report=report).start()


def __getattr__(name: str):
    # Dashboard and Console need ipywidgets; load them only when asked for,
    # so that ``import tracing`` works in a plain script.
    if name == "Dashboard":
        from tracing.dashboard import Dashboard
        return Dashboard
    if name == "Console":
        from tracing.console import Console
        return Console
    raise AttributeError(f"module 'tracing' has no attribute {name!r}")
