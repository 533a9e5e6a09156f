"""The lanes of a trace: the two that are not greenlets (the hub's and the
poll's), the names of the greenlets' lanes, and which lane a block belongs to.

Named here, below the model (tracing/model.py) and the views that draw or
export it (plot, export), so that each of them can name these lanes without
importing another: the model uses the views for ``Trace.timeline()`` and
``Trace.to_perfetto()``, so the views must not import the model.
"""
import re

#: The hub running ready callbacks or dispatching fired events.
HUB = "hub"
#: The loop waiting in lk_poll.
POLL = "poll"

#: labkit's (and gevent's) name for a Greenlet nobody named.
_DEFAULT_NAME = re.compile(r"Greenlet-(\d+)")


def is_default_name(name: str) -> bool:
    """True for "Greenlet-N", the name of a Greenlet nobody named."""
    return _DEFAULT_NAME.fullmatch(name) is not None


def lane_name(name: str | None, function: str | None, cell: str | None = None) -> str | None:
    """The name a trace shows for a greenlet.

    ``name`` if someone chose it; for a default "Greenlet-N" (or none), the
    function it runs, numbered as its Greenlet was: "work #3" (a nested
    function without its "outer.<locals>." path). ``cell``: "In[7]", the
    notebook cell that spawned it, added as " (In[7])". Here, below the
    recorder and the model, so that both name greenlets the same way.
    """
    if not function or function == "None" or (function.startswith("<")
                                               and function != "<lambda>"):
        return name   # no function name to show, only a repr
    default = _DEFAULT_NAME.fullmatch(name) if name else None
    if name and default is None and name != function:
        return name
    function = function.rpartition("<locals>.")[2]   # "worker", not "main.<locals>.worker"
    label = f"{function} #{default.group(1)}" if default else function
    return f"{label} ({cell})" if cell else label


def blocking_lane(block, running: dict, lanes) -> tuple:
    """The lane a block is drawn on: the greenlet that ran in its middle (the
    one that held the loop), else the lane named like ``block.greenlet``,
    else the hub's. ``running``: (lane name, key) -> [(start, end), ...] of
    running slices; ``lanes``: the (name, key) lanes there are."""
    middle = block.start + block.duration / 2
    for lane, spans in running.items():
        if lane[0] not in (POLL, HUB) and any(s <= middle <= e for s, e in spans):
            return lane
    for lane in lanes:
        if lane[0] == block.greenlet:
            return lane
    return (HUB, -1)
