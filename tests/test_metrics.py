"""Evaluation metrics (ddm.metrics, Eq. 10) and correlation scores against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddm.metrics import (bootstrap_ci, dist1, dist2, dist3, linear_datamodeling_score, margins,
                         rowwise_spearman, top1_agreement)

# Logits with softmaxes that are easy to write: log-probabilities give the probabilities back.
UNLEARNED = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
TARGET = torch.log(torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.1, 0.8]]))


def test_dist1_squared_distance_of_probabilities() -> None:
    # Point 0: (0.25)^2 + (0.25)^2 + 0 = 0.125; point 1: identical outputs.
    assert dist1(UNLEARNED, TARGET).tolist() == pytest.approx([0.125, 0.0], abs=1e-6)


def test_dist2_cross_entropy_on_true_label() -> None:
    labels = torch.tensor([1, 2])
    assert dist2(UNLEARNED, labels).tolist() == pytest.approx([-math.log(0.25), -math.log(0.8)], abs=1e-6)


def test_dist3_inverse_of_one_plus_dist1() -> None:
    assert dist3(UNLEARNED, TARGET).tolist() == pytest.approx([1 / 1.125, 1.0], abs=1e-6)


def test_margins_along_directions() -> None:
    logits = torch.tensor([[[2.0, 0.5, 1.0]], [[0.0, 3.0, 1.0]]])  # (M=2, N=1, L=3)
    d = torch.tensor([[1.0, 0.0, -1.0]])
    assert margins(logits, d).tolist() == [[1.0], [-1.0]]


def test_rowwise_spearman_hand_case_and_constant_row() -> None:
    predicted = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 3.0, 2.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    actual = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    rho = rowwise_spearman(predicted, actual)
    # Row 2: ranks (1,3,2,4) vs (1,2,3,4): d^2 = 0+1+1+0 = 2, rho = 1 - 6*2/(4*15) = 0.8.
    assert rho[:3].tolist() == pytest.approx([1.0, -1.0, 0.8])
    assert math.isnan(rho[3])
    assert math.isnan(rowwise_spearman(actual[:1], predicted[3:])[0])  # constant on either side


def test_linear_datamodeling_score_is_mean_spearman_per_test_point() -> None:
    generator = np.random.default_rng(0)
    actual = generator.normal(size=(12, 5))           # (M masks, N test points)
    predicted = actual + generator.normal(size=(12, 5))
    expected = np.mean([stats.spearmanr(predicted[:, j], actual[:, j]).statistic for j in range(5)])
    assert linear_datamodeling_score(predicted, actual) == pytest.approx(expected)
    assert linear_datamodeling_score(actual, actual) == pytest.approx(1.0)
    assert linear_datamodeling_score(predicted, actual) != pytest.approx(
        float(np.mean(rowwise_spearman(predicted, actual))))  # columns, not rows


def test_top1_agreement() -> None:
    predicted = np.array([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.1, 0.2]])
    actual = np.array([[0.0, 1.0, 0.5], [0.1, 0.9, 0.0], [0.0, 0.0, 3.0]])
    assert top1_agreement(predicted, actual) == pytest.approx(2 / 3)


def test_bootstrap_ci_brackets_the_mean_and_drops_nans() -> None:
    values = np.array([0.1, 0.2, 0.3, 0.4, np.nan, 0.5])
    low, high = bootstrap_ci(values, seed=0, resamples=500)
    assert low < 0.3 < high and 0.1 <= low and high <= 0.5
    assert bootstrap_ci(values, seed=0, resamples=500) == (low, high)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([1.0, np.nan])))


def test_output_distance_is_mean_squared_softmax_distance_over_test_points() -> None:
    from ddm.metrics import output_distance

    # Two test points: (0.125 + 0.0) / 2 as in the Dist1 case above.
    assert float(output_distance(UNLEARNED, TARGET)) == pytest.approx(0.0625, abs=1e-6)
    # Stacked models (M=2) against one reference broadcast: one distance per model.
    stacked = torch.stack([UNLEARNED, TARGET])
    assert output_distance(stacked, TARGET[None]).tolist() == pytest.approx([0.0625, 0.0], abs=1e-6)
    # By hand from logits: softmax([0, log 3]) = (0.25, 0.75) vs (0.5, 0.5): 2 * 0.25^2 = 0.125.
    a = torch.tensor([[0.0, math.log(3.0)]])
    b = torch.tensor([[1.0, 1.0]])
    assert float(output_distance(a, b)) == pytest.approx(0.125, abs=1e-6)
