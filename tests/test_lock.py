"""labkit.lock: Semaphore, BoundedSemaphore, DummySemaphore, RLock.

Specification:
- acquire() takes a permit at once while one is free; otherwise it waits in
  a FIFO line, at most ``timeout`` seconds (False), or fails at once when
  not ``blocking``;
- waiters are served oldest first; a running greenlet may take a permit
  released while the oldest waiter has waited less than STARVATION_NS
  (bounded barging), after that release() hands it straight to that waiter
  and nobody can take it first, so no greenlet starves; release() itself
  never switches;
- a waiter that times out or is killed leaves the line, and a permit
  handed to a greenlet killed before it ran is passed on, not lost;
- BoundedSemaphore refuses to be released beyond its initial value;
- RLock: the owner may re-acquire; others wait; only the owner releases;
- a semaphore belongs to one OS thread: using it from another thread
  raises RuntimeError at once instead of deadlocking;
- arguments are validated: negative value -> ValueError, non-number
  timeout -> TypeError.
"""
import gc
import threading
import time
import weakref

import pytest

import labkit
from labkit import LoopExit, sleep, spawn
from labkit.lock import BoundedSemaphore, DummySemaphore, RLock, Semaphore

pytestmark = pytest.mark.timeout(30)


# -- Semaphore ----------------------------------------------------------------

def test_acquire_takes_free_permits_without_switching_then_fails_without_blocking():
    sem = Semaphore(2)
    ran = []
    spawn(ran.append, "other")
    assert sem.acquire() and sem.acquire()
    assert ran == []
    assert sem.counter == 0 and sem.locked()
    assert sem.acquire(blocking=False) is False


def test_waiters_get_the_permit_in_fifo_order():
    sem = Semaphore(0)
    order = []

    def worker(i):
        with sem:
            order.append(i)

    greenlets = [spawn(worker, i) for i in range(5)]
    sleep(0)
    sem.release()
    labkit.joinall(greenlets)
    assert order == [0, 1, 2, 3, 4]
    assert sem.counter == 1


def test_a_running_greenlet_may_take_a_permit_released_to_a_young_line():
    sem = Semaphore(1)
    sem.acquire()
    order = []

    def waiter():
        with sem:
            order.append("waiter")

    w = spawn(waiter)
    sleep(0)
    sem.release()
    assert sem.counter == 1       # free until the hub serves the line ...
    assert sem.acquire(blocking=False)  # ... so we may barge in first
    order.append("barger")
    sem.release()
    w.join(timeout=1)
    assert order == ["barger", "waiter"]


def test_barging_takes_back_the_serve_callback_it_made_pointless():
    sem = Semaphore(1)
    sem.acquire()
    w = spawn(sem.acquire)
    sleep(0)
    ready = labkit.get_hub().ready
    sem.release()
    assert sem._serving and ready[-1] is sem._serve_cb
    assert sem.acquire(blocking=False)  # barges in
    assert not sem._serving and sem._serve_cb not in ready
    sem.release()
    assert w.get(timeout=1) is True


def test_a_take_back_after_the_line_emptied_drops_the_serve_callback(monkeypatch):
    # One poll fires three timers in this order: a holder releases (a serve
    # is queued), the only waiter times out (the line is empty), a barger
    # takes the permit and the serve back. No reference cycle may remain.
    monkeypatch.setattr(labkit.lock, "STARVATION_NS", 10**9)  # no hand-off
    sem = Semaphore(1)
    log = []

    def holder():
        sem.acquire()
        sleep(0.010)
        sem.release()

    def waiter():
        log.append(sem.acquire(timeout=0.011))

    def barger():
        sleep(0.012)
        sem.acquire()
        log.append(sem._serving)
        sem.release()

    def blocker():  # holds the loop so that all three timers are due together
        sleep(0.001)
        time.sleep(0.03)

    for f in (holder, waiter, barger, blocker):
        labkit.spawn_raw(f)  # (no links: a Greenlet's would queue behind the serve)
    sleep(0.1)
    assert log == [False, False]          # timed out; the serve was taken back
    assert sem._serve_cb is None


def test_taking_one_of_two_released_permits_still_serves_the_line():
    # Two releases, one serve queued; a barging acquire takes one permit:
    # the other must still reach a waiter.
    sem = Semaphore(2)
    sem.acquire()
    sem.acquire()
    waiters = [spawn(sem.acquire), spawn(sem.acquire)]
    sleep(0)
    sem.release()
    sem.release()
    assert sem.acquire(blocking=False)
    sleep(0.01)
    assert sum(w.ready() for w in waiters) == 1
    sem.release()
    labkit.joinall(waiters, timeout=1)
    assert all(w.get() is True for w in waiters)


def test_the_barging_window_is_measured_from_when_the_waiter_parked():
    # After the hub slept, its loop clock is old; the waiter's 1 ms must
    # still start when it parked, not when the hub went to sleep.
    sem = Semaphore(1)
    sem.acquire()
    sleep(0.05)                   # the hub sleeps in its poll
    w = spawn(sem.acquire)
    sleep(0)                      # w parks; no poll since the sleep ended
    sem.release()
    assert sem.counter == 1       # not handed to w: its line is young
    assert sem.acquire(blocking=False)
    sem.release()
    assert w.get(timeout=1) is True


def test_a_semaphore_whose_waiter_timed_out_is_freed_without_the_garbage_collector():
    sem = Semaphore(1)
    sem.acquire()
    w = spawn(sem.acquire, timeout=0.01)
    sleep(0)
    sem.release()                 # queues _serve_line (and binds _serve_cb) ...
    assert sem.acquire(blocking=False)  # ... which this barging acquire takes back
    assert w.get(timeout=1) is False    # the waiter times out: the line is empty
    sem.release()
    sleep(0)  # w's own link notification still holds w (and so sem.acquire)
    ref = weakref.ref(sem)
    gc.disable()
    try:
        del sem, w  # (w's run is sem.acquire)
        assert ref() is None
    finally:
        gc.enable()


def test_no_greenlet_starves_behind_one_that_reacquires_in_a_loop():
    # gevent lets such a loop keep the permit until it is done; here the
    # waiter gets it once it has waited STARVATION_NS (1 ms of loop time).
    sem = Semaphore(1)
    got_in = []

    def waiter():
        with sem:
            got_in.append(True)

    sem.acquire()
    w = spawn(waiter)
    sleep(0)
    rounds = 0
    while not got_in and rounds < 1_000_000:  # ~1 s: bounded whatever happens
        sem.release()
        sem.acquire()   # barges in, unless the waiter was handed the permit
        sleep(0)        # the waiter is served now if it was (and we park)
        rounds += 1
    sem.release()
    w.join(timeout=1)
    assert got_in, "the waiter never got the permit"
    assert rounds > 1  # it did let us barge for a while first


def test_once_the_oldest_waiter_has_waited_long_enough_nobody_barges(monkeypatch):
    monkeypatch.setattr(labkit.lock, "STARVATION_NS", 0)
    sem = Semaphore(1)
    sem.acquire()
    order = []

    def waiter():
        sem.acquire()
        order.append("waiter")
        sem.release()

    def latecomer():
        sem.acquire()  # arrives after release() but before the waiter ran
        order.append("latecomer")
        sem.release()

    w = spawn(waiter)
    sleep(0)
    sem.release()
    assert sem.counter == 0  # the permit is reserved for the waiter
    late = spawn(latecomer)
    labkit.joinall([w, late])
    assert order == ["waiter", "latecomer"]


def test_a_semaphore_is_freed_without_the_garbage_collector_once_its_line_is_empty():
    # A contended release reuses one bound callback (a reference cycle);
    # it must be dropped when nobody waits any more.
    sem = Semaphore(1)

    def contender():
        for _ in range(3):
            with sem:
                sleep(0)

    labkit.joinall([spawn(contender) for _ in range(3)])
    assert sem._serve_cb is None
    ref = weakref.ref(sem)
    gc.disable()
    try:
        del sem
        assert ref() is None
    finally:
        gc.enable()


def test_release_does_not_switch():
    sem = Semaphore(0)
    g = spawn(sem.acquire)
    sleep(0)
    sem.release()
    assert not g.ready()  # woken later, from the hub
    assert g.get() is True


def test_acquire_times_out_with_false_and_leaves_the_line():
    sem = Semaphore(0)
    assert sem.acquire(timeout=0.02) is False
    assert len(sem._waiters) == 0
    sem.release()
    assert sem.counter == 1


def test_a_killed_waiter_leaves_the_line():
    sem = Semaphore(0)
    victim = spawn(sem.acquire)
    sleep(0)
    victim.kill()
    assert len(sem._waiters) == 0
    sem.release()
    assert sem.counter == 1  # nobody took it


def test_a_permit_handed_to_a_greenlet_killed_before_it_ran_is_passed_on(monkeypatch):
    monkeypatch.setattr(labkit.lock, "STARVATION_NS", 0)  # hand it straight over
    sem = Semaphore(0)
    victim = spawn(sem.acquire)
    heir = spawn(sem.acquire)
    sleep(0)
    victim.kill(block=False)  # the kill is scheduled to arrive first ...
    sem.release()             # ... but the permit is handed to victim now
    assert heir.get(timeout=1) is True
    assert victim.dead and sem.counter == 0


def test_waiting_for_a_permit_nobody_releases_raises_loop_exit():
    sem = Semaphore(0)
    with pytest.raises(LoopExit):
        sem.acquire()
    assert len(sem._waiters) == 0


def test_wait_observes_without_taking_and_rawlink_fires_when_a_permit_is_free():
    sem = Semaphore(0)
    calls = []
    sem.rawlink(calls.append)
    g = spawn(sem.wait)
    sleep(0)
    sem.release()
    assert g.get() == 1 and sem.counter == 1
    assert calls == [sem]


def test_semaphore_validates_its_arguments():
    with pytest.raises(ValueError, match="value"):
        Semaphore(-1)
    with pytest.raises(TypeError):
        Semaphore("1")
    with pytest.raises(TypeError, match="timeout"):
        Semaphore(1).acquire(timeout="soon")


# -- BoundedSemaphore, DummySemaphore ----------------------------------------------

def test_bounded_semaphore_refuses_release_beyond_its_initial_value():
    sem = BoundedSemaphore(1)
    with pytest.raises(ValueError):
        sem.release()
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()
    assert sem.counter == 1


def test_dummy_semaphore_never_blocks():
    sem = DummySemaphore()
    assert all(sem.acquire() for _ in range(10))
    assert not sem.locked() and sem.wait() == 1
    with sem:
        pass


# -- RLock ----------------------------------------------------------------------

def test_rlock_is_reentrant_for_its_owner_and_excludes_others():
    lock = RLock()
    log = []

    def other():
        with lock:
            log.append("other")

    with lock:
        with lock:
            g = spawn(other)
            sleep(0.01)
            log.append("owner")
        sleep(0.01)
        assert log == ["owner"]  # still held once
    g.join()
    assert log == ["owner", "other"]
    assert not lock.locked()


def test_rlock_release_by_a_non_owner_raises_runtime_error():
    lock = RLock()
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    g = spawn(lock.release)
    g.join()
    assert isinstance(g.exception, RuntimeError)
    lock.release()


def test_rlock_acquire_times_out():
    lock = RLock()
    lock.acquire()
    assert spawn(lock.acquire, timeout=0.01).get() is False
    assert spawn(lock.acquire, blocking=False).get() is False


def test_rlock_works_with_threading_condition():
    lock = RLock()
    cond = threading.Condition(lock)
    with cond:
        assert cond.wait_for(lambda: True)


# -- other OS threads ------------------------------------------------------------

def test_a_thread_without_a_hub_blocks_until_a_greenlet_releases():
    # The first use from a second thread makes the semaphore shared.
    sem = Semaphore(1)
    sem.acquire()                       # owned by this thread
    got = []
    thread = threading.Thread(target=lambda: got.append(sem.acquire()))
    thread.start()
    labkit.sleep(0.02)
    assert got == []                    # blocked in the kernel, not spinning
    sem.release()
    thread.join(5)
    assert got == [True] and sem.counter == 0


def test_a_greenlet_parks_until_another_thread_releases():
    sem = Semaphore(0)
    ticks = []
    ticker = labkit.spawn(lambda: [ticks.append(labkit.sleep(0.002)) for _ in range(10)])
    thread = threading.Thread(target=lambda: (time.sleep(0.02), sem.release()))
    thread.start()
    assert sem.acquire(timeout=5) is True      # the hub kept running meanwhile
    thread.join(5)
    ticker.join()
    assert len(ticks) == 10


def test_a_timed_out_acquire_in_another_thread_gives_up_and_leaves_the_line():
    sem = BoundedSemaphore(1)
    sem.acquire()
    got = []
    thread = threading.Thread(target=lambda: got.append(sem.acquire(timeout=0.01)))
    thread.start()
    thread.join(5)
    assert got == [False]
    sem.release()
    assert sem.counter == 1             # nobody was waiting for it any more


def test_two_threads_share_a_semaphore_without_losing_a_permit():
    sem = Semaphore(1)
    inside = []
    rounds = 2000

    def worker():
        for _ in range(rounds):
            with sem:
                inside.append(1)
                assert len(inside) == 1
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert sem.counter == 1


def test_a_greenlet_already_parked_when_the_semaphore_becomes_shared_is_served():
    sem = Semaphore(1)
    sem.acquire()
    parked = labkit.spawn(sem.acquire)
    labkit.sleep(0)                     # parked in the owner's own line
    thread = threading.Thread(target=sem.release)   # the first foreign use
    thread.start()
    thread.join(5)
    assert parked.get(timeout=5) is True


def test_hub_must_be_a_hub():
    for make in (lambda: Semaphore(1, hub="main"), lambda: BoundedSemaphore(1, hub=1),
                 lambda: RLock(hub=object())):
        with pytest.raises(TypeError, match="hub must be a labkit Hub or None"):
            make()


def test_a_fifo_semaphore_never_lets_a_running_greenlet_pass_the_line():
    from labkit.lock import FifoSemaphore
    sem = FifoSemaphore(1)
    order = []

    def waiter(name):
        with sem:
            order.append(name)

    sem.acquire()
    greenlets = [spawn(waiter, n) for n in ("first", "second")]
    sleep(0)                      # both are in line now
    sem.release()                 # handed to "first", reserved until it runs
    assert not sem.acquire(blocking=False)   # a Semaphore would let us barge
    labkit.joinall(greenlets)
    assert order == ["first", "second"]
    assert sem.acquire(blocking=False)


def test_a_fifo_semaphore_pays_off_a_negative_counter_before_admitting_anyone():
    from labkit.lock import FifoSemaphore
    sem = FifoSemaphore(0)
    sem.counter = -1              # a pool that shrank while its slot was taken
    got = []
    g = spawn(lambda: got.append(sem.acquire()))
    sleep(0)
    sem.release()                 # pays the debt: nobody admitted
    sleep(0.01)
    assert got == [] and sem.counter == 0
    sem.release()
    g.join(timeout=2)
    assert got == [True]
