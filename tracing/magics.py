"""IPython magics for the tracer: ``%%trace``, ``%trace_blocking``, ``%labkit_status``.

``%load_ext labkit`` registers them: this module is the tracer's IPython
plug-in (the ``labkit.ipython`` entry point in pyproject.toml; see
labkit/plugins.py), and ``%load_ext tracing.magics`` loads it alone::

    %%trace                     run this cell under the tracer; then show the
    labkit.joinall([...])       summary table, the blocking calls and the timeline

    %trace_blocking on 0.02     from now on, report every call that blocks the
    %trace_blocking off         loop longer than 20 ms, in the cell that caused it
                                (%load_ext labkit turns it on at 100 ms, each
                                line reported at most every 10 s)

    %labkit_status              which greenlets are alive, what each waits for,
                                the live table (busy/scheduled/idle time, spawn
                                cell) and the lints (never yielded, lost wake-up,
                                spinning, starved, leaked by a cell)
    %labkit_status --stacks     ... and their full stacks (gevent's print_run_info)

The same things without IPython: ``tracing.introspect.run_info()`` /
``format_run_info()``, ``tracing.snapshot()`` and ``tracing.lints.lints()``
for the status, ``tracing.trace()`` for a trace,
``tracing.monitor_blocking()`` for the detector.

Where reports go. Output in a kernel is routed to a cell by the request's
parent header, which ipykernel keeps in a ContextVar, and every greenlet runs
in a copy of the context of the cell that spawned it. The blocking monitor's
watchdog thread has no such context, so it hands each report to the hub
(``run_callback_threadsafe``), and the hub prints it *inside the context of
the greenlet that blocked* -- the report lands under the cell that spawned
that greenlet, even if other cells ran since. When that greenlet cannot be
found any more (it finished and nothing refers to it), or the blocker was
the cell's own code or a hub callback, the report goes to the latest cell.

A block that goes on (a greenlet that never yields) does not wait for its
end: after :data:`STUCK_AFTER` seconds the watchdog thread itself prints
"labkit: loop stuck for 5.0 s in greenlet X at In[7], line 3 ..." under the
cell that spawned X (the hub, being stuck, cannot), and ``%labkit_status``
says where the loop is or was last stuck.

One recorder at a time: ``%%trace`` pauses ``%trace_blocking`` while the
cell runs (the trace watches for blocks itself, with the same threshold),
and refuses to start while a :class:`~tracing.dashboard.Dashboard` records.
"""
from __future__ import annotations

import ast
import collections
import sys
import time

import labkit.hub as _lk_hub
from labkit._loop import ffi, lib

import tracing
from tracing.blocking import BlockingMonitor
from tracing.introspect import INTERNAL_DIRS, cell_location, format_run_info, greenlet_name
from tracing.plot import render_timeline_png
from tracing.recorder import Recorder, active, mark_host_wait, set_background

#: The blocking threshold used when none is given, in seconds.
DEFAULT_THRESHOLD = 0.05
#: A block still going on after this many seconds is reported while it
#: lasts ("loop stuck for 5 s in greenlet X at In[7], line 3").
STUCK_AFTER = 5.0
#: The blocking detector ``%load_ext labkit`` turns on: its threshold, and
#: how often it reports blocks at one line (the others are counted, and the
#: next report says how many). ``%trace_blocking on`` reports every block.
SESSION_THRESHOLD = 0.1
REPORT_EVERY = 10.0


# -- rendering a trace for a notebook ----------------------------------------

def _trace_display(trace, cell_file: str | None = None, title: str | None = None,
                   timeline: bool = True) -> list:
    """The objects %%trace displays: summary, blocking report, timeline PNG."""
    from IPython.display import HTML, Image
    shown = [trace.summary()]
    blocks = trace.blocking()
    if blocks:
        items = "".join(f"<li><code>{_escape(_block_text(b, cell_file))}</code></li>"
                        for b in blocks)
        shown.append(HTML(f"<p><b>Blocking calls</b> (the loop was stuck):</p><ul>{items}</ul>"))
    if timeline and trace.slices():
        shown.append(Image(data=render_timeline_png(trace, title=title), format="png"))
    return shown


def _block_text(block, cell_file: str | None = None) -> str:
    """A block as one line, naming the cell's line when it is in the cell."""
    text = str(block)
    if not block.sampled:
        return text
    if cell_file is not None and block.file == cell_file:
        return text.replace(block.location, f"line {block.line} of this cell")
    return text.replace(block.location, cell_location(block.file, block.line))


def _escape(text: str) -> str:
    import html
    return html.escape(text)


# -- the magics -----------------------------------------------------------------

#: The session-wide blocking detector of %trace_blocking, when on.
_session_monitor = None
#: Blocks reported by its watchdog thread, not shown yet (shown in the hub).
_pending: collections.deque = collections.deque()


def _start_session_monitor(threshold: float, ipython=None, rate_limited: bool = False):
    global _session_monitor
    hub = _lk_hub.get_hub()

    def on_block(block):   # in the watchdog thread: hand over to the hub
        _pending.append(block)
        hub.run_callback_threadsafe(_show_pending)

    def on_stuck(stuck):   # in the watchdog thread: the hub is the stuck one
        _print_stuck(recorder, stuck)

    recorder = _ContextKeepingRecorder(capacity=1024).start()
    try:
        _session_monitor = BlockingMonitor(threshold, report=False, callback=on_block,
                                           recorder=recorder, stuck_after=STUCK_AFTER,
                                           on_stuck=on_stuck).start()
    except BaseException:
        recorder.stop(read=False)
        raise
    _session_monitor.rate_limited = rate_limited
    _shown.clear()
    if ipython is not None:
        _session_monitor.ipython = ipython
        ipython.events.register("post_execute", _flush_before_the_cell_ends)
    # Another trace (tracing.trace(), %%trace, a Dashboard) pauses it while
    # it records, and starts it again when it stops.
    set_background(recorder, _stop_session_monitor,
                   lambda: _start_session_monitor(threshold, ipython, rate_limited))
    return _session_monitor


def _stop_session_monitor() -> None:
    global _session_monitor
    monitor, _session_monitor = _session_monitor, None
    if monitor is None:
        return
    set_background(None)
    ipython = getattr(monitor, "ipython", None)
    if ipython is not None:
        try:
            ipython.events.unregister("post_execute", _flush_before_the_cell_ends)
        except ValueError:
            pass
    monitor._recorder.stop(read=False)   # stops the monitor too
    _show_pending()


def _flush_before_the_cell_ends() -> None:
    """post_execute: show the blocks of this cell before it reports idle.

    The watchdog notices a block a few milliseconds after it ended; a cell
    whose greenlet blocked and then finished is often done by then. If the
    ring says a block is waiting to be reported, give the watchdog a moment
    (bounded) so that the report still belongs to this cell's output --
    a notebook runner (nbclient) stops listening to a cell once it is idle.
    """
    monitor = _session_monitor
    if monitor is None or getattr(monitor, "_ring", None) is None:
        return
    mark_host_wait()   # first: this wait is the host's, not a block
    state = ffi.new("lk_trace_state *")
    deadline = time.monotonic() + min(1.0, 4 * monitor.threshold + 0.1)
    while time.monotonic() < deadline:
        lib.lk_trace_get_state(monitor._ring, state)
        if state.stalls == monitor._seen_stalls and not monitor._stop.is_set():
            break
        time.sleep(0.005)
    _show_pending()


def _show_pending() -> None:
    """Main thread (hub callback or post_execute): show the pending blocks."""
    while _pending:
        _show_block(_pending.popleft())


#: rate limiting: (file, line) -> [when last shown, blocks not shown since]
_shown: dict = {}


def _show_block(block) -> None:
    """Print ``block`` under the cell that spawned the greenlet that blocked.

    Runs in the hub, so it must be quick: no scan of the garbage collector,
    only the recorder's side table and its memory of recent exits.
    """
    if getattr(_session_monitor, "rate_limited", False):
        now, place = time.monotonic(), (block.file, block.line)
        seen = _shown.get(place)
        if seen is not None and now - seen[0] < REPORT_EVERY:
            seen[1] += 1
            return
        _shown[place] = [now, 0]
        if seen is not None and seen[1]:
            block = _with_note(block, f"{seen[1]} more like it not shown since")
    context = None
    recorder = getattr(_session_monitor, "_recorder", None)
    if isinstance(recorder, _ContextKeepingRecorder) and \
            block.greenlet not in ("main", "hub", "?"):
        context = recorder.context_of(block.greenlet)
    if context is not None:
        try:
            context.run(_print_block, block)
            return
        except RuntimeError:   # the context is entered somewhere: print as is
            pass
    _print_block(block)


def _stuck_text(stuck) -> str:
    return str(stuck).replace(stuck.location, cell_location(stuck.file, stuck.line))


def _print_stuck(recorder, stuck) -> None:
    """Watchdog thread, while the loop is stuck: say so now, under the cell
    that spawned the stuck greenlet. The hub cannot print for us (it is the
    one waiting), so this thread prints, in a copy of that greenlet's
    context (ipykernel routes output by a ContextVar)."""
    text = (f"labkit: {_stuck_text(stuck)} (it has not yielded since; "
            f"interrupt the kernel to stop it)")
    context = None
    if stuck.greenlet not in ("main", "hub", "?"):
        context = recorder.spawn_context_of(stuck.greenlet)
    if context is not None:
        context.copy().run(_write_line, text)
    else:
        _write_line(text)


def _write_line(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except Exception:
        pass


class _ContextKeepingRecorder(Recorder):
    """A recorder that remembers the contextvars context of greenlets that
    exited recently, by name: the greenlet that blocked is often gone by the
    time its report is shown, and its context says which cell spawned it."""

    KEEP = 256

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._exited = collections.OrderedDict()   # name -> gr_context
        self._spawned = collections.OrderedDict()  # id(g) -> gr_context at spawn

    def on_spawn(self, g) -> None:
        # Kept for the watchdog thread: a running greenlet's gr_context can
        # only be read from its own thread.
        self._spawned[id(g)] = g.gr_context
        if len(self._spawned) > self.KEEP:
            self._spawned.popitem(last=False)
        super().on_spawn(g)

    def spawn_context_of(self, name: str):
        """The context a greenlet called ``name`` was spawned with (any
        thread may ask), if it was among the last KEEP spawns; else None."""
        for info in reversed(self.spawns[-self.KEEP:]):
            g = info.ref
            if g is not None and greenlet_name(g) == name:
                return self._spawned.get(info.gid)
        return None

    def on_exit(self, g) -> None:
        context = g.gr_context
        if context is not None:
            name = greenlet_name(g)
            self._exited.pop(name, None)
            self._exited[name] = context
            if len(self._exited) > self.KEEP:
                self._exited.popitem(last=False)
        super().on_exit(g)

    def context_of(self, name: str):
        """The context of the greenlet called ``name``: a live one spawned
        while recording (newest first, within the last KEEP spawns), else
        one that exited recently; None if neither."""
        for info in reversed(self.spawns[-self.KEEP:]):
            g = info.ref
            if g is not None and not g.dead and greenlet_name(g) == name:
                return g.gr_context
        return self._exited.get(name)


def _with_note(block, note: str):
    import dataclasses
    noted = dataclasses.replace(block)
    noted.note = note
    return noted


def _print_block(block) -> None:
    text = str(block)
    if block.sampled:
        text = text.replace(block.location, cell_location(block.file, block.line))
    lines = [f"labkit: {text}"]
    if getattr(block, "note", None):
        lines[0] += f" ({block.note})"
    for entry in block.stack:
        if entry.startswith(INTERNAL_DIRS):
            continue
        place, _, function = entry.rpartition(" in ")
        file, _, line = place.rpartition(":")
        lines.append(f"    {cell_location(file, int(line) if line.isdigit() else 0)} in {function}")
    # No flush: in a kernel, flushing waits for the IO thread, and this runs
    # in the hub. The kernel flushes the stream itself a moment later.
    print("\n".join(lines[:4]), file=sys.stderr)


def _status_table(names: tuple = ()) -> str:
    """%labkit_status's second half: the snapshot table, then the lints."""
    from tracing.lints import lints
    from tracing.snapshot import snapshot
    snap = snapshot()
    found = lints(snap=snap)
    if names:
        snap.rows = [row for row in snap.rows if row.name in names]
        found = [lint for lint in found if lint.greenlet in names]
    lines = ["times (tracing.snapshot()):"]
    lines += [f"  {line}" if line else "" for line in snap.format(limit=100).splitlines()]
    lines.append("")
    if found:
        lines.append(f"lints ({len(found)}):")
        lines.extend(f"  {lint}" for lint in found)
    else:
        lines.append("lints: none")
    return "\n".join(lines)


def register_magics(ipython) -> None:
    """Register the magics on ``ipython``."""
    ipython.register_magics(_magics_class())


# The IPython extension protocol, which labkit's plug-in registry uses too.

def load_ipython_extension(ipython) -> None:
    """``%load_ext labkit``: the magics, and the blocking detector on
    (:data:`SESSION_THRESHOLD`, each line reported at most every
    :data:`REPORT_EVERY` seconds) unless something records already."""
    register_magics(ipython)
    from tracing.lints import watch_cells
    watch_cells(ipython)   # when each cell finishes: the leaked lint
    if _session_monitor is None and active() is None:
        _start_session_monitor(SESSION_THRESHOLD, ipython, rate_limited=True)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext labkit``: the blocking detector off."""
    from tracing.lints import unwatch_cells
    unwatch_cells(ipython)
    _stop_session_monitor()


def _magics_class():
    # Defined on first use: importing this module must not need IPython.
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

    @magics_class
    class LabkitMagics(Magics):
        """%%trace, %trace_blocking, %labkit_status: see tracing.magics."""

        @magic_arguments()
        @argument("name", nargs="?", default="_trace",
                  help="keep the Trace in this variable (default: _trace)")
        @argument("-b", "--blocking", type=float, default=None, metavar="SECONDS",
                  help=f"blocking threshold (default {DEFAULT_THRESHOLD}, or the "
                       f"one of %%trace_blocking)")
        @argument("--no-timeline", action="store_true", help="skip the timeline image")
        @cell_magic("trace")
        def trace(self, line, cell):
            """Run the cell under the tracer, then show the summary table, the
            blocking calls (if any) and the timeline. The Trace is kept in
            ``_trace`` (or the variable named on the magic line)."""
            from IPython.core.error import UsageError
            from IPython.display import display
            args = parse_argstring(self.trace, line)
            paused = _session_monitor
            if active() is not None and (paused is None or active() is not paused._recorder):
                raise UsageError("another trace is recording (a Dashboard?): "
                                 "stop it before %%trace")
            threshold = args.blocking or (paused.threshold if paused else DEFAULT_THRESHOLD)
            if paused is not None:
                _stop_session_monitor()
            try:
                cell_file, body, last = self._compile(cell)
                with tracing.trace(blocking=threshold, report=False) as t:
                    exec(body, self.shell.user_ns)
                    value = eval(last, self.shell.user_ns) if last is not None else None
            finally:
                if paused is not None:
                    _start_session_monitor(paused.threshold, self.shell,
                                           getattr(paused, "rate_limited", False))
            self.shell.user_ns[args.name] = t
            if value is not None and not cell.rstrip().endswith(";"):
                display(value)   # as for a plain cell: a trailing ";" hides it
            for item in _trace_display(t, cell_file, timeline=not args.no_timeline):
                display(item)

        def _compile(self, cell):
            """(filename, code of all but the last expression, code of it)."""
            shell = self.shell
            # A blank first line stands for the %%trace line, so that line
            # numbers in reports and tracebacks are the ones in the cell.
            source = "\n" + shell.transform_cell(cell)
            filename = shell.compile.cache(source, shell.execution_count)
            tree = shell.transform_ast(shell.compile.ast_parse(source, filename))
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = compile(ast.Expression(tree.body.pop().value), filename, "eval")
            return filename, compile(tree, filename, "exec"), last

        @line_magic("trace_blocking")
        def trace_blocking(self, line):
            """%trace_blocking on [THRESHOLD] | off: report calls that block
            the loop longer than THRESHOLD seconds (default 0.05), each in
            the cell that caused it. Without arguments: say whether it is on."""
            from IPython.core.error import UsageError
            words = line.split()
            if not words:
                monitor = _session_monitor
                state = "off" if monitor is None else f"on, threshold {monitor.threshold} s"
                if getattr(monitor, "rate_limited", False):
                    state += f", each line reported at most every {REPORT_EVERY:g} s"
                print(f"blocking detector: {state}")
                return
            if words[0] == "off" and len(words) == 1:
                _stop_session_monitor()
                print("blocking detector: off")
                return
            if words[0] != "on" or len(words) > 2:
                raise UsageError("usage: %trace_blocking on [THRESHOLD] | off")
            try:
                threshold = float(words[1]) if len(words) > 1 else DEFAULT_THRESHOLD
            except ValueError:
                raise UsageError(f"THRESHOLD must be a number of seconds, not {words[1]!r}")
            if threshold <= 0:
                raise UsageError("THRESHOLD must be > 0")
            _stop_session_monitor()
            try:
                _start_session_monitor(threshold, self.shell)
            except RuntimeError as exc:   # another recorder runs
                raise UsageError(f"cannot watch for blocks now: {exc}")
            print(f"blocking detector: on, threshold {threshold * 1e3:.0f} ms")

        @magic_arguments()
        @argument("-s", "--stacks", action="store_true", help="print each greenlet's stack")
        @argument("names", nargs="*", help="only these greenlets")
        @line_magic("labkit_status")
        def labkit_status(self, line):
            """The hub's state: its counters, then each live greenlet, what it
            waits for and where (with --stacks, its whole stack); then the
            live table (tracing.snapshot(): state, busy/scheduled/idle time,
            spawn site, the loop's own rows) and the lints (tracing.lints.lints())."""
            args = parse_argstring(self.labkit_status, line)
            names = tuple(args.names)
            print(format_run_info(stacks=args.stacks, names=names))
            print()
            print(_status_table(names))
            monitor = _session_monitor
            stuck = monitor.stuck_now() if monitor is not None else None
            if stuck is not None:
                print(f"loop: {_stuck_text(stuck)}, and still stuck")
            elif monitor is not None and monitor.last_stuck is not None:
                print(f"loop: the last time it was stuck: {_stuck_text(monitor.last_stuck)}")

    return LabkitMagics
