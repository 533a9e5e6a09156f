"""Recording: the C ring, the hooks in the hub, and the side table of strings.

A :class:`Recorder` owns one ring of fixed-size records (loop_c/lk_trace.c)
and, while it runs, plugs it into three places:

- ``_trace`` in each module of ``HOOKED_MODULES`` (the hub, Greenlet, the
  Event/Queue/Semaphore parking paths, sockets): a function that writes one
  record into the ring. The hooks call it once per switch into a greenlet
  (``if _trace is not None: _trace(kind, id(g), why, detail)``). It is
  ``record`` from labkit._lk_trace_py, a CPython builtin that writes without
  releasing the GIL (~60 ns; through cffi, which releases and re-takes the
  GIL around every call, a record cost ~200 ns: see loop_c/lk_trace_py.c);
- ``_resume`` and ``_resume_fd`` in the modules that have them (the
  parking paths of labkit/_park.py): ``resume(g, why, label)`` and
  ``resume_fd(g, why, fd, event)`` (label ``(fd, event)``), the resume
  record -- id, label number and write -- in one C call (from
  labkit._lk_trace_py, bound to the ring and to ``labels``). It is the
  hooks' most frequent record (one per wake-up from a wait). A socket's
  wait (``Loop.io_park``) calls ``resume_fd`` from C itself
  (``labkit._loop.set_io_resumer``);
- ``_tracer`` in the same modules: this object, for the rare events that
  carry strings (:meth:`on_spawn`, :meth:`on_exit`);
- the C loop of the calling thread's hub (``lk_loop_set_trace``), which
  writes "poll entered" and "poll left" itself.

Strings never go into the ring. Names, spawn sites and labels live here,
in the *side table*: ``spawns`` (one entry per spawn, in order; the spawn
record carries the index) and ``labels`` (a label -> small int table for
the reasons a greenlet waited and the types a greenlet returned or raised).
Greenlet ids are ``id(g)``: CPython reuses them once a greenlet is freed, so
the model reads them as "the greenlet most recently spawned with this id".

Contract: one recorder at a time (the hooks are module globals); start and
stop it from the thread whose hub it traces. The opt-in ``settrace`` mode
also records raw ``greenlet.switch()`` calls that bypass the hub, at the
cost of a Python call per switch.

Always-on recording (tracing/flight.py) needs two more things, both here
because they are about the ring and its side table:

- ``bounded=True``: the side table forgets what the ring forgot. Each spawn
  notes the ring's sequence number; now and then, entries of greenlets that
  have exited and whose records have all been overwritten are dropped, so
  memory stays proportional to the ring plus the live greenlets, however
  long the process runs. Spawn indices stay absolute (``spawn_info(i)``);
- :meth:`Recorder.copy_ring`, :meth:`Recorder.frozen_side_table` and
  :func:`recording_from`: the records of the last seconds as a
  :class:`Recording`, taken *while* recording goes on (the copy from the
  loop thread: see its docstring), built in any thread or process.

Fork. A recorder running when the process forks starts afresh in the child
(``os.register_at_fork``): the child's copy of the ring is emptied, its
clock origin and ``pid`` are the child's, and a blocking monitor riding on
it gets a new watchdog thread (threads do not survive a fork). The side
table keeps what it knows about greenlets, which the child inherits alive.
Observers (``add_observer``) get ``after_fork_in_child(recorder)``.
:func:`fork_origin` tells a forked child which process forked it, and when
(for the fork's arrow in a merged trace, tracing/merge.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import os
import site
import struct
import sys
import sysconfig
from time import monotonic_ns as _monotonic_ns
from dataclasses import dataclass, field

import greenlet as _greenlet_module
from greenlet import getcurrent

import labkit._park as _lk_park
import labkit.event as _lk_event
import labkit.greenlet as _lk_greenlet
import labkit.hub as _lk_hub
from labkit._loop import ffi, lib, set_io_resumer

from tracing.lanes import lane_name

try:
    from labkit._lk_trace_py import resumers as _gil_holding_resumers
    from labkit._lk_trace_py import writer as _gil_holding_writer
    from labkit._lk_trace_py import configure_sites as _configure_sites
    from labkit._lk_trace_py import release_sites as _release_sites
    from labkit._lk_trace_py import sites as _sites
    from labkit._lk_trace_py import frame_key
except ImportError:   # built without it (loop_c/build_loop.py by hand): slower
    _gil_holding_writer = _gil_holding_resumers = None
    _configure_sites = _release_sites = _sites = frame_key = None

#: Records the default ring holds: 32 MiB, resident from the start (the C
#: side touches every page when it allocates, so that page faults do not
#: land on the traced program). Overwrite-oldest beyond that.
DEFAULT_CAPACITY = 1 << 20

#: The modules whose ``_trace``/``_tracer`` globals a running recorder sets.
HOOKED_MODULES = (_lk_hub, _lk_park, _lk_greenlet, _lk_event)


def record_function(ring):
    """``record(kind, a, arg, b)`` writing into ``ring`` (an lk_trace *)."""
    if _gil_holding_writer is not None:
        return _gil_holding_writer(int(ffi.cast("uintptr_t", ring)))
    return functools.partial(lib.lk_trace_record, ring)


def resume_functions(ring, labels):
    """``(resume, resume_fd)`` writing into ``ring``: ``resume(g, why,
    label)`` the record ``record(LK_TR_RESUME, id(g), why, labels[label])``,
    ``resume_fd(g, why, fd, event)`` the same as ``resume(g, why, (fd,
    event))``. ``labels`` must only grow (a label's number never changes:
    resume_fd remembers them)."""
    if _gil_holding_resumers is not None:
        return _gil_holding_resumers(int(ffi.cast("uintptr_t", ring)), labels)
    record = record_function(ring)

    def resume(g, why, label):
        record(lib.LK_TR_RESUME, id(g), why, labels[label])

    def resume_fd(g, why, fd, event):
        record(lib.LK_TR_RESUME, id(g), why, labels[fd, event])
    return resume, resume_fd

#: Files that are not user code: a greenlet's resume site (where it resumed,
#: kept per resume while a blocking monitor watches the ring: see
#: loop_c/lk_trace_py.c) ends at the first frame outside them. labkit and
#: tracing, the standard library and installed packages.
NOT_USER_CODE = tuple(sorted(
    {os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep,
     os.path.dirname(os.path.abspath(__file__)) + os.sep}
    | {os.path.abspath(p) + os.sep for p in
       [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"],
        *getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()]
       if p}
    | {"<frozen "}))


def resume_site(ring, seq: int):
    """The resume site the ring kept for resume record ``seq``: ``(seq,
    greenlet id, ((code, lasti, key), ...))``, innermost frame (the park
    function) first and the user frame it was called from last; None if it
    kept none for that record (no stall threshold set, or it has moved on).
    ``frame_key(frame)`` is a live frame's key. Any thread (the GIL guards
    the sites)."""
    if _sites is None or ring is None:
        return None
    return _sites(int(ffi.cast("uintptr_t", ring)), seq)

_RECORD = struct.Struct("=qIIqq")   # lk_trace_entry: ts_ns, kind, arg, a, b
assert _RECORD.size == ffi.sizeof("lk_trace_entry")

_INTERNAL_DIRS = (
    os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
)

_active: "Recorder | None" = None
#: The recorder that records in the background and steps aside for any
#: other (the blocking detector %load_ext labkit turns on), as
#: (recorder, pause, resume): pause() stops it, resume() starts a new one.
_background: "tuple | None" = None


class _Labels(dict):
    """hashable label -> small int, numbering new labels on first use.

    The hooks' ``resume`` (loop_c/lk_trace_py.c) looks labels up in it
    from C: only a new label runs Python code (``__missing__``). None is
    always 0 ("no label")."""

    def __missing__(self, key):
        number = self[key] = len(self)
        return number


@dataclass
class SpawnInfo:
    """What the side table knows about one spawn (one greenlet incarnation)."""
    gid: int                    #: id(g) at the time
    name: str | None            #: filled at exit or at stop, when it is final
    parent: int                 #: id() of the spawning greenlet
    site: str                   #: "file.py:12" of the user code that spawned it
    function: str               #: what it runs
    exit: str | None = None     #: "value int", "raised ValueError"
    ref: object = field(default=None, repr=False)   #: the greenlet, until exit
    spawned_ns: int = -1        #: when it was spawned (bounded mode; lk_now_ns clock)
    exited_ns: int = -1         #: ... and when it exited
    path: str | None = None     #: the full file name of ``site`` (a cell's, in IPython)


@dataclass
class Recording:
    """What a stopped recorder hands to :class:`tracing.model.Trace`."""
    records: list               #: (ts_ns, kind, arg, a, b), oldest first
    dropped: int                #: records overwritten before they were read
    spawns: list                #: SpawnInfo, indexed by the spawn record's arg
    names: dict                 #: id -> name for greenlets not spawned while tracing
    labels: dict                #: label id -> label
    hub_id: int
    main_id: int
    start_ns: int
    stop_ns: int
    blocks: list                #: tracing.model.Block, from the blocking monitor
    pid: int = 0                #: the process that recorded it


def _user_frame(frame):
    """The innermost frame outside labkit/ and tracing/, or None."""
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame = frame.f_back
    return frame


def user_site(frame) -> str:
    """"file.py:12" of the innermost frame outside labkit/ and tracing/."""
    frame = _user_frame(frame)
    if frame is None:
        return "?"
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _function_name(g) -> str:
    run = getattr(g, "_run", None) or getattr(g, "run", None)
    while isinstance(run, functools.partial):   # the function, not the partial's repr
        run = run.func
    return getattr(run, "__qualname__", None) or repr(run)


class Recorder:
    """One recording session. See the module docstring for the contract."""

    #: bounded mode: look for side-table entries to drop every this many spawns
    PRUNE_EVERY = 4096

    def __init__(self, capacity: int = DEFAULT_CAPACITY, settrace: bool = False,
                 bounded: bool = False):
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2, not {capacity!r}")
        self.capacity = capacity
        self.settrace = settrace
        self.bounded = bool(bounded)
        self.pid = os.getpid()
        self.labels = _Labels({None: 0})
        # (base, list): SpawnInfo of spawn index ``base + i`` is list[i]. One
        # attribute, so that a bounded recorder's pruning replaces both at
        # once for readers in other threads (spawn_info).
        self._spawn_window: tuple[int, list[SpawnInfo]] = (0, [])
        self._old_live: dict[int, SpawnInfo] = {}   # pruned from spawns, still alive
        self._observers: list = []
        self.blocks: list = []          # appended by the blocking monitor
        self.monitor = None             # a BlockingMonitor riding on this ring
        self.ring = None
        self.record = None
        self.resume = self.resume_fd = None
        self._names: dict[int, str] = {}
        self._by_id: dict[int, int] = {}   # id -> index of its latest spawn
        self._hub = None
        self._old_settrace = None

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "Recorder":
        global _active
        self._resume_background = None
        if _active is not None:
            self._resume_background = _step_aside()
            if self._resume_background is None:
                raise RuntimeError("a trace is already being recorded; stop it first")
        ring = lib.lk_trace_new(self.capacity)
        if ring == ffi.NULL:
            raise MemoryError(f"cannot allocate a trace ring of {self.capacity} records")
        self.ring = ring
        if _configure_sites is not None:
            _configure_sites(int(ffi.cast("uintptr_t", ring)), NOT_USER_CODE)
        self.record = record_function(ring)
        self.resume, self.resume_fd = resume_functions(ring, self.labels)
        self._hub = hub = _lk_hub.get_hub()
        self._names[id(hub)] = "hub"
        self._names[id(hub.parent)] = "main"
        current = getcurrent()
        self._names.setdefault(id(current), _function_name(current))
        self.start_ns = lib.lk_now_ns()
        self.pid = os.getpid()
        self.record(lib.LK_TR_MARK, id(current), 0, 0)
        _active = self
        for module in HOOKED_MODULES:
            module._tracer = self
            if hasattr(module, "_resume"):
                module._resume = self.resume
                module._resume_fd = self.resume_fd
            module._trace = self.record
        set_io_resumer(self.resume_fd)
        hub.loop.set_trace_ring(ring)
        if self.settrace:
            self._old_settrace = _greenlet_module.settrace(self._on_raw_switch)
        return self

    def stop(self, read: bool = True) -> Recording | None:
        """Stop recording, read the ring (unless ``read`` is false), free it."""
        global _active
        if self.ring is None:
            raise RuntimeError("this recorder is not running")
        self.record(lib.LK_TR_MARK, id(getcurrent()), 1, 0)
        self.stop_ns = lib.lk_now_ns()
        if self.monitor is not None:
            self.monitor.stop()   # sees the block (if any) the mark just ended
        for module in HOOKED_MODULES:
            module._trace = None
            if hasattr(module, "_resume"):
                module._resume = module._resume_fd = None
            module._tracer = None
        set_io_resumer(None)
        if self.settrace:
            _greenlet_module.settrace(self._old_settrace)
        if not self._hub.loop.closed:
            self._hub.loop.set_trace_ring(None)
        _active = None
        records, dropped = self._read_ring() if read else ([], 0)
        if _release_sites is not None:
            _release_sites(int(ffi.cast("uintptr_t", self.ring)))
        lib.lk_trace_free(self.ring)
        self.ring = self.record = self.resume = self.resume_fd = None
        resume, self._resume_background = getattr(self, "_resume_background", None), None
        if resume is not None:
            resume()   # the background recorder this one pushed aside
        if not read:
            return None
        self._resolve_names(records)
        return Recording(
            records=records, dropped=dropped,
            spawns=_SpawnTable(self) if self.bounded else self.spawns,
            names=dict(self._names),
            labels={number: label for label, number in self.labels.items()},
            hub_id=id(self._hub), main_id=id(self._hub.parent),
            start_ns=self.start_ns, stop_ns=self.stop_ns, blocks=list(self.blocks),
            pid=self.pid)

    def copy_ring(self) -> bytes:
        """The ring's records as raw bytes (``_RECORD`` each), oldest first,
        while recording goes on.

        Call it from the thread that records (the loop thread): the ring's
        writers are then this thread's own, between two records, and the
        copy is exact. From another thread the newest record may still be
        being written (a poll record, which the C loop writes without the
        GIL), and the oldest may be overwritten during the copy: keep only
        records inside a time window that ends before the copy began
        (:func:`recording_from` does, given its bounds)."""
        if self.ring is None:
            raise RuntimeError("this recorder is not running")
        count = lib.lk_trace_count(self.ring)
        wanted = max(1, min(count, lib.lk_trace_capacity(self.ring)))
        out = ffi.new("lk_trace_entry[]", wanted)
        n = lib.lk_trace_read(self.ring, out, wanted, 0, ffi.NULL)
        return bytes(ffi.buffer(out, n * _RECORD.size))

    def frozen_side_table(self) -> dict:
        """What :func:`recording_from` needs besides the records, as plain
        picklable data (for a dump converted in another process): names of
        every greenlet the table knows (resolved now), its spawn entries
        without their greenlets, labels, blocks, the recorder's identity.
        Any thread."""
        base, spawns = self._spawn_window
        entries = {base + i: info for i, info in enumerate(list(spawns))}
        entries.update(dict(self._old_live))
        frozen = {index: dataclasses.replace(
            info, name=info.name or self.name_of(info.gid), ref=None)
            for index, info in entries.items()}
        names = dict(self._names)
        for gid in list(self._by_id):
            names.setdefault(gid, self.name_of(gid))
        return {"names": names, "spawns": frozen, "spawn_count": base + len(spawns),
                "labels": {number: label for label, number in list(self.labels.items())},
                "blocks": list(self.blocks), "hub_id": id(self._hub),
                "main_id": id(self._hub.parent), "start_ns": self.start_ns, "pid": self.pid}

    def _read_ring(self):
        count = lib.lk_trace_count(self.ring)
        wanted = min(count, lib.lk_trace_capacity(self.ring))
        out = ffi.new("lk_trace_entry[]", max(1, wanted))
        n = lib.lk_trace_read(self.ring, out, wanted, 0, ffi.NULL)
        raw = ffi.buffer(out, n * _RECORD.size)
        return list(_RECORD.iter_unpack(raw)), lib.lk_trace_dropped(self.ring)

    def _resolve_names(self, records) -> None:
        for info in [*self.spawns, *self._old_live.values()]:
            if info.name is None and info.ref is not None:
                info.name = _name_of(info.ref)
            info.ref = None
        # Greenlets that existed before the trace started: find them once.
        known = {info.gid for info in self.spawns} | set(self._names)
        unknown = {a for _, kind, _, a, _ in records
                   if kind == lib.LK_TR_RESUME and a not in known}
        if unknown:
            for obj in gc.get_objects():
                if isinstance(obj, _greenlet_module.greenlet) and id(obj) in unknown:
                    self._names[id(obj)] = shown_name(obj)

    def name_of(self, gid: int) -> str:
        """The name of the greenlet with this id now (any thread may ask)."""
        index = self._by_id.get(gid)
        info = self.spawn_info(index) if index is not None else None
        if info is not None:
            ref = info.ref
            return info.name or (_name_of(ref) if ref is not None else f"greenlet-{gid:#x}")
        return self._names.get(gid) or f"greenlet-{gid:#x}"

    @property
    def spawns(self) -> list[SpawnInfo]:
        """SpawnInfo per spawn, in order: spawn record ``arg`` is
        ``spawns[arg - spawn_base]`` (spawn_base is 0 unless bounded)."""
        return self._spawn_window[1]

    @property
    def spawn_base(self) -> int:
        return self._spawn_window[0]

    @property
    def hub(self):
        """The hub this recorder records (read-only)."""
        return self._hub

    def spawn_info(self, index: int) -> SpawnInfo | None:
        """The side table's entry for spawn record ``index`` (its ``arg``),
        or None if a bounded recorder has forgotten it. Any thread."""
        base, spawns = self._spawn_window
        i = index - base
        if i >= 0:
            try:
                return spawns[i]
            except IndexError:
                return None
        return self._old_live.get(index)

    def add_observer(self, observer) -> None:
        """Call ``observer.on_spawn(g, info)`` and ``observer.on_exit(g, info)``
        (``info`` the SpawnInfo, or None for a greenlet spawned before) from
        the hooks, in the greenlet that spawns or exits; an observer that
        raises is removed and the error printed. For bridges to other
        tracers (tracing/otel.py); ``remove_observer`` undoes it."""
        self._observers.append(observer)

    def remove_observer(self, observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _tell_observers(self, method: str, g, info) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, method)(g, info)
            except Exception:
                import traceback
                traceback.print_exc()
                self.remove_observer(observer)

    # -- bounded side table ------------------------------------------------
    def _prune(self) -> None:
        """Drop the entries the ring no longer needs (bounded mode): those of
        greenlets that exited before the ring's oldest record was written."""
        oldest_record = ffi.new("lk_trace_entry[]", 1)
        if lib.lk_trace_read(self.ring, oldest_record, 1, 0, ffi.NULL) != 1:
            return
        oldest = oldest_record[0].ts_ns
        base, spawns = self._spawn_window
        keep_from = 0
        for i, info in enumerate(spawns):   # in spawn order: spawned_ns grows
            if info.spawned_ns >= oldest:
                break
            if info.ref is not None or info.exited_ns >= oldest:
                self._old_live[base + i] = info   # still asked for
            keep_from = i + 1
        if keep_from:
            self._spawn_window = (base + keep_from, spawns[keep_from:])
        for index, info in list(self._old_live.items()):
            if info.ref is None and info.exited_ns < oldest:
                del self._old_live[index]

    # -- fork ---------------------------------------------------------------
    def _restart_in_child(self) -> None:
        """After fork, in the child: start afresh (see the module docstring)."""
        lib.lk_trace_clear(self.ring)
        self.pid = os.getpid()
        self.start_ns = lib.lk_now_ns()
        self.blocks = []
        hub = _lk_hub.get_hub()
        if hub is not self._hub and not self._hub.loop.closed:
            self._hub.loop.set_trace_ring(None)
        self._hub = hub
        self._names[id(hub)] = "hub"
        self._names[id(hub.parent)] = "main"
        if not hub.loop.closed:
            hub.loop.set_trace_ring(self.ring)
        self.record(lib.LK_TR_MARK, id(getcurrent()), 0, 0)
        old = self.monitor
        if old is not None:
            # a new watchdog of the same kind (its class: blocking imports us)
            self.monitor = None
            self.monitor = type(old)(
                old.threshold, callback=old.callback, report=old.report, recorder=self,
                stuck_after=old.stuck_after, on_stuck=old.on_stuck).start()
        for observer in list(self._observers):
            hook = getattr(observer, "after_fork_in_child", None)
            if hook is not None:
                try:
                    hook(self)
                except Exception:
                    import traceback
                    traceback.print_exc()

    # -- hooks (called by labkit.hub and labkit.greenlet) ------------------
    def on_spawn(self, g) -> None:
        """A greenlet was created (Greenlet.__init__, spawn_raw)."""
        parent = getcurrent()
        frame = _user_frame(sys._getframe(1))
        path = frame.f_code.co_filename if frame is not None else None
        site = f"{os.path.basename(path)}:{frame.f_lineno}" if frame is not None else "?"
        info = SpawnInfo(gid=id(g), name=None, parent=id(parent), site=site,
                         function=_function_name(g), ref=g, path=path)
        if self.bounded:
            # Python's monotonic clock is the ring's (CLOCK_MONOTONIC), and
            # reading it here keeps the GIL (a cffi call would release it).
            info.spawned_ns = _monotonic_ns()
            if len(self.spawns) >= self.PRUNE_EVERY and \
                    (self.spawn_base + len(self.spawns)) % self.PRUNE_EVERY == 0:
                self._prune()
        index = self.spawn_base + len(self.spawns)
        self.spawns.append(info)
        self._by_id[id(g)] = index
        self.record(lib.LK_TR_SPAWN, id(g), index, id(parent))
        if self._observers:
            self._tell_observers("on_spawn", g, info)

    def on_exit(self, g) -> None:
        """A Greenlet's run() is about to return (value or exception)."""
        exc_info = getattr(g, "_exc_info", None)
        if exc_info is not None:
            outcome, raised = f"raised {exc_info[0].__name__}", 1
        else:
            outcome, raised = f"value {type(getattr(g, 'value', None)).__name__}", 0
        index = self._by_id.get(id(g))
        info = self.spawn_info(index) if index is not None else None
        if info is not None and info.ref is g:
            info.exit = outcome
            info.name = _name_of(g)
            info.ref = None   # do not keep dead greenlets alive
            if self.bounded:
                info.exited_ns = _monotonic_ns()   # forgotten once the ring is past it
        else:
            info = None
        if self._observers:
            self._tell_observers("on_exit", g, info)
        self.record(lib.LK_TR_EXIT, id(g), raised, self.labels[outcome])

    def _on_raw_switch(self, event, args) -> None:
        """greenlet.settrace callback: record switches that bypass the hub."""
        if event in ("switch", "throw"):
            origin, target = args
            if not isinstance(origin, _lk_hub.Hub) and not isinstance(target, _lk_hub.Hub):
                if id(target) not in self._names and id(target) not in self._by_id:
                    self._names[id(target)] = _name_of(target)
                self.record(lib.LK_TR_RESUME, id(target), lib.LK_WHY_SWITCH, id(origin))
        if self._old_settrace is not None:
            self._old_settrace(event, args)


def recording_from(side: dict, records: list, start_ns: int, stop_ns: int) -> Recording:
    """A Recording of ``records`` (within [start_ns, stop_ns]) from a
    :meth:`Recorder.frozen_side_table` (which may come from another process:
    the flight recorder converts its dumps in a child). Records older than
    the first one are dropped (a slot half-written during a copy from
    another thread), and so are records before ``start_ns``; the blocks come
    along, their start made relative to ``start_ns``."""
    start_ns = max(start_ns, side["start_ns"])
    first_ts = records[0][0] if records else start_ns
    records = [r for r in records if r[0] >= first_ts and r[0] >= start_ns]
    offset = (start_ns - side["start_ns"]) / 1e9
    blocks = [dataclasses.replace(b, start=b.start - offset) for b in side["blocks"]
              if b.start + b.duration >= offset]
    return Recording(
        records=records, dropped=0,
        spawns=_FrozenSpawns(side["spawns"], side["spawn_count"]), names=side["names"],
        labels=side["labels"], hub_id=side["hub_id"], main_id=side["main_id"],
        start_ns=start_ns, stop_ns=stop_ns, blocks=blocks, pid=side["pid"])


class _FrozenSpawns:
    """Spawn entries by absolute index, as the model reads them (picklable)."""

    def __init__(self, entries: dict, count: int):
        self._entries = entries
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int):
        return self._entries.get(index)


class _SpawnTable:
    """A recorder's spawns as the model reads them (``table[arg]``, with
    ``arg < len(table)``): absolute indices, None where a bounded recorder
    forgot, names of live greenlets resolved when asked. Any thread."""

    def __init__(self, recorder: Recorder):
        self._recorder = recorder
        self._len = recorder.spawn_base + len(recorder.spawns)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int):
        info = self._recorder.spawn_info(index)
        if info is None:
            return None
        return dataclasses.replace(info, name=info.name or self._recorder.name_of(info.gid),
                                   ref=None)


def _name_of(g) -> str:
    if isinstance(g, _lk_hub.Hub):
        return "hub"
    if g.parent is None:
        return "main"
    name = getattr(g, "name", None)   # labkit/gevent Greenlet
    if isinstance(name, str):
        return name
    return _function_name(g)


def shown_name(g) -> str:
    """The name a trace shows for the live greenlet ``g`` that it did not see
    spawned: its own, or for a Greenlet nobody named, its function's
    ("worker #3", as :func:`tracing.lanes.lane_name` names the others)."""
    name = _name_of(g)
    return lane_name(name, _function_name(g)) or name


def active() -> Recorder | None:
    """The recorder running now, if any."""
    return _active


def set_background(recorder: Recorder | None, pause=None, resume=None) -> None:
    """Declare ``recorder`` (running) a background recorder: starting any
    other calls ``pause()`` first, and stopping that one calls ``resume()``.
    ``set_background(None)`` withdraws it."""
    global _background
    _background = None if recorder is None else (recorder, pause, resume)


@contextlib.contextmanager
def background_paused():
    """Inside the with block, the background recorder (if any) is paused."""
    resume = _step_aside()
    try:
        yield
    finally:
        if resume is not None:
            resume()


def _step_aside():
    """Pause the background recorder if it is the active one; its resume, or None."""
    if _background is None or _active is not _background[0]:
        return None
    _recorder, pause, resume = _background
    pause()
    return resume if _active is None else None


#: lk_now_ns when this process last began a fork (set in the parent, inherited).
_fork_started_ns: int | None = None
#: {"pid": parent pid, "ns": lk_now_ns when it began the fork} in a forked
#: child (see :func:`fork_origin`); None in a process that was not forked.
_fork_origin: dict | None = None


def fork_origin() -> dict | None:
    """Where this process came from, if ``os.fork()`` made it (with the
    interpreter: os.fork, multiprocessing's "fork" start method, a forking
    server): ``{"pid": the parent's pid, "ns": when the parent began the
    fork, on the lk_now_ns clock (CLOCK_MONOTONIC, which the two share)}``;
    None otherwise (or after an exec). The parent was running the greenlet
    that forked at that instant, so tracing/merge.py draws the fork as an
    arrow from that greenlet's slice in the parent's trace to the child's
    first slice. Set whether or not anything recorded."""
    return None if _fork_origin is None else dict(_fork_origin)


def _before_fork() -> None:
    global _fork_started_ns
    _fork_started_ns = lib.lk_now_ns()


def _restart_in_child() -> None:
    global _fork_origin
    parent = os.getppid()
    _fork_origin = {"pid": parent, "ns": _fork_started_ns if _fork_started_ns is not None
                    else lib.lk_now_ns()}
    if _active is not None and _active.ring is not None:
        _active._restart_in_child()


os.register_at_fork(before=_before_fork, after_in_child=_restart_in_child)


def mark_host_wait() -> None:
    """Record that the thread goes back to the kernel's own loop (post_execute).

    After a cell, the main greenlet returns to the kernel's asyncio loop,
    which may sit in select() for a while before it ticks the hub again. The
    last record in the ring is the main greenlet's, so without this mark the
    blocking monitor would count the kernel's idle time as the main greenlet
    blocking the loop. A "host" record says: from here on, waiting is the
    host's business (the same record the hub writes at the end of a tick).
    """
    recorder = active()
    if recorder is not None and recorder.record is not None:
        recorder.record(lib.LK_TR_HOST, 0, 0, 0)
