"""ddm.book helpers, and the book's sources: table of contents, configuration, notebooks."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ddm.book import comparison_table, format_number, profile_banner, profiles_table
from ddm.config import PROFILES, get_profile

ROOT = Path(__file__).resolve().parent.parent


def load_tool(name: str):
    """Import a script from tools/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# --- profile_banner -------------------------------------------------------------------------

@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_banner_names_the_run(profile: str) -> None:
    config = get_profile(profile)
    text = profile_banner(config, "/somewhere/data")
    assert f"`{profile}`" in text
    assert f"tau = {config.train.epochs} epochs" in text
    assert f"width {config.model.width}" in text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert re.search(r"\d+ torch thread", text)
    assert "comes from this run" in text
    assert "\n" not in text  # one markdown paragraph


def test_banner_sizes_and_data_root() -> None:
    ci = get_profile("ci")
    text = profile_banner(ci.to_dict(), "/somewhere/data")  # a dict works as well as the dataclass
    assert "MNIST" in text and "`/somewhere/data`" in text
    assert "100 training and 50 test images per class" in text
    assert f"K = 10 x {ci.clusters.clusters_per_class} = {10 * ci.clusters.clusters_per_class}" in text
    quick = profile_banner(get_profile("quick"))
    assert "digits" in quick and "bundled with scikit-learn" in quick and "all training" in quick


def test_banner_data_root_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDM_DATA_ROOT", "/from/env")
    assert "`/from/env`" in profile_banner(get_profile("ci"), None)


def test_banner_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        profile_banner(42, None)


# --- profiles_table -------------------------------------------------------------------------

def test_profiles_table_has_one_row_per_profile() -> None:
    table = profiles_table()
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == list(PROFILES)
    for name in PROFILES:
        config = get_profile(name)
        row = table.loc[name]
        assert row["clusters / class (C)"] == config.clusters.clusters_per_class
        assert row["epochs (tau)"] == config.train.epochs
        assert row["distill steps"] == config.distill.steps
        assert row["width"] == config.model.width and row["depth"] == config.model.depth
    assert table.loc["quick", "data set"].startswith("scikit-learn digits")
    assert table.loc["paper", "device"] == "cuda"


# --- comparison_table -----------------------------------------------------------------------

def test_comparison_table_columns_and_blanks() -> None:
    table = comparison_table(
        [
            {"quantity": "Dist1 x100", "this_run": 10.234, "paper": 10.8},
            {"quantity": "Spearman", "recorded": 0.25, "note": "K = 100"},
            {"quantity": "top-1", "this_run": None, "recorded": float("nan"), "paper": "-"},
        ],
        this_profile="quick", recorded_profile="cpu", paper_label="paper (Table 1)",
    )
    assert list(table.columns) == ["ours (this run, quick)", "ours (recorded, profile cpu)",
                                   "paper (Table 1)", "note"]
    assert list(table.index) == ["Dist1 x100", "Spearman", "top-1"]
    assert table.loc["Dist1 x100"].tolist() == ["10.2", "", "10.8", ""]
    assert table.loc["Spearman"].tolist() == ["", "0.250", "", "K = 100"]
    # nothing invented: unmeasured cells are blank, the paper's own dash is kept as printed
    assert table.loc["top-1"].tolist() == ["", "", "-", ""]


def test_comparison_table_default_headers_and_no_note() -> None:
    table = comparison_table([{"quantity": "acc", "this_run": 95.71, "paper": 95.7}])
    assert list(table.columns) == ["ours (this run)", "ours (recorded: none)", "paper"]
    assert table.loc["acc"].tolist() == ["95.7", "", "95.7"]


def test_comparison_table_refuses_typos_and_unlabelled_records() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        comparison_table([{"quantity": "x", "paper_value": 1.0}])
    with pytest.raises(ValueError, match="quantity"):
        comparison_table([{"this_run": 1.0}])
    with pytest.raises(ValueError, match="recorded_profile"):
        comparison_table([{"quantity": "x", "recorded": 1.0}])


def test_comparison_table_with_one_recorded_column_per_run() -> None:
    table = comparison_table(
        [{"quantity": "acc", "this_run": 90.0, "rec_mnist": 93.8, "rec_cifar": 41.0, "paper": 99.2}],
        this_profile="ci", recorded_columns={"rec_mnist": "ours (cpu, MNIST)", "rec_cifar": "ours (cpu, CIFAR-10)"},
    )
    assert list(table.columns) == ["ours (this run, ci)", "ours (cpu, MNIST)", "ours (cpu, CIFAR-10)", "paper"]
    assert table.loc["acc"].tolist() == ["90.0", "93.8", "41.0", "99.2"]
    with pytest.raises(ValueError, match="unknown keys"):  # the single column is gone
        comparison_table([{"quantity": "x", "recorded": 1.0}], recorded_columns={"r": "R"})
    with pytest.raises(ValueError, match="reuse"):
        comparison_table([{"quantity": "x"}], recorded_columns={"paper": "P"})


@pytest.mark.parametrize("value, text", [
    (95.7, "95.7"), (0.73, "0.730"), (1234.5, "1234"), (3, "3"), (0, "0"), (0.0, "0"),
    (1e-5, "1.00e-05"), (-0.05, "-0.0500"), (0.0045, "0.0045"), (0.00012, "1.20e-04"), (None, ""), (float("nan"), ""), ("n/a", "n/a"),
])
def test_format_number(value, text: str) -> None:
    assert format_number(value) == text


# --- the book's sources ---------------------------------------------------------------------

def test_toc_pages_exist_in_order() -> None:
    build_book = load_tool("build_book")
    pages = build_book.toc_pages()
    assert pages[0].file == "intro" and pages[0].path.name == "intro.md"
    notebooks = [p.file for p in pages if p.is_notebook]
    assert notebooks[:4] == ["notebooks/01_clustering", "notebooks/02_reverse_matching",
                             "notebooks/03_online_attribution", "notebooks/04_unlearning"]


def test_toc_reader_walks_parts_and_sections(tmp_path: Path) -> None:
    build_book = load_tool("build_book")
    build_book.ROOT = tmp_path  # Page.rel is relative to ROOT
    for name in ("intro.md", "a.ipynb", "b.md", "c.ipynb"):
        (tmp_path / name).write_text("{}")
    toc = {"format": "jb-book", "root": "intro",
           "parts": [{"caption": "P", "chapters": [{"file": "a", "sections": [{"file": "b"}]}]},
                     {"chapters": [{"file": "c"}]}]}
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc))
    assert [p.file for p in build_book.toc_pages(tmp_path / "_toc.yml")] == ["intro", "a", "b", "c"]
    (tmp_path / "c.ipynb").unlink()
    with pytest.raises(SystemExit, match="lists 'c'"):
        build_book.toc_pages(tmp_path / "_toc.yml")


def test_chapter_selection() -> None:
    build_book = load_tool("build_book")
    pages = build_book.toc_pages()
    assert [p.stem for p in build_book.select(pages, ["01", "03"])] == \
        ["01_clustering", "03_online_attribution"]
    with pytest.raises(SystemExit, match="match no notebook"):
        build_book.select(pages, ["99"])


def test_source_notebooks_are_clean_and_parametrised() -> None:
    """What papermill needs (a 'parameters' cell with the three parameters), and no outputs."""
    build_book = load_tool("build_book")
    for page in build_book.toc_pages():
        if not page.is_notebook:
            continue
        build_book.check_source_notebook(page.path)  # exits on outputs or a missing parameters cell
        nb = json.loads(page.path.read_text())
        params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        source = "".join(params[0]["source"])
        for name in ("profile", "data_root", "dataset", "overrides", "record"):
            assert re.search(rf"^{name}\s*=", source, re.M), f"{page.rel}: no {name} parameter"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_text_has_no_control_characters(path: Path) -> None:
    """A generator that wrote "\\theta" or "\\bar\\rho" into a Python string without escaping its
    backslashes leaves a tab, a backspace or a carriage return in the page, and MathJax shows
    "heta" or "ho" instead of the symbol; chapters outside _toc.yml are checked too."""
    for index, cell in enumerate(json.loads(path.read_text())["cells"]):
        source = "".join(cell["source"])
        bad = sorted({repr(ch) for ch in source if ord(ch) < 32 and ch != "\n"})
        assert not bad, f"{path.name}, cell {index}: control characters {', '.join(bad)}"


def test_source_notebooks_show_no_wiring_code() -> None:
    """A reader sees at most a few lines of code per cell: the calls they would adapt. Everything
    else is folded away (hide-input / hide-cell) or removed, and no cell builds a dict of numbers."""
    check_outputs = load_tool("check_outputs")
    build_book = load_tool("build_book")
    for page in build_book.toc_pages():
        if not page.is_notebook:
            continue
        nb = json.loads(page.path.read_text())
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            tags = set(cell.get("metadata", {}).get("tags", []))
            source = "".join(cell["source"])
            lines = [line for line in source.splitlines() if line.strip()]
            shown_in_full = tags & (check_outputs.HIDING_TAGS | {check_outputs.READER_CODE_TAG})
            assert shown_in_full or len(lines) <= check_outputs.MAX_VISIBLE_LINES, \
                f"{page.rel}, cell {index}: {len(lines)} visible lines of code"
            assert not re.search(r"^numbers\s*=\s*\{", source, re.M), f"{page.rel}, cell {index}: a numbers dict"
            assert ".iloc[" not in source, f"{page.rel}, cell {index}: a table indexed by position"
            if "parameters" in tags:
                assert "hide-cell" in tags, f"{page.rel}: the parameters cell is not folded away"


def test_config_builds_from_executed_notebooks_with_local_mathjax() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert "Distilled Datamodel with Reverse Gradient Matching" in config["author"]
    sphinx = config["sphinx"]["config"]
    assert "://" not in sphinx["mathjax_path"] and sphinx["mathjax_path"].endswith("tex-chtml.js")
    assert sphinx["html_extra_path"] == ["_vendor"]
    assert "cdn" not in (ROOT / "_config.yml").read_text().lower()


def test_mathjax_is_pinned_in_package_files() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    assert re.fullmatch(r"3\.\d+\.\d+", package["dependencies"]["mathjax"])
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/mathjax"]["version"] == package["dependencies"]["mathjax"]


def test_requirements_are_exact_pins() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    pins = [line for line in lines if line]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.+]+", p) for p in pins), pins
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(pins), "environment.yml's pip section differs from requirements.txt"


def test_page_checker_parses_what_it_checks() -> None:
    check_pages = load_tool("check_pages")
    dom = check_pages.parse(
        '<html><head><title>T</title><script src="_static/../mathjax/tex-chtml.js?v=1"></script>'
        '<link rel="stylesheet" href="https://cdn.example/x.css"></head><body>'
        '<span class="math notranslate">x</span><mjx-container></mjx-container>'
        '<img src="../_images/a.png"><div class="output traceback">Error</div></body></html>')
    assert dom.title == "T" and dom.math == 1 and dom.mjx == 1 and dom.tracebacks == 1
    assert dom.images == ["../_images/a.png"]
    assert check_pages.is_remote(dom.stylesheets[0]) and not check_pages.is_remote(dom.scripts[0])
    assert check_pages.local_target(Path("/b/html/x/p.html"), "../_images/a.png") == Path("/b/html/_images/a.png")


def test_settings_table_is_generated_from_the_paper_and_the_profiles() -> None:
    from ddm import book, paper
    from ddm.config import PROFILES, get_profile

    table = book.settings_table()
    profiles = [r for r in table.index if r.startswith("profile ")]
    assert [r.split()[1] for r in profiles] == list(PROFILES)
    cpu = next(r for r in profiles if r.startswith("profile cpu "))
    assert table.loc[cpu, "network learning rate"] == f"{get_profile('cpu').train.lr:g}"
    assert table.loc[cpu, "training epochs (tau)"] == str(get_profile("cpu").train.epochs)
    mnist = next(r for r in table.index if r.startswith("paper, Table 5: MNIST, ConvNet"))
    assert table.loc[mnist, "network learning rate"] == \
        f"{paper.TABLE5[('MNIST', 'ConvNet / AlexNet / ResNet')]['lr_net']:g}"
    notes = {line.split("**")[1]: line for line in book.settings_notes().splitlines()}
    # the paper's own conflict is named where it is, and only there
    assert "Sec. 4.1 gives 10" in notes["synthetic-image learning rate"]
    assert "conflicts" not in notes["step length s (Algorithm 1)"]
    assert "gradient distance" not in notes  # every profile uses the paper's cosine
    # the paper profile keeps Table 5's MNIST network rate: it is not listed as departing from it
    departs = notes["network learning rate"].split("differ from the paper's row for their data set:")[-1]
    assert "cpu 0.05" in departs and "paper" not in departs
