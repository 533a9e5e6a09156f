"""The iterators behind ``imap`` and ``imap_unordered`` (Group, Pool, ThreadPool).

Private to labkit: :meth:`labkit.pool.Group.imap` and
:meth:`labkit.threadpool.ThreadPool.imap` return these, and
:mod:`labkit.pool` re-exports them. Each iterator is also the greenlet that
produces: it calls the ``spawn`` it was given once per input item, so a
full Pool makes it park, and each task's rawlink hands the outcome to the
reader. See :mod:`labkit.pool` for the contract (order, ``maxsize``).
"""
from __future__ import annotations

from collections import deque
from functools import partial
from itertools import count as _count
from typing import Callable

from labkit.greenlet import Greenlet
from labkit._park import Waiter, wake_waiter
from labkit.lock import FifoSemaphore


class _Failure:
    """Stands in the result stream for an exception to raise to the reader."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


class IMapUnordered(Greenlet):
    """The iterator returned by ``imap_unordered``; it is also the greenlet
    that produces: it spawns one task per input item (through the group's
    ``spawn``, so a full Pool makes it park) and each task's rawlink hands
    the outcome to the reader.

    ``maxsize``: the producer takes a permit before each spawn and the reader
    gives one back per item it takes, so at most ``maxsize`` finished results
    wait unread.
    """

    def __init__(self, func: Callable, zipped, spawn: Callable, maxsize: int | None = None):
        Greenlet.__init__(self)
        self.func = func
        self.zipped = zipped
        self._spawn = spawn
        self._permits = FifoSemaphore(maxsize) if maxsize else None
        #: outcomes not yet read, and the reader parked waiting for one
        self._results: deque = deque()
        self._reader: Waiter | None = None
        self._outstanding = 0      # spawned tasks not yet finished
        self._produced = 0         # items taken from the input so far
        self._done_producing = False
        self._end_queued = False
        self._exhausted = False    # the reader already got StopIteration

    @property
    def queue(self) -> deque:
        """The outcomes finished and not yet read (gevent's name)."""
        return self._results

    def __iter__(self):
        return self

    def __next__(self):
        if self._exhausted:
            raise StopIteration
        if self._permits is not None:
            self._permits.release()
        value = self._take()
        if isinstance(value, _Failure):
            if isinstance(value.exc, StopIteration):
                self._exhausted = True
            raise value.exc
        return value

    def _take(self):
        while not self._results:
            self._reader = Waiter()
            try:
                self._reader.get()
            finally:
                self._reader = None
        return self._results.popleft()

    def _put(self, value) -> None:
        self._results.append(value)
        if self._reader is not None:
            wake_waiter(self._reader, None)

    # -- the producer greenlet ----------------------------------------------
    def _run(self):
        func, permits, spawn = self.func, self._permits, self._spawn
        try:
            for index, args in zip(_count(), self.zipped):
                if permits is not None:
                    permits.acquire()
                self._outstanding += 1
                self._produced += 1
                spawn(func, *args).rawlink(partial(self._on_task_done, index))
        except BaseException as exc:
            self._done_producing = True
            self._queue_end(_Failure(exc))
            raise
        self._done_producing = True
        if self._outstanding == 0:
            self._queue_end(_Failure(StopIteration()))

    def _on_task_done(self, index: int, task) -> None:  # a rawlink: runs in the hub
        self._outstanding -= 1
        if task.successful():
            self._put(self._outcome(index, task.value))
        else:
            self._put(self._outcome(index, _Failure(task.exception)))
        if self._done_producing and self._outstanding == 0:
            self._queue_end(_Failure(StopIteration()))

    def _queue_end(self, failure: _Failure) -> None:
        if not self._end_queued:
            self._end_queued = True
            self._put(self._end(failure))

    # The ordered subclass tags each outcome with its input index.
    def _outcome(self, index: int, value):
        return value

    def _end(self, failure: _Failure):
        return failure


class IMap(IMapUnordered):
    """The iterator returned by ``imap``: outcomes in input order. Results
    that finish early wait in a dict until their turn."""

    def __init__(self, *args, **kwargs):
        IMapUnordered.__init__(self, *args, **kwargs)
        self._early: dict = {}
        self._next_index = 0

    def _take(self):
        index = self._next_index
        early = self._early
        while index not in early:
            got_index, value = IMapUnordered._take(self)
            early[got_index] = value
        self._next_index = index + 1
        return early.pop(index)

    def _outcome(self, index: int, value):
        return (index, value)

    def _end(self, failure: _Failure):
        # The end comes after every produced item.
        return (self._produced, failure)
