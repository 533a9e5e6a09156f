"""The ``time`` module with a cooperative ``sleep`` (gevent's ``gevent.time``).

``labkit.time.sleep(seconds)`` parks the greenlet; in a thread without a hub
it blocks the thread, as ``time.sleep`` does. Every other name is the
standard module's. ``monkey.patch_time()`` installs this ``sleep``.
"""
import time as _time

from labkit.hub import hub_for_this_thread as _hub_for_this_thread

__implements__ = ["sleep"]
__all__ = __implements__ + [name for name in dir(_time) if not name.startswith("_")
                            and name != "sleep"]

_blocking_sleep = _time.sleep

for _name in __all__[1:]:
    globals()[_name] = getattr(_time, _name)
del _name


def sleep(seconds: float = 0) -> None:
    """``time.sleep`` that parks the greenlet where there is a hub."""
    if _hub_for_this_thread() is None:
        return _blocking_sleep(seconds)
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    from labkit.hub import sleep as park
    park(seconds)
