"""gevent's watcher API on labkit's loop (``gevent.core``): timers, io, async,
callbacks, and per-pass check/prepare/idle watchers.

    loop = labkit.get_hub().loop
    t = loop.timer(0.5, 0.5)            # after, repeat: not started yet
    t.start(print, "tick")              # every 0.5 s, from the hub
    t.stop(); t.close()

    w = loop.io(sock.fileno(), 1)       # 1 READ, 2 WRITE, 3 both
    w.start(on_readable)                # each time the fd is readable

This is how code written against gevent's loop -- pyzmq's ``zmq.green``,
uWSGI-style integrations, gevent's own tests -- runs on labkit. It is a
layer of plain Python over :class:`labkit._loop.Loop`'s public methods
(``timer``, ``io_start``/``io_cancel``, ``wake``) and the hub's
(``run_callback(_threadsafe)``, ``keepalive``): the C loop is unchanged and
still never calls Python. What the C loop has no notion of is kept here:

- *persistent* watchers: labkit's io and timer registrations are one-shot,
  so a started io watcher re-registers itself before each call of its
  callback, and a repeating timer re-arms itself;
- *references*: an active watcher with ``ref`` True keeps the loop alive
  (no LoopExit while it is active), as in libev. Timers do it through the
  loop's own ``ref=False`` timers, io watchers through the fd wait itself,
  the others through ``hub.keepalive``. An io watcher with ``ref=False``
  is not supported (it keeps the loop alive regardless);
- *per-pass* watchers: ``prepare`` callbacks run before each poll,
  ``check`` callbacks after it, ``idle`` callbacks when a pass had nothing
  else to do (and while one is active, the loop does not sleep) -- the hub
  runs them (``Hub.poll_for_events``) from lists kept on the loop.

And the rarer ones, built on other labkit modules: ``signal`` (labkit.signal's
handler), ``fork`` (an at-fork hook), ``child`` (a greenlet in
labkit.os.waitpid), ``stat`` (a timer that compares ``os.stat``).

All watchers: ``start(callback, *args)``, ``stop()``, ``close()`` (stop and
forget; also the ``with`` block's exit), ``active``, ``pending``, ``ref``,
``callback``, ``args``, ``priority`` (accepted, ignored). Create and use
them in the loop's thread; only ``async_.send()`` may be called from others.
Callbacks run in the hub: they must not block, and an exception from one
goes to ``hub.handle_error``, as any callback's does.
"""
from __future__ import annotations

from labkit._loop import READ, WRITE, Loop

__all__ = ["loop", "watcher", "timer", "io", "async_", "callback", "check", "prepare",
           "idle", "signal", "fork", "child", "stat", "READ", "WRITE", "EVENTS",
           "GEVENT_CORE_EVENTS"]

#: gevent's name for the loop class
loop = Loop

#: passed in place of the fired events, with ``io.start(..., pass_events=True)``
EVENTS = GEVENT_CORE_EVENTS = type("GEVENT_CORE_EVENTS", (), {
    "__repr__": lambda self: "gevent.core.EVENTS"})()

# gevent's (libev's) event bits, as io() takes them
_EV_READ = 1
_EV_WRITE = 2


class watcher:
    """The common part: callback and args, start/stop/close, ref."""

    def __init__(self, _loop, ref: bool = True, priority=None):
        self.loop = _loop
        self._ref = bool(ref)
        self.callback = None
        self.args = None
        self.priority = priority

    # -- what subclasses provide ------------------------------------------------
    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    # -- the API ---------------------------------------------------------------------
    def start(self, callback, *args, **kwargs) -> None:
        """Call ``callback(*args)`` from the hub each time the watcher fires.
        (Keyword options are watcher-specific: ``io``'s ``pass_events``,
        ``timer``'s ``update``.)"""
        if kwargs:
            raise TypeError(f"{type(self).__name__}.start() got unexpected keyword "
                            f"arguments {sorted(kwargs)}")
        if callback is None or not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        if self.loop is None:
            raise ValueError("operation on a closed watcher")
        was_active = self.active
        self.callback = callback
        self.args = args
        if not was_active:
            self._start()

    def stop(self) -> None:
        """Stop watching (harmless if not started); forget the callback."""
        if self.callback is not None:
            self._stop()
        self.callback = None
        self.args = None

    def close(self) -> None:
        """Stop, and release the watcher for good."""
        if self.loop is not None:
            self.stop()
            self.loop = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def active(self) -> bool:
        return self.callback is not None

    @property
    def pending(self) -> bool:
        return False

    @property
    def ref(self) -> bool:
        return self._ref

    @ref.setter
    def ref(self, value: bool) -> None:
        value = bool(value)
        if value != self._ref:
            self._ref = value
            if self.active:
                self._ref_changed()

    def _ref_changed(self) -> None:
        """An active watcher's ref flipped: adjust what keeps the loop alive."""
        self._keepalive(1 if self._ref else -1)

    def _keepalive(self, delta: int) -> None:
        hub = self.loop.hub
        if hub is not None:
            hub.keepalive(delta)

    def _run(self, *extra) -> None:
        callback = self.callback
        if callback is not None:
            callback(*(extra + self.args))

    def _format(self) -> str:
        return ""

    def __repr__(self) -> str:
        state = " active" if self.active else " stopped"
        cb = f" callback={self.callback!r}" if self.callback is not None else ""
        return f"<{type(self).__name__} at {id(self):#x}{self._format()}{state}{cb} ref={self.ref}>"


class timer(watcher):
    """``loop.timer(after, repeat=0.0)``: fires ``after`` seconds after
    ``start``, then every ``repeat`` seconds if ``repeat`` > 0."""

    def __init__(self, _loop, after: float = 0.0, repeat: float = 0.0, ref: bool = True,
                 priority=None):
        if repeat < 0.0:
            raise ValueError(f"repeat must be positive or zero: {repeat!r}")
        super().__init__(_loop, ref, priority)
        self.after = after
        self.repeat = repeat
        self._timer = None

    def start(self, callback, *args, **kwargs) -> None:
        """Arm. ``update=`` is accepted for gevent (the clock is always fresh)."""
        kwargs.pop("update", None)
        super().start(callback, *args, **kwargs)

    def again(self, callback, *args, update=True) -> None:
        """Restart from now, with a new callback."""
        self.stop()
        self.start(callback, *args)

    def _start(self) -> None:
        self._arm(self.after)

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.timer(max(seconds, 0), self._fire, ref=self._ref)

    def _fire(self) -> None:
        self._timer = None
        callback, args = self.callback, self.args
        if callback is None:
            return
        if self.repeat > 0:
            self._arm(self.repeat)
        else:
            self.callback = self.args = None   # a one-shot timer is done
        callback(*args)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ref_changed(self) -> None:
        if self._timer is not None:
            self._timer.ref = self._ref

    @property
    def active(self) -> bool:
        return self._timer is not None and self._timer.active

    @property
    def at(self) -> float:
        """When it fires next, on the loop's clock (now() + after if idle)."""
        return self.loop.now() + (self.after if not self.active else 0)

    def _format(self) -> str:
        return f" after={self.after} repeat={self.repeat}"


class io(watcher):
    """``loop.io(fd, events)``: fires each time ``fd`` is ready for one of
    ``events`` (1 read, 2 write). ``start(callback, *args,
    pass_events=True)`` passes the fired bits as the first argument."""

    def __init__(self, _loop, fd: int, events: int, ref: bool = True, priority=None):
        if fd < 0:
            raise ValueError(f"fd must be non-negative: {fd!r}")
        if events & ~(_EV_READ | _EV_WRITE) or not events:
            raise ValueError(f"illegal event mask: {events!r}")
        super().__init__(_loop, ref, priority)
        self.fd = fd
        self.events = events
        self._pass_events = False
        self._started = ()

    def start(self, callback, *args, **kwargs) -> None:
        """``pass_events=True``: the fired bits come first in the arguments."""
        self._pass_events = bool(kwargs.pop("pass_events", False))
        super().start(callback, *args, **kwargs)

    def _directions(self):
        return [d for bit, d in ((_EV_READ, READ), (_EV_WRITE, WRITE)) if self.events & bit]

    def _start(self) -> None:
        started = []
        try:
            for direction in self._directions():
                self.loop.io_start(self.fd, direction, self._fired_read if direction == READ
                                   else self._fired_write)
                started.append(direction)
        except BaseException:
            for direction in started:
                self.loop.io_cancel(self.fd, direction)
            self.callback = self.args = None
            raise
        self._started = tuple(started)

    def _stop(self) -> None:
        for direction in self._started:
            self.loop.io_cancel(self.fd, direction)
        self._started = ()

    def _fired_read(self, events: int) -> None:
        self._fired(READ, self._fired_read, _EV_READ)

    def _fired_write(self, events: int) -> None:
        self._fired(WRITE, self._fired_write, _EV_WRITE)

    def _fired(self, direction: int, again, bits: int) -> None:
        # labkit's fd registrations are one-shot: renew before calling, so
        # that a callback which stops the watcher cancels the renewal.
        if self.callback is None:
            return
        self.loop.io_start(self.fd, direction, again)
        if self._pass_events:
            self._run(bits)
        else:
            self._run()

    def _ref_changed(self) -> None:
        pass  # see the module docstring: an io watcher always keeps the loop alive

    def _format(self) -> str:
        return f" fd={self.fd} events={self.events}"


class _KeptAlive(watcher):
    """A watcher whose being active keeps the loop alive through the hub's
    keepalive count (when ref is True)."""

    def _start(self) -> None:
        if self._ref:
            self._keepalive(1)
        self._activate()

    def _stop(self) -> None:
        self._deactivate()
        if self._ref:
            self._keepalive(-1)

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass


class async_(_KeptAlive):
    """``loop.async_()``: ``send()``, from any thread, makes the loop run the
    callback soon (sends before it runs are merged into one call)."""

    def __init__(self, _loop, ref: bool = True, priority=None):
        super().__init__(_loop, ref, priority)
        self._sent = False

    def send(self) -> None:
        """Any thread: run the callback soon (once, however often sent)."""
        if self._sent:
            return
        self._sent = True
        hub = self.loop.hub if self.loop is not None else None
        if hub is not None:
            hub.run_callback_threadsafe(self._deliver)

    def send_ignoring_arg(self, _ignored) -> None:
        """send(), callable as a link (``rawlink(w.send_ignoring_arg)``)."""
        self.send()

    def _deliver(self) -> None:
        self._sent = False
        self._run()

    @property
    def pending(self) -> bool:
        return self._sent


class callback(watcher):
    """``loop.callback()``: ``start(f, *args)`` runs ``f(*args)`` once, soon."""

    def __init__(self, _loop, priority=None):
        super().__init__(_loop, True, priority)
        self._queued = None

    def _start(self) -> None:
        self._queued = self.loop.run_callback(self._deliver)

    def _deliver(self) -> None:
        self._queued = None
        callback, args = self.callback, self.args
        self.callback = self.args = None
        if callback is not None:
            callback(*args)

    def _stop(self) -> None:
        if self._queued is not None:
            self._queued.stop()
            self._queued = None

    @property
    def pending(self) -> bool:
        return self._queued is not None


class _PerPass(_KeptAlive):
    """A watcher the hub runs once per loop pass, from a list on the loop."""

    #: the name of the list on the Loop (see Hub.poll_for_events)
    _list_name = ""

    def __call__(self) -> None:
        """The hub's call, once per pass while active."""
        self._run()

    def _activate(self) -> None:
        getattr(self.loop, self._list_name).append(self)
        self.loop.pass_watchers += 1

    def _deactivate(self) -> None:
        watchers = getattr(self.loop, self._list_name)
        if self in watchers:
            watchers.remove(self)
            self.loop.pass_watchers -= 1


class prepare(_PerPass):
    """``loop.prepare()``: the callback runs before each poll."""
    _list_name = "prepares"


class check(_PerPass):
    """``loop.check()``: the callback runs after each poll."""
    _list_name = "checks"


class idle(_PerPass):
    """``loop.idle()``: the callback runs in passes that had nothing else to
    do; while one is active the loop polls without sleeping."""
    _list_name = "idles"


class signal(watcher):
    """``loop.signal(signum)``: fires each time the signal arrives (in the
    main thread's hub: labkit.signal's handler runs the callback in a new
    greenlet). ``ref`` True keeps the loop alive while started."""

    def __init__(self, _loop, signum: int, ref: bool = True, priority=None):
        import signal as _stdlib_signal
        if not 1 <= signum < _stdlib_signal.NSIG:
            raise ValueError(f"illegal signal number: {signum!r}")
        super().__init__(_loop, ref, priority)
        self.signum = signum
        self._handle = None

    def _start(self) -> None:
        from labkit.signal import signal_handler
        self._handle = signal_handler(self.signum, self._run)
        self._handle.ref = self._ref

    def _stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ref_changed(self) -> None:
        if self._handle is not None:
            self._handle.ref = self._ref


class fork(watcher):
    """``loop.fork()``: the callback runs (from the child's hub) after a
    fork, in the child."""

    def __init__(self, _loop, ref: bool = True, priority=None):
        super().__init__(_loop, ref, priority)
        self._registered = False

    def _start(self) -> None:
        if not self._registered:   # os.register_at_fork cannot unregister:
            import os              # the hook checks whether we are started
            import weakref
            me = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _fork_fired(me))
            self._registered = True

    def _stop(self) -> None:
        pass


def _fork_fired(ref) -> None:
    watcher = ref()
    if watcher is not None and watcher.callback is not None and watcher.loop is not None \
            and watcher.loop.hub is not None:
        watcher.loop.hub.run_callback(watcher._run)


class child(watcher):
    """``loop.child(pid)``: fires once child ``pid`` exits; then ``rpid``
    and ``rstatus`` say how (as os.waitpid reports it). A greenlet waits
    for it (labkit.os.waitpid: a pidfd, or polling)."""

    def __init__(self, _loop, pid: int, trace: int = 0, ref: bool = True):
        super().__init__(_loop, ref)
        self.pid = pid
        self.rpid = None
        self.rstatus = 0
        self._waiter = None

    def _start(self) -> None:
        from labkit.hub import spawn_raw
        self._waiter = spawn_raw(self._wait)

    def _wait(self) -> None:
        from labkit.os import waitpid
        self.rpid, self.rstatus = waitpid(self.pid, 0)
        self._waiter = None
        self._run()

    def _stop(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.dead:
            from labkit.hub import kill
            kill(waiter)

    def _format(self) -> str:
        return f" pid={self.pid} rstatus={self.rstatus}"


class stat(watcher):
    """``loop.stat(path, interval)``: fires when ``os.stat(path)`` changes,
    checked every ``interval`` seconds (default 1); ``attr`` is the current
    stat result (None if the path does not exist), ``prev`` the previous."""

    def __init__(self, _loop, path, interval: float = 0.0, ref: bool = True, priority=None):
        super().__init__(_loop, ref, priority)
        self.path = path
        self.interval = interval
        self.attr = self.prev = self._read()
        self._timer = None

    def _read(self):
        import os
        try:
            return os.stat(self.path)
        except OSError:
            return None

    def _start(self) -> None:
        self.attr = self._read()
        self._arm()

    def _arm(self) -> None:
        self._timer = self.loop.timer(self.interval or 1.0, self._check, ref=self._ref)

    def _check(self) -> None:
        if self.callback is None:
            return
        current = self._read()
        self._arm()
        if current != self.attr:
            self.prev, self.attr = self.attr, current
            self._run()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ref_changed(self) -> None:
        if self._timer is not None:
            self._timer.ref = self._ref
