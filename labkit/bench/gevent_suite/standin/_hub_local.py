"""Stand-in for ``gevent._hub_local`` (gevent's private hub accessors), as
gevent's testing helpers use it: on labkit's hub module.

Part of the gevent-suite runner's stand-in (labkit/bench/gevent_suite/alias.py),
never part of labkit itself.
"""
from labkit import hub as _hub

__all__ = ["get_hub", "get_hub_noargs", "get_hub_if_exists", "get_hub_class",
           "set_default_hub_class"]

get_hub = get_hub_noargs = _hub.get_hub


def get_hub_if_exists():
    """This thread's hub, or None; never creates one."""
    public = getattr(_hub, "get_hub_if_exists", None)
    if public is not None:
        return public()
    return _hub._get_hub_if_any()  # labkit before it had the public name


def get_hub_class():
    """The class get_hub() instantiates."""
    public = getattr(_hub, "get_hub_class", None)
    return public() if public is not None else _hub.Hub


def set_default_hub_class(hubtype) -> None:
    _hub.set_default_hub_class(hubtype)
