"""Groups and pools of greenlets (gevent.pool).

    group = Group()
    group.spawn(crawl, url1)          # tracked until it dies
    group.spawn(crawl, url2)
    group.join()                      # park until the group is empty

    pool = Pool(10)                   # at most 10 running at once
    for url in urls:
        pool.spawn(crawl, url)        # parks while 10 are running
    pages = pool.map(fetch, urls)     # results in input order
    for page in pool.imap_unordered(fetch, urls):   # as they finish
        ...

The contract:

- A :class:`Group` tracks greenlets until they die: each added greenlet gets a
  ``rawlink`` that discards it, so ``len(group)`` counts the live ones.
  ``join`` waits until the group is empty *at least once*; ``kill`` kills
  every member.
- A :class:`Pool` is a Group with ``size`` slots. ``spawn``/``start``/``add``
  take a slot first and park while none is free; slots are handed out in the
  order greenlets asked for them (FIFO). ``add(g, blocking=False)`` and a
  timed-out ``add`` raise :class:`PoolFull`. ``Pool(None)`` is unbounded;
  ``Pool(0)`` has no slot at all (useful only with
  ``wait_available(timeout)``), as in gevent.
- The mapping methods run one greenlet of the group per item: ``map`` returns
  the results in input order (raising the first failure, in input order, after
  every item ran); ``imap`` yields them in input order, ``imap_unordered`` as
  they finish. With ``maxsize=N`` at most N finished results wait for the
  reader: the producer parks instead of spawning more.
- A slot may outlive its greenlet (labkit's addition, for servers whose
  connections give up their greenlet while they wait: labkit.wsgi's asleep
  keep-alive connections): ``keep_slot(g)`` takes the member ``g`` out of
  the group but keeps its slot taken; ``start_on_kept_slot(g2)`` starts
  ``g2`` on a kept slot (it never parks), ``release_kept_slot()`` gives one
  back. ``len()`` and ``join`` count members only; ``free_count``,
  ``full``, ``wait_available`` and ``add`` see kept slots as taken.
- ``apply`` runs the function in a greenlet of the group and waits for it,
  except when the caller already is one of the group's greenlets: then it runs
  right there (waiting for a slot of a full pool from inside it would never
  end).

Every wake-up here is a :class:`~labkit.hub.Waiter` switched from the hub;
nothing polls.

Layout: this module is Group and Pool. A Pool's slots are a
:class:`labkit.lock.FifoSemaphore` (first come, first served: a spawner
parked in a full pool is never overtaken), a Group's a DummySemaphore; the
iterators that ``imap``/``imap_unordered`` return (shared with ThreadPool)
are in :mod:`labkit._imap`, re-exported here.
"""
from __future__ import annotations

import numbers
import queue
from typing import Callable, Iterable

from greenlet import GreenletExit, getcurrent

from labkit._imap import IMap, IMapUnordered, _Failure  # noqa: F401 - re-exported
from labkit.greenlet import Greenlet
from labkit._park import Waiter, check_seconds, wake_waiter
from labkit.hub import get_hub
from labkit.lock import DummySemaphore, FifoSemaphore
from labkit.timeout import Timeout

__all__ = ["Group", "Pool", "PoolFull"]


class PoolFull(queue.Full):
    """A Pool had no free slot for a non-blocking or timed-out ``add``."""


# -- Group -------------------------------------------------------------------

class Group:
    """A set of greenlets that are still running, with no limit on their number.

    ``Group(greenlets)`` starts with the given ones. A Group is false while
    empty. ``greenlet_class`` (default :class:`labkit.Greenlet`) is what
    :meth:`spawn` creates; set it on an instance or a subclass.
    """

    greenlet_class = Greenlet
    #: a Group never makes spawn park
    _slots = DummySemaphore()
    #: slots kept by keep_slot for a greenlet yet to come (see the module docstring)
    _kept = 0

    def __init__(self, *args):
        if len(args) > 1:
            raise TypeError(f"Group() takes at most one iterable, not {len(args)}")
        #: the live members
        self.greenlets: set = set()
        #: members we already killed, so that kill() kills each only once
        self.dying: set = set()
        #: greenlets parked in join(), woken when the group becomes empty
        self._empty_waiters: list = []
        for greenlet in (args[0] if args else ()):
            Group.add(self, greenlet)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {id(self):#x} {self.greenlets}>"

    def __len__(self) -> int:
        return len(self.greenlets)

    def __contains__(self, greenlet) -> bool:
        return greenlet in self.greenlets

    def __iter__(self):
        return iter(self.greenlets)

    # -- membership -------------------------------------------------------
    def add(self, greenlet) -> None:
        """Track ``greenlet`` until it dies (it should not be started yet)."""
        rawlink = getattr(greenlet, "rawlink", None)
        if rawlink is not None:  # a raw greenlet (the main one) has no links
            rawlink(self._discard)
        self.greenlets.add(greenlet)

    def _discard(self, greenlet) -> None:
        # The rawlink callback: runs in the hub when a member dies.
        self.greenlets.discard(greenlet)
        self.dying.discard(greenlet)
        if not self.greenlets and self._empty_waiters:
            waiters, self._empty_waiters = self._empty_waiters, []
            for waiter in waiters:
                wake_waiter(waiter, True)

    def discard(self, greenlet) -> None:
        """Stop tracking ``greenlet`` (it keeps running)."""
        if greenlet not in self.greenlets:
            return
        self._discard(greenlet)
        unlink = getattr(greenlet, "unlink", None)
        if unlink is not None:
            unlink(self._discard)

    def start(self, greenlet) -> None:
        """Add the unstarted ``greenlet``, then start it."""
        self.add(greenlet)
        greenlet.start()

    def spawn(self, *args, **kwargs):
        """Create a ``greenlet_class(*args, **kwargs)``, add it and start it."""
        greenlet = self.greenlet_class(*args, **kwargs)
        self.start(greenlet)
        return greenlet

    # -- slots that outlive their greenlet (labkit's addition) -------------
    def keep_slot(self, greenlet) -> bool:
        """Take the member ``greenlet`` out of the group (it keeps running)
        but keep the slot it holds taken, for the caller to pass on with
        :meth:`start_on_kept_slot` or give back with
        :meth:`release_kept_slot`. False, and nothing kept, if ``greenlet``
        is not a member. (A Group has no slots: it only counts them.)"""
        if greenlet not in self.greenlets:
            return False
        Group._discard(self, greenlet)  # (not Pool's _discard: it gives the slot back)
        unlink = getattr(greenlet, "unlink", None)
        if unlink is not None:
            unlink(self._discard)
        self._kept += 1
        return True

    def start_on_kept_slot(self, greenlet) -> None:
        """Add the unstarted ``greenlet`` on a slot that :meth:`keep_slot`
        kept, and start it; never parks. Its death frees the slot, as any
        member's does. RuntimeError if no slot is kept."""
        if not self._kept:
            raise RuntimeError("start_on_kept_slot: no slot is kept (see keep_slot)")
        self._kept -= 1
        try:
            Group.add(self, greenlet)
        except BaseException:
            self._kept += 1
            raise
        greenlet.start()

    def release_kept_slot(self) -> None:
        """Give back a slot that :meth:`keep_slot` kept (the work it was
        kept for ended without a greenlet). RuntimeError if none is kept."""
        if not self._kept:
            raise RuntimeError("release_kept_slot: no slot is kept (see keep_slot)")
        self._kept -= 1
        self._slots.release()

    # -- waiting and killing ----------------------------------------------
    def join(self, timeout: float | None = None, raise_error: bool = False) -> bool:
        """Park until the group is empty; False if ``timeout`` passed first.

        With ``raise_error``, re-raise the exception of a greenlet that was a
        member when join was called and failed.
        """
        members = list(self.greenlets) if raise_error else ()
        result = True
        if self.greenlets:
            if timeout is not None:
                timeout = check_seconds(timeout, "timeout")
            result = self._wait_empty(timeout)
        for greenlet in members:
            if greenlet.exception is not None:
                raise greenlet.exception
        return result

    def _wait_empty(self, timeout: float | None) -> bool:
        hub = get_hub()
        waiter = Waiter(hub)
        self._empty_waiters.append(waiter)
        timer = hub.loop.timer(timeout, waiter.switch, False) if timeout is not None else None
        try:
            return waiter.get()
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._empty_waiters:
                self._empty_waiters.remove(waiter)

    def kill(self, exception=GreenletExit, block: bool = True,
             timeout: float | None = None) -> None:
        """Kill every member; with ``block``, wait (at most ``timeout``) until
        the group is empty. Greenlets added meanwhile are killed too."""
        timer = Timeout._start_new_or_dummy(timeout)
        try:
            while self.greenlets:
                for greenlet in list(self.greenlets):
                    if greenlet not in self.dying:
                        self._kill_member(greenlet, exception)
                if not block:
                    break
                # Not joinall: a member is dead a moment before its link
                # removes it from the group; wait for the removal itself.
                self._wait_empty(None)
        except Timeout as timed_out:
            if timed_out is not timer:
                raise
        finally:
            timer.cancel()

    def killone(self, greenlet, exception=GreenletExit, block: bool = True,
                timeout: float | None = None) -> None:
        """Kill ``greenlet`` if it is a member; with ``block``, wait for it."""
        if greenlet in self.greenlets and greenlet not in self.dying:
            self._kill_member(greenlet, exception)
            if block:
                greenlet.join(timeout)

    def _kill_member(self, greenlet, exception) -> None:
        self.dying.add(greenlet)
        kill = getattr(greenlet, "kill", None)
        if kill is not None:
            kill(exception, block=False)
        else:  # a raw greenlet
            get_hub().run_callback(greenlet.throw, exception)

    def full(self) -> bool:
        """Would :meth:`add` park? Never, for a Group."""
        return False

    def wait_available(self, timeout: float | None = None):
        """Park until :meth:`spawn` would not park: at once, for a Group."""
        return None

    # -- mapping ------------------------------------------------------------
    def apply(self, func: Callable, args=None, kwds=None):
        """Call ``func(*args, **kwds)`` in a greenlet of the group and return
        its result (or raise its exception). From a member: call it directly."""
        args = () if args is None else args
        kwds = {} if kwds is None else kwds
        if getcurrent() in self.greenlets:
            return func(*args, **kwds)
        return self.spawn(func, *args, **kwds).get()

    def apply_cb(self, func: Callable, args=None, kwds=None, callback=None):
        """apply(), then ``callback(result)`` in a new greenlet."""
        result = self.apply(func, args, kwds)
        if callback is not None:
            Greenlet.spawn(callback, result)
        return result

    def apply_async(self, func: Callable, args=None, kwds=None, callback=None):
        """Start ``func(*args, **kwds)`` and return its greenlet, never parking.

        A full pool cannot take it now, so then an untracked greenlet waits
        for the slot and runs apply_cb: join the returned greenlet, not the
        group. ``callback(result)`` runs if it succeeds.
        """
        args = () if args is None else args
        kwds = {} if kwds is None else kwds
        if self.full():
            return Greenlet.spawn(self.apply_cb, func, args, kwds, callback)
        greenlet = self.spawn(func, *args, **kwds)
        if callback is not None:
            greenlet.link_value(_PassValue(callback))
        return greenlet

    def map(self, func: Callable, iterable: Iterable) -> list:
        """``[func(x) for x in iterable]``, computed by greenlets of the group.

        Every item is spawned even if one fails; then the first failure in
        input order is raised (later items may still be running).
        """
        if _has_stock_spawn(type(self)):
            greenlets = self._spawn_each(func, iterable)
        else:
            greenlets = [self.spawn(func, item) for item in iterable]
        return [greenlet.get() for greenlet in greenlets]

    def _spawn_each(self, func: Callable, iterable: Iterable) -> list:
        """``[self.spawn(func, item) for item in iterable]`` with spawn, start
        and add unrolled into one loop. For a cheap ``func`` the calls are
        most of map's cost; _has_stock_spawn says when unrolling is exact."""
        make, take_slot = self.greenlet_class, self._slots.acquire
        track, discard = self.greenlets.add, self._discard
        greenlets = []
        for item in iterable:
            greenlet = make(func, item)
            take_slot()
            greenlet.rawlink(discard)
            track(greenlet)
            greenlet.start()
            greenlets.append(greenlet)
        return greenlets

    def map_cb(self, func: Callable, iterable: Iterable, callback=None) -> list:
        result = self.map(func, iterable)
        if callback is not None:
            callback(result)
        return result

    def map_async(self, func: Callable, iterable: Iterable, callback=None) -> Greenlet:
        """Run map() in a new greenlet and return it; ``callback(list)`` at the end."""
        return Greenlet.spawn(self.map_cb, func, iterable, callback)

    def imap(self, func: Callable, *iterables, maxsize: int | None = None):
        """Like ``map(func, *iterables)``, lazily, in input order.
        At most ``maxsize`` finished results wait for the reader."""
        return IMap.spawn(func, zip(*iterables), self.spawn, maxsize)

    def imap_unordered(self, func: Callable, *iterables, maxsize: int | None = None):
        """Like imap, but yields each result as soon as it is ready."""
        return IMapUnordered.spawn(func, zip(*iterables), self.spawn, maxsize)


def _has_stock_spawn(cls) -> bool:
    """True unless a subclass overrides spawn, start or add (then map must
    call them one by one, as gevent's does)."""
    return (cls.spawn is Group.spawn or cls.spawn is Pool.spawn) and \
        (cls.start is Group.start or cls.start is Pool.start) and \
        (cls.add is Group.add or cls.add is Pool.add)


class _PassValue:
    """A link_value callback that passes the greenlet's value, not the greenlet."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable):
        self.callback = callback

    def __call__(self, source) -> None:
        self.callback(source.value)


# -- Pool --------------------------------------------------------------------

class Pool(Group):
    """A Group with at most ``size`` members (None: unbounded).

    ``spawn``, ``start`` and ``add`` park while the pool is full; see
    :meth:`add` for the non-blocking form.
    """

    def __init__(self, size: int | None = None, greenlet_class=None):
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, numbers.Integral):
                raise TypeError(f"size must be an int or None, not {type(size).__name__}")
            if size < 0:
                raise ValueError(f"size must not be negative: {size!r}")
        Group.__init__(self)
        self.size = size
        if greenlet_class is not None:
            self.greenlet_class = greenlet_class
        self._slots = DummySemaphore() if size is None else FifoSemaphore(size)

    def free_count(self) -> int:
        """About how many more greenlets fit without parking (1 if unbounded)."""
        if self.size is None:
            return 1
        return max(0, self.size - len(self) - self._kept)

    def full(self) -> bool:
        """True if :meth:`add` would park now."""
        return self.free_count() <= 0

    def wait_available(self, timeout: float | None = None) -> int:
        """Park until a slot is free (at most ``timeout``); return free_count().
        For ``Pool(0)`` this parks until the timeout, or forever."""
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        if self._slots.acquire(True, timeout):
            self._slots.release()
        return self.free_count()

    def add(self, greenlet, blocking: bool = True, timeout: float | None = None) -> None:
        """Take a slot for ``greenlet`` and track it.

        Parks while the pool is full, at most ``timeout`` seconds; raises
        :class:`PoolFull` if it is full and ``blocking`` is false, or if the
        timeout passed. ``greenlet`` should not be started yet: while we
        park, a started one could run to completion untracked.
        """
        if timeout is not None:
            timeout = check_seconds(timeout, "timeout")
        if not self._slots.acquire(blocking, timeout):
            raise PoolFull()
        try:
            Group.add(self, greenlet)
        except BaseException:
            self._slots.release()
            raise

    def start(self, greenlet, blocking: bool = True, timeout: float | None = None) -> None:
        """add() the unstarted ``greenlet``, then start it."""
        self.add(greenlet, blocking, timeout)
        greenlet.start()

    def spawn(self, *args, **kwargs):
        greenlet = self.greenlet_class(*args, **kwargs)
        self.start(greenlet)
        return greenlet

    def _discard(self, greenlet) -> None:
        if greenlet in self.greenlets:  # each member gives its slot back once
            Group._discard(self, greenlet)
            self._slots.release()
