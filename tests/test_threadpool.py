"""Specification of labkit.threadpool: ThreadPool and ThreadPoolExecutor."""
import concurrent.futures as cf
import os
import threading
import time

import pytest

import labkit
import labkit._loop
from labkit.event import AsyncResult
from labkit.threadpool import ThreadPool, ThreadPoolExecutor

pytestmark = pytest.mark.timeout(30)


def fail(message):
    raise ValueError(message)


def count_ticks_during(blocking_call):
    """Run ``blocking_call()`` while another greenlet ticks every 2 ms;
    return how many ticks happened meanwhile (~100 in 0.2 s, so that
    ">= 10" holds even when a busy machine makes each tick late)."""
    ticks = [0]

    def ticker():
        while True:
            labkit.sleep(0.002)
            ticks[0] += 1

    g = labkit.spawn(ticker)
    try:
        blocking_call()
    finally:
        g.kill()
    return ticks[0]


@pytest.fixture
def pool():
    pool = ThreadPool(4)
    yield pool
    pool.kill()


# -- results and exceptions ----------------------------------------------------

def test_apply_returns_the_result_computed_in_a_worker_thread(pool):
    assert pool.apply(threading.get_ident) != threading.get_ident()
    assert pool.apply(divmod, (7, 2)) == (3, 1)
    assert pool.apply(sorted, ([3, 1],), {"reverse": True}) == [3, 1]


def test_apply_reraises_the_exception_with_the_workers_traceback(pool):
    with pytest.raises(ValueError, match="boom") as info:
        pool.apply(fail, ("boom",))
    assert info.traceback[-1].name == "fail"


def test_spawn_returns_an_async_result(pool):
    result = pool.spawn(pow, 2, 10)
    assert isinstance(result, AsyncResult)
    assert result.get(timeout=5) == 1024
    failed = pool.spawn(fail, "bad")
    with pytest.raises(ValueError, match="bad"):
        failed.get(timeout=5)
    assert not failed.successful()


def test_map_and_imap_keep_input_order(pool):
    assert pool.map(abs, [-3, 2, -1]) == [3, 2, 1]
    assert list(pool.imap(lambda x: time.sleep(0.01 * (3 - x)) or x, range(4))) == [0, 1, 2, 3]
    assert sorted(pool.imap_unordered(abs, [-1, -2])) == [1, 2]


def test_apply_async_returns_a_greenlet_and_calls_the_callback(pool):
    seen = []
    g = pool.apply_async(abs, (-5,), callback=seen.append)
    assert g.get(timeout=5) == 5
    assert seen == [5]


# -- the hub keeps running ---------------------------------------------------------

def test_other_greenlets_keep_running_while_a_thread_job_blocks(pool):
    ticks = count_ticks_during(lambda: pool.apply(time.sleep, (0.2,)))
    assert ticks >= 10  # about 100 in 0.2 s; 0 if the hub had been stalled


def test_waiting_only_for_a_thread_job_does_not_raise_loopexit(pool):
    # Nothing else is scheduled: without keepalive the hub would see no
    # timer, no fd and no callback, and declare LoopExit.
    assert pool.spawn(time.sleep, 0.05).get() is None
    assert pool.apply(lambda: time.sleep(0.05) or "done") == "done"


def test_the_hub_spins_for_a_reply_only_while_a_job_is_pending(pool, monkeypatch):
    # Spinning (loop_c/README.md, phase 3) trades CPU for the wake-up of a
    # sleeping CPU: it must be on while a job is out, and off after.
    monkeypatch.setattr(labkit.hub, "SPIN_SECONDS", 0.0001)
    hub = labkit.get_hub()
    spins_before = hub.loop.stats()["spins"]
    assert pool.apply(time.sleep, (0.02,)) is None
    spins_during = hub.loop.stats()["spins"]
    # One spin for the 20 ms job: it caught nothing, and the loop slept after.
    assert spins_during == spins_before + 1
    labkit.sleep(0.02)  # a blocking poll with nothing pending
    assert hub.loop.stats()["spins"] == spins_during
    assert hub._due_soon == 0


def test_no_spinning_when_spin_seconds_is_zero(pool, monkeypatch):
    monkeypatch.setattr(labkit.hub, "SPIN_SECONDS", 0.0)
    hub = labkit.get_hub()
    spins_before = hub.loop.stats()["spins"]
    assert pool.apply(time.sleep, (0.02,)) is None
    assert hub.loop.stats()["spins"] == spins_before


def _converse_with_the_hub(hub, rounds=20):
    """A plain thread posts a callback and waits for it to run, ``rounds``
    times, while the main greenlet naps; returns the loop's stats."""
    ran = threading.Event()

    def conversation():
        for _ in range(rounds):
            ran.clear()
            hub.run_callback_threadsafe(ran.set)
            ran.wait(5)

    thread = threading.Thread(target=conversation)
    thread.start()
    while thread.is_alive():
        labkit.sleep(0.005)
    thread.join()
    return hub.loop.stats()


def test_a_thread_that_keeps_posting_callbacks_is_answered_by_a_spinning_loop(monkeypatch):
    monkeypatch.setattr(labkit.hub, "SPIN_SECONDS", 5.0)  # "quickly" is then certain
    stats = _converse_with_the_hub(labkit.get_hub())
    assert stats["spins"] > 0 and stats["spin_hits"] > 0


def test_no_learned_spinning_when_spin_seconds_is_zero(monkeypatch):
    monkeypatch.setattr(labkit.hub, "SPIN_SECONDS", 0.0)
    stats = _converse_with_the_hub(labkit.get_hub())
    assert stats["spins"] == 0


@pytest.mark.parametrize("value, expected", [("50", 50e-6), ("0", 0.0), ("2.5", 2.5e-6)])
def test_labkit_spin_us_sets_the_spin(monkeypatch, value, expected):
    monkeypatch.setenv("LABKIT_SPIN_US", value)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert labkit._loop.spin_seconds_from_environment() == pytest.approx(expected)


@pytest.mark.parametrize("value", ["fast", "-1", "10001", "nan"])
def test_a_bad_labkit_spin_us_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("LABKIT_SPIN_US", value)
    with pytest.raises(ValueError, match="LABKIT_SPIN_US"):
        labkit._loop.spin_seconds_from_environment()


def test_one_cpu_never_spins(monkeypatch):
    # The thread we would wait for needs the only CPU we would spin on.
    monkeypatch.setenv("LABKIT_SPIN_US", "50")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert labkit._loop.spin_seconds_from_environment() == 0.0


def test_loop_set_spin_rejects_negative_and_nan():
    loop = labkit.get_hub().loop
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="seconds"):
            loop.set_spin(bad)


def test_many_concurrent_jobs_use_at_most_maxsize_threads(pool):
    lock = threading.Lock()
    running, peak = [0], [0]

    def job(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return i

    results = [pool.spawn(job, i) for i in range(100)]
    assert [r.get(timeout=10) for r in results] == list(range(100))
    assert 1 < peak[0] <= 4
    assert 1 < pool.size <= 4


def test_threads_start_lazily(pool):
    assert pool.size == 0
    pool.apply(abs, (1,))
    assert pool.size == 1


def test_join_parks_until_every_job_is_delivered(pool):
    results = [pool.spawn(time.sleep, 0.02) for _ in range(6)]
    assert pool.join(timeout=5) is True
    assert len(pool) == 0 and all(r.ready() for r in results)


def test_kill_stops_the_threads_and_the_pool_can_be_used_again():
    pool = ThreadPool(2)
    pool.map(abs, range(4))
    threads = list(pool._threads)
    assert threads
    pool.kill()
    assert pool.size == 0
    for thread in threads:
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert pool.apply(abs, (-1,)) == 1
    pool.kill()


def test_worker_threads_are_daemons(pool):
    pool.apply(abs, (1,))
    assert all(t.daemon for t in pool._threads)


def test_submitting_from_another_thread_is_a_clear_error(pool):
    errors = []

    def other_thread():
        try:
            pool.spawn(abs, 1)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert errors and "belongs to the hub" in str(errors[0])


def test_nested_apply_from_a_worker_runs_inline(pool):
    assert pool.apply(lambda: pool.apply(threading.get_ident) == threading.get_ident())


def test_invalid_maxsize_is_rejected():
    with pytest.raises(ValueError):
        ThreadPool(-1)
    with pytest.raises(TypeError):
        ThreadPool(1.5)


# -- ThreadPoolExecutor ------------------------------------------------------------

def test_executor_future_result_parks_only_the_greenlet():
    with ThreadPoolExecutor(2) as executor:
        future = executor.submit(lambda: time.sleep(0.2) or 42)
        assert isinstance(future, cf.Future)
        ticks = count_ticks_during(lambda: future.result(timeout=5))
        assert future.result() == 42
        assert ticks >= 10


def test_executor_future_result_timeout_raises_timeouterror():
    with ThreadPoolExecutor(1) as executor:
        future = executor.submit(time.sleep, 0.2)
        with pytest.raises(cf.TimeoutError):
            future.result(timeout=0.01)
        assert future.result(timeout=5) is None


def test_executor_exceptions_reach_result_and_exception():
    with ThreadPoolExecutor(1) as executor:
        future = executor.submit(fail, "nope")
        assert isinstance(future.exception(timeout=5), ValueError)
        with pytest.raises(ValueError, match="nope"):
            future.result()


def test_concurrent_futures_wait_and_as_completed_work():
    with ThreadPoolExecutor(3) as executor:
        futures = [executor.submit(time.sleep, 0.01 * i) for i in range(3)]
        done, not_done = cf.wait(futures, timeout=5)
        assert len(done) == 3 and not not_done
        futures = [executor.submit(abs, -i) for i in range(3)]
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=5)) == [0, 1, 2]


def test_labkit_wait_and_iwait_accept_executor_futures():
    with ThreadPoolExecutor(3) as executor:
        futures = [executor.submit(time.sleep, d) for d in (0.06, 0.0, 0.03)]
        first = next(labkit.iwait(futures))
        assert first is futures[1]
        assert len(labkit.wait(futures, timeout=5)) == 3


def test_executor_future_result_from_a_plain_thread_still_works():
    with ThreadPoolExecutor(1) as executor:
        future = executor.submit(lambda: time.sleep(0.02) or "ok")
        got = []
        t = threading.Thread(target=lambda: got.append(future.result(timeout=5)))
        t.start()
        labkit.sleep(0.05)  # let the hub deliver; the thread just blocks
        t.join(timeout=5)
        assert got == ["ok"]


def test_executor_map_and_shutdown():
    executor = ThreadPoolExecutor(2)
    assert list(executor.map(abs, [-1, -2, -3])) == [1, 2, 3]
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)


def test_shutdown_cancel_futures_cancels_jobs_not_yet_started():
    executor = ThreadPoolExecutor(1)
    started = threading.Event()
    first = executor.submit(lambda: started.set() or time.sleep(0.05))
    assert started.wait(timeout=5)  # the one thread is busy with `first`
    queued = [executor.submit(abs, i) for i in range(5)]
    executor.shutdown(wait=True, cancel_futures=True)
    assert first.done() and not first.cancelled()
    assert all(f.cancelled() for f in queued)


def test_a_fork_child_gets_fresh_worker_threads():
    # The parent's workers do not exist in the child; without a reset the
    # child's first job would wait forever (DNS lookups included).
    pool = ThreadPool(1)
    assert pool.apply(abs, (-1,)) == 1  # the parent now has a worker thread
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if pool.apply(abs, (-2,)) == 2 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the child's first thread-pool job never ran")
    assert os.waitstatus_to_exitcode(status) == 0
    pool.kill()


def test_executor_threads_carry_the_thread_name_prefix():
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fetcher") as executor:
        name = executor.submit(lambda: threading.current_thread().name).result(timeout=5)
    assert name.startswith("fetcher-")
    with ThreadPoolExecutor(max_workers=1) as executor:
        name = executor.submit(lambda: threading.current_thread().name).result(timeout=5)
    assert name.startswith("ThreadPoolExecutor-")
    with pytest.raises(TypeError, match="thread_name_prefix must be a str"):
        ThreadPoolExecutor(thread_name_prefix=3)


def test_size_can_be_set_between_zero_and_maxsize():
    from labkit.threadpool import ThreadPool
    pool = ThreadPool(2)
    try:
        assert pool.size == 0
        pool.size = 2
        assert pool.size == 2
        pool.size = 1
        assert pool.size == 1
        for bad in (-1, 3):
            with pytest.raises(ValueError):
                pool.size = bad
        assert pool.apply(lambda: 5) == 5
    finally:
        pool.kill()


def test_submitting_from_another_thread_is_invalid_thread_use():
    import threading
    from labkit.exceptions import InvalidThreadUseError
    from labkit.threadpool import ThreadPool
    pool = ThreadPool(1)
    caught = []

    def other_thread():
        try:
            pool.spawn(lambda: None)
        except InvalidThreadUseError as exc:
            caught.append(isinstance(exc, RuntimeError))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(5)
    pool.kill()
    assert caught == [True]


def test_a_job_runs_in_a_copy_of_the_submitters_contextvars():
    import contextvars
    request = contextvars.ContextVar("request", default=None)
    pool = ThreadPool(2)
    try:
        def job():
            seen = request.get()
            request.set("changed in the thread")   # the submitter's copy is not touched
            return seen

        request.set("r1")
        assert pool.spawn(job).get() == "r1"
        request.set("r2")
        assert pool.apply(job) == "r2"
        assert pool.submit(job).result() == "r2" if hasattr(pool, "submit") else True
        assert request.get() == "r2"
    finally:
        pool.kill()
