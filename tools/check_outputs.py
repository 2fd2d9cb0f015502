#!/usr/bin/env python
"""Check what the executed chapters show a reader, before the HTML is built.

    python tools/check_outputs.py                  # every executed notebook in _build/src/notebooks
    python tools/check_outputs.py path/to/x.ipynb  # the given ones

A chapter's outputs are its numbers, tables, figures and verdicts; anything else is noise that a
reader of the book should never meet. A problem is reported with the notebook, the cell and the
rule it breaks, and the exit status is 1:

- no warning, log line or progress bar (a ``stderr`` stream, "Warning", a tqdm bar);
- no raw Python dict or list as an output (show a table or a sentence instead);
- no long float (more than four decimals: round it, or pass the table through ``book.show_table``);
- no figure shown without its caption (glue it with ``book.glue_figure`` and show it with a
  ``{glue:figure}`` directive);
- no visible wiring code: a code cell whose input is shown has at most ``MAX_VISIBLE_LINES`` lines
  (tag the others ``hide-input``, ``hide-cell`` or ``remove-cell``). The one exception is code the
  reader is meant to copy and adapt, such as a network of their own, tagged ``reader-code``.

``tools/build_book.py`` runs these checks on every build, so ``make book`` and CI both enforce them.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_VISIBLE_LINES = 3
HIDING_TAGS = {"hide-input", "hide-cell", "remove-cell", "remove-input", "injected-parameters"}
READER_CODE_TAG = "reader-code"   # shown in full on purpose: code a reader adapts (their own network)
SHOWN_KINDS = ("text/html", "text/markdown", "text/latex")
LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?![\w])")
PROGRESS_BAR = re.compile(r"\d+%\|[^|]*\||\d+(\.\d+)?(it|s)/s\]")
WARNING = re.compile(r"\b\w*Warning\b|\bWARNING\b")
RAW_CONTAINER = re.compile(r"^\s*[\[{(].*[\]})]\s*$", re.S)


@dataclass(frozen=True)
class Problem:
    notebook: str
    cell: int
    rule: str

    def __str__(self) -> str:
        return f"{self.notebook}, cell {self.cell}: {self.rule}"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _strip_html(html: str) -> str:
    # Table cells' text only: attributes (CSS, ids) are not what a reader sees.
    return re.sub(r"<[^>]*>", " ", html)


def check_notebook(path: Path) -> list[Problem]:
    """Every problem of one executed notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    problems: list[Problem] = []

    def add(index: int, rule: str) -> None:
        problems.append(Problem(name, index, rule))

    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = set(cell.metadata.get("tags", []))
        if "remove-cell" in tags or "remove-output" in tags:
            continue
        lines = [line for line in cell.source.splitlines() if line.strip()]
        if not tags & (HIDING_TAGS | {READER_CODE_TAG}) and len(lines) > MAX_VISIBLE_LINES:
            add(index, f"{len(lines)} lines of visible code (at most {MAX_VISIBLE_LINES}: tag wiring 'hide-input')")
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                text = _text(output.get("text", ""))
                if output.get("name") == "stderr":
                    add(index, f"a stderr stream: {text.strip()[:80]!r}")
                    continue
                texts = [text]
            elif kind == "error":
                add(index, f"an error: {output.get('ename')}: {output.get('evalue')}")
                continue
            else:
                data = output.get("data", {})
                if "image/png" in data or "image/svg+xml" in data:
                    add(index, "a figure without a caption (glue it and use {glue:figure})")
                shown = [k for k in SHOWN_KINDS if k in data]
                if not shown and "text/plain" in data and not any(k.startswith("application/papermill") for k in data) \
                        and "image/png" not in data:
                    plain = _text(data["text/plain"])
                    if RAW_CONTAINER.match(plain):
                        add(index, f"a raw Python container as output: {plain.strip()[:60]!r}")
                    texts = [plain]
                else:
                    texts = [_strip_html(_text(data[k])) if k == "text/html" else _text(data[k]) for k in shown]
            for text in texts:
                if WARNING.search(text):
                    add(index, f"a warning in the output: {WARNING.search(text).group(0)!r}")
                if PROGRESS_BAR.search(text):
                    add(index, "a progress bar in the output")
                match = LONG_FLOAT.search(text)
                if match:
                    add(index, f"a long float {match.group(0)!r} (round it, or use book.show_table)")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a).resolve() for a in args] or sorted((ROOT / "_build" / "src" / "notebooks").glob("*.ipynb"))
    if not paths:
        print("check_outputs: no executed notebooks found (run make book first)", file=sys.stderr)
        return 1
    problems = [p for path in paths for p in check_notebook(path)]
    for problem in problems:
        print(f"output check: {problem}", file=sys.stderr)
    print(f"check_outputs: {len(paths)} notebook(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
