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

Settings used: ``worker_connections`` (connections served at once per
worker; more wait in the listen backlog), ``keepalive`` (idle keep-alive
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
``python -m labkit console WORKER_PID`` shows its greenlets, lints and timeline.
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

    def forked(self, worker) -> None:
        """pre_fork: ``worker`` is about to be forked (its pid comes after)."""
        self.workers[worker.age] = {"fork_ns": time.monotonic_ns(), "worker": worker,
                                    "pid": None, "exit_ns": None}
        while len(self.workers) > self.MAX_WORKERS:
            self.workers.popitem(last=False)

    def exited(self, worker) -> None:
        """child_exit: the master reaped ``worker``."""
        entry = self.workers.get(worker.age)
        if entry is None:
            return
        entry.update(exit_ns=time.monotonic_ns(), pid=worker.pid, worker=None)

    def trace_events(self, now_ns: int | None = None) -> list[dict]:
        """The track as Chrome trace events (ts in µs since ``start_ns``)."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        us = lambda ns: (ns - self.start_ns) / 1e3  # noqa: E731
        events = [{"ph": "M", "pid": self.pid, "name": "process_name",
                   "args": {"name": f"gunicorn master {self.pid}"}},
                  {"ph": "M", "pid": self.pid, "tid": 1, "name": "thread_name",
                   "args": {"name": "arbiter"}}]
        for ns, name, args in self.events:
            events.append({"ph": "i", "s": "t", "pid": self.pid, "tid": 1, "cat": "gunicorn",
                           "name": name, "ts": us(ns), "args": args})
        for age, entry in self.workers.items():
            worker = entry["worker"]
            pid = entry["pid"] or getattr(worker, "pid", None)
            end = entry["exit_ns"] or now_ns
            events.append({"ph": "M", "pid": self.pid, "tid": 1 + age, "name": "thread_name",
                           "args": {"name": f"worker {pid} (#{age})"}})
            events.append({"ph": "X", "pid": self.pid, "tid": 1 + age, "cat": "gunicorn",
                           "name": f"worker {pid}", "ts": us(entry["fork_ns"]),
                           "dur": (end - entry["fork_ns"]) / 1e3,
                           "args": {"pid": pid, "age": age,
                                    "until": "reaped" if entry["exit_ns"] else "master exit"}})
        return events

    def write(self, path, reason: str = "exit") -> str:
        """Write the track to ``path`` (atomically); returns it."""
        now = time.monotonic_ns()
        document = {"traceEvents": self.trace_events(now), "displayTimeUnit": "ms",
                    "metadata": {"labkit": {
                        "pid": self.pid, "start_ns": self.start_ns,
                        "wall_start": time.time() - (now - self.start_ns) / 1e9,
                        "name": f"gunicorn master {self.pid}", "reason": reason}}}
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(document, f)
        os.replace(tmp, path)
        return os.fspath(path)


_master: MasterTrack | None = None


def _flight_value() -> str | None:
    value = os.environ.get("LABKIT_FLIGHT", "").strip()
    if not value or value.lower() in ("0", "false", "no", "off"):
        return None
    return value


def _track() -> MasterTrack | None:
    """This master's track when LABKIT_FLIGHT is set (made on first use)."""
    global _master
    if _flight_value() is None:
        return None
    if _master is None or _master.pid != os.getpid():
        _master = MasterTrack()
    return _master


def on_starting(server) -> None:
    """gunicorn server hook: the master's time zero."""
    track = _track()
    if track is not None:
        track.note("starting", workers=server.num_workers)


def when_ready(server) -> None:
    """gunicorn server hook: the master listens; from now its signals are noted."""
    track = _track()
    if track is None:
        return
    track.note("ready", listeners=[str(listener) for listener in server.LISTENERS])
    for signum in getattr(server, "SIGNALS", ()):
        previous = signal.getsignal(signum)
        if callable(previous) and not getattr(previous, "_labkit_notes", False):
            signal.signal(signum, _noting_handler(track, previous))


def _noting_handler(track: MasterTrack, previous):
    """A signal handler that notes the signal, then runs gunicorn's (which
    only queues it for the arbiter's loop)."""
    def handler(signum, frame):
        track.note(f"signal {signal.Signals(signum).name}")
        return previous(signum, frame)
    handler._labkit_notes = True
    handler.__wrapped__ = previous
    return handler


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


def nworkers_changed(server, new_value, old_value) -> None:
    """gunicorn server hook: TTIN/TTOU or a reload changed the worker count."""
    track = _track()
    if track is not None and old_value is not None:
        track.note("workers changed", old=old_value, new=new_value)


def on_reload(server) -> None:
    """gunicorn server hook: SIGHUP reloaded the configuration."""
    track = _track()
    if track is not None:
        track.note("reload")


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
