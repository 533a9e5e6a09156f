"""Cells of notebooks/10_the_socket_wait_by_hand.ipynb (built by notebooks/_build.py)."""
from _lessons._cells import Exercise, code, exercises, md

EXERCISES = [
    Exercise(
        task="""
        Give the toy loop timers. `TimedToyLoop.sleep(seconds)` must park the
        calling greenlet (not the thread!) until `seconds` have passed, so
        that sleepers wait *together*. Keep a heap of `(deadline, number,
        greenlet)` (`heapq`; the number breaks ties in order), and fill in
        the three hooks the loop calls: `next_timeout()` (how long `select`
        may wait: until the first deadline), `fire_timers()` (wake every
        greenlet whose deadline has passed, with `self._wake(task)`) and
        `waiting()` (is there anything left to wait for?). The checker spawns
        sleepers of 30, 10 and 20 ms and wants them to wake shortest first.
        """,
        stub="""
        class TimedToyLoop(ToyLoop):
            def __init__(self):
                super().__init__()
                self.timers = []                      # heap of (deadline, number, greenlet)
                self.numbers = itertools.count()

            def sleep(self, seconds):
                time.sleep(seconds)                   # blocks the whole loop: fix me

            # next_timeout, fire_timers and waiting: see the task
        """,
        solution="""
        class TimedToyLoop(ToyLoop):
            def __init__(self):
                super().__init__()
                self.timers = []                      # heap of (deadline, number, greenlet)
                self.numbers = itertools.count()

            def sleep(self, seconds):
                me = getcurrent()
                heapq.heappush(self.timers, (self.now() + seconds, next(self.numbers), me))
                self._parked[me] = self.now()
                self.loop.switch()                    # the loop resumes us when it is time

            def next_timeout(self):
                if not self.timers:
                    return super().next_timeout()
                return max(0.0, self.timers[0][0] - self.now())

            def fire_timers(self):
                while self.timers and self.timers[0][0] <= self.now():
                    _deadline, _number, task = heapq.heappop(self.timers)
                    self._wake(task)

            def waiting(self):
                return bool(self.timers) or super().waiting()
        """,
        check="""
        timed = TimedToyLoop()
        woke = []

        def sleeper(ms):
            timed.sleep(ms / 1000)
            woke.append(ms)

        for ms in (30, 10, 20):
            timed.spawn(sleeper, ms, name=f"sleep-{ms}")
        timed.run()
        assert woke == [10, 20, 30], f"they woke in the order {woke}: one after the other?"
        assert any(kind == "wait" for _lane, kind, _b, _e in timed.log), "no parked slices logged"
        print("exercise 1: passed")
        """),
    Exercise(
        task="""
        Write `toy_recv(loop, sock, n)` the way labkit's `recv` works: *try*
        to read up to `n` bytes from the non-blocking socket `sock` first, and
        only when there is nothing to read yet (`BlockingIOError`) park with
        `loop.wait_readable(sock)` and try again. The checker reads once before
        anything was sent (it must park) and once after (it must not park).
        """,
        stub="""
        def toy_recv(loop, sock, n):
            return sock.recv(n)
        """,
        solution="""
        def toy_recv(loop, sock, n):
            while True:
                try:
                    return sock.recv(n)
                except BlockingIOError:           # nothing there yet
                    loop.wait_readable(sock)
        """,
        check="""
        def read_twice(reader_end, writer_end):
            loop = ToyLoop()
            got = []

            def reader():
                got.append(toy_recv(loop, reader_end, 100))     # nothing sent yet
                writer_end.send(b"again")
                got.append(toy_recv(loop, reader_end, 100))     # already there

            loop.spawn(reader, name="reader")
            loop.spawn(lambda: writer_end.send(b"hello"), name="writer")
            loop.run()
            return got, [entry for entry in loop.log if entry[:2] == ("reader", "wait")]

        reader_end, writer_end = socket.socketpair()
        reader_end.setblocking(False)
        try:
            got, waits = read_twice(reader_end, writer_end)
        finally:
            reader_end.close()
            writer_end.close()
        assert got == [b"hello", b"again"], got
        assert len(waits) == 1, f"the reader parked {len(waits)} times; once is enough"
        print("exercise 2: passed")
        """),
]

CELLS = [
    md("""
    # 10 · The hub's socket wait, built by hand

    `sock.recv()` in a greenlet *looks* blocking, yet the others keep
    running. How? This lesson builds the mechanism from nothing — a ready
    queue, `select`, and greenlets — runs a small program on it, and draws
    its timeline beside labkit's real one for the same program. (This is the
    idea at the heart of David Beazley's "Python Concurrency From the Ground
    Up" and of the executor chapter of the Rust async book.)

    The whole trick:

    1. a greenlet that would block on a socket instead **registers** the
       socket with a *selector*, noting "wake me", and **switches to the loop**;
    2. the loop runs every **ready** greenlet until each one parks or ends;
    3. when none is ready, the loop asks the operating system which sockets
       have data (`select`: this is the only place the thread waits), and
       puts the greenlets waiting for those back in the ready queue.
    """),
    code("""
    %load_ext labkit
    %matplotlib inline
    import heapq
    import itertools
    import selectors
    import socket
    import time
    from collections import deque

    import matplotlib.pyplot as plt
    from greenlet import greenlet, getcurrent

    import labkit
    import tracing
    from labkit import socket as labkit_socket
    """),
    md("""
    ## The toy loop

    Forty lines. `log` records, for the picture, when each greenlet ran
    (`run`), how long it waited (`wait`), and when the loop itself waited in
    `select` (`poll`, as labkit's timeline calls it).
    """),
    code("""
    class ToyLoop:
        \"\"\"A hub in forty lines: a ready queue, a selector, and a log of who ran when.\"\"\"

        def __init__(self):
            self.ready = deque()                      # greenlets to resume, in order
            self.selector = selectors.DefaultSelector()
            self.loop = greenlet(self._run)           # the "hub": every task's parent
            self.start = time.perf_counter()
            self.log = []                             # (lane, kind, start, end)
            self._parked = {}                         # greenlet -> when it parked

        def now(self):
            return time.perf_counter() - self.start

        def spawn(self, function, *args, name):
            task = greenlet(lambda: function(*args), parent=self.loop)
            task.name = name
            self.ready.append(task)

        def wait_readable(self, sock):
            \"\"\"Park the calling greenlet until sock has data.\"\"\"
            me = getcurrent()
            self.selector.register(sock, selectors.EVENT_READ, me)   # "wake me"
            self._parked[me] = self.now()
            self.loop.switch()                        # to the loop; it resumes us later

        # Hooks for exercise 1 (timers); with sockets only, there is nothing more.
        def next_timeout(self):
            return None                               # select waits until a socket is ready

        def fire_timers(self):
            pass

        def waiting(self):
            return bool(self.selector.get_map())      # does anybody wait for a socket?

        def _run(self):
            while self.ready or self.waiting():
                while self.ready:                     # 1. run every ready greenlet ...
                    task = self.ready.popleft()
                    began = self.now()
                    task.switch()                     #    ... until it parks or ends
                    self.log.append((task.name, "run", began, self.now()))
                if self.waiting():                    # 2. wait for sockets (and timers)
                    began = self.now()
                    events = self.selector.select(0 if self.ready else self.next_timeout())
                    self.log.append(("poll", "poll", began, self.now()))
                    for key, _ in events:             # 3. wake who waited for them
                        self.selector.unregister(key.fileobj)
                        self._wake(key.data)
                    self.fire_timers()

        def _wake(self, task):
            self.log.append((task.name, "wait", self._parked.pop(task), self.now()))
            self.ready.append(task)

        def run(self):
            \"\"\"Run until nothing is ready and nobody waits.\"\"\"
            self.loop.switch()
    """, tag="toy-loop"),
    md("""
    ## A program for it

    Two clients, each talking to its own echo server over a socket pair:
    send "ping", wait for the reply, three times. Every `recv` is preceded by
    `wait_readable` — that is the line that parks instead of blocking.
    """),
    code("""
    def pinger(loop, sock, rounds):
        for i in range(rounds):
            sock.send(f"ping {i}".encode())
            loop.wait_readable(sock)                  # park until the reply is there
            sock.recv(100)

    def echoer(loop, sock, rounds):
        for i in range(rounds):
            loop.wait_readable(sock)                  # park until a ping is there
            sock.send(sock.recv(100).replace(b"ping", b"pong"))

    toy = ToyLoop()
    pairs = []
    for n in (1, 2):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        pairs += [a, b]
        toy.spawn(pinger, toy, a, 3, name=f"client-{n}")
        toy.spawn(echoer, toy, b, 3, name=f"server-{n}")
    toy.run()
    for s in pairs:
        s.close()

    runs = [entry for entry in toy.log if entry[1] == "run"]
    polls = [entry for entry in toy.log if entry[1] == "poll"]
    print(f"{len(runs)} runs, {len(polls)} polls; the order they ran in:")
    print(" ".join(lane for lane, *_ in runs))
    """, tag="toy-run"),
    md("""
    ## The same program on labkit

    labkit's `socket` does the `wait_readable` inside `recv` (in
    `labkit/_park.py`, with the C loop's epoll in place of `selectors`), so
    the program loses its explicit waits. We record it with the tracer.
    """),
    code("""
    def labkit_pinger(sock, rounds):
        for i in range(rounds):
            sock.send(f"ping {i}".encode())
            sock.recv(100)                            # parks, as wait_readable did

    def labkit_echoer(sock, rounds):
        for i in range(rounds):
            sock.send(sock.recv(100).replace(b"ping", b"pong"))

    with tracing.trace(report=False) as real:
        greenlets, labkit_pairs = [], []
        for n in (1, 2):
            a, b = labkit_socket.socketpair()
            labkit_pairs += [a, b]
            greenlets += [labkit.spawn(labkit_pinger, a, 3), labkit.spawn(labkit_echoer, b, 3)]
            greenlets[-2].name, greenlets[-1].name = f"client-{n}", f"server-{n}"
        labkit.joinall(greenlets)
    for s in labkit_pairs:
        s.close()
    order = [sw.greenlet for sw in real.switches() if sw.greenlet.startswith(("client", "server"))]
    print(f"{len(order)} resumes; the order they ran in:")
    print(" ".join(order))
    """, tag="labkit-run"),
    md("""
    ## Side by side

    Left, the toy loop's log; right, labkit's trace of the same program (its
    own colours and legend). The same shape: each greenlet runs for a moment
    and parks, and between rounds the loop asks the operating system which
    sockets are ready.

    Compare the two orders printed above, though: they differ at the start.
    The toy parks *before* every `recv`, even when the data is already
    there. labkit's `recv` first *tries* to read, and parks only when the
    socket has nothing yet (`EAGAIN`, `BlockingIOError` in Python): the
    servers find the first ping waiting and answer it in their first run,
    so labkit needs fewer resumes for the same work. Exercise 2 gives the
    toy that habit.
    """),
    code("""
    def draw_toy(loop, ax):
        lanes = ["poll"] + sorted({lane for lane, *_ in loop.log} - {"poll"})
        end = max(e for *_, e in loop.log)
        least = end * 0.004                           # keep the shortest runs visible
        colours = {"run": "tab:blue", "wait": "lightsteelblue", "poll": "silver"}
        for lane, kind, began, ended in loop.log:
            y = lanes.index(lane)
            ax.broken_barh([(began, max(ended - began, least))],
                           (y - 0.35, 0.7), color=colours[kind])
        ax.set_yticks(range(len(lanes)), lanes)
        ax.invert_yaxis()
        ax.set_xlabel("seconds since the toy loop was made")
        ax.set_title("the toy loop: run (dark), waiting (light), select (grey)")

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4))
    draw_toy(toy, left)
    real.timeline(ax=right)
    right.set_title("labkit's hub, traced")
    fig.tight_layout()
    plt.show()
    """, tag="side-by-side"),
    md("""
    ## What labkit adds to the toy

    The toy is the real idea, but labkit's hub also has:

    - **timers** (a heap of deadlines: `select` waits at most until the next
      one) — that is exercise 1;
    - a **C event loop** (epoll), so that one loop pass is one call into C;
    - **wake-ups from other threads** (an eventfd in the selector);
    - **errors**: a failing greenlet does not take the loop down (notebook 07);
    - a guard against greenlets that never park (notebook 09).

    ## What to remember

    - "Blocking" calls in a greenlet park it: register the socket, switch to
      the loop.
    - The loop runs what is ready, then waits in **one** place for whatever
      comes next.
    - labkit's hub is this loop, with timers, a C backend and a lot of care.
    """),
    *exercises(EXERCISES),
]
