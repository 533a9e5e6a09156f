"""Queues between greenlets (gevent.queue, with Python 3.13's shutdown()).

    q = Queue(maxsize=10)        # put() blocks while 10 items wait: back-pressure
    spawn(producer, q)           # q.put(item)
    for item in q:               # q.get() until StopIteration is put, or shutdown
        handle(item)

The contract:

- Blocked getters and blocked putters each wait in a FIFO line.
- **Hand-off, no barging.** ``put()`` while getters wait gives the item
  straight to the longest-waiting getter (it never enters the queue), and
  ``get()`` from a full queue takes the longest-waiting putter's item into
  the freed slot. A greenlet that arrives meanwhile cannot take what was
  handed to someone else. (Invariant: getters wait => the queue is empty.)
- Neither put() nor get() ever switches when it does not have to block: the
  served greenlet is woken from the hub, and the caller keeps running.
- A getter killed after an item was handed to it, but before it ran, gives
  the item back (to the next getter, or to the front of the queue): no item
  is ever lost with a dead greenlet.
- ``shutdown(immediate=False)``: afterwards put() raises :class:`ShutDown`;
  get() drains what is left, then raises ShutDown (at once if
  ``immediate``, which also drops the items). Blocked putters and getters
  are woken with ShutDown. Iteration ends at shutdown.
- One thread: a queue connects the greenlets of one hub, like gevent's.

``Queue(maxsize=None)``: None, 0 or negative (as in gevent) means unbounded. Queue has
``task_done()``/``join()``; ``JoinableQueue`` is the same class (gevent's
alias); ``SimpleQueue`` is Queue without them. ``Channel`` holds nothing: a
put() waits until a getter takes the item (a rendezvous).
"""
from __future__ import annotations

import heapq
import queue as _stdlib_queue
import types
from collections import deque

from greenlet import getcurrent

from labkit._lines import EMPTY, Ticket
from labkit._park import check_seconds, check_timeout, sleep
from labkit.event import Event
from labkit.hub import get_hub

__all__ = ["Queue", "SimpleQueue", "LifoQueue", "PriorityQueue", "JoinableQueue",
           "Channel", "Empty", "Full", "ShutDown"]

# The stdlib's exceptions, so that ``except queue.Empty`` catches ours too.
Empty = _stdlib_queue.Empty
Full = _stdlib_queue.Full


class _ShutDown(Exception):
    """Raised by put() and get() on a queue that was shut down."""


ShutDown = getattr(_stdlib_queue, "ShutDown", _ShutDown)  # Python 3.13+

#: handed to a parked putter or getter by shutdown()
_SHUT_DOWN = object()


#: seconds, None, or a Timeout object (labkit._park.check_timeout)
_check_timeout = check_timeout


class SimpleQueue:
    """A FIFO queue, bounded by ``maxsize`` (None or 0: unbounded).

    Subclasses change the order through the stdlib's hooks: ``_init``,
    ``_put``, ``_get``, ``_peek`` and ``_qsize``.
    """

    #: ``SimpleQueue[int]`` in annotations, as the stdlib's queues allow
    __class_getitem__ = classmethod(types.GenericAlias)

    def __init__(self, maxsize: int | None = None, items=()):
        if maxsize is not None:
            if isinstance(maxsize, bool) or not isinstance(maxsize, int):
                raise TypeError(f"maxsize must be an int or None, not {type(maxsize).__name__}")
            if maxsize <= 0:  # like gevent (and the stdlib): unbounded
                maxsize = None
        #: None: unbounded; else how many items may wait in the queue
        self._capacity = maxsize
        #: Tickets of greenlets blocked in get(), oldest first
        self.getters: deque = deque()
        #: Tickets of greenlets blocked in put() (ticket.item), oldest first
        self.putters: deque = deque()
        #: Tickets of greenlets blocked in peek(), woken by any new item
        self._peekers: deque = deque()
        self.is_shutdown = False
        # The stdlib's hook takes (maxsize); items only when there are some,
        # so subclasses written for the stdlib's _init keep working.
        if items:
            self._init(maxsize, items)
        else:
            self._init(maxsize)

    # -- the stdlib's storage hooks ---------------------------------------
    def _init(self, maxsize, items=()) -> None:
        self.queue = deque(items)

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item) -> None:
        self.queue.append(item)

    def _get(self):
        return self.queue.popleft()

    def _peek(self):
        return self.queue[0]

    def _put_back(self, item) -> None:
        """Return an item a dead getter was handed: it goes first again."""
        self.queue.appendleft(item)

    # -- size -------------------------------------------------------------
    @property
    def maxsize(self) -> int | None:
        return self._capacity

    def qsize(self) -> int:
        return self._qsize()

    __len__ = qsize

    def __bool__(self) -> bool:
        return True  # a queue is true even when empty (gevent)

    def empty(self) -> bool:
        return not self._qsize()

    def full(self) -> bool:
        return self._capacity is not None and self._qsize() >= self._capacity

    def getting(self) -> int:
        """How many greenlets are blocked in get()."""
        return len(self.getters)

    def putting(self) -> int:
        """How many greenlets are blocked in put()."""
        return len(self.putters)

    # -- put --------------------------------------------------------------
    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; if the queue is full, wait for room (at most
        ``timeout`` seconds, then Full; at once if not ``block``)."""
        if self.is_shutdown:
            raise ShutDown
        if self.getters:
            self._hand_to_getter(item)
        elif self._capacity is None or self._qsize() < self._capacity:
            self._put(item)
            if self._peekers:
                self._wake_peekers()
        elif not block:
            raise Full
        else:
            self._wait_to_put(item, _check_timeout(timeout))
            return
        self._did_put_task()

    def put_nowait(self, item) -> None:
        self.put(item, False)

    def _did_put_task(self) -> None:
        """Hook: an item was accepted (JoinableQueue counts it)."""

    def _hand_to_getter(self, item) -> None:
        ticket = self.getters.popleft()
        ticket.value = item
        ticket.schedule_wake()

    def _wait_to_put(self, item, timeout) -> None:
        ticket = Ticket(get_hub(), getcurrent(), item)
        if not ticket.park(self.putters, timeout, "Queue.put"):
            raise Full
        if ticket.value is _SHUT_DOWN:
            raise ShutDown
        # Accepted: a getter moved our item into the queue (or took it).

    def _accept_putter(self) -> None:
        """Room was made: the longest-waiting putter's item goes in."""
        ticket = self.putters.popleft()
        self._put(ticket.item)
        self._did_put_task()
        ticket.value = True
        ticket.schedule_wake()

    # -- get --------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None):
        """Remove and return the next item; if there is none, wait for one
        (at most ``timeout`` seconds, then Empty; at once if not ``block``)."""
        if self._qsize():
            item = self._get()
            if self.putters:
                self._accept_putter()
            return item
        if self.putters:  # a Channel: take the item straight from a putter
            return self._take_from_putter()
        if self.is_shutdown:
            raise ShutDown
        if not block:
            raise Empty
        return self._wait_to_get(_check_timeout(timeout))

    def get_nowait(self):
        return self.get(False)

    def _take_from_putter(self):
        ticket = self.putters.popleft()
        self._did_put_task()
        ticket.value = True
        ticket.schedule_wake()
        return ticket.item

    def _wait_to_get(self, timeout):
        ticket = Ticket(get_hub(), getcurrent())
        try:
            if not ticket.park(self.getters, timeout, "Queue.get"):
                raise Empty
        except BaseException:
            item = ticket.value
            if item is not EMPTY and item is not _SHUT_DOWN:
                self._give_back(item)  # handed to us, but we are leaving
            raise
        item = ticket.value
        if item is _SHUT_DOWN:
            raise ShutDown
        return item

    def _give_back(self, item) -> None:
        if self.getters:
            self._hand_to_getter(item)
        else:
            self._put_back(item)
            if self._peekers:
                self._wake_peekers()

    # -- peek -------------------------------------------------------------
    def peek(self, block: bool = True, timeout: float | None = None):
        """Return the next item without removing it; wait for one like get()."""
        while not self._qsize():
            if self.is_shutdown:
                raise ShutDown
            if not block:
                raise Empty
            ticket = Ticket(get_hub(), getcurrent())
            if not ticket.park(self._peekers, _check_timeout(timeout), "Queue.peek"):
                raise Empty
            # Woken by a new item; a getter may have taken it already
            # (then wait again, with the full timeout: gevent does too).
        return self._peek()

    def peek_nowait(self):
        return self.peek(False)

    def _wake_peekers(self) -> None:
        peekers = self._peekers
        while peekers:
            ticket = peekers.popleft()
            ticket.value = True
            ticket.schedule_wake()

    # -- shutdown ---------------------------------------------------------
    def shutdown(self, immediate: bool = False) -> None:
        """Refuse further puts; wake every blocked putter and getter with
        ShutDown. With ``immediate``, also drop the items still queued."""
        self.is_shutdown = True
        if immediate:
            self._drain()
        for line in (self.getters, self.putters, self._peekers):
            while line:
                ticket = line.popleft()
                ticket.value = _SHUT_DOWN
                ticket.schedule_wake()

    def _drain(self) -> None:
        while self._qsize():
            self._get()
            self._dropped_task()

    def _dropped_task(self) -> None:
        """Hook: shutdown(immediate=True) dropped an item."""

    # -- iteration --------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        """The next item, waiting for it; stops at the item StopIteration
        (gevent's convention) or when the queue is shut down and drained."""
        try:
            item = self.get()
        except ShutDown:
            raise StopIteration from None
        if item is StopIteration:
            raise StopIteration
        return item

    def copy(self):
        return type(self)(self._capacity, list(self.queue))

    def __repr__(self) -> str:
        parts = [f"maxsize={self._capacity!r}", f"qsize={self._qsize()}"]
        if self.getters:
            parts.append(f"getters={len(self.getters)}")
        if self.putters:
            parts.append(f"putters={len(self.putters)}")
        if self.is_shutdown:
            parts.append("shut down")
        return f"<{type(self).__name__} {' '.join(parts)}>"


class Queue(SimpleQueue):
    """SimpleQueue plus task tracking: every accepted item is a task,
    ``task_done()`` marks one finished, ``join()`` waits until all are."""

    def __init__(self, maxsize: int | None = None, items=(), unfinished_tasks=None):
        SimpleQueue.__init__(self, maxsize, items)
        #: items put but not yet marked done with task_done()
        self.unfinished_tasks = unfinished_tasks if unfinished_tasks else len(self.queue)
        #: set whenever unfinished_tasks is 0; made on first join()
        self._all_done: Event | None = None

    def _did_put_task(self) -> None:
        self.unfinished_tasks += 1

    def _dropped_task(self) -> None:
        self.task_done()

    def task_done(self) -> None:
        """Mark one task finished; ValueError if none is unfinished."""
        if self.unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self.unfinished_tasks -= 1
        if self.unfinished_tasks == 0 and self._all_done is not None:
            self._all_done.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every task is done (True), at most ``timeout`` (False)."""
        if self.unfinished_tasks == 0:
            return True
        # Made lazily, so that put() does not pay for an Event nobody waits on.
        if self._all_done is None:
            self._all_done = Event()
        self._all_done.clear()
        return self._all_done.wait(timeout)

    def copy(self):
        return type(self)(self._capacity, list(self.queue), self.unfinished_tasks)


#: gevent's alias: Queue tracks tasks already
JoinableQueue = Queue


class LifoQueue(Queue):
    """Last in, first out."""

    def _get(self):
        return self.queue.pop()

    def _peek(self):
        return self.queue[-1]

    def _put_back(self, item) -> None:
        self.queue.append(item)


class PriorityQueue(Queue):
    """Smallest first (a heap): put ``(priority, data)`` tuples."""

    def _init(self, maxsize, items=()) -> None:
        self.queue = list(items)
        heapq.heapify(self.queue)

    def _put(self, item) -> None:
        heapq.heappush(self.queue, item)

    def _get(self):
        return heapq.heappop(self.queue)

    _put_back = _put


class Channel(SimpleQueue):
    """A rendezvous: holds no item. ``put()`` waits until a getter takes
    the item (returns at once if one is already waiting); ``get()`` waits
    for a putter. ``maxsize`` is accepted for gevent compatibility (1)."""

    def __init__(self, maxsize: int = 1):
        if maxsize != 1:
            raise ValueError(f"a Channel has no room to size: maxsize must be 1, not {maxsize!r}")
        SimpleQueue.__init__(self)
        self._capacity = 0

    @property
    def maxsize(self) -> int:
        return 1

    @property
    def balance(self) -> int:
        """Blocked putters minus blocked getters."""
        return len(self.putters) - len(self.getters)

    def full(self) -> bool:
        return True

    def _put_back(self, item) -> None:
        # A dead getter's item: nobody else is waiting for it, so it goes
        # back to its putter's role: hold it until a getter comes.
        self.queue.append(item)

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        """Hand ``item`` to a getter, waiting for one (at most ``timeout``).
        A rendezvous: when a getter was already waiting, ``put`` returns
        after that getter has run with the item (gevent's order)."""
        if self.getters and getcurrent() is not get_hub():
            SimpleQueue.put(self, item, block, timeout)
            sleep(0)   # queued behind the getter's wake-up: it runs first
            return
        SimpleQueue.put(self, item, block, timeout)

    def copy(self):
        return Channel()
