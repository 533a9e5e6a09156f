"""Stand-in for ``gevent.testing`` (gevent's test helpers), for running
gevent's own test files against labkit: the same names as gevent's
``gevent/testing/__init__.py``, from the same submodules.

Most submodules are gevent's own files, loaded in place by the alias
(labkit/bench/gevent_suite/alias.py): params, skipping, flaky, sockets,
timing, testcase, util, support, errorhandler... Only the ones that reach
into gevent's implementation are the stand-in's, in this directory:

- ``hub.py``: the quiet test hub, without gevent's private
  ``Hub._normalize_exception``;
- ``sysinfo.py``: gevent's platform constants, without importing
  ``gevent.core`` (which only told libev from libuv);
- ``leakcheck.py``: the decorators, as no-ops (gevent's run only under
  GEVENTTEST_LEAKCHECK, and need gevent's loop internals);
- this file: gevent's, minus the libuv test set-up, and the quiet hub is
  installed only where the hub module offers ``set_default_hub_class``.
"""
import unittest

from .hub import QuietHub
import gevent.hub
if hasattr(gevent.hub, "set_default_hub_class"):
    gevent.hub.set_default_hub_class(QuietHub)

try:
    import faulthandler
except ImportError:  # pragma: no cover
    pass
else:
    faulthandler.enable()

from .sysinfo import (  # noqa: E402,F401
    VERBOSE, WIN, LINUX, OSX, LIBUV, CFFI_BACKEND, DEBUG, RUN_LEAKCHECKS, RUN_COVERAGE,
    PYPY, PYPY3, CPYTHON, PLATFORM_SPECIFIC_SUFFIXES, NON_APPLICABLE_SUFFIXES,
    SHARED_OBJECT_EXTENSION, RUNNING_ON_TRAVIS, RUNNING_ON_APPVEYOR, RUNNING_ON_CI,
    RUNNING_ON_MANYLINUX, RUNNING_ON_MUSLLINUX, RUNNING_ON_GITHUB_ACTIONS,
    RESOLVER_NOT_SYSTEM, RESOLVER_DNSPYTHON, RESOLVER_ARES, resolver_dnspython_available,
    EXPECT_POOR_TIMER_RESOLUTION, CONN_ABORTED_ERRORS,
)
from .skipping import (  # noqa: E402,F401
    skipOnWindows, skipOnAppVeyor, skipOnCI, skipOnPyPy3OnCI, skipOnPyPy, skipOnPyPyOnCI,
    skipOnPyPyOnWindows, skipOnPyPy3, skipIf, skipUnless, skipOnLibev, skipOnLibuv,
    skipOnLibuvOnWin, skipOnLibuvOnCI, skipOnLibuvOnCIOnPyPy, skipOnLibuvOnPyPyOnWin,
    skipOnPurePython, skipWithCExtensions, skipOnPy37, skipOnPy310, skipOnPy312, skipOnPy3,
    skipWithoutResource, skipWithoutExternalNetwork, skipOnManylinux, skipOnMacOnCI,
)
from .exception import ExpectedException  # noqa: E402,F401
from .leakcheck import ignores_leakcheck  # noqa: E402,F401
from .params import (  # noqa: E402,F401
    LARGE_TIMEOUT, DEFAULT_LOCAL_HOST_ADDR, DEFAULT_LOCAL_HOST_ADDR6, DEFAULT_BIND_ADDR,
    DEFAULT_BIND_ADDR_TUPLE, DEFAULT_CONNECT_HOST, DEFAULT_SOCKET_TIMEOUT,
    DEFAULT_XPC_SOCKET_TIMEOUT,
)

main = unittest.main
SkipTest = unittest.SkipTest

from .sockets import bind_and_listen, tcp_listener  # noqa: E402,F401
from .openfiles import get_number_open_files, get_open_files  # noqa: E402,F401
from .testcase import TestCase  # noqa: E402,F401
from .modules import walk_modules  # noqa: E402,F401

BaseTestCase = unittest.TestCase

from .flaky import (  # noqa: E402,F401
    reraiseFlakyTestTimeout, reraiseFlakyTestRaceCondition, reraises_flaky_timeout,
    reraises_flaky_race_condition,
)


def gc_collect_if_needed():
    "Collect garbage if necessary for destructors to run (PyPy only)."


from unittest import mock  # noqa: E402,F401
from zope.interface import verify  # noqa: E402,F401
