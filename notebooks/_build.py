"""Write the teaching notebooks from their source in notebooks/_lessons/, and
render them, executed, as HTML.

    python notebooks/_build.py                    # rewrites notebooks/NN_*.ipynb
    python notebooks/_build.py --html out/        # executes every lesson, with the
                                                  # reference solutions, into out/*.html
    python notebooks/_build.py --html out/ --only 06,07

The notebooks are generated so that their source is reviewable as plain
Python, and so that they are committed without outputs. Edit the lesson
modules (one per notebook), not the .ipynb files (or edit in Jupyter, then
port the change back).

Each cell is ``md(text)`` or ``code(text, tag=None)``; a lesson ends with
``*exercises(EXERCISES)`` (see notebooks/_lessons/_cells.py). A tag names a
cell whose output tests/test_notebooks.py checks; keep tags when editing.

Exercises: the committed notebook has the student's cells (``exercise-N``)
as stubs; :func:`notebook` with ``solved=True`` puts the reference solution
from the lesson module in their place. The tests execute that version (every
checker must pass) and then run each stub against its checker (every checker
must fail); ``--html`` renders that version too, so that a teacher previews
every output, the exercises' included, without running anything.
"""
from __future__ import annotations

import argparse
import datetime
import html
import os
import sys
import tempfile

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # so that _lessons imports from any working directory

from _lessons import (nb01, nb02, nb03, nb04, nb05, nb06, nb07, nb08,  # noqa: E402
                      nb09, nb10)

LESSONS = {
    "01_cooperative_multitasking.ipynb": nb01,
    "02_a_server_in_the_notebook.ipynb": nb02,
    "03_finding_blocking_calls.ipynb": nb03,
    "04_what_a_switch_costs.ipynb": nb04,
    "05_reading_a_trace.ipynb": nb05,
    "06_timeouts_and_cancellation.ipynb": nb06,
    "07_errors_in_greenlets.ipynb": nb07,
    "08_the_primitives.ipynb": nb08,
    "09_my_notebook_is_stuck.ipynb": nb09,
    "10_the_socket_wait_by_hand.ipynb": nb10,
}
NOTEBOOKS = {name: lesson.CELLS for name, lesson in LESSONS.items()}

#: Each lesson must run within this many seconds (the tests hold them to it).
TIME_LIMIT = 60

TEACHERS_EDITION = """\
> **Teacher's edition**: executed by `notebooks/_build.py` with the reference
> solutions (from `notebooks/_lessons/{module}.py`) in the exercise cells."""


def notebook(name: str, solved: bool = False):
    """Notebook ``name`` as built from its lesson; with ``solved``, each
    exercise cell holds the reference solution instead of the stub, and a
    first cell says so."""
    lesson = LESSONS[name]
    cells = [nbformat.from_dict(dict(cell)) for cell in NOTEBOOKS[name]]
    # Stable cell ids (nbformat draws random ones): rebuilding a notebook
    # whose text did not change must not change the file.
    for number, cell in enumerate(cells):
        cell.id = f"c{number:02d}"
    if solved:
        for cell in cells:
            tags = cell.metadata.get("tags", [])
            if tags and tags[0].startswith("exercise-"):
                number = int(tags[0].split("-")[1])
                cell.source = lesson.EXERCISES[number - 1].source("solution")
        banner = new_markdown_cell(TEACHERS_EDITION.format(module=lesson.__name__.split(".")[-1]))
        banner.id = "teacher"
        cells.insert(0, banner)
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3",
                       "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    """The text of notebook ``name`` as committed (stubs, no outputs)."""
    return nbformat.writes(notebook(name)) + "\n"


def build() -> list[str]:
    """Write every notebook; return the paths written."""
    written = []
    for name in NOTEBOOKS:
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(name))
        written.append(path)
    return written


def execute(name: str, workdir: str, then=None):
    """Run the solved notebook ``name`` on a real kernel (nbclient) whose
    working directory is ``workdir``; return it with its outputs. A cell
    that fails raises nbclient's CellExecutionError. ``then(client)``, if
    given, runs with the kernel still up after the last cell (the tests run
    the stubs against their checkers there)."""
    from nbclient import NotebookClient
    nb = notebook(name, solved=True)
    client = NotebookClient(nb, timeout=TIME_LIMIT, kernel_name="python3",
                            resources={"metadata": {"path": workdir}})
    client.reset_execution_trackers()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
        client.set_widgets_metadata()
        if then is not None:
            then(client)
    return nb


def write_html(name: str, nb, out_dir: str) -> str:
    """Render the executed notebook ``nb`` to ``out_dir/<name>.html`` (every
    output kept, images embedded) and refresh the index; return the path."""
    from nbconvert import HTMLExporter
    os.makedirs(out_dir, exist_ok=True)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    path = os.path.join(out_dir, name.replace(".ipynb", ".html"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(body)
    write_index(out_dir)
    return path


def write_index(out_dir: str) -> str:
    """``out_dir/index.html``: a link to every rendered lesson there."""
    items = []
    for name in LESSONS:
        page = name.replace(".ipynb", ".html")
        if os.path.exists(os.path.join(out_dir, page)):
            title = LESSONS[name].CELLS[0].source.splitlines()[0].lstrip("# ")
            items.append(f'<li><a href="{page}">{html.escape(title)}</a></li>')
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>labkit lessons</title>"
            "</head><body><h1>labkit lessons</h1>"
            f"<p>Executed with the reference solutions, {stamp}.</p><ol>"
            + "".join(items) + "</ol></body></html>\n")
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def select(only: str | None) -> list[str]:
    """The notebook names that ``--only 01,06`` picks (all without it)."""
    if not only:
        return list(LESSONS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [name for name in LESSONS if name[:2] in wanted]
    unknown = set(wanted) - {name[:2] for name in chosen}
    if unknown or not chosen:
        raise ValueError(f"--only: no lesson numbered {', '.join(sorted(unknown)) or '(none)'}; "
                         f"choose from {', '.join(name[:2] for name in LESSONS)}")
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python notebooks/_build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", metavar="DIR",
                        help="execute the lessons (reference solutions in) and render "
                             "them to DIR/*.html, with DIR/index.html")
    parser.add_argument("--only", metavar="NN[,NN]", help="with --html: only these lessons")
    args = parser.parse_args(argv)
    if args.html is None:
        if args.only:
            parser.error("--only goes with --html")
        for path in build():
            print("wrote", os.path.relpath(path))
        return 0
    try:
        names = select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    for name in names:
        with tempfile.TemporaryDirectory(prefix="labkit-lesson-") as workdir:
            nb = execute(name, workdir)
        print("wrote", os.path.relpath(write_html(name, nb, args.html)))
    print("wrote", os.path.relpath(os.path.join(args.html, "index.html")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
