"""tools/check_outputs.py: each rule fires on a notebook that breaks it, and a clean one passes."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from check_outputs import check_notebook  # noqa: E402


def _notebook(tmp_path: Path, cells: list) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


def _code(source: str, outputs: list, tags: tuple[str, ...] = ()):
    cell = nbformat.v4.new_code_cell(source)
    cell.outputs = outputs
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _result(data: dict):
    return nbformat.v4.new_output("execute_result", data=data, execution_count=1)


CLEAN_TABLE = "<table><tr><td>Spearman</td><td>0.35</td></tr></table>"


def test_a_clean_chapter_passes(tmp_path: Path) -> None:
    cells = [
        _code("result = chapter.run(exp)\nbook.show_table(result.summary)",
              [_result({"text/html": CLEAN_TABLE, "text/plain": "Spearman 0.35"})]),
        _code("\n".join(f"x{i} = {i}" for i in range(10)), [], ("hide-input",)),
        _code("glue('fig', fig)", [nbformat.v4.new_output(
            "display_data", data={"application/papermill.record/image/png": "iVBOR"})], ("hide-cell",)),
        _code("print('recorded')", [nbformat.v4.new_output("stream", name="stderr", text="noise")], ("remove-cell",)),
    ]
    assert check_notebook(_notebook(tmp_path, cells)) == []


@pytest.mark.parametrize("output, rule", [
    (nbformat.v4.new_output("stream", name="stderr", text="INFO something\n"), "stderr"),
    (nbformat.v4.new_output("stream", name="stdout", text="UserWarning: careful\n"), "warning"),
    (nbformat.v4.new_output("stream", name="stdout", text=" 40%|####      | 4/10 [00:01<00:02, 2.9it/s]"), "progress bar"),
    (_result({"text/plain": "{'spearman': 0.35, 'top1': 0.2}"}), "raw Python container"),
    (_result({"text/plain": "0.20000000298023224"}), "long float"),
    (_result({"text/html": "<td>0.123456</td>", "text/plain": "0.123456"}), "long float"),
    (nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"}), "without a caption"),
])
def test_each_rule_fires(tmp_path: Path, output, rule: str) -> None:
    problems = check_notebook(_notebook(tmp_path, [_code("x", [output], ("hide-input",))]))
    assert problems and any(rule in p.rule for p in problems), problems


def test_visible_wiring_code_is_refused(tmp_path: Path) -> None:
    source = "\n".join(f"value_{i} = table.iloc[{i}]" for i in range(5))
    problems = check_notebook(_notebook(tmp_path, [_code(source, [])]))
    assert len(problems) == 1 and "visible code" in problems[0].rule
    assert check_notebook(_notebook(tmp_path, [_code(source, [], ("hide-input",))])) == []


def test_table_styling_is_not_mistaken_for_numbers(tmp_path: Path) -> None:
    html = '<table style="width: 0.123456px"><tr><td>0.12</td></tr></table>'
    assert check_notebook(_notebook(tmp_path, [_code("t", [_result({"text/html": html})], ("hide-input",))])) == []
