"""labkit.exceptions: gevent's exception names are the classes labkit raises."""
import pytest
from greenlet import GreenletExit

import labkit
from labkit import exceptions
from labkit.event import Event


def test_loop_exit_is_the_hubs_and_names_the_hub():
    assert exceptions.LoopExit is labkit.LoopExit
    with pytest.raises(exceptions.LoopExit) as caught:
        Event().wait()
    assert caught.value.hub is labkit.get_hub()


def test_a_hub_callback_that_waits_gets_blocking_switch_out_error():
    caught = []

    def in_hub():
        try:
            labkit.sleep(0.01)
        except exceptions.BlockingSwitchOutError as exc:
            caught.append(exc)

    labkit.get_hub().run_callback(in_hub)
    labkit.sleep(0.01)
    assert len(caught) == 1 and isinstance(caught[0], AssertionError)


def test_two_readers_of_one_fd_get_concurrent_object_use_error():
    from labkit import socket
    a, b = socket.socketpair()
    try:
        reader = labkit.spawn(a.recv, 1)
        labkit.sleep(0)
        with pytest.raises(exceptions.ConcurrentObjectUseError):
            a.recv(1)
        reader.kill()
    finally:
        a.close()
        b.close()


def test_the_kinds_are_gevents():
    assert issubclass(exceptions.InvalidSwitchError, AssertionError)
    assert issubclass(exceptions.InvalidThreadUseError, RuntimeError)
    destroyed = exceptions.HubDestroyed(True)
    assert isinstance(destroyed, GreenletExit) and destroyed.destroy_loop is True
