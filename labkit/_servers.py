"""``labkit.servers()``: the servers still listening, and who holds a port.

The notebook mistake this answers: a cell starts a server on a fixed port;
re-running the cell fails with "Address already in use", because the first
server is still serving -- and nothing refers to it any more. ``servers()``
finds it (it asks the garbage collector for labkit's servers that are not
closed: nothing is registered, and the question is asked at a prompt, not
in a hot path), and :func:`address_in_use_note` turns the bare EADDRINUSE
into a sentence naming the server and how to stop it. In a kernel,
labkit.jupyter adds that note to the traceback.
"""
from __future__ import annotations

import errno
import gc
import sys

__all__ = ["servers", "address_in_use_note"]


def servers() -> list:
    """Every labkit server (StreamServer, DatagramServer, WSGIServer ...) whose
    socket is open, oldest first as far as the collector knows. Stop one
    with ``labkit.servers()[i].stop()``."""
    module = sys.modules.get("labkit.server")
    if module is None:
        return []
    base = module._BaseServer
    # type(obj), not isinstance(obj, ...): the collector also holds objects
    # whose __class__ lookup raises -- a weakref.proxy to a dead object raises
    # ReferenceError -- and one of those must not hide every server.
    return [obj for obj in gc.get_objects()
            if issubclass(type(obj), base) and obj.socket is not None and not obj.closed]


def address_in_use_note(exc: BaseException) -> str | None:
    """For an EADDRINUSE raised while a labkit server bound its address: a
    note naming the live labkit server that holds that port, and how to stop
    it; None for any other error, or when no labkit server holds the port."""
    if not isinstance(exc, OSError) or exc.errno != errno.EADDRINUSE:
        return None
    module = sys.modules.get("labkit.server")
    if module is None:
        return None
    binding = _server_in_traceback(exc.__traceback__, module._BaseServer)
    if binding is None or not isinstance(binding.address, tuple) or len(binding.address) < 2:
        return None
    port = binding.address[1]
    live = servers()
    for index, server in enumerate(live):
        if server is not binding and _port_of(server) == port:
            return (f"port {port} is held by {server!r}, a labkit server that is still "
                    f"serving (from an earlier run of this cell?). Stop it with "
                    f"labkit.servers()[{index}].stop(), then run this again; "
                    f"labkit.servers() lists the servers still listening.")
    return None


def _server_in_traceback(tb, base):
    found = None
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if issubclass(type(candidate), base):
            found = candidate
        tb = tb.tb_next
    return found


def _port_of(server):
    try:
        return server.socket.getsockname()[1]
    except (OSError, AttributeError, IndexError, TypeError):
        return None
