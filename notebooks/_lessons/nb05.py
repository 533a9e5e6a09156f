"""Cells of notebooks/05_reading_a_trace.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        From the trace `t` recorded above, write `waited_most(t)`: the name of
        the greenlet (the `lane`) that spent the most time parked in total,
        over all its parked slices (`t.parked()`, each with `.lane` and
        `.duration`).
        """,
        stub="""
        def waited_most(t):
            return None     # your code here
        """,
        solution="""
        def waited_most(t):
            totals = collections.Counter()
            for p in t.parked():
                totals[p.lane] += p.duration
            return totals.most_common(1)[0][0]
        """,
        check="""
        got = waited_most(t)
        by_lane = {}
        for p in t.parked():
            by_lane[p.lane] = by_lane.get(p.lane, 0.0) + p.duration
        assert got in by_lane, f"{got!r} is not a lane of the trace: {sorted(by_lane)}"
        assert by_lane[got] == max(by_lane.values()), \
            f"{got} waited {by_lane[got]:.3f} s; {max(by_lane, key=by_lane.get)} waited longer"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        Write `blocked_ms(t)`: how many milliseconds, in total, the loop was
        blocked in the trace `t` (`t.blocking()`, each with `.duration` in
        seconds). The careless consumer's `time.sleep(0.08)` is in there.
        """,
        stub="""
        def blocked_ms(t):
            return 0.0      # your code here
        """,
        solution="""
        def blocked_ms(t):
            return sum(b.duration for b in t.blocking()) * 1000
        """,
        check="""
        got = blocked_ms(t)
        assert got >= 80, f"{got:.0f} ms: the 80 ms time.sleep alone blocked longer"
        assert abs(got - 1000 * sum(b.duration for b in t.blocking())) < 1e-6, got
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 05 · Reading a trace

    A trace is the full story of who ran when, who waited for what, and what
    blocked the loop. This notebook records one of a small producer/consumer
    program and reads it four ways: the summary table, the timeline, the raw
    lists (switches, waits, blocks), and Perfetto, a trace viewer that runs
    in the browser.
    """),
    code("""
    %load_ext labkit
    %matplotlib inline
    import collections
    import json
    import time
    import matplotlib.pyplot as plt
    import labkit
    import tracing
    from labkit.queue import Queue
    """),
    md("""
    ## The program

    A producer puts ten jobs on a bounded queue; two consumers take them. One
    consumer is careless: on one job it calls `time.sleep` — the blocking
    detector (`blocking=0.05`) will catch it.
    """),
    code("""
    def producer(queue):
        for job in range(10):
            queue.put(job)            # parks when the queue is full
            labkit.sleep(0.005)
        for _ in range(2):
            queue.put(None)           # one "stop" per consumer

    def consumer(queue, careless=False):
        while (job := queue.get()) is not None:   # parks when the queue is empty
            if careless and job == 5:
                time.sleep(0.08)      # the mistake
            labkit.sleep(0.01)        # the "work"

    with tracing.trace(blocking=0.05, report=False) as t:
        queue = Queue(maxsize=3)
        gs = [labkit.spawn(producer, queue), labkit.spawn(consumer, queue),
              labkit.spawn(consumer, queue, careless=True)]
        for g, name in zip(gs, ["producer", "consumer", "careless"]):
            g.name = name
        labkit.joinall(gs)
    t
    """, tag="record"),
    md("""
    ## The summary

    One row per greenlet (plus `main`, this cell, and `hub`, the scheduler):

    - **runs**: how many times it was resumed;
    - **running** / **waiting**: time spent running, and parked, during its life;
    - **longest run**: its longest stretch without a switch — look here first
      for greenlets that hog the loop;
    - **switches in / out**: resumes, and pauses while still alive.
    """),
    code("""
    t.summary()
    """, tag="summary"),
    md("""
    ## The timeline

    One lane per greenlet. Dark bars: running; lighter bars: waiting, coloured
    by what it waits for -- the legend under the picture names every colour,
    in the same words as every labkit picture (`tracing.legend`). The red bar
    is the block: look how every other lane stalls at the same moment.
    """),
    code("""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    t.timeline(ax=ax)
    plt.show()
    """),
    md("""
    ## The raw lists

    Everything the pictures show is in plain Python objects. Each **switch**
    says who resumed, after whom, and why:
    """),
    code("""
    for sw in t.switches()[:10]:
        print(f"{sw.time * 1000:7.2f} ms  {sw.greenlet:<10} after {str(sw.previous):<10} because: {sw.reason}")
    """, tag="switches"),
    md("""
    The **parked** slices say what each greenlet waited for, and for how long
    in total — a quick way to see where a program spends its time waiting:
    """),
    code("""
    waited = collections.defaultdict(float)
    for p in t.parked():
        waited[(p.lane, p.reason)] += p.duration
    for (lane, reason), seconds in sorted(waited.items()):
        print(f"{lane:<10} waited {seconds * 1000:6.1f} ms for {reason}")
    """),
    md("""
    And the **blocks**: the measured duration, the greenlet, and the line.
    (`block.file` is the file IPython made for the cell; `cell_location`
    turns it into the `In[n]` label you see next to the cell.)
    """),
    code("""
    from tracing.introspect import cell_location

    for block in t.blocking():
        print(f"{block.greenlet} blocked the loop for {block.duration * 1000:.0f} ms "
              f"in {block.function}, at {cell_location(block.file, block.line)}")
    """, tag="blocks"),
    md("""
    ## Perfetto

    `to_perfetto` writes the trace in the Chrome trace-event format. Open
    <https://ui.perfetto.dev>, click *Open trace file* (or drag the file onto
    the page): each greenlet is a thread, each run a slice, arrows are the
    switches, and the block is a slice of its own. Use `W`/`S` to zoom and
    `A`/`D` to pan. (`chrome://tracing` reads the same file.)
    """),
    code("""
    t.to_perfetto("reading-a-trace.perfetto.json")
    with open("reading-a-trace.perfetto.json") as f:
        events = json.load(f)["traceEvents"]
    threads = [e["args"]["name"] for e in events if e.get("name") == "thread_name"]
    print(len(events), "events; threads:", threads)
    """, tag="perfetto"),
    md("""
    ## Shortcuts

    `%%trace` records a cell and shows the summary and the timeline in one go;
    the trace itself is kept in `_trace`. For a program that keeps running,
    `tracing.dashboard.Dashboard()` shows the same pictures live (notebook 02).
    """),
    code("""
    %%trace
    queue = Queue(maxsize=3)
    gs = [labkit.spawn(producer, queue), labkit.spawn(consumer, queue), labkit.spawn(consumer, queue)]
    done = labkit.joinall(gs)
    """, tag="percent-trace"),
    md("""
    ## What to remember

    - Start from the summary: the *longest run* column finds loop hogs.
    - The timeline shows the shape: who waits for whom, and when everyone stalls.
    - The raw lists answer precise questions; Perfetto lets you zoom into
      microseconds and share the file.
    """),
    *exercises(EXERCISES),
]
