"""asyncio Tasks as lanes: each step of a Task of the host loop, in the ring.

    steps = TaskSteps(loop).install(recorder)   # the kernel's loop, a running recorder
    ...                                          # its Tasks' steps are recorded
    steps.names()                                # id -> "Task-3 (task)"
    steps.uninstall()

Greenlets write their own switch records; a cell with a top-level
``await`` runs as an asyncio Task of the kernel's loop, which writes none.
An asyncio loop runs every step of a Task as a callback it was handed with
``loop.call_soon``: the Task's ``__step`` (its first step, after
``sleep(0)``) or its wake-up by the future it awaited. So
:class:`TaskSteps` sets ``call_soon`` on that one loop object (an instance
attribute over the class's method, which the C Tasks and Futures look up by
name) and wraps the callbacks whose ``__self__`` is a Task: before the step
a resume record (``a`` = ``id(task)``; why: start on its first step, ready
for a scheduled step, a Waiter labelled ``"await"`` for a wake-up), after it
a host record (the thread goes back to asyncio). The timeline then draws a
Task like a greenlet: running while it steps, waiting in between. Exact
(every step, on the ring's clock) and cheap: a ``getattr`` per
``call_soon`` of that loop, one Python call around each Task step; nothing
when no recorder is given or it stopped.

Contract: install and uninstall from the loop's thread; uninstall puts the
loop's own ``call_soon`` back (only if it is still ours). A step that raises
is recorded the same way and the exception goes on to asyncio unchanged;
a failure to record never stops a step from running.
"""
from __future__ import annotations

import asyncio
import weakref

from labkit._loop import lib

__all__ = ["TaskSteps", "AWAIT_LABEL"]

#: The label of a Task's wake-up by the future it awaited (drawn as
#: "waiting for another greenlet": an Event-like wait).
AWAIT_LABEL = "await"
#: Task names kept for the lanes (the oldest are forgotten first).
MAX_NAMES = 10_000


class TaskSteps:
    """Records the steps of ``loop``'s Tasks into a recorder's ring; see the
    module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        self.loop = loop
        self.recorder = None
        self.steps = 0                       #: Task steps recorded so far
        self._names: dict[int, str] = {}   # read from other threads: plain, bounded
        self._started: "weakref.WeakSet" = weakref.WeakSet()
        self._wrapper = None

    def install(self, recorder) -> "TaskSteps":
        """Start recording into ``recorder`` (running). Idempotent."""
        if self._wrapper is not None:
            self.recorder = recorder
            return self
        if "call_soon" in vars(self.loop):
            raise RuntimeError("this loop's call_soon is wrapped already (another TaskSteps?)")
        self.recorder = recorder
        original = self.loop.call_soon   # the bound method of its class
        task_type = asyncio.Task
        step = self._step

        def call_soon(callback, *args, context=None):
            task = getattr(callback, "__self__", None)
            if isinstance(task, task_type):
                return original(step, task, callback, *args, context=context)
            return original(callback, *args, context=context)

        call_soon.__wrapped__ = original
        self._wrapper = call_soon
        self.loop.call_soon = call_soon
        return self

    def uninstall(self) -> None:
        """Stop recording and give the loop its own ``call_soon`` back."""
        wrapper, self._wrapper = self._wrapper, None
        self.recorder = None
        if wrapper is not None and vars(self.loop).get("call_soon") is wrapper:
            del self.loop.call_soon

    @property
    def installed(self) -> bool:
        return self._wrapper is not None

    def names(self) -> dict[int, str]:
        """id -> "name (task)" of the Tasks whose steps were recorded (the
        latest :data:`MAX_NAMES`). Any thread."""
        return self._names.copy()

    def _step(self, task, callback, *args):
        recorder = self.recorder
        record = recorder.record if recorder is not None and recorder.ring is not None \
            else None
        if record is not None:
            try:
                if task not in self._started:
                    self._started.add(task)
                    self._names[id(task)] = f"{task.get_name()} (task)"
                    if len(self._names) > MAX_NAMES:
                        del self._names[next(iter(self._names))]
                    why, label = lib.LK_WHY_START, 0
                elif getattr(callback, "__name__", "").endswith("wakeup"):   # C, Python
                    why, label = lib.LK_WHY_WAITER, recorder.labels[AWAIT_LABEL]
                else:
                    why, label = lib.LK_WHY_READY, 0
                record(lib.LK_TR_RESUME, id(task), why, label)
                self.steps += 1
            except Exception:   # recording must never cost the Task its step
                record = None
        try:
            return callback(*args)
        finally:
            # The step may have stopped the recorder (a cell that closes the
            # Dashboard): its ring is freed then, and so is this writer's.
            if record is not None and recorder.record is record:
                record(lib.LK_TR_HOST, id(task), 0, 0)
