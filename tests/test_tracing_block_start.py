"""Where a block started, and who ran it, even when no sample saw it (issue 19).

The blocking monitor's watchdog samples the loop thread's stack; a sample
shows where a block *was*, not where it began, and a watchdog that gets no
CPU while the block lasts takes no sample at all. The ring knows more: the
greenlet current when the gap began (kept with the stall in C), its resume
record, and its resume site -- the frames it resumed in, taken by the resume
writers as it resumed (loop_c/lk_trace_py.c). These tests fail without that.
"""
import sys
import time

import pytest
from helpers import line_of

import labkit
import tracing
from labkit._loop import ffi, lib

pytestmark = pytest.mark.timeout(60)

THRESHOLD = 0.05

#: the resume sites read the interpreter's frames, laid out as 3.10-3.13 have
#: them (loop_c/lk_trace_py.c); 3.14 takes none yet
needs_sites = pytest.mark.skipif(sys.version_info >= (3, 14),
                                 reason="no resume sites on 3.14 yet")


def _line_of(marker):
    return line_of(__file__, marker)


def _gil_holding_sum_size(seconds):
    """An n such that sum(range(n)) -- one C call that never releases the
    GIL -- takes about ``seconds`` here (at least 1e6)."""
    n = 2_000_000
    started = time.perf_counter()
    sum(range(n))
    took = max(time.perf_counter() - started, 1e-4)
    return max(1_000_000, int(n * seconds / took))


@needs_sites
def test_a_block_holding_the_gil_names_its_greenlet_and_start_line():
    # The watchdog thread needs the GIL to look at anything; one C call that
    # never releases it (sum over a range, a single bytecode) starves it for
    # the whole block. It can only report after the block, from the ring.
    n = _gil_holding_sum_size(4 * THRESHOLD)

    def hog():
        labkit.sleep(0.001)  # HOG-RESUMED
        sum(range(n))
        labkit.sleep(0)

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(hog)
        g.name = "hog"
        g.join()
    # (a loaded machine may add blocks of its own: descheduled greenlets)
    hogs = [b for b in t.blocking() if b.started is not None and
            b.started[:2] == (__file__, _line_of("HOG-RESUMED"))]
    assert len(hogs) == 1, t.blocking()
    block = hogs[0]
    assert block.duration >= THRESHOLD   # (sum's size is calibrated for 4x; a loaded machine varies)
    assert block.greenlet == "hog"
    assert block.started[2].endswith("hog")
    assert block.resumed_from == "sleep() (timer)"
    assert block.first == block.started   # the never-yielded lint's line
    assert f"started at test_tracing_block_start.py:{_line_of('HOG-RESUMED')}" in str(block)


@needs_sites
def test_a_block_no_sample_saw_still_names_its_greenlet_and_start(monkeypatch):
    # A watchdog that never sampled (as on a loaded machine, where it gets
    # no CPU while the block lasts): the block once read "(greenlet
    # unknown)" at "a line no stack sample caught".
    from tracing.blocking import BlockingMonitor
    monkeypatch.setattr(BlockingMonitor, "_sample", lambda self, sampling, count: None)
    event = labkit.event.Event()

    def waiter():
        event.wait()  # WAITER-RESUMED
        deadline = time.perf_counter() + 4 * THRESHOLD
        while time.perf_counter() < deadline:
            pass

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(waiter)
        g.name = "waiter"
        labkit.sleep(0.01)
        event.set()
        g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "waiter"]
    assert not block.sampled
    assert block.started[:2] == (__file__, _line_of("WAITER-RESUMED"))
    assert block.resumed_from == "wait() (Event)"
    text = str(block)
    assert "(waiter)" in text and "no stack sample" in text
    assert f"; started at test_tracing_block_start.py:{_line_of('WAITER-RESUMED')} in " in text
    assert text.endswith("waiter after wait() (Event)")   # (3.11+: its qualified name)
    # the never-yielded lint names the start line, and says no sample
    # caught the block rather than pointing "most samples" at "?"
    [lint] = [lint for lint in t.lints(never_yielded=THRESHOLD)
              if lint.kind == "never yielded" and lint.greenlet == "waiter"]
    assert f":{_line_of('WAITER-RESUMED')} in " in lint.line, lint
    assert "no stack sample caught it" in lint.evidence, lint
    assert "most samples at ?" not in lint.evidence, lint


def _crunch(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:  # CRUNCH
        pass


@needs_sites
def test_a_never_yielded_block_sampled_elsewhere_reports_where_it_started_and_where_it_was():
    # Sampled inside _crunch, started in worker right after its sleep: the
    # report gives both, and the lint's "first frame" is the start.
    def worker():
        labkit.sleep(0.001)  # WORKER-RESUMED
        _crunch(4 * THRESHOLD)  # WORKER-CALLS

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(worker)
        g.name = "worker"
        g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "worker"]
    if not block.sampled:
        pytest.skip("the watchdog got no CPU during the block (loaded machine)")
    assert (block.file, block.function) == (__file__, "_crunch")
    assert block.line in (_line_of("CRUNCH"), _line_of("CRUNCH") + 1)
    assert block.started[:2] == (__file__, _line_of("WORKER-RESUMED"))
    assert block.started[2].endswith("worker")
    assert block.first == block.started
    # worker's frame, where the run began, was on the sampled stack
    assert block.started_frame_sampled is True
    assert any(f"{line_of(__file__, 'WORKER-CALLS')} in" in entry and "worker" in entry
               for entry in block.stack), block.stack
    text = str(block)
    assert f"at test_tracing_block_start.py:{block.line} in _crunch (worker); started at " \
           f"test_tracing_block_start.py:{_line_of('WORKER-RESUMED')} in " in text
    assert "after sleep() (timer)" in text
    lints = [lint for lint in t.lints(never_yielded=THRESHOLD)
             if lint.kind == "never yielded" and lint.greenlet == "worker"]
    assert lints and f":{_line_of('WORKER-RESUMED')} in " in lints[0].line, lints


@needs_sites
def test_a_start_in_a_frame_that_returned_before_the_sample_is_still_exact():
    # The run began in _take (right after its Event wait); _take returned
    # and the greenlet then crunched in its caller. No stack sample can see
    # _take any more: only the resume site knows the block began there.
    event = labkit.event.Event()

    def _take():
        event.wait()  # TAKE-RESUMED
        return 1

    def consumer():
        _take()
        _crunch(4 * THRESHOLD)

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(consumer)
        g.name = "consumer"
        labkit.sleep(0.01)
        event.set()
        g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "consumer"]
    assert block.started[:2] == (__file__, _line_of("TAKE-RESUMED"))
    assert block.started[2].endswith("_take")
    assert block.resumed_from == "wait() (Event)"
    if block.sampled:
        assert block.function == "_crunch"
        assert block.started_frame_sampled is False   # _take had returned
        assert not any("_take" in entry for entry in block.stack), block.stack


def _first_runner(seconds, then=None):  # FIRST-RUN-DEF
    _crunch(seconds)  # FIRST-RUN-CALLS
    if then is not None:
        labkit.sleep(0)
        then.wait()


def test_a_block_in_a_greenlets_first_run_starts_at_its_function():
    # No switch since it started: there is no resume site (the greenlet had
    # no frame when it was switched to). The start is the function it runs,
    # not wherever a sample found it (_crunch's loop), sampled or not.
    done = labkit.event.Event()
    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(_first_runner, 4 * THRESHOLD, done)
        g.name = "first-runner"
        deadline = time.monotonic() + 20
        while not [b for b in tracing.recorder.active().blocks
                   if b.greenlet == "first-runner"]:
            assert time.monotonic() < deadline, "no block reported"
            labkit.sleep(0.01)
        done.set()
        g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "first-runner"]
    assert block.started == (__file__, _line_of("FIRST-RUN-DEF"), "_first_runner")
    assert block.first_run and block.resumed_from is None
    assert block.first == block.started   # the never-yielded lint's line
    text = str(block)
    assert f"started at test_tracing_block_start.py:{_line_of('FIRST-RUN-DEF')} in " \
           f"_first_runner, its first run" in text
    if block.sampled:
        assert block.function == "_crunch"
    [lint] = [lint for lint in t.lints(never_yielded=THRESHOLD)
              if lint.kind == "never yielded" and lint.greenlet == "first-runner"]
    assert f":{_line_of('FIRST-RUN-DEF')} in " in lint.line, lint


def test_a_first_run_that_ends_with_its_greenlet_starts_at_its_function_or_spawn():
    # The greenlet exits as the block ends, before it is reported: a sample
    # read its function while it ran; with no sample (the watchdog got no
    # CPU), the side table only has where it was spawned.
    from tracing.blocking import BlockingMonitor
    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(_first_runner, 4 * THRESHOLD)  # FIRST-RUN-SPAWN
        g.name = "first-runner"
        g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "first-runner"]
    assert block.first_run and block.first == block.started
    if block.sampled:
        assert block.started == (__file__, _line_of("FIRST-RUN-DEF"), "_first_runner")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(BlockingMonitor, "_sample", lambda self, sampling, count: None)
        with tracing.trace(blocking=THRESHOLD, report=False) as t:
            g = labkit.spawn(_first_runner, 4 * THRESHOLD)  # FIRST-RUN-SPAWN-2
            g.name = "first-runner"
            g.join()
    [block] = [b for b in t.blocking() if b.greenlet == "first-runner"]
    assert not block.sampled
    assert block.started == (__file__, _line_of("FIRST-RUN-SPAWN-2"), "_first_runner")
    assert block.first_run and block.first == block.started


def test_run_place_reads_the_function_or_the_spawn_site():
    import functools
    from tracing.blocking import run_place
    from tracing.recorder import Recorder
    recorder = Recorder(capacity=1024).start()
    try:
        hold = labkit.event.Event()
        g = labkit.spawn(functools.partial(_first_runner, 0, hold))   # a partial: its function
        dead = labkit.spawn(lambda: None)  # SPAWNED-HERE
        dead.join()
        assert run_place(recorder, id(g)) == (__file__, _line_of("FIRST-RUN-DEF"),
                                              "_first_runner")
        # gone (the side table dropped it at exit): where it was spawned
        file, line, _function = run_place(recorder, id(dead))
        assert (file, line) == (__file__, _line_of("SPAWNED-HERE"))
        assert run_place(recorder, 12345) is None and run_place(recorder, 0) is None
        # labkit's own function (a server's handler): the samples find the user's code
        internal = labkit.spawn(labkit.sleep, 10)
        labkit.sleep(0)
        assert run_place(recorder, id(internal)) is None
        internal.kill()
        hold.set()
        g.join()
    finally:
        recorder.stop(read=False)


def test_a_block_in_a_hub_callback_has_no_greenlet_start():
    def callback():
        _crunch(4 * THRESHOLD)

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        labkit.get_hub().run_callback(callback)
        labkit.sleep(0.01)
        labkit.sleep(0.01)
    [block] = t.blocking()
    assert block.greenlet == "hub" and block.started is None


# -- the ring's stall record and its resume sites, directly ----------------------

def _ring_with_writer(capacity=64, threshold_ns=10_000_000):
    from labkit._lk_trace_py import configure_sites, resumers, writer
    from tracing.recorder import NOT_USER_CODE
    ring = lib.lk_trace_new(capacity)
    address = int(ffi.cast("uintptr_t", ring))
    configure_sites(address, NOT_USER_CODE)
    lib.lk_trace_set_stall_threshold(ring, threshold_ns)
    labels = {None: 0, "Event": 1}
    resume, _ = resumers(address, labels)
    return ring, address, writer(address), resume


def _free(ring, address):
    from labkit._lk_trace_py import release_sites
    release_sites(address)
    lib.lk_trace_free(ring)


@needs_sites
def test_a_stall_keeps_who_ran_and_its_resume_record_and_site():
    from labkit._lk_trace_py import sites
    ring, address, record, resume = _ring_with_writer()
    try:
        g = object()
        resume(g, lib.LK_WHY_WAITER, "Event")  # SITE-LINE
        time.sleep(0.03)                       # the "block": no record for 30 ms
        record(lib.LK_TR_RESUME, 12345, lib.LK_WHY_READY, 0)   # someone else
        state = ffi.new("lk_trace_state *")
        lib.lk_trace_get_state(ring, state)
        assert state.stalls == 1
        assert state.stall_current == id(g)
        assert state.stall_start_kind == lib.LK_TR_RESUME
        assert (state.stall_resume_why, state.stall_resume_b) == (lib.LK_WHY_WAITER, 1)
        assert state.stall_resume_ns == state.stall_start_ns
        assert state.current == 12345 and state.current_seq == state.stall_resume_seq + 1
        # the stalled greenlet's site was kept; the newest is the other's
        seq, gid, levels = sites(address, state.stall_resume_seq)
        assert (seq, gid) == (state.stall_resume_seq, id(g))
        code, lasti, key = levels[-1]
        assert code.co_filename == __file__ and len(levels) == 1   # no park function here
        from tracing.blocking import _line_of as line_of_lasti
        assert line_of_lasti(code, lasti) == _line_of("SITE-LINE")
        assert sites(address, state.current_seq)[1] == 12345
        assert sites(address, 10**6) is None
    finally:
        _free(ring, address)


def test_no_site_is_taken_unless_stalls_are_watched():
    from labkit._lk_trace_py import sites
    ring, address, record, resume = _ring_with_writer(threshold_ns=0)
    try:
        resume(object(), lib.LK_WHY_READY, None)
        state = ffi.new("lk_trace_state *")
        lib.lk_trace_get_state(ring, state)
        assert state.current_seq == 0
        assert sites(address, 0) is None
    finally:
        _free(ring, address)


def test_the_site_functions_check_their_arguments():
    from labkit._lk_trace_py import configure_sites, release_sites, sites
    with pytest.raises(TypeError, match="address"):
        sites("ring", 0)
    with pytest.raises(ValueError, match="NULL"):
        release_sites(0)
    ring = lib.lk_trace_new(8)
    address = int(ffi.cast("uintptr_t", ring))
    try:
        with pytest.raises(TypeError, match="prefixes must be a tuple"):
            configure_sites(address, ["/x/"])
        with pytest.raises(TypeError, match="prefixes must be str"):
            configure_sites(address, (b"/x/",))
        with pytest.raises(TypeError):
            sites(address)
    finally:
        release_sites(address)
        lib.lk_trace_free(ring)
