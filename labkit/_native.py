"""The thread primitives as the interpreter made them: what labkit's own machinery uses.

Private to labkit. ``labkit.monkey.patch_thread`` can turn ``threading.Lock``
into a cooperative lock, ``get_ident`` into a per-greenlet number and
``Thread.start`` into a spawn. The hub, the loop, the thread pool and the
tracer must not notice: a thread-pool worker that became a greenlet would
block the hub it serves, and a hub that compared a greenlet's number with
its own thread's would wake nobody. So they take their primitives from here.

This module is imported by ``labkit.hub`` and by ``labkit.monkey`` before
either can patch anything, so the names below are the originals whatever is
imported later (gevent keeps its originals the same way).
"""
from __future__ import annotations

import _queue
import _thread
import os
import threading

__all__ = ["get_ident", "allocate_lock", "RLock", "local", "SimpleQueue",
           "start_new_thread", "thread_count", "is_main_thread", "start_thread"]

get_ident = _thread.get_ident
allocate_lock = _thread.allocate_lock
RLock = _thread.RLock
#: thread-local storage keyed by the OS thread (the hub's home: one per thread)
local = _thread._local
#: the C queue: a put() never blocks, a get() blocks the calling OS thread
SimpleQueue = _queue.SimpleQueue
start_new_thread = _thread.start_new_thread
start_joinable_thread = getattr(_thread, "start_joinable_thread", None)  # 3.13+
set_sentinel = getattr(_thread, "_set_sentinel", None)                  # until 3.12
stack_size = _thread.stack_size
TIMEOUT_MAX = _thread.TIMEOUT_MAX
#: how many threads started by _thread (threading.Thread included) are alive
thread_count = _thread._count

# threading's classes as the stdlib wrote them (labkit.threading subclasses
# them; patching replaces the module's names, never these objects)
Thread = threading.Thread
Condition = threading.Condition
Event = threading.Event
Semaphore = threading.Semaphore
BoundedSemaphore = threading.BoundedSemaphore
Barrier = threading.Barrier
Timer = threading.Timer
current_thread = threading.current_thread

#: threading's Threads between start() and running (not yet in thread_count)
_limbo = threading._limbo


def other_threads_may_exist() -> bool:
    """True unless this is the main thread and no other Python thread runs
    or is being started: then only this thread's greenlets can wake it."""
    return bool(thread_count() or _limbo) or not is_main_thread()


#: the OS thread that runs the interpreter's main thread (after a fork: the
#: thread that forked, which became the child's main thread)
_main_ident = threading.main_thread().ident


def is_main_thread() -> bool:
    """True in the interpreter's main OS thread, whatever greenlet runs."""
    return get_ident() == _main_ident


def _after_fork_in_child() -> None:
    global _main_ident
    _main_ident = get_ident()


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_thread(target, args: tuple = (), name: str | None = None,
                 daemon: bool = True) -> threading.Thread:
    """Start ``target(*args)`` in a real OS thread, and return its
    ``threading.Thread``: named, joinable, listed by ``threading.enumerate``.

    Under green patching (``patch_thread()`` in a script) ``Thread.start``
    spawns a greenlet; a Thread started here is marked so that the patched
    start gives it an OS thread after all. Thread pools and watchdogs use it.
    """
    thread = threading.Thread(target=target, args=args, name=name, daemon=daemon)
    thread._labkit_native = True
    thread.start()
    return thread
