"""Clusters of the training set (Supp. 6.1).

DDM attributes behaviour to *clusters* of training images rather than to single images: per
class, k-means splits the images into C clusters, K = L x C in all. The paper clusters features
of an unnamed pre-trained extractor; no weights can be downloaded here, so we offer pixel
features and the penultimate features of a network trained on the training set. The ablation
"DDM w/o cluster" splits each class by sequence number instead, and the hierarchical variant
(Supp. Eq. 11) uses one group per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans


class ClusteringError(ValueError):
    """Bad clustering request: e.g. more clusters than images in a class."""


@dataclass(frozen=True)
class Clustering:
    """A partition of the training set into K clusters, each inside one class."""

    assignment: torch.Tensor      # (N,) int64, cluster index of each training image
    cluster_class: torch.Tensor   # (K,) int64, the class every image of a cluster has
    method: str                   # "kmeans-pixels", "kmeans-learned", "sequence", "class"

    @property
    def num_clusters(self) -> int:
        return int(self.cluster_class.numel())

    def sizes(self) -> torch.Tensor:
        return torch.bincount(self.assignment, minlength=self.num_clusters)

    def members(self, cluster: int) -> torch.Tensor:
        return torch.nonzero(self.assignment == cluster).flatten()

    def removal_mask(self, clusters) -> torch.Tensor:
        """(N,) bool, True for the training images that belong to ``clusters``."""
        clusters = torch.as_tensor(list(clusters) if not torch.is_tensor(clusters) else clusters,
                                   dtype=torch.long)
        return torch.isin(self.assignment, clusters)


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """Flattened normalised pixels, (N, C*H*W)."""
    return images.reshape(len(images), -1).double().numpy()


def check_class_sizes(labels: torch.Tensor, clusters_per_class: int) -> list[int]:
    """The classes present; raises :class:`ClusteringError` when a class has fewer images than
    the ``clusters_per_class`` clusters asked of it (K larger than a class allows)."""
    classes = sorted(int(c) for c in torch.unique(labels))
    if clusters_per_class < 1:
        raise ClusteringError(f"clusters_per_class must be >= 1, got {clusters_per_class}")
    for c in classes:
        count = int((labels == c).sum())
        if count < clusters_per_class:
            raise ClusteringError(
                f"class {c} has {count} training images but {clusters_per_class} clusters per class "
                f"were asked for (K = L x C is larger than a class allows); lower clusters_per_class "
                f"to at most {count} or use more images per class")
    return classes


def kmeans_clusters(features: np.ndarray, labels: torch.Tensor, clusters_per_class: int,
                    seed: int, method: str = "kmeans-pixels") -> Clustering:
    """Per-class k-means (scikit-learn) into C clusters; cluster ids run class by class."""
    classes = check_class_sizes(labels, clusters_per_class)
    assignment = torch.full((len(labels),), -1, dtype=torch.long)
    cluster_class = []
    for offset, c in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten().numpy()
        km = KMeans(n_clusters=clusters_per_class, n_init=10, random_state=seed + c)
        local = km.fit_predict(features[idx])
        # Order clusters by their smallest member index so ids do not depend on k-means' labelling.
        order = np.argsort([idx[local == j].min() for j in range(clusters_per_class)])
        relabel = np.empty(clusters_per_class, dtype=np.int64)
        relabel[order] = np.arange(clusters_per_class)
        assignment[idx] = torch.as_tensor(relabel[local] + offset * clusters_per_class)
        cluster_class += [c] * clusters_per_class
    return Clustering(assignment, torch.tensor(cluster_class, dtype=torch.long), method)


def sequence_clusters(labels: torch.Tensor, clusters_per_class: int) -> Clustering:
    """'DDM w/o cluster': each class cut into C consecutive chunks by sequence number."""
    classes = check_class_sizes(labels, clusters_per_class)
    assignment = torch.full((len(labels),), -1, dtype=torch.long)
    cluster_class = []
    for offset, c in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten()
        chunks = torch.tensor_split(idx, clusters_per_class)
        for j, chunk in enumerate(chunks):
            assignment[chunk] = offset * clusters_per_class + j
        cluster_class += [c] * clusters_per_class
    return Clustering(assignment, torch.tensor(cluster_class, dtype=torch.long), "sequence")


def class_groups(labels: torch.Tensor) -> Clustering:
    """One group per class: the class level of hierarchical attribution (Supp. Eq. 11)."""
    classes = sorted(int(c) for c in torch.unique(labels))
    lookup = {c: i for i, c in enumerate(classes)}
    assignment = torch.tensor([lookup[int(c)] for c in labels], dtype=torch.long)
    return Clustering(assignment, torch.tensor(classes, dtype=torch.long), "class")


def cluster_centroids(features: np.ndarray, clustering: Clustering) -> np.ndarray:
    """(K, F) mean feature of every cluster (used by the nearest-centroid baseline)."""
    k = clustering.num_clusters
    sums = np.zeros((k, features.shape[1]))
    np.add.at(sums, clustering.assignment.numpy(), features)
    return sums / clustering.sizes().numpy()[:, None]
