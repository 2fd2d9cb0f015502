"""Clusters of the training set (ddm.clustering, Supp. 6.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddm.clustering import (ClusteringError, class_groups, cluster_centroids, kmeans_clusters, pixel_features,
                            sequence_clusters)

from fixtures_core import digits, single_thread  # noqa: F401


def test_kmeans_gives_L_times_C_clusters_each_inside_one_class() -> None:
    data = digits("train", 10)
    C = 3
    clustering = kmeans_clusters(pixel_features(data.images), data.labels, C, seed=0)
    assert clustering.num_clusters == 10 * C and clustering.method == "kmeans-pixels"
    assert int(clustering.assignment.min()) == 0 and int(clustering.assignment.max()) == 10 * C - 1
    assert torch.equal(clustering.cluster_class, torch.arange(10).repeat_interleave(C))
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        assert len(members) >= 1
        assert set(data.labels[members].tolist()) == {int(clustering.cluster_class[k])}
    assert int(clustering.sizes().sum()) == len(data)


def test_kmeans_deterministic_with_seed_and_ids_ordered_by_first_member() -> None:
    data = digits("train", 15)
    features = pixel_features(data.images)
    a = kmeans_clusters(features, data.labels, 3, seed=0)
    b = kmeans_clusters(features, data.labels, 3, seed=0)
    assert torch.equal(a.assignment, b.assignment)
    # Inside every class, cluster ids increase with the index of their first member.
    for c in range(10):
        firsts = [int(a.members(k).min()) for k in range(3 * c, 3 * c + 3)]
        assert firsts == sorted(firsts)


def test_kmeans_groups_similar_images() -> None:
    """Two well-separated blobs inside one class end up in different clusters."""
    features = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 10.0)]) + np.arange(10)[:, None] * 0.01
    labels = torch.zeros(10, dtype=torch.long)
    clustering = kmeans_clusters(features, labels, 2, seed=0)
    assert clustering.assignment.tolist() == [0] * 5 + [1] * 5


def test_too_many_clusters_per_class_names_the_class_and_the_fix() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    features = np.random.default_rng(0).random((8, 4))
    with pytest.raises(ClusteringError, match=r"class 1 has 2 training images but 3 clusters.*at most 2"):
        kmeans_clusters(features, labels, 3, seed=0)
    with pytest.raises(ClusteringError, match="class 1"):
        sequence_clusters(labels, 3)
    with pytest.raises(ClusteringError, match=">= 1"):
        sequence_clusters(labels, 0)


def test_sequence_clusters_split_each_class_in_order() -> None:
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 1])
    clustering = sequence_clusters(labels, 2)
    # Class 0 at positions 1,3,5 -> chunks [1,3],[5]; class 1 at 0,2,4,6,7 -> [0,2,4],[6,7].
    assert clustering.assignment.tolist() == [2, 0, 2, 0, 2, 1, 3, 3]
    assert clustering.cluster_class.tolist() == [0, 0, 1, 1] and clustering.method == "sequence"


def test_class_groups_one_group_per_class() -> None:
    data = digits("train", 5)
    groups = class_groups(data.labels)
    assert groups.num_clusters == 10
    assert torch.equal(groups.assignment, data.labels)
    assert torch.equal(groups.cluster_class, torch.arange(10))


def test_removal_mask_members_sizes_and_centroids() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    clustering = sequence_clusters(labels, 2)  # assignment [0, 0, 1, 2, 2, 3]
    assert clustering.sizes().tolist() == [2, 1, 2, 1]
    assert clustering.members(2).tolist() == [3, 4]
    assert clustering.removal_mask([0, 3]).tolist() == [True, True, False, False, False, True]
    assert clustering.removal_mask(torch.tensor([1])).tolist() == [False, False, True, False, False, False]
    features = np.arange(12, dtype=float).reshape(6, 2)
    centroids = cluster_centroids(features, clustering)
    assert centroids.tolist() == [[1.0, 2.0], [4.0, 5.0], [7.0, 8.0], [10.0, 11.0]]
