"""Greenlet: a greenlet with a result, links and gevent's lifecycle.

Lifecycle of a :class:`Greenlet` ``g``::

    created --start()--> scheduled --hub runs it--> running --returns/raises--> dead
        \\                    \\
         `----kill()-----------`--> dead without ever running

- ``g.value`` / ``g.exception`` hold the outcome once ``g.ready()``.
- A greenlet killed with :class:`GreenletExit` counts as *successful*; its
  value is the GreenletExit instance (gevent's rule).
- Links run after death, in the order they were added. ``rawlink`` callbacks
  run in the hub and must not block; ``link`` callbacks run in a new greenlet.
- An exception that escapes ``run`` is printed with its traceback by the hub
  and kills only this greenlet; KeyboardInterrupt and SystemExit are
  re-raised in the main greenlet.
"""
from __future__ import annotations

from contextvars import copy_context
import weakref
from typing import Callable, Iterable

from greenlet import GreenletExit, getcurrent, greenlet

from labkit._lines import Links
from labkit._park import Waiter, check_seconds, check_timeout, deadline, throw_parked
from labkit.hub import _TR_RESUME, get_hub
from labkit._loop import lib as _lib
from labkit.timeout import Timeout

__all__ = ["Greenlet", "spawn", "spawn_later", "joinall", "killall", "wait", "iwait"]

# start states
_NEW, _SCHEDULED, _STARTED, _CANCELLED = range(4)

# greenlet's own "dead" getter, bound once: our ``dead`` property extends it
_greenlet_dead = greenlet.dead.__get__

# Tracing hooks: set by the tracer while it records, as in labkit.hub (see
# the comment there). Spawn and exit go to ``_tracer``; the first switch
# into a greenlet is a resume record with the reason "start".
_trace = None
_tracer = None
_WHY_START = _lib.LK_WHY_START


class Greenlet(greenlet):
    """A unit of cooperative work whose outcome can be waited for.

    ``Greenlet(run, *args, **kwargs)`` creates it; ``start()`` schedules it;
    subclasses may override ``_run`` instead of passing ``run``. Create and
    use it in the thread whose hub will run it.
    """

    # Slots, not the instance dict: the interpreter reads a slot without a
    # dictionary lookup, and spawn/join are on the hot path of every server.
    # (Greenlets keep their __dict__ for any other attribute.)
    # ``_run`` is a slot too (an instance dict would be one more allocation
    # per spawn); a subclass's ``_run`` method hides it, as gevent expects.
    __slots__ = ("_run", "args", "kwargs", "value", "_exc_info", "_links",
                 "_start_state", "_start_handle", "_name", "_spawner", "_tree_locals",
                 "_formatted")

    def __init__(self, run: Callable | None = None, *args, **kwargs):
        # greenlet's __new__ has set everything up; its __init__ would only
        # set run (ours is the method below) and parent, and assigning the
        # parent directly costs a third less than calling it.
        self.parent = get_hub()
        if run is not None:
            if not callable(run):
                raise TypeError(f"run must be callable, not {run!r}")
            self._run = run
        elif type(self)._run is _RUN_SLOT:  # neither run= nor a subclass _run
            self._run = _no_run
        self.args = args
        self.kwargs = kwargs
        self.value = None
        self._exc_info = None
        self._links = None
        self._start_state = _NEW
        self._start_handle = None
        self._name = None
        # Who spawned us, for the greenlet tree (labkit.util): held until we
        # finish, so a chain of finished spawners is never kept alive.
        self._spawner = getcurrent()
        self._tree_locals = None
        self._formatted = None
        # Output and context variables follow the code that spawned us.
        self.gr_context = copy_context()
        if _trace is not None:
            _tracer.on_spawn(self)

    # -- introspection ----------------------------------------------------
    @property
    def name(self) -> str:
        """"Greenlet-<minimal_ident>" unless assigned. Shown in the repr once
        assigned or generated."""
        if self._name is None:
            self._name = f"Greenlet-{self.minimal_ident}"
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = str(value)

    @property
    def minimal_ident(self) -> int:
        """A small non-negative integer, unique among this hub's live
        greenlets (reused after one dies): gevent's ``minimal_ident``. The
        parent must be a hub (AttributeError otherwise)."""
        return self.parent.ident_registry.get_ident(self)

    @property
    def spawning_greenlet(self):
        """A weak reference to the greenlet that created this one: call it
        (None once this one finished, or if it was never known)."""
        spawner = self._spawner
        return _no_spawner if spawner is None else weakref.ref(spawner)

    @property
    def spawn_tree_locals(self) -> dict:
        """A dict shared by a tree of greenlets: the spawner's, if it has
        one; the main greenlet's children each start their own."""
        tree_locals = self._tree_locals
        if tree_locals is None:
            spawner = self._spawner
            tree_locals = getattr(spawner, "spawn_tree_locals", None) \
                if spawner is not None else None
            if tree_locals is None:
                tree_locals = {}
                if spawner is not None and spawner.parent is not None \
                        and not isinstance(spawner, Greenlet):
                    spawner.spawn_tree_locals = tree_locals
            self._tree_locals = tree_locals
        return tree_locals

    @spawn_tree_locals.setter
    def spawn_tree_locals(self, value: dict) -> None:
        self._tree_locals = value

    #: gevent captures the spawning stack; labkit does not (the tracer
    #: records spawn sites when it runs)
    spawning_stack = None

    @property
    def loop(self):
        """The loop of the hub that runs this greenlet."""
        return self.parent.loop

    # -- spawn callbacks (gevent's) ------------------------------------------
    @staticmethod
    def add_spawn_callback(callback: Callable) -> None:
        """Call ``callback(greenlet)`` whenever a Greenlet is started (spawn,
        spawn_later, start). Adding one twice calls it once."""
        global _spawn_callbacks
        if _spawn_callbacks is None:
            _spawn_callbacks = set()
        _spawn_callbacks.add(callback)

    @staticmethod
    def remove_spawn_callback(callback: Callable) -> None:
        """Forget a callback of add_spawn_callback (no error if absent)."""
        global _spawn_callbacks
        if _spawn_callbacks is not None:
            _spawn_callbacks.discard(callback)
            if not _spawn_callbacks:
                _spawn_callbacks = None

    @property
    def exception(self) -> BaseException | None:
        """The exception that ended the greenlet, or None."""
        return self._exc_info[1] if self._exc_info else None

    @property
    def exc_info(self):
        return self._exc_info

    @property
    def started(self) -> bool:
        """Scheduled or running, and not finished (gevent: ``bool(self)``)."""
        return self._start_state == _SCHEDULED or greenlet.__bool__(self)

    @property
    def dead(self) -> bool:
        """True when finished, or killed before it ever ran."""
        return self._start_state == _CANCELLED or _greenlet_dead(self)

    def ready(self) -> bool:
        """True once the outcome (value or exception) is known."""
        return (self._exc_info is not None or self._start_state == _CANCELLED
                or _greenlet_dead(self))

    def successful(self) -> bool:
        return self.ready() and self._exc_info is None

    def __bool__(self) -> bool:
        return self._start_state == _SCHEDULED or greenlet.__bool__(self)

    def __repr__(self) -> str:
        # gevent's form: <Greenlet "name" at 0x...: func(args)>, the name
        # only once assigned or generated.
        name = " " if self._name is None else f' "{self._name}" '
        info = self._formatinfo()
        return f"<{type(self).__name__}{name}at {id(self):#x}" + \
            (f": {info}>" if info else ">")

    def _formatinfo(self) -> str:
        info = self._formatted
        if info is not None:
            return info
        func = self._run
        bound_to = getattr(func, "__self__", None)
        if bound_to is self or func is _no_run:
            info = "_run"   # a subclass's own _run
        elif bound_to is not None:
            info = repr(func)
        else:
            info = getattr(func, "__name__", "") or repr(func)
        args = [repr(a)[:50] for a in self.args]
        args += [f"{k}={repr(v)[:50]}" for k, v in self.kwargs.items()]
        if args:
            info += "(" + ", ".join(args) + ")"
        self._formatted = info  # kept: the function is dropped when we finish
        return info

    # -- with spawn(...) as g: ----------------------------------------------
    def __enter__(self) -> "Greenlet":
        return self

    def __exit__(self, kind, value, tb) -> None:
        """Leaving the block joins the greenlet (and kills it if the join is
        interrupted); a block that raised kills it with that exception."""
        if kind is None:
            try:
                self.join()
            finally:
                self.kill()
        else:
            self.kill((kind, value, tb))

    # -- starting ---------------------------------------------------------
    def start(self) -> None:
        """Schedule the greenlet to run soon (no-op if already started)."""
        if self._start_state == _NEW:
            self._start_state = _SCHEDULED
            if _spawn_callbacks is not None:
                _call_spawn_callbacks(self)
            self.parent.schedule(self.switch)

    def start_later(self, seconds: float) -> None:
        """Schedule the greenlet to run in ``seconds``."""
        seconds = check_seconds(seconds)
        if self._start_state == _NEW:
            self._start_state = _SCHEDULED
            if _spawn_callbacks is not None:
                _call_spawn_callbacks(self)
            self._start_handle = self.parent.loop.timer(seconds, self.switch)

    @classmethod
    def spawn(cls, *args, **kwargs) -> "Greenlet":
        g = cls(*args, **kwargs)
        g.start()
        return g

    @classmethod
    def spawn_later(cls, seconds: float, *args, **kwargs) -> "Greenlet":
        g = cls(*args, **kwargs)
        g.start_later(seconds)
        return g

    # -- running ----------------------------------------------------------
    def run(self):
        """The greenlet body (called by the greenlet machinery, not by you)."""
        if self._start_state == _CANCELLED:
            return None  # killed before the scheduled start came round
        self._start_state = _STARTED
        self._start_handle = None
        if _trace is not None:
            _trace(_TR_RESUME, id(self), _WHY_START, 0)
        try:
            # A call with * or ** enters the callee through C (PyObject_Call):
            # one more interpreter C frame, ~370 bytes, on this greenlet's
            # stack -- which a parked greenlet keeps a copy of. Arguments
            # spelled out stay in this C frame (CPython 3.11+): a server's
            # idle connection or a sleeping greenlet saves that much.
            # (_run read with LOAD_ATTR, which 3.11 specializes for a slot;
            # self._run(...) would be a LOAD_METHOD, which it does not.)
            run, args = self._run, self.args
            if self.kwargs:
                result = run(*args, **self.kwargs)
            elif len(args) == 1:
                result = run(args[0])
            elif len(args) == 2:
                result = run(args[0], args[1])
            elif not args:
                result = run()
            else:
                result = run(*args)
        except GreenletExit as exc:
            # A kill is a result, not an error: its traceback would keep the
            # frames of the park it ended (their locals, a socket...) and ~6
            # tracked objects per killed greenlet while the greenlet object
            # lives; killall of 100,000 sleepers doubled the heap that the
            # collector's full passes then walked (issue 21).
            exc.__traceback__ = None
            self._report_result(exc)
        except BaseException as exc:
            self._report_error(exc)
        else:
            self._report_result(result)
        self._spawner = None
        if _trace is not None:
            _tracer.on_exit(self)
        return None

    def _report_result(self, result) -> None:
        self.value = result
        if self._links is not None:
            self._links.fire()

    def _report_error(self, exc: BaseException) -> None:
        self._exc_info = (type(exc), exc, exc.__traceback__)
        if self._links is not None:
            self._links.fire()
        self.parent.handle_error(self, type(exc), exc, exc.__traceback__)

    # -- killing ----------------------------------------------------------
    def kill(self, exception=GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        """Raise ``exception`` in the greenlet (default GreenletExit; also an
        instance, or a ``(type, value, tb)`` triple).

        Not started yet: it will never run, and ends as if it had raised
        ``exception`` (anything that is not an exception ends it with a
        BaseException saying what it was: gevent's rule). Already dead:
        nothing happens. With ``block`` (default) wait until it is dead, at
        most ``timeout``.
        """
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        if self.dead:
            return
        if not greenlet.__bool__(self):
            # Scheduled but never ran: cancel the start, die right here.
            self._die_before_start(exception)
            return
        self.parent.run_callback(self._throw_if_alive, exception)
        if block and getcurrent() is not self:
            self.join(timeout)

    def throw(self, *args) -> None:
        """Raise an exception in the greenlet now (call from the hub; use
        :meth:`kill` elsewhere). A greenlet that never ran does not run:
        it ends with the exception, links and error report included."""
        if self._start_state in (_NEW, _SCHEDULED) and not greenlet.__bool__(self):
            self._die_before_start(args if len(args) != 1 else args[0])
            return None
        return greenlet.throw(self, *args)

    def _die_before_start(self, exception) -> None:
        """End a greenlet that never ran as if it had raised ``exception``."""
        self._cancel_start()
        self._spawner = None
        if isinstance(exception, tuple) and len(exception) == 3 \
                and isinstance(exception[0], type):
            exc = exception[1] if exception[1] is not None else exception[0]()
        elif isinstance(exception, type) and issubclass(exception, BaseException):
            exc = exception()
        else:
            exc = exception
        if not isinstance(exc, BaseException):
            exc = BaseException(exception)   # a user error, still a death
        if isinstance(exc, GreenletExit):
            self._report_result(exc)
        else:
            self._report_error(exc)

    def _cancel_start(self) -> None:
        was_scheduled = self._start_state == _SCHEDULED and self._start_handle is None
        self._start_state = _CANCELLED
        if self._start_handle is not None:
            self._start_handle.cancel()
            self._start_handle = None
        elif was_scheduled:
            # Our queued start holds us, and through us our arguments: take
            # it back, so that what we were given is released now (a file
            # whose fd would otherwise be closed whenever the hub next ran).
            self.parent.take_back(self.switch)
        self._formatinfo()   # the repr keeps showing what we were made to run
        self.args = ()
        self.kwargs = {}

    def _throw_if_alive(self, exception) -> None:
        if not self.dead:
            if isinstance(exception, tuple) and len(exception) == 3:
                self.throw(*exception)
            # Parked at a labkit park site: raised there by a plain switch,
            # without greenlet.throw's C++ unwinding (issue 21); else throw
            # (always, for a subclass that overrides throw).
            elif type(self).throw is not Greenlet.throw or not throw_parked(self, exception):
                self.throw(exception)

    # -- waiting for the outcome -----------------------------------------
    def join(self, timeout: float | None = None) -> None:
        """Wait until the greenlet is dead, at most ``timeout`` seconds.
        Does not raise the greenlet's exception (see :meth:`get`)."""
        if self.ready():
            return
        _wait_on(self, check_timeout(timeout))

    def get(self, block: bool = True, timeout: float | None = None):
        """Return the value, or raise the exception that ended the greenlet.

        Not ready and ``block`` false, or still not ready after ``timeout``:
        raise :class:`labkit.Timeout`.
        """
        if not self.ready():
            if not block:
                raise Timeout()
            timeout = check_timeout(timeout)
            if not _wait_on(self, timeout):
                raise Timeout(timeout)
        if self._exc_info is not None:
            raise self._exc_info[1].with_traceback(self._exc_info[2])
        return self.value

    # -- links ------------------------------------------------------------
    # Linkable's mechanism (labkit._lines.Links), made at the first rawlink:
    # a spawn that nobody links to pays nothing for it.
    def rawlink(self, callback: Callable) -> None:
        """Call ``callback(self)`` in the hub once dead. Must not block."""
        links = self._links
        if links is None:
            links = self._links = Links(self.parent)
            if self.ready():
                links.fire()
        links.add(callback, self)

    def link(self, callback: Callable) -> None:
        """Call ``callback(self)`` in a new greenlet once dead."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        self.rawlink(_SpawnedLink(callback))

    def link_value(self, callback: Callable) -> None:
        """Like link, only if the greenlet ends successfully."""
        self.link(_SuccessLink(callback, want_success=True))

    def link_exception(self, callback: Callable) -> None:
        """Like link, only if the greenlet ends with an exception."""
        self.link(_SuccessLink(callback, want_success=False))

    def unlink(self, callback: Callable) -> None:
        """Remove a callback added by rawlink/link (no error if absent)."""
        if self._links is not None:
            self._links.unlink(callback)

    def unlink_all(self) -> None:
        if self._links is not None:
            self._links.unlink_all()

    def has_links(self) -> int:
        """How many callbacks are linked (a true value if any)."""
        return self._links.linkcount() if self._links is not None else 0


#: the slot descriptor that a subclass's _run method overrides
_RUN_SLOT = Greenlet.__dict__["_run"]


def _no_run(*args, **kwargs):
    raise NotImplementedError("pass run= or override _run in a subclass")


def _no_spawner():
    return None


#: callbacks of Greenlet.add_spawn_callback, or None (the common case)
_spawn_callbacks = None


def _call_spawn_callbacks(g) -> None:
    for callback in list(_spawn_callbacks):
        callback(g)


class _SpawnedLink:
    """A link callback that runs in a greenlet of its own (it may block)."""

    __slots__ = ("callback",)

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, source) -> None:
        g = greenlet(self.callback, getcurrent())
        g.switch(source)

    def __eq__(self, other):
        return self.callback == getattr(other, "callback", other)

    __hash__ = None


class _SuccessLink:
    __slots__ = ("callback", "want_success")

    def __init__(self, callback, want_success: bool):
        self.callback = callback
        self.want_success = want_success

    def __call__(self, source) -> None:
        if source.successful() == self.want_success:
            self.callback(source)

    def __eq__(self, other):
        return self.callback == getattr(other, "callback", other)

    __hash__ = None


_counter = 0


def _next_number() -> int:
    global _counter
    _counter += 1
    return _counter


def _wait_on(obj, timeout: float | None) -> bool:
    """Park until ``obj`` (anything with rawlink/unlink/ready) is ready.
    True if it is, False if ``timeout`` passed first."""
    hub = get_hub()
    waiter = Waiter(hub, "join")
    switch = waiter.switch
    obj.rawlink(switch)
    timer = deadline(hub, timeout, switch, _TIMED_OUT) if timeout is not None else None
    try:
        result = waiter.get()
    finally:
        if timer is not None:
            timer.cancel()
        obj.unlink(switch)
    return result is not _TIMED_OUT


_TIMED_OUT = object()


# -- module-level helpers (gevent names) ------------------------------------

def spawn(function: Callable, *args, **kwargs) -> Greenlet:
    """Create a :class:`Greenlet` running ``function(*args, **kwargs)`` and start it."""
    g = Greenlet(function, *args, **kwargs)
    g.start()
    return g


def spawn_later(seconds: float, function: Callable, *args, **kwargs) -> Greenlet:
    """Like spawn, but the greenlet starts after ``seconds``."""
    g = Greenlet(function, *args, **kwargs)
    g.start_later(seconds)
    return g


class _ReadyQueue:
    """The objects that became ready, in order, and the greenlet waiting for them."""

    __slots__ = ("hub", "items", "waiter", "timed_out")

    def __init__(self, hub):
        self.hub = hub
        self.items: list = []
        self.waiter: Waiter | None = None
        self.timed_out = False

    def put(self, obj) -> None:  # a rawlink callback: runs in the hub
        self.items.append(obj)
        self._wake()

    def time_out(self) -> None:  # a timer callback: runs in the hub
        self.timed_out = True
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            waiter.switch(None)

    def wait(self) -> None:
        """Park until something is put or the timeout passes."""
        while not self.items and not self.timed_out:
            self.waiter = Waiter(self.hub, "wait")
            try:
                self.waiter.get()
            finally:
                self.waiter = None


def iwait(objects: Iterable, timeout: float | None = None, count: int | None = None):
    """Yield each of ``objects`` as it becomes ready (anything with rawlink:
    greenlets, Events, AsyncResults), at most ``count`` of them, until
    ``timeout`` seconds have passed.

    The iterator is also a context manager: leaving the ``with`` block stops
    watching the objects that are left (as exhausting it does), so a loop
    may stop early without leaving links behind::

        with iwait(greenlets) as ready:
            first = next(ready)
    """
    return _WaitIterator(_iwait(objects, timeout, count))


class _WaitIterator:
    """iwait's iterator: a generator that is also a context manager."""

    __slots__ = ("_items",)

    def __init__(self, items):
        self._items = items

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._items)

    def close(self) -> None:
        """Stop watching the objects not yet yielded."""
        self._items.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _iwait(objects: Iterable, timeout: float | None, count: int | None):
    objects = list(objects)
    if timeout is not None:
        timeout = check_seconds(timeout, "timeout")
    if count is None:
        count = len(objects)
    elif count < 0:
        raise ValueError(f"count must be >= 0, not {count!r}")
    if not objects or count == 0:
        return
    hub = get_hub()
    queue = _ReadyQueue(hub)
    for obj in objects:
        obj.rawlink(queue.put)
    timer = hub.loop.timer(timeout, queue.time_out) if timeout is not None else None
    try:
        for _ in range(count):
            queue.wait()
            if not queue.items:
                return  # timed out
            yield queue.items.pop(0)
    finally:
        if timer is not None:
            timer.cancel()
        for obj in objects:
            obj.unlink(queue.put)


def wait(objects: Iterable | None = None, timeout: float | None = None,
         count: int | None = None) -> list | bool:
    """Wait for ``objects`` to become ready; return those that are.

    With no objects, run the loop until it has nothing left to do (True) or
    ``timeout`` passes (False).
    """
    if objects is None:
        return get_hub().join(timeout)
    return list(iwait(objects, timeout, count))


def joinall(greenlets: Iterable, timeout: float | None = None,
            raise_error: bool = False, count: int | None = None) -> list:
    """Wait for the greenlets to finish; return the ones that did.

    With ``raise_error``, the first failure is raised as soon as it is seen.
    """
    greenlets = list(greenlets)
    if not raise_error and timeout is None and count is None:
        # The common case: join one by one, no per-call bookkeeping.
        for g in greenlets:
            g.join()
        return greenlets
    done = []
    for g in iwait(greenlets, timeout, count):
        if raise_error and g.exception is not None:
            raise g.exception
        done.append(g)
    return done


#: Greenlet's own kill (killall batches the kills of Greenlets that use it)
_kill = Greenlet.kill


def killall(greenlets: Iterable, exception=GreenletExit, block: bool = True,
            timeout: float | None = None) -> None:
    """Kill every greenlet (Greenlets and raw greenlets); with ``block``,
    wait for all to die, and raise :class:`Timeout` if ``timeout`` seconds
    pass first."""
    from labkit.hub import kill
    greenlets = list(greenlets)
    hub = get_hub()
    # The kills are queued on the hub in list order, as one kill() per
    # greenlet would queue them (gevent too). A run of consecutive started
    # Greenlets of this hub goes in one hub callback (run_batch): their
    # kill() would queue a Callback, a bound method and an args tuple each,
    # three objects per greenlet for the allocator and the collector, a
    # million of each for a million sleepers (issue 21). Anything else -- a
    # raw greenlet, a subclass with its own kill(), another thread's
    # greenlet, a greenlet never started (it dies right here) -- goes
    # through kill(), after the batch of the run before it. A dead Greenlet
    # is skipped (its kill() does nothing) and does not split a run.
    batch = []
    for g in greenlets:
        if g.__class__ is Greenlet or (isinstance(g, Greenlet) and type(g).kill is _kill):
            if greenlet.__bool__(g) and g.parent is hub:   # started, not dead
                batch.append(g)
                continue
            if g.dead:
                continue
        if batch:   # each greenlet's kill(block=False) callback, in one hub entry
            hub.run_batch(Greenlet._throw_if_alive, batch, exception)
            batch = []
        kill(g, exception)
    if batch:
        hub.run_batch(Greenlet._throw_if_alive, batch, exception)
    if block:
        alive = [g for g in greenlets if not g.dead]
        if not alive:
            return
        raw = [g for g in alive if not hasattr(g, "rawlink")]
        linked = [g for g in alive if hasattr(g, "rawlink")]
        t = Timeout._start_new_or_dummy(timeout)
        try:
            joinall(linked)
            while any(not g.dead for g in raw):   # raw greenlets have no links
                from labkit.hub import sleep
                sleep(0.001)
        finally:
            t.cancel()
