"""Chapter 02: reverse gradient matching (Sec. 3.2, Eq. 1-6, Algorithm 1) and the synsets of Fig. 4.

The chapter distils the four synsets of :mod:`ddm.variants` (the paper's DDM under the pairing of
Algorithm 1 and of Eq. 6, plain gradient matching "DDM-match", and our soft-label extension), plus
DDM with Sec. 4.1's image learning rate (10 instead of Table 5's 0.1), and measures

- how far each objective falls and how well each synset's gradient points along its target, layer
  by layer (the classifier layer is where hard labels fail to follow a *reversed* gradient);
- the paper's privacy claim of Fig. 4 in numbers: each synthetic image's cosine to its nearest
  real training image;
- memorisation, image by image: each synthetic image's cosine to *its own* starting image, whether
  that image is still its nearest real image, and the rank of that image among all real ones;
- the same privacy and memorisation numbers on a second data set (Fig. 4 shows two).

Pixel cosines are taken on the normalised images (each channel centred by the data set's mean), so
that a uniform background does not make every pair of images look alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ddm import datasets, plots, variants
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, provenance, table, verdict_for
from ddm.data import DataError
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.models import ModelError
from ddm.training import accuracy

CHAPTER = "02_reverse_matching"
LR_IMG_SEC41 = 10.0          # Sec. 4.1's learning rate of the images (Table 5 and the profiles: 0.1)
FINAL_STEPS = 10             # the "final" matching loss is the mean over the last this many steps
SECOND_VARIANTS = (variants.DDM_MATCH, variants.PAPER_DDM)   # the two synsets Fig. 4 sets side by side
REAL_START = "real starting images (reference)"
FIGURE_COLUMNS = 12          # clusters drawn in the synset figures (ddm.plots.image_rows' max_images)
LR_IMG_LABEL = f"DDM, Alg. 1, image learning rate {LR_IMG_SEC41:g} (Sec. 4.1)"

# Verdict thresholds, named where they are used.
SOFT_LABEL_GAIN = 0.1        # classifier-layer cosine gain of soft over hard labels called a fix
LOSS_RATIO_CLEAR = 0.8       # one final loss below this fraction of another: clearly lower
PRIVACY_MARGIN = 0.02        # nearest-real cosine difference (DDM vs DDM-match) needed to call a side
NEAR_COPY_COSINE = 0.9       # mean cosine to its own starting image at or above: a near-copy of it
MOVED_AWAY_COSINE = 0.5      # below: the image has moved away from its start (between: keeps part of it)
OWN_NEAREST_MOST = 50.0      # % of images whose own start is their nearest real image: "most" at or above


# How the tables name the quantities measured for every synset.
_NEAREST = "mean cosine to the nearest real image"
_OWN = "mean cosine to its own starting image"
_SHARE = "own start is the nearest real image (% of images)"
_RANK = "median rank of own start among real images (1 = nearest)"
_LOSS = f"final matching loss per cluster (mean of the last {FINAL_STEPS} steps)"
_CLASSIFIER = "classifier-layer gradient cosine with the matching target"
_SECOND = "second data set: "


@dataclass(frozen=True, kw_only=True)
class Result(ChapterResult):
    target_test_accuracy: float = headline("target network's test accuracy (%)", digits=3)
    target_final_loss: float = headline("target network's final training loss", digits=3)
    loss_alg1: float = headline(f"{_LOSS}, DDM (Alg. 1)")
    loss_eq6: float = headline(f"{_LOSS}, DDM (Eq. 6)")
    loss_lr_img_10: float = headline(f"{_LOSS}, DDM (Alg. 1) with image learning rate {LR_IMG_SEC41:g}")
    classifier_cosine_ddm: float = headline(f"{_CLASSIFIER}, DDM (Alg. 1, hard labels)", digits=2)
    classifier_cosine_soft: float = headline(f"{_CLASSIFIER}, DDM+ (ours, soft labels)", digits=2)
    classifier_cosine_match: float = headline(f"{_CLASSIFIER}, DDM-match", digits=2)
    nearest_real_start: float = headline(f"{_NEAREST}, real starting images (reference)")
    nearest_real_ddm: float = headline(f"{_NEAREST}, DDM (Alg. 1)")
    nearest_real_match: float = headline(f"{_NEAREST}, DDM-match")
    nearest_real_soft: float = headline(f"{_NEAREST}, DDM+ (ours, soft labels)")
    own_start_cosine_ddm: float = headline(f"{_OWN}, DDM (Alg. 1)")
    own_start_cosine_eq6: float = headline(f"{_OWN}, DDM (Eq. 6)")
    own_start_cosine_match: float = headline(f"{_OWN}, DDM-match")
    own_start_cosine_soft: float = headline(f"{_OWN}, DDM+ (ours, soft labels)")
    own_start_nearest_ddm: float = headline(f"{_SHARE}, DDM (Alg. 1)", digits=2)
    own_start_nearest_eq6: float = headline(f"{_SHARE}, DDM (Eq. 6)", digits=2)
    own_start_nearest_match: float = headline(f"{_SHARE}, DDM-match", digits=2)
    own_start_nearest_soft: float = headline(f"{_SHARE}, DDM+ (ours, soft labels)", digits=2)
    own_start_rank_ddm: float = headline(f"{_RANK}, DDM (Alg. 1)", digits=3)
    own_start_rank_eq6: float = headline(f"{_RANK}, DDM (Eq. 6)", digits=3)
    own_start_rank_match: float = headline(f"{_RANK}, DDM-match", digits=3)
    own_start_rank_soft: float = headline(f"{_RANK}, DDM+ (ours, soft labels)", digits=3)
    second_dataset_name: str | None = headline("second data set", default=None)
    second_nearest_real_ddm: float | None = headline(f"{_SECOND}{_NEAREST}, DDM (Alg. 1)", default=None)
    second_nearest_real_match: float | None = headline(f"{_SECOND}{_NEAREST}, DDM-match", default=None)
    second_own_start_cosine_ddm: float | None = headline(f"{_SECOND}{_OWN}, DDM (Alg. 1)", default=None)
    second_own_start_cosine_match: float | None = headline(f"{_SECOND}{_OWN}, DDM-match", default=None)
    second_own_start_nearest_ddm: float | None = headline(f"{_SECOND}{_SHARE}, DDM (Alg. 1)", digits=2, default=None)
    second_own_start_nearest_match: float | None = headline(f"{_SECOND}{_SHARE}, DDM-match", digits=2, default=None)
    second_own_start_rank_ddm: float | None = headline(f"{_SECOND}{_RANK}, DDM (Alg. 1)", digits=3, default=None)
    second_own_start_rank_match: float | None = headline(f"{_SECOND}{_RANK}, DDM-match", digits=3, default=None)
    layer_cosines: pd.DataFrame = table("gradient cosine with the matching target, layer by layer")
    privacy: pd.DataFrame = table("nearest real images and own starting images")
    second_privacy: pd.DataFrame | None = table("the same on the second data set")
    synsets: dict[str, Synset] = detail()           # variant constant -> synset
    lr_img_10: Synset = detail()
    rows: dict[str, torch.Tensor] = detail()        # figure rows in [0, 1]: real start, then each variant
    source: str = detail("")                        # the figures' footer
    second_note: str = detail("")                   # one line: which second data set, or why none
    second_synsets: dict[str, Synset] | None = detail(None)
    second_rows: dict[str, torch.Tensor] | None = detail(None)
    second_source: str = detail("")
    settings: str = detail("")                      # one line: the run's K and settings, and why (Tiny ImageNet)


# ------------------------------------------------------------------------------------------ measurement
def _unit_rows(images: torch.Tensor) -> torch.Tensor:
    flat = images.reshape(len(images), -1).double()
    return flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def memorisation(real: torch.Tensor, synthetic: torch.Tensor, sources: torch.Tensor,
                 chunk: int = 256) -> dict[str, float]:
    r"""How close each synthetic image stays to the real image it started from.

    ``real``: (N, C, H, W) the training images; ``synthetic``: (M, C, H, W); ``sources``: (M,) the
    index in ``real`` of each synthetic image's starting image. With :math:`c_{ij}` the cosine of
    the pixels of synthetic image i and real image j, returns

    - ``nearest``: mean over i of :math:`\max_j c_{ij}` (cosine to the nearest real image);
    - ``highest``: the largest :math:`\max_j c_{ij}` over i;
    - ``own``: mean over i of :math:`c_{i,s_i}` (cosine to its own start);
    - ``own_nearest``: % of i whose own start is a nearest real image (no real image strictly closer);
    - ``own_rank``: median over i of :math:`1 + \#\{j : c_{ij} > c_{i,s_i}\}` (1 = nearest).

    The synthetic images are compared ``chunk`` at a time, so memory stays at (chunk, N).
    """
    real_unit = _unit_rows(real)                                        # (N, D)
    best, own, rank = [], [], []
    for start in range(0, len(synthetic), chunk):
        sim = _unit_rows(synthetic[start:start + chunk]) @ real_unit.T  # (m, N)
        mine = sim.gather(1, sources[start:start + chunk].long().view(-1, 1))  # (m, 1)
        best.append(sim.max(1).values)
        own.append(mine[:, 0])
        rank.append(1 + (sim > mine).sum(1))
    best_t, own_t, rank_t = torch.cat(best), torch.cat(own), torch.cat(rank)  # (M,) each
    return {"nearest": float(best_t.mean()), "highest": float(best_t.max()), "own": float(own_t.mean()),
            "own_nearest": float((rank_t == 1).double().mean() * 100), "own_rank": float(np.median(rank_t.numpy()))}


PRIVACY_COLUMNS = {"nearest": _NEAREST,
                   "highest": "highest cosine to a real image",
                   "own": _OWN,
                   "own_nearest": "own start is the nearest real image (%)",
                   "own_rank": "median rank of own start (1 = nearest)"}


def _privacy(real: torch.Tensor, synsets: dict[str, Synset]) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """:func:`memorisation` of the real starting images (the reference, under :data:`REAL_START`)
    and of every synset (under its variant's label), as a table and by name. The starting images
    are those of the paper's DDM (every variant starts from the same seeded draw)."""
    start = synsets[variants.PAPER_DDM]
    entries = {REAL_START: (start.initial_images, start.initial_sources)}
    entries.update({variants.LABELS[v]: (s.images, s.initial_sources) for v, s in synsets.items()})
    found = {name: memorisation(real, images, sources) for name, (images, sources) in entries.items()}
    frame = pd.DataFrame([{"images": name, **{PRIVACY_COLUMNS[k]: v for k, v in numbers.items()}}
                          for name, numbers in found.items()]).set_index("images")
    return frame, found


def _layer_table(synsets: dict[str, Synset]) -> pd.DataFrame:
    """Rows: synsets; columns: layers in words ("layer 1", ..., "classifier")."""
    frame = pd.DataFrame({name: s.final_layer_cosines for name, s in synsets.items()}).T
    names, i = {}, 0
    for column in frame.columns:
        if column.startswith("classifier"):
            names[column] = "classifier"
        else:
            i += 1
            names[column] = f"layer {i}"
    return frame.rename(columns=names)


def _classifier(synset: Synset) -> float | None:
    values = [v for k, v in synset.final_layer_cosines.items() if k.startswith("classifier")]
    return values[0] if values else None


def _final_loss(synset: Synset) -> float | None:
    history = synset.loss_history[-FINAL_STEPS:]
    return float(np.mean(history)) if history else None


def paper_figure(dataset: str | None) -> str:
    """The paper's figure that shows synsets of ``dataset`` (a registry name or a label): Fig. 5 for
    Tiny ImageNet (Supp. Fig. 5), Fig. 4 otherwise (MNIST and CIFAR-100, and the nearest one for
    the data sets the paper does not show)."""
    if dataset and (datasets.paper_key(dataset) == "tiny-imagenet" or dataset == datasets.label("tiny-imagenet")):
        return "Fig. 5"
    return "Fig. 4"


CIFAR100_LINE = ("CIFAR-100, the paper's other data set of Fig. 4, is not available offline: its synsets are made at "
                 "the `paper` profile only (`dataset=\"cifar100\"`, with torchvision's files under the data root).")


def figure_note(result: "Result") -> str:
    """One line under the synsets: which of the paper's figures they are, and at which K and
    settings (read from the run's own configuration, so the line never disagrees with it)."""
    first = next(iter(result.synsets.values()))
    k, images = len(set(first.cluster.tolist())), len(first.images)
    figure = paper_figure(result.dataset)
    text = (f"The synsets above are our counterpart of the paper's {figure}, on {datasets.label(result.dataset)}: "
            f"{images} synthetic image(s) for K = {k} clusters, of which the first {min(k, FIGURE_COLUMNS)} are drawn")
    if figure == "Fig. 5":
        text += " (the paper's Fig. 5 comes from a full-size run with 10 images, one per cluster, per class)"
    return text + f". {result.settings}"


def choose_second_dataset(profile: str, first: str, second_dataset: str | None = "auto",
                          reader_dataset: str | None = None) -> tuple[str | None, str]:
    """The second data set of Fig. 4 and a one-line note saying which, or why there is none.

    ``"auto"``: the CIFAR-10 JPEG copy beyond the offline ``quick`` profile, MNIST when the chapter
    already runs on CIFAR-10. None when the reader chose the chapter's data set (``reader_dataset``),
    asked for none, or asked for the data set the chapter already runs on.
    """
    if reader_dataset:
        return None, (f"No second data set: this run uses the data set you chose ({datasets.label(reader_dataset)}); "
                      "pass `second_dataset` and no `dataset` to compare two.")
    if second_dataset == "auto":
        if profile == "quick":
            return None, "No second data set at the `quick` profile (it runs offline on the bundled digits only)."
        second_dataset = "mnist" if datasets.paper_key(first) == "cifar10" else "cifar10-jpeg"
    if not second_dataset:
        return None, "No second data set (none asked for)."
    if second_dataset == first:
        return None, f"No second data set: {datasets.label(first)} is already the chapter's data set."
    return second_dataset, f"Second data set: {datasets.label(second_dataset)}, at the same profile."


def _second(exp: Experiment, name: str) -> Experiment:
    """The chapter's experiment with another data set (the same profile and overrides otherwise).
    Raises :class:`ddm.data.DataError` when the data set's files are not under the data root."""
    config = dataclasses.replace(exp.config, data=dataclasses.replace(exp.config.data, name=name))
    return Experiment.create(config, data_root=exp.data_root, cache_root=exp.store.root, progress=exp.progress,
                             model=exp.custom_model)


def _rows(exp: Experiment, synsets: dict[str, Synset]) -> dict[str, torch.Tensor]:
    """The figure's rows in [0, 1]: the real starting images, then each synset (short labels)."""
    first = next(iter(synsets.values()))
    rows = {"real start": exp.train.denormalise(first.initial_images)}
    rows.update({variants.SHORT_LABELS[v]: exp.train.denormalise(s.images) for v, s in synsets.items()})
    return rows


def run(exp: Experiment, second_dataset: str | None = "auto", reader_dataset: str | None = None) -> Result:
    """Distil the synsets, then measure their objectives, layer cosines, privacy and memorisation.

    ``second_dataset``: the second data set of Fig. 4 (see :func:`choose_second_dataset`); it is
    skipped with a note when its files are absent. ``reader_dataset``: the data set the reader chose
    for the chapter, if any (then there is no second one).
    """
    trajectory = exp.target()
    synsets = variants.distill_variants(exp)
    lr10 = variants.with_lr_img(exp, LR_IMG_SEC41)
    labelled = {variants.LABELS[v]: s for v, s in synsets.items()}
    labelled[LR_IMG_LABEL] = lr10
    privacy, found = _privacy(exp.train.images, synsets)
    own = {v: found[variants.LABELS[v]] for v in synsets}

    second_name, note = choose_second_dataset(exp.config.profile, exp.config.data.name, second_dataset, reader_dataset)
    second: dict = {}
    second_privacy = second_synsets = second_rows = None
    second_source = ""
    if second_name is not None:
        try:
            other = _second(exp, second_name)
        except (DataError, ModelError) as error:
            note = f"No second data set: {datasets.label(second_name)} could not be used ({error})."
            second_name = None
        else:
            second_synsets = variants.distill_variants(other, SECOND_VARIANTS)
            second_privacy, other_found = _privacy(other.train.images, second_synsets)
            ddm, match = other_found[variants.LABELS[variants.PAPER_DDM]], other_found[variants.LABELS[variants.DDM_MATCH]]
            second = dict(second_dataset_name=datasets.label(second_name),
                          second_nearest_real_ddm=ddm["nearest"], second_nearest_real_match=match["nearest"],
                          second_own_start_cosine_ddm=ddm["own"], second_own_start_cosine_match=match["own"],
                          second_own_start_nearest_ddm=ddm["own_nearest"],
                          second_own_start_nearest_match=match["own_nearest"],
                          second_own_start_rank_ddm=ddm["own_rank"], second_own_start_rank_match=match["own_rank"])
            second_rows, second_source = _rows(other, second_synsets), provenance(other)

    return Result(
        profile=exp.config.profile, dataset=exp.config.data.name,
        target_test_accuracy=100 * accuracy(exp.target_logits(exp.test.images), exp.test.labels),
        target_final_loss=float(trajectory.losses[-1]),
        loss_alg1=_final_loss(synsets[variants.PAPER_DDM]), loss_eq6=_final_loss(synsets[variants.DDM_EQ6]),
        loss_lr_img_10=_final_loss(lr10),
        classifier_cosine_ddm=_classifier(synsets[variants.PAPER_DDM]),
        classifier_cosine_soft=_classifier(synsets[variants.DDM_SOFT]),
        classifier_cosine_match=_classifier(synsets[variants.DDM_MATCH]),
        nearest_real_start=found[REAL_START]["nearest"],
        nearest_real_ddm=own[variants.PAPER_DDM]["nearest"], nearest_real_match=own[variants.DDM_MATCH]["nearest"],
        nearest_real_soft=own[variants.DDM_SOFT]["nearest"],
        own_start_cosine_ddm=own[variants.PAPER_DDM]["own"], own_start_cosine_eq6=own[variants.DDM_EQ6]["own"],
        own_start_cosine_match=own[variants.DDM_MATCH]["own"], own_start_cosine_soft=own[variants.DDM_SOFT]["own"],
        own_start_nearest_ddm=own[variants.PAPER_DDM]["own_nearest"],
        own_start_nearest_eq6=own[variants.DDM_EQ6]["own_nearest"],
        own_start_nearest_match=own[variants.DDM_MATCH]["own_nearest"],
        own_start_nearest_soft=own[variants.DDM_SOFT]["own_nearest"],
        own_start_rank_ddm=own[variants.PAPER_DDM]["own_rank"], own_start_rank_eq6=own[variants.DDM_EQ6]["own_rank"],
        own_start_rank_match=own[variants.DDM_MATCH]["own_rank"],
        own_start_rank_soft=own[variants.DDM_SOFT]["own_rank"],
        **second,
        layer_cosines=_layer_table(labelled), privacy=privacy, second_privacy=second_privacy,
        synsets=synsets, lr_img_10=lr10, rows=_rows(exp, synsets), source=provenance(exp), second_note=note,
        second_synsets=second_synsets, second_rows=second_rows, second_source=second_source,
        settings=datasets.settings_line(exp.config.profile, exp.config.data.name, exp.config.to_dict()),
    )


# ------------------------------------------------------------------------------------------ figures
def loss_figure(result: Result):
    """The matching objective of every synset over the distillation steps."""
    histories = {variants.LABELS[v]: s.loss_history for v, s in result.synsets.items()}
    histories[LR_IMG_LABEL] = result.lr_img_10.loss_history
    return plots.loss_curves(histories, result.source)


def _clusters(synsets: dict[str, Synset]) -> list[str]:
    return [f"cluster {int(k)}" for k in next(iter(synsets.values())).cluster]


def synset_figure(result: Result):
    """Fig. 4 of this run (Fig. 5 on Tiny ImageNet): the real starting image of each cluster, then
    each synset's image."""
    title = "One synthetic image per cluster: its real starting image, then each synset"
    if paper_figure(result.dataset) == "Fig. 5":
        title = f"The paper's Fig. 5, {datasets.label(result.dataset)}. {title}"
    return plots.image_rows(result.rows, result.source, title, max_images=FIGURE_COLUMNS,
                            column_labels=_clusters(result.synsets))


def second_figure(result: Result):
    """Fig. 4 on the second data set (Fig. 5 when that is Tiny ImageNet; None when there is none)."""
    if result.second_rows is None or result.second_synsets is None:
        return None
    title = f"{result.second_dataset_name}: real starting image, then DDM-match and DDM"
    if paper_figure(result.second_dataset_name) == "Fig. 5":
        title = f"The paper's Fig. 5, {title}"
    return plots.image_rows(result.second_rows, result.second_source, title, max_images=FIGURE_COLUMNS,
                            column_labels=_clusters(result.second_synsets))


# ------------------------------------------------------------------------------------------ paper, verdict
def paper_values(dataset: str) -> dict:
    """The paper prints no number for this chapter: Fig. 4 (MNIST, CIFAR-100) and Fig. 5 (Tiny
    ImageNet) only show synsets and claim, by eye, that reverse matching leaks less of the
    training images than plain gradient matching."""
    del dataset
    return {}


def _memorisation_line(name: str, cosine, nearest, rank) -> str:
    if cosine >= NEAR_COPY_COSINE:
        kind = "near-copies of their starting images"
    elif cosine >= MOVED_AWAY_COSINE:
        kind = "still partly their starting images"
    else:
        kind = "moved away from their starting images"
    where = ""
    if nearest is not None and rank is not None:
        most = "most" if nearest >= OWN_NEAREST_MOST else "a minority"
        where = (f"; its own start is still the nearest real image for {nearest:.0f}% of them ({most}), "
                 f"median rank {rank:g} among the real images")
    return f"  * {name}: mean cosine to its own start {cosine:.2f}{where}: on average the images are **{kind}**."


def _memorisation(run: RunNumbers, prefix: str, names: dict[str, str]) -> list[str]:
    lines = []
    for suffix, name in names.items():
        if run.has(f"{prefix}own_start_cosine_{suffix}"):
            lines.append(_memorisation_line(name, run[f"{prefix}own_start_cosine_{suffix}"],
                                            run[f"{prefix}own_start_nearest_{suffix}"],
                                            run[f"{prefix}own_start_rank_{suffix}"]))
    return lines


def _privacy_line(ddm: float, match: float, where: str = "", figure: str = "Fig. 4") -> str:
    head = f"* **Privacy ({figure}){where}.** Mean cosine to the nearest real image: DDM {ddm:.3f}, DDM-match {match:.3f} "
    head += f"(a side is called when they differ by more than {PRIVACY_MARGIN:g}): "
    if ddm < match - PRIVACY_MARGIN:
        return head + "reverse-matched images are farther from every real image; the paper's claim holds here."
    if ddm > match + PRIVACY_MARGIN:
        return head + ("reverse-matched images are *closer* to the real images than plain-GM ones; the paper's "
                       "claim is contradicted here.")
    return head + "no difference beyond the margin; the paper's visual claim is not supported by this measurement."


def _reading(run: RunNumbers) -> list[str]:
    lines = []
    if run.has("classifier_cosine_ddm", "classifier_cosine_soft"):
        hard, soft = run["classifier_cosine_ddm"], run["classifier_cosine_soft"]
        text = (f"* **Classifier layer.** With hard labels the synset's classifier gradient ends at cosine {hard:+.2f} "
                f"with the reversed real gradient; with learnable soft labels (DDM+, ours) at {soft:+.2f} (called a fix "
                f"above a gain of {SOFT_LABEL_GAIN:g}): "
                + ("soft labels fix the sign problem explained above." if soft > hard + SOFT_LABEL_GAIN else
                   "soft labels did not help here."))
        if run.has("classifier_cosine_match"):
            match = run["classifier_cosine_match"]
            text += (f" Plain matching (DDM-match), whose target is not reversed, reaches {match:+.2f} on the same "
                     "layer" + (": the reversal, not the layer, is what hard labels cannot follow."
                                if match > hard + SOFT_LABEL_GAIN else "."))
        lines.append(text)
    if run.has("loss_alg1", "loss_lr_img_10"):
        alg1, lr10 = run["loss_alg1"], run["loss_lr_img_10"]
        if lr10 < LOSS_RATIO_CLEAR * alg1:
            said = "a clearly lower objective than Table 5's 0.1"
        elif alg1 < LOSS_RATIO_CLEAR * lr10:
            said = "a clearly higher objective than Table 5's 0.1"
        else:
            said = "about the same objective as Table 5's 0.1"
        lines.append(f"* **Image learning rate.** Sec. 4.1's rate of {LR_IMG_SEC41:g} ends at matching loss {lr10:.3g} "
                     f"per cluster against {alg1:.3g}: {said} in the same number of steps (\"clearly\" means below "
                     f"{LOSS_RATIO_CLEAR:g} times the other).")
    if run.has("nearest_real_ddm", "nearest_real_match"):
        lines.append(_privacy_line(run["nearest_real_ddm"], run["nearest_real_match"],
                                   figure=paper_figure(run.dataset)))
    names = {"ddm": "DDM (Alg. 1)", "eq6": "DDM (Eq. 6)", "match": "DDM-match", "soft": "DDM+ (ours, soft labels)"}
    found = _memorisation(run, "", names)
    if found:
        lines.append(f"* **Memorisation.** Every synthetic image starts as a real training image. Images are called "
                     f"near-copies of it at a mean cosine to it of {NEAR_COPY_COSINE:g} or more and moved away below "
                     f"{MOVED_AWAY_COSINE:g}; \"most\" still have it as their nearest real image when at least "
                     f"{OWN_NEAREST_MOST:g}% do:")
        lines.extend(found)
    if run.has("second_nearest_real_ddm", "second_nearest_real_match"):
        where = f", {run['second_dataset_name']}" if run["second_dataset_name"] else ", second data set"
        lines.append(_privacy_line(run["second_nearest_real_ddm"], run["second_nearest_real_match"], where,
                                   paper_figure(run["second_dataset_name"])))
        found = _memorisation(run, "second_", {"ddm": "DDM (Alg. 1)", "match": "DDM-match"})
        if found:
            lines.append(f"* **Memorisation{where}** (the same thresholds):")
            lines.extend(found)
    return lines


def verdict(result: Result, recorded=()) -> str:
    """Plain words from the numbers of this run and of every recorded run."""
    return verdict_for(_reading, result, recorded)
