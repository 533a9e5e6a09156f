"""The hub as a guest of the Jupyter kernel's own event loop.

``%load_ext labkit`` (or :func:`enable` from code) makes greenlets keep
running *between* cells: spawn a server in one cell, and it answers while the
kernel sits idle and while other cells run. The kernel (ipykernel 7) owns the
main thread and runs an asyncio loop there; labkit's hub does not get a thread
of its own. Instead the asyncio loop calls :meth:`Hub.tick` -- one
non-blocking pass of the hub -- whenever the hub could have work::

      kernel main thread, idle between cells
      ======================================

      asyncio loop (ipykernel's io_loop)                labkit hub greenlet
      ----------------------------------                -------------------
      select() on zmq sockets, ..., epoll fd
         |
         |  epoll fd readable (a socket is ready,
         |  or another thread called wake())
         |  / call_later timer (next hub timer due)
         |  / call_soon (a cell just added work)
         v
      Guest.tick() -- main greenlet -- switch ------>  one pass: ready callbacks,
                                                       poll(timeout=0), dispatch
      re-arm call_later(delay) <----- switch back ---  tick() returns the delay
         |                                              (0, seconds, or None)
         v
      select() again

      kernel main thread, inside a cell that blocks (labkit.sleep(5))
      ===============================================================

      cell code (main greenlet) -- switch --> hub runs its normal blocking loop
      the asyncio loop waits, as for any long-running cell; the cell resumes
      when its timer fires, the next tick resumes the hub where it left off.

The fd reader, the one re-armed timer and the tick itself are the shared
asyncio-guest half (:mod:`labkit._asyncio_guest`); this module adds the
kernel's side: a coalesced tick request after every message the kernel
handles (cells, widget callbacks, comm messages -- code run there appends to
the hub's ready deque without touching any fd), SIGINT chaining, subshells,
and the ``%gui labkit`` fallback.

A tick never blocks (the hub polls with timeout 0) and never raises into the
kernel's loop: errors are reported through the hub and the kernel goes on.

Interrupts. The stop button sends SIGINT. While a cell runs, labkit installs
a SIGINT handler that chains to the kernel's: if the cell's own code is
running (the main greenlet), the kernel's handler raises KeyboardInterrupt
there as usual; if the hub or a background greenlet is running (the cell
waits in ``labkit.sleep``, ``g.join()`` ...), the interrupt is handed to the
hub, which throws KeyboardInterrupt into the cell at a safe point. Background
greenlets and the hub survive. A greenlet that never yields (``while True:
pass``) is the exception: if the hub does not get control back soon after
the interrupt, KeyboardInterrupt is raised in that greenlet, in a cell or
between cells (:mod:`labkit._runaway`). Otherwise, between cells, the
interrupt is ignored, as the kernel does.

Output. ``print`` in a greenlet goes to the cell that spawned it: greenlets
copy the spawner's contextvars, and ipykernel 7 routes output by the parent
header it keeps in a ContextVar. Output printed long after that cell finished
still lands under it. For long-running background output, give the greenlet an
``ipywidgets.Output`` and write inside it, so that the output has a home you
can display (and clear) anywhere::

    out = ipywidgets.Output(); display(out)
    def ticker():
        for i in itertools.count():
            with out:                     # output goes to the widget
                print("tick", i)
            labkit.sleep(1)
    labkit.spawn(ticker)

Subshells. ipykernel 7 runs subshell cells in other threads. The hub belongs
to the kernel's main thread, and a greenlet can only be switched to from its
own thread, so labkit does not pretend: in a subshell, any labkit call that
needs a hub (spawn, sleep, Event.wait, ...) raises :class:`SubshellError`
with a message saying so. Reading state (``server.connections``,
``pinger.count``) works. To run labkit code from a subshell, marshal it:
``labkit.jupyter.call_in_main(fn, *args)`` runs ``fn`` in a greenlet of the
main hub and waits for its result.

Fallback. ``%gui labkit`` (ipykernel's ``register_integration``) has the
kernel call a tick every millisecond or so: polled, not event-driven, so
round-trips take ~1 ms longer, but it needs nothing from the kernel but
``%gui``. ``%load_ext labkit`` falls back to it by itself when guest mode
cannot attach (the poll(2) backend has no fd to give asyncio).

In a terminal IPython, ``%load_ext labkit`` makes the hub a guest of
IPython's own asyncio prompt loop instead (see :mod:`labkit.repl`).
"""
from __future__ import annotations

import concurrent.futures
import signal
import sys

from greenlet import getcurrent, greenlet

from labkit import _native, _sleep_warning, plugins
from labkit._asyncio_guest import AsyncioGuest
from labkit._runaway import RunawayGuard
from labkit.hub import Hub, _local, get_hub

__all__ = [
    "enable", "disable", "enable_gui", "active", "call_in_main", "SubshellError",
    "attach_when_work_waits",
    "load_ipython_extension", "unload_ipython_extension",
]


class SubshellError(RuntimeError):
    """labkit was used from a kernel subshell (a thread that has no hub)."""


# -- the extension entry points ---------------------------------------------

def load_ipython_extension(ipython) -> None:
    """``%load_ext labkit``: guest mode in a kernel, the asyncio prompt loop in
    a terminal; then the IPython plug-ins (:mod:`labkit.plugins`: the tracer's
    magics %%trace, %trace_blocking, %labkit_status), and a warning the first
    time the real time.sleep runs in a greenlet (:mod:`labkit._sleep_warning`).
    A plug-in that fails to
    load is reported as a warning; labkit itself stays loaded."""
    if getattr(ipython, "kernel", None) is not None:
        enable(ipython)
    else:
        from labkit.repl import enable_ipython_terminal
        enable_ipython_terminal(ipython)
    _sleep_warning.enable()
    plugins.load_ipython_plugins(ipython)


def unload_ipython_extension(ipython) -> None:
    """``%unload_ext labkit``: unload the plug-ins that can be, detach from the
    host loop, put back every original that ``labkit.monkey`` replaced;
    greenlets stay parked."""
    plugins.unload_ipython_plugins(ipython)
    if "labkit.monkey" in sys.modules:
        sys.modules["labkit.monkey"].unpatch_all()
    _sleep_warning.disable()  # after unpatch_all, which may put the watcher back
    if getattr(ipython, "kernel", None) is not None:
        disable(ipython)
    else:
        from labkit.repl import disable_ipython_terminal
        disable_ipython_terminal(ipython)


# -- guest mode ---------------------------------------------------------------

#: the attached Guest, if any (there is one kernel per process)
_guest: "Guest | None" = None


def enable(ipython=None) -> "Guest":
    """Make this thread's hub a guest of the kernel's asyncio loop.

    Call in the kernel's main thread (from a cell). Idempotent. Falls back to
    ``%gui labkit`` polling when the hub's loop has no backend fd.
    """
    global _guest
    ipython = ipython if ipython is not None else _get_ipython()
    if not _native.is_main_thread():
        raise SubshellError("enable labkit from the kernel's main shell, not a subshell")
    hub = get_hub()
    if _guest is not None and _guest.hub is hub and _guest.attached:
        return _guest
    if _guest is not None:
        _guest.detach()
    _guest = Guest(hub, ipython)
    _guest.attach()
    return _guest


def attach_when_work_waits() -> None:
    """Called when labkit is imported in a kernel: if a cell leaves work for
    the hub (spawn, a timer, a server) before ``%load_ext labkit``, attach
    after that cell, as %load_ext would (without the plug-ins), and say so
    under the cell -- instead of leaving the greenlets parked, silently.
    Nothing happens in a cell that leaves no work, nor after %load_ext."""
    try:
        ipython = _get_ipython()
    except (RuntimeError, ImportError):
        return
    if not _native.is_main_thread():
        return

    def post_run_cell(result=None) -> None:
        if active() is not None or ipython.kernel.eventloop is _gui_tick:
            _forget(ipython, post_run_cell)   # attached, or %gui labkit polls it
            return
        hub = getattr(_local, "hub", None)
        if hub is None or hub.dead or hub.loop.closed:
            return
        loop = hub.loop
        if not (hub.ready_count or loop.active_timers or loop.io_waiters):
            return
        _forget(ipython, post_run_cell)
        enable(ipython)
        print("labkit: this cell left greenlets to run, and %load_ext labkit had not "
              "run: labkit joined the kernel's loop, so they run between cells from "
              "now on. (%load_ext labkit does this too, and loads the tracer's magics.)",
              file=sys.stderr)

    ipython.events.register("post_run_cell", post_run_cell)


def _forget(ipython, hook) -> None:
    try:
        ipython.events.unregister("post_run_cell", hook)
    except ValueError:
        pass


def disable(ipython=None) -> None:
    """Detach the hub from the kernel loop (and turn ``%gui labkit`` off)."""
    global _guest
    if _guest is not None:
        _guest.detach()
        _guest = None


def active() -> "Guest | None":
    """The attached Guest, or None."""
    return _guest if _guest is not None and _guest.attached else None


def _get_ipython():
    from IPython import get_ipython
    ipython = get_ipython()
    if ipython is None or getattr(ipython, "kernel", None) is None:
        raise RuntimeError("labkit.jupyter.enable() needs a running IPython kernel")
    return ipython


class Guest(AsyncioGuest):
    """The glue between one hub and one kernel: the asyncio guest (reader,
    timer) plus the kernel's hooks and the SIGINT chaining.

    Everything here runs in the kernel's main thread, in the main greenlet,
    except :meth:`request_tick`, which any thread may call.
    """

    def __init__(self, hub: Hub, ipython):
        self.ipython = ipython
        self.kernel = ipython.kernel
        super().__init__(hub, getattr(self.kernel.io_loop, "asyncio_loop", None))
        #: "guest" (add_reader) or "gui" (polled by %gui labkit)
        self.mode: str | None = None
        self._saved_post_handler_hook = None
        self._sigint = _ChainedSigint(self)

    # -- attaching ---------------------------------------------------------
    def attach(self) -> None:
        if self.hub.loop.backend_fd < 0 or self.aio is None:
            # poll(2) backend: no fd to hand to asyncio (or a kernel without
            # an asyncio loop): be polled by the kernel instead.
            self.mode = "gui"
            enable_gui(self.kernel)
            self.attached = True
        else:
            self.mode = "guest"
            super().attach()
            self._wrap_post_handler_hook()
        events = self.ipython.events
        events.register("pre_execute", self._pre_execute)
        events.register("post_execute", self._post_execute)
        if not getattr(self.ipython, "custom_exceptions", ()):  # the user's own wins
            self.ipython.set_custom_exc((OSError,), _show_os_error)

    def detach(self) -> None:
        """Undo attach(). Parked greenlets stay parked until the hub runs again."""
        if not self.attached:
            return
        if self.mode == "guest":
            super().detach()
            self._unwrap_post_handler_hook()
        else:
            self.attached = False
            if self.kernel.eventloop is _gui_tick:
                from ipykernel.eventloops import enable_gui as kernel_enable_gui
                kernel_enable_gui(None, self.kernel)
        events = self.ipython.events
        for name, hook in (("pre_execute", self._pre_execute),
                           ("post_execute", self._post_execute)):
            try:
                events.unregister(name, hook)
            except ValueError:
                pass
        self._sigint.uninstall()
        if getattr(self.ipython, "CustomTB", None) is not None and \
                getattr(self.ipython.CustomTB, "__func__", None) is _show_os_error:
            self.ipython.set_custom_exc((), None)
        if getattr(self.kernel, "saved_sigint_handler", None) is self._sigint.handler:
            self.kernel.saved_sigint_handler = signal.SIG_IGN  # restored after this cell

    # -- ticking -------------------------------------------------------------
    def _after_tick(self) -> None:
        self._sigint.replay_deferred()

    def request_tick(self) -> None:
        if self.mode == "guest":  # %gui polls on its own schedule
            super().request_tick()

    # -- kernel and IPython hooks ------------------------------------------
    def _wrap_post_handler_hook(self) -> None:
        # Called by ipykernel after every shell message (execute, comm,
        # widget callback); whatever the handler added to the hub's ready
        # deque gets a tick. An instance attribute shadows the method.
        original = self.kernel.post_handler_hook

        def post_handler_hook():
            try:
                original()
            finally:
                self.request_tick()
                self._sigint.install_between_cells()

        self._saved_post_handler_hook = original
        self.kernel.post_handler_hook = post_handler_hook

    def _unwrap_post_handler_hook(self) -> None:
        if self._saved_post_handler_hook is not None:
            try:
                del self.kernel.post_handler_hook  # back to the class method
            except AttributeError:
                pass
            self._saved_post_handler_hook = None

    def _pre_execute(self) -> None:
        if _native.is_main_thread():
            self._sigint.install()
        else:
            _refuse_hub_in_this_thread()

    def _post_execute(self) -> None:
        if _native.is_main_thread():
            self._sigint.uninstall()
            self.request_tick()

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"<labkit Guest {state} mode={self.mode} ticks={self.ticks}>"


# -- SIGINT while a cell runs ----------------------------------------------

class _ChainedSigint:
    """SIGINT in the kernel: the cell's code gets it, greenlets do not --
    unless one of them never yields (:mod:`labkit._runaway`).

    Installed for the duration of each cell (ipykernel installs its own
    handler per request, and restores SIG_IGN after it), and between cells
    in place of SIG_IGN, so that a greenlet that holds the loop inside a
    tick can still be stopped. Python runs signal handlers in whatever
    greenlet is current, so the handler decides:

    - a background greenlet is running: if it has held the loop since an
      earlier interrupt, KeyboardInterrupt is raised in it; otherwise the
      decision waits (up to ``_runaway.GRACE``) for the hub to poll, and
      then the interrupt goes where it would have gone:
    - the main greenlet is running the cell's code: chain to the kernel's
      handler (it raises KeyboardInterrupt, or cancels an async cell);
    - the hub is running, so the cell is parked in the hub: let the hub
      deliver KeyboardInterrupt to the cell at a safe point;
    - a tick is running (an async cell awaits, asyncio ticks the hub): keep
      the interrupt and give it to the kernel's handler after the tick;
    - no cell is running: ignore it, as the kernel does.
    """

    def __init__(self, guest: Guest):
        self.guest = guest
        self.previous = None   # the kernel's handler (SIG_IGN between cells)
        self.deferred = None   # (signum, frame) that arrived during a tick
        self.runaway = RunawayGuard(guest.hub, _cell_line_namer(guest.ipython))
        self.handler = self.handle  # one bound method, to compare with `is`

    def install(self) -> None:
        """At the start of a cell: ours in front of the kernel's handler."""
        current = signal.getsignal(signal.SIGINT)
        if current is not self.handler:
            self.previous = current
            signal.signal(signal.SIGINT, self.handler)

    def install_between_cells(self) -> None:
        """After each kernel message: ours in place of the kernel's SIG_IGN.
        (Subshell threads cannot touch signal handlers: nothing to do there.)"""
        if not _native.is_main_thread():
            return
        current = signal.getsignal(signal.SIGINT)
        if current is self.handler or current == signal.SIG_IGN:
            self.previous = signal.SIG_IGN
            signal.signal(signal.SIGINT, self.handler)

    def uninstall(self) -> None:
        if signal.getsignal(signal.SIGINT) is self.handler:
            signal.signal(signal.SIGINT, self.previous
                          if self.previous is not None else signal.SIG_IGN)
        self.previous = None

    def handle(self, signum, frame) -> None:
        guest, hub = self.guest, self.guest.hub
        current = getcurrent()
        if current is hub.parent or (current is hub and hub.owns_frame(frame)):
            self.runaway.settle()
        elif current is hub:  # in a callback, or in poll: the second one stops it
            self.runaway.on_sigint_in_hub(frame)  # may raise here, in the callback
        elif not self.runaway.on_sigint(current, frame):  # may raise here, in `current`
            return  # decided later: the hub polls, or the greenlet is stopped
        if guest.in_tick:
            self.deferred = (signum, frame)
        elif current is hub.parent:
            self.chain(signum, frame)
        elif callable(self.previous):  # a cell runs, parked in the hub
            hub.interrupt_main()  # the hub and greenlets survive, the cell gets it

    def chain(self, signum, frame) -> None:
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            raise KeyboardInterrupt

    def replay_deferred(self) -> None:
        if self.deferred is None:
            return
        signum, frame = self.deferred
        self.deferred = None
        try:
            self.chain(signum, frame)
        except KeyboardInterrupt:
            pass  # no cell code to raise it in; the kernel's loop must go on


def _cell_line_namer(ipython):
    """where(frame) -> "In[7], line 3" for a cell's code, "file.py, line 3"
    otherwise (IPython compiles cells into temp files it can name)."""
    def where(frame) -> str:
        if frame is None:
            return "an unknown line"
        filename = frame.f_code.co_filename
        try:
            filename = ipython.compile.format_code_name(filename)[1] or filename
        except Exception:  # an IPython without format_code_name, or not a cell
            pass
        return f"{filename}, line {frame.f_lineno}"
    return where


def _show_os_error(shell, etype, value, tb, tb_offset=None):
    """IPython's custom exception handler for OSError (while attached): the
    usual traceback, plus, for "Address already in use", which labkit
    server still holds the port and how to stop it (labkit._servers)."""
    from labkit._servers import address_in_use_note
    note = None
    try:
        note = address_in_use_note(value)
    except Exception:
        pass
    if note is not None and _tracebacks_show_notes():
        value.add_note(note)
        note = None
    shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    if note is not None:  # no exception notes, or an IPython that hides them
        print(note, file=sys.stderr)


def _tracebacks_show_notes() -> bool:
    """Whether a note added to an exception appears in IPython's traceback:
    notes are Python 3.11's (PEP 678), and IPython prints them from 8.14 on
    (8.12, which ``ipython>=8`` allows, silently leaves them out)."""
    import IPython
    return sys.version_info >= (3, 11) and tuple(IPython.version_info[:2]) >= (8, 14)


# -- subshells ---------------------------------------------------------------

_SUBSHELL_MESSAGE = (
    "labkit's hub runs in the kernel's main thread, and this cell runs in a "
    "subshell (another thread). Reading objects is fine; to run labkit code "
    "(spawn, sleep, wait ...), marshal it: labkit.jupyter.call_in_main(fn, *args).")


class _SubshellHub(Hub):
    """Stands in for the hub of a subshell thread: every use explains itself."""

    __slots__ = ()

    def __init__(self):
        greenlet.__init__(self)  # no loop, no SIGINT handler

    def _refuse(self, *args, **kwargs):
        raise SubshellError(_SUBSHELL_MESSAGE)

    run_callback = run_callback_threadsafe = switch = throw = _refuse
    tick = join = wait_io = keepalive = _refuse
    loop = property(_refuse)
    schedule = ready = property(_refuse)

    def destroy(self) -> None:
        if getattr(_local, "hub", None) is self:
            del _local.hub

    def __repr__(self) -> str:
        return "<labkit hub placeholder for a kernel subshell>"


def _refuse_hub_in_this_thread() -> None:
    if getattr(_local, "hub", None) is None:
        _local.hub = _SubshellHub()


def call_in_main(function, *args, timeout: float | None = None):
    """Run ``function(*args)`` in a greenlet of the main thread's hub and
    return its result (or raise its exception). For kernel subshells and
    other threads; waits at most ``timeout`` seconds (TimeoutError)."""
    if _guest is None:
        raise RuntimeError("labkit is not attached to a kernel (%load_ext labkit)")
    hub = _guest.hub
    if _native.get_ident() == hub.thread_ident:
        return function(*args)
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run():
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args))
        except BaseException as exc:
            future.set_exception(exc)

    from labkit.hub import spawn_raw
    hub.run_callback_threadsafe(spawn_raw, run)
    return future.result(timeout)


# -- the %gui labkit fallback ------------------------------------------------

def _gui_tick(kernel) -> None:
    """Called by ipykernel about every millisecond while ``%gui labkit`` is on."""
    hub = getattr(_local, "hub", None)
    if hub is None or hub.loop.closed or getcurrent() is not hub.parent:
        return
    try:
        hub.tick()
    except BaseException:  # the kernel stops polling if this raises
        hub.print_exception("labkit %gui tick", *sys.exc_info())


def register_gui() -> None:
    """Make ``%gui labkit`` known to ipykernel (done on import if it is loaded)."""
    from ipykernel.eventloops import loop_map, register_integration
    if loop_map.get("labkit") is not _gui_tick:
        register_integration("labkit")(_gui_tick)


def enable_gui(kernel=None) -> None:
    """The same as ``%gui labkit``: the kernel polls the hub."""
    register_gui()
    from ipykernel.eventloops import enable_gui as kernel_enable_gui
    get_hub()  # create it in this thread, where the kernel will tick it
    kernel_enable_gui("labkit", kernel)


if "ipykernel" in sys.modules:
    try:
        register_gui()
    except Exception:  # an ipykernel without register_integration
        pass
