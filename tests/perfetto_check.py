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
