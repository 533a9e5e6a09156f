"""labkit._monitor: the hub's monitor thread (gevent's periodic monitoring
thread), started by hub.start_periodic_monitoring_thread or config.monitor_thread."""
import io
import time

import greenlet
import pytest

import labkit
from labkit import config, events

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def monitor():
    hub = labkit.get_hub()
    monitor = hub.start_periodic_monitoring_thread()
    yield monitor
    monitor.kill()


def test_the_monitor_installs_a_greenlet_trace_function_and_kill_removes_it(monitor):
    assert greenlet.gettrace() is not None
    monitor.kill()
    assert greenlet.gettrace() is None


def test_a_greenlet_that_holds_the_loop_is_reported_to_the_stream_and_the_subscribers(monitor):
    hub = labkit.get_hub()
    stream = hub.exception_stream = io.StringIO()
    seen = []
    events.subscribers.append(seen.append)
    try:
        def blocker():
            time.sleep(0.4)      # not labkit.sleep: holds the loop

        labkit.sleep(0.001)
        labkit.spawn(blocker).join()
    finally:
        events.subscribers.remove(seen.append)
        del hub.exception_stream
    assert "appears to be blocked" in stream.getvalue()
    assert "PeriodicMonitoringThread" in stream.getvalue()
    blocked = [e for e in seen if isinstance(e, events.EventLoopBlocked)]
    assert blocked and blocked[0].hub is hub


def test_monitoring_functions_can_be_added_and_removed(monitor):
    calls = []
    builtin = len(monitor.monitoring_functions())
    monitor.add_monitoring_function(calls.append, 0.01)
    assert monitor.monitoring_functions()[-1].function == calls.append
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        labkit.sleep(0.01)
    monitor.add_monitoring_function(calls.append, None)
    assert calls and calls[0] is labkit.get_hub()
    assert len(monitor.monitoring_functions()) == builtin
    with pytest.raises(ValueError):
        monitor.add_monitoring_function(calls.append, 0)


def test_config_monitor_thread_makes_each_hub_start_one():
    labkit.get_hub().destroy()
    config.monitor_thread = True
    try:
        hub = labkit.get_hub()
        labkit.sleep(0.001)        # the hub runs: it starts its monitor
        monitor = hub.periodic_monitoring_thread
        assert monitor is not None and monitor.should_run
        monitor.kill()
    finally:
        del config.monitor_thread
