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

Three REPLs, three hooks:

- IPython in a terminal: ``%load_ext labkit`` registers a prompt_toolkit
  input hook (``IPython.terminal.pt_inputhooks.register``) and enables it, as
  ``%gui labkit`` would. prompt_toolkit tells the hook about input through
  ``context.fileno()`` (a pipe it writes when its own selector fires).
- plain ``python``: :func:`install_inputhook` sets ``PyOS_InputHook`` through
  ctypes; readline (or the stdin reader) calls it while waiting for a line,
  with the GIL released -- ctypes takes it back for us.
- ``python -m labkit``: no hook at all; the hub owns the main thread and the
  prompt runs in a helper thread (see :mod:`labkit._console`).

Contract of the hooks: they run in the main thread, in the main greenlet;
they never let an exception escape into the REPL's C code (errors are
printed; a Ctrl-C that lands while the prompt waits is printed and dropped --
readline would not see it anyway, as the hook runs after readline's own
check). While a statement runs, Ctrl-C raises KeyboardInterrupt in it as
usual, also when it waits in the hub.
"""
from __future__ import annotations

import ctypes
import select
import sys

from greenlet import getcurrent

from labkit.hub import get_hub

__all__ = [
    "run_hub_until_input", "install_inputhook", "uninstall_inputhook",
    "enable_ipython_terminal", "disable_ipython_terminal", "console_main",
]

#: With no fd to wait on (the poll(2) backend), look at the hub this often.
POLL_BACKEND_INTERVAL = 0.01


def run_hub_until_input(input_fds: list[int], input_is_ready=None) -> None:
    """Run hub passes until one of ``input_fds`` is readable (or
    ``input_is_ready()`` says so). Call from the main greenlet.

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
        if input_is_ready is not None and input_is_ready():
            return
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
    try:
        run_hub_until_input([sys.stdin.fileno()])
    except KeyboardInterrupt:
        sys.stderr.write("\nKeyboardInterrupt\n")
    except BaseException:
        try:
            get_hub().print_exception("labkit PyOS_InputHook", *sys.exc_info())
        except BaseException:
            pass
    return 0


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


# -- IPython in a terminal: a prompt_toolkit input hook ------------------------

def _prompt_toolkit_hook(context) -> None:
    # prompt_toolkit's selector runs in a helper thread meanwhile and writes
    # context.fileno() when it has something: return then.
    try:
        run_hub_until_input([context.fileno()], context.input_is_ready)
    except BaseException:  # Ctrl-C is a key press here (raw mode): rare
        get_hub().print_exception("labkit input hook", *sys.exc_info())


def enable_ipython_terminal(ipython) -> None:
    """``%load_ext labkit`` in a terminal IPython: enable the input hook.

    With ``--simple-prompt`` IPython reads lines with ``input()``, which
    calls PyOS_InputHook rather than prompt_toolkit's hook.
    """
    get_hub()
    if getattr(ipython, "simple_prompt", False):
        install_inputhook()
        return
    from IPython.terminal.pt_inputhooks import register
    register("labkit", _prompt_toolkit_hook)
    if getattr(ipython, "active_eventloop", None) != "labkit":
        ipython.enable_gui("labkit")


def disable_ipython_terminal(ipython) -> None:
    """``%unload_ext labkit`` in a terminal IPython."""
    uninstall_inputhook()
    if getattr(ipython, "active_eventloop", None) == "labkit":
        ipython.enable_gui(None)


def console_main(argv: list[str] | None = None) -> int:
    """``python -m labkit``: the labkit REPL (see labkit._console)."""
    from labkit._console import console_main as main
    return main(argv)
