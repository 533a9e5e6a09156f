"""Specification of the gevent-suite runner (labkit/bench/gevent_suite/):
gevent's own test files, run unchanged, with ``gevent`` resolved to labkit.

The alias is exercised in child interpreters (it must be installed before
anything imports gevent); the driver on small test files written here.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from labkit.bench import gevent_suite
from labkit.bench.gevent_suite import alias

pytestmark = pytest.mark.timeout(120)

gevent_installed = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import gevent"]).returncode != 0,
    reason="gevent is not installed")


def in_child(target: str, code: str) -> dict:
    """Run ``code`` after installing the alias for ``target``; it assigns
    ``out``, a JSON-able dict, which is returned."""
    program = textwrap.dedent(f"""
        import importlib.util, json, sys
        spec = importlib.util.spec_from_file_location("a", {alias.__file__!r})
        a = importlib.util.module_from_spec(spec); spec.loader.exec_module(a)
        a.install({target!r})
    """) + textwrap.dedent(code) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@gevent_installed
def test_under_the_alias_gevent_and_its_submodules_are_labkits_own_module_objects():
    out = in_child("labkit", """
        import gevent, gevent.socket, gevent.queue, labkit, labkit.socket, labkit.queue
        from gevent import event
        import labkit.event
        out = {"top": gevent is labkit, "socket": gevent.socket is labkit.socket,
               "queue": gevent.queue is labkit.queue, "event": event is labkit.event,
               "spec": labkit.socket.__spec__.name,
               "real gevent": any(getattr(m, "__file__", "") and "site-packages/gevent/"
                                  in m.__file__ and n.startswith("gevent.")
                                  and not n.startswith(("gevent.test", "gevent._compat",
                                                        "gevent._util"))
                                  for n, m in list(sys.modules.items()))}
    """)
    assert out == {"top": True, "socket": True, "queue": True, "event": True,
                   "spec": "labkit.socket", "real gevent": False}


@gevent_installed
def test_a_name_labkit_lacks_is_a_missing_module_not_a_fallback_to_gevent():
    out = in_child("labkit", """
        out = {}
        for name in ("gevent.no_such_module", "gevent._waiter", "gevent.libev"):
            try:
                __import__(name)
                out[name] = "imported"
            except ModuleNotFoundError:
                out[name] = "missing"
    """)
    assert set(out.values()) == {"missing"}


@gevent_installed
def test_a_private_gevent_name_is_labkits_module_of_that_name_if_labkit_has_one():
    out = in_child("labkit", """
        import gevent._fileobjectcommon, labkit._fileobjectcommon
        out = {"same": gevent._fileobjectcommon is labkit._fileobjectcommon}
    """)
    assert out == {"same": True}


@gevent_installed
def test_gevent_testing_is_the_stand_in_over_gevents_own_helper_files():
    out = in_child("labkit", """
        import os
        import gevent.testing as greentest
        from gevent.testing import params, timing, sysinfo, hub
        from gevent.tests import lock_tests
        def where(m):
            return os.sep.join(m.__file__.split(os.sep)[-3:])
        out = {"init": where(greentest), "params": where(params), "timing": where(timing),
               "sysinfo": where(sysinfo), "hub": where(hub), "lock_tests": where(lock_tests),
               "TestCase": hasattr(greentest, "TestCase")}
    """)
    assert out["init"] == "standin/testing/__init__.py"
    assert out["sysinfo"] == "standin/testing/sysinfo.py"
    assert out["hub"] == "standin/testing/hub.py"
    assert out["params"] == "gevent/testing/params.py"      # gevent's own, in place
    assert out["timing"] == "gevent/testing/timing.py"
    assert out["lock_tests"] == "gevent/tests/lock_tests.py"
    assert out["TestCase"]


@gevent_installed
def test_the_gevent_standin_target_keeps_the_real_gevent_under_the_stand_in():
    out = in_child("gevent-standin", """
        import gevent, gevent.testing
        out = {"gevent": "site-packages" in gevent.__file__,
               "testing": gevent.testing.__file__.endswith("standin/testing/__init__.py")}
    """)
    assert out == {"gevent": True, "testing": True}


@gevent_installed
def test_the_stand_in_sysinfo_has_gevents_constants_with_gevents_values():
    out = in_child("gevent-standin", """
        import importlib.util, os, gevent
        import gevent.testing.sysinfo as ours
        path = os.path.join(os.path.dirname(gevent.__file__), "testing", "sysinfo.py")
        spec = importlib.util.spec_from_file_location("gevent.testing._real_sysinfo", path)
        theirs = importlib.util.module_from_spec(spec); spec.loader.exec_module(theirs)
        names = [n for n in vars(theirs) if n.isupper()]
        out = {n: [repr(getattr(theirs, n)), repr(getattr(ours, n, "<missing>"))]
               for n in names}
    """)
    different = {name: pair for name, pair in out.items() if pair[0] != pair[1]}
    assert different == {}


def write_test_file(tmp_path, body: str) -> str:
    path = tmp_path / "test__example.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@gevent_installed
def test_run_file_records_each_tests_outcome_under_both_targets(tmp_path):
    path = write_test_file(tmp_path, """
        import gevent
        import gevent.testing as greentest

        class T(greentest.BaseTestCase):   # unittest's: the runner, not labkit, is tested
            def test_sleeps(self):
                gevent.sleep(0.001)
            def test_fails(self):
                self.assertEqual(1, 2)
            @greentest.skipIf(True, "never")
            def test_skipped(self):
                pass

        if __name__ == '__main__':
            greentest.main()
    """)
    for target in ("labkit", "gevent"):
        result = gevent_suite.run_file(path, target, 60, str(tmp_path))
        outcomes = {test: outcome for test, (outcome, _why) in result["tests"].items()}
        assert result["status"] == "ok", open(result["log"]).read()
        assert outcomes == {"__main__.T.test_sleeps": "pass", "__main__.T.test_fails": "fail",
                            "__main__.T.test_skipped": "skip"}, target


@gevent_installed
def test_a_file_that_hangs_is_killed_at_the_timeout_and_keeps_what_it_finished(tmp_path):
    path = write_test_file(tmp_path, """
        import time, unittest

        class T(unittest.TestCase):
            def test_a_quick(self):
                pass
            def test_b_hangs(self):
                time.sleep(60)

        if __name__ == '__main__':
            unittest.main()
    """)
    result = gevent_suite.run_file(path, "labkit", 3, str(tmp_path))
    assert result["status"] == "timeout"
    assert result["tests"] == {"__main__.T.test_a_quick": ("pass", "")}


@gevent_installed
def test_a_file_that_dies_at_import_is_reported_with_its_error(tmp_path):
    path = write_test_file(tmp_path, "from gevent import no_such_name\n")
    result = gevent_suite.run_file(path, "labkit", 60, str(tmp_path))
    assert result["status"] == "exit 1" and result["tests"] == {}
    assert "no_such_name" in gevent_suite.last_error_line(result["log"])


def test_the_report_counts_labkits_passes_among_gevents():
    def result(**tests):
        return {"tests": {t: (o, "") for t, o in tests.items()}, "status": "ok", "log": ""}
    results = {"test__x": {"labkit": result(a="pass", b="fail", c="pass"),
                           "gevent": result(a="pass", b="pass", c="skip")}}
    lines = gevent_suite.format_report(results, ["labkit", "gevent"])
    assert "labkit passes 1 of the 2 tests gevent passes (50.0%)" in lines[-1]
    assert gevent_suite.format_failures(results) == ["test__x: b: fail: "]


def test_file_names_are_found_in_gevents_test_directory_in_any_spelling():
    if not os.path.isdir(os.path.join(alias.gevent_dir(), "tests")):
        pytest.skip("gevent is not installed")
    paths = gevent_suite.test_files(["queue", "test__queue", "test__queue.py"], "all")
    assert len(set(paths)) == 1 and paths[0].endswith(os.path.join("tests", "test__queue.py"))
    assert len(gevent_suite.test_files([], "all")) == sum(map(len, gevent_suite.GROUPS.values()))
