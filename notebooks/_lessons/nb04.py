"""Cells of notebooks/04_what_a_switch_costs.ipynb (built by notebooks/_build.py).

The prose states no figure: every number the lesson talks about is printed
by a cell, measured in the same run (median and spread), and the sentences
that compare numbers ("the largest part", "what the tracer adds") are
printed by the code from the measurement, so that they hold on a quiet
laptop and on a loaded two-core VM alike.
"""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        From the measurement `cost` above, write `yields_per_second(cost)`:
        how many `sleep(0)` yields one thread can make per second, from the
        median of the untraced `sleep(0)` figure (in nanoseconds per yield).
        """,
        stub="""
        def yields_per_second(cost):
            return None     # your code here
        """,
        solution="""
        def yields_per_second(cost):
            return 1e9 / cost.figures["sleep(0)"].median
        """,
        check="""
        got = yields_per_second(cost)
        expected = 1e9 / cost.figures["sleep(0)"].median
        assert got is not None and abs(got - expected) <= 1e-6 * expected, \\
            f"got {got}, expected about {expected:.0f}"
        print(f"exercise 1: passed ({got:,.0f} yields per second here)")
        """),
    Exercise(
        task="""
        Measure a bare greenlet switch yourself: `switch_ns(n)` makes `n`
        round trips between this greenlet and a partner (the partner switches
        straight back, as in notebook 01), and returns the nanoseconds per
        one-way switch (`time.perf_counter()` around the loop; a round trip
        is two switches). The checker counts the switches you made with
        `greenlet.settrace` and wants a plausible figure.
        """,
        stub="""
        import time
        from greenlet import greenlet, getcurrent

        def switch_ns(n):
            return None     # your code here
        """,
        solution="""
        import time
        from greenlet import greenlet, getcurrent

        def switch_ns(n):
            main = getcurrent()

            def partner():
                while True:
                    main.switch()

            other = greenlet(partner)
            other.switch()                 # start it: it parks in main.switch()
            start = time.perf_counter()
            for _ in range(n):
                other.switch()
            elapsed = time.perf_counter() - start
            other.throw()                  # let the partner end
            return elapsed / (2 * n) * 1e9
        """,
        check="""
        import greenlet as greenlet_module

        switches = []
        previous = greenlet_module.settrace(lambda event, args: switches.append(event))
        try:
            got = switch_ns(1000)
        finally:
            greenlet_module.settrace(previous)
        assert switches.count("switch") >= 2000, \\
            f"{switches.count('switch')} switches seen: make n round trips (2n switches)"
        assert isinstance(got, float) and 1 < got < 100_000, f"{got!r} ns per switch?"
        print(f"exercise 2: passed ({got:.0f} ns per switch, traced by the checker)")
        """),
]

CELLS = [
    md("""
    # 04 · What a switch costs

    Every time a greenlet parks and another resumes, labkit pays for a
    *switch*: saving one greenlet's stack, restoring another's, and the hub's
    bookkeeping in between. How much is that, on this machine? Where does the
    time go? And what does the tracer add when it records every switch?

    `labkit.bench.switchcost.measure()` times, in this kernel:

    - `greenlet switch`: one bare `greenlet.switch()`, one way — the floor;
    - `sleep(0)`: one yield in a `labkit.sleep(0)` ping-pong between two
      greenlets — a round trip through the hub;
    - `sleep(0) traced`: that ping-pong again, while the tracer records every switch;
    - `poll`: one zero-timeout poll of the C event loop (a system call).

    A measurement on a shared machine is a sample, not a fact: each figure is
    taken in several *rounds*, the operations alternating within a round, and
    shown as the median with the lowest and the highest round. When the
    rounds disagree by more than 20%, a **noise warning** says so.
    """),
    code("""
    %load_ext labkit
    %matplotlib inline
    import matplotlib.pyplot as plt
    import labkit
    from labkit.bench import switchcost

    cost = switchcost.measure(n=5000, rounds=7)
    print(cost.format())
    """, tag="switchcost"),
    md("""
    ## Reading it

    - The first block is what was measured. The *spread* is (highest −
      lowest) / median: on a quiet machine it is a few percent; on a busy one
      (other programs, a laptop changing its clock speed) the rounds can
      differ by a factor of two or more. Compare two figures only when their
      difference is larger than their spread.
    - The second block takes one untraced `sleep(0)` apart. A yield is **two
      greenlet switches** (the greenlet to the hub, the hub to the next
      greenlet), plus **the poll's share**: a poll is a system call, but a
      busy hub polls only once every 0.2 ms, not on every pass (the
      *polls per yield* figure says how often it did here), plus **the hub's
      pass**: what is left — `sleep()`'s own Python code, the ready queue and
      the hub's loop body. **The tracer** is what recording adds on top: one
      record per switch into a C ring buffer.
    - Each part is a per-round difference summarised by its median, so the
      medians of the parts need not add up exactly to the median of the whole.

    The cell below says, from these numbers, which part is the largest here
    and what the tracer adds, and draws the breakdown:
    """),
    code("""
    yield_ns = cost.figures["sleep(0)"].median
    parts = {part: figure.median for part, figure in cost.breakdown.items()}
    inside = {p: ns for p, ns in parts.items() if not p.startswith("the tracer")}
    largest = max(inside, key=inside.get)
    tracer = cost.breakdown["the tracer (traced - untraced)"]
    print(f"an untraced sleep(0) yield: {yield_ns:.0f} ns, "
          f"so {1e9 / yield_ns:,.0f} yields per second on one thread")
    print(f"the largest part of it here: {largest} ({inside[largest] / yield_ns:.0%})")
    print(f"the tracer adds {tracer.median:.0f} ns per yield "
          f"({tracer.median / yield_ns:+.0%}), rounds from {tracer.low:.0f} to {tracer.high:.0f} ns")
    if tracer.low <= 0 <= tracer.high:
        print("some rounds ran faster traced than untraced: the tracer's cost is "
              "within the noise of this run")
    if cost.noisy:
        print("noisy run: see the warning above before comparing these parts")

    fig, ax = plt.subplots(figsize=(7, 2.6))
    names = list(parts)
    ax.barh(names, [parts[n] for n in names],
            xerr=[[parts[n] - cost.breakdown[n].low for n in names],
                  [cost.breakdown[n].high - parts[n] for n in names]], capsize=3)
    ax.set_xlabel("nanoseconds per yield (median; bars: lowest..highest round)")
    ax.invert_yaxis()
    plt.show()
    """, tag="breakdown"),
    md("""
    ## Against gevent and asyncio

    The same `sleep(0)` ping-pong, written for gevent (`gevent.sleep(0)`) and
    for asyncio (`await asyncio.sleep(0)`). Each runs in a fresh Python process
    (labkit's benchmark workers), so that the event loops do not share a
    thread or a warm-up, and the three take turns, round after round, so that
    a burst of load from elsewhere hits all three. A peer that is not
    installed gets no figure at all.
    """),
    code("""
    import statistics
    from labkit.bench import run_worker

    runs = {"labkit": [], "gevent": [], "asyncio": []}
    missing = {}
    for round_number in range(2):
        for impl in list(runs):
            result = run_worker(impl, "sleep0", 5000, 3)
            if result.get("status") == "ok":
                runs[impl] += [s / (2 * result["n"]) * 1e9 for s in result["runs_s"]]
            else:
                missing[impl] = result.get("reason") or result.get("status")
                del runs[impl]
    for impl, reason in missing.items():
        print(f"{impl}: no figure (not available here: {reason})")
    medians = {impl: statistics.median(ns) for impl, ns in runs.items()}
    for impl, ns in runs.items():
        spread = (max(ns) - min(ns)) / medians[impl]
        warning = "   <- noisy: compare with care" if spread > switchcost.NOISE_SPREAD else ""
        print(f"{impl:<8} {medians[impl]:8.0f} ns per sleep(0)  "
              f"({min(ns):.0f} .. {max(ns):.0f}, spread {spread:.0%}){warning}")

    fig, ax = plt.subplots(figsize=(6, 2.2))
    ax.barh(list(medians), list(medians.values()),
            xerr=[[medians[i] - min(runs[i]) for i in medians],
                  [max(runs[i]) - medians[i] for i in medians]], capsize=3)
    ax.set_xlabel("nanoseconds per sleep(0), lower is better")
    ax.invert_yaxis()
    plt.show()
    """, tag="peers"),
    md("""
    ## What it means

    The breakdown cell printed how many `sleep(0)` yields one thread makes
    per second here (exercise 1 computes it too). Set that against the work a
    greenlet does between two switches — parsing a request, a query — and
    the switch is rarely what a program's time goes to: what runs between two
    switches is (notebook 03). That is why one thread can serve many
    connections cooperatively.

    Read the tracer's cost from the breakdown above, not from a rule of
    thumb: it is a fixed amount per switch, so it matters in a loop that does
    nothing but switch, and disappears in one that does real work. On a busy
    machine it can be smaller than the noise; the cell says so when it is.

    For the full table against every peer, run `python -m labkit bench` (and
    `python -m labkit.bench.switchcost` for this breakdown) in a terminal,
    where nothing else shares the kernel.

    Next: **05**, reading a trace in detail.
    """),
    *exercises(EXERCISES),
]
