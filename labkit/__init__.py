"""labkit: a concurrency lab -- a C event loop, a greenlet hub with gevent's
API, and a tracer -- for Jupyter, the REPL and scripts.

    import labkit

    def worker(name):
        for i in range(3):
            print(name, i)
            labkit.sleep(0)          # let the others run

    labkit.joinall([labkit.spawn(worker, n) for n in "AB"])   # A0 B0 A1 B1 A2 B2

The names below follow gevent, so gevent code and teaching material carry
over with ``s/gevent/labkit/``.
"""
import sys

from greenlet import GreenletExit, getcurrent

from labkit.hub import (
    BlockingSwitchOutError, ConcurrentObjectUseError, Hub, LoopExit, Waiter,
    get_hub, idle, kill, sleep, spawn_raw, wait_read, wait_write,
)
from labkit.timeout import Timeout, with_timeout
from labkit.greenlet import (
    Greenlet, iwait, joinall, killall, spawn, spawn_later, wait,
)
from labkit import config  # noqa: E402 - the settings (gevent.config), a small module

__version__ = "0.1.0"


def servers() -> list:
    """The labkit servers still listening (see labkit._servers): after
    "Address already in use", ``labkit.servers()[i].stop()``."""
    from labkit._servers import servers as live_servers
    return live_servers()


def signal_handler(signum: int, fn, *args, **kwargs):
    """gevent's top-level ``signal_handler``: :func:`labkit.signal.signal_handler`
    (that module is imported on first use, not at ``import labkit``).

    A plain function, not a module ``__getattr__``: CPython does not
    specialise attribute loads on a module that defines ``__getattr__``,
    and ``labkit.sleep(0)`` in a loop then cost 3.5% more instructions."""
    from labkit.signal import signal_handler as install
    return install(signum, fn, *args, **kwargs)


def load_ipython_extension(ipython) -> None:
    """``%load_ext labkit``: run the hub inside the kernel's (or terminal's) loop."""
    from labkit.jupyter import load_ipython_extension as load
    load(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext labkit``: detach the hub from the host loop."""
    from labkit.jupyter import unload_ipython_extension as unload
    unload(ipython)


__all__ = [
    "spawn", "spawn_later", "spawn_raw", "sleep", "idle", "joinall", "killall",
    "kill", "wait", "iwait", "getcurrent", "get_hub", "Greenlet",
    "GreenletExit", "Timeout", "with_timeout", "LoopExit", "Hub", "Waiter",
    "BlockingSwitchOutError", "ConcurrentObjectUseError", "wait_read",
    "wait_write", "servers",
]


# In a Jupyter kernel, greenlets run between cells only once the hub is a
# guest of the kernel's loop (%load_ext labkit). A cell that spawns before
# that gets it done for it, with a note (labkit.jupyter).
if "ipykernel" in sys.modules:
    from labkit.jupyter import attach_when_work_waits as _attach_when_work_waits
    _attach_when_work_waits()

# LABKIT_CONSOLE=1: serve the console that `python -m labkit console PID`
# attaches to (labkit.console); read-only, on a Unix socket of this user's.
from os import environ as _environ  # noqa: E402 - not `import os`: labkit.os is a module
if _environ.get("LABKIT_CONSOLE", "") not in ("", "0"):
    from labkit.console import serve_if_requested as _serve_if_requested
    _serve_if_requested()
