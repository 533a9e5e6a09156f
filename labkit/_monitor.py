"""The hub's monitor thread (gevent's ``PeriodicMonitoringThread``): the
hub's half of ``labkit.config.monitor_thread``.

One native thread per hub wakes up periodically and calls its monitoring
functions with the hub: the built-in ones, and any added with
``add_monitoring_function(function, period)``. The built-ins:

- **blocking**: a greenlet trace function, installed in the hub's thread,
  counts switches. If none happened during ``config.max_blocking_time``
  while a greenlet other than the hub was running, that greenlet has held
  the loop too long: the report (its stack, then ``labkit.util``'s run
  info) goes to the hub's ``exception_stream`` (default stderr), and an
  ``EventLoopBlocked`` goes to ``labkit.events``' subscribers. A thread's
  own root greenlet blocking in a thread that is not the main one is not
  reported: a worker thread is there to block (a thread-pool job);
- **memory** (where psutil is installed): past ``config.max_memory_usage``,
  ``MemoryUsageThresholdExceeded``, and ``MemoryUsageUnderThreshold`` once
  usage falls back.

The monitor runs in its own OS thread: its functions must be thread-safe
and must not touch the hub's loop. The tracer's blocking monitor
(``tracing.monitor_blocking``) is the richer tool (durations, causes, the
line that blocked); this one is gevent's, for gevent code and tests.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
import weakref

from greenlet import getcurrent, settrace

from labkit import _native

__all__ = ["PeriodicMonitoringThread"]


class _Entry:
    __slots__ = ("function", "period", "last_run")

    def __init__(self, function, period: float):
        self.function = function
        self.period = period
        self.last_run = 0.0

    def __repr__(self) -> str:
        return f"<monitoring function {self.function!r} every {self.period}s>"


class _SwitchCounter:
    """The greenlet trace function: counts switches, remembers who runs.
    Chains to the trace function that was set before it."""

    def __init__(self):
        self.switches = 0
        self.active = None
        self.previous = settrace(self)

    def __call__(self, event, args):
        self.switches += 1
        self.active = args[1] if event in ("switch", "throw") else None
        if self.previous is not None:
            self.previous(event, args)

    def kill(self) -> None:
        settrace(self.previous)
        self.previous = None


class PeriodicMonitoringThread:
    """Create it in the hub's thread (``hub.start_periodic_monitoring_thread``);
    ``kill()`` there too (it removes the trace function)."""

    #: the shortest sleep between checks
    min_sleep_time = 0.005
    #: the shortest memory check period
    min_memory_monitor_period = 2

    def __init__(self, hub):
        from labkit import config
        self._hub_ref = weakref.ref(hub, lambda _ref: self._stop())
        self.should_run = True
        self._tracer = _SwitchCounter()
        self._last_switches = -1
        self._process = None
        self._memory_exceeded = 0
        self._max_memory_seen = 0
        self._monitoring_functions = [_Entry(self.monitor_blocking, config.max_blocking_time)]
        if self._get_process() is not None:
            self._monitoring_functions.append(
                _Entry(self.monitor_memory_usage,
                       max(config.memory_monitor_period, self.min_memory_monitor_period)))
        self.pid = os.getpid()
        self._thread = _native.start_thread(self._run, (), f"labkit-monitor-{hub.thread_ident}")

    @property
    def hub(self):
        return self._hub_ref()

    # -- the functions ------------------------------------------------------
    def monitoring_functions(self) -> list:
        """The entries (``.function``, ``.period``), the built-ins first."""
        from labkit import config
        self._monitoring_functions[0].period = config.max_blocking_time
        return self._monitoring_functions

    def add_monitoring_function(self, function, period) -> None:
        """Call ``function(hub)`` every ``period`` seconds from the monitor
        thread; ``period`` None removes it."""
        if not callable(function):
            raise ValueError("function must be callable")
        if period is None:
            self._monitoring_functions = [entry for entry in self._monitoring_functions
                                          if entry.function != function]
        elif period <= 0:
            raise ValueError("Period must be positive.")
        else:
            for entry in self._monitoring_functions:
                if entry.function == function:
                    entry.period = period
                    return
            self._monitoring_functions.append(_Entry(function, period))

    def kill(self) -> None:
        """Stop the thread and remove the trace function (the hub's thread)."""
        if not self.should_run:
            return
        self.should_run = False
        self._tracer.kill()

    def _stop(self) -> None:
        self.should_run = False

    # -- the thread -----------------------------------------------------------
    def _run(self) -> None:
        getcurrent().labkit_monitoring_thread = weakref.ref(self)
        while self.should_run:
            functions = self.monitoring_functions()
            time.sleep(max(min(entry.period for entry in functions), self.min_sleep_time))
            hub = self.hub
            if hub is None or not self.should_run:
                break
            now = time.monotonic()
            for entry in list(functions):
                if now - entry.last_run < entry.period:
                    continue
                entry.last_run = now
                try:
                    entry.function(hub)
                except Exception:   # a monitoring function must not end the thread
                    traceback.print_exc()
            del hub

    # -- blocking -------------------------------------------------------------
    def monitor_blocking(self, hub):
        """Report the loop blocked if no switch happened since the last
        check while a greenlet other than the hub held it. True if reported."""
        switches, active = self._tracer.switches, self._tracer.active
        switched = switches != self._last_switches
        self._last_switches = switches
        if switched or active is None or active is hub:
            return None
        if active.parent is None and hub.thread_ident != _native._main_ident:  # noqa: SLF001
            return None   # a worker thread's own code: blocking is its job
        from labkit import events
        stream = getattr(hub, "exception_stream", None) or sys.stderr
        lines = ["=" * 80,
                 f"\n{time.ctime()} : Greenlet {active!r} appears to be blocked",
                 f"    Reported by {self!r}"]
        frame = sys._current_frames().get(hub.thread_ident)
        lines.append(f"Blocked Stack (for thread id {hub.thread_ident:#x}):")
        lines.append("".join(traceback.format_stack(frame)) if frame is not None else "?")
        event = events.EventLoopBlocked(active, self.monitoring_functions()[0].period,
                                        lines, hub=hub)
        try:
            events.notify(event)
            stream.write("\n".join(event.info) + "\n")
        except Exception:
            traceback.print_exc()
        return True

    # -- memory ----------------------------------------------------------------
    def _get_process(self):
        if self._process is None:
            try:
                import psutil
                process = psutil.Process()
                process.memory_full_info()
            except Exception:
                process = False
            self._process = process
        return self._process or None

    def monitor_memory_usage(self, _hub):
        """Emit MemoryUsageThresholdExceeded while usage grows past
        config.max_memory_usage, and MemoryUsageUnderThreshold once it falls
        back. -1 if not configured."""
        from labkit import config, events
        max_allowed = config.max_memory_usage
        if not max_allowed:
            return -1
        info = self._get_process().memory_full_info()
        usage = getattr(info, "uss", 0) or info.rss
        event = None
        if usage > max_allowed:
            if usage > self._memory_exceeded:
                event = events.MemoryUsageThresholdExceeded(usage, max_allowed, info)
                self._memory_exceeded = usage
            self._max_memory_seen = max(self._max_memory_seen, usage)
        elif self._memory_exceeded:
            event = events.MemoryUsageUnderThreshold(usage, max_allowed, info,
                                                     self._max_memory_seen)
            self._memory_exceeded = 0
            self._max_memory_seen = 0
        if event is not None:
            events.notify(event)
        return event

    def __repr__(self) -> str:
        return (f"<PeriodicMonitoringThread at {id(self):#x} hub={self.hub!r} "
                f"running={self.should_run}>")
