"""The command line: python -m labkit {tour,bench,...} dispatches (the tour
itself is tested in tests/test_tour.py)."""
import pytest

from labkit.__main__ import main

pytestmark = pytest.mark.timeout(60)


def test_help_prints_usage(capsys):
    assert main(["--help"]) == 0
    assert "usage" in capsys.readouterr().out


def test_unknown_command_is_an_error_naming_it(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err
