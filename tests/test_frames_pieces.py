"""A console refresh (tracing.frames.capture) turns the snapshot's rows into
plain data in pieces bounded by time, not by a count of rows: a row can
cost ten times another (the first read of a parked greenlet's frames), and
a piece must stay about tracing.pace.PIECE_NS however slow its rows are."""
import time

import pytest

import labkit
from labkit.event import Event
import tracing.frames as frames
from tracing.frames import capture
from tracing.pace import PIECE_NS

pytestmark = pytest.mark.timeout(60)


def test_rows_are_made_in_pieces_of_bounded_time(monkeypatch):
    event = Event()
    greenlets = [labkit.spawn(event.wait) for _ in range(200)]
    labkit.sleep(0)
    slow_row_s = 4 * PIECE_NS / 1e9 / frames.ROWS_PER_LOOK   # a look's rows: 4 pieces
    made = []
    real_row = frames._row

    def slow_row(**plain):
        until = time.perf_counter() + slow_row_s
        while time.perf_counter() < until:
            pass
        made.append(plain["id"])
        return real_row(**plain)

    monkeypatch.setattr(frames, "_row", slow_row)
    per_piece = []

    def between():
        per_piece.append(len(made))
        labkit.sleep(0)

    try:
        frame = capture(between=between, with_lints=False)
    finally:
        labkit.killall(greenlets)
    assert len(frame["rows"]) >= 200
    counts = [b - a for a, b in zip(per_piece, per_piece[1:] + [len(made)])]
    # each piece ends at the first look at the clock past PIECE_NS: one look's rows
    assert max(counts) <= frames.ROWS_PER_LOOK, counts
    assert sum(counts) == len(made)
