"""Cells of notebooks/04_what_a_switch_costs.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import code, md

CELLS = [
    md("""
    # 04 · What a switch costs

    Every time a greenlet parks and another resumes, labkit pays for a
    *switch*: saving one greenlet's stack, restoring another's, and the hub's
    bookkeeping in between. How much is that, on this machine? And what does
    the tracer add when it records every switch?

    `tracing.measure_switch_overhead()` times four operations, untraced and
    traced:

    - `raw_switch`: one bare `greenlet.switch()` — the floor;
    - `sleep0`: `labkit.sleep(0)` between two greenlets — a round trip through the hub;
    - `spawn_join`: spawning a trivial greenlet and waiting for it;
    - `wakeup`: one greenlet waking another through a `Waiter`, as an Event or a Queue does.
    """),
    code("""
    %load_ext labkit
    %matplotlib inline
    import matplotlib.pyplot as plt
    import labkit
    import tracing

    costs = tracing.measure_switch_overhead(n=5000, repeats=3)
    print(f"{'operation':<12} {'untraced':>10} {'traced':>10} {'ratio':>7}")
    for name, c in costs.items():
        print(f"{name:<12} {c['untraced_ns']:>8.0f} ns {c['traced_ns']:>8.0f} ns {c['ratio']:>6.2f}x")
    """, tag="overhead"),
    md("""
    How to read it:

    - `raw_switch` is the price of the greenlet library itself, well under a
      microsecond. `raw_switch` is the same traced and untraced: the tracer
      only sees switches that go through the hub.
    - `sleep0` adds the hub: the greenlet appends itself to the ready queue,
      switches to the hub, and the hub switches back. Still around a microsecond.
    - With tracing on, each switch into a greenlet writes one 32-byte record
      into a C ring buffer — the `traced` column shows what that adds.

    A picture makes the ratios easier to see:
    """),
    code("""
    names = list(costs)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([n + " (untraced)" for n in names], [costs[n]["untraced_ns"] for n in names])
    ax.barh([n + " (traced)" for n in names], [costs[n]["traced_ns"] for n in names])
    ax.set_xlabel("nanoseconds per operation")
    ax.invert_yaxis()
    plt.show()
    """),
    md("""
    ## Against gevent and asyncio

    The same `sleep(0)` ping-pong, written for gevent (`gevent.sleep(0)`) and
    for asyncio (`await asyncio.sleep(0)`). Each runs in a fresh Python process
    (labkit's benchmark workers), so that the three event loops do not share a
    thread or a warm-up. A peer that is not installed is skipped.
    """),
    code("""
    from labkit.bench import run_worker

    peers = {}
    for impl in ("labkit", "gevent", "asyncio"):
        result = run_worker(impl, "sleep0", 5000, 3)
        if result.get("status") == "ok":
            peers[impl] = result["per_op_ns"]
        else:
            print(f"{impl}: not available here")
    for impl, ns in peers.items():
        print(f"{impl:<8} {ns:8.0f} ns per sleep(0)")

    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.barh(list(peers), list(peers.values()))
    ax.set_xlabel("nanoseconds per sleep(0), lower is better")
    ax.invert_yaxis()
    plt.show()
    """, tag="peers"),
    md("""
    ## What it means

    A switch costs on the order of a microsecond: a single thread can do
    hundreds of thousands of them per second. That is why cooperative servers
    scale to many connections — and also why the *real* cost in a program is
    almost never the switch itself, but what runs between two switches (see
    notebook 03). Tracing every switch costs a few tens of nanoseconds more:
    cheap enough to leave on while you debug.

    Next: **05**, reading a trace in detail.
    """),
]
