"""Greenlet-local storage: ``threading.local``, one namespace per greenlet.

    request = local()

    def handle(conn):
        request.user = login(conn)     # each greenlet sees only its own .user
        serve(conn)

The contract, the same as threading.local's with "greenlet" for "thread":

- Each greenlet (in any thread: the key is ``getcurrent()``) sees its own
  attributes. A greenlet's namespace is dropped when the greenlet is
  garbage-collected: the storage holds only a weak reference to it.
- A subclass's ``__init__`` runs once per greenlet, on that greenlet's first
  access, with the arguments given to the constructor. Passing arguments
  to a ``local`` whose class has no ``__init__`` of its own raises TypeError.
- Class attributes, methods and properties work as usual (looked up on the
  class, with ``self`` the local). Attributes declared in ``__slots__`` are
  *not* local: like threading.local's, they are shared by all greenlets.
- ``copy.copy(a_local)`` is a new local of the same class, made with the
  same constructor arguments, whose namespace in the current greenlet is a
  shallow copy of this one's (gevent's rule); other greenlets start afresh.
"""
from __future__ import annotations

import weakref

from greenlet import getcurrent

__all__ = ["local", "all_local_dicts_for_greenlet"]

_MISSING = object()

#: every local's storage, for all_local_dicts_for_greenlet (debugging only)
_all_storages: "weakref.WeakSet[_Storage]" = weakref.WeakSet()


class _Storage:
    """The per-greenlet namespaces of one local object."""

    __slots__ = ("dicts", "args", "kwargs", "owner", "__weakref__")

    def __init__(self, args: tuple, kwargs: dict):
        #: id(greenlet) -> (weakref to the greenlet, its namespace dict)
        self.dicts: dict = {}
        self.args = args          # the constructor's arguments, for __init__
        self.kwargs = kwargs
        self.owner = None         # weak reference to the local (set by local.__new__)

    def namespace(self, local_obj) -> dict:
        """The current greenlet's dict, created (and __init__ run) on first use."""
        g = getcurrent()
        entry = self.dicts.get(id(g))
        if entry is not None and entry[0]() is g:
            return entry[1]
        return self._create(local_obj, g)

    def _create(self, local_obj, g, run_init: bool = True) -> dict:
        key = id(g)
        storage_ref = weakref.ref(self)

        def forget(_ref):  # the greenlet was collected: drop its namespace
            storage = storage_ref()
            if storage is not None and storage.dicts.get(key, (None,))[0] is _ref:
                del storage.dicts[key]

        ns: dict = {}
        self.dicts[key] = (weakref.ref(g, forget), ns)
        init = type(local_obj).__init__
        if run_init and init is not local.__init__:
            init(local_obj, *self.args, **self.kwargs)
        return ns


def _class_attribute(cls, name: str):
    """``name`` as found on the class (MRO order), or _MISSING."""
    for klass in cls.__mro__:
        attr = klass.__dict__.get(name, _MISSING)
        if attr is not _MISSING:
            return attr
    return _MISSING


def _is_data_descriptor(attr) -> bool:
    kind = type(attr)
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


class local:
    """An object whose attributes are private to each greenlet."""

    __slots__ = ("_local__storage", "__weakref__")

    def __new__(cls, *args, **kwargs):
        if (args or kwargs) and cls.__init__ is local.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        storage = _Storage(args, kwargs)
        storage.owner = weakref.ref(self)
        _all_storages.add(storage)
        object.__setattr__(self, "_local__storage", storage)
        # The creating greenlet's namespace exists already: Python is about
        # to call __init__ for it, right after __new__ returns.
        storage._create(self, getcurrent(), run_init=False)
        return self

    def __init__(self, *args, **kwargs):
        pass  # subclasses' __init__ runs per greenlet, from _Storage._create

    def __copy__(self):
        storage = object.__getattribute__(self, "_local__storage")
        current = dict(storage.namespace(self))
        duplicate = type(self)(*storage.args, **storage.kwargs)
        ns = object.__getattribute__(duplicate, "_local__storage").namespace(duplicate)
        ns.clear()
        ns.update(current)
        return duplicate

    def __getattribute__(self, name: str):
        storage = object.__getattribute__(self, "_local__storage")
        ns = storage.namespace(self)
        if name == "__dict__":
            return ns
        cls = type(self)
        attr = _class_attribute(cls, name)
        # Python's lookup order: data descriptors (properties, slots) on the
        # class, then the instance namespace, then other class attributes.
        if attr is not _MISSING and _is_data_descriptor(attr):
            return type(attr).__get__(attr, self, cls)
        value = ns.get(name, _MISSING)
        if value is not _MISSING:
            return value
        if attr is _MISSING:
            raise AttributeError(
                f"{cls.__name__!r} object has no attribute {name!r}")
        getter = getattr(type(attr), "__get__", None)
        return attr if getter is None else getter(attr, self, cls)

    def __setattr__(self, name: str, value) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only")
        attr = _class_attribute(type(self), name)
        if attr is not _MISSING and hasattr(type(attr), "__set__"):
            type(attr).__set__(attr, self, value)
            return
        storage = object.__getattribute__(self, "_local__storage")
        storage.namespace(self)[name] = value

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(
                f"{type(self).__name__!r} object attribute '__dict__' is read-only")
        attr = _class_attribute(type(self), name)
        if attr is not _MISSING and hasattr(type(attr), "__delete__"):
            type(attr).__delete__(attr, self)
            return
        storage = object.__getattribute__(self, "_local__storage")
        ns = storage.namespace(self)
        try:
            del ns[name]
        except KeyError:
            raise AttributeError(name) from None


def all_local_dicts_for_greenlet(g) -> list:
    """``[((class of the local, its id), namespace dict), ...]`` for every
    local that has a namespace in greenlet ``g``: what labkit.util's greenlet
    tree shows as a greenlet's locals. For debugging; it scans every local."""
    found = []
    for storage in list(_all_storages):
        entry = storage.dicts.get(id(g))
        owner = storage.owner() if storage.owner is not None else None
        if entry is not None and entry[0]() is g and owner is not None:
            found.append(((type(owner), id(owner)), entry[1]))
    return found
