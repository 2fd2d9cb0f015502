"""ddm.chapters.base: typed results, the tables beside the paper, verdicts over every run."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ddm import datasets
from ddm.chapters import CHAPTERS, base, module_for
from ddm.config import get_profile
from ddm.results import record_results


@dataclass(frozen=True, kw_only=True)
class Toy(base.ChapterResult):
    spearman: float = base.headline("Spearman with exact retraining", digits=2)
    dist1: float = base.headline("Dist1 x100 of the located cluster", note="paper: K = 100")
    seconds: float | None = base.headline("online seconds", default=None)
    frame: pd.DataFrame = base.table("a table")
    extra: object = base.detail(default=None)


def _toy(**changes) -> Toy:
    values = dict(profile="quick", dataset="digits", spearman=np.float32(0.25), dist1=np.float64(3.14159),
                  seconds=float("nan"), frame=pd.DataFrame({"a": [1]}))
    values.update(changes)
    return Toy(**values)


def _paper(dataset: str) -> dict:
    return {"mnist": {"dist1": 10.8}, "cifar10": {"dist1": 6.8, "spearman": None}}.get(dataset, {})


def test_headline_fields_are_the_recorded_numbers() -> None:
    toy = _toy()
    assert Toy.headline_labels() == {"spearman": "Spearman with exact retraining",
                                     "dist1": "Dist1 x100 of the located cluster", "seconds": "online seconds"}
    numbers = toy.headline_numbers()
    assert numbers == {"spearman": 0.25, "dist1": 3.14159, "seconds": None}  # NaN: not measured
    assert all(type(v) in (float, type(None)) for v in numbers.values())
    with pytest.raises(FrozenInstanceError):
        toy.spearman = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="headline number"):
        _toy(spearman=[0.1]).headline_numbers()


def test_tables_split_what_the_paper_reports_from_what_we_add() -> None:
    recorded = [base.RunNumbers({"spearman": 0.1, "dist1": 0.02, "seconds": 9.0}, "cpu", "mnist", True),
                base.RunNumbers({"spearman": 0.2, "dist1": 0.3, "seconds": 8.0}, "cpu", "cifar10-jpeg", True)]
    beside = base.beside_paper(_toy(), _paper, recorded)
    assert list(beside.index) == ["Dist1 x100 of the located cluster"]
    assert list(beside.columns) == ["ours, this run (quick, scikit-learn digits (8x8))",
                                    "ours, recorded (cpu, MNIST)", "ours, recorded (cpu, CIFAR-10 (JPEG copy))",
                                    "paper, MNIST", "paper, CIFAR-10", "note"]
    assert beside.iloc[0].tolist() == ["3.14", "0.0200", "0.300", "10.8", "6.8", "paper: K = 100"]
    beyond = base.beyond_paper(_toy(), _paper, recorded)
    assert list(beyond.index) == ["Spearman with exact retraining", "online seconds"]
    assert beyond.loc["online seconds"].tolist() == ["", "9.00", "8.00"]  # blank: not measured
    assert not any(c.startswith("paper") for c in beyond.columns)


def test_data_the_paper_never_used_is_shown_beside_mnist() -> None:
    beside = base.beside_paper(_toy(), _paper)
    assert "paper, MNIST" in beside.columns and "paper, CIFAR-10" not in beside.columns


def test_verdict_reads_this_run_and_every_recorded_run() -> None:
    seen = []

    def reading(run: base.RunNumbers) -> list[str]:
        seen.append((run.profile, run.recorded, run["spearman"]))
        return [f"* rho {run['spearman']:.2f}"] if run.has("spearman") else []

    recorded = [base.RunNumbers({"spearman": -0.11}, "cpu", "mnist", True),
                base.RunNumbers({"spearman": None}, "cpu", "cifar10-jpeg", True)]
    text = base.verdict_for(reading, _toy(), recorded)
    assert seen == [("quick", False, 0.25), ("cpu", True, -0.11), ("cpu", True, None)]
    assert "**Profile `quick`, scikit-learn digits (8x8), this run.**" in text
    assert "**Profile `cpu`, MNIST, recorded.**\n\n* rho -0.11" in text
    assert "CIFAR-10" not in text  # a run with nothing to say gets no heading


def test_recorded_runs_come_from_the_slowest_other_profile(tmp_path: Path) -> None:
    for profile in ("ci", "cpu"):
        record_results(profile, "01_clustering", {"spearman": 0.5}, get_profile(profile), command="x", root=tmp_path)
    runs = base.recorded_runs("01_clustering", "quick", root=tmp_path)
    assert [(r.profile, r.dataset, r["spearman"], r.recorded) for r in runs] == [("cpu", "mnist", 0.5, True)]
    assert [r.profile for r in base.recorded_runs("01_clustering", "cpu", root=tmp_path)] == ["ci"]


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_chapter_module_has_the_same_shape(chapter: str) -> None:
    module = module_for(chapter)
    assert module.CHAPTER == chapter
    assert issubclass(module.Result, base.ChapterResult)
    assert callable(module.run) and callable(module.verdict)
    labels = module.Result.headline_labels()
    assert labels, "a chapter has headline numbers"
    for key in ("mnist", "cifar10", "cifar100", "tiny-imagenet"):
        unknown = set(module.paper_values(key)) - set(labels)
        assert not unknown, f"{chapter}: paper values for fields the Result does not have: {unknown}"


def test_unknown_chapter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown chapter"):
        module_for("99_nothing")
    assert module_for("03_online_attribution.cifar10-jpeg").CHAPTER == "03_online_attribution"


def test_a_chapters_own_profile_settings_apply_under_the_readers_and_are_named(tmp_path: Path) -> None:
    own = {"quick": datasets.ProfileSettings(overrides={"clusters.clusters_per_class": 2, "train.epochs": 3},
                                             reason="its protocol costs too much")}
    exp = base.open_experiment("quick", cache_root=tmp_path, overrides={"train.epochs": 4}, chapter_settings=own)
    assert exp.config.clusters.clusters_per_class == 2 and exp.config.train.epochs == 4   # the reader's wins
    assert "not all in effect" in base.chapter_settings_note(own, exp)
    exp = base.open_experiment("quick", cache_root=tmp_path, chapter_settings=own)
    note = base.chapter_settings_note(own, exp)
    assert "`clusters.clusters_per_class = 2`" in note and note.endswith("because its protocol costs too much.")
    plain = base.open_experiment("quick", cache_root=tmp_path)
    assert plain.config == get_profile("quick") and base.chapter_settings_note({}, plain) == ""
    assert "not all in effect" in base.chapter_settings_note(own, plain)   # a run without them says so
