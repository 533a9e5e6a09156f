"""A Python prompt over TCP into the running process (gevent's ``gevent.backdoor``).

    from labkit.backdoor import BackdoorServer
    server = BackdoorServer(("127.0.0.1", 5001), locals={"app": app})
    server.start()                  # then: nc 127.0.0.1 5001  (or telnet)

Each connection gets its own interactive console, run in a greenlet on the
hub: the prompt sees the process live -- its greenlets (``labkit.util.
print_run_info()``), servers, caches -- while everything else keeps running.
A statement that blocks without yielding blocks the whole hub, as any
greenlet would.

**Anyone who can connect runs any code in this process.** So the server
listens on the loopback interface unless given another address, says where
it listens when it starts (on stderr), and warns (RuntimeWarning) when the
address is not a loopback one. There is no authentication: for remote use,
tunnel (``ssh -L``) to a loopback backdoor instead of opening it.

While a statement runs, ``sys.stdout``, ``sys.stderr`` and ``sys.stdin`` are
the connection's; output that other greenlets print meanwhile goes there
too. Each connection starts from its own copy of ``locals`` (the objects
in it are shared); ``banner`` is printed on connect.
"""
from __future__ import annotations

import builtins
import code
import ipaddress
import sys
import warnings

from labkit.server import StreamServer

__all__ = ["BackdoorServer"]

#: where the server listens when given only a port, or nothing
DEFAULT_HOST = "127.0.0.1"


class _Console(code.InteractiveConsole):
    """An interactive console whose input and output are one connection."""

    def __init__(self, stream, namespace: dict):
        super().__init__(namespace)
        self.stream = stream

    def raw_input(self, prompt: str = "") -> str:
        self.write(prompt)
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\r\n")

    def write(self, data: str) -> None:
        self.stream.write(data)
        self.stream.flush()

    def runcode(self, code_object) -> None:
        saved = sys.stdin, sys.stdout, sys.stderr
        sys.stdin = sys.stdout = sys.stderr = self.stream
        try:
            super().runcode(code_object)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
            if not self.stream.closed:   # quit() closes "stdin": our stream
                self.stream.flush()


class BackdoorServer(StreamServer):
    """``BackdoorServer(listener=("127.0.0.1", 0), locals=None, banner=None)``:
    a StreamServer whose every connection is a Python prompt (see the
    module docstring for what that means for safety)."""

    def __init__(self, listener=(DEFAULT_HOST, 0), locals=None, banner=None, **server_args):
        if isinstance(listener, int):
            listener = (DEFAULT_HOST, listener)
        super().__init__(listener, **server_args)
        self.locals = locals if locals is not None else {"__name__": "__console__"}
        self.banner = banner

    def start(self) -> None:
        super().start()
        host, port = self.address[:2]
        if not _is_loopback(host):
            warnings.warn(
                f"labkit backdoor listening on {host}:{port}, which is not a loopback "
                "address: anyone who can connect runs code in this process",
                RuntimeWarning, stacklevel=2)
        print(f"labkit backdoor on {host}:{port} -- a Python prompt into this process"
              f"{'' if _is_loopback(host) else ' (NOT loopback only)'}", file=sys.stderr)

    def handle(self, sock, address) -> None:
        stream = sock.makefile("rw", encoding="utf-8", errors="replace", newline="\n")
        namespace = dict(self.locals)
        # The module, not its dict (what exec would add): locals() stays readable.
        namespace.setdefault("__builtins__", builtins)
        console = _Console(stream, namespace)
        banner = self.banner if self.banner is not None else (
            f"labkit backdoor, Python {sys.version.split()[0]}; "
            f"labkit.util.print_run_info() shows the greenlets")
        try:
            console.interact(banner=banner, exitmsg="")
        except (EOFError, OSError, SystemExit):
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"
