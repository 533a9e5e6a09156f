"""The cell constructors every lesson uses, and its exercises.

A lesson module defines ``CELLS`` (the notebook, in order) and ``EXERCISES``
(its :class:`Exercise` records); its cells end with ``*exercises(EXERCISES)``.

An exercise becomes three cells: the task (markdown), the student's cell
(``stub``, tagged ``exercise-N``) and the checker (``check``, tagged
``check-N``): asserts that pass on the reference solution and fail on the
stub, ending with ``print("exercise N: passed")``. The reference solution
is *not* in the notebook: it stays here, in the lesson module, and
``notebooks/_build.py`` puts it in place of the stub for the tests and for
the rendered HTML (the teacher's edition). Keep exercises independent of
each other: each checker reads only what its own exercise cell defines.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

from nbformat.v4 import new_code_cell, new_markdown_cell


def md(text: str):
    """A markdown cell from an indented triple-quoted string."""
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tag: str | None = None, raises: bool = False):
    """A code cell; ``tag`` names it for tests/test_notebooks.py to find.
    ``raises``: the cell ends in an exception on purpose (nbclient's
    ``raises-exception`` tag lets the run go on)."""
    cell = new_code_cell(textwrap.dedent(text).strip())
    tags = ([tag] if tag else []) + (["raises-exception"] if raises else [])
    if tags:
        cell.metadata["tags"] = tags
    return cell


@dataclass(frozen=True)
class Exercise:
    """One exercise: what to do, the cell the student fills in, the reference
    solution (kept out of the notebook), and the cell that checks it."""

    task: str
    stub: str
    solution: str
    check: str

    def source(self, which: str) -> str:
        """The dedented text of ``stub``, ``solution`` or ``check``."""
        return textwrap.dedent(getattr(self, which)).strip()


#: What the student is told above the first exercise.
EXERCISES_INTRO = """
## Exercises

Each exercise has a cell for you to complete and, under it, a cell that
checks your answer: run both. The checker prints `exercise N: passed`, or
fails with an `AssertionError` that says what is still wrong. (Running the
whole notebook stops at the first exercise not done yet; that is expected.)
"""


def exercises(items: list) -> list:
    """The cells of a lesson's exercises: an introduction, then, for each,
    its task, its cell to complete (``exercise-N``) and its checker
    (``check-N``)."""
    cells = [md(EXERCISES_INTRO)]
    for number, item in enumerate(items, 1):
        cells.append(md(f"**Exercise {number}.** " + textwrap.dedent(item.task).strip()))
        cells.append(code(item.stub, tag=f"exercise-{number}"))
        cells.append(code(item.check, tag=f"check-{number}"))
    return cells
