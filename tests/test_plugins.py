"""labkit.plugins: IPython extensions and commands found by entry point or
registered by code; a plug-in that fails is a warning, never the end of
``%load_ext labkit``. (In a real kernel: tests/test_jupyter.py.)"""
import sys
import types
from importlib.metadata import EntryPoint

import pytest

from labkit import plugins
from labkit.plugins import COMMAND_GROUP, IPYTHON_GROUP, PluginWarning

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def registry(monkeypatch):
    """An empty registry whose entry points are the list ``installed``
    (the tests append EntryPoints to it), with nothing loaded."""
    installed = []
    monkeypatch.setattr(plugins, "_registered", {IPYTHON_GROUP: {}, COMMAND_GROUP: {}})
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [ep for ep in installed if ep.group == group])
    return installed


def extension(name, calls, fail_on=()):
    """A module-like IPython extension that notes its loads and unloads in ``calls``."""
    def load(ipython):
        if "load" in fail_on:
            raise ValueError(f"{name} cannot load")
        calls.append(("load", name, ipython))

    def unload(ipython):
        if "unload" in fail_on:
            raise ValueError(f"{name} cannot unload")
        calls.append(("unload", name, ipython))

    return types.SimpleNamespace(load_ipython_extension=load, unload_ipython_extension=unload)


def test_the_tracer_plugs_in_through_the_installed_entry_points():
    import tracing.magics
    import tracing.tour
    [magics] = [ep for ep in plugins.entry_points(group=IPYTHON_GROUP) if ep.name == "tracing"]
    assert magics.load() is tracing.magics
    assert "tour" in plugins.command_names()
    assert plugins.command("tour") is tracing.tour.main


def test_load_runs_each_plugin_in_name_order_and_unload_reverses_it(registry):
    calls = []
    plugins.register_ipython("b", extension("b", calls))
    plugins.register_ipython("a", extension("a", calls))
    shell = object()
    assert plugins.load_ipython_plugins(shell) == ["a", "b"]
    plugins.unload_ipython_plugins(shell)
    assert calls == [("load", "a", shell), ("load", "b", shell),
                     ("unload", "b", shell), ("unload", "a", shell)]


def test_an_installed_plugin_is_imported_from_its_entry_point(registry, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "fake_labkit_plugin", extension("fake", calls))
    registry.append(EntryPoint("fake", "fake_labkit_plugin", IPYTHON_GROUP))
    assert plugins.load_ipython_plugins("shell") == ["fake"]
    assert calls == [("load", "fake", "shell")]


def test_a_plugin_that_fails_is_a_warning_naming_it_and_the_others_load(registry):
    calls = []
    registry.append(EntryPoint("missing", "no_such_labkit_plugin_module", IPYTHON_GROUP))
    plugins.register_ipython("broken", extension("broken", calls, fail_on=("load",)))
    plugins.register_ipython("good", extension("good", calls))
    with pytest.warns(PluginWarning) as warned:
        assert plugins.load_ipython_plugins("shell") == ["good"]
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2
    assert "'broken' failed to load: ValueError: broken cannot load" in messages[0]
    assert "'missing' failed to load: ModuleNotFoundError" in messages[1]
    assert calls == [("load", "good", "shell")]


def test_an_unload_that_fails_is_a_warning_and_the_others_unload(registry):
    calls = []
    plugins.register_ipython("a", extension("a", calls))
    plugins.register_ipython("b", extension("b", calls, fail_on=("unload",)))
    plugins.register_ipython("plain", types.SimpleNamespace(load_ipython_extension=lambda ip: None))
    plugins.load_ipython_plugins("shell")
    with pytest.warns(PluginWarning, match="'b' failed to unload"):
        plugins.unload_ipython_plugins("shell")
    assert ("unload", "a", "shell") in calls


def test_a_registered_name_hides_an_entry_point_of_the_same_name(registry):
    registry.append(EntryPoint("tour", "no_such_labkit_plugin_module:main", COMMAND_GROUP))
    plugins.register_command("tour", lambda argv: 7)
    assert plugins.command("tour")([]) == 7


def test_commands_are_listed_without_importing_them_and_a_missing_one_is_none(registry):
    registry.append(EntryPoint("later", "no_such_labkit_plugin_module:main", COMMAND_GROUP))
    assert plugins.command_names() == ["later"]
    assert plugins.command("frobnicate") is None
    assert "cannot be loaded: ModuleNotFoundError" in plugins.command_summary("later")
