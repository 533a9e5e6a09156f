"""How long attaching pauses the target: ``python -m labkit.bench.console_pause``.

    python -m labkit.bench.console_pause                    N = 10, 100, 1000 greenlets
    python -m labkit.bench.console_pause --greenlets 10000 --frames 10
    python -m labkit.bench.console_pause --in-process       the console's capture, here
    python -m labkit.bench.console_pause --machine 60       the control alone (below)

For each N, a child process runs with ``LABKIT_CONSOLE=1``: N greenlets
parked on one Event and a ticker sleeping 1 ms in a loop. This process
attaches (tracing.attach.AttachClient), asks for ``--frames`` frames 250 ms
apart -- the refresh of ``python -m labkit console`` -- and prints what the
target's server measured for each: the longest stretch it held the loop
(``frame["served"]["pause_ms"]``, the capture and encoding are done in
pieces with a yield between; and the same in the target thread's CPU time,
``pause_cpu_ms``, which a machine that deschedules the target mid-piece
does not lengthen), as median and maximum over the frames (the
first is left out of both: it meets every greenlet for the first time)
and the first frame's on its own ("first", CPU ms), plus the loop lag
the target's own snapshot saw and the client's round trip. "no GC": the
longest piece in CPU time less the cyclic collector's share of it (what
the frame's own work held the loop for, ``served["pause_own_ms"]``);
"GC": the most the collector ran in one piece (``pause_gc_ms``). A
collection lands in whichever piece allocates when one is due. The child
runs a full collection before it says it is ready, as a service that has
run a while has had one: what is left in the column is what the
refreshes set off. The attach keeps one object per greenlet that the
collector tracks (the weak reference that numbers it), made in its first
frame; the objects a first frame keeps go into the oldest generation when
it ends, without a collection, and the young collection a frame's rows
call for runs as a piece of its own (tracing.collector.Hold).

The issue's target is <= 1 ms per refresh. The snapshot, the ledger's
reading of the ring and the lints run in pieces of ~0.3 ms
(tracing.pace.PIECE_NS, tracing.lints.PIECE_NS), yielding between. The
lost wake-up check decides whether anything but its waiters refers to the
Event (held here: a global in the child, a local of this process's main
greenlet) by a reference count audit and a search from the roots, both in
pieces (tracing.lost_wakeup); only what those cannot tell goes to a heap
traversal (``gc.get_referrers``, O(heap), one piece). The in-process table
says in how many frames the check decided something and its total time
over all its pieces ("decided", "in ms max"), and how many heap
traversals ran and the longest ("heap traversals", "their ms max").
Expect the maximum to be set by a cyclic-GC pass the frame's allocations
set off, or -- on a loaded machine -- by the target being descheduled in
the middle of a piece (wall time).

The last line says, per N, where the longest piece (CPU time) of the
frame with the longest one ended (``served["longest_at"]``: the line that
yielded after it, and its caller).

"control ms": the machine's own share. The target also runs a fixed piece
of pure-Python work, sized to ~0.3 ms of CPU when it starts, every 20 ms,
timed in its thread's CPU time like the pieces: the median and the most
one run of it took. The work is the same every time, so what the longest
took past the median is the machine's (a virtual CPU that the host stops
for a while, caches another process emptied): a piece's maximum near
that column's is the machine, not the frame. (It holds the target's loop
too, ~1.5% of the time: the loop lag and round trip columns include it.)
It runs ~500 times a run, where a run at 10,000 greenlets has ~10,000
pieces: ``--machine SECONDS`` runs the control alone, back to back, as
many times as that, and counts the runs over 1 ms. Here the machine is
slow in spells: one minute gave 92,866 runs, median 0.31 ms, 14 over
1 ms and the longest 5.3 ms (one in ~6,600, about one per run at 10,000
greenlets; a console_pause run just before had a 6.7 ms piece); another,
112,088 runs, none over 1 ms, the longest 0.53 ms.
On this kind of machine a
plain 8-13 KB send on a Unix socket, in a process of its own, took up
to 0.8-2.8 ms of CPU now and then (one in 16,000-87,000); in an attached
target, 8 KB sends of a frame took 0.4-0.6 ms with no interrupt, softirq
or switch on that CPU in the kernel's trace meanwhile.

``--pin``: the target on one CPU and this process on the others (with two
CPUs or more). Unpinned, the kernel often runs the client on the target's
CPU when a frame's last bytes wake it (a Unix socket wakes its reader on
the writer's CPU), and the target waits off the CPU while the client
decodes the frame: the "loop lag" column (wall time) then shows 2-5 ms at
1,000 greenlets where the target's thread ran for 0.1-0.2 ms of it;
pinned, ~1.0-1.4 ms. The CPU-time columns do not depend on it.

``--in-process``: the same scenario in this process, captured as the
widget does (a greenlet of the hub, ``labkit.sleep(0)`` between pieces),
with the lints in every frame, each piece measured both in wall time and
in this thread's CPU time (which a busy machine does not inflate by
descheduling). Prints the longest piece per frame, median and maximum.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET = """\
import gc
import statistics
import sys
import time
import labkit
from labkit.event import Event

event = Event()

def parked():
    event.wait()

def ticker():
    while True:
        labkit.sleep(0.001)

def control(path):
    # The machine's own share: the same pure-Python work, sized to ~0.3 ms
    # of CPU here (a piece's worth), timed in this thread's CPU time every
    # 20 ms. Whatever one run takes past the others is not the work's.
    from labkit.bench.console_pause import unit_of_work, work
    n, clock = unit_of_work(), time.thread_time_ns
    times = []
    while True:
        labkit.sleep(0.02)
        start = clock()
        work(n)
        times.append(clock() - start)
        if len(times) % 10 == 0:
            with open(path, "w") as out:
                out.write(f"{int(statistics.median(times))} {max(times)} {len(times)}")

greenlets = [labkit.spawn(parked) for _ in range(int(sys.argv[1]))]
labkit.spawn(ticker)
labkit.spawn(control, sys.argv[2])
labkit.sleep(0.2)
# A service that has run a while has had its first full collection, which
# CPython runs after ten young-generation passes whatever the heap: ~10 ms
# here at 1,000 greenlets, that landed in whichever refresh allocated then.
# Done here, the "GC" column is what the refreshes' own allocations set off.
gc.collect()
print("ready", flush=True)
labkit.sleep(3600)
"""


def work(n: int) -> int:
    """A fixed piece of pure-Python work: the control's unit."""
    total = 0
    for i in range(n):
        total += i
    return total


def unit_of_work(ns: int = 300_000) -> int:
    """The ``n`` for which :func:`work` takes about ``ns`` of this thread's
    CPU time here."""
    n, clock = 1000, time.thread_time_ns
    while True:
        took = []
        for _ in range(3):      # (the fastest of three: the first runs cold)
            start = clock()
            work(n)
            took.append(clock() - start)
        if min(took) >= 100_000:
            return max(1, n * ns // min(took))
        n *= 2


def machine(seconds: float) -> dict:
    """The control alone, in this process and back to back (a 0.2 ms sleep
    between runs) for ``seconds``: how often this machine makes a fixed
    ~0.3 ms of work take more than 1 ms of CPU time, as many times as a
    run at 10,000 greenlets has pieces (~10,000 in 40 frames)."""
    n, clock = unit_of_work(), time.thread_time_ns
    runs = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = clock()
        work(n)
        runs.append(clock() - start)
        time.sleep(0.0002)
    runs.sort()
    over = sum(1 for ns in runs if ns > 1_000_000)
    return {"runs": len(runs), "median_ms": runs[len(runs) // 2] / 1e6,
            "p999_ms": runs[int(len(runs) * 0.999)] / 1e6, "max_ms": runs[-1] / 1e6,
            "over_1ms": over}


def _pinning(pin: bool):
    """(the CPUs for the child, for this process), or (None, None): with
    ``pin`` and two CPUs or more, the child gets the first, this process
    the others."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def measure(greenlets: int, frames: int, interval: float = 0.25, pin: bool = False) -> dict:
    """One child with ``greenlets`` parked greenlets; the served pauses.
    ``pin``: the child and this process on different CPUs (see --pin)."""
    from tracing.attach import AttachClient
    child_cpus, own_cpus = _pinning(pin)
    mine = os.sched_getaffinity(0) if own_cpus else None
    with tempfile.TemporaryDirectory(prefix="labkit-console-pause-") as runtime:
        os.chmod(runtime, 0o700)
        env = dict(os.environ, LABKIT_CONSOLE="1", XDG_RUNTIME_DIR=runtime)
        control = os.path.join(runtime, "control")
        child = subprocess.Popen([sys.executable, "-c", TARGET, str(greenlets), control],
                                 env=env,
                                 stdout=subprocess.PIPE, text=True,
                                 preexec_fn=(lambda: os.sched_setaffinity(0, child_cpus))
                                 if child_cpus else None)
        if own_cpus:
            os.sched_setaffinity(0, own_cpus)
        try:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("the target did not start")
            pauses, cpu_pauses, own_pauses, gc_pauses, trips, lags, where = (
                [], [], [], [], [], [], [])
            path = os.path.join(runtime, "labkit", f"console-{child.pid}.sock")
            with AttachClient(child.pid, path=path, timeout=60) as client:
                for index in range(frames + 1):
                    start = time.perf_counter()
                    frame = client.frame()
                    if not index:
                        first_cpu = frame["served"]["pause_cpu_ms"]
                    else:
                        trips.append(time.perf_counter() - start)
                        pauses.append(frame["served"]["pause_ms"])
                        cpu_pauses.append(frame["served"]["pause_cpu_ms"])
                        own_pauses.append(frame["served"]["pause_own_ms"])
                        where.append(frame["served"].get("longest_at", ""))
                        gc_pauses.append(frame["served"]["pause_gc_ms"])
                        lags.append(frame["loop"].get("lag_max", 0.0) * 1e3)
                    time.sleep(interval)
            median = most = runs = 0
            deadline = time.monotonic() + 2.0    # (a short run: its first figures)
            while not runs and time.monotonic() < deadline:
                try:
                    with open(control) as figures:
                        median, most, runs = (int(n) for n in figures.read().split())
                except (OSError, ValueError):
                    time.sleep(0.05)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
            if mine:
                os.sched_setaffinity(0, mine)
    return {"control_ms_median": median / 1e6, "control_ms_max": most / 1e6,
            "control_runs": runs,
            "greenlets": greenlets, "rows": len(frame["rows"]), "frames": frames,
            "pause_ms_median": statistics.median(pauses), "pause_ms_max": max(pauses),
            "cpu_ms_median": statistics.median(cpu_pauses), "cpu_ms_max": max(cpu_pauses),
            "own_ms_max": max(own_pauses), "gc_ms_max": max(gc_pauses),
            "first_cpu_ms": first_cpu, "pieces": frame["served"]["pieces"],
            "round_trip_ms_median": statistics.median(trips) * 1e3,
            "loop_lag_ms_max": max(lags),
            # where the longest piece (CPU time) of the frame with the longest ended
            "cpu_max_at": where[cpu_pauses.index(max(cpu_pauses))]}


def measure_in_process(greenlets: int, frames: int) -> dict:
    """The scenario above in this process; the longest piece of each frame
    (lints included in every one), in wall and in CPU milliseconds."""
    import labkit
    from labkit.event import Event
    from tracing.frames import BackgroundRecording, Capturer
    event = Event()
    parked = [labkit.spawn(event.wait) for _ in range(greenlets)]

    def tick():
        while True:
            labkit.sleep(0.001)

    ticker = labkit.spawn(tick)
    recording = BackgroundRecording().start()
    walls, cpus, heaps, walks = [], [], [], []

    def run():
        capturer = Capturer(min_interval=0, budget=1.0)   # the lints every frame
        for index in range(frames + 1):
            marks = [(time.perf_counter_ns(), time.thread_time_ns())]

            def between():
                marks.append((time.perf_counter_ns(), time.thread_time_ns()))
                labkit.sleep(0)
                marks.append((time.perf_counter_ns(), time.thread_time_ns()))

            traversals = capturer.heap.traversals
            frame = capturer.capture(between=between)
            marks.append((time.perf_counter_ns(), time.thread_time_ns()))
            if index:   # the first pays for imports
                pieces = list(zip(marks[::2], marks[1::2]))
                walls.append(max(b[0] - a[0] for a, b in pieces) / 1e6)
                cpus.append(max(b[1] - a[1] for a, b in pieces) / 1e6)
                heaps.append(frame["heap_ms"])
                if capturer.heap.traversals != traversals:
                    walks.append(capturer.heap.traversal_ns / 1e6)
            labkit.sleep(0.25)

    try:
        labkit.spawn(run).join()
    finally:
        recording.stop()
        labkit.killall([*parked, ticker])
    ran = [ms for ms in heaps if ms]
    return {"greenlets": greenlets, "frames": frames,
            "wall_ms_median": statistics.median(walls), "wall_ms_max": max(walls),
            "cpu_ms_median": statistics.median(cpus), "cpu_ms_max": max(cpus),
            "heap_runs": len(ran), "heap_ms_max": max(ran, default=0.0),
            "traversals": len(walks), "traversal_ms_max": max(walks, default=0.0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.bench.console_pause",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--greenlets", default="10,100,1000", metavar="N[,N]")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--in-process", action="store_true",
                        help="the console's capture in this process, lints in every frame")
    parser.add_argument("--pin", action="store_true",
                        help="the target on one CPU, this client on the others")
    parser.add_argument("--machine", type=float, metavar="SECONDS",
                        help="only the control: ~0.3 ms of fixed work, back to back "
                             "for SECONDS, in this process (the machine's own outliers)")
    args = parser.parse_args(argv)
    if args.machine is not None:
        if not args.machine > 0:
            parser.error("--machine needs SECONDS > 0")
        r = machine(args.machine)
        print(f"a fixed ~0.3 ms of work, {r['runs']} times: median {r['median_ms']:.2f} ms, "
              f"99.9th percentile {r['p999_ms']:.2f}, max {r['max_ms']:.2f} ms of CPU; "
              f"over 1 ms: {r['over_1ms']}")
        return 0
    counts = [int(n) for n in args.greenlets.split(",") if n.strip()]
    if not counts or min(counts) < 0 or args.frames < 1:
        parser.error("--greenlets needs counts >= 0 and --frames >= 1")
    if args.in_process:
        print(f"longest piece per console frame (lints in each), {args.frames} frames, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"{'greenlets':>9} {'wall ms median':>15} {'max':>8} {'CPU ms median':>14} "
              f"{'max':>8} {'decided':>8} {'in ms max':>10} {'heap traversals':>16} "
              f"{'their ms max':>13}")
        for count in counts:
            r = measure_in_process(count, args.frames)
            print(f"{r['greenlets']:>9} {r['wall_ms_median']:>15.2f} {r['wall_ms_max']:>8.2f} "
                  f"{r['cpu_ms_median']:>14.2f} {r['cpu_ms_max']:>8.2f} "
                  f"{r['heap_runs']:>8} {r['heap_ms_max']:>10.2f} {r['traversals']:>16} "
                  f"{r['traversal_ms_max']:>13.2f}")
        return 0
    print(f"attach pause per refresh, {args.frames} frames 250 ms apart, "
          f"{os.cpu_count()} CPUs{', pinned apart' if _pinning(args.pin)[0] else ''}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'greenlets':>9} {'pause ms median':>16} {'max':>8} {'CPU ms median':>14} "
          f"{'max':>8} {'no GC':>6} {'GC':>6} {'first':>6} {'pieces':>7} "
          f"{'round trip ms':>14} {'loop lag ms max':>16} {'control ms':>10} {'max':>6}")
    results = []
    for count in counts:
        r = measure(count, args.frames, pin=args.pin)
        results.append(r)
        print(f"{r['greenlets']:>9} {r['pause_ms_median']:>16.2f} {r['pause_ms_max']:>8.2f} "
              f"{r['cpu_ms_median']:>14.2f} {r['cpu_ms_max']:>8.2f} {r['own_ms_max']:>6.2f} "
              f"{r['gc_ms_max']:>6.2f} {r['first_cpu_ms']:>6.2f} "
              f"{r['pieces']:>7} {r['round_trip_ms_median']:>14.1f} "
              f"{r['loop_lag_ms_max']:>16.2f} {r['control_ms_median']:>10.2f} "
              f"{r['control_ms_max']:>6.2f}")
    print("the longest piece ended at: " + "; ".join(
        f"{r['greenlets']}: {r['cpu_max_at']}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
