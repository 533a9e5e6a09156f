"""Signals handled in greenlets: the stdlib ``signal`` module, plus ``signal_handler``.

    from labkit.signal import signal_handler
    handle = signal_handler(signal.SIGUSR1, reload_config, "/etc/app.toml")
    ...
    handle.cancel()       # the previous handler of SIGUSR1 is back

Why a greenlet: Python runs a signal handler between two bytecodes of the
main thread, in whatever greenlet happens to be running -- often the hub
itself, where waiting is forbidden (``BlockingSwitchOutError``), or a
greenlet in the middle of a protocol exchange. ``signal_handler`` instead
runs ``fn`` in a fresh greenlet on the hub, where it may sleep, do I/O and
call ``server.stop()``.

How a signal travels::

    kernel --> CPython's C handler: sets a flag (and EINTRs the hub's epoll_wait)
           --> our Python handler, at the next bytecode of the main thread:
               hub.run_callback(spawn)        <- a deque append, nothing else
           --> next hub pass: Greenlet(fn, *args) starts

Why a Python handler and not ``signal.set_wakeup_fd``: the wake-up fd is
one process-wide slot, and when labkit runs inside a Jupyter kernel the
kernel's asyncio loop already owns it; taking it would break the host's own
signal handling. The Python handler is enough because the C loop returns
from epoll_wait on EINTR (DESIGN.md), so the handler runs promptly while the
hub sleeps. The one window it does not cover -- a signal landing in the few
microseconds between the hub's last bytecode and its entry into epoll_wait --
delays the handler until the hub's next wake-up (any fd, timer or callback);
that is the classic race set_wakeup_fd exists for, and the price we accept
for coexisting with a host loop.

The contract:

- Register from the main thread (the stdlib's rule for ``signal.signal``);
  the handler greenlets run on the main thread's hub.
- Several handles may watch one signal; each gets its own greenlet per
  delivery, in registration order. Signals that arrive while the first is
  being handled are not merged: every delivery CPython reports is handled.
- A handle does not keep the hub alive (as gevent's ``signal_handler``): a
  program that only waits for signals must wait on something else too,
  or set the handle's ``ref`` to True.
- An exception that ``fn`` raises is raised in the main greenlet, as an
  exception from a plain Python signal handler is (gevent's rule too).
- ``cancel()`` is idempotent; when the last handle of a signal is cancelled,
  the handler that was installed before the first one comes back.
- :func:`signal` (what ``labkit.monkey.patch_signal`` installs) is the
  stdlib's ``signal.signal``, except that a Python handler runs in a greenlet
  (with ``frame=None``: the interrupted frame is gone by then).
"""
from __future__ import annotations

import signal as _stdlib
from signal import *  # noqa: F401,F403 - constants, Signals, alarm, ...

from labkit.greenlet import Greenlet
from labkit.hub import _sigint_handler, get_hub

__all__ = [name for name in dir(_stdlib) if not name.startswith("_")
           and name not in ("signal", "getsignal")]
__all__ += ["signal", "getsignal", "signal_handler", "SignalHandle"]

_stdlib_signal = _stdlib.signal
_stdlib_getsignal = _stdlib.getsignal

#: signum -> the live handles watching it, in registration order
_handles: dict[int, list["SignalHandle"]] = {}
#: signum -> the handler installed before our first handle (restored at the end)
_previous: dict[int, object] = {}
#: signum -> (user's handler, its handle) for handlers installed by signal()
_installed: dict[int, tuple] = {}


class SignalHandle:
    """Runs ``fn(*args, **kwargs)`` in a new greenlet each time the signal
    arrives, until :meth:`cancel`. Made by :func:`signal_handler`."""

    def __init__(self, signum: int, fn, args: tuple, kwargs: dict):
        self.signum = signum
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.hub = get_hub()
        self.active = True
        self._ref = False

    @property
    def ref(self) -> bool:
        """Whether this handle keeps the hub alive (default False)."""
        return self._ref

    @ref.setter
    def ref(self, value: bool) -> None:
        value = bool(value)
        if value != self._ref and self.active:
            self.hub.keepalive(1 if value else -1)
        self._ref = value

    def _deliver(self) -> None:  # a hub callback
        if self.active:
            Greenlet.spawn(self._handle)

    def _handle(self) -> None:
        try:
            self.fn(*self.args, **self.kwargs)
        except BaseException:
            import sys
            self.hub.handle_system_error(*sys.exc_info())

    def cancel(self) -> None:
        """Stop handling; restores the previous handler after the last handle."""
        if not self.active:
            return
        self.active = False
        if self._ref:
            self.hub.keepalive(-1)
        handles = _handles.get(self.signum, [])
        if self in handles:
            handles.remove(self)
        if not handles:
            _handles.pop(self.signum, None)
            previous = _previous.pop(self.signum, _stdlib.SIG_DFL)
            _stdlib_signal(self.signum, previous if previous is not None else _stdlib.SIG_DFL)

    close = cancel

    def __repr__(self) -> str:
        state = "active" if self.active else "cancelled"
        return f"<SignalHandle {_name(self.signum)} {self.fn!r} {state}>"


def _name(signum: int) -> str:
    try:
        return _stdlib.Signals(signum).name
    except ValueError:
        return str(signum)


def _on_signal(signum, frame) -> None:
    """The Python-level handler: queue one greenlet start per handle.

    It may run in any greenlet of the main thread, the hub included, so it
    only appends to the hub's ready deque (run_callback), which is safe there.
    """
    for handle in tuple(_handles.get(signum, ())):
        handle.hub.run_callback(handle._deliver)


def signal_handler(signum: int, fn, *args, **kwargs) -> SignalHandle:
    """Run ``fn(*args, **kwargs)`` in a new greenlet on the hub whenever
    ``signum`` arrives; return the handle (``cancel()`` to stop).

    Call from the main thread (``ValueError`` otherwise, as the stdlib).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {fn!r}")
    handle = SignalHandle(signum, fn, args, kwargs)
    handles = _handles.get(signum)
    if not handles:
        previous = _stdlib_signal(signum, _on_signal)  # raises off the main thread
        _previous[signum] = previous
        handles = _handles[signum] = []
    handles.append(handle)
    return handle


_PASS_THROUGH = (_stdlib.default_int_handler, _sigint_handler)


def _call_handler(handler, signum) -> None:
    handler(signum, None)


def signal(signalnum: int, handler):
    """``signal.signal``, with Python handlers run in a greenlet on the hub.

    ``SIG_DFL``, ``SIG_IGN``, ``default_int_handler`` and the hub's own
    SIGINT handler (Ctrl-C must interrupt the code that runs, and the hub
    installs it while it is being created) are passed to the stdlib as they
    are. Installing any handler replaces every previous one for that
    signal, those of :func:`signal_handler` included, as the stdlib's would.
    """
    old = getsignal(signalnum)
    for handle in tuple(_handles.get(signalnum, ())):
        handle.cancel()  # the last one restores _previous
    _installed.pop(signalnum, None)
    if callable(handler) and handler not in _PASS_THROUGH:
        handle = signal_handler(signalnum, _call_handler, handler, signalnum)
        _installed[signalnum] = (handler, handle)
    else:
        _stdlib_signal(signalnum, handler)
    return old


def getsignal(signalnum: int):
    """``signal.getsignal``; a handler installed through :func:`signal` is
    returned as given, not as labkit's wrapper."""
    installed = _installed.get(signalnum)
    if installed is not None and installed[1].active:
        return installed[0]
    return _stdlib_getsignal(signalnum)
