"""Cooperative ``selectors``: ``DefaultSelector().select(timeout)`` parks the
greenlet instead of the thread.

The selector is the stdlib's own poll-based one (``selectors._PollLikeSelector``,
which does all the key bookkeeping) with ``labkit.select.poll`` plugged in as
the poller, so every rule of the stdlib selectors API holds unchanged:
``register``/``modify``/``unregister``/``get_key``/``get_map``/``close``, and
``select`` returns ``[(SelectorKey, EVENT_READ|EVENT_WRITE)]``.

``SelectSelector``, ``PollSelector`` and gevent's ``GeventSelector`` are the
same cooperative class, so code that asks for one by name cooperates too. Like ``labkit.select``, it waits only
for readability and writability, and blocks the thread in a thread without a hub.
"""
import selectors as _stdlib
from selectors import (  # noqa: F401 - the public API, re-exported
    EVENT_READ, EVENT_WRITE, BaseSelector, SelectorKey,
)

from labkit import select as _select

__all__ = ["BaseSelector", "DefaultSelector", "SelectSelector", "PollSelector",
           "GeventSelector", "SelectorKey", "EVENT_READ", "EVENT_WRITE"]


class DefaultSelector(_stdlib._PollLikeSelector):
    """A selector whose ``select(timeout)`` parks the calling greenlet."""

    _selector_cls = _select.poll
    _EVENT_READ = _select.POLLIN
    _EVENT_WRITE = _select.POLLOUT


#: gevent's name for its cooperative selector (``selectors.GeventSelector``)
SelectSelector = PollSelector = GeventSelector = DefaultSelector
