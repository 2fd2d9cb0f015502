"""Reference attributions that make DDM's numbers readable.

Each returns an (N test points, K clusters) matrix of *predicted effects*: how much deleting
cluster k would lower the true-class margin of test point n (larger = more influential in
support of the prediction). The paper's own "Random Select" is the first; the others are cheap
simple baselines any reader would try first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddm.clustering import Clustering, cluster_centroids
from ddm.training import Params, Trajectory


def random_effects(num_test: int, num_clusters: int, seed: int) -> np.ndarray:
    """'Random Select' (Table 1): effects drawn uniformly at random."""
    return np.random.default_rng(seed).random((num_test, num_clusters))


def nearest_centroid_effects(train_features: np.ndarray, test_features: np.ndarray,
                             clustering: Clustering, test_labels: torch.Tensor) -> np.ndarray:
    """Clusters of the test point's own class close to it in feature space are taken to support
    its prediction: effect = -distance to the cluster centroid for same-class clusters, and a
    large negative constant for clusters of other classes."""
    centroids = cluster_centroids(train_features, clustering)                       # (K, F)
    distance = np.linalg.norm(test_features[:, None, :] - centroids[None], axis=-1)  # (N, K)
    same_class = clustering.cluster_class.numpy()[None, :] == test_labels.numpy()[:, None]
    return np.where(same_class, -distance, -distance - 1e6)


def tracin_effects(model: nn.Module, trajectory: Trajectory, train_images: torch.Tensor,
                   train_labels: torch.Tensor, clustering: Clustering, test_images: torch.Tensor,
                   test_labels: torch.Tensor, lr: float) -> np.ndarray:
    r"""TracIn-style sum over the saved checkpoints (Pruthi et al. 2020), at cluster level:

    .. math:: \mathrm{effect}_{n,k} = \eta \sum_{t<\tau} \sum_{i \in \mathcal D_k}
              \langle \nabla \ell(\theta_t, z_i), \nabla \ell(\theta_t, x_n) \rangle

    the first-order increase of the test loss when cluster k is left out of every epoch.
    """
    effects = torch.zeros(len(test_images), clustering.num_clusters)
    for params in trajectory.checkpoints[:-1]:
        cluster_grads = _flat_cluster_gradient_sums(model, params, train_images, train_labels, clustering)  # (K, P)
        test_grads = _flat_per_sample_gradients(model, params, test_images, test_labels)                   # (N, P)
        effects += lr * test_grads @ cluster_grads.T
    return effects.numpy()


def _flat_cluster_gradient_sums(model, params: Params, images, labels, clustering: Clustering) -> torch.Tensor:
    p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    rows = []
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        loss = F.cross_entropy(functional_call(model, p, (images[members],)), labels[members], reduction="sum")
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(p.values()))]))
    return torch.stack(rows)


def _flat_per_sample_gradients(model, params: Params, images, labels) -> torch.Tensor:
    p = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    rows = []
    for x, y in zip(images, labels):
        loss = F.cross_entropy(functional_call(model, p, (x[None],)), y[None])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(p.values()))]))
    return torch.stack(rows)


def real_ascent_params(model: nn.Module, params: Params, train_images: torch.Tensor, train_labels: torch.Tensor,
                       clustering: Clustering, steps: int, lr: float,
                       clusters: Iterable[int] | None = None) -> Iterator[Params]:
    """For each cluster in turn (``clusters``; None: all K), the parameters after T steps of
    gradient *ascent* on its real images: the thing the synset is meant to mimic with a single image."""
    from ddm.online import finetune  # local import keeps the module graph one-way for readers

    for k in (range(clustering.num_clusters) if clusters is None else clusters):
        members = clustering.members(int(k))
        yield finetune(model, params, train_images[members], train_labels[members], None, steps, -lr)


def real_ascent_effects(model: nn.Module, params: Params, train_images: torch.Tensor, train_labels: torch.Tensor,
                        clustering: Clustering, test_images: torch.Tensor, directions: torch.Tensor,
                        steps: int, lr: float) -> np.ndarray:
    """Gradient ascent on the real cluster (:func:`real_ascent_params`). Effect = drop of the margin."""
    with torch.no_grad():
        base = (functional_call(model, params, (test_images,)) * directions).sum(-1)
    effects = torch.zeros(len(test_images), clustering.num_clusters)
    ascents = real_ascent_params(model, params, train_images, train_labels, clustering, steps, lr)
    for k, ascended in enumerate(ascents):
        with torch.no_grad():
            after = (functional_call(model, ascended, (test_images,)) * directions).sum(-1)
        effects[:, k] = base - after
    return effects.numpy()
