"""Monkey patching: make unmodified blocking code (requests, urllib3, http.client,
anything on ``socket``/``time.sleep``/``select``) cooperative.

    from labkit import monkey; monkey.patch_all()   # first thing, before other imports
    import requests                                  # now parks greenlets, not the thread

    python -m labkit.monkey script.py [args]         # run a script patched

What a patch does: it replaces attributes of the stdlib module with labkit's
(``socket.socket = labkit.socket.socket``, ``time.sleep = ...``) and keeps the
originals, which :func:`get_original` returns. Code that did
``from socket import socket`` *before* patching keeps the original; that is
why patching comes first, and why patching ``ssl`` after ``ssl`` was imported
warns (it may be too late for some modules) instead of failing.

Thread-aware: every patched call asks "is there a hub in this thread?"
(``labkit.hub.hub_for_this_thread``: the main thread always has one; other
threads only if they made one). Without a hub -- a library's worker thread,
an IPython kernel's service thread -- it behaves exactly as the original.

Threads (``patch_thread``) have two modes. *Green*, gevent's semantics and
the default in a script and the gunicorn worker: ``threading.Thread`` runs as
a greenlet, ``get_ident`` is per greenlet, ``threading.local`` is
greenlet-local. *Native* (mixed), the default inside a Jupyter kernel or
IPython, and ``patch_thread(threads="native")`` / ``patch_all(threads=
"native")`` anywhere: threads stay OS threads. In both, the patched locks,
Condition, Event, Semaphore and queues work from both sides at once: a
greenlet parks, an OS thread blocks, and either side wakes the other
(:mod:`labkit._twosided`). The hub never uses a patched primitive: it takes
the originals from :mod:`labkit._native`.

subprocess and signal are off by default in ``patch_all`` (opt in:
``patch_all(subprocess=True, signal=True)``). :func:`unpatch_all` puts every
original back (``%unload_ext labkit`` calls it), which gevent cannot do.
"""
from __future__ import annotations

import importlib
import os as _os
import sys
import warnings

__all__ = ["patch_all", "patch_socket", "patch_dns", "patch_time", "patch_select",
           "patch_selectors", "patch_ssl", "patch_thread", "patch_os",
           "patch_subprocess", "patch_signal", "patch_queue", "get_original",
           "is_module_patched", "is_object_patched", "unpatch_all", "thread_mode",
           "is_anything_patched", "patch_sys", "saved", "main"]

from labkit import _native  # the originals, captured before any patch (see there)

#: module name -> {attribute name: original value}
_originals: dict[str, dict[str, object]] = {}

#: gevent's name for the same record (``monkey.saved``); patch_all also
#: files the settings it was called with here, under _SETTINGS_KEY
saved = _originals
_SETTINGS_KEY = "_gevent_saved_patch_all_module_settings"


# -- the machinery ------------------------------------------------------------------

def _patch(module_name: str, replacements: dict, target=None) -> None:
    """Set ``replacements`` on the stdlib module, remembering the originals
    (only the first time: patching twice must not lose the true original).
    ``target``: patch this object (a class) instead, filed under ``module_name``."""
    module = importlib.import_module(module_name) if target is None else target
    if target is None:  # a module: subscribers of labkit.events may veto or trim it
        from labkit import events
        will = events.GeventWillPatchModuleEvent(module_name, None, module, list(replacements))
        try:
            events.notify(will)
        except events.DoNotPatch:
            return
        replacements = {name: replacements[name] for name in will.target_item_names
                        if name in replacements}
    _targets[module_name] = module
    saved = _originals.setdefault(module_name, {})
    for name, value in replacements.items():
        if name not in saved:
            saved[name] = getattr(module, name, _MISSING)
        setattr(module, name, value)
    if target is None:
        events.notify(events.GeventDidPatchModuleEvent(module_name, None, module))


#: module name (or "module.Class") -> the object patched under that name
_targets: dict[str, object] = {}


_MISSING = object()



def get_original(module_name: str, item_name):
    """The stdlib's own ``module.item`` even after patching; a list of names
    gives a tuple of values."""
    if not isinstance(item_name, str):
        return tuple(get_original(module_name, name) for name in item_name)
    original = _originals.get(module_name, {}).get(item_name, _MISSING)
    if original is _MISSING:
        return getattr(importlib.import_module(module_name), item_name)
    return original


def is_module_patched(module_name: str) -> bool:
    return module_name in _originals


def is_anything_patched() -> bool:
    """True once any patch was applied (gevent's name)."""
    return any(key != _SETTINGS_KEY for key in _originals)


def is_object_patched(module_name: str, item_name: str) -> bool:
    return item_name in _originals.get(module_name, {})


# -- the patches -------------------------------------------------------------------

def patch_socket(dns: bool = True) -> None:
    """Cooperative ``socket.socket`` and the functions that make sockets."""
    from labkit import socket as ours
    _patch("socket", {name: getattr(ours, name) for name in (
        "socket", "SocketType", "socketpair", "fromfd", "create_connection",
        "create_server")})
    if dns:
        patch_dns()


def patch_dns() -> None:
    """Name resolution in the hub's thread pool."""
    from labkit import socket as ours
    _patch("socket", {name: getattr(ours, name) for name in (
        "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
        "getnameinfo", "getfqdn")})


def patch_time() -> None:
    """``time.sleep`` parks the greenlet."""
    from labkit import time as ours   # gevent.time's name: time.sleep is labkit.time.sleep
    _patch("time", {"sleep": ours.sleep})


def patch_select() -> None:
    """Cooperative ``select.select``/``select.poll``; ``epoll``/``devpoll``/
    ``kqueue`` are removed so that libraries fall back to those two; psycopg 3
    (imported already or later) waits with ``select.poll`` too."""
    from labkit import select as ours
    import select
    _patch("select", {"select": ours.select, "poll": ours.poll})
    for name in ("epoll", "devpoll", "kqueue", "kevent"):
        if hasattr(select, name):
            _originals["select"].setdefault(name, getattr(select, name))
            delattr(select, name)
    # psycopg 3 waits in C unless it sees gevent's patching: give it its own
    # poll-based wait, which now parks (labkit/_psycopg.py).
    from labkit import _psycopg
    _psycopg.patch()


def patch_selectors() -> None:
    """``selectors.DefaultSelector`` (and Select/PollSelector) cooperate."""
    from labkit import selectors as ours
    _patch("selectors", {"DefaultSelector": ours.DefaultSelector,
                         "SelectSelector": ours.SelectSelector,
                         "PollSelector": ours.PollSelector})


def patch_ssl() -> None:
    """``ssl.SSLContext`` wraps sockets cooperatively. Warns if ``ssl`` was
    imported before: modules that copied its names keep the originals."""
    if "ssl" in sys.modules and not is_module_patched("ssl"):
        warnings.warn(
            "labkit.monkey: ssl was imported before patching; modules that did "
            "`from ssl import SSLContext` already keep the blocking one. Patch first.",
            RuntimeWarning, stacklevel=3)
    from labkit import ssl as ours
    # ssl.SSLSocket itself stays: the stdlib's SSLSocket._create calls
    # super(SSLSocket, self) through that global name. Ours subclasses it,
    # so isinstance checks against ssl.SSLSocket hold.
    _patch("ssl", {"SSLContext": ours.SSLContext,
                   "create_default_context": ours.create_default_context})


#: "green" or "native" once patch_thread ran, else None
_thread_mode: str | None = None


def thread_mode() -> str | None:
    """How ``patch_thread`` patched threads: "green", "native", or None."""
    return _thread_mode


def _default_thread_mode() -> str:
    """"native" where labkit is a guest (a kernel, IPython), else "green"."""
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        try:
            if ipython.get_ipython() is not None:
                return "native"
        except Exception:  # an IPython too broken to ask: assume a guest
            return "native"
    return "green"


def patch_thread(threading=True, _threading_local=True, Event=True, logging=True,
                 existing_locks=True, threads=None) -> None:
    """Cooperative locks, Conditions, Events, Semaphores and ``local``;
    gevent's keyword arguments, plus ``threads``:

    - ``threads="green"`` (the default in a script): ``threading.Thread``
      and ``_thread.start_new_thread`` spawn greenlets, ``get_ident`` is per
      greenlet (gevent's semantics);
    - ``threads="native"`` (the default inside a kernel or IPython): threads
      stay OS threads; a greenlet that joins one parks.

    ``threading``: patch the threading module (else only ``_thread``);
    ``_threading_local``: its ``local`` too; ``Event``: ``threading.Event``;
    ``logging``: replace the locks logging created before patching (its
    module lock and its handlers'); ``existing_locks``: the other locks made
    before patching that green threads would share (concurrent.futures').
    A second call must ask for the same mode (ValueError otherwise).
    """
    global _thread_mode
    mode = threads if threads is not None else (_thread_mode or _default_thread_mode())
    if mode not in ("green", "native"):
        raise ValueError(f'threads must be "green" or "native", not {mode!r}')
    if _thread_mode is not None and mode != _thread_mode:
        raise ValueError(f"threads are patched {_thread_mode!r} already; "
                         f"unpatch_all() first to patch them {mode!r}")
    from labkit import thread as green, threading as ours
    from labkit.local import local
    green_mode = mode == "green"
    if green_mode:
        items = {"allocate_lock": ours.Lock, "allocate": ours.Lock, "LockType": ours.Lock,
                 "get_ident": green.get_ident, "start_new_thread": green.start_new_thread,
                 "start_new": green.start_new_thread, "exit": green.exit,
                 "exit_thread": green.exit, "_local": local}
        if green.PY313:
            items.update(start_joinable_thread=green.start_joinable_thread,
                         _ThreadHandle=green._ThreadHandle, lock=ours.Lock,
                         _make_thread_handle=green._make_thread_handle)
        _patch("_thread", items)
    elif _threading_local:
        _patch("_thread", {"_local": local})
    if threading:
        stdlib = importlib.import_module("threading")
        items = {"Lock": ours.Lock, "_allocate_lock": ours.Lock, "RLock": ours.RLock,
                 "Condition": ours.Condition, "Semaphore": ours.Semaphore,
                 "BoundedSemaphore": ours.BoundedSemaphore, "Barrier": ours.Barrier,
                 "Timer": ours.Timer, "local": local}
        if hasattr(stdlib, "_CRLock"):
            items["_CRLock"] = None
        if Event:
            items["Event"] = ours.Event
        if green_mode:
            items.update(get_ident=green.get_ident, _DummyThread=ours._DummyThread,
                         _shutdown=_green_shutdown)
            if green.PY313:
                items.update(_start_joinable_thread=green.start_joinable_thread,
                             _ThreadHandle=green._ThreadHandle,
                             _make_thread_handle=green._make_thread_handle)
            else:
                items.update(_start_new_thread=green.start_new_thread,
                             _set_sentinel=green._set_sentinel)
            if hasattr(stdlib, "_DeleteDummyThreadOnDel"):   # 3.13+
                items["_DeleteDummyThreadOnDel"] = ours._DeleteDummyThreadOnDel
        _patch("threading", items)
        if green_mode:
            _rekey_main_thread(stdlib, green.get_ident())
            _reown_import_locks(get_original("_thread", "get_ident")(), green.get_ident())
            if existing_locks:
                _replace_existing_locks()
        else:
            _patch("threading.Thread", {"join": ours._join_native,
                                        "_bootstrap_inner": ours._bootstrap_inner_native},
                   target=stdlib.Thread)
        if logging and "logging" in sys.modules:
            _replace_logging_locks(ours.RLock)
    if _threading_local:
        _patch("_threading_local", {"local": local})
    _thread_mode = mode


#: (OS ident, greenlet ident) of the main thread while it is re-keyed
_main_thread_idents: tuple | None = None


def _rekey_main_thread(stdlib, ident: int) -> None:
    """Green mode: ``current_thread()`` looks the thread up by the *greenlet*
    ident now; file the main thread under its main greenlet's."""
    global _main_thread_idents
    main = stdlib.main_thread()
    if not _native.is_main_thread() or _main_thread_idents is not None:
        return
    from greenlet import getcurrent
    root = getcurrent()
    while root.parent is not None:
        root = root.parent
    new = id(root)
    old = main._ident
    handle = None
    from labkit import thread as green
    if green.PY313:  # 3.13 checks that the handle's ident is the thread's
        handle = getattr(main, green.HANDLE_ATTRIBUTE)
        ours = green._ThreadHandle()
        ours._set_greenlet(root)
        setattr(main, green.HANDLE_ATTRIBUTE, ours)
    with stdlib._active_limbo_lock:
        if stdlib._active.get(old) is main:
            del stdlib._active[old]
        stdlib._active[new] = main
        main._ident = new
    _main_thread_idents = (old, new, handle)


def _reown_import_locks(old: int, new: int) -> None:
    """Green mode, patched during an import (``celery -P custom`` imports its
    pool, which patches, before it loads the app): the import system's
    per-module locks held by this thread were taken under the OS ident and
    are released under ``_thread.get_ident()``, now the greenlet's. Hand
    them to the new ident, as gevent does, or the release raises
    "cannot release un-acquired lock"."""
    import importlib._bootstrap as bootstrap
    for ref in list(getattr(bootstrap, "_module_locks", {}).values()):
        lock = ref()
        if lock is not None and getattr(lock, "owner", None) == old:
            lock.owner = new


def _unrekey_main_thread(stdlib) -> None:
    global _main_thread_idents
    if _main_thread_idents is None:
        return
    old, new, handle = _main_thread_idents
    main = stdlib.main_thread()
    if handle is not None:
        from labkit import thread as green
        setattr(main, green.HANDLE_ATTRIBUTE, handle)
    with stdlib._active_limbo_lock:
        if stdlib._active.get(new) is main:
            del stdlib._active[new]
        stdlib._active[old] = main
        main._ident = old
    _main_thread_idents = None


def _green_shutdown() -> None:
    """threading._shutdown in green mode (the interpreter calls it at exit,
    in the main greenlet): non-daemon green threads finish first, as
    non-daemon threads do; then the stdlib's shutdown."""
    stdlib = sys.modules["threading"]
    main = stdlib.main_thread()
    for thread in list(stdlib._active.values()):
        if thread is main or thread.daemon or getattr(thread, "_labkit_native", False):
            continue
        try:
            while thread.is_alive():
                thread.join()
        except Exception:  # LoopExit: it can never finish; do not hang the exit
            pass
    get_original("threading", "_shutdown")()


def _replace_existing_locks() -> None:
    # threading's own lock around _active and _limbo (current_thread() of a
    # new greenlet, Thread.start, enumerate): an original RLock is owned by
    # the OS thread, so every greenlet would be let in at once; gevent
    # replaces it too. Swapped while holding the old one: nobody is inside.
    from labkit.threading import Lock, RLock
    stdlib = sys.modules["threading"]
    old = stdlib._active_limbo_lock
    with old:
        _patch("threading", {"_active_limbo_lock": RLock()})
    # concurrent.futures holds this lock across Thread.start(), which in
    # green mode may switch; an original lock held by one greenlet would
    # block the thread for the next (gevent's issue 1865).
    cf_thread = sys.modules.get("concurrent.futures.thread")
    if cf_thread is not None and hasattr(cf_thread, "_global_shutdown_lock"):
        _patch("concurrent.futures.thread", {"_global_shutdown_lock": Lock()})


def _replace_logging_locks(make_rlock) -> None:
    """logging's module lock and every handler's lock, made before patching,
    become two-sided RLocks: greenlets of one thread exclude each other in
    emit() (an original RLock lets every greenlet of its owner thread in)."""
    import logging
    _patch("logging", {"_lock": make_rlock()})
    for ref in list(logging._handlerList):
        handler = ref()
        old = getattr(handler, "lock", None)
        # Swap only a lock nobody holds (a kernel's thread may be logging).
        if old is not None and old.acquire(False):
            try:
                handler.lock = make_rlock()
            finally:
                old.release()


_original_fork = getattr(_os, "fork", None)


def _fork() -> int:
    """``os.fork``: the original. In the child, labkit's at-fork hooks have
    already given each hub a fresh poller and wake-up fd (labkit.hub), the
    thread pools start afresh (labkit.threadpool), and the locks the stdlib
    re-initialises after a fork are two-sided ones (``_at_fork_reinit``)."""
    return _original_fork()


def patch_os() -> None:
    """``os.waitpid`` parks the greenlet (a pidfd for one child, else a
    backing-off poll); ``os.fork`` is marked patched: the hub is re-initialised
    in the child by labkit's at-fork hooks, whoever calls fork."""
    from labkit import os as ours   # gevent.os's names: os.fork is labkit.os.fork
    items = {"waitpid": ours.waitpid}
    for name in ("fork", "forkpty"):
        if hasattr(ours, name):
            items[name] = getattr(ours, name)
    _patch("os", items)


def patch_subprocess() -> None:
    """``subprocess.Popen`` and the functions built on it wait cooperatively
    (a pidfd for the exit, the hub for the pipes)."""
    from labkit import subprocess as ours
    _patch("subprocess", {name: getattr(ours, name) for name in (
        "Popen", "run", "call", "check_call", "check_output", "getoutput",
        "getstatusoutput")})


def patch_signal() -> None:
    """``signal.signal`` runs Python handlers in a greenlet on the hub, where
    they may block; ``getsignal`` returns them as installed."""
    from labkit import signal as ours
    _patch("signal", {"signal": ours.signal, "getsignal": ours.getsignal})


def patch_queue() -> None:
    """``queue.Queue``, ``LifoQueue``, ``PriorityQueue`` and ``SimpleQueue``
    work from greenlets and threads at once: the queue module's locks and
    Conditions come from labkit.threading (whether or not threading itself
    is patched), and the C SimpleQueue becomes the stdlib's Python one."""
    import queue
    from labkit import threading as ours
    _patch("queue", {"threading": ours, "SimpleQueue": queue._PySimpleQueue})


def patch_all(socket=True, dns=True, time=True, select=True, selectors=True,
              ssl=True, thread=True, os=True, subprocess=False, signal=False,
              queue=True, Event=True, threads=None, **kwargs) -> None:
    """Apply the patches asked for: gevent's defaults, except that
    subprocess and signal are opt-in. ``threads`` ("green" or "native")
    and ``Event`` go to :func:`patch_thread`.

    As gevent's: calling it again patches only what was off before and is
    on now (with a warning that the settings differ); it tells
    labkit.events' subscribers (and plug-ins) before and after, and a
    subscriber that raises DoNotPatch at the start cancels it. Extra
    keyword arguments are passed to them (``patch_all_kwargs``)."""
    import warnings
    from labkit import events
    settings = dict(socket=socket, dns=dns, time=time, select=select, selectors=selectors,
                    ssl=ssl, thread=thread, os=os, subprocess=subprocess, signal=signal,
                    queue=queue, Event=Event, threads=threads)
    record = saved.setdefault(_SETTINGS_KEY, {})   # (the global: tests may replace it)
    if record and record != settings:
        warnings.warn("Patching more than once will result in the union of all True "
                      "parameters being patched", stacklevel=2)
    wanted = {}
    for name, value in settings.items():
        if name not in record or value and not record[name]:
            wanted[name] = record[name] = value
    if not wanted or not any(wanted.values()):
        return
    will = events.GeventWillPatchAllEvent(wanted, kwargs)
    try:
        events.notify_and_call_entry_points(will)
    except events.DoNotPatch:
        return
    _patch_all_wanted(wanted.get("socket", False), wanted.get("dns", False),
                      wanted.get("time", False), wanted.get("select", False),
                      wanted.get("selectors", False), wanted.get("ssl", False),
                      wanted.get("thread", False), wanted.get("os", False),
                      wanted.get("subprocess", False), wanted.get("signal", False),
                      wanted.get("queue", False), Event, threads)
    events.notify_and_call_entry_points(events.GeventDidPatchBuiltinModulesEvent(wanted, kwargs))
    events.notify_and_call_entry_points(events.GeventDidPatchAllEvent(wanted, kwargs))


def _patch_all_wanted(socket, dns, time, select, selectors, ssl, thread, os, subprocess,
                      signal, queue, Event, threads) -> None:
    if os:
        patch_os()
    if thread:
        patch_thread(Event=Event, threads=threads)
    for wanted, patch in ((subprocess, patch_subprocess), (signal, patch_signal),
                          (queue, patch_queue)):
        if wanted:
            patch()
    # ssl first: its "imported too early" check must not see our own import.
    if ssl:
        patch_ssl()
    if socket:
        patch_socket(dns=dns)
    elif dns:
        patch_dns()
    if time:
        patch_time()
    if select:
        patch_select()
    if selectors:
        patch_selectors()


def patch_sys(stdin=True, stdout=True, stderr=True) -> None:
    """Make ``sys.stdin``/``stdout``/``stderr`` cooperative: each becomes a
    FileObjectThread over the original, so a read or write parks the
    greenlet while a thread does it. Not part of patch_all (as in gevent):
    it reorders output against code that writes to the originals."""
    from labkit.fileobject import FileObjectThread
    for name, wanted in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        if wanted and not isinstance(getattr(sys, name), FileObjectThread):
            _patch("sys", {name: FileObjectThread(getattr(sys, name))})


def unpatch_all() -> None:
    """Put every original back (labkit's own; gevent cannot). Objects made
    while patched (a Lock, a greenlet-local) keep working as they are."""
    global _thread_mode
    stdlib_threading = sys.modules.get("threading")
    if stdlib_threading is not None:
        _unrekey_main_thread(stdlib_threading)
    _originals.pop(_SETTINGS_KEY, None)
    for key in reversed(list(_originals)):
        target = _targets.get(key)
        if target is None:
            target = importlib.import_module(key)
        for name, original in _originals[key].items():
            if original is _MISSING:
                try:
                    delattr(target, name)
                except AttributeError:
                    pass
            else:
                setattr(target, name, original)
    _originals.clear()
    _targets.clear()
    _thread_mode = None


# -- python -m labkit.monkey script.py ---------------------------------------------------

def main(argv=None) -> None:
    """``python -m labkit.monkey [--module] script.py|module [args...]``:
    patch everything, then run the script as ``__main__``."""
    import runpy
    argv = list(sys.argv[1:] if argv is None else argv)
    run_module = bool(argv) and argv[0] in ("-m", "--module")
    if run_module:
        argv.pop(0)
    if not argv:
        sys.exit("usage: python -m labkit.monkey [--module] script.py|module [args...]")
    patch_all()
    sys.argv = argv
    if run_module:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.path.insert(0, _os.path.dirname(_os.path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
