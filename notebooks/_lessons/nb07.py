"""Cells of notebooks/07_errors_in_greenlets.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        Write `results_or_errors(greenlets)`: wait for all of them, then return
        one entry per greenlet, in order — its value if it succeeded, or the
        name of its exception's type (`"ZeroDivisionError"`) if it failed.
        One failure must not hide the others' results.
        """,
        stub="""
        def results_or_errors(greenlets):
            labkit.joinall(greenlets, raise_error=True)
            return [g.value for g in greenlets]
        """,
        solution="""
        def results_or_errors(greenlets):
            labkit.joinall(greenlets)
            return [g.value if g.successful() else type(g.exception).__name__
                    for g in greenlets]
        """,
        check="""
        def divide(a, b):
            labkit.sleep(0.01 * a)
            return a // b

        gs = [labkit.spawn(divide, 6, 2), labkit.spawn(divide, 1, 0), labkit.spawn(divide, 8, 4)]
        got = results_or_errors(gs)
        assert got == [3, "ZeroDivisionError", 2], f"got {got}"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        Write `run_with_retries(task, attempts)`: run `task()` in a new greenlet;
        if it fails, run it again in a fresh greenlet, up to `attempts` tries
        in all. Return the first successful value; if every try failed, raise
        the last try's exception.
        """,
        stub="""
        def run_with_retries(task, attempts):
            return labkit.spawn(task).get()
        """,
        solution="""
        def run_with_retries(task, attempts):
            for attempt in range(attempts):
                g = labkit.spawn(task)
                g.join()
                if g.successful():
                    return g.value
            raise g.exception
        """,
        check="""
        tries = []

        def flaky():
            tries.append(1)
            if len(tries) < 3:
                raise ConnectionError(f"try {len(tries)} failed")
            return "connected"

        assert run_with_retries(flaky, 5) == "connected"
        assert len(tries) == 3, f"{len(tries)} tries"

        def broken():
            raise ValueError("always")

        try:
            run_with_retries(broken, 2)
        except ValueError:
            pass
        else:
            raise AssertionError("every try failed, yet nothing was raised")
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 07 · Errors in greenlets

    An exception in a spawned greenlet does not travel up to whoever spawned
    it: the spawner is busy elsewhere. labkit (like gevent) does three things
    instead:

    1. it **prints** the traceback, so that the error is not lost;
    2. the greenlet **dies**, and keeps its exception in `g.exception`;
    3. every other greenlet — and the hub — **goes on**.

    Then it is up to you to look: `g.get()`, `joinall(raise_error=True)`, or
    a callback with `g.link_exception(...)`.
    """),
    code("""
    %load_ext labkit
    import labkit
    """),
    md("""
    ## A failure does not stop the others

    One of three workers divides by zero. Its traceback is printed (in red:
    it goes to stderr, under this cell), and the two others finish.
    """),
    code("""
    def work(a, b):
        labkit.sleep(0.01)
        return a / b

    gs = [labkit.spawn(work, 1, 2), labkit.spawn(work, 1, 0), labkit.spawn(work, 3, 4)]
    labkit.joinall(gs)
    for g in gs:
        print(f"successful: {g.successful()!s:<5}  value: {g.value!s:<5}  exception: {g.exception!r}")
    """, tag="one-fails"),
    md("""
    ## Asking for the result

    `g.get()` returns the value, or raises the greenlet's exception *here*,
    in the greenlet that asks — where you can handle it.
    """),
    code("""
    try:
        gs[1].get()
    except ZeroDivisionError as exc:
        print("caught here:", repr(exc))
    print("a good one:", gs[0].get())
    """, tag="get-raises"),
    md("""
    `joinall(..., raise_error=True)` raises the first failure it sees
    (without waiting for the rest), for when one failure means the whole job
    failed:
    """),
    code("""
    gs = [labkit.spawn(work, 1, 0), labkit.spawn(work, 2, 1)]
    try:
        labkit.joinall(gs, raise_error=True)
    except ZeroDivisionError as exc:
        print("joinall raised:", repr(exc))
    """, tag="joinall-raises"),
    md("""
    ## Reacting as it happens: links

    `g.link_exception(callback)` calls `callback(g)` when `g` fails;
    `g.link_value(callback)` when it succeeds; `g.link(callback)` either way.
    A supervisor is a few lines: when a worker dies of an error, start a new
    one.
    """),
    code("""
    restarts = []

    def fragile(generation):
        labkit.sleep(0.01)
        if generation < 2:
            raise RuntimeError(f"worker {generation} crashed")
        return f"worker {generation} finished"

    def supervise(generation=0):
        g = labkit.spawn(fragile, generation)
        g.link_exception(lambda dead: (restarts.append(repr(dead.exception)),
                                       supervise(generation + 1)))
        g.link_value(lambda done: restarts.append(done.value))

    supervise()
    with labkit.Timeout(10):              # a bound, in case it never finishes
        while len(restarts) < 3:          # two crashes and a success
            labkit.sleep(0.01)
    for line in restarts:
        print(line)
    """, tag="supervise"),
    md("""
    ## Errors that are not errors

    Two exceptions are special:

    - `GreenletExit` (what `kill()` throws) ends a greenlet *successfully*:
      nothing is printed, `g.successful()` is true.
    - `KeyboardInterrupt` and `SystemExit` are not kept in the greenlet: the
      hub hands them to the main greenlet — in a notebook, the running cell —
      because they mean "stop everything", not "this task failed".
    """),
    code("""
    g = labkit.spawn(labkit.sleep, 10)
    labkit.sleep(0)
    g.kill()
    print("killed: successful =", g.successful(), "| value =", repr(g.value))
    """, tag="greenlet-exit"),
    md("""
    ## What to remember

    - A failing greenlet prints its traceback, dies, and keeps its exception;
      the others go on.
    - Look at the outcome with `g.get()`, `g.successful()`/`g.exception`,
      `joinall(raise_error=True)`, or links.
    - `GreenletExit` is a normal end; `KeyboardInterrupt`/`SystemExit` go to
      the main greenlet.

    Next: **08**, the primitives greenlets coordinate with.
    """),
    *exercises(EXERCISES),
]
