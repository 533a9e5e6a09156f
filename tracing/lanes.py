"""The two lanes of a trace that are not greenlets: the hub's and the poll's.

Named here, below the model (tracing/model.py) and the views that draw or
export it (plot, export), so that each of them can name these lanes without
importing another: the model uses the views for ``Trace.timeline()`` and
``Trace.to_perfetto()``, so the views must not import the model.
"""

#: The hub running ready callbacks or dispatching fired events.
HUB = "hub"
#: The loop waiting in lk_poll.
POLL = "poll"
