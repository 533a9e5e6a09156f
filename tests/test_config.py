"""labkit.config: settings read from LABKIT_* variables, checked when set."""
import pytest

from helpers import run_python


def test_defaults_are_gevents():
    out = run_python("""
        import labkit
        c = labkit.config
        print(c.monitor_thread, c.max_blocking_time, c.max_memory_usage, c.threadpool_size,
              c.resolver, c.track_greenlet_tree)
    """)
    assert out.split() == ["False", "0.1", "None", "10", "thread", "True"]


def test_a_setting_comes_from_its_environment_variable():
    import os
    import subprocess
    import sys
    env = dict(os.environ, LABKIT_MONITOR_THREAD="yes", LABKIT_MAX_BLOCKING_TIME="0.25")
    out = subprocess.run([sys.executable, "-c", "from labkit import config; "
                          "print(config.monitor_thread, config.max_blocking_time)"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["True", "0.25"]


def test_a_bad_environment_value_names_the_variable():
    import os
    import subprocess
    import sys
    env = dict(os.environ, LABKIT_MAX_BLOCKING_TIME="soon")
    done = subprocess.run([sys.executable, "-c", "from labkit import config; "
                           "config.max_blocking_time"], capture_output=True, text=True, env=env)
    assert done.returncode != 0 and "LABKIT_MAX_BLOCKING_TIME" in done.stderr


def test_setting_checks_the_value_and_deleting_restores_the_default():
    from labkit import config
    old = config.max_blocking_time
    try:
        config.max_blocking_time = "0.5"
        assert config.max_blocking_time == 0.5
        with pytest.raises(ValueError):
            config.max_blocking_time = -1
        with pytest.raises(ValueError):
            config.monitor_thread = "maybe"
        with pytest.raises(AttributeError):
            config.no_such_setting = 1
    finally:
        del config.max_blocking_time
    assert config.max_blocking_time == old
    assert set(config.settings()) >= {"monitor_thread", "max_blocking_time", "resolver"}
