r"""The influence-function baselines of Table 2 (and Table 1's simple references' big siblings), from dattri.

Every method here answers the question DDM answers: by how much does each test logit change when
a training cluster is deleted? It does so per training image, first order, and the cluster's
change is the sum over its members (group influence to first order is additive):

.. math:: \Delta z_{k}(x) \approx \sum_{i \in \mathcal D_k} \Delta z_{i}(x)

so each method returns the same ``(K, N, L)`` tensor of *predicted output changes* that DDM's
leave-one-cluster-out fine-tunes give, and one protocol (:mod:`ddm.evaluation`,
:mod:`ddm.locating`) scores all of them against exact retraining.

The estimators are dattri's (``dattri==0.3.0``); this module only adapts the project's networks
to dattri's ``AttributionTask`` and converts each score to a removal effect with the right sign and
scale. For upweighting a training image z by epsilon, Koh & Liang's influence on a test function f
is :math:`-\nabla f^\top H^{-1} \nabla \ell(z)` (H the Hessian of the *mean* training loss);
removing z is epsilon = -1/n, so

.. math:: \Delta f_{\text{remove } z} \approx \tfrac{1}{n}\, \nabla f^\top H^{-1} \nabla \ell(z)
          = \text{dattri's score} / n.

Choices the paper leaves open, and ours:

- **Koh et al. (``IF``)**: dattri's explicit inverse Hessian, restricted to the last linear layer
  on the target's penultimate features (the full ConvNet's Hessian, 24k x 24k, does not fit the
  CPU's time; Koh & Liang also used the top layer for their Inception experiments).
- **LiSSA**: dattri's stochastic recursion for the same last-layer inverse Hessian.
- **FastIF** (Guo et al. 2021): a k-nearest-neighbour search in the penultimate feature space
  (scikit-learn's ``NearestNeighbors``) keeps, per test point, the ``fastif_neighbours`` closest
  training images as candidates; a fast inverse-Hessian-vector product (dattri's conjugate
  gradient, few iterations, last layer) scores only those; everything else scores 0.
- **Scaleup** (Schioppa et al. 2022, "Scaling up influence functions"): dattri's Arnoldi
  projection onto the top eigenvectors of the *full* network's Hessian, the positive ones only
  (their number is reported: an under-trained network's Hessian has large negative ones too).
- **TracIn** (Pruthi et al. 2020): dattri's checkpoint sum over the per-epoch checkpoints
  theta_0 .. theta_{tau-1}, each weighted by the SGD step lr / batch size (the weight one image's
  gradient has in one mini-batch step), full network.
- **TRAK** (Park et al. 2023): dattri's TRAK with random projections to ``trak_dim``; its model
  output function is the logit of the queried class, and its score is the effect of *including*
  the image, so removing it changes the logit by minus the score.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from ddm.config import InfluenceConfig
from ddm.models import classifier_layer, penultimate_features

if TYPE_CHECKING:
    from ddm.clustering import Clustering
    from ddm.experiment import Experiment
    from ddm.training import Params

__all__ = ["IF_EXPLICIT", "LISSA", "FASTIF", "ARNOLDI", "TRACIN", "TRAK", "METHODS", "LABELS", "PAPER_ROWS",
           "InfluenceRun", "influence_run", "image_output_changes", "cluster_sums", "LastLayer", "last_layer",
           "InfluenceError", "PeakMemory"]

IF_EXPLICIT = "if"            # Koh et al.: explicit inverse Hessian, last layer
LISSA = "lissa"               # the same inverse by LiSSA's recursion
FASTIF = "fastif"             # kNN candidates + a fast inverse-Hessian-vector product
ARNOLDI = "arnoldi"           # the paper's "Scaleup": Arnoldi on the full network
TRACIN = "tracin_dattri"      # TracIn over the per-epoch checkpoints
TRAK = "trak"

METHODS = (IF_EXPLICIT, LISSA, FASTIF, ARNOLDI, TRACIN, TRAK)
LABELS = {
    IF_EXPLICIT: "Koh et al. influence function (explicit H^-1, last layer)",
    LISSA: "Influence function, LiSSA (last layer)",
    FASTIF: "FastIF (kNN candidates + CG, last layer)",
    ARNOLDI: "Scaleup (Arnoldi, full network)",
    TRACIN: "TracIn (dattri, per-epoch checkpoints)",
    TRAK: "TRAK (dattri, projected)",
}
# Table 2's row for each method the paper reports.
PAPER_ROWS = {IF_EXPLICIT: "Koh et al.", FASTIF: "FastIF", ARNOLDI: "Scaleup"}


class InfluenceError(ValueError):
    """A method that cannot run as configured, or that returned non-finite scores."""


# ------------------------------------------------------------------------------------------ adapters
@dataclass(frozen=True)
class LastLayer:
    """The target's last linear layer as a model of its own, on the penultimate features.

    dattri differentiates a model's parameters; restricting it to this head makes the explicit
    and stochastic inverse Hessians affordable (the head has L x (F + 1) parameters)."""

    head: nn.Linear
    params: dict[str, torch.Tensor]
    train_features: torch.Tensor       # (n, F)
    test_features: torch.Tensor        # (N, F)


def last_layer(model: nn.Module, params: Params, train_images: torch.Tensor,
               test_images: torch.Tensor) -> LastLayer:
    """Split ``model`` (with ``params``) into its penultimate features and its final linear
    layer (``classifier`` of the built-in networks, the last ``nn.Linear`` of one's own)."""
    name, classifier = classifier_layer(model)
    model.load_state_dict(params)
    model.eval()
    with torch.no_grad():
        train_features = penultimate_features(model, train_images)
        test_features = penultimate_features(model, test_images)
    head = nn.Linear(classifier.in_features, classifier.out_features).eval()
    head_params = {"weight": params[f"{name}.weight"].detach().clone(),
                   "bias": params[f"{name}.bias"].detach().clone() if classifier.bias is not None
                   else torch.zeros(classifier.out_features)}
    head.load_state_dict(head_params)
    return LastLayer(head, head_params, train_features, test_features)


def _forward(model: nn.Module, params, inputs: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    # dattri hands one sample over with or without its batch axis, depending on the attributor.
    return functional_call(model, params, (inputs.reshape(-1, *input_shape),))


def _loss_function(model: nn.Module, input_shape: torch.Size) -> Callable:
    """The training loss as dattri wants it: f(params, (inputs, labels)), mean cross-entropy."""
    def loss(params, data):
        inputs, labels = data
        return F.cross_entropy(_forward(model, params, inputs, input_shape), labels.long().view(-1))
    return loss


def _logit_function(model: nn.Module, input_shape: torch.Size) -> Callable:
    """The test function: the logit of the queried class, f(params, (inputs, classes))."""
    def logit(params, data):
        inputs, classes = data
        return _forward(model, params, inputs, input_shape).gather(1, classes.long().view(-1, 1)).sum()
    return logit


def _class_probability(model: nn.Module, input_shape: torch.Size) -> Callable:
    """TRAK's Q weighting: the probability of the labelled class."""
    def probability(params, data):
        inputs, labels = data
        logits = _forward(model, params, inputs, input_shape)
        return torch.softmax(logits, 1).gather(1, labels.long().view(-1, 1)).sum()
    return probability


def _queries(test_inputs: torch.Tensor, num_classes: int) -> TensorDataset:
    """Every (test point, class) pair, test point major: the scores reshape to (n, N, L)."""
    n = len(test_inputs)
    return TensorDataset(test_inputs.repeat_interleave(num_classes, 0), torch.arange(num_classes).repeat(n))


def _loader(dataset: TensorDataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=max(1, batch_size), shuffle=False)


@contextlib.contextmanager
def _positive_eigenspace() -> Iterator[list[int]]:
    """Keep only the positive eigenvalues of dattri's Arnoldi projection (its inverse divides by
    their square roots). dattri 0.3.0 lowers its rank to their count but still inverts every
    Ritz value it kept, so a Hessian with large negative eigenvalues (an under-trained network)
    gives NaN. Yields the list the number of eigenvalues kept is appended to."""
    from dattri.func.projection import ArnoldiProjector

    original = ArnoldiProjector.get_eigenspace
    kept: list[int] = []

    def positive_only(self) -> None:
        original(self)
        positive = self.eigvals > 0
        self.eigvals, self.eigvecs = self.eigvals[positive], self.eigvecs[positive]
        kept.append(int(positive.sum()))

    ArnoldiProjector.get_eigenspace = positive_only
    try:
        yield kept
    finally:
        ArnoldiProjector.get_eigenspace = original


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """dattri draws tqdm bars and warns about its own internals on every call: silence both here,
    where the caller cannot; and record no autograd graph outside torch.func's own."""
    import dattri.algorithm.base
    import dattri.algorithm.influence_function
    import dattri.algorithm.tracin
    import dattri.algorithm.trak

    def silent(iterable=None, *args, **kwargs):
        return iterable

    modules = [m for name, m in sys.modules.items() if name.startswith("dattri.") and hasattr(m, "tqdm")]
    saved = [m.tqdm for m in modules]
    for module in modules:
        module.tqdm = silent
    try:
        # torch.func's transforms differentiate regardless of no_grad; without it, every
        # Hessian-vector product of Arnoldi's iteration kept the autograd graph of the ones before
        # it (24 GB after a few dozen).
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        for module, bar in zip(modules, saved):
            module.tqdm = bar


# ------------------------------------------------------------------------------------------ per image
def image_output_changes(method: str, model: nn.Module, trajectory_checkpoints: list[Params], train_images: torch.Tensor,
                         train_labels: torch.Tensor, test_images: torch.Tensor, num_classes: int,
                         config: InfluenceConfig, lr: float, batch_size: int) -> torch.Tensor:
    """(n, N, L): the predicted change of each test logit when each training image is removed.

    ``trajectory_checkpoints``: theta_0 .. theta_tau (the target's, theta_tau last); ``lr`` and
    ``batch_size``: the SGD step that trained it (TracIn's weights)."""
    return _image_output_changes(method, model, trajectory_checkpoints, train_images, train_labels, test_images,
                                 num_classes, config, lr, batch_size)[0]


def _image_output_changes(method: str, model: nn.Module, trajectory_checkpoints: list[Params],
                          train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
                          num_classes: int, config: InfluenceConfig, lr: float,
                          batch_size: int) -> tuple[torch.Tensor, int | None]:
    """:func:`image_output_changes` and, for Scaleup, how many eigenvectors its inverse kept."""
    from dattri.algorithm.influence_function import (IFAttributorArnoldi, IFAttributorCG, IFAttributorExplicit,
                                                     IFAttributorLiSSA)
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    if method not in METHODS:
        raise InfluenceError(f"unknown influence method {method!r}; choose one of {', '.join(METHODS)}")
    n, N, L = len(train_images), len(test_images), num_classes
    rank = None
    if method == TRAK and n < config.trak_dim:
        raise InfluenceError(f"TRAK needs more training images ({n}) than its projection dimension "
                             f"(influence.trak_dim = {config.trak_dim}); its kernel is singular otherwise: lower trak_dim")
    final = trajectory_checkpoints[-1]
    model = model.eval()
    shape = train_images.shape[1:]
    # LiSSA samples its batches from torch's global generator: seed it, without disturbing the caller's.
    with _quiet(), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        if method in (IF_EXPLICIT, LISSA, FASTIF):
            top = last_layer(model, final, train_images, test_images)
            shape = top.train_features.shape[1:]
            task = AttributionTask(loss_func=_loss_function(top.head, shape), model=top.head, checkpoints=top.params,
                                   target_func=_logit_function(top.head, shape))
            train = TensorDataset(top.train_features, train_labels)
            queries = _queries(top.test_features, L)
            if method == IF_EXPLICIT:
                attributor = IFAttributorExplicit(task, regularization=config.regularization)
                attributor.cache(_loader(train, n))
                scores = attributor.attribute(_loader(train, n), _loader(queries, len(queries)))
            elif method == LISSA:
                # dattri's recursion x <- v + (1 - d) x - H x / s converges to (H + s d I)^-1 v: damping
                # d = regularization / s inverts the same damped Hessian as the other methods.
                attributor = IFAttributorLiSSA(task, batch_size=config.lissa_batch, recursion_depth=config.lissa_depth,
                                               damping=config.regularization / config.lissa_scaling,
                                               scaling=config.lissa_scaling)
                attributor.cache(_loader(train, n))
                # LiSSA vmaps its recursion over the queries: a few at a time keeps its memory bounded.
                scores = attributor.attribute(_loader(train, n), _loader(queries, config.lissa_queries))
            else:
                scores = _fastif(task, top, train, queries, L, config, IFAttributorCG)
            scores = scores / n
        elif method == ARNOLDI:
            model.load_state_dict(final)
            task = AttributionTask(loss_func=_loss_function(model, shape), model=model, checkpoints=dict(final),
                                   target_func=_logit_function(model, shape))
            train = TensorDataset(train_images, train_labels)
            attributor = IFAttributorArnoldi(task, proj_dim=config.arnoldi_rank, max_iter=config.arnoldi_iterations,
                                             regularization=config.regularization,
                                             precompute_data_ratio=config.arnoldi_data, seed=config.seed)
            with _positive_eigenspace() as kept:
                attributor.cache(_loader(train, config.gradient_batch))
                scores = attributor.attribute(_loader(train, config.gradient_batch),
                                              _loader(_queries(test_images, L), N * L)) / n
            rank = kept[0] if kept else None
            if rank == 0:
                raise InfluenceError("Scaleup found no positive Hessian eigenvalue among its Arnoldi estimates: "
                                     "raise influence.arnoldi_iterations or influence.regularization")
        elif method == TRACIN:
            epochs = trajectory_checkpoints[:-1]
            task = AttributionTask(loss_func=_loss_function(model, shape), model=model,
                                   checkpoints=[dict(c) for c in epochs], target_func=_logit_function(model, shape))
            weights = torch.full((len(epochs),), lr / batch_size)
            attributor = TracInAttributor(task, weight_list=weights, normalized_grad=False)
            # dattri 0.3.0 always installs a random projection (dimension 512); TracIn's own sum
            # uses the raw gradients.
            attributor.projector_kwargs = None
            scores = attributor.attribute(_loader(TensorDataset(train_images, train_labels), config.gradient_batch),
                                          _loader(_queries(test_images, L), N * L))
        else:  # TRAK
            task = AttributionTask(loss_func=_logit_function(model, shape), model=model, checkpoints=dict(final))
            attributor = TRAKAttributor(task, correct_probability_func=_class_probability(model, shape),
                                        projector_kwargs={"proj_dim": config.trak_dim, "proj_max_batch_size": 32,
                                                          "proj_seed": config.seed, "device": "cpu"},
                                        device="cpu")
            attributor.cache(_loader(TensorDataset(train_images, train_labels), config.gradient_batch))
            scores = -attributor.attribute(_loader(_queries(test_images, L), N * L))
    scores = scores.detach().reshape(n, N, L)
    if not torch.isfinite(scores).all():
        raise InfluenceError(f"{LABELS[method]} returned non-finite scores; raise influence.regularization "
                             f"(now {config.regularization:g})" + (" or lower influence.lissa_scaling"
                                                                   if method == LISSA else ""))
    return scores, rank


def _fastif(task, top: LastLayer, train: TensorDataset, queries: TensorDataset, num_classes: int,
            config: InfluenceConfig, cg_attributor) -> torch.Tensor:
    """FastIF: score only each test point's k nearest training images (penultimate features),
    with a few conjugate-gradient iterations for the inverse-Hessian-vector product."""
    from sklearn.neighbors import NearestNeighbors

    n, N = len(top.train_features), len(top.test_features)
    k = min(config.fastif_neighbours, n)
    index = NearestNeighbors(n_neighbors=k).fit(top.train_features.numpy())
    neighbours = index.kneighbors(top.test_features.numpy(), return_distance=False)        # (N, k)
    candidates = np.unique(neighbours)
    # dattri's CG has no stopping rule: past convergence (at most as many steps as parameters) it
    # divides 0 by 0.
    steps = min(config.fastif_cg_iterations, sum(p.numel() for p in top.params.values()))
    attributor = cg_attributor(task, regularization=config.regularization, max_iter=steps)
    attributor.cache(_loader(train, n))
    subset = TensorDataset(*(t[torch.as_tensor(candidates)] for t in train.tensors))
    partial = attributor.attribute(_loader(subset, len(subset)), _loader(queries, len(queries)))
    partial = partial.reshape(len(candidates), N, num_classes)
    scores = torch.zeros(n, N, num_classes)
    position = {int(c): j for j, c in enumerate(candidates)}
    for test_point, near in enumerate(neighbours):
        rows = torch.as_tensor([position[int(i)] for i in near])
        scores[torch.as_tensor(near), test_point] = partial[rows, test_point]
    return scores.reshape(n, N * num_classes)


def cluster_sums(per_image: torch.Tensor, assignment: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """(K, ...) the per-image values (n, ...) summed over each cluster's members: first-order
    group influence."""
    out = torch.zeros(num_clusters, *per_image.shape[1:], dtype=per_image.dtype)
    return out.index_add_(0, assignment.long(), per_image)


# ------------------------------------------------------------------------------------------ measured runs
def _return_free_memory() -> None:
    """Hand memory freed by earlier work back to the system (glibc's malloc_trim), so that a
    method reusing it still shows its own peak; a no-op where glibc is absent."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak resident memory above the start of a block, sampled every few milliseconds
    (torch's CPU allocations are invisible to tracemalloc); freed memory is returned to the
    system first, so the start is as low as it gets."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        _return_free_memory()
        self._process, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.start = self.peak = self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def megabytes(self) -> float:
        return (self.peak - self.start) / 2**20


@dataclass
class InfluenceRun:
    """One method's predicted output changes for every cluster, and what it cost on this machine."""

    method: str
    changes: torch.Tensor     # (K, N, L) predicted change of each test logit when cluster k is deleted
    seconds: float            # wall time of the whole method (features, gradients, inverse Hessian, scores)
    peak_mb: float            # peak resident memory above the start, MiB
    rank: int | None = None   # Scaleup: positive Hessian eigenvectors its inverse kept (None: other methods)


def _import_dattri() -> None:
    """Import dattri's modules before any clock or memory probe starts: otherwise the first method
    timed in a process carries the package's one-time import (several seconds) in its wall time."""
    import dattri.algorithm.influence_function  # noqa: F401
    import dattri.algorithm.tracin  # noqa: F401
    import dattri.algorithm.trak  # noqa: F401
    import dattri.task  # noqa: F401


def influence_run(exp: Experiment, method: str, clustering: Clustering, test_index: torch.Tensor) -> InfluenceRun:
    """Run one influence method on the experiment's target for the test points ``test_index``
    and sum its per-image changes per cluster, timed and with its peak memory (dattri's import
    left out of both)."""
    _import_dattri()
    cfg = exp.config
    target = exp.target()
    x = exp.test.images[test_index]
    with PeakMemory() as memory:
        start = time.perf_counter()
        per_image, rank = _image_output_changes(method, exp.new_model(), target.checkpoints, exp.train.images,
                                                   exp.train.labels, x, exp.num_classes, cfg.influence, cfg.train.lr,
                                                   cfg.train.batch_size)
        changes = cluster_sums(per_image, clustering.assignment, clustering.num_clusters)
        seconds = time.perf_counter() - start
    return InfluenceRun(method, changes, seconds, memory.megabytes, rank)
