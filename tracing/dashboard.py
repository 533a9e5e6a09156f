"""A live dashboard: what the hub is doing, redrawn a few times a second.

    dash = tracing.Dashboard(window=5)   # the last 5 seconds
    dash                                 # show it (last expression of a cell)
    ...                                  # it keeps updating between cells
    dash.close()                         # stop recording; nothing left running

It shows a timeline of the last ``window`` seconds (one lane per busy
greenlet, in ``Trace.timeline()``'s colours: :mod:`tracing.live_timeline`),
counters (live greenlets, switches per second, loop utilisation, ready-queue
length, longest recent block) and the latest blocking calls with their
file:line, plus Start, Stop and Clear buttons.

Who does what, and in which thread::

    hub thread (the kernel's main thread)       dashboard thread ("labkit-dashboard")
    -------------------------------------       -------------------------------------
                                                every `refresh` s: ask for a snapshot
    _snapshot(): a greenlet brings the  <-----  run_callback_threadsafe
    recorder's ledger up to date (in
    pieces, yielding between batches)
    and takes what its tap kept (the
    folded records' runs and waits, as
    numpy arrays) and three counters    ----->  queue
                                                paint them into the lanes' columns
                                                (tracing.live_timeline.Strip), count,
                                                and paint the PNG (Picture: axes
                                                drawn once by matplotlib, lanes per
                                                frame)
    _apply(): set the widgets' values   <-----  run_callback_threadsafe
    (ipywidgets sends the comm messages)

One fold: the records are folded once, by the recorder's
:class:`~tracing.ledger.Ledger` -- the same fold, in the same passes, that
gives the console's table and lints their times (:func:`tracing.snapshot.snapshot`
updates that ledger too; whoever asks first folds, and each record is folded
once: ``Ledger.folded``). The timeline reads the ledger's result through a
:class:`~tracing.ledger.Tap` (:class:`~tracing.ledger.Slices`). The hub
runs that fold in pieces of one batch (~1 ms) and sets three widget values
per refresh; drawing never runs on the hub's thread, so the dashboard does
not block the loop it watches. It still costs CPU and, in a busy process, a
share of the GIL -- which is why each record is folded once (not once per
picture, as a Trace of the window would, nor once more for the timeline),
the lanes are painted with numpy into a background drawn once, and it
refreshes at most 4 times a second. (Under an echo server with 50 clients,
building and drawing a Trace of the window per picture cost the server ~3x
its CPU per message.)

Record & scrub: with ``history`` > 0 the pictures of the last ``history``
seconds are kept; :meth:`Dashboard.picture_at` returns the one shown at a
moment, and :meth:`Dashboard.freeze` shows it and holds it (the console's
scrub) while recording goes on.

Nobody looking: the image widget counts its front-end views
(``_view_count``); while it has none (a notebook closed, an output cleared,
a script), a picture is drawn only every ``unseen_refresh`` seconds
(:data:`UNSEEN_REFRESH`) -- the PNG is most of a refresh's cost -- while
the lanes and counters go on being brought up to date.

Coalescing: at most one snapshot request and one update are in flight at a
time. If drawing is slower than ``refresh``, refreshes are skipped, not
queued. Each refresh sends at most three widget updates (image, counters,
table), and the image only when it changed -- under Jupyter's IOPub limits
(1000 messages/s, 1 MB/s by default) at ~70 KB per PNG (144 dpi, for slides).

Contract: create, start, stop, clear and close from the hub's thread (a
cell, or a button: ipywidgets runs button callbacks in the kernel's main
thread). The dashboard records with its own tracer, so it cannot run while
another trace (``tracing.start()``, ``%%trace``, ``%trace_blocking``) does;
creating a new Dashboard closes the previous one. After :meth:`close` no
thread, greenlet, timer or tracing hook of the dashboard is left.

Memory: the tracer's side table keeps one small entry per greenlet spawned
while recording (names for the lanes). For a long-lived dashboard over a
server that spawns thousands of greenlets a second, press Clear now and then.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import html
import queue
import threading
import time
import weakref

import labkit.hub as _lk_hub
from labkit._loop import lib

from tracing.blocking import BlockingMonitor
from tracing.introspect import cell_location, live_greenlets
from tracing.ledger import ledger_for
from tracing.live_timeline import Picture, Strip
from tracing.pace import Pace
from tracing.recorder import Recorder, mark_host_wait, shown_name

#: Refreshes per second, at most (IOPub and CPU budget; see the module doc).
MAX_REFRESH_HZ = 4
#: Pictures kept for scrubbing back (``history``), at most.
MAX_PICTURES = 600
#: Seconds between pictures while no front-end shows the image (the
#: widget's view count is 0: a closed notebook, an output cleared, a script),
#: unless the Dashboard is given its own ``unseen_refresh``. The lanes are
#: still brought up to date every refresh, so a view that appears gets a
#: current picture at the next one.
UNSEEN_REFRESH = 5.0

_current: "Dashboard | None" = None   # the one recording now, if any


# -- what one refresh computes (dashboard thread) ---------------------------------

@dataclasses.dataclass
class Snapshot:
    """What the hub hands over at one refresh."""
    slices: list            #: tracing.ledger.Slices folded since the last one, oldest first
    lost: int               #: records overwritten in the ring before they were folded
    now_ns: int
    ready: int              #: callbacks in the hub's ready queue now
    timers: int
    fd_waits: int
    time: float = 0.0       #: time.monotonic() when it was taken


@dataclasses.dataclass
class Frame:
    """What one refresh shows."""
    png: bytes | None
    counters: dict
    blocks: list            #: latest tracing.model.Block, newest first
    time: float = 0.0       #: time.monotonic() of its snapshot


def lane_names(recorder: Recorder, strip: Strip, lanes, tasks=None) -> dict:
    """lane row -> the name a trace shows for it ("ticker #3 (In[4])").
    ``tasks``: id -> name of asyncio Tasks drawn as lanes
    (:meth:`tracing.tasks.TaskSteps.names`). Any thread: it only reads the
    side table."""
    from tracing.model import _spawn_name
    names = {}
    for lane in lanes:
        gid = strip.gid_of[lane] if lane < len(strip.gid_of) else None
        if not isinstance(gid, int):
            continue
        if tasks and gid in tasks:
            names[lane] = tasks[gid]
            continue
        index = strip.spawn_index.get(lane)
        info = recorder.spawn_info(index) if index is not None else None
        name = recorder.name_of(gid)
        if info is not None:
            name = _spawn_name(info, info.name or name)
        names[lane] = name
    return names


def block_spans(recorder: Recorder, blocks) -> list[tuple[int, int]]:
    """(start_ns, end_ns) on the ring's clock of ``blocks`` (their times are
    seconds since the recorder started)."""
    return [(recorder.start_ns + int(b.start * 1e9),
             recorder.start_ns + int((b.start + b.duration) * 1e9)) for b in blocks]


def counters(strip: Strip, snapshot: Snapshot, live: int, blocks) -> dict:
    """The dashboard's numbers for the window (see the module docstring)."""
    numbers = strip.counters(strip.window())
    longest = max(blocks, key=lambda b: b.duration, default=None)
    return {
        "live greenlets": live,
        "switches/s": numbers["switches/s"],
        "loop utilisation": numbers["loop utilisation"],
        "ready queue": snapshot.ready,
        "ready queue (max)": max(numbers["ready queue (max)"], snapshot.ready),
        "timers": snapshot.timers,
        "fd waits": snapshot.fd_waits,
        "longest recent block": longest,
    }


# -- the widget -------------------------------------------------------------------

class Dashboard:
    """Live view of this thread's hub; see the module docstring.

    ``window``: seconds of history shown. ``refresh``: seconds between
    refreshes (at least 1/MAX_REFRESH_HZ). ``blocking``: threshold of the
    blocking monitor in seconds (None: no monitor). ``max_lanes``: greenlet
    lanes in the timeline. ``autostart``: start recording at once.
    ``history``: seconds of pictures kept for :meth:`picture_at` (0: none).
    ``dpi``: of the picture (144: sharp on a slide). ``unseen_refresh``:
    seconds between pictures while no front-end shows the image
    (default :data:`UNSEEN_REFRESH`; None: draw every refresh regardless).
    """

    def __init__(self, window: float = 5.0, refresh: float = 0.25,
                 blocking: float | None = 0.05, max_lanes: int = 10,
                 capacity: int = 1 << 16, autostart: bool = True,
                 history: float = 0.0, dpi: int = 144, unseen_refresh="default"):
        if not window > 0:
            raise ValueError(f"window must be > 0, not {window!r}")
        if not history >= 0:
            raise ValueError(f"history must be >= 0, not {history!r}")
        if not (isinstance(dpi, int) and 20 <= dpi <= 600):
            raise ValueError(f"dpi must be an int in [20, 600], not {dpi!r}")
        if unseen_refresh == "default":
            unseen_refresh = UNSEEN_REFRESH
        if unseen_refresh is not None and not unseen_refresh > 0:
            raise ValueError(f"unseen_refresh must be > 0 or None, not {unseen_refresh!r}")
        global _current
        if _current is not None:
            _current.close()   # re-running a cell replaces the dashboard
        self.window = float(window)
        self.refresh = max(float(refresh), 1 / MAX_REFRESH_HZ)
        self.blocking = blocking
        self.max_lanes = max_lanes
        self.capacity = capacity
        self.history = float(history)
        self.dpi = dpi
        self.unseen_refresh = unseen_refresh
        self.pictures = 0           #: pictures drawn so far
        self._pictures: collections.deque = collections.deque()   # (time, png)
        self._pictures_lock = threading.Lock()
        self._frozen: float | None = None   # freeze(t): the time shown, while held
        self._task_steps = None     # tracing.tasks.TaskSteps on the host asyncio loop
        #: the names of the lanes in the latest picture, top to bottom
        self.lanes: list[str] = []
        self.hub = _lk_hub.get_hub()
        self.refreshes = 0          #: frames applied to the widgets so far
        self._recorder: Recorder | None = None
        self._monitor = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._snapshots: queue.Queue = queue.Queue()
        self._requested = False     # a snapshot request is queued in the hub
        self._applying = False      # an update is queued in the hub
        self._generation = 0        # bumped by clear(): stale frames are dropped
        self._tap = None            # on the recorder's ledger, while running
        self._lost = 0              # records lost so far, as last handed over
        self._closed = False
        self._build_widgets()
        if autostart:
            self.start()

    # -- widgets --------------------------------------------------------------
    def _build_widgets(self) -> None:
        import ipywidgets as w
        self._status = w.HTML()
        self._image = w.Image(format="png", layout=w.Layout(width="100%", max_width="760px"))
        # The front-end counts the image's views in this trait (ipywidgets
        # does so once it is a number): 0 means nobody sees the picture.
        self._image._view_count = 0
        self._counters = w.HTML()
        self._table = w.HTML()
        self._buttons = {name: w.Button(description=name, layout=w.Layout(width="80px"))
                         for name in ("Start", "Stop", "Clear")}
        self._buttons["Start"].on_click(lambda _: self.start())
        self._buttons["Stop"].on_click(lambda _: self.stop())
        self._buttons["Clear"].on_click(lambda _: self.clear())
        self.widget = w.VBox([
            w.HBox([*self._buttons.values(), self._status]),
            self._image,
            w.HBox([self._counters, self._table]),
        ])
        self._show_status()

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.widget)

    def _show_status(self, note: str = "") -> None:
        state = "recording" if self.running else "stopped"
        if self._closed:
            state = "closed"
        self._status.value = (f"<b>labkit dashboard</b>: {state}, last {self.window:g} s"
                              + (f" &mdash; {html.escape(note)}" if note else ""))
        self._buttons["Start"].disabled = self.running or self._closed
        self._buttons["Stop"].disabled = not self.running
        self._buttons["Clear"].disabled = self._closed

    # -- lifecycle (hub thread) ------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start recording and refreshing (no-op if running)."""
        global _current
        if self.running or self._closed:
            return
        if _current is not None and _current is not self:
            _current.close()
        self._check_thread()
        # Before recording: the scan takes a while, which the monitor would
        # rightly report as a block, caused by the dashboard itself.
        existing = self._existing_greenlets()
        # Importing matplotlib takes a second; done in the dashboard thread it
        # would hold the GIL (C extensions initialising) long enough to stall
        # the loop. Done here, it is part of the cell that made the dashboard.
        import matplotlib.backends.backend_agg  # noqa: F401
        self._recorder = Recorder(capacity=self.capacity).start()
        self._recorder._names.update(existing)
        try:
            if self.blocking is not None:
                self._monitor = BlockingMonitor(self.blocking, report=False,
                                                recorder=self._recorder).start()
        except BaseException:
            self._recorder.stop(read=False)
            self._recorder = None
            raise
        _current = self
        self._record_tasks()
        self._ipython = _ipython_kernel_shell()
        if self._ipython is not None:
            self._ipython.events.register("post_execute", mark_host_wait)
        self._tap = ledger_for(self._recorder).tap()
        self._lost = 0
        self._stop.clear()
        self._snapshots = queue.Queue()
        self._requested = False
        self._thread = threading.Thread(target=self._run, args=(self._generation,),
                                        name="labkit-dashboard", daemon=True)
        self._thread.start()
        self._show_status()

    def stop(self) -> None:
        """Stop recording and refreshing; the last picture stays."""
        global _current
        if not self.running:
            return
        self._check_thread()
        thread, self._thread = self._thread, None
        self._stop.set()
        self._snapshots.put(None)   # wake the thread if it waits for a snapshot
        thread.join()
        if self._ipython is not None:
            try:
                self._ipython.events.unregister("post_execute", mark_host_wait)
            except ValueError:
                pass
        if self._task_steps is not None:
            self._task_steps.uninstall()
            self._task_steps = None
        ledger_for(self._recorder).untap(self._tap)
        self._recorder.stop(read=False)   # stops the monitor too
        self._recorder = self._monitor = self._tap = None
        if _current is self:
            _current = None
        self._show_status()

    def clear(self) -> None:
        """Forget everything recorded so far (a fresh recorder, empty view)."""
        was_running = self.running
        self.stop()
        self._generation += 1
        with self._pictures_lock:
            self._pictures.clear()
        self._image.value = b""
        self._counters.value = ""
        self._table.value = ""
        if was_running:
            self.start()

    def close(self) -> None:
        """Stop, and close the widgets. Idempotent."""
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._show_status()
        for child in (self._status, self._image, self._counters, self._table,
                      *self._buttons.values()):
            child.close()
        for box in self.widget.children:
            box.close()
        self.widget.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_thread(self) -> None:
        if threading.get_ident() != self.hub.thread_ident:
            raise RuntimeError("use a Dashboard from the thread of the hub it shows")

    def _record_tasks(self) -> None:
        """The host asyncio loop's Tasks (a kernel's top-level ``await``
        cells) get lanes too: their steps go into our ring."""
        from tracing.frames import host_asyncio_loop
        from tracing.tasks import TaskSteps
        loop = host_asyncio_loop()
        if loop is None:
            return
        try:
            self._task_steps = TaskSteps(loop).install(self._recorder)
        except RuntimeError:   # someone else records that loop's Tasks
            self._task_steps = None

    def _existing_greenlets(self) -> dict:
        """id -> name of the hub's live greenlets (kept as weak references).

        Greenlets spawned before recording started have no entry in the
        tracer's side table; naming them once keeps their lanes from being
        labelled with hex ids.
        """
        found = live_greenlets(self.hub)
        self._preexisting = [weakref.ref(g) for g in found]
        return {id(g): shown_name(g) for g in found}

    # -- hub side of a refresh -------------------------------------------------
    def _snapshot(self) -> None:
        """In the hub: fold the new records (in a greenlet, in pieces)."""
        _lk_hub.spawn_raw(self._fold)

    def _fold(self) -> None:
        """In the hub, a greenlet: bring the recorder's ledger up to date,
        yielding between batches, and hand over what the tap kept."""
        recorder, tap = self._recorder, self._tap
        try:
            if recorder is None or recorder.ring is None or tap is None:
                self._snapshots.put(None)
                return
            ledger = ledger_for(recorder)
            ledger.update(Pace(_yield))
            if self._tap is not tap:     # stopped meanwhile
                self._snapshots.put(None)
                return
            lost = ledger.lost + tap.dropped
            lost, self._lost = lost - self._lost, lost
            loop = self.hub.loop
            self._snapshots.put(Snapshot(
                slices=tap.take(), lost=lost,
                now_ns=lib.lk_now_ns(), ready=self.hub.ready_count,
                timers=loop.active_timers, fd_waits=loop.io_waiters, time=time.monotonic()))
        finally:
            self._requested = False

    def _apply(self, frame: Frame, generation: int) -> None:
        """In the hub: show ``frame`` (sends the widgets' comm messages)."""
        self._applying = False
        if self._closed or generation != self._generation:
            return
        if frame.png is not None and self._frozen is None and frame.png != self._image.value:
            self._image.value = frame.png
        self._counters.value = _counters_html(frame.counters)
        self._table.value = _blocks_html(frame.blocks, lib.lk_now_ns(), self._recorder)
        self.refreshes += 1

    # -- record & scrub ----------------------------------------------------------
    @property
    def frozen(self) -> float | None:
        """The time whose picture :meth:`freeze` holds, or None (live)."""
        return self._frozen

    def picture_at(self, t: float) -> bytes | None:
        """The picture shown at ``t`` (``time.monotonic()``): the last one
        drawn from a snapshot taken at or before ``t``, among those kept
        (``history`` seconds); None if there is none. Any thread."""
        with self._pictures_lock:
            pictures = list(self._pictures)
        times = [when for when, _ in pictures]
        index = bisect.bisect_right(times, t) - 1
        return pictures[index][1] if index >= 0 else None

    def freeze(self, t: float | None) -> None:
        """Show the picture of time ``t`` (:meth:`picture_at`) and keep it
        while recording goes on; ``None``: live again. From the hub's
        thread. If no picture was kept for ``t``, the image is emptied."""
        self._check_thread()
        self._frozen = t
        if t is None:
            with self._pictures_lock:
                latest = self._pictures[-1][1] if self._pictures else None
            if latest is not None:
                self._image.value = latest
            self._show_status()
            return
        png = self.picture_at(t)
        self._image.value = png or b""
        self._show_status(f"showing the picture of {t - time.monotonic():+.1f} s"
                          if png else "no picture kept for that moment")

    def _keep(self, when: float, png: bytes) -> None:
        if not self.history:
            return
        with self._pictures_lock:
            self._pictures.append((when, png))
            while self._pictures and (self._pictures[0][0] < when - self.history
                                      or len(self._pictures) > MAX_PICTURES):
                self._pictures.popleft()

    @property
    def seen(self) -> bool:
        """Whether a front-end shows the image now (its view count)."""
        count = self._image._view_count
        return count is None or count > 0

    # -- the dashboard thread ----------------------------------------------------
    def _run(self, generation: int) -> None:
        recorder = self._recorder
        strip = picture = None
        drawn_at = None             # snapshot time of the last picture
        live_spawns: set = set()
        spawns_seen = 0
        while not self._stop.wait(self.refresh):
            if not self._requested:
                self._requested = True
                self.hub.run_callback_threadsafe(self._snapshot)
            try:
                snapshot = self._snapshots.get(timeout=max(1.0, 4 * self.refresh))
            except queue.Empty:
                continue   # the hub is busy (or blocked): try again later
            if snapshot is None or self._stop.is_set():
                continue
            try:
                if picture is None:   # the axes and legend, drawn once
                    picture = Picture(size=(10, 1.6 + 0.3 * (self.max_lanes + 2)),
                                      dpi=self.dpi, max_lanes=self.max_lanes,
                                      window=self.window)
                    strip = Strip(self.window, picture.columns, id(recorder._hub),
                                  id(recorder._hub.parent), labels=recorder.labels)
                strip.add_slices(snapshot.slices, snapshot.now_ns, snapshot.lost)
                strip.recycle()
                # Live greenlets: those alive when we started, plus those
                # spawned since that have not exited (the side table drops
                # its reference at exit).
                spawns = recorder.spawns
                for index in range(spawns_seen, len(spawns)):
                    live_spawns.add(index)
                spawns_seen = len(spawns)
                live_spawns = {i for i in live_spawns
                               if spawns[i].ref is not None and not spawns[i].ref.dead}
                alive_before = sum(1 for ref in self._preexisting
                                   if ref() is not None and not ref().dead)
                horizon = snapshot.now_ns - int(self.window * 1e9)
                blocks = [b for b, (_, end) in zip(recorder.blocks, block_spans(
                    recorder, recorder.blocks)) if end >= horizon]
                png = None
                # Nobody looks: a picture now and then (the PNG is most of a
                # refresh's cost), not every refresh.
                if self.seen or self.unseen_refresh is None or drawn_at is None \
                        or snapshot.time - drawn_at >= self.unseen_refresh:
                    shown = picture.lanes(strip, strip.window())
                    steps = self._task_steps
                    names = lane_names(recorder, strip, shown,
                                       steps.names() if steps is not None else None)
                    png = picture.render(strip, names, block_spans(recorder, blocks))
                    self.lanes = [("poll", "hub")[lane] if lane < 2 else names.get(lane, "?")
                                  for lane in shown]
                    self._keep(snapshot.time, png)
                    drawn_at = snapshot.time
                    self.pictures += 1
                frame = Frame(png=png,
                              counters=counters(strip, snapshot,
                                                len(live_spawns) + alive_before, blocks),
                              blocks=list(recorder.blocks)[-5:][::-1], time=snapshot.time)
            except Exception:   # never die silently: say so in the status line
                import traceback
                traceback.print_exc()
                continue
            if not self._applying and not self._stop.is_set():
                self._applying = True
                self.hub.run_callback_threadsafe(self._apply, frame, generation)


def _yield() -> None:
    _lk_hub.sleep(0)


def _ipython_kernel_shell():
    """The IPython shell of a running kernel, or None (a script, a terminal)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ipython = get_ipython()
    return ipython if getattr(ipython, "kernel", None) is not None else None


def _counters_html(c: dict) -> str:
    longest = c["longest recent block"]
    block = (f"{longest.duration * 1e3:.0f} ms at {html.escape(longest.location)}"
             if longest is not None else "none")
    rows = [
        ("live greenlets", f"{c['live greenlets']}"),
        ("switches/s", f"{c['switches/s']:,.0f}"),
        ("loop utilisation", f"{c['loop utilisation']:.0%}"),
        ("ready queue", f"{c['ready queue']} now, {c['ready queue (max)']} max"),
        ("timers / fd waits", f"{c['timers']} / {c['fd waits']}"),
        ("longest recent block", block),
    ]
    body = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{v}</b></td></tr>"
                   for k, v in rows)
    return f"<table class='labkit-counters'>{body}</table>"


def _blocks_html(blocks: list, now_ns: int, recorder) -> str:
    if not blocks:
        return "<p>No blocking calls yet.</p>"
    since_start = (now_ns - recorder.start_ns) / 1e9 if recorder is not None else None
    rows = []
    for b in blocks:
        ago = f"{since_start - b.start:.1f} s ago" if since_start is not None else ""
        rows.append(f"<tr><td>{ago}</td><td>{b.duration * 1e3:.0f} ms</td>"
                    f"<td>{html.escape(b.greenlet)}</td>"
                    f"<td><code>{html.escape(cell_location(b.file, b.line))}</code></td>"
                    f"<td>{html.escape(b.function)}</td></tr>")
    head = "<tr><th>when</th><th>blocked</th><th>greenlet</th><th>line</th><th>function</th></tr>"
    return (f"<p><b>Latest blocking calls</b></p><table class='labkit-blocks'>{head}"
            f"{''.join(rows)}</table>")
