"""Cells of notebooks/03_finding_blocking_calls.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        `poll_status()` waits 0.1 s between two looks at a service, and blocks
        the loop while it waits. Make it wait cooperatively. The checker runs
        a ticker greenlet (it wakes every 10 ms) beside it, and counts how
        often the ticker got to run while `poll_status` ran.
        """,
        stub="""
        def poll_status():
            looks = []
            for _ in range(2):
                looks.append("ok")
                time.sleep(0.1)
            return looks
        """,
        solution="""
        def poll_status():
            looks = []
            for _ in range(2):
                looks.append("ok")
                labkit.sleep(0.1)
            return looks
        """,
        check="""
        ticks = 0

        def ticker():
            global ticks
            while True:
                labkit.sleep(0.01)
                ticks += 1

        def run_beside_the_ticker():
            before = ticks
            return poll_status(), ticks - before

        ticking = labkit.spawn(ticker)
        looks, ticks_meanwhile = labkit.spawn(run_beside_the_ticker).get()
        ticking.kill()
        assert looks == ["ok", "ok"], looks
        # 200 ms of waiting: about 20 ticks when the wait is cooperative, 0 when it blocks.
        assert ticks_meanwhile >= 3, f"the ticker ran {ticks_meanwhile} times meanwhile"
        print(f"exercise 1: passed (the ticker ran {ticks_meanwhile} times meanwhile)")
        """),
    Exercise(
        task="""
        `sum_of_squares(n)` is pure Python and holds the loop for its whole
        run. Cut it into slices (yield every few tens of thousands of steps),
        keeping the result the same. The checker wants the right sum, and
        counts how often another greenlet got to run meanwhile.
        """,
        stub="""
        def sum_of_squares(n):
            total = 0
            for i in range(n):
                total += i * i
            return total
        """,
        solution="""
        def sum_of_squares(n):
            total = 0
            for i in range(n):
                total += i * i
                if i % 20_000 == 0:
                    labkit.sleep(0)
            return total
        """,
        check="""
        turns = 0

        def other():
            global turns
            while True:
                turns += 1
                labkit.sleep(0)

        def run_beside_the_other(n):
            before = turns
            return sum_of_squares(n), turns - before

        n = 1_000_000
        meanwhile = labkit.spawn(other)
        got, turns_meanwhile = labkit.spawn(run_beside_the_other, n).get()
        meanwhile.kill()
        assert got == (n - 1) * n * (2 * n - 1) // 6, f"wrong sum: {got}"
        assert turns_meanwhile >= 10, f"the other greenlet ran {turns_meanwhile} times meanwhile"
        print(f"exercise 2: passed (the other greenlet ran {turns_meanwhile} times meanwhile)")
        """),
]

CELLS = [
    md("""
    # 03 · Finding the call that blocks the loop

    Cooperative multitasking has one rule: **give control back often**. A
    greenlet that runs for 200 ms without switching freezes every other
    greenlet for 200 ms — timers fire late, servers stop answering. Such a call
    *blocks the loop*.

    The usual culprits are three: a blocking sleep, a long computation, and a
    library that does blocking I/O. We will meet each one, catch it with the
    blocking detector, and fix it.
    """),
    code("""
    %load_ext labkit
    import hashlib
    import threading
    import time
    import labkit
    """),
    md("""
    ## A heartbeat to feel the pain

    A greenlet that wants to wake every 20 ms, and writes down how late it
    actually woke. While the loop runs freely, it is late by a fraction of a
    millisecond. `measure(work)` runs `work` in a greenlet, then prints the
    heartbeat's worst lateness and how many times it beat while `work` ran
    (about once per 20 ms when nothing blocks).
    """),
    code("""
    lateness = []

    def heartbeat():
        while True:
            start = time.perf_counter()
            labkit.sleep(0.02)
            lateness.append(time.perf_counter() - start - 0.02)

    beat = labkit.spawn(heartbeat)
    beat.name = "heartbeat"

    def measure(work):
        labkit.sleep(0.05)              # let the heartbeat settle
        lateness.clear()
        g = labkit.spawn(work)
        g.name = work.__name__
        g.join()
        beats = len(lateness)           # beats while the work ran
        labkit.sleep(0.05)              # one more beat after the work
        print(f"{work.__name__}: heartbeat late by {max(lateness) * 1000:.1f} ms; "
              f"beats while it ran: {beats}")

    def nap():
        labkit.sleep(0.1)
    measure(nap)
    """),
    md("""
    Now turn on the **blocking detector**. A watchdog thread notices when
    control has not come back to the hub for longer than the threshold, samples
    where the time goes, and reports the line — here, in the cell that caused it.
    """),
    code("""
    %trace_blocking on 0.05
    """),
    md("""
    ## Culprit 1: `time.sleep`

    `time.sleep` sleeps the whole thread. The hub cannot run anything else: the
    heartbeat misses its beats.
    """),
    code("""
    def fetch_slowly():
        time.sleep(0.2)         # the real sleep: blocks the whole loop
    measure(fetch_slowly)
    """, tag="blocking-sleep"),
    md("""
    The report (in red) names the function, the line and how long the loop was
    stuck. The fix is the cooperative sleep, which parks only this greenlet:
    """),
    code("""
    def fetch_politely():
        labkit.sleep(0.2)       # parks this greenlet; the others run
    measure(fetch_politely)
    """, tag="fixed-sleep"),
    md("""
    ## Culprit 2: a long computation

    Pure Python number crunching never switches. Here, a loop of a few million
    steps:
    """),
    code("""
    def crunch():
        total = 0
        for i in range(4_000_000):
            total += i % 7      # no switch for the whole loop
        return total
    measure(crunch)
    """, tag="blocking-cpu"),
    md("""
    Two fixes. If the work is Python code, cut it into slices and yield between
    them with `labkit.sleep(0)`: the total time is the same, but the others run
    every few milliseconds.
    """),
    code("""
    def crunch_in_slices():
        total = 0
        for i in range(4_000_000):
            total += i % 7
            if i % 50_000 == 0:
                labkit.sleep(0)     # let the others run, then continue
        return total
    measure(crunch_in_slices)
    """, tag="fixed-cpu-slices"),
    md("""
    If the work happens in C code that releases the GIL — hashing, compression,
    numpy — send it to a **thread pool**. The greenlet parks until the thread
    is done; the hub runs meanwhile. Compare hashing 64 MB in the greenlet and
    in the pool:
    """),
    code("""
    from labkit.threadpool import ThreadPool

    data = b"x" * (64 << 20)
    pool = ThreadPool(2)

    def hash_here():
        return hashlib.sha256(data).hexdigest()   # C code, but on the hub's thread

    def hash_in_pool():
        return pool.apply(hashlib.sha256, (data,)).hexdigest()   # parks; a thread hashes

    measure(hash_here)
    measure(hash_in_pool)
    """, tag="cpu-pool"),
    md("""
    ## Culprit 3: a library that blocks

    Most libraries use the standard `socket` module, whose calls block the
    thread. `urllib.request` is one. To have something slow to talk to, we
    start a small HTTP server in a thread that takes 200 ms to answer:
    """),
    code("""
    import http.server
    import urllib.request

    class SlowHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.2)     # in the server's own thread: blocks only that thread
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"slow answer")

        def log_message(self, *args):
            pass                # keep the notebook quiet

    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{slow.server_address[1]}/"
    """),
    code("""
    def fetch_with_urllib():
        return urllib.request.urlopen(url, timeout=5).read()    # blocks the thread
    measure(fetch_with_urllib)
    """, tag="blocking-library"),
    md("""
    The detector skips the frames inside the standard library and points at
    *your* line, the one that called the library. The fix is **monkey
    patching**: replace the `socket` module's functions with labkit's
    cooperative ones, and every library built on `socket` parks greenlets
    instead of blocking the thread. Patching is thread-aware: the HTTP server's
    thread has no hub, so its sockets keep behaving as before.
    """),
    code("""
    from labkit import monkey
    monkey.patch_socket()
    measure(fetch_with_urllib)
    """, tag="fixed-library"),
    md("""
    (Normally you patch first thing, before importing the library:
    `python -m labkit.monkey script.py` does it for a script.)

    ## Cleaning up
    """),
    code("""
    %trace_blocking off
    beat.kill()
    pool.kill()
    slow.shutdown()
    """),
    md("""
    ## What to remember

    | culprit | symptom | fix |
    |---|---|---|
    | `time.sleep` | everything pauses | `labkit.sleep` |
    | a long Python loop | everything pauses | slices with `labkit.sleep(0)` |
    | C code that releases the GIL | everything pauses | `ThreadPool.apply` |
    | a blocking library | everything pauses | `labkit.monkey.patch_all()` first |

    `%trace_blocking on` tells you *which line*; the heartbeat trick tells you
    *how much it hurts*. Next: **04**, what a switch costs when nothing blocks.
    """),
    *exercises(EXERCISES),
]
