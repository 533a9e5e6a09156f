"""Cells of notebooks/01_cooperative_multitasking.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        Three workers, `A`, `B` and `C`, each record two steps. As written,
        `worker` never gives control back, so each one runs to the end before
        the next starts. Make them take turns, so that `run_three()` returns
        `['A0', 'B0', 'C0', 'A1', 'B1', 'C1']`.
        """,
        stub="""
        def worker(name, steps, order):
            for i in range(steps):
                order.append(f"{name}{i}")
                # your change here

        def run_three():
            order = []
            labkit.joinall([labkit.spawn(worker, name, 2, order) for name in "ABC"])
            return order
        """,
        solution="""
        def worker(name, steps, order):
            for i in range(steps):
                order.append(f"{name}{i}")
                labkit.sleep(0)          # let the others take their turn

        def run_three():
            order = []
            labkit.joinall([labkit.spawn(worker, name, 2, order) for name in "ABC"])
            return order
        """,
        check="""
        got = run_three()
        assert got == ['A0', 'B0', 'C0', 'A1', 'B1', 'C1'], f"run_three() gave {got}"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        `fetch_all(delays, woke)` should wait for every delay *at the same
        time*: one greenlet per delay, each sleeping that long, appending its
        delay to `woke` when it wakes and returning it. `fetch_all` returns
        the values in the order of `delays`. The version below waits for one
        delay after the other; the checker can tell, from the order in which
        they woke.
        """,
        stub="""
        def fetch_all(delays, woke):
            results = []
            for delay in delays:
                labkit.sleep(delay)
                woke.append(delay)
                results.append(delay)
            return results
        """,
        solution="""
        def fetch_all(delays, woke):
            def fetch(delay):
                labkit.sleep(delay)
                woke.append(delay)
                return delay
            greenlets = [labkit.spawn(fetch, delay) for delay in delays]
            labkit.joinall(greenlets)
            return [g.value for g in greenlets]
        """,
        check="""
        woke = []
        got = fetch_all([0.03, 0.01, 0.02], woke)
        assert got == [0.03, 0.01, 0.02], f"fetch_all returned {got}"
        # Waiting together, the shortest wakes first; one after the other, in the given order.
        assert woke == [0.01, 0.02, 0.03], f"they woke in the order {woke}: one after the other?"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 01 · Cooperative multitasking: from raw greenlets to the hub

    A **greenlet** is a function that can pause in the middle and be resumed
    later, exactly where it stopped. Pausing is explicit: a greenlet runs until
    it *switches* to another one. Nothing ever interrupts it. That is
    *cooperative* multitasking, and it is what gevent and labkit are built on.

    This notebook builds the idea up in three steps:

    1. raw greenlets that switch to each other by name;
    2. a tiny scheduler, so that greenlets no longer need to know each other;
    3. labkit's **hub**: the same scheduler, plus timers and sockets.
    """),
    md("""
    ## 1. Two greenlets, switching by hand

    `greenlet(f)` makes a paused greenlet; `g.switch()` runs it until *it*
    switches somewhere else. Here `ping` and `pong` hand control back and
    forth. When `ping` returns, control goes to its *parent* (this cell).
    """),
    code("""
    from greenlet import greenlet

    log = []

    def ping():
        for i in range(3):
            log.append(f"ping {i}")
            pong_greenlet.switch()      # pause here; pong runs

    def pong():
        for i in range(3):
            log.append(f"pong {i}")
            ping_greenlet.switch()      # pause here; ping resumes after its switch

    ping_greenlet, pong_greenlet = greenlet(ping), greenlet(pong)
    ping_greenlet.switch()
    print(log)
    """, tag="raw-pingpong"),
    md("""
    Nothing ran in parallel: one greenlet ran at a time, and each decided when
    to give up control. But every switch had to *name* its target, so `ping`
    and `pong` are welded together. Real programs have many tasks that should
    not know about each other.

    ## 2. A scheduler in ten lines

    Let a special greenlet, the *scheduler*, keep a queue of greenlets that are
    ready to run. A greenlet that wants to let others run puts itself at the
    back of the queue and switches to the scheduler. Nobody names anybody else.
    """),
    code("""
    from collections import deque
    from greenlet import getcurrent

    ready = deque()          # greenlets waiting for their turn, first come first served
    order = []

    def yield_to_others():
        ready.append(getcurrent())     # come back to me later...
        scheduler.switch()             # ...and let the scheduler pick the next one

    def run_scheduler():
        while ready:
            ready.popleft().switch()   # runs it until it yields or finishes

    def worker(name, steps):
        for i in range(steps):
            order.append(f"{name}{i}")
            yield_to_others()

    scheduler = greenlet(run_scheduler)
    for name, steps in [("A", 3), ("B", 2)]:
        # parent=scheduler: when the worker finishes, control returns to the scheduler
        ready.append(greenlet(lambda n=name, s=steps: worker(n, s), parent=scheduler))
    scheduler.switch()
    print(order)
    """, tag="tiny-scheduler"),
    md("""
    `A0 B0 A1 B1 A2`: the workers take turns, in a fixed order. Every time you
    run this cell you get the same interleaving — cooperative scheduling is
    deterministic, which makes it far easier to reason about than threads.

    What is missing: a greenlet that wants to wait *for something* — 50 ms to
    pass, a socket to receive data — should not sit in the queue at all. It
    should be put back only when that something happens. That is the job of an
    **event loop**, and labkit's scheduler, the **hub**, has one.

    ## 3. The hub

    `%load_ext labkit` starts the hub inside this kernel. From now on
    `labkit.spawn` creates a greenlet whose parent is the hub, and
    `labkit.sleep(0)` is our `yield_to_others()`.
    """),
    code("""
    %load_ext labkit
    import time
    import labkit
    """),
    code("""
    order = []

    def worker(name, steps):
        for i in range(steps):
            order.append(f"{name}{i}")
            labkit.sleep(0)            # yield: the hub runs the next ready greenlet

    labkit.joinall([labkit.spawn(worker, "A", 3), labkit.spawn(worker, "B", 2)])
    print(order)
    """, tag="hub-workers"),
    md("""
    The same order as our hand-made scheduler. Now the part we could not do by
    hand: `labkit.sleep(0.3)` parks the greenlet *on a timer*. The hub runs
    others meanwhile and puts it back in the ready queue when the timer fires.
    Three sleepers of 300, 100 and 200 ms wake in deadline order, and all
    three together take about 300 ms, not 600: they wait at the same time.
    """),
    code("""
    woke = []

    def sleeper(ms):
        labkit.sleep(ms / 1000)
        woke.append(ms)

    start = time.perf_counter()
    labkit.joinall([labkit.spawn(sleeper, ms) for ms in (300, 100, 200)])
    elapsed_ms = (time.perf_counter() - start) * 1000
    print("woke in this order:", woke)
    print(f"all three took {elapsed_ms:.0f} ms")
    """, tag="sleepers"),
    md("""
    ## Watching it happen

    `%%trace` runs a cell under labkit's tracer and shows who ran, when, and
    why. In the timeline each greenlet has a lane: dark bars are the moments
    it runs, lighter bars the time it waits, coloured by what it waits for;
    the legend under the picture says which colour is which (it is the one
    legend of every labkit picture: `print(tracing.legend.text())` prints it).
    """),
    code("""
    %%trace
    def stepper(name):
        for i in range(3):
            labkit.sleep(0.01)

    greenlets = [labkit.spawn(stepper, name) for name in "ABC"]
    for g, name in zip(greenlets, "ABC"):
        g.name = f"stepper-{name}"
    done = labkit.joinall(greenlets)
    """, tag="trace-steppers"),
    md("""
    ## What to remember

    - A greenlet runs until it switches; nothing preempts it.
    - The hub is a scheduler greenlet with a ready queue *and* an event loop:
      greenlets that wait for time or I/O are parked, not polled.
    - Because only one greenlet runs at a time and the ready queue is FIFO,
      the interleaving is the same on every run.

    Next: **02**, a server that keeps running in the notebook between cells.
    """),
    *exercises(EXERCISES),
]
