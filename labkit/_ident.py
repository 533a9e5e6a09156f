"""Small integer identities for live objects: gevent's ``minimal_ident``
(the hub's half: each hub numbers its greenlets; hubs are numbered too).

An object gets the smallest number not held by a live object; the number
returns to the pool when the object is garbage-collected. Weak references
do the bookkeeping, so numbering costs nothing until someone asks for a
number (a greenlet's default ``name``, a status report).
"""
from __future__ import annotations

import heapq
import weakref

__all__ = ["IdentRegistry"]


class IdentRegistry:
    """Maps weakly referenceable objects to small non-negative integers;
    no two live objects share one."""

    def __init__(self):
        #: id(obj) -> (ident, weak reference whose callback frees the ident)
        self._registry: dict = {}
        #: idents freed by dead objects, smallest first
        self._available: list = []

    def get_ident(self, obj) -> int:
        entry = self._registry.get(id(obj))
        if entry is not None and entry[1]() is obj:
            return entry[0]
        ident = heapq.heappop(self._available) if self._available else len(self._registry)
        key = id(obj)
        registry = weakref.ref(self)

        def free(_ref):
            me = registry()
            if me is not None and me._registry.get(key, (None, None))[1] is _ref:
                del me._registry[key]
                heapq.heappush(me._available, ident)

        self._registry[key] = (ident, weakref.ref(obj, free))
        return ident

    def __len__(self) -> int:
        return len(self._registry)
