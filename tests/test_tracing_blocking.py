"""tracing.blocking: the watchdog reports blocks with their measured duration
and the user line that blocked, in greenlets and hub callbacks, and nothing
for cooperative code."""
import os
import threading
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


def _schedstat(native_id):
    """(ns on a CPU, ns waiting for one while runnable) of thread
    ``native_id`` so far (Linux: /proc schedstat), or None where unknown."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


def test_cooperative_sleeping_gives_no_report(monkeypatch):
    def napper(step):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            labkit.sleep(step)

    # napper(0) keeps the loop thread busy for 2 s. On a loaded machine the
    # OS may leave it waiting for a CPU for longer than the threshold: the
    # loop is stalled then, and the monitor says so, but the code is not
    # the cause. So each watchdog check also notes the loop thread's CPU
    # accounting, and a block counts against the code unless, between the
    # checks around it, the thread waited for a CPU for all of the block but
    # less than a threshold, and neither ran (a busy loop) nor was off the
    # CPU by its own doing (a blocking call) for a threshold. Unloaded, the
    # wait is ~0: every block counts.
    import tracing.blocking
    loop_thread = threading.get_native_id()
    notes = []   # (monotonic ns, ns on a CPU, ns waiting for one)
    check = tracing.blocking.BlockingMonitor._check

    def note():
        stat = _schedstat(loop_thread)
        if stat is not None:
            notes.append((time.monotonic_ns(), *stat))

    def noting_check(self, state, final=False):
        note()
        return check(self, state, final)

    monkeypatch.setattr(tracing.blocking.BlockingMonitor, "_check", noting_check)
    # The watchdog sleeps half a threshold while the loop makes progress:
    # a thread of our own notes more often, so that the notes around a
    # block are close to it whatever the watchdog's rhythm.
    done = threading.Event()

    def noter():
        while not done.wait(THRESHOLD / 10):
            note()

    note()   # before the first check: a block may come before it
    noting = threading.Thread(target=noter)
    noting.start()
    monitor = tracing.monitor_blocking(THRESHOLD, report=False)
    try:
        labkit.joinall([labkit.spawn(napper, 0.01), labkit.spawn(napper, 0),
                        labkit.spawn(napper, 0.3)])
    finally:
        monitor.stop()
        done.set()
        noting.join()
        note()
    notes.sort()   # (two threads took them)

    def descheduled(block):
        start = monitor._start_ns + block.start * 1e9
        end = start + block.duration * 1e9
        before = [n for n in notes if n[0] <= start]
        after = [n for n in notes if n[0] >= end]
        if not (before and after):
            return False
        (t0, ran0, waited0), (t1, ran1, waited1) = before[-1], after[0]
        waited, ran = (waited1 - waited0) / 1e9, (ran1 - ran0) / 1e9
        asleep = (t1 - t0) / 1e9 - ran - waited
        return block.duration - waited < THRESHOLD and ran < THRESHOLD and asleep < THRESHOLD

    assert [b for b in monitor.blocks if not descheduled(b)] == []


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


def test_each_block_is_also_an_event_loop_blocked_event_for_labkit_events():
    from labkit import events
    seen = []
    events.subscribers.append(seen.append)
    try:
        def blocker():
            time.sleep(0.2)  # BLOCK-FOR-EVENT

        with tracing.trace(blocking=THRESHOLD, report=False):
            labkit.spawn(blocker).join()
    finally:
        events.subscribers.remove(seen.append)
    [event] = [e for e in seen if isinstance(e, events.EventLoopBlocked)]
    assert event.greenlet.startswith("Greenlet-") and event.blocking_time >= 0.2
    assert event.hub is labkit.get_hub()
    assert f"test_tracing_blocking.py:{_line_of('BLOCK-FOR-EVENT')}" in event.info[0]


# -- the cause of a block: CPU, GC, or off the CPU ------------------------------------

def _one_block(fn, threshold=0.1):
    with tracing.trace(blocking=threshold, report=False) as t:
        labkit.spawn(fn).join()
    blocks = [b for b in t.blocking() if b.duration >= threshold]
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_a_cpu_loop_is_told_cpu_bound_in_its_function():
    def parse():   # 0.3 s of CPU time, however busy the machine
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass

    block = _one_block(parse)
    cause = block.cause
    assert cause.kind == "cpu", cause.split()
    assert str(cause).startswith("CPU-bound in parse()")
    assert cause.cpu >= 0.25
    assert abs(cause.cpu + cause.gc + cause.off_cpu - cause.wall) < 1e-6


def test_collecting_a_large_cyclic_heap_is_told_a_gc_pause():
    import gc

    class Node:
        pass

    heap = []
    for _ in range(300_000):
        a, b = Node(), Node()
        a.other, b.other = b, a
        heap.append(a)
    gc.disable()   # only the explicit collection below may run it
    try:
        heap.clear()   # 600,000 objects in cycles, unreachable now

        def collect():
            gc.collect()

        block = _one_block(collect, threshold=0.05)
    finally:
        gc.enable()
    cause = block.cause
    assert cause.kind == "gc", cause.split()
    assert str(cause).startswith("GC pause")
    assert cause.gc >= max(cause.cpu, cause.off_cpu - cause.descheduled)


def test_a_real_blocking_recv_is_told_a_blocking_syscall_in_its_function():
    import socket   # the standard library's: it blocks the thread
    left, right = socket.socketpair()

    def legacy_client():
        left.recv(1)

    sender = threading.Timer(0.3, right.send, (b"x",))
    sender.start()
    try:
        block = _one_block(legacy_client)
    finally:
        sender.join()
        left.close()
        right.close()
    cause = block.cause
    assert cause.kind == "syscall", cause.split()
    assert cause.call == "recv" and cause.syscall in ("recvfrom", "read", "recvmsg")
    assert str(cause).startswith("a blocking syscall (recv") and "legacy_client()" in str(cause)
    assert cause.off_cpu - cause.descheduled >= max(cause.cpu, cause.gc)


_DESCHEDULED_CHILD = r'''
import json, os, subprocess, sys, time
import labkit, tracing
cpu = min(os.sched_getaffinity(0))
os.sched_setaffinity(0, {cpu})
hog = subprocess.Popen([sys.executable, "-S", "-c",
                        f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
try:
    time.sleep(0.2)
    def step():   # 10 ms of CPU: a cooperative chunk, far under the threshold
        deadline = time.thread_time() + 0.01
        while time.thread_time() < deadline:
            pass
    with tracing.trace(blocking=0.1, report=False) as t:
        g = labkit.Greenlet(step)
        labkit.sleep(0.01)
        os.nice(19)   # from now on the hog gets ~98% of this core
        g.start()
        g.join()
    print(json.dumps([(b.function, b.cause.kind, str(b.cause), b.cause.cpu, b.duration)
                      for b in t.blocking()]))
    # the lint states the fact, and its evidence says the machine took the time
    print(json.dumps([str(lint) for lint in t.lints(never_yielded=0.05)]))
finally:
    hog.kill()
    hog.wait()
'''


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or not hasattr(os, "nice"),
                    reason="needs Linux CPU affinity")
def test_a_short_step_on_a_core_another_process_hogs_is_told_descheduled():
    # A child process pins itself and a busy-looping hog to one core, lowers
    # its own priority, then runs 10 ms of CPU work in a greenlet: the block
    # lasts far longer than its CPU time, and the thread was runnable.
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _DESCHEDULED_CHILD], capture_output=True,
                         text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    blocks = [b for b in json.loads(out.stdout.splitlines()[-2]) if b[0] == "step"]
    lints = json.loads(out.stdout.splitlines()[-1])
    [lint] = [lint for lint in lints if lint.startswith("never yielded: step")]
    assert "descheduled: the machine was busy" in lint
    assert blocks, out.stdout
    function, kind, text, cpu, duration = blocks[0]
    assert kind == "descheduled", text
    assert text.startswith("descheduled: the machine was busy") and cpu < 0.1 < duration


def test_a_block_no_sample_caught_says_so_instead_of_question_marks():
    # On a busy machine the watchdog thread may get no CPU while a block
    # lasts: no stack sample, so no place. The report once read
    # "at ?:0 in ? (?)"; it must say in words that the place is unknown.
    from tracing.magics import _block_text
    from tracing.model import Block

    unknown = Block(start=0.0, duration=0.25, greenlet="?", file="?", line=0, function="?")
    for text in (str(unknown), _block_text(unknown), _block_text(unknown, cell_file="?")):
        assert "?" not in text, text
        assert "250 ms" in text and "no stack sample" in text, text
    known = Block(start=0.0, duration=0.25, greenlet="worker", file="/x/app.py", line=12,
                  function="parse")
    assert str(known) == "blocked the loop for 250 ms at app.py:12 in parse (worker)"


def test_the_watchdog_wakes_once_per_half_threshold_while_the_loop_makes_progress():
    # Each wake of the watchdog thread costs tens of microseconds of CPU
    # (issue 20: the flight recorder's cost). A block is worth a sample
    # half a threshold after the newest record at the earliest, so a loop
    # that keeps writing records (or waits in poll) needs no more wakes
    # than one per half threshold. Load only delays wakes: the bound holds.
    from tracing.blocking import BlockingMonitor

    threshold = 0.4
    monitor = BlockingMonitor(threshold, report=False)
    checks = []
    check = monitor._check

    def counting(state, final=False):
        if not final:
            checks.append(time.monotonic())
        return check(state, final)

    monitor._check = counting
    monitor.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            labkit.sleep(0.005)        # progress: poll and resume records
        elapsed = time.monotonic() - started
    finally:
        monitor.stop()
    assert monitor.blocks == []
    # one wake per threshold/2 (+1 for the phase, +1 for a wake that finds
    # the gap a hair short of half the threshold and sleeps the rest)
    assert 1 <= len(checks) <= elapsed / (threshold / 2) + 2, checks

    # ... and a block still gets its line from a sample taken in it.
    def blocker():
        time.sleep(threshold * 1.5)  # BLOCK-AFTER-LONG-SLEEP

    with tracing.trace(blocking=threshold, report=False) as t:
        labkit.sleep(0.3)              # the watchdog is in its long sleep
        labkit.spawn(blocker).join()
    [block] = t.blocking()
    assert block.function == "blocker" and block.line == _line_of("BLOCK-AFTER-LONG-SLEEP")


def test_stuck_now_is_the_block_while_it_lasts_and_none_once_it_ended():
    # monitor.stuck is cleared by the watchdog when it next looks, which
    # on a busy machine may be after the loop thread asks (%labkit_status
    # said "and still stuck" about a block that had ended). stuck_now()
    # reads the ring: a record written since the block began ends it.
    from tracing.blocking import BlockingMonitor

    during = []
    monitor = BlockingMonitor(0.02, report=False, stuck_after=0.1)
    # (from the watchdog thread, while the loop is still held)
    monitor.on_stuck = lambda stuck: during.append((stuck, monitor.stuck_now()))
    monitor.start()
    try:
        def holder():
            deadline = time.monotonic() + 10
            while not during and time.monotonic() < deadline:
                pass  # HOLD

        labkit.spawn(holder).join()
        assert during, "the watchdog never reported the block as stuck"
        [(stuck, now)] = during
        assert now is stuck and stuck.since_ns is not None
        # As if the watchdog had not looked since the block ended:
        monitor.stuck = monitor.last_stuck
        assert monitor.stuck is stuck and monitor.stuck_now() is None
    finally:
        monitor.stop()
