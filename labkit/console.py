"""Let ``python -m labkit console PID`` attach to this process (opt-in).

    import labkit.console
    server = labkit.console.serve()     # or run the process with LABKIT_CONSOLE=1
    print(server.path)                  # the Unix socket: <dir>/console-<pid>.sock
    ...
    server.close()

From another terminal, as the same user::

    python -m labkit console PID          # the live table, lints and timeline
    python -m labkit console PID --once   # one frame, printed
    python -m labkit console PID --record trace.jsonl

What is served is read-only data about the hub's greenlets, on a Unix socket
only this user can open (mode 0600 in a 0700 directory, and the peer's uid
checked by the kernel's SO_PEERCRED). There is no network listener by
default and no way to run code in this process through it
(:mod:`labkit.backdoor` is that, separately and explicitly).

Where a Unix socket will not do, ``serve(tcp=True)`` (or
``LABKIT_CONSOLE=tcp``) serves over TCP on 127.0.0.1 only, with a random
token every request must carry, written with the port to a 0600 file next
to where the socket would be (``<dir>/console-<pid>.token``);
``python -m labkit console PID`` finds it there by itself.

The server is the tracer's (``tracing.attach``); labkit finds it as a
plug-in (:func:`labkit.plugins.console_server`), never by importing it.

``LABKIT_CONSOLE``: when set to anything but ``""`` or ``"0"`` at
``import labkit``, the main thread's hub starts serving at once (the hub is
created then): over TCP for ``"tcp"``, on the Unix socket otherwise. Serving happens in greenlets of that hub: while the main
thread is blocked outside labkit, the console gets no answer.
"""
from __future__ import annotations

import os

from labkit import plugins

__all__ = ["serve", "ENV_VAR"]

#: The environment variable that turns serving on at ``import labkit``.
ENV_VAR = "LABKIT_CONSOLE"


def serve(path: str | None = None, tcp=False):
    """Serve this process's console on a Unix socket; returns the server
    (``.path``, ``.close()``). A second call returns the running server.
    Call from the thread whose hub should serve (usually the main one).

    ``tcp``: serve on a loopback TCP port with a token instead (True:
    127.0.0.1 and a free port; or a port, ``"127.0.0.1:PORT"``); any
    address that is not loopback is a ValueError. ``path`` is then the
    token file (default: next to where the socket would be).

    Raises RuntimeError if no console plug-in is installed (the tracer
    provides it: ``pip install labkit`` installs both)."""
    serve_plugin = plugins.console_server()
    if serve_plugin is None:
        raise RuntimeError("no labkit console plug-in is installed "
                           "(entry-point group 'labkit.console'; the tracer provides it)")
    if tcp is False or tcp is None:
        return serve_plugin(path)
    return serve_plugin(path, tcp=tcp)


def serve_if_requested(environ=os.environ):
    """``serve()`` if ``LABKIT_CONSOLE`` asks for it, else None; what
    ``import labkit`` calls. A failure to serve is a warning, not a failed
    import: the program runs without its console."""
    value = environ.get(ENV_VAR, "")
    if value in ("", "0"):
        return None
    try:
        return serve(tcp=value.strip().lower() == "tcp")
    except Exception as exc:
        import warnings
        warnings.warn(f"{ENV_VAR}={value}: cannot serve the console: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return None
