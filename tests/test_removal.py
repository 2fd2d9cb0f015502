"""ddm.removal: Supp. Eq. 14 against hand-computed cases, and the cluster selection of Table 3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddm.removal import (clusters_for_fraction, global_objective, harmful_first, removal_plan, removed_shares,
                          validation_split)


def test_validation_split_is_a_seeded_disjoint_partition() -> None:
    val, held = validation_split(11, seed=3)
    assert len(val) == 6 and len(held) == 5  # round(5.5) = 6
    assert sorted(torch.cat([val, held]).tolist()) == list(range(11))
    assert torch.equal(val, val.sort().values)
    again, _ = validation_split(11, seed=3)
    other, _ = validation_split(11, seed=4)
    assert torch.equal(val, again) and not torch.equal(val, other)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(10, seed=0, fraction=1.0)
    with pytest.raises(ValueError, match="cannot be split"):
        validation_split(1, seed=0)


def test_global_objective_sums_cross_entropy_over_the_validation_set() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]],     # cluster 0 removed: two validation images
                           [[0.0, 0.0], [3.0, -1.0]]])   # cluster 1 removed
    labels = torch.tensor([0, 1])

    def ce(z, y):
        return -(z[y] - math.log(sum(math.exp(v) for v in z)))

    expected = [ce([2.0, 0.0], 0) + ce([0.0, 1.0], 1), ce([0.0, 0.0], 0) + ce([3.0, -1.0], 1)]
    np.testing.assert_allclose(global_objective(logits, labels).numpy(), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="expected logits"):
        global_objective(logits[0], labels)


def test_harmful_first_puts_the_lowest_loss_after_removal_first_and_is_stable() -> None:
    assert harmful_first(torch.tensor([3.0, 1.0, 2.0, 1.0])).tolist() == [1, 3, 2, 0]


def test_clusters_for_fraction_takes_the_shortest_covering_prefix() -> None:
    sizes = torch.tensor([5, 1, 3, 1])           # 10 images
    order = np.array([2, 0, 1, 3])
    assert clusters_for_fraction(order, sizes, 0.0) == ()
    assert clusters_for_fraction(order, sizes, 0.3) == (2,)         # 3 images cover 30%
    assert clusters_for_fraction(order, sizes, 0.35) == (0, 2)      # 8 images: the next cluster is whole
    assert clusters_for_fraction(order, sizes, 0.01) == (2,)        # at least one cluster
    assert clusters_for_fraction(order, sizes, 0.85) == (0, 1, 2)
    with pytest.raises(ValueError, match="fraction"):
        clusters_for_fraction(order, sizes, 1.0)


def test_removed_shares_counts_images_and_the_emptiest_class() -> None:
    sizes = torch.tensor([5, 1, 3, 1])           # 10 images; clusters 0, 1 of class 0 and 2, 3 of class 1
    cluster_class = torch.tensor([0, 0, 1, 1])
    assert removed_shares((), sizes, cluster_class, 2) == (0.0, 0.0)
    share, most = removed_shares((2,), sizes, cluster_class, 2)
    assert share == pytest.approx(0.3) and most == pytest.approx(0.75)      # 3 of class 1's 4 images
    share, most = removed_shares((0, 3), sizes, cluster_class, 2)
    assert share == pytest.approx(0.6) and most == pytest.approx(5 / 6)     # 5 of class 0's 6 images
    share, most = removed_shares((1, 2, 3), sizes, cluster_class, 3)        # a class with no cluster is skipped
    assert share == pytest.approx(0.5) and most == pytest.approx(1.0)


def test_removal_plan_lists_every_ranking_seed_and_share() -> None:
    sizes = np.array([10, 30, 20, 40])                     # 100 images in four clusters
    orders = {"ddm": np.array([3, 0, 1, 2]), "exact": np.array([1, 2, 0, 3])}
    random_orders = {0: np.array([0, 1, 2, 3]), 7: np.array([2, 3, 1, 0])}
    plan = removal_plan(["ddm", "random", "exact"], orders, random_orders, sizes, (10, 50))
    assert plan == {
        ("ddm", None, 10): (3,), ("ddm", None, 50): (0, 3),            # 40 >= 10; 40 + 10 >= 50
        ("random", 0, 10): (0,), ("random", 0, 50): (0, 1, 2),         # 10; 10 + 30 + 20 = 60 >= 50
        ("random", 7, 10): (2,), ("random", 7, 50): (2, 3),            # 20; 20 + 40
        ("exact", None, 10): (1,), ("exact", None, 50): (1, 2),        # 30; 30 + 20 = 50
    }
