"""The import graph: the core never imports the tracer, and the tracer has no cycles.

DESIGN.md: "The core never imports `tracing`: the tracer and its magics plug
into the hub through a registry" (labkit/plugins.py). These tests read the
source with ``ast`` -- nothing is imported -- and count every import
statement, at module level or inside a function: an import moved into a
function to dodge a cycle is still an edge of the graph.

What counts as a module: labkit/*.py (the core and its host integration;
labkit/bench/ measures the tracer's cost, so like the tests it is a tool on
top of both) and tracing/*.py, a package being its ``__init__.py``. A
submodule's import does not count as an import of its package (Python runs
the package's ``__init__`` first, but that is how packages work, not a
dependency anyone wrote). Since labkit never imports tracing, a cycle through
tracing lies within tracing, so that is the only place the cycle test looks.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(root: str, package: str) -> dict:
    """Dotted name -> path, for the .py files directly in ``root/package``."""
    found = {}
    directory = os.path.join(root, package)
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".py"):
            name = package if entry == "__init__.py" else f"{package}.{entry[:-3]}"
            found[name] = os.path.join(directory, entry)
    return found


def imports(name: str, path: str, known) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file,
    function-level ones included. ``from a import b`` imports ``a.b`` when
    that is a module in ``known``, else ``a``."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from .x import y
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                edges.append((full if full in known else base, node.lineno))
    return edges


def graph(root: str = ROOT) -> tuple[dict, dict]:
    """(module -> [(imported module, line)], module -> path) for labkit and tracing."""
    paths = {**modules(root, "labkit"), **modules(root, "tracing")}
    return {name: imports(name, path, paths) for name, path in paths.items()}, paths


def core_imports_of_the_tracer(root: str = ROOT) -> list[str]:
    """"labkit/x.py:12 imports tracing.y" for each such import."""
    edges, paths = graph(root)
    return [f"{os.path.relpath(paths[name], root)}:{line} imports {target}"
            for name in edges if name.split(".")[0] == "labkit"
            for target, line in edges[name]
            if target == "tracing" or target.startswith("tracing.")]


def tracer_cycles(root: str = ROOT) -> list[list[str]]:
    """Import cycles among the tracing modules, each as the modules along it
    (the first one repeated at the end). A module on a cycle already found
    starts no other, so a fix may bring the next one to light."""
    edges, _paths = graph(root)
    tracer = {name for name in edges if name.split(".")[0] == "tracing"}
    inside = {name: sorted({target for target, _line in edges[name] if target in tracer})
              for name in tracer}
    cycles, reported = [], set()
    for start in sorted(inside):
        # Depth-first from ``start``, looking for a way back to it.
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for target in inside[node]:
                if target == start:
                    if not set(path) & reported:
                        cycles.append(path + [start])
                        reported.update(path)
                    stack.clear()
                    break
                if target not in seen:
                    seen.add(target)
                    stack.append((target, path + [target]))
    return cycles


def test_the_core_never_imports_the_tracer():
    assert core_imports_of_the_tracer() == []


def test_the_tracer_has_no_import_cycles():
    assert [" -> ".join(cycle) for cycle in tracer_cycles()] == []
