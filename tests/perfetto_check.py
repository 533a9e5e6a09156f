"""What Perfetto requires of a Chrome trace-event JSON file, checked from the
file alone (no labkit code): the tests of tracing.export and of the tour use it.

- every event has a ``ph``; every event but process metadata has the one
  pid of the process (``one_process=False``: a merged file of several,
  tracing.merge; threads are then told apart by (pid, tid)), and every tid
  used has a ``thread_name``;
- per thread, ``"X"`` slices nest properly: two slices either do not
  overlap or one contains the other (Perfetto drops the ones that do not);
  durations are not negative;
- each flow (``"s"``/``"f"`` with one id, cat and name: Perfetto pairs them
  by all three) has both ends, and each end lies inside an ``"X"`` slice of
  its own thread (else viewers drop the arrow); the arrow may go from one
  process to another;
- async slices (``"b"``/``"e"``) balance per (cat, id) and nest;
- counters (``"C"``) carry numbers only;
- flow ids are numbers or hex strings (Perfetto parses a flow's string id as
  hex and drops the flow when it cannot); async slices have an id.

:func:`proto_problems` checks the same, where it carries over, in a
Perfetto protobuf (TrackEvent) file: every track an event names is
described, every thread's and child track's parent is, every process
appears once; per track, slice ends close a begin and every begin ends
(so slices nest: the format has nothing else); each flow id leaves one
slice begin and terminates on one other (bound to slices: the format has no
unbound flow ends); counter values are finite numbers on counter tracks.
:func:`proto_structure` reads what such a file holds, for tests to compare
with its JSON.
"""
import collections
import math


def problems(doc, one_process: bool = True) -> list[str]:
    """Every way ``doc`` (the loaded JSON) breaks the rules above."""
    found = []
    events = doc["traceEvents"]
    pids = {e["pid"] for e in events if "pid" in e}
    if one_process and len(pids) != 1:
        found.append(f"expected one pid, got {sorted(pids)}")
    named = {(e.get("pid"), e["tid"]) for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    slices = collections.defaultdict(list)
    for e in events:
        ph = e.get("ph")
        if ph is None:
            found.append(f"event without ph: {e}")
            continue
        if ph in "XsfbeB E".replace(" ", "") and (e.get("pid"), e.get("tid")) not in named:
            found.append(f"tid {e.get('tid')} of a {ph} event has no thread_name")
        if ph in ("s", "f") and not _perfetto_id(e.get("id")):
            found.append(f"flow {e.get('name')!r}: id {e.get('id')!r} is neither a "
                         f"number nor a hex string (Perfetto drops it)")
        if ph in ("b", "e") and e.get("id") in (None, ""):
            found.append(f"async {e.get('name')!r} has no id (Perfetto drops it)")
        if ph == "X":
            if not (e["dur"] >= 0 and math.isfinite(e["ts"])):
                found.append(f"bad slice {e}")
            start = _ns(e["ts"])
            slices[(e.get("pid"), e["tid"])].append((start, start + _ns(e["dur"]), e["name"]))
        if ph == "C":
            for key, value in e.get("args", {}).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) \
                        or not math.isfinite(value):
                    found.append(f"counter {e['name']}.{key} is not a number: {value!r}")
    for (_pid, tid), spans in slices.items():
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        stack = []
        for start, end, name in spans:
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1]:
                found.append(f"tid {tid}: {name!r} [{start}, {end}] overlaps "
                             f"{stack[-1][2]!r} [{stack[-1][0]}, {stack[-1][1]}]")
            stack.append((start, end, name))
    ends = collections.defaultdict(dict)
    for e in events:
        if e.get("ph") in ("s", "f"):
            ends[(e.get("cat"), e.get("name"), e["id"])][e["ph"]] = e
    for fid, pair in ends.items():
        if set(pair) != {"s", "f"}:
            found.append(f"flow {fid} has only {sorted(pair)}")
        for e in pair.values():
            if not any(s <= _ns(e["ts"]) <= t
                       for s, t, _ in slices.get((e.get("pid"), e["tid"]), ())):
                found.append(f"flow {fid} {e['ph']} at {e['ts']} on tid {e['tid']} "
                             f"is outside every slice of its thread")
    open_async = collections.defaultdict(list)
    for e in sorted((e for e in events if e.get("ph") in ("b", "e")),
                    key=lambda e: (_ns(e["ts"]), e["ph"] == "b")):
        key = (e.get("cat"), e["id"])
        if e["ph"] == "b":
            open_async[key].append(e["name"])
        elif not open_async[key] or open_async[key][-1] != e["name"]:
            found.append(f"async end {e['name']!r} of {key} does not close the latest begin")
        else:
            open_async[key].pop()
    for key, names in open_async.items():
        if names:
            found.append(f"async {key}: {names} never end")
    return found


def _ns(microseconds: float) -> int:
    """A timestamp as Perfetto holds it: whole nanoseconds (so that a slice
    ending where the next begins does not overlap it by a float's last bit)."""
    return round(microseconds * 1000)


def _perfetto_id(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        try:
            int(value, 16)
        except ValueError:
            return False
        return True
    return False


def proto_trace(data):
    """A Perfetto protobuf file (bytes, or a path) parsed."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    if not isinstance(data, (bytes, bytearray)):
        with open(data, "rb") as f:
            data = f.read()
    trace = pb.Trace()
    trace.ParseFromString(data)
    return trace


def proto_problems(trace) -> list[str]:
    """Every way ``trace`` (:func:`proto_trace`) breaks the rules above."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    found = []
    tracks, processes = {}, {}
    for packet in trace.packet:
        if packet.HasField("track_descriptor"):
            d = packet.track_descriptor
            if d.uuid in tracks:
                found.append(f"track {d.uuid} described twice")
            tracks[d.uuid] = d
            if d.HasField("process"):
                if d.process.pid in processes:
                    found.append(f"process {d.process.pid} described twice")
                processes[d.process.pid] = d.uuid
    for d in tracks.values():
        if d.parent_uuid and d.parent_uuid not in tracks:
            found.append(f"track {d.name or d.uuid}: parent {d.parent_uuid} is not described")
        if d.HasField("thread"):
            if d.thread.pid not in processes:
                found.append(f"thread {d.thread.thread_name!r}: process {d.thread.pid} "
                             f"is not described")
            elif d.parent_uuid and d.parent_uuid != processes[d.thread.pid]:
                found.append(f"thread {d.thread.thread_name!r} is under another process")
    tids = collections.Counter(d.thread.tid for d in tracks.values() if d.HasField("thread"))
    found.extend(f"tid {tid} is used by {n} thread tracks (Perfetto keys threads by tid)"
                 for tid, n in tids.items() if n > 1)
    found.extend(f"tid {d.thread.tid} of {d.thread.thread_name!r} is also a pid"
                 for d in tracks.values() if d.HasField("thread")
                 and d.thread.tid in processes and d.thread.tid != d.thread.pid)
    stacks = collections.defaultdict(list)
    flows_out, flows_in = collections.Counter(), collections.Counter()
    last = {}
    for packet in trace.packet:
        if not packet.HasField("track_event"):
            continue
        event = packet.track_event
        track = tracks.get(event.track_uuid)
        if track is None:
            found.append(f"event {event.name!r} on undescribed track {event.track_uuid}")
            continue
        if packet.timestamp < last.get(event.track_uuid, 0):
            found.append(f"track {event.track_uuid}: time goes back at {event.name!r}")
        last[event.track_uuid] = packet.timestamp
        is_counter = track.HasField("counter")
        if event.type == pb.TrackEvent.TYPE_COUNTER:
            if not is_counter:
                found.append(f"counter value on track {track.name!r}, not a counter track")
            if not math.isfinite(event.double_counter_value):
                found.append(f"counter {track.name!r}: {event.double_counter_value}")
            continue
        if is_counter:
            found.append(f"{event.name!r} on counter track {track.name!r}")
        if event.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            stacks[event.track_uuid].append((event.name, packet.timestamp))
            flows_out.update(event.flow_ids)
            flows_in.update(event.terminating_flow_ids)
        elif event.type == pb.TrackEvent.TYPE_SLICE_END:
            if not stacks[event.track_uuid]:
                found.append(f"track {event.track_uuid}: an end with no begin open")
            else:
                stacks[event.track_uuid].pop()
        elif event.flow_ids or event.terminating_flow_ids:
            found.append(f"flow on {event.name!r}, which is not a slice begin")
    for uuid, stack in stacks.items():
        if stack:
            found.append(f"track {uuid}: {[name for name, _ in stack]} never end")
    for fid in set(flows_out) | set(flows_in):
        if flows_out[fid] != 1 or flows_in[fid] != 1:
            found.append(f"flow {fid}: leaves {flows_out[fid]} slices, ends on {flows_in[fid]}")
    return found


def proto_structure(trace) -> dict:
    """What ``trace`` (:func:`proto_trace`) holds: ``processes`` {pid:
    name}, ``threads`` {(pid, thread name)}, ``slices`` {(pid, thread
    name): [(begin ns, name)]}, ``flows`` {flow id: ((pid, thread, slice
    name), (pid, thread, slice name))} from the slice it leaves to the one
    it ends on, ``tracks`` {uuid: name} (any kind), ``counters`` {(pid,
    name): [values]}, ``async`` {(pid, track name): [slice names]}."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet
              if p.HasField("track_descriptor")}
    pid_of = {}

    def owner(uuid):
        d = tracks.get(uuid)
        while d is not None:
            if d.HasField("thread"):
                return d.thread.pid
            if d.HasField("process"):
                return d.process.pid
            d = tracks.get(d.parent_uuid)
        return None

    for uuid in tracks:
        pid_of[uuid] = owner(uuid)
    result = {"processes": {d.process.pid: d.process.process_name for d in tracks.values()
                            if d.HasField("process")},
              "threads": {(d.thread.pid, d.thread.thread_name) for d in tracks.values()
                          if d.HasField("thread")},
              "tracks": {u: d.thread.thread_name or d.name or d.process.process_name
                         for u, d in tracks.items()},
              "slices": collections.defaultdict(list), "counters": collections.defaultdict(list),
              "async": collections.defaultdict(list), "flows": {}}
    ends = collections.defaultdict(dict)
    for packet in trace.packet:
        if not packet.HasField("track_event"):
            continue
        event = packet.track_event
        d = tracks.get(event.track_uuid)
        if d is None:
            continue
        where = (pid_of[event.track_uuid], result["tracks"][event.track_uuid])
        if event.type == pb.TrackEvent.TYPE_COUNTER:
            result["counters"][where].append(event.double_counter_value)
        elif event.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
            kind = "slices" if d.HasField("thread") else "async"
            result[kind][where].append((packet.timestamp, event.name) if kind == "slices"
                                       else event.name)
            for fid in event.flow_ids:
                ends[fid]["from"] = (*where, event.name)
            for fid in event.terminating_flow_ids:
                ends[fid]["to"] = (*where, event.name)
    result["flows"] = {fid: (pair.get("from"), pair.get("to")) for fid, pair in ends.items()}
    return result
