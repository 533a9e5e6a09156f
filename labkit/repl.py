"""The hub keeps running while a REPL waits for you to type.

A REPL spends nearly all its time waiting for a line. Each REPL has a hook
that is called while it waits; labkit's hooks run the hub there, so greenlets
spawned at the prompt (a server, a pinger) keep going until you press Enter::

      main thread, the prompt is waiting
      ==================================

      REPL: "wait for input" -- calls the hook -->  run_hub_until_input()
                                                     loop:
                                                       hub.tick()  (one pass)
                                                       select([stdin, epoll fd],
                                                              timeout = next timer)
                                                       stdin readable? -> return
      REPL reads the line    <-- hook returns ------
      the statement runs in the main greenlet: if it blocks (labkit.sleep),
      the hub runs as it does in any script

Three REPLs; the two plain ones work as drawn above:

- IPython in a terminal: ``%load_ext labkit`` turns on IPython's
  ``%gui asyncio`` (the prompt then waits inside IPython's asyncio loop) and
  makes the hub a guest of that loop, as in a Jupyter kernel (see
  :mod:`labkit._asyncio_guest`). With ``--simple-prompt``, IPython reads
  lines with ``input()``, and the plain-python hook below applies.
- plain ``python``: :func:`install_inputhook` sets ``PyOS_InputHook`` through
  ctypes; readline (or the stdin reader) calls it while waiting for a line,
  with the GIL released -- ctypes takes it back for us.
- ``python -m labkit``: no hook at all; the hub owns the main thread and the
  prompt runs in a helper thread (see :mod:`labkit._console`).

Contract of the hooks: they run in the main thread, in the main greenlet;
they never let an exception escape into the REPL's C code (errors are
printed). A Ctrl-C that lands while the prompt waits would not reach
readline (the hook runs after readline's own check), so the hook does what
readline would: it throws the half-typed line away and draws a fresh prompt
(:mod:`labkit._readline`). While a statement runs, Ctrl-C raises KeyboardInterrupt in it as
usual, also when it waits in the hub.
"""
from __future__ import annotations

import ctypes
import select
import sys

from greenlet import getcurrent

from labkit._asyncio_guest import POLL_BACKEND_INTERVAL, AsyncioGuest
from labkit._readline import PromptKeepingStream, discard_typed_line
from labkit.hub import get_hub

__all__ = [
    "run_hub_until_input", "install_inputhook", "uninstall_inputhook",
    "enable_ipython_terminal", "disable_ipython_terminal", "console_main",
]

def run_hub_until_input(input_fds: list[int]) -> None:
    """Run hub passes until one of ``input_fds`` is readable. Call from the
    main greenlet.

    Between passes it sleeps in select() on the input fds and the hub's epoll
    fd, for at most the time to the hub's next timer: no polling.
    """
    hub = get_hub()
    if getcurrent() is not hub.parent:
        return  # a statement is running inside a greenlet: let it be
    backend_fd = hub.loop.backend_fd
    wait_fds = list(input_fds) + ([backend_fd] if backend_fd >= 0 else [])
    while True:
        delay = _one_pass(hub)
        if backend_fd < 0:
            delay = POLL_BACKEND_INTERVAL if delay is None else min(delay, POLL_BACKEND_INTERVAL)
        readable, _, _ = select.select(wait_fds, [], [], delay)
        if any(fd in input_fds for fd in readable):
            return


def _one_pass(hub) -> float | None:
    try:
        return hub.tick()
    except (KeyboardInterrupt, SystemExit):
        raise  # the caller decides what an interrupt at the prompt means
    except BaseException:
        hub.print_exception("labkit input hook", *sys.exc_info())
        return 0.0


# -- plain python: PyOS_InputHook -----------------------------------------------

_HOOK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int)
#: the ctypes callback object; it must stay alive while installed
_installed_hook = None


def _pyos_inputhook() -> int:
    # Called by readline with the GIL released; ctypes re-acquires it. An
    # exception escaping here would only be printed by ctypes, so report it
    # ourselves and tell readline "nothing happened".
    streams = sys.stdout, sys.stderr
    try:
        # Greenlets' output goes below the line being typed, and the prompt
        # is drawn again under it (labkit._readline).
        sys.stdout, sys.stderr = (PromptKeepingStream(stream, _always) for stream in streams)
        try:
            run_hub_until_input([sys.stdin.fileno()])
        finally:
            sys.stdout, sys.stderr = streams
    except KeyboardInterrupt:
        # readline never sees this one: empty its line and redraw the prompt
        # ourselves, as it would have (labkit._readline).
        if not discard_typed_line():
            sys.stderr.write("\nKeyboardInterrupt\n")
    except BaseException:
        try:
            get_hub().print_exception("labkit PyOS_InputHook", *sys.exc_info())
        except BaseException:
            pass
    return 0


def _always() -> bool:
    return True


def _hook_slot() -> ctypes.c_void_p:
    return ctypes.c_void_p.in_dll(ctypes.pythonapi, "PyOS_InputHook")


def install_inputhook() -> None:
    """Run the hub while the plain ``python`` prompt waits (main thread only).

    Replaces any other PyOS_InputHook (a GUI toolkit's); idempotent.
    """
    global _installed_hook
    if _installed_hook is None:
        get_hub()  # created now, in the main thread, where the hook runs
        _installed_hook = _HOOK_TYPE(_pyos_inputhook)
    _hook_slot().value = ctypes.cast(_installed_hook, ctypes.c_void_p).value


def uninstall_inputhook() -> None:
    """Remove labkit's hook (leave another one in place)."""
    global _installed_hook
    if _installed_hook is None:
        return
    slot = _hook_slot()
    if slot.value == ctypes.cast(_installed_hook, ctypes.c_void_p).value:
        slot.value = None
    _installed_hook = None


# -- IPython in a terminal: a guest of IPython's asyncio loop -------------------
#
# Why not a prompt_toolkit input hook (``%gui <name>``)? Since IPython 8.18,
# IPython hands its input hook to ``PromptSession.prompt(inputhook=...)``, and
# prompt_toolkit's prompt for dumb terminals (TERM=dumb or unknown: Emacs
# shell buffers, pexpect, many CI terminals) drops that argument, so no hook
# runs at all and greenlets stall while the prompt waits. IPython's own
# ``%gui asyncio`` takes another path: it runs the prompt *in* IPython's
# asyncio loop (``prompt_async``), on every terminal type and every IPython
# since 8.0. The hub joins that loop as a guest, exactly as it joins the
# kernel's loop in Jupyter (labkit._asyncio_guest).

#: the guest attached to IPython's terminal loop, if any
_terminal_guest = None
#: True if labkit turned ``%gui asyncio`` on (and so turns it off again)
_enabled_asyncio_gui = False


def enable_ipython_terminal(ipython) -> None:
    """``%load_ext labkit`` in a terminal IPython: run the hub while the
    prompt waits. Main thread only; idempotent.

    With ``--simple-prompt`` IPython reads lines with ``input()``, which
    calls PyOS_InputHook (:func:`install_inputhook`). Otherwise labkit turns
    on ``%gui asyncio`` (if no other GUI hook is active) and becomes a guest
    of IPython's asyncio loop; after each cell it asks for a tick, so work a
    cell queued (``spawn``) starts while the next prompt waits.
    """
    global _terminal_guest, _enabled_asyncio_gui
    hub = get_hub()
    if getattr(ipython, "simple_prompt", False):
        install_inputhook()
        return
    active = getattr(ipython, "active_eventloop", None)
    if active not in (None, "asyncio"):
        raise RuntimeError(
            f"labkit needs IPython's asyncio prompt loop, but %gui {active} is on; "
            f"run %gui (no argument) to turn it off, then %load_ext labkit again")
    if active is None:
        ipython.enable_gui("asyncio")
        _enabled_asyncio_gui = True
    from IPython.core.async_helpers import get_asyncio_loop
    aio = get_asyncio_loop()
    if _terminal_guest is not None:
        if _terminal_guest.hub is hub and _terminal_guest.aio is aio and _terminal_guest.attached:
            return
        _terminal_guest.detach()
    _terminal_guest = AsyncioGuest(hub, aio)
    _terminal_guest.attach()
    ipython.events.register("post_run_cell", _request_tick_after_cell)


def _request_tick_after_cell(result=None) -> None:
    if _terminal_guest is not None:
        _terminal_guest.request_tick()


def disable_ipython_terminal(ipython) -> None:
    """``%unload_ext labkit`` in a terminal IPython: greenlets stay parked."""
    global _terminal_guest, _enabled_asyncio_gui
    uninstall_inputhook()
    if _terminal_guest is not None:
        _terminal_guest.detach()
        _terminal_guest = None
        try:
            ipython.events.unregister("post_run_cell", _request_tick_after_cell)
        except ValueError:
            pass
    if _enabled_asyncio_gui and getattr(ipython, "active_eventloop", None) == "asyncio":
        ipython.enable_gui(None)
    _enabled_asyncio_gui = False


def console_main(argv: list[str] | None = None) -> int:
    """``python -m labkit``: the labkit REPL (see labkit._console)."""
    from labkit._console import console_main as main
    return main(argv)
