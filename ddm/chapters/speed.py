"""Chapter 07: what DDM costs, stage by stage, beside exact retraining and the baselines.

The paper's case for DDM is speed: "comparable model behavior evaluation while significantly
speeding up the process compared to the direct retraining method" (abstract), with no wall-clock
number (NOTES: "The paper states no wall-clock figures"). This chapter measures it on one machine,
every stage from scratch (:mod:`ddm.speed`; the artifact store is bypassed):

- the cost of each stage at the profile's K and of each attribution baseline (wall time, peak memory);
- how DDM online, DDM end to end and exact leave-one-cluster-out retraining grow with K and with
  the training-set size;
- the break-even: after how many deletion masks DDM end to end beats exact retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, influence
from ddm.book import format_number
from ddm.chapters.base import (ChapterResult, RunNumbers, detail, headline, open_experiment, result_class, table,
                               verdict_for)
from ddm.experiment import Experiment
from ddm.speed import StageCosts, SweepPoint, break_even, cost_against_clusters, cost_against_size, stage_costs

CHAPTER = "07_speed"
# Clusters per class of the sweep over K (K = L x C: 10 to 1,000 on the 10-class data sets); a
# value is skipped when the smallest class has fewer than MIN_IMAGES_PER_CLUSTER images per cluster.
CLUSTER_GRID = (1, 3, 10, 30, 100)
MIN_IMAGES_PER_CLUSTER = 2
SIZE_FRACTIONS = (25, 50, 100)    # training-set sizes of the sweep over n, % of the profile's images per class
RETRAINS = 2                      # exact retrains timed at the profile's K (their mean is "one retrain")

STAGES = {
    "target": "target training (Eq. 2)",
    "clustering": "clustering (Supp. 6.1)",
    "distillation": "distillation (Alg. 1, offline)",
    "finetunes": "K leave-one-out fine-tunes (Eq. 9, online)",
    "prediction": "predictions of the K perturbed models",
    "mask_finetunes": "|P| random-mask fine-tunes (Eq. 9, online)",
    "fit": "W fit (Eq. 8)",
    "retrain": "one exact retrain (one cluster removed)",
}
METHODS = {"tracin": "TracIn-style (ours, checkpoints)", **{f"if_{m}": influence.LABELS[m] for m in influence.METHODS}}
STAGE_GROUP = {"target": "shared", "clustering": "shared", "distillation": "DDM offline", "finetunes": "DDM online",
               "prediction": "DDM online", "mask_finetunes": "DDM online", "fit": "DDM online",
               "retrain": "exact retraining"}
CURVES = {"ddm_online": "DDM online (K fine-tunes + predictions)",
          "ddm_end_to_end": "DDM end to end (distillation + online)",
          "exact": "exact leave-one-out (K retrains)"}

# Verdict thresholds, named where they are used.
TARGET_SPEEDUP = 20.0    # issue 12's target: DDM end to end this many times cheaper than exact LOO at the cpu profile


def _tracin(exp: Experiment, clustering, test_index: torch.Tensor, trajectory) -> np.ndarray:
    x, y = exp.test.images[test_index], exp.test.labels[test_index]
    return baselines.tracin_effects(exp.new_model(), trajectory, exp.train.images, exp.train.labels, clustering, x, y,
                                    exp.config.train.lr)


def _influence(method: str):
    def call(exp: Experiment, clustering, test_index: torch.Tensor, trajectory):
        return influence.influence_run(exp, method, clustering, test_index)
    return call


def _fields() -> dict:
    """The headline fields, declared in one place: per stage and method its seconds and peak
    memory, per sweep point its three costs, then the derived totals."""
    out: dict = {}
    for key, label in STAGES.items():
        out[f"seconds_{key}"] = (float | None, headline(f"seconds: {label}", default=None))
        out[f"peak_mb_{key}"] = (float | None, headline(f"peak MiB: {label}", default=None))
    for key, label in METHODS.items():
        out[f"seconds_{key}"] = (float | None, headline(f"seconds: {label}", default=None))
        out[f"peak_mb_{key}"] = (float | None, headline(f"peak MiB: {label}", default=None))
    for c in CLUSTER_GRID:
        for curve, label in CURVES.items():
            out[f"seconds_{curve}_c{c}"] = (float | None, headline(f"seconds at C = {c} per class: {label}",
                                                                   default=None))
    for pct in SIZE_FRACTIONS:
        out[f"train_images_n{pct}"] = (int | None, headline(f"training images at {pct}% of the profile's",
                                                            digits=6, default=None))
        for curve, label in CURVES.items():
            out[f"seconds_{curve}_n{pct}"] = (float | None, headline(f"seconds at {pct}% of the images: {label}",
                                                                     default=None))
    return out


@dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    num_clusters: int = headline("clusters K", digits=5)
    train_images: int = headline("training images", digits=6)
    test_points: int = headline("test points", digits=4)
    distill_steps: int = headline("distillation steps", digits=5)
    masks: int = headline("|P|, random masks of the Eq. 8 fit", digits=5)
    seconds_ddm_end_to_end: float = headline("seconds: DDM end to end, all K leave-one-out (distillation + online)")
    seconds_exact_loo: float = headline("seconds: exact leave-one-out of all K (K x one measured retrain)")
    speedup_end_to_end: float = headline("exact leave-one-out / DDM end to end (x)")
    speedup_online: float = headline("exact leave-one-out / DDM online (x)")
    break_even_masks: float | None = headline("break-even: deletion masks after which DDM end to end is cheaper",
                                              default=None)
    distill_scaling_check: float | None = headline(
        "distillation: measured full run / the sum of its measured parts", default=None)


Result = result_class(_Base, _fields(), [
    ("stages", pd.DataFrame, table("every stage's cost")),
    ("methods_table", pd.DataFrame, table("every method's cost")),
    ("against_k", pd.DataFrame, table("cost against K")),
    ("against_n", pd.DataFrame, table("cost against the training-set size")),
    ("reuse", pd.DataFrame, detail(None)),
], __name__)


def cluster_grid(exp: Experiment) -> list[int]:
    """The values of CLUSTER_GRID this data set affords (every cluster at least
    MIN_IMAGES_PER_CLUSTER images in the smallest class)."""
    smallest = int(torch.bincount(exp.train.labels).min())
    return [c for c in CLUSTER_GRID if c * MIN_IMAGES_PER_CLUSTER <= smallest]


def _curves(point: SweepPoint) -> dict[str, float]:
    return {"ddm_online": point.online_seconds, "ddm_end_to_end": point.ddm_seconds, "exact": point.exact_seconds}


def _sizes(exp: Experiment) -> dict[int, int]:
    """% -> images per class of the size sweep (the profile's per-class count, or the smallest class)."""
    full = exp.config.data.train_per_class or int(torch.bincount(exp.train.labels).min())
    return {pct: max(exp.config.clusters.clusters_per_class * MIN_IMAGES_PER_CLUSTER, full * pct // 100)
            for pct in SIZE_FRACTIONS}


def run(exp: Experiment, influence_methods: tuple[str, ...] = influence.METHODS) -> Result:
    """Measure every stage, the two sweeps and the break-even on ``exp`` (this takes as long as
    training the target about K_max / K + 4 times; see the chapter for the times per profile)."""
    test_index = exp.test_point_indices()
    methods = {"tracin": _tracin, **{f"if_{m}": _influence(m) for m in influence_methods}}
    costs: StageCosts = stage_costs(exp, test_index, RETRAINS, methods)
    s = costs.stages
    K = costs.num_clusters
    online = s["finetunes"].seconds + s["prediction"].seconds
    end_to_end = s["distillation"].seconds + online
    exact = K * s["retrain"].seconds
    per_mask_ddm = online / K
    values: dict = {f"seconds_{k}": c.seconds for k, c in s.items()}
    values.update({f"peak_mb_{k}": c.peak_mb for k, c in s.items()})
    values.update({f"seconds_{k}": c.seconds for k, c in costs.methods.items()})
    values.update({f"peak_mb_{k}": c.peak_mb for k, c in costs.methods.items()})

    # The profile's own C joins the sweep (a table row; headline fields exist for CLUSTER_GRID only)
    # so that the full distillation measured above checks the step-time scaling.
    grid = sorted(set(cluster_grid(exp)) | {exp.config.clusters.clusters_per_class})
    by_k = cost_against_clusters(exp, grid, test_index, costs.trajectory, s["retrain"].seconds)
    for c, point in zip(grid, by_k):
        if c in CLUSTER_GRID:
            values.update({f"seconds_{curve}_c{c}": v for curve, v in _curves(point).items()})
    own = [p for c, p in zip(grid, by_k) if c == exp.config.clusters.clusters_per_class]
    check = s["distillation"].seconds / own[0].distill_seconds if own and own[0].distill_seconds > 0 else None

    sizes = _sizes(exp)

    def make(per_class: int) -> Experiment:
        return open_experiment(exp.config.profile, exp.data_root, exp.config.data.name,
                               {**_overrides(exp), "data.train_per_class": per_class},
                               cache_root=exp.store.root, model=exp.custom_model)
    by_n = cost_against_size(make, list(sizes.values()), len(test_index))
    for pct, point in zip(sizes, by_n):
        values[f"train_images_n{pct}"] = point.train_images
        values.update({f"seconds_{curve}_n{pct}": v for curve, v in _curves(point).items()})

    stages = pd.DataFrame([{"stage": label, "part": STAGE_GROUP[k], "seconds": s[k].seconds,
                            "peak MiB": s[k].peak_mb} for k, label in STAGES.items()]).set_index("stage")
    methods_table = pd.DataFrame([{"method": METHODS[k], "seconds": c.seconds, "peak MiB": c.peak_mb}
                                  for k, c in costs.methods.items()]).set_index("method")
    against_k = pd.DataFrame([{"K": p.num_clusters, "one distillation step (s)": p.distillation.step_seconds,
                               **{CURVES[k]: v for k, v in _curves(p).items()}} for p in by_k]).set_index("K")
    against_n = pd.DataFrame([{"training images": p.train_images, "one exact retrain (s)": p.retrain_seconds,
                               **{CURVES[k]: v for k, v in _curves(p).items()}} for p in by_n]
                             ).set_index("training images")
    masks = np.unique(np.round(np.geomspace(1, 10 * K, 60)).astype(int))
    reuse = pd.DataFrame({"masks": masks, "DDM end to end": s["distillation"].seconds + per_mask_ddm * masks,
                          "exact retraining": s["retrain"].seconds * masks}).set_index("masks")
    return Result(profile=exp.config.profile, dataset=exp.config.data.name, num_clusters=K,
                  train_images=len(exp.train), test_points=len(test_index), distill_steps=costs.distill_steps,
                  masks=costs.masks, seconds_ddm_end_to_end=end_to_end, seconds_exact_loo=exact,
                  speedup_end_to_end=exact / end_to_end, speedup_online=exact / online,
                  break_even_masks=break_even(s["distillation"].seconds, per_mask_ddm, s["retrain"].seconds),
                  distill_scaling_check=check, stages=stages, methods_table=methods_table, against_k=against_k,
                  against_n=against_n, reuse=reuse, **values)


def _overrides(exp: Experiment) -> dict:
    """The experiment's configuration as dotted overrides of its profile (so that the size sweep
    keeps whatever the reader changed)."""
    from ddm.config import get_profile

    base, now = get_profile(exp.config.profile).to_dict(), exp.config.to_dict()
    out = {}
    for section, fields in now.items():
        if isinstance(fields, dict):
            out.update({f"{section}.{k}": v for k, v in fields.items() if base[section].get(k) != v})
    out.pop("model.arch", None)       # passed again as the network itself
    out.pop("data.name", None)
    return out


def paper_values(dataset: str) -> dict:
    """The paper reports no wall-clock time, memory or break-even for any stage."""
    return {}


# ------------------------------------------------------------------------------------------ verdict
def _n(value: float) -> str:
    return format_number(value, 3)


def _reading(run: RunNumbers) -> list[str]:
    if not run.has("speedup_end_to_end", "seconds_ddm_end_to_end", "seconds_exact_loo", "num_clusters"):
        return []
    K = run["num_clusters"]
    lines = [f"- At K = {K}, DDM end to end took {_n(run['seconds_ddm_end_to_end'])} s for all K leave-one-out "
             f"questions, exact retraining {_n(run['seconds_exact_loo'])} s (K x one measured retrain): "
             f"{_n(run['speedup_end_to_end'])}x cheaper"
             + (f", {'reaching' if run['speedup_end_to_end'] >= TARGET_SPEEDUP else 'short of'} the "
                f"{TARGET_SPEEDUP:.0f}x the project set as its target." if run.profile == "cpu" else ".")]
    if run.has("speedup_online"):
        lines.append(f"- Once the synset exists, each question costs {_n(run['speedup_online'])}x less than a retrain "
                     "(online stage only).")
    if run.has("break_even_masks"):
        lines.append(f"- DDM's distillation pays for itself after {_n(run['break_even_masks'])} deletion masks; "
                     "every test point of a mask comes at no extra retrain for either method.")
    elif run.has("seconds_distillation"):
        lines.append("- A DDM fine-tune cost as much as a retrain here: DDM never breaks even on this run.")
    if run.has("seconds_distillation", "seconds_retrain"):
        lines.append(f"- Distillation alone cost {_n(run['seconds_distillation'] / run['seconds_retrain'])} exact "
                     "retrains.")
    return lines


def verdict(result: Result, recorded=()) -> str:
    """The speed claim in words, from this run's numbers and the recorded ones."""
    return verdict_for(_reading, result, recorded)


def figures(result: Result, provenance: str) -> dict:
    """Cost against K, against n, and the reuse curve with its break-even."""
    from ddm import plots

    return {
        "speed_against_k": plots.cost_curves(result.against_k[list(CURVES.values())], provenance,
                                             "clusters K (= fine-tunes, = retrains)", "wall time (s, log)",
                                             "How each cost grows with K"),
        "speed_against_n": plots.cost_curves(result.against_n[list(CURVES.values())], provenance,
                                             "training images n", "wall time (s, log)",
                                             f"How each cost grows with the training set (K = {result.num_clusters})"),
        "speed_reuse": plots.cost_curves(result.reuse, provenance, "deletion masks answered", "wall time (s, log)",
                                         f"Reuse: when DDM pays off (K = {result.num_clusters})",
                                         mark_x=result.break_even_masks, mark_label="break-even"),
    }
