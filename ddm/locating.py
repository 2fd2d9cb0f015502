r"""Table 1's protocol (Sec. 4.1, Eq. 10): locate a cluster per objective, unlearn it exactly, measure.

For every test point each method *locates* one cluster per objective of Eq. 10:

- Dist1: the cluster whose deletion changes the output most, :math:`\lVert y^u_t - \tilde y_t\rVert^2`;
- Dist2: the cluster whose deletion raises the true-label cross-entropy most, :math:`\mathrm{CE}(y^u_t, y_t)`;
- Dist3: the *least* influential cluster, scored by :math:`1 / (1 + \lVert y^u_t - \tilde y_t\rVert^2)`.

The located cluster is then removed and the network retrained from scratch (exact unlearning), and
Eq. 10 is measured on the retrained network. How a method locates is what differs:

- :func:`picks_from_changes`: from predicted logit changes (K, N, L) (DDM's leave-one-out
  fine-tunes, influence functions; see the brief's shared representation), each objective
  evaluated on the predicted output;
- :func:`picks_from_eq8` / :func:`picks_from_perturbed`: the paper's own rule, one W per objective
  fitted by Eq. 8 over random perturbations (Eq. 7-9);
- :func:`picks_from_scores`: methods that only rank (random, predict-based, clustering-based).

The measurement is :func:`located_distances` when the exact leave-one-cluster-out ground truth
of the grouping exists (:class:`ddm.evaluation.GroundTruth`), and
:func:`located_distances_retrained` when only the picked groups are retrained (the paper's
"DDM w/o cluster", whose sequence groups have no full ground truth). Both return the same keys
(``DIST1_X100`` ...). :func:`test_point_draws` and :func:`mean_and_spread` repeat the protocol
over several draws of test points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ddm.attribution import fit_attribution_matrix
from ddm.clustering import Clustering, cluster_centroids
from ddm.evaluation import GroundTruth, perturbation_masks
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.metrics import dist1, dist2, dist3

__all__ = [
    "Picks", "picks_from_changes", "eq8_objective_matrices", "picks_from_perturbed", "picks_from_eq8",
    "picks_from_scores", "predict_based_scores", "clustering_based_scores", "reference_scores",
    "located_distances", "located_distances_retrained", "test_point_draws", "mean_and_spread",
    "PREDICT_BASED", "CLUSTERING_BASED",
    "DIST1_X100", "DIST2", "DIST3", "DIST1_X100_OTHER_ORDER", "DIST1_X100_NOISE", "RETRAINS",
]

# ------------------------------------------------------------------------------------------ keys
PREDICT_BASED = "predict_based"        # the paper's "Predict-based" (our definition, see predict_based_scores)
CLUSTERING_BASED = "clustering_based"  # the paper's "Clustering-based" (see clustering_based_scores)

DIST1_X100 = "dist1_x100"                          # Eq. 10 Dist1 x100 at the Dist1 pick
DIST2 = "dist2"                                    # Eq. 10 Dist2 at the Dist2 pick
DIST3 = "dist3"                                    # Eq. 10 Dist3 at the Dist3 pick
DIST1_X100_OTHER_ORDER = "dist1_x100_other_order"  # Dist1 pick retrained under another data order
DIST1_X100_NOISE = "dist1_x100_noise"              # nothing removed, another data order: the noise floor
RETRAINS = "retrains"                              # located_distances_retrained only


# ------------------------------------------------------------------------------------------ picks
@dataclass(frozen=True)
class Picks:
    """The cluster each test point locates for each objective of Eq. 10, (N,) int64 each."""

    dist1: np.ndarray   # the cluster whose deletion changes the output most
    dist2: np.ndarray   # the cluster whose deletion raises the true-label cross-entropy most
    dist3: np.ndarray   # the least influential cluster (as the paper means Dist3)

    def __post_init__(self) -> None:
        arrays = [np.asarray(a, dtype=np.int64) for a in (self.dist1, self.dist2, self.dist3)]
        if any(a.ndim != 1 for a in arrays) or len({len(a) for a in arrays}) != 1:
            raise ValueError(f"Picks needs three (N,) arrays of one length, got shapes {[a.shape for a in arrays]}")
        # frozen: set through object.__setattr__ so every field is an int64 numpy array
        for name, a in zip(("dist1", "dist2", "dist3"), arrays):
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.dist1)

    def groups(self) -> list[int]:
        """The distinct clusters located by any objective, sorted."""
        return sorted(set(np.concatenate([self.dist1, self.dist2, self.dist3]).tolist()))


def _per_point_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(..., N, L) logits, (N,) labels -> (..., N) cross-entropy of the true label (Dist2 per point)."""
    shape = logits.shape[:-1]
    flat_labels = labels.expand(shape).reshape(-1)
    return dist2(logits.reshape(-1, logits.shape[-1]), flat_labels).reshape(shape)


def picks_from_changes(target_logits: torch.Tensor, changes: torch.Tensor, labels: torch.Tensor) -> Picks:
    r"""Eq. 10's objectives evaluated on *predicted* outputs, one pick per objective.

    ``target_logits`` (N, L), ``changes`` (K, N, L): deleting cluster k predicts the logits
    :math:`z + \Delta_k`, i.e. :math:`p_k = \mathrm{softmax}(z + \Delta_k)`. With
    :math:`p = \mathrm{softmax}(z)`:

    .. math::
        k_1 = \arg\max_k \lVert p_k - p\rVert^2,\quad
        k_2 = \arg\max_k \mathrm{CE}(p_k, y),\quad
        k_3 = \arg\min_k \lVert p_k - p\rVert^2.

    Dist3's pick minimises Dist1's objective, which maximises Eq. 10's Dist3 itself."""
    target_logits, changes = torch.as_tensor(target_logits), torch.as_tensor(changes)
    labels = torch.as_tensor(labels)
    predicted = target_logits[None] + changes                          # (K, N, L)
    moved = dist1(predicted, target_logits[None])                      # (K, N)
    loss = _per_point_ce(predicted, labels)                            # (K, N)
    return Picks(moved.argmax(0).numpy(), loss.argmax(0).numpy(), moved.argmin(0).numpy())


def eq8_objective_matrices(keep_masks: torch.Tensor, outputs: torch.Tensor,
                           labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eq. 7-8, one linear datamodel per objective of Eq. 10, fitted over the perturbed models.

    ``keep_masks`` (P, K), ``outputs`` (P, N, L) the perturbed models' logits, ``labels`` (N,).
    :math:`W^1` (K, N, L) fits the softmax outputs, :math:`y_p \approx W^{1\top} p + b^1`;
    :math:`W^2` (K, N) fits the true-label cross-entropy, :math:`\mathrm{CE}_p \approx W^{2\top} p + b^2`;
    each by the weighted least squares of :func:`ddm.attribution.fit_attribution_matrix`."""
    P, K = keep_masks.shape
    probs = F.softmax(outputs.float(), -1)                              # (P, N, L)
    W1, _ = fit_attribution_matrix(keep_masks, probs.reshape(P, -1))
    W2, _ = fit_attribution_matrix(keep_masks, _per_point_ce(outputs.float(), torch.as_tensor(labels)))
    return W1.reshape(K, *outputs.shape[1:]), W2


def picks_from_perturbed(keep_masks: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> Picks:
    r"""The paper's locating rule (Sec. 3.3 and 4.1) on perturbed outputs (P, N, L).

    Deleting cluster k from the full set changes the linear prediction of Eq. 7 by
    :math:`-W_k`, so with the matrices of :func:`eq8_objective_matrices`:
    :math:`k_1 = \arg\max_k \lVert W^1_k\rVert^2`, :math:`k_3 = \arg\min_k \lVert W^1_k\rVert^2`,
    :math:`k_2 = \arg\max_k (-W^2_k)` (the largest predicted rise of the cross-entropy)."""
    W1, W2 = eq8_objective_matrices(keep_masks, outputs, labels)
    moved = (W1 ** 2).sum(-1)                                            # (K, N)
    return Picks(moved.argmax(0).numpy(), (-W2).argmax(0).numpy(), moved.argmin(0).numpy())


def picks_from_eq8(exp: Experiment, synset: Synset, images: torch.Tensor, labels: torch.Tensor,
                   keep_masks: torch.Tensor | None = None) -> Picks:
    """:func:`picks_from_perturbed` on DDM's fine-tuned perturbed models (Eq. 9) of ``images``.
    ``keep_masks`` (P, K) default to :func:`ddm.evaluation.perturbation_masks`, the masks every
    Eq. 8 fit of this project uses."""
    if keep_masks is None:
        keep_masks = perturbation_masks(int(synset.cluster.max()) + 1, exp.config.online)
    outputs = exp.perturbed_outputs(synset, keep_masks, images)          # (P, N, L)
    return picks_from_perturbed(keep_masks, outputs, labels)


def picks_from_scores(scores: np.ndarray) -> Picks:
    """For methods that only rank clusters, (N, K) scores (larger = more influential): the top
    cluster for Dist1 and Dist2 alike, the bottom one for Dist3."""
    scores = np.asarray(scores)
    top = scores.argmax(1)
    return Picks(top, top.copy(), scores.argmin(1))


# ------------------------------------------------------------------------------------------ rankers
def _as_clustering(grouping: Clustering | torch.Tensor | np.ndarray) -> Clustering:
    if isinstance(grouping, Clustering):
        return grouping
    assignment = torch.as_tensor(np.asarray(grouping), dtype=torch.long)
    # cluster_class is unknown for a bare assignment; the centroids do not need it
    return Clustering(assignment, torch.full((int(assignment.max()) + 1,), -1, dtype=torch.long), "given")


def _nearest_centroid_scores(train: np.ndarray, grouping: Clustering | torch.Tensor | np.ndarray,
                             test: np.ndarray) -> np.ndarray:
    """(N, K) -|| centroid_k - test_n ||; -inf for an empty cluster (it can never be located)."""
    clustering = _as_clustering(grouping)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = cluster_centroids(np.asarray(train, dtype=np.float64), clustering)   # (K, F)
    scores = -np.linalg.norm(np.asarray(test, dtype=np.float64)[:, None, :] - centroids[None], axis=-1)
    scores[:, clustering.sizes().numpy() == 0] = -np.inf
    return scores


def predict_based_scores(target_probs_train: np.ndarray | torch.Tensor,
                         grouping: Clustering | torch.Tensor | np.ndarray,
                         target_probs_test: np.ndarray | torch.Tensor) -> np.ndarray:
    r"""The paper's "Predict-based" reference, which it leaves undefined. Our definition: the
    cluster whose members the target predicts most like the test point,
    :math:`s_{n,k} = -\lVert \frac{1}{|D_k|}\sum_{i\in D_k} p(x_i) - p(x_n)\rVert_2`.

    ``target_probs_train`` (n, L), ``grouping`` a Clustering or an (n,) assignment,
    ``target_probs_test`` (N, L) -> (N, K)."""
    return _nearest_centroid_scores(np.asarray(target_probs_train), grouping, np.asarray(target_probs_test))


def clustering_based_scores(train_features: np.ndarray, grouping: Clustering | torch.Tensor | np.ndarray,
                            test_features: np.ndarray) -> np.ndarray:
    r"""The paper's "Clustering-based" reference (undefined in the paper). Our definition: the
    cluster whose centroid in the target's penultimate feature space is nearest,
    :math:`s_{n,k} = -\lVert c_k - f(x_n)\rVert_2`. ``train_features`` (n, F), ``test_features``
    (N, F) -> (N, K)."""
    return _nearest_centroid_scores(np.asarray(train_features), grouping, np.asarray(test_features))


def reference_scores(exp: Experiment, clustering: Clustering, test_index: torch.Tensor) -> dict[str, np.ndarray]:
    """(N, K) scores of both ranking references on the test points ``test_index``, keyed
    ``PREDICT_BASED`` and ``CLUSTERING_BASED``, from the target network's final parameters."""
    x = exp.test.images[test_index]
    probs_train = F.softmax(exp.target_logits(exp.train.images), -1).double().numpy()
    probs_test = F.softmax(exp.target_logits(x), -1).double().numpy()
    return {
        PREDICT_BASED: predict_based_scores(probs_train, clustering, probs_test),
        CLUSTERING_BASED: clustering_based_scores(exp.features("learned", exp.train.images), clustering,
                                                  exp.features("learned", x)),
    }


# ------------------------------------------------------------------------------------------ Eq. 10
def _eq10(target: torch.Tensor, labels: torch.Tensor, at_dist1: torch.Tensor, at_dist2: torch.Tensor,
          at_dist3: torch.Tensor, other_order: torch.Tensor | None = None,
          noise_full: torch.Tensor | None = None) -> dict[str, float]:
    """Eq. 10 averaged over the test points, from the retrained logits (N, L) at each pick."""
    out = {
        DIST1_X100: float(dist1(at_dist1, target).mean() * 100),
        DIST2: float(dist2(at_dist2, labels).mean()),
        DIST3: float(dist3(at_dist3, target).mean()),
    }
    if other_order is not None:
        out[DIST1_X100_OTHER_ORDER] = float(dist1(other_order, target).mean() * 100)
    if noise_full is not None:
        out[DIST1_X100_NOISE] = float(dist1(noise_full, target).mean() * 100)
    return out


def located_distances(picks: Picks, truth: GroundTruth) -> dict[str, float]:
    """Eq. 10 at the exactly retrained located clusters, means over the test points.

    ``DIST1_X100`` at ``picks.dist1``, ``DIST2`` at ``picks.dist2``, ``DIST3`` at ``picks.dist3``
    (as :func:`ddm.evaluation.located_metrics` measures them); when ``truth`` holds a noise seed,
    also ``DIST1_X100_OTHER_ORDER`` (the Dist1 pick retrained under that data order) and
    ``DIST1_X100_NOISE``: the Dist1 of the retrain with nothing removed under that order, the
    output change retraining noise alone produces (Table 1's noise floor)."""
    n = torch.arange(len(picks))
    if len(picks) != len(truth.test_index):
        raise ValueError(f"{len(picks)} picks for {len(truth.test_index)} test points")
    at = {name: torch.as_tensor(getattr(picks, name)) for name in ("dist1", "dist2", "dist3")}
    seed = truth.noise_seed
    return _eq10(truth.target_logits, truth.labels, truth.exact_logits[at["dist1"], n],
                 truth.exact_logits[at["dist2"], n], truth.exact_logits[at["dist3"], n],
                 None if seed is None else truth.noise_logits[seed][at["dist1"], n],
                 None if seed is None else truth.noise_full_logits[seed])


def located_distances_retrained(exp: Experiment, grouping: Clustering, picks: Picks,
                                test_index: torch.Tensor, other_order: bool = True) -> dict[str, float]:
    """:func:`located_distances` without a full ground truth: only the distinct picked groups of
    ``grouping`` are retrained exactly (the target's data order), the distinct Dist1 picks again
    under the first noise seed of ``exp.config.eval.noise_seeds`` (if any), plus the retrain with
    nothing removed under that seed. Same keys as :func:`located_distances`, plus ``RETRAINS``:
    how many distinct exact retrains the numbers rest on (cached ones included). ``other_order``
    False skips the Dist1 picks' retrains under the noise seed (``DIST1_X100_OTHER_ORDER`` is then
    absent): as many retrains again, for a number a chapter may not show."""
    test_index = torch.as_tensor(test_index)
    if len(picks) != len(test_index):
        raise ValueError(f"{len(picks)} picks for {len(test_index)} test points")
    x, labels = exp.test.images[test_index], exp.test.labels[test_index]
    target = exp.target_logits(x)
    n = torch.arange(len(picks))

    def retrained(groups: list[int], order_seed: int | None) -> dict[int, torch.Tensor]:
        logits = exp.exact_retrain_logits([(k,) for k in groups], grouping, order_seed=order_seed)
        return {k: logits[i, test_index] for i, k in enumerate(groups)}      # group -> (N, L)

    def gather(by_group: dict[int, torch.Tensor], chosen: np.ndarray) -> torch.Tensor:
        return torch.stack([by_group[int(k)][i] for i, k in zip(n.tolist(), chosen)])

    same_order = retrained(picks.groups(), None)
    other, noise_full, count = None, None, len(same_order)
    seeds = exp.config.eval.noise_seeds
    if seeds:
        seed = seeds[0]
        if other_order:
            by_group = retrained(sorted(set(picks.dist1.tolist())), seed)
            other = gather(by_group, picks.dist1)
            count += len(by_group)
        noise_full = exp.exact_retrain_logits([()], grouping, order_seed=seed)[0, test_index]
        count += 1
    out: dict[str, float] = _eq10(target, labels, gather(same_order, picks.dist1), gather(same_order, picks.dist2),
                                  gather(same_order, picks.dist3), other, noise_full)
    out[RETRAINS] = count
    return out


# ------------------------------------------------------------------------------------------ repetition
def test_point_draws(exp: Experiment, seeds: Sequence[int]) -> list[torch.Tensor]:
    """The evaluation's test points for each seed, (n,) sorted indices into the test split, by the
    rule of :meth:`ddm.experiment.Experiment.test_point_indices` (n = eval.n_test_points, a seeded
    permutation); seed ``exp.config.eval.seed`` gives exactly ``exp.test_point_indices()``."""
    n = min(exp.config.eval.n_test_points, len(exp.test))
    draws = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        draws.append(torch.randperm(len(exp.test), generator=generator)[:n].sort().values)
    return draws


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of repeated measurements; the spread is 0 for one value."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("mean_and_spread needs at least one value")
    spread = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), spread


# Not a test, whatever its name: keep pytest from collecting it where it is imported by name.
test_point_draws.__test__ = False  # type: ignore[attr-defined]
