"""The test matrix: the suite on every Python that pyproject.toml declares.

    pip install nox
    nox                      # every interpreter found; missing ones are skipped
    nox -s tests-3.12        # one of them
    nox -s tests-3.12 -- tests/test_hub.py -x    # pytest arguments after --
    nox -s gevent_suite      # gevent's own test files against labkit (not in the default run)
    nox -s gevent_suite -- test__queue.py --failures

Each session installs labkit editable with the test extra into its own
virtualenv (.nox/) and runs pytest. Editable builds put the C loop in labkit/
as ``_lk_loop.cpython-3XX-*.so``: the tag differs per version, so the builds
of all the interpreters sit side by side in the checkout. The sanitizer run
(.ci/sanitize.sh) checks the C loop, which is the same on every version, so
one session runs it: SANITIZE_ON, a version .ci/run (3.11) does not cover.

System packages (wrk, chromium) are not installed here: run
``bash .ci/system-deps.sh`` once; without them their tests skip.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import nox

#: The tested versions: keep requires-python and the classifiers in pyproject.toml in step.
PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]
#: The session that also runs the C loop under ASan/UBSan.
SANITIZE_ON = "3.13"

# An interpreter that is not installed is skipped, not an error -- also under
# CI, where nox would default to --error-on-missing-interpreters -- and nox
# does not download one (its default for a version it cannot find).
nox.options.error_on_missing_interpreters = False
nox.options.download_python = "never"
nox.options.sessions = ["tests"]


def _runs(command: str) -> bool:
    """Whether ``command`` is on PATH and really starts (a pyenv shim of a
    version pyenv has not enabled is on PATH but fails)."""
    if shutil.which(command) is None:
        return False
    try:
        return subprocess.run([command, "-c", ""], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _version_key(path: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", os.path.basename(path)))


def _put_pyenv_pythons_on_path(versions) -> None:
    """Make ``python3.X`` findable for the versions that only pyenv has.

    nox looks an interpreter up as ``python3.X`` on PATH; pyenv's shims answer
    only for the versions enabled with ``pyenv global/local/shell``. For each
    version that does not start that way, the bin directory of its newest
    pyenv install (``$PYENV_ROOT/versions/3.X.*``) goes at the front of PATH.
    The sessions run in their own virtualenvs, whose bin directory comes first.
    """
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for version in versions:
        if _runs(f"python{version}"):
            continue
        installs = [path for path in glob.glob(os.path.join(root, "versions", f"{version}.*"))
                    if re.fullmatch(rf"{re.escape(version)}\.\d+", os.path.basename(path))
                    and os.access(os.path.join(path, "bin", f"python{version}"), os.X_OK)]
        if installs:
            newest = max(installs, key=_version_key)
            os.environ["PATH"] = os.path.join(newest, "bin") + os.pathsep + os.environ["PATH"]


_put_pyenv_pythons_on_path(PYTHONS)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (pytest; the sanitizer run too in one session)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)
    if session.python == SANITIZE_ON and not session.posargs:
        session.run("bash", ".ci/sanitize.sh", external=True)


@nox.session  # the interpreter nox runs under
def gevent_suite(session: nox.Session) -> None:
    """gevent's own test files against labkit and against gevent, side by side
    (labkit/bench/gevent_suite). Minutes, not seconds: not a default session."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "labkit.bench.gevent_suite", *session.posargs)
