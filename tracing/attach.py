"""Attach to a running labkit process from a terminal: ``python -m labkit console PID``.

Shows, in the terminal, what the console widget shows in a notebook: the
greenlet table, the lints and a timeline of the last seconds, refreshed a
few times a second (drawn with rich). ``--once`` prints one frame and exits;
``--record FILE`` also writes every frame received to FILE (JSON lines, see
:func:`load_record`), and ``--perfetto FILE`` writes them at the end as a
trace ui.perfetto.dev opens (:func:`tracing.frames.to_perfetto`). A
process that serves no console but whose children do (a gunicorn master)
shows all its workers at once (tracing/attach_group.py).

This module is the process side (:class:`AttachServer`, :func:`serve`)
and the command (:func:`main`); the connection is tracing/attach_client.py,
the drawing tracing/attach_view.py, the sending of a frame in pieces
tracing/attach_send.py (their names are importable from here).

The process side is opt-in: ``LABKIT_CONSOLE=1`` in its environment (read
at ``import labkit``) or ``labkit.console.serve()``. Either calls
:func:`serve` here (the tracer's ``labkit.console`` plug-in)::

    target process (its hub thread)               python -m labkit console PID
    -------------------------------               ----------------------------
    acceptor greenlet: accept()           <-----  connect(<dir>/console-PID.sock)
      peer's uid (SO_PEERCRED) == ours?
    connection greenlet: read a request   <-----  {"op": "frame"}\\n
      capture a frame (tracing.frames)
      encode+send it in pieces, sleep(0) between --->  one JSON line; draw it
      ...                                         every --interval s: ask again

Security, and what this is not:

- The socket is a Unix-domain socket in a directory only the user can
  enter (mode 0700, owned by the user; refused if it exists with anything
  else) and the socket itself is mode 0600. A peer whose uid (as the
  kernel reports it, SO_PEERCRED) is not the process's own is refused even
  if it got through the file modes (root, or a directory made public).
  There is no network listener by default.
- Over TCP, opt-in (``LABKIT_CONSOLE=tcp``, ``serve(tcp=True)``): where a
  Unix socket will not do, the process listens on a loopback address only
  (127.0.0.1 unless told another loopback address; anything else is a
  ValueError) and every request must carry a random token (256 bits from
  :mod:`secrets`, compared with :func:`hmac.compare_digest`). The token
  and the port are written to ``console-<pid>.token`` (mode 0600) next to
  where the socket would be, where only this user can read them and where
  ``python -m labkit console PID`` finds them. A request with a wrong or
  missing token gets an error and its connection is closed; others are
  served on. Any local user can reach the port: the token is what keeps
  them out, so keep the file private (it is, unless its directory is made
  public).
- Read-only: the only requests are ``hello`` and ``frame``; a request is a
  JSON object read with :func:`json.loads` and never evaluated. Running
  code in the target is the backdoor's job (:mod:`labkit.backdoor`),
  separately and explicitly.

Cost to the target: serving runs in greenlets of the target's hub, so it
never runs while a user greenlet does. One refresh pauses the target for
the pieces of the capture (one :func:`tracing.frames.capture`: the
snapshot, the lints and the rows, each yielding between pieces), then for
the head, then for each batch of rows encoded and sent (at most
:data:`tracing.attach_send.PIECE_NS` of encoding each), yielding
(``labkit.sleep(0)``) between pieces: the frame is never joined or copied
whole (tracing/attach_send.py). Every piece is timed; the longest is sent
along (``frame["served"]``, the line's last field) and ``python -m labkit
console PID`` shows it. Encoding is not moved to
another thread: the json encoder holds the GIL for a whole call, so the
hub would wait for it all the same (and for the GIL's switch interval).

If the target's hub is not running (its main thread blocked outside
labkit), no answer comes: the client says so after ``--timeout`` seconds.
"""
from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import socket as _stdlib_socket
import struct
import sys
import time

from labkit.console import group_path, socket_dir
from labkit.console import private_dir as _private_dir
from labkit.console import write_private as _write_private
from tracing import attach_group
from tracing import frames as _frames
from tracing.causes import gc_times
# the terminal side, here too under its old names (tracing.attach.AttachClient, ...)
from tracing.attach_client import (AttachClient, load_record, loopback_address, record_header,
                                   socket_path, token_path)
from tracing.attach_client import wire_line as _line
from tracing.attach_send import send_frame
from tracing.attach_view import SORT_KEYS as _SORT_KEYS
from tracing.attach_view import format_loop, render, timeline_lanes

__all__ = ["AttachServer", "serve", "socket_dir", "socket_path", "token_path", "group_path",
           "loopback_address", "sweep_stale_sockets", "peer_uid", "peer_allowed",
           "AttachClient", "load_record", "render", "format_loop", "timeline_lanes", "main"]

#: A request line longer than this closes the connection (requests are tiny).
MAX_REQUEST = 4096
#: The requests served; anything else is answered with an error.
OPS = ("hello", "frame")


def sweep_stale_sockets(directory: str) -> list[str]:
    """Remove the ``console-<pid>.sock`` (and ``.token``, ``.group``) files in
    ``directory`` whose process is gone (one killed by a signal cannot
    remove its own); the removed paths. A live pid keeps its file, whoever
    it is now."""
    removed = []
    for name in os.listdir(directory):
        stem, dot, suffix = name.rpartition(".")
        pid = stem[len("console-"):]
        if not (stem.startswith("console-") and suffix in ("sock", "token", "group") and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
            except FileNotFoundError:
                pass
        except PermissionError:
            pass   # alive, another user's: not ours to judge
    return removed


# -- who is asking ------------------------------------------------------------------

def peer_uid(sock) -> int:
    """The uid of the process at the other end of the Unix socket ``sock``
    (SO_PEERCRED: what the kernel recorded at connect, not what it says)."""
    creds = sock.getsockopt(_stdlib_socket.SOL_SOCKET, _stdlib_socket.SO_PEERCRED,
                            struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def peer_allowed(uid: int, own_uid: int | None = None) -> bool:
    """Whether a peer with ``uid`` may read this process's console: only
    the same user (root is not special: attach as the process's user)."""
    return uid == (os.getuid() if own_uid is None else own_uid)


# -- the process side -----------------------------------------------------------------

class AttachServer:
    """Serves frames on a Unix socket (or a loopback TCP port) from
    greenlets of this thread's hub.

    ``path``: the socket (default :func:`socket_path` of this process); with
    ``tcp``, the token file instead (default :func:`token_path`).
    ``tcp``: serve over TCP on this loopback address (see
    :func:`loopback_address`; ValueError for any other) with a token, not
    on a Unix socket. ``address`` and ``token`` are set by :meth:`start`.
    ``capture``: what makes a frame (default: a :class:`tracing.frames.Capturer`'s,
    which spaces out the lints, without the lost wake-up's heap traversal;
    called with ``between``, ``pieces`` and ``omit`` as
    :func:`tracing.frames.capture` is).
    Create, start and close from the hub's thread. ``stats`` counts what
    was served and the longest pause of the hub measured.
    """

    def __init__(self, path: str | None = None, capture=None, tcp=None):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        self.tcp = tcp not in (None, False)
        #: (host, port) listened on, with tcp (the port is known after start())
        self.address = loopback_address(tcp) if self.tcp else None
        #: what every TCP request must carry (None on a Unix socket)
        self.token = secrets.token_hex(32) if self.tcp else None
        default = token_path if self.tcp else socket_path
        self.path = os.fspath(path) if path is not None else default(os.getpid())
        # No heap traversal in the target: one is a pause of ~1 ms per
        # 10,000 objects, and attaching must not pause it longer than a
        # piece. What only a traversal could decide stays undecided
        # (frame["undecided"]); the in-process Console still decides it.
        self.capture = capture if capture is not None else \
            _frames.Capturer(heap_traversal=False).capture
        self.stats = {"connections": 0, "refused": 0, "frames": 0,
                      "max_pause_ms": 0.0, "last_pause_ms": 0.0}
        self.pid = os.getpid()
        self._listener = None
        self._greenlets: set = set()
        self._hub = None
        self.on_close = None   #: called by close(), after the socket is closed

    @property
    def serving(self) -> bool:
        return self._listener is not None

    def start(self) -> "AttachServer":
        import labkit
        import labkit.socket as lk_socket
        if self.serving:
            return self
        self._hub = labkit.get_hub()
        if self.path in (socket_path(os.getpid()), token_path(os.getpid())):
            _private_dir(os.path.dirname(self.path))
            sweep_stale_sockets(os.path.dirname(self.path))
        if self.tcp:
            listener = self._listen_tcp(lk_socket)
        else:
            listener = self._listen_unix(lk_socket)
        self._listener = listener
        acceptor = labkit.spawn(self._accept_loop, listener)
        acceptor.name = "labkit-console-accept"
        self._greenlets.add(acceptor)
        return self

    def _listen_tcp(self, lk_socket):
        host, port = self.address
        family = lk_socket.AF_INET6 if ":" in host else lk_socket.AF_INET
        listener = lk_socket.socket(family, lk_socket.SOCK_STREAM)
        try:
            listener.bind((host, port))
            listener.listen(8)
            self.address = listener.getsockname()[:2]
            _write_private(self.path, json.dumps({
                "labkit": "console", "pid": os.getpid(), "host": self.address[0],
                "port": self.address[1], "token": self.token}))
        except BaseException:
            listener.close()
            raise
        return listener

    def _listen_unix(self, lk_socket):
        try:
            os.unlink(self.path)   # a stale socket of an earlier process with this pid
        except FileNotFoundError:
            pass
        listener = lk_socket.socket(lk_socket.AF_UNIX, lk_socket.SOCK_STREAM)
        old = os.umask(0o177)      # no moment at which the socket is wider than 0600
        try:
            listener.bind(self.path)
        except BaseException:
            listener.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(8)
        return listener

    def close(self) -> None:
        """Stop serving: close the socket, end every connection, remove the
        file. Idempotent."""
        import labkit
        listener, self._listener = self._listener, None
        if listener is None:
            return
        greenlets, self._greenlets = list(self._greenlets), set()
        if os.getpid() == self.pid:
            labkit.killall(greenlets, block=True, timeout=2)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        listener.close()
        if self.on_close is not None and os.getpid() == self.pid:
            self.on_close()

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's listener without touching
        its file (the parent still serves on it)."""
        listener, self._listener = self._listener, None
        self._greenlets = set()
        if listener is not None:
            listener.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- greenlets of the hub --------------------------------------------------
    def _accept_loop(self, listener) -> None:
        import labkit
        while self._listener is listener:
            try:
                conn, _addr = listener.accept()
            except OSError:
                if self._listener is not listener:
                    return   # closed
                labkit.sleep(0.1)   # EMFILE and the like: try again, do not stop serving
                continue
            self.stats["connections"] += 1
            server = labkit.spawn(self._serve_connection, conn)
            server.name = f"labkit-console-{self.stats['connections']}"
            self._greenlets.add(server)

    def _serve_connection(self, conn) -> None:
        import labkit
        me = labkit.getcurrent()
        try:
            with conn:
                if not self.tcp:
                    uid = peer_uid(conn)
                    if not peer_allowed(uid):
                        self._refuse(conn, f"refused: uid {uid} may not read the "
                                           f"console of a uid {os.getuid()} process")
                        return
                buffer = b""
                while True:
                    while b"\n" not in buffer:
                        if len(buffer) > MAX_REQUEST:
                            return
                        data = conn.recv(MAX_REQUEST)
                        if not data:
                            return
                        buffer += data
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        request = json.loads(line)
                    except ValueError:
                        request = None
                    if self.tcp and not self.token_matches(request):
                        self._refuse(conn, "refused: wrong or missing token (it is in "
                                           f"{self.path}, readable by this user only)")
                        return
                    answer = self._answer(request, line, conn)
                    if answer:
                        conn.sendall(answer)
        except OSError:
            pass   # the client went away
        finally:
            self._greenlets.discard(me)

    def token_matches(self, request) -> bool:
        """Whether ``request`` (a parsed request) carries this server's
        token; compared in constant time, so timing tells nothing about it."""
        given = request.get("token") if isinstance(request, dict) else None
        if not isinstance(given, str) or self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _refuse(self, conn, why: str) -> None:
        self.stats["refused"] += 1
        conn.sendall(_line({"error": why}))

    def _answer(self, request, line: bytes, conn) -> bytes:
        """The answer to ``request`` (``line``, parsed); a frame is sent on
        ``conn`` here, in pieces (:meth:`_send_frame`), and b"" returned."""
        op = request.get("op") if isinstance(request, dict) else None
        if op == "hello":
            return _line({"labkit": "console", "pid": os.getpid(), "ops": list(OPS)})
        if op == "frame":
            self._send_frame(conn)
            return b""
        return _line({"error": f"unknown request {line[:80]!r}; this socket serves "
                               f"read-only data: {', '.join(OPS)}"})

    def _send_frame(self, conn) -> None:
        """Capture a frame and send it as one JSON line, in pieces, yielding
        to the hub between them: :func:`tracing.attach_send.send_frame`."""
        import labkit
        gc_times.acquire()
        try:
            send_frame(conn, self.capture, self.stats, labkit)
        finally:
            gc_times.release()

#: The servers serve() started, by transport ("unix", "tcp"): one of each at most.
_servers: dict = {}
#: The background recording they share (started by the first, stopped with the last).
_recording = None

#: Records in the ring of the background recording :func:`serve` starts
#: (32 bytes each). Frames read it every refresh; records overwritten
#: between two refreshes are counted in ``loop["lost_records"]``.
BACKGROUND_CAPACITY = 1 << 15


def serve(path: str | None = None, tcp=False) -> AttachServer:
    """Serve this process's console (see the module docstring) and return
    the server; a second call for the same transport returns the running
    one. From the hub's thread.

    ``tcp``: serve over TCP on a loopback address with a token instead of
    on a Unix socket (True: 127.0.0.1, a free port; see
    :func:`loopback_address`); ``path`` is then the token file. A Unix and
    a TCP server may run side by side.

    If nothing records yet, this also starts a small background recording
    (:class:`tracing.frames.BackgroundRecording`) for the table's time
    columns, with a blocking monitor at the "never yielded" threshold (so
    that lint names the line where a block began); it steps aside while
    any other trace records, and stops when the last server is closed.

    This is the tracer's ``labkit.console`` plug-in: ``labkit.console.serve()``
    and ``LABKIT_CONSOLE=1`` (or ``=tcp``) call it."""
    global _recording
    transport = "tcp" if tcp not in (None, False) else "unix"
    running = _servers.get(transport)
    if running is not None and running.serving and running.pid == os.getpid():
        return running
    server = AttachServer(path, tcp=tcp if transport == "tcp" else None).start()
    _servers[transport] = server
    server.on_close = _stop_recording_if_unused
    if _recording is None:
        from tracing.lints import NEVER_YIELDED
        _recording = _frames.BackgroundRecording(BACKGROUND_CAPACITY,
                                                 blocking=NEVER_YIELDED).start()
        _frames.capture(with_lints=False)   # the first one scans the heap for older greenlets: now, not on attach
    return server


def _stop_recording_if_unused() -> None:
    global _recording
    if _recording is not None and not any(s.serving for s in _servers.values()):
        recording, _recording = _recording, None
        recording.stop()


def _after_fork_in_child() -> None:
    global _recording
    for server in _servers.values():
        server.forget_after_fork()
    _servers.clear()
    _recording = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_at_exit() -> None:
    for server in _servers.values():
        if server.pid == os.getpid() and server.serving:
            try:
                os.unlink(server.path)
            except OSError:
                pass


import atexit  # noqa: E402 - next to the hook it registers
atexit.register(_close_at_exit)



# -- the command ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Attach to a running labkit process (LABKIT_CONSOLE=1 there): its
    greenlets, lints and timeline, live (--once: one frame; --record FILE).
    A process that serves no console but whose children do (a gunicorn
    master) shows all its workers at once (tracing.attach_group)

    python -m labkit console PID [--once] [--record FILE] [--interval S]
    """
    parser = argparse.ArgumentParser(prog="python -m labkit console",
                                     description=" ".join(main.__doc__.split("\n\n")[0].split()))
    parser.add_argument("pid", type=int, help="the process to attach to")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--record", metavar="FILE", help="also write every frame to FILE "
                        "(of every worker, for a master)")
    parser.add_argument("--perfetto", metavar="FILE",
                        help="at the end, write the frames as a Perfetto (Chrome JSON) "
                             "file: a track per greenlet, its states as slices (for a "
                             "master: one merged file, a process track per worker); "
                             "Perfetto's protobuf if FILE ends in .pftrace")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between refreshes (default 0.5)")
    parser.add_argument("--sort", choices=sorted(_SORT_KEYS), default="busy")
    parser.add_argument("--rows", type=int, default=30, help="table rows shown")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for an answer")
    parser.add_argument("--socket", help="the socket, if not the usual path for PID")
    parser.add_argument("--token-file", metavar="FILE",
                        help="attach over 127.0.0.1 with the address and token in FILE "
                             "(found by itself when PID serves with LABKIT_CONSOLE=tcp)")
    args = parser.parse_args(argv)
    if not args.interval > 0:
        parser.error("--interval must be > 0")
    if not args.timeout > 0:
        parser.error("--timeout must be > 0")
    try:
        from rich.console import Console
    except ImportError:
        print("labkit console: drawing needs rich (pip install 'labkit[console]')",
              file=sys.stderr)
        return 1
    console = Console() if sys.stdout.isatty() else Console(width=120)
    group = args.socket is None and args.token_file is None and attach_group.is_group(args.pid)
    try:
        if group:
            client = attach_group.GroupClient(args.pid, timeout=args.timeout)
        else:
            client = AttachClient(args.pid, path=args.socket, timeout=args.timeout,
                                  token_file=args.token_file)
    except (FileNotFoundError, PermissionError, ConnectionRefusedError, ValueError) as exc:
        print(f"labkit console: {exc}", file=sys.stderr)
        return 1
    # a group's frames hold every worker's: drawn and timed through one flattened frame
    flat = attach_group.flatten if group else (lambda frame: frame)
    draw = attach_group.render_group if group else render
    record = open(args.record, "w") if args.record else None
    history: list[dict] = []
    every: list[dict] | None = [] if args.perfetto else None
    try:
        if record is not None:
            record.write(json.dumps(record_header(args.pid, group)) + "\n")

        def next_frame() -> dict:
            frame = client.frame()
            history.append(flat(frame))
            del history[:-60]   # the timeline's width
            if every is not None:
                every.append(frame)
            if record is not None:
                record.write(json.dumps(frame) + "\n")
                record.flush()
            return frame

        if args.once:
            console.print(draw(next_frame(), history, args.sort, args.rows))
            return 0
        from rich.live import Live
        with Live(draw(next_frame(), history, args.sort, args.rows), console=console,
                  refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(draw(next_frame(), history, args.sort, args.rows))
    except KeyboardInterrupt:
        return 0
    except (TimeoutError, ConnectionError, PermissionError, RuntimeError) as exc:
        print(f"labkit console: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
        if record is not None:
            record.close()
        if every:
            try:
                write_perfetto(every, args.perfetto, group)
            except (ValueError, ImportError) as exc:
                print(f"labkit console: --perfetto: {exc}", file=sys.stderr)


def write_perfetto(frames: list[dict], path, group: bool = False) -> None:
    """Write recorded frames (a group's, for a master) as Perfetto: the
    Chrome JSON, or Perfetto's protobuf when ``path`` ends in ``.pftrace``
    (tracing.merge.save's names; needs the ``perfetto`` package)."""
    from tracing import merge as _merge
    if group:
        attach_group.to_perfetto(frames, path)   # merge.save picks the format
    elif not _merge.is_proto_path(path):
        _frames.to_perfetto(frames, path)
    else:
        import tempfile
        from tracing import export as _export
        with tempfile.TemporaryDirectory(prefix="labkit-frames-") as tmp:
            part = os.path.join(tmp, "frames.json")
            _frames.to_perfetto(frames, part)
            with open(part, encoding="utf-8") as f:
                _export.events_to_proto(json.load(f)["traceEvents"], path)
