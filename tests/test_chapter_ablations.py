"""Chapter 09 (ddm.chapters.ablations): every ablation measured on tiny digits, choices made on
the choosing half of the test points only, and the verdict's thresholds on planted numbers."""

from __future__ import annotations

import numpy as np
import pytest

from ddm.book import format_number
from ddm.chapters import ablations as chapter, base
from ddm.chapters.base import RunNumbers

from fixtures_core import one_thread, single_thread  # noqa: F401

TINY = {"data.train_per_class": 30, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
        "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 6, "distill.step_length": 1,
        "online.finetune_steps": 3, "eval.n_test_points": 8}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    with one_thread():
        exp = base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))
        return chapter.run(exp)


def test_run_measures_every_ablation_and_reference(result) -> None:
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = sorted(k for k, v in numbers.items() if v is None)
    assert not missing, f"not measured: {missing}"
    assert result.test_points == 8 and result.selection_points == 4
    assert len(result.online_grid) == len(chapter.LR_FACTORS) * len(chapter.STEP_FACTORS)
    for name, value in numbers.items():
        if name.startswith(("spearman_", "heldout_")):
            assert -1 <= value <= 1, name


def test_the_online_settings_are_the_best_on_the_choosing_points(result) -> None:
    grid = result.online_grid["Spearman (choosing test points)"]
    best = grid.idxmax()
    assert best == (format_number(result.online_lr, 2), result.online_steps)


def test_ddm_plus_is_the_best_candidate_on_the_choosing_points(result) -> None:
    """DDM+ is chosen among the single changes (each with the profile's or retuned online
    settings): on the choosing points it ranks at least as well as every single change."""
    from ddm.metrics import rowwise_spearman

    exact = result.effects["exact"]
    rows = slice(0, result.selection_points)

    def choosing(key: str) -> float:
        return float(np.nanmean(rowwise_spearman(result.effects[key][rows], exact[rows])))
    assert all(choosing("plus") >= choosing(k) - 1e-12 for k in chapter.ABLATIONS)
    assert result.plus_description


# ------------------------------------------------------------------------------------------ verdict
def _reading(**values) -> str:
    unknown = set(values) - set(chapter.Result.headline_labels())
    assert not unknown, unknown
    return "\n".join(chapter._reading(RunNumbers(values, "cpu", "mnist", recorded=True)))


@pytest.mark.parametrize("plus, words", [(0.30, "the target of 60% is met"), (0.20, "short of the 60% target")])
def test_share_of_the_noise_floor(plus: float, words: str) -> None:
    text = _reading(heldout_paper=-0.1, heldout_plus=plus, heldout_tracin=0.1, heldout_noise=0.45,
                    plus_description="soft_labels=True")
    assert words in text


@pytest.mark.parametrize("plus, words", [(0.28, "matches or beats"), (0.20, "stays below")])
def test_against_the_better_reference(plus: float, words: str) -> None:
    text = _reading(heldout_paper=-0.1, heldout_plus=plus, heldout_tracin=0.25, heldout_if=0.30,
                    plus_description="x")
    assert f"DDM+ {words}" in text and "0.30" in text


@pytest.mark.parametrize("ceiling, words", [(0.15, "no change to the distillation alone can be expected"),
                                            (0.40, "a synset that imitated it well could reach")])
def test_the_real_cluster_ceiling_is_read_against_the_target(ceiling: float, words: str) -> None:
    text = _reading(heldout_paper=-0.1, heldout_plus=0.1, heldout_tracin=0.1, heldout_noise=0.5,
                    heldout_ascent=0.05, heldout_ascent_tuned=ceiling, plus_description="x")
    assert f"at {format_number(ceiling, 2)} at its best online settings ({format_number(0.05, 2)} at the profile's)" in text
    assert words in text and f"{format_number(100 * ceiling / 0.5, 2)}% of the noise floor" in text


def test_the_ceiling_is_real_ascent_at_its_best_online_settings(result) -> None:
    """The tuned ceiling ranks at least as well as the profile's on the choosing points (the grid
    holds the profile's settings), and is marked as missing from records made before it."""
    from ddm.metrics import rowwise_spearman

    exact, rows = result.effects["exact"], slice(0, result.selection_points)

    def choosing(key: str) -> float:
        return float(np.nanmean(rowwise_spearman(result.effects[key][rows], exact[rows])))
    assert choosing("ascent_tuned") >= choosing("ascent") - 1e-12
    assert {f"heldout_{k}" for k in chapter.CEILING} <= chapter.Result.not_yet_recorded()


def test_single_changes_are_ranked_by_their_gain() -> None:
    text = _reading(heldout_paper=-0.1, heldout_plus=0.2, heldout_tracin=0.1, heldout_soft=0.2, heldout_mse=-0.2,
                    heldout_ipc2=0.0, plus_description="x")
    assert text.index("+ soft labels +0.30") < text.index("2 synthetic images per cluster +0.10")


def test_a_variant_a_cluster_cannot_afford_is_skipped_and_said(tmp_path, monkeypatch) -> None:
    """More synthetic images per cluster than the smallest cluster has real ones: not run, and
    the table says why (k-means leaves single-image clusters on CIFAR-10 at K = 100)."""
    monkeypatch.setattr(chapter, "ABLATIONS", {"paper": ({}, {}), "ipc5": ({"ipc": 500}, {})})
    with one_thread():
        exp = base.open_experiment("quick", overrides=TINY, cache_root=tmp_path)
        result = chapter.run(exp)
    assert result.heldout_ipc5 is None and result.heldout_paper is not None
    assert any("not run: the smallest cluster has" in name for name in result.table.index)


@pytest.mark.parametrize("factor, words", [(min(chapter.LR_FACTORS), "an end of the range tried"),
                                           (1.0, "inside the range tried")])
def test_an_online_rate_at_the_end_of_the_grid_is_flagged(factor: float, words: str) -> None:
    text = _reading(heldout_paper=-0.1, heldout_plus=0.1, heldout_tracin=0.1, plus_description="x",
                    online_lr_factor=factor)
    assert words in text


def test_settings_in_words_never_print_long_floats(result) -> None:
    """The book refuses floats with more than four decimals on a page; DDM+'s description and the
    grid's index are printed as they are."""
    import re

    long_float = re.compile(r"\d+\.\d{5,}")
    assert not long_float.search(result.plus_description)
    assert not any(long_float.search(str(v)) for v in result.online_grid.index.get_level_values(0))
