"""Chapter 03 (online attribution): its measurement on tiny digits, the paper's numbers, and every
verdict threshold on planted runs."""

from __future__ import annotations


import numpy as np
import pytest

from ddm import evaluation, paper
from ddm.chapters import base, attribution as chapter
from ddm.variants import PAPER_DDM

from fixtures_core import one_thread, single_thread  # noqa: F401

TINY = {"data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 4,
        "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 20, "distill.step_length": 1,
        "online.finetune_steps": 5, "eval.n_test_points": 6, "eval.lds_masks": 6}


def _run(**values) -> base.RunNumbers:
    """A planted run: DDM clearly beats random and TracIn, nothing near a threshold unless asked."""
    numbers = dict(num_clusters=100, test_points=20,
                   spearman_ddm=0.5, spearman_random=0.0, spearman_tracin=0.2, spearman_noise=0.9,
                   spearman_ddm_soft=0.5, spearman_ddm_slow=0.5,
                   dist1_x100_ddm=10.0, dist1_x100_random=2.0, dist1_x100_best=20.0,
                   lds_ddm_w=0.5, lds_exact=0.8,
                   hierarchical_speedup=4.0, hierarchical_finetune_ratio=5.0, hierarchical_agreement_pct=90.0,
                   online_seconds=3.0, exact_retrain_seconds=600.0,
                   mean_abs_effect=0.5, mean_abs_order_change=0.1, flipped_pct=2.0, calibration_ddm=1.0)
    numbers.update(values)
    return base.RunNumbers(numbers, "cpu", "mnist", True)


def _text(**values) -> str:
    return "\n".join(chapter._reading(_run(**values)))


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> chapter.Result:
    with one_thread():
        exp = base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))
        return chapter.run(exp)


# ------------------------------------------------------------------------------------------ run
def test_run_on_tiny_digits_fills_every_field_from_its_tables(result) -> None:
    assert result.num_clusters == 20 and result.test_points == 6
    assert set(result.headline_numbers()) == set(chapter.Result.headline_labels())
    measured = {k for k, v in result.headline_numbers().items() if v is None}
    assert not measured, f"not measured: {sorted(measured)}"
    table = result.comparison
    assert result.spearman_ddm == pytest.approx(table.loc[chapter.LABELS[PAPER_DDM], evaluation.SPEARMAN])
    assert result.dist1_x100_random == pytest.approx(table.loc[chapter.LABELS[evaluation.RANDOM], evaluation.DIST1])
    assert result.spearman_noise == pytest.approx(table.loc[chapter.LABELS[evaluation.NOISE_FLOOR], evaluation.SPEARMAN])
    # every method's effects are (N, K); the exact row ranks perfectly and is the Dist1 of its own pick
    assert all(e.shape == (6, 20) for e in result.effects.values())
    assert table.loc[chapter.LABELS[evaluation.EXACT], evaluation.SPEARMAN] == pytest.approx(1.0)
    assert result.dist1_x100_exact <= result.dist1_x100_best + 1e-9
    assert result.dist1_x100_ddm <= result.dist1_x100_best + 1e-9
    assert result.calibration_ddm == pytest.approx(
        np.abs(result.effects[PAPER_DDM]).mean() / np.abs(result.exact_effects).mean(), rel=1e-5)
    assert result.hierarchical_finetune_ratio == pytest.approx(20 / (10 + 2))
    assert result.heat_ddm.shape == result.heat_exact.shape == result.heat_batch.shape == (10, 2)
    assert result.heat_ddm.ravel().tolist() == pytest.approx(result.effects[PAPER_DDM][0].tolist())
    assert list(result.lds.index)[0] == evaluation.LABELS[evaluation.DDM_W]
    assert result.lds_ddm_w == pytest.approx(result.lds["LDS (Spearman over masks)"].iloc[0])
    assert -1 <= result.lds_exact <= 1 and 0 <= result.hierarchical_agreement_pct <= 100
    # the verdict reads this run
    assert "this run" in chapter.verdict(result)


def test_tables_show_words_not_field_names(result) -> None:
    beside = base.beside_paper(result, chapter.paper_values)
    beyond = base.beyond_paper(result, chapter.paper_values)
    assert "Dist1 x100, DDM (Alg. 1)" in beside.index and "Spearman with exact, TracIn-style" in beyond.index
    assert not set(beside.index) & set(beyond.index)
    assert beside.loc["Dist3, DDM (Alg. 1)", "note"] == chapter.DIST3_NOTE


# ------------------------------------------------------------------------------------------ paper values
@pytest.mark.parametrize("key", ["mnist", "cifar10", "cifar100"])
def test_paper_values_are_headline_fields_from_table1(key: str) -> None:
    values = chapter.paper_values(key)
    assert set(values) <= set(chapter.Result.headline_labels())
    assert values["dist1_x100_ddm"] == paper.TABLE1["DDM-full"][key][0]
    assert values["dist3_ddm_match"] == paper.TABLE1["DDM-match"][key][2]
    assert values["dist2_random"] == paper.TABLE1["Random Select"][key][1]
    assert values.get("hierarchical_speedup") == paper.HIERARCHICAL_SPEEDUP.get(key)
    assert values["num_clusters"] == (1000 if key == "cifar100" else 100)


def test_no_paper_values_for_data_the_paper_has_no_table1_column_for() -> None:
    assert chapter.paper_values("tiny-imagenet") == {}
    assert chapter.paper_values("digits") == {}


def test_dist3_outside_its_range_is_read_from_the_paper_not_typed(monkeypatch) -> None:
    sentence = chapter.paper_dist3_sentence()
    assert "1.6 (DDM-full, CIFAR-100)" in sentence and "0.07 (Random Select, MNIST)" in sentence
    assert "0.92" not in sentence                  # CIFAR-10's 0.92 is possible
    table = {k: dict(v) for k, v in paper.TABLE1.items()}
    table["DDM-full"]["cifar10"] = (6.8, 0.81, 2.5)
    monkeypatch.setattr(paper, "TABLE1", table)
    assert "2.5 (DDM-full, CIFAR-10)" in chapter.paper_dist3_sentence()
    clean = {k: {d: (a, b, 0.5 if c is not None else None) for d, (a, b, c) in v.items()} for k, v in table.items()}
    monkeypatch.setattr(paper, "TABLE1", clean)
    assert chapter.paper_dist3_sentence() == "" and chapter.paper_dist3_outside_range() == []


def test_the_verdict_ends_with_the_dist3_flag(result) -> None:
    assert chapter.verdict(result).rstrip().endswith(chapter.paper_dist3_sentence())


# ------------------------------------------------------------------------------------------ thresholds
B = chapter.SPEARMAN_BAND


@pytest.mark.parametrize("ddm, words", [(-B - 0.01, "worse than random choice"),
                                        (-B + 0.01, "not distinguishable from random choice"),
                                        (B - 0.01, "not distinguishable from random choice"),
                                        (B + 0.01, "less than a TracIn-style sum")])
def test_ranking_against_random(ddm: float, words: str) -> None:
    assert words in _text(spearman_ddm=ddm, spearman_tracin=0.5)


@pytest.mark.parametrize("ddm, words", [(0.5 - B - 0.01, "less than a TracIn-style sum"),
                                        (0.5 - B + 0.01, "on par with the TracIn-style sum"),
                                        (0.5 + B + 0.01, "beats random choice and the simple baselines")])
def test_ranking_against_tracin(ddm: float, words: str) -> None:
    assert words in _text(spearman_ddm=ddm, spearman_tracin=0.5)


@pytest.mark.parametrize("floor, words", [(B, "no better than random"),
                                          (B + 0.01, "as well as exact retraining agrees with itself"),
                                          (0.5 + B - 0.01, "as well as exact retraining agrees with itself"),
                                          (0.5 + B + 0.01, "stays")])
def test_ranking_against_the_noise_floor(floor: float, words: str) -> None:
    assert words in _text(spearman_ddm=0.5, spearman_noise=floor)


@pytest.mark.parametrize("soft, words", [(0.5 + B + 0.01, "DDM+ (ours, soft labels) ranks better"),
                                         (0.5 + B - 0.01, "DDM+ (ours, soft labels) ranks no differently"),
                                         (0.5 - B - 0.01, "DDM+ (ours, soft labels) ranks worse")])
def test_soft_labels_against_ddm(soft: float, words: str) -> None:
    assert words in _text(spearman_ddm=0.5, spearman_ddm_soft=soft)


@pytest.mark.parametrize("slow, words", [(0.5 + B + 0.01, "DDM ranks better"), (0.5, "DDM ranks no differently")])
def test_a_tenth_of_the_rate_against_ddm(slow: float, words: str) -> None:
    assert f"At a tenth of the fine-tuning rate {words}" in _text(spearman_ddm=0.5, spearman_ddm_slow=slow)


@pytest.mark.parametrize("ratio, words", [(chapter.DIST1_CLEAR_RATIO + 0.01, "matter more than random ones"),
                                          (chapter.DIST1_CLEAR_RATIO - 0.01, "no more than random ones")])
def test_dist1_against_random(ratio: float, words: str) -> None:
    assert words in _text(dist1_x100_random=2.0, dist1_x100_ddm=2.0 * ratio)


@pytest.mark.parametrize("lds, words", [(chapter.LDS_SIGNAL + 0.01, "carries information"),
                                        (chapter.LDS_SIGNAL - 0.01, "does **not** predict")])
def test_lds_signal(lds: float, words: str) -> None:
    assert words in _text(lds_ddm_w=lds)


@pytest.mark.parametrize("agree, words", [(chapter.AGREE_MOSTLY_PCT, "keeps the answer"),
                                          (chapter.AGREE_MOSTLY_PCT - 1, "changes the answer")])
def test_hierarchy_agreement(agree: float, words: str) -> None:
    assert words in _text(hierarchical_agreement_pct=agree)


@pytest.mark.parametrize("speedup, slower", [(0.8, True), (1.2, False)])
def test_hierarchy_slower_than_flat_is_said(speedup: float, slower: bool) -> None:
    assert ("**slower** here" in _text(hierarchical_speedup=speedup)) is slower


@pytest.mark.parametrize("seconds, words", [(chapter.CACHED_SECONDS - 0.5, "came from the cache"),
                                            (chapter.CACHED_SECONDS + 0.5, "of exact retraining")])
def test_cost_when_the_retrains_were_cached(seconds: float, words: str) -> None:
    assert words in _text(exact_retrain_seconds=seconds)


@pytest.mark.parametrize("effect, words", [(0.09, "smaller than the retraining noise"),
                                           (0.11, "stands above the retraining noise")])
def test_effect_against_the_retraining_noise(effect: float, words: str) -> None:
    assert words in _text(mean_abs_effect=effect, mean_abs_order_change=0.1)


@pytest.mark.parametrize("c, words", [(chapter.CALIBRATION_FACTOR + 0.1, "far **more**"),
                                      (chapter.CALIBRATION_FACTOR - 0.1, "about as far"),
                                      (1 / chapter.CALIBRATION_FACTOR + 0.01, "about as far"),
                                      (1 / chapter.CALIBRATION_FACTOR - 0.01, "far **less**")])
def test_calibration_factor(c: float, words: str) -> None:
    assert words in _text(calibration_ddm=c)


def test_unmeasured_numbers_are_skipped() -> None:
    """A recorded run with only some numbers (e.g. no noise floor, no LDS) reads what it has."""
    text = _text(spearman_noise=None, lds_ddm_w=None, spearman_ddm_soft=None, mean_abs_order_change=None,
                 hierarchical_speedup=None)
    assert "Ranking clusters" in text and "another data order" not in text
    assert "Linear datamodel" not in text and "Hierarchy" not in text and "Effect size" not in text
    assert "DDM+" not in text and "Calibration" in text
    assert chapter._reading(base.RunNumbers({}, "cpu", "mnist", True)) == []


def test_verdict_reads_recorded_runs_too(result) -> None:
    text = chapter.verdict(result, [_run()])
    assert "this run" in text and "recorded" in text
