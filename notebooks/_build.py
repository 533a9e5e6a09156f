"""Write the teaching notebooks 01-05 from their source in notebooks/_lessons/.

    python notebooks/_build.py          # rewrites notebooks/0*.ipynb

The notebooks are generated so that their source is reviewable as plain
Python, and so that they are committed without outputs. Edit the lesson
modules (one per notebook), not the .ipynb files (or edit in Jupyter, then
port the change back).

Each cell is ``md(text)`` or ``code(text, tag=None)``. A tag names a cell
whose output tests/test_notebooks.py checks; keep tags when editing.
"""
from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # so that _lessons imports from any working directory

from _lessons import nb01, nb02, nb03, nb04, nb05  # noqa: E402

NOTEBOOKS = {
    "01_cooperative_multitasking.ipynb": nb01.CELLS,
    "02_a_server_in_the_notebook.ipynb": nb02.CELLS,
    "03_finding_blocking_calls.ipynb": nb03.CELLS,
    "04_what_a_switch_costs.ipynb": nb04.CELLS,
    "05_reading_a_trace.ipynb": nb05.CELLS,
}


def render(name: str) -> str:
    """The text of notebook ``name`` as built from its lesson module."""
    cells = NOTEBOOKS[name]
    # Stable cell ids (nbformat draws random ones): rebuilding a notebook
    # whose text did not change must not change the file.
    for number, cell in enumerate(cells):
        cell.id = f"c{number:02d}"
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3",
                       "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def build() -> list[str]:
    """Write every notebook; return the paths written."""
    written = []
    for name in NOTEBOOKS:
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(render(name))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in build():
        print("wrote", os.path.relpath(path))
