"""Cells of notebooks/06_timeouts_and_cancellation.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        Write `fetch_with_deadline(delay, deadline)`: it "fetches" by sleeping
        `delay` seconds, and returns `"done"` — unless that takes longer than
        `deadline` seconds, in which case it gives up at the deadline and
        returns `"timed out"`.
        """,
        stub="""
        def fetch_with_deadline(delay, deadline):
            labkit.sleep(delay)
            return "done"
        """,
        solution="""
        def fetch_with_deadline(delay, deadline):
            try:
                with labkit.Timeout(deadline):
                    labkit.sleep(delay)
                    return "done"
            except labkit.Timeout:
                return "timed out"
        """,
        check="""
        assert fetch_with_deadline(0.01, 0.5) == "done"
        got = fetch_with_deadline(0.5, 0.05)
        assert got == "timed out", f"a 0.5 s fetch with a 0.05 s deadline returned {got!r}"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        `worker(log)` takes a connection (here, a string in `log`) and works
        forever. When it is killed it must hand the connection back:
        `log` should end with `"closed"` after `g.kill()`. Change `worker` so
        that it does, whichever line it is killed at.
        """,
        stub="""
        def worker(log):
            log.append("opened")
            while True:
                labkit.sleep(0.01)
            log.append("closed")
        """,
        solution="""
        def worker(log):
            log.append("opened")
            try:
                while True:
                    labkit.sleep(0.01)
            finally:
                log.append("closed")    # runs on GreenletExit too
        """,
        check="""
        log = []
        g = labkit.spawn(worker, log)
        labkit.sleep(0.03)
        g.kill()
        assert g.dead, "the worker is still alive after kill()"
        assert log == ["opened", "closed"], f"log is {log}"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 06 · Timeouts and cancellation

    A greenlet that waits — for a reply, a lock, a timer — can wait too long.
    Two tools end a wait from outside:

    - a **Timeout** ends a wait after a time: the waiting greenlet gets an
      exception at the line where it waits;
    - **kill** ends a greenlet: it gets `GreenletExit` at the line where it
      waits, runs its `finally` blocks, and dies.

    Both are *cooperative*: they take effect where the greenlet waits (or
    yields). A greenlet that computes without ever waiting cannot be
    interrupted by either — notebook 09 deals with that one.
    """),
    code("""
    %load_ext labkit
    import time
    import labkit
    """),
    md("""
    ## A Timeout around a wait

    `with labkit.Timeout(seconds):` starts a timer; if the block is still
    running when it fires, the `Timeout` exception is raised *in this
    greenlet, at the line where it waits*. Leaving the block cancels the
    timer.
    """),
    code("""
    def slow_answer():
        labkit.sleep(1)          # a reply that takes a second
        return 42

    start = time.perf_counter()
    try:
        with labkit.Timeout(0.1):
            answer = slow_answer()
    except labkit.Timeout as exc:
        answer = None
        print(f"gave up after {time.perf_counter() - start:.2f} s: {exc}")
    print("answer:", answer)
    """, tag="timeout-raises"),
    md("""
    Two shorter forms: `Timeout(seconds, False)` ends the block silently
    (check a flag afterwards), and `with_timeout` calls a function and returns
    a default when it takes too long.
    """),
    code("""
    answer = "no answer"
    with labkit.Timeout(0.1, False):      # False: no exception, the block just ends
        answer = slow_answer()
    print("silent timeout:", answer)

    print("with_timeout:", labkit.with_timeout(0.1, slow_answer, timeout_value="too slow"))
    print("in time:     ", labkit.with_timeout(2, slow_answer, timeout_value="too slow"))
    """, tag="timeout-forms"),
    md("""
    ## Killing a greenlet

    `g.kill()` throws `GreenletExit` into `g` where it waits, and (by
    default) waits until `g` is dead. `GreenletExit` counts as a normal end:
    `g.successful()` is true, and nothing is reported. Its `finally` blocks
    and `with` statements run, so it can let go of what it holds.
    """),
    code("""
    events = []

    def downloader(name):
        events.append(f"{name}: connect")
        try:
            for chunk in range(100):
                labkit.sleep(0.01)           # waits here: a kill lands here
                events.append(f"{name}: chunk {chunk}")
        finally:
            events.append(f"{name}: disconnect")

    g = labkit.spawn(downloader, "d1")
    labkit.sleep(0.035)
    g.kill()
    print(events)
    print("dead:", g.dead, "| successful:", g.successful(), "| value:", repr(g.value))
    """, tag="kill"),
    md("""
    `labkit.killall(greenlets)` kills many at once, and
    `g.kill(exception=...)` throws an exception of your choosing instead of
    `GreenletExit`. A kill can also wait only so long: `g.kill(timeout=1)`.

    ## Cancelling a group of tasks

    A common shape: start several requests, keep the first answer, cancel the
    rest. `labkit.wait(greenlets, count=1)` returns as soon as one finished.
    """),
    code("""
    def mirror(name, delay):
        labkit.sleep(delay)
        return name

    racers = [labkit.spawn(mirror, name, delay)
              for name, delay in [("slow", 0.3), ("fast", 0.05), ("medium", 0.15)]]
    finished = labkit.wait(racers, count=1)
    winner = finished[0].value
    labkit.killall(racers)
    print("first answer from:", winner)
    print("cancelled:", [g.args[0] for g in racers if g.value != winner],
          "| their value:", [g.value for g in racers if g.value != winner])
    print("all dead:", all(g.dead for g in racers))
    """, tag="race"),
    md("""
    ## Cancellation is cooperative

    A kill or a timeout is delivered when the greenlet next waits. Here a
    greenlet computes for a while between two waits: the kill waits for it,
    and lands at its next `sleep`.
    """),
    code("""
    progress = []

    def busy():
        while True:
            deadline = time.perf_counter() + 0.05
            while time.perf_counter() < deadline:
                pass                          # 50 ms of work, no wait: cannot be interrupted
            progress.append("slice done")
            labkit.sleep(0)                   # a wait: here the kill lands

    g = labkit.spawn(busy)
    labkit.sleep(0)                           # let it start its first slice
    start = time.perf_counter()
    g.kill()
    print(f"kill returned after {(time.perf_counter() - start) * 1000:.0f} ms; "
          f"slices finished: {len(progress)}; dead: {g.dead}")
    """, tag="cooperative"),
    md("""
    ## What to remember

    - `Timeout` raises at the waiting line; `Timeout(s, False)` and
      `with_timeout` are the quiet forms.
    - `kill()` throws `GreenletExit` where the greenlet waits; `finally`
      blocks run; a killed greenlet counts as successful.
    - Both wait for a wait: a greenlet that never waits cannot be cancelled
      (notebook 09 shows how to stop one anyway).

    Next: **07**, what happens when a greenlet fails.
    """),
    *exercises(EXERCISES),
]
