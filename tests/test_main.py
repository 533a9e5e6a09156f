"""The command line: python -m labkit {tour,bench,...}."""
import subprocess
import sys

import pytest

from labkit.__main__ import main

pytestmark = pytest.mark.timeout(60)


def _labkit(*args):
    return subprocess.run([sys.executable, "-m", "labkit", *args],
                          capture_output=True, text=True, timeout=50)


def test_tour_runs_and_shows_each_step():
    result = _labkit("tour")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # the workers alternate
    steps = [line.split()[2] + " " + line.split()[4] for line in out.splitlines()
             if "worker-" in line]
    assert steps == ["worker-A 0", "worker-B 0", "worker-A 1", "worker-B 1",
                     "worker-A 2", "worker-B 2"]
    # sleepers wake in deadline order
    woke = [line.split()[2] for line in out.splitlines() if "woke after" in line]
    assert woke == ["sleep-10", "sleep-20", "sleep-30"]
    assert "gave up: Timeout(0.02 seconds)" in out
    assert "failed with ValueError" in out
    assert "iterations" in out


def test_help_prints_usage(capsys):
    assert main(["--help"]) == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_command_is_an_error_naming_it(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err
