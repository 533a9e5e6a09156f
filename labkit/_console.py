"""``python -m labkit``: a REPL where the hub owns the main thread.

The pattern of ``python -m asyncio``: the event loop keeps the main thread,
and the prompt lives in a helper thread. Each statement you type is handed to
the hub and runs in a greenlet of its own, so top-level code may call
``labkit.sleep``, ``spawn``, ``joinall`` ... directly, and greenlets spawned at
the prompt keep running while you type::

    main thread (hub)                        helper thread "labkit-repl"
    -----------------                        ---------------------------
    main greenlet parked; the hub loops      InteractiveConsole.interact()
                                               read a line, compile it
      <---- run_callback_threadsafe(start) ---  runcode(): hand it over, wait
    statement greenlet: exec(code)
      ... sleeps, spawns, joins ...
    future.set_result / set_exception ----->   print the traceback, if any
                                               next prompt
                                             Ctrl-D / exit(): thread ends
      <---- run_callback_threadsafe(main) ---
    console_main returns the exit code

Ctrl-C: the signal goes to the main thread (the helper thread blocks it). If
a statement is running, KeyboardInterrupt is raised in that statement's
greenlet -- at once if it is running Python code, at its next wait if it is
parked -- and the REPL goes on; greenlets spawned earlier are not touched,
unless one of them never yields: then it is stopped (:mod:`labkit._runaway`).
At an idle prompt, "KeyboardInterrupt" is printed, the half-typed line is
thrown away and a fresh prompt drawn, as in plain python: the prompt's
thread cannot be interrupted, so the main thread empties readline's line
buffer itself (:mod:`labkit._readline`; with libedit the line stays).
"""
from __future__ import annotations

import code
import concurrent.futures
import signal
import sys
import traceback

from greenlet import getcurrent

import labkit
from labkit import _native
from labkit._park import Waiter
from labkit._readline import PromptKeepingStream, discard_typed_line
from labkit._runaway import RunawayGuard
from labkit.hub import get_hub, spawn_raw

__all__ = ["LabkitConsole", "console_main"]

BANNER = (
    f"labkit {labkit.__version__} REPL, Python {sys.version.split()[0]} on {sys.platform}\n"
    "The hub runs in the main thread: call labkit.sleep, spawn, joinall ... directly;\n"
    "spawned greenlets keep running while you type. Ctrl-C stops the running statement.\n"
    f"{getattr(sys, 'ps1', '>>> ')}import labkit")


class LabkitConsole(code.InteractiveConsole):
    """An InteractiveConsole whose statements run in greenlets of ``hub``.

    ``interact`` runs in the helper thread; ``_start_statement`` and
    ``_run_statement`` run in the hub's thread.
    """

    def __init__(self, locals: dict, hub):
        super().__init__(locals)
        self.hub = hub
        #: the greenlet running the current statement, or None at the prompt
        self.statement = None
        self.exit_code = 0
        #: True while the helper thread waits in input() (greenlets' output
        #: then goes below the prompt: labkit._readline.PromptKeepingStream)
        self.prompt_waiting = False

    # -- helper thread ------------------------------------------------------
    def raw_input(self, prompt: str = "") -> str:
        self.prompt_waiting = True
        try:
            return super().raw_input(prompt)
        finally:
            self.prompt_waiting = False

    def runcode(self, compiled) -> None:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.hub.run_callback_threadsafe(self._start_statement, compiled, future)
        exc = future.exception()  # waits
        if exc is None:
            return
        if isinstance(exc, SystemExit):
            raise exc
        if isinstance(exc, KeyboardInterrupt):
            self.write("\nKeyboardInterrupt\n")
            return
        self._show_statement_error(exc)

    def _show_statement_error(self, exc: BaseException) -> None:
        # Skip the first frame (_run_statement), as code.InteractiveConsole
        # skips its own runcode frame.
        tb = exc.__traceback__.tb_next if exc.__traceback__ else None
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
        self.write("".join(traceback.format_exception(type(exc), exc, tb)))

    # -- hub thread -------------------------------------------------------------
    def _start_statement(self, compiled, future) -> None:
        self.statement = spawn_raw(self._run_statement, compiled, future)

    def _run_statement(self, compiled, future) -> None:
        try:
            exec(compiled, self.locals)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        finally:
            self.statement = None

    def interrupt(self) -> bool:
        """SIGINT handler body (main thread): stop the running statement.
        Returns False when no statement runs (the prompt is waiting)."""
        statement = self.statement
        if statement is None or statement.dead:
            return False
        if getcurrent() is statement:
            raise KeyboardInterrupt  # it is running Python code right now
        # It is parked (or another greenlet runs): wake it with the error.
        self.hub.run_callback(_throw_if_alive, statement)
        self.hub.loop.wake()
        return True


def _throw_if_alive(glet) -> None:
    if not glet.dead:
        glet.throw(KeyboardInterrupt)


def _repl_thread(console: LabkitConsole, finished: Waiter) -> None:
    """The helper thread: the prompt, until Ctrl-D or exit()."""
    # Signals must reach the main thread, whose epoll they interrupt.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        console.interact(banner=BANNER, exitmsg="exiting labkit REPL...")
    except SystemExit as exc:
        console.exit_code = _exit_status(exc)
    except BaseException:
        traceback.print_exc()
        console.exit_code = 1
    finally:
        console.hub.run_callback_threadsafe(finished.switch, None)


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def console_main(argv: list[str] | None = None) -> int:
    """Run the labkit REPL until Ctrl-D or exit(); the exit status."""
    hub = get_hub()
    console = LabkitConsole({"__name__": "__main__", "labkit": labkit}, hub)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass

    runaway = RunawayGuard(hub)

    def on_sigint(signum, frame):
        current = getcurrent()
        if current in (hub, hub.parent, console.statement):
            runaway.settle()
        elif not runaway.on_sigint(current, frame):  # may raise, in `current`
            return  # a background greenlet runs: is it stuck? (labkit._runaway)
        if not console.interrupt() and not discard_typed_line():
            sys.stderr.write("\nKeyboardInterrupt\n")

    previous = signal.signal(signal.SIGINT, on_sigint)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (PromptKeepingStream(stream, lambda: console.prompt_waiting)
                              for stream in streams)
    finished = Waiter(hub)
    hub.keepalive(+1)  # the REPL thread will wake us: never LoopExit
    try:
        # (a real thread even if threading is patched green: labkit._native)
        _native.start_thread(_repl_thread, (console, finished), "labkit-repl")
        while True:
            try:
                finished.get()
                break
            except KeyboardInterrupt as exc:
                # A background greenlet was stopped (labkit._runaway), and the
                # hub hands its KeyboardInterrupt to us: say so, go on.
                text = f"KeyboardInterrupt: {exc}" if str(exc) else "KeyboardInterrupt"
                if not discard_typed_line(message=text):
                    sys.stderr.write(f"\n{text}\n")
    finally:
        hub.keepalive(-1)
        signal.signal(signal.SIGINT, previous)
        sys.stdout, sys.stderr = streams
    return console.exit_code


if __name__ == "__main__":
    sys.exit(console_main(sys.argv[1:]))
