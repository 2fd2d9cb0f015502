"""Evaluation metrics (Sec. 4.1, Eq. 10) and the correlation scores the paper never reported.

All outputs y are softmax probabilities of the network, as Eq. 10 compares them with a squared
distance and a cross-entropy; rankings and correlations use the true-class margin (logits).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats


def dist1(unlearned_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    r"""Eq. 10, Dist1 = :math:`\lVert y^u_t - \tilde y_t \rVert_2^2` per test point (the paper
    reports it x100): how far exact unlearning of the located cluster moves the output."""
    return ((F.softmax(unlearned_logits, -1) - F.softmax(target_logits, -1)) ** 2).sum(-1)


def dist2(unlearned_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Eq. 10, Dist2 = :math:`\mathrm{CE}(y^u_t, y_t)` per test point: the unlearned model's loss
    on the true label (larger = the located cluster mattered more for getting it right)."""
    return F.cross_entropy(unlearned_logits, labels, reduction="none")


def dist3(unlearned_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    r"""Eq. 10, Dist3 = :math:`1 / (1 + \lVert y^u_t - \tilde y_t \rVert_2^2)`: large when the
    located cluster is one whose removal changes nothing (the least influential one)."""
    return 1.0 / (1.0 + dist1(unlearned_logits, target_logits))


def output_distance(a_logits: torch.Tensor, b_logits: torch.Tensor) -> torch.Tensor:
    r"""Mean over test points of :math:`\lVert \mathrm{softmax}(a) - \mathrm{softmax}(b) \rVert_2^2`:
    how far one model's outputs are from another's (Fig. 7's "empirical error" of unlearning).

    ``a_logits`` and ``b_logits`` broadcast to (..., N, L); the result is (...,): Dist1 of Eq. 10
    averaged over the N test points of the second-to-last axis."""
    return dist1(a_logits, b_logits).mean(-1)


def margins(logits: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """(…, N) true-class margins z_y - z_r along the fixed directions of the target model."""
    return (logits * directions).sum(-1)


def rowwise_spearman(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Spearman correlation of every row pair (N, K) x (N, K) -> (N,); NaN for a constant row."""
    out = np.full(len(predicted), np.nan)
    for i, (p, a) in enumerate(zip(np.asarray(predicted), np.asarray(actual))):
        if np.ptp(p) > 0 and np.ptp(a) > 0:
            out[i] = stats.spearmanr(p, a).statistic
    return out


def top1_agreement(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Fraction of test points whose highest predicted cluster is also the true highest."""
    return float(np.mean(np.argmax(predicted, 1) == np.argmax(actual, 1)))


def linear_datamodeling_score(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Cluster-level LDS: for every test point, the Spearman correlation across random cluster
    masks of the predicted and the exactly retrained outputs, averaged over test points.
    ``predicted`` and ``actual`` are (M masks, N test points)."""
    return float(np.nanmean(rowwise_spearman(np.asarray(predicted).T, np.asarray(actual).T)))


def bootstrap_ci(values: np.ndarray, seed: int = 0, resamples: int = 2000, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy), NaNs dropped."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (float("nan"), float("nan"))
    result = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=resamples,
                             random_state=np.random.default_rng(seed), method="percentile")
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
