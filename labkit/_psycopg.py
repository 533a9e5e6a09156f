"""labkit.monkey's half for psycopg 3: a cooperative wait, imported or not.

psycopg 3 waits for its socket in C (``wait_c``) unless it sees *gevent's*
monkey patching, which labkit's is not: twenty concurrent ``pg_sleep(0.5)``
then take 10 s, not 0.5 s -- the whole hub waits in C each time. psycopg
looks its wait function up as ``psycopg.waiting.wait`` on every call, so
labkit sets that (and ``_ready``, its non-blocking twin) to psycopg's own
poll-based functions, which call ``select.poll`` -- patched, labkit's
cooperative poll. An explicit ``PSYCOPG_WAIT_FUNC`` is left alone.

If psycopg is not imported yet, a meta-path finder waits for
``psycopg.waiting`` to be loaded and switches it then (and removes itself).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

__all__ = ["patch", "is_patched"]

_MODULE = "psycopg.waiting"


def patch() -> None:
    """Make psycopg 3 wait cooperatively, now or when it is imported."""
    if "PSYCOPG_WAIT_FUNC" in os.environ:
        return   # the user chose
    module = sys.modules.get(_MODULE)
    if module is not None:
        _switch(module)
    elif not any(isinstance(finder, _WhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenImported())


def is_patched() -> bool:
    module = sys.modules.get(_MODULE)
    return module is not None and module.wait is getattr(module, "wait_poll", None)


def _switch(module) -> None:
    if hasattr(module, "wait_poll"):
        module.wait = module.wait_poll
        module._ready = getattr(module, "_ready_poll", module._ready)


class _WhenImported(importlib.abc.MetaPathFinder):
    """Switches psycopg.waiting right after it is executed, then leaves."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_switch(module):
            exec_module(module)
            _switch(module)

        spec.loader.exec_module = exec_then_switch
        return spec
