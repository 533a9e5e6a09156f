"""tracing.ledger: the C fold of the ring's records (loop_c/lk_fold.c) gives
exactly what the one-by-one reading gives -- on a recorded trace of a real workload, cut into
batches anywhere, and on random record streams (unknown kinds included)."""
import struct

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import labkit
from labkit._loop import ffi, lib
from labkit.event import Event
from labkit.queue import Queue
from tracing.ledger import Account, Ledger, ZERO_TIMEOUT_NS
from tracing.live_timeline import RECORD_DTYPE
from tracing.recorder import Recorder

pytestmark = pytest.mark.timeout(60)

_RECORD = struct.Struct("=qIIqq")
def _state(ledger) -> dict:
    """Everything a fold leaves behind, as plain data."""
    ledger.forget_exited()
    running = ledger.running()
    return {
        "accounts": dict(ledger.accounts),     # (each a tuple of its fields)
        "finished": list(ledger.finished),
        "touched": sorted(ledger.take_touched()),
        "running": None if running is None else
                   (running, ledger.accounts.get(running[0])),
        "carried": (ledger._segment, ledger._poll_start, ledger._poll_left),
        "window": ledger.take_window(10**18),
    }


def _fold_both(recorder, data: bytes, cuts) -> tuple:
    """(state after the C fold, state after the one-by-one fold) of the
    raw records ``data``, fed in batches ending at the record indices ``cuts``."""
    fast, slow = Ledger(recorder), Ledger(recorder)
    count = len(data) // _RECORD.size
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < count)) + [count]
    for lo, hi in zip(bounds, bounds[1:]):
        chunk = data[lo * _RECORD.size:hi * _RECORD.size]
        fast.fold(chunk)
        slow._fold_python(_RECORD.iter_unpack(chunk))
    return _state(fast), _state(slow)


def _workload():
    """A bit of everything the ring records: spawns (ids reused after
    exits), sleep(0) spinners, short and long timers, Event and Queue
    wake-ups, joins, a CPU stretch, exits."""
    ev, q = Event(), Queue()

    def spinner():
        for _ in range(30):
            labkit.sleep(0)

    def sleeper(t):
        for _ in range(3):
            labkit.sleep(t)

    def waiter():
        ev.wait()
        q.get()

    def hog():
        sum(range(1_000_000))   # ~20 ms: a notable slice
        labkit.sleep(0)

    for _round in range(3):
        gs = [labkit.spawn(spinner), labkit.spawn(sleeper, 0), labkit.spawn(sleeper, 0.002),
              labkit.spawn(waiter), labkit.spawn(waiter), labkit.spawn(hog)]
        gs += [labkit.spawn(lambda: None) for _ in range(20)]   # short lives: ids reused
        labkit.sleep(0.005)
        ev.set()
        q.put(1)
        q.put(2)
        labkit.joinall(gs, timeout=5)
        ev.clear()


def test_the_c_fold_equals_the_one_by_one_fold_on_a_recorded_trace():
    recorder = Recorder(capacity=1 << 16).start()
    try:
        _workload()
        count = lib.lk_trace_count(recorder.ring)
        buffer = ffi.new("lk_trace_entry[]", count)
        first = ffi.new("uint64_t *")
        n = lib.lk_trace_read(recorder.ring, buffer, count, 0, first)
        assert first[0] == 0, "the ring overwrote records: make it bigger"
        data = bytes(ffi.buffer(buffer, n * _RECORD.size))
        kinds = np.frombuffer(data, RECORD_DTYPE)["kind"]
        # the trace holds what the comparison is about
        for kind in (lib.LK_TR_RESUME, lib.LK_TR_SPAWN, lib.LK_TR_EXIT, lib.LK_TR_POLL_ENTER,
                     lib.LK_TR_POLL_LEAVE, lib.LK_TR_PASS):
            assert (kinds == kind).sum() > 0, kind
        one_batch = _fold_both(recorder, data, [])
        assert one_batch[0] == one_batch[1]
        state = one_batch[1]
        assert len(state["finished"]) >= 3 and state["window"]["polls"] > 0   # the hogs
        assert any(acc[5] > 0 for acc in state["accounts"].values()) or \
            any(acc[5] > 0 for _name, acc in state["finished"])   # self wake-ups
        # Cut into batches anywhere: the state carried between batches too.
        rng = np.random.default_rng(19)
        for size in (1, 7, 300):
            cuts = list(range(size, n, size)) if size > 1 else \
                sorted(rng.choice(n, size=min(n - 1, 400), replace=False).tolist())
            fast, slow = _fold_both(recorder, data, cuts)
            assert fast == slow, size
            assert fast == one_batch[0], size
    finally:
        recorder.stop(read=False)


# Random streams: a few greenlet ids (so spawns reuse them, exits come
# before resumes, ...), every record kind and an unknown one, every why.
_KINDS = [lib.LK_TR_RESUME] * 6 + [lib.LK_TR_SPAWN, lib.LK_TR_EXIT, lib.LK_TR_POLL_ENTER,
                                   lib.LK_TR_POLL_LEAVE, lib.LK_TR_PASS, lib.LK_TR_PASS,
                                   lib.LK_TR_HOST, lib.LK_TR_MARK, 42]
_record = st.tuples(st.sampled_from(_KINDS), st.integers(1, 6),
                    st.sampled_from([1, 2, 3, 4, 5, 6]),
                    st.sampled_from([0, 1, 10, ZERO_TIMEOUT_NS - 1, ZERO_TIMEOUT_NS, 5 * 10**6]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=6))
# (found on 3.10: an exit read twice for one greenlet; the last one's time)
@example(records=[(1, 2, 1, 0), (1, 1, 1, 0), (1, 1, 1, 5 * 10**6), (1, 2, 2, 5 * 10**6),
                  (3, 2, 1, 0), (3, 2, 1, 1)], cuts=[])
def test_the_c_fold_equals_the_one_by_one_fold_on_random_streams(records, cuts):
    data, ts = bytearray(), 1_000
    for kind, gid, why, step in records:
        ts += step
        arg = why if kind == lib.LK_TR_RESUME else gid   # PASS: callbacks in arg
        data += _RECORD.pack(ts, kind, arg, 0x1000 * gid, -why)
    recorder = Recorder(capacity=64)   # not started: only its name table is used
    recorder.start_ns = 0
    fast, slow = _fold_both(recorder, bytes(data), cuts)
    assert fast == slow


def test_a_wrong_fold_is_caught():
    """The comparison above can fail: a fold that drops the self wake-ups
    of zero timeouts differs from the reference."""
    data, ts = bytearray(), 0
    for i in range(10):
        ts += 100
        data += _RECORD.pack(ts, lib.LK_TR_RESUME, lib.LK_WHY_TIMER, 0x1000, 0)
        ts += 100
        data += _RECORD.pack(ts, lib.LK_TR_PASS, 1, 0, 0)
    recorder = Recorder(capacity=64)
    recorder.start_ns = 0
    good = Ledger(recorder)
    good.fold(bytes(data))
    assert good.accounts[0x1000][Account.SELF_WAKES] == 9
    import tracing.ledger as ledger_module
    saved = ledger_module.ZERO_TIMEOUT_NS
    ledger_module.ZERO_TIMEOUT_NS = 0
    try:
        fast, slow = Ledger(recorder), Ledger(recorder)
        fast.fold(bytes(data))
    finally:
        ledger_module.ZERO_TIMEOUT_NS = saved
    slow._fold_python(_RECORD.iter_unpack(bytes(data)))
    assert _state(fast) != _state(slow)


def test_an_update_in_pieces_reads_a_batch_at_a_time_and_folds_the_same(monkeypatch):
    # With a pace, an update reads a batch, asks the pace (which may let
    # the hub run), reads the next: batches cut anywhere fold the same.
    from tracing.pace import Pace
    monkeypatch.setattr(Ledger, "BATCH", 64)
    recorder = Recorder(capacity=1 << 16).start()
    try:
        _workload()
        count = lib.lk_trace_count(recorder.ring)
        assert count > 4 * Ledger.BATCH, count
        whole, paced = Ledger(recorder), Ledger(recorder)
        whole.update()
        reads = []
        pace = Pace(lambda: reads.append(paced.seq), piece_ns=0)   # (never yields)
        paced.update(pace)
        assert paced.seq == whole.seq >= count
        assert len(reads) >= count // Ledger.BATCH
        assert all(b - a <= Ledger.BATCH for a, b in zip([0] + reads, reads))
        assert _state(paced) == _state(whole)
    finally:
        recorder.stop(read=False)


def test_records_overwritten_before_an_update_are_counted_and_the_rest_folded():
    # A ring of 64 records under a workload of hundreds: the update finds
    # the oldest gone, counts them, treats everyone as touched, and folds
    # what is left as a fresh ledger fed those records does.
    recorder = Recorder(capacity=64).start()
    try:
        _workload()
        ledger = Ledger(recorder)
        ledger.update()
        count = lib.lk_trace_count(recorder.ring)
        assert ledger.seq == count > 64
        assert ledger.lost == count - 64 == ledger.seq - ledger.folded
        assert 12345 in ledger.take_touched()     # after lost records: everyone
        buffer = ffi.new("lk_trace_entry[]", 64)
        first = ffi.new("uint64_t *")
        n = lib.lk_trace_read(recorder.ring, buffer, 64, 0, first)
        assert (first[0], n) == (count - 64, 64)
        fresh = Ledger(recorder)
        fresh.fold(bytes(ffi.buffer(buffer, n * _RECORD.size)))
        after, expected = _state(ledger), _state(fresh)
        assert after["window"].pop("lost_records") == count - 64
        assert expected["window"].pop("lost_records") == 0
        del after["touched"], expected["touched"]
        assert after == expected and after["accounts"]
    finally:
        recorder.stop(read=False)


def test_a_paced_update_cuts_a_batch_that_meets_too_many_greenlets(monkeypatch):
    # A thousand spawns fit in one batch of records, but each greenlet met
    # costs Python work: a paced update folds at most PACED_KEYS of them
    # before it asks the pace (a console's first refresh of a process that
    # just spawned them), and folds the same as one unpaced update. After a
    # batch cut short, it reads a few records at a time, not a whole batch
    # again for each PACED_KEYS of it.
    import tracing.ledger
    from tracing.pace import Pace
    asked = []

    class Lib:
        def __getattr__(self, name):
            return getattr(lib, name)

        def lk_trace_read(self, ring, out, size, *rest):
            asked.append(size)
            return lib.lk_trace_read(ring, out, size, *rest)

    monkeypatch.setattr(tracing.ledger, "lib", Lib())
    ev = Event()
    recorder = Recorder(capacity=1 << 16).start()
    try:
        gs = [labkit.spawn(ev.wait) for _ in range(1000)]
        labkit.sleep(0)
        count = lib.lk_trace_count(recorder.ring)
        assert count < Ledger.BATCH      # one batch, by records
        whole, paced = Ledger(recorder), Ledger(recorder)
        whole.update()
        reads = []
        pace = Pace(lambda: reads.append(paced.seq), piece_ns=0)   # (never yields)
        asked.clear()
        paced.update(pace)
        assert len(reads) >= 1000 // Ledger.PACED_KEYS - 1
        assert asked[0] == Ledger.BATCH and max(asked[1:]) <= 4 * Ledger.PACED_KEYS, asked
        assert paced.seq == whole.seq >= count
        assert _state(paced) == _state(whole)
        assert len(paced.accounts) >= 1000
    finally:
        recorder.stop(read=False)
        labkit.killall(gs)
