"""The two cell constructors every lesson uses."""
import textwrap

from nbformat.v4 import new_code_cell, new_markdown_cell


def md(text: str):
    """A markdown cell from an indented triple-quoted string."""
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tag: str | None = None):
    """A code cell; ``tag`` names it for tests/test_notebooks.py to find."""
    cell = new_code_cell(textwrap.dedent(text).strip())
    if tag:
        cell.metadata["tags"] = [tag]
    return cell
