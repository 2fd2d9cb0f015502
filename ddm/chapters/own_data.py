"""Chapter 08: DDM on your own data and your own network, end to end, with one exact check.

The whole pipeline on a data set given only as an image folder (``folder:PATH`` with
``PATH/{train,test}/<class>/<images>``) and a network defined by the reader (any ``nn.Module``
whose output is class logits, passed in; nothing is registered in :mod:`ddm.models`):

1. the folder is listed and checked before any pixel is decoded (classes, colour mode, sizes);
2. the network is checked against the data before any training (:meth:`Experiment.check`);
3. clusters (Supp. 6.1), the target trajectory (Eq. 2), the synset (Alg. 1, the paper's DDM);
4. online attribution (Eq. 9): each test point's leave-one-cluster-out fine-tunes give the cluster
   whose deletion DDM predicts changes the output most (Dist1, Eq. 10);
5. one exact check: that cluster is removed and the network retrained from scratch, and the same
   is done for the clusters a simple baseline (TracIn-style), a feature-space nearest centroid and
   random choice pick, beside the retraining noise (nothing removed, another data order).

The worked example is the CIFAR-10 JPEG copy read as a plain folder, as if it were the reader's
own; offline, with no such copy, the bundled digits are written out as a PNG folder and read back
the same way (:func:`choose_dataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import baselines, locating, paper
from ddm.book import format_number
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, table, verdict_for
from ddm.config import resolve_cache_root, resolve_data_root
from ddm.data import load_dataset
from ddm.datasets import FOLDER_PREFIX
from ddm.experiment import Experiment
from ddm.folders import has_folder_layout, write_image_folder
from ddm.locating import CLUSTERING_BASED, DIST1_X100, DIST1_X100_NOISE, RETRAINS, Picks
from ddm.metrics import dist1
from ddm.models import count_parameters
from ddm.online import leave_one_out_masks
from ddm.training import accuracy

CHAPTER = "08_your_own_data"
# The chapter's data are the reader's: it records nothing (results/ holds the paper's data sets).
RECORDS = False
EXAMPLE_FOLDER = "cifar10-jpeg"      # under the data root: the worked example, read as a plain folder
DIGITS_FOLDER = "own-data-digits"    # under the cache root: the bundled digits written out as PNGs
TEST_POINTS = 8                      # test points of the exact check (each method's picks are retrained)
RANDOM_SEED = 0                      # seed of the random picks

METHODS = {"ddm": "DDM (Alg. 1, leave-one-out fine-tunes)", "tracin": "TracIn-style (simple baseline)",
           "centroid": "nearest feature centroid", "random": "random cluster"}
NOISE_LABEL = "retraining noise (nothing removed, another order)"
PREDICTED_LABEL = "DDM's own prediction at its pick"
PAPER_ROWS = {"ddm": "DDM-full", "centroid": "Clustering-based", "random": "Random Select"}

# Verdict thresholds, named where they are used.
APART = 1.5          # one Dist1 is called larger than another when it exceeds it by this factor


def choose_dataset(profile: str, data_root=None, dataset: str | None = None,
                   cache_root=None) -> tuple[str, str]:
    """The folder data set the chapter runs on, and one line saying which and why.

    ``dataset`` given: that one. Else the CIFAR-10 JPEG copy under the data root, read as a plain
    ``folder:`` (beyond the offline ``quick`` profile); else the bundled digits, written once as a
    PNG folder under the cache root and read back through the same folder loader."""
    if dataset:
        return dataset, f"Your data set: `{dataset}`."
    root = resolve_data_root(data_root)
    example = root / EXAMPLE_FOLDER
    if profile != "quick" and has_folder_layout(example):
        return (f"{FOLDER_PREFIX}{example}",
                f"The worked example: the CIFAR-10 JPEG copy at `{example}`, read as a plain image folder.")
    folder = resolve_cache_root(cache_root) / DIGITS_FOLDER
    if not has_folder_layout(folder):
        splits = {}
        for split in ("train", "test"):
            data = load_dataset("digits", split, root)
            splits[split] = (data.denormalise(data.images), data.labels)
        write_image_folder(folder, splits, data.classes)
    why = ("the `quick` profile runs offline" if profile == "quick"
           else f"no CIFAR-10 JPEG copy under `{root}`")
    return (f"{FOLDER_PREFIX}{folder}",
            f"The bundled digits written out as PNG files at `{folder}` and read back as a folder ({why}).")


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    train_images: int = headline("training images", digits=6)
    test_images: int = headline("test images", digits=6)
    num_classes: int = headline("classes", digits=6)
    channels: int = headline("channels per image", digits=2)
    image_size: int = headline("image size (pixels per side)", digits=4)
    model_name: str = headline("network")
    model_parameters: int = headline("network parameters", digits=9)
    target_accuracy: float = headline("target network's test accuracy (%)", digits=3)
    num_clusters: int = headline("clusters K", digits=5)
    test_points: int = headline("test points of the exact check", digits=4)
    dist1_x100_ddm: float = headline(f"Dist1 x100, {METHODS['ddm']}")
    dist1_x100_ddm_predicted: float = headline(f"Dist1 x100, {PREDICTED_LABEL}")
    dist1_x100_tracin: float = headline(f"Dist1 x100, {METHODS['tracin']}")
    dist1_x100_centroid: float = headline(f"Dist1 x100, {METHODS['centroid']}")
    dist1_x100_random: float = headline(f"Dist1 x100, {METHODS['random']}")
    dist1_x100_noise: float | None = headline(f"Dist1 x100, {NOISE_LABEL}", default=None)
    same_pick_pct_ddm: float = headline("share of test points DDM gives its most frequent cluster (%)", digits=3)
    retrains: int = headline("exact retrains behind the check", digits=4)
    data_table: pd.DataFrame = table("the data and the network")
    check: pd.DataFrame = table("the exact check")
    dataset_note: str = detail("")
    examples: dict = detail(None)




def _picks(columns: np.ndarray) -> Picks:
    """Only Dist1 is measured here: the one pick serves all three of Eq. 10's slots."""
    return Picks(columns, columns, columns)


def _examples(exp: Experiment, synset) -> dict[str, torch.Tensor]:
    """Rows of the data figure: the first training image of each class, then DDM's synthetic
    image of the first cluster of each class (both in [0, 1])."""
    first = [int(torch.nonzero(exp.train.labels == c)[0]) for c in range(exp.num_classes)]
    synthetic = [int(torch.nonzero(synset.labels == c)[0]) for c in range(exp.num_classes)]
    return {"real": exp.train.denormalise(exp.train.images[first]),
            "synthetic (DDM)": exp.train.denormalise(synset.images[synthetic])}


def run(exp: Experiment, test_points: int = TEST_POINTS, note: str = "") -> Result:
    """Clusters, target, synset, online attribution and the exact check on ``exp``'s data and network."""
    clustering = exp.clusters()
    trajectory = exp.target()
    model = exp.new_model()
    target_accuracy = 100 * accuracy(exp.target_logits(exp.test.images), exp.test.labels)
    synset = exp.synset()
    index = exp.test_point_indices()[:test_points]
    x, y = exp.test.images[index], exp.test.labels[index]
    target = exp.target_logits(x)                                      # (N, L)
    K = clustering.num_clusters
    # Eq. 9 for every leave-one-cluster-out mask: DDM's predicted logits without each cluster.
    changes = exp.perturbed_outputs(synset, leave_one_out_masks(K), x) - target[None]     # (K, N, L)
    ddm_pick = locating.picks_from_changes(target, changes, y).dist1
    n = torch.arange(len(index))
    predicted = float(dist1(target + changes[torch.as_tensor(ddm_pick), n], target).mean() * 100)
    tracin = baselines.tracin_effects(model, trajectory, exp.train.images, exp.train.labels, clustering, x, y,
                                      exp.config.train.lr)                                # (N, K)
    centroid = locating.reference_scores(exp, clustering, index)[CLUSTERING_BASED]        # (N, K)
    generator = np.random.default_rng(RANDOM_SEED)
    picks = {"ddm": ddm_pick, "tracin": np.asarray(tracin).argmax(1), "centroid": np.asarray(centroid).argmax(1),
             "random": generator.integers(0, K, len(index))}
    measured, groups, noise = {}, set(), None
    for method, columns in picks.items():
        out = locating.located_distances_retrained(exp, clustering, _picks(columns), index, other_order=False)
        measured[method] = out[DIST1_X100]
        noise = out.get(DIST1_X100_NOISE, noise)
        groups |= set(np.asarray(columns).tolist())
    retrains = len(groups) + (noise is not None)
    counts = np.bincount(ddm_pick, minlength=K)
    rows = [{"method": METHODS[m], "Dist1 x100 (exact retrain without the pick)": measured[m],
             "distinct clusters picked": len(set(np.asarray(c).tolist()))} for m, c in picks.items()]
    rows.append({"method": PREDICTED_LABEL, "Dist1 x100 (exact retrain without the pick)": predicted,
                 "distinct clusters picked": len(set(ddm_pick.tolist()))})
    if noise is not None:
        rows.append({"method": NOISE_LABEL, "Dist1 x100 (exact retrain without the pick)": noise,
                     "distinct clusters picked": 0})
    check = pd.DataFrame(rows).set_index("method")
    model_name = type(model).__name__ if exp.custom_model is not None else exp.config.model.arch
    data_table = pd.DataFrame({"value": [exp.config.data.name.removeprefix(FOLDER_PREFIX), len(exp.train),
                                         len(exp.test), exp.num_classes, exp.train.channels, exp.train.image_size,
                                         model_name, count_parameters(model), K]},
                              index=["folder", "training images", "test images", "classes", "channels",
                                     "image size", "network", "parameters", "clusters K"])
    return Result(profile=exp.config.profile, dataset=exp.config.data.name,
                  train_images=len(exp.train), test_images=len(exp.test), num_classes=exp.num_classes,
                  channels=exp.train.channels, image_size=exp.train.image_size, model_name=model_name,
                  model_parameters=count_parameters(model), target_accuracy=target_accuracy, num_clusters=K,
                  test_points=len(index), dist1_x100_ddm=measured["ddm"], dist1_x100_ddm_predicted=predicted,
                  dist1_x100_tracin=measured["tracin"], dist1_x100_centroid=measured["centroid"],
                  dist1_x100_random=measured["random"], dist1_x100_noise=noise,
                  same_pick_pct_ddm=100 * counts.max() / len(index), retrains=retrains,
                  data_table=data_table.astype(str), check=check, dataset_note=note,
                  examples=_examples(exp, synset))


def paper_values(dataset: str) -> dict:
    """Table 1's Dist1 x100 for the rows this chapter also measures (the paper has no own-data run;
    its MNIST or CIFAR-10 numbers are the nearest reference)."""
    values = {f"dist1_x100_{m}": paper.TABLE1[row].get(dataset, (None,))[0] for m, row in PAPER_ROWS.items()}
    return {k: v for k, v in values.items() if v is not None}


# ------------------------------------------------------------------------------------------ verdict
def _n(value: float) -> str:
    return format_number(value, 3)


def _compare(a: float, b: float) -> str:
    if a > APART * b:
        return "larger than"
    if b > APART * a:
        return "smaller than"
    return "about the same as"


def _reading(run: RunNumbers) -> list[str]:
    if not run.has("dist1_x100_ddm", "dist1_x100_random", "dist1_x100_tracin"):
        return []
    ddm, rnd, tracin = run["dist1_x100_ddm"], run["dist1_x100_random"], run["dist1_x100_tracin"]
    lines = [f"- Removing the cluster DDM locates changes the output by Dist1 x100 = {_n(ddm)}, "
             f"{_compare(ddm, rnd)} a random cluster ({_n(rnd)}) and {_compare(ddm, tracin)} TracIn's pick "
             f"({_n(tracin)}); 'larger' means more than {APART}x."]
    if run.has("dist1_x100_noise"):
        noise = run["dist1_x100_noise"]
        above = [METHODS[m] for m in ("ddm", "tracin", "centroid", "random") if run.get(f"dist1_x100_{m}", 0) > noise]
        lines.append(f"- Retraining with nothing removed under another data order moves it by {_n(noise)}, the noise "
                     "floor: " + (f"above it: {', '.join(above)}." if above else
                                  "every pick's effect is within it, so no pick can be told apart from chance here."))
    if run.has("dist1_x100_ddm_predicted") and ddm > 0:
        lines.append(f"- DDM predicted Dist1 x100 = {_n(run['dist1_x100_ddm_predicted'])} for its picks; exact "
                     f"retraining measured {_n(ddm)} ({format_number(run['dist1_x100_ddm_predicted'] / ddm, 2)}x).")
    if run.has("same_pick_pct_ddm"):
        lines.append(f"- DDM gave its most frequent cluster to {run['same_pick_pct_ddm']:.0f}% of the test points.")
    return lines


def verdict(result: Result, recorded=()) -> str:
    """The exact check in words, from this run's numbers (the chapter records nothing)."""
    return verdict_for(_reading, result, recorded)


def figures(result: Result, provenance: str) -> dict:
    """The data (a real image per class beside DDM's synthetic one) and the exact check's bars."""
    from ddm import plots

    out = {}
    if result.examples:
        out["own_data_examples"] = plots.image_rows(result.examples, provenance,
                                                    "your data: one training image per class, and DDM's synset")
    values = result.check["Dist1 x100 (exact retrain without the pick)"]
    bars = values.drop(index=[NOISE_LABEL, PREDICTED_LABEL], errors="ignore")
    out["own_data_check"] = plots.method_bars(
        bars, provenance, "Dist1 x100 after retraining without the pick",
        references=(METHODS["random"], METHODS["centroid"], METHODS["tracin"]), floor=result.dist1_x100_noise,
        title="The exact check: does the located cluster matter?")
    return out
