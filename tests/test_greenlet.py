"""Greenlet: start, join, get, kill, links, and the module-level helpers."""
import contextvars
import io

import pytest

import labkit
from labkit import Greenlet, GreenletExit, Timeout, get_hub, sleep, spawn

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def quiet_hub():
    """Collect the hub's error reports instead of printing them."""
    hub = get_hub()
    hub.exception_stream = io.StringIO()
    return hub


def test_spawn_runs_the_function_with_its_arguments_and_keeps_the_value():
    g = spawn(lambda a, b=0: a + b, 1, b=2)
    assert not g.ready()
    g.join()
    assert g.ready() and g.successful() and g.dead
    assert g.value == 3 and g.exception is None


def test_a_greenlet_does_not_run_until_the_spawner_yields():
    out = []
    spawn(out.append, "ran")
    assert out == []
    sleep(0)
    assert out == ["ran"]


def test_get_returns_the_value_or_raises_the_exception(quiet_hub):
    assert spawn(lambda: "v").get() == "v"
    with pytest.raises(KeyError):
        spawn(lambda: {}["missing"]).get()


def test_get_without_blocking_raises_timeout_when_not_ready():
    g = spawn(sleep, 1)
    with pytest.raises(Timeout):
        g.get(block=False)
    with pytest.raises(Timeout):
        g.get(timeout=0.01)
    g.kill()


def test_join_with_timeout_returns_without_raising():
    g = spawn(sleep, 1)
    g.join(timeout=0.01)
    assert not g.ready()
    g.kill()
    assert g.dead


def test_greenlet_subclass_may_override_run():
    class Doubler(Greenlet):
        def __init__(self, x):
            super().__init__()
            self.x = x

        def _run(self):
            return self.x * 2

    g = Doubler(21)
    g.start()
    assert g.get() == 42


def test_start_is_idempotent_and_start_later_delays():
    out = []
    g = Greenlet(out.append, 1)
    g.start()
    g.start()
    g.join()
    assert out == [1]
    late = labkit.spawn_later(0.02, out.append, 2)
    sleep(0.005)
    assert out == [1]
    late.join()
    assert out == [1, 2]


def test_kill_raises_greenlet_exit_and_counts_as_success():
    cleanup = []

    def worker():
        try:
            sleep(10)
        finally:
            cleanup.append("finally ran")

    g = spawn(worker)
    sleep(0)
    g.kill()
    assert g.dead and g.successful()
    assert isinstance(g.value, GreenletExit)
    assert cleanup == ["finally ran"]


def test_kill_with_a_custom_exception_records_it():
    g = spawn(sleep, 10)
    sleep(0)
    g.kill(ValueError("stop"))
    assert isinstance(g.exception, ValueError)
    assert not g.successful()


def test_kill_before_start_means_it_never_runs():
    out = []
    g = spawn(out.append, "ran")
    g.kill()
    sleep(0)
    assert out == []
    assert g.dead and g.successful()
    assert isinstance(g.value, GreenletExit)


def test_kill_without_blocking_returns_at_once():
    g = spawn(sleep, 10)
    sleep(0)
    g.kill(block=False)
    assert not g.dead
    g.join()
    assert g.dead


def test_killing_a_greenlet_that_never_ran_with_a_non_exception_ends_it_failed():
    # gevent's rule: not an error of kill(); the greenlet ends with a
    # BaseException saying what it was killed with, and never runs.
    ran = []
    hub = labkit.get_hub()
    hub.print_exception = lambda *args: None
    g = spawn(ran.append, 1)
    g.kill(42)
    assert g.dead and g.ready() and not g.successful() and not g.started
    assert isinstance(g.exception, BaseException) and "42" in str(g.exception)
    sleep(0.01)
    assert ran == []


def test_throw_into_a_greenlet_that_never_ran_returns_and_it_never_runs():
    ran = []
    hub = labkit.get_hub()
    hub.print_exception = lambda *args: None
    g = spawn(ran.append, 1)
    g.throw(ValueError("stop"))          # used to switch into the hub for good
    assert g.dead and isinstance(g.exception, ValueError)
    sleep(0.01)
    assert ran == []


def test_a_finished_greenlet_is_no_longer_started():
    g = spawn(lambda: 1)
    assert g.started
    g.join()
    assert not g.started and g.dead


def test_a_greenlet_is_a_context_manager_that_joins_it():
    with spawn(sleep, 0.01) as g:
        assert g.started
    assert g.dead and g.successful()
    with pytest.raises(KeyError):
        with spawn(sleep, 10) as g:
            raise KeyError("body failed")
    assert g.dead and isinstance(g.exception, KeyError)   # killed with the body's error


def test_spawn_callbacks_run_at_each_start():
    seen = []
    labkit.Greenlet.add_spawn_callback(seen.append)
    try:
        g = spawn(lambda: None)
        later = labkit.spawn_later(0.001, lambda: None)
    finally:
        labkit.Greenlet.remove_spawn_callback(seen.append)
    labkit.joinall([g, later])
    assert seen == [g, later]


def test_a_greenlet_knows_its_spawner_and_shares_its_tree_locals():
    def child_of_g():
        child = labkit.Greenlet(lambda: None)
        return child.spawning_greenlet() is labkit.getcurrent(), \
            child.spawn_tree_locals is labkit.getcurrent().spawn_tree_locals
    g = spawn(child_of_g)
    assert g.get() == (True, True)
    other = labkit.Greenlet(lambda: None)
    assert other.spawn_tree_locals is not g.spawn_tree_locals   # the main greenlet's children


def test_minimal_idents_are_small_and_name_the_greenlet():
    gs = [labkit.Greenlet(lambda: None) for _ in range(3)]
    idents = sorted(g.minimal_ident for g in gs)
    assert idents == sorted(set(idents)) and idents[-1] < 100
    assert gs[0].name == f"Greenlet-{gs[0].minimal_ident}"
    assert labkit.get_hub().minimal_ident >= 0


def test_repr_is_gevents_and_shows_the_name_once_known():
    def work(x):
        pass
    g = labkit.Greenlet(work, 1)
    assert repr(g).startswith("<Greenlet at 0x") and repr(g).endswith(": work(1)>")
    g.name = "w"
    assert repr(g).startswith('<Greenlet "w" at 0x')


def test_killall_raises_timeout_when_they_outlive_it():
    def stubborn():
        while True:
            try:
                sleep(10)
            except labkit.GreenletExit:
                pass
    g = spawn(stubborn)
    sleep(0)
    with pytest.raises(labkit.Timeout):
        labkit.killall([g], timeout=0.01)
    g.kill(SystemExit, block=False)
    hub = labkit.get_hub()
    hub.print_exception = lambda *args: None


def test_a_dead_greenlet_can_be_killed_again_harmlessly():
    g = spawn(lambda: 1)
    g.join()
    g.kill()
    assert g.value == 1


def test_rawlink_runs_in_the_hub_after_death_in_order():
    order = []
    g = spawn(lambda: "x")
    g.rawlink(lambda src: order.append(("first", src.value)))
    g.rawlink(lambda src: order.append(("second", src.value)))
    g.join()
    sleep(0)
    assert order == [("first", "x"), ("second", "x")]


def test_link_callbacks_may_block_because_they_get_their_own_greenlet():
    out = []

    def slow_callback(src):
        sleep(0.01)
        out.append(src.value)

    g = spawn(lambda: 7)
    g.link(slow_callback)
    sleep(0.05)
    assert out == [7]


def test_linking_to_a_dead_greenlet_still_calls_back():
    g = spawn(lambda: 1)
    g.join()
    out = []
    g.rawlink(out.append)
    sleep(0)
    assert out == [g]


def test_link_value_and_link_exception_pick_the_outcome(quiet_hub):
    values, errors = [], []
    ok = spawn(lambda: 1)
    bad = spawn(lambda: 1 / 0)
    for g in (ok, bad):
        g.link_value(values.append)
        g.link_exception(errors.append)
    labkit.joinall([ok, bad])
    sleep(0.01)
    assert values == [ok] and errors == [bad]


def test_unlink_removes_a_callback():
    out = []
    g = spawn(lambda: 1)
    g.rawlink(out.append)
    g.unlink(out.append)
    g.link(out.append)
    g.unlink(out.append)
    g.join()
    sleep(0.01)
    assert out == []


def test_link_rejects_what_is_not_callable():
    g = spawn(lambda: 1)
    with pytest.raises(TypeError, match="callback"):
        g.link(3)


def test_a_link_made_from_another_threads_hub_is_called_back_in_that_thread():
    # Greenlets' links are Linkable's mechanism (labkit._lines.Links): a
    # rawlink made by a greenlet of another thread runs in *that* thread's
    # hub, where its callback may touch that hub's objects.
    import threading
    import time
    from labkit.event import Event
    release = Event()
    g = spawn(release.wait)
    linked, seen = threading.Event(), []

    def other_thread():
        get_hub()   # this thread has a hub of its own
        g.rawlink(lambda source: seen.append((source, threading.get_ident())))
        linked.set()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            labkit.sleep(0.002)   # this thread's hub runs the callback
    thread = threading.Thread(target=other_thread)
    thread.start()
    assert linked.wait(10)
    release.set()
    g.join()
    while thread.is_alive():
        sleep(0.002)
    assert seen == [(g, thread.ident)]


def test_greenlets_run_in_a_copy_of_the_spawners_context():
    var = contextvars.ContextVar("var", default="unset")
    var.set("spawner's")
    seen = []

    def child():
        seen.append(var.get())
        var.set("child's")  # must not leak back

    spawn(child).join()
    assert seen == ["spawner's"]
    assert var.get() == "spawner's"


def test_joinall_returns_the_finished_greenlets():
    gs = [spawn(sleep, d) for d in (0.01, 0.02)]
    assert labkit.joinall(gs) == gs


def test_joinall_with_timeout_returns_only_those_done():
    fast = spawn(sleep, 0.001)
    slow = spawn(sleep, 5)
    assert labkit.joinall([fast, slow], timeout=0.05) == [fast]
    slow.kill()


def test_joinall_raise_error_raises_the_first_failure(quiet_hub):
    gs = [spawn(sleep, 0.01), spawn(lambda: 1 / 0)]
    with pytest.raises(ZeroDivisionError):
        labkit.joinall(gs, raise_error=True)


def test_killall_kills_every_greenlet():
    gs = [spawn(sleep, 10) for _ in range(3)]
    sleep(0)
    labkit.killall(gs)
    assert all(g.dead for g in gs)


def test_iwait_yields_in_completion_order():
    gs = [spawn(sleep, d) for d in (0.03, 0.01, 0.02)]
    assert list(labkit.iwait(gs)) == [gs[1], gs[2], gs[0]]


def test_wait_with_count_returns_after_that_many():
    gs = [spawn(sleep, d) for d in (0.03, 0.001, 0.002)]
    done = labkit.wait(gs, count=2)
    assert done == [gs[1], gs[2]]
    labkit.killall(gs)


def test_wait_with_timeout_returns_what_finished_in_time():
    gs = [spawn(sleep, 0.001), spawn(sleep, 5)]
    assert labkit.wait(gs, timeout=0.05) == [gs[0]]
    labkit.killall(gs)


def test_module_kill_works_on_raw_greenlets_too():
    out = []

    def raw():
        try:
            sleep(10)
        except GreenletExit:
            out.append("killed")
            raise

    g = labkit.spawn_raw(raw)
    sleep(0)
    labkit.kill(g)
    sleep(0)
    assert out == ["killed"] and g.dead


def test_greenlet_repr_names_the_function():
    def my_function():
        pass

    assert "my_function" in repr(spawn(my_function))


def test_greenlet_rejects_a_non_callable_run():
    with pytest.raises(TypeError, match="run"):
        Greenlet(5)


def test_a_greenlet_with_neither_run_nor_a_subclass_run_fails_clearly():
    g = Greenlet()
    labkit.get_hub().exception_stream = io.StringIO()  # keep the report quiet
    g.start()
    g.join(timeout=1)
    assert isinstance(g.exception, NotImplementedError)
    assert "run" in str(g.exception)


def test_a_greenlet_spawned_from_the_main_greenlet_has_the_hub_as_parent():
    g = spawn(lambda: None)
    assert g.parent is labkit.get_hub()
    g.join()


def test_iwait_is_a_context_manager_that_stops_watching_on_exit():
    from labkit.event import Event
    events = [Event(), Event()]
    events[0].set()
    with labkit.iwait(events) as ready:
        assert next(ready) is events[0]
    assert events[1].linkcount() == 0      # its link was taken back


@pytest.mark.parametrize("args", [(), (1,), (1, 2)])
def test_run_calls_with_few_positional_arguments_without_a_c_level_reentry(args):
    # A parked greenlet keeps a copy of its C stack; run(*args) enters the
    # callee through C, adding an interpreter C frame that run(a, b) does not.
    def park(*_):
        sleep(10)

    lean, starred = spawn(park, *args), spawn(park, 1, 2, 3)
    sleep(0)   # both parked, their stacks saved
    try:
        if _starred_call_reenters_c():
            assert 0 < lean._stack_saved < starred._stack_saved
        else:   # 3.13+: a starred call to a Python function stays in the frame
            assert 0 < lean._stack_saved == starred._stack_saved
    finally:
        labkit.killall([lean, starred])


def _starred_call_reenters_c() -> bool:
    """Whether this interpreter calls f(*args) through C (3.11, 3.12): a
    raw greenlet parked through such a call saves more of its stack."""
    import greenlet as raw

    def park(*_):
        raw.getcurrent().parent.switch()

    args = (1, 2, 3)
    spelled, starred = raw.greenlet(lambda: park(1, 2, 3)), raw.greenlet(lambda: park(*args))
    spelled.switch()
    starred.switch()
    try:
        return starred._stack_saved > spelled._stack_saved
    finally:
        spelled.throw(raw.GreenletExit)
        starred.throw(raw.GreenletExit)
