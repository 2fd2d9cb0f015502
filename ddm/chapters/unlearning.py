"""Chapter 04: unlearning with the synset (Table 4, Fig. 7, Supp. Eq. 12-13).

Three measurements, all against what exact retraining would give:

- **Table 4, everything at once.** theta_tau fine-tuned on a whole synset (every cluster deleted:
  the exact answer is theta_0 itself), for DDM, DDM+ (ours, soft labels) and, as a control, the
  plain gradient-matching synset. The paper's own DDM-match row is measured the paper's way:
  its synset is matched to the *start* of training, so theta_0 is *trained* on it and the
  accuracy it reaches is DDM-match's Acc_tau (:func:`train_on_synset`).
- **Fig. 7, one cluster at a time.** For every cluster, the output distance between the exactly
  unlearned model and DDM's fine-tune on that cluster's synset, beside doing nothing, a tenth of
  the rate, soft labels, another cluster's synset, gradient ascent on the real cluster and the
  retraining noise floor.
- **Supp. Eq. 12-13, error against clusters deleted.** The same distance for one cluster, random
  subsets of about half of them and all of them. The leave-one-out fine-tunes and exact retrains
  are computed once and serve both this and Fig. 7.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, book, datasets, paper, variants
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, table, verdict_for
from ddm.clustering import Clustering
from ddm.evaluation import lds_masks, tenth_rate
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.metrics import output_distance
from ddm.online import finetune, leave_one_out_masks, removal_sets
from ddm.training import Params, accuracy, predict_logits

CHAPTER = "04_unlearning"

# How many accuracy readings :func:`train_on_synset` takes along the way (plus the start).
CURVE_POINTS = 10

# Output distances are reported x100, the scale at which the paper's Table 1 reports Dist1.
DISTANCE_SCALE = 100.0

# Verdict thresholds, named where they are used.
ERASES_DROP = 20.0          # accuracy drop (points) from the target above which a synset "erases" what was learnt
ERASES_SHARE = 0.7          # ... or this share of what training added (target minus theta_0), when that is smaller:
                            # a target that gained less than ERASES_DROP / ERASES_SHARE points (Tiny ImageNet on a
                            # CPU) could never drop ERASES_DROP points
LEARNT_LITTLE = 5.0         # points a target must gain over theta_0 before its unlearning is judged at all: below it
                            # (Tiny ImageNet at the cpu profile: 1.0% -> 1.2%) a "drop" is a handful of test images
PAST_THETA0 = 2.0           # points below theta_0's accuracy at which fine-tuning has gone "past" the untrained net
END_GAP_MARGIN = 5.0        # points by which one synset must land nearer its far end to "match better"
CLOSER_MAJORITY = 50.0      # % of clusters above which a method is "closer than doing nothing for most clusters"
NOT_SPECIFIC_RATIO = 1.1    # another cluster's synset within this factor of the right one's distance: not specific


@dataclass(frozen=True)
class Sample:
    """How much of Fig. 7 and Supp. Eq. 12-13 a run measures where every cluster is more than a
    profile affords: a seeded sample of ``clusters`` clusters, each unlearned on its own (with its
    exact retrain and its noise-floor retrain), and the first ``subsets`` of chapter 03's random
    subsets. Table 4 is always measured in full (it needs no exact retrain)."""

    clusters: int
    subsets: int
    reason: str                 # one sentence the page prints: why not every cluster


# (profile, data set) -> the sample measured there; absent: every cluster and every subset (like
# ddm.scale.DATASET_SCALES). Tiny ImageNet has 200 classes, so even one cluster per class is
# K = 200 clusters; at the cpu profile's settings for it (ddm.datasets.PROFILE_SETTINGS) an exact
# retrain costs about a minute of one core, and 2K + 20 of them would be seven hours.
SAMPLES: dict[tuple[str, str], Sample] = {
    ("cpu", "tiny-imagenet"): Sample(
        clusters=5, subsets=2,
        reason="with 200 classes even one cluster per class is K = 200, and an exact retrain per cluster, twice "
               "(the noise floor), would take about seven hours of a CPU core"),
}


def sample_for(profile: str, dataset: str) -> Sample | None:
    """The sample a run at ``profile`` on ``dataset`` measures (None: everything)."""
    return SAMPLES.get((profile, dataset))


def sampled_clusters(num_clusters: int, count: int | None, seed: int) -> torch.Tensor:
    """The clusters Fig. 7 unlearns one at a time: every one (``count`` None or at least K), or
    ``count`` of them drawn without replacement under ``seed``, sorted. (n,) int64."""
    if count is None or count >= num_clusters:
        return torch.arange(num_clusters)
    if count < 2:
        raise ValueError(f"a sample of {count} cluster(s) leaves Fig. 7's random-other-cluster reference nothing to "
                         "pair with; sample at least 2")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_clusters, generator=generator)[:count].sort().values


def sample_note(exp: Experiment, sample: Sample | None, num_clusters: int) -> str:
    """One line for the page: which clusters and subsets this run measured, and why."""
    if sample is None or sample.clusters >= num_clusters:
        return ""
    return (f"Fig. 7 and the error against clusters deleted are measured on a seeded sample of {sample.clusters} of "
            f"the K = {num_clusters} clusters (each unlearned on its own) and on {sample.subsets} random subsets, "
            f"because {sample.reason}; Table 4 uses the whole synset. "
            f"(Profile `{exp.config.profile}`, {datasets.label(exp.config.data.name)}.)")


# The per-cluster methods of Fig. 7, by key; the figure and tables show the labels.
UNCHANGED, DDM, DDM_SLOW, SOFT, RANDOM_OTHER, ASCENT, NOISE = (
    "unchanged", "ddm", "ddm_slow", "soft", "random_other", "ascent", "noise")
METHOD_LABELS = {
    UNCHANGED: "target unchanged (do nothing)",
    DDM: "DDM fine-tune (paper: lr = training lr)",
    DDM_SLOW: "DDM fine-tune, lr / 10",
    SOFT: "DDM+ (ours, soft labels)",
    RANDOM_OTHER: "random choice: another cluster's DDM synset",
    ASCENT: "gradient ascent on the real cluster",
    NOISE: "noise floor: exact retrain, another data order",
}
# The groups of the error-against-deleted figure (Supp. Eq. 12-13).
ONE, SUBSETS, ALL = "one cluster", "random subsets (LDS masks)", "all clusters (exact: theta_0)"
FINETUNED, UNTOUCHED = "DDM fine-tune", "target unchanged"  # the two models compared in each group


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    # Table 4
    acc_theta0: float = headline("Acc theta_0: the untrained network (%)", digits=3)
    acc_target: float = headline("Acc_tau: the target theta_tau (%)", digits=3)
    acc_ddm_finetune: float = headline("Acc after fine-tuning theta_tau on the whole synset, DDM (%)", digits=3)
    acc_match_finetune: float = headline(
        "Acc after fine-tuning theta_tau on the whole synset, DDM-match (ours, previous protocol) (%)", digits=3)
    acc_soft_finetune: float = headline(
        "Acc after fine-tuning theta_tau on the whole synset, DDM+ (ours, soft labels) (%)", digits=3)
    acc_match_start: float = headline("DDM-match the paper's way: Acc_0, the network its training starts from (%)",
                                      digits=3, note="theta_0 itself: the GM synset is matched to the start")
    acc_match_trained: float = headline("DDM-match the paper's way: Acc_tau, theta_0 trained on the GM synset (%)",
                                        digits=3)
    synset_train_steps: int = headline("gradient steps training theta_0 on the GM synset (= the target's)")
    # Fig. 7: share of clusters where each method is closer to exact unlearning than doing nothing
    closer_ddm: float = headline("clusters where DDM is closer to exact than no change (%)", digits=3)
    closer_ddm_slow: float = headline("clusters where DDM lr / 10 is closer to exact than no change (%)", digits=3)
    closer_soft: float = headline("clusters where DDM+ (ours, soft labels) is closer to exact than no change (%)",
                                  digits=3)
    closer_random_other: float = headline(
        "clusters where another cluster's synset is closer to exact than no change (%)", digits=3)
    closer_ascent: float = headline("clusters where gradient ascent is closer to exact than no change (%)", digits=3)
    closer_noise: float | None = headline(
        "clusters where a retrain under another data order is closer to exact than no change (%)",
        digits=3, default=None)
    # Fig. 7: mean distance to the exact unlearned model over clusters
    distance_ddm: float = headline("mean distance to exact x100, DDM (1 cluster)", digits=3)
    distance_ddm_slow: float = headline("mean distance to exact x100, DDM lr / 10 (1 cluster)", digits=3)
    distance_soft: float = headline("mean distance to exact x100, DDM+ (ours, soft labels) (1 cluster)", digits=3)
    distance_random_other: float = headline(
        "mean distance to exact x100, random other cluster's synset (1 cluster)", digits=3)
    distance_ascent: float = headline("mean distance to exact x100, gradient ascent on real cluster (1 cluster)",
                                      digits=3)
    distance_unchanged: float = headline("mean distance to exact x100, unchanged (1 cluster)", digits=3)
    distance_noise: float | None = headline("mean distance to exact x100, noise floor (1 cluster)", digits=3,
                                            default=None)
    # Supp. Eq. 12-13: more clusters deleted (one cluster: the two Fig. 7 means above)
    subset_clusters: float = headline("clusters deleted by a random subset (mean)", digits=3)
    distance_subsets_ddm: float = headline("mean distance to exact x100, DDM (random subsets)", digits=3)
    distance_subsets_unchanged: float = headline("mean distance to exact x100, unchanged (random subsets)", digits=3)
    distance_all_ddm: float = headline("distance to exact x100, DDM (all clusters; exact = theta_0)", digits=3)
    distance_all_unchanged: float = headline("distance to exact x100, unchanged (all clusters; exact = theta_0)",
                                             digits=3)

    accuracies: pd.DataFrame = table("Table 4: the accuracy at both ends of each route")
    synset_training: pd.DataFrame = table("theta_0 trained on the GM synset: test accuracy along the way")
    per_method: pd.DataFrame = table("Fig. 7: every method against exact unlearning of one cluster")
    by_deleted: pd.DataFrame = table("distance to exact unlearning by number of clusters deleted")
    per_cluster: pd.DataFrame = detail()   # long: cluster, method (label), distance to exact (x100)
    deleted: pd.DataFrame = detail()       # long: deleted clusters, group, model, distance to exact (x100)
    measured_clusters: int = detail(0)     # clusters unlearned one at a time in Fig. 7 (K, or a sample)
    sample_note: str = detail("")          # one line: the sample measured and why ("" when every cluster)
    settings: str = detail("")             # one line: the run's K and settings (and why, on Tiny ImageNet)


# ------------------------------------------------------------------------------------------ Table 4
def target_steps(exp: Experiment) -> int:
    """The number of SGD steps of the target's own training: tau epochs of ceil(N / batch) batches."""
    t = exp.config.train
    return t.epochs * math.ceil(len(exp.train) / t.batch_size)


def train_on_synset(model: torch.nn.Module, start: Params, synset: Synset, test_images: torch.Tensor,
                    test_labels: torch.Tensor, steps: int, lr: float, points: int = CURVE_POINTS
                    ) -> tuple[Params, pd.DataFrame]:
    """Table 4's DDM-match route, as the paper runs it: train ``start`` (theta_0) on the whole
    plain gradient-matching synset, full-batch gradient descent (the synset is smaller than one
    batch) for ``steps`` steps at rate ``lr``. Returns the trained parameters and the test
    accuracy after 0, ..., ``steps`` steps (``points`` readings beside the start)."""
    marks = sorted({round(steps * i / points) for i in range(points + 1)})
    params, done, rows = start, 0, []
    for mark in marks:
        params = finetune(model, params, synset.images, synset.labels, synset.label_logits, mark - done, lr)
        done = mark
        rows.append({"steps on the GM synset": mark,
                     "test accuracy (%)": accuracy(predict_logits(model, params, test_images), test_labels) * 100})
    return params, pd.DataFrame(rows).set_index("steps on the GM synset")


def _accuracy_table(acc: dict[str, float], steps: int, finetune_steps: int) -> pd.DataFrame:
    """Table 4's shape: every route with the accuracy at its theta_0 end and at its theta_tau end."""
    rows = [
        ("Normal: theta_0 trained on the real training set", acc["theta0"], acc["target"],
         "the target's training"),
        ("DDM-match, the paper's way: theta_0 trained on the GM synset", acc["match_start"], acc["match_trained"],
         f"theta_tau end reached by {steps} full-batch steps from theta_0"),
        ("DDM: theta_tau fine-tuned on the whole DDM synset", acc["ddm"], acc["target"],
         f"theta_0 end reached by {finetune_steps} fine-tuning steps (Eq. 9)"),
        ("DDM-match, our previous protocol: theta_tau fine-tuned on the GM synset", acc["match_finetune"],
         acc["target"], f"theta_0 end reached by {finetune_steps} fine-tuning steps (a control)"),
        ("DDM+ (ours, soft labels): theta_tau fine-tuned on the whole synset", acc["soft"], acc["target"],
         f"theta_0 end reached by {finetune_steps} fine-tuning steps"),
    ]
    return pd.DataFrame(rows, columns=["route", "accuracy at the theta_0 end (%)", "accuracy at the theta_tau end (%)",
                                       "how the far end is reached"]).set_index("route")


# ------------------------------------------------------------------------------------------ Fig. 7
def _distance(a_logits: torch.Tensor, b_logits: torch.Tensor) -> torch.Tensor:
    """Fig. 7's "empirical error": :func:`ddm.metrics.output_distance` (Dist1 of Eq. 10 averaged
    over the test split) times :data:`DISTANCE_SCALE`, as Table 1 reports Dist1."""
    return output_distance(a_logits, b_logits) * DISTANCE_SCALE


def per_cluster_distances(exp: Experiment, synsets: dict[str, Synset], clustering: Clustering,
                          exact: torch.Tensor, ddm_loo: torch.Tensor,
                          clusters: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Fig. 7 with its references: per method key, the (n,) output distance x100 (whole test split) to
    the exact retrain without each cluster of ``clusters`` (None: all K, n = K; see
    :func:`sampled_clusters`). ``exact`` (n, N, L) and ``ddm_loo`` (n, N, L) are the leave-one-out
    exact retrains and DDM fine-tunes of those clusters, computed once by :func:`run`.

    - unchanged: the target itself (doing nothing);
    - DDM at the profile's fine-tune rate (the paper's: the training rate) and at a tenth of it;
    - our soft-label synset;
    - random choice: cluster k scored with the fine-tune on another cluster's synset (a seeded
      cyclic shift among the measured clusters, so every cluster is paired with a different one);
    - gradient ascent on k's real images, T steps at the fine-tune rate;
    - the noise floor: the exact retrain without k under another data order (if one is configured)."""
    K = clustering.num_clusters
    clusters = torch.arange(K) if clusters is None else clusters
    n = len(clusters)
    masks = leave_one_out_masks(K)[clusters]
    online = exp.config.online
    test = exp.test.images
    generator = torch.Generator().manual_seed(exp.config.eval.seed)
    shift = torch.randint(1, n, (1,), generator=generator).item() if n > 1 else 0
    other = (torch.arange(n) + shift) % n
    model = exp.new_model()
    ascents = list(baselines.real_ascent_params(model, exp.target().final, exp.train.images, exp.train.labels,
                                                clustering, online.finetune_steps, online.finetune_lr, clusters))
    logits = {
        UNCHANGED: exp.target_logits(test)[None].expand_as(exact),
        DDM: ddm_loo,
        DDM_SLOW: exp.perturbed_outputs(synsets[variants.PAPER_DDM], masks, test, tenth_rate(online)),
        SOFT: exp.perturbed_outputs(synsets[variants.DDM_SOFT], masks, test),
        RANDOM_OTHER: ddm_loo[other],
        ASCENT: torch.stack([predict_logits(model, p, test) for p in ascents]),
    }
    seeds = exp.config.eval.noise_seeds
    if seeds:
        logits[NOISE] = exp.exact_retrain_logits([(int(k),) for k in clusters], clustering, order_seed=seeds[0])
    return {key: _distance(value, exact).numpy() for key, value in logits.items()}


def closer_than_doing_nothing(distances: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per method key: mean and median distance to the exact unlearned model over clusters, and
    the share of clusters (%) where it is closer than the unchanged target (NaN for the target)."""
    unchanged = distances[UNCHANGED]
    rows = {key: {"mean distance x100": float(d.mean()), "median distance x100": float(np.median(d)),
                  "closer than doing nothing (% of clusters)":
                      np.nan if key == UNCHANGED else float((d < unchanged).mean() * 100)}
            for key, d in distances.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


# ------------------------------------------------------------------------------------------ Eq. 12-13
def deleted_rows(exp: Experiment, synset: Synset, clustering: Clustering, exact: torch.Tensor,
                 ddm_loo: torch.Tensor, all_deleted: torch.Tensor, subsets: int | None = None) -> pd.DataFrame:
    """Supp. Eq. 12-13 measured: distance to the exact retrain for one deleted cluster (the
    leave-one-out results of Fig. 7, reused), random subsets (the LDS masks) and all clusters
    (exact answer: theta_0; ``all_deleted`` holds DDM's whole-synset fine-tune's test logits).
    The subsets are :func:`ddm.evaluation.lds_masks`, the ones chapter 03 retrains exactly for its
    LDS, so the retrains are shared through the cache; ``subsets`` keeps the first that many (None:
    all). ``exact`` and ``ddm_loo`` hold the measured leave-one-out clusters (all K, or a sample).
    Long format: deleted clusters, group, model, distance to exact (x100)."""
    K = clustering.num_clusters
    target = exp.target_logits(exp.test.images)
    subsets = lds_masks(exp, K)[:subsets]
    groups = [
        (ONE, [1] * len(exact), exact, ddm_loo),
        (SUBSETS, [int((~m).sum()) for m in subsets], exp.exact_retrain_logits(removal_sets(subsets), clustering),
         exp.perturbed_outputs(synset, subsets, exp.test.images)),
        (ALL, [K], predict_logits(exp.new_model(), exp.initial_params(), exp.test.images)[None], all_deleted[None]),
    ]
    rows = []
    for group, counts, exact_logits, ddm_logits in groups:
        ddm = _distance(ddm_logits, exact_logits).tolist()
        still = _distance(target[None], exact_logits).tolist()
        for count, d, u in zip(counts, ddm, still):
            rows.append({"deleted clusters": count, "group": group, "model": FINETUNED, "distance to exact": d})
            rows.append({"deleted clusters": count, "group": group, "model": UNTOUCHED, "distance to exact": u})
    return pd.DataFrame(rows)


def _by_deleted_table(frame: pd.DataFrame) -> pd.DataFrame:
    means = frame.groupby(["group", "model"], sort=False)["distance to exact"].mean().unstack()
    counts = frame.groupby("group", sort=False)["deleted clusters"].mean()
    table = pd.DataFrame({"clusters deleted (mean)": counts,
                          f"distance to exact x100, {FINETUNED}": means[FINETUNED],
                          f"distance to exact x100, {UNTOUCHED}": means[UNTOUCHED]})
    table.index.name = "clusters deleted"
    return table


# ------------------------------------------------------------------------------------------ run
def run(exp: Experiment, sample: Sample | None | str = "auto") -> Result:
    """Table 4 (both protocols for DDM-match), Fig. 7 and the error against clusters deleted.

    ``sample``: how many clusters and subsets Fig. 7 and Supp. Eq. 12-13 measure; ``"auto"``: the
    profile's choice for the data set (:data:`SAMPLES`; every cluster where it names none), None:
    every cluster and subset."""
    if sample == "auto":
        sample = sample_for(exp.config.profile, exp.config.data.name)
    synsets = variants.distill_variants(exp, (variants.PAPER_DDM, variants.DDM_MATCH, variants.DDM_SOFT))
    clustering = exp.clusters()
    model = exp.new_model()
    test_x, test_y = exp.test.images, exp.test.labels
    online = exp.config.online
    theta0, target = exp.initial_params(), exp.target().final

    def acc(params: Params) -> float:
        return accuracy(predict_logits(model, params, test_x), test_y) * 100

    def whole(variant: str) -> Params:
        s = synsets[variant]
        return finetune(model, target, s.images, s.labels, s.label_logits, online.finetune_steps, online.finetune_lr)

    ddm_all = whole(variants.PAPER_DDM)
    ddm_all_logits = predict_logits(model, ddm_all, test_x)
    steps = target_steps(exp)
    trained, curve = train_on_synset(model, theta0, synsets[variants.DDM_MATCH], test_x, test_y, steps,
                                     exp.config.train.lr)
    accs = {"theta0": acc(theta0), "target": acc(target), "ddm": accuracy(ddm_all_logits, test_y) * 100,
            "match_finetune": acc(whole(variants.DDM_MATCH)), "soft": acc(whole(variants.DDM_SOFT)),
            "match_start": float(curve.loc[0, "test accuracy (%)"]), "match_trained": acc(trained)}

    # The leave-one-out exact retrains and DDM fine-tunes, once, for Fig. 7 and Eq. 12-13.
    # (n = K, or the sample's size where the profile cannot afford every cluster.)
    K = clustering.num_clusters
    chosen = sampled_clusters(K, sample.clusters if sample else None, exp.config.eval.seed)
    exact = exp.exact_retrain_logits([(int(k),) for k in chosen], clustering)                            # (n, N, L)
    ddm_loo = exp.perturbed_outputs(synsets[variants.PAPER_DDM], leave_one_out_masks(K)[chosen], test_x)  # (n, N, L)
    distances = per_cluster_distances(exp, synsets, clustering, exact, ddm_loo, chosen)
    per_method = closer_than_doing_nothing(distances)
    per_cluster = pd.DataFrame([{"cluster": int(chosen[i]), "method": METHOD_LABELS[key], "distance to exact": float(v)}
                                for key, d in distances.items() for i, v in enumerate(d)])
    deleted = deleted_rows(exp, synsets[variants.PAPER_DDM], clustering, exact, ddm_loo, ddm_all_logits,
                           sample.subsets if sample else None)
    by_deleted = _by_deleted_table(deleted)

    def mean(key: str) -> float | None:
        return float(per_method.loc[key, "mean distance x100"]) if key in per_method.index else None

    def closer(key: str) -> float | None:
        if key not in per_method.index:
            return None
        return float(per_method.loc[key, "closer than doing nothing (% of clusters)"])

    def group_mean(group: str, model_name: str) -> float:
        rows = deleted[(deleted["group"] == group) & (deleted["model"] == model_name)]
        return float(rows["distance to exact"].mean())

    shown = per_method.rename(index=METHOD_LABELS).rename_axis("method")
    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name,
        acc_theta0=accs["theta0"], acc_target=accs["target"], acc_ddm_finetune=accs["ddm"],
        acc_match_finetune=accs["match_finetune"], acc_soft_finetune=accs["soft"],
        acc_match_start=accs["match_start"], acc_match_trained=accs["match_trained"], synset_train_steps=steps,
        closer_ddm=closer(DDM), closer_ddm_slow=closer(DDM_SLOW), closer_soft=closer(SOFT),
        closer_random_other=closer(RANDOM_OTHER), closer_ascent=closer(ASCENT), closer_noise=closer(NOISE),
        distance_ddm=mean(DDM), distance_ddm_slow=mean(DDM_SLOW), distance_soft=mean(SOFT),
        distance_random_other=mean(RANDOM_OTHER), distance_ascent=mean(ASCENT), distance_unchanged=mean(UNCHANGED),
        distance_noise=mean(NOISE),
        subset_clusters=float(deleted.loc[deleted["group"] == SUBSETS, "deleted clusters"].mean()),
        distance_subsets_ddm=group_mean(SUBSETS, FINETUNED), distance_subsets_unchanged=group_mean(SUBSETS, UNTOUCHED),
        distance_all_ddm=group_mean(ALL, FINETUNED), distance_all_unchanged=group_mean(ALL, UNTOUCHED),
        accuracies=_accuracy_table(accs, steps, online.finetune_steps), synset_training=curve,
        per_method=shown, by_deleted=by_deleted, per_cluster=per_cluster, deleted=deleted,
        measured_clusters=len(chosen), sample_note=sample_note(exp, sample, K),
        settings=datasets.settings_line(exp.config.profile, exp.config.data.name, exp.config.to_dict()),
    )


# ------------------------------------------------------------------------------------------ paper
def paper_values(dataset: str) -> dict:
    """Table 4 for ``dataset``: Normal gives theta_0's and the target's accuracy, DDM the accuracy
    after fine-tuning on its whole synset, DDM-Match the two ends of theta_0 trained on the GM
    synset (the paper's protocol). The paper reports no per-cluster number for Fig. 7."""
    t4 = paper.TABLE4.get(dataset)
    if t4 is None:
        return {}
    return {"acc_theta0": t4["Normal"][0], "acc_target": t4["Normal"][1], "acc_ddm_finetune": t4["DDM"][0],
            "acc_match_start": t4["DDM-match"][0], "acc_match_trained": t4["DDM-match"][1]}


# Table 4's routes: the paper's row name -> our headline fields at its (theta_0, theta_tau) ends.
TABLE4_ROUTES = {"Normal": ("acc_theta0", "acc_target"),
                 "DDM-match": ("acc_match_start", "acc_match_trained"),
                 "DDM": ("acc_ddm_finetune", "acc_target")}
NOT_OFFLINE = {"cifar100": "not run: CIFAR-100 is not available offline, so its rows run at the `paper` profile only"}


def table4(result: ChapterResult, recorded: Sequence[RunNumbers] = ()) -> pd.DataFrame:
    """The paper's Table 4 as printed (data set, route; Acc(theta_0), Acc(theta_tau)) with our
    numbers beside each of its rows: this run's where it is on that data set, else the first
    recorded run's, else blank with the reason (:data:`NOT_OFFLINE`, or "no run"). Chance (100 / L)
    is the random reference of both columns."""
    runs = [result.numbers(), *recorded]
    rows = []
    for key, block in paper.TABLE4.items():
        ours = next((r for r in runs if datasets.paper_key(r.dataset) == key), None)
        where = (f"{'recorded' if ours.recorded else 'this run'} ({ours.profile}, {datasets.label(ours.dataset)})"
                 if ours else NOT_OFFLINE.get(key, "no run on this data set"))
        classes = datasets.spec(key).num_classes
        for route, (start, end) in TABLE4_ROUTES.items():
            paper0, paper_tau = block[route]
            rows.append({"data set": datasets.label(key), "route": route,
                         "paper: Acc(theta_0) (%)": book.as_printed(paper0),
                         "ours: Acc(theta_0) (%)": book.format_number(ours[start] if ours else None, 3),
                         "paper: Acc(theta_tau) (%)": book.as_printed(paper_tau),
                         "ours: Acc(theta_tau) (%)": book.format_number(ours[end] if ours else None, 3),
                         "chance (%)": book.format_number(100 / classes, 2),
                         "ours from": where})
    return pd.DataFrame(rows).set_index(["data set", "route"])


# ------------------------------------------------------------------------------------------ verdict
def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _points_below(drop: float) -> str:
    """A change of accuracy from the target's in words: "12.3 points below the target"."""
    return f"{abs(drop):.1f} points {'below' if drop >= 0 else 'above'} the target"


_MNIST = paper.TABLE4["mnist"]


def erasing_threshold(acc_theta0: float, acc_target: float) -> float:
    """The accuracy drop (points below the target) above which a synset is said to erase what the
    target learnt: :data:`ERASES_DROP`, or :data:`ERASES_SHARE` of what training added when that is
    smaller (a target that learnt less than ``ERASES_DROP`` points can never drop that many)."""
    return min(ERASES_DROP, ERASES_SHARE * max(acc_target - acc_theta0, 0.0))


def _paper_row(dataset: str) -> tuple[str, dict]:
    """The paper's Table 4 block the verdict quotes: the run's data set's, else MNIST's."""
    key = datasets.paper_key(dataset)
    if key in paper.TABLE4 and key != "mnist":
        return datasets.label(key), paper.TABLE4[key]
    return "MNIST", _MNIST


def _control_reading(ddm_erases: bool, control_erases: bool, extra_drop: float) -> str:
    """What the GM synset fine-tuned from theta_tau (the control) says about DDM's drop."""
    if control_erases:
        return ("it erases too, so fine-tuning on a few images of any kind does much of the work"
                + (" and DDM's synset adds little to it." if ddm_erases else "."))
    if ddm_erases:
        return "it does not erase, so the erasing comes from reverse matching, not from fine-tuning on a few images."
    return (f"neither erases; DDM's synset ends {abs(extra_drop):.1f} points "
            f"{'below' if extra_drop >= 0 else 'above'} the control.")


def _slow_reading(full_majority: bool, slow_majority: bool) -> str:
    """What a tenth of the fine-tuning rate says about the full rate's per-cluster result."""
    if slow_majority and not full_majority:
        return ("a smaller step beats doing nothing for most clusters, so the direction is right and the paper's "
                "rate overshoots.")
    if slow_majority:
        return "both rates beat doing nothing for most clusters."
    if full_majority:
        return "the smaller step moves too little to pass doing nothing; the paper's full rate is needed."
    return ("a smaller step stays nearer the untouched target without passing it, so the direction of the "
            "update, not only its size, misses the exact model.")


def _erasing(run: RunNumbers) -> list[str]:
    """Table 4's claim read from a run: does fine-tuning on the whole synset erase what the target
    learnt? Not judged when the target learnt less than :data:`LEARNT_LITTLE` points."""
    acc0, acct, ddm = run["acc_theta0"], run["acc_target"], run["acc_ddm_finetune"]
    if acct - acc0 < LEARNT_LITTLE:
        return [f"* **Unlearning everything (Table 4).** The target learnt only {acct - acc0:.1f} points beyond theta_0 "
                f"({_pct(acc0)} to {_pct(acct)}; judged from {LEARNT_LITTLE:g} points), so there is nothing measurable "
                f"to erase and Table 4 is **not judged** on this run: fine-tuning on DDM's whole synset leaves "
                f"{_pct(ddm)}."]
    drop = acct - ddm
    erases = erasing_threshold(acc0, acct)
    called = (f"{ERASES_DROP:g}" if erases == ERASES_DROP else
              f"{erases:.1f}, {ERASES_SHARE:.0%} of the {acct - acc0:.1f} points training added, since that is "
              f"less than {ERASES_DROP:g}")
    text = (f"* **Unlearning everything (Table 4).** Fine-tuning the {_pct(acct)} target on DDM's whole synset "
            f"leaves {_pct(ddm)} test accuracy, a drop of {drop:.1f} points (called erasing above "
            f"{called}); exact unlearning of everything is theta_0 at {_pct(acc0)}. ")
    if drop > erases:
        text += "The synset does erase what the network learnt, as the paper reports"
        text += (f", and goes past theta_0's accuracy (more than {PAST_THETA0:g} points below it), like the "
                 f"paper's 0.6% on MNIST." if ddm < acc0 - PAST_THETA0 else ".")
    else:
        text += ("The synset does **not** erase the network's knowledge at these settings: the paper's Table 4 "
                 "effect does not reproduce here.")
    lines = [text]
    extras = []
    if run.has("acc_soft_finetune"):
        soft_drop = acct - run["acc_soft_finetune"]
        extras.append(f"DDM+ (ours, soft labels) leaves {_pct(run['acc_soft_finetune'])}, "
                      f"{_points_below(soft_drop)} ({'erasing' if soft_drop > erases else 'not erasing'})")
    if run.has("acc_match_finetune"):
        match_drop = acct - run["acc_match_finetune"]
        extras.append(f"the plain gradient-matching synset, fine-tuned the same way (our previous protocol, a "
                      f"control), leaves {_pct(run['acc_match_finetune'])}, {_points_below(match_drop)}: "
                      + _control_reading(drop > erases, match_drop > erases, drop - match_drop))
    if extras:
        lines.append("  For comparison, " + "; ".join(extras))
    return lines


def _reading(run: RunNumbers) -> list[str]:
    lines = []
    if run.has("acc_target", "acc_ddm_finetune", "acc_theta0"):
        lines += _erasing(run)
    if run.has("acc_match_trained", "acc_target", "acc_match_start"):
        trained, acct = run["acc_match_trained"], run["acc_target"]
        name, row = _paper_row(run.dataset)
        text = (f"* **DDM-match, the paper's way.** theta_0 trained on the GM synset goes from "
                f"{_pct(run['acc_match_start'])} to {_pct(trained)}, against the target's {_pct(acct)} "
                f"(the paper, {name}: {_pct(row['DDM-match'][0])} to {_pct(row['DDM-match'][1])} against "
                f"{_pct(row['Normal'][1])}).")
        if run.has("acc_ddm_finetune", "acc_theta0"):
            match_gap = abs(acct - trained)
            ddm_gap = abs(run["acc_ddm_finetune"] - run["acc_theta0"])
            text += (f" Each synset is aimed at one end of training and lands some way from the other: DDM "
                     f"{ddm_gap:.1f} points from theta_0's accuracy, DDM-match {match_gap:.1f} points from the "
                     f"target's (one matches better when nearer by more than {END_GAP_MARGIN:g} points). ")
            if ddm_gap + END_GAP_MARGIN < match_gap:
                text += "DDM lands nearer its end, which is the paper's claim of better matching."
            elif match_gap + END_GAP_MARGIN < ddm_gap:
                text += "DDM-match lands nearer its end: the paper's claim of better matching does not hold here."
            else:
                text += "Neither lands clearly nearer: the comparison does not separate the two here."
        lines.append(text)
    if run.has("closer_ddm", "distance_ddm", "distance_unchanged"):
        closer = run["closer_ddm"]
        majority = closer > CLOSER_MAJORITY
        lines.append(f"* **Per cluster (Fig. 7).** DDM's fine-tuned model is closer to the exact unlearned model than "
                     f"the untouched target for {closer:.0f}% of clusters (most clusters: above {CLOSER_MAJORITY:g}%; "
                     f"mean distance x100 {run['distance_ddm']:.3g} against {run['distance_unchanged']:.3g}). "
                     + ("DDM moves most clusters' models the right way." if majority else
                        "Doing nothing is the better approximation of unlearning one cluster here."))
        if run.has("closer_ddm_slow", "distance_ddm_slow"):
            slow = run["closer_ddm_slow"]
            lines.append(f"  At a tenth of the fine-tuning rate DDM's mean distance is {run['distance_ddm_slow']:.3g} "
                         f"and it is closer than doing nothing for {slow:.0f}% of clusters: "
                         + _slow_reading(majority, slow > CLOSER_MAJORITY))
        if run.has("distance_random_other"):
            rand, ddm = run["distance_random_other"], run["distance_ddm"]
            lines.append(f"  Fine-tuning on a *random other* cluster's synset lands at {rand:.3g} "
                         + (f"(within a factor {NOT_SPECIFIC_RATIO:g} of the right cluster's {ddm:.3g}): the synset's "
                            f"effect is not specific to its cluster." if rand <= ddm * NOT_SPECIFIC_RATIO else
                            f"(farther than the right cluster's {ddm:.3g} by more than a factor "
                            f"{NOT_SPECIFIC_RATIO:g}): "
                            f"the synset carries cluster-specific signal."))
        if run.has("distance_ascent", "closer_ascent"):
            lines.append(f"  Gradient ascent on the cluster's real images, the thing the synset stands in for, lands "
                         f"at {run['distance_ascent']:.3g} and is closer than doing nothing for "
                         f"{run['closer_ascent']:.0f}% of clusters.")
    if run.has("distance_noise", "distance_unchanged"):
        floor, unchanged = run["distance_noise"], run["distance_unchanged"]
        lines.append(f"* **Noise floor.** The same exact retrain under another data order is {floor:.3g} away, the "
                     f"untouched target {unchanged:.3g}. "
                     + ("Removing one cluster moves the exact model *less* than changing the data order does, so at "
                        "this scale a one-cluster unlearning error below that floor cannot be told from noise."
                        if floor >= unchanged else
                        "Removing a cluster moves the model more than reshuffling the data, so the comparison has "
                        "signal."))
    if run.has("distance_subsets_ddm", "distance_subsets_unchanged", "distance_all_ddm", "distance_all_unchanged"):
        parts = []
        for name, ddm, still in (("about half of the clusters", run["distance_subsets_ddm"],
                                  run["distance_subsets_unchanged"]),
                                 ("all of them", run["distance_all_ddm"], run["distance_all_unchanged"])):
            verdict = "closer than doing nothing" if ddm < still else "no closer than doing nothing"
            parts.append(f"for {name} DDM is {ddm:.3g} from the exact model against {still:.3g} unchanged "
                         f"({verdict})")
        text = "; ".join(parts)
        lines.append(f"* **More clusters deleted (Supp. Eq. 12-13).** {text[0].upper()}{text[1:]}.")
    return lines


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)
