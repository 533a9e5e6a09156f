"""labkit.threading under ``python -m labkit.monkey`` (green mode): ordinary
threading-stdlib code run in greenlets behaves as it does under gevent.

Each scenario is a row of issue 15's table; unpatched, each one hangs, blocks
the whole hub, or mixes up greenlets. They all run in one patched subprocess
(patching changes the interpreter for good), which prints one JSON object;
each test reads its row. A ticker greenlet that ticks every 2 ms shows that
the hub kept running while a greenlet waited: a 0.2 s wait gives it ~100
ticks, and the tests ask for 10.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(90)

SCENARIOS = textwrap.dedent('''
    import json, logging, logging.handlers, pickle, queue, socket, struct, sys
    import threading, time
    from concurrent.futures import ThreadPoolExecutor
    import labkit
    from labkit.threadpool import ThreadPool

    results = {}

    class Ticker:
        """Counts hub passes: every 2 ms while the hub is free to run."""
        def __init__(self):
            self.ticks = 0
            self.g = labkit.spawn(self.run)
        def run(self):
            while True:
                self.ticks += 1
                labkit.sleep(0.002)
        def stop(self):
            self.g.kill()
            return self.ticks

    def scenario(fn):
        with labkit.Timeout(10):
            results[fn.__name__] = fn()
        return fn

    @scenario
    def lock_held_across_sleep():
        lock, order = threading.Lock(), []
        def a():
            with lock:
                order.append("a in"); time.sleep(0.2); order.append("a out")
        def b():
            with lock:
                order.append("b")
        labkit.joinall([labkit.spawn(a), labkit.spawn(b)])
        return order

    @scenario
    def lock_acquire_with_timeout():
        lock = threading.Lock()
        def a():
            with lock:
                time.sleep(0.2)
        def b():
            start = time.monotonic()
            got = lock.acquire(timeout=1)
            waited = time.monotonic() - start
            lock.release()
            return got, waited
        ticker = Ticker()
        ga, gb = labkit.spawn(a), labkit.spawn(b)
        labkit.joinall([ga, gb])
        got, waited = gb.value
        return {"got": got, "waited": waited, "ticks": ticker.stop()}

    @scenario
    def rlock_excludes_greenlets():
        rlock, inside, most = threading.RLock(), [0], [0]
        def worker():
            with rlock:
                with rlock:  # still reentrant for its owner
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                    time.sleep(0.02)
                    inside[0] -= 1
        labkit.joinall([labkit.spawn(worker) for _ in range(5)])
        return most[0]

    @scenario
    def event_and_queue_fed_by_greenlets():
        event, q, out = threading.Event(), queue.Queue(), {}
        def setter():
            time.sleep(0.1); event.set()
        def feeder():
            time.sleep(0.1); q.put("item"); time.sleep(0.1); q.put("late")
        ticker = Ticker()
        labkit.spawn(setter); labkit.spawn(feeder)
        out["event"] = event.wait()
        out["queue"] = q.get()
        out["queue_timeout"] = q.get(timeout=2)
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            out["empty"] = True
        out["event_timeout"] = threading.Event().wait(0.05)
        out["ticks"] = ticker.stop()
        return out

    @scenario
    def every_stdlib_queue_cooperates():
        out = {}
        for name in ("SimpleQueue", "LifoQueue", "PriorityQueue", "Queue"):
            q = getattr(queue, name)()
            labkit.spawn(lambda: (time.sleep(0.02), q.put(1)))
            out[name] = q.get(timeout=2)
        return out

    @scenario
    def fork_and_waitpid():
        import os
        ticker = Ticker()
        pid = os.fork()
        if pid == 0:  # the child: a fresh hub that works
            try:
                g = labkit.spawn(lambda: (labkit.sleep(0.1), 3)[1])
                os._exit(g.get())
            finally:
                os._exit(99)
        _, status = os.waitpid(pid, 0)
        return {"code": os.waitstatus_to_exitcode(status), "ticks": ticker.stop()}

    @scenario
    def join_and_future_from_a_greenlet():
        out = {}
        ticker = Ticker()
        t = threading.Thread(target=time.sleep, args=(0.2,))
        t.start()
        t.join()
        out["joined"] = not t.is_alive()
        with ThreadPoolExecutor(2) as pool:
            out["result"] = pool.submit(lambda: (time.sleep(0.2), 42)[1]).result()
        out["ticks"] = ticker.stop()
        return out

    @scenario
    def local_is_greenlet_local():
        data = threading.local()
        def worker(i):
            data.value = i
            time.sleep(0.01)
            return data.value
        greenlets = [labkit.spawn(worker, i) for i in range(100)]
        labkit.joinall(greenlets)
        return sum(g.value == i for i, g in enumerate(greenlets))

    @scenario
    def threads_are_greenlets():
        seen = {}
        def body():
            seen["name"] = threading.current_thread().name
            seen["ident"] = threading.get_ident()
            seen["os_thread"] = threading.get_native_id()
        t = threading.Thread(target=body, name="green-1")
        t.start(); t.join()
        return {"name": seen["name"], "distinct": seen["ident"] != threading.get_ident(),
                "same_os_thread": seen["os_thread"] == threading.get_native_id(),
                "main": threading.current_thread() is threading.main_thread(),
                "active": threading.active_count(),
                # labkit's own thread pool keeps real OS threads (labkit._native)
                "pool_os_thread": ThreadPool(1).apply(threading.get_native_id)
                                  != threading.get_native_id()}

    print(json.dumps(results))
''')

# logging's handler is made *before* patching: patch_thread must replace its
# lock (an original RLock lets every greenlet of the main thread into emit).
SOCKET_HANDLER = textwrap.dedent('''
    import logging, logging.handlers, pickle, socket as _s, struct, sys
    listener = _s.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log = logging.getLogger("labkit-test")
    log.propagate = False
    handler = logging.handlers.SocketHandler("127.0.0.1", port)
    log.addHandler(handler)

    from labkit import monkey; monkey.patch_all()
    import socket, time, labkit

    received = []
    def receive():
        conn, _ = socket.socket(fileno=listener.detach()).accept()
        with conn, conn.makefile("rb") as stream:
            while True:
                header = stream.read(4)
                if len(header) < 4:
                    return
                (size,) = struct.unpack(">L", header)
                received.append(pickle.loads(stream.read(size))["msg"])
    receiver = labkit.spawn(receive)
    # 256 KiB records: sendall parks mid-record, and another greenlet must
    # not get into emit() then and write into the middle of it.
    payload = "x" * 262144
    def emit(i):
        for j in range(5):
            log.warning("%s %s %s", i, j, payload)
    labkit.joinall([labkit.spawn(emit, i) for i in range(10)], raise_error=True)
    handler.close()
    receiver.join(timeout=20)
    intact = sum(m.split()[2] == payload for m in received)
    print(len(received), intact)
''')


# Mixed mode in a script: patch_all(threads="native"). Threads stay OS
# threads; the same locks, queues and locals serve both sides.
MIXED = textwrap.dedent('''
    from labkit import monkey; monkey.patch_all(threads="native")
    import json, queue, threading, time
    from concurrent.futures import ThreadPoolExecutor
    import labkit

    class Ticker:
        def __init__(self):
            self.ticks = 0
            self.g = labkit.spawn(self.run)
        def run(self):
            while True:
                self.ticks += 1
                labkit.sleep(0.002)
        def stop(self):
            self.g.kill()
            return self.ticks

    out = {"mode": monkey.thread_mode()}
    main_os_thread = threading.get_native_id()

    # a user's thread hands work to a greenlet through queue.Queue and back
    requests, replies = queue.Queue(), queue.Queue()
    def user_thread():
        out["thread_is_os_thread"] = threading.get_native_id() != main_os_thread
        for i in range(3):
            requests.put(i)
            out.setdefault("replies", []).append(replies.get(timeout=5))
        requests.put(None)
    def server():
        while (item := requests.get()) is not None:
            labkit.sleep(0.03)   # ~45 ticks of the ticker in all: 10 is asked
            replies.put(item * 10)
    ticker = Ticker()
    server_g = labkit.spawn(server)
    t = threading.Thread(target=user_thread)
    t.start()
    t.join()  # parks this (main) greenlet: the server greenlet runs meanwhile
    server_g.join(timeout=5)
    out["join_ticks"] = ticker.stop()

    # concurrent.futures from a greenlet: real threads, the greenlet parks
    ticker = Ticker()
    with ThreadPoolExecutor(2) as pool:
        out["future"] = pool.submit(lambda: (time.sleep(0.2), threading.get_native_id())[1]).result()
    out["future_ticks"] = ticker.stop()
    out["future_in_os_thread"] = out.pop("future") != main_os_thread

    # threading.local: per thread for threads, per greenlet for greenlets
    data = threading.local()
    data.v = "main"
    def thread_reads():
        return getattr(data, "v", None)
    with ThreadPoolExecutor(1) as pool:
        out["local_in_thread"] = pool.submit(thread_reads).result()
    g = labkit.spawn(thread_reads); g.join()
    out["local_in_greenlet"] = g.value
    out["local_in_main"] = data.v

    # an Event set by a thread wakes a greenlet, and a Condition the other way
    event, cond, box = threading.Event(), threading.Condition(), []
    threading.Timer(0.05, event.set).start()
    out["event"] = event.wait(5)
    def notified():
        with cond:
            return bool(cond.wait_for(lambda: box, timeout=5))
    with ThreadPoolExecutor(1) as pool:
        f = pool.submit(notified)
        labkit.sleep(0.05)
        with cond:
            box.append(1); cond.notify_all()
        out["condition"] = f.result(timeout=5)
    print(json.dumps(out))
''')


def test_mixed_mode_keeps_os_threads_and_shares_locks_queues_and_locals(tmp_path):
    script = tmp_path / "mixed.py"
    script.write_text(MIXED)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "native" and out["thread_is_os_thread"] is True
    assert out["replies"] == [0, 10, 20]        # thread -> greenlet -> thread
    assert out["join_ticks"] >= 10              # Thread.join parked the greenlet
    assert out["future_in_os_thread"] is True and out["future_ticks"] >= 10
    assert (out["local_in_thread"], out["local_in_greenlet"], out["local_in_main"]) == \
        (None, None, "main")
    assert out["event"] is True and out["condition"] is True


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    script = tmp_path_factory.mktemp("threading") / "scenarios.py"
    script.write_text(SCENARIOS)
    done = subprocess.run([sys.executable, "-m", "labkit.monkey", str(script)],
                          capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_lock_held_across_a_sleep_makes_the_other_greenlet_wait_not_hang(table):
    assert table["lock_held_across_sleep"] == ["a in", "a out", "b"]


def test_acquire_with_timeout_gets_the_lock_when_released_and_the_hub_runs_meanwhile(table):
    row = table["lock_acquire_with_timeout"]
    assert row["got"] is True
    assert 0.15 <= row["waited"] < 0.9   # A released after 0.2 s, not the 1 s timeout
    assert row["ticks"] >= 10            # the hub was not frozen


def test_an_rlock_lets_one_greenlet_in_at_a_time_and_is_reentrant(table):
    assert table["rlock_excludes_greenlets"] == 1


def test_event_and_queue_waits_park_and_are_woken_by_greenlets(table):
    row = table["event_and_queue_fed_by_greenlets"]
    assert row["event"] is True and row["queue"] == "item" and row["queue_timeout"] == "late"
    assert row["empty"] is True and row["event_timeout"] is False
    assert row["ticks"] >= 10


def test_every_stdlib_queue_class_is_cooperative(table):
    assert table["every_stdlib_queue_cooperates"] == {
        "SimpleQueue": 1, "LifoQueue": 1, "PriorityQueue": 1, "Queue": 1}


def test_fork_reinitialises_the_hub_and_waitpid_parks(table):
    row = table["fork_and_waitpid"]
    assert row["code"] == 3        # the child's hub ran a greenlet
    assert row["ticks"] >= 10      # the parent's hub ran during waitpid


def test_join_and_future_result_from_a_greenlet_let_the_hub_run(table):
    row = table["join_and_future_from_a_greenlet"]
    assert row["joined"] is True and row["result"] == 42
    assert row["ticks"] >= 20  # two 0.2 s waits


def test_threading_local_is_greenlet_local(table):
    assert table["local_is_greenlet_local"] == 100


def test_threads_are_greenlets_and_current_thread_is_sensible(table):
    row = table["threads_are_greenlets"]
    assert row == {"name": "green-1", "distinct": True, "same_os_thread": True,
                   "main": True, "active": 1, "pool_os_thread": True}


def test_logging_socket_handler_from_greenlets_loses_and_mixes_nothing(tmp_path):
    script = tmp_path / "socket_handler.py"
    script.write_text(SOCKET_HANDLER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["50", "50"]


# gevent's test__threading and the rest of issue 15, green mode: each row
# failed before its fix (a spin loop never let the holder run; threading's
# _active_limbo_lock let every greenlet in; a spawned greenlet's dummy
# Thread stayed in threading._active after its death).
GREEN_DETAILS = textwrap.dedent('''
    import json, threading, labkit
    out = {}

    # while not lock.acquire(False): a failed try lets the others run once
    lock, tries = threading.Lock(), []
    lock.acquire()
    def spinner():
        for i in range(1000):
            if lock.acquire(False):
                tries.append(i)
                return
        tries.append(None)
    g = labkit.spawn(spinner)
    labkit.sleep(0)     # the spinner runs; its failed try lets us release
    lock.release()
    g.join()
    out["spin"] = tries

    # ... but notify() does not switch (Condition asks locked(), not a try)
    cond, ran = threading.Condition(threading.Lock()), []
    labkit.spawn(ran.append, 1)
    with cond:
        cond.notify_all()
        out["ran_during_notify"] = bool(ran)

    # threading's own _active_limbo_lock excludes greenlets from each other
    order, limbo = [], threading._active_limbo_lock
    def holder():
        with limbo:
            order.append("holder in")
            labkit.sleep(0.1)
            order.append("holder out")
    def other():
        got = limbo.acquire(timeout=2)
        order.append("other in" if got else "other timed out")
        if got:
            limbo.release()
    labkit.joinall([labkit.spawn(holder), labkit.spawn(other)])
    out["limbo"] = order

    # a spawned greenlet's dummy Thread leaves threading._active at its death
    before = len(threading._active)
    def helper():
        threading.current_thread()
        labkit.sleep(0.05)
    g = labkit.spawn(helper)
    labkit.sleep(0.02)
    during = len(threading._active) - before
    g.join()            # (g is still referenced: its death is what counts)
    out["dummy"] = [during, len(threading._active) - before]
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def green_details(tmp_path_factory):
    script = tmp_path_factory.mktemp("threading") / "details.py"
    script.write_text(GREEN_DETAILS)
    done = subprocess.run([sys.executable, "-m", "labkit.monkey", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_failed_nonblocking_acquire_lets_other_greenlets_run(green_details):
    assert green_details["spin"] == [1]          # not [None]: 1000 tries in vain
    assert green_details["ran_during_notify"] is False


def test_threadings_active_limbo_lock_excludes_greenlets(green_details):
    assert green_details["limbo"] == ["holder in", "holder out", "other in"]


def test_a_spawned_greenlets_dummy_thread_leaves_active_when_it_dies(green_details):
    assert green_details["dummy"] == [1, 0]


# Mixed mode: a thread started *before* patching has no patched bootstrap to
# tell its joiners; a greenlet that joins it must still be woken by its end,
# not poll (waiting_on names a sleep while it polls).
PREPATCH_JOIN = textwrap.dedent('''
    import json, threading
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    from labkit import monkey; monkey.patch_all(threads="native")
    import labkit
    from labkit._park import waiting_on
    joiner = labkit.spawn(thread.join)
    labkit.sleep(0.05)
    out = {"waits_on": waiting_on(joiner)}
    release.set()
    joiner.join(timeout=10)
    out["joined"] = joiner.dead and not thread.is_alive()
    print(json.dumps(out))
''')


def test_mixed_mode_join_of_a_thread_started_before_patching_is_woken_by_its_end(tmp_path):
    script = tmp_path / "prepatch.py"
    script.write_text(PREPATCH_JOIN)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["joined"] is True
    assert out["waits_on"] is not None and not out["waits_on"].startswith("sleep"), out
