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

Not implemented yet (``NotImplementedError`` if requested): thread, os,
queue. subprocess and signal are off by default in ``patch_all`` (opt in:
``patch_all(subprocess=True, signal=True)``).
"""
from __future__ import annotations

import importlib
import os as _os
import sys
import time as _time
import warnings

__all__ = ["patch_all", "patch_socket", "patch_dns", "patch_time", "patch_select",
           "patch_selectors", "patch_ssl", "patch_thread", "patch_os",
           "patch_subprocess", "patch_signal", "patch_queue", "get_original",
           "is_module_patched", "is_object_patched", "main"]

#: module name -> {attribute name: original value}
_originals: dict[str, dict[str, object]] = {}


# -- the machinery ------------------------------------------------------------------

def _patch(module_name: str, replacements: dict) -> None:
    """Set ``replacements`` on the stdlib module, remembering the originals
    (only the first time: patching twice must not lose the true original)."""
    module = importlib.import_module(module_name)
    saved = _originals.setdefault(module_name, {})
    for name, value in replacements.items():
        if name not in saved:
            saved[name] = getattr(module, name, _MISSING)
        setattr(module, name, value)


_MISSING = object()

# Captured when this module is imported, which is before it patches anything.
_blocking_sleep = _time.sleep


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


def is_object_patched(module_name: str, item_name: str) -> bool:
    return item_name in _originals.get(module_name, {})


def _not_implemented(what: str):
    raise NotImplementedError(
        f"labkit.monkey cannot patch {what} yet; pass {what}=False "
        "(labkit's cooperative twin of this module is not written)")


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


def _cooperative_sleep(seconds: float = 0) -> None:
    """``time.sleep`` that parks the greenlet where there is a hub."""
    from labkit.hub import sleep
    from labkit.hub import hub_for_this_thread
    if hub_for_this_thread() is None:
        return _blocking_sleep(seconds)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    sleep(seconds)


def patch_time() -> None:
    """``time.sleep`` parks the greenlet."""
    _patch("time", {"sleep": _cooperative_sleep})


def patch_select() -> None:
    """Cooperative ``select.select``/``select.poll``; ``epoll``/``devpoll``/
    ``kqueue`` are removed so that libraries fall back to those two."""
    from labkit import select as ours
    import select
    _patch("select", {"select": ours.select, "poll": ours.poll})
    for name in ("epoll", "devpoll", "kqueue", "kevent"):
        if hasattr(select, name):
            _originals["select"].setdefault(name, getattr(select, name))
            delattr(select, name)


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


def patch_thread(*args, **kwargs):
    _not_implemented("thread")


def patch_os(*args, **kwargs):
    _not_implemented("os")


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


def patch_queue(*args, **kwargs):
    _not_implemented("queue")


def patch_all(socket=True, dns=True, time=True, select=True, selectors=True,
              ssl=True, thread=False, os=False, subprocess=False, signal=False,
              queue=False) -> None:
    """Apply the patches asked for: gevent's defaults, except that
    subprocess and signal are opt-in, and thread/os/queue are not
    implemented (asking for them raises NotImplementedError)."""
    for wanted, patch in ((thread, patch_thread), (os, patch_os),
                          (subprocess, patch_subprocess), (signal, patch_signal),
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
