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


def per_cluster_error(frame: pd.DataFrame, provenance: str, ddm: str, unchanged: str):
    """Fig. 7 and its references, from ``ddm.report.unlearning_per_cluster``'s long table.

    Left, the paper's view: per cluster, the distance to the exact unlearned model of DDM's model
    against that of the unchanged target (below the diagonal: DDM got closer). Right, every
    method's per-cluster distances on one log axis, so DDM sits beside doing nothing, random
    choice, a real-data baseline and the retraining noise floor."""
    wide = frame.pivot(index="cluster", columns="method", values="distance to exact")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1, 1.45]})
    left.scatter(wide[unchanged], wide[ddm], s=14)
    # Log axes: the errors often differ by orders of magnitude.
    values = frame["distance to exact"].to_numpy()
    positive = values[values > 0]
    low, high = (float(positive.min()) / 2, float(positive.max()) * 2) if len(positive) else (1e-6, 1.0)
    left.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="equal error")
    left.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
             xlabel="target unchanged vs exact (log)", ylabel="DDM fine-tune vs exact (log)",
             title="Per cluster (Fig. 7)")
    left.legend(fontsize=8, loc="upper left")
    order = list(frame["method"].unique())
    sns.boxplot(data=frame, x="distance to exact", y="method", order=order, color="0.85",
                showfliers=False, ax=right)
    sns.stripplot(data=frame, x="distance to exact", y="method", order=order, size=2.5, alpha=0.6,
                  ax=right)
    right.set(xscale="log", xlim=(low, high), ylabel="",
              xlabel="mean ||softmax difference||^2 to the exact unlearned model (log)",
              title="Every method, one point per cluster")
    right.tick_params(axis="y", labelsize=8)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def harmful_removal(frame: pd.DataFrame, provenance: str, paper: dict[str, dict[float, float]] | None = None):
    """Table 3 as a figure: held-out test accuracy after deleting the top x% of the training set
    (harmful first) and retraining, one line per ranking. Random orders are drawn as their mean
    with a band from the worst to the best seed; the grey band spans the target's accuracy and
    the same training under another data order (the noise floor). The paper's MNIST rows, when
    given, are drawn dotted."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    base = frame[frame["fraction (%)"] == 0]
    data = frame[frame["fraction (%)"] > 0].copy()
    random_rows = data["method"].str.startswith("random (seed")
    data.loc[random_rows, "method"] = "random (mean; band: seeds' range)"
    helpful = data["method"].str.contains("most helpful first")
    sns.lineplot(data=data[~helpful], x="fraction (%)", y="test accuracy (%)", hue="method", marker="o",
                 errorbar=("pi", 100), ax=ax)
    sns.lineplot(data=data[helpful], x="fraction (%)", y="test accuracy (%)", hue="method", marker="v",
                 palette=["0.35", "0.6"], linestyle="--", ax=ax)
    accuracies = base["test accuracy (%)"].to_numpy()
    ax.axhspan(accuracies.min(), accuracies.max(), color="0.8", alpha=0.6, lw=0,
               label="target / another data order (noise floor)")
    for name, row in (paper or {}).items():
        fractions = sorted(row)
        ax.plot(fractions, [row[f] for f in fractions], ls=":", marker=".", lw=1.2, label=f"paper: {name}")
    ax.set_xscale("log")
    ticks = sorted(data["fraction (%)"].unique())
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.set_xlabel("share of the training set removed (harmful first), then retrained")
    ax.set_ylabel("held-out test accuracy (%)")
    ax.set_title("Removing harmful data (Table 3)")
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _footer(fig, provenance)
    fig.tight_layout()
    return fig
