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


def test_help_lists_the_plugin_commands_with_their_first_docstring_paragraph(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "  tour     An echo server, clients and one blocking call, traced; writes a\n" \
           "           timeline PNG and a Perfetto JSON (--out DIR)\n" in out


def test_a_plugin_command_gets_the_rest_of_the_arguments(monkeypatch):
    from labkit import plugins
    seen = []
    monkeypatch.setitem(plugins._registered[plugins.COMMAND_GROUP], "echo-args",
                        lambda argv: seen.append(argv) or 3)
    assert main(["echo-args", "-x", "y"]) == 3
    assert seen == [["-x", "y"]]
