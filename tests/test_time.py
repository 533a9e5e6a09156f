"""labkit.time: the time module with a sleep that parks the greenlet."""
import threading
import time as std_time

import pytest

import labkit
from labkit import time


def test_the_other_names_are_the_standard_modules():
    assert time.monotonic is std_time.monotonic and time.strftime is std_time.strftime


def test_sleep_parks_the_greenlet():
    ticks = []
    labkit.spawn(lambda: [ticks.append(labkit.sleep(0.002)) for _ in range(3)])
    time.sleep(0.03)
    assert len(ticks) == 3


def test_in_a_thread_without_a_hub_sleep_blocks_the_thread():
    done = []
    thread = threading.Thread(target=lambda: done.append(time.sleep(0.01)))
    thread.start()
    thread.join(5)
    assert done == [None]


def test_a_negative_sleep_is_an_error_as_in_the_stdlib():
    with pytest.raises(ValueError):
        time.sleep(-1)
