"""labkit._frame_locals: a suspended frame's locals, read without leaving a
dict on the frame (3.11-3.12: from the interpreter frame's slots), equal
to what ``frame.f_locals`` shows."""
import gc
import sys

import greenlet
import pytest

from labkit._frame_locals import local, locals_of

SLOTS = (3, 11) <= sys.version_info[:2] < (3, 13)
NO_CACHE = sys.version_info >= (3, 11)     # 3.13+: f_locals is a proxy


def _parked(function, *args, **kwargs):
    """A raw greenlet suspended inside ``function`` (which switches to its parent)."""
    g = greenlet.greenlet(function)
    g.switch(*args, **kwargs)
    assert g.gr_frame is not None
    return g


def waits(a, b=2, *rest, key=None, **more):
    unbound_later = None
    del unbound_later
    items = [a, b]
    cell = {"c": 1}

    def inner():
        return cell

    total = sum(x for x in items)    # (3.12: an inlined comprehension's hidden local)
    greenlet.getcurrent().parent.switch()
    return inner, total


def outer_with_free():
    held = ["free"]

    def inner_waits(self):
        mine = held
        greenlet.getcurrent().parent.switch()
        return mine
    return inner_waits


def test_each_kind_of_variable_reads_as_f_locals_shows_it():
    g = _parked(waits, 1, 5, 6, key="k", extra=7)
    frame = g.gr_frame
    assert local(frame, "a") == 1 and local(frame, "b") == 5
    assert local(frame, "rest") == (6,) and local(frame, "key") == "k"
    assert local(frame, "more") == {"extra": 7}
    assert local(frame, "cell") == {"c": 1}        # a cell variable: its content
    assert local(frame, "unbound_later") is None   # deleted
    assert local(frame, "nothing_of_that_name") is None
    assert local(frame, "x") is None               # the comprehension's, not the frame's
    mapping, cached = locals_of(frame)
    assert mapping == frame.f_locals               # (now made: compare with it)
    g.throw(greenlet.GreenletExit)


def test_a_free_variable_reads_as_its_cell_content():
    g = _parked(outer_with_free(), "me")
    frame = g.gr_frame
    assert local(frame, "self") == "me"
    assert local(frame, "held") == ["free"] and local(frame, "mine") == ["free"]
    assert locals_of(frame)[0] == frame.f_locals
    g.throw(greenlet.GreenletExit)


@pytest.mark.skipif(not NO_CACHE, reason="3.10: f_locals caches its dict, and is what is read")
def test_reading_leaves_no_dict_on_the_frames():
    parked = [_parked(waits, i) for i in range(200)]
    gc.collect()
    before = sum(1 for o in gc.get_objects() if type(o) is dict)
    for g in parked:
        frame = g.gr_frame
        local(frame, "a"), local(frame, "cell")
        mapping, cached = locals_of(frame)
        assert not cached
        del mapping
    gc.collect()
    after = sum(1 for o in gc.get_objects() if type(o) is dict)
    assert after - before < 20, after - before     # (f_locals left 200)
    for g in parked:
        g.throw(greenlet.GreenletExit)


@pytest.mark.skipif(not SLOTS, reason="the frame's own dict exists only on 3.10-3.12")
def test_a_dict_the_frame_caches_already_is_the_one_given_up_to_date():
    g = _parked(waits, 1)
    frame = g.gr_frame
    shown = frame.f_locals            # someone read f_locals: the frame keeps this dict
    shown["a"] = "stale"
    mapping, cached = locals_of(frame)
    assert cached and mapping is shown and mapping["a"] == 1
    g.throw(greenlet.GreenletExit)


def test_module_code_reads_its_namespace():
    namespace = {}
    exec("import sys\nframe = sys._getframe()\nvalue = 42\n", namespace)
    assert local(namespace["frame"], "value") == 42
    assert local(namespace["frame"], "missing") is None
    assert local(namespace["frame"], "\udcff") is None    # (not UTF-8: no crash, not there)


@pytest.mark.skipif(not SLOTS, reason="the C reading exists on 3.11-3.12")
def test_wrong_arguments_name_what_is_wrong():
    from labkit._lk_trace_py import frame_local, frame_locals
    frame = sys._getframe()
    with pytest.raises(TypeError, match="takes a frame"):
        frame_local("not a frame", "a")
    with pytest.raises(TypeError, match="str name"):
        frame_local(frame, 3)
    with pytest.raises(TypeError, match="2 arguments"):
        frame_local(frame)
    with pytest.raises(TypeError, match="takes a frame"):
        frame_locals(None)
