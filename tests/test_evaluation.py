"""The evaluation protocol on planted ground truth: a method that predicts the exact effects
must score perfectly, the noise-floor row must appear, and Eq. 10 must use the located cluster."""

import numpy as np
import torch

from ddm.attribution import margin_direction
from ddm.evaluation import GroundTruth, comparison_table, effect_scale
from ddm.metrics import dist1


def _planted_truth(n=6, k=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, classes, generator=g) * 3
    labels = target.argmax(1)
    exact = target[None] + 0.5 * torch.randn(k, n, classes, generator=g)
    noise = exact + 0.1 * torch.randn(k, n, classes, generator=g)
    return GroundTruth(torch.arange(n), labels, target, margin_direction(target, labels), exact,
                       {1: noise}, {1: target.clone()})


def test_perfect_method_scores_one_and_rows_are_complete():
    truth = _planted_truth()
    exact_effects = truth.exact_effects()
    reversed_effects = -exact_effects
    table = comparison_table({"perfect": exact_effects, "reversed": reversed_effects}, truth)
    assert np.isclose(table.loc["perfect", "Spearman vs exact"], 1.0)
    assert table.loc["perfect", "top-1 agreement"] == 1.0
    assert np.isclose(table.loc["reversed", "Spearman vs exact"], -1.0)
    assert any(name.startswith("Noise floor") for name in table.index)
    assert "Exact retrain itself (upper bound)" in table.index


def test_dist1_is_taken_at_the_located_cluster():
    truth = _planted_truth()
    effects = truth.exact_effects()
    table = comparison_table({"m": effects}, truth)
    located = effects.argmax(1)
    expected = dist1(truth.exact_logits[torch.as_tensor(located), torch.arange(len(located))],
                     truth.target_logits).mean() * 100
    assert np.isclose(table.loc["m", "Dist1 x100"], float(expected), rtol=1e-5)


def test_effect_scale_counts_flips():
    truth = _planted_truth()
    scale = effect_scale(truth)
    flips = (truth.exact_logits.argmax(-1) != truth.target_logits.argmax(-1)[None]).float().mean() * 100
    assert np.isclose(scale["predictions flipped by one cluster (%)"], float(flips))
    assert scale["mean |margin change| from order seed 1"] == 0.0  # planted: same logits as the target
