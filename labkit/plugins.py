"""Plug-ins: what labkit runs without naming it.

labkit's core never imports what is built on top of it -- the tracer
included. A package that adds to labkit says so in its own metadata, and
labkit looks it up here, by name, when it is needed. Four kinds:

- **IPython extensions**, loaded by ``%load_ext labkit`` after the hub has
  joined the host's loop: an object (usually a module) with
  ``load_ipython_extension(ipython)`` and optionally
  ``unload_ipython_extension(ipython)`` -- IPython's own extension protocol,
  so the same module also loads on its own with ``%load_ext``. The tracer's
  magics (``%%trace``, ``%trace_blocking``, ``%labkit_status``) come this way;
- **commands**, run by ``python -m labkit NAME ARGS``: ``main(argv) -> int``,
  the first paragraph of its docstring being the line ``--help`` shows.
  The tracer's ``tour`` comes this way;
- **the console server**, started by ``labkit.console.serve()`` (and
  ``LABKIT_CONSOLE=1``): ``serve(path=None, tcp=False)`` returning a server
  with ``path`` and ``close()`` (``tcp`` is passed only when asked for). The tracer's ``tracing.attach:serve`` is it;
- **the flight recorder**, started by the gunicorn worker when
  ``LABKIT_FLIGHT`` is set: an object (a module) with ``start_from_env()``,
  ``parse_config(value)`` and ``merge_dumps(since)``. The tracer's ``tracing.flight`` is it.

Installed packages declare them as entry points (read with
:mod:`importlib.metadata`, so they take effect when the package is installed,
``pip install -e .`` included)::

    [project.entry-points."labkit.ipython"]
    tracing = "tracing.magics"

    [project.entry-points."labkit.commands"]
    tour = "tracing.tour:main"

    [project.entry-points."labkit.console"]
    tracing = "tracing.attach:serve"

    [project.entry-points."labkit.flight"]
    tracing = "tracing.flight"

Code that is not installed -- a notebook, a test -- calls
:func:`register_ipython` or :func:`register_command`; a registered name
hides an entry point of the same name.

Failure. A plug-in that cannot be imported, or whose load raises, must not
take ``%load_ext labkit`` down with it: it is reported as a
:class:`PluginWarning` naming the plug-in and the error, and the others load.
A command the user typed is different: its errors propagate, as any script's.

Contract: call from the thread that owns IPython (the kernel's main thread).
Plug-ins load in order of name, and unload in the reverse order.
"""
from __future__ import annotations

import inspect
import warnings
from importlib.metadata import EntryPoint, entry_points

__all__ = ["IPYTHON_GROUP", "COMMAND_GROUP", "CONSOLE_GROUP", "PluginWarning",
           "register_ipython", "register_command", "load_ipython_plugins",
           "unload_ipython_plugins", "command", "command_names", "command_summary",
           "console_server", "FLIGHT_GROUP", "flight_recorder"]

#: The entry-point groups read for each kind of plug-in.
IPYTHON_GROUP = "labkit.ipython"
COMMAND_GROUP = "labkit.commands"
CONSOLE_GROUP = "labkit.console"
FLIGHT_GROUP = "labkit.flight"

#: Registered by code: group -> {name: object}.
_registered: dict = {IPYTHON_GROUP: {}, COMMAND_GROUP: {}, CONSOLE_GROUP: {}, FLIGHT_GROUP: {}}
#: The IPython extensions the last load_ipython_plugins() loaded, by name.
_loaded: dict = {}


class PluginWarning(RuntimeWarning):
    """A plug-in failed to load or unload; labkit went on without it."""


def register_ipython(name: str, extension) -> None:
    """Load ``extension`` at each ``%load_ext labkit`` (see the module docstring)."""
    _registered[IPYTHON_GROUP][name] = extension


def register_command(name: str, main) -> None:
    """Run ``main(argv)`` for ``python -m labkit NAME``."""
    _registered[COMMAND_GROUP][name] = main


def _sources(group: str) -> dict:
    """name -> entry point or registered object, registered ones winning."""
    found = {}
    for ep in entry_points(group=group):
        found.setdefault(ep.name, ep)   # one name installed twice: the first one
    found.update(_registered[group])
    return dict(sorted(found.items()))


def _resolve(source):
    """The plug-in itself: an entry point is imported now, on first use."""
    return source.load() if isinstance(source, EntryPoint) else source


def _warn(name: str, doing: str, exc: BaseException) -> None:
    warnings.warn(f"labkit plug-in {name!r} failed to {doing}: "
                  f"{type(exc).__name__}: {exc}", PluginWarning, stacklevel=3)


def load_ipython_plugins(ipython) -> list[str]:
    """Call ``load_ipython_extension(ipython)`` of each IPython plug-in.

    Returns the names of those that loaded. A failing one is reported with a
    :class:`PluginWarning` and skipped. ``%load_ext labkit`` calls this.
    """
    for name, source in _sources(IPYTHON_GROUP).items():
        try:
            extension = _resolve(source)
            extension.load_ipython_extension(ipython)
        except Exception as exc:
            _warn(name, "load", exc)
        else:
            _loaded[name] = extension
    return list(_loaded)


def unload_ipython_plugins(ipython) -> None:
    """Call ``unload_ipython_extension(ipython)`` of each loaded plug-in that
    has one, newest first (``%unload_ext labkit``). Failures are warnings."""
    for name, extension in reversed(list(_loaded.items())):
        del _loaded[name]
        unload = getattr(extension, "unload_ipython_extension", None)
        if unload is None:
            continue
        try:
            unload(ipython)
        except Exception as exc:
            _warn(name, "unload", exc)


def command_names() -> list[str]:
    """The plug-in commands, by name (nothing is imported)."""
    return list(_sources(COMMAND_GROUP))


def command(name: str):
    """The ``main(argv)`` of plug-in command ``name``, or None if there is
    none. Importing it may raise: the user asked for this very command."""
    source = _sources(COMMAND_GROUP).get(name)
    return None if source is None else _resolve(source)


def command_summary(name: str) -> str:
    """The first paragraph of the command's docstring, for ``--help``; if
    the plug-in cannot be imported, a note saying why."""
    try:
        main = command(name)
    except Exception as exc:
        return f"(cannot be loaded: {type(exc).__name__}: {exc})"
    return (inspect.getdoc(main) or "").split("\n\n")[0]


def console_server():
    """The ``serve(path=None)`` of the console plug-in (the first by name),
    or None if none is installed. Importing it may raise."""
    sources = _sources(CONSOLE_GROUP)
    return _resolve(next(iter(sources.values()))) if sources else None


def flight_recorder():
    """The flight-recorder plug-in (the first by name: an object with
    ``start_from_env()``, ``parse_config(value)`` and ``merge_dumps(since)``), or None if none is
    installed. Importing it may raise."""
    sources = _sources(FLIGHT_GROUP)
    return _resolve(next(iter(sources.values()))) if sources else None
