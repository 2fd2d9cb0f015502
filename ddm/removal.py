"""Removing harmful training data (Sec. 4.3, Table 3; Supp. Eq. 14).

The paper ranks training clusters by a *global* objective: the loss over a validation set of the
model with the cluster unlearned. A cluster whose removal lowers that loss is harmful; deleting
the most harmful x% of the training set and retraining should then raise test accuracy (Table 3:
95.7% -> 96.2% on MNIST after removing 1%). This module holds the ranking and the selection.

Where the paper is silent we choose, and say so in the chapter: the validation set is a seeded
half of the test split (the accuracy is measured on the other half), and a fraction of the data
is removed as whole clusters, the shortest prefix of the ranking that covers it.

The retraining and the accuracy are measured by the chapter, ``ddm.chapters.harmful_data``.
"""

from __future__ import annotations

import numpy as np
import torch

from ddm.metrics import dist2


def validation_split(num_test: int, seed: int, fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, sorted indices into the test split: (validation set V, held-out evaluation set)."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), not {fraction}")
    if num_test < 2:
        raise ValueError(f"a test split of {num_test} image(s) cannot be split into validation and evaluation")
    order = torch.randperm(num_test, generator=torch.Generator().manual_seed(seed))
    cut = min(max(int(round(num_test * fraction)), 1), num_test - 1)
    return order[:cut].sort().values, order[cut:].sort().values


def global_objective(unlearned_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Supp. Eq. 14, :math:`\sum_{x \in V} \mathrm{Dist2}(x)`, for each unlearned model.

    ``unlearned_logits`` (K, V, L): the model with cluster k removed, on the validation images;
    ``labels`` (V,). Returns (K,): the validation loss after removing each cluster (lower: the
    cluster was more harmful)."""
    if unlearned_logits.dim() != 3 or unlearned_logits.shape[1] != len(labels):
        raise ValueError(f"expected logits (K, V, L) with V = {len(labels)}, got {tuple(unlearned_logits.shape)}")
    K, V, L = unlearned_logits.shape
    losses = dist2(unlearned_logits.reshape(K * V, L), labels.repeat(K))
    return losses.reshape(K, V).sum(1)


def harmful_first(loss_after_removal: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cluster ids from the most harmful (lowest validation loss once removed) to the most helpful.
    Ties keep cluster order (a stable sort), so the ranking is deterministic."""
    return np.argsort(np.asarray(loss_after_removal, dtype=float), kind="stable")


def clusters_for_fraction(order: np.ndarray, sizes: torch.Tensor | np.ndarray, fraction: float) -> tuple[int, ...]:
    """The shortest prefix of ``order`` whose clusters hold at least ``fraction`` of the images
    (none for 0). Sorted, so equal removal sets share one cached retrain."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction to remove must be in [0, 1), not {fraction}")
    sizes = np.asarray(sizes)
    if fraction == 0:
        return ()
    covered = np.cumsum(sizes[np.asarray(order)])
    count = int(np.searchsorted(covered, fraction * sizes.sum() - 1e-9)) + 1
    return tuple(sorted(int(k) for k in np.asarray(order)[:count]))


def removed_shares(removed: tuple[int, ...], sizes: torch.Tensor | np.ndarray,
                   cluster_class: torch.Tensor | np.ndarray, num_classes: int) -> tuple[float, float]:
    """What removing the clusters ``removed`` really takes away: (share of all training images,
    largest share of any one class's images), both in [0, 1].

    ``sizes`` (K,) images per cluster, ``cluster_class`` (K,) each cluster's class. The second
    number says why accuracy can collapse: a ranking may empty one class of most of its images."""
    sizes = np.asarray(sizes, dtype=float)
    cluster_class = np.asarray(cluster_class, dtype=int)
    index = np.asarray(removed, dtype=int)
    per_class = np.bincount(cluster_class, weights=sizes, minlength=num_classes)       # (L,)
    gone = np.bincount(cluster_class[index], weights=sizes[index], minlength=num_classes)  # (L,)
    class_share = gone / np.maximum(per_class, 1)                                        # (L,)
    return float(sizes[index].sum() / sizes.sum()), float(class_share.max(initial=0.0))


def removal_plan(keys, orders, random_orders, sizes: torch.Tensor | np.ndarray,
                 fractions) -> dict[tuple[str, int | None, int], tuple[int, ...]]:
    """The clusters each ranking removes at each share: ``(key, seed, x) -> cluster ids``, for every
    ranking of ``keys`` (``"random"``: one entry per seed of ``random_orders``, else ``orders[key]``
    with seed None) and every ``x`` of ``fractions`` (percent), by :func:`clusters_for_fraction`.
    Chapters 05, 13 and 14 retrain each distinct set once."""
    plan = []                                                     # (ranking key, seed, order)
    for key in keys:
        plan += ([("random", seed, order) for seed, order in random_orders.items()] if key == "random"
                 else [(key, None, orders[key])])
    return {(key, seed, x): clusters_for_fraction(order, sizes, x / 100)
            for key, seed, order in plan for x in fractions}
