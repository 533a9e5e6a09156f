"""Lines and links: the server's side of the waits that someone else serves
(the other half of :mod:`labkit._park`).

A greenlet that waits *in a line* is served by whoever pops it: a release,
a put, a set(), a greenlet's death. This module holds those lines and what
their servers do:

    Ticket      a place in a FIFO line      Semaphore, Queue, thread locks
    Linkable    a FIFO of one-shot links    Event, AsyncResult, Semaphore
    Links       Linkable for an owner that  a Greenlet's links, a thread-pool
                cannot inherit it           Future's
    ThreadsafeLink  a link whose callback runs in another thread's hub

How a greenlet *parks* in them (Ticket.park, Linkable's waits)
is written in :mod:`labkit._park` with every other park, and inherited from
there (``_TicketWaits``, ``_LinkableWaits``): the refusal to park in the hub,
the take-back of a queued wake-up and the tracer's resume record stay in one
module, whose tracing hook is one global read.
"""
from __future__ import annotations

import sys
from collections import deque
from typing import Callable

from greenlet import getcurrent

from labkit import _native
from labkit._park import EMPTY, _LinkableWaits, _TicketWaits
from labkit.hub import get_hub, hub_for_this_thread

__all__ = ["Linkable", "Links", "ThreadsafeLink", "Ticket", "EMPTY"]

_get_ident = _native.get_ident

# -- Linkable: a FIFO of one-shot callbacks --------------------------------------

class Linkable(_LinkableWaits):
    """Base class: a FIFO of one-shot callbacks, run in the hub when ready().

    Subclasses define :meth:`ready` and call :meth:`_check_and_notify` when
    they may have become ready. ``_notify_all`` says whether a notification
    wakes every linked callback (Event) or stops as soon as the object is no
    longer ready (a Semaphore whose permits ran out).
    """

    __slots__ = ("hub", "_links", "_batch", "_notifier", "__weakref__")

    _notify_all = True

    def __init__(self):
        #: the hub whose thread runs our notifications; bound by the first
        #: waiter or rawlink, re-bound whenever nobody is linked
        self.hub = None
        #: callbacks waiting for the next notification, oldest first
        self._links: deque = deque()
        #: callbacks of the notification that is running now (else None);
        #: kept apart so that unlink() can still take one out of it
        self._batch: deque | None = None
        #: the scheduled notification (a hub Callback), or None
        self._notifier = None

    def ready(self) -> bool:  # pragma: no cover - always overridden
        raise NotImplementedError

    # -- links ------------------------------------------------------------
    def rawlink(self, callback: Callable) -> None:
        """Call ``callback(self)`` once, in the hub, when ready (at once if
        it already is). It must not block."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        self._bind_hub(get_hub())
        self._links.append(callback)
        self._check_and_notify()

    def unlink(self, callback: Callable) -> bool:
        """Forget a callback added with rawlink (no error if it is not
        there); True if it was there."""
        for links in (self._links, self._batch):
            if links:
                try:
                    links.remove(callback)
                    return True
                except ValueError:
                    pass
        return False

    def linkcount(self) -> int:
        return len(self._links) + len(self._batch or ())

    def unlink_all(self) -> None:
        """Forget every link (a notification running now calls no more)."""
        self._links.clear()
        if self._batch:
            self._batch.clear()

    def _bind_hub(self, hub) -> None:
        # Nobody linked: the caller's hub becomes ours. (This also forgets a
        # hub that was destroyed and replaced since the last wait.)
        if self.hub is not hub and not self._links and not self._batch:
            self.hub = hub

    # -- notification -----------------------------------------------------
    def _check_and_notify(self) -> None:
        """Schedule a notification if ready, linked, and none is pending."""
        if self._links and self._notifier is None and self.ready():
            self._schedule_notify()

    def _schedule_notify(self) -> None:
        hub = self.hub
        self._notifier = True
        if hub.thread_ident == _get_ident():
            # A bare bound method, not hub.run_callback's Callback wrapper:
            # one C-level call less on the hub's stack, which every switch
            # into a waiter has to save and restore.
            hub.schedule(self._notify_links)
        else:  # set() from another thread: wake that hub's loop
            # (through the loop's thread-safe entry, gevent's: code that
            # wraps hub.loop sees the cross-thread wake-ups)
            hub.loop.run_callback_threadsafe(self._notify_links)

    def _notify_links(self) -> None:
        """The hub callback: call the links present now, oldest first."""
        self._notifier = None
        links = self._links
        if len(links) == 1 and (self._notify_all or self.ready()):
            # The common case, one waiter: no batch to set aside. (pop, not
            # popleft: the same for one link, and a Links' list has no popleft.)
            link = links.pop()
            try:
                link(self)  # may switch into a waiter; it comes back here
            except BaseException:
                self.hub.handle_error((link, self), *sys.exc_info())
        else:
            self._notify_batch()
        if self._links and self._notifier is None and self.ready():
            self._schedule_notify()

    def _notify_batch(self) -> None:
        # Links added while we notify (a woken waiter that waits again)
        # go to a fresh deque, for the next notification.
        batch = self._batch = self._links
        self._links = deque()
        only_while_ready = not self._notify_all
        try:
            while batch:
                if only_while_ready and not self.ready():
                    break
                link = batch.popleft()
                try:
                    link(self)
                except BaseException:
                    self.hub.handle_error((link, self), *sys.exc_info())
        finally:
            self._batch = None
            if batch:  # stopped early: the rest keep their place in line
                batch.extend(self._links)
                self._links = batch

class ThreadsafeLink:
    """A link that runs ``callback(source)`` in another thread's ``hub``:
    the notification runs in the Linkable's hub, the callback must run in
    the hub of whoever linked it (a waiter of another thread, a Future's
    linker). Compares equal to ``callback``, so ``unlink(callback)`` finds
    it. A post already in flight when it is unlinked still arrives: link
    only callbacks that absorb a late call (a Waiter's switch does)."""

    __slots__ = ("hub", "callback")

    def __init__(self, hub, callback: Callable):
        self.hub = hub
        self.callback = callback

    def __call__(self, source) -> None:
        self.hub.run_callback_threadsafe(self.callback, source)

    def __eq__(self, other):
        return other is self or self.callback == other

    __hash__ = None


# -- Links: Linkable's mechanism for owners that cannot inherit it ------------------

class Links(Linkable):
    """The rawlink/unlink of an object that cannot be a :class:`Linkable`
    itself, on Linkable's one mechanism (FIFO, one-shot, in the hub, the
    same thread rules):

    - a :class:`labkit.Greenlet` (a subclass of greenlet's C type: its
      instance layout admits no second base with slots);
    - a ``concurrent.futures.Future`` of labkit's thread pool (the stdlib's
      class; completed in a worker thread).

    The owner makes one at its first ``rawlink``, forwards ``rawlink`` to
    :meth:`add` (which calls each callback with the *owner*, not with this
    object), ``unlink`` to :meth:`unlink`, and calls :meth:`fire` once, from
    any thread, when it becomes ready; links added later run at once (from
    the hub). ``hub``: the hub that runs the notifications (a greenlet's
    parent); None binds it to the first linker's, as a Linkable does.

    Its links are a list, not a deque: a deque allocates a block of 64
    slots at once (760 bytes in all), and a Links usually holds one link
    for its whole life -- the Group's that tracks a pooled greenlet (one per
    server connection), or a join's. A list of one is 88 bytes. The rarer
    notification of several links runs them from a deque made for it
    (:meth:`_notify_batch`): many joiners cost O(n), not O(n^2).
    """

    __slots__ = ("_fired", "_pinned")

    def __init__(self, hub=None):
        # Linkable.__init__'s fields, with a list for the links (see above)
        self.hub = hub
        self._links = []
        self._batch = None
        self._notifier = None
        self._fired = False
        #: the notifications always run in the hub given (a greenlet's own)
        self._pinned = hub is not None

    def ready(self) -> bool:
        return self._fired

    def fire(self, _source=None) -> None:
        """The owner is ready (any thread; also a Future's done callback):
        run the links, and every link added from now on, in the hub."""
        self._fired = True
        self._check_and_notify()

    def add(self, callback: Callable, source) -> None:
        """rawlink for the owner ``source``: call ``callback(source)`` once,
        when fired, in the linking thread's hub (Linkable's rule for a link
        made from the hub's own thread; one made from another thread that
        has a hub of its own runs there)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {callback!r}")
        link = _Relay(callback, source)
        if not self._pinned:
            hub = get_hub()
            self._bind_hub(hub)
        elif self.hub.thread_ident == _get_ident():
            hub = self.hub
        else:  # (a thread without a hub: the callback runs in ours)
            hub = hub_for_this_thread()
        if hub is not None and hub is not self.hub:
            link = ThreadsafeLink(hub, link)
        self._links.append(link)
        self._check_and_notify()

    def _bind_hub(self, hub) -> None:
        if not self._pinned:
            Linkable._bind_hub(self, hub)

    def _notify_batch(self) -> None:
        # Linkable's, for a list of links. Once fired a Links stays ready,
        # so every link present now runs; links added meanwhile (by a link)
        # wait in a fresh list for the next notification.
        batch = self._batch = deque(self._links)
        self._links = []
        try:
            while batch:
                link = batch.popleft()
                try:
                    link(self)
                except BaseException:
                    self.hub.handle_error((link, self), *sys.exc_info())
        finally:
            self._batch = None
            if batch:  # (handle_error itself raised): the rest keep their place
                batch.extend(self._links)
                self._links = list(batch)


class _Relay:
    """A link of :class:`Links`: calls ``callback(source)`` (the owner)
    where Linkable would pass the Links. Compares equal to ``callback``
    (and, through it, to what a wrapper such as a Greenlet's link() wraps),
    so ``unlink(callback)`` finds it. An exception is reported to the hub
    with the callback and the owner, as the owner's own links would."""

    __slots__ = ("callback", "source")

    def __init__(self, callback: Callable, source):
        self.callback = callback
        self.source = source

    def __call__(self, _links) -> None:
        try:
            self.callback(self.source)
        except BaseException:  # (Linkable runs links in the hub greenlet)
            getcurrent().handle_error((self.callback, self.source), *sys.exc_info())

    def __eq__(self, other):
        return other is self or self.callback == other

    __hash__ = None


class Ticket(_TicketWaits):
    """A parked greenlet's place in a line, and what it was handed.

    Semaphores and queues keep their blocked greenlets in lines: deques of
    tickets, oldest first. To serve the first one, pop it, set its ``value``
    (a permit, an item, "accepted") and call :meth:`schedule_wake`. So
    "still in line" and "``value is EMPTY``" are the same thing, which is
    what lets a greenlet that resumes for another reason (timeout, kill)
    know whether it must leave the line or pass on what it was handed::

        ticket = Ticket(hub, getcurrent())
        try:
            served = ticket.park(line, timeout)   # False: timed out, left the line
        except BaseException:
            if ticket.value is not EMPTY:
                ...pass it on...                  # killed after being served
            raise

    The wake-up is a bound method in the hub's ready deque, not a Waiter:
    the cheapest way back into the greenlet. ``wake`` is a no-op once the
    greenlet has resumed, so a late one (timer and hand-off in the same
    pass) can never wake it from some later, unrelated wait.
    """

    __slots__ = ("hub", "greenlet", "value", "item", "deadline")

    def __init__(self, hub, greenlet, item=None):
        self.hub = hub
        self.greenlet = greenlet   # None once woken or gone
        self.value = EMPTY         # what the server handed us
        self.item = item           # what a putter offers
        self.deadline = 0          # loop-clock ns; its meaning is the line's (Semaphore)

    def schedule_wake(self) -> None:
        """Server side: resume the greenlet soon, from the hub."""
        self.hub.schedule(self.wake)

    def wake(self) -> None:
        g = self.greenlet
        if g is not None:
            self.greenlet = None
            g.switch()
