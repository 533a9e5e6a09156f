"""tracing.snapshot: one row per greenlet, what it waits on, its times, and
the loop's own rows."""
import os

import pytest

import labkit
import tracing
from labkit import socket
from labkit.event import Event
from labkit.queue import Queue
from tracing.snapshot import snapshot

pytestmark = pytest.mark.timeout(60)


def _named(name, fn, *args):
    g = labkit.spawn(fn, *args)
    g.name = name
    return g


def test_each_row_says_what_the_greenlet_waits_on_in_plain_words(recording):
    ev, q = Event(), Queue()
    left, right = socket.socketpair()

    def napper():
        labkit.sleep(0.3)

    gs = [_named("napper", napper), _named("evented", ev.wait), _named("getter", q.get),
          _named("reader", left.recv, 10)]
    gs.append(_named("joiner", gs[0].join))
    not_started = labkit.Greenlet(lambda: None)
    not_started.name = "later"
    labkit.sleep(0.02)
    try:
        snap = snapshot()
        by = {row.name: row for row in snap.rows}
        assert by["napper"].waits_on == "timer 0.3 s"
        assert by["napper"].where.startswith("test_tracing_snapshot.py:")
        assert by["evented"].waits_on == "Event"
        assert by["getter"].waits_on == "Queue.get"
        assert by["reader"].waits_on == f"fd {left.fileno()} read"
        assert by["joiner"].waits_on == "join napper"
        assert by["later"].state == "parked" and by["later"].waits_on == "not started"
        for name in ("napper", "evented", "getter", "reader", "joiner"):
            assert by[name].state == "parked"
            assert by[name].spawn_site.startswith("test_tracing_snapshot.py:")
            assert by[name].parent == "main"
            assert by[name].switches == 1
            assert by[name].idle > 0.01
        assert snap.loop.recording and snap.loop.timers >= 1 and snap.loop.fd_waits >= 1
        assert "napper" in str(snap) and "loop: poll time" in str(snap)
    finally:
        labkit.killall(gs)
        left.close()
        right.close()


def test_states_running_ready_and_dead_once(recording):
    seen = {}

    def looker():
        labkit.spawn(lambda: None).name = "fresh"
        seen["snap"] = snapshot()

    g = _named("looker", looker)
    g.join()
    by = {row.name: row for row in seen["snap"].rows}
    assert by["looker"].state == "running"
    assert by["fresh"].state == "ready"
    assert by["fresh"].parent == "looker"
    labkit.sleep(0)
    first = {row.name: row.state for row in snapshot().rows}
    assert first.get("looker") == "dead" and first.get("fresh") == "dead"
    second = {row.name for row in snapshot().rows}
    assert "looker" not in second and "fresh" not in second


def test_busy_scheduled_and_idle_add_up_to_what_happened(recording):
    def worker():
        for _ in range(3):
            deadline = __import__("time").perf_counter() + 0.02
            while __import__("time").perf_counter() < deadline:
                pass
            labkit.sleep(0.05)

    g = _named("worker", worker)
    hog = _named("hog", lambda: __import__("time").sleep(0.1))   # blocks the loop once
    g.join()
    hog.join()
    snap = snapshot()
    row = snap.row("worker")
    assert row.state == "dead"
    assert 0.055 <= row.busy < 0.5               # 3 x 20 ms of CPU
    assert row.idle >= 0.14                      # 3 x 50 ms asleep (minus lateness)
    assert row.switches == 4                     # started, then woken 3 times
    # it was ready to start behind nobody, but the hog held the loop 100 ms
    # while its first timer expired: not counted as idle, not as busy
    assert row.busy + row.idle + row.scheduled >= 0.2
    assert snap.loop.polls >= 3 and snap.loop.lag_max >= 0.09


def test_without_a_recording_the_live_columns_are_still_there():
    assert tracing._session is None
    g = _named("napper", labkit.sleep, 5)
    labkit.sleep(0.01)
    try:
        snap = snapshot()
        row = snap.row("napper")
        assert row.state == "parked" and row.waits_on == "timer 5 s"
        assert row.busy == 0 and not snap.loop.recording
        assert "recording" in str(snap)
    finally:
        g.kill()


def test_a_raw_fd_wait_is_named_by_its_fd(recording):
    r, w = os.pipe()
    g = _named("piper", labkit._park.wait_read, r)
    labkit.sleep(0.01)
    try:
        assert snapshot().row("piper").waits_on == f"fd {r} read"
    finally:
        g.kill()
        os.close(r)
        os.close(w)


def test_snapshots_do_not_keep_greenlets_alive():
    import gc
    import weakref

    def napper():
        labkit.sleep(0.05)

    g = _named("napper", napper)
    ref = weakref.ref(g)
    labkit.sleep(0.01)
    assert snapshot().row("napper").state == "parked"
    snapshot()          # the second one uses the cached words of its frame
    g.join()
    del g
    labkit.sleep(0.01)   # (the join's notification lets go of it in the hub's next pass)
    gc.collect()
    assert ref() is None


def test_an_unchanged_parked_row_moves_its_idle_time_on_and_a_woken_one_is_redone(recording):
    ev = Event()
    g = _named("waiter", ev.wait)
    labkit.sleep(0.01)
    first = snapshot().row("waiter")
    labkit.sleep(0.05)
    second = snapshot().row("waiter")
    assert second.state == "parked" and second.waits_on == "Event"
    assert second.idle >= first.idle + 0.04
    assert second.switches == first.switches
    ev.set()
    labkit.sleep(0.01)
    third = snapshot().row("waiter")
    assert third.state == "dead" and third.switches == first.switches + 1
    assert g.dead


def test_trace_snapshot_at_shows_the_table_as_it_was():
    ev = Event()

    def napper():
        labkit.sleep(0.1)
        ev.set()

    with tracing.trace() as t:
        gs = [_named("napper", napper), _named("waiter", ev.wait)]
        labkit.joinall(gs)
    early = t.snapshot_at(0.05)
    by = {row.name: row for row in early.rows}
    assert by["napper"].state == "parked" and by["napper"].waits_on == "timer"
    assert by["waiter"].state == "parked" and by["waiter"].waits_on == "Event"
    assert by["waiter"].spawn_site.startswith("test_tracing_snapshot.py:")
    assert 0.03 < by["waiter"].idle <= 0.05 and by["waiter"].switches == 1
    assert early.loop.poll_time > 0.02 and not early.loop.live
    assert "queued now" not in str(early)
    assert t.snapshot_at(t.duration).rows == []       # both done by then
    with pytest.raises(ValueError, match="within the trace"):
        t.snapshot_at(t.duration + 1)
    with pytest.raises(TypeError, match="t must be"):
        t.snapshot_at("0.1")


def test_a_patched_threading_lock_is_named_as_threading_names_it(recording):
    import labkit.threading as green_threading   # what patch_all() puts in threading
    lock, cond = green_threading.Lock(), green_threading.Condition()
    lock.acquire()

    def locker():
        lock.acquire()

    def waiter():
        with cond:
            cond.wait()

    gs = [_named("locker", locker), _named("waiter", waiter)]
    labkit.sleep(0.01)
    try:
        by = {row.name: row for row in snapshot().rows}
        assert by["locker"].waits_on == "threading.Lock"
        assert by["waiter"].waits_on == "threading.Condition"
        assert by["locker"].where.startswith("test_tracing_snapshot.py:")
    finally:
        labkit.killall(gs)
        lock.release()


def test_snapshot_refuses_what_is_not_a_hub_and_leaves_the_collector_as_it_was():
    import gc
    with pytest.raises(TypeError, match="hub must be a labkit Hub"):
        snapshot(hub="the hub")
    assert gc.isenabled()
    snapshot()
    assert gc.isenabled()
    gc.disable()
    try:
        snapshot()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_stopped_recorder_is_not_kept_alive_by_the_snapshot_machinery():
    import gc
    import weakref
    tracing.start()
    snapshot()
    ref = weakref.ref(tracing.recorder.active())
    tracing.stop()
    snapshot()
    gc.collect()
    assert ref() is None


def test_greenlets_spawned_before_a_background_recording_are_found_when_it_starts(monkeypatch):
    # The one heap search for greenlets the recorder's spawn table cannot
    # know (spawned before it started) runs when the console's recording
    # starts, not inside the first snapshot -- where it would be one piece
    # as long as the heap is big (a console's first refresh).
    import gc
    from tracing.frames import BackgroundRecording
    ev = Event()
    early = [labkit.spawn(ev.wait) for _ in range(20)]
    labkit.sleep(0)
    hub = labkit.get_hub()
    searches = []
    real = gc.get_referrers

    def spy(*objs):
        searches.extend(o for o in objs if o is hub)
        return real(*objs)

    monkeypatch.setattr(gc, "get_referrers", spy)
    recording = BackgroundRecording().start()
    try:
        assert len(searches) == 1      # at start
        late = [labkit.spawn(ev.wait) for _ in range(20)]
        labkit.sleep(0)
        rows = labkit.spawn(snapshot, between=lambda: labkit.sleep(0)).get().rows
        assert len(searches) == 1      # none in the snapshot
        ids = {row.id for row in rows}
        assert {id(g) for g in early + late} <= ids
    finally:
        recording.stop()
        labkit.killall(early + late)


def test_a_snapshot_in_pieces_reads_the_spawn_table_in_pieces_and_what_was_spawned_meanwhile():
    # A thousand spawns since the last look are read _SPAWNS_PER_LOOK at a
    # time, with the pace between; a greenlet spawned while the hub ran
    # there is read too.
    import sys
    snapshot_module = sys.modules["tracing.snapshot"]   # (tracing.snapshot is the function)
    ev = Event()
    made = []
    with tracing.trace():
        snapshot()
        gs = [labkit.spawn(ev.wait) for _ in range(1000)]
        labkit.sleep(0)
        spawning = []

        def between():
            spawning.append(1)
            if len(spawning) == 1:
                made.append(labkit.spawn(ev.wait))
            labkit.sleep(0)

        saved = snapshot_module.PIECE_NS
        snapshot_module.PIECE_NS = 0     # (read at each call): cut at every look
        try:
            rows = labkit.spawn(snapshot, between=between).get().rows
        finally:
            snapshot_module.PIECE_NS = saved
        reg = snapshot_module._registries[labkit.get_hub()]
        assert {id(g) for g in gs + made} <= set(reg.known)
        assert {id(g) for g in gs} <= {row.id for row in rows}
        assert len(spawning) >= 1000 // snapshot_module._SPAWNS_PER_LOOK
        labkit.killall(gs + made)
