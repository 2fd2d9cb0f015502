#!/usr/bin/env python
"""Execute the book's chapters with papermill, then build the HTML with jupyter-book.

    python tools/build_book.py --profile quick                # what `make book` runs
    python tools/build_book.py --profile ci --data-root ../shared/data
    python tools/build_book.py --chapters 01 03               # re-execute two chapters only
    python tools/build_book.py --skip-execute                 # rebuild HTML from executed copies
    python tools/build_book.py --profile cpu --record         # what `make record` runs
    python tools/build_book.py --profile cpu --dataset cifar10-jpeg --record
    python tools/build_book.py --profile ci --jobs 1          # one chapter at a time

Steps:

1. Read the pages of ``_toc.yml`` in order. Notebooks (``<file>.ipynb``) are executed with
   papermill (kernel ``python3``, parameters ``profile``, ``data_root``, ``record``), each writing
   its executed copy into the staging tree ``_build/src/`` at the same relative path; the source
   notebooks are never written to, and stay free of outputs. A failing cell stops the build with
   a non-zero exit naming the notebook and the cell. ``--jobs N`` executes N notebooks side by
   side (default: two at the quick and ci profiles, where every chapter uses one CPU thread, else
   one); chapters share one artifact store, whose claims (``ddm.store``) make a chapter wait for
   an artifact another is computing instead of computing it again.
2. Stage ``_config.yml``, ``_toc.yml`` and the markdown pages next to the executed notebooks, and
   MathJax (from ``node_modules/mathjax``, fetched from the npm registry by ``make setup``) under
   ``_build/src/_vendor/mathjax`` so the HTML never loads it from a CDN.
3. ``jupyter-book build _build/src --path-output . -W -n --keep-going``: jupyter-book 1 writes to
   ``<path-output>/_build/html``, so the site lands in ``_build/html`` (``index.html`` at its top).

``_build/src/.executed.json`` remembers, per notebook, the parameters and the source notebook's
hash that made its executed copy, so ``--skip-execute`` and ``--chapters`` can tell stale copies.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "_build"
STAGE = BUILD / "src"
MANIFEST = STAGE / ".executed.json"
MATHJAX_SRC = ROOT / "node_modules" / "mathjax" / "es5"
MATHJAX_DST = STAGE / "_vendor" / "mathjax"
# Top-level MathJax bundles the book does not load; everything else in es5/ (the loader's
# components, fonts, extensions, the accessibility menu) is copied, since MathJax loads it lazily.
MATHJAX_UNUSED = (
    "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-mml-chtml.js", "tex-mml-svg.js",
    "tex-svg.js", "tex-svg-full.js", "mml-chtml.js", "mml-svg.js", "node-main.js",
)
BOOK_FILES = ("_config.yml", "_toc.yml")
# Optional files and folders a book may grow; staged when present.
BOOK_EXTRAS = ("references.bib", "_static", "images", "figures", "logo.png")
# Per-cell execution timeout (seconds) by profile; None waits as long as a cell needs.
DEFAULT_TIMEOUT = {"quick": 1800, "ci": 1800, "cpu": None, "paper": None}
# Notebooks executed side by side by default, by profile: the quick and ci chapters each use one
# CPU thread (config.threads), so two share a 2-core machine; a cpu or paper record takes a
# machine (or a GPU) to itself.
DEFAULT_JOBS = {"quick": 2, "ci": 2}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Page:
    """One page of the table of contents."""

    file: str  # as written in _toc.yml, without suffix, relative to the book root
    path: Path  # the source file, with its suffix

    @property
    def is_notebook(self) -> bool:
        return self.path.suffix == ".ipynb"

    @property
    def rel(self) -> Path:
        return self.path.relative_to(ROOT)

    @property
    def stem(self) -> str:
        return self.path.stem


def toc_pages(toc_path: Path = ROOT / "_toc.yml") -> list[Page]:
    """Pages of a jupyter-book 1 ``_toc.yml`` (root, parts, chapters, sections), in reading order."""
    import yaml

    toc = yaml.safe_load(toc_path.read_text())
    files: list[str] = []

    def walk(entries: list[dict]) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("sections", "chapters"):
                walk(entry.get(key, []))
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))

    files.append(toc["root"])
    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))

    pages = []
    for file in files:
        base = toc_path.parent / file
        candidates = [base] if base.suffix in (".ipynb", ".md") else [
            base.with_name(base.name + s) for s in (".ipynb", ".md")]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise SystemExit(f"error: _toc.yml lists {file!r}, but none of "
                             f"{[str(c.relative_to(ROOT)) for c in candidates]} exists")
        pages.append(Page(file=file, path=found[0]))
    return pages


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_source_notebook(path: Path) -> None:
    """Refuse a source notebook that carries outputs or has no ``parameters`` cell."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems = []
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        problems.append("no cell is tagged 'parameters' (papermill could not pass profile, "
                        "data_root and record)")
    with_outputs = [i for i, c in enumerate(nb.cells)
                    if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    if with_outputs:
        problems.append(f"cells {with_outputs} carry outputs or execution counts; source notebooks "
                        "stay output-free (clear them: jupyter nbconvert --clear-output --inplace "
                        f"{path.relative_to(ROOT)})")
    if problems:
        raise SystemExit(f"error: {path.relative_to(ROOT)}: " + "; ".join(problems))


def load_manifest() -> dict:
    if MANIFEST.is_file():
        return json.loads(MANIFEST.read_text())
    return {}


def save_manifest(manifest: dict) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, MANIFEST)


class ExecutionFailed(Exception):
    """A notebook that failed; the message names the notebook and the cell, with the traceback."""


def execute(page: Page, parameters: dict, timeout: int | None, log_output: bool = True) -> float:
    """Run one notebook with papermill into the staging tree; return its wall time in seconds."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out = STAGE / page.rel
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(page.path), str(out),
            parameters=parameters,
            kernel_name="python3",
            log_output=log_output,
            progress_bar=False,
            execution_timeout=timeout,
            cwd=str(ROOT),
        )
    except PapermillExecutionError as err:
        tb = "\n".join(err.traceback) if isinstance(err.traceback, list) else str(err.traceback)
        if not sys.stderr.isatty():
            tb = ANSI.sub("", tb)
        source = "\n".join("    " + line for line in err.source.splitlines())
        raise ExecutionFailed(
            f"\n{'=' * 78}\nFAILED: {page.rel}, cell {source_cell_index(out, err.cell_index)} "
            f"(counting from 0; execution count {err.exec_count}): {err.ename}: {err.evalue}\n"
            f"--- cell source ---\n{source}\n--- traceback ---\n{tb}\n"
            f"The partly executed notebook is at {out.relative_to(ROOT)}.\n{'=' * 78}") from None
    except Exception as err:  # a kernel death, a timeout, a missing kernel
        raise ExecutionFailed(f"\n{'=' * 78}\nFAILED: {page.rel}: {type(err).__name__}: {err}\n{'=' * 78}") from None
    hide_default_parameters(out)
    return time.perf_counter() - start


def execute_all(to_run: list[Page], parameters: dict, timeout: int | None, jobs: int,
                on_done) -> dict[str, float]:
    """Execute ``to_run``, ``jobs`` at a time, in table-of-contents order of starting; call
    ``on_done(page, seconds)`` as each finishes. The first failure is printed and ends the build
    (notebooks already running are let finish; none is started after it)."""
    times: dict[str, float] = {}
    total = len(to_run)
    if jobs <= 1 or total <= 1:
        for i, page in enumerate(to_run, 1):
            print(f"\n[{i}/{total}] {page.rel} ...", flush=True)
            try:
                times[str(page.rel)] = execute(page, parameters, timeout)
            except ExecutionFailed as failure:
                print(failure, file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            on_done(page, times[str(page.rel)])
            print(f"[{i}/{total}] {page.rel}: {times[str(page.rel)]:.1f} s", flush=True)
        return times
    # Kernels are processes of their own either way; spawn keeps each worker free of this one's
    # imports. Cell outputs are not echoed: two chapters' lines would interleave.
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        print(f"\nexecuting {total} notebooks, {jobs} at a time", flush=True)
        futures = {pool.submit(execute, page, parameters, timeout, False): page for page in to_run}
        failed = None
        for future in concurrent.futures.as_completed(futures):
            page = futures[future]
            try:
                times[str(page.rel)] = future.result()
            except ExecutionFailed as failure:
                print(failure, file=sys.stderr, flush=True)
                if failed is None:
                    failed = page
                    for other in futures:
                        other.cancel()
                    print(f"stopping: {page.rel} failed; waiting for the notebooks already running",
                          file=sys.stderr, flush=True)
                continue
            except concurrent.futures.CancelledError:
                continue
            on_done(page, times[str(page.rel)])
            print(f"[{len(times)}/{total}] {page.rel}: {times[str(page.rel)]:.1f} s", flush=True)
        if failed is not None:
            raise SystemExit(1)
    return times


def source_cell_index(executed: Path, index: int) -> int:
    """The index in the source notebook of cell ``index`` of its executed copy (papermill inserts
    an ``injected-parameters`` cell)."""
    import nbformat

    try:
        cells = nbformat.read(executed, as_version=4).cells[:index]
    except Exception:  # the copy is unreadable: report the executed index
        return index
    return index - sum("injected-parameters" in c.metadata.get("tags", []) for c in cells)


def hide_default_parameters(path: Path) -> None:
    """Tag the notebook's own ``parameters`` cell ``remove-cell`` in an executed copy, and fold
    away (``hide-cell``) the cell papermill adds after it with the values actually used (tagged
    ``injected-parameters``): a reader can unfold it to see how the page was made."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells):
        return
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        elif "injected-parameters" in tags and "hide-cell" not in tags:
            cell.metadata["tags"] = [*tags, "hide-cell"]
    nbformat.write(nb, path)


def stage_mathjax() -> None:
    entry = MATHJAX_SRC / "tex-chtml.js"
    if not entry.is_file():
        raise SystemExit(f"error: {entry.relative_to(ROOT)} is missing. MathJax comes from the npm "
                         "registry: run `make setup` (or `npm ci`) in the project root.")
    if MATHJAX_DST.exists():
        shutil.rmtree(MATHJAX_DST)
    shutil.copytree(MATHJAX_SRC, MATHJAX_DST,
                    ignore=lambda d, names: [n for n in names
                                             if Path(d) == MATHJAX_SRC and n in MATHJAX_UNUSED])


def stage_book_files(pages: list[Page]) -> None:
    STAGE.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES + BOOK_EXTRAS:
        src, dst = ROOT / name, STAGE / name
        if src.is_dir():
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
        elif src.is_file():
            shutil.copy2(src, dst)
    for page in pages:
        if not page.is_notebook:
            dst = STAGE / page.rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(page.path, dst)
    stage_mathjax()


def build_html(keep_going: bool = True) -> None:
    for stale in (BUILD / "html", BUILD / ".doctrees"):
        if stale.exists():
            shutil.rmtree(stale)
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(STAGE.relative_to(ROOT)),
           "--path-output", ".", "-W", "-n"] + (["--keep-going"] if keep_going else [])
    print(f"\n$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: jupyter-book failed (exit {result.returncode}) after {elapsed:.0f} s; "
                         "warnings count as errors (-W), see the messages above")
    index = BUILD / "html" / "index.html"
    if not index.is_file():
        raise SystemExit(f"error: jupyter-book succeeded but {index.relative_to(ROOT)} is missing")
    print(f"HTML built in {elapsed:.0f} s: {index.relative_to(ROOT)}", flush=True)


def select(pages: list[Page], chapters: list[str] | None) -> list[Page]:
    """Notebooks named by ``--chapters`` (a prefix of the file name: ``01`` or ``01_clustering``)."""
    notebooks = [p for p in pages if p.is_notebook]
    if not chapters:
        return notebooks
    chosen = [p for p in notebooks if any(p.stem.startswith(c) or p.file == c for c in chapters)]
    unknown = [c for c in chapters if not any(p.stem.startswith(c) or p.file == c for p in notebooks)]
    if unknown:
        raise SystemExit(f"error: --chapters {unknown} match no notebook in _toc.yml; "
                         f"notebooks are {[p.stem for p in notebooks]}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="quick",
                        help="experiment profile passed to every chapter (quick, ci, cpu, paper)")
    parser.add_argument("--data-root", default="",
                        help="data root passed to every chapter (empty: $DDM_DATA_ROOT, else data/)")
    parser.add_argument("--dataset", default="",
                        help="data set passed to every chapter instead of the profile's own "
                             "(e.g. cifar10-jpeg); records then go to results/<profile>/<chapter>.<dataset>.json")
    parser.add_argument("--record", action="store_true",
                        help="chapters write their headline numbers to results/<profile>/")
    parser.add_argument("--chapters", nargs="+", metavar="NAME",
                        help="execute only these notebooks (file-name prefixes, e.g. 01 03); the "
                             "others reuse their executed copies in _build/src")
    parser.add_argument("--skip-execute", action="store_true",
                        help="execute nothing; build from the executed copies in _build/src")
    parser.add_argument("--timeout", type=int, default=None,
                        help="per-cell execution timeout in seconds (default: 1800 for quick and "
                             "ci, none for cpu and paper; 0 or less: none)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks executed side by side (default: 2 for quick and ci, else 1)")
    parser.add_argument("--no-html", action="store_true", help="execute only; skip jupyter-book")
    args = parser.parse_args(argv)
    jobs = DEFAULT_JOBS.get(args.profile, 1) if args.jobs is None else args.jobs
    if jobs < 1:
        raise SystemExit(f"error: --jobs must be at least 1, got {jobs}")

    data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
    timeout = DEFAULT_TIMEOUT.get(args.profile, None) if args.timeout is None else args.timeout
    timeout = timeout if timeout and timeout > 0 else None
    parameters = {"profile": args.profile, "data_root": data_root, "record": args.record}
    if args.dataset:
        # Only then: the chapters' own default (None: the profile's data set) stays untouched.
        parameters["dataset"] = args.dataset
    # Chapters import the project's package whatever the kernel's working directory.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

    pages = toc_pages()
    notebooks = [p for p in pages if p.is_notebook]
    for page in notebooks:
        check_source_notebook(page.path)
    to_run = [] if args.skip_execute else select(pages, args.chapters)

    manifest = load_manifest()
    print(f"Book: {len(pages)} pages, {len(notebooks)} notebooks; executing {len(to_run)} with "
          f"profile={args.profile!r} data_root={data_root!r} dataset={args.dataset or 'default'!r} "
          f"record={args.record} timeout={timeout or 'none'} jobs={jobs}", flush=True)
    # A run that fails leaves no claim of a good copy behind for the notebooks it was to execute.
    for page in to_run:
        manifest.pop(str(page.rel), None)
    save_manifest(manifest)

    def record_done(page: Page, seconds: float) -> None:
        manifest[str(page.rel)] = {
            **parameters, "source_sha256": sha256(page.path), "seconds": round(seconds, 1),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        save_manifest(manifest)

    started = time.perf_counter()
    times = execute_all(to_run, parameters, timeout, jobs, record_done)
    wall = time.perf_counter() - started

    # Notebooks not executed in this run: reuse executed copies, or leave the page out.
    kept, dropped = [], []
    for page in notebooks:
        if str(page.rel) in times:
            kept.append(page)
            continue
        entry = manifest.get(str(page.rel))
        if entry is None or not (STAGE / page.rel).is_file():
            dropped.append(page)
            continue
        kept.append(page)
        notes = []
        if entry.get("source_sha256") != sha256(page.path):
            notes.append("the source changed since")
        if entry.get("profile") != args.profile:
            notes.append(f"made with profile {entry.get('profile')!r}")
        print(f"reusing the executed copy of {page.rel}" + (f" (WARNING: {'; '.join(notes)})" if notes else ""))
    if dropped:
        raise SystemExit("error: no executed copy of " + ", ".join(str(p.rel) for p in dropped) +
                         "; execute them (drop --skip-execute, or add them to --chapters)")

    if times:
        width = max(len(k) for k in times)
        print("\nWall time per notebook:")
        for name in (str(p.rel) for p in to_run if str(p.rel) in times):
            seconds = times[name]
            print(f"  {name:<{width}}  {seconds:8.1f} s")
        print(f"  {'total':<{width}}  {sum(times.values()):8.1f} s"
              + (f" in {wall:.1f} s of wall time, {jobs} at a time" if jobs > 1 else ""))

    # What the reader will see: no warnings, raw dicts, long floats, uncaptioned figures or
    # visible wiring code (tools/check_outputs.py).
    sys.path.insert(0, str(ROOT / "tools"))
    from check_outputs import check_notebook

    problems = [p for page in kept for p in check_notebook(STAGE / page.rel)]
    for problem in problems:
        print(f"output check: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(f"error: {len(problems)} output problem(s) in the executed chapters (see above)")

    if args.no_html:
        return 0
    stage_book_files(pages)
    build_html()
    return 0


if __name__ == "__main__":
    sys.exit(main())
