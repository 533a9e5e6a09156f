"""What the greenlets are doing, and small helpers (gevent's ``gevent.util``).

    print_run_info()          every thread's stack and every greenlet, as a tree
    format_run_info()         the same, as a list of lines
    GreenletTree.current_tree()   the greenlets of this thread, by who spawned whom
    run_info(hub)             one GreenletInfo per live greenlet of a hub: its state,
                              what it waits on in plain words, the user's line
    with assert_switches(): ...   fail if the block never lets another greenlet run
    wrap_errors(errors, f)    f, returning the listed exceptions instead of raising

The reports read live objects -- the garbage collector's list of greenlets,
their suspended frames, :func:`labkit._park.waiting_on` -- not a recording:
a full scan, milliseconds in a big process, so they are for debugging and
status displays (``%labkit_status`` prints :func:`run_info` through the
tracer), never for hot paths. Their text is for people; it has no format
guarantee beyond that.
"""
from __future__ import annotations

import functools
import gc
import os
import pprint
import sys
import traceback
from dataclasses import dataclass, field
from time import perf_counter

from greenlet import getcurrent, greenlet, settrace

__all__ = ["format_run_info", "print_run_info", "GreenletTree", "wrap_errors",
           "assert_switches", "clear_stack_frames", "run_info", "GreenletInfo",
           "live_greenlets", "greenlet_name"]

#: labkit's own directory: a frame in it is not the user's line
LABKIT_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class wrap_errors:
    """``wrap_errors(errors, func)``: ``func``, except that the exceptions in
    ``errors`` (a class or a tuple) are returned instead of raised -- so a
    greenlet that ends with one ends successfully, with it as its value::

        g = labkit.spawn(wrap_errors(ValueError, int), "x")
        g.get()    # ValueError("invalid literal ..."), returned

    str() and repr() are the function's.
    """

    def __init__(self, errors, func):
        self.__errors = errors
        self.__func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args, **kwargs):
        try:
            return self.__func(*args, **kwargs)
        except self.__errors as ex:
            return ex

    def __str__(self) -> str:
        return str(self.__func)

    def __repr__(self) -> str:
        return repr(self.__func)

    def __getattr__(self, name):
        return getattr(self.__func, name)


# -- who is alive ---------------------------------------------------------------------

def _all_greenlets() -> list:
    return [obj for obj in gc.get_objects() if isinstance(obj, greenlet)]


def live_greenlets(hub=None) -> list:
    """The greenlets ``hub`` runs (default: this thread's) that are not
    dead, in order of name (numbers in names sort as numbers).

    Found by scanning the garbage collector's objects for greenlets whose
    parent is the hub; one that nothing refers to any more can show up
    until the collector frees it (it is unreachable, not dead)."""
    if hub is None:
        from labkit.hub import get_hub
        hub = get_hub()
    found = [g for g in _all_greenlets() if g is not hub and g.parent is hub and not g.dead]
    return sorted(found, key=_natural_key)


def greenlet_name(g) -> str:
    """Its ``name`` (labkit and gevent Greenlets), else its function's
    qualified name, else "greenlet-0x..." (its id)."""
    name = getattr(g, "name", None)
    if isinstance(name, str):
        return name
    run = getattr(g, "run", None)
    return getattr(run, "__qualname__", None) or f"greenlet-{id(g):#x}"


def _natural_key(g):
    name = greenlet_name(g)
    parts, current = [], ""
    for ch in name:
        if current and ch.isdigit() != current[-1].isdigit():
            parts.append(current)
            current = ""
        current += ch
    if current:
        parts.append(current)
    return [int(part) if part.isdigit() else part for part in parts]


# -- what each one does: run_info ---------------------------------------------------

@dataclass
class GreenletInfo:
    """One live greenlet, as :func:`run_info` sees it."""
    name: str
    state: str              #: "running", "waiting", "ready" or "not started"
    waits_on: str           #: "sleep(0.05)", "fd 7 read", "join", "Event.wait" ...
    where: str              #: "file.py:12 in func": the user's line it waits at
    stack: list = field(default_factory=list)   #: "file:line in func", outermost first
    greenlet: object = field(default=None, repr=False)

    def __str__(self) -> str:
        text = f"{self.name:<24} {self.state:<11}"
        if self.waits_on:
            text += f" {self.waits_on:<22}"
        return (text + f" at {self.where}" if self.where else text).rstrip()


def run_info(hub=None, internal_dirs=(LABKIT_DIR,)) -> list:
    """A :class:`GreenletInfo` for each of :func:`live_greenlets`.

    ``where`` is the innermost frame outside ``internal_dirs`` (labkit's own
    files; the tracer adds its own): the user's line. Call from the hub's
    thread (another thread's greenlets' frames change under it)."""
    if hub is None:
        from labkit.hub import get_hub
        hub = get_hub()
    # sleep(0) queues the greenlet's bound switch (maybe inside a Callback):
    # the greenlets those belong to are ready to run, not waiting.
    ready = {id(getattr(getattr(cb, "callback", cb), "__self__", None))
             for cb in hub.ready_callbacks()}
    return [_describe(g, ready, tuple(internal_dirs)) for g in live_greenlets(hub)]


def _describe(g, ready_ids: set, internal_dirs: tuple) -> GreenletInfo:
    frames = []
    frame = g.gr_frame
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()   # outermost first
    if g is getcurrent():
        state = "running"
    elif not frames:
        state = "not started"
    elif id(g) in ready_ids:
        state = "ready"
    else:
        state = "waiting"
    stack = [f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}"
             for f in frames]
    user = None
    for f in reversed(frames):
        if not f.f_code.co_filename.startswith(internal_dirs):
            user = f
            break
    if user is None and frames:
        # labkit's own greenlets (a server's accept loop): blame the
        # outermost frame below Greenlet.run, the loop that waits.
        user = frames[1] if len(frames) > 1 else frames[0]
    where = (f"{os.path.basename(user.f_code.co_filename)}:{user.f_lineno} "
             f"in {user.f_code.co_name}") if user is not None else ""
    waits_on = _waits_on(g, frames, user) if state in ("waiting", "ready") else ""
    return GreenletInfo(name=greenlet_name(g), state=state, waits_on=waits_on, where=where,
                        stack=stack, greenlet=g)


def _waits_on(g, frames: list, user) -> str:
    """What the greenlet is parked on: the labkit call the user's code made
    ("socket.accept"), and what labkit says it waits for ("fd 7 read")."""
    from labkit._park import waiting_on
    detail = waiting_on(g) or ""
    api = ""
    if user is not None and user in frames:
        index = frames.index(user)
        if index + 1 < len(frames):
            api = _qualname(frames[index + 1])
    if api and detail:
        if detail.startswith(api):
            return detail        # "Queue.get" says it all
        if api.startswith(detail):
            return api           # "Event.wait", not "Event.wait: Event"
        return f"{api}: {detail}"
    return api or detail or "the hub"


def _qualname(frame) -> str:
    """The qualified name of the function ``frame`` runs: "socket.accept".

    Python 3.11+ keeps it on the code object (``co_qualname``). On 3.10 it is
    derived for methods: the frame's first argument (``self``, or ``cls``)
    gives the class, and the first class of its MRO whose namespace holds a
    function with this very code object is the one that defines it.
    Anything else gets ``co_name``."""
    code = frame.f_code
    qualname = getattr(code, "co_qualname", None)
    if qualname is not None:
        return qualname
    if code.co_argcount:
        first = frame.f_locals.get(code.co_varnames[0])
        for klass in (first if isinstance(first, type) else type(first)).__mro__:
            attr = klass.__dict__.get(code.co_name)
            if getattr(getattr(attr, "__func__", attr), "__code__", None) is code:
                return f"{klass.__qualname__}.{code.co_name}"
    return code.co_name


# -- gevent's run info: threads, then the greenlet trees -----------------------------

def format_run_info(thread_stacks: bool = True, greenlet_stacks: bool = True,
                    limit=None, current_thread_ident=None) -> list:
    """Lines describing every thread (with its stack) and every greenlet
    (a :class:`GreenletTree` per thread: parent, running stack, spawn site,
    spawn-tree locals). For people; the format may change."""
    import threading
    if current_thread_ident is None:
        current_thread_ident = threading.get_ident()
    lines = ["*" * 80, "* Threads"]
    threads = {t.ident: t for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        thread = threads.get(ident)
        name = thread.name if thread is not None else None
        if ident == current_thread_ident:
            name = f"{name}) (CURRENT"
        lines.append("*" * 80)
        lines.append(f"Thread 0x{ident:x} ({name})\n")
        if thread_stacks:
            lines.append("".join(traceback.format_stack(frame, limit)))
        else:
            lines.append("\t...stack elided...")
    del frame
    lines += ["*" * 80, "* Greenlets", "*" * 80]
    for tree in sorted(GreenletTree.forest(),
                       key=lambda t: "" if t.is_current_tree else repr(t.greenlet)):
        lines.append("---- Thread boundary")
        lines.extend(tree.format_lines(details={
            # other threads' greenlets have no frame of their own we could trust
            "running_stacks": greenlet_stacks if tree.is_current_tree else False,
            "running_stack_limit": limit,
        }))
    return lines


def print_run_info(thread_stacks: bool = True, greenlet_stacks: bool = True,
                   limit=None, file=None) -> None:
    """Print :func:`format_run_info` to ``file`` (default sys.stderr)."""
    file = sys.stderr if file is None else file
    for line in format_run_info(thread_stacks, greenlet_stacks, limit):
        print(line, file=file)


class _TreeFormatter:
    """Lines of an ASCII tree: a node's label, its data, its children."""

    UP_AND_RIGHT = "+"
    HORIZONTAL = "-"
    VERTICAL = "|"
    VERTICAL_AND_RIGHT = "+"
    DATA = ":"
    label_space = 1
    horiz_width = 3
    indent = 1

    def __init__(self, details, depth=0):
        self.lines = []
        self.depth = depth
        self.details = details
        if not details:
            self.child_data = lambda *args, **kwargs: None

    def deeper(self):
        return type(self)(self.details, self.depth + 1)

    def node_label(self, text):
        self.lines.append(text)

    def child_head(self, label, right=VERTICAL_AND_RIGHT):
        self.lines.append(" " * self.indent + right + self.HORIZONTAL * self.horiz_width
                          + " " * self.label_space + label)

    def last_child_head(self, label):
        self.child_head(label, self.UP_AND_RIGHT)

    def child_tail(self, line, vertical=VERTICAL):
        self.lines.append(" " * self.indent + vertical + " " * self.horiz_width + line)

    def last_child_tail(self, line):
        self.child_tail(line, vertical=" " * len(self.VERTICAL))

    def child_data(self, data, data_marker=DATA):
        # The marker only at the top level; nested data is marked by the
        # tails of the trees that contain it.
        marker = data_marker if not self.depth else " "
        self.lines.append((" " * self.indent + marker + " " * self.horiz_width
                           + " " * self.label_space + data,))

    def last_child_data(self, data):
        self.child_data(data, " ")

    def child_multidata(self, data):
        for line in data.splitlines():
            self.child_data(line)


def _finished(g) -> bool:
    """A Greenlet's ready(); a raw greenlet (or the hub, whose ``ready`` is
    its queue) cannot say, and counts as not finished (gevent's rule)."""
    ready = getattr(g, "ready", None)
    return ready() if callable(ready) else False


class GreenletTree:
    """A tree of greenlets, by who spawned whom (a labkit Greenlet's
    ``spawning_greenlet``; the hub is everyone's *parent*, so the parent is
    not the interesting edge). ``str()`` is the short form; :meth:`format`
    adds details. :meth:`forest` has one tree per thread,
    :meth:`current_tree` this thread's."""

    #: the greenlet this tree represents
    greenlet = None
    #: is this the tree of the current thread?
    is_current_tree = False

    DEFAULT_DETAILS = {"running_stacks": True, "running_stack_limit": None,
                       "spawning_stacks": True, "locals": True}

    def __init__(self, greenlet):
        self.greenlet = greenlet
        self.child_trees = []

    def add_child(self, tree) -> None:
        if tree is not self:
            self.child_trees.append(tree)

    @property
    def root(self) -> bool:
        return self.greenlet.parent is None

    def __getattr__(self, name):
        return getattr(self.greenlet, name)

    def format_lines(self, details=True) -> list:
        """The tree as lines; ``details`` True/False or a dict overriding
        DEFAULT_DETAILS."""
        if not isinstance(details, dict):
            details = self.DEFAULT_DETAILS.copy() if details else {}
        else:
            details = {**self.DEFAULT_DETAILS, **details}
        return [line[0] if isinstance(line, tuple) else line
                for line in self._render(_TreeFormatter(details))]

    def format(self, details=True) -> str:
        return "\n".join(self.format_lines(details))

    def __str__(self) -> str:
        return self.format(False)

    @staticmethod
    def _spawning_parent(g):
        ref = getattr(g, "spawning_greenlet", None)
        return ref() if ref is not None else None

    def _render(self, tree):
        g = self.greenlet
        label = repr(g)
        if not g:  # not running, or dead
            if _finished(g):
                label += "; finished"
                if getattr(g, "value", None) is not None:
                    label += " with value " + repr(g.value)[:30]
                elif getattr(g, "exception", None) is not None:
                    label += " with exception " + repr(g.exception)
            else:
                label += "; not running"
        tree.node_label(label)
        tree.child_data("Parent: " + repr(g.parent))
        if g and tree.details and tree.details["running_stacks"] and g.gr_frame is not None:
            tree.child_data("Running:")
            tree.child_multidata("".join(traceback.format_stack(
                g.gr_frame, tree.details["running_stack_limit"])))
        spawning_stack = getattr(g, "spawning_stack", None)
        if spawning_stack and tree.details and tree.details["spawning_stacks"]:
            tree.child_data("Spawned at:")
            tree.child_multidata("".join(traceback.format_stack(spawning_stack)))
        spawner = self._spawning_parent(g)
        tree_locals = getattr(g, "spawn_tree_locals", None)
        if tree_locals and tree_locals is not getattr(spawner, "spawn_tree_locals", None):
            tree.child_data("Spawn Tree Locals")
            tree.child_multidata(pprint.pformat(tree_locals))
        if tree.details and tree.details.get("locals"):
            self._render_locals(tree)
        self._render_children(tree)
        return tree.lines

    def _render_locals(self, tree) -> None:
        from labkit.local import all_local_dicts_for_greenlet
        found = all_local_dicts_for_greenlet(self.greenlet)
        if found:
            tree.child_data("Greenlet Locals:")
            for (kind, ident), values in found:
                if values:
                    tree.child_data(f"  Local {kind} at {hex(ident)}")
                    tree.child_multidata("    " + pprint.pformat(values))

    def _render_children(self, tree) -> None:
        children = sorted(self.child_trees, key=lambda c: (
            getattr(c.greenlet, "minimal_ident", -1),
            _finished(c.greenlet),
            id(c.greenlet.parent)))
        for n, child in enumerate(children):
            child_lines = child._render(tree.deeper())
            last = n == len(children) - 1
            head = tree.last_child_head if last else tree.child_head
            tail = tree.last_child_tail if last else tree.child_tail
            data = tree.last_child_data if last else tree.child_data
            head(child_lines.pop(0))
            for line in child_lines:
                if isinstance(line, tuple):
                    data(line[0])
                else:
                    tail(line)

    @staticmethod
    def _root_greenlet(g):
        while g.parent is not None and not getattr(g, "greenlet_tree_is_root", False):
            g = g.parent
        return g

    @classmethod
    def _forest(cls):
        main = cls._root_greenlet(getcurrent())
        trees = {}
        roots = {}
        current = roots[main] = trees[main] = cls(main)
        current.is_current_tree = True
        for g in _all_greenlets():
            spawner = cls._spawning_parent(g)
            if spawner is None:   # a raw greenlet, or its spawner is gone
                spawner = cls._root_greenlet(g)
            if spawner is cls._root_greenlet(spawner) and spawner not in roots:
                trees[spawner] = roots[spawner] = cls(spawner)
            parent_tree = trees.get(spawner)
            if parent_tree is None:
                parent_tree = trees[spawner] = cls(spawner)
            child = trees.get(g)
            if child is None:
                child = trees[g] = cls(g)
            parent_tree.add_child(child)
        return roots, current

    @classmethod
    def forest(cls) -> list:
        """One tree per thread that has greenlets."""
        return list(cls._forest()[0].values())

    @classmethod
    def current_tree(cls) -> "GreenletTree":
        """The tree of the current thread."""
        return cls._forest()[1]


# -- assert_switches ---------------------------------------------------------------------

class _FailedToSwitch(AssertionError):
    pass


class assert_switches:
    """``with assert_switches(): ...`` raises AssertionError at the end of
    a block (that raised nothing) which never let another greenlet run.

    ``max_blocking_time``: instead, fail if the block kept the CPU for
    longer than that many seconds between two switches -- or, with
    ``hub_only``, if that long passed without a visit to the hub (a block
    that never visits it fails). Switches are watched with
    ``greenlet.settrace``, chaining to a trace function already set (the
    one in force is ``self.tracer``). Note that labkit's ``sleep(0)`` does
    not switch when no other greenlet is ready.
    """

    hub = None
    tracer = None

    def __init__(self, max_blocking_time=None, hub_only=False):
        self.max_blocking_time = max_blocking_time
        self.hub_only = hub_only

    def __enter__(self):
        from labkit.hub import get_hub
        self.hub = get_hub()
        self.tracer = _SwitchTracer(self.hub, self.max_blocking_time, self.hub_only)
        self._entered = perf_counter()
        return self

    def __exit__(self, kind, value, tb):
        tracer, self.tracer = self.tracer, None
        hub, self.hub = self.hub, None
        tracer.kill()
        if kind is not None or not tracer.did_block():
            return None
        elapsed = perf_counter() - self._entered
        message = "To the hub" if self.hub_only else "To any greenlet"
        message += f" in {elapsed:.4f} seconds"
        if self.max_blocking_time:
            message += f" (max allowed {self.max_blocking_time:.4f} seconds)"
        raise _FailedToSwitch(message + "\n" + "\n".join(format_run_info()))


class _SwitchTracer:
    """The greenlet trace function of assert_switches: which greenlet runs
    (``active_greenlet``), how many switches happened, and -- with a budget
    -- the longest stretch without one (or since the hub last ran)."""

    def __init__(self, hub, max_blocking_time, hub_only: bool):
        self.hub = hub
        self.max_blocking_time = max_blocking_time
        self.hub_only = hub_only
        self.greenlet_switch_counter = 0
        self.active_greenlet = getcurrent()
        self.last_switch = perf_counter()
        self.last_entered_hub = 0.0          # (never, yet)
        self.max_blocking = 0.0
        self.previous_trace_function = settrace(self)

    def __call__(self, event, args):
        old_active = self.active_greenlet
        self.greenlet_switch_counter += 1
        self.active_greenlet = args[1] if event in ("switch", "throw") else None
        now = perf_counter()
        if self.active_greenlet is self.hub:
            self.last_entered_hub = now
        if old_active is not self.hub and old_active is not None:
            self.max_blocking = max(self.max_blocking, now - self.last_switch)
        self.last_switch = now
        if self.previous_trace_function is not None:
            self.previous_trace_function(event, args)

    def did_block(self) -> bool:
        now = perf_counter()
        if self.max_blocking_time is None:
            return self.greenlet_switch_counter == 0 and self.active_greenlet is not None \
                and self.active_greenlet is not self.hub
        if self.hub_only:
            return now - self.last_entered_hub > self.max_blocking_time
        longest = max(self.max_blocking, now - self.last_switch)
        return longest > self.max_blocking_time

    def kill(self) -> None:
        settrace(self.previous_trace_function)
        self.previous_trace_function = None


def clear_stack_frames(frame) -> None:
    """Clear the local variables of every frame in a stack, as far as
    Python allows (a running frame refuses)."""
    while frame is not None:
        try:
            frame.clear()
        except (RuntimeError, AttributeError):
            pass
        frame = frame.f_back
