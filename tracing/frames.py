"""Frames: what the console shows at one instant, as plain data, and a ring of them.

    frame = capture()                  # in the hub's thread: rows, lints, loop
    frame["rows"][0]                   # {"id", "kind", "name", "state", "waits_on", ...}
    ring = FrameRing(seconds=60)       # record ...
    ring.add(frame)
    ring.at(t)                         # ... and scrub: the frame in force at time t
    wait_for_edges(frame)              # who waits on whom
    spawn_tree(frame)                  # who spawned whom

The console widget (:mod:`tracing.console`) and the terminal attach
(:mod:`tracing.attach`) show the same thing, so they share this one
definition of it. A frame is a JSON-able dict -- the attach sends it over a
socket and ``--record`` writes it to a file as it is -- with these keys:

- ``time``: seconds on the monotonic clock (``time.monotonic()``), ``wall``:
  seconds since the epoch, ``pid``;
- ``rows``: one dict per live greenlet, plus one per asyncio Task of the
  host loop (the kernel's; ``kind`` is ``"task"``), with the keys of
  :data:`ROW_KEYS` (see :func:`tracing.snapshot.snapshot` for their meaning);
- ``loop``: the loop's own numbers (a dict of name -> number);
- ``lints``: one dict per :class:`tracing.lints.Lint` (``kind``,
  ``greenlet``, ``id``, ``line``, ``evidence``);
- ``changed``: ids of rows whose greenlet ran while the capture yielded
  (``Snapshot.changed``), ``heap_ms``: what the lost wake-up's heap
  traversal cost in this frame (0.0 if it did not run).

Beyond the snapshot's columns a parked row has ``object`` (the Event,
Queue or lock it waits on: "RLock 0x7f..") and, for a lock that knows who
holds it (:func:`tracing.waited.holder_of`: an RLock), ``holder`` (that
greenlet's id, the ``id`` of its row if it has one) and ``holder_name``.

Where the numbers come from: :func:`tracing.snapshot.snapshot`,
:func:`tracing.lints.lints` and :func:`tracing.waited.waited_object` (the
``object`` column: which Event, Queue or lock a parked greenlet waits on);
this module only turns them into plain data, adds the asyncio Tasks, and
derives the graphs from the rows.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import os
import sys
import time
from tracing import collector
from tracing.pace import Pace

#: The keys of a row, in the order the tables show them.
ROW_KEYS = ("id", "kind", "name", "state", "waits_on", "where", "spawn_site", "cell",
            "parent", "switches", "busy", "scheduled", "idle", "object", "holder",
            "holder_name")

#: Parked rows whose object (``row["object"]``: "Event 0x7f...") a capture
#: looks up, at most: it reads the greenlet's suspended frames.
MAX_OBJECT_LOOKUPS = 500
#: Waits that are not on an object another greenlet could signal.
_NO_OBJECT = ("fd ", "timer", "sleep", "select", "not started", "idle", "join ", "?")

#: Rows turned into plain data between two looks at the clock (see capture):
#: a piece ends at the first look past tracing.pace.PIECE_NS. (A fixed count
#: of rows was a piece as long as those rows took: ~10 us each here, more
#: the first time a parked greenlet's frames are read.)
ROWS_PER_LOOK = 8


def capture(hub=None, between=None, pieces: list | None = None, omit=(),
            with_lints: bool = True, heap=None) -> dict:
    """A frame of this thread's hub now. Call from the hub's thread.

    Cost: one :func:`tracing.snapshot.snapshot`, then a dict per row, in
    pieces of :data:`tracing.pace.PIECE_NS` (the clock read every
    :data:`ROWS_PER_LOOK` rows). ``between``: called between those
    pieces, and inside the snapshot (which then reads the rows in pieces:
    ``frame["changed"]`` lists the ids of rows whose greenlet ran while it
    yielded) -- ``labkit.sleep(0)`` in a greenlet lets the loop run, so
    that a big table never holds it for long at a stretch. ``pieces``: if
    a list, the duration of each piece in ns is appended (what the console
    reports as its pause).
    ``omit``: ids of greenlets left out (the console's own capturing one).
    ``with_lints``: also run :func:`tracing.lints.lints` on the snapshot
    (else ``frame["lints"]`` is None), in pieces of their own when
    ``between`` is given. They cost far more than the snapshot on a big
    table: :class:`Capturer` spaces them out too. ``heap``: the
    :class:`tracing.lints.HeapCheck` the lints keep between frames (their
    heap traversal, rare; ``frame["heap_ms"]``: what it cost in this one).

    With ``between``, the cyclic garbage collector is off from the first
    piece to the last, yields included, if it was on (see
    :class:`tracing.collector.Hold`: a refresh then sets off no full
    collection; what a first one keeps goes into the oldest generation
    when it ends, without a collection); ``frame["rows"]`` are dicts of
    atomic values, which the collector does not track.
    """
    clock = time.perf_counter_ns
    start = clock()

    def cut():
        # The end of a piece: note how long it held the loop, let the loop
        # run, and start the next.
        nonlocal start
        if pieces is not None:
            pieces.append(clock() - start)
        if between is not None:
            between()
            # (the clock first: the question below is the next piece's
            # work, or the collection's, and a caller timing pieces in CPU
            # time from inside ``between`` counts it there too)
            start = clock()
            if held and collector.shared.young_piece_due():
                collector.shared.collect_young()
                if pieces is not None:
                    pieces.append(clock() - start)
                between()
                start = clock()
        else:
            start = clock()

    # In pieces, the cyclic collector stays off from the first piece to the
    # last, yields included (see tracing.collector.Hold): what it holds
    # while it yields -- the snapshot's rows, each referring to its
    # greenlet -- is never there when a young collection runs, so no
    # refresh moves a thousand of them into the oldest generation, and
    # refreshes stop setting off full collections (~13 ms for a heap of
    # 40,000 objects). The snapshot is gone when _capture returns, before
    # the collector is back.
    held = between is not None and collector.shared.hold()
    try:
        frame = _capture(hub, cut, between, omit, with_lints, heap)
        if between is not None:
            cut()   # the last piece ends in a yield (the collector still held)
            if held and collector.shared.settle():
                cut()   # (the young collection it ran: a piece of its own)
    finally:
        if held:
            collector.shared.release()
    if between is None and pieces is not None:
        pieces.append(clock() - start)
    return frame


def _capture(hub, cut, between, omit, with_lints, heap) -> dict:
    from tracing.lints import lints as find_lints
    from tracing.waited import holder_of, waited_object
    from tracing.recorder import shown_name
    from tracing.snapshot import snapshot
    snap = snapshot(hub, between=cut if between is not None else None)
    if between is not None and with_lints:
        cut()   # (else the snapshot's last piece ran on into the lints' first)
    taken = {"time": time.monotonic(), "wall": time.time(), "pid": os.getpid()}
    loop = dataclasses.asdict(snap.loop)
    pace = Pace(cut if between is not None else None)
    lints = None
    if with_lints:
        # The lints yield inside (at most ~tracing.lints.PIECE_NS at a
        # stretch), and can be many: made plain in pieces too. (A Lint's
        # fields are strings and ints: its __dict__ copied is what
        # dataclasses.asdict makes, for ~0.15 us against ~5.)
        found = find_lints(hub, snap=snap, between=cut if between is not None else None,
                           heap=heap)
        lints = []
        for part in pace.chunks(found, 256):
            lints += [vars(lint).copy() for lint in part]
        found = None
    tasks = task_rows()
    rows = []
    lookups = MAX_OBJECT_LOOKUPS
    snap_rows = snap.rows
    cut()     # (the snapshot's or the lints' last piece ends here)
    pace = Pace(cut if between is not None else None)
    look = 0
    for index, row in enumerate(snap_rows):
        look += 1
        if look == ROWS_PER_LOOK:
            look = 0
            pace()
        # Each snapshot row is freed in the piece that made it plain: freed
        # all at once when the snapshot went, 10,000 rows held the loop for
        # ~6 ms after the last piece.
        snap_rows[index] = None
        if row.id in omit:
            continue
        plain = row.as_dict()
        plain["kind"] = "greenlet"
        if row.state == "parked" and lookups and row.greenlet is not None \
                and not row.waits_on.startswith(_NO_OBJECT):
            lookups -= 1
            obj, _timed = waited_object(row.greenlet)
            if obj is not None:
                plain["object"] = f"{type(obj).__name__} {id(obj):#x}"
                holder = holder_of(obj)
                if holder is not None:
                    plain["holder"], plain["holder_name"] = id(holder), shown_name(holder)
        rows.append(_row(**plain))
    rows.extend(tasks)    # greenlets first, then Tasks
    return {**taken, "rows": rows, "loop": loop, "lints": lints,
            "changed": sorted(snap.changed),
            "heap_ms": heap.last_ns / 1e6 if heap is not None and with_lints else 0.0,
            # waits only a heap traversal could decide, left undecided (see Capturer)
            "undecided": heap.undecided if heap is not None and with_lints else 0}


class Capturer:
    """:func:`capture` for a live view, with the lints spaced out.

    The lints read every parked greenlet's frames and ask the collector
    who refers to what they wait on: ~0.6 ms for 100 greenlets, ~25 ms for
    1,000, against ~1 ms for the snapshot of 1,000. So they run at most
    every ``min_interval`` seconds, and after a run that took ``d`` seconds
    not again before ``d / budget`` seconds (their share of the loop's time
    stays under ``budget``); the frames between repeat the last ones, with
    ``frame["lints_age"]`` saying how old they are. A block is not lost in
    between: the snapshot's ledger keeps the notable accounts of greenlets
    that exited until the lints look.

    ``heap_traversal=False``: the lost wake-up lint never runs its heap
    traversal (see :class:`tracing.lints.HeapCheck`'s ``traverse``); what
    only that could decide is counted in ``frame["undecided"]``.
    """

    def __init__(self, min_interval: float = 1.0, budget: float = 0.02,
                 heap_traversal: bool = True):
        if not min_interval >= 0:
            raise ValueError(f"min_interval must be >= 0, not {min_interval!r}")
        if not 0 < budget <= 1:
            raise ValueError(f"budget must be in (0, 1], not {budget!r}")
        self.min_interval = min_interval
        self.budget = budget
        self._lints: list = []
        self._lints_at = None      # time.monotonic() of the last lints
        self._next_lints = 0.0
        from tracing.lints import HeapCheck
        # the lost wake-up's heap traversal: rare (see there)
        self.heap = HeapCheck(traverse=heap_traversal)

    def capture(self, hub=None, between=None, pieces: list | None = None, omit=()) -> dict:
        now = time.monotonic()
        due = now >= self._next_lints
        start = time.perf_counter()
        frame = capture(hub, between, pieces, omit, with_lints=due, heap=self.heap)
        if due:
            # (the lints run in pieces of their own: count the whole capture)
            spent = sum(pieces) / 1e9 if pieces else time.perf_counter() - start
            self._lints, self._lints_at = frame["lints"], frame["time"]
            self._next_lints = now + max(self.min_interval, spent / self.budget)
        frame["lints"] = self._lints
        frame["lints_age"] = frame["time"] - self._lints_at
        return frame


# -- asyncio Tasks of the host loop --------------------------------------------

def host_asyncio_loop():
    """The asyncio loop this thread's labkit is a guest of (the kernel's),
    else the running one, else None."""
    import labkit.jupyter
    guest = labkit.jupyter.active()
    if guest is not None and getattr(guest, "aio", None) is not None:
        return guest.aio
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def task_rows(loop=None) -> list:
    """One row per unfinished asyncio Task of ``loop`` (default:
    :func:`host_asyncio_loop`): the Tasks of cells using top-level ``await``,
    and any the user created. Call from the loop's thread."""
    loop = loop if loop is not None else host_asyncio_loop()
    if loop is None:
        return []
    current = asyncio.current_task(loop) if loop.is_running() else None
    rows = []
    for task in sorted(asyncio.all_tasks(loop), key=id):
        if task.done():
            continue
        chain = _await_chain(task) if task is not current else _running_chain()
        user = [f for f in chain if _is_user_frame(f)]
        waiter = getattr(task, "_fut_waiter", None)
        if task is current:
            state, waits_on = "running", ""
        elif waiter is not None:
            state, waits_on = "parked", _describe_future(waiter)
        else:
            state, waits_on = "ready", ""
        rows.append(_row(id=id(task), kind="task", name=task.get_name(), state=state,
                         waits_on=waits_on, where=_frame_text(user[-1]) if user else "",
                         spawn_site=_coroutine_site(task), parent=""))
    return rows


def _await_chain(task) -> list:
    """The frames of a Task's coroutine and of what it awaits, outermost
    first (``Task.get_stack`` stops at the outermost coroutine's frame)."""
    frames = []
    coro = task.get_coro()
    while coro is not None and len(frames) < 100:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def _running_chain() -> list:
    """The frames of the running Task: this thread's stack, outermost first."""
    frames = []
    frame = sys._getframe(2)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


_LIBRARY_DIRS = (os.path.dirname(asyncio.__file__) + os.sep,)


def _is_user_frame(frame) -> bool:
    """Not asyncio's, labkit's, the tracer's, or an installed package's."""
    from tracing.introspect import INTERNAL_DIRS
    name = frame.f_code.co_filename
    return not (name.startswith(INTERNAL_DIRS + _LIBRARY_DIRS) or "site-packages" in name)


def _describe_future(future) -> str:
    if isinstance(future, asyncio.Task):
        return f"await {future.get_name()}"
    return f"await {type(future).__name__}"


def _coroutine_site(task) -> str:
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None)
    if code is None:
        return ""
    from tracing.introspect import cell_location
    return cell_location(code.co_filename, code.co_firstlineno)


def _row(**fields) -> dict:
    row = dict.fromkeys(ROW_KEYS)
    row.update(fields)
    return row


# -- what the rows say about each other ------------------------------------------

def _by_name(rows) -> dict:
    by_name = {}
    for row in rows:
        by_name.setdefault(row["name"], row)
    return by_name


def wait_for_edges(frame: dict) -> list:
    """(waiter row, what, other row or None) for each parked row: who waits
    on whom. A join names the greenlet joined (a join chain is a path of
    such edges); a Task awaiting another Task names it; a lock that knows
    its holder (``row["holder"]``) points at the holder's row, with the lock
    in ``what``; anything else (an Event, a Queue, a Semaphore, an fd, a
    timer) has no row to point at and gives ``None``, with the object in
    ``what``."""
    by_name = _by_name(frame["rows"])
    by_id = {row["id"]: row for row in frame["rows"]}
    edges = []
    for row in frame["rows"]:
        if row["state"] != "parked" or not row["waits_on"]:
            continue
        what = row["waits_on"]
        other = None
        if row.get("holder") is not None:
            what, other = row.get("object") or what, by_id.get(row["holder"])
        for prefix in ("join ", "await "):
            if what.startswith(prefix):
                other = by_name.get(what[len(prefix):])
        edges.append((row, what, other))
    return edges


def format_wait_for(frame: dict) -> list[str]:
    """The wait-for graph as lines of text.

    First the chains, one per parked row that no other row waits for:
    ``a --join--> b --Event 0x7f..`` (joins, awaits and held locks followed
    to what the last one waits on: ``a --RLock 0x7f.. held by--> b``).
    Then one line per object with its waiters, its holder if known, and
    who could wake it: ``Event 0x7f.. <- waited on by a, b; nobody else
    refers to it (lost wake-up)`` when a lost wake-up lint says so,
    ``RLock 0x7f.. <- waited on by a; held by b``."""
    edges = {row["id"]: (row.get("object") or what, other, row.get("holder") is not None)
             for row, what, other in wait_for_edges(frame)}
    targets = {other["id"] for what, other, _held in edges.values() if other is not None}
    lines = []
    for row in frame["rows"]:
        if row["id"] not in edges or row["id"] in targets:
            continue   # chains are drawn from their first waiter
        text, seen, current = row["name"], set(), row
        while current["id"] in edges and current["id"] not in seen:
            seen.add(current["id"])
            what, other, held = edges[current["id"]]
            if other is None:
                text += f" --{what}" + (f" held by {current['holder_name']}" if held else "")
                break
            verb = f"{what} held by" if held else what.split(" ", 1)[0]
            text += f" --{verb}--> {other['name']}"
            current = other
        lines.append(text)
    lost = {lint["id"] for lint in frame.get("lints", ()) if lint.get("kind") == "lost wake-up"}
    waiters = collections.defaultdict(list)
    for row in frame["rows"]:
        if row.get("object") and row["state"] == "parked":
            waiters[row["object"]].append(row)
    for obj, rows in waiters.items():
        holder = next((r["holder_name"] for r in rows if r.get("holder_name")), None)
        who = ("nobody else refers to it (lost wake-up)"
               if all(r["id"] in lost for r in rows) else "others refer to it")
        held = f"; held by {holder}" if holder else ""
        lines.append(f"{obj} <- waited on by {', '.join(r['name'] for r in rows)}{held}; {who}")
    return lines


def spawn_tree(frame: dict) -> list[tuple[int, dict]]:
    """(depth, row) in depth-first order: each row under the row that spawned
    it (``parent`` is the spawner's name). Rows whose spawner is not a
    live row (the main greenlet, one that exited, unknown) are roots; so are Tasks."""
    rows = frame["rows"]
    by_name = _by_name(rows)
    children = collections.defaultdict(list)
    roots = []
    for row in rows:
        parent = by_name.get(row.get("parent") or None)
        if parent is not None and parent is not row:
            children[parent["id"]].append(row)
        else:
            roots.append(row)
    out, seen = [], set()
    stack = [(0, row) for row in reversed(roots)]
    while stack:
        depth, row = stack.pop()
        if row["id"] in seen:   # two rows with one name: show each once
            continue
        seen.add(row["id"])
        out.append((depth, row))
        stack += [(depth + 1, child) for child in reversed(children[row["id"]])]
    out += [(0, row) for row in rows if row["id"] not in seen]   # cycles of names
    return out


def stack_of(row: dict, hub=None) -> list[str] | None:
    """The stack of the greenlet or Task ``row`` names, if it is still alive:
    "file:line in function", outermost first. From the hub's thread."""
    if row["kind"] == "task":
        loop = host_asyncio_loop()
        for task in (asyncio.all_tasks(loop) if loop is not None else ()):
            if id(task) == row["id"]:
                return [_frame_text(f) for f in _await_chain(task)]
        return None
    from labkit.util import live_greenlets
    for g in live_greenlets(hub):
        if id(g) == row["id"]:
            frames = []
            frame = g.gr_frame
            while frame is not None:
                frames.append(_frame_text(frame))
                frame = frame.f_back
            return frames[::-1]
    return None


def _frame_text(frame) -> str:
    from tracing.introspect import cell_location
    code = frame.f_code
    return f"{cell_location(code.co_filename, frame.f_lineno)} in {code.co_name}"


def history_of(ring, row_id: int, until: float | None = None) -> list[tuple[float, dict]]:
    """(time, row) for each recorded frame holding ``row_id``, oldest first,
    up to time ``until``: the row's history (state, waits_on, where, times)."""
    out = []
    for frame in ring:
        if until is not None and frame["time"] > until:
            break
        for row in frame["rows"]:
            if row["id"] == row_id:
                out.append((frame["time"], row))
                break
    return out


# -- a recording for the time columns ----------------------------------------------

class BackgroundRecording:
    """A small recorder that runs while nothing else records, so that the
    snapshot's time columns (busy, scheduled, idle, switches) are filled.

    Like the one ``%load_ext labkit`` runs, it steps aside while any other
    trace records (``tracing.start()``, ``%%trace``, a Dashboard) and starts
    again when that one stops (:func:`tracing.recorder.set_background`). If
    something already records when :meth:`start` is called, it does nothing:
    the snapshot uses that recording. Start and stop from the hub's thread.

    ``blocking``: the threshold of a blocking monitor riding on the ring
    (seconds; None for none). With it, a "never yielded" lint names the line
    where the block was first seen, not where the greenlet is afterwards.
    """

    def __init__(self, capacity: int = 1 << 15, blocking: float | None = None):
        self.capacity = capacity
        self.blocking = blocking
        self.recorder = None
        self.wanted = False

    def start(self) -> "BackgroundRecording":
        from tracing.recorder import Recorder, active, set_background
        self.wanted = True
        if active() is None:
            recorder = Recorder(capacity=self.capacity).start()
            if self.blocking is not None:
                from tracing.blocking import BlockingMonitor
                try:
                    BlockingMonitor(self.blocking, report=False, recorder=recorder).start()
                except BaseException:
                    recorder.stop(read=False)
                    raise
            self.recorder = recorder
            set_background(recorder, self._pause, self._resume)
            # The heap search for greenlets spawned before now, here rather
            # than in a console's first refresh (see snapshot.track).
            from tracing.snapshot import track
            track(recorder.hub)
        return self

    def stop(self) -> None:
        self.wanted = False
        self._pause()

    def _pause(self) -> None:
        from tracing.recorder import active, set_background
        recorder, self.recorder = self.recorder, None
        if recorder is not None and recorder.ring is not None:
            if active() is recorder:
                set_background(None)
            recorder.stop(read=False)   # stops its monitor too

    def _resume(self) -> None:
        if self.wanted:
            self.start()


# -- recorded frames as a Perfetto file ------------------------------------------------

def to_perfetto(recorded: list, path) -> None:
    """Write ``recorded`` frames (oldest first) as Chrome-trace JSON that
    ui.perfetto.dev opens: a track per greenlet or Task with one slice per
    stretch of frames in which its state and what it waits on stayed the
    same ("parked: Event", "running"), counters for the loop's numbers, and
    an instant event for each lint as it first appears.

    A sampled picture at the frames' rate, not a trace of every switch
    (that is ``Trace.to_perfetto``, from a recording in the process)."""
    import json
    if not recorded:
        raise ValueError("no frames to write")
    pid = recorded[0].get("pid") or 0
    t0 = recorded[0]["time"]
    events = [{"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
               "args": {"name": f"labkit pid {pid} (console frames)"}}]
    tids: dict = {}
    open_slices: dict = {}   # row id -> (start us, label)
    seen_lints: set = set()

    def close(rid, ts):
        start, label = open_slices.pop(rid)
        events.append({"ph": "X", "pid": pid, "tid": tids[rid], "name": label,
                       "ts": start, "dur": max(ts - start, 0.0)})

    ts = 0.0
    for frame in recorded:
        ts = (frame["time"] - t0) * 1e6
        present = set()
        for row in frame["rows"]:
            rid = row["id"]
            present.add(rid)
            if rid not in tids:
                tids[rid] = len(tids) + 1
                name = row["name"] + (" (task)" if row.get("kind") == "task" else "")
                events.append({"ph": "M", "pid": pid, "tid": tids[rid], "name": "thread_name",
                               "args": {"name": name}})
            label = row["state"] + (f": {row['waits_on']}" if row.get("waits_on") else "")
            current = open_slices.get(rid)
            if current is not None and current[1] != label:
                close(rid, ts)
            if rid not in open_slices:
                open_slices[rid] = (ts, label)
        for rid in [rid for rid in open_slices if rid not in present]:
            close(rid, ts)
        loop = frame.get("loop") or {}
        numbers = {k: loop[k] for k in ("ready", "timers", "fd_waits") if k in loop}
        if numbers:
            events.append({"ph": "C", "pid": pid, "tid": 0, "name": "loop", "ts": ts,
                           "args": numbers})
        for lint in frame.get("lints") or ():
            key = (lint.get("kind"), lint.get("id"), lint.get("line"))
            if key not in seen_lints:
                seen_lints.add(key)
                events.append({"ph": "i", "s": "p", "pid": pid, "tid": 0, "ts": ts,
                               "name": f"{lint.get('kind')}: {lint.get('greenlet')}",
                               "args": {"line": lint.get("line"),
                                        "evidence": lint.get("evidence")}})
    for rid in list(open_slices):
        close(rid, ts)
    with open(path, "w") as f:
        json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)


# -- record & scrub ---------------------------------------------------------------

class FrameRing:
    """The frames of the last ``seconds``, oldest first: what "record" keeps
    and "scrub" walks back through. Bounded also by ``max_frames`` and by
    ``max_rows``, the rows of all frames together (a row is ~0.5 KB: the
    default keeps ~100 MB at most, so 10,000 greenlets get ~20 frames of
    history, not two minutes' worth). The newest frame is always kept.

    Not thread-safe: add and read from one thread (the console's own)."""

    def __init__(self, seconds: float = 60.0, max_frames: int = 1000,
                 max_rows: int = 200_000):
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, not {seconds!r}")
        if not (isinstance(max_frames, int) and max_frames >= 1):
            raise ValueError(f"max_frames must be an int >= 1, not {max_frames!r}")
        if not (isinstance(max_rows, int) and max_rows >= 1):
            raise ValueError(f"max_rows must be an int >= 1, not {max_rows!r}")
        self.seconds = float(seconds)
        self.max_frames = max_frames
        self.max_rows = max_rows
        self._frames: collections.deque = collections.deque()
        self._rows = 0

    def add(self, frame: dict) -> None:
        if self._frames and frame["time"] < self._frames[-1]["time"]:
            raise ValueError("frames must be added in time order")
        self._frames.append(frame)
        self._rows += len(frame["rows"])
        horizon = frame["time"] - self.seconds
        while len(self._frames) > 1 and (len(self._frames) > self.max_frames
                                         or self._frames[0]["time"] < horizon
                                         or self._rows > self.max_rows):
            self._rows -= len(self._frames.popleft()["rows"])

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> dict:
        return self._frames[index]

    def __iter__(self):
        return iter(self._frames)

    def at(self, t: float) -> dict | None:
        """The frame in force at time ``t``: the last one taken at or before
        it (None if ``t`` is before the first)."""
        times = [f["time"] for f in self._frames]
        index = bisect.bisect_right(times, t) - 1
        return self._frames[index] if index >= 0 else None

    def clear(self) -> None:
        self._frames.clear()
        self._rows = 0
