"""labkit.events: the subscriber bus (gevent's gevent.events names)."""
import pytest

from labkit import events


@pytest.fixture
def received():
    got = []
    events.subscribers.append(got.append)
    yield got
    events.subscribers.remove(got.append)


def test_notify_calls_each_subscriber_in_order_with_the_event(received):
    order = []
    first, second = (lambda e: order.append(("first", e))), (lambda e: order.append(("second", e)))
    events.subscribers.extend([first, second])
    try:
        event = events.EventLoopBlocked("g", 0.5, ["line"])
        events.notify(event)
    finally:
        events.subscribers.remove(first)
        events.subscribers.remove(second)
    assert received == [event]
    assert order == [("first", event), ("second", event)]


def test_a_raising_subscriber_stops_the_rest_and_reaches_the_emitter(received):
    def veto(event):
        raise events.DoNotPatch
    events.subscribers.insert(0, veto)
    try:
        with pytest.raises(events.DoNotPatch):
            events.notify(events.GeventWillPatchEvent("source", "target"))
    finally:
        events.subscribers.remove(veto)
    assert received == []


def test_do_not_patch_is_not_an_exception_an_except_exception_would_swallow():
    assert not issubclass(events.DoNotPatch, Exception)
    assert issubclass(events.DoNotPatch, BaseException)


def test_the_event_classes_carry_gevents_attributes():
    blocked = events.EventLoopBlocked("g", 1.5, ["stack"], hub="hub")
    assert (blocked.greenlet, blocked.blocking_time, blocked.info, blocked.hub) == \
        ("g", 1.5, ["stack"], "hub")
    module = events.GeventWillPatchModuleEvent("socket", "src", "dst", ["socket"])
    assert (module.module_name, module.source, module.target, module.target_item_names) == \
        ("socket", "src", "dst", ["socket"])
    will_all = events.GeventWillPatchAllEvent({"socket": True, "os": False}, {"x": 1})
    assert will_all.will_patch_module("socket") and not will_all.will_patch_module("os")
    assert will_all.patch_all_arguments == {"socket": True, "os": False}
    assert will_all.patch_all_kwargs == {"x": 1}
    will_all.patch_all_arguments["socket"] = False      # a copy: the event is unchanged
    assert will_all.will_patch_module("socket")
    under = events.MemoryUsageUnderThreshold(10, 20, (), 30)
    assert (under.mem_usage, under.max_allowed, under.max_memory_usage) == (10, 20, 30)


def test_with_zope_installed_the_events_implement_their_interfaces():
    verify = pytest.importorskip("zope.interface.verify")
    verify.verifyObject(events.IEventLoopBlocked, events.EventLoopBlocked("g", 1, []))
    verify.verifyObject(events.IGeventWillPatchAllEvent,
                        events.GeventWillPatchAllEvent({}, {}))
    import zope.event
    assert events.subscribers is zope.event.subscribers


def test_entry_point_groups_are_labkits_own():
    assert events.GeventWillPatchAllEvent.ENTRY_POINT_NAME == \
        "labkit.plugins.monkey.will_patch_all"


def test_notify_and_call_entry_points_notifies_subscribers_first(received):
    event = events.GeventDidPatchAllEvent({}, {})
    events.notify_and_call_entry_points(event)   # no plug-ins installed for labkit's groups
    assert received == [event]
