"""What each stage of DDM and of its alternatives costs, measured on this machine.

The paper's case for DDM is cost: the synset is distilled once (offline, Algorithm 1) and then
serves any number of questions, each answered by a few fine-tuning steps (online, Eq. 9) instead
of a retrain. This module measures every stage from scratch (nothing is read from the artifact
store, whose cached stages would cost nothing), with its wall time and peak memory:

- :func:`stage_costs`: target training (Eq. 2), clustering (Supp. 6.1), distillation (Alg. 1),
  the K leave-one-out fine-tunes (Eq. 9), the perturbed models' predictions, the Eq. 8 fit over
  |P| random masks, exact retraining without one cluster, and the attribution baselines;
- :func:`cost_against_clusters` / :func:`cost_against_size`: how DDM online, DDM end to end and
  exact leave-one-cluster-out retraining grow with K and with the training-set size;
- :func:`break_even`: after how many questions (deletion masks) DDM end to end is cheaper than
  exact retraining.

Two quantities are derived from measured ones, and named so wherever they appear: exact
leave-one-out of all K clusters is K times the measured time of one retrain (every retrain
trains on all but one cluster's images, so they cost the same up to noise), and in the sweeps a
distillation's cost is put together from its measured parts (:class:`DistillationParts`: the
real gradients per checkpoint, one step, the final cosines); at the profile's own K the full
distillation is measured too, which checks the sum.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ddm.attribution import fit_attribution_matrix
from ddm.clustering import Clustering
from ddm.evaluation import perturbation_masks
from ddm.experiment import Experiment
from ddm.influence import PeakMemory
from ddm.matching import (checkpoint_pairs, cluster_gradients, initial_synset,
                          matching_objective, mean_layer_cosines)
from ddm.online import leave_one_out_masks, perturbed_models, predict_many
from ddm.training import Trajectory, retrain_without, train_trajectory

__all__ = ["Cost", "measure", "StageCosts", "stage_costs", "DistillationParts", "distillation_parts", "SweepPoint", "cost_against_clusters",
           "cost_against_size", "break_even", "PROBE_STEPS"]

PROBE_STEPS = 3   # distillation steps timed per point of a sweep (their median is the step time)


@dataclass(frozen=True)
class Cost:
    """Wall time (s) and peak resident memory above the start (MiB) of one measured call."""

    seconds: float
    peak_mb: float


def measure(fn: Callable[[], Any]) -> tuple[Any, Cost]:
    """Run ``fn`` once; its result and its :class:`Cost` (torch's CPU allocations are invisible to
    tracemalloc, so memory is the process's resident size, sampled; see ``PeakMemory``)."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, Cost(seconds, memory.megabytes)


def _clusters(exp: Experiment, clusters_per_class: int) -> Clustering:
    return exp.compute_clusters(dataclasses.replace(exp.config.clusters, clusters_per_class=clusters_per_class))


def _finetunes(exp: Experiment, trajectory: Trajectory, synset, masks: torch.Tensor) -> list:
    online = exp.config.online
    return perturbed_models(exp.new_model(), trajectory.final, synset.images, synset.labels, synset.label_logits,
                            synset.cluster, masks, online.finetune_steps, online.finetune_lr,
                            vectorised=online.vectorised)


def _retrain(exp: Experiment, clustering: Clustering, cluster: int):
    return retrain_without(exp.new_model(), exp.initial_params(), exp.train.images, exp.train.labels,
                           exp.config.train, clustering.removal_mask((cluster,)), device=exp.device)


@dataclass(frozen=True)
class StageCosts:
    """Every stage of one run at the profile's K, measured from scratch."""

    num_clusters: int
    test_points: int
    distill_steps: int
    masks: int                           # |P| of the Eq. 8 fit
    stages: dict[str, Cost]              # stage key -> cost (see STAGES in the speed chapter)
    retrain_seconds: tuple[float, ...]   # each measured exact retrain (one cluster removed)
    methods: dict[str, Cost]             # attribution baselines: key -> cost for all test points
    trajectory: Trajectory = dataclasses.field(repr=False)   # the target it trained (the sweeps reuse it)


def stage_costs(exp: Experiment, test_index: torch.Tensor, retrains: int = 2,
                methods: dict[str, Callable[[Experiment, Clustering, torch.Tensor, Trajectory], Any]] | None = None
                ) -> StageCosts:
    """Measure every stage once on ``exp`` at its configured K, in the order the data flow runs them.

    ``retrains`` exact retrains (clusters 0, 1, ...) are timed; ``methods`` maps a baseline's key
    to a call ``(exp, clustering, test_index, trajectory)`` timed as one block."""
    stages: dict[str, Cost] = {}
    trajectory, stages["target"] = measure(lambda: train_trajectory(
        exp.new_model(), exp.initial_params(), exp.train.images, exp.train.labels, exp.config.train,
        device=exp.device))
    clustering, stages["clustering"] = measure(lambda: _clusters(exp, exp.config.clusters.clusters_per_class))
    K = clustering.num_clusters
    synset, stages["distillation"] = measure(lambda: exp.compute_synset(exp.config.distill, clustering, trajectory,
                                                                         progress=False))
    x = exp.test.images[test_index]
    models, stages["finetunes"] = measure(lambda: _finetunes(exp, trajectory, synset, leave_one_out_masks(K)))
    _, stages["prediction"] = measure(lambda: predict_many(exp.new_model(), models, x))
    masks = perturbation_masks(K, exp.config.online)
    perturbed, stages["mask_finetunes"] = measure(lambda: _finetunes(exp, trajectory, synset, masks))
    outputs = predict_many(exp.new_model(), perturbed, x).reshape(len(masks), -1)
    _, stages["fit"] = measure(lambda: fit_attribution_matrix(masks, outputs))
    retrain_costs = [measure(lambda k=k: _retrain(exp, clustering, k))[1] for k in range(min(retrains, K))]
    stages["retrain"] = Cost(float(np.mean([c.seconds for c in retrain_costs])),
                             float(max(c.peak_mb for c in retrain_costs)))
    measured_methods = {key: measure(lambda call=call: call(exp, clustering, test_index, trajectory))[1]
                        for key, call in (methods or {}).items()}
    return StageCosts(K, len(test_index), exp.config.distill.steps, len(masks), stages,
                      tuple(c.seconds for c in retrain_costs), measured_methods, trajectory)


@dataclass(frozen=True)
class DistillationParts:
    """The three parts of a distillation's cost, each measured once at one K:

    - the K real cluster gradients at one checkpoint (computed once per distinct real checkpoint
      of Algorithm 1's pairs, then cached by :func:`~ddm.matching.distill_synset`);
    - one step with those cached (the K synset gradients, the distances, the backward to the
      images, the SGD step), the median of a few;
    - the layer cosines reported at the end (:func:`~ddm.matching.mean_layer_cosines`).
    """

    real_gradients_seconds: float
    step_seconds: float
    final_seconds: float
    real_checkpoints: int        # distinct real checkpoints of the pairs
    steps: int                   # the profile's step count

    @property
    def seconds(self) -> float:
        """A full distillation: real_checkpoints x real gradients + steps x step + final (derived)."""
        return self.real_checkpoints * self.real_gradients_seconds + self.steps * self.step_seconds \
            + self.final_seconds


def distillation_parts(exp: Experiment, trajectory: Trajectory, clustering: Clustering,
                       repeats: int = PROBE_STEPS) -> DistillationParts:
    """Measure the parts of :class:`DistillationParts` on ``exp``'s data at ``clustering``'s K,
    with the same calls :func:`~ddm.matching.distill_synset` makes."""
    config = exp.config.distill
    model = exp.new_model()
    pairs = checkpoint_pairs(trajectory.epochs, config.method, config.pairing, config.step_length)
    t_real, t_syn = pairs[0]
    real, syn_params = trajectory.checkpoints[t_real], trajectory.checkpoints[t_syn]
    start = time.perf_counter()
    real_grads = cluster_gradients(model, real, exp.train.images, exp.train.labels, clustering, config.real_batch)
    real_seconds = time.perf_counter() - start
    init, _ = initial_synset(exp.train.images, clustering, config.ipc, config.seed)
    labels = clustering.cluster_class.repeat_interleave(config.ipc)
    syn = init.clone().requires_grad_(True)
    logits = (torch.nn.functional.one_hot(labels, exp.num_classes).float() * 5.0).requires_grad_(True) \
        if config.soft_labels else None
    optimiser = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum_img)
    times = []
    for _ in range(repeats + 1):   # the first step warms up what later ones reuse
        start = time.perf_counter()
        objective = matching_objective(model, real, syn_params, real_grads, syn, labels, logits,
                                       clustering.num_clusters, config.distance, config.method == "reverse")
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    mean_layer_cosines(model, trajectory, exp.train.images, exp.train.labels, clustering, syn.detach(), labels,
                       None if logits is None else logits.detach(), pairs, config.method == "reverse")
    final_seconds = time.perf_counter() - start
    return DistillationParts(real_seconds, float(np.median(times[1:])), final_seconds,
                             len({t for t, _ in pairs}), config.steps)


@dataclass(frozen=True)
class SweepPoint:
    """One point of a cost curve: K clusters on n training images."""

    num_clusters: int
    train_images: int
    online_seconds: float            # the K leave-one-out fine-tunes (Eq. 9) and their predictions, measured
    distillation: DistillationParts  # its parts measured, the total derived
    retrain_seconds: float           # one exact retrain without one cluster, measured

    @property
    def distill_seconds(self) -> float:
        return self.distillation.seconds

    @property
    def ddm_seconds(self) -> float:
        """DDM end to end for all K leave-one-out questions: distillation + online (derived)."""
        return self.distill_seconds + self.online_seconds

    @property
    def exact_seconds(self) -> float:
        """Exact leave-one-out of all K clusters: K x one measured retrain (derived)."""
        return self.num_clusters * self.retrain_seconds


def _sweep_point(exp: Experiment, trajectory: Trajectory, clusters_per_class: int, test_images: torch.Tensor,
                 retrain_seconds: float | None = None) -> SweepPoint:
    clustering = _clusters(exp, clusters_per_class)
    K = clustering.num_clusters
    parts = distillation_parts(exp, trajectory, clustering)
    # The fine-tunes start from the synset's initial real images: a fine-tune costs the same
    # whatever the pixel values, and the sweep need not distil at every K.
    init, _ = initial_synset(exp.train.images, clustering, exp.config.distill.ipc, exp.config.distill.seed)
    labels = clustering.cluster_class.repeat_interleave(exp.config.distill.ipc)
    cluster = torch.arange(K).repeat_interleave(exp.config.distill.ipc)
    online = exp.config.online
    start = time.perf_counter()
    models = perturbed_models(exp.new_model(), trajectory.final, init, labels, None, cluster, leave_one_out_masks(K),
                              online.finetune_steps, online.finetune_lr, vectorised=online.vectorised)
    predict_many(exp.new_model(), models, test_images)
    online_seconds = time.perf_counter() - start
    if retrain_seconds is None:
        retrain_seconds = measure(lambda: _retrain(exp, clustering, 0))[1].seconds
    return SweepPoint(K, len(exp.train), online_seconds, parts, retrain_seconds)


def cost_against_clusters(exp: Experiment, clusters_per_class: Sequence[int], test_index: torch.Tensor,
                          trajectory: Trajectory, retrain_seconds: float) -> list[SweepPoint]:
    """DDM online, DDM end to end and exact leave-one-out at K = L x C for each C, on ``exp``'s
    data. One retrain costs the same at every K (it trains on all but one cluster, about n
    images), so ``retrain_seconds`` measured once serves every point."""
    x = exp.test.images[test_index]
    return [_sweep_point(exp, trajectory, c, x, retrain_seconds) for c in clusters_per_class]


def cost_against_size(make_experiment: Callable[[int], Experiment], per_class: Sequence[int],
                      test_points: int) -> list[SweepPoint]:
    """The same three costs at the profile's K on growing training sets (``per_class`` images per
    class; ``make_experiment(per_class)`` opens each), every point's target and retrain measured."""
    points = []
    for size in per_class:
        exp = make_experiment(size)
        trajectory = train_trajectory(exp.new_model(), exp.initial_params(), exp.train.images, exp.train.labels,
                                      exp.config.train, device=exp.device)
        x = exp.test.images[: min(test_points, len(exp.test))]
        points.append(_sweep_point(exp, trajectory, exp.config.clusters.clusters_per_class, x))
    return points


def break_even(distill_seconds: float, ddm_seconds_per_mask: float, exact_seconds_per_mask: float) -> float | None:
    r"""The number of deletion masks M after which DDM end to end is cheaper than exact retraining:

    .. math:: M^* = \frac{c_\text{distill}}{c_\text{retrain} - c_\text{online}}

    (DDM pays the distillation once and a fine-tune plus a prediction per mask; exact retraining
    pays a retrain per mask; both serve every test point of a mask at once). None when a mask
    costs DDM at least as much as a retrain: it never breaks even."""
    saving = exact_seconds_per_mask - ddm_seconds_per_mask
    if saving <= 0:
        return None
    return distill_seconds / saving
