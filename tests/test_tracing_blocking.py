"""tracing.blocking: the watchdog reports blocks with their measured duration
and the user line that blocked, in greenlets and hub callbacks, and nothing
for cooperative code."""
import time

import pytest
from helpers import line_of

import labkit
import tracing

pytestmark = pytest.mark.timeout(60)

THRESHOLD = 0.05


def _line_of(marker):
    return line_of(__file__, marker)


def test_time_sleep_in_a_greenlet_is_reported_once_with_its_duration_and_line():
    def blocker():
        time.sleep(0.2)  # BLOCK-SLEEP

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        started = time.perf_counter()
        labkit.spawn(blocker).join()
        around = time.perf_counter() - started
    [block] = t.blocking()
    # Measured from the ring's records: it holds the sleep and lies within
    # the spawn-and-join around it (the same clock), however loaded the
    # machine (not "about 0.2 s": scheduling delays only add).
    assert 0.2 <= block.duration <= around
    assert block.file == __file__ and block.line == _line_of("BLOCK-SLEEP")
    assert block.function == "blocker" and block.greenlet.startswith("Greenlet-")


def test_busy_cpu_loop_is_reported_with_its_duration():
    def spin():
        deadline = time.perf_counter() + 0.2
        while time.perf_counter() < deadline:  # BLOCK-SPIN
            pass

    seen = []
    with tracing.trace(blocking=THRESHOLD, callback=seen.append, report=False) as t:
        started = time.perf_counter()
        g = labkit.spawn(spin)
        g.name = "spinner"
        g.join()
        around = time.perf_counter() - started
    [block] = t.blocking()
    assert seen == [block]
    assert 0.2 <= block.duration <= around
    assert block.line in (_line_of("BLOCK-SPIN"), _line_of("BLOCK-SPIN") + 1)
    assert block.greenlet == "spinner"


def test_cooperative_sleeping_gives_no_report():
    def napper(step):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            labkit.sleep(step)

    monitor = tracing.monitor_blocking(THRESHOLD, report=False)
    try:
        labkit.joinall([labkit.spawn(napper, 0.01), labkit.spawn(napper, 0),
                        labkit.spawn(napper, 0.3)])
    finally:
        monitor.stop()
    assert monitor.blocks == []


def test_block_in_a_hub_callback_is_reported():
    def callback():
        time.sleep(0.15)  # BLOCK-CALLBACK

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        started = time.perf_counter()
        labkit.get_hub().run_callback(callback)
        labkit.sleep(0.01)
        around = time.perf_counter() - started
    [block] = t.blocking()
    assert block.greenlet == "hub"
    assert block.line == _line_of("BLOCK-CALLBACK")
    assert 0.15 <= block.duration <= around


def test_default_report_is_one_line_on_stderr(capsys):
    monitor = tracing.monitor_blocking(THRESHOLD)
    try:
        def blocker():
            time.sleep(0.12)
        labkit.spawn(blocker).join()
    finally:
        monitor.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("labkit: blocked the loop for ")
    assert "test_tracing_blocking.py:" in err[0] and "in blocker (" in err[0]


def test_main_greenlet_working_while_the_loop_is_idle_is_not_a_block():
    monitor = tracing.monitor_blocking(THRESHOLD, report=False)
    try:
        labkit.sleep(0)
        time.sleep(0.15)   # nothing waits for the loop: nobody is blocked
        labkit.sleep(0)
    finally:
        monitor.stop()
    assert monitor.blocks == []


class _LateWatchdog:
    """Stands in for tracing.blocking's ``lib``: once, after the watchdog
    read a snapshot showing a block in progress, it holds the watchdog until
    the loop has finished that block and is waiting in poll, then hands back
    the stale snapshot -- as when the OS deschedules the watchdog thread
    between reading the ring and sampling the stack (two loaded cores)."""

    def __init__(self, lib, ffi, after):
        self._lib, self._ffi, self._after = lib, ffi, after
        self.held = False

    def __getattr__(self, name):
        return getattr(self._lib, name)

    def lk_trace_get_state(self, ring, out):
        lib = self._lib
        lib.lk_trace_get_state(ring, out)
        if self.held or out.last_kind == lib.LK_TR_POLL_ENTER or \
                out.now_ns - out.last_ns < self._after * 1e9:
            return
        self.held = True
        stale = self._ffi.new("lk_trace_state *", out[0])
        now = self._ffi.new("lk_trace_state *")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # until the block ended and the hub polls
            lib.lk_trace_get_state(ring, now)
            if now.stalls != stale.stalls and now.last_kind == lib.LK_TR_POLL_ENTER:
                break
            time.sleep(0.001)
        out[0] = stale[0]


def test_a_sample_taken_after_the_block_ended_does_not_blame_the_hub(monkeypatch):
    # The watchdog reads the ring, then samples the loop thread's stack. If
    # the block ends in between, the stack is the hub's (polling): that
    # sample says nothing about the block and must not turn the greenlet
    # that blocked into "hub".
    import tracing.blocking
    late = _LateWatchdog(tracing.blocking.lib, tracing.blocking.ffi, after=0.1)
    monkeypatch.setattr(tracing.blocking, "lib", late)

    def blocker():
        time.sleep(0.25)  # BLOCK-LATE-SAMPLE

    with tracing.trace(blocking=THRESHOLD, report=False) as t:
        g = labkit.spawn(blocker)
        g.name = "blocker"
        g.join()
        labkit.sleep(0.3)   # the hub polls while the held watchdog samples
    assert late.held
    [block] = t.blocking()
    assert block.greenlet == "blocker"
    assert block.function == "blocker" and block.line == _line_of("BLOCK-LATE-SAMPLE")
