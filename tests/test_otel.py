"""OpenTelemetry with labkit: the real SDK, an in-memory exporter.

labkit copies the spawner's contextvars into each greenlet (and into each
thread-pool job), and OpenTelemetry keeps its current span in a contextvar,
so a span started in a spawned greenlet has the spawner's span as parent --
the parent ids gevent loses. tracing.otel bridges the two tracers.
"""
import json
import time

import pytest

import labkit
from labkit.pool import Pool
from labkit.threadpool import ThreadPool

otel_trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def otel():
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, provider.get_tracer("labkit-tests"), exporter
    provider.shutdown()


def test_parent_ids_survive_spawn_pool_spawn_later_and_thread_pool_hops(otel):
    _, tracer, exporter = otel
    pool, threads = Pool(10), ThreadPool(2)

    def child(kind, i):
        with tracer.start_as_current_span(f"{kind}-child-{i}"):
            labkit.sleep(0)

    def thread_child(i):   # runs in a real thread: no labkit.sleep here
        with tracer.start_as_current_span(f"thread-child-{i}"):
            pass

    expected = {}   # child span name -> parent span name
    hops = {
        "spawn": lambda i: labkit.spawn(child, "spawn", i).join(),
        "pool": lambda i: pool.spawn(child, "pool", i).join(),
        "later": lambda i: labkit.spawn_later(0.0005, child, "later", i).join(),
        "thread": lambda i: threads.spawn(thread_child, i).get(),
    }

    def one(kind, i):
        with tracer.start_as_current_span(f"{kind}-parent-{i}"):
            hops[kind](i)
        expected[f"{kind}-child-{i}"] = f"{kind}-parent-{i}"

    # 125 rounds of 4 hops: 1,000 spans, the hops interleaved in 25 greenlets
    def rounds(start):
        for i in range(start, start + 5):
            for kind in hops:
                one(kind, i)

    labkit.joinall([labkit.spawn(rounds, n * 5) for n in range(25)], raise_error=True)
    threads.kill()
    spans = exporter.get_finished_spans()
    assert len(spans) == 1000
    by_name = {s.name: s for s in spans}
    wrong = [(name, parent) for name, parent in expected.items()
             if by_name[name].parent is None
             or by_name[name].parent.span_id != by_name[parent].context.span_id
             or by_name[name].context.trace_id != by_name[parent].context.trace_id]
    assert wrong == []
    # each parent is a root: 500 traces, none shared by two rounds
    assert len({s.context.trace_id for s in spans}) == 500


def _blocked_span(exporter, greenlet):
    """The last ``labkit.blocked`` span of the greenlet named ``greenlet``, or None."""
    found = [s for s in exporter.get_finished_spans()
             if s.name == "labkit.blocked" and s.attributes.get("labkit.greenlet") == greenlet]
    return found[-1] if found else None


def test_the_bridge_makes_greenlets_spans_and_puts_otel_spans_on_the_timeline(otel, tmp_path):
    from tracing import flight, otel as bridge_module
    provider, tracer, exporter = otel
    fr = flight.start(tmp_path, report=False, threshold=0.05, before=5, after=0)
    bridge = bridge_module.instrument(provider, greenlets=True, blocking=True)
    try:
        def handler():
            with tracer.start_as_current_span("handle"):
                labkit.sleep(0.001)

        def blocker():
            time.sleep(0.1)   # a block: reported as an OTel span with its line

        with tracer.start_as_current_span("request") as request:
            worker = labkit.spawn(handler)
            worker.name = "handler-greenlet"
            worker.join()
            labkit.spawn(blocker).name = "blocker"
            labkit.sleep(0.2)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _blocked_span(exporter, "blocker"):
            labkit.sleep(0.02)
        path = fr.dump()
    finally:
        bridge.close()
        fr.stop()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    # (the blocker's: on a loaded machine, the hub descheduled past the
    # threshold is reported too, as a block of its own)
    spans["labkit.blocked"] = _blocked_span(exporter, "blocker")
    greenlet_span = spans["greenlet handler-greenlet"]
    # request -> the greenlet's span -> the span made inside the greenlet
    assert greenlet_span.parent.span_id == request.get_span_context().span_id
    assert spans["handle"].parent.span_id == greenlet_span.context.span_id
    assert greenlet_span.attributes["labkit.spawn_site"].startswith("test_otel.py:")
    blocked = spans["labkit.blocked"]
    assert blocked.attributes["code.lineno"] > 0 and "test_otel.py" in \
        blocked.attributes["code.filepath"]
    assert blocked.end_time - blocked.start_time >= 0.09e9
    # the labkit file shows the OTel spans with their ids, on this process's track
    events = json.loads(open(path, encoding="utf-8").read())["traceEvents"]
    handle_id = format(spans["handle"].context.span_id, "016x")
    assert [e["name"] for e in events if e.get("cat") == "otel" and e["ph"] in "Xb"
            and e["args"]["span_id"] == handle_id] == ["handle"]
    lane, row, start, end, args = _otel_slices(events)["handle"]
    assert args["trace_id"] == format(spans["handle"].context.trace_id, "032x")
    assert args["greenlet"] == "handler-greenlet"
    # a slice on the greenlet's own thread, inside the dump's time range
    assert (lane, row) == ("handler-greenlet", "thread") and 0 <= start <= end


def test_a_block_no_sample_caught_is_placed_where_it_started():
    """On a busy machine the watchdog may take no sample during a block:
    its span then carries where the block started, not the report's "?:0"."""
    from tracing import otel as bridge_module
    from tracing.model import Block
    sampled = Block(start=0, duration=0.1, greenlet="g", file="/app/a.py", line=7,
                    function="work", started=("/app/a.py", 3, "work"))
    assert bridge_module._code_attributes(sampled) == {
        "labkit.sampled": True, "labkit.stack": [], "code.filepath": "/app/a.py",
        "code.lineno": 7, "code.function": "work"}
    unsampled = Block(start=0, duration=0.1, greenlet="g", file="?", line=0,
                      function="?", started=("/app/a.py", 3, "work"), first_run=True)
    unsampled.first = unsampled.started
    assert bridge_module._code_attributes(unsampled) == {
        "labkit.sampled": False, "labkit.stack": [], "code.filepath": "/app/a.py",
        "code.lineno": 3, "code.function": "work"}
    nowhere = Block(start=0, duration=0.1, greenlet="?", file="?", line=0, function="?")
    nowhere.first = ("?", 0, "?")
    assert bridge_module._code_attributes(nowhere) == {"labkit.sampled": False,
                                                       "labkit.stack": []}


def test_instrument_checks_its_arguments():
    from tracing import otel as bridge_module
    with pytest.raises(TypeError, match="tracer_provider"):
        bridge_module.instrument(object())


def _otel_slices(events):
    """name -> (lane name, row, start, end, args) of the otel slices: row
    "thread" for a complete ("X") slice on the lane's own thread, else the
    async id of an async slice, paired the way Perfetto pairs them (per id,
    the latest begin)."""
    lanes = {e["tid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
    open_, found = {}, {}
    for e in events:
        if e.get("cat") == "otel" and e["ph"] == "X":
            found[e["name"]] = (lanes[e["tid"]], "thread", e["ts"], e["ts"] + e["dur"],
                                e["args"])
    for e in sorted((e for e in events if e.get("cat") == "otel" and e["ph"] in "be"),
                    key=lambda e: (round(e["ts"] * 1000), e["ph"] == "b")):
        if e["ph"] == "b":
            open_.setdefault(e["id"], []).append(e)
        else:
            begin = open_[e["id"]].pop()
            assert begin["name"] == e["name"]
            found[e["name"]] = (lanes[begin["tid"]], e["id"], begin["ts"], e["ts"], begin["args"])
    return found


def test_trace_to_perfetto_shows_otel_spans_on_the_greenlet_lanes(otel, tmp_path):
    import perfetto_check
    import tracing
    from tracing import otel as bridge_module
    provider, tracer, exporter = otel
    threads = ThreadPool(1)

    def handler(i):
        with tracer.start_as_current_span(f"handle-{i}"):
            labkit.sleep(0.002)
            with tracer.start_as_current_span(f"inner-{i}"):
                labkit.sleep(0.001)

    def in_a_thread():
        with tracer.start_as_current_span("thread-job"):
            time.sleep(0.001)

    path = tmp_path / "trace.json"
    with tracing.trace() as trace:
        bridge = bridge_module.instrument(provider, greenlets=True, blocking=False)
        workers = [labkit.spawn(handler, i) for i in range(3)]
        for i, g in enumerate(workers):
            g.name = f"h{i}"
        labkit.joinall(workers, raise_error=True)
        threads.spawn(in_a_thread).get()
    try:
        trace.to_perfetto(path)   # the spans the open bridge kept, in the trace's window
    finally:
        bridge.close()
        threads.kill()
    doc = json.loads(path.read_text())
    assert perfetto_check.problems(doc) == []
    slices = _otel_slices(doc["traceEvents"])
    finished = {s.name: s for s in exporter.get_finished_spans()}
    for i in range(3):
        lane, row, start, end, args = slices[f"handle-{i}"]
        assert lane == f"h{i}" and args["greenlet"] == f"h{i}"
        assert args["span_id"] == format(finished[f"handle-{i}"].context.span_id, "016x")
        inner = slices[f"inner-{i}"]
        assert inner[:2] == (lane, row) and start <= inner[2] <= inner[3] <= end  # nested
        # the greenlet's lifetime span is on its own lane, not its spawner's
        life = slices[f"greenlet h{i}"]
        assert life[0] == lane and life[2] <= start and end <= life[3]
        # they nest, so they are slices of the greenlet's own thread (Perfetto's
        # JSON importer puts async slices on process tracks, whatever their tid),
        # parents of its running slices, which are cut where a span begins
        assert row == life[1] == "thread"
        tid = next(e["tid"] for e in doc["traceEvents"] if e.get("name") == "thread_name"
                   and e["args"]["name"] == lane)
        runs = [e for e in doc["traceEvents"] if e.get("ph") == "X" and e["tid"] == tid
                and e["cat"] == "run"]
        assert any(round(e["ts"] * 1000) == round(start * 1000) for e in runs)
        assert any(start <= e["ts"] and e["ts"] + e["dur"] <= end for e in runs)
    assert slices["thread-job"][:2] == ("otel: other threads", "thread")


def test_spans_that_overlap_without_nesting_stay_async_slices(otel, tmp_path):
    import perfetto_check
    import tracing
    from tracing import otel as bridge_module
    provider, tracer, _ = otel

    def interleaved():
        first = tracer.start_span("first")
        labkit.sleep(0.002)
        second = tracer.start_span("second")
        labkit.sleep(0.002)
        first.end()              # ends inside "second", which began inside it
        labkit.sleep(0.002)
        second.end()

    with tracing.trace() as trace:
        bridge = bridge_module.instrument(provider, blocking=False)
        g = labkit.spawn(interleaved)
        g.name = "interleaved"
        g.join()
    try:
        trace.to_perfetto(tmp_path / "trace.json")
    finally:
        bridge.close()
    doc = json.loads((tmp_path / "trace.json").read_text())
    assert perfetto_check.problems(doc) == []
    slices = _otel_slices(doc["traceEvents"])
    assert slices["first"][:2] == ("interleaved", "thread")     # the first one fits
    lane, row, start, end, _ = slices["second"]
    assert lane == "interleaved" and row != "thread"           # the other one cannot
    assert slices["first"][2] < start < slices["first"][3] < end


def test_trace_to_perfetto_proto_has_an_otel_track_under_each_greenlet(otel, tmp_path):
    pb = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    import tracing
    from tracing import otel as bridge_module
    provider, tracer, _ = otel

    def handler():
        with tracer.start_as_current_span("handle"):
            labkit.sleep(0.001)

    path = tmp_path / "trace.pftrace"
    with bridge_module.instrument(provider, blocking=False):
        with tracing.trace() as trace:
            g = labkit.spawn(handler)
            g.name = "proto-handler"
            g.join()
        trace.to_perfetto_proto(path)
    parsed = pb.Trace()
    parsed.ParseFromString(path.read_bytes())
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in parsed.packet
              if p.HasField("track_descriptor")}
    (otel_track,) = [d for d in tracks.values() if d.name == "proto-handler: otel"]
    assert tracks[otel_track.parent_uuid].thread.thread_name == "proto-handler"
    names = [p.track_event.name for p in parsed.packet if p.HasField("track_event")
             and p.track_event.track_uuid == otel_track.uuid]
    assert "handle" in names


def test_spawn_raw_greenlets_get_spans_that_end_when_they_do(otel):
    import tracing
    from labkit.hub import spawn_raw
    from tracing import otel as bridge_module
    provider, tracer, exporter = otel

    def raw_work(n, finished):
        with tracer.start_as_current_span(f"raw-inner-{n}"):
            labkit.sleep(0.001)
        finished.append(n)

    def raw_fails(finished):
        finished.append("fails")
        raise ValueError("boom")

    with tracing.trace():
        with bridge_module.instrument(provider, greenlets=True, blocking=False):
            finished = []
            with tracer.start_as_current_span("spawner") as spawner:
                spawn_raw(raw_work, 1, finished)
                spawn_raw(raw_fails, finished)
                spawn_raw(lambda: labkit.sleep(0.001))
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and len(finished) < 2:
                labkit.sleep(0.005)
            labkit.sleep(0.01)
    # (named after the function's qualified name: test_....<locals>.raw_work)
    spans = {s.name.rpartition(".")[2]: s for s in exporter.get_finished_spans()}
    work = spans["raw_work"]
    assert work.attributes["labkit.raw"] is True
    assert work.parent.span_id == spawner.get_span_context().span_id
    inner = spans["raw-inner-1"]
    assert inner.parent.span_id == work.context.span_id
    assert work.start_time <= inner.start_time and inner.end_time <= work.end_time
    failed = spans["raw_fails"]
    assert failed.status.status_code == otel_trace.StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]
    assert spans["<lambda>"].status.status_code != otel_trace.StatusCode.ERROR
