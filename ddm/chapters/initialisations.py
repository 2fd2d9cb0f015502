"""Chapter 11: attribution under three initialisations of the target (the paper's Fig. 8, Supp. 8.4).

The paper trains its ConvNet target from a Kaiming, a Normal and a Xavier initialisation
(ini-1, ini-2, ini-3), draws the three attribution matrices side by side and reads them as
alike ("the training data attribution is robust across different initialization methods"),
and as drifting apart on larger data sets. Fig. 8 is a picture; it prints no number.

Here each initialisation gets its own target and goes through chapter 03's protocol
(:mod:`ddm.evaluation`): the paper's DDM synset, its leave-one-cluster-out effects, exact
leave-one-cluster-out retraining from the same theta_0, random choice, TracIn-style and the
retraining noise floor. Then how alike two attribution matrices are is measured
(:func:`matrix_likeness`), for DDM's effects and for exact retraining's. Likeness alone is no
evidence that attribution is right (a method that ignores the network, such as the nearest
pixel centroid, is perfectly alike across initialisations), so DDM's likeness is read beside how
much the ground truth itself moves with the initialisation and with the data order.

With one ``model.seed``, :func:`ddm.models.initialise` draws the same standard-normal values
under every scheme and scales them per layer, so the three starts are one random draw at three
scales (:func:`start_alignment` measures it). A fourth target, Kaiming from another seed
(:data:`RESEEDED`), shows what a new random start does, which Fig. 8 cannot separate from the
scheme.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ddm import datasets, evaluation
from ddm.book import format_number
from ddm.chapters.attribution import BATCH_LABEL, BATCH_SIZE
from ddm.chapters.base import (NOT_RECORDED_NOTE, ChapterResult, RunNumbers, detail, fewer_clusters, headline,
                               plus_reading, result_class, table, verdict_for)
from ddm.clustering import Clustering
from ddm.config import ExperimentConfig
from ddm.evaluation import MethodScores
from ddm.experiment import Experiment
from ddm.metrics import bootstrap_ci, rowwise_spearman
from ddm.training import Params, accuracy
from ddm.variants import DDM_PLUS, PAPER_DDM, distill_variants

CHAPTER = "11_initialisations"

# Supp. 8.4's ini-1, ini-2 and ini-3, in that order (ddm.models.initialise defines each scheme).
INITS = ("kaiming", "normal", "xavier")
RESEEDED = "kaiming_reseeded"   # Kaiming from another model seed: a new random start, same scheme
RESEED_OFFSET = 1               # its model.seed is the profile's plus this
ARMS = (*INITS, RESEEDED)
ARM_LABELS = {"kaiming": "Kaiming (ini-1)", "normal": "Normal (ini-2)", "xavier": "Xavier (ini-3)",
              RESEEDED: "Kaiming, another draw"}
INIT_PAIRS = tuple(itertools.combinations(INITS, 2))
DRAW_PAIR = ("kaiming", RESEEDED)
PAIRS = (*INIT_PAIRS, DRAW_PAIR)

# Method key -> the suffix of its headline fields, and how the tables name it.
SUFFIXES = {PAPER_DDM: "ddm", DDM_PLUS: "plus", evaluation.RANDOM: "random", evaluation.TRACIN: "tracin",
            evaluation.NOISE_FLOOR: "noise"}
METHOD_NAMES = {"ddm": "DDM (Alg. 1, the paper's method)", "plus": "DDM+ (ours, soft labels)",
                "random": "random choice", "tracin": "TracIn-style",
                "noise": "noise floor (exact retraining, another data order)"}
# Whose attribution matrices are compared across initialisations.
COMPARED = {"ddm": "DDM's effects", "exact": "exact retraining's effects"}

# profile -> this chapter's own settings there (applied by ddm.chapters.base.open_experiment and
# named on the page). Four targets with K leave-one-out retrains each, and a noise floor of K + 1
# retrains for three of them, make 7K + 3 exact retrains: 703 at the cpu profile's K = 100, about
# three hours of both cores of the project's machine per data set (a 2,000-image retrain takes
# about 16 s of one core). Two clusters per class (K = 20) make 143.
PROFILE_SETTINGS = {
    "cpu": fewer_clusters(2, "four targets, each with its own exact leave-one-cluster-out retraining and three "
                             "of them with a noise floor, cost 7K + 3 exact retrains: 703 at the profile's K = 100, "
                             "about three hours of a 2-core CPU per data set, against 143 at K = 20"),
    "ci": datasets.ProfileSettings(
        overrides={"clusters.clusters_per_class": 1, "data.train_per_class": 30, "train.epochs": 4,
                   "distill.steps": 50},
        reason="four targets, each with its own exact leave-one-cluster-out retraining and three of them with a "
               "noise floor, cost 7K + 3 exact retrains, and the ci book gives a chapter about 3 minutes: one "
               "cluster per class (K = 10) of 30 images per class, 4 epochs and 50 distillation steps make 73 "
               "small retrains and 8 short distillations"),
    "quick": fewer_clusters(1, "four targets, each with its own exact leave-one-cluster-out retraining and three of "
                               "them with a noise floor, cost 7K + 3 exact retrains: 353 at the profile's K = 50, "
                               "against 73 at K = 10, which keeps the chapter within a few minutes"),
}

# Verdict thresholds, named where they are used.
ALIKE_SPEARMAN = 0.5     # two matrices whose mean Spearman across clusters reaches this are called alike
BAND = 0.05              # two mean Spearman correlations closer than this are called indistinguishable
ACCURACY_GAP_PCT = 5.0   # targets whose test accuracies differ by more points than this are different networks
SAME_DRAW_COSINE = 0.99  # two starts whose layer-wise cosine reaches this are one draw at other scales


# ------------------------------------------------------------------------------------------ likeness
def matrix_likeness(effects_a: np.ndarray, effects_b: np.ndarray) -> np.ndarray:
    """How alike two attribution matrices are, test point by test point.

    For (N, K) effect matrices :math:`E^a` and :math:`E^b` over the same test points and the same
    K clusters, the Spearman correlation across clusters of every row,

    .. math:: \\rho_n(a, b) = \\rho_S\\left(E^a_{n,:},\\ E^b_{n,:}\\right), \\qquad n = 1..N,

    shape (N,); NaN where a row is constant. The chapter reports the mean over test points."""
    return rowwise_spearman(effects_a, effects_b)


def mean_likeness(effects_a: np.ndarray, effects_b: np.ndarray) -> float:
    """The mean over test points of :func:`matrix_likeness` (NaN when no row can be ranked)."""
    rho = matrix_likeness(effects_a, effects_b)
    return float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")


def likeness_grid(effects: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """:func:`mean_likeness` of every ordered pair of targets (rows and columns named in words),
    1 on the diagonal: the figure's matrix."""
    names = [ARM_LABELS[a] for a in effects]
    values = [[mean_likeness(effects[a], effects[b]) for b in effects] for a in effects]
    return pd.DataFrame(values, index=names, columns=names)


def start_alignment(start_a: Params, start_b: Params) -> float:
    """How alike two starting points theta_0 are: the mean, over the tensors an initialisation
    draws (conv and linear kernels, anything of two or more dimensions), of the cosine between
    them. 1 when one start is a per-layer rescaling of the other; about 0 for independent draws."""
    cosines = [F.cosine_similarity(start_a[name].flatten(), start_b[name].flatten(), dim=0)
               for name in start_a if start_a[name].ndim >= 2]
    return float(torch.stack(cosines).mean())


# ------------------------------------------------------------------------------------------ one target
def arm_overrides(config: ExperimentConfig, arm: str) -> dict:
    """The configuration changes that make ``arm``'s target: its ``model.init``; for
    :data:`RESEEDED` also another ``model.seed``, and no noise floor of its own (Kaiming's
    already measures how exact retraining moves with the data order)."""
    if arm == RESEEDED:
        return {"model.init": "kaiming", "model.seed": config.model.seed + RESEED_OFFSET, "eval.noise_seeds": ()}
    return {"model.init": arm}


def experiment_for(exp: Experiment, arm: str) -> Experiment:
    """``exp`` with ``arm``'s target (:func:`arm_overrides`), everything else the same: the data,
    the store (so Kaiming's artifacts are chapter 03's), the network, the test points."""
    config = exp.config.with_overrides(**arm_overrides(exp.config, arm))
    return Experiment.create(config, data_root=exp.data_root, cache_root=exp.store.root, progress=exp.progress,
                             model=exp.custom_model)


@dataclass(frozen=True)
class InitMeasurement:
    """Chapter 03's protocol for one target."""

    start: Params                     # theta_0
    accuracy_pct: float               # the target's accuracy on the whole test set
    clustering: Clustering
    scores: dict[str, MethodScores]   # method key -> agreement with this target's exact retraining
    ddm: np.ndarray                   # (N, K) DDM's predicted margin drops
    exact: np.ndarray                 # (N, K) exact retraining's margin drops
    calibration_ddm: float            # mean |DDM effect| / mean |exact effect|
    calibration_plus: float           # the same for DDM+
    exact_seconds: float              # the exact retrains' wall time (about 0 when cached)
    heat_ddm: np.ndarray              # (L, C) DDM's effects for the heat map's test image
    heat_exact: np.ndarray            # (L, C) exact retraining's for the same image
    heat_batch: np.ndarray            # (L, C) DDM's effects averaged over a batch of one label


def measure_init(exp: Experiment, heat_point: int, batch_label: int) -> InitMeasurement:
    """The paper's DDM, DDM+ (ours), random choice and TracIn-style against exact
    leave-one-cluster-out retraining of ``exp``'s target, with the noise floor where configured;
    the heat maps' rows (the paper's DDM: Fig. 8 draws its matrices)."""
    clustering = exp.clusters()
    synsets = distill_variants(exp, (PAPER_DDM, DDM_PLUS))
    synset = synsets[PAPER_DDM]
    truth = evaluation.leave_one_out_ground_truth(exp, clustering)
    ddm, _ = evaluation.ddm_effects(exp, synset, truth)
    plus, _ = evaluation.ddm_effects(exp, synsets[DDM_PLUS], truth)
    references = evaluation.baseline_effects(exp, clustering, truth)
    effects = {PAPER_DDM: ddm, DDM_PLUS: plus, evaluation.RANDOM: references[evaluation.RANDOM],
               evaluation.TRACIN: references[evaluation.TRACIN]}
    exact = truth.exact_effects()
    target_accuracy = accuracy(exp.target_logits(exp.test.images), exp.test.labels) * 100
    return InitMeasurement(
        start=exp.initial_params(), accuracy_pct=target_accuracy, clustering=clustering,
        scores=evaluation.score_methods(effects, truth), ddm=ddm, exact=exact,
        calibration_ddm=evaluation.calibration(ddm, truth), calibration_plus=evaluation.calibration(plus, truth),
        exact_seconds=truth.seconds,
        heat_ddm=evaluation.class_by_cluster(ddm[heat_point], clustering),
        heat_exact=evaluation.class_by_cluster(exact[heat_point], clustering),
        heat_batch=evaluation.class_by_cluster(evaluation.batch_effects(exp, synset, batch_label, BATCH_SIZE),
                                               clustering))


def same_clusters(clusterings: Iterable[Clustering]) -> bool:
    """Whether every target's training set was grouped the same way (k-means on pixels is; on
    the target's learned features it need not be), so that their matrices line up cell by cell."""
    clusterings = list(clusterings)
    return all(torch.equal(c.assignment, clusterings[0].assignment) for c in clusterings[1:])


# ------------------------------------------------------------------------------------------ result
def _arm_fields(arm: str) -> dict:
    name = ARM_LABELS[arm]
    out = {f"accuracy_{arm}": (float, headline(f"{name}: target test accuracy (%)"))}
    for suffix in SUFFIXES.values():
        if suffix == "noise" and arm == RESEEDED:
            continue
        out[f"spearman_{suffix}_{arm}"] = (float | None, headline(
            f"{name}: Spearman with its own exact retraining, {METHOD_NAMES[suffix]}", digits=2, default=None,
            note=NOT_RECORDED_NOTE if suffix == "plus" else ""))
    out[f"dist1_x100_ddm_{arm}"] = (float | None, headline(f"{name}: Dist1 x100 of DDM's pick", default=None))
    out[f"dist1_x100_random_{arm}"] = (float | None, headline(f"{name}: Dist1 x100 of a random pick", default=None))
    out[f"calibration_ddm_{arm}"] = (float | None, headline(f"{name}: calibration |DDM effect| / |exact effect|",
                                                            digits=2, default=None))
    out[f"calibration_plus_{arm}"] = (float | None, headline(
        f"{name}: calibration |DDM+ effect| / |exact effect|", digits=2, default=None, note=NOT_RECORDED_NOTE))
    return out


def _pair_fields(a: str, b: str) -> dict:
    against = f"{ARM_LABELS[a]} against {ARM_LABELS[b]}"
    out = {f"start_cosine_{a}_{b}": (float, headline(f"theta_0, {against}: mean cosine, layer by layer",
                                                     digits=2))}
    for whose, words in COMPARED.items():
        out[f"alike_{whose}_{a}_{b}"] = (float | None, headline(
            f"{words}, {against}: mean Spearman across clusters", digits=2, default=None))
    return out


@dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    num_clusters: int = headline("clusters, K", digits=4)
    test_points: int = headline("test points", digits=3)
    train_images: int = headline("training images", digits=6)
    exact_retrains: int = headline("exact retrains, all four targets", digits=5,
                                   note="K leave-one-out per target, and K + 1 per noise-floor seed for the three "
                                        "initialisations")
    exact_retrain_seconds: float = headline("exact retrain seconds, all four targets",
                                            note="0 when the retrains came from the cache")


Result = result_class(_Base, {
    **{k: v for arm in ARMS for k, v in _arm_fields(arm).items()},
    **{k: v for a, b in PAIRS for k, v in _pair_fields(a, b).items()},
}, [
    ("per_init", pd.DataFrame, table("each target against its own exact retraining")),
    ("likeness", pd.DataFrame, table("how alike the attribution matrices are across targets")),
    ("likeness_ddm", pd.DataFrame, detail()),      # (4, 4) mean likeness of DDM's matrices
    ("likeness_exact", pd.DataFrame, detail()),    # (4, 4) the same for exact retraining's
    ("effects", dict, detail()),                   # arm -> {"ddm", "exact"} -> (N, K)
    ("class_names", tuple, detail()),
    ("heat_label", str, detail()),                 # the label of the heat maps' test image
    ("batch_label", str, detail()),
    ("heat_ddm", dict, detail()),                  # arm -> (L, C)
    ("heat_exact", dict, detail()),
    ("heat_batch", dict, detail()),
], __name__)


def _arm_values(arm: str, m: InitMeasurement) -> dict:
    values = {f"accuracy_{arm}": m.accuracy_pct, f"calibration_ddm_{arm}": m.calibration_ddm,
              f"calibration_plus_{arm}": m.calibration_plus,
              f"dist1_x100_ddm_{arm}": m.scores[PAPER_DDM].dist1_x100,
              f"dist1_x100_random_{arm}": m.scores[evaluation.RANDOM].dist1_x100}
    for key, suffix in SUFFIXES.items():
        if key in m.scores:
            values[f"spearman_{suffix}_{arm}"] = m.scores[key].spearman
    return values


def _pair_values(measured: Mapping[str, InitMeasurement], comparable: bool) -> dict:
    values = {}
    for a, b in PAIRS:
        values[f"start_cosine_{a}_{b}"] = start_alignment(measured[a].start, measured[b].start)
        if comparable:
            for whose in COMPARED:
                values[f"alike_{whose}_{a}_{b}"] = mean_likeness(getattr(measured[a], whose),
                                                                 getattr(measured[b], whose))
    return values


def _per_init_table(measured: Mapping[str, InitMeasurement]) -> pd.DataFrame:
    rows = []
    for arm, m in measured.items():
        row = {"target": ARM_LABELS[arm], "target test accuracy (%)": m.accuracy_pct}
        for key, suffix in SUFFIXES.items():
            s = m.scores.get(key)
            row[f"Spearman with exact: {METHOD_NAMES[suffix]}"] = s.spearman if s else None
        row["Dist1 x100 of DDM's pick"] = m.scores[PAPER_DDM].dist1_x100
        row["Dist1 x100 of a random pick"] = m.scores[evaluation.RANDOM].dist1_x100
        row["calibration |DDM| / |exact|"] = m.calibration_ddm
        row["calibration |DDM+| / |exact|"] = m.calibration_plus
        rows.append(row)
    return pd.DataFrame(rows).set_index("target")


def _interval_text(rho: np.ndarray) -> str:
    low, high = bootstrap_ci(rho)
    return "" if np.isnan(low) else f"[{format_number(low, 2)}, {format_number(high, 2)}]"


def _likeness_table(measured: Mapping[str, InitMeasurement], comparable: bool) -> pd.DataFrame:
    """One row per pair of targets, then the noise floor's row: how alike exact retraining is
    with itself under one initialisation and another data order."""
    rows = []
    for a, b in PAIRS:
        row = {"compared": f"{ARM_LABELS[a]} against {ARM_LABELS[b]}",
               "theta_0: mean cosine, layer by layer": start_alignment(measured[a].start, measured[b].start)}
        for whose, words in COMPARED.items():
            rho = (matrix_likeness(getattr(measured[a], whose), getattr(measured[b], whose)) if comparable
                   else np.full(len(measured[a].ddm), np.nan))
            row[f"{words}: mean Spearman"] = float(np.nanmean(rho)) if np.isfinite(rho).any() else None
            row[f"{words}: 95% interval"] = _interval_text(rho)
        rows.append(row)
    floors = [m.scores[evaluation.NOISE_FLOOR].spearman for m in measured.values()
              if evaluation.NOISE_FLOOR in m.scores]
    if floors:
        rows.append({"compared": "one initialisation, another data order (noise floor, mean of the three)",
                     f"{COMPARED['exact']}: mean Spearman": float(np.mean(floors))})
    frame = pd.DataFrame(rows).set_index("compared")
    intervals = [c for c in frame.columns if c.endswith("95% interval")]
    frame[intervals] = frame[intervals].fillna("")    # a blank, not "NaN", where no interval applies
    return frame


def run(exp: Experiment, heat_point: int = 0) -> Result:
    """Chapter 03's protocol for the target of each initialisation of :data:`INITS` and for
    :data:`RESEEDED` (the rest of ``exp``'s configuration unchanged), then how alike their
    starting points and their attribution matrices are. ``heat_point``: which of the
    evaluation's test points the single-image heat maps show."""
    batch_label = BATCH_LABEL if exp.num_classes > BATCH_LABEL else 0
    test_index = exp.test_point_indices()
    heat_point = min(heat_point, len(test_index) - 1)
    measured = {arm: measure_init(experiment_for(exp, arm), heat_point, batch_label) for arm in ARMS}
    comparable = same_clusters(m.clustering for m in measured.values())
    values = _pair_values(measured, comparable)
    for arm, m in measured.items():
        values.update(_arm_values(arm, m))
    K = measured[INITS[0]].clustering.num_clusters
    seeds = len(exp.config.eval.noise_seeds)
    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name, num_clusters=K, test_points=len(test_index),
        train_images=len(exp.train), exact_retrains=len(ARMS) * K + len(INITS) * seeds * (K + 1),
        exact_retrain_seconds=sum(m.exact_seconds for m in measured.values()), **values,
        per_init=_per_init_table(measured), likeness=_likeness_table(measured, comparable),
        likeness_ddm=likeness_grid({a: m.ddm for a, m in measured.items()}) if comparable else pd.DataFrame(),
        likeness_exact=likeness_grid({a: m.exact for a, m in measured.items()}) if comparable else pd.DataFrame(),
        effects={a: {"ddm": m.ddm, "exact": m.exact} for a, m in measured.items()},
        class_names=tuple(exp.train.classes),
        heat_label=str(exp.test.classes[int(exp.test.labels[test_index[heat_point]])]),
        batch_label=str(exp.test.classes[batch_label]),
        heat_ddm={a: m.heat_ddm for a, m in measured.items()},
        heat_exact={a: m.heat_exact for a, m in measured.items()},
        heat_batch={a: m.heat_batch for a, m in measured.items()},
    )


def paper_values(dataset: str) -> dict:
    """Fig. 8 is a picture: the paper prints no number for it."""
    return {}


# ------------------------------------------------------------------------------------------ verdict
def _mean(values: Iterable[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return float(np.mean(measured)) if measured else None


def pair_mean(run: RunNumbers, whose: str) -> float | None:
    """The mean over the three pairs of initialisations of ``whose`` ("ddm" or "exact") likeness."""
    return _mean(run[f"alike_{whose}_{a}_{b}"] for a, b in INIT_PAIRS)


def noise_floor_mean(run: RunNumbers) -> float | None:
    """Exact retraining's agreement with itself under another data order, mean over the inits."""
    return _mean(run[f"spearman_noise_{init}"] for init in INITS)


def _pair_name(pair: tuple[str, str]) -> str:
    return "_".join(pair)


def _starts(run: RunNumbers) -> list[str]:
    scheme = _mean(run[f"start_cosine_{_pair_name(p)}"] for p in INIT_PAIRS)
    if scheme is None:
        return []
    line = f"* **The starting points.** The three schemes' theta_0 have a mean layer-wise cosine of {scheme:.2f}"
    if run.has(f"start_cosine_{_pair_name(DRAW_PAIR)}"):
        line += f" (Kaiming and Kaiming from another seed: {run[f'start_cosine_{_pair_name(DRAW_PAIR)}']:+.2f})"
    if scheme >= SAME_DRAW_COSINE:
        line += (f": they are **one random draw at three scales** (a cosine of {SAME_DRAW_COSINE:g} or more), so "
                 f"comparing them compares scales, not random starts; the reseeded Kaiming target is the "
                 f"comparison for a new start.")
    else:
        line += ": they are different random draws."
    return [line]


def _alike(run: RunNumbers) -> list[str]:
    ddm = pair_mean(run, "ddm")
    if ddm is None:
        return []
    line = (f"* **Alike across initialisations (Fig. 8's claim).** DDM's attribution matrices under two "
            f"different initialisations agree at a mean Spearman correlation of {ddm:+.2f} over the three pairs "
            f"(called alike at {ALIKE_SPEARMAN:g} or more): "
            + ("the paper's picture of matching matrices reproduces." if ddm >= ALIKE_SPEARMAN else
               "they are **not** alike, so Fig. 8's claim does not reproduce here."))
    lines = [line]
    exact = pair_mean(run, "exact")
    if exact is None:
        return lines
    floor = noise_floor_mean(run)
    truth = f"  Exact retraining's matrices agree across initialisations at {exact:+.2f}"
    if floor is not None:
        truth += (f", and with themselves under another data order at {floor:+.2f} (the noise floor): the "
                  + ("initialisation moves the ground truth **more** than the data order does."
                     if exact < floor - BAND else
                     "initialisation moves the ground truth about as much as the data order does."
                     if abs(exact - floor) <= BAND else
                     "initialisation moves the ground truth less than the data order does."))
    else:
        truth += "."
    lines.append(truth)
    if ddm > exact + BAND:
        lines.append(f"  DDM's matrices are **more alike than the ground truths they should follow** (closer than "
                     f"{BAND:g} is called the same): part of their likeness does not come from the networks, so it "
                     f"is no evidence that DDM tracks each one.")
    elif ddm < exact - BAND:
        lines.append("  DDM's matrices differ across initialisations more than the ground truth does: DDM adds "
                     "variation of its own.")
    else:
        lines.append("  DDM's matrices are as alike across initialisations as the ground truth is.")
    return lines


def _new_start(run: RunNumbers) -> list[str]:
    name = _pair_name(DRAW_PAIR)
    ddm, scheme = run[f"alike_ddm_{name}"], pair_mean(run, "ddm")
    if ddm is None or scheme is None:
        return []
    exact = run[f"alike_exact_{name}"]
    line = (f"* **A new random start.** Kaiming from another seed gives DDM matrices that agree with the first "
            f"Kaiming target's at {ddm:+.2f}" + (f" (exact retraining's: {exact:+.2f})" if exact is not None else "")
            + ". Changing the scheme moves DDM's matrices ")
    compared = f"(likeness {scheme:+.2f} across schemes, {ddm:+.2f} for a new draw)"
    if scheme > ddm + BAND:
        line += f"**less** than a new draw does {compared}"
        line += (": Fig. 8's robustness to the scheme says little about robustness to the start."
                 if scheme >= ALIKE_SPEARMAN else ".")
    elif scheme < ddm - BAND:
        line += f"more than a new draw does {compared}."
    else:
        line += f"about as much as a new draw does {compared}."
    return [line]


def _against_exact(run: RunNumbers) -> list[str]:
    shown = [a for a in ARMS if run.has(f"spearman_ddm_{a}", f"spearman_random_{a}")]
    if not shown:
        return []
    parts = []
    for a in shown:
        extra = f", noise floor {run[f'spearman_noise_{a}']:+.2f}" if run.has(f"spearman_noise_{a}") else ""
        parts.append(f"{ARM_LABELS[a]} {run[f'spearman_ddm_{a}']:+.2f} (random {run[f'spearman_random_{a}']:+.2f}"
                     f"{extra})")
    beats = [a for a in shown if run[f"spearman_ddm_{a}"] > run[f"spearman_random_{a}"] + BAND]
    line = (f"* **Each against its own exact retraining.** DDM's mean Spearman correlation with exact "
            f"leave-one-cluster-out retraining from the same theta_0: {'; '.join(parts)}. DDM beats random choice "
            f"by more than {BAND:g} for {len(beats)} of {len(shown)} targets")
    if not beats:
        line += (": for none does it rank clusters like retraining does, so alike matrices would be alike in "
                 "being wrong.")
    elif len(beats) < len(shown):
        line += ": its edge over random choice comes and goes with the start."
    else:
        line += "."
    floored = [a for a in shown if run.has(f"spearman_noise_{a}")]
    if floored and all(run[f"spearman_ddm_{a}"] < run[f"spearman_noise_{a}"] - BAND for a in floored):
        line += (" Under every initialisation it stays below exact retraining's agreement with itself under "
                 "another data order.")
    lines = [line]
    return lines + plus_reading(run, {a: ARM_LABELS[a] for a in shown}, BAND, "targets")


def _accuracy(run: RunNumbers) -> list[str]:
    shown = {a: run[f"accuracy_{a}"] for a in ARMS if run.has(f"accuracy_{a}")}
    if len(shown) < 2:
        return []
    worst = min(shown, key=shown.get)
    gap = max(shown.values()) - shown[worst]
    listing = ", ".join(f"{ARM_LABELS[a]} {v:.1f}%" for a, v in shown.items())
    line = f"* **The targets.** Test accuracy: {listing}. "
    if gap > ACCURACY_GAP_PCT:
        line += (f"{ARM_LABELS[worst]} trains a network {gap:.1f} points less accurate than the best (more than "
                 f"{ACCURACY_GAP_PCT:g} is called a different network) at this profile's settings, so its matrix "
                 f"describes a different network, not only another start.")
    else:
        line += f"Within {ACCURACY_GAP_PCT:g} points of each other: comparable networks."
    return [line]


def _reading(run: RunNumbers) -> list[str]:
    return _starts(run) + _alike(run) + _new_start(run) + _against_exact(run) + _accuracy(run)


def _growth(runs: Sequence[RunNumbers]) -> str:
    """Supp. 8.4's second claim (matrices drift apart as the training set grows), read across
    runs of different sizes: the smallest against the largest."""
    sized = sorted((r for r in runs if r.has("train_images") and pair_mean(r, "ddm") is not None),
                   key=lambda r: r["train_images"])
    if len(sized) < 2 or sized[0]["train_images"] == sized[-1]["train_images"]:
        return ""
    small, large = sized[0], sized[-1]
    before, after = pair_mean(small, "ddm"), pair_mean(large, "ddm")
    how = ("drift apart" if after < before - BAND else "grow more alike" if after > before + BAND
           else "stay as alike as they were")
    text = (f"**More training data (Supp. 8.4's second claim).** From {small['train_images']:,} training images "
            f"({small.where}) to {large['train_images']:,} ({large.where}), DDM's matrices across initialisations "
            f"{how} ({before:+.2f} to {after:+.2f}; a change within {BAND:g} counts as none)")
    exact_before, exact_after = pair_mean(small, "exact"), pair_mean(large, "exact")
    if exact_before is not None and exact_after is not None:
        text += f"; exact retraining's go from {exact_before:+.2f} to {exact_after:+.2f}"
    text += "."
    if small.dataset != large.dataset:
        text += (f" The runs differ in data set too ({datasets.label(small.dataset)} and "
                 f"{datasets.label(large.dataset)}), as the paper's MNIST-to-CIFAR-100 comparison does, so size is "
                 f"not the only change.")
    return text


def verdict(result: Result, recorded: Sequence[RunNumbers] = ()) -> str:
    """Plain words from the numbers of this run and of every recorded run, then what runs of
    different sizes say about the paper's second claim."""
    text = verdict_for(_reading, result, recorded)
    growth = _growth([result.numbers(), *recorded])
    return f"{text}\n\n{growth}" if growth else text


# ------------------------------------------------------------------------------------------ figures
def _heat_grid(rows: Mapping[str, tuple[dict[str, np.ndarray], str]], class_names: Sequence[str],
               provenance: str, title: str):
    """One row of class x cluster heat maps per method, one column per initialisation; a colour
    scale shared along each row (so a row compares the initialisations), centred at zero."""
    from ddm.plots import heatmap_grid

    return heatmap_grid({method: [by_init[init] for init in INITS] for method, (by_init, _) in rows.items()},
                        [scale_label for _, scale_label in rows.values()], [ARM_LABELS[init] for init in INITS],
                        class_names, title, provenance, shared_scale=True)


def _likeness_figure(grids: Mapping[str, pd.DataFrame], provenance: str):
    """Side by side, the mean likeness of every pair of initialisations, one panel per whose
    matrices are compared; the numbers written in the cells."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ddm.plots import _footer

    fig, axes = plt.subplots(1, len(grids) + 1, figsize=(3.9 * len(grids) + 1.6, 4.3),
                             gridspec_kw={"width_ratios": [1] * len(grids) + [0.06]})
    for j, (title, grid) in enumerate(grids.items()):
        if grid.empty:   # the initialisations grouped the training set differently
            axes[j].axis("off")
            axes[j].text(0.5, 0.5, "not comparable:\nthe clusters differ\nbetween initialisations", ha="center",
                         va="center", transform=axes[j].transAxes)
            axes[j].set_title(title, fontsize=10)
            continue
        last = j == len(grids) - 1
        sns.heatmap(grid.astype(float), ax=axes[j], cmap="RdBu_r", center=0, vmin=-1, vmax=1, annot=True,
                    fmt=".2f", square=True, cbar=last, cbar_ax=axes[-1] if last else None,
                    cbar_kws={"label": "mean Spearman correlation across clusters"} if last else {},
                    yticklabels=list(grid.index) if j == 0 else False)
        axes[j].set_title(title, fontsize=10)
        axes[j].tick_params(labelsize=8)
        axes[j].set_xticklabels(axes[j].get_xticklabels(), rotation=20, ha="right")
    if all(grid.empty for grid in grids.values()):
        axes[-1].axis("off")
    fig.suptitle("How alike the attribution matrices are across initialisations", fontsize=11)
    _footer(fig, provenance)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def figures(result: Result, provenance: str) -> dict:
    """The chapter's figures, keyed by the name the notebook glues each under."""
    out = {
        "fig-init-heat-point": _heat_grid(
            {"DDM (Alg. 1)": (result.heat_ddm, "predicted margin drop if deleted"),
             "exact retraining": (result.heat_exact, "margin drop when deleted")},
            result.class_names, provenance, f"One test image of label {result.heat_label}, three initialisations"),
        "fig-init-heat-batch": _heat_grid(
            {"DDM (Alg. 1)": (result.heat_batch, "mean predicted margin drop")}, result.class_names, provenance,
            f"Mean over up to {BATCH_SIZE} test images of label {result.batch_label}, three initialisations"),
    }
    out["fig-init-likeness"] = _likeness_figure(
        {COMPARED["ddm"]: result.likeness_ddm, COMPARED["exact"]: result.likeness_exact}, provenance)
    return out
