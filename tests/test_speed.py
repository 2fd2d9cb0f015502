"""ddm.speed and chapter 07: the break-even on hand-computed cases, the distillation's parts
against a full distillation, every stage measured on a tiny digits experiment, and the verdict."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ddm import speed
from ddm.chapters import base, speed as chapter
from ddm.chapters.base import RunNumbers
from ddm.matching import distill_synset

from fixtures_core import one_thread, single_thread  # noqa: F401

TINY = {"data.train_per_class": 30, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
        "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 8, "distill.step_length": 1,
        "online.finetune_steps": 3, "eval.n_test_points": 4}


# ------------------------------------------------------------------------------------------ break-even
@pytest.mark.parametrize("distill, ddm, exact, expected", [
    (10.0, 0.1, 2.1, 5.0),        # 10 s repaid at 2 s saved per mask
    (0.0, 0.1, 1.0, 0.0),         # nothing to repay
    (10.0, 1.0, 1.0, None),       # a mask costs DDM as much as a retrain: never
    (10.0, 2.0, 1.0, None),
])
def test_break_even_by_hand(distill: float, ddm: float, exact: float, expected) -> None:
    assert speed.break_even(distill, ddm, exact) == (None if expected is None else pytest.approx(expected))


def test_sweep_point_totals_are_the_sum_of_their_parts() -> None:
    parts = speed.DistillationParts(real_gradients_seconds=2.0, step_seconds=0.5, final_seconds=1.0,
                                    real_checkpoints=3, steps=10)
    assert parts.seconds == pytest.approx(3 * 2.0 + 10 * 0.5 + 1.0)
    point = speed.SweepPoint(num_clusters=20, train_images=400, online_seconds=4.0, distillation=parts,
                             retrain_seconds=1.5)
    assert point.ddm_seconds == pytest.approx(12.0 + 4.0)
    assert point.exact_seconds == pytest.approx(30.0)


def test_measure_returns_the_result_and_a_positive_time() -> None:
    result, cost = speed.measure(lambda: sum(range(10_000)))
    assert result == sum(range(10_000)) and cost.seconds > 0 and cost.peak_mb >= 0


# ------------------------------------------------------------------------------------------ on digits
@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    with one_thread():
        return base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))


def test_distillation_parts_add_up_to_a_full_distillation(exp) -> None:
    """The sweep's derived distillation cost is of the size of a measured one (timing noise on a
    loaded CPU allows a factor of a few, a wrong formula would be off by the step count)."""
    with one_thread():
        trajectory = exp.target()
        clustering = exp.clusters()
        parts = speed.distillation_parts(exp, trajectory, clustering)
        config = dataclasses.replace(exp.config.distill, steps=40)
        _, cost = speed.measure(lambda: distill_synset(exp.new_model(), trajectory, exp.train.images,
                                                       exp.train.labels, clustering, exp.num_classes, config,
                                                       progress=False))
    derived = dataclasses.replace(parts, steps=40).seconds
    assert 0.25 < cost.seconds / derived < 4, (cost.seconds, derived)
    assert parts.real_checkpoints == len({t for t, _ in speed.checkpoint_pairs(
        trajectory.epochs, config.method, config.pairing, config.step_length)})


def test_run_measures_every_stage_and_both_sweeps(exp) -> None:
    with one_thread():
        result = chapter.run(exp, influence_methods=("if", "trak"))
    numbers = result.headline_numbers()
    for key in chapter.STAGES:
        assert numbers[f"seconds_{key}"] > 0 and numbers[f"peak_mb_{key}"] is not None
    assert numbers["seconds_if_if"] > 0 and numbers["seconds_if_lissa"] is None   # only what was asked
    grid = chapter.cluster_grid(exp)
    assert grid == [1, 3, 10]                     # 30 images per class: 2 images per cluster at most C = 15
    assert list(result.against_k.index) == [10 * c for c in sorted(set(grid) | {2})]
    assert len(result.against_n) == len(chapter.SIZE_FRACTIONS)
    assert result.seconds_exact_loo == pytest.approx(result.num_clusters * result.seconds_retrain)
    assert result.speedup_end_to_end == pytest.approx(result.seconds_exact_loo / result.seconds_ddm_end_to_end)
    # the recorded fields are exactly the headline fields, and the figures draw
    assert set(numbers) == set(chapter.Result.headline_labels())
    assert set(chapter.figures(result, "test")) == {"speed_against_k", "speed_against_n", "speed_reuse"}


# ------------------------------------------------------------------------------------------ verdict
def _run(profile: str = "cpu", **values) -> RunNumbers:
    return RunNumbers(values, profile, "mnist", recorded=True)


@pytest.mark.parametrize("speedup, words", [(25.0, "reaching the 20x"), (8.0, "short of the 20x")])
def test_verdict_names_the_target_at_the_cpu_profile(speedup: float, words: str) -> None:
    lines = "\n".join(chapter._reading(_run(num_clusters=100, speedup_end_to_end=speedup, seconds_ddm_end_to_end=10.0,
                                            seconds_exact_loo=10.0 * speedup)))
    assert words in lines


def test_verdict_without_a_break_even_says_never() -> None:
    lines = "\n".join(chapter._reading(_run("ci", num_clusters=30, speedup_end_to_end=0.5, seconds_ddm_end_to_end=2.0,
                                            seconds_exact_loo=1.0, seconds_distillation=1.9, seconds_retrain=0.03)))
    assert "never breaks even" in lines and "20x" not in lines
