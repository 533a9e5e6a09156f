"""What the hub's greenlets are doing now, and where code is: the tracer's introspection.

    live_greenlets()        the hub's greenlets that are not dead
    run_info()              what each does: its state, what it waits on, the user's line
    format_run_info()       the same as text (``%labkit_status`` prints it)
    greenlet_name(g)        the name shown for a greenlet
    cell_location(file, n)  "In[5], line 3" for code typed in a cell, else "file.py:3"

These read live objects -- the garbage collector's list, greenlets' frames,
IPython's cell names -- not a recording. The magics (``%labkit_status``, the
blocking reports) and the dashboard (its table, the names of its lanes) use
them; neither imports the other.
"""
from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field

from greenlet import getcurrent, greenlet

import labkit.hub as _lk_hub
from labkit._park import waiting_on
import labkit.jupyter

from tracing.recorder import active

_LABKIT_DIR = os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep
_TRACING_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: labkit's and the tracer's own files: a frame in them is not the user's line.
INTERNAL_DIRS = (_LABKIT_DIR, _TRACING_DIR)


# -- what is alive: the status report -----------------------------------------

@dataclass
class GreenletInfo:
    """One live greenlet of the hub, as :func:`run_info` sees it."""
    name: str
    state: str              #: "running", "waiting", "ready" or "not started"
    waits_on: str           #: "sleep(0.05)", "fd 7 read", "join", "Event.wait" ...
    where: str              #: "file.py:12 in func": the user's line it waits at
    stack: list = field(default_factory=list)   #: "file:line in func", outermost first
    greenlet: object = field(default=None, repr=False)

    def __str__(self) -> str:
        text = f"{self.name:<24} {self.state:<11}"
        if self.waits_on:
            text += f" {self.waits_on:<22}"
        return (text + f" at {self.where}" if self.where else text).rstrip()


def live_greenlets(hub=None) -> list:
    """The greenlets the hub runs that are not dead, in order of name.

    Found by scanning the garbage collector's objects for greenlets whose
    parent is ``hub`` (default: this thread's): a full scan, milliseconds in
    a big process, so this is for status reports, not for hot paths. A
    greenlet that nothing refers to any more can still show up until the
    collector frees it; it is not dead, only unreachable.
    """
    hub = hub if hub is not None else _lk_hub.get_hub()
    found = [obj for obj in gc.get_objects()
             if isinstance(obj, greenlet) and obj is not hub
             and obj.parent is hub and not obj.dead]
    return sorted(found, key=_natural_key)


def run_info(hub=None) -> list[GreenletInfo]:
    """What each live greenlet of ``hub`` is doing (see :class:`GreenletInfo`).

    Call from the hub's thread (another thread's greenlets' frames change
    under it).
    """
    hub = hub if hub is not None else _lk_hub.get_hub()
    # sleep(0) queues the greenlet's bound switch (maybe inside a Callback):
    # the greenlets those belong to are ready to run, not waiting.
    ready = {id(getattr(getattr(cb, "callback", cb), "__self__", None))
             for cb in hub.ready_callbacks()}
    return [_describe(g, ready) for g in live_greenlets(hub)]


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


def _natural_key(g):
    name = greenlet_name(g)
    return [int(part) if part.isdigit() else part
            for part in _split_digits(name)]


def _split_digits(text: str) -> list[str]:
    parts, current = [], ""
    for ch in text:
        if current and ch.isdigit() != current[-1].isdigit():
            parts.append(current)
            current = ""
        current += ch
    return parts + [current] if current else parts


def greenlet_name(g) -> str:
    """Its ``name`` (labkit and gevent Greenlets), else its function's
    qualified name, else "greenlet-0x..." (its id)."""
    name = getattr(g, "name", None)
    if isinstance(name, str):
        return name
    run = getattr(g, "run", None)
    return getattr(run, "__qualname__", None) or f"greenlet-{id(g):#x}"


def _describe(g, ready_ids: set) -> GreenletInfo:
    frames = []
    frame = g.gr_frame
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()   # outermost first
    if g is getcurrent():
        state = "running"
    elif not frames:
        state = "not started"
    elif id(g) in ready_ids:
        state = "ready"
    else:
        state = "waiting"
    stack = [f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}"
             for f in frames]
    user = None
    for f in reversed(frames):
        if not f.f_code.co_filename.startswith(INTERNAL_DIRS):
            user = f
            break
    if user is None and frames:
        # labkit's own greenlets (a server's accept loop): blame the
        # outermost frame below Greenlet.run, the loop that waits.
        user = frames[1] if len(frames) > 1 else frames[0]
    where = (f"{os.path.basename(user.f_code.co_filename)}:{user.f_lineno} "
             f"in {user.f_code.co_name}") if user is not None else ""
    waits_on = _waits_on(g, frames, user) if state in ("waiting", "ready") else ""
    return GreenletInfo(name=greenlet_name(g), state=state, waits_on=waits_on, where=where,
                        stack=stack, greenlet=g)


def _waits_on(g, frames: list, user) -> str:
    """What the greenlet is parked on: the labkit call the user's code made
    ("socket.accept"), and what labkit says it waits for ("fd 7 read")."""
    detail = waiting_on(g) or ""
    # The labkit call the user's code made: the frame right inside ``user``.
    api = ""
    if user is not None and user in frames:
        index = frames.index(user)
        if index + 1 < len(frames):
            inner = frames[index + 1]
            api = _qualname(inner)
    if api and detail:
        if detail.startswith(api):
            return detail        # "Queue.get" says it all
        if api.startswith(detail):
            return api           # "Event.wait", not "Event.wait: Event"
        return f"{api}: {detail}"
    return api or detail or "the hub"


def _qualname(frame) -> str:
    """The qualified name of the function ``frame`` runs: "socket.accept", not "accept".

    Python 3.11+ keeps it on the code object (``co_qualname``). Python 3.10 does
    not, so it is derived there for methods: the frame's first argument (``self``,
    or ``cls`` of a classmethod) gives the class, and the first class of its MRO
    whose namespace holds a function with this very code object is the one that
    defines it. Anything else (a module-level function, a static method, a nested
    function) gets ``co_name``, which for a module-level function is its
    qualified name already.
    """
    code = frame.f_code
    qualname = getattr(code, "co_qualname", None)
    if qualname is not None:
        return qualname
    if code.co_argcount:
        first = frame.f_locals.get(code.co_varnames[0])
        for klass in (first if isinstance(first, type) else type(first)).__mro__:
            attr = klass.__dict__.get(code.co_name)
            if getattr(getattr(attr, "__func__", attr), "__code__", None) is code:
                return f"{klass.__qualname__}.{code.co_name}"
    return code.co_name


# -- where code is ----------------------------------------------------------------

def cell_location(file: str, line: int) -> str:
    """"In[5], line 3" for code typed in a notebook cell, else "file.py:3"."""
    try:
        from IPython import get_ipython
        ipython = get_ipython()
        label = ipython.compile.format_code_name(file) if ipython is not None else None
    except Exception:
        label = None
    if label:
        return f"{label[1]}, line {line}"
    return f"{os.path.basename(file)}:{line}"
