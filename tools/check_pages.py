#!/usr/bin/env python
"""Open the built book in headless Chromium and check what a reader would see.

    python tools/check_pages.py                    # index + every chapter notebook in _toc.yml
    python tools/check_pages.py --page notebooks/01_clustering

For the index page and each chapter page: Chromium loads the page from disk (``--dump-dom``, after
scripts ran), and the check asserts that

- the page has a title, and MathJax is loaded from a file inside the book (never a CDN) and, where
  the page has maths, actually typeset it (``mjx-container`` elements);
- every ``<img>`` points to a file that exists, and a chapter shows at least one figure;
- no executed cell left an error traceback in the page.

Every built HTML file is also scanned for a script or stylesheet fetched from another host, and
for the string ``cdn``. Screenshots go to ``_build/screenshots/<page>.png``. Exit status 1, with
one line per problem, when anything fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--hide-scrollbars",
]
VIRTUAL_TIME_MS = 20000  # lets deferred scripts (MathJax) finish before the DOM is dumped


class PageParser(HTMLParser):
    """Collects the few things the checks look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self._in_title = False
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.images: list[str] = []
        self.mjx = 0  # typeset formulas
        self.math = 0  # formulas in the source (span/div class "math")
        self.tracebacks = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and "stylesheet" in a.get("rel", "").split():
            self.stylesheets.append(a.get("href", ""))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "mjx-container":
            self.mjx += 1
        if "math" in classes and tag in ("span", "div"):
            self.math += 1
        if "traceback" in classes:
            self.tracebacks += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def is_remote(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https") or url.startswith("//")


def local_target(page: Path, url: str) -> Path:
    """The file a relative (or file://) URL on ``page`` points to."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    return Path(path) if parts.scheme == "file" else (page.parent / path).resolve()


def ensure_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("chromium is missing: installing Debian's package (apt-get install chromium)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)
        found = shutil.which("chromium")
        if found:
            return found
    raise SystemExit("error: headless Chromium is needed: `apt-get install chromium` (Debian)")


def chromium(binary: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ddm-chromium-") as profile_dir:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def chapter_pages() -> list[str]:
    """Notebook pages of _toc.yml, as paths without suffix (``notebooks/01_clustering``)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from build_book import toc_pages  # noqa: PLC0415  (the same reader the build uses)

    return [p.file for p in toc_pages() if p.is_notebook]


def check_page(binary: str, name: str, page: Path, chapter: bool) -> list[str]:
    problems: list[str] = []
    where = page.relative_to(ROOT)
    if not page.is_file():
        return [f"{where}: missing (did `make book` run?)"]
    run = chromium(binary, "--dump-dom", page.as_uri())
    if run.returncode != 0 or "<html" not in run.stdout:
        return [f"{where}: Chromium could not load the page (exit {run.returncode}): "
                f"{run.stderr.strip()[-500:]}"]
    dom = parse(run.stdout)
    # index.html is a redirect to the root page; Chromium follows it, so resolve relative to the
    # page that was really shown.
    shown = page
    if name == "index" and (HTML / "intro.html").is_file() and "intro.html" in page.read_text():
        shown = HTML / "intro.html"

    if not dom.title.strip():
        problems.append(f"{where}: no <title> (the page did not load)")
    mathjax = [s for s in dom.scripts if "mathjax" in s.lower() or "tex-chtml" in s]
    if not mathjax and dom.math:
        problems.append(f"{where}: has {dom.math} formulas but no MathJax script")
    for src in mathjax:
        if is_remote(src):
            problems.append(f"{where}: MathJax is loaded from another host: {src}")
        elif not local_target(shown, src).is_file():
            problems.append(f"{where}: MathJax script {src} does not exist in the book")
    if dom.math and not dom.mjx:
        problems.append(f"{where}: {dom.math} formulas but none typeset (MathJax did not run)")

    figures = 0
    for src in dom.images:
        if src.startswith("data:image/"):
            figures += 1
            continue
        if is_remote(src):
            problems.append(f"{where}: image from another host: {src}")
            continue
        target = local_target(shown, src)
        if not target.is_file():
            problems.append(f"{where}: <img src={src!r}> points to a missing file")
        elif "_static" not in target.relative_to(HTML).parts[:1]:
            figures += 1  # not a theme logo or icon
    if chapter and figures == 0:
        problems.append(f"{where}: no figure in the chapter")
    if dom.tracebacks:
        problems.append(f"{where}: {dom.tracebacks} error traceback(s) in cell outputs")

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{name.replace('/', '__')}.png"
    run = chromium(binary, "--window-size=1280,2400", f"--screenshot={shot}", page.as_uri())
    if run.returncode != 0 or not shot.is_file():
        problems.append(f"{where}: screenshot failed (exit {run.returncode})")
    status = "ok" if not problems else "FAILED"
    print(f"{status:6} {where}: title {dom.title.strip()[:50]!r}, {len(dom.images)} images "
          f"({figures} figures), {dom.mjx}/{dom.math} formulas typeset, screenshot "
          f"{shot.relative_to(ROOT)}", flush=True)
    return problems


def scan_remote_assets() -> list[str]:
    """Scripts or stylesheets from another host, or any mention of a CDN, in the built HTML."""
    problems = []
    for html in sorted(HTML.rglob("*.html")):
        text = html.read_text(errors="replace")
        dom = parse(text)
        where = html.relative_to(ROOT)
        for url in dom.scripts + dom.stylesheets:
            if is_remote(url):
                problems.append(f"{where}: loads {url} from another host")
        if re.search(r"cdn", text, re.IGNORECASE):
            problems.append(f"{where}: mentions 'cdn'")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", action="append", metavar="PATH",
                        help="chapter page(s) to check, e.g. notebooks/01_clustering "
                             "(default: every notebook in _toc.yml)")
    args = parser.parse_args(argv)

    if not (HTML / "index.html").is_file():
        raise SystemExit(f"error: {(HTML / 'index.html').relative_to(ROOT)} is missing: run `make book` first")
    binary = ensure_chromium()
    pages = [("index", HTML / "index.html", False)]
    pages += [(p, HTML / f"{p}.html", True) for p in (args.page or chapter_pages())]
    problems = scan_remote_assets()
    for name, path, chapter in pages:
        problems += check_page(binary, name, path, chapter)
    if problems:
        print(f"\n{len(problems)} problem(s) in the built book:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"All {len(pages)} pages load, with local MathJax and existing figures; "
          f"screenshots in {SHOTS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
