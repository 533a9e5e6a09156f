"""A gunicorn worker that serves the WSGI app with labkit: one hub per worker process.

    gunicorn -k labkit.gunicorn.Worker -w 4 app:app

gunicorn's arbiter forks ``-w`` worker processes (one per core is the usual
choice); this class is what each of them runs. Inside a worker, every
connection is a greenlet and labkit's :class:`~labkit.wsgi.WSGIServer` does
the HTTP; gunicorn keeps doing what it is good at: binding, forking,
restarting dead or stuck workers, reloading, logging.

A worker's life (gunicorn calls ``init_process`` in the forked child)::

    init_process: monkey.patch_all() so the app's own blocking calls cooperate
                  wrap gunicorn's listeners as labkit sockets
                  base init_process: signals, load the app, run()
    run:          one WSGIServer per listener, then the heartbeat loop:
                  notify the arbiter, park on gunicorn's signal wake-up pipe
    SIGTERM:      alive = False -> stop accepting, finish requests for up to
                  graceful_timeout, kill the rest, exit 0
    SIGQUIT/INT:  exit at once (in a greenlet: the handler must not block the hub)

The heartbeat parks on the pipe that gunicorn hands to
``signal.set_wakeup_fd``: the C-level signal handler writes a byte there, so
a SIGTERM wakes the loop immediately even if it lands just before epoll_wait.

Settings used: ``worker_connections`` (open connections per worker,
idle keep-alive ones that gave up their greenlet included; more wait in
the listen backlog), ``keepalive`` (idle keep-alive
timeout, seconds), ``graceful_timeout``, ``timeout`` (heartbeat),
``accesslog`` (combined format through gunicorn's access logger).

Tracing the workers. With ``LABKIT_FLIGHT`` set (tracing/flight.py), each
worker runs the flight recorder from the start of ``run`` -- dumps on long
blocks, on the configured signal, and with ``exit=1`` when it shuts down --
into one directory, one file per dump named after the worker's pid. The
master can merge the workers' files into one Perfetto timeline, a process
track per worker, when it exits: name this module as a config file, whose
``on_exit`` hook does it (``labkit-merged-<master pid>.json`` in the same
directory)::

    LABKIT_FLIGHT=/tmp/traces,exit=1,threshold=0.2 \
        gunicorn -k labkit.gunicorn.Worker -w 4 -c python:labkit.gunicorn app:app

or merge by hand: ``python -m tracing.merge /tmp/traces -o merged.json``.

The master runs no hub and no recorder, but the same config file's server
hooks (``on_starting``, ``when_ready``, ``pre_fork``, ``child_exit``,
``nworkers_changed``, ``on_reload``, ``on_exit``; they run in the master)
note what it does that shapes a request's path: when it was ready, each
worker's fork and reaping (so restarts show), the signals it got, changes
of the worker count. :class:`MasterTrack` keeps them on CLOCK_MONOTONIC --
the workers' trace clock -- and ``on_exit`` writes them as one more
process file (``labkit-flight-<master pid>-master.json``) before merging,
so the merged timeline of ``-w 4`` has five process tracks: the master's
(an "arbiter" lane, a lane per worker from fork to exit) and the four
workers'. A config file of your own can call these functions from its
hooks of the same names.

With ``LABKIT_CONSOLE=1``, each worker serves its console (labkit.console):
``python -m labkit console WORKER_PID`` shows its greenlets, lints and
timeline. The master serves none of its own (it runs no hub: its console
would never answer): :meth:`Worker.check_config`, which gunicorn calls in
the master only, closes the one ``import labkit`` opened there and leaves a
group file instead (:func:`labkit.console.serve_as_group`), so that
``python -m labkit console MASTER_PID`` shows every worker at once. With
this module as the config file, the master's track (forks, reapings,
signals) is kept in that file too, rewritten at each hook, and the console
shows it beside the workers.

Each fork is a slice "fork worker PID" on the arbiter lane (from
``pre_fork`` until ``os.fork()`` returned in the master: when_ready wraps
the arbiter's ``spawn_worker`` to see that), marked ``args.labkit_fork``:
tracing/merge.py binds a flow arrow from it to the worker's first slice.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import time
import warnings

from gunicorn import __version__ as gunicorn_version
from gunicorn.http.wsgi import base_environ
# (as _ssl_context: this module is also a gunicorn config file, read for on_exit)
from gunicorn.sock import ssl_context as _ssl_context
from gunicorn.workers import base

__all__ = ["Worker", "MasterTrack", "on_starting", "when_ready", "pre_fork", "child_exit",
           "nworkers_changed", "on_reload", "on_exit"]

#: When the master loaded this module (the worker class): on_exit merges only
#: the dumps written since, not those of an earlier run in the same directory.
_LOADED_AT = time.time()


class Worker(base.Worker):
    """``gunicorn -k labkit.gunicorn.Worker``: see the module docstring."""

    @classmethod
    def check_config(cls, cfg, log) -> None:
        """Called by the arbiter, in the master, before it forks: with
        LABKIT_CONSOLE set, the master's console becomes a group file
        (the workers serve; see the module docstring)."""
        import labkit.console
        if not labkit.console.requested():
            return
        global _console_group
        try:
            track = _track()
            labkit.console.serve_as_group(
                f"gunicorn master {os.getpid()}",
                None if track is None else track.document(limit=True))
            _console_group = os.getpid()
        except (OSError, RuntimeError) as exc:
            log.error("labkit console: the master cannot publish its workers: %s", exc)

    def init_process(self) -> None:
        # Patched before the app is imported (base.init_process loads it),
        # so that `import requests` in the app gets cooperative sockets.
        from labkit import monkey, socket
        with warnings.catch_warnings():
            # The arbiter imported ssl long before it forked us; the warning
            # that patching comes late is expected here and not actionable.
            warnings.simplefilter("ignore", RuntimeWarning)
            monkey.patch_all()
        self.sockets = [socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach())
                        for s in self.sockets]
        super().init_process()

    def run(self) -> None:
        from labkit.pool import Pool
        from labkit.wsgi import WSGIServer

        environ = base_environ(self.cfg)
        environ.update({"wsgi.multiprocess": self.cfg.workers > 1,
                        "SERVER_SOFTWARE": f"labkit gunicorn/{gunicorn_version}"})
        kwargs = {}
        if self.cfg.is_ssl:
            kwargs["ssl_context"] = _ssl_context(self.cfg)
        if self.cfg.keepalive > 0:
            kwargs["keepalive_timeout"] = self.cfg.keepalive
        access_log = self.log.access_log if self.cfg.accesslog else None
        servers = []
        for listener in self.sockets:
            server = WSGIServer(listener, self.wsgi, spawn=Pool(self.cfg.worker_connections),
                                environ=environ, log=access_log, **kwargs)
            server.start()
            servers.append(server)

        recorder = self._start_flight_recorder()
        console = self._serve_console()
        self.heartbeat()
        self.shut_down(servers)
        if console is not None:
            console.close()
        if recorder is not None:
            self._stop_flight_recorder(recorder)

    def _serve_console(self):
        """With LABKIT_CONSOLE=1, this worker serves ``python -m labkit
        console PID`` (labkit.console; the master's socket, if any, was
        dropped at fork). The server, or None."""
        from labkit.console import serve_if_requested
        return serve_if_requested()

    def _start_flight_recorder(self):
        """The flight recorder LABKIT_FLIGHT asks for, or None (see the module doc)."""
        if not os.environ.get("LABKIT_FLIGHT", "").strip():
            return None
        from labkit import plugins   # the tracer is a plug-in: the core never imports it
        try:
            flight = plugins.flight_recorder()
            if flight is None:
                self.log.error("LABKIT_FLIGHT ignored: no flight recorder plug-in installed")
                return None
            return flight.start_from_env()
        except (ImportError, ValueError, TypeError, OSError) as exc:
            self.log.error("LABKIT_FLIGHT ignored: %s", exc)
            return None

    def _stop_flight_recorder(self, recorder) -> None:
        recorder.wait_for_dumps(self.cfg.graceful_timeout)
        if recorder.dump_at_exit and recorder.running:
            try:
                path = recorder.dump(reason="exit")
                self.log.info("labkit flight recorder: wrote %s", path)
            except Exception:
                self.log.exception("labkit flight recorder: exit dump failed")
        recorder.stop()

    def heartbeat(self) -> None:
        """Tell the arbiter we live, until a signal clears ``alive``."""
        from labkit.hub import wait_read
        interval = max(0.1, min(1.0, self.timeout / 2)) if self.timeout else 1.0
        wake_fd = self.PIPE[0]
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                return
            try:
                wait_read(wake_fd, interval)
                os.read(wake_fd, 4096)  # drain the signal bytes
            except (TimeoutError, BlockingIOError):
                pass

    def shut_down(self, servers) -> None:
        """Stop accepting; let requests finish for graceful_timeout; kill the rest."""
        from labkit.hub import sleep
        for server in servers:
            server.close()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while any(len(server.pool) for server in servers):
            if time.monotonic() >= deadline:
                self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
                break
            self.notify()
            sleep(0.05)
        for server in servers:
            server.stop(timeout=0.5)

    # Signal handlers that may block (quit sleeps, usr1 reopens files) run
    # in a greenlet: Python may call a handler while the hub itself runs.
    def handle_quit(self, sig, frame) -> None:
        from labkit import spawn
        spawn(super().handle_quit, sig, frame)

    def handle_usr1(self, sig, frame) -> None:
        from labkit import spawn
        spawn(super().handle_usr1, sig, frame)


# -- the master's track (server hooks; they run in the arbiter) ----------------------

class MasterTrack:
    """What the gunicorn master did, for the merged timeline of the workers.

    Stamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC, the clock of the
    workers' traces (lk_now_ns), so the files line up. Bounded: the last
    :data:`MAX_EVENTS` instants and :data:`MAX_WORKERS` workers are kept.
    Written as a labkit process trace file (Chrome trace JSON whose
    ``metadata.labkit`` gives ``pid`` and ``start_ns``: the format
    tracing/merge.py reads; the core cannot import it to write one).
    """

    MAX_EVENTS = 10_000
    MAX_WORKERS = 10_000

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        self.start_ns = time.monotonic_ns()
        #: (ns, name, args): instants on the "arbiter" lane
        self.events: collections.deque = collections.deque(maxlen=self.MAX_EVENTS)
        #: age -> {"fork_ns", "worker" (until reaped), "pid", "exit_ns"}
        self.workers: collections.OrderedDict = collections.OrderedDict()

    def note(self, name: str, **args) -> None:
        self.events.append((time.monotonic_ns(), name, args))

    #: What a published track (the console's group file) keeps: the last
    #: instants and worker lanes (the file is rewritten at every hook).
    PUBLISHED_EVENTS = 500
    PUBLISHED_WORKERS = 200

    def forked(self, worker) -> None:
        """pre_fork: ``worker`` is about to be forked (its pid comes after)."""
        self.workers[worker.age] = {"fork_ns": time.monotonic_ns(), "worker": worker,
                                    "pid": None, "exit_ns": None, "spawned_ns": None}
        while len(self.workers) > self.MAX_WORKERS:
            self.workers.popitem(last=False)

    def spawned(self, age: int, pid: int) -> None:
        """``os.fork()`` returned ``pid`` in the master for worker ``age``:
        the end of its fork slice."""
        entry = self.workers.get(age)
        if entry is not None and entry["spawned_ns"] is None:
            entry.update(spawned_ns=time.monotonic_ns(), pid=pid)

    def exited(self, worker) -> None:
        """child_exit: the master reaped ``worker``."""
        entry = self.workers.get(worker.age)
        if entry is None:
            return
        entry.update(exit_ns=time.monotonic_ns(), pid=worker.pid, worker=None)

    def trace_events(self, now_ns: int | None = None, limit: bool = False) -> list[dict]:
        """The track as Chrome trace events (ts in µs since ``start_ns``);
        with ``limit``, only the last :data:`PUBLISHED_EVENTS` instants and
        :data:`PUBLISHED_WORKERS` workers.

        A fork whose end the master saw (:meth:`spawned`) is a slice
        "fork worker PID" on the arbiter lane with ``args.labkit_fork`` =
        PID; one it did not see marks the worker's lane slice instead (it
        begins at the fork): tracing/merge.py draws the arrow to the worker
        from the slice so marked."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        us = lambda ns: (ns - self.start_ns) / 1e3  # noqa: E731
        events = [{"ph": "M", "pid": self.pid, "name": "process_name",
                   "args": {"name": f"gunicorn master {self.pid}"}},
                  {"ph": "M", "pid": self.pid, "tid": 1, "name": "thread_name",
                   "args": {"name": "arbiter"}}]
        instants = list(self.events)
        workers = list(self.workers.items())
        if limit:
            instants = instants[-self.PUBLISHED_EVENTS:]
            workers = workers[-self.PUBLISHED_WORKERS:]
        for ns, name, args in instants:
            events.append({"ph": "i", "s": "t", "pid": self.pid, "tid": 1, "cat": "gunicorn",
                           "name": name, "ts": us(ns), "args": args})
        for age, entry in workers:
            worker = entry["worker"]
            pid = entry["pid"] or getattr(worker, "pid", None)
            end = entry["exit_ns"] or now_ns
            life = {"pid": pid, "age": age,
                    "until": "reaped" if entry["exit_ns"] else "not reaped yet"}
            if entry["spawned_ns"] is not None:
                events.append({"ph": "X", "pid": self.pid, "tid": 1, "cat": "gunicorn",
                               "name": f"fork worker {pid}", "ts": us(entry["fork_ns"]),
                               "dur": (entry["spawned_ns"] - entry["fork_ns"]) / 1e3,
                               "args": {"labkit_fork": pid, "age": age}})
            elif pid is not None:
                life["labkit_fork"] = pid
            events.append({"ph": "M", "pid": self.pid, "tid": 1 + age, "name": "thread_name",
                           "args": {"name": f"worker {pid} (#{age})"}})
            events.append({"ph": "X", "pid": self.pid, "tid": 1 + age, "cat": "gunicorn",
                           "name": f"worker {pid}", "ts": us(entry["fork_ns"]),
                           "dur": (end - entry["fork_ns"]) / 1e3, "args": life})
        return events

    def document(self, reason: str | None = None, limit: bool = False) -> dict:
        """The track as a labkit process trace document (tracing/merge.py's
        format): what :meth:`write` writes, and the console's group file holds."""
        now = time.monotonic_ns()
        return {"traceEvents": self.trace_events(now, limit=limit), "displayTimeUnit": "ms",
                "metadata": {"labkit": {
                    "pid": self.pid, "start_ns": self.start_ns,
                    "wall_start": time.time() - (now - self.start_ns) / 1e9,
                    "name": f"gunicorn master {self.pid}", "reason": reason}}}

    def write(self, path, reason: str = "exit") -> str:
        """Write the track to ``path`` (atomically); returns it."""
        document = self.document(reason)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f)
        os.replace(tmp, path)
        return os.fspath(path)


_master: MasterTrack | None = None
#: The pid of the master whose console is a group file (Worker.check_config).
_console_group: int | None = None
#: Set while the group file is being written (a signal may come meanwhile).
_publishing = {"now": False, "again": False}


def _flight_value() -> str | None:
    value = os.environ.get("LABKIT_FLIGHT", "").strip()
    if not value or value.lower() in ("0", "false", "no", "off"):
        return None
    return value


def _track() -> MasterTrack | None:
    """This master's track when LABKIT_FLIGHT or LABKIT_CONSOLE is set
    (made on first use)."""
    global _master
    import labkit.console
    if _flight_value() is None and not labkit.console.requested():
        return None
    if _master is None or _master.pid != os.getpid():
        _master = MasterTrack()
    return _master


def _publish(track: MasterTrack | None) -> None:
    """Rewrite the console's group file with ``track``, if this master's
    console is one (a write under way when a signal's note comes is done
    again after, not interleaved)."""
    if track is None or _console_group != os.getpid():
        return
    if _publishing["now"]:
        _publishing["again"] = True
        return
    import labkit.console
    _publishing["now"] = True
    try:
        while True:
            _publishing["again"] = False
            try:
                labkit.console.publish_group(f"gunicorn master {track.pid}",
                                             track.document(limit=True))
            except OSError:
                return   # the console is a convenience: never stop the master for it
            if not _publishing["again"]:
                return
    finally:
        _publishing["now"] = False


def on_starting(server) -> None:
    """gunicorn server hook: the master's time zero."""
    track = _track()
    if track is not None:
        track.note("starting", workers=server.num_workers)
        _publish(track)


def when_ready(server) -> None:
    """gunicorn server hook: the master listens; from now its signals are
    noted, and each fork's end (the arbiter's ``spawn_worker`` is wrapped)."""
    track = _track()
    if track is None:
        return
    track.note("ready", listeners=[str(listener) for listener in server.LISTENERS])
    for signum in getattr(server, "SIGNALS", ()):
        previous = signal.getsignal(signum)
        if callable(previous) and not getattr(previous, "_labkit_notes", False):
            signal.signal(signum, _noting_handler(track, previous))
    spawn_worker = getattr(server, "spawn_worker", None)
    if callable(spawn_worker) and not getattr(spawn_worker, "_labkit_notes", False):
        server.spawn_worker = _timing_spawn(track, server, spawn_worker)
    _publish(track)


def _noting_handler(track: MasterTrack, previous):
    """A signal handler that notes the signal, then runs gunicorn's (which
    only queues it for the arbiter's loop)."""
    def handler(signum, frame):
        track.note(f"signal {signal.Signals(signum).name}")
        _publish(track)
        return previous(signum, frame)
    handler._labkit_notes = True
    handler.__wrapped__ = previous
    return handler


def _timing_spawn(track: MasterTrack, server, spawn_worker):
    """The arbiter's ``spawn_worker``, noting when ``os.fork()`` returned in
    the master (it returns the pid there; in the child it never returns)."""
    def spawn():
        pid = spawn_worker()
        if os.getpid() == track.pid and isinstance(pid, int):
            worker = server.WORKERS.get(pid)
            if worker is not None:
                track.spawned(worker.age, pid)
            _publish(track)
        return pid
    spawn._labkit_notes = True
    spawn.__wrapped__ = spawn_worker
    return spawn


def pre_fork(server, worker) -> None:
    """gunicorn server hook (master, just before the fork): a worker's lane begins."""
    track = _track()
    if track is not None:
        track.forked(worker)


def child_exit(server, worker) -> None:
    """gunicorn server hook (master, after reaping): the worker's lane ends."""
    track = _track()
    if track is not None:
        track.exited(worker)
        _publish(track)


def nworkers_changed(server, new_value, old_value) -> None:
    """gunicorn server hook: TTIN/TTOU or a reload changed the worker count."""
    track = _track()
    if track is not None and old_value is not None:
        track.note("workers changed", old=old_value, new=new_value)
        _publish(track)


def on_reload(server) -> None:
    """gunicorn server hook: SIGHUP reloaded the configuration."""
    track = _track()
    if track is not None:
        track.note("reload")
        _publish(track)


def on_exit(server) -> None:
    """gunicorn server hook (in the master, after the workers stopped): write
    the master's track, then merge it with the workers' flight-recorder
    files written since the master started into
    ``labkit-merged-<master pid>.json`` in LABKIT_FLIGHT's directory."""
    value = _flight_value()
    if value is None:
        return
    from labkit import plugins
    try:
        flight = plugins.flight_recorder()
        if flight is None:
            server.log.error("labkit: LABKIT_FLIGHT set but no flight recorder plug-in")
            return
        track = _track()
        track.note("exit")
        directory = flight.parse_config(value).get("directory", ".")
        track.write(os.path.join(directory, f"labkit-flight-{track.pid}-master.json"))
        out = flight.merge_dumps(since=_LOADED_AT)
    except (ImportError, ValueError, OSError) as exc:
        server.log.error("labkit: merging worker traces failed: %s", exc)
        return
    if out is None:
        server.log.info("labkit: no worker traces to merge")
    else:
        server.log.info("labkit: merged the workers' traces into %s", out)
