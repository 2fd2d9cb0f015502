"""Growing the training set: the book's evaluation protocol at several sizes (issue 11, item 1).

A reader who believes the paper can answer chapter 03's verdict with "your target is tiny and
under-trained". This module runs the same measurement (each method's leave-one-cluster-out
Spearman, the cluster LDS and the Dist1 of the located cluster, each against exact retraining
and beside the retraining noise floor) on training sets of growing size, K fixed by the profile,
every target trained until its training loss has plateaued by one stated rule
(:func:`plateau_epochs`).

Where a full leave-one-cluster-out ground truth (2K + 1 exact retrains, plus the LDS masks) is
more than the profile affords, a size is measured by the Dist1 protocol instead: only the
clusters the methods locate are retrained (:func:`measure_located`); that size then has no
Spearman and no LDS, and the tables say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ddm import evaluation, locating
from ddm.data import DataError
from ddm.evaluation import GroundTruth
from ddm.experiment import Experiment
from ddm.metrics import dist1
from ddm.attribution import margin_direction
from ddm.training import accuracy
from ddm.variants import DDM_SOFT, PAPER_DDM, distill_variants

# The plateau rule: the training loss fell by less than PLATEAU_DROP nats per epoch, averaged
# over the last PLATEAU_WINDOW epochs (a single epoch's mean loss is too noisy to judge alone).
PLATEAU_DROP = 0.025
PLATEAU_WINDOW = 3

# Method keys of the scale study (those of ddm.evaluation and ddm.variants).
METHODS = (PAPER_DDM, DDM_SOFT, evaluation.TRACIN, evaluation.NEAREST_CENTROID, evaluation.RANDOM)
FULL, LOCATED = "full leave-one-cluster-out", "Dist1 protocol (located clusters only)"


@dataclass(frozen=True)
class ScaleConfig:
    """The sizes (training images per class) a profile measures, and the epoch cap of its targets."""

    full_sizes: tuple[int, ...]      # measured with the full leave-one-cluster-out ground truth
    located_sizes: tuple[int, ...]   # measured by the Dist1 protocol only (too costly for the full one)
    max_epochs: int                  # the targets train at most this long (the probe's length)

    def __post_init__(self) -> None:
        sizes = [*self.full_sizes, *self.located_sizes]
        if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"a scale study needs training-set sizes that are positive integers (images per "
                             f"class), got full_sizes={self.full_sizes}, located_sizes={self.located_sizes}")
        both = set(self.full_sizes) & set(self.located_sizes)
        if both:
            raise ValueError(f"sizes {sorted(both)} are listed under both protocols; list each size once, under "
                             f"full_sizes or under located_sizes")
        if self.max_epochs <= PLATEAU_WINDOW:
            raise ValueError(f"max_epochs={self.max_epochs} leaves the plateau rule nothing to judge: it needs "
                             f"more than {PLATEAU_WINDOW} epochs (PLATEAU_WINDOW)")

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(sorted({*self.full_sizes, *self.located_sizes}))


# quick: digits has about 131 training images in its smallest class; ci stays within 3 minutes (the
# full protocol at two sizes, 2 x 71 exact retrains, took over 10 minutes of the CI machine, so its
# second size uses the Dist1 protocol; the sizes stay 30 and 60 because the records' headline
# fields are named after every profile's sizes);
# cpu is what one 180-minute session of a 2-core CPU affords for both data sets; paper is the
# issue's full list, for a GPU. The full protocol costs 2K + 1 + lds_masks = 221 exact retrains
# per size at the cpu profile, and the MNIST and CIFAR-10 records running side by side finished
# about four 1,000-image retrains a minute together (2026-12-04): one full size per data set fits a
# session, the larger sizes use the Dist1 protocol (tens of retrains each).
SCALES = {
    "quick": ScaleConfig(full_sizes=(40, 80), located_sizes=(), max_epochs=10),
    "ci": ScaleConfig(full_sizes=(30,), located_sizes=(60,), max_epochs=5),
    "cpu": ScaleConfig(full_sizes=(100,), located_sizes=(200, 500), max_epochs=12),
    "paper": ScaleConfig(full_sizes=(100, 200, 500, 1000), located_sizes=(5000,), max_epochs=30),
}
# (profile, data set) -> sizes where one data set affords other sizes than the profile's. A CIFAR-10
# retrain costs several MNIST ones of the same size and its loss never plateaus before the cap:
# beside MNIST's record it finished about 30 of the full protocol's 221 retrains in 45 minutes
# (2026-12-04), so the cpu record measures CIFAR-10 with the Dist1 protocol only, at two sizes.
DATASET_SCALES: dict[tuple[str, str], ScaleConfig] = {
    ("cpu", "cifar10-jpeg"): ScaleConfig(full_sizes=(), located_sizes=(100, 200), max_epochs=12),
}


def scale_config(profile: str, dataset: str | None = None) -> ScaleConfig:
    """The sizes ``profile`` measures on ``dataset`` (the profile's own where no data set differs)."""
    if profile not in SCALES:
        raise ValueError(f"no scale study is defined for profile {profile!r}; choose one of {sorted(SCALES)}")
    return DATASET_SCALES.get((profile, dataset or ""), SCALES[profile])


def describe(config: ScaleConfig) -> str:
    """One sentence for the page: which sizes each protocol measures, and the epoch cap."""
    def sizes(values: tuple[int, ...]) -> str:
        return ", ".join(map(str, values))
    parts = []
    if config.full_sizes:
        parts.append(f"{sizes(config.full_sizes)} training images per class with the full protocol")
    if config.located_sizes:
        parts.append(f"{sizes(config.located_sizes)} {'' if config.full_sizes else 'training images per class '}"
                     f"with the Dist1 protocol")
    return f"This profile measures {' and '.join(parts)}; targets train for at most {config.max_epochs} epochs."


def plateau_epochs(losses, drop: float = PLATEAU_DROP, window: int = PLATEAU_WINDOW) -> tuple[int, bool]:
    """The first epoch e after which the mean training loss has fallen by less than ``drop`` nats
    per epoch over the last ``window`` epochs, ``(L_{e-window} - L_e) / window < drop`` (L_e the
    mean loss of epoch e, 1-based), and True; ``(len(losses), False)`` when the loss is still
    falling faster at the end of ``losses``."""
    values = [float(v) for v in losses]
    for epoch in range(window + 1, len(values) + 1):
        if (values[epoch - 1 - window] - values[epoch - 1]) / window < drop:
            return epoch, True
    return len(values), False


@dataclass(frozen=True)
class SizedTarget:
    """The experiment at one training-set size, with how its epochs were chosen."""

    per_class: int
    experiment: Experiment
    epochs: int
    plateaued: bool                 # False: the cap, the loss was still falling
    probe_losses: tuple[float, ...]  # mean training loss of every epoch of the probe run (to the cap)


def resized(exp: Experiment, per_class: int, epochs: int) -> Experiment:
    """``exp`` with ``per_class`` training images per class trained for ``epochs`` epochs (same
    data root, store and network)."""
    config = exp.config.with_overrides(**{"data.train_per_class": per_class, "train.epochs": epochs})
    return Experiment.create(config, data_root=exp.data_root, cache_root=exp.store.root, progress=exp.progress,
                             model=exp.custom_model)


def sized_target(exp: Experiment, per_class: int, max_epochs: int) -> SizedTarget:
    """Train a probe to ``max_epochs`` (cached like any target), choose the epochs by
    :func:`plateau_epochs` on its losses, and return the experiment trained that long. The data
    order of the first e epochs does not depend on the total (:func:`ddm.training.epoch_orders`),
    so the chosen target is the probe's own prefix."""
    probe = resized(exp, per_class, max_epochs)
    losses = tuple(float(v) for v in probe.target().losses)
    epochs, plateaued = plateau_epochs(losses)
    chosen = probe if epochs == max_epochs else resized(exp, per_class, epochs)
    return SizedTarget(per_class, chosen, epochs, plateaued, losses)


@dataclass
class SizePoint:
    """One size's numbers: per method, Spearman / LDS (full protocol only) and Dist1 x100."""

    per_class: int
    train_images: int
    protocol: str
    epochs: int
    plateaued: bool
    final_train_loss: float
    test_accuracy: float                          # % on the whole test split
    spearman: dict[str, float] = field(default_factory=dict)     # method -> mean Spearman with exact
    lds: dict[str, float] = field(default_factory=dict)          # method -> cluster LDS
    dist1_x100: dict[str, float] = field(default_factory=dict)   # method -> Dist1 x100 of its located cluster
    calibration: dict[str, float] = field(default_factory=dict)  # DDM variants: |predicted| / |exact|
    dist1_x100_order: float | None = None         # nothing removed, another data order
    dist1_x100_best: float | None = None          # the best single pick (full protocol only)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)   # method -> 95% bootstrap interval of its Spearman
    retrains: int = 0                             # exact retrains this size rests on
    seconds: float = 0.0


def _target_only(exp: Experiment) -> GroundTruth:
    """The test points with the target's outputs and no exact retrain: what predicting methods
    need (their exact_effects cannot be asked for)."""
    idx = exp.test_point_indices()
    target = exp.target_logits(exp.test.images[idx])
    labels = exp.test.labels[idx]
    empty = torch.empty(0, *target.shape)
    return GroundTruth(idx, labels, target, margin_direction(target, labels), empty, {}, {})


def method_effects(exp: Experiment, truth: GroundTruth) -> dict[str, np.ndarray]:
    """(N, K) predicted margin drops of every method of :data:`METHODS` on ``truth``'s test points."""
    clustering = exp.clusters()
    synsets = distill_variants(exp, (PAPER_DDM, DDM_SOFT))
    effects = {key: evaluation.ddm_effects(exp, synset, truth)[0] for key, synset in synsets.items()}
    references = evaluation.baseline_effects(exp, clustering, truth)
    effects.update({key: references[key] for key in METHODS if key in references})
    return effects


def _common(sized: SizedTarget) -> dict:
    exp = sized.experiment
    logits = exp.target_logits(exp.test.images)
    return dict(per_class=sized.per_class, train_images=len(exp.train), epochs=sized.epochs,
                plateaued=sized.plateaued, final_train_loss=float(exp.target().losses[-1]),
                test_accuracy=100 * accuracy(logits, exp.test.labels))


def measure_full(sized: SizedTarget) -> SizePoint:
    """The full protocol at one size: 2K + 1 exact retrains (leave-one-cluster-out under the
    target's order and under the noise seed) and the LDS masks."""
    start = time.perf_counter()
    exp = sized.experiment
    clustering = exp.clusters()
    truth = evaluation.leave_one_out_ground_truth(exp, clustering)
    effects = method_effects(exp, truth)
    scores = evaluation.score_methods(effects, truth)
    seed = truth.noise_seed
    loo = dict(effects)
    loo[evaluation.EXACT] = truth.exact_effects()
    if seed is not None:
        loo[evaluation.NOISE_FLOOR] = truth.noise_effects(seed)
    lds = evaluation.lds_evaluation(exp, distill_variants(exp, (PAPER_DDM,))[PAPER_DDM], clustering, truth, loo)
    keys = [*METHODS, evaluation.NOISE_FLOOR, evaluation.EXACT]
    point = SizePoint(protocol=FULL, **_common(sized),
                      spearman={k: scores[k].spearman for k in keys if k in scores and k != evaluation.EXACT},
                      intervals={k: scores[k].interval for k in keys if k in scores and k != evaluation.EXACT},
                      lds={**{k: v for k, v in lds.scores.items() if k != evaluation.DDM_W},
                           evaluation.DDM_W: lds.scores[evaluation.DDM_W]},
                      dist1_x100={k: scores[k].dist1_x100 for k in keys if k in scores},
                      calibration={k: evaluation.calibration(effects[k], truth) for k in (PAPER_DDM, DDM_SOFT)},
                      dist1_x100_best=evaluation.best_dist1_x100(truth))
    if seed is not None:
        point.dist1_x100_order = float(dist1(truth.noise_full_logits[seed], truth.target_logits).mean() * 100)
    K = clustering.num_clusters
    point.retrains = K * (1 + len(truth.noise_logits)) + len(truth.noise_full_logits) + lds.lds_masks
    point.seconds = time.perf_counter() - start
    return point


def measure_located(sized: SizedTarget) -> SizePoint:
    """The Dist1 protocol at one size: every method locates one cluster per test point (its
    largest predicted effect), only those clusters are retrained exactly (the target's order),
    plus one retrain with nothing removed under the noise seed (how far data order alone moves
    the output)."""
    start = time.perf_counter()
    exp = sized.experiment
    clustering = exp.clusters()
    truth = _target_only(exp)
    effects = method_effects(exp, truth)
    point = SizePoint(protocol=LOCATED, **_common(sized))
    retrained: set[int] = set()
    for key, value in effects.items():
        top = np.asarray(value).argmax(1)
        picks = locating.Picks(top, top.copy(), top.copy())   # only the Dist1 pick is measured here
        out = locating.located_distances_retrained(exp, clustering, picks, truth.test_index, other_order=False)
        point.dist1_x100[key] = out[locating.DIST1_X100]
        point.dist1_x100_order = out.get(locating.DIST1_X100_NOISE)
        retrained.update(int(k) for k in top)
    point.retrains = len(retrained) + (1 if point.dist1_x100_order is not None else 0)
    point.seconds = time.perf_counter() - start
    return point


@dataclass
class ScaleRun:
    """Every size measured, smallest first, and the sizes the data set could not afford."""

    points: list[SizePoint]
    skipped: dict[int, str]     # size -> why it was not measured


def measure(exp: Experiment, scale: ScaleConfig | None = None, progress=None) -> ScaleRun:
    """Every size of ``scale`` (the profile's for this data set by default), smallest first. A size
    larger than a class of the data set (a small folder of one's own) is skipped and said why; no
    size that fits is an error."""
    scale = scale or scale_config(exp.config.profile, exp.config.data.name)
    points, skipped = [], {}
    for per_class in scale.sizes:
        try:
            sized = sized_target(exp, per_class, scale.max_epochs)
        except DataError as error:
            if "per_class=" not in str(error):
                raise
            skipped[per_class] = str(error)
            continue
        full = per_class in scale.full_sizes
        points.append(measure_full(sized) if full else measure_located(sized))
        if progress is not None:
            progress(points[-1])
    if not points:
        raise DataError(f"the data set has too few images per class for every size of the scale study "
                        f"({', '.join(map(str, scale.sizes))} per class): {next(iter(skipped.values()))}; pass a "
                        f"ddm.scale.ScaleConfig with smaller sizes")
    return ScaleRun(points, skipped)
