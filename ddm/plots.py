"""The book's figures, one function per figure. Every figure carries a footer naming the profile
and data set that made it, so a reader can never mistake a quick run for the paper's scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    ax.set_ylabel("number of clusters of that size")
    ax.legend(title="grouping", loc="upper right", fontsize=8)
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


def loss_curves(histories: dict[str, list[float]], provenance: str,
                ylabel: str = "matching loss per cluster\n(mean of 10 steps)"):
    """Distillation objective over steps, one line per method (a moving mean over 10 steps)."""
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for name, history in histories.items():
        series = pd.Series(history).rolling(10, min_periods=1).mean()
        ax.plot(series.index, series.values, label=name)
    ax.set_xlabel("distillation step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="synset", title_fontsize=8)
    ax.set_title("Gradient-matching objective during distillation")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def image_rows(rows: dict[str, torch.Tensor], provenance: str, title: str, max_images: int = 12,
               column_labels: list[str] | None = None):
    """One row of images per entry (already in [0, 1]), e.g. real initial images vs two synsets;
    ``column_labels`` name the columns under the last row (e.g. the cluster of each column)."""
    n = min(max_images, max(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.05), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            if c < len(images):
                _show_image(axes[r, c], images[c])
            else:
                axes[r, c].axis("off")
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for c, text in enumerate((column_labels or [])[:n]):
        axes[-1, c].set_xlabel(text, fontsize=7)
    fig.suptitle(title)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def method_bars(values: pd.Series, provenance: str, xlabel: str, references: tuple[str, ...] = (),
                intervals: tuple[np.ndarray, np.ndarray] | None = None, floor: float | None = None,
                floor_label: str = "noise floor", title: str = "DDM beside its references"):
    """Horizontal bars, one per method (``values``: method label -> number), DDM's variants in
    colour and the ``references`` in grey, with optional (low, high) ``intervals`` as error bars
    and a dashed vertical line at ``floor`` (the noise floor)."""
    from matplotlib.patches import Patch

    data = values.astype(float)
    is_reference = np.array([name in references for name in data.index])
    colours = np.where(is_reference, "0.6", "C0")
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(data) + 2.2))
    positions = np.arange(len(data))
    error = None
    if intervals is not None:
        low, high = (np.asarray(v, dtype=float) for v in intervals)
        error = np.vstack([np.clip(data.values - low, 0, None), np.clip(high - data.values, 0, None)])
        error = np.nan_to_num(error)
    ax.barh(positions, data.values, color=colours, xerr=error, error_kw={"ecolor": "0.25", "lw": 1, "capsize": 2})
    ax.set_yticks(positions, list(data.index))
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    handles = [Patch(color="C0", label="DDM and its variants"), Patch(color="0.6", label="references")]
    if floor is not None and np.isfinite(floor):
        handles.append(ax.axvline(floor, color="C3", ls="--", lw=1.2, label=floor_label))
    return _finish_bars(fig, ax, handles, xlabel, title, provenance, -0.14)


def _finish_bars(fig, ax, handles: list, xlabel: str, title: str, provenance: str, legend_y: float):
    """The legend under a horizontal bar chart, its labels, title and footer."""
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, legend_y - 1.2 / fig.get_figheight() / 4),
              ncol=len(handles) if len(handles) < 3 else 2, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("method")
    ax.set_title(title)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def effect_scatter(predicted: dict[str, np.ndarray], exact: np.ndarray, provenance: str):
    """Predicted vs exact margin drops for every (test point, cluster), one panel per method."""
    fig, axes = plt.subplots(1, len(predicted), figsize=(3.6 * len(predicted), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], predicted.items()):
        ax.scatter(exact.ravel(), np.asarray(values).ravel(), s=6, alpha=0.5)
        ax.axhline(0, color="0.5", lw=0.6)
        ax.axvline(0, color="0.5", lw=0.6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("margin drop, exact retraining")
    axes[0, 0].set_ylabel("predicted margin drop")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def attribution_heatmap(matrix: np.ndarray, row_labels: list[str], col_labels: list[str], provenance: str,
                        title: str, cbar_label: str = "attribution", xlabel: str = "cluster within the class",
                        ylabel: str = "class of the cluster"):
    """A heat map of attribution weights, e.g. classes x clusters for one test image or a batch."""
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(col_labels) + 2.5), max(3, 0.35 * len(row_labels) + 1.6)))
    limit = float(np.abs(matrix).max()) or 1.0
    sns.heatmap(matrix, ax=ax, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit,
                xticklabels=col_labels, yticklabels=row_labels, cbar_kws={"label": cbar_label})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def heatmap_grid(panels: Mapping[str, Sequence[np.ndarray]], scale_labels: Sequence[str],
                 column_titles: Sequence[str], yticklabels: Sequence[str], title: str, provenance: str,
                 shared_scale: bool = True, framed_row: int | None = None):
    """A grid of class x cluster-within-class heat maps (``RdBu_r``, centred at zero): one row per
    entry of ``panels`` (row name -> one matrix per column), one column per ``column_titles``;
    each panel is titled "row name" over its column's title, the matrix rows are labelled
    ``yticklabels`` in the first column and the clusters 1, 2, ... along x.

    ``shared_scale``: one colour scale along each row (so a row compares its columns), drawn as a
    narrow colour bar at the row's end and labelled ``scale_labels[row]``; otherwise every panel
    has its own scale and colour bar, only the last column's labelled. ``framed_row``, when
    given, is the matrix row framed in black in every panel (e.g. the class of the images)."""
    from matplotlib.patches import Rectangle

    L, C = np.shape(next(iter(panels.values()))[0])
    n = len(column_titles)
    if shared_scale:   # the colour bar gets a column of its own
        width, height = max(2.8, 0.32 * C + 1.3), max(2.4, 0.26 * L + 1.1)
        fig, axes = plt.subplots(len(panels), n + 1, squeeze=False,
                                 figsize=(n * width + 1.2, len(panels) * height + 0.8),
                                 gridspec_kw={"width_ratios": [1] * n + [0.06]})
    else:              # every panel carries its colour bar, so is wider
        width, height = max(3.2, 0.3 * C + 1.9), max(2.6, 0.26 * L + 1.2)
        fig, axes = plt.subplots(len(panels), n, squeeze=False, figsize=(n * width, len(panels) * height + 0.9))
    columns = [str(c + 1) for c in range(C)]
    for r, ((method, matrices), scale_label) in enumerate(zip(panels.items(), scale_labels)):
        row_limit = max(float(np.abs(m).max()) for m in matrices) or 1.0
        for j, (matrix, column) in enumerate(zip(matrices, column_titles)):
            ax, last = axes[r, j], j == n - 1
            if shared_scale:
                limit, bar = row_limit, {"cbar": last, "cbar_ax": axes[r, -1] if last else None,
                                         "cbar_kws": {"label": scale_label} if last else {}}
            else:
                limit, bar = float(np.abs(matrix).max()) or 1.0, {"cbar_kws": {"label": scale_label if last else ""}}
            sns.heatmap(matrix, ax=ax, cmap="RdBu_r", center=0, vmin=-limit, vmax=limit, xticklabels=columns,
                        yticklabels=list(yticklabels) if j == 0 else False, **bar)
            if framed_row is not None:
                ax.add_patch(Rectangle((0, framed_row), C, 1, fill=False, edgecolor="black", lw=1.6))
            ax.set_title(f"{method}\n{column}", fontsize=9)
            ax.set_xlabel("cluster within the class" if r == len(panels) - 1 else "")
            ax.tick_params(labelsize=7)
        axes[r, 0].set_ylabel("class of the cluster")
    fig.suptitle(title, fontsize=11)
    _footer(fig, provenance)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def error_vs_deleted(frame: pd.DataFrame, provenance: str):
    """Output distance to the exact unlearned model against the number of deleted clusters,
    for DDM and for leaving the target unchanged (Supp. Eq. 12-13, Fig. 7), from
    ``ddm.chapters.unlearning.deleted_rows``' long table (columns: deleted clusters, group, model,
    distance to exact): one faint point per removal, a line through each group's mean."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    palette = sns.color_palette(n_colors=frame["model"].nunique())
    for color, (model, rows) in zip(palette, frame.groupby("model", sort=False)):
        ax.scatter(rows["deleted clusters"], rows["distance to exact"], s=9, alpha=0.3, color=color, lw=0)
        means = rows.groupby("group", sort=False)[["deleted clusters", "distance to exact"]].mean()
        ax.plot(means["deleted clusters"], means["distance to exact"], marker="o", color=color,
                label=f"{model} (mean of a group)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("clusters deleted (log scale)")
    ax.set_ylabel("squared softmax difference to the\nexact unlearned model, x100 (log)")
    ax.legend(title="model compared with exact unlearning", fontsize=8, title_fontsize=8)
    ax.set_title("Distance to exact unlearning against clusters deleted")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def per_cluster_error(frame: pd.DataFrame, provenance: str, ddm: str, unchanged: str):
    """Fig. 7 and its references, from the long table of ``ddm.chapters.unlearning`` (``ddm`` and
    ``unchanged`` are the labels of DDM's and of the unchanged target's rows in its ``method`` column).

    Left, the paper's view: per cluster, the distance to the exact unlearned model of DDM's model
    against that of the unchanged target (below the diagonal: DDM got closer). Right, every
    method's per-cluster distances on one log axis, so DDM sits beside doing nothing, random
    choice, a real-data baseline and the retraining noise floor."""
    wide = frame.pivot(index="cluster", columns="method", values="distance to exact")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1, 1.45]})
    left.scatter(wide[unchanged], wide[ddm], s=14, label="one cluster")
    # Log axes: the errors often differ by orders of magnitude.
    values = frame["distance to exact"].to_numpy()
    positive = values[values > 0]
    low, high = (float(positive.min()) / 2, float(positive.max()) * 2) if len(positive) else (1e-6, 1.0)
    left.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="equal error")
    left.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
             xlabel="unchanged target's distance to exact, x100 (log)",
             ylabel="DDM fine-tune's distance to exact, x100 (log)",
             title="Per cluster (Fig. 7): below the line, DDM is closer")
    left.legend(fontsize=8, loc="best")
    order = list(frame["method"].unique())
    sns.boxplot(data=frame, x="distance to exact", y="method", order=order, color="0.85",
                showfliers=False, ax=right)
    sns.stripplot(data=frame, x="distance to exact", y="method", order=order, size=2.5, alpha=0.6,
                  ax=right)
    right.set(xscale="log", xlim=(low, high), ylabel="",
              xlabel="squared softmax difference to the exact unlearned model, x100 (log)",
              title="Every method, one point per cluster")
    right.tick_params(axis="y", labelsize=8)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def harmful_removal(curves: pd.DataFrame, floor: tuple[float, float], provenance: str,
                    paper: dict[str, dict[float, float]] | None = None, paper_label: str = "paper",
                    paper_apart: bool = False):
    """Table 3 as a figure: held-out test accuracy after deleting a share of the training set and
    retraining, one line per ranking.

    ``curves`` has one row per (ranking, seed, share): columns ``ranking`` (its label), ``kind``
    ("harmful first", "random" or "most helpful first"), ``asked (%)`` and ``test accuracy (%)``.
    Harmful-first rankings are solid lines; the random orders their mean with a band from the
    worst to the best seed; most-helpful-first orders dotted grey. ``floor`` (target, another data
    order) is drawn as a grey band: the noise floor. ``paper`` (our ranking's label -> share ->
    accuracy), when given, is drawn dashed in the colour of the matching ranking: on the same axes,
    or, with ``paper_apart`` (the paper's numbers come from another data set or network, on
    another scale), in a panel of its own on the right, titled ``paper_label``."""
    if paper and paper_apart:
        fig, (ax, paper_ax) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [2.2, 1]})
    else:
        fig, ax = plt.subplots(figsize=(9, 4.4))
        paper_ax = ax
    labels = list(dict.fromkeys(curves["ranking"]))
    kinds = curves.groupby("ranking", sort=False)["kind"].first()
    coloured = [name for name in labels if kinds[name] != "most helpful first"]
    # tab10 without its grey (index 7), which the "most helpful first" controls and the band use
    palette = [c for i, c in enumerate(sns.color_palette("tab10", 10)) if i != 7]
    colours = dict(zip(coloured, palette[:len(coloured)] if len(coloured) <= len(palette)
                       else sns.color_palette("husl", len(coloured))))
    colours.update(zip([n for n in labels if n not in colours], ["0.3", "0.6", "0.45", "0.75"]))
    for name in labels:
        by_share = curves[curves["ranking"] == name].groupby("asked (%)")["test accuracy (%)"]
        shares, mean = by_share.mean().index.to_numpy(), by_share.mean().to_numpy()
        if kinds[name] == "random":
            ax.plot(shares, mean, marker="s", color=colours[name], label=f"{name}: mean of the seeds")
            ax.fill_between(shares, by_share.min().to_numpy(), by_share.max().to_numpy(), color=colours[name],
                            alpha=0.2, lw=0, label=f"{name}: range of the seeds")
        elif kinds[name] == "most helpful first":
            ax.plot(shares, mean, ls=":", marker="v", color=colours[name], label=name)
        else:
            ax.plot(shares, mean, marker="o", color=colours[name], label=name)
    for name, row in (paper or {}).items():
        shares = sorted(row)
        paper_ax.plot(shares, [row[f] for f in shares], ls="--", marker="x", lw=1.2, color=colours.get(name, "k"),
                      label=name if paper_ax is not ax else f"{paper_label}: {name}")
    if paper_ax is not ax:
        paper_ax.set_title(paper_label, fontsize=10)
        paper_ax.set_ylabel("the paper's accuracy (%)")
        paper_ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax.axhspan(min(floor), max(floor), color="0.8", alpha=0.6, lw=0,
               label="nothing removed: target and another data order (noise floor)")
    ax.set_xscale("log")
    ticks = sorted(curves["asked (%)"].unique())
    ax.set_xticks(ticks, [f"{t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("share of the training set removed before retraining (log scale)")
    ax.set_ylabel("accuracy on held-out test images (%)")
    ax.set_title("Accuracy after removing training data, ranking by ranking (Table 3)")
    if paper_ax is ax:
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def grouped_bars(means: pd.Series, spreads: np.ndarray, groups: dict[str, str], provenance: str, xlabel: str,
                 floor: float | None = None, floor_label: str = "noise floor", title: str = ""):
    """Horizontal bars, one per method (``means``: label -> number), coloured by ``groups``
    (label -> "DDM", "influence functions" or "references"), with ``spreads`` as error bars and a
    dashed vertical line at ``floor``."""
    from matplotlib.patches import Patch

    palette = {"DDM": "C0", "influence functions": "C1", "references": "0.6"}
    colours = [palette.get(groups[name], "0.6") for name in means.index]
    fig, ax = plt.subplots(figsize=(9.5, 0.42 * len(means) + 2.4))
    positions = np.arange(len(means))
    ax.barh(positions, means.to_numpy(dtype=float), color=colours, xerr=np.nan_to_num(spreads),
            error_kw={"ecolor": "0.25", "lw": 1, "capsize": 2})
    ax.set_yticks(positions, list(means.index))
    ax.invert_yaxis()
    handles = [Patch(color=c, label=g) for g, c in palette.items() if g in groups.values()]
    if floor is not None and np.isfinite(floor):
        handles.append(ax.axvline(floor, color="C3", ls="--", lw=1.2, label=floor_label))
    return _finish_bars(fig, ax, handles, xlabel, title, provenance, -0.16)


def cost_vs_agreement(points: dict[str, tuple[float, float]], provenance: str, floor: float | None = None,
                      reference: float | None = None):
    """Each method's wall time (log scale) against its mean Spearman correlation with exact
    retraining (``points``: label -> (seconds, Spearman)), with the noise floor and random choice
    as horizontal lines: up is more faithful, left is cheaper."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for i, (name, (seconds, rho)) in enumerate(points.items()):
        ax.scatter([seconds], [rho], s=60, color="C0" if name.startswith("DDM") else f"C{(i % 8) + 1}", zorder=3)
        ax.annotate(name, (seconds, rho), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if floor is not None and np.isfinite(floor):
        ax.axhline(floor, color="C3", ls="--", lw=1.2, label="noise floor: exact retraining, another data order")
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, color="0.5", ls=":", lw=1.2, label="random choice")
    ax.set_xscale("log")
    ax.margins(x=0.25)
    ax.set_xlabel("wall time on this machine, seconds (log scale)")
    ax.set_ylabel("mean Spearman with exact retraining")
    ax.set_title("Faithfulness against cost")
    ax.legend(fontsize=8, loc="best")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig


def cost_curves(frame: pd.DataFrame, provenance: str, xlabel: str, ylabel: str, title: str,
                mark_x: float | None = None, mark_label: str = ""):
    """One line per column of ``frame`` (index: the x values) on log-log axes, markers at the
    measured points, and an optional dashed vertical line at ``mark_x`` (e.g. a break-even)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    styles = {0: ("C0", "o", "-"), 1: ("C0", "s", "--"), 2: ("C3", "^", "-")}
    for i, column in enumerate(frame.columns):
        colour, marker, line = styles.get(i, (f"C{i}", "o", "-"))
        x, y = frame.index.to_numpy(dtype=float), frame[column].to_numpy(dtype=float)
        ax.plot(x, y, color=colour, ls=line, marker=marker if len(x) <= 12 else None, ms=5, label=column)
    if mark_x is not None and np.isfinite(mark_x):
        ax.axvline(mark_x, color="0.3", ls=":", lw=1.2, label=f"{mark_label} ({mark_x:.3g})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left")
    _footer(fig, provenance)
    fig.tight_layout()
    return fig
