"""Chapter 03: online evaluation and the attribution matrix (Sec. 3.3, Eq. 7-9; Supp. 6.2, Eq. 11).

Every attribution method is scored against exact leave-one-cluster-out retraining (the protocol
of :mod:`ddm.evaluation`): the paper's DDM and its variants, the references a reader needs
(random choice, nearest centroid, TracIn-style, gradient ascent on the real cluster) and the
noise floor (exact retraining under another data order). Then the Eq. 8 fit is asked the
datamodel question (LDS), and hierarchical attribution (Eq. 11) is timed against flat.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ddm import datasets, evaluation, paper
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, table, verdict_for
from ddm.evaluation import MethodScores
from ddm.experiment import Experiment
from ddm.variants import DDM_EQ6, DDM_MATCH, DDM_SOFT, PAPER_DDM, distill_variants, variant_config

CHAPTER = "03_online_attribution"
DDM_SLOW = "ddm_alg1_lr10"   # the paper's DDM, fine-tuned at a tenth of the paper's rate (Eq. 9)
BATCH_LABEL = 2              # the label of the test batch in the paper's Fig. 3 and Fig. 6
BATCH_SIZE = 32              # test images of that label averaged in the batch heat map

# Method key (ddm.variants / ddm.evaluation) -> the suffix of its headline fields.
SUFFIXES = {PAPER_DDM: "ddm", DDM_EQ6: "ddm_eq6", DDM_MATCH: "ddm_match", DDM_SOFT: "ddm_soft",
            DDM_SLOW: "ddm_slow", evaluation.RANDOM: "random", evaluation.NEAREST_CENTROID: "centroid",
            evaluation.TRACIN: "tracin", evaluation.REAL_ASCENT: "ascent", evaluation.NOISE_FLOOR: "noise"}
# How the comparison table and the figures name each method.
LABELS = {PAPER_DDM: "DDM, Alg. 1 (the paper's method)", DDM_EQ6: "DDM, Eq. 6 pairing",
          DDM_MATCH: "DDM-match (plain gradient matching)", DDM_SOFT: "DDM+ (ours, soft labels)",
          DDM_SLOW: "DDM, Alg. 1, fine-tune lr / 10", **evaluation.LABELS}
REFERENCES = (evaluation.RANDOM, evaluation.NEAREST_CENTROID, evaluation.TRACIN, evaluation.REAL_ASCENT,
              evaluation.NOISE_FLOOR, evaluation.EXACT)

# Verdict thresholds, named where they are used.
SPEARMAN_BAND = 0.05        # two mean Spearman correlations closer than this are called indistinguishable
DIST1_CLEAR_RATIO = 1.25    # DDM's Dist1 / random's above this: DDM's pick clearly matters more than a random one
LDS_SIGNAL = 0.1            # LDS above this: the model predicts exactly retrained multi-cluster removals
AGREE_MOSTLY_PCT = 80.0     # hierarchical and flat pick the same cluster this often: "mostly the same"
CALIBRATION_FACTOR = 2.0    # DDM's effects within this factor of the exact ones: the right size
CACHED_SECONDS = 1.0        # exact retraining "took" less than this: it came from the cache

# Dist3 = 1 / (1 + ||y - y'||^2) with y, y' probability vectors, so ||y - y'||^2 lies in [0, 2]
# and Dist3 in [1/3, 1]. Table 1 prints values outside that range.
DIST3_MIN, DIST3_MAX = 1.0 / 3.0, 1.0


def paper_dist3_outside_range() -> list[tuple[str, str, float]]:
    """(Table 1 row, data set, Dist3) for every Dist3 the paper prints outside [1/3, 1]."""
    return [(method, key, row[2]) for method, by_key in paper.TABLE1.items() for key, row in by_key.items()
            if row[2] is not None and not DIST3_MIN <= row[2] <= DIST3_MAX]


def _listing(values: list[tuple[str, str, float]]) -> str:
    return ", ".join(f"{v:g} ({method}, {datasets.label(key)})" for method, key, v in values)


def paper_dist3_sentence() -> str:
    """What is wrong with Table 1's Dist3 column, computed from :data:`ddm.paper.TABLE1`."""
    outside = paper_dist3_outside_range()
    above = [o for o in outside if o[2] > DIST3_MAX]
    below = [o for o in outside if o[2] < DIST3_MIN]
    parts = []
    if above:
        parts.append(f"Table 1 prints Dist3 values above 1, which 1/(1 + x) with x >= 0 can never reach: "
                     f"{_listing(above)}.")
    if below:
        parts.append(f"With softmax outputs (which Dist1 x100 values around 10 imply) x is at most 2, so Dist3 "
                     f"is at least 1/3; Table 1 also prints {_listing(below)}.")
    if parts:
        parts.append("The paper's Dist3 column cannot be the quantity its Eq. 10 defines; we show it but read "
                     "nothing into it.")
    return " ".join(parts)


def _dist3_note() -> str:
    outside = paper_dist3_outside_range()
    if not outside:
        return ""
    values = ", ".join(sorted({f"{v:g}" for _, _, v in outside}, key=float))
    return f"1/(1 + x) lies in [1/3, 1]; Table 1 prints {values}"


DIST3_NOTE = _dist3_note()


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    num_clusters: int = headline("clusters, K", digits=4)
    test_points: int = headline("test points", digits=3)
    # Ranking clusters: mean Spearman with exact leave-one-cluster-out retraining.
    spearman_ddm: float = headline("Spearman with exact, DDM (Alg. 1, the paper's method)", digits=2)
    spearman_ddm_eq6: float = headline("Spearman with exact, DDM (Eq. 6 pairing)", digits=2)
    spearman_ddm_match: float = headline("Spearman with exact, DDM-match", digits=2)
    spearman_ddm_soft: float = headline("Spearman with exact, DDM+ (ours, soft labels)", digits=2)
    spearman_ddm_slow: float = headline("Spearman with exact, DDM at fine-tune lr / 10", digits=2)
    spearman_random: float = headline("Spearman with exact, random choice", digits=2)
    spearman_centroid: float = headline("Spearman with exact, nearest centroid", digits=2)
    spearman_tracin: float = headline("Spearman with exact, TracIn-style", digits=2)
    spearman_ascent: float = headline("Spearman with exact, gradient ascent on the real cluster", digits=2)
    spearman_noise: float | None = headline("Spearman with exact, noise floor (another data order)", digits=2,
                                            default=None)
    # Top-1 agreement: the method's top cluster is exact retraining's top cluster.
    top1_ddm: float = headline("top-1 agreement, DDM (Alg. 1)", digits=2)
    top1_ddm_eq6: float = headline("top-1 agreement, DDM (Eq. 6 pairing)", digits=2)
    top1_ddm_match: float = headline("top-1 agreement, DDM-match", digits=2)
    top1_ddm_soft: float = headline("top-1 agreement, DDM+ (ours, soft labels)", digits=2)
    top1_ddm_slow: float = headline("top-1 agreement, DDM at fine-tune lr / 10", digits=2)
    top1_random: float = headline("top-1 agreement, random choice", digits=2)
    top1_centroid: float = headline("top-1 agreement, nearest centroid", digits=2)
    top1_tracin: float = headline("top-1 agreement, TracIn-style", digits=2)
    top1_ascent: float = headline("top-1 agreement, gradient ascent on the real cluster", digits=2)
    top1_noise: float | None = headline("top-1 agreement, noise floor", digits=2, default=None)
    # Eq. 10 (Table 1's metrics) on the located cluster, exactly unlearned.
    dist1_x100_ddm: float = headline("Dist1 x100, DDM (Alg. 1)")
    dist1_x100_ddm_eq6: float = headline("Dist1 x100, DDM (Eq. 6 pairing)")
    dist1_x100_ddm_match: float = headline("Dist1 x100, DDM-match")
    dist1_x100_ddm_soft: float = headline("Dist1 x100, DDM+ (ours, soft labels)")
    dist1_x100_ddm_slow: float = headline("Dist1 x100, DDM at fine-tune lr / 10")
    dist1_x100_random: float = headline("Dist1 x100, random choice")
    dist1_x100_centroid: float = headline("Dist1 x100, nearest centroid")
    dist1_x100_tracin: float = headline("Dist1 x100, TracIn-style")
    dist1_x100_ascent: float = headline("Dist1 x100, gradient ascent on the real cluster")
    dist1_x100_noise: float | None = headline("Dist1 x100, noise floor", default=None)
    dist1_x100_exact: float = headline("Dist1 x100, exact retraining's own top cluster")
    dist1_x100_best: float = headline("Dist1 x100, best single pick (upper bound)")
    dist2_ddm: float = headline("Dist2, DDM (Alg. 1)")
    dist2_ddm_eq6: float = headline("Dist2, DDM (Eq. 6 pairing)")
    dist2_ddm_match: float = headline("Dist2, DDM-match")
    dist2_ddm_soft: float = headline("Dist2, DDM+ (ours, soft labels)")
    dist2_ddm_slow: float = headline("Dist2, DDM at fine-tune lr / 10")
    dist2_random: float = headline("Dist2, random choice")
    dist2_centroid: float = headline("Dist2, nearest centroid")
    dist2_tracin: float = headline("Dist2, TracIn-style")
    dist2_ascent: float = headline("Dist2, gradient ascent on the real cluster")
    dist2_noise: float | None = headline("Dist2, noise floor", default=None)
    dist3_ddm: float = headline("Dist3, DDM (Alg. 1)", note=DIST3_NOTE)
    dist3_ddm_eq6: float = headline("Dist3, DDM (Eq. 6 pairing)")
    dist3_ddm_match: float = headline("Dist3, DDM-match", note=DIST3_NOTE)
    dist3_ddm_soft: float = headline("Dist3, DDM+ (ours, soft labels)")
    dist3_ddm_slow: float = headline("Dist3, DDM at fine-tune lr / 10")
    dist3_random: float = headline("Dist3, random choice", note=DIST3_NOTE)
    dist3_centroid: float = headline("Dist3, nearest centroid")
    dist3_tracin: float = headline("Dist3, TracIn-style")
    dist3_ascent: float = headline("Dist3, gradient ascent on the real cluster")
    dist3_noise: float | None = headline("Dist3, noise floor", default=None)
    # The linear datamodel (Eq. 7-8) against exactly retrained multi-cluster removals.
    lds_ddm_w: float = headline("LDS, DDM's W fitted by Eq. 8", digits=2)
    lds_ddm: float = headline("LDS, sum of DDM's leave-one-out effects", digits=2)
    lds_tracin: float = headline("LDS, sum of TracIn-style effects", digits=2)
    lds_random: float = headline("LDS, sum of random effects", digits=2)
    lds_exact: float = headline("LDS, sum of exact leave-one-out effects (additivity)", digits=2)
    fit_r_ddm_w: float = headline("in-sample r of W with DDM's own perturbed margins", digits=2)
    # Hierarchical attribution (Eq. 11).
    hierarchical_speedup: float = headline("hierarchical speed-up, measured (x)", digits=2)
    hierarchical_finetune_ratio: float = headline("fine-tunes, flat / hierarchical: K / (L + C)", digits=2)
    hierarchical_agreement_pct: float = headline("hierarchical and flat pick the same cluster (%)")
    dist1_x100_hierarchical: float = headline("Dist1 x100, hierarchical pick")
    # Cost.
    online_seconds: float = headline("online seconds for all K clusters, DDM")
    exact_retrain_seconds: float = headline(
        "exact retrain seconds for all K clusters", note="K retrains + K + 1 of the noise floor; 0 when cached")
    # How big the effects are.
    mean_abs_effect: float = headline("mean |margin drop| from deleting one cluster")
    mean_abs_order_change: float | None = headline("mean |margin change| from another data order", default=None)
    flipped_pct: float = headline("predictions flipped by deleting one cluster (%)")
    calibration_ddm: float = headline("mean |DDM effect| / mean |exact effect|", digits=2)

    comparison: pd.DataFrame = table("every method against exact leave-one-cluster-out retraining")
    lds: pd.DataFrame = table("the linear datamodeling score")
    hierarchy: pd.DataFrame = table("hierarchical against flat attribution")
    scores: dict[str, MethodScores] = detail()       # method key -> its scores (for the figures)
    effects: dict[str, np.ndarray] = detail()        # method key -> (N, K) predicted margin drops
    exact_effects: np.ndarray = detail()             # (N, K) margin drops of exact retraining
    class_names: tuple[str, ...] = detail()
    heat_label: str = detail()                       # the label of the heat map's test image
    heat_ddm: np.ndarray = detail()                  # (L, C) DDM's effects for that test image
    heat_exact: np.ndarray = detail()                # (L, C) exact retraining's for the same image
    batch_label: str = detail()
    heat_batch: np.ndarray = detail()                # (L, C) DDM's effects averaged over a batch of one label


def _method_fields(scores: dict[str, MethodScores]) -> dict[str, float | None]:
    out = {}
    for key, suffix in SUFFIXES.items():
        s = scores.get(key)
        out.update({f"spearman_{suffix}": s and s.spearman, f"top1_{suffix}": s and s.top1,
                    f"dist1_x100_{suffix}": s and s.dist1_x100, f"dist2_{suffix}": s and s.dist2,
                    f"dist3_{suffix}": s and s.dist3})
    return out


def run(exp: Experiment, heat_point: int = 0) -> Result:
    """Score every method against exact leave-one-cluster-out retraining, fit W by Eq. 8 and
    measure its LDS, and time hierarchical against flat attribution. ``heat_point``: which of the
    evaluation's test points the single-image heat maps show."""
    clustering = exp.clusters()
    synsets = distill_variants(exp)
    truth = evaluation.leave_one_out_ground_truth(exp, clustering)
    effects, seconds = {}, {}
    for variant, synset in synsets.items():
        effects[variant], seconds[variant] = evaluation.ddm_effects(exp, synset, truth)
    effects[DDM_SLOW], seconds[DDM_SLOW] = evaluation.ddm_effects(
        exp, synsets[PAPER_DDM], truth, evaluation.tenth_rate(exp.config.online))
    effects.update(evaluation.baseline_effects(exp, clustering, truth))
    scores = evaluation.score_methods(effects, truth)
    exact = truth.exact_effects()

    lds = evaluation.lds_evaluation(exp, synsets[PAPER_DDM], clustering, truth, {
        PAPER_DDM: effects[PAPER_DDM], evaluation.TRACIN: effects[evaluation.TRACIN],
        evaluation.RANDOM: effects[evaluation.RANDOM], evaluation.EXACT: exact})
    class_synset = exp.synset(variant_config(exp.config.distill, PAPER_DDM),
                              dataclasses.replace(exp.config.clusters, features="class"))
    hier = evaluation.hierarchical_vs_flat(exp, synsets[PAPER_DDM], class_synset, clustering, truth)
    scale = evaluation.measure_effect_scale(truth)
    seed = truth.noise_seed

    classes = tuple(exp.train.classes)
    batch_label = BATCH_LABEL if exp.num_classes > BATCH_LABEL else 0
    batch = evaluation.batch_effects(exp, synsets[PAPER_DDM], batch_label, BATCH_SIZE)
    heat_point = min(heat_point, len(truth.test_index) - 1)
    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name,
        num_clusters=clustering.num_clusters, test_points=len(truth.test_index),
        **_method_fields(scores),
        dist1_x100_exact=scores[evaluation.EXACT].dist1_x100, dist1_x100_best=evaluation.best_dist1_x100(truth),
        lds_ddm_w=lds.scores[evaluation.DDM_W], lds_ddm=lds.scores[PAPER_DDM],
        lds_tracin=lds.scores[evaluation.TRACIN], lds_random=lds.scores[evaluation.RANDOM],
        lds_exact=lds.scores[evaluation.EXACT], fit_r_ddm_w=lds.in_sample_r,
        hierarchical_speedup=hier.speedup, hierarchical_finetune_ratio=hier.finetunes_flat / hier.finetunes_hier,
        hierarchical_agreement_pct=hier.agreement_pct, dist1_x100_hierarchical=hier.dist1_x100_hier,
        online_seconds=seconds[PAPER_DDM], exact_retrain_seconds=truth.seconds,
        mean_abs_effect=scale.mean_abs_effect,
        mean_abs_order_change=None if seed is None else scale.mean_abs_order_change[seed],
        flipped_pct=scale.flipped_pct, calibration_ddm=evaluation.calibration(effects[PAPER_DDM], truth),
        comparison=evaluation.scores_table(scores, LABELS), hierarchy=hier.table(),
        lds=lds.table({**LABELS, evaluation.EXACT: "Exact leave-one-out retraining (additivity)"}),
        scores=scores, effects=effects, exact_effects=exact, class_names=classes,
        heat_label=str(exp.test.classes[int(truth.labels[heat_point])]),
        heat_ddm=evaluation.class_by_cluster(effects[PAPER_DDM][heat_point], clustering),
        heat_exact=evaluation.class_by_cluster(exact[heat_point], clustering),
        batch_label=str(exp.test.classes[batch_label]), heat_batch=evaluation.class_by_cluster(batch, clustering),
    )


def paper_values(dataset: str) -> dict:
    """Table 1's Dist1 x100 / Dist2 / Dist3 for DDM-full (-> DDM, Alg. 1), DDM-match and Random
    Select, the K of Sec. 4.1, and Supp. 6.2's hierarchical speed-up, for one of the paper's data sets."""
    if dataset not in paper.TABLE1["DDM-full"]:
        return {}
    values: dict = {"num_clusters": datasets.spec(dataset).num_classes * paper.CLUSTERS_PER_CLASS}
    for row, suffix in (("DDM-full", "ddm"), ("DDM-match", "ddm_match"), ("Random Select", "random")):
        d1, d2, d3 = paper.TABLE1[row][dataset]
        values.update({f"dist1_x100_{suffix}": d1, f"dist2_{suffix}": d2, f"dist3_{suffix}": d3})
    values["hierarchical_speedup"] = paper.HIERARCHICAL_SPEEDUP.get(dataset)
    return {k: v for k, v in values.items() if v is not None}


# ------------------------------------------------------------------------------------------ verdict
def _close(a: float, b: float) -> bool:
    return abs(a - b) <= SPEARMAN_BAND


def _ranking(run: RunNumbers) -> list[str]:
    if not run.has("spearman_ddm", "spearman_random"):
        return []
    ddm, rand = run["spearman_ddm"], run["spearman_random"]
    tracin, floor = run["spearman_tracin"], run["spearman_noise"]
    seen = [f"random choice {rand:+.2f}"] + ([f"TracIn-style {tracin:+.2f}"] if tracin is not None else []) \
        + ([f"exact retraining under another data order {floor:+.2f}"] if floor is not None else [])
    line = (f"* **Ranking clusters.** DDM as printed (Alg. 1) reaches a mean Spearman correlation of {ddm:+.2f} "
            f"with exact leave-one-cluster-out retraining ({', '.join(seen)}; closer than {SPEARMAN_BAND:g} "
            f"is called indistinguishable). ")
    if ddm < rand - SPEARMAN_BAND:
        line += "DDM does **worse than random choice**: its ranking runs against exact retraining."
    elif _close(ddm, rand):
        line += "DDM is **not distinguishable from random choice**: the paper's ranking claim does not reproduce here."
    elif tracin is not None and ddm < tracin - SPEARMAN_BAND:
        line += ("DDM carries some signal, but **less than a TracIn-style sum** over the same checkpoints, "
                 "which needs no distillation.")
    elif tracin is not None and _close(ddm, tracin):
        line += "DDM beats random choice and is on par with the TracIn-style sum."
    else:
        line += "DDM beats random choice and the simple baselines here."
    lines = [line]
    if floor is not None:
        if _close(floor, rand) or floor < rand:
            lines.append(f"  The noise floor itself ({floor:+.2f}) is no better than random: at this scale exact "
                         f"retraining does not agree with itself on the ranking, so no method can be judged by it.")
        elif ddm >= floor - SPEARMAN_BAND:
            lines.append(f"  DDM agrees with exact retraining as well as exact retraining agrees with itself "
                         f"under another data order ({floor:+.2f}).")
        else:
            lines.append(f"  Exact retraining under another data order agrees at {floor:+.2f}, so the ranking "
                         f"is measurable, and DDM stays {floor - ddm:.2f} below what is achievable.")
    soft, slow = run["spearman_ddm_soft"], run["spearman_ddm_slow"]
    for value, what in ((soft, "DDM+ (ours, soft labels)"), (slow, "At a tenth of the fine-tuning rate DDM")):
        if value is None:
            continue
        how = ("ranks better" if value > ddm + SPEARMAN_BAND else "ranks worse" if value < ddm - SPEARMAN_BAND
               else "ranks no differently")
        lines.append(f"  {what} {how} ({value:+.2f}).")
    return lines


def _dist1(run: RunNumbers) -> list[str]:
    if not run.has("dist1_x100_ddm", "dist1_x100_random") or run["dist1_x100_random"] <= 0:
        return []
    ddm, rand = run["dist1_x100_ddm"], run["dist1_x100_random"]
    ratio = ddm / rand
    line = (f"* **Dist1 (Table 1's metric).** Exactly unlearning DDM's pick moves the output by {ddm:.2f} (x100) "
            f"against {rand:.2f} for a random pick, {ratio:.2f} times as much (called clearly more above "
            f"{DIST1_CLEAR_RATIO:g}): ")
    line += ("DDM locates clusters that matter more than random ones." if ratio > DIST1_CLEAR_RATIO else
             "DDM's picks matter **no more than random ones** by the paper's own metric.")
    mnist = paper.TABLE1["DDM-full"]["mnist"][0] / paper.TABLE1["Random Select"]["mnist"][0]
    line += f" The paper's ratio is {mnist:.1f} on MNIST."
    if run.has("dist1_x100_best") and run["dist1_x100_best"] > 0:
        line += (f" The best single pick reaches {run['dist1_x100_best']:.2f}, so DDM achieves "
                 f"{ddm / run['dist1_x100_best'] * 100:.0f}% of what is possible.")
    return [line]


def _lds(run: RunNumbers) -> list[str]:
    if not run.has("lds_ddm_w"):
        return []
    w = run["lds_ddm_w"]
    line = (f"* **Linear datamodel (Eq. 7-8).** W fitted by Eq. 8 predicts exactly retrained multi-cluster "
            f"removals with LDS {w:+.2f} (signal above {LDS_SIGNAL:g}): "
            + ("it carries information about what deleting many clusters does." if w > LDS_SIGNAL else
               "it does **not** predict what exact retraining does when many clusters go at once."))
    if run.has("lds_exact"):
        line += (f" Summing the exact single-cluster effects reaches {run['lds_exact']:+.2f}: the most any additive "
                 f"model built from one-cluster deletions could reach here.")
    return [line]


def _hierarchy(run: RunNumbers) -> list[str]:
    if not run.has("hierarchical_speedup", "hierarchical_agreement_pct"):
        return []
    speed, agree = run["hierarchical_speedup"], run["hierarchical_agreement_pct"]
    ratio = run["hierarchical_finetune_ratio"]
    claimed = ", ".join(f"{v:g}x on {datasets.label(k)}" for k, v in paper.HIERARCHICAL_SPEEDUP.items())
    line = (f"* **Hierarchy (Eq. 11).** Hierarchical attribution ran {speed:.2f} times as fast as flat"
            + (f" with {ratio:.1f} times fewer fine-tunes" if ratio is not None else "")
            + (", so it was **slower** here: two rounds of fine-tuning calls cost more than the fine-tunes they save"
               if speed < 1 else "")
            + f"; the paper claims {claimed}, where K = 100 and 1,000. It picked the same cluster as flat "
            f"attribution for {agree:.0f}% of the test points (mostly the same at {AGREE_MOSTLY_PCT:g}% or more): "
            + ("the shortcut keeps the answer." if agree >= AGREE_MOSTLY_PCT else
               "the shortcut **changes the answer** for many test points, because the class chosen first "
               "need not hold the top cluster."))
    return [line]


def _cost(run: RunNumbers) -> list[str]:
    if not run.has("online_seconds", "exact_retrain_seconds"):
        return []
    online, exact = run["online_seconds"], run["exact_retrain_seconds"]
    line = f"* **Cost.** The online stage for all K clusters took {online:.2g} s"
    if exact < CACHED_SECONDS:
        line += (f"; the exact retrains came from the cache in this run (under {CACHED_SECONDS:g} s), so their cost "
                 f"is not measured here (`benchmarks/bench_online.py` measures the ratio properly).")
    else:
        line += (f" against {exact:.0f} s of exact retraining (the K leave-one-out retrains and the K + 1 of the "
                 f"noise floor, about twice what K cost). The offline distillation comes on top, once.")
    return [line]


def _scale(run: RunNumbers) -> list[str]:
    lines = []
    if run.has("mean_abs_effect", "mean_abs_order_change"):
        effect, order = run["mean_abs_effect"], run["mean_abs_order_change"]
        flipped = f"; {run['flipped_pct']:.1f}% of predictions flip" if run.has("flipped_pct") else ""
        lines.append(f"* **Effect size.** Deleting one cluster moves a test margin by {effect:.3f} on average, "
                     f"retraining under another data order by {order:.3f}{flipped}. "
                     + ("A cluster's effect is **smaller than the retraining noise**: attribution at this K "
                        "measures a whisper." if effect < order else
                        "A cluster's effect stands above the retraining noise."))
    if run.has("calibration_ddm"):
        c = run["calibration_ddm"]
        lines.append(f"* **Calibration.** DDM's predicted effects are {c:.2f} times the exact ones in size "
                     f"(the right size within a factor {CALIBRATION_FACTOR:g}): "
                     + ("the fine-tune moves margins about as far as deleting the cluster does." if
                        1 / CALIBRATION_FACTOR <= c <= CALIBRATION_FACTOR else
                        "the fine-tune moves margins far **more** than deleting the cluster does." if
                        c > CALIBRATION_FACTOR else
                        "the fine-tune moves margins far **less** than deleting the cluster does."))
    return lines


def _reading(run: RunNumbers) -> list[str]:
    return _ranking(run) + _dist1(run) + _lds(run) + _hierarchy(run) + _cost(run) + _scale(run)


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run, then what the paper's
    Dist3 column cannot be."""
    text = verdict_for(_reading, result, recorded)
    dist3 = paper_dist3_sentence()
    return f"{text}\n\n**The paper's Dist3.** {dist3}" if dist3 else text


# ------------------------------------------------------------------------------------------ figures
def figures(result: Result, provenance: str) -> dict:
    """The chapter's figures, keyed by the name the notebook glues each under."""
    from ddm import plots

    shown = [k for k in result.scores if k not in (evaluation.NOISE_FLOOR, evaluation.EXACT)]
    spearman = pd.Series({LABELS[k]: result.scores[k].spearman for k in shown})
    low, high = (np.array([result.scores[k].interval[i] for k in shown]) for i in (0, 1))
    bars = plots.method_bars(
        spearman, provenance, "mean Spearman correlation with exact retraining",
        references=tuple(LABELS[k] for k in REFERENCES), intervals=(low, high), floor=result.spearman_noise,
        floor_label="noise floor: exact retraining under another data order",
        title="Ranking clusters like exact retraining does")
    scatter = plots.effect_scatter({LABELS[k]: result.effects[k] for k in (PAPER_DDM, DDM_SOFT, evaluation.TRACIN)},
                                   result.exact_effects, provenance)
    rows = list(result.class_names)
    columns = [str(c + 1) for c in range(result.heat_ddm.shape[1])]
    heat = {
        "fig-heat-ddm": plots.attribution_heatmap(
            result.heat_ddm, rows, columns, provenance,
            f"DDM (Alg. 1): one test image of label {result.heat_label}", "predicted margin drop if deleted"),
        "fig-heat-exact": plots.attribution_heatmap(
            result.heat_exact, rows, columns, provenance,
            f"Exact retraining: the same test image (label {result.heat_label})", "margin drop when deleted"),
        "fig-heat-batch": plots.attribution_heatmap(
            result.heat_batch, rows, columns, provenance,
            f"DDM (Alg. 1): mean over up to {BATCH_SIZE} test images of label {result.batch_label}",
            "mean predicted margin drop"),
    }
    return {"fig-spearman-bars": bars, "fig-effect-scatter": scatter, **heat}
