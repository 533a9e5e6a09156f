"""An event bus: labkit tells subscribers what happens to the loop and to patching.

    from labkit import events

    def on_event(event):
        if isinstance(event, events.EventLoopBlocked):
            print(f"{event.greenlet} blocked the loop for {event.blocking_time:.3f}s")

    events.subscribers.append(on_event)

A subscriber is any callable taking one argument, the event. :func:`notify`
calls them in order, in the thread that emits the event; an exception from a
subscriber propagates to the emitter without running the rest (gevent's
rule), which is how a will-patch subscriber vetoes a patch (:class:`DoNotPatch`).

Who emits what:

- ``labkit.monkey``: for ``patch_all`` a :class:`GeventWillPatchAllEvent`,
  then per module a :class:`GeventWillPatchModuleEvent` (a subscriber may
  raise :class:`DoNotPatch`, or edit ``target_item_names``) and a
  :class:`GeventDidPatchModuleEvent`, then
  :class:`GeventDidPatchBuiltinModulesEvent` and :class:`GeventDidPatchAllEvent`;
- the blocking monitor (``tracing.monitor_blocking``, ``%trace_blocking``):
  an :class:`EventLoopBlocked` per block, from its watchdog thread;
- whoever watches memory: :class:`MemoryUsageThresholdExceeded` /
  :class:`MemoryUsageUnderThreshold` (labkit itself has no memory monitor).

The names are gevent's (``gevent.events``), so gevent subscribers carry
over. When ``zope.event`` is installed, :data:`subscribers` *is*
``zope.event.subscribers`` and the ``I...`` names are ``zope.interface``
interfaces that the events implement, as in gevent; without zope they are
plain marker classes. Plug-ins may also subscribe through entry points: the
group of each event is its ``ENTRY_POINT_NAME`` (``labkit.plugins.monkey.*``,
gevent's names with ``labkit`` for ``gevent``).
"""
from __future__ import annotations

__all__ = [
    "subscribers", "notify", "notify_and_call_entry_points",
    "IEventLoopBlocked", "EventLoopBlocked",
    "IMemoryUsageThresholdExceeded", "MemoryUsageThresholdExceeded",
    "IMemoryUsageUnderThreshold", "MemoryUsageUnderThreshold",
    "IPeriodicMonitorThread", "IPeriodicMonitorThreadStartedEvent",
    "PeriodicMonitorThreadStartedEvent",
    "IGeventPatchEvent", "GeventPatchEvent", "IGeventWillPatchEvent", "DoNotPatch",
    "GeventWillPatchEvent", "IGeventDidPatchEvent", "GeventDidPatchEvent",
    "IGeventWillPatchModuleEvent", "GeventWillPatchModuleEvent",
    "IGeventDidPatchModuleEvent", "GeventDidPatchModuleEvent",
    "IGeventWillPatchAllEvent", "GeventWillPatchAllEvent",
    "IGeventDidPatchBuiltinModulesEvent", "GeventDidPatchBuiltinModulesEvent",
    "IGeventDidPatchAllEvent", "GeventDidPatchAllEvent",
]

try:
    from zope.event import notify, subscribers
    from zope.interface import Attribute, Interface, implementer
except ImportError:
    notify = None
    #: the subscribers, called in order by notify(event)
    subscribers: list = []

    class Interface:  # a marker base, where zope.interface is not installed
        pass

    def Attribute(doc: str) -> None:  # noqa: N802 (zope's spelling)
        return None

    def implementer(*interfaces):
        return lambda cls: cls


def _notify(event) -> None:
    """Call every subscriber with ``event``, in order (zope.event's rule:
    a raising subscriber stops the rest). zope.event's own notify, where
    it is installed."""
    for subscriber in list(subscribers):
        subscriber(event)


if notify is None:
    notify = _notify


def notify_and_call_entry_points(event) -> None:
    """:func:`notify`, then the plug-ins registered under the event's
    ``ENTRY_POINT_NAME`` entry-point group (each is loaded and called)."""
    notify(event)
    from importlib import metadata
    for plugin in metadata.entry_points(group=event.ENTRY_POINT_NAME):
        plugin.load()(event)


# -- the loop ---------------------------------------------------------------------

class IPeriodicMonitorThread(Interface):
    """A thread that runs monitoring functions periodically."""

    def add_monitoring_function(function, period):  # noqa: N805
        """Call ``function(hub)`` every ``period`` seconds."""


class IPeriodicMonitorThreadStartedEvent(Interface):
    """Emitted when a monitor thread starts."""
    monitor = Attribute("The IPeriodicMonitorThread that started.")


@implementer(IPeriodicMonitorThreadStartedEvent)
class PeriodicMonitorThreadStartedEvent:
    ENTRY_POINT_NAME = "labkit.plugins.hub.periodic_monitor_thread_started"

    def __init__(self, monitor):
        self.monitor = monitor


class IEventLoopBlocked(Interface):
    """Emitted (from the monitor's thread) when the loop is blocked."""
    greenlet = Attribute("The greenlet that appeared to be blocking the loop.")
    blocking_time = Attribute("How long the loop has been blocked, in seconds.")
    info = Attribute("A list of lines of extra information (a stack); may be edited.")
    hub = Attribute("The hub that is blocked, or None.")


@implementer(IEventLoopBlocked)
class EventLoopBlocked:
    """The loop has not come back to the hub for ``blocking_time`` seconds,
    because ``greenlet`` kept running."""

    def __init__(self, greenlet, blocking_time, info, *, hub=None):
        self.greenlet = greenlet
        self.blocking_time = blocking_time
        self.info = info
        self.hub = hub

    def __repr__(self) -> str:
        return (f"<EventLoopBlocked greenlet={self.greenlet!r} "
                f"blocking_time={self.blocking_time:.3f}>")


class IMemoryUsageThresholdExceeded(Interface):
    """Emitted while memory use grows above the threshold."""
    mem_usage = Attribute("The current process memory usage, in bytes.")
    max_allowed = Attribute("The maximum allowed memory usage, in bytes.")
    memory_info = Attribute("The tuple of memory usage stats returned by psutil.")


class IMemoryUsageUnderThreshold(Interface):
    """Emitted once memory use falls back under the threshold."""
    mem_usage = Attribute("The current process memory usage, in bytes.")
    max_allowed = Attribute("The maximum allowed memory usage, in bytes.")
    max_memory_usage = Attribute("The highest usage seen while above the threshold.")
    memory_info = Attribute("The tuple of memory usage stats returned by psutil.")


class _AbstractMemoryEvent:
    def __init__(self, mem_usage, max_allowed, memory_info):
        self.mem_usage = mem_usage
        self.max_allowed = max_allowed
        self.memory_info = memory_info

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} used={self.mem_usage} "
                f"max={self.max_allowed} details={self.memory_info}>")


@implementer(IMemoryUsageThresholdExceeded)
class MemoryUsageThresholdExceeded(_AbstractMemoryEvent):
    pass


@implementer(IMemoryUsageUnderThreshold)
class MemoryUsageUnderThreshold(_AbstractMemoryEvent):
    def __init__(self, mem_usage, max_allowed, memory_info, max_usage):
        super().__init__(mem_usage, max_allowed, memory_info)
        self.max_memory_usage = max_usage


# -- monkey patching -----------------------------------------------------------------

class IGeventPatchEvent(Interface):
    """The root of the monkey-patch events."""
    source = Attribute("The source object containing the patches.")
    target = Attribute("The destination object to be patched.")


@implementer(IGeventPatchEvent)
class GeventPatchEvent:
    def __init__(self, source, target):
        self.source = source
        self.target = target

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} source={self.source!r} target={self.target!r} "
                f"at {id(self):x}>")


class IGeventWillPatchEvent(IGeventPatchEvent):
    """Emitted before something is patched; a subscriber that raises
    DoNotPatch prevents it."""


class DoNotPatch(BaseException):
    """Raised by a will-patch subscriber: do not patch this item."""


@implementer(IGeventWillPatchEvent)
class GeventWillPatchEvent(GeventPatchEvent):
    pass


class IGeventDidPatchEvent(IGeventPatchEvent):
    """Emitted after something was patched."""


@implementer(IGeventDidPatchEvent)
class GeventDidPatchEvent(GeventPatchEvent):
    pass


class IGeventWillPatchModuleEvent(IGeventWillPatchEvent):
    """Emitted before one module is patched (source and target are modules)."""
    module_name = Attribute("The name of the module being patched.")
    target_item_names = Attribute("The names to patch; may be edited in place.")


@implementer(IGeventWillPatchModuleEvent)
class GeventWillPatchModuleEvent(GeventWillPatchEvent):
    ENTRY_POINT_NAME = "labkit.plugins.monkey.will_patch_module"

    def __init__(self, module_name, source, target, items):
        super().__init__(source, target)
        self.module_name = module_name
        self.target_item_names = items


class IGeventDidPatchModuleEvent(IGeventDidPatchEvent):
    """Emitted after one module was patched."""
    module_name = Attribute("The name of the module that was patched.")


@implementer(IGeventDidPatchModuleEvent)
class GeventDidPatchModuleEvent(GeventDidPatchEvent):
    ENTRY_POINT_NAME = "labkit.plugins.monkey.did_patch_module"

    def __init__(self, module_name, source, target):
        super().__init__(source, target)
        self.module_name = module_name


class IGeventWillPatchAllEvent(IGeventWillPatchEvent):
    """Emitted before patch_all patches anything; DoNotPatch cancels it all."""
    patch_all_arguments = Attribute("The arguments of patch_all, as a dict (a copy).")
    patch_all_kwargs = Attribute("The extra keyword arguments of patch_all (a copy).")

    def will_patch_module(module_name):  # noqa: N805
        """Whether the module named ``module_name`` will be patched."""


class _PatchAllMixin:
    def __init__(self, patch_all_arguments, patch_all_kwargs):
        super().__init__(None, None)
        self._patch_all_arguments = patch_all_arguments
        self._patch_all_kwargs = patch_all_kwargs

    @property
    def patch_all_arguments(self) -> dict:
        return self._patch_all_arguments.copy()

    @property
    def patch_all_kwargs(self) -> dict:
        return self._patch_all_kwargs.copy()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._patch_all_arguments!r} at {id(self):x}>"


@implementer(IGeventWillPatchAllEvent)
class GeventWillPatchAllEvent(_PatchAllMixin, GeventWillPatchEvent):
    ENTRY_POINT_NAME = "labkit.plugins.monkey.will_patch_all"

    def will_patch_module(self, module_name) -> bool:
        return self._patch_all_arguments.get(module_name)


class IGeventDidPatchBuiltinModulesEvent(IGeventDidPatchEvent):
    """Emitted after the standard library modules were patched: the moment
    to patch third-party modules."""
    patch_all_arguments = Attribute("The arguments of patch_all, as a dict (a copy).")
    patch_all_kwargs = Attribute("The extra keyword arguments of patch_all (a copy).")


@implementer(IGeventDidPatchBuiltinModulesEvent)
class GeventDidPatchBuiltinModulesEvent(_PatchAllMixin, GeventDidPatchEvent):
    ENTRY_POINT_NAME = "labkit.plugins.monkey.did_patch_builtins"


class IGeventDidPatchAllEvent(IGeventDidPatchEvent):
    """Emitted after patch_all has patched everything."""


@implementer(IGeventDidPatchAllEvent)
class GeventDidPatchAllEvent(_PatchAllMixin, GeventDidPatchEvent):
    ENTRY_POINT_NAME = "labkit.plugins.monkey.did_patch_all"
