"""Attach to a process that forks workers: ``python -m labkit console MASTER_PID``.

A gunicorn master (``gunicorn -k labkit.gunicorn.Worker -w 4``) runs no
hub, so it cannot answer a console itself; its workers each serve one
(tracing/attach.py, tracing/attach_client.py). Attaching to the master shows them all at once::

    python -m labkit console MASTER_PID
      every refresh: the master's children (from /proc) that serve a
      console (a socket or token file in this user's console directory)
        -> one AttachClient each, asked for a frame in parallel
      + the master's group file (labkit.console.serve_as_group), if any:
        its track of forks, reapings and signals (labkit/gunicorn.py)
      -> one table with a pid column, the lints of every worker, a
         timeline lane per greenlet of every worker, and a worker list

The same holds for any forking parent whose children serve a console: a
process that runs its own hub and serves its console (``LABKIT_CONSOLE=1``)
forks children (``os.fork()`` from a greenlet, multiprocessing's "fork"
start method) that serve theirs as soon as their hubs run
(labkit.console); ``python -m labkit console PARENT_PID`` then shows the
parent with them, one process among the others.

The children are found afresh at each refresh, so a worker that the master
replaces drops out and its successor appears. Nothing is served by the
master, and nothing new is served by the workers: each worker's console is
the same read-only, same-user socket as before; this module is only a
client of several.

``--record FILE`` writes the group frames (:func:`group_frame`'s shape,
one per refresh) as one record (:func:`tracing.attach_client.load_record`);
``--perfetto FILE`` writes them as one merged Perfetto trace
(:func:`to_perfetto`: a process track per worker, the master's track, and
an arrow from each fork to the worker it made, through tracing/merge.py).
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
import time

from labkit.console import group_path
from tracing import attach_client as _client
from tracing import attach_view as _view
from tracing import frames as _frames
from tracing import merge as _merge

__all__ = ["children", "serves", "serving_children", "read_group_file", "is_group", "GroupClient",
           "flatten", "render_group", "to_perfetto"]

#: Workers asked for a frame at once (each on a thread of the client).
MAX_PARALLEL = 16


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``, sorted (from /proc: the kernel's
    word, never stale). [] when ``pid`` has none or is gone."""
    found: set = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    listed = False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(c) for c in f.read().split())
            listed = True
        except OSError:
            break   # a kernel without CONFIG_PROC_CHILDREN: read every process's parent
    if not listed:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # the name (field 2) may hold spaces and parentheses
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return sorted(found)


def serves(pid: int) -> bool:
    """Whether ``pid`` serves a console to this user (its socket or token
    file is in this user's console directory)."""
    return os.path.exists(_client.socket_path(pid)) or os.path.exists(_client.token_path(pid))


def serving_children(pid: int) -> list[int]:
    """The children of ``pid`` that serve a console to this user."""
    return [child for child in children(pid) if serves(child)]


def read_group_file(pid: int) -> dict | None:
    """What process ``pid`` published about itself as a group
    (:func:`labkit.console.publish_group`), or None."""
    try:
        with open(group_path(pid), encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("labkit") != "console-group" \
            or document.get("pid") != pid:
        return None
    return document


def is_group(pid: int) -> bool:
    """Whether ``python -m labkit console pid`` should show ``pid``'s
    workers: it published a group file (the gunicorn master) or has
    children that serve a console -- its forks, which serve as it does
    (labkit.console), whether or not it serves one itself (a parent that
    runs its own hub is then shown with them)."""
    return read_group_file(pid) is not None or bool(serving_children(pid))


class GroupClient:
    """Consoles of the children of ``pid``, and of ``pid`` itself if it
    serves one (see the module docstring).

    :meth:`frame` returns a group frame: ``{"kind": "group", "pid", "name",
    "time", "wall", "track", "processes"}``, ``processes`` being one
    ``{"pid", "frame"}`` per worker that answered and ``{"pid", "error"}``
    per one that did not; ``track`` the master's published track or None.
    FileNotFoundError at construction if ``pid`` serves nothing and none of
    its children does."""

    def __init__(self, pid: int, timeout: float = 5.0):
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError(f"pid must be a positive int, not {pid!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.pid = pid
        self.timeout = timeout
        self._clients: dict = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(MAX_PARALLEL,
                                                           thread_name_prefix="labkit-attach")
        if read_group_file(pid) is None and not serving_children(pid) and not serves(pid):
            self._pool.shutdown()
            raise FileNotFoundError(
                f"no labkit console in process {pid} nor in its children: does it run "
                "labkit (or fork labkit workers) with LABKIT_CONSOLE=1, as this user?")

    def _connect(self) -> dict:
        """Connections to the children serving now; the errors of those
        that cannot be reached (pid -> message)."""
        errors = {}
        # the process itself too, when it serves (a parent running its own hub)
        alive = serving_children(self.pid) + ([self.pid] if serves(self.pid) else [])
        for pid in list(self._clients):
            if pid not in alive:
                self._clients.pop(pid).close()
        for pid in alive:
            if pid not in self._clients:
                try:
                    self._clients[pid] = _client.AttachClient(pid, timeout=self.timeout)
                except (OSError, ValueError) as exc:
                    errors[pid] = str(exc)
        return errors

    def frame(self) -> dict:
        errors = self._connect()
        futures = {pid: self._pool.submit(client.frame) for pid, client in self._clients.items()}
        processes = []
        for pid in sorted(set(futures) | set(errors)):
            if pid in errors:
                processes.append({"pid": pid, "error": errors[pid]})
                continue
            try:
                processes.append({"pid": pid, "frame": futures[pid].result()})
            except (OSError, RuntimeError, ValueError) as exc:
                # a late answer would be read as the next one: start afresh
                self._clients.pop(pid).close()
                processes.append({"pid": pid, "error": str(exc)})
        group = read_group_file(self.pid)
        return {"kind": "group", "pid": self.pid,
                "name": (group or {}).get("name") or f"process {self.pid}",
                "time": time.monotonic(), "wall": time.time(),
                "track": (group or {}).get("track"), "processes": processes}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._pool.shutdown(wait=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_LOOP_SUMS = ("ready", "timers", "fd_waits")


def flatten(group: dict) -> dict:
    """One frame of every worker's rows and lints, each carrying its
    ``process`` (pid): what :func:`tracing.attach_view.render` and its timeline
    draw with a pid column. ``loop`` sums the workers' counts."""
    rows, lints = [], []
    loop = {key: 0 for key in _LOOP_SUMS}
    frames = [p["frame"] for p in group["processes"] if "frame" in p]
    for frame in frames:
        pid = frame.get("pid")
        rows.extend(dict(row, process=pid) for row in frame.get("rows", ()))
        lints.extend(dict(lint, process=pid) for lint in frame.get("lints", ()))
        for key in _LOOP_SUMS:
            loop[key] += frame.get("loop", {}).get(key, 0) or 0
    loop["recording"] = bool(frames) and all(f.get("loop", {}).get("recording") for f in frames)
    if loop["recording"]:
        loop["lag_max"] = max(f["loop"].get("lag_max") or 0.0 for f in frames)
        loop["callbacks_per_pass"] = \
            sum(f["loop"].get("callbacks_per_pass") or 0.0 for f in frames) / len(frames)
    return {"time": group["time"], "wall": group.get("wall"), "pid": group["pid"],
            "rows": rows, "lints": lints, "loop": loop}


def _track_lines(group: dict, limit: int = 8) -> list[str]:
    """The master's latest doings, newest last, with how long ago."""
    track = group.get("track")
    if not isinstance(track, dict):
        return []
    start_ns = track.get("metadata", {}).get("labkit", {}).get("start_ns")
    if not isinstance(start_ns, int):
        return []
    items = []
    for event in track.get("traceEvents", ()):
        if event.get("ph") == "i" or (event.get("ph") == "X" and event.get("name", "")
                                      .startswith("fork ")):
            items.append((event["ts"], event["name"]))
        elif event.get("ph") == "X" and event.get("args", {}).get("until") == "reaped":
            items.append((event["ts"] + event["dur"], f"reaped {event['name']}"))
    items.sort()
    now = group["time"]
    return [f"{now - (start_ns / 1e9 + ts / 1e6):7.1f} s ago  {name}"
            for ts, name in items[-limit:]]


def render_group(group: dict, history: list[dict] | None = None, sort: str = "busy",
                 max_rows: int = 30, width: int = 60):
    """One screen for a group: the workers (and the master's latest
    doings), then the table, lints and timeline of all workers together."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    # a parent that serves its own console is among them: "processes"
    noun = "processes" if any(p["pid"] == group["pid"] for p in group["processes"]) \
        else "workers"
    workers = Table(expand=False, title=f"{group['name']}: {len(group['processes'])} {noun} "
                                        "serving a console")
    for column in ("pid", "greenlets", "loop", "served in pieces of", "lints"):
        workers.add_column(column)
    for process in group["processes"]:
        frame = process.get("frame")
        if frame is None:
            workers.add_row(str(process["pid"]), "", f"no answer: {process['error']}", "", "")
            continue
        served = frame.get("served", {})
        workers.add_row(str(process["pid"]), str(len(frame.get("rows", ()))),
                        _view.format_loop(frame.get("loop", {})),
                        f"≤ {served['pause_ms']:.2f} ms" if served else "",
                        str(len(frame.get("lints", ()))))
    parts = [workers]
    lines = _track_lines(group)
    if lines:
        parts.append(Panel("\n".join(lines), title=f"{group['name']}, latest"))
    flat = flatten(group)
    parts.append(_view.render(flat, history or [flat], sort, max_rows, width,
                                title=f"{group['name']}, all workers"))
    return Group(*parts)


def to_perfetto(groups: list[dict], path) -> dict:
    """Write recorded group frames (oldest first) as one merged Perfetto
    trace: a process track per worker (its frames as
    :func:`tracing.frames.to_perfetto` draws them), the master's track from
    the latest group frame that has one, and an arrow from each fork to its
    worker (tracing/merge.py). Returns the merged document. ValueError if
    no worker answered in any of them."""
    by_pid: dict = {}
    for group in groups:
        for process in group.get("processes", ()):
            if "frame" in process:
                by_pid.setdefault(process["pid"], []).append(process["frame"])
    if not by_pid:
        raise ValueError("groups: no worker's frame to write")
    documents = []
    with tempfile.TemporaryDirectory(prefix="labkit-group-") as tmp:
        for pid, frames in sorted(by_pid.items()):
            part = os.path.join(tmp, f"{pid}.json")
            _frames.to_perfetto(frames, part)
            with open(part, encoding="utf-8") as f:
                document = json.load(f)
            # frames' time is time.monotonic(): the clock of the master's
            # track and of the workers' traces (CLOCK_MONOTONIC)
            document["metadata"] = {_merge.META_KEY: {
                "pid": pid, "start_ns": round(frames[0]["time"] * 1e9),
                "name": f"worker {pid} (console frames)", "reason": "console"}}
            documents.append(document)
    tracks = [g["track"] for g in groups if isinstance(g.get("track"), dict)]
    if tracks:
        documents.append(_alive_until(tracks[-1], groups[-1]["time"]))
    return _merge.merge_documents(documents, path)


def _alive_until(track: dict, now: float) -> dict:
    """``track`` with the lanes of workers not reaped when it was published
    drawn up to ``now`` (time.monotonic()): they were alive then, at least
    as far as the master knew at its last write."""
    start_ns = track["metadata"][_merge.META_KEY]["start_ns"]
    now_us = (now * 1e9 - start_ns) / 1e3
    events = []
    for event in track["traceEvents"]:
        if event.get("ph") == "X" and (event.get("args") or {}).get("until") == "not reaped yet":
            event = dict(event, dur=max(event["dur"], now_us - event["ts"]))
        events.append(event)
    return dict(track, traceEvents=events)
