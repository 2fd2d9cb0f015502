"""Chapter 10: does DDM's failure depend on scale? The protocol of chapter 03 on growing training sets.

Chapter 03 found the paper's DDM ranks clusters no better than random choice on 2,000 MNIST
images. The objection "the target is tiny and under-trained" is tested here: the same
measurement (:mod:`ddm.scale`) at several training-set sizes, K fixed by the profile, every
target trained until its training loss plateaus by one stated rule (:func:`ddm.scale.plateau_epochs`),
for the paper's DDM, DDM+ (ours, soft labels), TracIn-style, nearest centroid and random choice,
beside exact retraining under another data order (the noise floor).

Every table and figure is built from headline numbers only (:func:`size_tables`,
:func:`curve_figure`), so this run and the recorded ones are shown the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ddm import datasets, evaluation, paper, scale
from ddm.book import format_number
from ddm.chapters.base import ChapterResult, RunNumbers, detail, headline, result_class, verdict_for
from ddm.experiment import Experiment
from ddm.variants import DDM_SOFT, PAPER_DDM

CHAPTER = "10_scale"

# Every size any profile measures: the headline fields exist for each (None where not measured).
ALL_SIZES = tuple(sorted({n for s in (*scale.SCALES.values(), *scale.DATASET_SCALES.values()) for n in s.sizes}))

# Method key -> the suffix of its headline fields, and how the tables and figures name it.
SUFFIXES = {PAPER_DDM: "ddm", DDM_SOFT: "ddm_soft", evaluation.TRACIN: "tracin",
            evaluation.NEAREST_CENTROID: "centroid", evaluation.RANDOM: "random",
            evaluation.NOISE_FLOOR: "noise", evaluation.EXACT: "exact", evaluation.DDM_W: "ddm_w"}
NAMES = {"ddm": "the paper's DDM", "ddm_soft": "DDM+ (ours, soft labels)", "tracin": "TracIn-style",
         "centroid": "nearest centroid", "random": "random choice", "noise": "noise floor (another data order)",
         "exact": "exact retraining's own ranking", "ddm_w": "DDM's W fitted by Eq. 8",
         "order": "nothing removed, another data order", "best": "best single pick (upper bound)"}
SPEARMAN_METHODS = ("ddm", "ddm_soft", "tracin", "centroid", "random", "noise")
LDS_METHODS = ("ddm", "ddm_w", "ddm_soft", "tracin", "centroid", "random", "noise", "exact")
DIST1_METHODS = ("ddm", "ddm_soft", "tracin", "centroid", "random", "noise", "exact", "order", "best")
INTERVAL_METHODS = ("ddm", "noise")     # whose Spearman intervals are recorded (the verdict's uncertainty)
REFERENCES = ("random", "noise", "exact", "order", "best")   # drawn grey or dashed in the figures

# Verdict thresholds, named where they are used.
BAND = 0.05            # two Spearman means (or two gaps) closer than this are called indistinguishable
RATIO_BAND = 0.1       # two Dist1 ratios (a method's pick over a random pick) closer than this count as equal
PLATEAU_NOTE = (f"trained until the mean training loss fell by less than {scale.PLATEAU_DROP} nats per epoch "
                f"over {scale.PLATEAU_WINDOW} epochs, or to the profile's cap")


def _size_fields(n: int) -> dict:
    out = {
        f"train_images_n{n}": (int | None, headline(f"{n}/class: training images", digits=6, default=None)),
        f"epochs_n{n}": (int | None, headline(f"{n}/class: epochs (tau)", digits=3, default=None, note=PLATEAU_NOTE)),
        f"plateaued_n{n}": (str | None, headline(f"{n}/class: training loss plateaued before the cap", default=None)),
        f"train_loss_n{n}": (float | None, headline(f"{n}/class: final training loss", default=None)),
        f"accuracy_n{n}": (float | None, headline(f"{n}/class: target test accuracy (%)", default=None)),
        f"protocol_n{n}": (str | None, headline(f"{n}/class: protocol", default=None)),
        f"retrains_n{n}": (int | None, headline(f"{n}/class: exact retrains", digits=5, default=None)),
    }
    for m in SPEARMAN_METHODS:
        out[f"spearman_{m}_n{n}"] = (float | None, headline(f"{n}/class: Spearman with exact, {NAMES[m]}",
                                                            digits=2, default=None))
    for m in INTERVAL_METHODS:
        for end in ("low", "high"):
            out[f"spearman_{m}_{end}_n{n}"] = (float | None, headline(
                f"{n}/class: Spearman with exact, {NAMES[m]}, 95% bootstrap interval, {end} end", digits=2,
                default=None))
    for m in LDS_METHODS:
        out[f"lds_{m}_n{n}"] = (float | None, headline(f"{n}/class: cluster LDS, {NAMES[m]}", digits=2, default=None))
    for m in DIST1_METHODS:
        out[f"dist1_x100_{m}_n{n}"] = (float | None, headline(f"{n}/class: Dist1 x100, {NAMES[m]}", default=None))
    for m in ("ddm", "ddm_soft"):
        out[f"calibration_{m}_n{n}"] = (float | None, headline(f"{n}/class: calibration |predicted| / |exact|, "
                                                               f"{NAMES[m]}", digits=2, default=None))
    return out


@dataclass(frozen=True, kw_only=True)
class _Base(ChapterResult):
    num_clusters: int = headline("clusters K", digits=5)
    test_points: int = headline("test points", digits=4)
    sizes: str = headline("training images per class measured")
    max_epochs: int = headline("epoch cap of the targets", digits=3)
    skipped_sizes: str = headline("sizes the data set could not afford (empty: none)")


Result = result_class(_Base, {k: v for n in ALL_SIZES for k, v in _size_fields(n).items()},
                      [("points", list, detail())], __name__)


def _fields_of(point: scale.SizePoint) -> dict:
    n = point.per_class
    out = {f"train_images_n{n}": point.train_images, f"epochs_n{n}": point.epochs,
           f"plateaued_n{n}": "yes" if point.plateaued else "no (cap)", f"train_loss_n{n}": point.final_train_loss,
           f"accuracy_n{n}": point.test_accuracy, f"protocol_n{n}": point.protocol, f"retrains_n{n}": point.retrains,
           f"dist1_x100_order_n{n}": point.dist1_x100_order, f"dist1_x100_best_n{n}": point.dist1_x100_best}
    for key, value in point.spearman.items():
        out[f"spearman_{SUFFIXES[key]}_n{n}"] = value
    for key, value in point.lds.items():
        out[f"lds_{SUFFIXES[key]}_n{n}"] = value
    for key, value in point.dist1_x100.items():
        out[f"dist1_x100_{SUFFIXES[key]}_n{n}"] = value
    for key, value in point.calibration.items():
        out[f"calibration_{SUFFIXES[key]}_n{n}"] = value
    for key, (low, high) in point.intervals.items():
        if SUFFIXES[key] in INTERVAL_METHODS:
            out[f"spearman_{SUFFIXES[key]}_low_n{n}"], out[f"spearman_{SUFFIXES[key]}_high_n{n}"] = low, high
    return out


def run(exp: Experiment, config: scale.ScaleConfig | None = None) -> Result:
    """The scale study at the profile's sizes (``config`` overrides them), smallest first."""
    config = config or scale.scale_config(exp.config.profile, exp.config.data.name)
    unknown = sorted(set(config.sizes) - set(ALL_SIZES))
    if unknown:
        raise ValueError(f"the chapter has headline fields for {ALL_SIZES} images per class, not {unknown}: "
                         f"measure other sizes with ddm.scale.measure, or add a profile's sizes to ddm.scale.SCALES")
    measured = scale.measure(exp, config)
    values: dict = {}
    for point in measured.points:
        values.update(_fields_of(point))
    return Result(profile=exp.config.profile, dataset=exp.config.data.name,
                  num_clusters=exp.clusters().num_clusters, test_points=len(exp.test_point_indices()),
                  sizes=", ".join(str(n) for n in config.sizes), max_epochs=config.max_epochs,
                  skipped_sizes="; ".join(f"{n}/class ({why})" for n, why in measured.skipped.items()),
                  points=measured.points, **values)


def provenance(result: Result) -> str:
    """The figure's footer: the sizes vary, so the footer names them instead of one training set."""
    return (f"profile {result.profile} · {datasets.label(result.dataset)} · K = {result.num_clusters} · "
            f"{result.sizes} images per class · at most {result.max_epochs} epochs")


def paper_values(dataset: str) -> dict:
    """The paper measures nothing at other training-set sizes; its target accuracy (Table 4's
    Acc_tau of the full data set) is shown in the targets table instead (:func:`size_tables`)."""
    return {}


# ------------------------------------------------------------------------------------------ tables
def _sizes(run: RunNumbers) -> list[int]:
    return [n for n in ALL_SIZES if run[f"train_images_n{n}"] is not None]


def paper_accuracy(dataset: str) -> float | None:
    """The paper's target accuracy on the full data set (Table 4, Acc_tau of "Normal")."""
    key = datasets.paper_key(dataset)
    row = paper.TABLE4.get(key or "", {}).get("Normal")
    return row[1] if row else None


def size_tables(run: RunNumbers) -> dict[str, pd.DataFrame]:
    """One run's numbers as tables, one row per size: the targets, Spearman, LDS and Dist1."""
    sizes = _sizes(run)
    index = pd.Index([f"{n}/class" for n in sizes], name="training set")
    acc = paper_accuracy(run.dataset)
    targets = pd.DataFrame({
        "images": [format_number(run[f"train_images_n{n}"]) for n in sizes],
        "epochs": [format_number(run[f"epochs_n{n}"]) for n in sizes],
        "loss plateaued": [run[f"plateaued_n{n}"] for n in sizes],
        "final training loss": [format_number(run[f"train_loss_n{n}"]) for n in sizes],
        "test accuracy (%)": [format_number(run[f"accuracy_n{n}"]) for n in sizes],
        "paper, full data set (%)": [format_number(acc) for _ in sizes],
        "protocol": [run[f"protocol_n{n}"] for n in sizes],
        "exact retrains": [format_number(run[f"retrains_n{n}"]) for n in sizes],
    }, index=index)

    def block(prefix: str, methods: tuple[str, ...], digits: int) -> pd.DataFrame:
        frame = pd.DataFrame({NAMES[m]: [format_number(run[f"{prefix}_{m}_n{n}"], digits) for n in sizes]
                              for m in methods}, index=index)
        return frame.loc[:, (frame != "").any(axis=0)]

    return {"targets": targets, "spearman": block("spearman", SPEARMAN_METHODS, 2),
            "lds": block("lds", LDS_METHODS, 2), "dist1": block("dist1_x100", DIST1_METHODS, 3)}


# ------------------------------------------------------------------------------------------ verdict
def _n(value: float) -> str:
    return format_number(value, 2)


def _reading(run: RunNumbers) -> list[str]:
    full = [n for n in _sizes(run) if run.has(f"spearman_ddm_n{n}", f"spearman_noise_n{n}")]
    lines = []
    acc = paper_accuracy(run.dataset)
    sizes = _sizes(run)
    if run["skipped_sizes"]:
        lines.append(f"- Not measured, the data set has too few images per class: {run['skipped_sizes']}.")
    if sizes:
        accs = ", ".join(f"{_n(run[f'accuracy_n{n}'])}% at {n}/class" for n in sizes)
        lines.append(f"- Target accuracy {accs}" + (f" (the paper's, on the full data set: {acc:g}%)." if acc else "."))
    for n in full:
        ddm, floor, rand = run[f"spearman_ddm_n{n}"], run[f"spearman_noise_n{n}"], run[f"spearman_random_n{n}"]
        words = ("indistinguishable from random choice" if abs(ddm - rand) <= BAND else
                 "below random choice" if ddm < rand else "above random choice")
        lines.append(f"- {n}/class: the paper's DDM {_n(ddm)} ({words}, {_n(rand)}); DDM+ (ours, soft labels) "
                     f"{_n(run[f'spearman_ddm_soft_n{n}'])}; TracIn-style {_n(run[f'spearman_tracin_n{n}'])}; "
                     f"noise floor {_n(floor)}.")
    if len(full) >= 2:
        small, large = full[0], full[-1]
        gap_small = run[f"spearman_noise_n{small}"] - run[f"spearman_ddm_n{small}"]
        gap_large = run[f"spearman_noise_n{large}"] - run[f"spearman_ddm_n{large}"]
        if gap_large < gap_small - BAND:
            trend = "**closes in on the noise floor** as the training set grows"
        elif gap_large > gap_small + BAND:
            trend = "**falls further behind the noise floor** as the training set grows"
        else:
            trend = "**stays as far from the noise floor** as the training set grows"
        widths = [run[f"spearman_ddm_high_n{n}"] - run[f"spearman_ddm_low_n{n}"] for n in (small, large)
                  if run.has(f"spearman_ddm_high_n{n}", f"spearman_ddm_low_n{n}")]
        uncertainty = (f" Each of these means rests on {run['test_points']} test points; DDM's 95% bootstrap "
                       f"interval is about {_n(max(widths) / 2)} either side, so a change smaller than that is "
                       f"within sampling noise." if widths and run.has("test_points") else "")
        lines.append(f"- Trend: from {small} to {large} images per class the gap between the noise floor and the "
                     f"paper's DDM goes from {_n(gap_small)} to {_n(gap_large)}: DDM {trend} (a change within "
                     f"{BAND} counts as none).{uncertainty}")
    located = [n for n in sizes if n not in full and run.has(f"dist1_x100_ddm_n{n}", f"dist1_x100_random_n{n}")]
    for n in located:
        lines.append(f"- {n}/class (Dist1 protocol only: located clusters retrained): Dist1 x100 of the located "
                     f"cluster, the paper's DDM {_n(run[f'dist1_x100_ddm_n{n}'])}, DDM+ (ours, soft labels) "
                     f"{_n(run[f'dist1_x100_ddm_soft_n{n}'])}, TracIn-style {_n(run[f'dist1_x100_tracin_n{n}'])}, "
                     f"random choice {_n(run[f'dist1_x100_random_n{n}'])}"
                     + (f"; nothing removed under another data order {_n(run[f'dist1_x100_order_n{n}'])}"
                        if run.has(f"dist1_x100_order_n{n}") else "") + ".")
    return lines + _dist1_trend(run, sizes)


def _dist1_ratio(run: RunNumbers, method: str, n: int) -> float | None:
    """How many times as far as a random cluster's removal the removal of ``method``'s located
    cluster moves the output at ``n``/class (Dist1 x100 over Dist1 x100; None if unmeasured)."""
    if not run.has(f"dist1_x100_{method}_n{n}", f"dist1_x100_random_n{n}") or run[f"dist1_x100_random_n{n}"] <= 0:
        return None
    return run[f"dist1_x100_{method}_n{n}"] / run[f"dist1_x100_random_n{n}"]


def _dist1_trend(run: RunNumbers, sizes: list[int]) -> list[str]:
    """The trend every size can show, full protocol or not: the paper's DDM's located cluster
    against a random one, at the smallest and the largest size (TracIn-style beside it)."""
    measured = [n for n in sizes if _dist1_ratio(run, "ddm", n) is not None]
    if len(measured) < 2:
        return []
    small, large = measured[0], measured[-1]
    ddm = {n: _dist1_ratio(run, "ddm", n) for n in (small, large)}
    if ddm[large] > ddm[small] + RATIO_BAND:
        trend = "**gains on random choice**"
    elif ddm[large] < ddm[small] - RATIO_BAND:
        trend = "**loses ground to random choice**"
    else:
        trend = "**keeps the same distance from random choice**"
    tracin = {n: _dist1_ratio(run, "tracin", n) for n in (small, large)}
    beside = (f" TracIn-style's located cluster: {_n(tracin[small])} and {_n(tracin[large])} times a random one."
              if None not in tracin.values() else "")
    return [f"- Trend over every size, by Dist1: deleting the cluster the paper's DDM locates moves the output "
            f"{_n(ddm[small])} times as far as deleting a random cluster at {small}/class, and {_n(ddm[large])} "
            f"times at {large}/class: DDM {trend} as the training set grows (ratios within {RATIO_BAND:g} count as "
            f"equal; above 1 is better than random).{beside}"]


def verdict(result: Result, recorded=()) -> str:
    """The trend of DDM's agreement with exact retraining against size, this run and the recorded ones."""
    return verdict_for(_reading, result, recorded)


# ------------------------------------------------------------------------------------------ figures
def curve_figure(runs: list[RunNumbers], provenance: str):
    """One row per run (this one, then the recorded ones): Spearman, LDS and Dist1 x100 against
    training images per class (log scale), one line per method; the noise floor dashed black,
    its 95% bootstrap interval shaded (Spearman)."""
    import matplotlib.pyplot as plt

    from ddm.plots import _footer

    panels = (("spearman", SPEARMAN_METHODS, "mean Spearman with exact retraining"),
              ("lds", LDS_METHODS, "cluster LDS"),
              ("dist1_x100", DIST1_METHODS, "Dist1 x100 of the located cluster"))
    styles = {"ddm": ("C3", "-", "o"), "ddm_w": ("C1", "-", "v"), "ddm_soft": ("C0", "-", "s"),
              "tracin": ("C2", "-", "^"), "centroid": ("C4", "-", "D"), "random": ("0.55", ":", "x"),
              "noise": ("black", "--", None), "exact": ("0.3", "-.", None), "order": ("0.3", ":", "+"),
              "best": ("0.6", "-.", None)}
    runs = [r for r in runs if _sizes(r)]
    fig, axes = plt.subplots(len(runs), 3, figsize=(14, 3.6 * len(runs) + 1.2), squeeze=False)
    for row, run in zip(axes, runs):
        sizes = _sizes(run)
        for ax, (prefix, methods, label) in zip(row, panels):
            for m in methods:
                xs = [n for n in sizes if run[f"{prefix}_{m}_n{n}"] is not None]
                if not xs:
                    continue
                colour, style, marker = styles[m]
                ax.plot(xs, [run[f"{prefix}_{m}_n{n}"] for n in xs], color=colour, ls=style, marker=marker,
                        label=NAMES[m], lw=1.6)
            if prefix == "spearman":
                xs = [n for n in sizes if run.has(f"spearman_noise_low_n{n}", f"spearman_noise_high_n{n}")]
                if xs:
                    ax.fill_between(xs, [run[f"spearman_noise_low_n{n}"] for n in xs],
                                    [run[f"spearman_noise_high_n{n}"] for n in xs], color="0.8", alpha=0.6,
                                    label="noise floor, 95% interval")
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.minorticks_off()
            ax.set_xlabel("training images per class")
            ax.set_title(f"{label}\n{run.where}", fontsize=9)
    handles = {}
    for ax in axes.flat:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.25 / fig.get_figheight()))
    fig.suptitle("Does DDM's agreement with exact retraining grow with the training set?", fontsize=11)
    fig.tight_layout(rect=(0, 1.3 / fig.get_figheight(), 1, 0.97))
    _footer(fig, provenance)
    return fig
