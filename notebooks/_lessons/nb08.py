"""Cells of notebooks/08_the_primitives.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        A race: `start_race(runners)` spawns one greenlet per runner name; each
        must wait for the starting signal, then append its name to `finished`.
        Give the signal with an `Event` *after* all of them are spawned and
        `started` says so; return the runners' greenlets after joining them.
        The checker wants nobody to run before the signal.
        """,
        stub="""
        def start_race(runners, finished, started):
            def run(name):
                finished.append(name)
            gs = [labkit.spawn(run, name) for name in runners]
            labkit.sleep(0)                  # all of them are spawned ...
            started.append(len(finished))    # ... how many ran before the signal?
            labkit.joinall(gs)
            return gs
        """,
        solution="""
        def start_race(runners, finished, started):
            signal = Event()

            def run(name):
                signal.wait()
                finished.append(name)
            gs = [labkit.spawn(run, name) for name in runners]
            labkit.sleep(0)                  # all of them are spawned ...
            started.append(len(finished))    # ... how many ran before the signal?
            signal.set()
            labkit.joinall(gs)
            return gs
        """,
        check="""
        finished, started = [], []
        gs = start_race(["ann", "bob", "cyd"], finished, started)
        assert started == [0], f"{started[0]} runner(s) ran before the signal"
        assert sorted(finished) == ["ann", "bob", "cyd"], finished
        assert all(g.dead for g in gs)
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        `fetch_all(items, limit)` fetches every item (`fetch(item)`, which
        waits 20 ms) and returns the results in order — but at most `limit`
        fetches may run at the same time (a server that allows `limit`
        connections). Use a `Pool` or a `Semaphore`. The checker counts how
        many run at once.
        """,
        stub="""
        def fetch_all(items, limit):
            gs = [labkit.spawn(fetch, item) for item in items]
            labkit.joinall(gs)
            return [g.value for g in gs]
        """,
        solution="""
        def fetch_all(items, limit):
            return Pool(limit).map(fetch, items)
        """,
        check="""
        running, most = 0, 0

        def fetch(item):
            global running, most
            running += 1
            most = max(most, running)
            try:
                labkit.sleep(0.02)
                return item * 10
            finally:
                running -= 1

        got = fetch_all(range(8), 3)
        assert list(got) == [i * 10 for i in range(8)], f"got {got}"
        assert most == 3, f"{most} fetches ran at once (the limit is 3)"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 08 · The primitives: Event, Queue, Semaphore, Pool

    Greenlets coordinate through a handful of objects, the same as threads
    have, with one difference: waiting on them *parks the greenlet* and lets
    the hub run others. No lock protects plain Python data between two
    greenlets — only one runs at a time, and it is only ever interrupted
    where it waits — so these objects are about *waiting for each other*:

    | object | a greenlet waits until ... |
    |---|---|
    | `Event` | somebody calls `set()` |
    | `Queue` | there is an item to `get()` (or room to `put()`) |
    | `Semaphore` | fewer than N others hold it |
    | `Pool` | one of its N slots is free, to run a task |
    """),
    code("""
    %load_ext labkit
    import labkit
    from labkit.event import Event, AsyncResult
    from labkit.queue import Queue
    from labkit.lock import Semaphore
    from labkit.pool import Pool
    """),
    md("""
    ## Event: one signal, many waiters

    `wait()` parks until `set()`; then every waiter wakes, in the order they
    started waiting. A set Event stays set (`clear()` resets it).
    """),
    code("""
    ready = Event()
    log = []

    def waiter(name):
        log.append(f"{name} waits")
        ready.wait()
        log.append(f"{name} goes")

    gs = [labkit.spawn(waiter, name) for name in ("w1", "w2", "w3")]
    labkit.sleep(0.01)
    log.append("-- set --")
    ready.set()
    labkit.joinall(gs)
    print(log)
    """, tag="event"),
    md("""
    `AsyncResult` is an Event that carries a value (or an exception): one
    greenlet `set(value)`s it, the others `get()` it.

    ## Queue: handing work over

    A producer `put`s, consumers `get`. With `maxsize`, `put` parks while the
    queue is full: a fast producer is slowed down to the consumers' pace
    (*back-pressure*).
    """),
    code("""
    jobs = Queue(maxsize=2)
    done = []

    def producer():
        for job in range(6):
            jobs.put(job)                 # parks while 2 jobs wait
            done.append(f"put {job} (queue: {jobs.qsize()})")
        for _ in range(2):
            jobs.put(None)

    def consumer(name):
        while (job := jobs.get()) is not None:
            labkit.sleep(0.01)            # the work
            done.append(f"{name} did {job}")

    labkit.joinall([labkit.spawn(producer), labkit.spawn(consumer, "c1"),
                    labkit.spawn(consumer, "c2")])
    print("\\n".join(done))
    """, tag="queue"),
    md("""
    The queue never holds more than 2 jobs: the producer waited for the
    consumers. Without `maxsize`, it would have queued all six at once.

    ## Semaphore: at most N at a time

    A `Semaphore(n)` lets `n` holders in; the next one parks until somebody
    leaves. It is how you limit concurrency: connections to a database,
    requests to an API.
    """),
    code("""
    door = Semaphore(2)
    inside, most_inside = 0, 0

    def visitor(number):
        global inside, most_inside
        with door:                        # parks while 2 are inside
            inside += 1
            most_inside = max(most_inside, inside)
            labkit.sleep(0.02)
            inside -= 1

    labkit.joinall([labkit.spawn(visitor, n) for n in range(6)])
    print("at most inside at once:", most_inside)
    """, tag="semaphore"),
    md("""
    ## Pool: a Semaphore that spawns

    `Pool(n)` runs tasks in at most `n` greenlets at a time: `spawn` parks
    while the pool is full, `map` returns results in order,
    `imap_unordered` yields them as they finish.
    """),
    code("""
    def square_slowly(x):
        labkit.sleep(0.01 * (5 - x))
        return x * x

    pool = Pool(3)
    print("map (in order):        ", pool.map(square_slowly, range(5)))
    print("imap_unordered (as done):", list(pool.imap_unordered(square_slowly, range(5))))
    """, tag="pool"),
    md("""
    ## What to remember

    - `Event` for "go", `AsyncResult` for "here is the answer".
    - `Queue(maxsize=...)` hands work over with back-pressure.
    - `Semaphore(n)` and `Pool(n)` limit how many run at once.
    - Waiting on any of them parks only the waiting greenlet.

    Next: **09**, when something never waits at all.
    """),
    *exercises(EXERCISES),
]
