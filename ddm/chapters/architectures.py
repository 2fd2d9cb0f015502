"""Chapter 12: attribution under four architectures of the target (the paper's Fig. 3, Sec. 4.2).

The paper runs DDM on a ConvNet, an AlexNet ("AlexNetIN"), a ResNet18_AP and a simple ViT,
and draws, for a batch of MNIST and CIFAR-10 test images of label 2, the class-wise
attribution weights each network gives the training clusters. It reads three things off the
picture: every network traces the batch to its own class (the highest weights sit on label 2);
on MNIST the four pictures look alike; on CIFAR-10 they share a trend but differ in size.
Fig. 3 prints no number and has no ground truth.

Here each architecture gets its own target and goes through chapter 03's protocol
(:mod:`ddm.evaluation`): the paper's DDM synset (for the ViT with Table 5's image learning rate
and distance, :func:`vit_distill_overrides`) and DDM+ (ours, soft labels; :mod:`ddm.variants`),
their leave-one-cluster-out effects, exact
leave-one-cluster-out retraining on the same clusters, random choice, TracIn-style and, for the
architectures of :data:`NOISE_FLOOR_ARCHS`, the retraining noise floor. Fig. 3's batch is then
drawn twice per architecture: DDM's weights and exact retraining's (the retrains are already
there, so the second costs nothing), and both are read for the paper's three observations.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import datasets, evaluation, paper
from ddm.chapters.attribution import BATCH_LABEL, BATCH_SIZE
from ddm.chapters.base import (ChapterResult, RunNumbers, detail, fewer_clusters, headline, plus_reading,
                               result_class, table, verdict_for)
from ddm.clustering import Clustering
from ddm.config import ExperimentConfig
from ddm.evaluation import MethodScores
from ddm.experiment import Experiment
from ddm.metrics import rowwise_spearman
from ddm.models import ModelError, count_parameters
from ddm.training import accuracy
from ddm.variants import DDM_PLUS, PAPER_DDM, distill_variants

CHAPTER = "12_architectures"

# Fig. 3's four networks, in the paper's order (ddm.models builds each).
ARCHS = ("convnet", "alexnet", "resnet18_ap", "vit")
ARCH_LABELS = {"convnet": "ConvNet", "alexnet": "AlexNet", "resnet18_ap": "ResNet18_AP", "vit": "simple ViT"}
ARCH_PAIRS = tuple(itertools.combinations(ARCHS, 2))

# The architectures whose exact retraining is repeated under another data order (eval.noise_seeds).
# ResNet18_AP is left out: one retrain of it costs about four of the ConvNet's on a CPU (see the
# chapter's cost table), and the noise floor doubles the retrains.
NOISE_FLOOR_ARCHS = ("convnet", "alexnet", "vit")

# Table 5 names its distances in words; ddm.matching's names for them.
PAPER_DISTANCES = {"cosine": "layerwise_cosine", "MSE": "mse"}
# How the settings table names ddm.matching's distances.
DISTANCE_WORDS = {"layerwise_cosine": "cosine, layer by layer", "mse": "squared difference (MSE), summed",
                  "cosine": "cosine, all parameters at once", "layerwise_cosine_norm": "cosine with a norm term (ours)"}
VIT_ROW = "Simple ViT"

# Method key -> the suffix of its headline fields, and how the tables name it.
SUFFIXES = {PAPER_DDM: "ddm", DDM_PLUS: "plus", evaluation.RANDOM: "random", evaluation.TRACIN: "tracin",
            evaluation.NOISE_FLOOR: "noise"}
METHOD_NAMES = {"ddm": "DDM (Alg. 1, the paper's method)", "plus": "DDM+ (ours, soft labels)",
                "random": "random choice", "tracin": "TracIn-style",
                "noise": "noise floor (exact retraining, another data order)"}
# Whose class-wise weights the batch heat maps show.
COMPARED = {"ddm": "DDM's weights", "exact": "exact retraining's weights"}

# AlexNet has no normalisation layer (as in DC's networks): at the profiles' SGD learning rate of
# 0.05 its ReLUs die on MNIST and it stays at chance (10.0% test accuracy at the cpu profile),
# while at 0.4 times that rate (0.02) it reaches 95.4% (and 33.3% on CIFAR-10 against 33.0%). Its
# rate is scaled by this factor at every profile but `paper`, whose Table 5 rates stand as printed.
# The online fine-tune (Eq. 9) runs at the network's training rate, as the paper's does, so it is
# scaled with it: at the unscaled 0.05 DDM+'s fine-tunes of AlexNet diverged (5% of its MNIST
# effects not finite at the cpu profile, and the paper's DDM 858x the exact effects' size).
ARCH_LR_FACTORS = {"alexnet": 0.4}
PAPER_PROFILE = "paper"

# profile -> this chapter's own settings there (applied by ddm.chapters.base.open_experiment and
# named on the page). Four networks with K leave-one-out retrains each, and a noise floor of K + 1
# for three of them, make 7K + 3 exact retrains, a ResNet18_AP retrain costing about four of the
# ConvNet's: at the cpu profile's K = 100 several hours of a 2-core CPU per data set. Two clusters
# per class (K = 20) make 143.
PROFILE_SETTINGS = {
    "cpu": fewer_clusters(2, "four networks, each with its own exact leave-one-cluster-out retraining and three "
                             "of them with a noise floor, cost 7K + 3 exact retrains (a ResNet18_AP retrain about "
                             "four of the ConvNet's): 703 at the profile's K = 100, several hours of a 2-core CPU "
                             "per data set, against 143 at K = 20"),
    "ci": datasets.ProfileSettings(
        overrides={"clusters.clusters_per_class": 1, "data.train_per_class": 20, "train.epochs": 4,
                   "distill.steps": 50},
        reason="four networks, each with its own exact leave-one-cluster-out retraining and three of them with a "
               "noise floor, cost 7K + 3 exact retrains (a ViT retrain about seven of the ConvNet's on this CPU), "
               "and the ci book gives a chapter about 3 minutes: one cluster per class (K = 10) of 20 images per "
               "class, 4 epochs and 50 distillation steps make 73 small retrains and 8 short distillations; the "
               "networks barely learn at that size, so read the recorded cpu numbers"),
    "quick": fewer_clusters(1, "four networks, each with its own exact leave-one-cluster-out retraining and three of "
                               "them with a noise floor, cost 7K + 3 exact retrains: 353 at the profile's K = 50, "
                               "against 73 at K = 10, which keeps the chapter within a few minutes"),
}

# Verdict thresholds, named where they are used.
OWN_CLASS_FIRST = 1        # Fig. 3's first claim holds for a network when the batch's class ranks this high
ALIKE_SPEARMAN = 0.5       # two heat maps whose Spearman across clusters reaches this are called alike
BAND = 0.05                # two Spearman correlations closer than this are called indistinguishable
ACCURACY_GAP_PCT = 5.0     # a target this many points below the best is a weaker network
CALIBRATION_FACTOR = 2.0   # DDM's effects within this factor of the exact ones are the right size


# ------------------------------------------------------------------------------------------ one target
def paper_distill_row(dataset: str) -> Mapping:
    """Table 5's simple-ViT row for ``dataset``'s paper data set (MNIST's for data the paper never
    used, as :func:`ddm.book.settings_notes` reads them)."""
    key = datasets.paper_key(dataset)
    rows = {data: values for (data, nets), values in paper.TABLE5.items() if nets == VIT_ROW}
    if key in (None, "mnist"):
        return rows["MNIST"]
    return next(values for data, values in rows.items() if data != "MNIST")


def vit_distill_overrides(dataset: str) -> dict:
    """The distillation settings Table 5 gives the simple ViT and no other network: its
    image learning rate and its distance (MSE instead of the CNNs' cosine). Its network learning
    rate is the CNNs' in Table 5, so the profile's stands for all four."""
    row = paper_distill_row(dataset)
    return {"distill.lr_img": row["lr_img"], "distill.distance": PAPER_DISTANCES[row["distance"]]}


def arm_overrides(config: ExperimentConfig, arch: str) -> dict:
    """The configuration changes that make ``arch``'s target: ``model.arch``; for the ViT also
    Table 5's distillation settings; the training and online fine-tuning rates scaled by
    :data:`ARCH_LR_FACTORS` outside the ``paper`` profile; no noise floor outside :data:`NOISE_FLOOR_ARCHS`."""
    overrides: dict = {"model.arch": arch}
    if arch in ARCH_LR_FACTORS and config.profile != PAPER_PROFILE:
        overrides["train.lr"] = config.train.lr * ARCH_LR_FACTORS[arch]
        overrides["online.finetune_lr"] = config.online.finetune_lr * ARCH_LR_FACTORS[arch]
    if arch == "vit":
        overrides.update(vit_distill_overrides(config.data.name))
    if arch not in NOISE_FLOOR_ARCHS:
        overrides["eval.noise_seeds"] = ()
    return overrides


def experiment_for(exp: Experiment, arch: str) -> Experiment:
    """``exp`` with ``arch``'s target (:func:`arm_overrides`), everything else the same: the data,
    the store (so the profile's own network shares chapter 03's artifacts), the clusters, the
    test points. A network of the reader's own is not passed on: the chapter compares the four
    built-in architectures."""
    config = exp.config.with_overrides(**arm_overrides(exp.config, arch))
    return Experiment.create(config, data_root=exp.data_root, cache_root=exp.store.root, progress=exp.progress)


def reader_network_note(exp: Experiment) -> str:
    """A sentence for the page when the reader passed a network of their own, which this
    chapter sets aside ("" otherwise)."""
    if exp.custom_model is None:
        return ""
    return (f"You passed a network of your own ({exp.custom_model.name}). This chapter compares the four built-in "
            f"architectures of the paper's Fig. 3 on your data set and settings, so your network is not among them; "
            f"chapter 03 runs the protocol on it.")


def label_batch(exp: Experiment, label: int) -> torch.Tensor:
    """The test images Fig. 3's batch averages over: the first :data:`BATCH_SIZE` of ``label``
    in test order, the images :func:`ddm.evaluation.batch_effects` takes."""
    return torch.nonzero(exp.test.labels == label).flatten()[:BATCH_SIZE]


def class_row(clustering: Clustering, label: int) -> int:
    """The row of ``label``'s clusters in :func:`ddm.evaluation.class_by_cluster`'s layout
    (classes in sorted order)."""
    return torch.unique(clustering.cluster_class).tolist().index(label)


def class_rank(heat: np.ndarray, row: int) -> int:
    """Where row ``row`` of an (L, C) class-by-cluster heat map ranks among the classes by its
    mean weight: 1 when that class carries the highest weights (Fig. 3's first observation)."""
    means = np.asarray(heat).mean(1)
    return int(1 + np.sum(means > means[row]))


def vector_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two (K,) weight vectors across the clusters (NaN if one is flat)."""
    return float(rowwise_spearman(np.asarray(a)[None], np.asarray(b)[None])[0])


@dataclass(frozen=True)
class ArchMeasurement:
    """Chapter 03's protocol and Fig. 3's batch for one architecture."""

    parameters: int
    accuracy_pct: float               # the target's accuracy on the whole test set
    clustering: Clustering
    scores: dict[str, MethodScores]   # method key -> agreement with this target's exact retraining
    calibration_ddm: float            # mean |DDM effect| / mean |exact effect|
    calibration_plus: float           # the same for DDM+
    exact_seconds: float              # the exact retrains' wall time (about 0 when cached)
    batch_ddm: np.ndarray             # (K,) DDM's weights averaged over the label batch
    batch_exact: np.ndarray           # (K,) exact retraining's, the same images
    heat_ddm: np.ndarray              # (L, C) batch_ddm laid out class by cluster
    heat_exact: np.ndarray            # (L, C) batch_exact likewise


def measure_arch(exp: Experiment, batch_label: int) -> ArchMeasurement:
    """The paper's DDM, random choice and TracIn-style against exact leave-one-cluster-out
    retraining of ``exp``'s target (with the noise floor where configured), then Fig. 3's batch
    under DDM and under exact retraining (the same retrains, read on the batch's images)."""
    clustering = exp.clusters()
    synsets = distill_variants(exp, (PAPER_DDM, DDM_PLUS))
    synset = synsets[PAPER_DDM]
    truth = evaluation.leave_one_out_ground_truth(exp, clustering)
    ddm, _ = evaluation.ddm_effects(exp, synset, truth)
    plus, _ = evaluation.ddm_effects(exp, synsets[DDM_PLUS], truth)
    references = evaluation.baseline_effects(exp, clustering, truth)
    effects = {PAPER_DDM: ddm, DDM_PLUS: plus, evaluation.RANDOM: references[evaluation.RANDOM],
               evaluation.TRACIN: references[evaluation.TRACIN]}
    batch_ddm = evaluation.batch_effects(exp, synset, batch_label, BATCH_SIZE)
    batch_truth = evaluation.leave_one_out_ground_truth(exp, clustering, label_batch(exp, batch_label))
    batch_exact = batch_truth.exact_effects().mean(0)
    return ArchMeasurement(
        parameters=count_parameters(exp.new_model()),
        accuracy_pct=accuracy(exp.target_logits(exp.test.images), exp.test.labels) * 100,
        clustering=clustering, scores=evaluation.score_methods(effects, truth),
        calibration_ddm=evaluation.calibration(ddm, truth), calibration_plus=evaluation.calibration(plus, truth),
        exact_seconds=truth.seconds,
        batch_ddm=batch_ddm, batch_exact=batch_exact,
        heat_ddm=evaluation.class_by_cluster(batch_ddm, clustering),
        heat_exact=evaluation.class_by_cluster(batch_exact, clustering))


def same_clusters(clusterings: Iterable[Clustering]) -> bool:
    """Whether every target's training set was grouped the same way (k-means on pixels is; on
    a target's learned features it need not be), so that the heat maps line up cell by cell."""
    clusterings = list(clusterings)
    return all(torch.equal(c.assignment, clusterings[0].assignment) for c in clusterings[1:])


# ------------------------------------------------------------------------------------------ result
def _arch_fields(arch: str) -> dict:
    name = ARCH_LABELS[arch]
    out = {f"parameters_{arch}": (int | None, headline(f"{name}: parameters", digits=9, default=None)),
           f"accuracy_{arch}": (float | None, headline(f"{name}: target test accuracy (%)", default=None))}
    for suffix in SUFFIXES.values():
        if suffix == "noise" and arch not in NOISE_FLOOR_ARCHS:
            continue
        out[f"spearman_{suffix}_{arch}"] = (float | None, headline(
            f"{name}: Spearman with its own exact retraining, {METHOD_NAMES[suffix]}", digits=2, default=None))
    out[f"batch_spearman_{arch}"] = (float | None, headline(
        f"{name}: Fig. 3's batch, DDM's weights against exact retraining's (Spearman across clusters)", digits=2,
        default=None))
    for whose, words in COMPARED.items():
        out[f"own_rank_{whose}_{arch}"] = (int | None, headline(
            f"{name}: rank of the batch's own class by {words} (1 = highest)", default=None))
    out[f"dist1_x100_ddm_{arch}"] = (float | None, headline(f"{name}: Dist1 x100 of DDM's pick", default=None))
    out[f"dist1_x100_random_{arch}"] = (float | None, headline(f"{name}: Dist1 x100 of a random pick",
                                                               default=None))
    out[f"calibration_ddm_{arch}"] = (float | None, headline(f"{name}: calibration |DDM effect| / |exact effect|",
                                                             digits=2, default=None))
    out[f"calibration_plus_{arch}"] = (float | None, headline(
        f"{name}: calibration |DDM+ effect| / |exact effect|", digits=2, default=None))
    out[f"exact_retrain_seconds_{arch}"] = (float | None, headline(
        f"{name}: exact retrain seconds", default=None, note="0 when the retrains came from the cache"))
    return out


def _pair_fields(a: str, b: str) -> dict:
    against = f"{ARCH_LABELS[a]} against {ARCH_LABELS[b]}"
    return {f"alike_{whose}_{a}_{b}": (float | None, headline(
        f"Fig. 3's batch, {words}, {against}: Spearman across clusters", digits=2, default=None))
        for whose, words in COMPARED.items()}


@dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    num_clusters: int = headline("clusters, K", digits=4)
    test_points: int = headline("test points", digits=3)
    batch_images: int = headline("test images in Fig. 3's batch", digits=3)
    train_images: int = headline("training images", digits=6)
    exact_retrains: int = headline("exact retrains, all architectures", digits=5,
                                   note="K leave-one-out per network, and K + 1 per noise-floor seed where measured")


Result = result_class(_Base, {
    **{k: v for arch in ARCHS for k, v in _arch_fields(arch).items()},
    **{k: v for a, b in ARCH_PAIRS for k, v in _pair_fields(a, b).items()},
}, [
    ("per_arch", pd.DataFrame, table("each network against its own exact retraining")),
    ("likeness", pd.DataFrame, table("how alike Fig. 3's heat maps are across networks")),
    ("settings", pd.DataFrame, table("what each network ran with")),
    ("scores", dict, detail()),             # arch -> method key -> MethodScores
    ("class_names", tuple, detail()),
    ("batch_label", str, detail()),
    ("batch_row", int, detail()),           # the row of the batch's class in the heat maps
    ("clusters_identical", bool, detail()),
    ("skipped", dict, detail()),            # arch -> why it could not run on this data
    ("heat_ddm", dict, detail()),           # arch -> (L, C)
    ("heat_exact", dict, detail()),
    ("batch_weights", dict, detail()),      # arch -> {"ddm", "exact"} -> (K,)
], __name__)


def _arch_values(arch: str, m: ArchMeasurement, row: int) -> dict:
    values = {f"parameters_{arch}": m.parameters, f"accuracy_{arch}": m.accuracy_pct,
              f"calibration_ddm_{arch}": m.calibration_ddm, f"calibration_plus_{arch}": m.calibration_plus,
              f"exact_retrain_seconds_{arch}": m.exact_seconds,
              f"dist1_x100_ddm_{arch}": m.scores[PAPER_DDM].dist1_x100,
              f"dist1_x100_random_{arch}": m.scores[evaluation.RANDOM].dist1_x100,
              f"batch_spearman_{arch}": vector_spearman(m.batch_ddm, m.batch_exact),
              f"own_rank_ddm_{arch}": class_rank(m.heat_ddm, row),
              f"own_rank_exact_{arch}": class_rank(m.heat_exact, row)}
    for key, suffix in SUFFIXES.items():
        if key in m.scores:
            values[f"spearman_{suffix}_{arch}"] = m.scores[key].spearman
    return values


def _pair_values(measured: Mapping[str, ArchMeasurement]) -> dict:
    values = {}
    for a, b in ARCH_PAIRS:
        if a in measured and b in measured:
            values[f"alike_ddm_{a}_{b}"] = vector_spearman(measured[a].batch_ddm, measured[b].batch_ddm)
            values[f"alike_exact_{a}_{b}"] = vector_spearman(measured[a].batch_exact, measured[b].batch_exact)
    return values


def _per_arch_table(measured: Mapping[str, ArchMeasurement], values: Mapping) -> pd.DataFrame:
    rows = []
    for arch, m in measured.items():
        row = {"network": ARCH_LABELS[arch], "parameters": m.parameters, "target test accuracy (%)": m.accuracy_pct}
        for key, suffix in SUFFIXES.items():
            s = m.scores.get(key)
            row[f"Spearman with exact: {METHOD_NAMES[suffix]}"] = s.spearman if s else None
        row["Fig. 3's batch: Spearman of DDM's weights with exact's"] = values[f"batch_spearman_{arch}"]
        row["batch's class ranks, DDM"] = values[f"own_rank_ddm_{arch}"]
        row["batch's class ranks, exact"] = values[f"own_rank_exact_{arch}"]
        row["calibration |DDM| / |exact|"] = m.calibration_ddm
        row["calibration |DDM+| / |exact|"] = m.calibration_plus
        row["Dist1 x100 of DDM's pick"] = m.scores[PAPER_DDM].dist1_x100
        row["Dist1 x100 of a random pick"] = m.scores[evaluation.RANDOM].dist1_x100
        rows.append(row)
    return pd.DataFrame(rows).set_index("network")


def _likeness_table(values: Mapping) -> pd.DataFrame:
    rows = [{"compared": f"{ARCH_LABELS[a]} against {ARCH_LABELS[b]}",
             **{f"{words}: Spearman": values.get(f"alike_{whose}_{a}_{b}") for whose, words in COMPARED.items()}}
            for a, b in ARCH_PAIRS if f"alike_ddm_{a}_{b}" in values]
    return pd.DataFrame(rows).set_index("compared") if rows else pd.DataFrame()


def _settings_table(experiments: Mapping[str, Experiment], skipped: Mapping[str, str]) -> pd.DataFrame:
    """What each network ran with, read from its configuration (the ViT's distillation differs)."""
    rows = []
    for arch in ARCHS:
        row: dict = {"network": ARCH_LABELS[arch]}
        if arch in experiments:
            c = experiments[arch].config
            row.update({"network learning rate": f"{c.train.lr:g}", "synthetic-image learning rate":
                        f"{c.distill.lr_img:g}", "gradient distance":
                        DISTANCE_WORDS.get(c.distill.distance, c.distill.distance),
                        "noise floor": "yes" if c.eval.noise_seeds else "no"})
        else:
            row["not run"] = skipped[arch]
        rows.append(row)
    return pd.DataFrame(rows).set_index("network").fillna("")


def open_arms(exp: Experiment) -> tuple[dict[str, Experiment], dict[str, str]]:
    """Every architecture's experiment, and the ones that cannot take this data set's images
    (a ViT whose patches do not tile them, say) with the reason, which the chapter skips."""
    experiments, skipped = {}, {}
    for arch in ARCHS:
        try:
            experiments[arch] = experiment_for(exp, arch)
        except ModelError as error:
            skipped[arch] = str(error)
    return experiments, skipped


def run(exp: Experiment) -> Result:
    """Chapter 03's protocol for the target of each architecture of :data:`ARCHS` (the rest of
    ``exp``'s configuration unchanged but the ViT's distillation settings), then Fig. 3's batch
    of label-2 test images under DDM and under exact retraining, and how alike the four are."""
    batch_label = BATCH_LABEL if exp.num_classes > BATCH_LABEL else 0
    experiments, skipped = open_arms(exp)
    measured = {arch: measure_arch(e, batch_label) for arch, e in experiments.items()}
    first = next(iter(measured.values()))
    row = class_row(first.clustering, batch_label)
    values = _pair_values(measured)
    for arch, m in measured.items():
        values.update(_arch_values(arch, m, row))
    K = first.clustering.num_clusters
    retrains = sum(K + len(e.config.eval.noise_seeds) * (K + 1) for e in experiments.values())
    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name, num_clusters=K,
        test_points=len(exp.test_point_indices()), batch_images=len(label_batch(exp, batch_label)),
        train_images=len(exp.train), exact_retrains=retrains, **values,
        per_arch=_per_arch_table(measured, values), likeness=_likeness_table(values),
        settings=_settings_table(experiments, skipped),
        scores={a: m.scores for a, m in measured.items()}, class_names=tuple(exp.train.classes),
        batch_label=str(exp.test.classes[batch_label]), batch_row=row,
        clusters_identical=same_clusters(m.clustering for m in measured.values()), skipped=skipped,
        heat_ddm={a: m.heat_ddm for a, m in measured.items()},
        heat_exact={a: m.heat_exact for a, m in measured.items()},
        batch_weights={a: {"ddm": m.batch_ddm, "exact": m.batch_exact} for a, m in measured.items()},
    )


def provenance(exp: Experiment) -> str:
    """The footer of the chapter's figures: as :func:`ddm.chapters.base.provenance`, but naming the
    four networks instead of the profile's one."""
    c = exp.config
    return (f"profile {c.profile} · {datasets.label(c.data.name)} · {len(exp.train)} train / {len(exp.test)} test · "
            f"{', '.join(ARCHS)} w{c.model.width} · tau={c.train.epochs}")


def paper_values(dataset: str) -> dict:
    """Fig. 3 is a picture: the paper prints no number for it."""
    return {}


def noise_floor_listing() -> str:
    """Which networks have a noise floor, in words, from :data:`NOISE_FLOOR_ARCHS`."""
    def listing(names: Sequence[str]) -> str:
        names = [ARCH_LABELS[a] for a in names]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    without = [a for a in ARCHS if a not in NOISE_FLOOR_ARCHS]
    text = f"{listing(NOISE_FLOOR_ARCHS)} {'has' if len(NOISE_FLOOR_ARCHS) == 1 else 'have'} a noise floor"
    return text + (f"; {listing(without)} {'does' if len(without) == 1 else 'do'} not" if without else "")


# ------------------------------------------------------------------------------------------ verdict
def _mean(values: Iterable[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return float(np.mean(measured)) if measured else None


def pair_mean(run: RunNumbers, whose: str) -> float | None:
    """The mean over the pairs of networks of ``whose`` ("ddm" or "exact") heat-map likeness."""
    return _mean(run[f"alike_{whose}_{a}_{b}"] for a, b in ARCH_PAIRS)


def _names(archs: Sequence[str]) -> str:
    return ", ".join(ARCH_LABELS[a] for a in archs) or "none"


def _own_class(run: RunNumbers) -> list[str]:
    shown = [a for a in ARCHS if run.has(f"own_rank_ddm_{a}")]
    if not shown:
        return []
    first = [a for a in shown if run[f"own_rank_ddm_{a}"] <= OWN_CLASS_FIRST]
    ranks = "; ".join(f"{ARCH_LABELS[a]} {run[f'own_rank_ddm_{a}']}" for a in shown)
    line = (f"* **The batch's own class (Fig. 3's first observation).** Ranked by DDM's mean weight, the class of "
            f"the batch comes {ranks} (1 = the highest weights). It comes first for {len(first)} of {len(shown)} "
            f"networks: ")
    line += ("the paper's observation reproduces." if len(first) == len(shown) else
             f"the observation holds for {_names(first)} only." if first else
             "for **none** does DDM trace the batch to its own class.")
    exact = [a for a in shown if run.has(f"own_rank_exact_{a}")]
    if not exact:
        return [line]
    first_exact = [a for a in exact if run[f"own_rank_exact_{a}"] <= OWN_CLASS_FIRST]
    line += f" Exact retraining puts it first for {len(first_exact)} of {len(exact)} networks"
    if len(first_exact) == len(exact):
        line += (": deleting a cluster of the batch's own class really does hurt the batch most, so a map that "
                 "peaks there has the class right, which says nothing yet about the clusters within the class.")
    else:
        line += (f" ({_names(first_exact)}); for the others a map that peaks on the batch's own class is not what "
                 f"deleting clusters does.")
    return [line]


def _alike(run: RunNumbers) -> list[str]:
    ddm = pair_mean(run, "ddm")
    if ddm is None:
        return []
    line = (f"* **Alike across networks (Fig. 3's second observation).** DDM's batch weights of two networks agree at "
            f"a mean Spearman correlation of {ddm:+.2f} over the pairs (called alike at {ALIKE_SPEARMAN:g} or more): "
            + ("the paper's picture of matching heat maps reproduces." if ddm >= ALIKE_SPEARMAN else
               "they are **not** alike."))
    lines = [line]
    exact = pair_mean(run, "exact")
    if exact is None:
        return lines
    lines.append(f"  Exact retraining's batch weights agree across networks at {exact:+.2f}.")
    if ddm > exact + BAND:
        lines.append(f"  DDM's heat maps are **more alike than the ground truths they should follow** (closer than "
                     f"{BAND:g} is called the same): part of their likeness does not come from the networks.")
    elif ddm < exact - BAND:
        lines.append("  DDM's heat maps differ across networks more than the ground truth does.")
    else:
        lines.append("  DDM's heat maps are as alike across networks as the ground truth is.")
    return lines


def _against_exact(run: RunNumbers) -> list[str]:
    shown = [a for a in ARCHS if run.has(f"spearman_ddm_{a}", f"spearman_random_{a}")]
    if not shown:
        return []
    parts = []
    for a in shown:
        extra = f", noise floor {run[f'spearman_noise_{a}']:+.2f}" if run.has(f"spearman_noise_{a}") else ""
        tracin = f", TracIn-style {run[f'spearman_tracin_{a}']:+.2f}" if run.has(f"spearman_tracin_{a}") else ""
        parts.append(f"{ARCH_LABELS[a]} {run[f'spearman_ddm_{a}']:+.2f} (random {run[f'spearman_random_{a}']:+.2f}"
                     f"{tracin}{extra})")
    beats = [a for a in shown if run[f"spearman_ddm_{a}"] > run[f"spearman_random_{a}"] + BAND]
    line = (f"* **Each against its own exact retraining.** DDM's mean Spearman correlation with exact "
            f"leave-one-cluster-out retraining on the same clusters: {'; '.join(parts)}. DDM beats random choice by "
            f"more than {BAND:g} for {len(beats)} of {len(shown)} networks")
    line += (": for none does it rank clusters as retraining does, so the heat maps show what DDM predicts, not "
             "what deleting a cluster does." if not beats else
             f" ({_names(beats)})." if len(beats) < len(shown) else ".")
    lines = [line]
    lines += plus_reading(run, {a: ARCH_LABELS[a] for a in shown}, BAND, "networks")
    batch = [a for a in shown if run.has(f"batch_spearman_{a}")]
    if batch:
        listing = ", ".join(f"{ARCH_LABELS[a]} {run[f'batch_spearman_{a}']:+.2f}" for a in batch)
        lines.append(f"  On Fig. 3's batch itself, DDM's weights follow exact retraining's at a Spearman correlation "
                     f"of {listing}.")
    return lines


def _accuracy(run: RunNumbers) -> list[str]:
    shown = {a: run[f"accuracy_{a}"] for a in ARCHS if run.has(f"accuracy_{a}")}
    if len(shown) < 2:
        return []
    best = max(shown.values())
    weaker = [a for a, v in shown.items() if v < best - ACCURACY_GAP_PCT]
    listing = ", ".join(f"{ARCH_LABELS[a]} {v:.1f}%" for a, v in shown.items())
    line = f"* **The targets.** Test accuracy: {listing}. "
    if weaker:
        line += (f"{_names(weaker)} {'trains' if len(weaker) == 1 else 'train'} more than {ACCURACY_GAP_PCT:g} points "
                 f"below the best at this profile's settings: a weaker network, whose heat map describes a network "
                 f"that has learned less.")
    else:
        line += f"All within {ACCURACY_GAP_PCT:g} points of the best: comparable networks."
    return [line]


def _size(run: RunNumbers) -> list[str]:
    """Fig. 3's third observation (the weights differ in size across networks), read beside
    how far each network's DDM effects are from the exact ones in size."""
    shown = {a: run[f"calibration_ddm_{a}"] for a in ARCHS if run.has(f"calibration_ddm_{a}")}
    if len(shown) < 2:
        return []
    off = [a for a, c in shown.items() if not 1 / CALIBRATION_FACTOR <= c <= CALIBRATION_FACTOR]
    listing = ", ".join(f"{ARCH_LABELS[a]} {c:.2f}" for a, c in shown.items())
    line = (f"* **Size of the weights (Fig. 3's third observation).** DDM's effects are {listing} times the exact "
            f"ones in size (the right size within a factor {CALIBRATION_FACTOR:g}). ")
    line += (f"For {_names(off)} the size is off, so differences in absolute weight between networks say more about "
             f"DDM's fine-tune than about the networks." if off else
             "Every network's effects have the right size, so differences in absolute weight are the networks' own.")
    return [line]


def _reading(run: RunNumbers) -> list[str]:
    return _own_class(run) + _alike(run) + _against_exact(run) + _accuracy(run) + _size(run)


def verdict(result: Result, recorded: Sequence[RunNumbers] = ()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)


# ------------------------------------------------------------------------------------------ figures
def _heat_grid(result: Result, provenance: str):
    """One column per network, one row for DDM's and one for exact retraining's class-wise
    weights of Fig. 3's batch; each panel on its own colour scale centred at zero (the
    observations are about the pattern, and the sizes differ by network), the batch's own class
    framed."""
    from ddm.plots import heatmap_grid

    archs = list(result.heat_ddm)
    same = "the same clusters in every panel" if result.clusters_identical else "clusters differ between networks"
    return heatmap_grid(
        {"DDM (Alg. 1)": [result.heat_ddm[a] for a in archs],
         "exact retraining": [result.heat_exact[a] for a in archs]},
        ["mean predicted\nmargin drop", "mean margin drop\nwhen deleted"],
        [f"{ARCH_LABELS[a]} ({getattr(result, f'accuracy_{a}'):.0f}% test accuracy)" for a in archs],
        list(result.class_names),
        f"Class-wise weights for up to {BATCH_SIZE} test images of label {result.batch_label} "
        f"(framed row: their class; {same})", provenance, shared_scale=False, framed_row=result.batch_row)


def _spearman_bars(result: Result, provenance: str):
    """Per network, DDM's, TracIn-style's and random choice's mean Spearman correlation with that
    network's exact retraining (95% intervals), and the noise floor as a mark where measured."""
    import matplotlib.pyplot as plt

    from ddm.plots import _footer

    archs = list(result.scores)
    methods = {PAPER_DDM: ("DDM (Alg. 1)", "C0"), DDM_PLUS: ("DDM+ (ours, soft labels)", "C1"),
               evaluation.TRACIN: ("TracIn-style", "C2"), evaluation.RANDOM: ("random choice", "0.6")}
    fig, ax = plt.subplots(figsize=(1.9 * len(archs) + 2.5, 4.2))
    positions = np.arange(len(archs))
    bar = 0.8 / len(methods)
    for i, (key, (label, colour)) in enumerate(methods.items()):
        scores = [result.scores[a][key] for a in archs]
        values = np.array([s.spearman for s in scores])
        low, high = (np.array([s.interval[k] for s in scores]) for k in (0, 1))
        error = np.nan_to_num(np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)]))
        ax.bar(positions + (i - (len(methods) - 1) / 2) * bar, values, bar, color=colour, label=label, yerr=error,
               error_kw={"ecolor": "0.25", "lw": 1, "capsize": 2})
    floored = [j for j, a in enumerate(archs) if evaluation.NOISE_FLOOR in result.scores[a]]
    if floored:
        ax.scatter(positions[floored], [result.scores[archs[j]][evaluation.NOISE_FLOOR].spearman for j in floored],
                   marker="_", s=900, linewidths=2.5, color="C3", zorder=3,
                   label="noise floor: exact retraining, another data order")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(positions, [ARCH_LABELS[a] for a in archs])
    ax.set_ylabel("mean Spearman correlation\nwith exact retraining")
    ax.set_xlabel("target network")
    ax.set_title("Ranking clusters like each network's exact retraining does")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, markerscale=0.4)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def figures(result: Result, provenance: str) -> dict:
    """The chapter's figures, keyed by the name the notebook glues each under."""
    return {"fig-arch-heat-batch": _heat_grid(result, provenance),
            "fig-arch-spearman": _spearman_bars(result, provenance)}
