"""Traces of several processes on one timeline: a Perfetto file per process, merged.

A forking server (``gunicorn -k labkit.gunicorn.Worker -w 4``, or any
``os.fork()``) runs one hub per process, each with its own recorder. Each
process writes its trace with :func:`write`: the events
:func:`tracing.export.perfetto_events` makes, moved to a Perfetto process
track named after the process (its pid), plus a ``"labkit"`` entry in the
file's ``metadata`` saying which pid it is and where its time zero lies on
the machine's monotonic clock (the clock every process on one machine
shares: lk_now_ns is CLOCK_MONOTONIC). :func:`merge` puts such files on one
timeline:

- each file's timestamps are shifted by the distance between its zero and
  the earliest file's, so that the same instant has the same ``ts``;
- each file keeps its pid: one process track per process, its greenlet lanes
  (Perfetto *threads*) under it. Two files of the same pid (two dumps of one
  worker) stay one process track;
- ids of flows and async slices are made unique per file (the Chrome format
  scopes them by category, not by process);
- a fork becomes an arrow (a flow, cat ``"fork"``) to the first slice of
  the child, when both are among the merged files. It starts from a slice
  whose ``args`` carry ``labkit_fork: PID`` (the gunicorn master's "fork
  worker PID", labkit/gunicorn.py, which runs no hub; any forking parent
  may mark its own), or else, for a child whose file says
  ``metadata.labkit.forked_from = {"pid", "ns"}`` (:func:`write` puts
  :func:`tracing.recorder.fork_origin` there: any ``os.fork()``, from a
  greenlet or multiprocessing's "fork" start method), from the parent's
  slice that ran at that instant (the greenlet that forked). A child's
  trace begins after the fork, when its recorder restarts, so without the
  arrow the two line up by time only.

Other tracers' spans (tracing.export's span sources: the OpenTelemetry
bridge, tracing/otel.py) are in the files :func:`write` makes, on the
greenlet lanes as in any export, so that a labkit trace and a tracing
backend's line up. A process that writes its trace later, or elsewhere (the
flight recorder converts in a child process), takes them first with
:func:`source_events` and hands them to :func:`write` as ``extra_events``.

A process with no hub can write a file of this format too: Chrome trace
events of one pid plus ``metadata.labkit`` with ``pid`` and ``start_ns``
(the gunicorn master's track, labkit/gunicorn.py, which the core writes
without importing the tracer).

    python -m tracing.merge DIR_OR_FILES... -o merged.json
    python -m tracing.merge DIR_OR_FILES... -o merged.pftrace   # protobuf

A merged document can be written as Perfetto's native protobuf too
(:func:`save` with a ``.pftrace`` name, through
:func:`tracing.export.events_to_proto`): one ProcessDescriptor per process,
a thread track per greenlet lane under it, the fork and switch arrows as
flow ids bound to their slices; it loads faster than the JSON.

Contract: :func:`write` and :func:`merge` are plain functions of files, any
thread; they never touch a running recorder.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from labkit._loop import lib

from tracing import export as _export

#: The key in a file's top-level ``metadata`` that write() fills and merge() reads.
META_KEY = "labkit"
#: Flow/async ids of file n become n * ID_STRIDE + id (unique across files).
ID_STRIDE = 1 << 32
_ID_KEYS = ("id", "bind_id")

#: In ``extra_events``: a span record (tracing.export.add_span_source) to place.
SPAN_KEY = "labkit_span"
#: In a slice's ``args``: the pid of the child this slice forked (see above).
FORK_KEY = "labkit_fork"
#: In a file's ``metadata.labkit``: ``{"pid", "ns"}`` of the fork that made
#: the process (tracing.recorder.fork_origin), or None.
FORKED_KEY = "forked_from"
#: Categories of the slices in which a process's code ran (tracing.export):
#: one of them holds the instant a greenlet (or the hub) forked.
RUNNING_CATEGORIES = ("run", "hub")
#: Names :func:`save` writes as Perfetto's protobuf, not JSON.
PROTO_SUFFIXES = (".pftrace", ".perfetto-trace", ".pb")
#: How far into a slice (µs at most, else half of it) a fork arrow's ends
#: sit: strictly inside, as Perfetto needs to bind them, and near its start.
FLOW_INSET_US = 1.0


def source_events(pid: int, start_ns: int, stop_ns: int) -> list[dict]:
    """What the span sources (:func:`tracing.export.add_span_source`) give
    for this window of process ``pid``, as ``extra_events`` for
    :func:`write` (plain data: it may cross to another process)."""
    return [{SPAN_KEY: span} for span in _export.span_records(pid, start_ns, stop_ns)]


def process_events(trace, *, pid: int, start_ns: int, stop_ns: int | None = None,
                   name: str | None = None, extra_events=None) -> list[dict]:
    """The Perfetto events of ``trace`` (zero at ``start_ns``) on process
    track ``pid`` named ``name`` (default ``"labkit <pid>"``), plus
    ``extra_events``: Chrome events, added as they are, and span records
    (``{SPAN_KEY: span}``), placed on their greenlet lanes (default: those
    of :func:`source_events`)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise ValueError(f"pid must be a positive int, not {pid!r}")
    name = name or f"labkit {pid}"
    if stop_ns is None:
        stop_ns = start_ns + int(trace.duration * 1e9)
    extra = source_events(pid, start_ns, stop_ns) if extra_events is None else \
        list(extra_events)
    spans = [e[SPAN_KEY] for e in extra if SPAN_KEY in e]
    events = _export.perfetto_events(trace, spans=spans, origin_ns=start_ns)
    for event in events:
        if "pid" in event:
            event["pid"] = pid
        if event.get("ph") == "M" and event.get("name") == "process_name":
            event["args"] = {"name": name}
    events.extend(e for e in extra if SPAN_KEY not in e)
    return events


def write(trace, path, *, pid: int | None = None, start_ns: int, stop_ns: int | None = None,
          name: str | None = None, reason: str | None = None, extra_events=None,
          forked_from: dict | None = None) -> str:
    """Write ``trace`` (a tracing.Trace whose time zero is ``start_ns`` on the
    lk_now_ns clock) as a Perfetto/Chrome JSON file that :func:`merge` can
    combine with others. Returns ``path``.

    ``forked_from``: ``{"pid", "ns"}``, the process that forked this one
    and when (:func:`tracing.recorder.fork_origin`, the default when ``pid``
    is this process's), kept in the metadata for the fork's arrow."""
    pid = os.getpid() if pid is None else pid
    if not isinstance(start_ns, int):
        raise TypeError(f"start_ns must be an int (lk_now_ns), not {type(start_ns).__name__}")
    if forked_from is None and pid == os.getpid():
        from tracing.recorder import fork_origin
        forked_from = fork_origin()
    events = process_events(trace, pid=pid, start_ns=start_ns, stop_ns=stop_ns, name=name,
                            extra_events=extra_events)
    # When this trace's zero was, on the wall clock, for people reading the file.
    wall = time.time() - (lib.lk_now_ns() - start_ns) / 1e9
    document = {
        "traceEvents": events, "displayTimeUnit": "ms",
        "metadata": {META_KEY: {"pid": pid, "start_ns": start_ns, "wall_start": wall,
                                "name": name or f"labkit {pid}", "reason": reason,
                                "dropped": getattr(trace, "dropped", 0),
                                FORKED_KEY: forked_from}},
    }
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f)
    os.replace(tmp, path)   # readers never see half a file
    return str(path)


def _expand(paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "*.json"))))
        else:
            files.append(p)
    return files


def read(path) -> dict:
    """A file written by :func:`write`: its document. ValueError if it is not one."""
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    _check_document(document, path)
    return document


def merge(paths, out=None) -> dict:
    """Merge labkit process traces (files, or directories of ``*.json``) into
    one Chrome trace document on one timeline; write it to ``out`` if given.

    Returns the document; its ``metadata.labkit.processes`` lists the merged
    files' pids. ValueError if no file is given or one is not a labkit
    process trace (files from elsewhere have no clock origin to align).
    """
    files = _expand(paths)
    if not files:
        raise ValueError("paths: no trace files to merge")
    return merge_documents([read(f) for f in files], out)


def _check_document(document, where) -> dict:
    meta = document.get("metadata", {}).get(META_KEY) if isinstance(document, dict) else None
    if not isinstance(meta, dict) or "start_ns" not in meta or "pid" not in meta \
            or not isinstance(document.get("traceEvents"), list):
        raise ValueError(f"{where} is not a labkit process trace (no metadata.{META_KEY})")
    return meta


def merge_documents(documents, out=None) -> dict:
    """:func:`merge` of documents already loaded (each as :func:`read`
    returns it: Chrome events plus ``metadata.labkit`` with ``pid`` and
    ``start_ns``); ValueError naming ``documents`` for an empty list or one
    that is not such a document. The documents are not modified."""
    documents = list(documents)
    if not documents:
        raise ValueError("documents: no traces to merge")
    metas = [_check_document(doc, f"documents[{n}]") for n, doc in enumerate(documents)]
    origin = min(meta["start_ns"] for meta in metas)
    merged: list[dict] = []
    seen_metadata = set()
    processes = []
    forked: dict = {}   # child pid -> (parent pid, µs on the merged timeline)
    for n, (meta, doc) in enumerate(zip(metas, documents)):
        shift_us = (meta["start_ns"] - origin) / 1e3
        processes.append({"pid": meta["pid"], "name": meta.get("name"),
                          "start_ns": meta["start_ns"], "reason": meta.get("reason")})
        parent = meta.get(FORKED_KEY)
        if isinstance(parent, dict) and isinstance(parent.get("pid"), int) \
                and isinstance(parent.get("ns"), int):
            forked[meta["pid"]] = (parent["pid"], (parent["ns"] - origin) / 1e3)
        for event in doc["traceEvents"]:
            event = dict(event)
            if event.get("ph") == "M":
                # one process_name / thread_name per (pid, tid, name): a
                # second dump of a process does not rename its tracks
                key = (event.get("pid"), event.get("tid"), event.get("name"),
                       json.dumps(event.get("args"), sort_keys=True))
                if key in seen_metadata:
                    continue
                seen_metadata.add(key)
            if "ts" in event:
                event["ts"] = event["ts"] + shift_us
            for id_key in _ID_KEYS:
                if isinstance(event.get(id_key), int):
                    event[id_key] = n * ID_STRIDE + event[id_key]
                elif isinstance(event.get(id_key), str):
                    event[id_key] = f"{n}:{event[id_key]}"
            merged.append(event)
    merged.extend(fork_flows(merged, first_id=len(documents) * ID_STRIDE, forked=forked))
    document = {"traceEvents": merged, "displayTimeUnit": "ms",
                "metadata": {META_KEY: {"merged": True, "start_ns": origin,
                                        "processes": processes}}}
    if out is not None:
        save(document, out)
    return document


def is_proto_path(path) -> bool:
    """Whether :func:`save` writes ``path`` as protobuf (``.pftrace``,
    ``.perfetto-trace``, ``.pb``) rather than JSON."""
    return os.fspath(path).lower().endswith(PROTO_SUFFIXES)


def save(document, out) -> str:
    """Write a (merged) Chrome trace document to ``out``: Perfetto's native
    protobuf when its name ends in one of :data:`PROTO_SUFFIXES`
    (:func:`tracing.export.events_to_proto`: the same process tracks,
    greenlet lanes, slices, fork and switch arrows, waits and counters,
    faster to load; needs the ``perfetto`` package), else JSON. Whole
    files only (written aside, then renamed). Returns ``out``."""
    if is_proto_path(out):
        _export.events_to_proto(document["traceEvents"], out)
        return str(out)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(document, f)
    os.replace(tmp, out)
    return str(out)


def fork_flows(events, first_id: int = 1, forked=None) -> list[dict]:
    """The flow events (``"s"`` then ``"f"``, cat ``"fork"``) that bind each
    fork in ``events`` (one timeline) to the first slice of the child (the
    earliest that lasts), if the child has one; ids from ``first_id`` on.

    A fork is a slice marked ``args.labkit_fork = PID``, or an entry of
    ``forked`` (``{child pid: (parent pid, µs)}``, from the files'
    ``forked_from``), which starts from the parent's slice that ran then
    (:data:`RUNNING_CATEGORIES`; none: no arrow); a child with a marked
    slice gets only that arrow. Both ends lie inside their slices
    (:data:`FLOW_INSET_US`) and bind to them (``"bp": "e"``)."""
    first: dict = {}
    forks = []
    by_pid: dict = {}
    wanted = {parent for parent, _at in (forked or {}).values()}
    for event in events:
        if event.get("ph") != "X" or not event.get("dur", 0) > 0:
            continue
        pid = event.get("pid")
        if pid not in first or event["ts"] < first[pid]["ts"]:
            first[pid] = event
        if pid in wanted and event.get("cat") in RUNNING_CATEGORIES:
            by_pid.setdefault(pid, []).append(event)
        child = (event.get("args") or {}).get(FORK_KEY)
        if isinstance(child, int) and not isinstance(child, bool) and child != pid:
            forks.append((event, child, None))
    marked = {child for _event, child, _at in forks}
    for child, (parent, at) in (forked or {}).items():
        if child in marked or child == parent:
            continue
        inside = [e for e in by_pid.get(parent, ()) if e["ts"] <= at <= e["ts"] + e["dur"]]
        if inside:   # the innermost: the latest to begin
            forks.append((max(inside, key=lambda e: (e["ts"], -e["dur"])), child, at))
    flows = []
    for n, (fork, child, at) in enumerate(sorted(forks, key=lambda f: f[0]["ts"])):
        target = first.get(child)
        if target is None:
            continue   # that child left no trace in this merge
        common = {"cat": "fork", "name": f"fork {child}", "id": first_id + n, "bp": "e"}
        if at is None:
            start = fork["ts"] + min(fork["dur"] / 2, FLOW_INSET_US)
        else:   # at the fork, kept strictly inside the slice
            inset = min(fork["dur"] / 2, FLOW_INSET_US)
            start = min(max(at, fork["ts"] + inset), fork["ts"] + fork["dur"] - inset)
        flows.append({"ph": "s", "pid": fork["pid"], "tid": fork.get("tid"), "ts": start,
                      **common})
        flows.append({"ph": "f", "pid": child, "tid": target.get("tid"),
                      "ts": target["ts"] + min(target["dur"] / 2, FLOW_INSET_US), **common})
    return flows


def process_tracks(document) -> dict:
    """pid -> process name, from a Chrome trace document's metadata events."""
    return {e["pid"]: e.get("args", {}).get("name") for e in document["traceEvents"]
            if e.get("ph") == "M" and e.get("name") == "process_name"}


def main(argv=None) -> int:
    """Merge labkit per-process Perfetto files into one timeline."""
    parser = argparse.ArgumentParser(prog="python -m tracing.merge", description=main.__doc__)
    parser.add_argument("paths", nargs="+", help="trace files, or directories of *.json")
    parser.add_argument("-o", "--output", required=True, help="the merged file to write")
    args = parser.parse_args(argv)
    inputs = [p for p in _expand(args.paths) if os.path.abspath(p) != os.path.abspath(args.output)]
    try:
        document = merge(inputs, args.output)
    except (ValueError, OSError, ImportError) as exc:
        print(f"tracing.merge: {exc}", file=sys.stderr)
        return 2
    pids = sorted(process_tracks(document))
    print(f"wrote {args.output}: {len(pids)} processes ({', '.join(map(str, pids))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
