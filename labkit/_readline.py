"""Ctrl-C at a waiting prompt: throw away the half-typed line, draw a fresh prompt.

The two plain REPLs labkit runs under cannot let Ctrl-C reach readline the
usual way. Python's own prompt discards the line when a signal handler
raises while readline waits; but ``python -m labkit`` reads lines in a helper
thread (signal handlers run in the main thread only), and the plain-python
input hook takes the interrupt inside the hook, where readline never learns
of it. Left alone, the half-typed line stays in readline's buffer and is
glued to the next one: ``abc = 1 + `` Ctrl-C ``print("ok")`` runs
``abc = 1 + print("ok")``.

So labkit does what readline does on an interrupt, through readline's C
API (the library the ``readline`` module is linked with, via ctypes): empty
the line buffer, print "KeyboardInterrupt", and redraw the prompt on a new
line. readline only touches its buffer when a key arrives, in the thread
that waits in ``input()``; the prompt is idle when this runs.

The same API keeps the prompt readable when a greenlet prints while you
type: :class:`PromptKeepingStream` clears the prompt line before the output
and redraws the prompt and the half-typed line after it, as IPython does.

GNU readline only. With libedit (macOS) or without ``readline``,
:func:`discard_typed_line` returns False and the caller prints
"KeyboardInterrupt" as before, and output lands where the cursor is.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["discard_typed_line", "PromptKeepingStream"]

#: the readline library (ctypes), False if unusable, None before the first look
_lib = None


def _readline_library():
    global _lib
    if _lib is None:
        _lib = False
        module = sys.modules.get("readline")
        if module is not None and "libedit" not in (module.__doc__ or "") \
                and getattr(module, "backend", "readline") == "readline":
            try:
                lib = ctypes.CDLL(module.__file__)
                for name in ("rl_replace_line", "rl_on_new_line", "rl_redisplay"):
                    getattr(lib, name)
                ctypes.c_int.in_dll(lib, "rl_point")
                _lib = lib
            except (OSError, AttributeError, ValueError):
                pass
    return _lib


def discard_typed_line(stream=None, message: str = "KeyboardInterrupt") -> bool:
    """At a prompt waiting in ``input()`` (any thread): empty the line being
    typed, write ``message`` and redraw the prompt below it. True if done;
    False if readline is not GNU readline (or not loaded)."""
    lib = _readline_library()
    if not lib:
        return False
    stream = stream or sys.__stderr__ or sys.stderr  # not a PromptKeepingStream
    lib.rl_replace_line(b"", 0)
    ctypes.c_int.in_dll(lib, "rl_point").value = 0
    try:
        stream.write(f"\n{message}\n")
        stream.flush()
    except Exception:
        pass
    lib.rl_on_new_line()
    lib.rl_redisplay()
    return True


class PromptKeepingStream:
    """``sys.stdout``/``sys.stderr`` stand-in for a REPL whose prompt waits
    while greenlets run: while ``prompt_waiting()`` is true, output goes
    below the line being typed, and the prompt with that line is drawn again
    under it. Anything else is the wrapped stream's."""

    def __init__(self, stream, prompt_waiting):
        self._stream = stream
        self._prompt_waiting = prompt_waiting
        self._cleared = False   # the prompt line was cleared for output

    def write(self, text: str) -> int:
        lib = _readline_library()
        if not text or not lib or not self._prompt_waiting():
            return self._stream.write(text)
        if not self._cleared:
            self._stream.write("\r")
            self._stream.flush()
            if hasattr(lib, "rl_clear_visible_line"):
                lib.rl_clear_visible_line()
            self._cleared = True
        written = self._stream.write(text)
        if text.endswith("\n"):
            self._stream.flush()
            self._cleared = False
            lib.rl_on_new_line()
            lib.rl_redisplay()
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)
