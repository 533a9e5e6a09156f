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

A process that runs no hub but forks workers that do (the gunicorn master:
labkit.gunicorn) serves nothing itself: it calls :func:`serve_as_group`,
which closes what ``import labkit`` started and leaves a group file
(``<dir>/console-<pid>.group``, 0600) instead. ``python -m labkit console
PID`` then finds the children of PID that serve a console (from /proc) and
shows them together, with what the group file says about the parent (its
track of forks, reapings and signals, :func:`publish_group`).

This module owns where consoles live (:func:`socket_dir`, a directory
only this user can enter, :func:`private_dir`) and how files in it are
written (:func:`write_private`); the tracer's server and client use them.
"""
from __future__ import annotations

import os
import stat

from labkit import plugins

__all__ = ["serve", "close", "serve_as_group", "publish_group", "group_path", "socket_dir",
           "private_dir", "write_private", "requested", "ENV_VAR"]

#: The environment variable that turns serving on at ``import labkit``.
ENV_VAR = "LABKIT_CONSOLE"

#: The servers serve() returned in this process, to close() them.
_served: list = []
#: ``tcp`` of each serve() on the default path in this process: a forked
#: child serves the same way (see :func:`_forget_after_fork`).
_serving_as: list = []
#: The group file this process published (serve_as_group), removed at exit.
_group_file: str | None = None


# -- where consoles live -----------------------------------------------------------

def socket_dir() -> str:
    """``$XDG_RUNTIME_DIR/labkit`` when that variable names a directory, else
    ``/tmp/labkit-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "labkit")
    return os.path.join("/tmp", f"labkit-{os.getuid()}")


def group_path(pid: int) -> str:
    """The group file of process ``pid`` (this user's): see :func:`serve_as_group`."""
    return os.path.join(socket_dir(), f"console-{int(pid)}.group")


def private_dir(path: str) -> None:
    """Make ``path`` a directory only this user can enter, or refuse one
    that exists and is not (someone else could swap a socket in it):
    PermissionError."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} exists and is not a directory")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not {os.getuid()}")
    if info.st_mode & 0o077:
        raise PermissionError(f"{path} is mode {stat.S_IMODE(info.st_mode):o}; "
                              "the console's directory must be 0700")


def write_private(path: str, text: str) -> None:
    """Write ``path`` as a 0600 file, all at once (a reader never sees half
    of it, nor a moment when it is wider than 0600)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


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
        server = serve_plugin(path)
    else:
        server = serve_plugin(path, tcp=tcp)
    if server not in _served:
        _served.append(server)
        if path is None and tcp not in _serving_as:
            _serving_as.append(tcp)
    return server


def close() -> None:
    """Close every server :func:`serve` started in this process (their
    sockets and token files are removed). Idempotent."""
    servers, _served[:] = list(_served), []
    _serving_as.clear()
    for server in servers:
        if getattr(server, "pid", os.getpid()) == os.getpid():
            server.close()


def requested(environ=os.environ) -> bool:
    """Whether ``LABKIT_CONSOLE`` asks this process to serve its console."""
    return environ.get(ENV_VAR, "") not in ("", "0")


def serve_as_group(name: str, document: dict | None = None) -> str:
    """For a process that runs no hub and forks workers that serve their
    consoles (the gunicorn master): stop serving here (a console whose hub
    never runs would never answer) and publish the group file that tells
    ``python -m labkit console PID`` to show this process's children;
    ``name`` says what this process is ("gunicorn master 1234"),
    ``document`` what :func:`publish_group` would add. Returns the file's
    path; it is removed when this process exits."""
    global _group_file
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, not {name!r}")
    close()
    path = publish_group(name, document)
    if _group_file is None:
        import atexit
        atexit.register(_remove_group_file)
    _group_file = path
    return path


def publish_group(name: str, document: dict | None = None) -> str:
    """(Re)write this process's group file: ``{"labkit": "console-group",
    "pid", "name", "track"}``, ``track`` being ``document`` (a labkit
    process trace document: Chrome events plus ``metadata.labkit``, see
    tracing/merge.py) or None. Plain data, read-only to the reader; 0600 in
    the console's 0700 directory. Returns the path."""
    import json
    directory = socket_dir()
    private_dir(directory)
    path = group_path(os.getpid())
    write_private(path, json.dumps({"labkit": "console-group", "pid": os.getpid(),
                                    "name": name, "track": document}))
    return path


def _forget_after_fork() -> None:
    """In a forked child: the parent's servers and group file are not this
    process's. If the parent served its console (serve() on the default
    path, or LABKIT_CONSOLE), the child serves its own, the same way, as
    soon as its hub runs (a callback of the forking thread's hub): so
    ``python -m labkit console PARENT_PID`` finds it among the parent's
    children (tracing/attach_group.py). A child whose hub never runs (it
    execs, or works without labkit) never opens a socket it could not
    answer on."""
    global _group_file
    again = list(_serving_as) if _served else []
    _served.clear()
    _serving_as.clear()
    _group_file = None
    if again:
        from labkit.hub import get_hub_if_exists
        hub = get_hub_if_exists()
        if hub is not None and not hub.loop.closed:
            hub.loop.run_callback(_serve_in_child, again)


def _serve_in_child(transports) -> None:
    import labkit
    labkit.spawn(_serve_each, transports)   # serve() parks: not in the hub itself


def _serve_each(transports) -> None:
    for tcp in transports:
        try:
            serve(tcp=tcp)
        except Exception as exc:   # the child runs on without its console
            import warnings
            warnings.warn(f"the forked child {os.getpid()} cannot serve its console: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning)


os.register_at_fork(after_in_child=_forget_after_fork)


def _remove_group_file() -> None:
    global _group_file
    path, _group_file = _group_file, None
    if path is not None and os.path.basename(path) == f"console-{os.getpid()}.group":
        try:
            os.unlink(path)
        except OSError:
            pass


def serve_if_requested(environ=os.environ):
    """``serve()`` if ``LABKIT_CONSOLE`` asks for it, else None; what
    ``import labkit`` calls. A failure to serve is a warning, not a failed
    import: the program runs without its console."""
    value = environ.get(ENV_VAR, "")
    if not requested(environ):
        return None
    try:
        return serve(tcp=value.strip().lower() == "tcp")
    except Exception as exc:
        import warnings
        warnings.warn(f"{ENV_VAR}={value}: cannot serve the console: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return None
