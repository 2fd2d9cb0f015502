"""The book's figures, one function per figure. Every figure carries a footer naming the profile
and data set that made it, so a reader can never mistake a quick run for the paper's scale."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

sns.set_theme(style="whitegrid", context="notebook")


def _footer(fig, provenance: str) -> None:
    fig.text(0.99, 0.005, provenance, ha="right", va="bottom", fontsize=8, color="0.4")


def _show_image(ax, image: torch.Tensor) -> None:
    image = image.detach().cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def cluster_sizes(sizes_by_method: dict[str, np.ndarray], provenance: str):
    """Histogram of cluster sizes for each clustering method."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, sizes in sizes_by_method.items():
        sns.histplot(np.asarray(sizes), ax=ax, label=name, element="step", fill=False, bins=15)
    ax.set_xlabel("images in a cluster")
    ax.set_ylabel("clusters")
    ax.legend()
    ax.set_title("Cluster sizes")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def cluster_examples(images: torch.Tensor, assignment: torch.Tensor, clusters: list[int], per_cluster: int,
                     row_labels: list[str], provenance: str, title: str):
    """A grid: one row per cluster, ``per_cluster`` member images (already in [0, 1])."""
    fig, axes = plt.subplots(len(clusters), per_cluster, figsize=(per_cluster * 0.9, len(clusters) * 0.95),
                             squeeze=False)
    for r, k in enumerate(clusters):
        members = torch.nonzero(assignment == k).flatten()[:per_cluster]
        for c in range(per_cluster):
            ax = axes[r, c]
            if c < len(members):
                _show_image(ax, images[members[c]])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def loss_curves(histories: dict[str, list[float]], provenance: str, ylabel: str = "matching loss per cluster"):
    """Distillation objective over steps, one line per method (smoothed over 10 steps)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for name, history in histories.items():
        series = pd.Series(history).rolling(10, min_periods=1).mean()
        ax.plot(series.index, series.values, label=name)
    ax.set_xlabel("distillation step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title("Gradient-matching objective during distillation")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, torch.Tensor], provenance: str, title: str, max_images: int = 12):
    """One row of images per entry (already in [0, 1]), e.g. real initial images vs two synsets."""
    n = min(max_images, max(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.05), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            if c < len(images):
                _show_image(axes[r, c], images[c])
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def method_bars(table: pd.DataFrame, column: str, provenance: str, reference_rows: tuple[str, ...] = ()):
    """Horizontal bars of one column of a comparison table; reference rows drawn in grey."""
    data = table[column].astype(float)
    colours = ["0.6" if name in reference_rows or name.startswith(("Random", "Noise", "Exact")) else "C0"
               for name in data.index]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(data) + 1.2))
    ax.barh(data.index, data.values, color=colours)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(column)
    ax.set_title(f"{column}: DDM beside its references")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def effect_scatter(predicted: dict[str, np.ndarray], exact: np.ndarray, provenance: str):
    """Predicted vs exact margin drops for every (test point, cluster), one panel per method."""
    fig, axes = plt.subplots(1, len(predicted), figsize=(3.3 * len(predicted), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], predicted.items()):
        ax.scatter(exact.ravel(), np.asarray(values).ravel(), s=6, alpha=0.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("exact margin drop")
    axes[0, 0].set_ylabel("predicted")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def attribution_heatmap(matrix: np.ndarray, row_labels: list[str], col_labels: list[str], provenance: str,
                        title: str, cbar_label: str = "attribution"):
    """A heat map of attribution weights, e.g. classes x clusters for one test image or a batch."""
    fig, ax = plt.subplots(figsize=(max(4.5, 0.45 * len(col_labels) + 2), max(3, 0.35 * len(row_labels) + 1.5)))
    limit = float(np.abs(matrix).max()) or 1.0
    sns.heatmap(matrix, ax=ax, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit,
                xticklabels=col_labels, yticklabels=row_labels, cbar_kws={"label": cbar_label})
    ax.set_title(title)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def error_vs_deleted(frame: pd.DataFrame, provenance: str):
    """Output distance to the exact unlearned model against the number of deleted clusters,
    for DDM and for leaving the target unchanged (Supp. Eq. 12-13, Fig. 7)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    sns.lineplot(data=frame, x="deleted clusters", y="distance to exact", hue="model", marker="o", ax=ax)
    ax.set_xscale("log")
    ax.set_ylabel("mean ||softmax difference||^2")
    ax.set_title("Distance to exact unlearning vs clusters deleted")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def per_cluster_error(ddm_error: np.ndarray, unchanged_error: np.ndarray, provenance: str):
    """Fig. 7: per cluster, the distance of DDM's model and of the unchanged target to the exact
    unlearned model (points below the diagonal: DDM got closer)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.scatter(unchanged_error, ddm_error, s=14)
    # Log axes: the two errors often differ by orders of magnitude.
    positive = np.concatenate([np.asarray(unchanged_error), np.asarray(ddm_error)])
    positive = positive[positive > 0]
    low, high = (float(positive.min()) / 2, float(positive.max()) * 2) if len(positive) else (1e-6, 1.0)
    ax.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="equal error")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("target unchanged vs exact (log)")
    ax.set_ylabel("DDM fine-tune vs exact (log)")
    ax.set_title("Empirical error per cluster (Fig. 7)")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig
