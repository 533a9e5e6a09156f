"""The two lanes of a trace that are not greenlets (the hub's and the poll's),
and which lane a block belongs to.

Named here, below the model (tracing/model.py) and the views that draw or
export it (plot, export), so that each of them can name these lanes without
importing another: the model uses the views for ``Trace.timeline()`` and
``Trace.to_perfetto()``, so the views must not import the model.
"""

#: The hub running ready callbacks or dispatching fired events.
HUB = "hub"
#: The loop waiting in lk_poll.
POLL = "poll"


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
