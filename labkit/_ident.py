"""Small integer identities for live objects: gevent's ``minimal_ident``
(the hub's half: each hub numbers its greenlets; hubs are numbered too).

An object gets the smallest number not held by a live object; the number
returns to the pool when the object is garbage-collected. Weak references
do the bookkeeping, so numbering costs nothing until someone asks for a
number (a greenlet's default ``name``, a status report).

One object per numbered object: a weak reference that carries its number
and key itself (:class:`_IdentRef`), with one shared callback. A console or
a status report numbers every greenlet of a big program at once, and these
references live as long as the greenlets: a closure per object (a function,
its cells, a tuple) made ~7 long-lived objects each, enough at 1,000
greenlets to set off a full garbage collection some refreshes later.
"""
from __future__ import annotations

import heapq
import weakref

from labkit._longlived import LongLivedDict

__all__ = ["IdentRegistry"]


class _IdentRef(weakref.ref):
    """A weak reference to a numbered object, with its number (``ident``),
    its key in the registry (``key``: its id) and the registry (weakly)."""

    __slots__ = ("ident", "key", "registry")


def _free(ref: _IdentRef) -> None:
    """The object of ``ref`` died: its number returns to the pool (unless
    the registry is gone, or its key was numbered again meanwhile)."""
    me = ref.registry()
    if me is not None and me._registry.get(ref.key) is ref:
        del me._registry[ref.key]
        heapq.heappush(me._available, ref.ident)


class IdentRegistry:
    """Maps weakly referenceable objects to small non-negative integers;
    no two live objects share one."""

    def __init__(self):
        #: id(obj) -> its _IdentRef (the number is on the reference)
        self._registry: dict = LongLivedDict()
        #: idents freed by dead objects, smallest first
        self._available: list = []
        self._me = weakref.ref(self)    # (one for every reference: weak, no cycle)

    def ref_of(self, obj):
        """The weak reference that holds ``obj``'s number, or None if it has
        none: a tracer that keeps a weak reference to each numbered object
        anyway can keep this one (one long-lived object per greenlet, not
        two) without numbering anything itself."""
        ref = self._registry.get(id(obj))
        return ref if ref is not None and ref() is obj else None

    def get_ident(self, obj) -> int:
        key = id(obj)
        ref = self._registry.get(key)
        if ref is not None and ref() is obj:
            return ref.ident
        ident = heapq.heappop(self._available) if self._available else len(self._registry)
        ref = _IdentRef(obj, _free)
        ref.ident, ref.key, ref.registry = ident, key, self._me
        self._registry[key] = ref
        return ident

    def __len__(self) -> int:
        return len(self._registry)
