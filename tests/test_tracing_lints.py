"""tracing.lints: each lint finds its greenlet, its line and its evidence,
live and on a finished Trace; a healthy echo server gives none.
(The leaked-by-a-cell lint needs a notebook: tests/test_magics.py.)"""
import os
import time

import greenlet
import pytest
from helpers import line_of

import labkit
import tracing
from labkit.event import Event
from tracing.lints import lints, silence, trace_lints, unsilence

pytestmark = pytest.mark.timeout(60)


def _line(marker):
    return f"test_tracing_lints.py:{line_of(__file__, marker)}"


def _named(name, fn, *args):
    g = labkit.spawn(fn, *args)
    g.name = name
    return g


def _cpu(seconds):
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


def _of(found, kind, name):
    return [lint for lint in found if lint.kind == kind and lint.greenlet == name]


def test_never_yielded_names_the_greenlet_the_line_and_the_cause():
    def cruncher():
        deadline = time.thread_time() + 0.15
        while time.thread_time() < deadline:  # LINT-CRUNCH
            pass

    with tracing.trace(blocking=0.05, report=False) as t:
        _named("cruncher", cruncher).join()
        deadline = time.monotonic() + 5   # the monitor reports a moment after the block
        while not tracing.recorder.active().blocks and time.monotonic() < deadline:
            labkit.sleep(0.01)
        found = lints(never_yielded=0.1)
    [lint] = _of(found, "never yielded", "cruncher")
    line = int(lint.line.split(":")[1].split()[0])
    # cruncher blocked in its first run (no switch since it started): the
    # line where that run started is its def (tracing.blocking.run_place)
    assert line == cruncher.__code__.co_firstlineno
    assert "most samples at" in lint.evidence or "no stack sample" in lint.evidence
    assert lint.line.endswith("cruncher")   # (3.11+: its qualified name)
    assert "without yielding: CPU-bound in cruncher()" in lint.evidence
    ran = float(lint.evidence.split()[1])
    assert ran >= 0.15
    # the same on the finished Trace
    [on_trace] = _of(t.lints(),
                     "never yielded", "cruncher")
    assert on_trace.line == lint.line


def test_lost_wakeup_on_an_event_nothing_else_refers_to():
    def forgotten():
        ev = Event()
        ev.wait()  # LINT-LOST

    def kept(ev):
        ev.wait()

    shared = Event()
    lost, fine = _named("forgotten", forgotten), _named("kept", kept, shared)
    labkit.sleep(0.01)
    try:
        found = lints()
        [lint] = _of(found, "lost wake-up", "forgotten")
        assert lint.line.startswith(_line("LINT-LOST"))
        assert "nothing but its waiters (1) refers to that Event" in lint.evidence
        assert not _of(found, "lost wake-up", "kept")
        shared.set()   # kept could be woken, and is
        labkit.sleep(0.01)
        assert fine.dead
    finally:
        lost.kill()


def test_an_event_another_greenlet_holds_is_not_a_lost_wakeup():
    def pair():
        ev = Event()
        waiter = _named("waiting", ev.wait)
        _named("setter", lambda: (labkit.sleep(0.2), ev.set()))
        return waiter

    waiter = pair()
    labkit.sleep(0.01)
    assert not _of(lints(), "lost wake-up", "waiting")
    waiter.join(timeout=2)
    assert waiter.dead


def test_lost_wakeup_on_a_closed_fd_and_on_a_join_of_a_dead_greenlet():
    r, w = os.pipe()

    def reader():
        labkit._park.wait_read(r)  # LINT-FD

    target = labkit.Greenlet(lambda: None)
    target.name = "target"
    fd_waiter, joiner = _named("reader", reader), _named("joiner", target.join)
    timed = _named("timed-joiner", target.join, 5)
    labkit.sleep(0.01)
    os.close(r)       # behind labkit's back: epoll forgets the fd, nobody is told
    os.close(w)
    # target dies without running its links (a raw throw bypasses Greenlet.run)
    target.parent = greenlet.getcurrent()
    greenlet.greenlet.throw(target, greenlet.GreenletExit)
    try:
        found = lints()
        [lint] = _of(found, "lost wake-up", "reader")
        assert lint.line.startswith(_line("LINT-FD"))
        assert lint.evidence == f"parked on fd {r} read, and fd {r} is closed"
        [lint] = _of(found, "lost wake-up", "joiner")
        assert lint.evidence == "joins target, which is already dead, with no timeout"
        assert not _of(found, "lost wake-up", "timed-joiner")   # its timer will wake it
    finally:
        labkit.killall([fd_waiter, joiner, timed])


def test_spinning_on_sleep0_is_found_and_can_be_silenced():
    done = []

    def spinner():
        while not done:
            labkit.sleep(0)  # LINT-SPIN

    def sleeper():
        while not done:
            labkit.sleep(0.01)

    with tracing.trace() as t:
        spin, calm = _named("spinner", spinner), _named("sleeper", sleeper)
        deadline = time.monotonic() + 10
        found = []
        while not _of(found, "spinning", "spinner") and time.monotonic() < deadline:
            labkit.sleep(0.02)
            found = lints()
        [lint] = _of(found, "spinning", "spinner")
        assert lint.line.startswith(_line("LINT-SPIN"))
        assert "wake-ups were its own sleep(0)" in lint.evidence
        own, _of_, _its, total = lint.evidence.split()[:4]
        assert int(own) > int(total) / 2
        assert not _of(found, "spinning", "sleeper")
        silence(spin, "spinning")
        assert not _of(lints(), "spinning", "spinner")
        done.append(True)
        labkit.joinall([spin, calm])
    assert _of(t.lints(), "spinning", "spinner")
    silence("spinner")
    try:
        assert not _of(t.lints(), "spinning", "spinner")
    finally:
        unsilence("spinner")


def test_starved_behind_a_cpu_hog():
    def victim():
        for _ in range(3):
            labkit.sleep(0)

    def hog():
        for _ in range(2):
            _cpu(0.15)
            labkit.sleep(0)

    with tracing.trace(blocking=0.05, report=False) as t:
        gs = [_named("victim", victim), _named("hog", hog)]
        labkit.joinall(gs)
        deadline = time.monotonic() + 5   # the monitor reports a moment after each block
        while len(tracing.recorder.active().blocks) < 2 and time.monotonic() < deadline:
            labkit.sleep(0.01)
        found = lints(starved=0.1)
    [lint] = _of(found, "starved", "victim")
    assert lint.evidence.startswith("ready for ")
    assert float(lint.evidence.split()[2]) >= 0.1
    assert "behind hog" in lint.evidence
    assert not _of(found, "starved", "hog")
    assert _of(t.lints(starved=0.1), "starved", "victim")


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="never_yielded"):
        lints(never_yielded=-1)
    with pytest.raises(TypeError, match="starved"):
        lints(starved="soon")
    with pytest.raises(TypeError, match="spinning_wakes"):
        tracing.Trace().lints(spinning_wakes=None or "many")
    with pytest.raises(ValueError, match="kinds"):
        silence("x", "sleepy")
    with pytest.raises(TypeError, match="greenlet_or_name"):
        silence(42)


def test_a_healthy_echo_server_with_100_clients_has_no_lints():
    from labkit import socket
    from labkit.server import StreamServer

    def echo(conn, _address):
        while True:
            data = conn.recv(64)
            if not data:
                break
            conn.sendall(data)

    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()
    port = server.address[1]

    def client(i):
        with socket.create_connection(("127.0.0.1", port)) as c:
            for _ in range(10):
                c.sendall(b"ping %d" % i)
                assert c.recv(64) == b"ping %d" % i
                labkit.sleep(0.001)

    try:
        with tracing.trace(blocking=0.05, report=False) as t:
            lints()   # the first look meets the hub's greenlets (as a console does on opening)
            clients = [labkit.spawn(client, i) for i in range(100)]
            labkit.sleep(0.05)
            live = lints()
            labkit.joinall(clients, raise_error=True)
            after = lints()
    finally:
        server.stop()
    # (On a loaded machine -- the whole suite on two cores -- a client may be
    # descheduled mid-step and keep the others waiting: such lints say the
    # machine was busy, and are not the program's.)
    def the_programs(found):
        return [lint for lint in found if "the machine was busy" not in lint.evidence]

    assert the_programs(live) == [] and the_programs(after) == []
    assert the_programs(trace_lints(t)) == []
