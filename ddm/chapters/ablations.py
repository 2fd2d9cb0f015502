"""Chapter 09: why the paper's DDM fails to rank clusters, measured one change at a time, and DDM+.

Chapters 03 and 06 found that the paper's DDM ranks clusters no better than random choice against
exact leave-one-cluster-out retraining. This chapter tests explanations, each by changing one
thing of the paper's DDM and measuring the same two numbers against the same exact retrains:

- the **rank agreement** (mean over test points of the Spearman correlation across clusters
  between predicted and exact effects), beside TracIn-style, influence functions, random choice
  and the retraining noise floor;
- the **calibration** (mean |predicted effect| / mean |exact effect|): whether the fine-tunes
  move the output by the right amount.

The changes: soft labels (hard labels cap the classifier layer's gradient, chapter 02); a distance
that keeps gradient magnitude (MSE, or the per-layer cosine plus a norm term) instead of the
per-layer cosine; one target per cluster, its whole push on the training trajectory, matched at
theta_tau instead of Algorithm 1's per-pair reversal (:func:`ddm.matching.displacement_target`);
more synthetic images per cluster; and the online stage's learning rate and step count tuned for
ranking. The best
combination, chosen on half of the test points and reported on the other half, is **DDM+ (ours)**,
not the paper's method: a :class:`ddm.config.DistillConfig` and :class:`ddm.config.OnlineConfig`
chosen afresh by :func:`run` for each data set (its settings are the headline ``plus_description``).

Beside them stands what every synset is built to imitate: the target fine-tuned by gradient
*ascent* on each cluster's own real images (:func:`ddm.baselines.real_ascent_effects`), at the
profile's online settings and at the online settings that rank best on the choosing points. A
synset that reproduced its cluster's real gradients exactly would rank clusters as this does, so
it measures how far any change to the distillation alone can take DDM's online stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, evaluation, influence
from ddm.book import format_number
from ddm.chapters.base import (NOT_RECORDED_NOTE, ChapterResult, RunNumbers, detail, headline, result_class, table,
                               verdict_for)
from ddm.config import DistillConfig, OnlineConfig
from ddm.evaluation import GroundTruth
from ddm.experiment import Experiment
from ddm.metrics import rowwise_spearman

CHAPTER = "09_why_ddm_fails"

# Each ablation: one change of the paper's DDM (distillation settings, then online settings).
ABLATIONS: dict[str, tuple[dict, dict]] = {
    "paper": ({}, {}),
    "soft": ({"soft_labels": True}, {}),
    "mse": ({"distance": "mse"}, {}),
    "ipc2": ({"ipc": 2}, {}),
    "ipc5": ({"ipc": 5}, {}),
    "cos_norm": ({"distance": "layerwise_cosine_norm"}, {}),
    "displacement": ({"method": "displacement"}, {}),
    "mse_soft": ({"distance": "mse", "soft_labels": True}, {}),
    "cos_norm_soft": ({"distance": "layerwise_cosine_norm", "soft_labels": True}, {}),
    "displacement_soft": ({"method": "displacement", "soft_labels": True}, {}),
}
LABELS = {
    "paper": "the paper's DDM (layer-wise cosine, hard labels, 1 image per cluster)",
    "soft": "+ soft labels",
    "mse": "distance: MSE (keeps gradient magnitude)",
    "ipc2": "2 synthetic images per cluster",
    "ipc5": "5 synthetic images per cluster",
    "cos_norm": "distance: layer-wise cosine + a norm term",
    "displacement": "target: the cluster's whole-trajectory push, at theta_tau",
    "mse_soft": "MSE + soft labels",
    "cos_norm_soft": "cosine + norm term + soft labels",
    "displacement_soft": "whole-trajectory target + soft labels",
    "online": "online lr and steps tuned for ranking",
    "plus": "DDM+ (ours): the best combination",
    "ascent": "gradient ascent on the real cluster (what a synset imitates), profile's online settings",
    "ascent_tuned": "gradient ascent on the real cluster, online lr and steps tuned for ranking",
    "tracin": "TracIn-style (checkpoints)",
    "if": "Koh et al. influence function (last layer)",
    "centroid": "nearest pixel centroid",
    "random": "random choice",
    "noise": "retraining noise floor (another data order)",
}
SHORT = {"paper": "paper's DDM", "soft": "+ soft labels", "mse": "MSE distance", "ipc2": "2 images / cluster",
         "ipc5": "5 images / cluster", "cos_norm": "cosine + norm", "displacement": "trajectory target",
         "mse_soft": "MSE + soft labels", "cos_norm_soft": "cosine + norm + soft",
         "displacement_soft": "trajectory target + soft", "online": "tuned online lr, steps",
         "plus": "DDM+ (ours)", "ascent": "real-cluster ascent", "ascent_tuned": "real-cluster ascent, tuned",
         "tracin": "TracIn-style", "if": "Koh et al. IF", "centroid": "nearest centroid",
         "random": "random", "noise": "noise floor"}
REFERENCES = ("tracin", "if", "centroid", "random", "noise")
# The ceiling of any distillation change: fine-tuning on the real cluster the synset stands in for.
CEILING = ("ascent", "ascent_tuned")
# Methods whose effects are predicted margin drops (comparable in size to exact retraining's);
# TracIn's are loss changes and the centroid's and random choice's are scores.
CALIBRATED = (*ABLATIONS, "online", "plus", "if", *CEILING)
LR_FACTORS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)   # online learning rates tried, x the profile's
STEP_FACTORS = (0.5, 1.0, 2.0)              # online step counts tried, x the profile's
SELECTION_POINTS = 0.5                      # share of the test points that choose; the rest report

# Verdict thresholds, named where they are used.
FLOOR_SHARE = 0.6        # issue 11's target: DDM+ reaches this share of the noise floor's agreement
BAND = 0.05              # two Spearman means closer than this are called indistinguishable


@dataclass(frozen=True)
class Choice:
    """One ablation's settings and how it scored."""

    distill: DistillConfig
    online: OnlineConfig
    effects: np.ndarray           # (N, K) predicted margin drops


def _fields() -> dict:
    out = {}
    for key in (*ABLATIONS, "online", "plus", *CEILING, *REFERENCES):
        # The ceiling came after this chapter's cpu records (2026-12-01): not in them until re-made.
        note = {"note": NOT_RECORDED_NOTE} if key in CEILING else {}
        out[f"spearman_{key}"] = (float | None, headline(f"Spearman with exact (all test points): {LABELS[key]}",
                                                         default=None, **note))
        out[f"heldout_{key}"] = (float | None, headline(f"Spearman with exact (held-out test points): {LABELS[key]}",
                                                        default=None, **note))
        if key in CALIBRATED:
            out[f"calibration_{key}"] = (float | None, headline(f"calibration |predicted| / |exact|: {LABELS[key]}",
                                                                default=None, **note))
    return out


@dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    num_clusters: int = headline("clusters K", digits=5)
    test_points: int = headline("test points", digits=4)
    selection_points: int = headline("test points that chose DDM+ and the online settings", digits=4)
    online_lr: float = headline("online learning rate chosen")
    online_lr_factor: float = headline("online learning rate chosen / the profile's")
    online_steps: int = headline("online steps chosen", digits=4)
    plus_description: str = headline("DDM+ settings")


Result = result_class(_Base, _fields(), [
    ("table", pd.DataFrame, table("every ablation against exact retraining")),
    ("online_grid", pd.DataFrame, table("the online settings tried")),
    ("effects", dict, detail(None)),
], __name__)


def _spearman(effects: np.ndarray, exact: np.ndarray, rows: slice | np.ndarray) -> float:
    rho = rowwise_spearman(np.asarray(effects)[rows], exact[rows])
    return float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")


def _describe(distill: DistillConfig, online: OnlineConfig, base: Experiment) -> str:
    """DDM+'s settings in words: what differs from the paper's DDM at this profile."""
    paper_d, paper_o = base.config.distill, base.config.online
    parts = [f"{f.name}={getattr(distill, f.name)}" for f in dataclasses.fields(distill)
             if getattr(distill, f.name) != getattr(paper_d, f.name)]
    parts += [f"online.{f.name}={format_number(getattr(online, f.name), 2)}" for f in dataclasses.fields(online)
              if f.name in ("finetune_lr", "finetune_steps") and getattr(online, f.name) != getattr(paper_o, f.name)]
    return ", ".join(parts) or "the paper's settings"


def _effects(exp: Experiment, distill: DistillConfig, online: OnlineConfig, truth: GroundTruth) -> np.ndarray:
    return evaluation.ddm_effects(exp, exp.synset(distill), truth, online)[0]


def ascent_effects(exp: Experiment, truth: GroundTruth, online: OnlineConfig) -> np.ndarray:
    """(N, K) margin drops after ``online.finetune_steps`` steps of gradient ascent at
    ``online.finetune_lr`` on each cluster's real images: what a synset imitates."""
    return baselines.real_ascent_effects(exp.new_model(), exp.target().final, exp.train.images, exp.train.labels,
                                         exp.clusters(), exp.test.images[truth.test_index], truth.directions,
                                         online.finetune_steps, online.finetune_lr)


def tune_online(exp: Experiment, distill: DistillConfig | None, truth: GroundTruth, exact: np.ndarray,
                rows: np.ndarray) -> tuple[OnlineConfig, pd.DataFrame]:
    """The online learning rate and step count (LR_FACTORS x STEP_FACTORS around the profile's)
    that rank clusters best on the test points ``rows``, fine-tuning on ``distill``'s synset
    (None: ascending the real clusters, :func:`ascent_effects`); the grid as a table."""
    base = exp.config.online
    tried = []
    for lr_factor in LR_FACTORS:
        for step_factor in STEP_FACTORS:
            online = dataclasses.replace(base, finetune_lr=base.finetune_lr * lr_factor,
                                         finetune_steps=max(1, round(base.finetune_steps * step_factor)))
            effects = (ascent_effects(exp, truth, online) if distill is None
                       else _effects(exp, distill, online, truth))
            tried.append((online, _spearman(effects, exact, rows)))
    best = max(tried, key=lambda t: -np.inf if np.isnan(t[1]) else t[1])[0]
    # The rates as the book prints numbers (at most four decimals): they index the table.
    grid = pd.DataFrame([{"online lr": format_number(o.finetune_lr, 2), "online steps": o.finetune_steps,
                          "Spearman (choosing test points)": rho} for o, rho in tried])
    return best, grid.set_index(["online lr", "online steps"])


def run(exp: Experiment) -> Result:
    """Every ablation, the online tuning, DDM+ and the references against the exact
    leave-one-cluster-out retrains of chapter 03 (shared through the artifact store)."""
    clustering = exp.clusters()
    truth = evaluation.leave_one_out_ground_truth(exp, clustering)
    exact = truth.exact_effects()
    n = len(truth.test_index)
    choose = np.arange(n) < round(SELECTION_POINTS * n)
    report = ~choose
    paper_distill, paper_online = exp.config.distill, exp.config.online

    choices: dict[str, Choice] = {}
    smallest = int(torch.bincount(clustering.assignment, minlength=clustering.num_clusters).min())
    skipped = []
    for key, (distill_changes, online_changes) in ABLATIONS.items():
        distill = dataclasses.replace(paper_distill, **distill_changes)
        online = dataclasses.replace(paper_online, **online_changes)
        if distill.ipc > smallest:      # a synthetic image per cluster needs a real one to start from
            skipped.append(key)
            continue
        choices[key] = Choice(distill, online, _effects(exp, distill, online, truth))
    tuned, grid = tune_online(exp, paper_distill, truth, exact, choose)
    choices["online"] = Choice(paper_distill, tuned, _effects(exp, paper_distill, tuned, truth))
    # DDM+: the best distillation change (on the choosing points), with the online settings tuned for it.
    best_key = max(choices, key=lambda k: np.nan_to_num(_spearman(choices[k].effects, exact, choose), nan=-1))
    best = choices[best_key]
    plus_online, _ = tune_online(exp, best.distill, truth, exact, choose)
    candidates = [best, Choice(best.distill, plus_online, _effects(exp, best.distill, plus_online, truth))]
    choices["plus"] = max(candidates, key=lambda c: np.nan_to_num(_spearman(c.effects, exact, choose), nan=-1))

    effects = {key: c.effects for key, c in choices.items()}
    effects["ascent"] = ascent_effects(exp, truth, paper_online)
    ascent_online, _ = tune_online(exp, None, truth, exact, choose)
    effects["ascent_tuned"] = ascent_effects(exp, truth, ascent_online)
    references = evaluation.baseline_effects(exp, clustering, truth)
    effects["tracin"] = references[evaluation.TRACIN]
    effects["centroid"] = references[evaluation.NEAREST_CENTROID]
    effects["random"] = references[evaluation.RANDOM]
    run_if = influence.influence_run(exp, influence.IF_EXPLICIT, clustering, truth.test_index)
    effects["if"] = -(run_if.changes * truth.directions[None]).sum(-1).T.numpy()
    if truth.noise_seed is not None:
        effects["noise"] = truth.noise_effects(truth.noise_seed)

    values: dict = {}
    rows = []
    for key, value in effects.items():
        spearman, heldout = _spearman(value, exact, slice(None)), _spearman(value, exact, report)
        values[f"spearman_{key}"], values[f"heldout_{key}"] = spearman, heldout
        calibration = evaluation.calibration(value, truth) if key in CALIBRATED else None
        if calibration is not None:
            values[f"calibration_{key}"] = calibration
        rows.append({"method": LABELS[key], "Spearman with exact (all)": spearman,
                     "Spearman (held-out test points)": heldout, "calibration |pred| / |exact|": calibration})
    for key in skipped:
        rows.append({"method": f"{LABELS[key]} (not run: the smallest cluster has {smallest} image"
                               f"{'s' if smallest > 1 else ''})"})
    plus = choices["plus"]
    return Result(profile=exp.config.profile, dataset=exp.config.data.name, num_clusters=clustering.num_clusters,
                  test_points=n, selection_points=int(choose.sum()), online_lr=tuned.finetune_lr,
                  online_lr_factor=tuned.finetune_lr / paper_online.finetune_lr,
                  online_steps=tuned.finetune_steps, plus_description=_describe(plus.distill, plus.online, exp),
                  table=pd.DataFrame(rows).set_index("method"), online_grid=grid, effects={**effects, "exact": exact}, **values)


def paper_values(dataset: str) -> dict:
    """The paper never measures agreement with exact retraining nor ablates these choices."""
    return {}


# ------------------------------------------------------------------------------------------ verdict
def _n(value: float) -> str:
    return format_number(value, 2)


def _reading(run: RunNumbers) -> list[str]:
    if not run.has("heldout_paper", "heldout_plus", "heldout_tracin"):
        return []
    paper, plus, tracin = run["heldout_paper"], run["heldout_plus"], run["heldout_tracin"]
    lines = [f"- On the held-out test points the paper's DDM agrees with exact retraining at Spearman {_n(paper)}; "
             f"DDM+ ({run['plus_description']}) at {_n(plus)}; TracIn-style at {_n(tracin)}"
             + (f"; Koh et al.'s influence function at {_n(run['heldout_if'])}" if run.has("heldout_if") else "")
             + (f"; random choice at {_n(run['heldout_random'])}" if run.has("heldout_random") else "") + "."]
    singles = [k for k in ABLATIONS if k != "paper" and run.has(f"heldout_{k}")]
    if singles:
        gains = sorted(((run[f"heldout_{k}"] - paper, k) for k in singles), reverse=True)
        lines.append("- One change at a time, the largest gain over the paper's DDM: "
                     + "; ".join(f"{LABELS[k]} {gain:+.2f}" for gain, k in gains[:3]) + ".")
    if run.has("heldout_noise"):
        floor = run["heldout_noise"]
        share = plus / floor if floor > 0 else float("nan")
        lines.append(f"- The noise floor is {_n(floor)}: DDM+ reaches {_n(100 * share)}% of it "
                     + ("(the target of 60% is met)." if share >= FLOOR_SHARE else "(short of the 60% target)."))
    if run.has("heldout_ascent_tuned"):
        ceiling = max(run["heldout_ascent_tuned"], run.get("heldout_ascent", -np.inf))
        line = (f"- What a synset imitates, gradient ascent on each real cluster, agrees with exact retraining at "
                f"{_n(ceiling)} at its best online settings"
                + (f" ({_n(run['heldout_ascent'])} at the profile's)" if run.has("heldout_ascent") else "") + ". ")
        if run.has("heldout_noise") and run["heldout_noise"] > 0:
            floor = run["heldout_noise"]
            short = ceiling < FLOOR_SHARE * floor
            line += (f"That is {_n(100 * ceiling / floor)}% of the noise floor: "
                     + ("even a synset that reproduced its cluster's real gradients exactly would rank clusters "
                        "short of the 60% target, so no change to the distillation alone can be expected to reach "
                        "it; the limit is the few-step fine-tune that stands in for retraining."
                        if short else "a synset that imitated it well could reach the 60% target."))
        lines.append(line)
    best_if = run["heldout_if"] if run.has("heldout_if") else -np.inf
    bar = max(tracin, best_if)
    lines.append(f"- DDM+ {'matches or beats' if plus >= bar - BAND else 'stays below'} the better of TracIn-style and "
                 f"the influence function ({_n(bar)}; within {BAND} counts as matching).")
    if run.has("online_lr_factor"):
        factor = run["online_lr_factor"]
        edge = np.isclose(factor, min(LR_FACTORS)) or np.isclose(factor, max(LR_FACTORS))
        lines.append(f"- The online fine-tune ranks best at {_n(factor)}x the profile's learning rate"
                     + (", an end of the range tried: a wider range might do better." if edge else
                        ", inside the range tried."))
    if run.has("calibration_paper", "calibration_plus"):
        lines.append(f"- Calibration (1 is the right effect size): the paper's DDM {_n(run['calibration_paper'])}, "
                     f"DDM+ {_n(run['calibration_plus'])}.")
    return lines


def verdict(result: Result, recorded=()) -> str:
    """Which change helps, whether DDM+ reaches the references, from this run and the recorded ones."""
    return verdict_for(_reading, result, recorded)


def figures(result: Result, provenance: str) -> dict:
    """Held-out agreement of every ablation beside the references, the noise floor as a line."""
    from ddm import plots

    keys = [k for k in SHORT if k != "noise" and result.headline_numbers().get(f"heldout_{k}") is not None]
    shown = pd.Series({SHORT[k]: getattr(result, f"heldout_{k}") for k in keys})
    return {"ablation_bars": plots.method_bars(
        shown, provenance, "mean Spearman with exact retraining, held-out test points",
        references=tuple(SHORT[k] for k in (*CEILING, *REFERENCES)), floor=result.heldout_noise,
        title="Which change makes DDM rank clusters like retraining?")}
