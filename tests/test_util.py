"""labkit.util: run info, greenlet trees, assert_switches, wrap_errors."""
import io

import pytest

import labkit
from labkit import util


def test_wrap_errors_returns_the_listed_exceptions_and_raises_the_rest():
    to_int = util.wrap_errors(ValueError, int)
    assert to_int("3") == 3
    assert isinstance(to_int("x"), ValueError)
    with pytest.raises(TypeError):
        to_int(None)
    assert repr(to_int) == repr(int) and to_int.__name__ == "int"


def test_a_greenlet_ending_in_a_wrapped_error_is_successful():
    g = labkit.spawn(util.wrap_errors(ZeroDivisionError, lambda: 1 / 0))
    g.join()
    assert g.successful() and isinstance(g.value, ZeroDivisionError)


def test_run_info_says_what_each_greenlet_waits_on_and_where():
    def napper():
        labkit.sleep(10)

    g = labkit.spawn(napper)
    g.name = "napper"
    labkit.sleep(0)
    try:
        [info] = [i for i in util.run_info() if i.name == "napper"]
        assert info.state == "waiting" and "sleep(10)" in info.waits_on
        assert info.where.startswith("test_util.py:") and info.where.endswith("in napper")
    finally:
        g.kill()


def test_format_run_info_lists_threads_then_the_greenlet_tree():
    g = labkit.spawn(labkit.sleep, 10)
    g.name = "sleeper-for-run-info"
    labkit.sleep(0)
    try:
        text = "\n".join(util.format_run_info())
    finally:
        g.kill()
    assert text.index("* Threads") < text.index("* Greenlets")
    assert "(CURRENT)" in text and "sleeper-for-run-info" in text


def test_print_run_info_writes_the_same_lines():
    out = io.StringIO()
    util.print_run_info(file=out, thread_stacks=False)
    assert "* Greenlets" in out.getvalue() and "stack elided" in out.getvalue()


def test_the_current_tree_puts_a_spawned_greenlet_under_its_spawner():
    child = labkit.spawn(labkit.sleep, 10)
    child.name = "child-in-tree"
    labkit.sleep(0)
    try:
        tree = util.GreenletTree.current_tree()
        assert tree.is_current_tree and tree.root
        short = str(tree)
    finally:
        child.kill()
    assert "child-in-tree" in short
    assert short.splitlines()[0].startswith("<greenlet.greenlet")   # the main greenlet


def test_assert_switches_fails_for_a_block_that_never_switches():
    with pytest.raises(AssertionError):
        with util.assert_switches():
            pass
    with util.assert_switches():
        labkit.sleep(0.001)


def test_assert_switches_with_a_budget_fails_only_past_it():
    with util.assert_switches(max_blocking_time=5):
        pass
    import time
    with pytest.raises(AssertionError, match="max allowed"):
        with util.assert_switches(max_blocking_time=0.001):
            time.sleep(0.01)


def test_assert_switches_does_not_hide_the_blocks_own_exception():
    with pytest.raises(KeyError):
        with util.assert_switches():
            raise KeyError
