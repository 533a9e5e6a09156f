"""Killing a greenlet parked at a labkit park site (issue 21): the hub
switches a private marker in and the site raises the exception in Python,
instead of greenlet.throw (whose C++ unwinding is the largest cost of a
kill). What the killed greenlet sees must not change."""
import os
import traceback

import greenlet as greenlet_module
import pytest

import labkit
from labkit import GreenletExit, _park, sleep, spawn
from labkit._loop import READ
from labkit.event import Event
from labkit.hub import get_hub
from labkit.lock import Semaphore
from labkit.queue import Queue


class Boom(Exception):
    pass


def _events_into(g, action):
    """The greenlet.settrace events whose target is ``g`` during action()."""
    seen = []

    def trace(event, args):
        if event in ("switch", "throw") and args[1] is g:
            seen.append(event)
        if previous is not None:
            previous(event, args)

    previous = greenlet_module.settrace(trace)
    try:
        action()
    finally:
        greenlet_module.settrace(previous)
    return seen


def test_a_kill_reaches_a_sleeper_by_a_plain_switch_not_greenlet_throw():
    g = spawn(sleep, 5)
    sleep(0)
    assert _events_into(g, g.kill) == ["switch"]
    assert g.dead and isinstance(g.value, GreenletExit)


def test_a_greenlet_parked_outside_labkit_still_gets_greenlet_throw():
    hub = get_hub()
    g = spawn(hub.switch)   # parked by a raw switch: not a labkit park site
    sleep(0)
    assert _events_into(g, lambda: g.kill(Boom)) == ["throw"]
    assert isinstance(g.exception, Boom)


def _park_then_report(park, seen):
    try:
        park()
    except BaseException as exc:
        seen.append(exc)
        raise


@pytest.mark.parametrize("name", ["sleep", "sleep0", "waiter", "join", "event", "semaphore",
                                  "queue", "fd", "select"])
def test_the_exception_is_raised_at_the_park_site_as_greenlet_throw_raised_it(name):
    r, w = os.pipe()
    sem = Semaphore(0)
    queue = Queue()
    parks = {
        "sleep": lambda: sleep(5),
        "sleep0": lambda: [sleep(0) for _ in range(10**9)],  # greenlet.throw
        "waiter": lambda: labkit.Waiter().get(),
        "join": lambda: spawn(sleep, 60).join(),
        "event": lambda: Event().wait(60),   # with a timeout: the Linkable's park
        "semaphore": sem.acquire,
        "queue": queue.get,
        "fd": lambda: _park.wait_io(get_hub(), r, READ),
        "select": lambda: _park.wait_any_fd(get_hub(), {r: READ}, 60),
    }
    seen = []

    def body():
        try:
            raise KeyError("being handled while parked")
        except KeyError:
            _park_then_report(parks[name], seen)

    try:
        g = spawn(body)
        sleep(0)
        sleep(0)
        g.kill(Boom("x"))
        assert g.dead
        (exc,) = seen
        assert isinstance(exc, Boom) and g.exception is exc
        # greenlet.throw does not chain the exception being handled, and the
        # traceback ends in the park site
        assert exc.__context__ is None
        assert traceback.extract_tb(exc.__traceback__)[-1].filename == _park.__file__
        # the take-back rules held: nothing of the wait is left behind
        assert not get_hub().loop.io_waiting(r, READ)
        sem.release()
        assert sem.acquire(timeout=0)   # not handed to the dead greenlet
        queue.put(1)
        assert queue.get(timeout=0) == 1
    finally:
        os.close(r)
        os.close(w)


def test_a_kill_with_a_class_makes_a_fresh_instance_each_time_and_keeps_its_context():
    cause = ValueError("earlier")
    try:
        raise Boom("again")   # an instance that was raised before: its old
    except Boom as raised:    # traceback must not be carried along
        exc = raised
    exc.__context__ = cause
    g = spawn(sleep, 5)
    sleep(0)
    g.kill(exc)
    assert g.exception is exc and exc.__context__ is cause
    names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert names[-1] == "_sleep_timed" and "test_a_kill_with_a_class" not in " ".join(names)
    g = spawn(sleep, 5)
    sleep(0)
    g.kill(Boom)
    assert type(g.exception) is Boom and g.exception is not exc


def test_a_greenlet_that_catches_the_kill_parks_again_and_its_old_wakeup_is_gone():
    woke = []

    def stubborn():
        try:
            sleep(0)   # its queued switch must be taken back by the kill
        except GreenletExit:
            woke.append("killed")
        sleep(5)
        woke.append("woke")

    g = spawn(stubborn)
    # the kill's hub callback, queued to run after g parks in sleep(0) and
    # before g's own queued switch (kill() would queue it behind that)
    get_hub().run_callback(g._throw_if_alive, GreenletExit)
    for _ in range(5):
        sleep(0)
    assert woke == ["killed"] and not g.dead
    g.kill()
    assert g.dead and woke == ["killed"]


def test_a_value_switched_in_is_never_taken_for_the_marker():
    g = spawn(sleep, 5)
    sleep(0)
    get_hub().run_callback(g.switch, ("not", "a", "kill"))
    g.join(2)
    # sleep refuses a stray switch, as before: InvalidSwitchError
    assert isinstance(g.exception, AssertionError)


def test_sleep0_hot_path_is_left_to_greenlet_throw():
    # sleep(0)'s switch does not look for the marker (it would cost that
    # hottest path 2%): a kill there must still arrive, by greenlet.throw
    def spin():
        while True:
            sleep(0)

    g = spawn(spin)
    sleep(0)
    assert _events_into(g, g.kill)[-1] == "throw"   # (its queued switch may run first)
    assert g.dead and isinstance(g.value, GreenletExit)


def test_the_trace_still_says_the_killed_greenlets_were_woken_by_a_throw():
    import tracing

    r, w = os.pipe()
    try:
        with tracing.trace() as t:
            sleeper = spawn(sleep, 60)
            reader = spawn(_park.wait_io, get_hub(), r, READ)
            waiter = spawn(lambda: labkit.Waiter(get_hub(), "handoff").get())
            sleep(0)
            labkit.killall([sleeper, reader, waiter])
        seen = [s.reason for s in t.switches() if s.reason.startswith("throw")]
        assert sorted(seen) == sorted(["throw", f"throw (fd {r} read)", "throw (handoff)"])
    finally:
        os.close(r)
        os.close(w)


def test_a_subclass_that_overrides_throw_is_still_killed_through_it():
    class Noted(labkit.Greenlet):
        def throw(self, *args):
            calls.append(args)
            return super().throw(*args)

    calls = []
    g = Noted(sleep, 5)
    g.start()
    sleep(0)
    g.kill(Boom)
    assert calls == [(Boom,)] and isinstance(g.exception, Boom)
