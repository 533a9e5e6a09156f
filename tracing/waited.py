"""What a parked greenlet waits on: the labkit object (an Event, a Queue, a
lock) or the greenlet a join waits for, read from its suspended frames;
and who holds a lock. The lost wake-up lint (:mod:`tracing.lost_wakeup`)
asks it for every parked row, and the console's wait-for graph
(:mod:`tracing.frames`) asks it too: one home.

    waited_object(g) -> (object or None, whether the wait has a timer)
    holder_of(obj) -> greenlet or None

Call from the hub's thread: it reads greenlets' frames.
"""
from __future__ import annotations

import os

from greenlet import greenlet as _raw_greenlet

import labkit.hub as _lk_hub
import labkit.lock as _lk_lock
from labkit._frame_locals import local
from labkit._longlived import LongLivedDict

__all__ = ["waited_object", "holder_of"]

_PRIMITIVE_MODULES = ("labkit.event", "labkit.lock", "labkit.queue", "labkit.threading",
                      "labkit._twosided", "labkit._lines", "labkit._park", "labkit.pool")
_NOT_THE_OBJECT = ("Waiter", "Ticket", "_ThreadsafeWake", "Hub")
_LABKIT_DIR = os.path.dirname(os.path.abspath(_lk_hub.__file__)) + os.sep


def _is_primitive(obj) -> bool:
    cls = type(obj)
    return cls.__module__ in _PRIMITIVE_MODULES and cls.__name__ not in _NOT_THE_OBJECT


def waited_object(g):
    """(the labkit object ``g`` is parked on, whether the wait has a timer),
    read from its suspended frames: the innermost ``self`` or ``obj`` that
    is a labkit primitive (an Event, a Queue, a lock) or the greenlet a join
    waits for. (The console's wait-for graph asks it too: one home.)
    Remembered per greenlet while it stays parked at the same place (see
    ``_waited_cache``): a console asks for every parked row each refresh."""
    if g.gr_frame is None:
        return None, False
    return _waited_object_cached(g)


def _waited(g) -> tuple:
    """:func:`waited_object`, plus where it was read: (object, timed, how
    many frames out from the innermost, the local's name)."""
    frame = g.gr_frame
    timed = False
    depth = 0
    while frame is not None and depth < 12:
        if frame.f_code.co_filename.startswith(_LABKIT_DIR):
            timeout = local(frame, "timeout")
            if timeout is not None and not isinstance(timeout, bool):
                timed = True
            obj = local(frame, "obj")
            if isinstance(obj, _raw_greenlet) and frame.f_code.co_name == "_wait_on":
                return obj, timed, depth, "obj"
        obj = local(frame, "self")
        if obj is not None and obj is not g and _is_primitive(obj):
            # An RLock waits on a lock of its own: the RLock is what the
            # caller waits on (and it knows its holder).
            outer = frame.f_back
            out = depth + 1
            for _ in range(4):   # past the lock's own methods calling each other
                if outer is None or local(outer, "self") is not obj:
                    break
                outer = outer.f_back
                out += 1
            mine = local(outer, "self") if outer is not None else None
            if isinstance(mine, _lk_lock.RLock):
                return mine, timed, out, "self"
            return obj, timed, depth, "self"
        frame = frame.f_back
        depth += 1
    return None, timed, -1, ""


def holder_of(obj):
    """The greenlet holding ``obj``, if it is a lock that knows its holder
    (:class:`labkit.lock.RLock` and the patched ``threading.RLock``: their
    ``owner``), else None: a Semaphore or a plain Lock counts permits, not
    holders."""
    return obj.owner if isinstance(obj, _lk_lock.RLock) else None


#: id(greenlet) -> (id(frame), f_lasti, id(code), id(object) or 0, id(its
#: type), timed, depth, name): a greenlet parked on the same frame waits on
#: the same object -- checked with one local of one frame, since a greenlet
#: id and a frame's address are both reused (a frame freed and another made
#: there, parked at the same instruction, on another object): the local
#: read again must be an object of the same type at the same address, which
#: only the same object can be while that frame holds it. Ints and strings
#: only, so that the collector untracks each entry at its first young
#: collection: with a weak reference (and a nested key tuple) in it, every
#: parked greenlet a console refresh described left three long-lived
#: tracked objects, towards the full collection they set off.
_waited_cache: dict = LongLivedDict()


def _waited_object_cached(g):
    frame = g.gr_frame
    cached = _waited_cache.get(id(g))
    if cached is not None and cached[0] == id(frame) and cached[1] == frame.f_lasti \
            and cached[2] == id(frame.f_code):
        if not cached[3]:
            return None, cached[5]
        for _ in range(cached[6]):
            frame = frame.f_back
            if frame is None:
                break
        if frame is not None:
            obj = local(frame, cached[7])
            if id(obj) == cached[3] and id(type(obj)) == cached[4]:
                return obj, cached[5]
        obj = None
    frame = g.gr_frame
    obj, timed, depth, name = _waited(g)
    if len(_waited_cache) > 100_000:
        _waited_cache.clear()
    _waited_cache[id(g)] = (id(frame), frame.f_lasti, id(frame.f_code),
                            0 if obj is None else id(obj), id(type(obj)), timed, depth, name)
    return obj, timed
