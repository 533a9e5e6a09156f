"""Step 2 of the lost wake-up lint (tracing/lost_wakeup.py): a witness.

Does anything but its waiters refer to the object parked greenlets wait
on? :func:`witnesses` answers "yes" when it finds a path to it, searching
forward from the roots Python can see -- the modules the waiters' own code
runs in first, then every other greenlet's frames and ``_run``/``args``,
the caller's stack, other threads' frames, ``sys.modules`` -- through
dicts, lists, tuples, sets, deques, cells, functions' closures and
defaults, bound methods, ``functools.partial`` and the fields of
instances of classes defined in Python, never through the waiters. A
path found is walked again in one piece (:func:`_verify`); if it still
holds, the object is held. "Not found" decides nothing: the lint's step 3
asks the collector.

The search reads no C extension's objects (no greenlet's or frame's
traversal: a greenlet's frames are read as their locals) and holds no list
of the whole heap; it runs in pieces (``pace()`` every 256 objects and
references looked at), and its bookkeeping is bounded by the caller's
budget of objects.
"""
from __future__ import annotations

import collections
import functools
import gc
import os
import _thread
import sys
import types
import weakref

from greenlet import getcurrent
from greenlet import greenlet as _raw_greenlet

import labkit.hub as _lk_hub
from labkit._frame_locals import locals_of

__all__ = ["witnesses"]

_HEAPTYPE = 1 << 9
_IMMUTABLETYPE = 1 << 8


def _in_python(kind) -> bool:
    """Whether ``kind`` was made by a class statement (or type()): a heap
    type that can be changed. (Many C extension types are heap types too
    since 3.12 -- itertools', for one --, made immutable.)"""
    return kind.__flags__ & (_HEAPTYPE | _IMMUTABLETYPE) == _HEAPTYPE
#: the lint's own modules' files: their frames are not roots of the search
#: (what the lint itself holds is not a holder)
_LINT_FILES = tuple(os.path.join(os.path.dirname(__file__), name)
                    for name in ("witness.py", "lost_wakeup.py", "lints.py"))


#: type -> whether the search reads its instances' fields (gc.get_referents)
_FIELDS: dict = {}
#: the builtin types whose traversal (gc.get_referents) a class defined in
#: Python may extend and still be read: CPython's own containers'
_FOLLOWED_BASES = (object, dict, list, tuple, set, frozenset, collections.deque,
                   BaseException, types.SimpleNamespace)


def _fields(kind) -> bool:
    """Whether the search reads the fields of ``kind``'s instances: a class
    defined in Python (a heap type) over one of :data:`_FOLLOWED_BASES`.
    (``gc.get_referents`` of such an instance runs CPython's generic
    traversal -- its slots, its dict or inline values, its type, the
    base container's items -- and never a C extension's: a greenlet's or a
    frame's walks saved interpreter state, and is not asked here.)"""
    how = _FIELDS.get(kind)
    if how is None:
        solid = next((c for c in kind.__mro__ if not _in_python(c)), object)
        how = _in_python(kind) and (
            solid in _FOLLOWED_BASES or issubclass(solid, BaseException)) \
            and not issubclass(kind, _raw_greenlet)
        if len(_FIELDS) > 10_000:
            _FIELDS.clear()
        _FIELDS[kind] = how
    return how


def _frames_locals(frame, out: list) -> None:
    files = _LINT_FILES
    while frame is not None:
        if frame.f_code.co_filename not in files:
            out.extend(locals_of(frame)[0].values())
        frame = frame.f_back


def _greenlet_fields(g, out: list) -> None:
    """A greenlet's frames' locals (the collector cannot see a suspended
    frame's), its ``run`` if not started, and its subclass's fields
    (labkit's Greenlet: ``_run``, ``args``, ``kwargs``, links...)."""
    _frames_locals(sys._getframe() if g is getcurrent() else g.gr_frame, out)
    kind = type(g)
    if kind is _raw_greenlet:
        run = getattr(g, "run", None)   # (until it starts)
        if run is not None:
            out.append(run)
        return
    for c in kind.__mro__:
        if not _in_python(c):
            continue
        for value in vars(c).values():
            if type(value) is types.MemberDescriptorType:
                try:
                    out.append(value.__get__(g, kind))
                except AttributeError:
                    pass
    # (not its __dict__: reading it makes one for every greenlet without)


def _children(x, out: list) -> None:
    """What ``x`` refers to that the search follows (appended to ``out``)."""
    kind = type(x)
    if kind is dict:
        out.extend(x.values())
        out.extend(x.keys())
    elif kind is list or kind is tuple or kind is set or kind is frozenset \
            or kind is collections.deque:
        out.extend(x)
    elif kind is types.FunctionType:
        # closure, defaults, globals, its dict (reading __dict__ would make one)
        out.extend(gc.get_referents(x))
    elif kind is types.CellType:
        try:
            out.append(x.cell_contents)
        except ValueError:
            pass
    elif kind is types.MethodType:
        out.append(x.__self__)
        out.append(x.__func__)
    elif kind is functools.partial:
        out.append(x.func)
        out.append(x.args)
        out.append(x.keywords)
    elif kind is types.ModuleType:
        out.extend(x.__dict__.values())
    elif isinstance(x, _raw_greenlet):
        _greenlet_fields(x, out)
    elif isinstance(x, type):
        if x.__flags__ & _HEAPTYPE:
            out.extend(vars(x).values())
    elif kind is types.MappingProxyType:
        out.extend(x.values())
    elif _fields(kind):
        out.extend(gc.get_referents(x))


def _roots(greenlets: list, waiting: set, pace) -> tuple[list, list]:
    """The objects the search starts from, in two rounds: first the greenlets
    of the snapshot but the waiters, the hub, the main greenlet and the
    caller's (their frames' locals, ``_run``, ``args``...), other threads'
    stacks (a list of their locals each) and the modules of the program
    (not under ``sys.prefix``: where a holder usually is); then the other
    modules (the standard library's, site-packages')."""
    hub = _lk_hub.get_hub()
    roots = []
    seen = set(waiting)
    n = 0
    for g in (*greenlets, getcurrent(), hub, hub.parent):
        n += 1
        if n & 255 == 0:
            pace()
        if g is not None and id(g) not in seen:   # (a dead one has no frames left)
            seen.add(id(g))
            roots.append(g)
    # (this thread's frame is left out before the loop binds it: a local
    # holding its own frame is a cycle that keeps the lint's frames, and
    # what they hold, alive until the next collection)
    frames = sys._current_frames()
    frames.pop(_thread.get_ident(), None)
    for ident in list(frames):
        values: list = []
        _frames_locals(frames.pop(ident), values)
        roots.append(values)
    libraries = []
    kinds = _MODULE_KINDS
    for n, module in enumerate(list(sys.modules.values())):
        if n & 127 == 127:
            pace()
        if type(module) is not types.ModuleType:
            continue
        known = kinds.get(id(module))
        if known is None or known[0] is not module:
            path = getattr(module, "__file__", None)
            known = kinds[id(module)] = (module, not path or path.startswith(_LIBRARY_PREFIXES))
        (libraries if known[1] else roots).append(module)
    if len(kinds) > 2 * len(sys.modules) + 100:
        kinds.clear()
    return roots, libraries


_LIBRARY_PREFIXES = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix,
                           sys.base_exec_prefix})
#: id(module) -> (module, whether it is a library's): modules stay
_MODULE_KINDS: dict = {}


def witnesses(groups: list, greenlets: list, pace, budget: int) -> set:
    """ids of the objects of ``groups`` something but their waiters reaches
    from a root (``greenlets``: the snapshot's), each on a path walked
    again, whole, in one piece, reading at most ``budget`` objects past the
    roots per group (what is past it is left to the caller: not found).
    One search per group: a greenlet parked on one object may hold another
    in a local, and count as its holder."""
    found: set = set()
    for group in groups:
        pace()
        waiting: set = set()
        for part in pace.chunks(group[1]):
            waiting.update([id(row.greenlet) for row in part])
        # First the waiters' own modules, a little way and no further than
        # their globals (no other module): then the whole search.
        if _search(group, (_home_modules(group[1]),), waiting, pace, budget // 4,
                   modules=False) \
                or _search(group, _roots(greenlets, waiting, pace), waiting, pace, budget):
            found.add(id(group[0]))
    return found


#: labkit's and the tracer's own code: the machinery a greenlet waits in
#: (Greenlet.run, Event.wait), not the code that waits
_OWN_DIRS = tuple(os.path.dirname(module.__file__) + os.sep
                  for module in (_lk_hub, sys.modules[__name__]))


def _home_modules(rows: list, limit: int = 16) -> list:
    """The modules whose globals the frames of the first ``limit`` waiters
    run with (but labkit's and the tracer's own), searched first: not going
    into other modules, with a quarter of the budget. A holder of what greenlets wait on is most often
    a global of the code that waits, a few levels down, where the whole
    search, level by level from every root, can run out of budget first:
    the modules of a big program (a test suite's hundreds) hold more than
    100,000 objects at that depth."""
    found: dict = {}
    for row in rows[:limit]:
        frame = row.greenlet.gr_frame
        while frame is not None:
            if not frame.f_code.co_filename.startswith(_OWN_DIRS):
                names = frame.f_globals
                name = names.get("__name__")
                module = sys.modules.get(name) if type(name) is str else None
                if module is not None and getattr(module, "__dict__", None) is names:
                    found[id(module)] = module
            frame = frame.f_back
    return list(found.values())


def _search(group: list, rounds: tuple, waiting: set, pace, budget: int,
            modules: bool = True) -> bool:
    """Whether ``group[0]`` is reached from the roots of ``rounds`` (one
    breadth-first search from each list of roots in turn, what the first
    reached left out of the next), not through ``waiting`` (ids of
    greenlets), within ``budget`` objects read past the roots; ``pace()``
    every 256 objects and references looked at. ``modules=False``: a
    module met on the way is not followed, nor a function's globals (a
    root that is a module is)."""
    target = id(group[0])
    parent: dict = {}
    root_of: dict = {}
    read = work = 0
    for roots in rounds:
        level = []
        for n, root in enumerate(roots):
            if n & 255 == 255:
                pace()
            if id(root) not in parent:
                parent[id(root)] = None
                root_of[id(root)] = root
                level.append(root)
        roots = None
        while level:
            nxt = []
            for x in level:
                if work >= 256:    # (objects read, and references looked at)
                    work = 0
                    pace()
                if read > budget:
                    return False      # (step 3 decides)
                kids: list = []
                try:
                    _children(x, kids)
                except Exception:     # (a field that cannot be read: not followed)
                    continue
                if id(x) not in root_of:
                    read += 1
                work += 1 + len(kids)
                xid = id(x)
                # (modules=False: nor a function's globals, another module's dict)
                skip = x.__globals__ if not modules and type(x) is types.FunctionType \
                    else None
                for n, child in enumerate(kids):
                    if n & 255 == 255:    # (a list of 10,000 greenlets is one object)
                        pace()
                    cid = id(child)
                    if cid in parent or cid in waiting or type(child) in _NOT_FOLLOWED_EXACT \
                            or (not modules and type(child) is types.ModuleType) \
                            or child is skip:
                        continue
                    parent[cid] = xid
                    if cid == target:
                        kids = child = x = None
                        # (moved meanwhile: step 3 decides)
                        return _verify(target, parent, root_of, group)
                    nxt.append(child)
                kids = child = x = None
            level = nxt
    return False


_NOT_FOLLOWED_EXACT = frozenset((str, bytes, int, float, bool, type(None), complex,
                                 types.CodeType, types.FrameType, weakref.ref,
                                 types.BuiltinFunctionType, range))


def _verify(target: int, parent: dict, root_of: dict, group: list) -> bool:
    """Walk the path the search found to ``target`` again, in one piece:
    each step must still be there (the loop ran between the pieces)."""
    path = [target]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    path.reverse()
    x = root_of.get(path[0])
    if x is None:
        return False
    if isinstance(x, types.ModuleType) and sys.modules.get(x.__name__) is not x:
        return False
    if isinstance(x, _raw_greenlet) and x.dead:
        return False
    for want in path[1:]:
        kids: list = []
        _children(x, kids)
        nxt = None
        for child in kids:
            if id(child) == want:
                nxt = child
                break
        kids = child = None
        if nxt is None:
            return False
        x = nxt
    return x is group[0]
