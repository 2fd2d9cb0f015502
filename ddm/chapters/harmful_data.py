"""Chapter 05: removing harmful training data (Table 3, Supp. Eq. 14).

Every ranking orders the training clusters from the most harmful (removing it lowers the loss on
a validation set V the most) to the most helpful. For each share of Table 3 (1, 10, 20, 50%) the
shortest harmful-first prefix of clusters covering that share is deleted, the network is
retrained exactly from theta_0 with the target's data order, and its accuracy is measured on the
held-out half of the test split (V is the other half).

Table 3's influence-function rows (Koh et al., FastIF, Scaleup) rank by the same objective,
evaluated on the logits each method *predicts* for the model without cluster k (target logits +
its predicted change, :mod:`ddm.influence`), and their wall time is recorded beside the accuracy.

**DDM+ (ours, soft labels; not in the paper)** is ranked beside the paper's DDM by the same
objective on its own synset (:data:`ddm.variants.DDM_PLUS`: Algorithm 1 with learnable soft
labels), and its removals are retrained the same way. It is no row of Table 3: its paper column
stays empty, and runs recorded before it was added have no DDM+ numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, datasets, influence, paper, removal
from ddm.chapters.base import (DEFAULT_PAPER_DATASET, NOT_RECORDED_NOTE, ChapterResult, RunNumbers, detail, headline,
                               table, verdict_for)
from ddm.clustering import Clustering
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.online import leave_one_out_masks
from ddm.training import accuracy
from ddm.variants import DDM_PLUS, PAPER_DDM, distill_variants

CHAPTER = "05_harmful_data"
FRACTIONS = (1, 10, 20, 50)       # Table 3's columns: % of the training set removed (beside 0%)
RANDOM_SEEDS = (0, 1, 2)          # the random orders, one per seed
# Table 3's influence-function rows: our ranking key (the middle of the field names) -> ddm.influence's
# method. The paper's row names are influence.PAPER_ROWS[method].
INFLUENCE_RANKINGS = {"if": influence.IF_EXPLICIT, "fastif": influence.FASTIF, "scaleup": influence.ARNOLDI}
# What the tables and the figure call each ranking (keys are the middle of the field names).
RANKING_LABELS = {
    "ddm": "DDM (Supp. Eq. 14)",
    "random": "random order",
    # OUR EXTENSION, not a row of Table 3; third, so the figure gives it its own colour (green) and
    # leaves DDM's blue and random's orange where the chapter's caption says they are
    "ddm_plus": "DDM+ (ours)",
    "exact": "exact leave-one-out retrains",
    # shorter than influence.LABELS: the figure's legend holds each twice (ours and the paper's)
    "if": "Koh et al. (explicit H^-1, last layer)",
    "fastif": "FastIF (kNN + CG, last layer)",
    "scaleup": "Scaleup (Arnoldi, full network)",
    "tracin": "TracIn-style",
    "ddm_helpful": "DDM, most helpful first",
    "exact_helpful": "exact leave-one-out, most helpful first",
}
# DDM+'s numbers came after this chapter's cpu records (2026-12-05), which lack them until re-made.
_PLUS_NOTE = f"ours, not the paper's method; {NOT_RECORDED_NOTE}"
RANKING_KINDS = {"ddm": "harmful first", "random": "random", "ddm_plus": "harmful first", "exact": "harmful first",
                 **{key: "harmful first" for key in INFLUENCE_RANKINGS}, "tracin": "harmful first",
                 "ddm_helpful": "most helpful first", "exact_helpful": "most helpful first"}
# Verdict thresholds, named where they are used.
SPREAD_SHARE = 0.5     # a gap between two rankings is clear above the noise floor AND this share of the
                       # random seeds' spread (max - min) at the same fraction
CLASS_CROWDED = 50.0   # % of one class's images removed above which a removal is said to empty a class


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    acc_target: float = headline("accuracy, nothing removed (%)",
                                 note="ours: on the held-out half of the test split")
    acc_noise_floor: float | None = headline("accuracy, nothing removed, another data order (%)", default=None)
    # DDM's harmful-first ranking (Table 3's DDM row)
    acc_ddm_1: float = headline("accuracy after removing 1%, DDM ranking (%)")
    acc_ddm_10: float = headline("accuracy after removing 10%, DDM ranking (%)")
    acc_ddm_20: float = headline("accuracy after removing 20%, DDM ranking (%)")
    acc_ddm_50: float = headline("accuracy after removing 50%, DDM ranking (%)")
    # OUR EXTENSION, not in Table 3: DDM+ (ours, soft labels) ranked and removed as DDM's row is.
    # None in the runs recorded before it was added.
    acc_ddm_plus_1: float | None = headline("accuracy after removing 1%, DDM+ ranking (ours, soft labels) (%)",
                                            default=None, note=_PLUS_NOTE)
    acc_ddm_plus_10: float | None = headline("accuracy after removing 10%, DDM+ ranking (ours, soft labels) (%)",
                                             default=None, note=_PLUS_NOTE)
    acc_ddm_plus_20: float | None = headline("accuracy after removing 20%, DDM+ ranking (ours, soft labels) (%)",
                                             default=None, note=_PLUS_NOTE)
    acc_ddm_plus_50: float | None = headline("accuracy after removing 50%, DDM+ ranking (ours, soft labels) (%)",
                                             default=None, note=_PLUS_NOTE)
    # random orders (Table 3's Random row): mean and spread (max - min) over the seeds
    acc_random_1: float = headline("accuracy after removing 1%, random order, mean of seeds (%)")
    acc_random_10: float = headline("accuracy after removing 10%, random order, mean of seeds (%)")
    acc_random_20: float = headline("accuracy after removing 20%, random order, mean of seeds (%)")
    acc_random_50: float = headline("accuracy after removing 50%, random order, mean of seeds (%)")
    spread_random_1: float = headline("spread of random orders at 1%, max - min (points)", digits=2)
    spread_random_10: float = headline("spread of random orders at 10%, max - min (points)", digits=2)
    spread_random_20: float = headline("spread of random orders at 20%, max - min (points)", digits=2)
    spread_random_50: float = headline("spread of random orders at 50%, max - min (points)", digits=2)
    # the exact leave-one-out retrains' ranking (what DDM approximates)
    acc_exact_1: float = headline("accuracy after removing 1%, exact leave-one-out ranking (%)")
    acc_exact_10: float = headline("accuracy after removing 10%, exact leave-one-out ranking (%)")
    acc_exact_20: float = headline("accuracy after removing 20%, exact leave-one-out ranking (%)")
    acc_exact_50: float = headline("accuracy after removing 50%, exact leave-one-out ranking (%)")
    # Table 3's influence-function rows, and what each ranking cost (features, gradients, inverse Hessian)
    acc_if_1: float = headline("accuracy after removing 1%, Koh et al. influence ranking (%)")
    acc_if_10: float = headline("accuracy after removing 10%, Koh et al. influence ranking (%)")
    acc_if_20: float = headline("accuracy after removing 20%, Koh et al. influence ranking (%)")
    acc_if_50: float = headline("accuracy after removing 50%, Koh et al. influence ranking (%)")
    acc_fastif_1: float = headline("accuracy after removing 1%, FastIF ranking (%)")
    acc_fastif_10: float = headline("accuracy after removing 10%, FastIF ranking (%)")
    acc_fastif_20: float = headline("accuracy after removing 20%, FastIF ranking (%)")
    acc_fastif_50: float = headline("accuracy after removing 50%, FastIF ranking (%)")
    acc_scaleup_1: float = headline("accuracy after removing 1%, Scaleup (Arnoldi) ranking (%)")
    acc_scaleup_10: float = headline("accuracy after removing 10%, Scaleup (Arnoldi) ranking (%)")
    acc_scaleup_20: float = headline("accuracy after removing 20%, Scaleup (Arnoldi) ranking (%)")
    acc_scaleup_50: float = headline("accuracy after removing 50%, Scaleup (Arnoldi) ranking (%)")
    seconds_if: float = headline("seconds to rank the clusters, Koh et al. influence function",
                                 note="ours: wall time of ddm.influence on the validation half")
    seconds_fastif: float = headline("seconds to rank the clusters, FastIF",
                                     note="ours: wall time of ddm.influence on the validation half")
    seconds_scaleup: float = headline("seconds to rank the clusters, Scaleup (Arnoldi)",
                                      note="ours: wall time of ddm.influence on the validation half")
    # a first-order gradient baseline
    acc_tracin_1: float = headline("accuracy after removing 1%, TracIn-style ranking (%)")
    acc_tracin_10: float = headline("accuracy after removing 10%, TracIn-style ranking (%)")
    acc_tracin_20: float = headline("accuracy after removing 20%, TracIn-style ranking (%)")
    acc_tracin_50: float = headline("accuracy after removing 50%, TracIn-style ranking (%)")
    # the signal check: the other end of each ranking removed first
    acc_ddm_helpful_1: float = headline("accuracy after removing 1%, DDM's most helpful first (%)")
    acc_ddm_helpful_10: float = headline("accuracy after removing 10%, DDM's most helpful first (%)")
    acc_ddm_helpful_20: float = headline("accuracy after removing 20%, DDM's most helpful first (%)")
    acc_ddm_helpful_50: float = headline("accuracy after removing 50%, DDM's most helpful first (%)")
    acc_exact_helpful_1: float = headline("accuracy after removing 1%, exact ranking's most helpful first (%)")
    acc_exact_helpful_10: float = headline("accuracy after removing 10%, exact ranking's most helpful first (%)")
    acc_exact_helpful_20: float = headline("accuracy after removing 20%, exact ranking's most helpful first (%)")
    acc_exact_helpful_50: float = headline("accuracy after removing 50%, exact ranking's most helpful first (%)")
    # what DDM's removal really took: whole clusters, so more than asked, and perhaps most of a class
    removed_ddm_1: float = headline("share of the training set DDM removed when asked for 1% (%)", digits=2)
    removed_ddm_10: float = headline("share of the training set DDM removed when asked for 10% (%)")
    removed_ddm_20: float = headline("share of the training set DDM removed when asked for 20% (%)")
    removed_ddm_50: float = headline("share of the training set DDM removed when asked for 50% (%)")
    class_share_ddm_1: float = headline("largest share of one class DDM removed at 1% (%)", digits=2)
    class_share_ddm_10: float = headline("largest share of one class DDM removed at 10% (%)", digits=2)
    class_share_ddm_20: float = headline("largest share of one class DDM removed at 20% (%)", digits=2)
    class_share_ddm_50: float = headline("largest share of one class DDM removed at 50% (%)", digits=2)
    accuracy_table: pd.DataFrame = table("accuracy after removal, in Table 3's layout")
    removed_table: pd.DataFrame = table("what each ranking really removed")
    curves: pd.DataFrame = detail()        # one row per (ranking, seed, fraction), for the figure


# ------------------------------------------------------------------------------------------ measurement
def synset_order(exp: Experiment, synset: Synset, num_clusters: int, images: torch.Tensor,
                 labels: torch.Tensor) -> np.ndarray:
    """(K,) cluster ids, most harmful first, by Supp. Eq. 14 on the validation ``images`` (V, ...)
    and ``labels`` (V,): the validation loss of each leave-one-cluster-out fine-tune (Eq. 9) on
    ``synset``. DDM's ranking on the paper's synset, DDM+'s on ours."""
    outputs = exp.perturbed_outputs(synset, leave_one_out_masks(num_clusters), images)          # (K, V, L)
    return removal.harmful_first(removal.global_objective(outputs, labels))


def rankings(exp: Experiment, synset: Synset, clustering: Clustering, val_idx: torch.Tensor,
             random_seeds: tuple[int, ...] = RANDOM_SEEDS, plus: Synset | None = None
             ) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Cluster orders, most harmful first, by Supp. Eq. 14 on the validation images ``val_idx``:
    (orders by ranking key, random orders by seed).

    - ``ddm``: the validation loss of each leave-one-cluster-out fine-tune (Eq. 9) on ``synset``;
    - ``ddm_plus`` (only given ``plus``, DDM+'s synset; ours, not the paper's): the same on ``plus``;
    - ``exact``: the same loss of the exact leave-one-out retrains (what DDM approximates);
    - ``tracin``: the first-order increase of the validation loss when a cluster is left out;
    - ``ddm_helpful`` / ``exact_helpful``: the two orders reversed (the signal check).
    """
    K = clustering.num_clusters
    x, y = exp.test.images[val_idx], exp.test.labels[val_idx]
    exact_logits = exp.exact_retrain_logits([(k,) for k in range(K)], clustering)[:, val_idx]          # (K, V, L)
    exact_loss = removal.global_objective(exact_logits, y)                                            # (K,)
    tracin = baselines.tracin_effects(exp.new_model(), exp.target(), exp.train.images, exp.train.labels,
                                      clustering, x, y, exp.config.train.lr).sum(0)                   # (K,)
    orders = {"ddm": synset_order(exp, synset, K, x, y), "exact": removal.harmful_first(exact_loss),
              "tracin": removal.harmful_first(tracin)}
    if plus is not None:
        orders["ddm_plus"] = synset_order(exp, plus, K, x, y)
    orders["ddm_helpful"] = orders["ddm"][::-1].copy()
    orders["exact_helpful"] = orders["exact"][::-1].copy()
    random_orders = {seed: np.random.default_rng(seed).permutation(K) for seed in random_seeds}
    return orders, random_orders


def predicted_global_objective(target_logits: torch.Tensor, changes: torch.Tensor,
                               labels: torch.Tensor) -> torch.Tensor:
    r"""Supp. Eq. 14 on an influence function's prediction: (K,) the validation loss of the model
    without cluster k, its logits predicted as the target's plus the method's change,

    .. math:: \sum_{x \in V} \mathrm{CE}\big(z(x) + \Delta z_k(x),\, y\big).

    ``target_logits`` (V, L) on the validation images, ``changes`` (K, V, L) (the shared
    representation of :mod:`ddm.influence`), ``labels`` (V,). Lower: the cluster was more harmful,
    as :func:`ddm.removal.global_objective` reads it."""
    if changes.dim() != 3 or changes.shape[1:] != target_logits.shape:
        raise ValueError(f"expected changes (K, {', '.join(map(str, target_logits.shape))}), "
                         f"got {tuple(changes.shape)}")
    return removal.global_objective(target_logits[None] + changes, labels)


def influence_rankings(exp: Experiment, clustering: Clustering, val_idx: torch.Tensor,
                       keys: tuple[str, ...] = tuple(INFLUENCE_RANKINGS)
                       ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Cluster orders, most harmful first, by Supp. Eq. 14 on the logits each influence function
    of :data:`INFLUENCE_RANKINGS` predicts for the validation images ``val_idx``; and each
    method's wall time in seconds (by ranking key)."""
    y = exp.test.labels[val_idx]
    target = exp.target_logits(exp.test.images[val_idx])                                         # (V, L)
    orders, seconds = {}, {}
    for key in keys:
        measured = influence.influence_run(exp, INFLUENCE_RANKINGS[key], clustering, val_idx)     # changes (K, V, L)
        orders[key] = removal.harmful_first(predicted_global_objective(target, measured.changes, y))
        seconds[key] = measured.seconds
    return orders, seconds


def run(exp: Experiment, random_seeds: tuple[int, ...] = RANDOM_SEEDS) -> Result:
    """Table 3 measured for every ranking of :func:`rankings` (DDM+, ours, included) and
    :func:`influence_rankings` and every share of :data:`FRACTIONS`."""
    clustering = exp.clusters()
    synsets = distill_variants(exp, (PAPER_DDM, DDM_PLUS))
    val_idx, eval_idx = removal.validation_split(len(exp.test), seed=exp.config.eval.seed)
    orders, random_orders = rankings(exp, synsets[PAPER_DDM], clustering, val_idx, random_seeds,
                                     plus=synsets[DDM_PLUS])
    influence_orders, influence_seconds = influence_rankings(exp, clustering, val_idx)
    orders.update(influence_orders)
    sizes = clustering.sizes()
    removed = removal.removal_plan(RANKING_LABELS, orders, random_orders, sizes, FRACTIONS)
    sets = sorted(set(removed.values()))
    logits = dict(zip(sets, exp.exact_retrain_logits(sets, clustering)))                 # set -> (N_test, L)
    y = exp.test.labels[eval_idx]

    rows = []
    for (key, seed, x), clusters in removed.items():
        share, class_share = removal.removed_shares(clusters, sizes, clustering.cluster_class, exp.num_classes)
        rows.append({"key": key, "ranking": RANKING_LABELS[key], "kind": RANKING_KINDS[key], "seed": seed,
                     "asked (%)": x, "removed (%)": share * 100, "clusters removed": len(clusters),
                     "largest share of one class removed (%)": class_share * 100,
                     "test accuracy (%)": accuracy(logits[clusters][eval_idx], y) * 100})
    curves = pd.DataFrame(rows)

    numbers: dict[str, float | None] = {
        "acc_target": accuracy(exp.target_logits(exp.test.images[eval_idx]), y) * 100, "acc_noise_floor": None,
        **{f"seconds_{key}": seconds for key, seconds in influence_seconds.items()}}
    if exp.config.eval.noise_seeds:
        other = exp.exact_retrain_logits([()], clustering, order_seed=exp.config.eval.noise_seeds[0])[0]
        numbers["acc_noise_floor"] = accuracy(other[eval_idx], y) * 100
    accuracy_of = curves.groupby(["key", "asked (%)"])["test accuracy (%)"]
    mean, spread = accuracy_of.mean(), accuracy_of.max() - accuracy_of.min()
    ddm_rows = curves[curves["key"] == "ddm"].set_index("asked (%)")
    for x in FRACTIONS:
        for key in RANKING_LABELS:
            numbers[f"acc_{key}_{x}"] = float(mean[key, x])
        numbers[f"spread_random_{x}"] = float(spread["random", x])
        numbers[f"removed_ddm_{x}"] = float(ddm_rows.loc[x, "removed (%)"])
        numbers[f"class_share_ddm_{x}"] = float(ddm_rows.loc[x, "largest share of one class removed (%)"])

    return Result(profile=exp.config.profile, dataset=exp.config.data.name, **numbers,
                  accuracy_table=_accuracy_table(numbers), removed_table=_removed_table(curves), curves=curves)


SECONDS_COLUMN = "seconds to rank"   # the accuracy table's cost column (the influence functions')


def _accuracy_table(numbers: dict[str, float | None]) -> pd.DataFrame:
    """Table 3's layout, from the headline numbers: one row per ranking, one column per share,
    and what ranking cost where it was measured (the influence functions; blank elsewhere)."""
    rows = {}
    for key, label in RANKING_LABELS.items():
        name = f"{label} (mean of seeds)" if key == "random" else label
        rows[name] = {"0% removed": numbers["acc_target"],
                      **{f"{x}% removed": numbers[f"acc_{key}_{x}"] for x in FRACTIONS},
                      SECONDS_COLUMN: numbers.get(f"seconds_{key}", np.nan)}
        if key == "random":
            rows[f"{label} (max - min of seeds)"] = {"0% removed": np.nan,
                                                     **{f"{x}% removed": numbers[f"spread_random_{x}"]
                                                        for x in FRACTIONS}, SECONDS_COLUMN: np.nan}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "ranking (test accuracy, %)"
    return table


def _removed_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per ranking (each random seed apart) and asked share: the share of the training set really
    removed and, in brackets, the largest share of a single class that went with it."""
    cells: dict[str, dict[str, str]] = {}
    for _, row in curves.iterrows():
        name = row["ranking"] if pd.isna(row["seed"]) else f"{row['ranking']}, seed {int(row['seed'])}"
        cells.setdefault(name, {})[f"asked {row['asked (%)']:g}%"] = (
            f"{row['removed (%)']:.1f}% ({row['largest share of one class removed (%)']:.0f}%)")
    table = pd.DataFrame.from_dict(cells, orient="index")
    table.index.name = "ranking: removed share of the training set (largest share of one class)"
    return table


# ------------------------------------------------------------------------------------------ the paper
def _paper_rows() -> dict[str, str]:
    """Our ranking key -> its row of Table 3."""
    return {"ddm": "DDM", "random": "Random",
            **{key: influence.PAPER_ROWS[method] for key, method in INFLUENCE_RANKINGS.items()}}


def paper_values(dataset: str) -> dict:
    """Table 3's rows: DDM, Random and the influence functions (MNIST only; the 0% column is the
    target's accuracy)."""
    if dataset != "mnist":
        return {}
    values = {"acc_target": paper.TABLE3_MNIST["DDM"][0]}
    for x in FRACTIONS:
        for key, row in _paper_rows().items():
            values[f"acc_{key}_{x}"] = paper.TABLE3_MNIST[row][x]
    return values


PAPER_CURVES_LABEL = "paper, MNIST (Table 3)"   # how the figure's legend names the curves below


def paper_curves(dataset_name: str) -> dict[str, dict[float, float]]:
    """Table 3's rows as curves for the figure (share removed in % -> accuracy),
    keyed by the label of our matching ranking. MNIST's for MNIST and for data the paper never
    used (the nearest reference there is); none for CIFAR and the others (Table 3 is MNIST only)."""
    key = datasets.paper_key(dataset_name) or DEFAULT_PAPER_DATASET
    if key != "mnist":
        return {}
    return {RANKING_LABELS[ranking]: {x: paper.TABLE3_MNIST[row][x] for x in FRACTIONS}
            for ranking, row in _paper_rows().items()}


# ------------------------------------------------------------------------------------------ verdict
def _noise_floor(run: RunNumbers) -> float | None:
    """|target - the same training under another data order|, in points (None: not measured)."""
    if not run.has("acc_target", "acc_noise_floor"):
        return None
    return abs(run["acc_target"] - run["acc_noise_floor"])


def _margin(run: RunNumbers, x: int, floor: float | None) -> float:
    """The gap two rankings must exceed at share ``x`` to count: the noise floor and
    SPREAD_SHARE x the random seeds' spread, whichever is larger."""
    return max(floor or 0.0, SPREAD_SHARE * run.get(f"spread_random_{x}", 0.0))


def _compare(run: RunNumbers, better: str, worse: str, floor: float | None,
             fractions: tuple[int, ...] = FRACTIONS) -> tuple[list[int], list[int], list[str]]:
    """Shares where ranking ``better`` is clearly above / clearly below ranking ``worse``, and
    per share "x%: gap (needed)"; ``fractions``: the shares to compare (Table 3's by default;
    chapter 13 passes Table 6's)."""
    above, below, gaps = [], [], []
    for x in fractions:
        if not run.has(f"acc_{better}_{x}", f"acc_{worse}_{x}"):
            continue
        gap, margin = run[f"acc_{better}_{x}"] - run[f"acc_{worse}_{x}"], _margin(run, x, floor)
        gaps.append(f"{x}%: {_points(gap)} (threshold {margin:.1f})")
        if gap > margin:
            above.append(x)
        elif gap < -margin:
            below.append(x)
    return above, below, gaps


def _points(gap: float) -> str:
    """A signed gap in points, one decimal, without a "-0.0"."""
    return f"{gap if abs(gap) >= 0.05 else 0.0:+.1f}"


def _shares(xs: list[int]) -> str:
    return ", ".join(f"{x}%" for x in xs) if xs else "none"


def _reading(run: RunNumbers) -> list[str]:
    lines = []
    floor = _noise_floor(run)
    rule = (f"A gap counts as clear when it exceeds both the noise floor and {SPREAD_SHARE:g} x the random seeds' "
            "spread at the same share.")
    if run.has("acc_target"):
        lines.append(f"* **Noise floor.** Nothing removed, the target scores {run['acc_target']:.1f}%"
                     + (f"; the same training under another data order scores {run['acc_noise_floor']:.1f}%, a floor "
                        f"of {floor:.1f} points. {rule}" if floor is not None else
                        f" (no second data order was trained, so only the seeds' spread judges a gap). {rule}"))
    above, below, gaps = _compare(run, "ddm", "random", floor)
    if gaps:
        paper_gaps = ", ".join(f"{paper.TABLE3_MNIST['DDM'][x] - paper.TABLE3_MNIST['Random'][x]:+.1f}"
                               for x in FRACTIONS)
        lines.append(f"* **DDM vs random removal (Table 3's claim).** Removing DDM's most harmful clusters first is "
                     f"clearly better than a random order at {len(above)} of {len(gaps)} shares ({_shares(above)}) "
                     f"and clearly worse at {len(below)} ({_shares(below)}); DDM − random, in points: "
                     + "; ".join(gaps) + f". The paper's MNIST gaps are {paper_gaps} at 1/10/20/50%.")
    if run.has("acc_ddm_1", "acc_target"):
        gain = run["acc_ddm_1"] - run["acc_target"]
        really = (f" (whole clusters: {run['removed_ddm_1']:.1f}% of the training set was removed)"
                  if run.has("removed_ddm_1") else "")
        judged = ("not judged: no noise floor was measured." if floor is None else
                  "a gain beyond the noise floor." if gain > floor else
                  "a loss beyond the noise floor." if gain < -floor else "within the noise floor.")
        lines.append(f"* **Does removing data help?** After removing 1% by DDM's ranking{really} the accuracy is "
                     f"{run['acc_ddm_1']:.1f}% ({_points(gain)} points against nothing removed; the paper: "
                     f"{paper.TABLE3_MNIST['DDM'][1] - paper.TABLE3_MNIST['DDM'][0]:+.1f} on MNIST): {judged}")
    for key, what in (("exact", "the exact leave-one-out retrains (what DDM approximates)"),
                      ("tracin", "the TracIn-style first-order estimate")):
        above, below, gaps = _compare(run, key, "random", floor)
        if gaps:
            lines.append(f"* **{RANKING_LABELS[key][0].upper()}{RANKING_LABELS[key][1:]}.** Ranking by {what} is "
                         f"clearly better than random at {len(above)} of {len(gaps)} shares ({_shares(above)}) and "
                         f"clearly worse at {len(below)} ({_shares(below)})."
                         + (" Even this reference is no ceiling: removing many clusters at once is not the sum of "
                            "removing each." if key == "exact" else ""))
    for key, method in INFLUENCE_RANKINGS.items():
        above, below, gaps = _compare(run, key, "random", floor)
        if gaps:
            row = influence.PAPER_ROWS[method]
            paper_gaps = ", ".join(f"{paper.TABLE3_MNIST[row][x] - paper.TABLE3_MNIST['Random'][x]:+.1f}"
                                   for x in FRACTIONS)
            cost = (f" Ranking took {run[f'seconds_{key}']:.3g} s." if run.has(f"seconds_{key}") else "")
            lines.append(f"* **{row} (Table 3's row).** Ranking by {influence.LABELS[method]} is clearly better "
                         f"than random at {len(above)} of {len(gaps)} shares ({_shares(above)}) and clearly worse "
                         f"at {len(below)} ({_shares(below)}); {row} − random, in points: " + "; ".join(gaps)
                         + f". The paper's MNIST gaps are {paper_gaps} at 1/10/20/50%.{cost}")
    against = []
    for key, method in INFLUENCE_RANKINGS.items():
        above, below, gaps = _compare(run, "ddm", key, floor)
        if gaps:
            against.append(f"{influence.PAPER_ROWS[method]}: clearly better at {_shares(above)}, clearly worse at "
                           f"{_shares(below)}")
    if against:
        lines.append("* **Table 3's claim: DDM's ranking beats the influence functions'.** DDM against "
                     + "; against ".join(against) + " (same thresholds as against random). The paper has DDM "
                     "above all three from 1% on.")
    plus_line = plus_reading(run, floor)
    if plus_line:
        lines.append(plus_line)
    _, hurts, gaps = _compare(run, "ddm_helpful", "random", floor)
    if gaps:
        _, exact_hurts, exact_gaps = _compare(run, "exact_helpful", "random", floor)
        lines.append(f"* **Signal check, the other way round.** If DDM's ranking carries information, removing its "
                     f"*most helpful* clusters first must hurt more than a random order: it does clearly at "
                     f"{len(hurts)} of {len(gaps)} shares ({_shares(hurts)})"
                     + (f"; the exact ranking's most helpful clusters, removed first, hurt clearly at "
                        f"{len(exact_hurts)} of {len(exact_gaps)} ({_shares(exact_hurts)})." if exact_gaps else "."))
        _, ddm_hurts, _ = _compare(run, "ddm", "random", floor)
        both = [x for x in hurts if x in ddm_hurts]
        if both:
            lines.append(f"  At {_shares(both)} *both* ends of DDM's ranking cost accuracy, so what it separates is "
                         "not good from bad data.")
    crowded = [x for x in FRACTIONS if run.get(f"class_share_ddm_{x}", 0.0) > CLASS_CROWDED]
    measured = [x for x in FRACTIONS if run.has(f"class_share_ddm_{x}")]
    if measured:
        lines.append(f"* **Which data went.** DDM's removal takes more than {CLASS_CROWDED:g}% of one class at "
                     f"{len(crowded)} of {len(measured)} shares ({_shares(crowded)}): "
                     + ("there part of the accuracy lost is a class thinned out, whatever the quality of its "
                        "images." if crowded else "no class is emptied, so the accuracy speaks to which images went."))
    return lines


PLUS_HEADING = ("* **DDM+ (ours, soft labels; not in the paper).** Its ranking is the same objective on its own "
                "synset, removed and retrained as DDM's row is.")


def plus_reading(run: RunNumbers, floor: float | None, fractions: tuple[int, ...] = FRACTIONS,
                 heading: str = PLUS_HEADING, plus: str = "ddm_plus") -> str | None:
    """DDM+ (ours) against the paper's DDM and against random removal, share by share, by the
    rule of :func:`_compare`, under ``heading``; chapter 13 passes Table 6's shares and its own
    heading. None where DDM+ was not measured (the runs recorded before it) or has nothing
    measured to stand against."""
    parts, worse_than_ddm, better_than_ddm = [], None, None
    for other, what in (("ddm", "the paper's DDM"), ("random", "a random order")):
        above, below, gaps = _compare(run, plus, other, floor, fractions)
        if not gaps:
            continue
        parts.append(f"Against {what} it is clearly better at {len(above)} of {len(gaps)} shares "
                     f"({_shares(above)}) and clearly worse at {len(below)} ({_shares(below)}); DDM+ − "
                     f"{'DDM' if other == 'ddm' else 'random'}, in points: " + "; ".join(gaps))
        if other == "ddm":
            better_than_ddm, worse_than_ddm = above, below
    if not parts:
        return None
    summary = ("" if better_than_ddm is None else
               " Against the paper's DDM the outcome is mixed." if better_than_ddm and worse_than_ddm else
               " Here DDM+ improves on the paper's DDM." if better_than_ddm else
               " Here DDM+ falls behind the paper's DDM." if worse_than_ddm else
               " Here DDM+ is not clearly different from the paper's DDM.")
    return heading + " " + ". ".join(parts) + "." + summary


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)
