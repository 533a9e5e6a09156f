"""Specification of labkit.pool: Group, Pool, PoolFull (gevent.pool semantics)."""
import queue

import pytest

import labkit
from labkit.event import Event
from labkit.pool import Group, Pool, PoolFull

pytestmark = pytest.mark.timeout(30)


def identity(x):
    return x


def sleep_then_return(seconds, value):
    labkit.sleep(seconds)
    return value


# -- Group -------------------------------------------------------------------

def test_group_tracks_spawned_greenlets_until_they_die():
    group = Group()
    g = group.spawn(labkit.sleep, 0.01)
    assert isinstance(g, labkit.Greenlet)
    assert g in group and len(group) == 1 and list(group) == [g]
    assert group.join() is True
    assert len(group) == 0 and g not in group and not group


def test_group_join_with_timeout_returns_false_while_members_still_run():
    group = Group()
    group.spawn(labkit.sleep, 1)
    assert group.join(timeout=0.01) is False
    group.kill()
    assert group.join(timeout=0.5) is True


def test_group_join_raise_error_reraises_a_members_exception():
    group = Group()
    group.spawn(lambda: 1 / 0)
    group.spawn(identity, 1)
    with pytest.raises(ZeroDivisionError):
        group.join(raise_error=True)


def test_group_add_and_discard_manage_membership_without_running_anything():
    group = Group()
    g = labkit.Greenlet(identity, 1)
    group.add(g)
    assert g in group
    group.discard(g)
    assert g not in group
    g.start()
    g.join()
    assert len(group) == 0


def test_group_kill_kills_every_member_and_waits():
    group = Group()
    members = [group.spawn(labkit.sleep, 10) for _ in range(3)]
    labkit.sleep(0)
    group.kill()
    assert len(group) == 0
    assert all(g.dead and isinstance(g.value, labkit.GreenletExit) for g in members)


def test_group_killone_kills_only_that_member():
    group = Group()
    a, b = group.spawn(labkit.sleep, 10), group.spawn(labkit.sleep, 10)
    labkit.sleep(0)
    group.killone(a)
    assert a.dead and b in group and not b.dead
    group.kill()


def test_group_is_never_full():
    group = Group()
    assert group.full() is False
    assert group.wait_available() is None


def test_group_runs_all_map_items_concurrently():
    group = Group()
    sleeping, peak = [0], [0]

    def job(x):
        sleeping[0] += 1
        peak[0] = max(peak[0], sleeping[0])
        labkit.sleep(0.05)
        sleeping[0] -= 1
        return x

    start = labkit.get_hub().loop.now()
    assert group.map(job, range(20)) == list(range(20))
    assert peak[0] == 20   # all asleep at once, not one after the other
    assert labkit.get_hub().loop.now() - start < 20 * 0.05  # less than the sum


# -- Pool: back-pressure -------------------------------------------------------

def test_pool_runs_at_most_size_greenlets_and_spawn_parks_while_full():
    pool = Pool(2)
    running, peak, spawned = [0], [0], []

    def job(i):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        labkit.sleep(0.01)
        running[0] -= 1

    for i in range(5):
        pool.spawn(job, i)
        spawned.append(len(pool))
    pool.join()
    assert peak[0] == 2
    assert max(spawned) == 2  # spawn returned only once a slot was free


def test_pool_hands_slots_to_parked_spawners_in_fifo_order():
    pool = Pool(1)
    order = []
    pool.spawn(labkit.sleep, 0.01)
    spawners = [labkit.spawn(pool.spawn, order.append, name) for name in "abc"]
    labkit.joinall(spawners)
    pool.join()
    assert order == ["a", "b", "c"]


def test_pool_add_without_blocking_raises_poolfull_when_full():
    pool = Pool(1)
    pool.spawn(labkit.sleep, 10)
    assert pool.full() and pool.free_count() == 0
    with pytest.raises(PoolFull):
        pool.add(labkit.Greenlet(identity, 1), blocking=False)
    with pytest.raises(PoolFull):
        pool.start(labkit.Greenlet(identity, 1), blocking=True, timeout=0.01)
    assert len(pool) == 1
    pool.kill()


def test_poolfull_is_a_queue_full():
    assert issubclass(PoolFull, queue.Full)


def test_pool_wait_available_parks_until_a_slot_frees():
    pool = Pool(1)
    pool.spawn(labkit.sleep, 0.02)
    assert pool.wait_available(timeout=0.001) == 0
    assert pool.wait_available() == 1
    assert not pool.full()


def test_pool_size_none_is_unbounded_and_invalid_sizes_are_rejected():
    pool = Pool(None)
    greenlets = [pool.spawn(labkit.sleep, 0.01) for _ in range(50)]
    assert len(pool) == 50 and pool.free_count() == 1 and not pool.full()
    labkit.joinall(greenlets)
    with pytest.raises(ValueError):
        Pool(-1)
    with pytest.raises(TypeError):
        Pool(2.5)
    with pytest.raises(TypeError):
        Pool("3")


def test_pool_of_size_zero_can_never_spawn():
    pool = Pool(0)
    assert pool.full()
    with pytest.raises(PoolFull):
        pool.add(labkit.Greenlet(identity, 1), blocking=False)
    assert pool.wait_available(timeout=0.01) == 0


def test_a_killed_spawner_leaves_no_stale_slot_request():
    pool = Pool(1)
    pool.spawn(labkit.sleep, 0.02)
    stuck = labkit.spawn(pool.spawn, identity, 1)
    labkit.sleep(0)
    stuck.kill()
    pool.join()
    assert pool.free_count() == 1
    assert pool.spawn(identity, 2).get() == 2


def test_pool_kill_kills_members():
    pool = Pool(3)
    for _ in range(3):
        pool.spawn(labkit.sleep, 10)
    pool.kill()
    assert len(pool) == 0 and pool.free_count() == 3


# -- mapping -------------------------------------------------------------------

def test_map_returns_results_in_input_order():
    pool = Pool(3)
    delays = [0.03, 0.01, 0.02, 0.0, 0.01]
    assert pool.map(lambda d: sleep_then_return(d, d), delays) == delays


def test_map_raises_the_first_failure_in_input_order_and_spawns_every_item():
    pool = Pool(2)
    ran = []

    def job(x):
        ran.append(x)
        if x in (1, 3):
            raise ValueError(x)
        return x

    with pytest.raises(ValueError) as info:
        pool.map(job, range(5))
    assert info.value.args == (1,)
    pool.join()
    assert sorted(ran) == list(range(5))


def test_imap_yields_in_input_order_lazily():
    pool = Pool(4)
    delays = [0.04, 0.01, 0.03, 0.0]
    results = pool.imap(lambda d: sleep_then_return(d, d), delays)
    assert next(results) == 0.04
    assert list(results) == [0.01, 0.03, 0.0]
    assert list(results) == []  # stays exhausted


def test_imap_accepts_several_iterables_like_map():
    assert list(Pool(2).imap(lambda a, b: a + b, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]


def test_imap_unordered_yields_in_completion_order():
    # The test decides the order in which the items finish (events, not
    # timers whose deadlines a descheduled thread could bunch together).
    pool = Pool(4)
    finish = {name: Event() for name in "abcd"}

    def job(name):
        finish[name].wait()
        return name

    results = pool.imap_unordered(job, "abcd")
    got = []
    for name in "dbca":
        finish[name].set()
        got.append(next(results))
    assert got == list("dbca")
    assert list(results) == []


def test_imap_raises_a_failing_item_in_its_place_and_can_go_on():
    results = Pool(2).imap(lambda x: 1 / x, [1, 0, 4])
    assert next(results) == 1.0
    with pytest.raises(ZeroDivisionError):
        next(results)
    assert next(results) == 0.25


def test_imap_unordered_maxsize_keeps_the_producer_from_running_ahead():
    started = []

    def job(x):
        started.append(x)
        return x

    results = Group().imap_unordered(job, range(10), maxsize=2)
    labkit.idle()   # until nothing is left to run: the producer parked
    assert len(started) == 2  # two results wait unread
    assert next(results) == 0
    labkit.idle()
    assert len(started) == 3
    assert sorted([0] + list(results)) == list(range(10))


def test_imap_without_maxsize_runs_ahead_of_the_reader():
    started = []
    results = Group().imap(lambda x: started.append(x), range(10))
    labkit.idle()   # until nothing is left to run
    assert len(started) == 10
    assert list(results) == [None] * 10


def test_apply_runs_in_a_member_greenlet_and_returns_or_raises():
    pool = Pool(2)
    caller = labkit.getcurrent()
    assert pool.apply(lambda: labkit.getcurrent() in pool) is True
    assert pool.apply(identity, (5,)) == 5
    assert pool.apply(lambda *, k: k, kwds={"k": 7}) == 7
    with pytest.raises(KeyError):
        pool.apply({}.__getitem__, ("missing",))
    assert labkit.getcurrent() is caller


def test_apply_from_a_member_runs_inline_instead_of_deadlocking():
    pool = Pool(1)

    def outer():
        me = labkit.getcurrent()
        return pool.apply(lambda: labkit.getcurrent() is me)

    assert pool.apply(outer) is True


def test_apply_async_and_map_async_return_greenlets_and_call_callbacks():
    pool = Pool(2)
    seen = []
    g = pool.apply_async(identity, (3,), callback=seen.append)
    assert g.get() == 3
    m = pool.map_async(identity, range(3), callback=seen.append)
    assert m.get() == [0, 1, 2]
    labkit.idle()   # the callbacks ran: nothing is left to run
    assert seen == [3, [0, 1, 2]]
    assert pool.apply_cb(identity, (4,), callback=seen.append) == 4


def test_apply_async_on_a_full_pool_does_not_park():
    pool = Pool(1)
    pool.spawn(labkit.sleep, 0.02)
    g = pool.apply_async(identity, (9,))  # returns at once
    assert not g.ready()
    assert g.get() == 9


def test_greenlet_class_is_what_spawn_creates():
    class Tagged(labkit.Greenlet):
        pass

    pool = Pool(2, greenlet_class=Tagged)
    assert isinstance(pool.spawn(identity, 1), Tagged)
    assert pool.map(identity, [1, 2]) == [1, 2]


def test_map_calls_an_overridden_spawn():
    calls = []

    class CountingPool(Pool):
        def spawn(self, *args, **kwargs):
            calls.append(args)
            return Pool.spawn(self, *args, **kwargs)

    assert CountingPool(2).map(identity, [1, 2, 3]) == [1, 2, 3]
    assert len(calls) == 3


# -- slots that outlive their greenlet (labkit's addition, for labkit.wsgi) -------

def test_a_kept_slot_stays_taken_after_its_greenlet_left_and_died():
    pool = Pool(1)
    g = pool.spawn(labkit.sleep, 0.01)
    assert pool.keep_slot(g)
    assert g not in pool and len(pool) == 0
    assert pool.free_count() == 0 and pool.full()
    assert pool.join(timeout=1) is True  # join counts members only
    g.join()
    labkit.sleep(0.01)
    assert pool.free_count() == 0 and pool.wait_available(timeout=0.05) == 0
    with pytest.raises(PoolFull):
        pool.add(labkit.Greenlet(identity, 1), blocking=False)
    # the next greenlet starts on the kept slot without parking; its death frees it
    later = labkit.Greenlet(identity, 2)
    pool.start_on_kept_slot(later)
    assert later in pool and pool.free_count() == 0
    assert later.get(timeout=1) == 2
    assert pool.join(timeout=1) is True
    assert pool.free_count() == 1
    assert not pool.keep_slot(later)  # not a member: nothing kept
    assert pool.free_count() == 1


def test_releasing_a_kept_slot_serves_a_spawner_waiting_in_line():
    pool = Pool(1)
    g = pool.spawn(labkit.sleep, 0)
    pool.keep_slot(g)
    waiting = labkit.spawn(pool.spawn, identity, 3)  # parks: the only slot is kept
    labkit.sleep(0.05)
    assert not waiting.ready()
    pool.release_kept_slot()
    assert waiting.get(timeout=1).get(timeout=1) == 3
    assert pool.join(timeout=1) is True and pool.free_count() == 1


@pytest.mark.parametrize("make", [Group, lambda: Pool(2)], ids=["Group", "Pool"])
def test_kept_slot_calls_without_a_kept_slot_are_refused(make):
    group = make()
    with pytest.raises(RuntimeError, match="no slot is kept"):
        group.release_kept_slot()
    with pytest.raises(RuntimeError, match="no slot is kept"):
        group.start_on_kept_slot(labkit.Greenlet(identity, 1))
    g = group.spawn(labkit.sleep, 0.01)
    assert group.keep_slot(g) and len(group) == 0  # a Group: g just leaves
    group.release_kept_slot()
    with pytest.raises(RuntimeError, match="no slot is kept"):
        group.release_kept_slot()


def test_tracking_a_member_costs_little_memory():
    # The Group's link lives as long as the greenlet (a server's connection):
    # its Links keeps one link in a list, not a deque (760 bytes each).
    import tracemalloc
    group = Group()
    greenlets = [labkit.Greenlet(labkit.sleep, 0) for _ in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for g in greenlets:
            group.add(g)
        per_member = (tracemalloc.get_traced_memory()[0] - before) / len(greenlets)
    finally:
        tracemalloc.stop()
    assert per_member < 500, per_member  # measured 317 (993 with a deque)
    group.kill()


def test_many_links_of_one_greenlet_run_in_order_and_may_unlink_and_link():
    calls = []
    g = labkit.Greenlet(labkit.sleep, 0)

    def later(source):
        calls.append("later")

    def first(source):
        calls.append("first")
        source.unlink(dropped)             # a link still waiting in this notification
        source.rawlink(later)              # a link added meanwhile runs too

    def dropped(source):
        calls.append("dropped")

    g.rawlink(first)
    g.rawlink(dropped)
    for i in range(500):
        g.rawlink(lambda source, i=i: calls.append(i))
    g.start()
    g.join()
    for _ in range(500):  # (the link added meanwhile runs in a later hub pass)
        if "later" in calls:
            break
        labkit.sleep(0.01)
    assert calls == ["first", *range(500), "later"]
