"""A suspended frame's locals, read without leaving a dict on the frame.

The console and the tracer read the locals of parked greenlets' frames --
what a greenlet waits on (:func:`labkit._park.waiting_on`,
:mod:`tracing.waited`), the references the lost wake-up audit counts. On
CPython 3.10-3.12, ``frame.f_locals`` makes a dict of the frame's locals and
caches it on the frame for as long as the frame lives: after a first
console refresh, a dict per parked frame that the cyclic collector tracks
and keeps (20,000 of them at 10,000 greenlets parked two frames deep,
collected young, then in generation 1, ~10 ms a pass in the attached
target, and enough to set off a full collection). So:

* 3.11 and 3.12: read the interpreter frame's slots
  (``labkit._lk_trace_py.frame_local`` and ``frame_locals``, the same
  reading as CPython's own ``frame_get_var``); nothing is cached;
* 3.13 and later: ``frame.f_locals`` is a proxy made per read (PEP 667),
  nothing cached either;
* 3.10: ``frame.f_locals``, and its cached dict stays.

Contract: the frame is not running (a parked greenlet's, or the caller's
own outer frames); values are what the frame's variables hold now.
"""
from __future__ import annotations

try:
    from labkit._lk_trace_py import frame_local as _slot, frame_locals as _slots
except ImportError:     # 3.10, 3.13+: f_locals itself caches nothing new (or always did)
    _slot = _slots = None

__all__ = ["local", "locals_of"]


def local(frame, name: str):
    """The value of ``frame``'s local variable ``name``, or None if it is
    unbound or not one of its variables."""
    if _slot is not None:
        return _slot(frame, name)
    return frame.f_locals.get(name)


def locals_of(frame) -> tuple:
    """(``frame``'s bound locals as a mapping, whether that mapping is the
    dict the frame caches). When cached, it holds references to the locals
    too, and anyone may have kept it (``locals()``); when not, it is new
    and only the caller has it."""
    if _slots is not None:
        return _slots(frame)
    mapping = frame.f_locals
    return mapping, type(mapping) is dict     # 3.10: the cached dict; 3.13+: a proxy
