"""A Celery task pool on labkit: each task a greenlet, one hub per worker.

What ``celery worker -P gevent`` gives gevent users, for labkit. Start a
worker with Celery's documented hook for pools outside Celery::

    CELERY_CUSTOM_WORKER_POOL=labkit.celery:TaskPool celery -A app worker -P custom -c 100

or with the launcher, which sets the same two things and runs ``celery``::

    python -m labkit.celery -A app worker -c 100

(``-P labkit.celery:TaskPool`` itself is refused by Celery's command line,
which accepts only the names of its pool aliases; ``custom`` is the alias
whose target the environment variable names.)

Monkey patching comes first. The pool is only useful if the app's blocking
calls (sockets, ``time.sleep``, the broker client's reads) cooperate, so
:func:`labkit.monkey.patch_all` must run before the app module and its
libraries are imported. Celery imports the pool named by ``-P custom`` very
early -- in ``celery``'s entry point, before it parses the command line or
loads ``-A app`` (``celery.maybe_patch_concurrency``) -- and this module
patches at import when the command line selects it (``-P custom`` / ``--pool
custom`` with ``CELERY_CUSTOM_WORKER_POOL`` naming this module). The launcher
patches before it imports Celery at all. A worker that gets the pool some
other way (the ``worker_pool`` setting) is patched when the pool is created,
after the app was imported, with a RuntimeWarning saying so.

The contract (Celery's ``BasePool`` interface, as the gevent pool keeps it):

- ``limit`` (``-c``) tasks run at once. ``on_apply`` runs a task in a new
  greenlet; when ``limit`` are running it parks the caller (the worker's
  consumer) until one ends -- slots are handed out first come, first served.
- ``grow(n)`` and ``shrink(n)`` (the autoscaler, ``pool_grow``/``pool_shrink``
  remote control) change the limit at once: growing frees slots for parked
  callers now; shrinking takes free slots now and the rest as running tasks
  end (a running task is never interrupted). ``num_processes`` is the limit.
- A hard time limit (``time_limit``, or the pool's ``timeout``) is a
  :class:`labkit.Timeout` around the task; the task's ``timeout_callback``
  reports it. Soft time limits are not supported (nor are they by Celery's
  gevent pool).
- ``terminate_job(pid)`` (``revoke(terminate=True)``) kills the task's
  greenlet; a task's "pid" is its greenlet's id, as with gevent.
- ``Timer`` (the worker's ETA/countdown and heartbeat timer) runs each entry
  in a greenlet started at its time; ``cancel`` and ``stop`` keep it from
  running.
- ``spawn_n`` runs a service loop in a raw greenlet (the remote-control
  mailbox, ``celery inspect`` / ``control``).
- ``on_stop`` (warm shutdown) waits for the running tasks; ``on_terminate``
  (cold shutdown) kills them.
"""
from __future__ import annotations

import os
import sys
import warnings

from labkit import monkey

#: the value of CELERY_CUSTOM_WORKER_POOL that selects this pool (a literal:
#: under ``python -m`` this file also runs as ``__main__``)
POOL_PATH = "labkit.celery:TaskPool"


def _pool_option(argv) -> str | None:
    """The value of ``-P``/``--pool`` on a command line, or None."""
    for i, arg in enumerate(argv):
        if arg in ("-P", "--pool"):
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--pool="):
            return arg[len("--pool="):]
        if arg.startswith("-P") and not arg.startswith("--"):
            return arg[2:]
    return None


def selected_by_command_line(argv=None, environ=None) -> bool:
    """True if this process is a Celery worker told to use this pool
    (``-P custom`` with ``CELERY_CUSTOM_WORKER_POOL`` naming it)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    wanted = environ.get("CELERY_CUSTOM_WORKER_POOL", "").split(":")[0]
    return _pool_option(argv) == "custom" and wanted == POOL_PATH.split(":")[0]


def ensure_patched() -> bool:
    """Apply :func:`labkit.monkey.patch_all` unless it was; True if it ran now."""
    if monkey.is_module_patched("socket"):
        return False
    with warnings.catch_warnings():
        # Celery's entry point imported ssl (through kombu) before we could
        # run; that cannot be helped from here and is harmless for it.
        warnings.simplefilter("ignore", RuntimeWarning)
        monkey.patch_all()
    return True


# Patch before Celery's pool machinery (and, through it, anything else) is
# imported below: Celery imports this module before it loads the app.
if __name__ == "__main__":
    # python -m labkit.celery: celery.concurrency reads this once, when it is
    # imported (below), to know what ``-P custom`` means.
    os.environ["CELERY_CUSTOM_WORKER_POOL"] = POOL_PATH
    ensure_patched()
elif selected_by_command_line():
    ensure_patched()

import functools  # noqa: E402
import time  # noqa: E402

from celery.concurrency import base  # noqa: E402
from greenlet import GreenletExit, getcurrent  # noqa: E402
from kombu.asynchronous import timer as _timer  # noqa: E402

from labkit.greenlet import Greenlet, spawn_later  # noqa: E402
from labkit.hub import spawn_raw  # noqa: E402
from labkit.lock import FifoSemaphore  # noqa: E402
from labkit.pool import Group  # noqa: E402
from labkit.timeout import Timeout  # noqa: E402

__all__ = ["TaskPool", "Timer", "main"]


class Timer(_timer.Timer):
    """kombu's timer with each entry a greenlet started at its time.

    ``queue`` is the set of greenlets still waiting to run their entry.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._greenlets: set = set()

    def _enter(self, eta, priority, entry, **kwargs):
        greenlet = spawn_later(max(eta - time.monotonic(), 0.0), self._fire, entry)
        greenlet.entry, greenlet.eta, greenlet.priority = entry, eta, priority
        self._greenlets.add(greenlet)
        greenlet.rawlink(self._greenlets.discard)
        return entry

    def _fire(self, entry) -> None:
        if not entry.canceled:
            self.apply_entry(entry)  # errors go to on_error, as kombu's timer does

    def clear(self) -> None:
        greenlets, self._greenlets = self._greenlets, set()
        for greenlet in greenlets:
            greenlet.kill(block=False)

    def stop(self) -> None:
        self.clear()

    def __len__(self) -> int:
        return len(self._greenlets)

    @property
    def queue(self):
        return set(self._greenlets)


def _check_count(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, not {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must not be negative: {n!r}")
    return n


class TaskPool(base.BasePool):
    """``celery worker -P custom`` with ``CELERY_CUSTOM_WORKER_POOL=labkit.celery:TaskPool``.

    See the module docstring for the contract.
    """

    Timer = Timer
    signal_safe = False          # stopping parks: not from a signal handler
    is_green = True              # Celery: greenlet heartbeats, green pidbox
    task_join_will_block = False

    def __init__(self, *args, **kwargs):
        if ensure_patched():
            warnings.warn(
                "labkit.celery patched the standard library only when the pool was "
                "created, after the app was imported; start the worker with "
                f"'-P custom' and CELERY_CUSTOM_WORKER_POOL={POOL_PATH}, or with "
                "'python -m labkit.celery', so that the app's imports cooperate",
                RuntimeWarning, stacklevel=2)
        self.timeout = kwargs.get("timeout")
        super().__init__(*args, **kwargs)
        if self.limit is None:
            self.limit = 1
        _check_count(self.limit, "limit")
        self._group: Group | None = None
        self._slots: FifoSemaphore | None = None
        self._retiring = 0       # slots shrink() still has to take back
        self._greenlets: dict = {}   # pid -> running task greenlet

    # -- life ------------------------------------------------------------------
    def on_start(self) -> None:
        self._group = Group()
        self._slots = FifoSemaphore(self.limit)
        self._retiring = 0

    def on_stop(self) -> None:
        """Warm shutdown: wait for the running tasks."""
        if self._group is not None:
            self._group.join()

    def on_terminate(self) -> None:
        """Cold shutdown: kill the running tasks."""
        if self._group is not None:
            self._group.kill()

    # -- tasks -----------------------------------------------------------------
    @staticmethod
    def spawn_n(function, *args, **kwargs):
        """Run ``function`` in a raw greenlet (Celery's green pidbox loop uses it)."""
        return spawn_raw(function, *args, **kwargs)

    def on_apply(self, target, args=None, kwargs=None, callback=None,
                 accept_callback=None, timeout=None, timeout_callback=None,
                 waitforslot=True, **_):
        """Run ``target(*args, **kwargs)`` in a greenlet; park while ``limit`` run."""
        self._slots.acquire()
        timeout = self.timeout if timeout is None else timeout
        greenlet = Greenlet(self._run_task, target, args, kwargs, callback,
                            accept_callback, timeout, timeout_callback)
        pid = id(greenlet)
        self._greenlets[pid] = greenlet
        greenlet.rawlink(functools.partial(self._task_ended, pid))
        greenlet.terminate = _terminate_noop  # Celery's Request calls it after terminate_job
        self._group.start(greenlet)
        return greenlet

    @staticmethod
    def _run_task(target, args, kwargs, callback, accept_callback, timeout,
                  timeout_callback):
        pid = id(getcurrent())
        target = functools.partial(_killable, target)
        if not timeout:
            return base.apply_target(target, args, kwargs, callback, accept_callback, pid)
        try:
            with Timeout(timeout):
                return base.apply_target(target, args, kwargs, callback,
                                         accept_callback, pid, propagate=(Timeout,))
        except Timeout:
            if timeout_callback is not None:
                timeout_callback(False, timeout)

    def _task_ended(self, pid, greenlet) -> None:
        del self._greenlets[pid]
        if self._retiring:
            self._retiring -= 1   # this slot goes away (see shrink)
        else:
            self._slots.release()

    def terminate_job(self, pid, signal=None) -> None:
        """Kill the task whose greenlet id is ``pid`` (revoke(terminate=True))."""
        greenlet = self._greenlets.get(pid)
        if greenlet is not None:
            greenlet.kill(block=False)

    # -- size --------------------------------------------------------------------
    def grow(self, n: int = 1) -> None:
        """Allow ``n`` more tasks at once, now."""
        _check_count(n)
        self.limit += n
        if self._slots is None:
            return
        cancelled = min(n, self._retiring)
        self._retiring -= cancelled
        for _ in range(n - cancelled):
            self._slots.release()

    def shrink(self, n: int = 1) -> None:
        """Allow ``n`` fewer tasks at once: free slots now, busy ones as they end."""
        _check_count(n)
        if n > self.limit:
            raise ValueError(f"cannot shrink by {n}: the limit is {self.limit}")
        self.limit -= n
        if self._slots is None:
            return
        self._retiring += n
        while self._retiring and self._slots.acquire(blocking=False):
            self._retiring -= 1

    @property
    def num_processes(self) -> int:
        return self.limit

    def _get_info(self) -> dict:
        info = super()._get_info()
        running = len(self._greenlets)
        info.update({"max-concurrency": self.limit, "running-threads": running,
                     "free-threads": max(0, self.limit - running)})
        return info


def _killable(target, *args, **kwargs):
    """Run a task; a kill (terminate_job, cold shutdown) ends it as a failure
    without a result, which is what Celery's request expects of a killed task."""
    try:
        return target(*args, **kwargs)
    except GreenletExit:
        return (False, None, None)


def _terminate_noop(signal=None) -> None:
    """The task's greenlet was already killed by terminate_job."""


def main(argv=None) -> None:
    """``python -m labkit.celery ARGS``: ``celery ARGS`` on this pool, patched first.

    Adds ``--pool=custom`` to a ``worker`` command that names no pool.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ["CELERY_CUSTOM_WORKER_POOL"] = POOL_PATH
    if "worker" in args and _pool_option(args) is None:
        args.append("--pool=custom")
    ensure_patched()
    from celery.bin.celery import main as celery_main
    sys.argv = ["celery", *args]
    sys.exit(celery_main())


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy's (one TaskPool class).
    from labkit.celery import main as _main
    _main()
