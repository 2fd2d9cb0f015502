"""Chapter 06: locating influential clusters, DDM against influence functions (Tables 1 and 2, Eq. 10).

The paper's headline claim: DDM locates the training cluster that matters most to a prediction
better than influence functions do. Its protocol (Sec. 4.1): for a test point, each method
*locates* a cluster (one per objective of Eq. 10), the cluster is removed and the network
retrained exactly, and the distance between the retrained and the original output is measured;
a larger Dist1 or Dist2 means a more influential cluster was found, a smaller Dist3 ... the least.

Every method here ends in the same thing, the predicted change of each test logit when each
cluster is deleted (or, for the rankers of Table 1, a score per cluster), and one protocol
(:mod:`ddm.locating`, :mod:`ddm.evaluation`) scores all of them:

- **Table 1** (the ablation): Random Select, Predict-based, Clustering-based (both defined by us,
  the paper does not say how they pick), DDM w/o cluster (groups by sequence number), DDM-match
  and DDM-full, the DDM rows by the paper's protocol, one W fitted by Eq. 8 per objective; beside
  them, not one of the paper's rows, **DDM+ (ours)**: Algorithm 1 with learnable soft labels
  (:data:`ddm.variants.DDM_PLUS`), through the same protocol as DDM-full;
- **Table 2**: the influence functions of dattri (:mod:`ddm.influence`: Koh et al., FastIF,
  Scaleup, and beyond the paper LiSSA, TracIn, TRAK) with their wall time and peak memory, and
  DDM+ beside the paper's DDM;
- the references a reader needs: exact retraining's own pick (the most any method can reach),
  retraining noise alone (nothing removed, another data order), and beside Dist1 the ground-truth
  metrics of chapter 03 (Spearman with exact leave-one-cluster-out retraining, the cluster LDS);
- the spread over several draws of test points (the paper's 20 per draw).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, book, datasets, evaluation, influence, locating, paper
from ddm.attribution import margin_effects
from ddm.chapters.base import (DEFAULT_PAPER_DATASET, NOT_RECORDED_NOTE, ChapterResult, RunNumbers, detail, headline,
                               table, verdict_for)
from ddm.experiment import Experiment
from ddm.locating import Picks
from ddm.variants import DDM_MATCH, DDM_PLUS, PAPER_DDM, variant_config

CHAPTER = "06_influence_functions"
TEST_DRAWS = 3     # draws of the evaluation's test points (seeds eval.seed, eval.seed + 1, ...)

# Method suffix (the end of its headline fields) -> how the tables and figures name it.
LABELS = {
    "random": "Random Select",
    "predict": "Predict-based (ours: nearest mean prediction)",
    "clustering": "Clustering-based (ours: nearest feature centroid)",
    "ddm_wo_cluster": "DDM w/o cluster (groups by sequence number)",
    "ddm_match": "DDM-match (plain gradient matching)",
    "ddm": "DDM-full (Alg. 1, the paper's method)",
    "ddm_plus": "DDM+ (ours, soft labels; not the paper's method)",
    "if": "Koh et al. (explicit H^-1, last layer)",
    "lissa": "Influence function, LiSSA (last layer)",
    "fastif": "FastIF (kNN + CG, last layer)",
    "scaleup": "Scaleup (Arnoldi, full network)",
    "tracin": "TracIn (dattri)",
    "trak": "TRAK (dattri)",
    "exact": "Exact retraining's own pick (upper bound)",
    "noise": "Retraining noise alone (nothing removed, another order)",
}
TABLE1 = ("random", "predict", "clustering", "ddm_wo_cluster", "ddm_match", "ddm")
TABLE2 = ("random", "if", "fastif", "scaleup", "ddm")
BEYOND_PAPER = ("lissa", "tracin", "trak")          # influence methods the paper does not run
# DDM+'s headline fields came after this chapter's cpu records (2026-12-05), which lack them
# until re-made (the note marks them: ChapterResult.not_yet_recorded).
_NOT_YET = {"default": None, "note": NOT_RECORDED_NOTE}
OURS = ("ddm_plus",)     # our extension of DDM, shown beside the paper's rows of both tables, never as one
INFLUENCE_METHODS = {influence.IF_EXPLICIT: "if", influence.LISSA: "lissa", influence.FASTIF: "fastif",
                     influence.ARNOLDI: "scaleup", influence.TRACIN: "tracin", influence.TRAK: "trak"}
DDM_VARIANTS = {PAPER_DDM: "ddm", DDM_MATCH: "ddm_match", DDM_PLUS: "ddm_plus"}
# The paper's row for each of our methods, in Table 1 and in Table 2.
PAPER_TABLE1 = {"random": "Random Select", "predict": "Predict-based", "clustering": "Clustering-based",
                "ddm_wo_cluster": "DDM w/o cluster", "ddm_match": "DDM-match", "ddm": "DDM-full"}
PAPER_TABLE2 = {"random": "Random", "if": "Koh et al.", "fastif": "FastIF", "scaleup": "Scaleup", "ddm": "DDM"}
REFERENCES = ("random", "predict", "clustering", "exact", "noise")

# Verdict thresholds, named where they are used.
SPEARMAN_BAND = 0.05     # two mean Spearman correlations closer than this are called indistinguishable
SPREADS_APART = 1.0      # two Dist1 means are called different when their gap exceeds this many times
                         # the sum of their spreads over the test-point draws
MAX_DECIMALS = 4         # decimals a table cell may show (tools/check_outputs.py refuses longer floats)
ONE_PICK_PCT = 50.0      # a method giving one cluster to more than this share of the test points has a fixed pick


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    num_clusters: int = headline("clusters, K", digits=4)
    test_points: int = headline("test points, all draws together", digits=3)
    test_draws: int = headline("draws of test points", digits=2)
    rank_scaleup: int | None = headline("positive Hessian eigenvectors Scaleup kept", digits=3, default=None,
                                        note="of influence.arnoldi_rank; the others were not positive")
    retrains_ddm_wo_cluster: int | None = headline("exact retrains of the groups DDM w/o cluster located", digits=4,
                                                   default=None)
    # Eq. 10 at the located cluster, exactly unlearned: mean over the test-point draws and their spread.
    dist1_x100_random: float | None = headline("Dist1 x100, Random Select", default=None)
    dist1_sd_random: float | None = headline("Dist1 x100 spread over test-point draws, Random Select", default=None)
    dist1_x100_predict: float | None = headline("Dist1 x100, Predict-based", default=None)
    dist1_sd_predict: float | None = headline("Dist1 x100 spread over test-point draws, Predict-based", default=None)
    dist1_x100_clustering: float | None = headline("Dist1 x100, Clustering-based", default=None)
    dist1_sd_clustering: float | None = headline("Dist1 x100 spread over test-point draws, Clustering-based", default=None)
    dist1_x100_ddm_wo_cluster: float | None = headline("Dist1 x100, DDM w/o cluster", default=None)
    dist1_sd_ddm_wo_cluster: float | None = headline("Dist1 x100 spread over test-point draws, DDM w/o cluster", default=None)
    dist1_x100_ddm_match: float | None = headline("Dist1 x100, DDM-match", default=None)
    dist1_sd_ddm_match: float | None = headline("Dist1 x100 spread over test-point draws, DDM-match", default=None)
    dist1_x100_ddm: float | None = headline("Dist1 x100, DDM-full (Alg. 1)", default=None)
    dist1_sd_ddm: float | None = headline("Dist1 x100 spread over test-point draws, DDM-full (Alg. 1)", default=None)
    dist1_x100_ddm_plus: float | None = headline("Dist1 x100, DDM+ (ours)", **_NOT_YET)
    dist1_sd_ddm_plus: float | None = headline("Dist1 x100 spread over test-point draws, DDM+ (ours)", **_NOT_YET)
    dist1_x100_if: float | None = headline("Dist1 x100, Koh et al. influence function", default=None)
    dist1_sd_if: float | None = headline("Dist1 x100 spread over test-point draws, Koh et al. influence function", default=None)
    dist1_x100_lissa: float | None = headline("Dist1 x100, influence function, LiSSA", default=None)
    dist1_sd_lissa: float | None = headline("Dist1 x100 spread over test-point draws, influence function, LiSSA", default=None)
    dist1_x100_fastif: float | None = headline("Dist1 x100, FastIF", default=None)
    dist1_sd_fastif: float | None = headline("Dist1 x100 spread over test-point draws, FastIF", default=None)
    dist1_x100_scaleup: float | None = headline("Dist1 x100, Scaleup (Arnoldi)", default=None)
    dist1_sd_scaleup: float | None = headline("Dist1 x100 spread over test-point draws, Scaleup (Arnoldi)", default=None)
    dist1_x100_tracin: float | None = headline("Dist1 x100, TracIn", default=None)
    dist1_sd_tracin: float | None = headline("Dist1 x100 spread over test-point draws, TracIn", default=None)
    dist1_x100_trak: float | None = headline("Dist1 x100, TRAK", default=None)
    dist1_sd_trak: float | None = headline("Dist1 x100 spread over test-point draws, TRAK", default=None)
    dist1_x100_exact: float | None = headline("Dist1 x100, exact retraining's own pick", default=None)
    dist1_sd_exact: float | None = headline("Dist1 x100 spread over test-point draws, exact retraining's own pick", default=None)
    dist1_x100_noise: float | None = headline("Dist1 x100, retraining noise alone (nothing removed, another data order)", default=None)
    dist1_sd_noise: float | None = headline("Dist1 x100 spread over test-point draws, retraining noise alone (nothing removed, another data order)", default=None)
    dist2_random: float | None = headline("Dist2, Random Select", default=None)
    dist2_predict: float | None = headline("Dist2, Predict-based", default=None)
    dist2_clustering: float | None = headline("Dist2, Clustering-based", default=None)
    dist2_ddm_wo_cluster: float | None = headline("Dist2, DDM w/o cluster", default=None)
    dist2_ddm_match: float | None = headline("Dist2, DDM-match", default=None)
    dist2_ddm: float | None = headline("Dist2, DDM-full (Alg. 1)", default=None)
    dist2_ddm_plus: float | None = headline("Dist2, DDM+ (ours)", **_NOT_YET)
    dist2_if: float | None = headline("Dist2, Koh et al. influence function", default=None)
    dist2_lissa: float | None = headline("Dist2, influence function, LiSSA", default=None)
    dist2_fastif: float | None = headline("Dist2, FastIF", default=None)
    dist2_scaleup: float | None = headline("Dist2, Scaleup (Arnoldi)", default=None)
    dist2_tracin: float | None = headline("Dist2, TracIn", default=None)
    dist2_trak: float | None = headline("Dist2, TRAK", default=None)
    dist2_exact: float | None = headline("Dist2, exact retraining's own pick", default=None)
    dist3_random: float | None = headline("Dist3, Random Select", default=None)
    dist3_predict: float | None = headline("Dist3, Predict-based", default=None)
    dist3_clustering: float | None = headline("Dist3, Clustering-based", default=None)
    dist3_ddm_wo_cluster: float | None = headline("Dist3, DDM w/o cluster", default=None)
    dist3_ddm_match: float | None = headline("Dist3, DDM-match", default=None)
    dist3_ddm: float | None = headline("Dist3, DDM-full (Alg. 1)", default=None)
    dist3_ddm_plus: float | None = headline("Dist3, DDM+ (ours)", **_NOT_YET)
    dist3_if: float | None = headline("Dist3, Koh et al. influence function", default=None)
    dist3_lissa: float | None = headline("Dist3, influence function, LiSSA", default=None)
    dist3_fastif: float | None = headline("Dist3, FastIF", default=None)
    dist3_scaleup: float | None = headline("Dist3, Scaleup (Arnoldi)", default=None)
    dist3_tracin: float | None = headline("Dist3, TracIn", default=None)
    dist3_trak: float | None = headline("Dist3, TRAK", default=None)
    dist3_exact: float | None = headline("Dist3, exact retraining's own pick", default=None)
    # Table 1's rows: the spread of Dist2 and Dist3 over the test-point draws.
    dist2_sd_random: float | None = headline("Dist2 spread over test-point draws, Random Select", default=None)
    dist2_sd_predict: float | None = headline("Dist2 spread over test-point draws, Predict-based", default=None)
    dist2_sd_clustering: float | None = headline("Dist2 spread over test-point draws, Clustering-based", default=None)
    dist2_sd_ddm_wo_cluster: float | None = headline("Dist2 spread over test-point draws, DDM w/o cluster", default=None)
    dist2_sd_ddm_match: float | None = headline("Dist2 spread over test-point draws, DDM-match", default=None)
    dist2_sd_ddm: float | None = headline("Dist2 spread over test-point draws, DDM-full (Alg. 1)", default=None)
    dist2_sd_ddm_plus: float | None = headline("Dist2 spread over test-point draws, DDM+ (ours)", **_NOT_YET)
    dist2_sd_exact: float | None = headline("Dist2 spread over test-point draws, exact retraining's own pick", default=None)
    dist3_sd_random: float | None = headline("Dist3 spread over test-point draws, Random Select", default=None)
    dist3_sd_predict: float | None = headline("Dist3 spread over test-point draws, Predict-based", default=None)
    dist3_sd_clustering: float | None = headline("Dist3 spread over test-point draws, Clustering-based", default=None)
    dist3_sd_ddm_wo_cluster: float | None = headline("Dist3 spread over test-point draws, DDM w/o cluster", default=None)
    dist3_sd_ddm_match: float | None = headline("Dist3 spread over test-point draws, DDM-match", default=None)
    dist3_sd_ddm: float | None = headline("Dist3 spread over test-point draws, DDM-full (Alg. 1)", default=None)
    dist3_sd_ddm_plus: float | None = headline("Dist3 spread over test-point draws, DDM+ (ours)", **_NOT_YET)
    dist3_sd_exact: float | None = headline("Dist3 spread over test-point draws, exact retraining's own pick", default=None)
    # How much the Dist1 pick depends on the test image: the share of test points given the method's most
    # frequent pick (100%: one cluster for every test point).
    same_pick_pct_random: float | None = headline("test points given the most frequent Dist1 pick (%), Random Select",
                                                  default=None)
    same_pick_pct_ddm_wo_cluster: float | None = headline(
        "test points given the most frequent Dist1 pick (%), DDM w/o cluster", default=None)
    same_pick_pct_ddm_match: float | None = headline("test points given the most frequent Dist1 pick (%), DDM-match",
                                                     default=None)
    same_pick_pct_ddm: float | None = headline("test points given the most frequent Dist1 pick (%), DDM-full",
                                               default=None)
    same_pick_pct_ddm_plus: float | None = headline(
        "test points given the most frequent Dist1 pick (%), DDM+ (ours)", **_NOT_YET)
    same_pick_pct_if: float | None = headline("test points given the most frequent Dist1 pick (%), Koh et al.",
                                              default=None)
    same_pick_pct_exact: float | None = headline(
        "test points given the most frequent Dist1 pick (%), exact retraining", default=None)
    # Ground truth: mean Spearman with exact leave-one-cluster-out retraining, and the cluster LDS.
    spearman_random: float | None = headline("Spearman with exact, Random Select", digits=2, default=None)
    spearman_predict: float | None = headline("Spearman with exact, Predict-based", digits=2, default=None)
    spearman_clustering: float | None = headline("Spearman with exact, Clustering-based", digits=2, default=None)
    spearman_ddm_match: float | None = headline("Spearman with exact, DDM-match", digits=2, default=None)
    spearman_ddm: float | None = headline("Spearman with exact, DDM-full (Alg. 1)", digits=2, default=None)
    spearman_ddm_plus: float | None = headline("Spearman with exact, DDM+ (ours)", digits=2, **_NOT_YET)
    spearman_if: float | None = headline("Spearman with exact, Koh et al. influence function", digits=2, default=None)
    spearman_lissa: float | None = headline("Spearman with exact, influence function, LiSSA", digits=2, default=None)
    spearman_fastif: float | None = headline("Spearman with exact, FastIF", digits=2, default=None)
    spearman_scaleup: float | None = headline("Spearman with exact, Scaleup (Arnoldi)", digits=2, default=None)
    spearman_tracin: float | None = headline("Spearman with exact, TracIn", digits=2, default=None)
    spearman_trak: float | None = headline("Spearman with exact, TRAK", digits=2, default=None)
    spearman_noise: float | None = headline("Spearman with exact, noise floor (another data order)", digits=2, default=None)
    lds_random: float | None = headline("LDS, Random Select", digits=2, default=None)
    lds_ddm_match: float | None = headline("LDS, DDM-match", digits=2, default=None)
    lds_ddm: float | None = headline("LDS, DDM-full (Alg. 1)", digits=2, default=None)
    lds_ddm_plus: float | None = headline("LDS, DDM+ (ours)", digits=2, **_NOT_YET)
    lds_if: float | None = headline("LDS, Koh et al. influence function", digits=2, default=None)
    lds_lissa: float | None = headline("LDS, influence function, LiSSA", digits=2, default=None)
    lds_fastif: float | None = headline("LDS, FastIF", digits=2, default=None)
    lds_scaleup: float | None = headline("LDS, Scaleup (Arnoldi)", digits=2, default=None)
    lds_tracin: float | None = headline("LDS, TracIn", digits=2, default=None)
    lds_trak: float | None = headline("LDS, TRAK", digits=2, default=None)
    lds_exact: float | None = headline("LDS, exact leave-one-out effects summed (additivity)", digits=2, default=None)
    # Cost on this machine.
    seconds_ddm: float | None = headline("seconds, DDM-full (Alg. 1)", default=None)
    peak_mb_ddm: float | None = headline("peak memory (MiB), DDM-full (Alg. 1)", default=None)
    seconds_ddm_plus: float | None = headline("seconds, DDM+ (ours)", **_NOT_YET)
    peak_mb_ddm_plus: float | None = headline("peak memory (MiB), DDM+ (ours)", **_NOT_YET)
    seconds_if: float | None = headline("seconds, Koh et al. influence function", default=None)
    peak_mb_if: float | None = headline("peak memory (MiB), Koh et al. influence function", default=None)
    seconds_lissa: float | None = headline("seconds, influence function, LiSSA", default=None)
    peak_mb_lissa: float | None = headline("peak memory (MiB), influence function, LiSSA", default=None)
    seconds_fastif: float | None = headline("seconds, FastIF", default=None)
    peak_mb_fastif: float | None = headline("peak memory (MiB), FastIF", default=None)
    seconds_scaleup: float | None = headline("seconds, Scaleup (Arnoldi)", default=None)
    peak_mb_scaleup: float | None = headline("peak memory (MiB), Scaleup (Arnoldi)", default=None)
    seconds_tracin: float | None = headline("seconds, TracIn", default=None)
    peak_mb_tracin: float | None = headline("peak memory (MiB), TracIn", default=None)
    seconds_trak: float | None = headline("seconds, TRAK", default=None)
    peak_mb_trak: float | None = headline("peak memory (MiB), TRAK", default=None)

    table1: pd.DataFrame = table("Table 1: the ablation, every row beside the paper's")
    table2: pd.DataFrame = table("Table 2: influence functions against DDM, with their cost")
    dist1_draws: dict[str, list[float]] = detail()     # method suffix -> Dist1 x100 of each draw
    spearman_intervals: dict[str, tuple[float, float]] = detail()
    provenance_note: str = detail(default="")


def _rows(picks: Picks, rows: slice) -> Picks:
    return Picks(picks.dist1[rows], picks.dist2[rows], picks.dist3[rows])


def run(exp: Experiment, draws: int = TEST_DRAWS) -> Result:
    """Locate a cluster per objective with every method for ``draws`` draws of test points,
    unlearn each pick exactly, and measure Eq. 10; beside it, each method's agreement with exact
    leave-one-cluster-out retraining and its cost."""
    cfg = exp.config
    clustering = exp.clusters()
    indices = locating.test_point_draws(exp, [cfg.eval.seed + d for d in range(draws)])
    bounds = np.cumsum([0] + [len(i) for i in indices])
    truth = evaluation.leave_one_out_ground_truth(exp, clustering, torch.cat(indices))
    x, labels, n_points = exp.test.images[truth.test_index], truth.labels, len(truth.test_index)

    picks: dict[str, Picks] = {}
    effects: dict[str, np.ndarray] = {}                  # (N, K) margin drops, for Spearman and the LDS
    cost: dict[str, tuple[float, float]] = {}            # seconds, peak MiB

    effects["random"] = baselines.random_effects(n_points, clustering.num_clusters, cfg.eval.seed)
    rankers = locating.reference_scores(exp, clustering, truth.test_index)
    effects["predict"], effects["clustering"] = rankers[locating.PREDICT_BASED], rankers[locating.CLUSTERING_BASED]
    for suffix in ("random", "predict", "clustering"):
        picks[suffix] = locating.picks_from_scores(effects[suffix])

    synsets = {suffix: exp.synset(variant_config(cfg.distill, key)) for key, suffix in DDM_VARIANTS.items()}
    for suffix, synset in synsets.items():
        with influence.PeakMemory() as memory:
            start = time.perf_counter()
            picks[suffix] = locating.picks_from_eq8(exp, synset, x, labels)
            seconds = time.perf_counter() - start
        cost[suffix] = (seconds, memory.megabytes)
        effects[suffix], _ = evaluation.ddm_effects(exp, synset, truth)
    sequence = dataclasses.replace(cfg.clusters, features="sequence")
    groups = exp.clusters(sequence)
    picks["ddm_wo_cluster"] = locating.picks_from_eq8(
        exp, exp.synset(variant_config(cfg.distill, PAPER_DDM), sequence), x, labels)

    for method, suffix in INFLUENCE_METHODS.items():
        measured = influence.influence_run(exp, method, clustering, truth.test_index)
        picks[suffix] = locating.picks_from_changes(truth.target_logits, measured.changes, labels)
        effects[suffix] = margin_effects(-measured.changes, truth.directions).numpy()
        cost[suffix] = (measured.seconds, measured.peak_mb)
        if suffix == "scaleup":
            scaleup_rank = measured.rank
    picks["exact"] = locating.picks_from_changes(truth.target_logits, truth.exact_logits - truth.target_logits[None],
                                                 labels)

    per_draw: dict[str, list[dict]] = {suffix: [] for suffix in picks}
    retrains = 0
    for d in range(draws):
        rows = slice(int(bounds[d]), int(bounds[d + 1]))
        sub = truth.subset(rows)
        for suffix, p in picks.items():
            if suffix == "ddm_wo_cluster":
                found = locating.located_distances_retrained(exp, groups, _rows(p, rows), sub.test_index,
                                                            other_order=False)
                retrains = max(retrains, int(found.pop(locating.RETRAINS)))
            else:
                found = locating.located_distances(_rows(p, rows), sub)
            per_draw[suffix].append(found)
    numbers: dict[str, float | None] = {}
    dist1_draws: dict[str, list[float]] = {}
    for suffix, found in per_draw.items():
        dist1_draws[suffix] = [f[locating.DIST1_X100] for f in found]
        numbers[f"dist1_x100_{suffix}"], numbers[f"dist1_sd_{suffix}"] = locating.mean_and_spread(dist1_draws[suffix])
        numbers[f"dist2_{suffix}"], numbers[f"dist2_sd_{suffix}"] = locating.mean_and_spread(
            [f[locating.DIST2] for f in found])
        numbers[f"dist3_{suffix}"], numbers[f"dist3_sd_{suffix}"] = locating.mean_and_spread(
            [f[locating.DIST3] for f in found])
    noise = [f.get(locating.DIST1_X100_NOISE) for f in per_draw["exact"]]
    if all(v is not None for v in noise):
        dist1_draws["noise"] = noise
        numbers["dist1_x100_noise"], numbers["dist1_sd_noise"] = locating.mean_and_spread(noise)

    for suffix, p in picks.items():
        numbers[f"same_pick_pct_{suffix}"] = float(np.bincount(p.dist1).max() / len(p.dist1) * 100)

    scores = evaluation.score_methods(effects, truth)
    for suffix in effects:
        numbers[f"spearman_{suffix}"] = scores[suffix].spearman
    if evaluation.NOISE_FLOOR in scores:
        numbers["spearman_noise"] = scores[evaluation.NOISE_FLOOR].spearman
    lds_inputs = {s: effects[s] for s in ("random", "ddm", "ddm_match", *OURS, *INFLUENCE_METHODS.values())}
    lds = evaluation.lds_evaluation(exp, synsets["ddm"], clustering, truth,
                                    {**lds_inputs, "exact": truth.exact_effects()})
    for suffix in (*lds_inputs, "exact"):
        numbers[f"lds_{suffix}"] = lds.scores[suffix]
    for suffix, (seconds, megabytes) in cost.items():
        if suffix in ("ddm", *OURS, *INFLUENCE_METHODS.values()):
            numbers[f"seconds_{suffix}"], numbers[f"peak_mb_{suffix}"] = seconds, megabytes

    intervals = {s: scores[s].interval for s in effects}
    if evaluation.NOISE_FLOOR in scores:
        intervals["noise"] = scores[evaluation.NOISE_FLOOR].interval
    numbers = {k: v for k, v in numbers.items() if k in Result.headline_labels()}
    key = datasets.paper_key(cfg.data.name) or DEFAULT_PAPER_DATASET
    return Result(profile=cfg.profile, dataset=cfg.data.name, num_clusters=clustering.num_clusters,
                  test_points=n_points, test_draws=draws, retrains_ddm_wo_cluster=retrains,
                  rank_scaleup=scaleup_rank, **numbers,
                  table1=_table1(numbers, key), table2=_table2(numbers, key), dist1_draws=dist1_draws,
                  spearman_intervals=intervals)


# ------------------------------------------------------------------------------------------ tables
def _mean_spread(numbers: dict, suffix: str, quantity: str = "dist1") -> str:
    """A Dist of Eq. 10 as "mean ± spread over the draws" (``quantity``: dist1, dist2 or dist3)."""
    mean = numbers.get(f"dist1_x100_{suffix}" if quantity == "dist1" else f"{quantity}_{suffix}")
    spread = numbers.get(f"{quantity}_sd_{suffix}")
    if mean is None:
        return book.BLANK
    if spread is None:
        return _at_most_four_decimals(mean, 3)
    return f"{_at_most_four_decimals(mean, 3)} ± {_at_most_four_decimals(spread, 2)}"


def _at_most_four_decimals(value: float, digits: int) -> str:
    """``digits`` significant digits, but never more than MAX_DECIMALS decimals (as every number the
    book prints): a spread of 0.00023 shows as 0.0002."""
    if abs(value) >= 0.01:
        return book.format_number(value, digits)
    text = f"{value:.{MAX_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _cell(value: float | None, digits: int = 2) -> str:
    return book.BLANK if value is None else _at_most_four_decimals(value, digits)


def _table1(numbers: dict, key: str) -> pd.DataFrame:
    where = datasets.label(key)
    rows = []
    for suffix in (*TABLE1, *OURS, "exact", "noise"):
        printed = paper.TABLE1.get(PAPER_TABLE1.get(suffix, ""), {}).get(key, (None, None, None))
        rows.append({"method": LABELS[suffix], "Dist1 x100 (± spread over draws)": _mean_spread(numbers, suffix),
                     f"paper Dist1 x100 ({where})": book.as_printed(printed[0]),
                     "Dist2 (± spread)": _mean_spread(numbers, suffix, "dist2"),
                     f"paper Dist2 ({where})": book.as_printed(printed[1]),
                     "Dist3 (± spread)": _mean_spread(numbers, suffix, "dist3"),
                     f"paper Dist3 ({where})": book.as_printed(printed[2]),
                     "Spearman with exact": _cell(numbers.get(f"spearman_{suffix}"))})
    return pd.DataFrame(rows).set_index("method")


def _table2(numbers: dict, key: str) -> pd.DataFrame:
    where = datasets.label(key)
    rows = []
    for suffix in (*TABLE2, *OURS, *BEYOND_PAPER, "exact", "noise"):
        rows.append({"method": LABELS[suffix], "Dist1 x100 (± spread over draws)": _mean_spread(numbers, suffix),
                     f"paper Dist1 x100 ({where})": book.as_printed(
                         paper.TABLE2.get(PAPER_TABLE2.get(suffix, ""), {}).get(key)),
                     "Spearman with exact": _cell(numbers.get(f"spearman_{suffix}")),
                     "LDS": _cell(numbers.get(f"lds_{suffix}")),
                     "seconds": _cell(numbers.get(f"seconds_{suffix}")),
                     "peak MiB": _cell(numbers.get(f"peak_mb_{suffix}"))})
    return pd.DataFrame(rows).set_index("method")


def paper_values(dataset: str) -> dict:
    """Tables 1 and 2 for one of the paper's data sets, keyed by our headline fields."""
    values: dict = {}
    for suffix, row in PAPER_TABLE1.items():
        d1, d2, d3 = paper.TABLE1[row].get(dataset, (None, None, None))
        values.update({f"dist1_x100_{suffix}": d1, f"dist2_{suffix}": d2, f"dist3_{suffix}": d3})
    for suffix, row in PAPER_TABLE2.items():
        if values.get(f"dist1_x100_{suffix}") is None:
            values[f"dist1_x100_{suffix}"] = paper.TABLE2[row].get(dataset)
    if any(v is not None for v in values.values()):
        values["num_clusters"] = datasets.spec(dataset).num_classes * paper.CLUSTERS_PER_CLASS
    return {k: v for k, v in values.items() if v is not None}


# ------------------------------------------------------------------------------------------ verdict
def _d1(run: RunNumbers, suffix: str) -> str:
    spread = run[f"dist1_sd_{suffix}"]
    return f"{run[f'dist1_x100_{suffix}']:.2f}" + (f" ± {spread:.2f}" if spread is not None else "")


def _apart(run: RunNumbers, a: str, b: str) -> float:
    """The gap two methods' Dist1 must exceed to be called different: SPREADS_APART x their spreads."""
    return SPREADS_APART * (run.get(f"dist1_sd_{a}", 0.0) + run.get(f"dist1_sd_{b}", 0.0))


def _table2_claim(run: RunNumbers) -> list[str]:
    ifs = [s for s in ("if", "fastif", "scaleup") if run.has(f"dist1_x100_{s}")]
    if not run.has("dist1_x100_ddm", "dist1_x100_random") or not ifs:
        return []
    best = max(ifs, key=lambda s: run[f"dist1_x100_{s}"])
    line = (f"* **Table 2's claim: DDM locates more influential clusters than influence functions.** Exactly "
            f"unlearning DDM's pick moves the output by {_d1(run, 'ddm')} (Dist1 x100, ± the spread over "
            f"{run.get('test_draws', 1)} draws of test points); "
            + ", ".join(f"{LABELS[s].split(' (')[0]}'s by {_d1(run, s)}" for s in ifs)
            + f"; a random pick's by {_d1(run, 'random')}. ")
    gap, apart = run["dist1_x100_ddm"] - run[f"dist1_x100_{best}"], _apart(run, "ddm", best)
    name = LABELS[best].split(" (")[0]
    if gap > apart:
        line += f"DDM's picks move the output more than the best influence function's ({name}): the claim holds here."
    elif gap < -apart:
        line += (f"The best influence function ({name}) locates clusters that move the output **more** than "
                 f"DDM's: the claim does **not** hold here.")
    else:
        line += (f"DDM and the best influence function ({name}) are **not distinguishable**: their gap "
                 f"({abs(gap):.2f}) is within {SPREADS_APART:g} times the sum of their spreads ({apart:.2f}).")
    lines = [line]
    if run.has("dist1_x100_noise", "dist1_x100_exact"):
        noise, exact = run["dist1_x100_noise"], run["dist1_x100_exact"]
        below = [LABELS[s].split(" (")[0] for s in ("ddm", *ifs, "random") if run[f"dist1_x100_{s}"] < noise]
        line = (f"  Retraining with nothing removed under another data order moves the output by {_d1(run, 'noise')}"
                f" and the best single pick (exact retraining's own) by {exact:.2f}. "
                + (f"Below the noise: {', '.join(below)}: their picks move the output less than a new data "
                   f"order alone does." if below else "Every method's pick stands above that noise."))
        if exact < noise:
            line += (" Even the best pick stays below it: retrained from scratch in a new order, as the paper's "
                     "protocol reads, Dist1 would measure the data order more than the cluster (we retrain in the "
                     "target's order, so the numbers above are the clusters' own effects).")
            printed = paper.TABLE2["Random"].get(datasets.paper_key(run.dataset) or "")
            if printed is not None:
                line += (f" The paper's Random Select reaches {printed:g} on {datasets.label(run.dataset)}, the size "
                         f"of this noise rather than of a random cluster's effect ({run['dist1_x100_random']:.2f}).")
        lines.append(line)
    return lines


def _ground_truth(run: RunNumbers) -> list[str]:
    measured = [s for s in ("ddm", "ddm_plus", "ddm_match", "if", "lissa", "fastif", "scaleup", "tracin", "trak", "random",
                            "predict", "clustering") if run.has(f"spearman_{s}")]
    if "ddm" not in measured:
        return []
    ordered = sorted(measured, key=lambda s: -run[f"spearman_{s}"])
    line = ("* **Ground truth (not in the paper).** By mean Spearman correlation with exact leave-one-cluster-out "
            "retraining the methods rank: " + ", ".join(f"{LABELS[s].split(' (')[0]} {run[f'spearman_{s}']:+.2f}"
                                                         for s in ordered))
    if run.has("spearman_noise"):
        line += f"; exact retraining under another data order agrees with itself at {run['spearman_noise']:+.2f}"
    line += "."
    ifs = [s for s in ("if", "fastif", "scaleup") if s in measured]
    if ifs:
        best = max(ifs, key=lambda s: run[f"spearman_{s}"])
        diff = run["spearman_ddm"] - run[f"spearman_{best}"]
        rank_word = "better" if diff > SPEARMAN_BAND else "worse" if diff < -SPEARMAN_BAND else "indistinguishable"
        by_rank = {"better": "better than", "worse": "worse than", "indistinguishable": "indistinguishably from"}[rank_word]
        line += (f" DDM ranks clusters {by_rank} the best of the paper's influence functions "
                 f"({LABELS[best].split(' (')[0]}, closer than {SPEARMAN_BAND:g} is indistinguishable)")
        if run.has(f"dist1_x100_{best}"):
            d_gap = run["dist1_x100_ddm"] - run[f"dist1_x100_{best}"]
            d_apart = _apart(run, "ddm", best)
            by_dist = "better" if d_gap > d_apart else "worse" if d_gap < -d_apart else "indistinguishable"
            line += ("; Dist1 says the same." if by_dist == rank_word else
                     f"; Dist1 calls DDM {by_dist}, so the paper's metric and the ground truth **disagree** here.")
        else:
            line += "."
    return [line]


def _same_pick(run: RunNumbers) -> list[str]:
    if not run.has("same_pick_pct_ddm", "same_pick_pct_exact"):
        return []
    ddm, exact = run["same_pick_pct_ddm"], run["same_pick_pct_exact"]
    line = (f"* **Does DDM's pick depend on the test image?** DDM-full's Eq. 8 fit gives its most frequent Dist1 pick "
            f"to {ddm:.0f}% of the test points, exact retraining's own pick to {exact:.0f}% (one cluster for "
            f"everything above {ONE_PICK_PCT:g}% is called a fixed pick). ")
    if ddm > ONE_PICK_PCT and exact <= ONE_PICK_PCT:
        line += ("DDM locates **the same cluster whatever the test image**: the cluster whose synthetic image moves "
                 "every output most, not the one that matters to the prediction at hand; rows that share that pick "
                 "share their Dist1.")
    else:
        line += "Its picks vary with the test image."
    return [line]


def _paper_order(key: str) -> str:
    """Table 1's rows in the order of the paper's Dist1 x100 for one of its data sets."""
    rows = sorted(PAPER_TABLE1.values(), key=lambda row: -paper.TABLE1[row][key][0])
    return (f"the paper's {datasets.label(key)} column orders them "
            + " > ".join(f"{row} {paper.TABLE1[row][key][0]:g}" for row in rows))


def _table1_order(run: RunNumbers) -> list[str]:
    present = [s for s in TABLE1 if run.has(f"dist1_x100_{s}")]
    if len(present) < 2 or "ddm" not in present:
        return []
    ordered = sorted(present, key=lambda s: -run[f"dist1_x100_{s}"])
    line = ("* **Table 1's ablation.** By Dist1 x100 our rows order as "
            + " > ".join(f"{PAPER_TABLE1[s]} {run[f'dist1_x100_{s}']:.2f}" for s in ordered) + "; "
            + _paper_order(datasets.paper_key(run.dataset) or DEFAULT_PAPER_DATASET) + ". ")
    verdicts = []
    for other in ("ddm_wo_cluster", "random"):
        if other not in present:
            continue
        gap, apart = run["dist1_x100_ddm"] - run[f"dist1_x100_{other}"], _apart(run, "ddm", other)
        word = "above" if gap > apart else "below" if gap < -apart else "not distinguishable from"
        verdicts.append(f"DDM-full is {word} {PAPER_TABLE1[other]} (gap {gap:+.2f}, spreads {apart:.2f})")
    return [line + "; ".join(verdicts) + "."]


def _ddm_plus(run: RunNumbers) -> list[str]:
    """DDM+ (ours, not the paper's method) against the paper's DDM and random choice: by Dist1 with
    the spread logic of :func:`_apart`, by the ground truth with SPEARMAN_BAND."""
    against = {"ddm": "the paper's DDM", "random": "random choice"}
    sentences = []
    if run.has("dist1_x100_ddm_plus"):
        calls = []
        for other, name in against.items():
            if run.has(f"dist1_x100_{other}"):
                gap, apart = run["dist1_x100_ddm_plus"] - run[f"dist1_x100_{other}"], _apart(run, "ddm_plus", other)
                word = "above" if gap > apart else "below" if gap < -apart else "not distinguishable from"
                calls.append(f"{word} {name} ({_d1(run, other)}; gap {gap:+.2f}, spreads {apart:.2f})")
        sentences.append(f"Exactly unlearning DDM+'s pick moves the output by {_d1(run, 'ddm_plus')} (Dist1 x100)"
                         + (": " + " and ".join(calls) if calls else "") + ".")
    if run.has("spearman_ddm_plus"):
        calls = []
        for other, name in against.items():
            if run.has(f"spearman_{other}"):
                diff = run["spearman_ddm_plus"] - run[f"spearman_{other}"]
                word = ("above" if diff > SPEARMAN_BAND else "below" if diff < -SPEARMAN_BAND
                        else "indistinguishable from")
                calls.append(f"{word} {name} ({run[f'spearman_{other}']:+.2f})")
        sentences.append(f"By mean Spearman correlation with exact leave-one-cluster-out retraining DDM+ reaches "
                         f"{run['spearman_ddm_plus']:+.2f}" + (": " + " and ".join(calls) if calls else "")
                         + f" (closer than {SPEARMAN_BAND:g} is indistinguishable).")
    if not sentences:
        return []
    return [f"* **{LABELS['ddm_plus']}.** " + " ".join(sentences)]


def _cost(run: RunNumbers) -> list[str]:
    timed = [s for s in ("ddm", "ddm_plus", "if", "lissa", "fastif", "scaleup", "tracin", "trak")
             if run.has(f"seconds_{s}", f"peak_mb_{s}")]
    if "ddm" not in timed:
        return []
    return ["* **Cost on this machine.** "
            + ", ".join(f"{LABELS[s].split(' (')[0]} {run[f'seconds_{s}']:.3g} s / {run[f'peak_mb_{s}']:.0f} MiB"
                        for s in timed)
            + " (wall time and peak memory above the start, for every test point of every draw). DDM's time "
            + ("(and DDM+'s) " if "ddm_plus" in timed else "")
            + "is its online stage only: the Eq. 8 fine-tunes and fits for every objective; its offline "
              "distillation (chapter 02, `benchmarks/bench_distill.py`) comes on top, once per data set."]


def _reading(run: RunNumbers) -> list[str]:
    return (_table2_claim(run) + _table1_order(run) + _same_pick(run) + _ground_truth(run) + _ddm_plus(run)
            + _cost(run))


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)


# ------------------------------------------------------------------------------------------ figures
GROUPS = {"ddm": "DDM", "ddm_match": "DDM", "ddm_wo_cluster": "DDM", "ddm_plus": "DDM",
          "if": "influence functions", "lissa": "influence functions", "fastif": "influence functions",
          "scaleup": "influence functions", "tracin": "influence functions", "trak": "influence functions"}


def figures(result: Result, provenance: str) -> dict:
    """The chapter's figures, keyed by the name the notebook glues each under."""
    from ddm import plots

    shown = [s for s in (*TABLE1, *OURS, *TABLE2[1:-1], *BEYOND_PAPER, "exact")
             if getattr(result, f"dist1_x100_{s}") is not None]
    means = pd.Series({LABELS[s]: getattr(result, f"dist1_x100_{s}") for s in shown})
    spreads = np.array([getattr(result, f"dist1_sd_{s}") or 0.0 for s in shown])
    groups = {LABELS[s]: GROUPS.get(s, "references") for s in shown}
    bars = plots.grouped_bars(means, spreads, groups, provenance, "Dist1 x100 of the exactly unlearned pick",
                              floor=result.dist1_x100_noise,
                              floor_label="noise: retrained, nothing removed, another data order",
                              title="Dist1 of the located cluster (Tables 1 and 2)")
    timed = [s for s in ("ddm", *OURS, "if", "lissa", "fastif", "scaleup", "tracin", "trak")
             if getattr(result, f"seconds_{s}") is not None and getattr(result, f"spearman_{s}") is not None]
    cost = plots.cost_vs_agreement(
        {LABELS[s].split(" (")[0]: (getattr(result, f"seconds_{s}"), getattr(result, f"spearman_{s}")) for s in timed},
        provenance, floor=result.spearman_noise, reference=result.spearman_random)
    return {"fig-located-dist1": bars, "fig-cost-agreement": cost}
