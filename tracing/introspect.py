"""What the hub's greenlets are doing now, and where code is: the tracer's introspection.

    live_greenlets()        the hub's greenlets that are not dead
    run_info()              what each does: its state, what it waits on, the user's line
    format_run_info()       the same as text (``%labkit_status`` prints it)
    greenlet_name(g)        the name shown for a greenlet
    cell_location(file, n)  "In[5], line 3" for code typed in a cell, else "file.py:3"
    ipython_shell()         the running IPython shell, or None (IPython is never imported)

These read live objects -- the garbage collector's list, greenlets' frames,
IPython's cell names -- not a recording. The magics (``%labkit_status``, the
blocking reports) and the dashboard (its table, the names of its lanes) use
them; neither imports the other. The greenlet half is labkit's own
(:mod:`labkit.util`, gevent's ``format_run_info`` needs it without the
tracer); this module adds the tracer's files to what counts as internal,
the hub's status line, and IPython's cell names.
"""
from __future__ import annotations

import os
import sys

import labkit.hub as _lk_hub
import labkit.jupyter
from labkit.util import GreenletInfo, greenlet_name, live_greenlets  # noqa: F401 (re-exported)
from labkit.util import run_info as _core_run_info

from tracing.recorder import active

_LABKIT_DIR = os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep
_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: labkit's and the tracer's own files: a frame in them is not the user's line.
INTERNAL_DIRS = (_LABKIT_DIR, _TRACING_DIR)


# -- what is alive: the status report -----------------------------------------

def run_info(hub=None) -> list[GreenletInfo]:
    """What each live greenlet of ``hub`` is doing (:func:`labkit.util.run_info`,
    with the tracer's own files counted as internal too). Call from the
    hub's thread."""
    return _core_run_info(hub, INTERNAL_DIRS)


def format_run_info(hub=None, stacks: bool = False, names=()) -> str:
    """The status report as text: the hub's counters, then one line per
    greenlet (and its stack with ``stacks``). ``names``: only these."""
    hub = hub if hub is not None else _lk_hub.get_hub()
    infos = run_info(hub)
    if names:
        infos = [info for info in infos if info.name in names]
    lines = [_hub_line(hub), ""]
    if not infos:
        lines.append("no greenlets alive" if not names else "no such greenlet alive")
    for info in infos:
        lines.append(str(info))
        if stacks:
            lines.extend(f"    {frame}" for frame in info.stack or ["(not started)"])
    return "\n".join(lines)


def print_run_info(hub=None, stacks: bool = False, file=None) -> None:
    """Print :func:`format_run_info` (gevent's ``print_run_info``)."""
    print(format_run_info(hub, stacks), file=file or sys.stdout)


def _hub_line(hub) -> str:
    loop = hub.loop
    if loop.closed:
        return "hub: its loop is closed"
    parts = [f"hub: {loop.backend_name} loop", f"{hub.ready_count} ready callbacks",
             f"{loop.active_timers} timers", f"{loop.io_waiters} fd waits"]
    guest = labkit.jupyter.active()
    if guest is not None and guest.hub is hub:
        parts.append(f"guest of the kernel ({guest.mode} mode, {guest.ticks} ticks)")
    parts.append("tracing on" if active() is not None else "tracing off")
    return ", ".join(parts)


def cell_location(file: str, line: int) -> str:
    """"In[5], line 3" for code typed in a notebook cell, else "file.py:3"."""
    if "IPython" not in sys.modules:
        # No IPython, no cells. Importing it to ask would stall the caller
        # for ~40 ms (the first console frame of a plain script did).
        return f"{os.path.basename(file)}:{line}"
    try:
        ipython = ipython_shell()
        label = ipython.compile.format_code_name(file) if ipython is not None else None
    except Exception:
        label = None
    if label:
        return f"{label[1]}, line {line}"
    return f"{os.path.basename(file)}:{line}"


def ipython_shell():
    """The running IPython shell, or None -- without importing IPython
    (a plain script must not pay for that import to name a line)."""
    module = sys.modules.get("IPython")
    if module is None:
        return None
    try:
        return module.get_ipython()
    except Exception:
        return None
