"""Chapter 01: clustering the training set into K = L x C groups (Supp. 6.1)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

from ddm import paper
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, table, verdict_for
from ddm.clustering import Clustering
from ddm.experiment import Experiment

CHAPTER = "01_clustering"
FEATURES = ("pixels", "learned", "sequence")
# What the table calls each grouping.
FEATURE_LABELS = {"pixels": "k-means on pixels (the book's choice)",
                  "learned": "k-means on the target's penultimate layer",
                  "sequence": "runs of consecutive images ('DDM w/o cluster')"}
# Verdict thresholds, named where they are used.
ARI_SAME_UNITS = 0.5        # adjusted Rand index above which two groupings define much the same units
SIZE_RATIO_UNEQUAL = 3.0    # largest / smallest cluster above which sizes are called very unequal


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    clusters_per_class: int = headline("clusters per class, C", digits=3)
    num_clusters: int = headline("clusters in all, K = L x C", digits=4)
    smallest_cluster: int = headline("smallest pixel cluster (images)")
    median_cluster: float = headline("median pixel cluster (images)")
    largest_cluster: int = headline("largest pixel cluster (images)")
    ari_learned_vs_pixels: float = headline("adjusted Rand index, learned vs pixel clusters", digits=2)
    ari_sequence_vs_pixels: float = headline("adjusted Rand index, consecutive runs vs pixel clusters", digits=2)
    summary: pd.DataFrame = table("the three groupings")
    groupings: dict[str, Clustering] = detail()


def run(exp: Experiment) -> Result:
    """Cluster the training set three ways and compare the groupings with the pixel clustering."""
    found = {m: exp.clusters(dataclasses.replace(exp.config.clusters, features=m)) for m in FEATURES}
    reference = found["pixels"].assignment.numpy()
    rows, ari = [], {}
    for name, clustering in found.items():
        sizes = clustering.sizes().numpy()
        ari[name] = float(adjusted_rand_score(reference, clustering.assignment.numpy()))
        rows.append({"grouping": FEATURE_LABELS[name], "clusters (K)": clustering.num_clusters,
                     "smallest (images)": int(sizes.min()), "median (images)": float(np.median(sizes)),
                     "largest (images)": int(sizes.max()), "agreement with pixel clusters (ARI)": ari[name]})
    sizes = found["pixels"].sizes().numpy()
    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name,
        clusters_per_class=exp.config.clusters.clusters_per_class,
        num_clusters=found["pixels"].num_clusters,
        smallest_cluster=int(sizes.min()), median_cluster=float(np.median(sizes)), largest_cluster=int(sizes.max()),
        ari_learned_vs_pixels=ari["learned"], ari_sequence_vs_pixels=ari["sequence"],
        summary=pd.DataFrame(rows).set_index("grouping"), groupings=found,
    )


def paper_values(dataset: str) -> dict:
    """The paper reports only how many clusters it uses (Sec. 4.1: C = 10, so K = 100 or 1000)."""
    classes = {"mnist": 10, "cifar10": 10, "cifar100": 100}.get(dataset)
    if classes is None:
        return {}
    return {"clusters_per_class": paper.CLUSTERS_PER_CLASS, "num_clusters": classes * paper.CLUSTERS_PER_CLASS}


def _reading(run: RunNumbers) -> list[str]:
    lines = []
    if run.has("clusters_per_class", "num_clusters"):
        same = run["clusters_per_class"] == paper.CLUSTERS_PER_CLASS
        lines.append(f"* **K.** {run['num_clusters']} clusters, C = {run['clusters_per_class']} per class: "
                     + ("the paper's C = 10." if same else
                        f"fewer than the paper's C = 10, to keep exact retraining of every cluster affordable."))
    if run.has("smallest_cluster", "largest_cluster"):
        ratio = run["largest_cluster"] / max(run["smallest_cluster"], 1)
        lines.append(f"* **Sizes.** Pixel clusters hold {run['smallest_cluster']} to {run['largest_cluster']} images "
                     f"(ratio {ratio:.1f}; called very unequal above {SIZE_RATIO_UNEQUAL:g}): "
                     + ("deleting a large cluster removes several times the data of a small one, so a cluster's "
                        "effect mixes its size with its content." if ratio > SIZE_RATIO_UNEQUAL else
                        "sizes are comparable, so clusters are comparable units of data."))
    if run.has("ari_learned_vs_pixels"):
        ari = run["ari_learned_vs_pixels"]
        lines.append(f"* **Feature extractor.** Learned-feature and pixel clusters agree at ARI {ari:.2f} "
                     f"(the same units above {ARI_SAME_UNITS:g}): "
                     + ("the unnamed extractor of the paper matters little here." if ari > ARI_SAME_UNITS else
                        "the paper's unnamed extractor defines *different* units of attribution, so its "
                        "per-cluster numbers cannot be matched one-to-one by any re-implementation."))
    return lines


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)
