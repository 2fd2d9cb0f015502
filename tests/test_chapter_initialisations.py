"""Chapter 11 (ddm.chapters.initialisations): three initialisations and a reseeded Kaiming target
on tiny digits, the likeness of their starts and attribution matrices, and the verdict's
thresholds on planted numbers."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from ddm import book
from ddm.chapters import initialisations as chapter
from ddm.chapters.base import RunNumbers

from fixtures_core import experiment, one_thread, single_thread  # noqa: F401


@pytest.fixture(scope="module")
def result(experiment):
    with one_thread():
        return chapter.run(experiment)


def test_run_measures_every_headline(result) -> None:
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = sorted(k for k, v in numbers.items() if v is None)
    assert not missing, f"not measured: {missing}"
    assert result.test_points == 8 and result.num_clusters == 20
    assert result.exact_retrains == 4 * 20 + 3 * 21
    for name, value in numbers.items():
        if name.startswith(("spearman_", "alike_")):
            assert -1 <= value <= 1, name


def test_each_target_starts_from_its_own_theta_0(experiment) -> None:
    starts = {arm: chapter.experiment_for(experiment, arm).initial_params() for arm in chapter.ARMS}
    for a, b in chapter.PAIRS:
        assert not torch.equal(starts[a]["features.0.weight"], starts[b]["features.0.weight"]), (a, b)
    again = chapter.experiment_for(experiment, "normal").initial_params()
    assert all(torch.equal(again[name], starts["normal"][name]) for name in again)


def test_the_schemes_rescale_one_draw_and_the_reseeded_start_is_new(result) -> None:
    """What the chapter's prose says of the starts: with one model seed the three schemes scale
    the same standard-normal draw per layer; the reseeded Kaiming start is another draw."""
    for a, b in chapter.INIT_PAIRS:
        assert getattr(result, f"start_cosine_{a}_{b}") == pytest.approx(1.0, abs=1e-5)
    assert abs(result.start_cosine_kaiming_kaiming_reseeded) < 0.3


def test_kaiming_is_the_profiles_own_target(experiment) -> None:
    """The profile's initialisation is Kaiming, so that run's retrains are chapter 03's (one store key)."""
    assert chapter.experiment_for(experiment, "kaiming").config == experiment.config


def test_the_reseeded_target_changes_only_the_start(experiment) -> None:
    config = chapter.experiment_for(experiment, chapter.RESEEDED).config
    assert config.model.seed == experiment.config.model.seed + chapter.RESEED_OFFSET
    assert config.model.init == "kaiming" and config.eval.noise_seeds == ()
    assert (config.train, config.distill, config.clusters) == (experiment.config.train, experiment.config.distill,
                                                               experiment.config.clusters)


def test_different_starts_give_different_ground_truths(result) -> None:
    exact = {arm: result.effects[arm]["exact"] for arm in chapter.ARMS}
    for a, b in chapter.PAIRS:
        assert not np.allclose(exact[a], exact[b]), (a, b)


def test_an_initialisation_is_perfectly_alike_with_itself(result) -> None:
    for grid in (result.likeness_ddm, result.likeness_exact):
        assert np.allclose(np.diag(grid.to_numpy()), 1.0)
        assert np.allclose(grid.to_numpy(), grid.to_numpy().T)
    effects = np.random.default_rng(0).normal(size=(5, 12))
    assert chapter.mean_likeness(effects, effects) == pytest.approx(1.0)
    assert chapter.mean_likeness(effects, -effects) == pytest.approx(-1.0)


def test_pair_headlines_are_the_grids_off_diagonal(result) -> None:
    for a, b in chapter.PAIRS:
        cell = result.likeness_ddm.loc[chapter.ARM_LABELS[a], chapter.ARM_LABELS[b]]
        assert getattr(result, f"alike_ddm_{a}_{b}") == pytest.approx(cell)
        cell = result.likeness_exact.loc[chapter.ARM_LABELS[a], chapter.ARM_LABELS[b]]
        assert getattr(result, f"alike_exact_{a}_{b}") == pytest.approx(cell)


def test_tables_and_figures_are_in_words(result) -> None:
    assert list(result.per_init.index) == [chapter.ARM_LABELS[a] for a in chapter.ARMS]
    assert "noise floor" in result.likeness.index[-1]
    for frame in (result.per_init, result.likeness):   # as the notebook shows them: blanks, never "nan"
        assert "nan" not in book.show_table(frame).to_string().lower().replace("mean", "")
    figures = chapter.figures(result, "profile quick · test")
    assert set(figures) == {"fig-init-heat-point", "fig-init-heat-batch", "fig-init-likeness"}
    for fig in figures.values():
        plt.close(fig)


# ------------------------------------------------------------------------------------------ verdict
def _run(profile: str = "cpu", dataset: str = "mnist", **values) -> RunNumbers:
    """A planted run: DDM alike across inits, as alike as the ground truth and as a new draw,
    beating random for every target, comparable targets, starts that are independent draws;
    nothing near a threshold unless asked."""
    numbers: dict = {"train_images": 2000}
    for arm in chapter.ARMS:
        numbers.update({f"spearman_ddm_{arm}": 0.5, f"spearman_random_{arm}": 0.0, f"accuracy_{arm}": 95.0})
    for init in chapter.INITS:
        numbers[f"spearman_noise_{init}"] = 0.6
    for a, b in chapter.PAIRS:
        numbers.update({f"alike_ddm_{a}_{b}": 0.7, f"alike_exact_{a}_{b}": 0.7, f"start_cosine_{a}_{b}": 0.0})
    numbers.update(values)
    unknown = set(numbers) - set(chapter.Result.headline_labels())
    assert not unknown, unknown
    return RunNumbers(numbers, profile, dataset, recorded=True)


def _reading(**values) -> str:
    return "\n".join(chapter._reading(_run(**values)))


def _pairs(whose: str, value: float) -> dict:
    """The same likeness for the three pairs of initialisations (not the reseeded pair)."""
    return {f"alike_{whose}_{a}_{b}": value for a, b in chapter.INIT_PAIRS}


@pytest.mark.parametrize("value, words", [(0.7, "the paper's picture of matching matrices reproduces"),
                                          (0.3, "they are **not** alike")])
def test_alike_is_read_at_the_named_threshold(value: float, words: str) -> None:
    assert words in _reading(**_pairs("ddm", value), **_pairs("exact", value))


@pytest.mark.parametrize("exact, words", [(0.3, "more alike than the ground truths"),
                                          (0.7, "as alike across initialisations as the ground truth"),
                                          (0.95, "DDM adds variation of its own")])
def test_ddm_likeness_is_read_beside_the_ground_truths(exact: float, words: str) -> None:
    assert words in _reading(**_pairs("ddm", 0.7), **_pairs("exact", exact))


@pytest.mark.parametrize("exact, words", [(0.3, "moves the ground truth **more** than the data order"),
                                          (0.62, "about as much as the data order"),
                                          (0.9, "less than the data order")])
def test_the_ground_truths_move_is_read_beside_the_noise_floor(exact: float, words: str) -> None:
    assert words in _reading(**_pairs("exact", exact))


def test_ddm_losing_to_random_everywhere_is_said() -> None:
    text = _reading(**{f"spearman_ddm_{a}": 0.02 for a in chapter.ARMS})
    assert "for 0 of 4 targets" in text and "alike in being wrong" in text


def test_ddm_plus_is_read_against_random_and_the_papers_ddm() -> None:
    plus = {f"spearman_plus_{a}": 0.6 for a in chapter.ARMS}
    plus[f"spearman_plus_{chapter.ARMS[0]}"] = 0.03
    text = _reading(**plus)
    assert f"DDM+ (ours, soft labels) reaches {chapter.ARM_LABELS[chapter.ARMS[0]]} +0.03" in text
    n = len(chapter.ARMS)
    assert f"above random choice by more than 0.05 for {n - 1} of {n} targets (" in text
    assert f"above the paper's DDM for {n - 1} (" in text
    assert "DDM+" not in _reading()


def test_ddm_working_under_some_initialisations_only_is_said() -> None:
    text = _reading(spearman_ddm_normal=0.0)
    assert "for 3 of 4 targets" in text and "comes and goes with the start" in text


@pytest.mark.parametrize("noise, below", [(0.6, True), (0.52, False)])
def test_ddm_below_every_noise_floor_is_said(noise: float, below: bool) -> None:
    text = _reading(**{f"spearman_noise_{i}": noise for i in chapter.INITS})
    assert ("stays below exact retraining's agreement with itself" in text) is below


@pytest.mark.parametrize("normal, words", [(80.0, "describes a different network"),
                                           (93.0, "comparable networks")])
def test_a_worse_trained_target_is_named(normal: float, words: str) -> None:
    text = _reading(accuracy_normal=normal)
    assert words in text
    if normal == 80.0:
        assert "Normal (ini-2) trains a network 15.0 points less accurate than the best" in text


def test_unmeasured_likeness_is_not_read() -> None:
    text = _reading(**{f"alike_ddm_{a}_{b}": None for a, b in chapter.PAIRS})
    assert "Fig. 8's claim" not in text and "A new random start" not in text
    assert "Each against its own exact retraining" in text


def test_runs_of_two_sizes_read_the_second_claim() -> None:
    small = _run("quick", "digits", train_images=1797, **_pairs("ddm", 0.8))
    large = _run("cpu", "mnist", train_images=2000, **_pairs("ddm", 0.4))
    text = chapter._growth([small, large])
    assert "drift apart (+0.80 to +0.40" in text and "differ in data set too" in text
    assert chapter._growth([small]) == ""


@pytest.mark.parametrize("cosine, words", [(1.0, "one random draw at three scales"),
                                           (0.1, "they are different random draws")])
def test_starts_that_are_one_draw_are_said(cosine: float, words: str) -> None:
    assert words in _reading(**{f"start_cosine_{a}_{b}": cosine for a, b in chapter.INIT_PAIRS})


@pytest.mark.parametrize("draw, words", [(0.2, "moves DDM's matrices **less** than a new draw"),
                                         (0.7, "about as much as a new draw"),
                                         (0.95, "more than a new draw")])
def test_the_scheme_is_read_beside_a_new_draw(draw: float, words: str) -> None:
    assert words in _reading(alike_ddm_kaiming_kaiming_reseeded=draw)


@pytest.mark.parametrize("scheme, said", [(0.7, True), (0.4, False)])
def test_robustness_to_the_start_is_questioned_only_when_the_schemes_look_alike(scheme: float, said: bool) -> None:
    text = _reading(**_pairs("ddm", scheme), alike_ddm_kaiming_kaiming_reseeded=0.1)
    assert "**less** than a new draw" in text
    assert ("says little about robustness to the start" in text) is said
