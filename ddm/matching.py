"""Reverse gradient matching (Sec. 3.2, Eq. 1-6, Algorithm 1) and plain gradient matching.

For every cluster D_k a tiny synthetic set S_k (``ipc`` images, initialised from real images of
the cluster and labelled with its class) is optimised so that the gradient it gives at one point
of the target trajectory points *against* the gradient the real cluster gave at another point.
Fine-tuning the trained network on S_k then walks back the cluster's contribution: that is the
"reverse" in the name. Plain gradient matching (the ablation "DDM-match") matches the gradient
itself, at the same checkpoint, as in dataset condensation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from tqdm import tqdm

from ddm.clustering import Clustering
from ddm.config import DistillConfig
from ddm.store import load_checkpoint, save_checkpoint
from ddm.training import Params, Trajectory, soft_cross_entropy

log = logging.getLogger(__name__)

_EPS = 1e-6  # as in gradient-matching condensation's distance_wb: guards a zero-norm gradient

VMAP_CHUNK_IMAGES = 128
"""Synthetic images per vmap call in :func:`synset_cluster_gradients` (``chunk_size`` of vmap is
this divided by ipc). One call over all K = 1,000 clusters (ConvNet w32 on MNIST) was 2.1-2.4x
slower than chunks of 128 images (``benchmarks/bench_distill.py --no-chunk``): every activation
of the double backward is then a 130 MB tensor, mapped fresh from the system each time. At
K * ipc <= 128 it is one call, the same numbers as without chunks."""


# --------------------------------------------------------------------------------------------
# Gradient distances
# --------------------------------------------------------------------------------------------
def layerwise_cosine_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""Layer-wise cosine distance of gradient matching (the Dist of Eq. 6 for CNNs).

    Every weight tensor is viewed as one row per output unit, ``(out, -1)``, and the distance is
    :math:`\sum_{\text{layers}} \sum_{i} \big(1 - \cos(g^a_{i}, g^b_{i})\big)`. One-dimensional
    tensors (biases, normalisation scales) contribute nothing, as in the condensation code.
    """
    total = torch.zeros(())
    for name, a in g_a.items():
        if a.dim() <= 1:
            continue
        b = g_b[name]
        a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        cos = (a2 * b2).sum(-1) / (a2.norm(dim=-1) * b2.norm(dim=-1) + _EPS)
        total = total + (1 - cos).sum()
    return total


def layer_cosines(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine between the two gradients, layer by layer (every weight tensor flattened)."""
    out = {}
    for name, a in g_a.items():
        if a.dim() <= 1:
            continue
        b = g_b[name]
        out[name] = float(F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).squeeze())
    return out


def flat_cosine_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`1 - \cos(\mathrm{vec}(g^a), \mathrm{vec}(g^b))` over all parameters at once."""
    a = torch.cat([v.reshape(-1) for v in g_a.values()])
    b = torch.cat([g_b[k].reshape(-1) for k in g_a])
    return 1 - (a * b).sum() / (a.norm() * b.norm() + _EPS)


def mse_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\sum_{\text{layers}} \lVert g^a - g^b \rVert^2` (the paper's Dist for the ViT)."""
    total = torch.zeros(())
    for name, a in g_a.items():
        total = total + ((a - g_b[name]) ** 2).sum()
    return total


DISTANCES = {"layerwise_cosine": layerwise_cosine_distance, "cosine": flat_cosine_distance,
             "mse": mse_distance}


def get_distance(name: str):
    if name not in DISTANCES:
        raise ValueError(f"unknown gradient distance {name!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[name]


def compared_parameters(distance: str, params: Params) -> list[str]:
    """The parameters whose gradients ``distance`` reads: the weight tensors (dim > 1) for the
    layer-wise cosine, which ignores biases and normalisation scales, else all of them. The
    synset gradients are taken with respect to these only (the others held fixed), which spares
    the double backward their part of the graph and changes no number."""
    get_distance(distance)
    if distance == "layerwise_cosine":
        names = [k for k, v in params.items() if v.dim() > 1]
        if names:
            return names
    return list(params)


# --------------------------------------------------------------------------------------------
# Losses and gradients
# --------------------------------------------------------------------------------------------
def synset_loss(model: nn.Module, params: Params, images: torch.Tensor, labels: torch.Tensor,
                label_logits: torch.Tensor | None) -> torch.Tensor:
    """L(theta, S): hard-label cross-entropy, or soft-label cross-entropy with our extension."""
    logits = functional_call(model, params, (images,))
    if label_logits is None:
        return F.cross_entropy(logits, labels)
    return soft_cross_entropy(logits, label_logits)


def cluster_gradients(model: nn.Module, params: Params, images: torch.Tensor, labels: torch.Tensor,
                      clustering: Clustering, real_batch: int = 0,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    r""":math:`\nabla_\theta \mathcal L(\theta, \mathcal D_k)` for every cluster k, stacked: (K, *shape).

    The loss of a cluster is its mean cross-entropy. ``real_batch > 0`` samples that many images
    per cluster instead of using all of them.
    """
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    per_cluster: list[tuple[torch.Tensor, ...]] = []
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        if real_batch and len(members) > real_batch:
            members = members[torch.randperm(len(members), generator=generator)[:real_batch]]
        loss = F.cross_entropy(functional_call(model, params, (images[members],)), labels[members])
        per_cluster.append(torch.autograd.grad(loss, list(params.values())))
    return {name: torch.stack([g[i] for g in per_cluster]) for i, name in enumerate(params)}


def synset_cluster_gradients(model: nn.Module, params: Params, syn_images: torch.Tensor,
                             syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                             num_clusters: int, names: Sequence[str] | None = None,
                             chunk_images: int | None = VMAP_CHUNK_IMAGES) -> dict[str, torch.Tensor]:
    r""":math:`\nabla_\theta \mathcal L(\theta, \mathcal S_k)` for all k at once (torch.func
    ``vmap`` over ``grad``), kept differentiable with respect to the synthetic images and soft
    labels: (K, *shape).

    ``names`` restricts the gradient to those parameters (the others are held fixed; default all).
    ``chunk_images`` caps the synthetic images per vmap call (:data:`VMAP_CHUNK_IMAGES`; None: one
    call). :func:`synset_cluster_gradients_looped` is the slow reference: one autograd pass per
    cluster.
    """
    ipc = len(syn_images) // num_clusters
    imgs = syn_images.reshape(num_clusters, ipc, *syn_images.shape[1:])
    labs = syn_labels.reshape(num_clusters, ipc)
    names = list(params) if names is None else list(names)
    wrt = {k: params[k].detach() for k in names}
    fixed = {k: v.detach() for k, v in params.items() if k not in wrt}
    chunk = None if chunk_images is None else max(1, chunk_images // max(1, ipc))
    chunk = None if chunk is not None and chunk >= num_clusters else chunk

    def loss(p, x, y, z):
        return synset_loss(model, {**fixed, **p}, x, y, z)

    if label_logits is None:
        return vmap(grad(lambda p, x, y: loss(p, x, y, None)), in_dims=(None, 0, 0),
                    chunk_size=chunk)(wrt, imgs, labs)
    logit_rows = label_logits.reshape(num_clusters, ipc, -1)
    return vmap(grad(loss), in_dims=(None, 0, 0, 0), chunk_size=chunk)(wrt, imgs, labs, logit_rows)


def synset_cluster_gradients_looped(model: nn.Module, params: Params, syn_images: torch.Tensor,
                                    syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                                    num_clusters: int, names: Sequence[str] | None = None
                                    ) -> list[dict[str, torch.Tensor]]:
    r"""The slow reference of :func:`synset_cluster_gradients`: one
    ``torch.autograd.grad(..., create_graph=True)`` per cluster, one after another. Returns the K
    gradient dicts as a list (each differentiable with respect to the images and soft labels)."""
    ipc = len(syn_images) // num_clusters
    names = list(params) if names is None else list(names)
    leaves = {k: v.detach().requires_grad_(k in names) for k, v in params.items()}
    out = []
    for k in range(num_clusters):
        rows = slice(k * ipc, (k + 1) * ipc)
        logits = None if label_logits is None else label_logits[rows]
        value = synset_loss(model, leaves, syn_images[rows], syn_labels[rows], logits)
        grads = torch.autograd.grad(value, [leaves[n] for n in names], create_graph=True)
        out.append(dict(zip(names, grads)))
    return out


# --------------------------------------------------------------------------------------------
# Checkpoint pairing
# --------------------------------------------------------------------------------------------
def checkpoint_pairs(epochs: int, method: str, pairing: str, step_length: int) -> list[tuple[int, int]]:
    r"""Every admissible (real checkpoint t, synset checkpoint) pair.

    - reverse, ``eq6``: :math:`(t, \tau - t)` for :math:`0 \le t < \tau` (Eq. 5-6);
    - reverse, ``alg1``: :math:`(t, t + s)` for :math:`t + s < \tau` (Algorithm 1 as printed);
    - match: :math:`(t, t)` for :math:`0 \le t < \tau` (plain gradient matching).
    """
    if method == "match":
        return [(t, t) for t in range(epochs)]
    if method != "reverse":
        raise ValueError(f"unknown distillation method {method!r}; choose 'reverse' or 'match'")
    if pairing == "eq6":
        return [(t, epochs - t) for t in range(epochs)]
    if pairing == "alg1":
        pairs = [(t, t + step_length) for t in range(epochs) if t + step_length < epochs]
        if not pairs:
            raise ValueError(f"Algorithm 1 needs t + s < tau: step length {step_length} leaves no pair "
                             f"within {epochs} epochs; lower distill.step_length or train longer")
        return pairs
    raise ValueError(f"unknown checkpoint pairing {pairing!r}; choose 'eq6' or 'alg1'")


# --------------------------------------------------------------------------------------------
# The objective and the distillation loop
# --------------------------------------------------------------------------------------------
def matching_objective(model: nn.Module, real_params: Params, syn_params: Params,
                       real_grads: dict[str, torch.Tensor], syn_images: torch.Tensor,
                       syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                       num_clusters: int, distance: str, reverse: bool,
                       vectorised: bool = True, chunk_images: int | None = VMAP_CHUNK_IMAGES) -> torch.Tensor:
    r"""One term of Eq. 6 summed over clusters:

    .. math:: \sum_\kappa \mathrm{Dist}\big(\nabla\mathcal L(\theta', \mathcal S_\kappa),\
              \mp\nabla\mathcal L(\theta_t, \mathcal D_\kappa)\big)

    with the minus sign for reverse matching (DDM) and the plus sign for plain matching.
    ``real_grads`` are the detached cluster gradients at ``real_params`` (theta_t).

    ``vectorised=True`` (the default) takes the K synset gradients in one torch.func pass and the
    K distances with ``vmap``; ``False`` is the slow reference kept beside it: a Python loop of K
    small double-backward graphs (:func:`synset_cluster_gradients_looped`), the same objective to
    float32 rounding (tested; ``benchmarks/bench_distill.py`` times the two). ``chunk_images``:
    see :func:`synset_cluster_gradients`.
    """
    del real_params  # the real gradients were taken there; kept for a readable call site
    dist = get_distance(distance)
    names = compared_parameters(distance, syn_params)
    sign = -1.0 if reverse else 1.0
    if not vectorised:
        per_cluster = synset_cluster_gradients_looped(model, syn_params, syn_images, syn_labels, label_logits,
                                                      num_clusters, names)
        total = torch.zeros((), dtype=syn_images.dtype, device=syn_images.device)
        for k, syn_grads in enumerate(per_cluster):
            total = total + dist(syn_grads, {n: sign * real_grads[n][k] for n in names})
        return total
    syn_grads = synset_cluster_gradients(model, syn_params, syn_images, syn_labels, label_logits, num_clusters,
                                         names, chunk_images)
    targets = {k: sign * real_grads[k] for k in names}
    return vmap(dist)(syn_grads, targets).sum()


@dataclass
class Synset:
    """The distilled synthetic set: ``ipc`` images for each of the K clusters."""

    images: torch.Tensor              # (K*ipc, C, H, W), normalised like the training images
    labels: torch.Tensor              # (K*ipc,) int64 hard labels (the cluster's class)
    cluster: torch.Tensor             # (K*ipc,) int64 cluster of every synthetic image
    label_logits: torch.Tensor | None  # (K*ipc, L) learnable soft labels (our extension) or None
    initial_images: torch.Tensor      # (K*ipc, C, H, W) the real images it started from
    initial_sources: torch.Tensor     # (K*ipc,) training indices of those real images
    loss_history: list[float] = field(default_factory=list)
    method: str = "reverse"
    pairing: str = "alg1"
    final_layer_cosines: dict[str, float] = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        return len(self.images) // (int(self.cluster.max()) + 1)

    def targets(self) -> torch.Tensor:
        """Soft targets (K*ipc, L) if learnt, else None-equivalent hard labels."""
        return self.label_logits if self.label_logits is not None else self.labels


def initial_synset(images: torch.Tensor, clustering: Clustering, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random real images of every cluster (ipc each, seeded): the synset's starting point."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        if len(members) < ipc:
            raise ValueError(f"cluster {k} has {len(members)} images, fewer than ipc={ipc}; lower distill.ipc")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    sources = torch.cat(chosen)
    return images[sources].clone(), sources


def distill_synset(model: nn.Module, trajectory: Trajectory, images: torch.Tensor, labels: torch.Tensor,
                   clustering: Clustering, num_classes: int, config: DistillConfig,
                   checkpoint_path=None, progress: bool = True, stop_after: int | None = None,
                   device: str = "cpu") -> Synset:
    """Algorithm 1 (offline stage): distil one synthetic set per cluster.

    ``checkpoint_path`` makes the run resumable: the state is saved every
    ``config.checkpoint_every`` steps and picked up again by a later call with the same
    configuration (the file I/O is the store's :func:`~ddm.store.save_checkpoint` and
    :func:`~ddm.store.load_checkpoint`). ``stop_after`` ends the loop early (used to test resumption).
    """
    reverse = config.method == "reverse"
    pairs = checkpoint_pairs(trajectory.epochs, config.method, config.pairing, config.step_length)
    K = clustering.num_clusters
    images, labels = images.to(device), labels.to(device)
    init_images, sources = initial_synset(images.cpu(), clustering, config.ipc, config.seed)
    syn = init_images.clone().to(device).requires_grad_(True)
    syn_labels = clustering.cluster_class.repeat_interleave(config.ipc).to(device)
    cluster_of = torch.arange(K).repeat_interleave(config.ipc)
    variables = [syn]
    label_logits = None
    if config.soft_labels:
        # Start from a confident one-hot so step 0 equals the hard-label objective.
        label_logits = (F.one_hot(syn_labels, num_classes).float() * 5.0).requires_grad_(True)
    optimiser = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum_img)
    label_optimiser = (torch.optim.SGD([label_logits], lr=config.lr_label, momentum=0.5)
                       if label_logits is not None else None)
    generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint_path, "distillation")   # None when there is none
    if state is not None:
        with torch.no_grad():
            syn.copy_(state["syn"])
            if label_logits is not None:
                label_logits.copy_(state["label_logits"])
        optimiser.load_state_dict(state["optimiser"])
        if label_optimiser is not None:
            label_optimiser.load_state_dict(state["label_optimiser"])
        generator.set_state(state["generator"])
        history, start = state["history"], state["step"]
        log.info("resuming distillation at step %d from %s", start, checkpoint_path)

    checkpoints = [{k: v.to(device) for k, v in c.items()} for c in trajectory.checkpoints]
    cache: dict[int, dict[str, torch.Tensor]] = {}
    cacheable = config.real_batch == 0

    def real_grads_at(t: int) -> dict[str, torch.Tensor]:
        if cacheable and t in cache:
            return cache[t]
        g = cluster_gradients(model, checkpoints[t], images, labels, clustering, config.real_batch, generator)
        if cacheable:
            cache[t] = g
        return g

    end = config.steps if stop_after is None else min(config.steps, stop_after)
    for step in tqdm(range(start, end), desc=f"distil ({config.method}/{config.pairing})",
                     disable=not progress, initial=start, total=config.steps):
        t_real, t_syn = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        objective = matching_objective(model, checkpoints[t_real], checkpoints[t_syn], real_grads_at(t_real),
                                       syn, syn_labels, label_logits, K, config.distance, reverse)
        optimiser.zero_grad(set_to_none=True)
        if label_optimiser is not None:
            label_optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        if label_optimiser is not None:
            label_optimiser.step()
        history.append(float(objective.detach()) / K)
        done = step + 1
        if checkpoint_path is not None and (done % config.checkpoint_every == 0 or done == end):
            save_checkpoint({"syn": syn.detach().cpu(), "step": done, "history": history,
                             "label_logits": None if label_logits is None else label_logits.detach().cpu(),
                             "optimiser": optimiser.state_dict(),
                             "label_optimiser": None if label_optimiser is None else label_optimiser.state_dict(),
                             "generator": generator.get_state()}, checkpoint_path)
    cosines = mean_layer_cosines(model, trajectory, images, labels, clustering, syn.detach(), syn_labels,
                                 None if label_logits is None else label_logits.detach(), pairs, reverse)
    return Synset(images=syn.detach().cpu(), labels=syn_labels.cpu(), cluster=cluster_of,
                  label_logits=None if label_logits is None else label_logits.detach().cpu(),
                  initial_images=init_images, initial_sources=sources, loss_history=history,
                  method=config.method, pairing=config.pairing, final_layer_cosines=cosines)


def mean_layer_cosines(model: nn.Module, trajectory: Trajectory, images: torch.Tensor, labels: torch.Tensor,
                       clustering: Clustering, syn: torch.Tensor, syn_labels: torch.Tensor,
                       label_logits: torch.Tensor | None, pairs: list[tuple[int, int]],
                       reverse: bool, max_pairs: int = 4) -> dict[str, float]:
    """Per layer, the cosine between the synset gradient and its target (the reversed real
    gradient for DDM), averaged over clusters and a few checkpoint pairs. 1 = perfect match."""
    K = clustering.num_clusters
    chosen = pairs[:: max(1, len(pairs) // max_pairs)][:max_pairs]
    sums: dict[str, list[float]] = {}
    for t_real, t_syn in chosen:
        real = cluster_gradients(model, trajectory.checkpoints[t_real], images.cpu(), labels.cpu(), clustering)
        synth = synset_cluster_gradients(model, trajectory.checkpoints[t_syn], syn.cpu(), syn_labels.cpu(),
                                         None if label_logits is None else label_logits.cpu(), K)
        sign = -1.0 if reverse else 1.0
        for k in range(K):
            cos = layer_cosines({n: v[k] for n, v in synth.items()}, {n: sign * v[k] for n, v in real.items()})
            for name, value in cos.items():
                sums.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in sums.items()}
