"""labkit.queue: Queue and friends.

Specification:
- FIFO (LifoQueue: last first, PriorityQueue: smallest first);
- get() waits for an item (Empty after ``timeout``, or at once without
  ``block``); put() on a full bounded queue waits for room (Full likewise):
  back-pressure; Queue(None) and Queue(0) are unbounded, as in gevent;
- blocked getters and putters are served in FIFO order, and an item put
  while getters wait goes to the longest waiter: a latecomer cannot take it;
- put() and get() never switch when they need not block;
- a killed or timed-out waiter leaves its line; an item handed to a getter
  killed before it ran goes to the next getter: nothing is lost;
- JoinableQueue: task_done()/join()/unfinished_tasks;
- Channel: put() waits for a getter (a rendezvous);
- shutdown(): put raises ShutDown, get drains then raises ShutDown (at once
  with ``immediate``), blocked callers are woken with ShutDown;
- peek() looks without taking; iteration ends at StopIteration or shutdown;
- waiting forever on an empty queue raises LoopExit;
- random put/get/timeout mixes from several greenlets lose and duplicate
  nothing (hypothesis).
"""
import queue as stdlib_queue

import pytest
from hypothesis import given, settings, strategies as st

import labkit
from labkit import LoopExit, sleep, spawn
from labkit.queue import (
    Channel, Empty, Full, JoinableQueue, LifoQueue, PriorityQueue, Queue, ShutDown,
    SimpleQueue,
)

pytestmark = pytest.mark.timeout(30)


# -- order and sizes ----------------------------------------------------------

@pytest.mark.parametrize("cls, expected", [
    (Queue, [3, 1, 2]), (SimpleQueue, [3, 1, 2]),
    (LifoQueue, [2, 1, 3]), (PriorityQueue, [1, 2, 3]),
])
def test_each_queue_class_has_its_order(cls, expected):
    q = cls()
    for item in (3, 1, 2):
        q.put(item)
    assert [q.get() for _ in range(3)] == expected


def test_sizes_and_the_stdlib_exceptions():
    q = Queue(2)
    assert q.empty() and not q.full() and q.qsize() == 0 and len(q) == 0
    assert q  # a queue is true even when empty (gevent)
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2 and q.maxsize == 2
    with pytest.raises(stdlib_queue.Full):
        q.put_nowait(3)
    q.get()
    q.get()
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    assert Empty is stdlib_queue.Empty and Full is stdlib_queue.Full


@pytest.mark.parametrize("maxsize", [None, 0])
def test_none_and_zero_mean_unbounded(maxsize):
    q = Queue(maxsize)
    for i in range(1000):
        q.put_nowait(i)
    assert not q.full() and q.maxsize is None


def test_put_and_get_do_not_switch_when_they_need_not_block():
    q = Queue(1)
    ran = []
    spawn(ran.append, "other")
    q.put(1)
    q.get()
    assert ran == []


# -- waiting --------------------------------------------------------------------

def test_get_waits_for_an_item_and_timeouts_raise_empty():
    q = Queue()
    spawn(q.put, "late")
    assert q.get() == "late"
    with pytest.raises(Empty):
        q.get(timeout=0.01)
    assert q.getting() == 0


def test_a_bounded_queue_applies_back_pressure_to_the_producer():
    q = Queue(2)
    log = []

    def producer():
        for i in range(5):
            q.put(i)
            log.append(f"put {i}")

    g = spawn(producer)
    sleep(0.01)
    assert log == ["put 0", "put 1"]  # blocked on the third put
    assert q.putting() == 1
    assert q.get() == 0
    sleep(0)
    assert log == ["put 0", "put 1", "put 2"]
    assert [q.get() for _ in range(4)] == [1, 2, 3, 4]
    g.join()


def test_put_times_out_with_full_and_leaves_the_line():
    q = Queue(1)
    q.put("x")
    with pytest.raises(Full):
        q.put("y", timeout=0.01)
    assert q.putting() == 0 and list(q.queue) == ["x"]


def test_blocked_getters_are_served_in_fifo_order():
    q = Queue()
    got = []
    greenlets = [spawn(lambda i=i: got.append((i, q.get()))) for i in range(3)]
    sleep(0)
    for item in "abc":
        q.put(item)
    labkit.joinall(greenlets)
    assert got == [(0, "a"), (1, "b"), (2, "c")]


def test_blocked_putters_are_served_in_fifo_order():
    q = Queue(1)
    q.put("first")
    greenlets = [spawn(q.put, i) for i in range(3)]
    sleep(0)
    assert [q.get() for _ in range(4)] == ["first", 0, 1, 2]
    labkit.joinall(greenlets)


def test_an_item_handed_to_a_waiting_getter_cannot_be_taken_by_a_latecomer():
    q = Queue()
    waiter = spawn(q.get)
    sleep(0)
    q.put("for the waiter")
    assert q.qsize() == 0  # it never entered the queue
    with pytest.raises(Empty):
        q.get_nowait()
    assert waiter.get() == "for the waiter"


def test_a_killed_getter_leaves_the_line():
    q = Queue()
    victim = spawn(q.get)
    sleep(0)
    victim.kill()
    assert q.getting() == 0
    q.put("kept")
    assert q.get_nowait() == "kept"


def test_an_item_handed_to_a_getter_killed_before_it_ran_goes_to_the_next():
    q = Queue()
    victim = spawn(q.get)
    heir = spawn(q.get)
    sleep(0)
    victim.kill(block=False)  # arrives before victim's wake-up ...
    q.put("precious")         # ... though the item is handed to victim now
    assert heir.get(timeout=1) == "precious"


def test_an_item_handed_to_a_killed_getter_goes_back_to_the_front():
    q = Queue()
    victim = spawn(q.get)
    sleep(0)
    victim.kill(block=False)
    q.put("precious")
    q.put("next")
    victim.join()
    assert [q.get_nowait(), q.get_nowait()] == ["precious", "next"]


def test_waiting_on_an_empty_queue_nobody_fills_raises_loop_exit():
    q = Queue()
    with pytest.raises(LoopExit):
        q.get()
    assert q.getting() == 0


@pytest.mark.parametrize("bad", ["1", object()])
def test_timeouts_must_be_numbers(bad):
    with pytest.raises(TypeError, match="timeout"):
        Queue().get(timeout=bad)
    full = Queue(1)
    full.put(0)
    with pytest.raises(TypeError, match="timeout"):
        full.put(1, timeout=bad)


# -- JoinableQueue ----------------------------------------------------------------

def test_join_waits_until_every_task_is_done():
    q = JoinableQueue()
    done = []

    def worker():
        for item in q:
            sleep(0.001)
            done.append(item)
            q.task_done()

    spawn(worker)
    for i in range(5):
        q.put(i)
    assert q.unfinished_tasks == 5
    assert q.join(timeout=2) is True
    assert done == [0, 1, 2, 3, 4] and q.unfinished_tasks == 0


def test_join_times_out_with_false_and_task_done_too_often_raises():
    q = Queue()
    q.put(1)
    assert q.join(timeout=0.01) is False
    q.get()
    q.task_done()
    assert q.join() is True
    with pytest.raises(ValueError):
        q.task_done()


# -- Channel ----------------------------------------------------------------------

def test_channel_put_waits_until_a_getter_takes_the_item():
    ch = Channel()
    log = []

    def producer():
        ch.put("x")
        log.append("put returned")

    spawn(producer)
    sleep(0.01)
    assert log == [] and ch.balance == 1 and ch.full()
    assert ch.get() == "x"
    sleep(0)
    assert log == ["put returned"]
    with pytest.raises(Full):
        ch.put_nowait("nobody is waiting")


def test_channel_put_to_a_waiting_getter_does_not_block():
    ch = Channel()
    g = spawn(ch.get)
    sleep(0)
    ch.put("x", timeout=0.01)
    assert g.get() == "x"


# -- shutdown ---------------------------------------------------------------------

def test_after_shutdown_put_raises_and_get_drains_then_raises():
    q = Queue()
    q.put(1)
    q.shutdown()
    with pytest.raises(ShutDown):
        q.put(2)
    assert q.get() == 1
    with pytest.raises(ShutDown):
        q.get()


def test_immediate_shutdown_drops_the_items_and_releases_join():
    q = JoinableQueue()
    q.put(1)
    joiner = spawn(q.join)
    sleep(0)
    q.shutdown(immediate=True)
    with pytest.raises(ShutDown):
        q.get()
    assert joiner.get(timeout=1) is True


def test_shutdown_wakes_blocked_getters_and_putters_with_shutdown():
    empty, full = Queue(), Queue(1)
    full.put(0)
    getter = spawn(empty.get)
    putter = spawn(full.put, 1)
    sleep(0)
    empty.shutdown()
    full.shutdown()
    labkit.joinall([getter, putter])
    assert isinstance(getter.exception, ShutDown)
    assert isinstance(putter.exception, ShutDown)


# -- peek and iteration ---------------------------------------------------------------

def test_peek_looks_without_taking_and_waits_for_an_item():
    q = Queue()
    with pytest.raises(Empty):
        q.peek_nowait()
    with pytest.raises(Empty):
        q.peek(timeout=0.01)
    spawn(q.put, "x")
    assert q.peek() == "x"
    assert q.qsize() == 1 and q.get() == "x"


def test_iteration_stops_at_the_stop_iteration_item_or_at_shutdown():
    q = Queue()
    for item in (1, 2, StopIteration, 3):
        q.put(item)
    assert list(q) == [1, 2]
    q.shutdown()
    assert list(q) == [3]


# -- no item lost or duplicated, whatever the interleaving ----------------------------

def run_until_only_the_stuck_are_left(greenlets):
    hub = labkit.get_hub()
    while not all(g.dead for g in greenlets):
        if not hub.loop.active_timers and not hub.ready_count:
            return  # nothing can wake the ones still alive
        sleep(0.0005)


operation = st.one_of(
    st.tuples(st.just("put"), st.sampled_from([None, 0, 0.001])),
    st.tuples(st.just("get"), st.sampled_from([None, 0, 0.001])),
    st.tuples(st.just("sleep"), st.just(0)),
)


@settings(max_examples=50, deadline=None)
@given(maxsize=st.sampled_from([None, 1, 2, 5]),
       scripts=st.lists(st.lists(operation, max_size=12), min_size=2, max_size=5))
def test_random_puts_gets_and_timeouts_lose_and_duplicate_nothing(maxsize, scripts):
    q = Queue(maxsize)
    put, got = [], []
    counter = iter(range(10**6))

    def run(script):
        for kind, timeout in script:
            if kind == "sleep":
                sleep(0)
            elif kind == "put":
                item = next(counter)
                try:
                    q.put(item, block=timeout != 0, timeout=timeout)
                except Full:
                    continue
                put.append(item)
            else:
                try:
                    got.append(q.get(block=timeout != 0, timeout=timeout))
                except Empty:
                    pass

    greenlets = [spawn(run, script) for script in scripts]
    run_until_only_the_stuck_are_left(greenlets)
    # ... and they are stuck for a good reason:
    assert not (q.getting() and q.qsize()), "a getter waits beside an item"
    assert not (q.putting() and not q.full()), "a putter waits beside room"
    # A greenlet still blocked now waits forever (no timer, nothing ready):
    # kill it. Its item, if it was putting, was never accepted: not in put.
    for g in greenlets:
        g.kill()
    while q.qsize():
        got.append(q.get_nowait())
    assert sorted(got) == sorted(put)
    assert len(set(got)) == len(got)
    assert q.getting() == 0 and q.putting() == 0


def test_queues_can_be_subscripted_for_annotations():
    import types
    from labkit.queue import Channel, PriorityQueue, Queue
    assert isinstance(Queue[int], types.GenericAlias)
    assert isinstance(Channel[str], types.GenericAlias) and PriorityQueue[int].__origin__ is PriorityQueue


def test_a_subclass_written_for_the_stdlib_init_hook_works():
    from labkit.queue import Queue

    class Tracked(Queue):
        def _init(self, maxsize):        # the stdlib's signature: no items
            super()._init(maxsize)
            self.initted = True

    q = Tracked()
    q.put(1)
    assert q.initted and q.get() == 1


def test_a_channel_put_to_a_waiting_getter_returns_after_the_getter_ran():
    from labkit.queue import Channel
    channel = Channel()
    events = []

    def getter():
        events.append(channel.get())
        events.append(channel.get())

    g = labkit.spawn(getter)
    channel.put("hello")
    events.append("sent hello")
    channel.put("world")
    events.append("sent world")
    assert events == ["hello", "sent hello", "world", "sent world"]
    g.join()
