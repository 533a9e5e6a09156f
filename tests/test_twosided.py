"""labkit._twosided (through labkit.threading's names): one lock, used at once
by greenlets of the main thread's hub and by plain OS threads.

A greenlet that waits parks and lets the hub run (a ticker greenlet keeps
ticking), a thread that waits blocks natively, and a release, set or put
from either side wakes a waiter on either side. No monkey patching here:
these classes work as they are; patching only puts them in ``threading``.
The last tests run seeded random schedules of greenlets and threads.
"""
import random
import threading
import time

import pytest

import labkit
from labkit.threading import (Barrier, BoundedSemaphore, Condition, Event, Lock, RLock,
                              Semaphore)

pytestmark = pytest.mark.timeout(60)


class Ticker:
    """Counts hub passes: every 2 ms while the hub is free to run."""

    def __init__(self):
        self.ticks = 0
        self.greenlet = labkit.spawn(self._run)

    def _run(self):
        while True:
            self.ticks += 1
            labkit.sleep(0.002)

    def stop(self) -> int:
        self.greenlet.kill()
        return self.ticks


def in_thread(fn, *args):
    """Run fn in an OS thread; a handle whose .join() returns its result."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised by join()
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Handle:
        def join(self, timeout=10):
            deadline = time.monotonic() + timeout
            while thread.is_alive() and time.monotonic() < deadline:
                labkit.sleep(0.005)  # the hub keeps running while we wait
            assert not thread.is_alive(), "the thread did not finish"
            if "error" in box:
                raise box["error"]
            return box.get("value")
    return Handle()


def test_a_greenlet_parks_on_a_lock_a_thread_holds_and_gets_it_on_release():
    lock = Lock()
    lock.acquire()
    holder = in_thread(lambda: (time.sleep(0.2), lock.release()))
    ticker = Ticker()
    start = time.monotonic()
    with lock:
        waited = time.monotonic() - start
    assert 0.15 <= waited < 5
    assert ticker.stop() >= 10  # parked: the hub ran meanwhile
    holder.join()


def test_a_thread_blocks_on_a_lock_a_greenlet_holds_and_gets_it_on_release():
    lock = Lock()
    lock.acquire()
    waiter = in_thread(lambda: (lock.acquire(), time.monotonic())[1])
    labkit.sleep(0.1)
    released = time.monotonic()
    lock.release()
    assert waiter.join() >= released
    assert lock.locked()  # the thread has it now
    lock.release()


def test_acquire_timeout_from_a_greenlet_returns_false_and_the_hub_ran():
    lock = Lock()
    lock.acquire()  # held by "someone else" for good
    holder = in_thread(lambda: None)  # another OS thread exists: no LoopExit
    ticker = Ticker()
    assert lock.acquire(timeout=0.1) is False
    assert ticker.stop() >= 5
    holder.join()
    with pytest.raises(ValueError):
        lock.acquire(False, 1)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_wait_nobody_can_end_is_loop_exit_in_a_single_threaded_process():
    if threading.active_count() > 1 or labkit._native.thread_count():
        pytest.skip("other OS threads are alive in this test process")
    lock = Lock()
    lock.acquire()
    with pytest.raises(labkit.LoopExit):
        lock.acquire()


def test_event_set_from_either_side_wakes_waiters_on_both_sides():
    event = Event()
    thread_saw = in_thread(event.wait, 5)
    setter = in_thread(lambda: (time.sleep(0.1), event.set()))
    ticker = Ticker()
    assert event.wait(5) is True
    assert thread_saw.join() is True
    setter.join()
    assert ticker.stop() >= 5
    # and the other way round: a greenlet sets, a thread wakes
    other = Event()
    waiter = in_thread(other.wait, 5)
    labkit.sleep(0.05)
    other.set()
    assert waiter.join() is True


def test_a_condition_wait_in_a_greenlet_is_notified_by_a_thread_and_back():
    cond = Condition()
    items = []

    def producer():
        for i in range(3):
            time.sleep(0.02)
            with cond:
                items.append(i)
                cond.notify()
        with cond:  # then wait for the greenlet's answer
            assert cond.wait_for(lambda: "done" in items, timeout=5)
        return "ok"

    thread = in_thread(producer)
    with cond:
        assert cond.wait_for(lambda: len(items) == 3, timeout=5)
        items.append("done")
        cond.notify_all()
    assert thread.join() == "ok"


def test_rlock_excludes_greenlets_of_one_thread_and_other_threads():
    rlock = RLock()
    inside, most = [0], [0]

    def critical(pause):
        with rlock:
            with rlock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                pause(0.01)
                inside[0] -= 1
    threads = [in_thread(lambda: [critical(time.sleep) for _ in range(5)]) for _ in range(2)]
    labkit.joinall([labkit.spawn(lambda: [critical(labkit.sleep) for _ in range(5)])
                    for _ in range(3)])
    for t in threads:
        t.join()
    assert most[0] == 1
    with pytest.raises(RuntimeError):
        rlock.release()


def test_threading_rlock_is_labkit_rlock_on_the_two_sided_lock():
    # One home for the reentrant bookkeeping: threading's RLock is
    # labkit.lock.RLock with a two-sided Lock underneath, so both accept
    # gevent's timeout=None for "forever" and answer Condition's questions.
    from labkit import lock
    assert issubclass(RLock, lock.RLock) and isinstance(RLock()._block, Lock)
    for rlock in (RLock(), lock.RLock()):
        assert rlock.acquire(True, None) and rlock.acquire(timeout=None)
        assert rlock._recursion_count() == 2 and rlock._is_owned()
        rlock.release()
        rlock.release()
        assert rlock._recursion_count() == 0 and not rlock.locked()
    assert Lock().acquire(True, None)


@pytest.mark.parametrize("kind", ["labkit.lock.Semaphore", "threading.Lock (two-sided)"])
def test_a_release_wakes_a_thread_that_made_the_lock_shared_at_the_releasers_last_call(kind):
    # The GIL may pass to another thread at the end of any call. Here the
    # other thread runs at the end of the owner's first call in release()
    # (its thread check's get_ident), makes the lock shared and waits; the
    # release must see that and wake it (it used to decide on the thread
    # ident read *before* that call, take the one-thread path, and wake
    # nobody: the waiter timed out).
    import importlib
    module = importlib.import_module("labkit.lock" if kind.startswith("labkit") else
                                     "labkit._twosided")
    lock = module.Semaphore(1) if kind.startswith("labkit") else Lock()
    assert lock.acquire()            # owned by this thread: one-thread mode
    me, got = threading.get_ident(), []
    real = module._get_ident

    def get_ident_and_let_the_other_thread_run():
        ident = real()
        if ident == me and not got:
            other = threading.Thread(target=lambda: got.append(lock.acquire(True, 5)))
            other.start()
            deadline = time.monotonic() + 5
            while not lock._shared_line and time.monotonic() < deadline:
                time.sleep(0.001)    # until it waits in the shared line
            got.append(other)
        return ident
    module._get_ident = get_ident_and_let_the_other_thread_run
    try:
        lock.release()
    finally:
        module._get_ident = real
    got[0].join(10)
    assert got[1:] == [True]


def test_semaphores_and_barrier_span_greenlets_and_threads():
    barrier = Barrier(4, timeout=10)
    sem = BoundedSemaphore(2)
    inside, most = [0], [0]

    def party(pause):
        with sem:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            pause(0.02)
            inside[0] -= 1
        return barrier.wait()
    threads = [in_thread(party, time.sleep) for _ in range(2)]
    greenlets = [labkit.spawn(party, labkit.sleep) for _ in range(2)]
    labkit.joinall(greenlets, raise_error=True)
    indexes = sorted([g.value for g in greenlets] + [t.join() for t in threads])
    assert indexes == [0, 1, 2, 3] and most[0] <= 2
    with pytest.raises(ValueError):
        sem.release()
    assert Semaphore(0).acquire(timeout=0.01) is False


# -- seeded random schedules -------------------------------------------------------------

def _contend(seed: int, greenlets: int = 4, threads: int = 3, rounds: int = 400):
    """Greenlets and threads take one Lock and one RLock in a random order,
    with random timeouts and random pauses inside; pass items through a
    Condition-guarded list. Returns what the invariants are checked on."""
    rng = random.Random(seed)
    lock, rlock, cond = Lock(), RLock(), Condition(Lock())
    state = {"overlaps": 0, "entered": 0, "timeouts": 0}
    inside = {"lock": 0, "rlock": 0}  # who is in each lock's critical section
    handoff, received = [], []

    def enter(pause, name="lock"):
        inside[name] += 1
        if inside[name] != 1:
            state["overlaps"] += 1
        state["entered"] += 1
        pause()
        inside[name] -= 1

    def worker(plan, pause_kinds):
        for step in plan:
            kind, arg = step
            if kind == "lock":
                with lock:
                    enter(pause_kinds[arg])
            elif kind == "rlock":
                with rlock, rlock:
                    enter(pause_kinds[arg], "rlock")
            elif kind == "timed":
                if lock.acquire(timeout=arg):
                    try:
                        enter(pause_kinds[0])
                    finally:
                        lock.release()
                else:
                    state["timeouts"] += 1
            elif kind == "put":
                with cond:
                    handoff.append(arg)
                    cond.notify()
            elif kind == "get":
                with cond:
                    if cond.wait_for(lambda: handoff, timeout=arg):
                        received.append(handoff.pop())

    def plan():
        steps = []
        for _ in range(rounds):
            r = rng.random()
            if r < 0.4:
                steps.append(("lock", rng.randrange(3)))
            elif r < 0.6:
                steps.append(("rlock", rng.randrange(3)))
            elif r < 0.75:
                steps.append(("timed", rng.choice([0.0005, 0.002, 0.01])))
            elif r < 0.9:
                steps.append(("put", rng.random()))
            else:
                steps.append(("get", 0.005))
        return steps

    green_pauses = [lambda: None, lambda: labkit.sleep(0), lambda: labkit.sleep(0.0005)]
    thread_pauses = [lambda: None, lambda: time.sleep(0), lambda: time.sleep(0.0005)]
    plans = [plan() for _ in range(greenlets + threads)]
    started = time.monotonic()
    os_threads = [in_thread(worker, p, thread_pauses) for p in plans[greenlets:]]
    gs = [labkit.spawn(worker, p, green_pauses) for p in plans[:greenlets]]
    labkit.joinall(gs, timeout=30, raise_error=True)
    for t in os_threads:
        t.join(30)
    state["seconds"] = time.monotonic() - started
    state["put"] = sum(1 for p in plans for kind, _ in p if kind == "put")
    state["got"] = len(received) + len(handoff)
    state["locked"] = lock.locked() or rlock.locked()
    state["expected_entries"] = sum(1 for p in plans for kind, _ in p if kind in ("lock", "rlock"))
    return state


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_schedules_of_greenlets_and_threads_keep_every_invariant(seed):
    state = _contend(seed)
    assert state["overlaps"] == 0                    # mutual exclusion, both sides
    assert state["entered"] + state["timeouts"] >= state["expected_entries"]
    assert state["got"] == state["put"]              # no item lost or doubled
    assert not state["locked"]                       # every hand-off reached someone
    assert state["seconds"] < 30                     # no lost wake-up stalled a waiter
