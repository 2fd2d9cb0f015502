"""The evaluation protocol (ddm.evaluation): planted ground truth, hand computations, and the
Eq. 8 fit, the LDS and hierarchical attribution on a tiny digits experiment.

A method that predicts the exact effects must score perfectly, the noise-floor row must appear,
Eq. 10 must use the located cluster; the TracIn baseline must equal its formula on a linear model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddm import evaluation
from ddm.attribution import (hierarchical_pick, leave_one_out_attribution,
                             margin_direction, margin_effects, predict_outputs)
from ddm.baselines import tracin_effects
from ddm.clustering import Clustering
from ddm.config import get_profile
from ddm.evaluation import GroundTruth, comparison_table, measure_effect_scale
from ddm.experiment import Experiment
from ddm.metrics import dist1, dist2, dist3, linear_datamodeling_score, margins
from ddm.online import leave_one_out_masks, random_masks
from ddm.training import Trajectory

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401


def _planted_truth(n=6, k=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, classes, generator=g) * 3
    labels = target.argmax(1)
    exact = target[None] + 0.5 * torch.randn(k, n, classes, generator=g)
    noise = exact + 0.1 * torch.randn(k, n, classes, generator=g)
    return GroundTruth(torch.arange(n), labels, target, margin_direction(target, labels), exact,
                       {1: noise}, {1: target.clone()})


# ------------------------------------------------------------------------------------------ planted truth
def test_perfect_method_scores_one_and_rows_are_complete():
    truth = _planted_truth()
    exact_effects = truth.exact_effects()
    table = comparison_table({"perfect": exact_effects, "reversed": -exact_effects}, truth)
    assert np.isclose(table.loc["perfect", evaluation.SPEARMAN], 1.0)
    assert table.loc["perfect", evaluation.TOP1] == 1.0
    assert np.isclose(table.loc["reversed", evaluation.SPEARMAN], -1.0)
    assert list(table.index)[-2:] == [evaluation.LABELS[evaluation.NOISE_FLOOR], evaluation.LABELS[evaluation.EXACT]]
    scores = evaluation.score_methods({"perfect": exact_effects}, truth)
    assert list(scores) == ["perfect", evaluation.NOISE_FLOOR, evaluation.EXACT]
    assert scores[evaluation.EXACT] == dataclasses.replace(scores["perfect"], interval=scores[evaluation.EXACT].interval)


def test_no_noise_floor_row_when_no_other_order_was_retrained():
    truth = dataclasses.replace(_planted_truth(), noise_logits={}, noise_full_logits={})
    table = comparison_table({"m": truth.exact_effects()}, truth, labels={"m": "method m"})
    assert list(table.index) == ["method m", evaluation.LABELS[evaluation.EXACT]]
    assert evaluation.DIST1_OTHER_ORDER not in table.columns


def test_located_metrics_take_eq10_at_the_located_and_least_influential_cluster():
    truth = _planted_truth()
    effects = np.random.default_rng(0).normal(size=(6, 5))
    n = torch.arange(6)
    top, least = torch.as_tensor(effects.argmax(1)), torch.as_tensor(np.abs(effects).argmin(1))
    got = evaluation.located_metrics(effects, truth, seed=1)
    assert got["dist1_x100"] == pytest.approx(float(dist1(truth.exact_logits[top, n], truth.target_logits).mean() * 100))
    assert got["dist2"] == pytest.approx(float(dist2(truth.exact_logits[top, n], truth.labels).mean()))
    assert got["dist3"] == pytest.approx(float(dist3(truth.exact_logits[least, n], truth.target_logits).mean()))
    assert got["dist1_x100_other_order"] == pytest.approx(
        float(dist1(truth.noise_logits[1][top, n], truth.target_logits).mean() * 100))
    assert "dist1_x100_other_order" not in evaluation.located_metrics(effects, truth)
    table = comparison_table({"m": effects}, truth)
    assert table.loc["m", evaluation.DIST1] == pytest.approx(got["dist1_x100"], rel=1e-6)


def test_best_dist1_is_an_upper_bound_reached_by_the_right_pick():
    truth = _planted_truth()
    per_cluster = dist1(truth.exact_logits, truth.target_logits[None]).T.numpy()   # (N, K)
    best = evaluation.best_dist1_x100(truth)
    assert best == pytest.approx(float(per_cluster.max(1).mean() * 100), rel=1e-6)
    # a method whose effects are each cluster's Dist1 picks the best cluster and reaches the bound
    assert evaluation.located_metrics(per_cluster, truth)["dist1_x100"] == pytest.approx(best, rel=1e-6)
    for seed in range(3):
        effects = np.random.default_rng(seed).normal(size=per_cluster.shape)
        assert evaluation.located_metrics(effects, truth)["dist1_x100"] <= best + 1e-9


def test_effect_scale_counts_flips():
    truth = _planted_truth()
    typed = measure_effect_scale(truth)
    flips = (truth.exact_logits.argmax(-1) != truth.target_logits.argmax(-1)[None]).float().mean() * 100
    assert typed.flipped_pct == pytest.approx(float(flips))
    assert typed.mean_abs_order_change[1] == 0.0  # planted: same logits as the target
    assert typed.mean_abs_effect == pytest.approx(float(np.abs(truth.exact_effects()).mean()))


def test_calibration_is_the_ratio_of_mean_absolute_effects():
    truth = _planted_truth()
    exact = truth.exact_effects()
    assert evaluation.calibration(3 * exact, truth) == pytest.approx(3.0)
    assert evaluation.calibration(-0.5 * exact, truth) == pytest.approx(0.5)


def test_class_by_cluster_groups_clusters_by_their_class_not_by_position():
    # K = 4 clusters of classes (1, 0, 1, 0): ids do not run class by class.
    clustering = Clustering(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 1, 0]), "test")
    grid = evaluation.class_by_cluster(np.array([10.0, 20.0, 30.0, 40.0]), clustering)
    assert grid.tolist() == [[20.0, 40.0], [10.0, 30.0]]


# ------------------------------------------------------------------------------------------ TracIn
def test_tracin_is_the_sum_over_checkpoints_of_lr_times_gradient_dot_products():
    """On a linear model, logits = W x + b, the CE gradient is (softmax(z) - onehot(y)) x^T for W
    and (softmax(z) - onehot(y)) for b: the effect is written out by hand with numpy."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 3)
    checkpoints = [{"weight": torch.randn(3, 4, generator=g), "bias": torch.randn(3, generator=g)} for _ in range(3)]
    trajectory = Trajectory(checkpoints, torch.zeros(2, 6, dtype=torch.long), torch.zeros(2), 0)
    train_x, train_y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    clustering = Clustering(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 2]), "test")
    test_x, test_y = torch.randn(2, 4, generator=g), torch.tensor([1, 2])
    lr = 0.1

    def grad(params, x, y):  # flattened (dW, db) of the CE loss of one example
        p = F.softmax(params["weight"] @ x + params["bias"], -1).numpy().astype(np.float64)
        residual = p - np.eye(3)[int(y)]
        return np.concatenate([np.outer(residual, x.numpy()).ravel(), residual])

    expected = np.zeros((2, 3))
    for params in checkpoints[:-1]:  # theta_0 .. theta_{tau-1}: the last checkpoint takes no step
        for n in range(2):
            g_test = grad(params, test_x[n], test_y[n])
            for k in range(3):
                g_cluster = sum(grad(params, train_x[i], train_y[i]) for i in clustering.members(k).tolist())
                expected[n, k] += lr * g_test @ g_cluster
    got = tracin_effects(model, trajectory, train_x, train_y, clustering, test_x, test_y, lr)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    # the final checkpoint is not used
    changed = Trajectory(checkpoints[:-1] + [{k: v + 5 for k, v in checkpoints[-1].items()}],
                         trajectory.epoch_orders, trajectory.losses, 0)
    np.testing.assert_allclose(tracin_effects(model, changed, train_x, train_y, clustering, test_x, test_y, lr), got)


# ------------------------------------------------------------------------------------------ tiny experiment
TINY = get_profile("quick", **{
    "data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 4,
    "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 20, "distill.step_length": 1,
    "online.finetune_steps": 5, "eval.n_test_points": 8, "eval.lds_masks": 8,
})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    with one_thread():
        exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path_factory.mktemp("store"), progress=False)
        clustering = exp.clusters()
        truth = evaluation.leave_one_out_ground_truth(exp, clustering)
        return {"exp": exp, "clustering": clustering, "truth": truth, "synset": exp.synset()}


def test_fit_attribution_is_eq8_over_the_perturbed_models(tiny) -> None:
    exp, synset, truth = tiny["exp"], tiny["synset"], tiny["truth"]
    K = tiny["clustering"].num_clusters
    x = exp.test.images[truth.test_index]
    masks = torch.cat([leave_one_out_masks(K), torch.ones(1, K, dtype=torch.bool)])
    W, b = evaluation.fit_attribution(exp, synset, x, masks)
    assert W.shape == (K, len(x), exp.num_classes) and b.shape == (len(x), exp.num_classes)
    # leave-one-out masks plus the full one: W_k = y(all) - y(without k), b = y(all) - sum_k W_k
    outputs = exp.perturbed_outputs(synset, masks, x)
    assert torch.allclose(W, leave_one_out_attribution(outputs[-1], outputs[:-1]), atol=1e-4)
    assert torch.allclose(outputs[-1], exp.target_logits(x), atol=1e-5)   # nothing deleted: the target


def test_lds_evaluation_against_a_hand_computation(tiny) -> None:
    exp, clustering, truth, synset = tiny["exp"], tiny["clustering"], tiny["truth"], tiny["synset"]
    K = clustering.num_clusters
    exact = truth.exact_effects()
    lds = evaluation.lds_evaluation(exp, synset, clustering, truth, {evaluation.EXACT: exact})
    assert list(lds.scores) == [evaluation.DDM_W, evaluation.EXACT]
    assert lds.perturbations == K + 1 and lds.lds_masks == TINY.eval.lds_masks
    # W is Eq. 8 on the same random masks
    online = TINY.online
    masks = random_masks(K, K + 1, online.delete_fraction, online.seed)
    x = exp.test.images[truth.test_index]
    W, b = evaluation.fit_attribution(exp, synset, x, masks)
    assert torch.allclose(lds.W, W, atol=1e-5) and torch.allclose(lds.b, b, atol=1e-5)
    # the masks retrained exactly, and what each model predicts for them
    test_masks = evaluation.lds_masks(exp, K)
    assert test_masks.shape == (TINY.eval.lds_masks, K)
    removal = [tuple(torch.nonzero(~m).flatten().tolist()) for m in test_masks]
    d = truth.directions[None]
    actual = margins(exp.exact_retrain_logits(removal, clustering)[:, truth.test_index], d).numpy()
    by_w = margins(predict_outputs(W.reshape(K, -1), b.reshape(-1), test_masks).reshape(len(test_masks), *b.shape), d)
    assert lds.scores[evaluation.DDM_W] == pytest.approx(linear_datamodeling_score(by_w.numpy(), actual))
    base = margins(truth.target_logits, truth.directions).numpy()
    additive = np.stack([base - exact[:, ~m.numpy()].sum(1) for m in test_masks])     # (M, N)
    assert lds.scores[evaluation.EXACT] == pytest.approx(linear_datamodeling_score(additive, actual))
    own = margins(exp.perturbed_outputs(synset, masks, x), d).numpy().ravel()
    in_sample = margins(predict_outputs(W.reshape(K, -1), b.reshape(-1), masks).reshape(len(masks), *b.shape), d)
    assert lds.in_sample_r == pytest.approx(float(np.corrcoef(in_sample.numpy().ravel(), own)[0, 1]), abs=1e-6)
    assert list(lds.table().columns)[-1] == "LDS (Spearman over masks)"


def test_hierarchical_vs_flat_picks_inside_the_class_chosen_first(tiny) -> None:
    exp, clustering, truth, synset = tiny["exp"], tiny["clustering"], tiny["truth"], tiny["synset"]
    class_synset = exp.synset(clusters=dataclasses.replace(exp.config.clusters, features="class"))
    result = evaluation.hierarchical_vs_flat(exp, synset, class_synset, clustering, truth)
    K, L = clustering.num_clusters, exp.num_classes
    C = K // L
    assert (result.finetunes_flat, result.finetunes_hier) == (K, L + C)
    # Flat: the argmax of DDM's leave-one-out effects, as computed for all test points at once.
    flat_effects, _ = evaluation.ddm_effects(exp, synset, truth)
    np.testing.assert_array_equal(result.picks_flat, flat_effects.argmax(1))
    # Hierarchical, by hand: the class-level effects choose the class, the flat effects of that
    # class's clusters (the same one-cluster fine-tunes) choose the cluster.
    x = exp.test.images[truth.test_index]
    class_out = exp.perturbed_outputs(class_synset, leave_one_out_masks(L), x)
    class_effects = margin_effects(truth.target_logits[None] - class_out, truth.directions)        # (N, L)
    chosen_class = class_effects.argmax(1)
    ids = {l: torch.nonzero(clustering.cluster_class == l).flatten() for l in range(L)}
    expected = [int(ids[int(l)][flat_effects[n, ids[int(l)].numpy()].argmax()]) for n, l in enumerate(chosen_class)]
    np.testing.assert_array_equal(result.picks_hier, expected)
    assert all(int(clustering.cluster_class[p]) == int(l) for p, l in zip(result.picks_hier, chosen_class))
    _, via_pick = hierarchical_pick(class_effects, {l: torch.as_tensor(flat_effects[:, v.numpy()]) for l, v in ids.items()}, ids)
    np.testing.assert_array_equal(result.picks_hier, via_pick.numpy())
    # the summary numbers are those of the picks
    assert result.agreement_pct == pytest.approx(float(np.mean(result.picks_flat == np.array(expected)) * 100))
    n = torch.arange(len(expected))
    assert result.dist1_x100_hier == pytest.approx(
        float(dist1(truth.exact_logits[torch.as_tensor(expected), n], truth.target_logits).mean() * 100), rel=1e-6)
    assert result.exact_top_flat_pct == pytest.approx(float(np.mean(result.picks_flat == truth.exact_effects().argmax(1)) * 100))
    assert result.speedup > 0 and len(result.table()) == 2


def test_hierarchical_pick_reads_only_the_chosen_class() -> None:
    """The lazy mapping hierarchical_vs_flat hands to hierarchical_pick computes one class's entry."""
    asked = []
    lazy = evaluation._ComputedOnRead(range(3), lambda l: asked.append(l) or torch.tensor([[0.0, float(l)]]))
    ids = {l: torch.tensor([2 * l, 2 * l + 1]) for l in range(3)}
    _, chosen = hierarchical_pick(torch.tensor([[0.1, 0.9, 0.2]]), lazy, ids)
    assert asked == [1] and chosen.tolist() == [3]
