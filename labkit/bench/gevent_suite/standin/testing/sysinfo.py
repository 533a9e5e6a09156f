"""Stand-in for ``gevent.testing.sysinfo``: the same constants, computed the
same way, except that the event-loop flavour is not read from ``gevent.core``
(gevent's file imports it only to tell libuv from libev): here libuv is in
use only if ``GEVENT_LOOP`` asks for it, which the runner never does. labkit
counts as neither libuv nor gevent's CFFI backend, so the tests take gevent's
default (libev, C extensions) paths.
"""
import errno
import os
import sys

from gevent import _compat as gsysinfo

VERBOSE = sys.argv.count("-v") > 1

PYPY = gsysinfo.PYPY
CPYTHON = not PYPY
WIN = gsysinfo.WIN
LINUX = gsysinfo.LINUX
OSX = gsysinfo.OSX
PURE_PYTHON = gsysinfo.PURE_PYTHON
get_this_psutil_process = gsysinfo.get_this_psutil_process

LIBUV = "libuv" in os.getenv("GEVENT_LOOP", "")
CFFI_BACKEND = PYPY or LIBUV or "cffi" in os.getenv("GEVENT_LOOP", "")

if "--debug-greentest" in sys.argv:
    sys.argv.remove("--debug-greentest")
    DEBUG = True
else:
    DEBUG = False

RUN_LEAKCHECKS = os.getenv("GEVENTTEST_LEAKCHECK")
RUN_COVERAGE = os.getenv("COVERAGE_PROCESS_START") or os.getenv("GEVENTTEST_COVERAGE")

PLATFORM_SPECIFIC_SUFFIXES = ("2", "279", "3")
if WIN:
    PLATFORM_SPECIFIC_SUFFIXES += ("posix",)

PY3 = True
PY310_EXACTLY = True if sys.version_info[:2] == (3, 10) else None
PY311 = True if sys.version_info >= (3, 11) else None
PY312 = True if sys.version_info >= (3, 12) else None
PY313 = True if sys.version_info >= (3, 13) else None
PY314 = True if sys.version_info >= (3, 14) else None
PY315 = True if sys.version_info >= (3, 15) else None
NON_APPLICABLE_SUFFIXES = ("2", "279")
PYPY3 = PYPY and PY3

if WIN:
    NON_APPLICABLE_SUFFIXES += ("posix", "fileobject2")
    SHARED_OBJECT_EXTENSION = ".pyd"
else:
    SHARED_OBJECT_EXTENSION = ".so"

RUNNING_ON_GITHUB_ACTIONS = os.environ.get("GITHUB_ACTIONS")
RUNNING_ON_TRAVIS = os.environ.get("TRAVIS") or RUNNING_ON_GITHUB_ACTIONS
RUNNING_ON_APPVEYOR = os.environ.get("APPVEYOR")
RUNNING_ON_CI = RUNNING_ON_TRAVIS or RUNNING_ON_APPVEYOR
RUNNING_ON_GITHUB_ACTIONS_WINDOWS = RUNNING_ON_GITHUB_ACTIONS and WIN
RUNNING_ON_MANYLINUX = os.environ.get("GEVENT_MANYLINUX")
RUNNING_ON_MUSLLINUX = "musllinux" in os.environ.get("GEVENT_MANYLINUX_NAME", "")
if RUNNING_ON_APPVEYOR:
    NON_APPLICABLE_SUFFIXES += ("corecext",)

EXPECT_POOR_TIMER_RESOLUTION = (
    PYPY3 or WIN or (LIBUV and PYPY) or RUN_COVERAGE or (OSX and RUNNING_ON_CI))


def _make_socket_errnos(*names):
    return frozenset(getattr(errno, name) for name in names if hasattr(errno, name))


CONN_ABORTED_ERRORS = _make_socket_errnos("WSAECONNABORTED", "ECONNRESET")
CONN_REFUSED_ERRORS = _make_socket_errnos("WSAECONNREFUSED", "ECONNREFUSED")

RESOLVER_ARES = os.getenv("GEVENT_RESOLVER") == "ares"
RESOLVER_DNSPYTHON = os.getenv("GEVENT_RESOLVER") == "dnspython"
RESOLVER_NOT_SYSTEM = RESOLVER_ARES or RESOLVER_DNSPYTHON


def get_python_version():
    """'3.11.4', '3.13.0b1', ...: the simple version string."""
    version = "%s.%s.%s" % sys.version_info[:3]
    suffix = {"alpha": "a", "beta": "b", "candidate": "rc"}.get(sys.version_info[3])
    if suffix:
        version += suffix + str(sys.version_info[4])
    return version


def _check_linux_version_at_least(major, minor, error_kind):
    from platform import release, system
    if system() != "Linux":
        return False
    parts = (release() or "0").split(".", 2)
    try:
        found = (int(parts[0]), int(parts[1]) if len(parts) > 1 else -1)
    except ValueError:
        import warnings
        warnings.warn(f"Unable to parse version {release()!r}; assuming no {error_kind} support")
        return False
    return found >= (major, minor)


def libev_supports_linux_aio():
    return _check_linux_version_at_least(4, 19, "aio")


def libev_supports_linux_iouring():
    return _check_linux_version_at_least(5, 3, "iouring")


def resolver_dnspython_available():
    from importlib import metadata
    try:
        metadata.distribution("dnspython")
    except metadata.PackageNotFoundError:
        return False
    return True
