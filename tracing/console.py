"""The live console: every greenlet, what it waits on, lints, and record & scrub.

    con = tracing.Console()     # show it (last expression of a cell)
    ...                         # it refreshes between cells, while the kernel is idle
    con.pause()                 # or the Pause button; the slider then scrubs back
    con.show(-1)                # the latest recorded frame; show(0) the oldest
    con.resume()
    con.close()                 # nothing left running

What it shows (tokio-console's views, for greenlets):

- the **table**: one line per greenlet -- and per asyncio Task of the
  kernel's loop (cells using top-level ``await``), marked ``(task)`` --
  with its state, what it waits on, busy / scheduled / idle time and
  switches; a filter box and sort buttons above it. Click a line to see
  that row's **stack** (read live, if it is still alive) and its
  **history** (the row in each recorded frame);
- **lints** (:mod:`tracing.lints`'s findings, each with its greenlet, line
  and evidence), the **spawn tree** and the **wait-for graph** (joins and
  awaits followed as chains to what the last one waits on), in tabs;
- a **timeline** of the last ``window`` seconds: a
  :class:`tracing.dashboard.Dashboard` (drawn off the hub, from the same
  fold of the ring's records that gives the table its times: the
  recorder's :class:`tracing.ledger.Ledger`, read through a
  :class:`~tracing.ledger.Tap`; :mod:`tracing.live_timeline`) in the last
  tab, running only while that tab is open, and drawing a picture only now
  and then while no front-end shows it (``python -m labkit.bench.echo
  --impls labkit,console`` measures the console with that tab shown);
- **record & scrub**: every refresh is kept (the last ``history`` seconds,
  :class:`tracing.frames.FrameRing`). Pause, then drag the slider back: the
  table, lints, tree and graph show the frame recorded at that moment, and
  the timeline the picture drawn then (the Dashboard keeps its pictures of
  the last ``history`` seconds: :meth:`tracing.dashboard.Dashboard.freeze`;
  none for moments when the tab was closed).

Who does what, and in which thread (the Dashboard's arrangement)::

    hub thread (the kernel's main thread)        console thread ("labkit-console")
    -------------------------------------        ---------------------------------
                                                 every `refresh` s, unless paused:
    capture greenlet: frames.capture()   <-----  run_callback_threadsafe
      (yields between pieces)            ----->  inbox: the frame; add it to the ring,
                                                 build the view (strings, options)
    _apply(): set the widgets' values    <-----  run_callback_threadsafe
    a click, the slider, the filter:     ----->  inbox: rebuild the view of the shown frame

The hub only captures (a :func:`tracing.snapshot.snapshot`, in pieces, and
the lints at most once a second: :class:`tracing.frames.Capturer`) and sets
widget values; filtering, sorting and formatting run in the console thread,
so a big table does not stall the loop it describes. A click reads that one
greenlet's stack in the hub (ipywidgets runs callbacks there). The time
columns need a recording: if nothing records, the console runs a small one
(:class:`tracing.frames.BackgroundRecording`) that steps aside for any other.

Contract: create, pause, resume, show and close from the hub's thread (a
cell, or a widget callback). Creating a Console closes the previous one.
"""
from __future__ import annotations

import html
import queue
import threading
import time

import labkit.hub as _lk_hub

from tracing import frames as _frames

__all__ = ["Console", "SORT_KEYS", "MAX_REFRESH_HZ"]

#: Refreshes per second, at most (IOPub and CPU budget, as the Dashboard's).
MAX_REFRESH_HZ = 4
#: Sort buttons: label -> (row key, largest first).
SORT_KEYS = {"name": ("name", False), "state": ("state", False), "busy": ("busy", True),
             "sched": ("scheduled", True), "idle": ("idle", True), "sw": ("switches", True)}
_STYLE = ("<style>.labkit-console-table select{font-family:monospace;font-size:12px}"
          ".labkit-console pre{margin:0;font-size:12px}</style>")

_current: "Console | None" = None


def _ms(seconds) -> str:
    if not seconds:
        return "0"
    return f"{seconds * 1e3:.0f}ms" if seconds < 10 else f"{seconds:.0f}s"


def row_label(row: dict) -> str:
    """One table line (monospace columns)."""
    name = row["name"] + (" (task)" if row["kind"] == "task" else "")
    return (f"{name[:26]:<26} {row['state'][:8]:<8} {(row['waits_on'] or '')[:24]:<24} "
            f"{_ms(row['busy']):>7} {_ms(row['scheduled']):>7} {_ms(row['idle']):>7} "
            f"{row['switches'] or 0:>6}  {row['where'] or ''}")


HEADER = (f"{'name':<26} {'state':<8} {'waits on':<24} {'busy':>7} {'sched':>7} "
          f"{'idle':>7} {'sw':>6}  where")


def table_rows(frame: dict, text: str = "", sort: str = "name") -> list[dict]:
    """The rows of ``frame`` that contain ``text`` (in name, state, what they
    wait on, their line; case-insensitive), sorted by button ``sort``."""
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {sorted(SORT_KEYS)}, not {sort!r}")
    needle = text.strip().lower()
    rows = [r for r in frame["rows"] if not needle or needle in
            f"{r['name']} {r['state']} {r['waits_on']} {r['where']} {r['kind']}".lower()]
    key, descending = SORT_KEYS[sort]
    return sorted(rows, key=lambda r: (r[key] is None, r[key] or 0 if descending else
                                       str(r[key] or "")), reverse=descending)


class Console:
    """The live console widget; see the module docstring.

    ``refresh``: seconds between frames (at least 1/MAX_REFRESH_HZ).
    ``history``: seconds of frames kept for scrubbing (fewer for a big
    table: :class:`tracing.frames.FrameRing` keeps at most 200,000 rows). ``window``: seconds
    of the timeline. ``timeline``: show the Dashboard's timeline (it
    records a trace; False leaves tracing to others). ``max_rows``: table
    lines shown (the filter finds the others). ``timeline_refresh``: seconds
    between timeline pictures -- drawing one is the console's dearest part
    (tens of ms of CPU, holding the GIL in bursts), hence once a second.
    """

    def __init__(self, refresh: float = 0.5, history: float = 120.0, window: float = 5.0,
                 timeline: bool = True, max_rows: int = 300, timeline_refresh: float = 1.0):
        if not refresh > 0:
            raise ValueError(f"refresh must be > 0, not {refresh!r}")
        if not history > 0:
            raise ValueError(f"history must be > 0, not {history!r}")
        if not (isinstance(max_rows, int) and max_rows > 0):
            raise ValueError(f"max_rows must be a positive int, not {max_rows!r}")
        global _current
        if _current is not None:
            _current.close()
        self.hub = _lk_hub.get_hub()
        self.refresh = max(float(refresh), 1 / MAX_REFRESH_HZ)
        self.max_rows = max_rows
        self.ring = _frames.FrameRing(seconds=history, max_frames=int(history / self.refresh) + 2)
        self.refreshes = 0          #: views applied to the widgets so far
        self.paused = False
        self._shown: int | None = None   # ring index shown while paused (None: latest)
        self._filter = ""
        self._sort = "name"
        self._selected: int | None = None
        self._stack: list | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._capturing = False     # a capture greenlet is on its way
        self._applying = False      # a view is queued in the hub
        self._quiet = 0             # >0 while _apply sets values (observers ignore them)
        self._closed = False
        self._recording = _frames.BackgroundRecording().start()
        self._capturer = _frames.Capturer()   # spaces out the lints (they cost the most)
        self.dashboard = None       #: the timeline's Dashboard, while its tab is open
        self._timeline = timeline
        # Blocks drawn from the never-yielded lint's threshold (0.1 s): its
        # watchdog then wakes half as often as at the Dashboard's 50 ms.
        from tracing.lints import NEVER_YIELDED
        self._timeline_args = {"window": window, "refresh": timeline_refresh,
                               "history": float(history), "blocking": NEVER_YIELDED}
        self._build_widgets()
        _current = self
        from labkit.event import Event
        self._go = Event()
        self._capture_greenlet = _lk_hub.spawn_raw(self._capture_loop)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labkit-console", daemon=True)
        self._thread.start()

    # -- widgets (hub thread) ---------------------------------------------------
    def _build_widgets(self) -> None:
        import ipywidgets as w
        self._pause_button = w.ToggleButton(description="Pause", icon="pause",
                                            layout=w.Layout(width="110px"))
        self._pause_button.observe(self._on_pause, "value")
        self._slider = w.IntSlider(value=0, min=0, max=0, description="scrub",
                                   disabled=True, readout=False, continuous_update=True,
                                   layout=w.Layout(width="360px"))
        self._slider.observe(self._on_slider, "value")
        self._status = w.HTML()
        self._filter_box = w.Text(placeholder="filter: name, state, waits on, line",
                                  continuous_update=True, layout=w.Layout(width="320px"))
        self._filter_box.observe(self._on_filter, "value")
        self._sort_buttons = w.ToggleButtons(options=list(SORT_KEYS), value="name",
                                             description="sort",
                                             style={"button_width": "64px"})
        self._sort_buttons.observe(self._on_sort, "value")
        self._header = w.HTML(f"<pre>{html.escape(HEADER)}</pre>")
        self._table = w.Select(options=[], rows=14, layout=w.Layout(width="100%"))
        self._table.add_class("labkit-console-table")
        self._table.observe(self._on_select, "value")
        self._detail = w.HTML("<i>click a row to see its stack and history</i>")
        self._lints = w.HTML()
        self._tree = w.HTML()
        self._waits = w.HTML()
        self._timeline_box = w.VBox([w.HTML(
            "<i>the timeline runs while this tab is open</i>" if self._timeline
            else "<i>no timeline (Console(timeline=False))</i>")])
        self._tabs = w.Tab(children=[self._lints, self._tree, self._waits, self._timeline_box],
                           titles=["lints", "spawn tree", "wait-for", "timeline"],
                           selected_index=0)
        self._tabs.observe(self._on_tab, "selected_index")
        self.widget = w.VBox([
            w.HTML(_STYLE),
            w.HBox([self._pause_button, self._slider, self._status]),
            w.HBox([self._filter_box, self._sort_buttons]),
            self._header, self._table, self._detail, self._tabs])
        self.widget.add_class("labkit-console")

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)

    # -- what the user does (hub thread) ------------------------------------------
    def pause(self) -> None:
        """Stop taking frames; the slider then scrubs through those recorded."""
        self._check_thread()
        if not self.paused:
            self._pause_button.value = True   # -> _on_pause

    def resume(self) -> None:
        """Take frames again and show the latest."""
        self._check_thread()
        if self.paused:
            self._pause_button.value = False

    def show(self, index: int) -> None:
        """While paused: show recorded frame ``index`` (0 the oldest, -1 the
        latest), as dragging the slider there does."""
        self._check_thread()
        if not self.paused:
            raise RuntimeError("pause the console before scrubbing")
        count = len(self.ring)
        if not -count <= index < count:
            raise IndexError(f"index {index} out of range for {count} recorded frames")
        self._slider.value = index % count   # -> _on_slider

    def select(self, row_id: int) -> None:
        """Select the row with this id, as a click on it does."""
        self._check_thread()
        self._table.value = row_id   # -> _on_select

    def _on_pause(self, change) -> None:
        if self._quiet:
            return
        self.paused = bool(change["new"])
        self._pause_button.description = "Resume" if self.paused else "Pause"
        self._pause_button.icon = "play" if self.paused else "pause"
        self._slider.disabled = not self.paused
        self._post("paused", self.paused)

    def _on_slider(self, change) -> None:
        if not self._quiet and self.paused:
            self._post("show", change["new"])

    def _on_filter(self, change) -> None:
        if not self._quiet:
            self._post("filter", change["new"])

    def _on_sort(self, change) -> None:
        if not self._quiet:
            self._post("sort", change["new"])

    def show_timeline(self, shown: bool = True) -> None:
        """Open (or leave) the timeline tab, as a click on it does."""
        self._check_thread()
        self._tabs.selected_index = 3 if shown else 0   # -> _on_tab

    def _on_tab(self, change) -> None:
        import ipywidgets as w
        if change["new"] == 3 and self.dashboard is None and self._timeline \
                and not self._closed:
            from tracing.dashboard import Dashboard
            try:
                self.dashboard = Dashboard(**self._timeline_args)
            except RuntimeError as exc:   # another trace records: no timeline
                self._timeline_box.children = [w.HTML(f"no timeline: {html.escape(str(exc))}")]
                return
            self._timeline_box.children = [self.dashboard.widget]
        elif change["new"] != 3 and self.dashboard is not None:
            self._close_timeline()

    def _close_timeline(self) -> None:
        import ipywidgets as w
        dashboard, self.dashboard = self.dashboard, None
        self._timeline_box.children = [w.HTML("<i>the timeline runs while this tab is open</i>")]
        dashboard.close()

    def _on_select(self, change) -> None:
        if self._quiet or change["new"] is None:
            return
        row_id = change["new"]
        # The stack is read here, in the hub's thread: another thread may
        # not walk a greenlet's frames.
        kind = "task" if any(label.endswith("(task)") and value == row_id
                             for label, value in self._table.options) else "greenlet"
        stack = _frames.stack_of({"id": row_id, "kind": kind}, self.hub)
        self._post("select", (row_id, stack))

    def _post(self, what: str, value) -> None:
        self._inbox.put((what, value))

    # -- lifecycle ------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread and the recording, close the widgets. Idempotent."""
        global _current
        if self._closed:
            return
        self._check_thread()
        self._closed = True
        self._stop.set()
        self._inbox.put(None)
        self._thread.join()
        self._go.set()   # the capturing greenlet sees _closed and ends
        self._recording.stop()
        if self.dashboard is not None:
            self._close_timeline()
        for child in self.widget.children:
            for grandchild in getattr(child, "children", ()):
                grandchild.close()
            child.close()
        self.widget.close()
        if _current is self:
            _current = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_thread(self) -> None:
        if threading.get_ident() != self.hub.thread_ident:
            raise RuntimeError("use a Console from the thread of the hub it shows")

    # -- the hub's half ---------------------------------------------------------------
    def _start_capture(self) -> None:
        """In the hub (a callback): wake the capturing greenlet."""
        self._go.set()

    def _capture_loop(self) -> None:
        """The capturing greenlet: a frame each time it is woken. It may
        yield between pieces, which a hub callback could not; it leaves
        itself out of the table."""
        from labkit import getcurrent
        me = (id(getcurrent()),)
        while not self._closed:
            self._go.wait()
            self._go.clear()
            if self._closed:
                return
            try:
                frame = self._capturer.capture(self.hub, between=lambda: _lk_hub.sleep(0),
                                               omit=me)
            except Exception as exc:   # never die silently: say so in the status line
                frame = exc
            self._capturing = False
            self._inbox.put(("frame", frame))

    def _apply(self, view: dict) -> None:
        """In the hub: show ``view`` (sends the widgets' comm messages)."""
        self._applying = False
        if self._closed:
            return
        self._quiet += 1
        try:
            options = view["options"]
            if list(self._table.options) != options:
                self._table.options = options
            self._table.value = view["selected"] if view["selected"] in \
                {value for _label, value in options} else None
            for widget, key in ((self._status, "status"), (self._detail, "detail"),
                                (self._lints, "lints"), (self._tree, "tree"),
                                (self._waits, "waits")):
                if widget.value != view[key]:
                    widget.value = view[key]
            self._slider.max = view["slider_max"]
            self._slider.value = view["slider_value"]
            if self.dashboard is not None:   # the timeline rewinds with the table
                shown = view.get("frame_time")
                if shown != self.dashboard.frozen:
                    self.dashboard.freeze(shown)
        finally:
            self._quiet -= 1
        self.refreshes += 1

    # -- the console thread --------------------------------------------------------------
    def _run(self) -> None:
        next_capture = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if not self.paused and not self._capturing and now >= next_capture:
                self._capturing = True
                next_capture = now + self.refresh
                self.hub.run_callback_threadsafe(self._start_capture)
            # Sleep until there is something to do: the frame asked for (it
            # comes through the inbox), a click, or the next capture. This
            # thread must not wake needlessly: each wake-up takes the GIL
            # from the hub's thread.
            waiting = self.paused or self._capturing
            try:
                message = self._inbox.get(timeout=None if waiting else
                                          max(0.0, next_capture - now))
            except queue.Empty:
                continue
            if message is None:
                return
            dirty = self._handle(*message)
            while True:   # coalesce: handle all that came, draw once
                try:
                    message = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if message is None:
                    return
                dirty = self._handle(*message) or dirty
            if dirty and not self._applying and not self._stop.is_set():
                try:
                    view = self._view()
                except Exception as exc:
                    view = self._error_view(exc)
                self._applying = True
                self.hub.run_callback_threadsafe(self._apply, view)

    def _handle(self, what: str, value) -> bool:
        """Take in one message; whether the view must be redrawn."""
        if what == "frame":
            if isinstance(value, Exception):
                self._error = value
                return True
            self._error = None
            if not self.paused:
                self.ring.add(value)
            return not self.paused
        if what == "paused":
            self._shown = len(self.ring) - 1 if value and len(self.ring) else None
        elif what == "show":
            self._shown = min(max(0, int(value)), max(0, len(self.ring) - 1))
        elif what == "filter":
            self._filter = value
        elif what == "sort":
            self._sort = value
        elif what == "select":
            self._selected, self._stack = value
        return True

    def _frame(self) -> dict | None:
        if not len(self.ring):
            return None
        if self.paused and self._shown is not None:
            return self.ring[self._shown]
        return self.ring[-1]

    def _view(self) -> dict:
        """Everything the widgets show, as plain values (console thread)."""
        frame = self._frame()
        count = len(self.ring)
        index = self._shown if (self.paused and self._shown is not None) else max(0, count - 1)
        if frame is None:
            status = self._status_text(None, 0, 0)
            if getattr(self, "_error", None) is not None:
                status += f" &mdash; capture failed: {html.escape(repr(self._error))}"
            return {"options": [], "selected": None, "status": status,
                    "detail": "", "lints": "", "tree": "", "waits": "",
                    "slider_max": 0, "slider_value": 0}
        rows = table_rows(frame, self._filter, self._sort)
        options = [(row_label(r), r["id"]) for r in rows[:self.max_rows]]
        return {"options": options, "selected": self._selected,
                "frame_time": frame["time"] if self.paused else None,
                "status": self._status_text(frame, index, count, len(rows)),
                "detail": self._detail_html(frame),
                "lints": _lints_html(frame), "tree": _tree_html(frame),
                "waits": _waits_html(frame),
                "slider_max": max(0, count - 1), "slider_value": index}

    def _status_text(self, frame, index, count, shown=0) -> str:
        if frame is None:
            return "<b>labkit console</b>: waiting for the first frame"
        latest = self.ring[-1]["time"]
        when = ("live" if not self.paused else
                f"paused, showing {frame['time'] - latest:+.1f} s ({index + 1}/{count})")
        total = len(frame["rows"])
        more = f", {shown} match" if self._filter else ""
        hidden = f", first {self.max_rows} shown" if shown > self.max_rows else ""
        error = (f" &mdash; capture failed: {html.escape(repr(self._error))}"
                 if getattr(self, "_error", None) else "")
        age = frame.get("lints_age")
        lints = f"{len(frame['lints'])} lints" + (f" (as of {age:.1f} s before)" if age else "")
        return (f"<b>labkit console</b>: {when} &mdash; {total} rows{more}{hidden}, "
                f"{lints}, {count} frames recorded{error}")

    def _error_view(self, exc) -> dict:
        view = {"options": list(self._table.options), "selected": self._selected,
                "status": f"<b>labkit console</b>: {html.escape(repr(exc))}", "detail": "",
                "lints": "", "tree": "", "waits": "",
                "slider_max": max(0, len(self.ring) - 1), "slider_value": 0}
        return view

    def _detail_html(self, frame: dict) -> str:
        if self._selected is None:
            return "<i>click a row to see its stack and history</i>"
        row = next((r for r in frame["rows"] if r["id"] == self._selected), None)
        history = _frames.history_of(self.ring, self._selected, until=frame["time"])
        if row is None and history:
            row = history[-1][1]
        if row is None:
            return "<i>that row is not in this frame</i>"
        fields = "".join(
            f"<tr><td>{k}</td><td><code>{html.escape(value)}</code></td></tr>"
            for k, value in [(k, str(row.get(k) or "")) for k in (
                "name", "kind", "state", "waits_on", "where", "spawn_site", "parent",
                "switches")] + [(k, _ms(row.get(k))) for k in ("busy", "scheduled", "idle")])
        if self._stack is None:
            stack = "(not alive any more)"
        else:
            stack = "\n".join(self._stack) or "(not started)"
        lines = [f"{t - frame['time']:+7.1f} s  {r['state']:<8} {(r['waits_on'] or ''):<24} "
                 f"busy {_ms(r['busy']):>7}  {r['where'] or ''}"
                 for t, r in history[-20:]]
        return (f"<div style='display:flex;gap:2em'><table>{fields}</table>"
                f"<div><b>stack (now)</b><pre>{html.escape(stack)}</pre>"
                f"<b>history</b> (one line per recorded frame, the last 20)"
                f"<pre>{html.escape(chr(10).join(lines))}</pre></div></div>")


def _lints_html(frame: dict) -> str:
    lints = frame["lints"]
    if not lints:
        return "<p>No lints.</p>"
    rows = "".join(
        f"<tr><td><b>{html.escape(str(l.get('kind')))}</b></td>"
        f"<td>{html.escape(str(l.get('greenlet')))}</td>"
        f"<td><code>{html.escape(str(l.get('line') or ''))}</code></td>"
        f"<td>{html.escape(str(l.get('evidence') or ''))}</td></tr>" for l in lints)
    return ("<table><tr><th>lint</th><th>greenlet</th><th>line</th><th>evidence</th></tr>"
            f"{rows}</table>")


def _tree_html(frame: dict) -> str:
    lines = [f"{'    ' * depth}{row['name']}{' (task)' if row['kind'] == 'task' else ''}"
             f"  [{row['state']}]" + (f"  spawned at {row['spawn_site']}"
                                      if row.get("spawn_site") else "")
             for depth, row in _frames.spawn_tree(frame)]
    return f"<pre>{html.escape(chr(10).join(lines)) or 'no greenlets'}</pre>"


def _waits_html(frame: dict) -> str:
    lines = _frames.format_wait_for(frame)
    return f"<pre>{html.escape(chr(10).join(lines)) or 'nothing is parked'}</pre>"
