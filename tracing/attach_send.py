"""Sending a console frame in pieces: the attach server's work that holds
the target's loop (tracing/attach.py serves the connection).

One refresh pauses the target for the pieces of the capture (one
:func:`tracing.frames.capture`: the snapshot, the lints and the rows,
each yielding between pieces), then for the head, then for each batch of
rows encoded and sent (at most :data:`PIECE_NS` of encoding each),
yielding (``labkit.sleep(0)``) between pieces: the frame is never joined
or copied whole. Every piece is timed (:class:`_PieceShares`); the
longest is sent along, last (``frame["served"]``).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time

from labkit._lk_poll_py import send as _send_nowait
from tracing import pace as _pace_module
from tracing.causes import gc_times

__all__ = ["send_frame", "PIECE_NS", "ROWS_PER_STEP"]

#: The most encoding (ns) one piece of a frame does before it is sent and
#: the hub runs again, give or take one step of :data:`ROWS_PER_STEP` rows
#: (~25 µs of encoding each).
PIECE_NS = 200_000
#: Rows encoded between two looks at the clock.
ROWS_PER_STEP = 16
#: The frames' encoder: compact, no circularity check (frames are plain
#: data), anything odd as its str.
_ENCODER = json.JSONEncoder(default=str, check_circular=False, separators=(",", ":"))


def send_frame(conn, capture, stats: dict, labkit) -> None:
    """Capture a frame with ``capture`` (called as
    :func:`tracing.frames.capture` is) and send it on ``conn`` as one JSON
    line, in pieces, yielding to the hub between them. ``stats``: the
    server's counters, brought up to date (``frames``, ``last_pause_ms``,
    ``max_pause_ms``). Call from a greenlet of the hub, with
    :data:`tracing.causes.gc_times` acquired (the collector's share of
    each piece).

    Every stretch this holds the hub is one piece and is timed: the
    capture's (snapshot, lints, rows made plain: tracing.frames), the
    head's, and each batch of rows encoded *and sent* -- at most
    :data:`PIECE_NS` of encoding, give or take :data:`ROWS_PER_STEP`
    rows, then written to the socket before the next yield, so no
    piece joins or copies the whole frame. The longest piece is what
    this refresh held the target's loop at a stretch
    (``frame["served"]``, sent last: ``pause_ms``, and the longest of
    the capture's pieces and of the sending's, ``capture_ms`` and
    ``send_ms``; ``pause_cpu_ms``, the longest piece in this thread's
    CPU time, which a machine that deschedules the target does not
    lengthen; ``pause_gc_ms``, the most the cyclic garbage collector
    ran in one piece, and ``pause_own_ms``, the longest piece in CPU
    time without the collector's share: what the frame's own work held
    the loop for). The rows go as lists under one ``"columns"`` list
    (half the encoding of dicts: each key once); tracing.attach_client
    rebuilds the dicts. A row whose keys are not the columns goes as its
    dict."""
    clock = time.perf_counter_ns
    pauses: list = []
    shares = _PieceShares()

    def between():
        shares.end()
        labkit.sleep(0)
        shares.begin()

    frame = capture(between=between, pieces=pauses,
                    omit=(id(labkit.getcurrent()),))   # this one, serving
    rows = frame.pop("rows")
    lints = frame.pop("lints", None)
    captured = len(pauses)
    start = clock()
    shares.begin()
    columns = tuple(rows[0]) if rows else ()
    width = len(columns)
    head = _ENCODER.encode(frame)
    _end_piece_sending(conn, f'{head[:-1]},"columns":{_ENCODER.encode(columns)},"rows":['
                       .encode(), start, pauses, shares)

    def row_batch(batch):
        return [list(row.values()) if len(row) == width and tuple(row) == columns
                else row for row in batch]

    # The rows are this frame's own: each is dropped once sent, so that
    # no piece frees them all (10,000 rows freed after the last piece
    # held the loop for 2-4 ms, unmeasured). The lints may be the
    # Capturer's, kept for the next frames: sent, not dropped.
    _send_in_pieces(conn, rows, row_batch, True, pauses, shares, labkit)
    rows = None
    if lints is None:
        conn.sendall(b'],"lints":null')
    else:
        conn.sendall(b'],"lints":[')
        _send_in_pieces(conn, lints, list, False, pauses, shares, labkit)
        conn.sendall(b"]")
        lints = None
    pause_ms = max(pauses, default=0) / 1e6
    stats["frames"] += 1
    stats["last_pause_ms"] = pause_ms
    stats["max_pause_ms"] = max(stats["max_pause_ms"], pause_ms)
    served = {"pause_ms": pause_ms, "max_pause_ms": stats["max_pause_ms"],
              # the longest piece in the serving thread's CPU time
              "pause_cpu_ms": max(shares.cpu, default=0) / 1e6,
              # the most the collector ran in one piece, and the longest
              # piece in CPU time without it: the frame's own work
              "pause_gc_ms": max(shares.gc, default=0) / 1e6,
              "pause_own_ms": max((max(0, c - g) for c, g in zip(shares.cpu, shares.gc)),
                                  default=0) / 1e6,
              "longest_at": shares.longest_at,
              "pieces": len(pauses),
              # whose piece was longest: the capture's, or the sending's
              "capture_ms": max(pauses[:captured], default=0) / 1e6,
              "send_ms": max(pauses[captured:], default=0) / 1e6}
    conn.sendall(f',"served":{_ENCODER.encode(served)}}}\n'.encode())


def _send_in_pieces(conn, items: list, encode_batch, drop: bool, pauses: list,
                    shares: "_PieceShares", labkit) -> None:
    """Send ``items`` as the inside of a JSON list, in pieces: a yield
    (``labkit.sleep(0)``), then at most :data:`PIECE_NS` of encoding, give
    or take one batch of :data:`ROWS_PER_STEP` items (``encode_batch(batch)``
    -> what is encoded for it), then the send; each piece's wall time is
    appended to ``pauses`` and its CPU time to ``shares``. ``drop``: set
    each item sent to None in ``items`` (the caller's to give up), so that
    it is freed in the piece that sent it."""
    clock = time.perf_counter_ns
    i, n, comma = 0, len(items), ""
    while i < n:
        labkit.sleep(0)
        start = clock()
        shares.begin()
        parts = []
        while i < n and (not parts or clock() - start < PIECE_NS):
            batch = items[i:i + ROWS_PER_STEP]
            parts.append(_ENCODER.encode(encode_batch(batch))[1:-1])
            if drop:
                items[i:i + len(batch)] = [None] * len(batch)
            i += len(batch)
            batch = None
        _end_piece_sending(conn, (comma + ",".join(parts)).encode(), start, pauses, shares)
        comma = ","


def _end_piece_sending(conn, data: bytes, start: int, pauses: list,
                       shares: "_PieceShares") -> None:
    """End a piece (begun at ``start``, perf_counter_ns) with ``data`` sent:
    what the kernel takes now is the piece's; the rest is sent after it,
    when the client has read, this greenlet waiting and the loop running.
    (Inside the piece, that wait counted the loop's own time meanwhile as
    the piece's CPU time: pieces of 1.4-1.7 ms at 10,000 greenlets.)"""
    sent = _send_now(conn, data)
    pauses.append(time.perf_counter_ns() - start)
    shares.end()
    if sent < len(data):
        conn.sendall(memoryview(data)[sent:])


def _send_now(conn, data: bytes) -> int:
    """How much of ``data`` the kernel takes now, without waiting (labkit's
    send that never waits, as labkit.socket's own first try); 0 from a
    connection without a descriptor (anything else with a ``sendall``)."""
    fileno = getattr(conn, "fileno", None)
    if fileno is None:
        return 0
    try:
        return _send_nowait(fileno(), data, 0)
    except BlockingIOError:
        return 0


class _PieceShares:
    """Each piece of a frame in the serving thread's CPU time (``cpu``, ns),
    and the cyclic collector's share of it (``gc``, ns): :meth:`begin` and
    :meth:`end` around every stretch that holds the hub.

    CPU time, because a busy machine that deschedules the target mid-piece
    lengthens a piece's wall time, not the work it holds the loop for; the
    collector's share, because a collection lands in whichever piece
    allocates when one is due (tracing.causes.gc_times, hooked while a
    frame is served)."""

    __slots__ = ("cpu", "gc", "longest_at", "_collector", "_cpu0", "_gc0", "_most")

    def __init__(self):
        self.cpu: list = []
        self.gc: list = []
        #: where the longest piece (CPU time) ended: "file.py:12 < file.py:40"
        #: (the code that yielded, then its caller), for a reader of the
        #: figures to see which step held the loop
        self.longest_at = ""
        self._most = -1
        self._collector = functools.partial(gc_times.total, threading.get_ident())
        self.begin()

    def begin(self) -> None:
        self._cpu0, self._gc0 = time.thread_time_ns(), self._collector()

    def end(self) -> None:
        cpu = time.thread_time_ns() - self._cpu0
        self.cpu.append(cpu)
        self.gc.append(self._collector() - self._gc0)
        if cpu > self._most:
            self._most = cpu
            self.longest_at = _yielded_at(sys._getframe(1))


#: Functions of the yielding itself, skipped by _yielded_at (and tracing.pace's).
_PACING = frozenset({"between", "cut", "end"})


def _yielded_at(frame, levels: int = 2) -> str:
    """"file.py:12 < file.py:40": the first ``levels`` frames from ``frame``
    outwards that are not the pacing's own (tracing.pace's, a serving
    ``between``, a capture's ``cut``)."""
    where = []
    while frame is not None and len(where) < levels:
        code = frame.f_code
        if code.co_filename != _pace_module.__file__ and code.co_name not in _PACING:
            where.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(where)
