"""The loop's interface as gevent documents it (gevent's ``_interfaces``), as
zope.interface declarations: what ``hub.loop``, its watchers and its
callbacks offer to code written for gevent's loop. The private half of
:mod:`labkit.core`; it needs ``zope.interface`` (not a labkit dependency),
and is there to check labkit's loop against gevent's list::

    from zope.interface import verify
    verify.verifyObject(ILoop, labkit.get_hub().loop)
"""
from zope.interface import Attribute, Interface

__all__ = ["ILoop", "IWatcher", "ICallback"]


class ILoop(Interface):
    """An event loop: watchers, callbacks, time."""

    default = Attribute("Whether this is the default loop (the main thread's hub's).")
    approx_timer_resolution = Attribute(
        "Roughly the shortest time a timer can wait, in seconds.")

    def run(nowait=False, once=False):
        """Run the loop (once, or without waiting, if asked)."""

    def now():
        """The loop's time, in seconds."""

    def update_now():
        """Refresh the loop's idea of the time."""

    def destroy():
        """Free the loop; it cannot be used afterwards."""

    def io(fd, events, ref=True, priority=None):
        """A watcher for readiness of ``fd`` (1 read, 2 write)."""

    def closing_fd(fd):
        """``fd`` is about to be closed: stop watching it; True if something
        waited on it."""

    def timer(after, repeat=0.0, ref=True, priority=None):
        """A watcher firing after ``after`` seconds, then every ``repeat``."""

    def signal(signum, ref=True, priority=None):
        """A watcher firing when ``signum`` arrives."""

    def idle(ref=True, priority=None):
        """A watcher firing when the loop has nothing else to do."""

    def prepare(ref=True, priority=None):
        """A watcher firing before each poll."""

    def check(ref=True, priority=None):
        """A watcher firing after each poll."""

    def fork(ref=True, priority=None):
        """A watcher firing in a fork child."""

    def async_(ref=True, priority=None):
        """A watcher that another thread may send() to."""

    def child(pid, trace=0, ref=True):
        """A watcher firing when child ``pid`` exits."""

    def stat(path, interval=0.0, ref=True, priority=None):
        """A watcher firing when ``path``'s stat changes."""

    def run_callback(func, *args):
        """Run ``func(*args)`` soon, from the loop; returns an ICallback."""

    def run_callback_threadsafe(func, *args):
        """run_callback from any thread; returns an ICallback."""


class IWatcher(Interface):
    """Something the loop watches; it calls back while started."""

    def start(callback, *args, **kwargs):
        """Call ``callback(*args)`` each time the watcher fires."""

    def stop():
        """Stop calling back."""

    def close():
        """Stop, and release the watcher for good."""


class ICallback(Interface):
    """A function the loop will run soon (a hub callback)."""

    pending = Attribute("True until it ran or was stopped.")

    def stop():
        """Do not run after all (if still pending)."""

    def close():
        """The same as stop()."""


def _declare() -> None:
    # labkit's classes do not import zope: the declarations are made here,
    # when this module is imported (verifyObject wants them declared).
    from zope.interface import classImplements
    from labkit import core
    from labkit._loop import Loop
    from labkit.hub import Callback
    classImplements(Loop, ILoop)
    classImplements(Callback, ICallback)
    classImplements(core.watcher, IWatcher)


_declare()
