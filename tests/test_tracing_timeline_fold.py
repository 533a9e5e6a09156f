"""One fold of the ring's records: the recorder's ledger folds each record
once, and the timeline (tracing.live_timeline.Strip) paints what that fold
says (tracing.ledger.Slices, through a Tap) instead of folding the records
a second time.

tests/data/timeline_recording.npz is a fixed recording -- a real one, of
spawns under reused ids, exits, sleep(0) spinners, short and long sleeps
(some late behind a CPU hog), Event and Queue waits and socket reads -- read
from the ring in six chunks, with what the timeline showed of it before
the shared fold (5aefc48's Strip, which decoded the raw records itself):
its lanes, the nanoseconds each ran per column, the waits painted on them,
late sleeps, switches and ready-queue lengths per column.
"""
import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import labkit
from labkit._loop import lib
from tracing.ledger import Ledger, Slices, ledger_for
from tracing.live_timeline import Strip
from tracing.recorder import Recorder

pytestmark = pytest.mark.timeout(90)

_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "timeline_recording.npz")


def _load():
    f = np.load(_FIXTURE)
    labels = {tuple(k) if isinstance(k, list) else k: v
              for k, v in json.loads(str(f["labels"]))}
    hub, main = (int(x) for x in f["hub"])
    data = f["records"].tobytes()
    chunks, pos = [], 0
    for count, now in zip(f["counts"].tolist(), f["nows"].tolist()):
        chunks.append((data[pos:pos + 32 * count], now))
        pos += 32 * count
    return f, labels, hub, main, chunks


def _assert_same_as_before(strip, f):
    lanes = len(strip.gid_of)
    assert lanes == len(f["gid_of"])
    gid_of = [g if isinstance(g, int) else -1 for g in strip.gid_of]
    assert gid_of == f["gid_of"].tolist()
    assert strip.last_col == int(f["last_col"])
    for layer in ("run", "park", "late"):
        before, now = f[layer], getattr(strip, layer)[:lanes]
        assert (now == before).all(), \
            f"{layer}: {int((now != before).sum())} cells differ, first at {np.argwhere(now != before)[:3].tolist()}"
    assert (strip.switches == f["switches"]).all()
    assert (strip.ready == f["ready"]).all()
    assert sorted(strip.spawn_index.items()) == [tuple(p) for p in f["spawn_index"].tolist()]
    assert sorted(strip.exited) == f["exited"].tolist()


def _painted_from_one_fold(chunks, hub, main, labels):
    """A Strip painted from a ledger's tap, the ledger fed the recording's
    chunks as it would read them from the ring; (strip, ledger)."""
    ledger = Ledger()
    tap = ledger.tap()
    strip = Strip(1.0, 500, hub, main, labels=labels)
    for data, now in chunks:
        ledger.fold(data)
        strip.add_slices(tap.take(), now)
    return strip, ledger


def test_the_timeline_from_the_ledgers_fold_shows_what_it_showed_before():
    f, labels, hub, main, chunks = _load()
    # what the recording holds: the comparison is about all of it
    recs = np.frombuffer(b"".join(d for d, _ in chunks), np.dtype(
        [("ts", "<i8"), ("kind", "<u4"), ("arg", "<u4"), ("a", "<i8"), ("b", "<i8")]))
    for kind in (lib.LK_TR_RESUME, lib.LK_TR_SPAWN, lib.LK_TR_EXIT, lib.LK_TR_PASS,
                 lib.LK_TR_POLL_ENTER, lib.LK_TR_POLL_LEAVE, lib.LK_TR_MARK):
        assert (recs["kind"] == kind).any(), kind
    assert len(f["exited"]) > 20 and (f["late"] > 0).any()
    assert len(set(np.unique(f["park"]).tolist()) - {0}) >= 4   # ready, sleeping, io, other

    strip, ledger = _painted_from_one_fold(chunks, hub, main, labels)
    _assert_same_as_before(strip, f)
    assert ledger.folded == strip.records == len(recs)

    # A strip fed raw records folds them with the same ledger code.
    raw = Strip(1.0, 500, hub, main, labels=labels)
    for data, now in chunks:
        raw.add(data, now)
    _assert_same_as_before(raw, f)


def test_the_reference_fold_gives_the_timeline_what_it_showed_before(monkeypatch):
    """The one-by-one reading's Slices (what lk_fold.c is compared with)
    paint the same timeline as the C fold's."""
    monkeypatch.setattr(Ledger, "fold", Ledger._fold_one_by_one)
    f, labels, hub, main, chunks = _load()
    strip, ledger = _painted_from_one_fold(chunks, hub, main, labels)
    _assert_same_as_before(strip, f)


_SLOTS = Slices.__slots__


def _slices_of(records: bytes, cuts, fold) -> dict:
    """All the Slices a tapped ledger hands out for ``records`` fed in
    batches ending at ``cuts`` to ``fold`` (Ledger.fold or the reference),
    joined, as lists; and the carried tail."""
    ledger = Ledger()
    tap = ledger.tap()
    count = len(records) // 32
    bounds = [0] + sorted(set(c for c in cuts if 0 < c < count)) + [count]
    for lo, hi in zip(bounds, bounds[1:]):
        fold(ledger, records[lo * 32:hi * 32])
    batches = tap.take()
    out = {name: [v for b in batches for v in getattr(b, name).tolist()]
           for name in _SLOTS[2:]} if batches else {}
    out["count"] = sum(b.count for b in batches)
    out["tail"] = ledger._tail
    out["marks"] = dict(ledger._mark_ends)
    return out


_KINDS = [lib.LK_TR_RESUME] * 6 + [lib.LK_TR_SPAWN, lib.LK_TR_EXIT, lib.LK_TR_POLL_ENTER,
                                   lib.LK_TR_POLL_LEAVE, lib.LK_TR_PASS, lib.LK_TR_HOST,
                                   lib.LK_TR_MARK, lib.LK_TR_MARK, 42]
_record = st.tuples(st.sampled_from(_KINDS), st.integers(1, 5), st.sampled_from([1, 2, 3, 4, 5, 6]),
                    st.sampled_from([0, 1, 10, 5 * 10**6]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(_record, min_size=1, max_size=60), st.lists(st.integers(0, 60), max_size=6))
def test_the_c_fold_hands_out_the_one_by_one_folds_slices(records, cuts):
    """Random streams (spawns under reused ids, exits before resumes, trace
    start marks, unknown kinds), cut anywhere: the one-by-one fold's Slices
    and carried state equal the C fold's."""
    data, ts = bytearray(), 1_000
    for kind, gid, why, step, flag in records:
        ts += step
        arg = why if kind == lib.LK_TR_RESUME else (0 if flag else 1) \
            if kind == lib.LK_TR_MARK else gid
        data += struct.pack("=qIIqq", ts, kind, arg, 0x1000 * gid, -why)
    fast = _slices_of(bytes(data), cuts, Ledger.fold)
    slow = _slices_of(bytes(data), cuts, Ledger._fold_one_by_one)
    assert fast == slow


def test_a_wrong_reading_is_caught():
    """The comparison can fail: slices whose waits all start unknown paint
    no waits, and the strip then differs from the recorded result."""
    f, labels, hub, main, chunks = _load()
    ledger = Ledger()
    tap = ledger.tap()
    strip = Strip(1.0, 500, hub, main, labels=labels)
    for data, now in chunks:
        ledger.fold(data)
        batches = tap.take()
        for batch in batches:
            batch.wait_start = np.zeros_like(batch.wait_start)
        strip.add_slices(batches, now)
    with pytest.raises(AssertionError, match="park"):
        _assert_same_as_before(strip, f)


def test_each_record_is_folded_once_whoever_asks():
    """The console's snapshot and the Dashboard both bring one ledger up to
    date, in pieces that let the loop (and the other) run: each record is
    folded once, and a tap gets every record once, in order."""
    from tracing.pace import Pace
    recorder = Recorder(capacity=1 << 16).start()
    try:
        ledger = ledger_for(recorder)
        tap = ledger.tap()
        ledger.BATCH = 64           # many batches, so the two updates interleave
        stop = []

        def spinner():
            while not stop:
                labkit.sleep(0)

        def updater():
            while not stop:
                ledger.update(Pace(lambda: labkit.sleep(0), piece_ns=0))
                labkit.sleep(0.001)

        gs = [labkit.spawn(spinner) for _ in range(3)] + [labkit.spawn(updater) for _ in range(2)]
        taken = []
        deadline = labkit.get_hub().loop.now() + 20
        while ledger.folded < 20_000 and labkit.get_hub().loop.now() < deadline:
            labkit.sleep(0.01)
            taken += tap.take()
        stop.append(1)
        labkit.joinall(gs, timeout=5)
        ledger.update()
        taken += tap.take()
        assert ledger.folded >= 20_000
        assert ledger.lost == 0, "the ring overwrote records: make it bigger"
        assert ledger.folded == ledger.seq <= lib.lk_trace_count(recorder.ring)
        # the tap's batches: every record once, in order, no gap, no overlap
        firsts = [b.first for b in taken]
        assert firsts[0] == 0
        assert all(a.first + a.count == b.first for a, b in zip(taken, taken[1:]))
        assert sum(b.count for b in taken) == ledger.folded
        runs = np.concatenate([b.run_seq for b in taken])
        assert (np.diff(runs) > 0).all()    # each run once, in record order
    finally:
        ledger.untap(tap)
        recorder.stop(read=False)


def test_tap_arguments_are_checked():
    with pytest.raises(ValueError, match="limit"):
        Ledger().tap(limit=0)
    ledger = Ledger()
    with pytest.raises(ValueError, match="data"):
        ledger.fold(b"\0" * 33)
    tap = ledger.tap(limit=40)
    f, _labels, _hub, _main, chunks = _load()
    for data, _now in chunks:
        ledger.fold(data)
    assert tap.pending <= 40 + max(len(d) // 32 for d, _ in chunks)
    assert tap.dropped > 0      # untaken batches past the limit are dropped, and counted
    ledger.untap(tap)
    ledger.untap(tap)           # idempotent
