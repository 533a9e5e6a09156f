"""The attach server sends a frame in pieces (tracing.attach.AttachServer._send_frame):
the head, then the rows a batch at a time, each batch encoded and written to
the socket before the hub runs again, the served figures last. Nothing joins
or encodes the whole frame in one stretch of the hub, and every stretch is
counted in ``served``. Checked by structure (what was sent between two
runs of another greenlet), not by timing."""
import json
import os

import pytest

import labkit
from tracing import attach, attach_send
from tracing.attach_client import decode

pytestmark = pytest.mark.timeout(30)


class _Connection:
    """What the server writes to; notes which run of the ticker each write followed."""

    def __init__(self, ticks):
        self.ticks = ticks
        self.writes: list = []   # (ticks seen at that write, bytes)

    def sendall(self, data):
        self.writes.append((self.ticks[0], bytes(data)))


def _rows(n):
    rows = [{"id": i, "kind": "greenlet", "name": f"g{i}", "state": "parked",
             "waits_on": "Event", "busy": i / 1e3, "object": None} for i in range(n)]
    rows.append({"id": -1, "kind": "task", "name": "odd one", "extra": [1, 2]})   # other keys
    return rows


def _serve_one_frame(monkeypatch, n):
    ticks = [0]
    rows = _rows(n)

    def capture(between, pieces, omit):
        pieces.append(1000)
        between()
        pieces.append(2000)
        return {"time": 1.0, "pid": 7, "rows": [dict(r) for r in rows], "loop": {},
                "lints": [{"kind": "never yielded", "line": "x.py:1"}]}

    def tick():
        while True:
            ticks[0] += 1
            labkit.sleep(0)

    # one step of rows per piece: the smallest piece the server makes
    monkeypatch.setattr(attach_send, "PIECE_NS", 0)
    server = attach.AttachServer(path="/nonexistent/never-bound.sock", capture=capture)
    conn = _Connection(ticks)
    ticker = labkit.spawn(tick)
    try:
        labkit.spawn(server._send_frame, conn).get(timeout=10)
    finally:
        ticker.kill()
    return rows, conn, server


def test_a_frame_goes_out_in_pieces_with_the_hub_running_between(monkeypatch):
    rows, conn, server = _serve_one_frame(monkeypatch, 100)
    line = b"".join(data for _ticks, data in conn.writes)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    frame = decode(json.loads(line))
    # the client gets the rows back as they were, the odd one as its dict
    assert frame["rows"] == rows and "columns" not in frame
    assert frame["lints"] == [{"kind": "never yielded", "line": "x.py:1"}]
    # the head, a write per step of rows, the lints' list (its opening, one
    # step, its end), and the served figures last
    steps = -(-len(rows) // attach_send.ROWS_PER_STEP)
    assert len(conn.writes) == 1 + steps + 3 + 1
    batches = conn.writes[1:1 + steps] + [conn.writes[2 + steps]]
    assert conn.writes[1 + steps][1] == b'],"lints":['
    assert conn.writes[3 + steps][1] == b"]"
    # the hub ran (the ticker moved) before every batch was written
    seen = [conn.writes[0][0]] + [ticks for ticks, _data in batches]
    assert all(b > a for a, b in zip(seen, seen[1:]))
    # no write holds more than one step of rows
    assert max(len(data) for _t, data in batches) < len(line) / (steps - 1)
    served = frame["served"]
    # the capture's two, the head, the batches of rows, the lints' one
    assert served["pieces"] == 2 + 1 + steps + 1
    assert served["capture_ms"] == pytest.approx(0.002)
    assert served["send_ms"] >= 0 and served["pause_ms"] == max(served["capture_ms"],
                                                                 served["send_ms"])
    assert server.stats["frames"] == 1


def test_rows_are_sent_once_each_as_lists_under_their_columns(monkeypatch):
    rows, conn, _server = _serve_one_frame(monkeypatch, 40)
    raw = json.loads(b"".join(data for _ticks, data in conn.writes))
    assert raw["columns"] == list(rows[0])
    assert raw["rows"][:40] == [list(r.values()) for r in rows[:40]]
    assert raw["rows"][40] == rows[40]            # keys other than the columns: a dict
    empty = decode({"columns": ["a"], "rows": []})
    assert empty == {"rows": []}
    assert decode({"error": "refused"}) == {"error": "refused"}


def test_the_attach_server_never_runs_the_lost_wakeups_heap_traversal():
    # One traversal is ~1 ms per 10,000 objects: longer than a piece. What
    # only it could decide is left undecided, and the frame says how many.
    server = attach.AttachServer(path="/nonexistent/never-bound.sock")
    assert server.capture.__self__.heap.traverse is False
    frame = server.capture(between=lambda: labkit.sleep(0), pieces=[], omit=())
    assert frame["undecided"] == 0


def test_the_terminal_view_says_how_many_waits_were_left_undecided():
    from rich.console import Console
    frame = {"pid": 7, "time": 1.0, "rows": [], "loop": {}, "lints": [], "undecided": 2}
    out = Console(width=120, record=True, file=open(os.devnull, "w"))
    out.print(attach.render(frame))
    assert "2 wait(s) not decided" in out.export_text()
    frame["undecided"] = 0
    out.print(attach.render(frame))
    assert out.export_text().count("not decided") == 0


def test_the_collectors_share_of_a_piece_is_told_apart_from_the_frames_own_work():
    # A full collection forced inside the capture's second piece: the
    # served figures count it as the collector's (pause_gc_ms) and leave it
    # out of the frame's own work (pause_own_ms); the collector is hooked
    # only while the frame is served.
    import gc
    from tracing.causes import gc_times
    junk = [[[] for _ in range(50)] for _ in range(2000)]   # something to traverse

    def capture(between, pieces, omit):
        pieces.append(1000)
        between()
        gc.collect()
        pieces.append(2000)
        between()      # (a capture in pieces ends in a yield)
        return {"time": 1.0, "pid": 7, "rows": _rows(3), "loop": {}, "lints": []}

    hooked = gc_times._callback in gc.callbacks
    server = attach.AttachServer(path="/nonexistent/never-bound.sock", capture=capture)
    conn = _Connection([0])
    labkit.spawn(server._send_frame, conn).get(timeout=10)
    served = json.loads(b"".join(data for _ticks, data in conn.writes))["served"]
    # (the collector's share is wall time, the piece's CPU time: a collection
    # descheduled for a moment can be the longer)
    assert served["pause_gc_ms"] > 0
    assert served["pause_own_ms"] < served["pause_cpu_ms"]
    assert (gc_times._callback in gc.callbacks) == hooked
    del junk


def test_the_terminal_view_says_how_much_of_the_longest_piece_was_garbage_collection():
    from rich.console import Console
    frame = {"pid": 7, "time": 1.0, "rows": [], "loop": {}, "lints": [],
             "served": {"pause_ms": 1.5, "pause_gc_ms": 1.2}}
    out = Console(width=200, record=True, file=open(os.devnull, "w"))
    out.print(attach.render(frame))
    text = out.export_text()
    assert "pieces of ≤ 1.50 ms (garbage collection 1.20 ms of it)" in text
    frame["served"] = {"pause_ms": 0.4, "pause_gc_ms": 0.0}
    out.print(attach.render(frame))
    assert out.export_text().count("garbage collection") == 0


def test_the_rows_are_dropped_as_they_go_out_and_the_lints_are_kept(monkeypatch):
    # 10,000 rows freed at once after the last piece held the target's loop
    # for 2-4 ms that no piece measured: each row now goes in the piece that
    # sends it. The lints may be a Capturer's, shown again by the next
    # frames: those are sent and left as they were.
    sent_rows, lints = [], [{"kind": "never yielded", "line": "x.py:1"}]
    dropped_between = []

    def capture(between, pieces, omit):
        sent_rows.extend({"id": i, "kind": "greenlet"} for i in range(200))
        return {"time": 1.0, "rows": sent_rows, "loop": {}, "lints": lints}

    def watch():
        while True:
            dropped_between.append(sum(row is None for row in sent_rows))
            labkit.sleep(0)

    monkeypatch.setattr(attach_send, "PIECE_NS", 0)
    server = attach.AttachServer(path="/nonexistent/never-bound.sock", capture=capture)
    conn = _Connection([0])
    watcher = labkit.spawn(watch)
    try:
        labkit.spawn(server._send_frame, conn).get(timeout=10)
    finally:
        watcher.kill()
    frame = decode(json.loads(b"".join(data for _ticks, data in conn.writes)))
    assert [row["id"] for row in frame["rows"]] == list(range(200))
    assert sent_rows == [None] * 200
    # between two pieces, some were gone and some not yet
    assert any(0 < n < 200 for n in dropped_between), dropped_between
    assert lints == [{"kind": "never yielded", "line": "x.py:1"}] == frame["lints"]


class _SlowReader:
    """A connection whose kernel buffer fills at once (a socketpair with a
    small send buffer, nobody reading): what the kernel takes is written
    now, the rest goes through ``sendall``, which waits for a reader here
    (the loop runs meanwhile) -- as a client busy decoding makes a server
    wait."""

    def __init__(self, wait):
        import socket
        self.ours, self.theirs = socket.socketpair()
        self.ours.setblocking(False)
        self.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.wait = wait
        self.waited = 0
        self.out = bytearray()

    def fileno(self):
        return self.ours.fileno()

    def sendall(self, data):
        self.waited += 1
        labkit.sleep(self.wait)                 # the client reads...
        while True:                             # (what the kernel took first)
            try:
                chunk = self.theirs.recv(1 << 20, __import__("socket").MSG_DONTWAIT)
            except BlockingIOError:
                break
            self.out += chunk
        self.out += bytes(data)

    def close(self):
        self.ours.close()
        self.theirs.close()


def test_a_wait_for_the_client_is_not_part_of_a_piece(monkeypatch):
    # A piece is the server's own work. When the client has not read the
    # last one yet, sending the rest waits with the loop running: that
    # wait was counted in the piece (in wall and in the thread's CPU time,
    # which is the loop's meanwhile).
    rows = _rows(400)

    def capture(between, pieces, omit):
        return {"time": 1.0, "pid": 7, "rows": [dict(r) for r in rows], "loop": {},
                "lints": []}

    server = attach.AttachServer(path="/nonexistent/never-bound.sock", capture=capture)
    conn = _SlowReader(wait=0.2)
    try:
        labkit.spawn(server._send_frame, conn).get(timeout=30)
        raw = bytes(conn.out)
    finally:
        conn.close()
    assert conn.waited >= 2
    frame = decode(json.loads(raw[raw.index(b"{"):]))  # (the head went whole into the buffer)
    assert len(frame["rows"]) == len(rows)
    assert frame["served"]["send_ms"] < 100, frame["served"]   # (each wait: 200 ms)
