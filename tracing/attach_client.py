"""The terminal side of ``python -m labkit console PID``: where a process's
console is, and a connection to it (tracing/attach.py has the process side
and the command).

- :func:`socket_path`, :func:`token_path`: where process PID serves (in
  :func:`labkit.console.socket_dir`, a directory only this user can enter);
- :func:`loopback_address`: what the TCP transport may listen on or connect
  to (loopback only);
- :class:`AttachClient`: plain blocking sockets, no hub needed; asks for
  ``hello`` and ``frame``, the only requests there are;
- :func:`load_record`: the frames a ``--record`` file holds.

The wire format: one JSON object per line each way (:func:`wire_line`).
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket as _stdlib_socket

from labkit.console import socket_dir

__all__ = ["socket_path", "token_path", "loopback_address", "AttachClient", "load_record",
           "wire_line", "decode", "record_header", "RECORD_HEADER"]


def wire_line(obj) -> bytes:
    """``obj`` as one line of the console's wire format (JSON and a newline)."""
    return (json.dumps(obj) + "\n").encode()


def socket_path(pid: int) -> str:
    """The socket of the labkit process ``pid`` (this user's)."""
    return os.path.join(socket_dir(), f"console-{int(pid)}.sock")


def token_path(pid: int) -> str:
    """Where the process ``pid`` serving over TCP writes its address and
    token (this user's; next to where its socket would be)."""
    return os.path.join(socket_dir(), f"console-{int(pid)}.token")


def loopback_address(tcp, argument: str = "tcp") -> tuple[str, int]:
    """``(host, port)`` for ``tcp``: True (127.0.0.1, a free port), a port,
    ``"host:port"``, ``"host"`` or ``(host, port)``. ValueError naming
    ``argument`` unless the host is a loopback address: the console is
    never served to the network."""
    if tcp is True:
        host, port = "127.0.0.1", 0
    elif isinstance(tcp, int) and not isinstance(tcp, bool):
        host, port = "127.0.0.1", tcp
    elif isinstance(tcp, str):
        host, _, port_text = tcp.rpartition(":") if tcp.count(":") == 1 else (tcp, "", "0")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{argument}: port {port_text!r} is not a number") from None
    elif isinstance(tcp, tuple) and len(tcp) == 2:
        host, port = tcp
    else:
        raise TypeError(f"{argument} must be True, a port, 'host:port' or (host, port), "
                        f"not {tcp!r}")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except (ValueError, AttributeError):
        loopback = False
    if not loopback:
        raise ValueError(f"{argument}: {host!r} is not a loopback address; the console "
                         "serves 127.0.0.1 (or ::1) only, never the network")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{argument}: port must be an int in 0..65535, not {port!r}")
    return host.strip("[]"), port




class AttachClient:
    """A connection to the console of process ``pid`` (or socket ``path``).

    Over the Unix socket, unless ``token_file`` is given or the process
    serves over TCP only (its :func:`token_path` exists and its socket does
    not): then to the loopback address in the token file, sending the token
    with every request. Plain blocking sockets: the terminal side needs no
    hub. Raises FileNotFoundError with a hint when there is no such console,
    PermissionError when the process refuses us, ValueError for a token
    file that is not one or names a non-loopback address."""

    def __init__(self, pid: int | None = None, path: str | None = None,
                 timeout: float = 5.0, token_file: str | None = None):
        if path is None and token_file is None:
            if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
                raise ValueError(f"pid must be a positive int, not {pid!r}")
            path = socket_path(pid)
            if not os.path.exists(path) and os.path.exists(token_path(pid)):
                token_file = token_path(pid)
        self.pid = pid
        self._token = None
        if token_file is not None:
            self.path = os.fspath(token_file)
            sock = self._connect_tcp(self.path, timeout)
        else:
            self.path = path
            sock = self._connect_unix(path, timeout)
        self._sock = sock
        self._file = sock.makefile("rb")

    def _connect_unix(self, path, timeout):
        sock = _stdlib_socket.socket(_stdlib_socket.AF_UNIX, _stdlib_socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            stale = " (the socket is there, but nobody serves it)" \
                if isinstance(exc, ConnectionRefusedError) else ""
            raise FileNotFoundError(
                f"no labkit console at {path}{stale}: is process {self.pid} running labkit "
                "with LABKIT_CONSOLE=1 (or labkit.console.serve()), as this user?") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_tcp(self, token_file, timeout):
        try:
            with open(token_file, encoding="utf-8") as f:
                info = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"no labkit console token file at {token_file}") from None
        except ValueError:
            info = None
        if not isinstance(info, dict) or info.get("labkit") != "console" \
                or not isinstance(info.get("token"), str):
            raise ValueError(f"token_file: {token_file} is not a labkit console token file")
        # never send the token anywhere but this machine's loopback
        host, port = loopback_address((info.get("host"), info.get("port")), "token_file")
        self._token = info["token"]
        try:
            return _stdlib_socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError:
            raise FileNotFoundError(
                f"no labkit console at {host}:{port} ({token_file} is there, but nobody "
                "serves it)") from None

    def request(self, op: str) -> dict:
        message = {"op": op} if self._token is None else {"op": op, "token": self._token}
        try:
            try:
                self._sock.sendall(wire_line(message))
            except (BrokenPipeError, ConnectionResetError):
                pass   # a refusal comes at once, then the close: read it
            line = self._file.readline()
        except TimeoutError:
            raise TimeoutError(
                f"process {self.pid or self.path} did not answer: its hub is not "
                "running (the main thread is blocked outside labkit, or busy)") from None
        if not line:
            raise ConnectionError("the process closed the connection")
        answer = decode(json.loads(line))
        if "error" in answer:
            if answer["error"].startswith("refused"):
                raise PermissionError(answer["error"])
            raise RuntimeError(answer["error"])
        return answer

    def frame(self) -> dict:
        return self.request("frame")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def decode(answer: dict) -> dict:
    """An answer as the server sent it -> as :meth:`AttachClient.request`
    returns it: a frame's rows, sent as lists under one ``"columns"`` list
    (tracing.attach.AttachServer._send_frame), made dicts again. Changes
    ``answer`` and returns it."""
    if isinstance(answer, dict) and isinstance(answer.get("columns"), list) \
            and isinstance(answer.get("rows"), list):
        columns = answer.pop("columns")
        answer["rows"] = [dict(zip(columns, row)) if isinstance(row, list) else row
                          for row in answer["rows"]]
    return answer


RECORD_HEADER = "labkit-console-record"


def record_header(pid, group: bool = False) -> dict:
    """The first line of a ``--record`` file (``group``: of a master's workers)."""
    return {"format": RECORD_HEADER, "version": 1, "pid": pid, "group": group}


def load_record(path) -> list[dict]:
    """The frames a ``--record`` file holds, oldest first (of a master: its
    group frames, ``kind == "group"``, see tracing.attach_group)."""
    with open(path) as f:
        try:
            header = json.loads(f.readline() or "null")
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != RECORD_HEADER:
            raise ValueError(f"{path} is not a labkit console record")
        return [json.loads(line) for line in f if line.strip()]


