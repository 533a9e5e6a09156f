"""A dict for per-greenlet bookkeeping that lives as long as the program.

CPython's full collection untracks a plain dict whose keys and values are
all untracked (``_PyDict_MaybeUntrack``: ints, strings, tuples of them),
and the dict is tracked again -- as a new object, in the youngest
generation -- the first time a tracked value goes in (a tuple is tracked
until a collection looks at it). A cache keyed by greenlet id, emptied or
made of such tuples when the program's last full collection ran, is then
young again when a console's first refresh fills it with 10,000 entries:
every young and generation-1 collection walks all of them, a read of each
value's header, scattered in memory. At 10,000 greenlets eight such caches
made the generation-1 collection after an attach ~4-7 ms.

:class:`LongLivedDict` is a plain dict to its users. A dict subclass is
never untracked (only exact dicts are), so it ages into the oldest
generation like any object and stays there, and the collections of the
younger ones do not walk it however it fills.
"""
from __future__ import annotations

__all__ = ["LongLivedDict"]


class LongLivedDict(dict):
    """A dict the collector never untracks (see the module's docstring):
    for long-lived maps that fill in bursts."""

    __slots__ = ()
