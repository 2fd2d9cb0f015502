"""The scale study (ddm.scale, chapter 10): the plateau rule on hand-computed losses, the chosen
target as the probe's prefix, both protocols on tiny digits, and the verdict on planted numbers."""

from __future__ import annotations

import pytest
import torch

from ddm import evaluation, scale
from ddm.data import DataError
from ddm.chapters import base, scale as chapter
from ddm.chapters.base import RunNumbers
from ddm.variants import DDM_SOFT, PAPER_DDM

from fixtures_core import one_thread, single_thread  # noqa: F401

TINY = {"data.test_per_class": 10, "model.width": 8, "train.lr": 0.05, "clusters.clusters_per_class": 2,
        "distill.steps": 6, "distill.step_length": 1, "online.finetune_steps": 3, "eval.n_test_points": 8,
        "eval.lds_masks": 4}
TINY_SCALE = scale.ScaleConfig(full_sizes=(30,), located_sizes=(40,), max_epochs=5)   # sizes of ALL_SIZES


# ------------------------------------------------------------------------------------------ the plateau rule
def test_plateau_rule_on_hand_computed_losses() -> None:
    # drops per epoch over the last three: e4 0.333, e5 0.183, e6 0.09, e7 0.0267, e8 0.0133
    losses = [2.0, 1.5, 1.2, 1.0, 0.95, 0.93, 0.92, 0.91]
    assert scale.plateau_epochs(losses[:7]) == (7, False)       # 0.0267 is not below 0.025: the cap
    assert scale.plateau_epochs(losses) == (8, True)
    assert scale.plateau_epochs(losses, drop=0.1) == (6, True)
    assert scale.plateau_epochs([1.0, 1.0, 1.0, 1.0], window=3) == (4, True)
    assert scale.plateau_epochs([3.0, 2.0, 1.0], window=3) == (3, False)   # too short to judge


def test_scale_config_refuses_what_cannot_run() -> None:
    with pytest.raises(ValueError, match="both protocols"):
        scale.ScaleConfig(full_sizes=(10, 20), located_sizes=(20,), max_epochs=8)
    with pytest.raises(ValueError, match="positive integers"):
        scale.ScaleConfig(full_sizes=(0,), located_sizes=(), max_epochs=8)
    with pytest.raises(ValueError, match="more than 3 epochs"):
        scale.ScaleConfig(full_sizes=(10,), located_sizes=(), max_epochs=3)
    with pytest.raises(ValueError, match="choose one of"):
        scale.scale_config("laptop")
    for profile in ("quick", "ci", "cpu", "paper"):
        assert scale.scale_config(profile).sizes == tuple(sorted(scale.scale_config(profile).sizes))


# ------------------------------------------------------------------------------------------ measurement
@pytest.fixture(scope="module")
def base_experiment(tmp_path_factory):
    with one_thread():
        return base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))


def test_the_chosen_target_is_the_probes_prefix(base_experiment) -> None:
    """The docstring's claim: epoch orders do not depend on the total, so the target trained for
    the chosen e epochs is bit for bit the probe's checkpoint e."""
    with one_thread():
        sized = scale.sized_target(base_experiment, 12, 5)
        probe = scale.resized(base_experiment, 12, 5).target()
        target = sized.experiment.target()
    assert sized.experiment.config.train.epochs == sized.epochs == len(target.losses)
    assert len(sized.probe_losses) == 5
    assert sized.probe_losses[:sized.epochs] == tuple(float(v) for v in target.losses)
    for name, value in target.final.items():
        assert torch.equal(value, probe.checkpoints[sized.epochs][name]), name
    assert len(sized.experiment.train) == 12 * 10


def test_a_size_larger_than_a_class_is_refused(base_experiment) -> None:
    with pytest.raises(ValueError, match="per class|per_class|only"):
        scale.resized(base_experiment, 10_000, 4)


@pytest.fixture(scope="module")
def result(base_experiment):
    with one_thread():
        return chapter.run(base_experiment, TINY_SCALE)


def test_full_protocol_measures_every_method_against_exact_retraining(result) -> None:
    full, located = result.points
    assert (full.per_class, full.protocol, located.per_class, located.protocol) == (30, scale.FULL, 40, scale.LOCATED)
    methods = {*scale.METHODS, evaluation.NOISE_FLOOR}
    assert set(full.spearman) == methods
    assert set(full.lds) >= methods | {evaluation.EXACT, evaluation.DDM_W}
    assert set(full.dist1_x100) >= methods | {evaluation.EXACT}
    assert all(-1 <= v <= 1 for v in full.spearman.values())
    K = 20
    assert full.retrains == 2 * K + 1 + 4
    for key, (low, high) in full.intervals.items():
        assert low <= full.spearman[key] <= high, key
    # The best single pick bounds every method's Dist1 from above.
    assert all(v <= full.dist1_x100_best + 1e-9 for v in full.dist1_x100.values())


def test_located_protocol_retrains_only_the_located_clusters(result) -> None:
    located = result.points[1]
    assert located.spearman == {} and located.lds == {}
    assert set(located.dist1_x100) == set(scale.METHODS)
    assert located.dist1_x100_order is not None and located.dist1_x100_best is None
    assert 1 < located.retrains <= len(scale.METHODS) * 8 + 1


def test_headlines_exist_for_the_measured_sizes_only(result) -> None:
    numbers = result.headline_numbers()
    assert numbers["spearman_ddm_n30"] is not None and numbers["spearman_ddm_soft_n30"] is not None
    assert numbers["spearman_ddm_n40"] is None and numbers["dist1_x100_ddm_n40"] is not None
    assert numbers["accuracy_n30"] is not None and numbers["epochs_n40"] is not None
    assert all(numbers[f"accuracy_n{n}"] is None for n in chapter.ALL_SIZES if n not in (30, 40))
    assert result.skipped_sizes == ""
    assert result.spearman_ddm_n30 == pytest.approx(result.points[0].spearman[PAPER_DDM])
    assert result.calibration_ddm_soft_n30 == pytest.approx(result.points[0].calibration[DDM_SOFT])


def test_sizes_the_data_cannot_afford_are_skipped_and_named(base_experiment) -> None:
    """Digits have about 131 training images in the smallest class: 5,000 per class is skipped,
    with the reason; a study where no size fits is an error naming the fix."""
    with one_thread():
        run = scale.measure(base_experiment, scale.ScaleConfig(full_sizes=(30,), located_sizes=(5000,), max_epochs=5))
    assert [p.per_class for p in run.points] == [30] and list(run.skipped) == [5000]
    assert "per_class=5000" in run.skipped[5000]
    with pytest.raises(DataError, match="smaller sizes"):
        scale.measure(base_experiment, scale.ScaleConfig(full_sizes=(5000,), located_sizes=(), max_epochs=5))
    assert "too few images per class: 5000/class" in _reading(skipped_sizes="5000/class (...)")


def test_a_size_without_headline_fields_is_refused(base_experiment) -> None:
    with pytest.raises(ValueError, match="headline fields for"):
        chapter.run(base_experiment, scale.ScaleConfig(full_sizes=(12,), located_sizes=(), max_epochs=5))


def test_tables_and_figure_come_from_the_headline_numbers(result) -> None:
    tables = chapter.size_tables(result.numbers())
    assert list(tables["targets"].index) == ["30/class", "40/class"]
    assert tables["spearman"].loc["40/class"].eq("").all()          # the Dist1 protocol has no Spearman
    assert tables["dist1"].loc["40/class", chapter.NAMES["ddm"]] != ""
    fig = chapter.curve_figure([result.numbers()], chapter.provenance(result))
    assert len(fig.axes) == 3


# ------------------------------------------------------------------------------------------ verdict
def _reading(**values) -> str:
    unknown = set(values) - set(chapter.Result.headline_labels())
    assert not unknown, unknown
    return "\n".join(chapter._reading(RunNumbers(values, "cpu", "mnist", recorded=True)))


def _size(n: int, ddm: float, floor: float) -> dict:
    return {f"train_images_n{n}": 10 * n, f"accuracy_n{n}": 95.0, f"spearman_ddm_n{n}": ddm,
            f"spearman_noise_n{n}": floor, f"spearman_random_n{n}": 0.0, f"spearman_ddm_soft_n{n}": 0.1,
            f"spearman_tracin_n{n}": 0.1}


@pytest.mark.parametrize("large, words", [(0.25, "closes in on the noise floor"),
                                          (-0.1, "stays as far from the noise floor"),
                                          (-0.3, "falls further behind the noise floor")])
def test_trend_words_follow_the_gap(large: float, words: str) -> None:
    text = _reading(**_size(100, -0.1, 0.35), **_size(200, large, 0.35))
    assert words in text and "95.7%" in text    # the paper's MNIST accuracy beside ours


def test_the_trend_names_its_sampling_uncertainty() -> None:
    values = {**_size(100, -0.1, 0.35), **_size(200, 0.25, 0.35), "test_points": 20}
    values.update(spearman_ddm_low_n100=-0.2, spearman_ddm_high_n100=0.0, spearman_ddm_low_n200=0.1,
                  spearman_ddm_high_n200=0.4)
    assert "20 test points" in _reading(**values) and "about 0.15 either side" in _reading(**values)


def test_ddm_beside_random_choice_words() -> None:
    assert "indistinguishable from random choice" in _reading(**_size(100, 0.03, 0.3))
    assert "below random choice" in _reading(**_size(100, -0.2, 0.3))


def _located(n: int, ddm: float, tracin: float = 1.5) -> dict:
    return {f"train_images_n{n}": 10 * n, f"accuracy_n{n}": 95.0, f"dist1_x100_ddm_n{n}": ddm,
            f"dist1_x100_random_n{n}": 2.0, f"dist1_x100_tracin_n{n}": 2.0 * tracin, f"dist1_x100_ddm_soft_n{n}": 2.0}


@pytest.mark.parametrize("large, ratio, words", [(3.0, "1.5", "gains on random choice"),
                                                 (2.1, "1.1", "keeps the same distance"),
                                                 (1.0, "0.50", "loses ground to random choice")])
def test_the_dist1_trend_reads_every_size_against_random(large: float, ratio: str, words: str) -> None:
    """With one full-protocol size the Spearman trend cannot be read; Dist1 of DDM's pick over a
    random pick still can, from the smallest size to the largest (2.0 / 2.0 = 1 to large / 2.0); 2.1 / 2.0 is within RATIO_BAND of 1."""
    text = _reading(**{**_size(100, -0.1, 0.35), **_located(100, 2.0), **_located(500, large)})
    assert "Trend: from" not in text and words in text
    assert f"1.0 times as far as deleting a random cluster at 100/class, and {ratio} times at 500/class" in text
    assert "TracIn-style's located cluster: 1.5 and 1.5 times" in text


def test_no_dist1_trend_from_a_single_size() -> None:
    assert "Trend over every size" not in _reading(**{**_size(100, -0.1, 0.35), **_located(100, 2.0)})


def test_the_page_names_each_protocols_sizes() -> None:
    both = scale.ScaleConfig(full_sizes=(100,), located_sizes=(200, 500), max_epochs=12)
    assert scale.describe(both) == ("This profile measures 100 training images per class with the full protocol and "
                                    "200, 500 with the Dist1 protocol; targets train for at most 12 epochs.")
    located = scale.ScaleConfig(full_sizes=(), located_sizes=(100, 200), max_epochs=12)
    assert scale.describe(located) == ("This profile measures 100, 200 training images per class with the Dist1 "
                                       "protocol; targets train for at most 12 epochs.")
