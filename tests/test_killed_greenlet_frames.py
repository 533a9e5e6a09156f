"""A killed greenlet lets go of its frames (issue 21): its GreenletExit value
keeps no traceback, so what its frames held (a socket, a buffer) is released
when it dies, not when the last reference to the Greenlet object goes."""
import gc
import weakref

import pytest
from greenlet import GreenletExit

import labkit

pytestmark = pytest.mark.timeout(30)


class Held:
    pass


@pytest.mark.parametrize("how", ["kill", "killall", "raise"])
def test_a_killed_greenlet_keeps_no_frame_alive(how):
    refs = []

    def park():
        held = Held()  # a local of the frame that parks
        refs.append(weakref.ref(held))
        if how == "raise":
            raise GreenletExit
        labkit.sleep(10)

    was_enabled = gc.isenabled()
    gc.disable()  # freed by reference counting, not by a collection
    try:
        g = labkit.spawn(park)
        labkit.sleep(0)
        if how == "kill":
            g.kill()
        elif how == "killall":
            labkit.killall([g])
        else:
            g.join()
        assert g.dead and g.successful() and isinstance(g.value, GreenletExit)
        assert g.value.__traceback__ is None
        assert refs[0]() is None  # g is still referenced; its frames are gone
    finally:
        if was_enabled:
            gc.enable()
