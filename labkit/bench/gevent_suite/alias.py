"""``import gevent`` resolved to labkit: the meta-path finder of the suite runner.

Installed in a child process before gevent's test file runs, it answers every
import of a name under ``gevent``; nothing of the installed gevent package is
imported as gevent. What each name resolves to:

=================================  ================================================
``gevent``, ``gevent.X``           ``labkit``, ``labkit.X`` -- the *same* module
                                   object (``gevent.socket is labkit.socket``);
                                   no ``labkit.X``: ModuleNotFoundError, as for any
                                   missing module
``gevent.tests[.X]``               gevent's own test files and their data, loaded
                                   in place from the installed gevent (unchanged)
``gevent.testing[.X]``             the stand-in's file of that name if it has one
                                   (``standin/testing/``), else gevent's own
                                   ``gevent/testing/X.py``, loaded in place
``gevent._compat``, ``gevent._util``  gevent's own files, loaded in place: pure
                                   utilities (``reraise``, ``perf_counter``,
                                   ``Lazy``) that the tests and gevent's testing
                                   helpers import; they touch no hub or loop
``gevent._hub_local``,             the stand-in's (``standin/``): the hub
``gevent._config``                 accessors and the one validator that gevent's
                                   testing helpers import, on labkit's public API
any other ``gevent._X``            ``labkit._X`` if labkit has a private module of
                                   that name (``_fileobjectcommon``, whose names
                                   gevent's tests import), else ModuleNotFoundError
=================================  ================================================

``install("gevent-standin")`` keeps the real gevent and replaces only
``gevent.testing`` by the same stand-in: running gevent under the stand-in
shows whether the stand-in itself loses tests (a harness problem), apart
from what labkit loses.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin")

#: gevent's private modules that are plain utilities, loaded from gevent itself
GEVENT_UTILITIES = ("_compat", "_util")
#: gevent's private modules that the stand-in provides (standin/<name>.py)
STANDIN_PRIVATE = ("_hub_local", "_config")


def gevent_dir() -> str:
    """The installed gevent package's directory, found without importing it."""
    spec = importlib.machinery.PathFinder.find_spec("gevent")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("gevent is not installed: its test files are the measure")
    return list(spec.submodule_search_locations)[0]


class _SameModule(importlib.abc.Loader):
    """Loads ``gevent.X`` as the already-imported ``labkit.X`` itself."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        # module_from_spec overwrites __spec__ (and __loader__ where unset):
        # keep labkit's own, restored in exec_module.
        self._saved = (module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module) -> None:
        module.__spec__, module.__loader__ = self._saved


class GeventAlias(importlib.abc.MetaPathFinder):
    """See the module docstring. ``target``: "labkit" or "gevent-standin"."""

    def __init__(self, target: str = "labkit"):
        if target not in ("labkit", "gevent-standin"):
            raise ValueError(f"target must be 'labkit' or 'gevent-standin', not {target!r}")
        self.target = target
        self.gevent_dir = gevent_dir()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("labkit.") and self.target == "labkit":
            return self._from_import_spec(fullname)
        if fullname != "gevent" and not fullname.startswith("gevent."):
            return None
        parts = fullname.split(".")
        if len(parts) >= 2 and parts[1] in ("testing", "tests"):
            return self._test_support_spec(parts)
        if self.target != "labkit":
            return None  # the real gevent, found by the normal finders
        if len(parts) == 2 and parts[1] in GEVENT_UTILITIES:
            return self._file_spec(fullname, os.path.join(self.gevent_dir, parts[1] + ".py"))
        if len(parts) == 2 and parts[1] in STANDIN_PRIVATE:
            return self._file_spec(fullname, os.path.join(STANDIN, parts[1] + ".py"))
        target_name = "labkit" + fullname[len("gevent"):]
        try:
            found = importlib.util.find_spec(target_name)
        except ModuleNotFoundError:
            found = None
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(
            fullname, _SameModule(target_name),
            is_package=found.submodule_search_locations is not None)

    def _from_import_spec(self, fullname):
        # ``from gevent import testing``: gevent *is* labkit here, and the
        # import system looks the submodule up by the package's own
        # __name__, as ``labkit.testing``. Answer the names that only the
        # alias provides with the gevent.X module; leave labkit's alone.
        first = fullname.split(".")[1]
        if first in ("testing", "tests") + GEVENT_UTILITIES + STANDIN_PRIVATE:
            return importlib.machinery.ModuleSpec(
                fullname, _SameModule("gevent" + fullname[len("labkit"):]))
        return None

    def _test_support_spec(self, parts):
        """gevent.tests[.X] from gevent; gevent.testing[.X] from the stand-in
        if it has that file, else from gevent."""
        fullname = ".".join(parts)
        package, rest = parts[1], parts[2:]
        if len(rest) > 1:
            # gevent.tests.monkey_package.X and the like: a subpackage of gevent's
            ours = None
        else:
            ours = os.path.join(STANDIN, package, *(rest or ["__init__"])) + ".py"
        if package == "testing" and ours and os.path.exists(ours):
            return self._file_spec(fullname, ours, is_package=not rest)
        base = os.path.join(self.gevent_dir, package, *rest)
        if os.path.isdir(base):
            return self._file_spec(fullname, os.path.join(base, "__init__.py"), is_package=True)
        if os.path.exists(base + ".py"):
            return self._file_spec(fullname, base + ".py")
        return None

    def _file_spec(self, fullname, filename, is_package=False):
        if is_package:
            # The package's submodules are all answered by find_spec above;
            # __path__ still points at gevent's directory so that data files
            # next to the tests (certificates) are found by path.
            package = fullname.split(".")[1] if "." in fullname else ""
            locations = [os.path.join(self.gevent_dir, package)]
        else:
            locations = None
        return importlib.util.spec_from_file_location(
            fullname, filename, submodule_search_locations=locations)


def install(target: str = "labkit") -> GeventAlias:
    """Put the alias first on ``sys.meta_path``; before anything imports gevent."""
    if any(name == "gevent" or name.startswith("gevent.") for name in sys.modules):
        raise RuntimeError("gevent is already imported: install the alias first")
    finder = GeventAlias(target)
    sys.meta_path.insert(0, finder)
    return finder
