"""Table 1's protocol (ddm.locating): hand-made picks per objective of Eq. 10, a planted Eq. 8 fit,
planted ground truth, the ranking references on tiny hand cases, and, on a tiny digits experiment,
retraining only the picked groups against the full leave-one-cluster-out ground truth.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddm import evaluation, locating
from ddm.attribution import margin_direction
from ddm.chapters.base import open_experiment
from ddm.clustering import Clustering, sequence_clusters
from ddm.evaluation import GroundTruth
from ddm.locating import Picks
from ddm.metrics import dist1, dist2, dist3
from ddm.online import leave_one_out_masks

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401


# ------------------------------------------------------------------------------------------ picks
def test_picks_from_changes_on_a_hand_made_three_cluster_case():
    # Two classes, target p = (0.5, 0.5). Deleting cluster 0 adds 2 to logit 0 (p -> (0.881, 0.119):
    # Dist1 = 2 * 0.381^2 = 0.290), cluster 1 adds 1 to logit 1 (p -> (0.269, 0.731): 0.107),
    # cluster 2 adds 0.1 to logit 0 (0.0012). True label 0: CE = 0.127, 1.313, 0.644 -> cluster 1.
    # True label 1: CE = 2.127, 0.313, 0.744 -> cluster 0.
    target = torch.zeros(2, 2)
    changes = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.1, 0.0]])[:, None, :].expand(3, 2, 2)
    picks = locating.picks_from_changes(target, changes, torch.tensor([0, 1]))
    assert picks.dist1.tolist() == [0, 0]
    assert picks.dist2.tolist() == [1, 0]
    assert picks.dist3.tolist() == [2, 2]
    assert picks.dist1.dtype == np.int64 and len(picks) == 2 and picks.groups() == [0, 1, 2]


def test_picks_from_scores_top_for_dist1_and_dist2_bottom_for_dist3():
    picks = locating.picks_from_scores(np.array([[0.1, 0.9, -0.5], [2.0, 1.0, 3.0]]))
    assert picks.dist1.tolist() == picks.dist2.tolist() == [1, 2]
    assert picks.dist3.tolist() == [2, 1]


def test_picks_rejects_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="one length"):
        Picks(np.array([0, 1]), np.array([0]), np.array([1, 1]))


ALL_MASKS = torch.tensor(list(itertools.product([False, True], repeat=3)))   # (8, 3): W is determined


def test_eq8_fit_recovers_a_planted_linear_datamodel_of_the_outputs():
    # y(p) = W^T p + b in probability space: b a distribution, every W_k summing to 0 over the classes.
    b = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])                               # (N, L)
    W = torch.tensor([[[0.02, -0.01, -0.01], [0.10, -0.05, -0.05]],                      # cluster 0
                      [[-0.08, 0.04, 0.04], [0.01, 0.0, -0.01]],                         # cluster 1
                      [[0.01, 0.0, -0.01], [-0.02, 0.03, -0.01]]])                       # cluster 2
    probs = torch.einsum("pk,knl->pnl", ALL_MASKS.float(), W) + b
    assert (probs > 0).all()
    labels = torch.tensor([0, 2])
    W1, W2 = locating.eq8_objective_matrices(ALL_MASKS, probs.log(), labels)      # softmax(log q) = q
    assert torch.allclose(W1, W, atol=1e-5)
    assert W2.shape == (3, 2)
    # ||W_k||^2: point 0 -> 6e-4, 9.6e-3, 2e-4; point 1 -> 1.5e-2, 2e-4, 1.4e-3
    picks = locating.picks_from_perturbed(ALL_MASKS, probs.log(), labels)
    assert picks.dist1.tolist() == [1, 0]
    assert picks.dist3.tolist() == [2, 1]


def test_eq8_fit_recovers_a_planted_linear_datamodel_of_the_cross_entropy():
    # Two classes; the true label's cross-entropy CE(p) = W2^T p + 1, so q_y = exp(-CE).
    W2 = torch.tensor([[0.3, -0.5], [-0.4, 0.2], [0.1, 0.0]])                          # (K, N)
    ce = ALL_MASKS.float() @ W2 + 1.0                                                   # (P, N)
    q_true = torch.exp(-ce)
    labels = torch.tensor([0, 1])
    probs = torch.stack([torch.stack([q_true[:, 0], 1 - q_true[:, 0]], -1),
                         torch.stack([1 - q_true[:, 1], q_true[:, 1]], -1)], 1)         # (P, N, 2)
    _, fitted = locating.eq8_objective_matrices(ALL_MASKS, probs.log(), labels)
    assert torch.allclose(fitted, W2, atol=1e-5)
    # deleting k changes CE by -W2_k: point 0 rises most for cluster 1 (+0.4), point 1 for cluster 0 (+0.5)
    assert locating.picks_from_perturbed(ALL_MASKS, probs.log(), labels).dist2.tolist() == [1, 0]


# ------------------------------------------------------------------------------------------ rankers
def test_predict_based_scores_by_hand():
    probs_train = np.array([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0], [0.4, 0.6]])
    assignment = torch.tensor([0, 0, 1, 1])          # cluster means (0.9, 0.1) and (0.2, 0.8)
    probs_test = np.array([[0.9, 0.1], [0.5, 0.5]])
    got = locating.predict_based_scores(probs_train, assignment, probs_test)
    expected = -np.array([[0.0, math.hypot(0.7, 0.7)], [math.hypot(0.4, 0.4), math.hypot(0.3, 0.3)]])
    np.testing.assert_allclose(got, expected)
    assert locating.picks_from_scores(got).dist1.tolist() == [0, 1]


def test_clustering_based_scores_by_hand_and_an_empty_cluster_is_never_located():
    features = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0]])
    clustering = Clustering(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 1]), "given")   # cluster 1 is empty
    got = locating.clustering_based_scores(features, clustering, np.array([[1.0, 3.0], [10.0, 9.0]]))
    np.testing.assert_allclose(got[:, [0, 2]], -np.array([[3.0, math.hypot(9, 7)], [math.hypot(9, 9), 1.0]]))
    assert np.isneginf(got[:, 1]).all()
    assert locating.picks_from_scores(got).dist1.tolist() == [0, 2]


# ------------------------------------------------------------------------------------------ planted truth
def _planted_truth(n=6, k=4, classes=3, strong=2, seed=0, noise=True) -> GroundTruth:
    """Deleting cluster ``strong`` cuts every true-class logit by 6; the others barely matter."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(n, classes, generator=g) * 2
    labels = target.argmax(1)
    exact = target[None] + 0.05 * torch.randn(k, n, classes, generator=g)
    exact[strong, torch.arange(n), labels] -= 6.0
    other = {1: exact + 0.1 * torch.randn(k, n, classes, generator=g)} if noise else {}
    full = {1: target + 0.2 * torch.randn(n, classes, generator=g)} if noise else {}
    return GroundTruth(torch.arange(n), labels, target, margin_direction(target, labels), exact, other, full)


def test_exact_changes_locate_the_planted_cluster_and_score_above_a_random_pick():
    truth = _planted_truth()
    n = torch.arange(6)
    picks = locating.picks_from_changes(truth.target_logits, truth.exact_logits - truth.target_logits[None],
                                        truth.labels)
    assert picks.dist1.tolist() == [2] * 6 and picks.dist2.tolist() == [2] * 6
    assert 2 not in picks.dist3.tolist()
    got = locating.located_distances(picks, truth)
    assert set(got) == {"dist1_x100", "dist2", "dist3", "dist1_x100_other_order", "dist1_x100_noise"}
    assert got["dist1_x100"] == pytest.approx(float(dist1(truth.exact_logits[2], truth.target_logits).mean() * 100))
    assert got["dist2"] == pytest.approx(float(dist2(truth.exact_logits[2], truth.labels).mean()))
    at3 = truth.exact_logits[torch.as_tensor(picks.dist3), n]
    assert got["dist3"] == pytest.approx(float(dist3(at3, truth.target_logits).mean()))
    assert got["dist1_x100_other_order"] == pytest.approx(
        float(dist1(truth.noise_logits[1][2], truth.target_logits).mean() * 100))
    assert got["dist1_x100_noise"] == pytest.approx(
        float(dist1(truth.noise_full_logits[1], truth.target_logits).mean() * 100))
    random = locating.picks_from_scores(np.random.default_rng(0).normal(size=(6, 4)))
    assert random.dist1.tolist() != [2] * 6
    scored = locating.located_distances(random, truth)
    assert got["dist1_x100"] > scored["dist1_x100"] and got["dist2"] > scored["dist2"]
    # Dist3 of the least influential pick beats Dist3 of the most influential one
    assert got["dist3"] > locating.located_distances(Picks(picks.dist1, picks.dist2, picks.dist1), truth)["dist3"]


def test_located_distances_agree_with_evaluation_located_metrics_and_skip_unmeasured_noise():
    truth = _planted_truth(seed=3)
    effects = np.random.default_rng(1).normal(size=(6, 4))
    picks = Picks(effects.argmax(1), effects.argmax(1), np.abs(effects).argmin(1))
    got = locating.located_distances(picks, truth)
    expected = evaluation.located_metrics(effects, truth, seed=1)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-6)
    bare = locating.located_distances(picks, _planted_truth(seed=3, noise=False))
    assert set(bare) == {"dist1_x100", "dist2", "dist3"}
    with pytest.raises(ValueError, match="test points"):
        locating.located_distances(Picks(picks.dist1[:2], picks.dist2[:2], picks.dist3[:2]), truth)


def test_mean_and_spread():
    assert locating.mean_and_spread([3.0]) == (3.0, 0.0)
    mean, spread = locating.mean_and_spread([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0) and spread == pytest.approx(math.sqrt(7.0))   # (4 + 1 + 9) / 2
    with pytest.raises(ValueError):
        locating.mean_and_spread([])


# ------------------------------------------------------------------------------------------ tiny experiment
TINY = {"data.train_per_class": 20, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
        "clusters.clusters_per_class": 2, "eval.n_test_points": 6}


def test_test_point_draws_reproduce_the_experiments_test_points(tmp_path):
    exp = open_experiment("quick", DATA_ROOT, overrides=TINY, cache_root=tmp_path)
    default, other = locating.test_point_draws(exp, [exp.config.eval.seed, exp.config.eval.seed + 1])
    assert torch.equal(default, exp.test_point_indices())
    assert len(other) == 6 and not torch.equal(other, default)
    assert torch.equal(other, other.sort().values)


def test_retraining_only_the_picks_equals_the_full_ground_truth(tmp_path):
    """Sequence groups ("DDM w/o cluster"): the picks retrained alone, in a fresh store, give the
    numbers the full leave-one-group-out ground truth gives, built in a second store."""
    exp = open_experiment("quick", DATA_ROOT, overrides=TINY, cache_root=tmp_path / "picks")
    grouping = sequence_clusters(exp.train.labels, 2)                      # K = 20
    idx = exp.test_point_indices()
    references = locating.reference_scores(exp, grouping, idx)
    assert set(references) == {locating.PREDICT_BASED, locating.CLUSTERING_BASED}
    probs = F.softmax(exp.target_logits(exp.train.images), -1).double().numpy()
    probs_test = F.softmax(exp.target_logits(exp.test.images[idx]), -1).double().numpy()
    np.testing.assert_allclose(references[locating.PREDICT_BASED],
                               locating.predict_based_scores(probs, grouping, probs_test))
    assert references[locating.CLUSTERING_BASED].shape == (6, 20)
    picks = Picks(references[locating.PREDICT_BASED].argmax(1), references[locating.CLUSTERING_BASED].argmax(1),
                  np.array([0, 5, 5, 11, 0, 19]))
    got = locating.located_distances_retrained(exp, grouping, picks, idx)
    assert got[locating.RETRAINS] == len(picks.groups()) + len(set(picks.dist1.tolist())) + 1

    full = open_experiment("quick", DATA_ROOT, overrides=TINY, cache_root=tmp_path / "truth")
    truth = evaluation.leave_one_out_ground_truth(full, grouping, idx)
    expected = locating.located_distances(picks, truth)
    assert set(got) == set(expected) | {locating.RETRAINS}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_eq8_picks_on_leave_one_out_masks_are_the_picks_of_the_fine_tuned_changes(tmp_path):
    """With the K leave-one-out masks and the full one, Eq. 8 fits W_k = y(all) - y(without k)
    exactly, so the paper's rule must locate what the fine-tuned changes locate objective by objective."""
    exp = open_experiment("quick", DATA_ROOT, overrides={**TINY, "distill.steps": 4, "distill.step_length": 1,
                                                         "online.finetune_steps": 3}, cache_root=tmp_path)
    synset = exp.synset()
    K = exp.clusters().num_clusters
    idx = exp.test_point_indices()
    x, y = exp.test.images[idx], exp.test.labels[idx]
    masks = torch.cat([leave_one_out_masks(K), torch.ones(1, K, dtype=torch.bool)])
    outputs = exp.perturbed_outputs(synset, masks, x)
    target = exp.target_logits(x)
    by_eq8 = locating.picks_from_eq8(exp, synset, x, y, masks)
    by_changes = locating.picks_from_changes(target, outputs[:-1] - target[None], y)
    for name in ("dist1", "dist2", "dist3"):
        np.testing.assert_array_equal(getattr(by_eq8, name), getattr(by_changes, name), err_msg=name)
    # without masks: the project's Eq. 8 masks
    default = locating.picks_from_eq8(exp, synset, x, y)
    masks = evaluation.perturbation_masks(K, exp.config.online)
    again = locating.picks_from_perturbed(masks, exp.perturbed_outputs(synset, masks, x), y)
    np.testing.assert_array_equal(default.dist1, again.dist1)
    np.testing.assert_array_equal(default.dist2, again.dist2)
