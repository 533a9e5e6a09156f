"""A warning the first time the real ``time.sleep`` runs in a greenlet.

The usual first mistake: ``time.sleep(1)`` in a greenlet, without monkey
patching. It works -- and stops every other greenlet for that second. So
``%load_ext labkit`` puts a thin watcher in front of ``time.sleep``: it
sleeps exactly as the original does, and when it runs in a greenlet (or a
hub callback) of a thread that has a hub, a RuntimeWarning names the cure.
Once per process: a lesson, not a nag. Threads without a hub (the kernel's
own, a user's) and the main greenlet (nobody else waits for it) never warn.

Not monkey patching: nothing cooperative happens, and ``labkit.monkey``
patches over it (and puts it back) like any other original. ``%unload_ext``
puts the original back, if nobody has replaced the watcher since. (Python
3.12's audit event ``time.sleep`` would do without a watcher, but 3.10 and
3.11 have no such event, and audit hooks cannot be removed.)
"""
from __future__ import annotations

import functools
import time
import warnings

from greenlet import getcurrent

from labkit.hub import _local

__all__ = ["enable", "disable"]

_original = None   # time.sleep as it was before enable()
_enabled = False   # the watcher warns
_warned = False    # it has warned (once per process)


def enable() -> None:
    """Put the watcher in front of time.sleep. Main thread; idempotent."""
    global _original, _enabled
    _enabled = True
    if time.sleep is not _watched_sleep:
        _original = time.sleep
        functools.update_wrapper(_watched_sleep, _original)
        time.sleep = _watched_sleep


def disable() -> None:
    """Put the original time.sleep back (unless someone replaced the watcher)."""
    global _enabled
    _enabled = False
    if time.sleep is _watched_sleep and _original is not None:
        time.sleep = _original


def _watched_sleep(seconds):
    if _enabled and not _warned:
        hub = getattr(_local, "hub", None)
        if hub is not None and getcurrent() is not hub.parent:
            _warn(seconds)
    return _original(seconds)


def _warn(seconds) -> None:
    global _warned
    _warned = True
    try:
        warnings.warn(
            f"time.sleep({seconds}) in a greenlet stops every greenlet (the whole "
            f"loop) while it sleeps: use labkit.sleep({seconds}), or run "
            f"labkit.monkey.patch_all() first. (labkit says this once.)",
            RuntimeWarning, stacklevel=3)
    except Exception:  # warnings turned into errors must not break the sleep
        pass
