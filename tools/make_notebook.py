"""Write a chapter notebook from a compact cell list (used when a chapter's notebook is rewritten).

    from tools.make_notebook import write, md, code
    write("notebooks/01_clustering.ipynb", [md("# Title"), code("x = 1", "hide-input"), ...])

Tags: ``parameters`` (papermill's parameters cell), ``hide-input`` (wiring: the code folds away,
its output stays), ``hide-cell`` (both fold away), ``remove-cell`` (not in the book at all).
The written notebook has no outputs and the kernel ``python3``.
"""

from __future__ import annotations

import textwrap

import nbformat


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip("\n"))


def code(text: str, *tags: str):
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(path: str, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"cell-{i:02d}"
    nbformat.write(nb, path)
