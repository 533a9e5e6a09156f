"""Module boundaries: the hub and the loop are used through their documented
interface, never through their private fields.

DESIGN.md: "Other modules talk to the hub through a small documented
interface; none reads the hub's or the loop's private fields." The hub's
interface (labkit/hub.py): schedule, take_back, ready (read it; change it
through schedule/take_back), ready_callbacks, ready_count, last_poll_ns,
interrupt_main, owns_frame, run_callback(_threadsafe), keepalive, tick; the
loop's (labkit/_loop.py): its public methods. Only labkit/hub.py,
labkit/_park.py (the one home of parking, the hub's other half) and
labkit/_loop.py itself may touch what starts with an underscore.

These tests read the source with ``ast``: an attribute whose name starts
with one underscore, read on an expression that names a hub or a loop
(``hub``, ``self.hub``, ``hub.loop``, ``loop``, ``g.parent`` ...), is a
private read.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the modules that own the hub's and the loop's insides
OWNERS = {"labkit/hub.py", "labkit/_park.py", "labkit/_loop.py"}
#: names under which other modules hold a hub or a loop
HUB_OR_LOOP = {"hub", "_hub", "loop", "parent"}


def _names_a_hub_or_loop(node) -> bool:
    """``hub``, ``self.hub``, ``x.loop``, ``self._hub.loop``, ``g.parent`` ..."""
    if isinstance(node, ast.Name):
        return node.id in HUB_OR_LOOP
    if isinstance(node, ast.Attribute):
        return node.attr in HUB_OR_LOOP
    return False


def private_reads(path: str) -> list[str]:
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and _names_a_hub_or_loop(node.value)):
            found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} "
                         f"{ast.unparse(node)}")
    return found


def source_files():
    for package in ("labkit", "labkit/bench", "tracing"):
        directory = os.path.join(ROOT, package)
        for entry in sorted(os.listdir(directory)):
            rel = f"{package}/{entry}"
            if entry.endswith(".py") and rel not in OWNERS:
                yield os.path.join(directory, entry)


def test_no_module_outside_the_hub_and_park_reads_a_private_field_of_the_hub_or_loop():
    offenders = [read for path in source_files() for read in private_reads(path)]
    assert offenders == []


def test_the_check_catches_a_private_read():
    # The rule itself, on a snippet: would it have caught the reads it replaced?
    snippet = ("hub._ready.append(f)\nself.hub._last_poll_ns\nhub.loop._fds.get(fd)\n"
               "self.parent._ready\nloop._ptr\nhub.ready.append(f)\nhub.schedule(f)\n")
    tree = ast.parse(snippet)
    caught = sorted({ast.unparse(n) for n in ast.walk(tree)
                     if isinstance(n, ast.Attribute) and n.attr.startswith("_")
                     and _names_a_hub_or_loop(n.value)})
    assert caught == ["hub._ready", "hub.loop._fds", "loop._ptr", "self.hub._last_poll_ns",
                      "self.parent._ready"]


def test_nothing_outside_park_compares_code_objects_of_labkit_functions():
    # sleep's and the blocking monitor's "is the hub in its own loop" used to
    # compare Hub.run.__code__; Hub.owns_frame answers that now.
    offenders = []
    for path in source_files():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__code__":
                offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {ast.unparse(node)}")
    # event.py registers its inlined wait with _park.describe_parking, which
    # is how _park learns the code object of a parking function it does not
    # define; that one use is the interface.
    assert offenders == ["labkit/event.py:" + _line_of_describe_parking() + " Event.wait.__code__"]


def _line_of_describe_parking() -> str:
    with open(os.path.join(ROOT, "labkit", "event.py")) as f:
        for number, line in enumerate(f, 1):
            if line.startswith("describe_parking(Event.wait.__code__"):
                return str(number)
    return "?"


def test_the_labkit_package_has_no_module_getattr():
    # CPython does not specialise attribute loads on a module that defines
    # __getattr__: every labkit.sleep(0) in a loop then takes the slow path
    # (it cost 3.5% of a yield in instructions). Lazy names are functions.
    import labkit
    assert "__getattr__" not in vars(labkit)
