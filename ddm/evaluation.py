"""The evaluation protocol, once: every attribution method against exact unlearning, beside its references.

For the evaluation's test points we measure, per cluster k, the *effect* of deleting it: how much
the true-class margin drops. The ground truth is exact unlearning with the target's own data
order (the cluster's effect alone); the same measurement under another data-order seed is the
retraining noise floor: no attribution method can be expected to agree with exact retraining
better than exact retraining agrees with itself. Random choice and cheap baselines sit beside DDM.

What lives here (chapters, the command line and the tests all call this one copy):

- leave-one-cluster-out against exact retraining: :func:`leave_one_out_ground_truth`,
  :func:`ddm_effects`, :func:`baseline_effects`, :func:`score_methods` / :func:`comparison_table`;
- Eq. 10 on the located cluster: :func:`located_metrics`;
- the Eq. 8 fit over perturbed models: :func:`fit_attribution`, and the cluster-level linear
  datamodeling score of that fit: :func:`lds_evaluation`;
- Eq. 11, hierarchical attribution through :func:`ddm.attribution.hierarchical_pick`, timed
  against flat attribution: :func:`hierarchical_vs_flat`;
- output distances: :func:`ddm.metrics.output_distance` (re-exported here).

Methods are keyed by short constants (``RANDOM``, ``TRACIN``, ... and the synset variants of
:mod:`ddm.variants`), never by display text; :data:`LABELS` says how tables name them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ddm import baselines
from ddm.attribution import (fit_attribution_matrix, hierarchical_pick, leave_one_out_attribution,
                             margin_direction, margin_effects, predict_outputs)
from ddm.clustering import Clustering
from ddm.config import OnlineConfig
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.metrics import (bootstrap_ci, dist1, dist2, dist3, linear_datamodeling_score, margins,
                         output_distance, rowwise_spearman, top1_agreement)
from ddm.online import leave_one_out_masks, random_masks, removal_sets

__all__ = [
    "GroundTruth", "leave_one_out_ground_truth", "ddm_effects", "baseline_effects", "tenth_rate",
    "MethodScores", "score_methods", "scores_table", "comparison_table", "located_metrics",
    "best_dist1_x100", "calibration", "EffectScale", "measure_effect_scale",
    "fit_attribution", "perturbation_masks", "lds_masks", "LdsEvaluation", "lds_evaluation", "HierarchicalComparison",
    "hierarchical_vs_flat", "class_by_cluster", "batch_effects", "output_distance",
    "RANDOM", "NEAREST_CENTROID", "TRACIN", "REAL_ASCENT", "NOISE_FLOOR", "EXACT", "DDM_W", "LABELS",
]

# ------------------------------------------------------------------------------------------ method keys
RANDOM = "random"                  # the paper's "Random Select"
NEAREST_CENTROID = "centroid"      # same-class cluster whose mean image is nearest
TRACIN = "tracin"                  # TracIn-style gradient dot products over the saved checkpoints
REAL_ASCENT = "ascent"             # gradient ascent on the cluster's real images
NOISE_FLOOR = "noise_floor"        # exact retrains under another data order
EXACT = "exact"                    # exact retraining itself (its own top cluster)
DDM_W = "ddm_w"                    # DDM's W fitted by Eq. 8 on random perturbations (LDS only)

LABELS: dict[str, str] = {
    RANDOM: "Random choice (the paper's Random Select)",
    NEAREST_CENTROID: "Nearest centroid (pixels)",
    TRACIN: "TracIn-style (trajectory)",
    REAL_ASCENT: "Gradient ascent on the real cluster",
    NOISE_FLOOR: "Noise floor: exact retrain, another data order",
    EXACT: "Exact retrain, its own top cluster",
    DDM_W: "DDM, W fitted by Eq. 8",
}

# Column headers of the comparison table.
SPEARMAN = "Spearman with exact"
INTERVAL = "95% interval"
TOP1 = "top-1 agreement"
DIST1 = "Dist1 x100 of the pick"
DIST2 = "Dist2 of the pick"
DIST3 = "Dist3 of the least influential"
DIST1_OTHER_ORDER = "Dist1 x100, pick retrained in another order"


# ------------------------------------------------------------------------------------------ ground truth
@dataclass
class GroundTruth:
    """Exact leave-one-cluster-out retrains evaluated on the test points."""

    test_index: torch.Tensor          # (N,) indices into the test split
    labels: torch.Tensor              # (N,)
    target_logits: torch.Tensor       # (N, L)
    directions: torch.Tensor          # (N, L) margin directions of the target
    exact_logits: torch.Tensor        # (K, N, L) same data order as the target
    noise_logits: dict[int, torch.Tensor]       # seed -> (K, N, L) another data order
    noise_full_logits: dict[int, torch.Tensor]  # seed -> (N, L) nothing removed, another order
    seconds: float = 0.0

    def subset(self, rows: slice | torch.Tensor) -> "GroundTruth":
        """The same ground truth for some of its test points (``rows`` of the N)."""
        return GroundTruth(self.test_index[rows], self.labels[rows], self.target_logits[rows], self.directions[rows],
                           self.exact_logits[:, rows], {s: v[:, rows] for s, v in self.noise_logits.items()},
                           {s: v[rows] for s, v in self.noise_full_logits.items()}, self.seconds)

    @property
    def noise_seed(self) -> int | None:
        """The first data-order seed of the noise floor (None: not measured)."""
        return next(iter(self.noise_logits), None)

    def exact_effects(self) -> np.ndarray:
        """(N, K) margin drop caused by deleting each cluster (same data order)."""
        return (margins(self.target_logits, self.directions)[None]
                - margins(self.exact_logits, self.directions[None])).T.numpy()

    def noise_effects(self, seed: int) -> np.ndarray:
        """(N, K) the same measurement with retrains under another data order."""
        full = margins(self.noise_full_logits[seed], self.directions)
        return (full[None] - margins(self.noise_logits[seed], self.directions[None])).T.numpy()


def leave_one_out_ground_truth(exp: Experiment, clustering: Clustering,
                               test_index: torch.Tensor | None = None) -> GroundTruth:
    """Exact unlearning of every cluster, under the target's order and each noise seed."""
    idx = exp.test_point_indices() if test_index is None else test_index
    start = time.perf_counter()
    removal = [(k,) for k in range(clustering.num_clusters)]
    x, y = exp.test.images[idx], exp.test.labels[idx]
    target = exp.target_logits(x)
    exact = exp.exact_retrain_logits(removal, clustering)[:, idx]
    noise, noise_full = {}, {}
    for seed in exp.config.eval.noise_seeds:
        noise[seed] = exp.exact_retrain_logits(removal, clustering, order_seed=seed)[:, idx]
        noise_full[seed] = exp.exact_retrain_logits([()], clustering, order_seed=seed)[0, idx]
    return GroundTruth(idx, y, target, margin_direction(target, y), exact, noise, noise_full,
                       time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ effects
def ddm_effects(exp: Experiment, synset: Synset, truth: GroundTruth,
                online: OnlineConfig | None = None) -> tuple[np.ndarray, float]:
    """(N, K) DDM's predicted margin drops from its leave-one-cluster-out fine-tunes (Eq. 9),
    with the seconds the online stage took. ``online`` overrides the fine-tuning settings."""
    start = time.perf_counter()
    K = int(synset.cluster.max()) + 1
    outputs = exp.perturbed_outputs(synset, leave_one_out_masks(K), exp.test.images[truth.test_index], online)
    W = leave_one_out_attribution(truth.target_logits, outputs)   # (K, N, L)
    return margin_effects(W, truth.directions).numpy(), time.perf_counter() - start


def baseline_effects(exp: Experiment, clustering: Clustering, truth: GroundTruth) -> dict[str, np.ndarray]:
    """(N, K) effects of the references, keyed ``RANDOM``, ``NEAREST_CENTROID``, ``TRACIN`` and
    ``REAL_ASCENT``: random choice, nearest pixel centroid, TracIn-style sum and gradient ascent
    on real data (:mod:`ddm.baselines`)."""
    x = exp.test.images[truth.test_index]
    cfg = exp.config
    model = exp.new_model()
    return {
        RANDOM: baselines.random_effects(len(x), clustering.num_clusters, cfg.eval.seed),
        NEAREST_CENTROID: baselines.nearest_centroid_effects(
            exp.features("pixels", exp.train.images), exp.features("pixels", x), clustering, truth.labels),
        TRACIN: baselines.tracin_effects(
            model, exp.target(), exp.train.images, exp.train.labels, clustering, x, truth.labels, cfg.train.lr),
        REAL_ASCENT: baselines.real_ascent_effects(
            model, exp.target().final, exp.train.images, exp.train.labels, clustering, x, truth.directions,
            cfg.online.finetune_steps, cfg.online.finetune_lr),
    }


def tenth_rate(online: OnlineConfig) -> OnlineConfig:
    """The same fine-tune (Eq. 9) at a tenth of its learning rate: the book's check of the paper's
    choice of the training rate."""
    return dataclasses.replace(online, finetune_lr=online.finetune_lr / 10)


# ------------------------------------------------------------------------------------------ scores
def located_metrics(effects: np.ndarray, truth: GroundTruth, seed: int | None = None) -> dict[str, float]:
    """Eq. 10 on the cluster each test point's ``effects`` (N, K) locate, exactly unlearned.

    ``dist1_x100`` and ``dist2`` at the located cluster (the argmax effect), ``dist3`` at the
    least influential one (the smallest |effect|, as the paper means Dist3), each a mean over the
    test points; with ``seed``, also ``dist1_x100_other_order``: Dist1 when the located cluster
    is retrained under that data order instead (how much of Dist1 is retraining noise)."""
    n = np.arange(len(effects))
    top = torch.as_tensor(np.asarray(effects).argmax(1))
    least = torch.as_tensor(np.abs(np.asarray(effects)).argmin(1))
    exact = truth.exact_logits[top, n]
    out = {
        "dist1_x100": float(dist1(exact, truth.target_logits).mean() * 100),
        "dist2": float(dist2(exact, truth.labels).mean()),
        "dist3": float(dist3(truth.exact_logits[least, n], truth.target_logits).mean()),
    }
    if seed is not None:
        fresh = truth.noise_logits[seed][top, n]
        out["dist1_x100_other_order"] = float(dist1(fresh, truth.target_logits).mean() * 100)
    return out


def best_dist1_x100(truth: GroundTruth) -> float:
    """The largest Dist1 x100 any single pick can reach, averaged over test points: the upper
    bound of Table 1's metric (the exactly retrained cluster that moves each output most)."""
    per_cluster = dist1(truth.exact_logits, truth.target_logits[None])    # (K, N)
    return float(per_cluster.max(0).values.mean() * 100)


@dataclass(frozen=True)
class MethodScores:
    """One method's agreement with exact leave-one-cluster-out retraining."""

    spearman: float                  # mean over test points of the Spearman correlation across clusters
    interval: tuple[float, float]    # 95% percentile-bootstrap interval of that mean
    top1: float                      # fraction of test points whose top cluster is the exact top cluster
    dist1_x100: float                # Eq. 10 at the located cluster (see located_metrics)
    dist2: float
    dist3: float
    dist1_x100_other_order: float | None = None


def _scores(effects: np.ndarray, exact: np.ndarray, truth: GroundTruth, seed: int | None) -> MethodScores:
    rho = rowwise_spearman(effects, exact)
    located = located_metrics(effects, truth, seed)
    return MethodScores(float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"), bootstrap_ci(rho),
                        top1_agreement(effects, exact), located["dist1_x100"], located["dist2"], located["dist3"],
                        located.get("dist1_x100_other_order"))


def score_methods(effects: Mapping[str, np.ndarray], truth: GroundTruth) -> dict[str, MethodScores]:
    """Every method's scores, then the noise floor (``NOISE_FLOOR``: exact retrains under another
    data order, when measured) and exact retraining's own top cluster (``EXACT``)."""
    exact = truth.exact_effects()
    seed = truth.noise_seed
    everything = dict(effects)
    if seed is not None:
        everything[NOISE_FLOOR] = truth.noise_effects(seed)
    everything[EXACT] = exact
    return {key: _scores(np.asarray(value), exact, truth, seed) for key, value in everything.items()}


def scores_table(scores: Mapping[str, MethodScores], labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per method (named by ``labels``, else :data:`LABELS`, else its key), columns in words."""
    names = {**LABELS, **(labels or {})}
    rows = []
    for key, s in scores.items():
        low, high = s.interval
        rows.append({"method": names.get(key, key), SPEARMAN: s.spearman,
                     INTERVAL: "" if key == EXACT or np.isnan(low) else f"[{low:.2f}, {high:.2f}]",
                     TOP1: s.top1, DIST1: s.dist1_x100, DIST2: s.dist2, DIST3: s.dist3,
                     DIST1_OTHER_ORDER: s.dist1_x100_other_order})
    frame = pd.DataFrame(rows).set_index("method")
    return frame.dropna(axis=1, how="all")


def comparison_table(effects: Mapping[str, np.ndarray], truth: GroundTruth,
                     labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """:func:`score_methods` as a table: Spearman with exact leave-one-cluster-out retraining
    (mean over test points, 95% bootstrap interval), top-1 agreement, and Eq. 10's Dist1-3."""
    return scores_table(score_methods(effects, truth), labels)


def calibration(effects: np.ndarray, truth: GroundTruth) -> float:
    """mean |predicted effect| / mean |exact effect|: 1 when a method's effects have the right size."""
    exact = float(np.abs(truth.exact_effects()).mean())
    return float(np.abs(effects).mean()) / exact if exact > 0 else float("nan")


@dataclass(frozen=True)
class EffectScale:
    """How big the clusters' effects are beside the retraining noise."""

    mean_abs_effect: float                    # mean |margin drop| of deleting one cluster
    mean_abs_order_change: dict[int, float]   # seed -> mean |margin change| from that data order alone
    flipped_pct: float                        # % of (cluster, test point) pairs whose prediction flips


def measure_effect_scale(truth: GroundTruth) -> EffectScale:
    """:class:`EffectScale` of the ground truth."""
    change = {seed: float((margins(full, truth.directions) - margins(truth.target_logits, truth.directions))
                          .abs().mean()) for seed, full in truth.noise_full_logits.items()}
    flips = (truth.exact_logits.argmax(-1) != truth.target_logits.argmax(-1)[None]).float().mean()
    return EffectScale(float(np.abs(truth.exact_effects()).mean()), change, float(flips * 100))


# ------------------------------------------------------------------------------------------ Eq. 8 and the LDS
def fit_attribution(exp: Experiment, synset: Synset, images: torch.Tensor,
                    keep_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8 over the perturbed models of ``keep_masks`` (P, K): fine-tune for every mask (Eq. 9),
    take the logits on ``images`` (N, ...), and fit ``y(p) ~ W^T p + b`` by weighted least squares.
    Returns W (K, N, L) and b (N, L)."""
    return _fit(keep_masks, exp.perturbed_outputs(synset, keep_masks, images))


def perturbation_masks(num_clusters: int, online: OnlineConfig) -> torch.Tensor:
    """The random keep-masks W is fitted on by Eq. 8: |P| = max(K + 1, ``online.n_perturbations``)
    masks, each deleting every cluster with probability ``online.delete_fraction`` (seeded)."""
    count = max(num_clusters + 1, online.n_perturbations)
    return random_masks(num_clusters, count, online.delete_fraction, online.seed)


def _fit(keep_masks: torch.Tensor, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8 on perturbed outputs (P, N, L) stacked per mask: W (K, N, L), b (N, L)."""
    W, b = fit_attribution_matrix(keep_masks, outputs.reshape(len(keep_masks), -1))
    return W.reshape(keep_masks.shape[1], *outputs.shape[1:]), b.reshape(outputs.shape[1:])


def lds_masks(exp: Experiment, num_clusters: int) -> torch.Tensor:
    """The random cluster masks that are retrained exactly for the LDS (seeded by eval.seed)."""
    e = exp.config.eval
    return random_masks(num_clusters, e.lds_masks, 1.0 - e.lds_keep_fraction, seed=e.seed + 1000)


@dataclass
class LdsEvaluation:
    """The cluster-level linear datamodeling score of DDM's fitted W and of additive models."""

    scores: dict[str, float]   # DDM_W and every method key given -> LDS (mean Spearman over masks)
    in_sample_r: float         # Pearson r of W's margins with DDM's own perturbed margins
    fit_seconds: float         # fine-tunes + Eq. 8 fit
    perturbations: int         # |P|, random masks W was fitted on
    lds_masks: int             # masks retrained exactly
    W: torch.Tensor = field(repr=False)      # (K, N, L)
    b: torch.Tensor = field(repr=False)      # (N, L)

    def table(self, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
        names = {**LABELS, **(labels or {})}
        rows = []
        for key, score in self.scores.items():
            how = (f"W fitted by Eq. 8 on {self.perturbations} perturbed models" if key == DDM_W
                   else "sum of its leave-one-out effects")
            rows.append({"method": names.get(key, key), "predicts a multi-cluster removal by": how,
                         "LDS (Spearman over masks)": score})
        return pd.DataFrame(rows).set_index("method")


def lds_evaluation(exp: Experiment, synset: Synset, clustering: Clustering, truth: GroundTruth,
                   loo_effects: Mapping[str, np.ndarray]) -> LdsEvaluation:
    """Cluster-level linear datamodeling score. W is fitted by Eq. 8 (:func:`fit_attribution`)
    on DDM's own perturbed models (:func:`perturbation_masks`); it then
    predicts the margins of random multi-cluster removals (:func:`lds_masks`) that were retrained
    exactly. Every method of ``loo_effects`` (N, K) predicts them additively, as the target's
    margin minus the sum of the deleted clusters' effects."""
    K = clustering.num_clusters
    masks = perturbation_masks(K, exp.config.online)
    x = exp.test.images[truth.test_index]
    start = time.perf_counter()
    outputs = exp.perturbed_outputs(synset, masks, x)                            # (P, N, L)
    W, b = _fit(masks, outputs)                                                  # = fit_attribution(...)
    fit_seconds = time.perf_counter() - start
    d = truth.directions[None]
    test_masks = lds_masks(exp, K)
    actual = margins(exp.exact_retrain_logits(removal_sets(test_masks), clustering)[:, truth.test_index], d).numpy()   # (M, N)

    def predicted_by_w(keep: torch.Tensor) -> torch.Tensor:                      # (M, N) margins
        return margins(predict_outputs(W.reshape(K, -1), b.reshape(-1), keep).reshape(len(keep), *b.shape), d)

    # In-sample fit quality: how well W reproduces DDM's own perturbed margins.
    fit_r = float(np.corrcoef(predicted_by_w(masks).numpy().ravel(), margins(outputs, d).numpy().ravel())[0, 1])
    deleted = (~test_masks).float().numpy()                                      # (M, K)
    base = margins(truth.target_logits, truth.directions).numpy()               # (N,)
    scores = {DDM_W: linear_datamodeling_score(predicted_by_w(test_masks).numpy(), actual)}
    for key, eff in loo_effects.items():
        scores[key] = linear_datamodeling_score(base[None, :] - deleted @ np.asarray(eff).T, actual)
    return LdsEvaluation(scores, fit_r, fit_seconds, len(masks), len(test_masks), W, b)


# ------------------------------------------------------------------------------------------ Eq. 11
class _ComputedOnRead(Mapping):
    """A mapping whose entry for a key is computed the first time it is read (and kept)."""

    def __init__(self, keys, compute: Callable[[int], torch.Tensor]) -> None:
        self._keys, self._compute, self._done = list(keys), compute, {}

    def __getitem__(self, key: int) -> torch.Tensor:
        if key not in self._done:
            self._done[key] = self._compute(key)
        return self._done[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def computed(self) -> list[int]:
        return list(self._done)


@dataclass
class HierarchicalComparison:
    """Flat attribution (K fine-tunes) against hierarchical attribution (Eq. 11: L + C), one test
    point at a time."""

    picks_flat: np.ndarray       # (N,) cluster picked by flat attribution
    picks_hier: np.ndarray       # (N,) cluster picked by Eq. 11
    seconds_flat: float          # total over the test points
    seconds_hier: float
    finetunes_flat: int          # K
    finetunes_hier: int          # L + C
    dist1_x100_flat: float       # Eq. 10 Dist1 x100 of each pick, exactly unlearned
    dist1_x100_hier: float
    exact_top_flat_pct: float    # % of test points where the pick is exact retraining's top cluster
    exact_top_hier_pct: float

    @property
    def agreement_pct(self) -> float:
        """% of test points where both pick the same cluster."""
        return float(np.mean(self.picks_flat == self.picks_hier) * 100)

    @property
    def speedup(self) -> float:
        """Measured wall-clock ratio flat / hierarchical."""
        return self.seconds_flat / max(self.seconds_hier, 1e-9)

    def table(self) -> pd.DataFrame:
        n = len(self.picks_flat)
        rows = [{"attribution": "flat (K fine-tunes)", "fine-tunes per test point": self.finetunes_flat,
                 "seconds per test point": self.seconds_flat / n, "Dist1 x100 of the pick": self.dist1_x100_flat,
                 "pick is exact retraining's top cluster (%)": self.exact_top_flat_pct},
                {"attribution": "hierarchical, Eq. 11 (L + C fine-tunes)", "fine-tunes per test point":
                 self.finetunes_hier, "seconds per test point": self.seconds_hier / n,
                 "Dist1 x100 of the pick": self.dist1_x100_hier,
                 "pick is exact retraining's top cluster (%)": self.exact_top_hier_pct}]
        return pd.DataFrame(rows).set_index("attribution")


def _clusters_of_class(clustering: Clustering) -> dict[int, torch.Tensor]:
    """Class-group index l (classes in sorted order, as :func:`ddm.clustering.class_groups`
    numbers them) -> the global ids of the clusters of that class."""
    classes = torch.unique(clustering.cluster_class)
    return {l: torch.nonzero(clustering.cluster_class == c).flatten() for l, c in enumerate(classes.tolist())}


def hierarchical_vs_flat(exp: Experiment, cluster_synset: Synset, class_synset: Synset, clustering: Clustering,
                         truth: GroundTruth) -> HierarchicalComparison:
    """Supp. Eq. 11 against flat attribution, one test point at a time as in the paper's Fig. 6.

    Flat: K leave-one-cluster-out fine-tunes on ``cluster_synset``, pick the largest effect.
    Hierarchical: L leave-one-class-out fine-tunes on ``class_synset`` (one group per class), then
    the C clusters of the chosen class only, through :func:`ddm.attribution.hierarchical_pick`
    (the within-class fine-tunes run when the pick reads them). Both are timed on the same
    machine; each pick is scored by exact unlearning (Dist1) and against exact retraining's own
    top cluster."""
    K = clustering.num_clusters
    ids = _clusters_of_class(clustering)
    L = len(ids)
    C = max(len(v) for v in ids.values())
    picks_flat, picks_hier, t_flat, t_hier = [], [], 0.0, 0.0
    for n, i in enumerate(truth.test_index.tolist()):
        x = exp.test.images[i:i + 1]
        target, direction = truth.target_logits[n:n + 1], truth.directions[n:n + 1]

        def effects_of(synset: Synset, keep: torch.Tensor) -> torch.Tensor:     # (1, number of masks)
            return margin_effects(target[None] - exp.perturbed_outputs(synset, keep, x), direction)

        start = time.perf_counter()
        picks_flat.append(int(effects_of(cluster_synset, leave_one_out_masks(K)).argmax()))
        t_flat += time.perf_counter() - start

        def within(l: int) -> torch.Tensor:                                      # (1, C) effects in class l
            keep = torch.ones(len(ids[l]), K, dtype=torch.bool)
            keep[torch.arange(len(ids[l])), ids[l]] = False
            return effects_of(cluster_synset, keep)

        start = time.perf_counter()
        class_effects = effects_of(class_synset, leave_one_out_masks(L))          # (1, L)
        _, chosen = hierarchical_pick(class_effects, _ComputedOnRead(ids, within), ids)
        picks_hier.append(int(chosen[0]))
        t_hier += time.perf_counter() - start
    flat, hier = np.array(picks_flat), np.array(picks_hier)
    n_idx = torch.arange(len(flat))
    exact_top = truth.exact_effects().argmax(1)

    def dist1_x100(picks: np.ndarray) -> float:
        return float(dist1(truth.exact_logits[torch.as_tensor(picks), n_idx], truth.target_logits).mean() * 100)

    return HierarchicalComparison(flat, hier, t_flat, t_hier, K, L + C, dist1_x100(flat), dist1_x100(hier),
                                  float(np.mean(flat == exact_top) * 100), float(np.mean(hier == exact_top) * 100))


# ------------------------------------------------------------------------------------------ figures' data
def class_by_cluster(effects_row: np.ndarray, clustering: Clustering) -> np.ndarray:
    """One test point's (K,) cluster effects as (classes, clusters per class): row l holds the
    clusters of the l-th class in id order (Fig. 3 / Fig. 6's layout)."""
    effects_row = np.asarray(effects_row)
    return np.stack([effects_row[members.numpy()] for members in _clusters_of_class(clustering).values()])


def batch_effects(exp: Experiment, synset: Synset, label: int, size: int) -> np.ndarray:
    """(K,) DDM's LOO margin effects averaged over ``size`` test images of one label (Fig. 3/6)."""
    idx = torch.nonzero(exp.test.labels == label).flatten()[:size]
    x, y = exp.test.images[idx], exp.test.labels[idx]
    target = exp.target_logits(x)
    K = int(synset.cluster.max()) + 1
    outputs = exp.perturbed_outputs(synset, leave_one_out_masks(K), x)
    W = leave_one_out_attribution(target, outputs)
    return margin_effects(W, margin_direction(target, y)).numpy().mean(0)
