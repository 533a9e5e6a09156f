"""Write the teaching notebooks 01-05 from the source below.

    python notebooks/_build.py          # rewrites notebooks/0*.ipynb

The notebooks are generated so that their source is reviewable as plain
Python, and so that they are committed without outputs. Edit them here, not
in Jupyter (or edit in Jupyter, then port the change back here).

Each cell is ``md(text)`` or ``code(text, tag=None)``. A tag names a cell
whose output tests/test_notebooks.py checks; keep tags when editing.
"""
from __future__ import annotations

import os
import textwrap

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tag: str | None = None):
    cell = new_code_cell(textwrap.dedent(text).strip())
    if tag:
        cell.metadata["tags"] = [tag]
    return cell


# -- 01 ------------------------------------------------------------------------

NB01 = [
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
    hand: `labkit.sleep(0.03)` parks the greenlet *on a timer*. The hub runs
    others meanwhile and puts it back in the ready queue when the timer fires.
    Three sleepers of 30, 10 and 20 ms wake in deadline order, and all three
    together take about 30 ms, not 60: they wait at the same time.
    """),
    code("""
    woke = []

    def sleeper(ms):
        labkit.sleep(ms / 1000)
        woke.append(ms)

    start = time.perf_counter()
    labkit.joinall([labkit.spawn(sleeper, ms) for ms in (30, 10, 20)])
    elapsed_ms = (time.perf_counter() - start) * 1000
    print("woke in this order:", woke)
    print(f"all three took {elapsed_ms:.0f} ms")
    """, tag="sleepers"),
    md("""
    ## Watching it happen

    `%%trace` runs a cell under labkit's tracer and shows who ran, when, and
    why. In the timeline each greenlet has a lane: dark bars are the moments
    it runs, light bars the time it waits (colored by what it waits for).
    The `poll` lane is the hub waiting for the next timer.
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
]


# -- 02 ------------------------------------------------------------------------

NB02 = [
    md("""
    # 02 · A server that lives in the notebook

    With `%load_ext labkit`, the hub keeps running while the kernel is idle —
    between cells. So you can start a server in one cell, talk to it from the
    next, inspect it, and watch it live, without threads and without blocking
    the notebook.
    """),
    code("""
    %load_ext labkit
    import collections
    import threading
    import labkit
    from labkit import socket
    from labkit.server import StreamServer
    """),
    md("""
    ## An echo server

    `StreamServer` runs one greenlet that accepts connections and spawns one
    greenlet per connection to run `echo`. `sock.recv` looks blocking, but it
    only *parks this greenlet* until data arrives: every other connection keeps
    being served meanwhile.
    """),
    code("""
    served = collections.Counter()      # bytes echoed, per client address

    def echo(sock, address):
        labkit.getcurrent().name = f"echo-{address[1]}"
        while True:
            data = sock.recv(4096)          # parks until the client sends something
            if not data:
                return                      # the client closed the connection
            sock.sendall(data)
            served[address] += len(data)

    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()                          # returns at once; the server runs in the hub
    server._serving.name = "echo-server"
    print("listening on port", server.server_port)
    """, tag="server-start"),
    md("""
    The cell finished, yet the server is still there, parked in `accept`.
    `%labkit_status` lists the live greenlets and what each one waits for.
    """),
    code("""
    %labkit_status
    """, tag="status-idle"),
    md("""
    ## Clients, as greenlets

    Each client is a greenlet too. Three of them talk to the server at the same
    time; `joinall` waits for all of them (cooperatively: the server runs
    while this cell waits).
    """),
    code("""
    def client(number, messages):
        replies = []
        with socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            for i in range(messages):
                line = f"client {number}, message {i}\\n".encode()
                conn.sendall(line)
                replies.append(conn.recv(4096).decode().strip())
                labkit.sleep(0.01)
        return replies

    clients = [labkit.spawn(client, n, 3) for n in range(3)]
    labkit.joinall(clients)
    for g in clients:
        print(g.value)
    print("connections served so far:", len(served))
    """, tag="clients"),
    md("""
    ## A client from outside the hub

    A plain Python thread has no hub of its own: its sockets block *that
    thread* only. It can talk to our server while this notebook's main thread
    keeps running the hub. Notice how the cell waits: with `labkit.sleep`, so
    the hub keeps serving. (`thread.join()` would block the main thread — and
    with it the hub and the server the thread is waiting for.)
    """),
    code("""
    import socket as stdlib_socket

    thread_replies = []

    def thread_client():
        with stdlib_socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            for i in range(3):
                conn.sendall(f"from a thread {i}".encode())
                thread_replies.append(conn.recv(4096).decode())

    thread = threading.Thread(target=thread_client)
    thread.start()
    while thread.is_alive():
        labkit.sleep(0.02)             # wait cooperatively: the server keeps answering
    print(thread_replies)
    """, tag="thread-client"),
    md("""
    ## Watching it live

    The dashboard records what the hub does and redraws a few times a second:
    a timeline of the last seconds, counters, and the latest calls that blocked
    the loop. It keeps updating while the kernel is idle. Start some background
    load, show the dashboard, and watch (in a live notebook, run the cells one
    by one and look at the picture between them).
    """),
    code("""
    from tracing.dashboard import Dashboard

    def chatty(number):
        with socket.create_connection(("127.0.0.1", server.server_port)) as conn:
            while True:
                conn.sendall(b"hello")
                conn.recv(4096)
                labkit.sleep(0.05 * (number + 1))

    load = [labkit.spawn(chatty, n) for n in range(3)]
    for n, g in enumerate(load):
        g.name = f"chatty-{n}"
    dash = Dashboard(window=3)
    dash
    """, tag="dashboard"),
    code("""
    labkit.sleep(1.5)      # let it run for a moment (in a live notebook, just wait)
    print("dashboard refreshes so far:", dash.refreshes)
    """),
    md("""
    ## Cleaning up

    `dash.close()` stops the dashboard's recorder and its drawing thread;
    `killall` stops the load; `server.stop()` closes the listener and lets the
    handlers finish.
    """),
    code("""
    dash.close()
    labkit.killall(load)
    server.stop(timeout=1)
    print("labkit threads left:", [t.name for t in threading.enumerate()
                                  if t.name.startswith("labkit-dashboard")])
    print("server closed:", server.closed)
    """, tag="cleanup"),
    md("""
    ## What to remember

    - Greenlets spawned in a cell keep running after the cell ends: the hub is
      a guest of the kernel's own event loop.
    - Waiting in a cell should be cooperative (`labkit.sleep`, `joinall`), or
      the hub — and everything it serves — stops with it.
    - `%labkit_status` and the dashboard tell you what is alive and what it
      is doing.

    Next: **03**, what happens when something *does* block the loop.
    """),
]


# -- 03 ------------------------------------------------------------------------

NB03 = [
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
    millisecond. `measure(work)` runs `work` in a greenlet and returns the
    heartbeat's worst lateness meanwhile.
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
        labkit.sleep(0.05)              # one more beat after the work
        return max(lateness) * 1000

    print(f"heartbeat late by at most {measure(lambda: labkit.sleep(0.1)):.1f} ms")
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
    print(f"heartbeat late by {measure(fetch_slowly):.0f} ms")
    """, tag="blocking-sleep"),
    md("""
    The report (in red) names the function, the line and how long the loop was
    stuck. The fix is the cooperative sleep, which parks only this greenlet:
    """),
    code("""
    def fetch_politely():
        labkit.sleep(0.2)       # parks this greenlet; the others run
    print(f"heartbeat late by {measure(fetch_politely):.1f} ms")
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
    print(f"heartbeat late by {measure(crunch):.0f} ms")
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
    print(f"heartbeat late by {measure(crunch_in_slices):.1f} ms")
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

    print(f"in the greenlet: heartbeat late by {measure(hash_here):.0f} ms")
    print(f"in the pool:     heartbeat late by {measure(hash_in_pool):.1f} ms")
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
    print(f"heartbeat late by {measure(fetch_with_urllib):.0f} ms")
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
    print(f"heartbeat late by {measure(fetch_with_urllib):.1f} ms")
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
]


# -- 04 ------------------------------------------------------------------------

NB04 = [
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


# -- 05 ------------------------------------------------------------------------

NB05 = [
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

    One lane per greenlet. Dark bars: running. Light bars: parked, colored by
    what woke it (a timer, the queue, ...). `poll` is the hub waiting in the C
    event loop — time when nothing had anything to do. The red bar is the
    block: look how every other lane stalls at the same moment.
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
    from tracing.magics import cell_location

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
]


NOTEBOOKS = {
    "01_cooperative_multitasking.ipynb": NB01,
    "02_a_server_in_the_notebook.ipynb": NB02,
    "03_finding_blocking_calls.ipynb": NB03,
    "04_what_a_switch_costs.ipynb": NB04,
    "05_reading_a_trace.ipynb": NB05,
}


def build() -> list[str]:
    """Write every notebook; return the paths written."""
    written = []
    for name, cells in NOTEBOOKS.items():
        # Stable cell ids (nbformat draws random ones): rebuilding a notebook
        # whose text did not change must not change the file.
        for number, cell in enumerate(cells):
            cell.id = f"c{number:02d}"
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3",
                           "language": "python"},
            "language_info": {"name": "python"},
        })
        nbformat.validate(nb)
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print("wrote", os.path.relpath(path))
