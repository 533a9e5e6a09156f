"""labkit's settings (gevent's ``gevent.config``): attributes of this module,
each read from an environment variable when first used, checked when set.

    import labkit
    labkit.config.monitor_thread = True        # or LABKIT_MONITOR_THREAD=1
    labkit.config.max_blocking_time            # 0.1, or LABKIT_MAX_BLOCKING_TIME

=========================  =====================  ==========  =========================
setting                    environment variable   default     what it does
=========================  =====================  ==========  =========================
``monitor_thread``         LABKIT_MONITOR_THREAD  False       each hub starts a monitor
                                                              thread when it first runs
                                                              (``hub.periodic_monitoring_
                                                              thread``): blocked-loop and
                                                              memory reports
``max_blocking_time``      LABKIT_MAX_BLOCKING_   0.1         seconds without a greenlet
                           TIME                               switch that count as a
                                                              blocked loop
``max_memory_usage``       LABKIT_MAX_MEMORY_     None        bytes; above it the monitor
                           USAGE                              emits MemoryUsageThreshold-
                                                              Exceeded (needs psutil)
``memory_monitor_period``  LABKIT_MEMORY_         5           seconds between memory
                           MONITOR_PERIOD                     checks
``threadpool_size``        LABKIT_THREADPOOL_     10          threads of ``hub.threadpool``
                           SIZE
``resolver``               LABKIT_RESOLVER        "thread"    labkit.resolver's default:
                                                              "thread", "block" or
                                                              "dnspython"
``track_greenlet_tree``    LABKIT_TRACK_          True        Greenlets remember who
                           GREENLET_TREE                      spawned them (util's tree)
=========================  =====================  ==========  =========================

Booleans take ``1/true/on/yes`` and ``0/false/off/no``. A value set in code
wins over the environment. ``settings()`` lists every setting's current value.
The C loop's own variables (``LABKIT_BACKEND``, ``LABKIT_SPIN_US``,
``LABKIT_ARENA_CACHE``) are read by labkit._loop and the hub at start-up and
are not settings here.
"""
from __future__ import annotations

import os
import sys
import types

__all__ = ["settings"]


def _bool(value) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "on", "yes"):
            return True
        if text in ("0", "false", "off", "no", ""):
            return False
        raise ValueError(f"not a boolean: {value!r}")
    return bool(value)


def _positive_float(value) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be a positive number of seconds, not {value!r}")
    return number


def _optional_bytes(value):
    if value is None or value == "":
        return None
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be a positive number of bytes, not {value!r}")
    return number


def _threadpool_size(value) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, not {value!r}")
    return number


def _resolver(value) -> str:
    if value not in ("thread", "block", "dnspython"):
        raise ValueError(f"must be 'thread', 'block' or 'dnspython', not {value!r}")
    return value


#: name -> (validator, default)
_SETTINGS = {
    "monitor_thread": (_bool, False),
    "max_blocking_time": (_positive_float, 0.1),
    "max_memory_usage": (_optional_bytes, None),
    "memory_monitor_period": (_positive_float, 5.0),
    "threadpool_size": (_threadpool_size, 10),
    "resolver": (_resolver, "thread"),
    "track_greenlet_tree": (_bool, True),
}


class _ConfigModule(types.ModuleType):
    """This module's class: its settings are checked attributes."""

    def __getattr__(self, name: str):
        if name not in _SETTINGS:
            raise AttributeError(f"labkit.config has no setting {name!r}")
        validate, default = _SETTINGS[name]
        raw = os.environ.get("LABKIT_" + name.upper())
        if raw is None:
            value = default
        else:
            try:
                value = validate(raw)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"LABKIT_{name.upper()}={raw!r}: {exc}") from None
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value) -> None:
        if name in _SETTINGS:
            value = _SETTINGS[name][0](value)
        elif not name.startswith("_"):
            raise AttributeError(f"labkit.config has no setting {name!r}")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        # Back to the environment's value, or the default.
        self.__dict__.pop(name, None)


def settings() -> dict:
    """Every setting's current value."""
    module = sys.modules[__name__]
    return {name: getattr(module, name) for name in _SETTINGS}


sys.modules[__name__].__class__ = _ConfigModule
