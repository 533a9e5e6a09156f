"""One of gevent's test files, run in this process, its outcomes recorded.

    python labkit/bench/gevent_suite/child.py TARGET TEST_FILE RESULTS_FILE

(run as a script, not with -m: importing labkit.bench would import asyncio,
and with it ssl, before the test file's own first line -- which is often
``monkey.patch_all()`` -- and change what the test sees.)

TARGET is ``labkit`` (gevent resolved to labkit, gevent.testing to the
stand-in), ``gevent-standin`` (the real gevent under the stand-in) or
``gevent`` (the real gevent under its own gevent.testing). The file runs as
``__main__``, exactly as ``python test__x.py`` would run it; its call to
``unittest.main()`` (gevent.testing's ``main`` is that function) runs the
tests with a result that appends one JSON line per test to RESULTS_FILE as
soon as the test ends, so a file that later hangs or crashes still counts
what it finished. The parent (``labkit.bench.gevent_suite``) reads them.
"""
from __future__ import annotations

import json
import os
import sys
import unittest


def _first_line(err) -> str:
    kind, value, _tb = err
    text = f"{kind.__name__}: {value}".strip()
    return text.splitlines()[0][:300] if text else kind.__name__


class RecordingResult(unittest.TextTestResult):
    """A TextTestResult that also appends ``{"id", "outcome", "why"}`` lines
    (outcome: pass, fail, error, skip) to the file named by ``record_path``."""

    record_path = None

    def _record(self, test, outcome: str, why: str = "") -> None:
        with open(self.record_path, "a") as f:
            f.write(json.dumps({"id": test.id(), "outcome": outcome, "why": why}) + "\n")

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "pass")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "pass", "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "fail", "unexpected success")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "fail", _first_line(err))

    def addError(self, test, err):
        super().addError(test, err)
        # setUpClass/setUpModule failures come as a _ErrorHolder: no test ran.
        self._record(test, "error", _first_line(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skip", str(reason)[:300])

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            # The test as a whole fails; unittest will not call addSuccess.
            outcome = "fail" if issubclass(err[0], test.failureException) else "error"
            self._record(test, outcome, f"{subtest}: {_first_line(err)}")


def recording_main(*args, **kwargs):
    """Stands in for ``unittest.main``: same arguments, but runs with the
    recording result and returns instead of exiting."""
    kwargs["testRunner"] = unittest.TextTestRunner(
        stream=sys.stderr, verbosity=2, resultclass=RecordingResult)
    kwargs["exit"] = False
    kwargs.setdefault("argv", [sys.argv[0]])
    return unittest.TestProgram(*args, **kwargs)


def _load_alias():
    """alias.py from this directory, without importing the labkit.bench package."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alias.py")
    spec = importlib.util.spec_from_file_location("_labkit_gevent_alias", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    target, test_file, results = (argv if argv is not None else sys.argv[1:])[:3]
    RecordingResult.record_path = results
    if target != "gevent":
        _load_alias().install(target)
    unittest.main = recording_main
    import runpy
    test_file = os.path.abspath(test_file)
    sys.argv = [test_file]
    sys.path[0] = os.path.dirname(test_file)  # as `python test_file` has it
    try:
        runpy.run_path(test_file, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter shutdown: threads a test left behind, or a hub stuck
    # in a destructor, must not turn a finished file into a timeout.
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    main()
