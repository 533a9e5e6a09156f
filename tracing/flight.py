"""The flight recorder: the trace ring always on, written to a file when it matters.

Go's ``runtime/trace`` FlightRecorder is the model: record all the time into
a ring, keep only the last few seconds, and write them out when something
interesting happened -- here, when asked (:meth:`FlightRecorder.dump`), on a
signal (opt-in), or by itself when the loop was blocked for longer than a
threshold. The file is Perfetto/Chrome JSON (tracing/merge.py's per-process
form: open it in ui.perfetto.dev, or merge several workers' files), holding
``before`` seconds before the trigger and ``after`` seconds after it.

    from tracing import flight
    flight.start("/var/tmp/traces", threshold=0.2, signal="USR2")
    ...
    flight.dump()                     # the last 5 s, now -> its path

or, without code, ``LABKIT_FLIGHT`` read by :func:`start_from_env` (the
gunicorn worker calls it)::

    LABKIT_FLIGHT=/var/tmp/traces,threshold=0.2,before=5,after=1,signal=USR2

(the first item is the directory; ``LABKIT_FLIGHT=1`` means the current one;
also ``capacity=`` records, ``max_dumps=`` automatic dumps per process,
``exit=1`` a dump when the process ends (the gunicorn worker's shut-down),
``report=0`` no line on stderr per dump).

What it costs. The ring is the tracer's (tracing/recorder.py): one 32-byte
record per switch into a greenlet, per hub pass and per poll, written by C
code without a Python frame; spawns and exits add a Python call each. The
side table is *bounded*: it forgets greenlets whose records the ring has
overwritten. With a threshold, the blocking monitor's watchdog thread wakes
once per half threshold while the loop makes progress (at most every 250 ms;
every ``threshold / 4`` while it samples a block) to read a few counters. The
README states the measured cost (``python -m labkit bench --echo --http``,
the ``flight`` rows).

Who does what, and where:

- the loop thread records, and copies the ring when a dump is due (a copy
  of raw bytes: a few ms for the default 8 MiB ring);
- a dump thread (one at a time) waits the ``after`` seconds, asks the loop
  thread for the copy (``run_callback_threadsafe``; if the loop does not
  answer within a second, it copies itself, which may lose the newest
  record), and hands it with a frozen copy of the side table to a child
  process (``python -m tracing.flight``, through a pipe) that builds the
  Trace and writes the file. The conversion is seconds of CPU and millions
  of objects for a full ring: in this process it would hold the GIL and the
  garbage collector for hundreds of ms at a time (measured: 292 ms of loop
  lag while converting 220,000 records), in a child it costs the loop
  nothing but a share of the CPU;
- the watchdog thread (tracing/blocking.py) finds blocks and starts dumps.

Contract: one flight recorder per process (:func:`start` makes it; it steps
aside for ``tracing.trace()`` and resumes after, as a *background* recorder);
start and stop it from the thread whose hub it records. It survives
``fork()``: the child records afresh into its own copy of the ring, with
its own pid in file names (see tracing/recorder.py).
"""
from __future__ import annotations

import os
import signal as _signal
import sys
import threading
import time

from labkit import _native
from labkit._loop import lib

from tracing import merge as _merge
from tracing.recorder import _RECORD, Recorder, active, fork_origin, set_background

#: Environment variable read by :func:`start_from_env`.
ENV = "LABKIT_FLIGHT"
#: Records in a flight recorder's ring: 8 MiB, seconds to tens of seconds
#: of a busy server (each switch writes one to three records).
DEFAULT_CAPACITY = 1 << 18
DEFAULT_BEFORE = 5.0
DEFAULT_AFTER = 1.0
#: Automatic dumps (blocks, signals) per process, at most: a server that
#: blocks every second must not fill the disk.
DEFAULT_MAX_DUMPS = 10
#: How long the dump thread waits for the loop thread to copy the ring.
LOOP_COPY_TIMEOUT = 1.0

_current: "FlightRecorder | None" = None


class FlightRecorder:
    """An always-on recorder; see the module docstring.

    ``directory``: where dumps go (``labkit-flight-<pid>-<n>-<reason>.json``).
    ``threshold``: seconds; a block at least this long is dumped by itself
    (None: never). ``before``/``after``: seconds kept around the trigger.
    ``capacity``: records in the ring. ``signal``: a signal name or number
    whose delivery dumps (None: none; installing needs the main thread).
    ``max_dumps``: automatic dumps per process. ``on_dump(path, reason)``:
    called (from the dump thread) after each file is written.
    """

    def __init__(self, directory=".", threshold: float | None = None,
                 before: float = DEFAULT_BEFORE, after: float = DEFAULT_AFTER,
                 capacity: int = DEFAULT_CAPACITY, signal=None,
                 max_dumps: int = DEFAULT_MAX_DUMPS, report: bool = True,
                 dump_at_exit: bool = False, on_dump=None):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path, not {type(directory).__name__}")
        if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 0):
            raise ValueError(f"threshold must be a number of seconds > 0 or None, "
                             f"not {threshold!r}")
        for name, value in (("before", before), ("after", after)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1024:
            raise ValueError(f"capacity must be an int >= 1024, not {capacity!r}")
        if isinstance(max_dumps, bool) or not isinstance(max_dumps, int) or max_dumps < 0:
            raise ValueError(f"max_dumps must be an int >= 0, not {max_dumps!r}")
        if on_dump is not None and not callable(on_dump):
            raise TypeError(f"on_dump must be callable, not {on_dump!r}")
        self.directory = os.fspath(directory)
        self.threshold = threshold
        self.before = float(before)
        self.after = float(after)
        self.capacity = capacity
        self.signal = _signal_number(signal) if signal is not None else None
        self.max_dumps = max_dumps
        self.report = report
        self.dump_at_exit = dump_at_exit
        self.on_dump = on_dump
        #: paths written so far by this process, oldest first
        self.dumps: list[str] = []
        #: automatic dumps not written because max_dumps was reached or one ran
        self.skipped = 0
        self.recorder: Recorder | None = None
        self.monitor = None
        self._old_handler = None
        self._observers: list = []   # kept across pauses (add_observer)
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._lock = threading.Lock()      # one dump thread at a time
        self._busy = False
        self._auto = 0
        self._serial = 0
        self._dump_thread = None

    # -- lifecycle (loop thread) -------------------------------------------
    @property
    def running(self) -> bool:
        return self.recorder is not None and self.recorder.ring is not None

    def start(self) -> "FlightRecorder":
        global _current
        if _current is not None and _current is not self:
            raise RuntimeError("a flight recorder is already running; stop it first")
        if self.running:
            return self
        os.makedirs(self.directory, exist_ok=True)
        self._start_recording()
        set_background(self.recorder, self._pause, self._resume)
        if self.signal is not None:
            self._old_handler = _signal.signal(self.signal, self._on_signal)
        _current = self
        return self

    def stop(self) -> None:
        """Stop recording (a dump in progress still finishes)."""
        global _current
        if self.signal is not None and self._old_handler is not None:
            try:
                _signal.signal(self.signal, self._old_handler)
            except (ValueError, OSError):
                pass
            self._old_handler = None
        set_background(None)
        if self.running and active() is self.recorder:
            self.recorder.stop(read=False)   # stops the monitor too
        self.recorder = self.monitor = None
        if _current is self:
            _current = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _start_recording(self) -> None:
        self.recorder = Recorder(capacity=self.capacity, bounded=True).start()
        self.recorder.add_observer(self)
        for observer in self._observers:
            self.recorder.add_observer(observer)
        self.monitor = None
        if self.threshold is not None:
            from tracing.blocking import BlockingMonitor
            try:
                self.monitor = BlockingMonitor(self.threshold, callback=self._on_block,
                                               report=self.report,
                                               recorder=self.recorder).start()
            except BaseException:
                self.recorder.stop(read=False)
                raise

    def _pause(self) -> None:        # another recorder starts (tracing.trace())
        self.recorder.stop(read=False)

    def _resume(self) -> None:       # ... and stopped: record again
        if _current is not self:
            return   # stopped while paused
        self._start_recording()
        set_background(self.recorder, self._pause, self._resume)

    def add_observer(self, observer) -> None:
        """Recorder.add_observer on this recorder's ring, now and after every
        pause (a fresh Recorder each time): for bridges (tracing/otel.py)."""
        self._observers.append(observer)
        if self.running:
            self.recorder.add_observer(observer)

    def remove_observer(self, observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)
        if self.recorder is not None:
            self.recorder.remove_observer(observer)

    # observer hooks of the recorder (tracing/recorder.py)
    def on_spawn(self, g, info) -> None:
        pass

    def on_exit(self, g, info) -> None:
        pass

    def after_fork_in_child(self, recorder) -> None:
        """The child records afresh (the recorder did that); no dump thread,
        lock or count of the parent's applies here."""
        self._reset_process_state()
        self.dumps = []
        self.monitor = recorder.monitor

    # -- dumping ------------------------------------------------------------
    def dump(self, path=None, before: float | None = None, after: float = 0.0,
             reason: str = "request") -> str:
        """Write the last ``before`` seconds (default: the recorder's) up to
        ``after`` seconds from now, and return the file's path.

        From a greenlet of the recorded hub, waiting ``after`` and the
        conversion park only the caller (the loop goes on); from another
        thread, the call blocks that thread. Not from the hub itself.
        """
        if not self.running:
            raise RuntimeError("the flight recorder is not running")
        before = self.before if before is None else before
        if not isinstance(before, (int, float)) or before < 0:
            raise ValueError(f"before must be a number of seconds >= 0, not {before!r}")
        if not isinstance(after, (int, float)) or after < 0:
            raise ValueError(f"after must be a number of seconds >= 0, not {after!r}")
        recorder = self.recorder
        hub = recorder.hub
        in_loop_thread = _native.get_ident() == hub.thread_ident
        if in_loop_thread:
            from greenlet import getcurrent
            if getcurrent() is hub:
                raise RuntimeError("dump() cannot wait in the hub; call it from a greenlet")
        start_ns = lib.lk_now_ns() - int(before * 1e9)
        if after:
            if in_loop_thread:
                import labkit
                labkit.sleep(after)
            else:
                time.sleep(after)
        if in_loop_thread:   # copy here (exact); wait for the converter in a thread
            data = self._copy(recorder)
            return hub.threadpool.apply(
                self._write, (recorder, data, start_ns, lib.lk_now_ns(), path, reason))
        data = self._copy_from_loop(recorder)
        return self._write(recorder, data, start_ns, lib.lk_now_ns(), path, reason)

    def dump_later(self, reason: str, trigger_start_ns: int | None = None,
                   trigger_end_ns: int | None = None) -> bool:
        """Start a dump in the dump thread: ``before`` seconds before the
        trigger's start to ``after`` seconds after its end (default: now).
        Any thread. False if one is in progress or max_dumps is reached."""
        with self._lock:
            if self._busy or self._auto >= self.max_dumps or not self.running:
                self.skipped += 1
                return False
            self._busy = True
            self._auto += 1
        now = lib.lk_now_ns()
        start_ns = (trigger_start_ns if trigger_start_ns is not None else now) \
            - int(self.before * 1e9)
        end_ns = (trigger_end_ns if trigger_end_ns is not None else now) + int(self.after * 1e9)
        self._dump_thread = _native.start_thread(
            self._dump_in_thread, (self.recorder, start_ns, end_ns, reason),
            name="labkit-flight-dump")
        return True

    def wait_for_dumps(self, timeout: float = 30.0) -> bool:
        """Wait until no dump is in progress (tests, shutdown). Any thread but
        the loop's while its dump needs the loop: there it waits cooperatively."""
        from greenlet import getcurrent
        hub = self.recorder.hub if self.recorder is not None else None
        cooperative = hub is not None and getcurrent() is not hub and \
            _native.get_ident() == hub.thread_ident
        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            if cooperative:   # the dump may need this loop to copy the ring
                import labkit
                labkit.sleep(0.01)
            else:
                time.sleep(0.01)
        return not self._busy

    def _dump_in_thread(self, recorder, start_ns: int, end_ns: int, reason: str) -> None:
        try:
            delay = (end_ns - lib.lk_now_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            if recorder.ring is None:
                return   # stopped meanwhile: its ring is gone
            data = self._copy_from_loop(recorder)
            self._write(recorder, data, start_ns, lib.lk_now_ns(), None, reason)
        except Exception:
            import traceback
            traceback.print_exc()
        finally:
            self._busy = False

    def _copy(self, recorder) -> bytes:
        """The ring's records as raw bytes, oldest first (loop thread: exact)."""
        return recorder.copy_ring()

    def _copy_from_loop(self, recorder) -> bytes:
        """Ask the loop thread to copy the ring; copy here if it does not answer."""
        box = []
        done = threading.Event()

        def copy():
            if recorder.ring is not None:
                box.append(recorder.copy_ring())
            done.set()

        try:
            recorder.hub.loop.run_callback_threadsafe(copy)
        except Exception:
            done.set()
        if not done.wait(LOOP_COPY_TIMEOUT) or not box:
            if recorder.ring is None:
                raise RuntimeError("the flight recorder stopped before its dump")
            return recorder.copy_ring()
        return box[0]

    def _write(self, recorder, data: bytes, start_ns: int, stop_ns: int, path,
               reason: str) -> str:
        """Have a child process turn the copied ring into the file (see
        :func:`_convert`); wait for it. Not in the loop thread: it blocks."""
        if path is None:
            with self._lock:
                self._serial += 1
                serial = self._serial
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in reason)
            path = os.path.join(self.directory,
                                f"labkit-flight-{recorder.pid}-{serial}-{safe}.json")
        payload = {"data": data, "start_ns": start_ns, "stop_ns": stop_ns,
                   "side": recorder.frozen_side_table(), "path": os.fspath(path),
                   "reason": reason, "forked_from": fork_origin(),
                   "extra_events": _merge.source_events(recorder.pid, start_ns, stop_ns)}
        _run_converter(payload)
        self.dumps.append(str(path))
        if self.report:
            try:
                print(f"labkit: flight recorder wrote {path} ({reason}, "
                      f"{(stop_ns - max(start_ns, recorder.start_ns)) / 1e9:.1f} s)",
                      file=sys.stderr, flush=True)
            except Exception:
                pass
        if self.on_dump is not None:
            try:
                self.on_dump(str(path), reason)
            except Exception:
                import traceback
                traceback.print_exc()
        return str(path)

    # -- triggers -------------------------------------------------------------
    def _on_block(self, block) -> None:
        """The monitor found a block (watchdog thread): dump around it."""
        recorder = self.recorder
        if recorder is None:
            return
        del recorder.blocks[:-64]   # keep the side table bounded
        start_ns = recorder.start_ns + int(block.start * 1e9)
        self.dump_later(f"blocked-{block.duration * 1e3:.0f}ms", start_ns,
                        start_ns + int(block.duration * 1e9))

    def _on_signal(self, signum, frame) -> None:
        # A Python signal handler runs in the main thread between two
        # bytecodes of whatever runs: only start the dump thread here.
        self.dump_later(f"signal-{_signal.Signals(signum).name}")


def _signal_number(sig) -> int:
    if isinstance(sig, bool):
        raise TypeError("signal must be a signal name or number, not a bool")
    if isinstance(sig, int):
        return _signal.Signals(sig).value
    if isinstance(sig, str):
        name = sig.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return _signal.Signals[name].value
        except KeyError:
            raise ValueError(f"signal: unknown signal {sig!r}") from None
    raise TypeError(f"signal must be a signal name or number, not {type(sig).__name__}")


# -- the process's flight recorder -------------------------------------------------

def start(directory=".", **options) -> FlightRecorder:
    """Start this process's flight recorder (see :class:`FlightRecorder`)."""
    return FlightRecorder(directory, **options).start()


def current() -> FlightRecorder | None:
    """The running flight recorder, if any."""
    return _current


def stop() -> None:
    """Stop this process's flight recorder (no-op if none runs)."""
    if _current is not None:
        _current.stop()


def dump(path=None, before: float | None = None, after: float = 0.0) -> str:
    """Dump the running flight recorder (see :meth:`FlightRecorder.dump`)."""
    if _current is None:
        raise RuntimeError("no flight recorder is running (tracing.flight.start())")
    return _current.dump(path, before=before, after=after)


_BOOL = {"1": True, "true": True, "yes": True, "on": True,
         "0": False, "false": False, "no": False, "off": False}


def parse_config(value: str) -> dict:
    """``LABKIT_FLIGHT``'s value -> FlightRecorder keyword arguments.

    ``DIR[,key=value...]`` with keys threshold, before, after (seconds),
    capacity, max_dumps (ints), signal (a name such as USR2), exit, report
    (booleans). ``1`` alone: the current directory. ValueError naming the
    key for anything else."""
    if not isinstance(value, str):
        raise TypeError(f"{ENV} must be a string, not {type(value).__name__}")
    options: dict = {}
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{ENV} is empty")
    for n, item in enumerate(items):
        if "=" not in item:
            if n != 0:
                raise ValueError(f"{ENV}: {item!r} is not key=value (only the first "
                                 f"item may be the directory)")
            options["directory"] = "." if item in ("1", "true", "yes", "on") else item
            continue
        key, _, raw = (part.strip() for part in item.partition("="))
        try:
            if key in ("threshold", "before", "after"):
                options[key] = float(raw)
            elif key in ("capacity", "max_dumps"):
                options[key] = int(raw)
            elif key == "signal":
                options[key] = raw
                _signal_number(raw)
            elif key in ("exit", "report"):
                options["dump_at_exit" if key == "exit" else key] = _BOOL[raw.lower()]
            elif key in ("dir", "directory"):
                options["directory"] = raw
            else:
                raise ValueError(f"{ENV}: unknown key {key!r} (threshold, before, after, "
                                 f"capacity, max_dumps, signal, exit, report, dir)")
        except (KeyError, ValueError, TypeError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(ENV):
                raise
            raise ValueError(f"{ENV}: bad value for {key}: {raw!r}") from None
    return options


def start_from_env(environ=None) -> FlightRecorder | None:
    """Start the flight recorder ``LABKIT_FLIGHT`` describes (see
    :func:`parse_config`); None if it is unset or empty. From the loop thread."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value or value.lower() in ("0", "false", "no", "off"):
        return None
    if _current is not None:
        return _current
    return start(**parse_config(value))


def merge_dumps(since: float | None = None, directory=None, out=None, environ=None,
                proto: bool | None = None) -> str | None:
    """Merge the flight-recorder files in ``directory`` (default:
    LABKIT_FLIGHT's) modified at or after ``since`` (time.time(); None: all)
    into ``out`` (default ``labkit-merged-<pid>.json`` there): one timeline,
    a process track per process (tracing/merge.py). The path, or None if
    there was nothing to merge. The gunicorn master's on_exit calls it.

    ``proto``: also write the same merge as Perfetto's protobuf next to it
    (``.pftrace`` instead of ``.json``; faster to load); None (default):
    when the ``perfetto`` package is installed."""
    import glob
    if directory is None:
        value = (os.environ if environ is None else environ).get(ENV, "").strip()
        directory = parse_config(value).get("directory", ".") if value else "."
    files = [f for f in sorted(glob.glob(os.path.join(os.fspath(directory),
                                                      "labkit-flight-*.json")))
             if since is None or os.path.getmtime(f) >= since]
    if not files:
        return None
    out = out or os.path.join(os.fspath(directory), f"labkit-merged-{os.getpid()}.json")
    document = _merge.merge(files, out)
    if proto is None:
        import importlib.util
        proto = importlib.util.find_spec("perfetto") is not None
    if proto and not _merge.is_proto_path(out):
        _merge.save(document, os.path.splitext(os.fspath(out))[0] + ".pftrace")
    return str(out)


# -- the converter: a child process -----------------------------------------------

def _run_converter(payload: dict) -> None:
    """Run ``python -m tracing.flight _convert`` with ``payload`` (pickled)
    on its stdin; RuntimeError if it fails. Blocks the calling thread (a
    dump thread or a thread-pool worker), never the loop: the stdlib's own
    os functions are used, whatever monkey patching replaced."""
    import pickle
    from labkit.monkey import get_original
    waitpid = get_original("os", "waitpid")
    read_end, write_end = os.pipe()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.pop(ENV, None)   # the converter records and serves nothing
    env.pop("LABKIT_CONSOLE", None)
    try:
        pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "tracing.flight", "_convert"],
                             env, file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0),
                                                (os.POSIX_SPAWN_CLOSE, write_end)])
    finally:
        os.close(read_end)
    try:
        with open(write_end, "wb") as pipe:
            pickle.dump(payload, pipe, protocol=pickle.HIGHEST_PROTOCOL)
    except BrokenPipeError:
        pass   # the child died: its status says why
    _, status = waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"the flight recorder's converter exited with status {code} "
                           f"(its error is on stderr)")


def _convert(stream) -> None:
    """The child's side: payload from ``stream`` -> the Perfetto file."""
    import pickle
    from tracing.model import Trace
    from tracing.recorder import recording_from
    payload = pickle.load(stream)
    start_ns, stop_ns = payload["start_ns"], payload["stop_ns"]
    records = [r for r in _RECORD.iter_unpack(payload["data"]) if start_ns <= r[0] <= stop_ns]
    recording = recording_from(payload["side"], records, start_ns, stop_ns)
    side = payload["side"]
    _merge.write(Trace(recording), payload["path"], pid=side["pid"],
                 start_ns=recording.start_ns, stop_ns=stop_ns, name=f"labkit {side['pid']}",
                 reason=payload["reason"], extra_events=payload["extra_events"],
                 forked_from=payload.get("forked_from"))


if __name__ == "__main__":
    if sys.argv[1:] == ["_convert"]:
        _convert(sys.stdin.buffer)
    else:
        print("python -m tracing.flight _convert: used by the flight recorder "
              "(payload on stdin)", file=sys.stderr)
        sys.exit(2)
