"""Chapter 14: transferability under knowledge distillation (Supp. 9.3, Eq. 15, Table 7).

A student is trained by Supp. Eq. 15, (1 - alpha) CE + alpha KL to a fixed teacher
(:mod:`ddm.knowledge_distillation`). DDM's synset is distilled from the *student's* trajectory,
its real cluster gradients those of the KD loss, and every cluster is ranked by the objective
the paper names for Table 7: the KL divergence from the teacher to the student, summed over a
validation set V as Supp. Eq. 14 sums its cross-entropy, for the student with that cluster
unlearned (Eq. 9). The clusters whose removal lowers it most go first. For each share of
Table 7 (10-40%) the shortest such prefix is deleted, the student is retrained exactly (same
theta_0, same data order, the same KD loss against the same teacher), and its accuracy is
measured on the held-out half of the test split (V is the other half), beside random orders,
the cross-entropy objective of chapter 05, a simple baseline (the clusters on which the trained
student disagrees most with the teacher first), the noise floor, and DDM+ (ours: the same KL
ranking from a synset with learnable soft labels, :data:`ddm.variants.DDM_PLUS`).

The reduced scale: the teacher is a network of the profile (by default the student's own
architecture from another seed), trained normally or by knowledge undistillation
(:data:`ddm.knowledge_distillation.NASTY`, the paper's choice and our default); the paper's
teacher is a CIFAR-10 ResNet-18.

Every artifact trained here is stored under its own kind (``kd_teacher``, ``kd_student``,
``kd_synset``, ``kd_retrain``) with the KD settings in its key, so nothing is shared with the
plain target's artifacts by accident.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ddm import plots, removal
from ddm.chapters import harmful_data
from ddm.chapters.base import (NOT_RECORDED_NOTE, ChapterResult, RunNumbers, detail, headline, result_class, table,
                               verdict_for)
from ddm.clustering import Clustering
from ddm.experiment import Experiment
from ddm.knowledge_distillation import (NASTY, NORMAL, KDConfig, adversary_config, kd_batch_loss, kl_to_teacher,
                                        teacher_model_config, teacher_train_config, train_nasty_teacher,
                                        train_normal_teacher, train_student)
from ddm.matching import Synset, distill_synset
from ddm.models import build_model
from ddm.online import leave_one_out_masks, perturbed_models, predict_many
from ddm.training import Params, Trajectory, accuracy, predict_logits
from ddm.variants import DDM_PLUS, PAPER_DDM, variant_config

CHAPTER = "14_knowledge_distillation"
FRACTIONS = (10, 20, 30, 40)      # Table 7's columns: % of the training set removed (beside 0%)
RANDOM_SEEDS = (0, 1, 2)          # the random orders, one per seed
KD = KDConfig()                   # the chapter's default settings (nasty teacher, alpha 0.9, T 4)
RANKING_LABELS = {
    "ddm": "DDM, KL objective (Table 7)",
    "random": "random order",
    "ddm_ce": "DDM, cross-entropy objective (Supp. Eq. 14)",
    "teacher_kl": "largest KL to the teacher first (baseline)",
    "ddm_helpful": "DDM, KL objective, most helpful first",
    # OUR EXTENSION (not the paper's); last, so that the figure keeps every other ranking's colour
    "ddm_plus": "DDM+ (ours, soft labels), KL objective",
}
RANKING_KINDS = {"ddm": "harmful first", "random": "random", "ddm_ce": "harmful first",
                 "teacher_kl": "harmful first", "ddm_helpful": "most helpful first", "ddm_plus": "harmful first"}
PLUS = "ddm_plus"
# The order of the accuracy table's rows: DDM+ (ours) beside the paper's DDM.
ROW_ORDER = ("ddm", PLUS, *(key for key in RANKING_LABELS if key not in ("ddm", PLUS)))
PLUS_HEADING = ("* **DDM+ (ours, soft labels; not the paper's method, no row in Table 7).** The same KL objective "
                "on the fine-tunes of our synset with learnable soft labels, distilled from the same student, the "
                "same shares removed and retrained exactly.")
# Table 7 (CIFAR-10, ResNet-18 student and nasty teacher): share removed (%) -> student accuracy (%).
PAPER_TABLE7 = {"Random": {0: 94.1, 10: 93.5, 20: 88.7, 30: 87.3, 40: 85.8},
                "DDM": {0: 94.1, 10: 94.2, 20: 94.2, 30: 92.9, 40: 87.3}}
PAPER_ROWS = {"ddm": "DDM", "random": "Random"}
PAPER_DATASET = "cifar10"
NO_PAPER_COLUMN = ("The paper reports Table 7 on CIFAR-10 only and none of the runs here is on CIFAR-10, so there "
                   "is no paper column: its two rows stand in the accuracy table above, on their own scale.")
# Verdict thresholds, named where they are used.
SPREAD_SHARE = harmful_data.SPREAD_SHARE   # chapter 05's rule: a gap is clear above the noise floor AND this
                                           # share of the random seeds' spread (max - min) at the same fraction


# ------------------------------------------------------------------------------------------ artifacts
def _teacher_fields(kd: KDConfig) -> dict[str, Any]:
    """The settings a teacher depends on (not alpha or T: a teacher is trained before any student)."""
    fields = {"teacher": kd.teacher, "teacher_arch": kd.teacher_arch, "teacher_width": kd.teacher_width,
              "teacher_seed": kd.teacher_seed, "teacher_epochs": kd.teacher_epochs}
    if kd.teacher == NASTY:
        fields.update(nasty_omega=kd.nasty_omega, nasty_temperature=kd.nasty_temperature)
    return fields


def artifact_key(exp: Experiment, kd: KDConfig, **extra: Any) -> dict:
    """The store key of a KD artifact: the experiment's data, model and schedule (as the plain
    target's key), the teacher's network and schedule, every KD setting, and ``extra``."""
    return exp._key("model", "train", kd=kd, teacher_model=teacher_model_config(exp.config.model, kd),
                    teacher_train=teacher_train_config(exp.config.train, kd), **extra)


def teacher_network(exp: Experiment, kd: KDConfig):
    """The teacher's untrained network (its own theta_0, seed ``kd.teacher_seed``)."""
    custom = exp.custom_model if not kd.teacher_arch else None
    return build_model(teacher_model_config(exp.config.model, kd), exp.train.channels, exp.num_classes,
                       exp.train.image_size, custom=custom)


def teacher(exp: Experiment, kd: KDConfig) -> Params:
    """The teacher's final parameters (cached): a normal teacher by cross-entropy; a nasty one by
    knowledge undistillation against a normal teacher from another seed, its adversary
    (:func:`ddm.knowledge_distillation.adversary_config`)."""
    key = exp._key(teacher_model=teacher_model_config(exp.config.model, kd),
                   teacher_train=teacher_train_config(exp.config.train, kd), teacher_fields=_teacher_fields(kd))
    if exp.custom_model is not None and not kd.teacher_arch:
        key["model_signature"] = exp._model_signature()

    def compute() -> Params:
        model, train = teacher_network(exp, kd), teacher_train_config(exp.config.train, kd)
        initial = {k: v.detach().clone() for k, v in model.named_parameters()}
        if kd.teacher == NORMAL:
            return train_normal_teacher(model, initial, exp.train.images, exp.train.labels, train, exp.device)
        adversary = teacher_logits(exp, adversary_config(kd), exp.train.images)
        return train_nasty_teacher(model, initial, exp.train.images, exp.train.labels, adversary, train,
                                   kd.nasty_omega, kd.nasty_temperature, exp.device)
    return exp._cached("kd_teacher", key, compute)


def teacher_logits(exp: Experiment, kd: KDConfig, images: torch.Tensor) -> torch.Tensor:
    """(N, L) the teacher's logits on ``images``."""
    return predict_logits(teacher_network(exp, kd), teacher(exp, kd), images, device=exp.device)


def student(exp: Experiment, kd: KDConfig) -> Trajectory:
    """The student's trajectory under Supp. Eq. 15 (cached): the profile's network from the
    profile's theta_0 and data order, the loss of :func:`ddm.knowledge_distillation.kd_loss`."""
    def compute() -> Trajectory:
        return train_student(exp.new_model(), exp.initial_params(), exp.train.images, exp.train.labels,
                             teacher_logits(exp, kd, exp.train.images), exp.config.train, kd.alpha, kd.temperature,
                             device=exp.device)
    return exp._cached("kd_student", artifact_key(exp, kd), compute)


def student_synset(exp: Experiment, kd: KDConfig, clustering: Clustering, variant: str = PAPER_DDM) -> Synset:
    """Algorithm 1 (the paper's DDM; ``variant`` :data:`ddm.variants.DDM_PLUS` for ours) on the
    student's trajectory, the real cluster gradients those of the KD loss (cached, resumable)."""
    distill = variant_config(exp.config.distill, variant)
    key = artifact_key(exp, kd, clusters=exp.config.clusters, clustering=clustering.assignment.tolist(),
                       distill=distill)
    checkpoint = exp.store.checkpoint_path("kd_synset", key)

    def compute() -> Synset:
        loss = kd_batch_loss(exp.train.labels, teacher_logits(exp, kd, exp.train.images), kd.alpha, kd.temperature)
        return distill_synset(exp.new_model(), student(exp, kd), exp.train.images, exp.train.labels, clustering,
                              exp.num_classes, distill, checkpoint_path=checkpoint, progress=exp.progress,
                              device=exp.device, real_loss=loss)
    synset = exp._cached("kd_synset", key, compute)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)   # the finished synset is saved: its partial state is spent
    return synset


def student_retrain_logits(exp: Experiment, kd: KDConfig, removal_sets: Sequence[tuple[int, ...]],
                           clustering: Clustering, order_seed: int | None = None) -> torch.Tensor:
    """The student retrained exactly without each removal set (cluster ids), by Supp. Eq. 15
    against the same teacher from the same theta_0 and data order (``order_seed``: another
    order, the noise floor): (R, N_test, L) logits on the test split. Each retrain is its own
    cached artifact, run in this process."""
    seed = exp.config.train.order_seed if order_seed is None else order_seed
    out = []
    for removed in removal_sets:
        key = artifact_key(exp, kd, clustering=clustering.assignment.tolist(),
                           removed=sorted(int(c) for c in removed), order_seed=seed)

        def compute(removed: tuple[int, ...] = tuple(removed)) -> dict[str, torch.Tensor]:
            final = train_student(exp.new_model(), exp.initial_params(), exp.train.images, exp.train.labels,
                                  teacher_logits(exp, kd, exp.train.images), exp.config.train, kd.alpha,
                                  kd.temperature, keep=~clustering.removal_mask(removed), order_seed=seed,
                                  device=exp.device, save_checkpoints=False).final
            return {"test_logits": predict_logits(exp.new_model(), final, exp.test.images, device=exp.device)}
        out.append(exp.store.get_or_compute("kd_retrain", key, compute)["test_logits"])
    return torch.stack(out)


# ------------------------------------------------------------------------------------------ rankings
def kl_objective(unlearned_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Table 7's ranking objective (Supp. 9.3: "the KL-divergence as the distance function ...
    in the similar way as in Eq. 14"): for each unlearned student k,

    .. math:: \sum_{x \in V} \mathrm{KL}\big(\sigma(z_M(x)/T) \,\|\, \sigma(z_{N_k}(x)/T)\big).

    ``unlearned_logits`` (K, V, L), ``teacher_logits`` (V, L); returns (K,) (lower: removing the
    cluster brought the student closer to its teacher, so it ranks as more harmful)."""
    if unlearned_logits.dim() != 3 or unlearned_logits.shape[1:] != teacher_logits.shape:
        raise ValueError(f"expected logits (K, {', '.join(map(str, teacher_logits.shape))}), "
                         f"got {tuple(unlearned_logits.shape)}")
    return kl_to_teacher(unlearned_logits, teacher_logits[None].expand_as(unlearned_logits), temperature).sum(1)


def cluster_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, clustering: Clustering,
               temperature: float = 1.0) -> torch.Tensor:
    """(K,) the mean KL from the teacher to the student over each cluster's training images
    (``student_logits``, ``teacher_logits`` (N, L)): the baseline's score."""
    per_image = kl_to_teacher(student_logits, teacher_logits, temperature)                     # (N,)
    sums = torch.zeros(clustering.num_clusters, dtype=per_image.dtype).index_add_(0, clustering.assignment, per_image)
    return sums / clustering.sizes().to(per_image.dtype).clamp_min(1)


def unlearned_logits(exp: Experiment, kd: KDConfig, synset: Synset, images: torch.Tensor) -> torch.Tensor:
    """(K, V, L) the trained student's leave-one-cluster-out fine-tunes on ``synset`` (Eq. 9),
    read on ``images``."""
    model = exp.new_model()
    online = exp.config.online
    unlearned = perturbed_models(model, student(exp, kd).final, synset.images, synset.labels, synset.label_logits,
                                 synset.cluster, leave_one_out_masks(int(synset.cluster.max()) + 1),
                                 online.finetune_steps, online.finetune_lr, vectorised=online.vectorised)
    return predict_many(model, unlearned, images).detach()


def rankings(exp: Experiment, kd: KDConfig, synset: Synset, clustering: Clustering, val_idx: torch.Tensor,
             random_seeds: Sequence[int] = RANDOM_SEEDS,
             plus_synset: Synset | None = None) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Cluster orders, most harmful first: (orders by ranking key, random orders by seed).

    - ``ddm``: :func:`kl_objective` on the validation images ``val_idx`` of each leave-one-cluster-out
      fine-tune (Eq. 9) of the trained student on the synset;
    - ``ddm_ce``: chapter 05's cross-entropy objective (Supp. Eq. 14) on the same fine-tunes;
    - ``teacher_kl``: the clusters on whose images the trained student is furthest from its
      teacher first (:func:`cluster_kl`), no DDM at all;
    - ``ddm_helpful``: ``ddm`` reversed (the signal check);
    - ``ddm_plus`` (ours, when ``plus_synset`` is given): ``ddm``'s objective on that synset's fine-tunes.
    """
    K = clustering.num_clusters
    model = exp.new_model()
    final = student(exp, kd).final
    x, y = exp.test.images[val_idx], exp.test.labels[val_idx]
    logits = unlearned_logits(exp, kd, synset, x)                                                  # (K, V, L)
    kl = kl_objective(logits, teacher_logits(exp, kd, x), kd.temperature)                          # (K,)
    ce = removal.global_objective(logits, y)                                                       # (K,)
    train_kl = cluster_kl(predict_logits(model, final, exp.train.images),
                          teacher_logits(exp, kd, exp.train.images), clustering, kd.temperature)   # (K,)
    orders = {"ddm": removal.harmful_first(kl), "ddm_ce": removal.harmful_first(ce),
              "teacher_kl": removal.harmful_first(-train_kl)}
    orders["ddm_helpful"] = orders["ddm"][::-1].copy()
    if plus_synset is not None:
        plus_kl = kl_objective(unlearned_logits(exp, kd, plus_synset, x), teacher_logits(exp, kd, x), kd.temperature)
        orders[PLUS] = removal.harmful_first(plus_kl)
    random_orders = {seed: np.random.default_rng(seed).permutation(K) for seed in random_seeds}
    return orders, random_orders


# ------------------------------------------------------------------------------------------ result
def _fields() -> dict[str, tuple[type, Any]]:
    out: dict[str, tuple[type, Any]] = {}
    for x in FRACTIONS:
        for key, label in RANKING_LABELS.items():
            what = f"{label}, mean of seeds" if key == "random" else label
            name = f"student accuracy after removing {x}%, {what} (%)"
            # DDM+ came after this chapter's cpu records (made 2026-12-05): not in them until re-made.
            out[f"acc_{key}_{x}"] = ((float | None, headline(name, default=None, note=NOT_RECORDED_NOTE))
                                     if key == PLUS else (float, headline(name)))
        out[f"spread_random_{x}"] = (float, headline(f"spread of random orders at {x}%, max - min (points)", digits=2))
        out[f"removed_ddm_{x}"] = (float, headline(f"share of the training set DDM removed when asked for {x}% (%)"))
        out[f"class_share_ddm_{x}"] = (float, headline(f"largest share of one class DDM removed at {x}% (%)",
                                                       digits=2))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    teacher_kind: str = headline("teacher (normal or nasty)")
    alpha: float = headline("alpha of Supp. Eq. 15")
    temperature: float = headline("temperature T of the KL term")
    num_clusters: int = headline("clusters, K", digits=4)
    train_images: int = headline("training images", digits=6)
    acc_teacher: float = headline("teacher accuracy (%)", note="ours: on the held-out half of the test split")
    acc_teacher_normal: float = headline("normal teacher's accuracy (%)",
                                         note="the nasty teacher's adversary; the teacher itself when it is normal")
    acc_no_teacher: float = headline("student trained without a teacher, cross-entropy only (%)",
                                     note="the profile's plain target: same network, theta_0 and data order")
    acc_student_normal_teacher: float = headline("student distilled from the normal teacher (%)")
    acc_student: float = headline("student accuracy, nothing removed (%)")
    acc_noise_floor: float | None = headline("student, nothing removed, another data order (%)", default=None)
    kl_student_teacher: float = headline("mean KL from the teacher to the student, held-out images", digits=3)
    seconds: float = headline("seconds for the whole chapter", note="0-ish when every artifact came from the cache")


Result = result_class(_Base, _fields(), [
    ("accuracy_table", pd.DataFrame, table("student accuracy after removal, in Table 7's layout")),
    ("setup_table", pd.DataFrame, table("who teaches whom: accuracies with nothing removed")),
    ("curves", pd.DataFrame, detail()),     # one row per (ranking, seed, fraction), for the figure
], __name__)


def run(exp: Experiment, kd: KDConfig = KD, random_seeds: Sequence[int] = RANDOM_SEEDS) -> Result:
    """Table 7 measured for every ranking of :func:`rankings` and every share of :data:`FRACTIONS`."""
    start = time.perf_counter()
    clustering = exp.clusters()
    val_idx, eval_idx = removal.validation_split(len(exp.test), seed=exp.config.eval.seed)
    synset = student_synset(exp, kd, clustering)
    plus_synset = student_synset(exp, kd, clustering, DDM_PLUS)
    orders, random_orders = rankings(exp, kd, synset, clustering, val_idx, random_seeds, plus_synset)
    sizes = clustering.sizes()
    removed = removal.removal_plan(RANKING_LABELS, orders, random_orders, sizes, FRACTIONS)
    sets = sorted(set(removed.values()))
    logits = dict(zip(sets, student_retrain_logits(exp, kd, sets, clustering)))     # set -> (N_test, L)
    y, x_eval = exp.test.labels[eval_idx], exp.test.images[eval_idx]

    rows = []
    for (key, seed, x), clusters in removed.items():
        share, class_share = removal.removed_shares(clusters, sizes, clustering.cluster_class, exp.num_classes)
        rows.append({"key": key, "ranking": RANKING_LABELS[key], "kind": RANKING_KINDS[key], "seed": seed,
                     "asked (%)": x, "removed (%)": share * 100, "clusters removed": len(clusters),
                     "largest share of one class removed (%)": class_share * 100,
                     "test accuracy (%)": accuracy(logits[clusters][eval_idx], y) * 100})
    curves = pd.DataFrame(rows)

    model = exp.new_model()
    student_eval = predict_logits(model, student(exp, kd).final, x_eval)
    teacher_eval = teacher_logits(exp, kd, x_eval)
    normal = adversary_config(kd)     # the nasty teacher's adversary (the teacher itself when it is normal)
    numbers: dict[str, Any] = {
        "teacher_kind": kd.teacher, "alpha": kd.alpha, "temperature": kd.temperature,
        "num_clusters": clustering.num_clusters, "train_images": len(exp.train),
        "acc_teacher": accuracy(teacher_eval, y) * 100,
        "acc_teacher_normal": accuracy(teacher_logits(exp, normal, x_eval), y) * 100,
        "acc_no_teacher": accuracy(exp.target_logits(x_eval), y) * 100,
        "acc_student_normal_teacher": accuracy(predict_logits(model, student(exp, normal).final, x_eval), y) * 100,
        "acc_student": accuracy(student_eval, y) * 100, "acc_noise_floor": None,
        "kl_student_teacher": float(kl_to_teacher(student_eval, teacher_eval, kd.temperature).mean())}
    if exp.config.eval.noise_seeds:
        other = student_retrain_logits(exp, kd, [()], clustering, order_seed=exp.config.eval.noise_seeds[0])[0]
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
    numbers["seconds"] = time.perf_counter() - start
    return Result(profile=exp.config.profile, dataset=exp.config.data.name, **numbers,
                  accuracy_table=accuracy_table(numbers), setup_table=_setup_table(numbers), curves=curves)


def accuracy_table(numbers: dict[str, Any]) -> pd.DataFrame:
    """Table 7's layout: one row per ranking of ours, then the paper's two rows (CIFAR-10)."""
    rows = {}
    for key in ROW_ORDER:
        label = RANKING_LABELS[key]
        name = f"ours: {label} (mean of seeds)" if key == "random" else f"ours: {label}"
        rows[name] = {"0%": numbers["acc_student"], **{f"{x}%": numbers[f"acc_{key}_{x}"] for x in FRACTIONS}}
        if key == "random":
            rows[f"ours: {label} (max - min of seeds)"] = {"0%": np.nan, **{f"{x}%": numbers[f"spread_random_{x}"]
                                                                            for x in FRACTIONS}}
    for row in ("DDM", "Random"):
        rows[f"paper, CIFAR-10 (Table 7): {row}"] = {f"{x}%": PAPER_TABLE7[row][x] for x in (0, *FRACTIONS)}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "ranking (student test accuracy after removing, %)"
    return frame


def _setup_table(numbers: dict[str, Any]) -> pd.DataFrame:
    labels = _Base.headline_labels()
    names = ("acc_teacher", "acc_teacher_normal", "acc_no_teacher", "acc_student_normal_teacher", "acc_student",
             "acc_noise_floor")
    frame = pd.DataFrame({"test accuracy (%)": [numbers[n] for n in names]}, index=[labels[n] for n in names])
    frame.index.name = "network"
    return frame


# ------------------------------------------------------------------------------------------ the paper
def paper_values(dataset: str) -> dict:
    """Table 7's rows (CIFAR-10 only; the 0% column is the student's accuracy)."""
    if dataset != PAPER_DATASET:
        return {}
    values: dict[str, float] = {"acc_student": PAPER_TABLE7["DDM"][0]}
    for x in FRACTIONS:
        for key, row in PAPER_ROWS.items():
            values[f"acc_{key}_{x}"] = PAPER_TABLE7[row][x]
    return values


def figures(result: Result, provenance: str) -> dict:
    """The chapter's figure, keyed by the name the notebook glues it under."""
    floor = (result.acc_student, result.acc_student if result.acc_noise_floor is None else result.acc_noise_floor)
    paper = {RANKING_LABELS[key]: {x: PAPER_TABLE7[row][x] for x in FRACTIONS} for key, row in PAPER_ROWS.items()}
    # The paper's Table 7 is a CIFAR-10 ResNet-18 student at about 94%: a panel of its own, on its scale.
    fig = plots.harmful_removal(result.curves, floor, provenance, paper=paper,
                                paper_label="the paper, Table 7 (CIFAR-10)", paper_apart=True)
    for ax in fig.axes:
        ax.set_xscale("linear")
        ax.set_xticks(list(FRACTIONS), [f"{x}%" for x in FRACTIONS])
        ax.set_xlabel("share of the training set removed")
    fig.axes[0].set_ylabel("student accuracy, held-out test images (%)")
    fig.axes[0].set_title(f"Ours: student of a {result.teacher_kind} teacher, retrained after removal", fontsize=10)
    fig.tight_layout()
    return {"fig-kd-removal": fig}


# ------------------------------------------------------------------------------------------ verdict
def _noise_floor(run: RunNumbers) -> float | None:
    if not run.has("acc_student", "acc_noise_floor"):
        return None
    return abs(run["acc_student"] - run["acc_noise_floor"])


def _compare(run: RunNumbers, better: str, worse: str, floor: float | None) -> tuple[list[int], list[int], list[str]]:
    """Chapter 05's rule (a gap is clear above the noise floor and half the random seeds' spread)
    at Table 7's shares."""
    return harmful_data._compare(run, better, worse, floor, FRACTIONS)


def _shares(xs: list[int]) -> str:
    return ", ".join(f"{x}%" for x in xs) if xs else "none"


def _judge(gain: float, floor: float | None) -> str:
    if floor is None:
        return "not judged (no noise floor was measured)"
    return ("beyond the noise floor" if abs(gain) > floor else "within the noise floor")


def _reading(run: RunNumbers) -> list[str]:
    lines = []
    floor = _noise_floor(run)
    rule = (f"A gap counts as clear when it exceeds both the noise floor and {SPREAD_SHARE:g} x the random seeds' "
            "spread at the same share.")
    if run.has("acc_student"):
        lines.append(f"* **Noise floor.** Nothing removed, the student scores {run['acc_student']:.1f}%"
                     + (f"; the same training under another data order scores {run['acc_noise_floor']:.1f}%, a floor "
                        f"of {floor:.1f} points. {rule}" if floor is not None else
                        f" (no second data order was trained). {rule}"))
    if run.has("acc_student", "acc_no_teacher", "acc_student_normal_teacher", "acc_teacher"):
        cost = run["acc_student"] - run["acc_no_teacher"]
        against_normal = run["acc_student"] - run["acc_student_normal_teacher"]
        lines.append(f"* **Does this teacher teach?** The {run.get('teacher_kind', '')} teacher scores "
                     f"{run['acc_teacher']:.1f}%. Its student scores {run['acc_student']:.1f}%, {cost:+.1f} points "
                     f"against the same network trained without a teacher ({_judge(cost, floor)}) and "
                     f"{against_normal:+.1f} against a student of the normal teacher ({_judge(against_normal, floor)}). "
                     "The paper's premise is that its nasty teacher's student loses accuracy by distilling.")
    above, below, gaps = _compare(run, "ddm", "random", floor)
    if gaps:
        paper_gaps = ", ".join(f"{PAPER_TABLE7['DDM'][x] - PAPER_TABLE7['Random'][x]:+.1f}" for x in FRACTIONS)
        lines.append(f"* **DDM vs random removal (Table 7's claim).** Removing the clusters DDM predicts to bring the "
                     f"student closest to its teacher first is clearly better than a random order at {len(above)} of "
                     f"{len(gaps)} shares ({_shares(above)}) and clearly worse at {len(below)} ({_shares(below)}); "
                     "DDM − random, in points: " + "; ".join(gaps)
                     + f". The paper's CIFAR-10 gaps are {paper_gaps} at 10/20/30/40%.")
    if run.has("acc_ddm_10", "acc_student"):
        gain = run["acc_ddm_10"] - run["acc_student"]
        paper_gain = PAPER_TABLE7["DDM"][10] - PAPER_TABLE7["DDM"][0]
        lines.append(f"* **Does removing data help the student?** After removing 10% by DDM's ranking the student "
                     f"scores {run['acc_ddm_10']:.1f}% ({gain:+.1f} points against nothing removed, "
                     f"{_judge(gain, floor)}; the paper: {paper_gain:+.1f}).")
    plus = harmful_data.plus_reading(run, floor, FRACTIONS, PLUS_HEADING, PLUS)
    if plus:
        lines.append(plus)
    for key, what in (("ddm_ce", "chapter 05's cross-entropy objective on the same DDM fine-tunes"),
                      ("teacher_kl", "the trained student's KL to the teacher on each cluster, without DDM")):
        above, below, gaps = _compare(run, key, "random", floor)
        if gaps:
            lines.append(f"* **{RANKING_LABELS[key][0].upper()}{RANKING_LABELS[key][1:]}.** Ranking by {what} is "
                         f"clearly better than random at {len(above)} of {len(gaps)} shares ({_shares(above)}) and "
                         f"clearly worse at {len(below)} ({_shares(below)}).")
    above, below, gaps = _compare(run, "ddm", "teacher_kl", floor)
    if gaps:
        lines.append(f"* **DDM against the baseline.** DDM's KL ranking is clearly better than the no-DDM baseline at "
                     f"{_shares(above)} and clearly worse at {_shares(below)}.")
    _, hurts, gaps = _compare(run, "ddm_helpful", "random", floor)
    if gaps:
        lines.append(f"* **Signal check, the other way round.** Removing DDM's *most helpful* clusters first hurts "
                     f"clearly more than a random order at {len(hurts)} of {len(gaps)} shares ({_shares(hurts)}); "
                     "if DDM's ranking carries information about the student, it should at most shares.")
    return lines


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)


def setting_notes(kd: KDConfig = KD) -> str:
    """The KD settings in words, for the chapter's prose."""
    teacher = ("trained by knowledge undistillation (Ma et al. 2021) against a normally trained network of the same "
               f"kind from seed {adversary_config(kd).teacher_seed}, omega = {kd.nasty_omega:g}, tau_A = {kd.nasty_temperature:g}"
               if kd.teacher == NASTY
               else "trained normally by cross-entropy")
    arch = kd.teacher_arch or "the student's architecture"
    return (f"alpha = {kd.alpha:g}, T = {kd.temperature:g}; the teacher is {arch} (seed {kd.teacher_seed}), {teacher}.")

