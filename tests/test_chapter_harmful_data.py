"""Chapter 05 (ddm.chapters.harmful_data): the paper's Table 3 values, every verdict threshold on
both sides with planted numbers, and run() on a tiny digits experiment."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ddm.chapters import harmful_data as chapter
from ddm.chapters.base import RunNumbers
from ddm.config import get_profile
from ddm.experiment import Experiment

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401

HEADLINES = chapter.Result.headline_labels()


def planted(**values) -> RunNumbers:
    """A run with only the given headline numbers (the others not measured)."""
    unknown = set(values) - set(HEADLINES)
    assert not unknown, f"not headline fields: {unknown}"
    return RunNumbers(values, "cpu", "mnist", recorded=True)


def reading(**values) -> str:
    return "\n".join(chapter._reading(planted(**values)))


# ------------------------------------------------------------------------------------------ the paper
def test_paper_values_are_table3_rows_keyed_by_headline_fields() -> None:
    values = chapter.paper_values("mnist")
    assert set(values) <= set(HEADLINES)
    assert values["acc_target"] == 95.7
    assert values["acc_ddm_10"] == 95.9 and values["acc_random_50"] == 65.9
    assert set(values) == {"acc_target"} | {f"acc_{k}_{x}" for k in ("ddm", "random") for x in chapter.FRACTIONS}
    assert chapter.paper_values("cifar10") == {} and chapter.paper_values("cifar100") == {}


def test_paper_curves_for_mnist_and_unpaired_data_only() -> None:
    curves = chapter.paper_curves("digits")               # no paper column: MNIST is the nearest reference
    assert curves == chapter.paper_curves("mnist")
    assert curves[chapter.RANKING_LABELS["random"]] == {1: 95.8, 10: 92.8, 20: 74.6, 50: 65.9}
    assert set(curves) == {chapter.RANKING_LABELS["ddm"], chapter.RANKING_LABELS["random"]}
    assert chapter.paper_curves("cifar10-jpeg") == {}


# ------------------------------------------------------------------------------------------ verdict
def test_a_gap_must_exceed_the_noise_floor() -> None:
    # floor |95 - 94| = 1 point, no spread: DDM 1.5 points above random is clear ...
    clear = reading(acc_target=95.0, acc_noise_floor=94.0, acc_ddm_10=93.5, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly better than a random order at 1 of 1 shares (10%)" in clear
    assert "a floor of 1.0 points" in clear
    # ... a floor of 2 points swallows it
    within = reading(acc_target=95.0, acc_noise_floor=93.0, acc_ddm_10=93.5, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly better than a random order at 0 of 1 shares (none)" in within
    worse = reading(acc_target=95.0, acc_noise_floor=94.0, acc_ddm_10=90.0, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly worse at 1 (10%)" in worse


def test_a_gap_must_exceed_half_the_random_seeds_spread() -> None:
    # floor 0.2; spread 2.0 -> threshold 1.0: a 1.5-point gap is clear
    clear = reading(acc_target=95.0, acc_noise_floor=94.8, acc_ddm_20=80.0, acc_random_20=78.5, spread_random_20=2.0)
    assert "at 1 of 1 shares (20%)" in clear and "threshold 1.0" in clear
    # spread 4.0 -> threshold 2.0: the same gap is not
    within = reading(acc_target=95.0, acc_noise_floor=94.8, acc_ddm_20=80.0, acc_random_20=78.5, spread_random_20=4.0)
    assert "at 0 of 1 shares (none)" in within and "threshold 2.0" in within


def test_does_removing_one_percent_help_against_the_floor() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.5)          # floor 0.5
    assert "a gain beyond the noise floor" in reading(**common, acc_ddm_1=95.8)
    assert "a loss beyond the noise floor" in reading(**common, acc_ddm_1=94.0)
    assert "within the noise floor" in reading(**common, acc_ddm_1=95.3)
    assert "not judged" in reading(acc_target=95.0, acc_ddm_1=95.8)   # no second data order


def test_signal_check_and_both_ends_of_the_ranking() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.5, acc_random_10=90.0, spread_random_10=0.0)
    hurts = reading(**common, acc_ddm_helpful_10=85.0, acc_ddm_10=91.0)
    assert "hurt more than a random order: it does clearly at 1 of 1 shares (10%)" in hurts
    assert "both* ends" not in hurts
    no_signal = reading(**common, acc_ddm_helpful_10=89.8)
    assert "it does clearly at 0 of 1 shares (none)" in no_signal
    both = reading(**common, acc_ddm_helpful_10=85.0, acc_ddm_10=86.0)
    assert "At 10% *both* ends of DDM's ranking cost accuracy" in both


def test_a_class_counts_as_emptied_above_the_threshold() -> None:
    above = reading(class_share_ddm_10=chapter.CLASS_CROWDED + 1, class_share_ddm_20=chapter.CLASS_CROWDED - 1)
    assert f"more than {chapter.CLASS_CROWDED:g}% of one class at 1 of 2 shares (10%)" in above
    below = reading(class_share_ddm_10=chapter.CLASS_CROWDED - 1)
    assert "at 0 of 1 shares (none)" in below and "no class is emptied" in below


def test_verdict_copes_with_numbers_that_were_not_measured() -> None:
    assert chapter._reading(planted()) == []
    only_target = reading(acc_target=95.0)
    assert "no second data order" in only_target and "DDM vs random" not in only_target


# ------------------------------------------------------------------------------------------ run
TINY = get_profile("quick", **{
    "data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 4,
    "train.lr": 0.05, "clusters.clusters_per_class": 4, "distill.steps": 20, "distill.step_length": 1,
    "online.finetune_steps": 5, "eval.n_test_points": 10, "eval.workers": 1,
})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with one_thread():  # set up before the function-scoped single_thread fixture
        exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path_factory.mktemp("store"),
                                progress=False)
        return exp, chapter.run(exp, random_seeds=(0, 1))


def test_run_measures_every_headline_and_its_tables_agree(tiny) -> None:
    exp, result = tiny
    numbers = result.headline_numbers()
    assert all(numbers[name] is not None for name in HEADLINES), [n for n in HEADLINES if numbers[n] is None]
    for name, value in numbers.items():
        assert 0 <= value <= 100, name
    table = result.accuracy_table
    assert list(table.columns) == ["0% removed"] + [f"{x}% removed" for x in chapter.FRACTIONS]
    assert table.loc[chapter.RANKING_LABELS["ddm"], "10% removed"] == result.acc_ddm_10
    assert table.loc[chapter.RANKING_LABELS["exact_helpful"], "50% removed"] == result.acc_exact_helpful_50
    # the random row is the mean of the seeds, its spread their range
    seeds = result.curves[(result.curves["key"] == "random") & (result.curves["asked (%)"] == 20)]
    assert len(seeds) == 2
    assert result.acc_random_20 == pytest.approx(seeds["test accuracy (%)"].mean())
    assert result.spread_random_20 == pytest.approx(np.ptp(seeds["test accuracy (%)"]))
    # whole clusters: at least the share asked is removed, and more of a class than of the data
    for x in chapter.FRACTIONS:
        assert getattr(result, f"removed_ddm_{x}") >= x
        assert getattr(result, f"class_share_ddm_{x}") >= getattr(result, f"removed_ddm_{x}") - 1e-9
    assert len(result.removed_table) == len(chapter.RANKING_LABELS) - 1 + 2     # random: one row per seed
    assert chapter.verdict(result).startswith("**Profile `quick`")
