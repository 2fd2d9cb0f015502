"""The data-set registry: everything the package knows about a data set, in one entry.

A data set's loader kind, the label the book prints, the column of the paper it is compared with,
its normalisation and its class count live here and nowhere else: :mod:`ddm.data` loads by the
entry's ``loader``, :mod:`ddm.book` prints its ``label``, :mod:`ddm.paper` and the chapters look up
its ``paper_key``, and :mod:`ddm.results` names records by the entry's name. Adding a data set is
one entry below (plus, for a new loader kind, its branch in :func:`ddm.data.load_dataset`).

``folder:PATH`` (any image folder) is not an entry: :func:`spec` builds one on the fly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class DatasetSpec:
    """One data set as the package sees it."""

    name: str                            # the name a configuration uses (DataConfig.name)
    label: str                           # how the book names it
    loader: str                          # sklearn-digits | torchvision | image-folder | tiny-imagenet
    num_classes: int | None              # L; None when only the files can tell (an image folder)
    mean: tuple[float, ...]              # per-channel mean of [0, 1] pixels (training split)
    std: tuple[float, ...]               # per-channel standard deviation
    paper_key: str | None = None         # the paper's column this data set is compared with
    subfolder: str | None = None         # under the data root (None: not read from the data root)
    note: str = ""                       # a caveat the book prints beside its numbers


# Per-channel statistics on [0, 1] pixel values, each computed on the training split.
# digits: the train split of ddm.data._digits_split (1,347 images, values / 16):
#   ``x = load_digits().images[train] / 16; x.mean(), x.std()`` -> 0.30522, 0.37601.
# MNIST: the usual published values (the shared README confirms them on the exact files).
# CIFAR-10 / CIFAR-100: per-pixel mean and standard deviation of the official train splits (some
#   dataset-distillation code uses std (0.2023, 0.1994, 0.2010) for CIFAR-10, which is not the
#   per-pixel std; the choice only rescales the inputs).
# Tiny ImageNet: the values used by the dataset-distillation literature (DC/DSA/MTT).
# folder:PATH: 0.5 maps [0, 1] to [-1, 1]; it needs no pass over the reader's data.
_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("digits", "scikit-learn digits (8x8)", "sklearn-digits", 10, (0.3052,), (0.3760,),
                note="not in the paper: the offline default"),
    DatasetSpec("mnist", "MNIST", "torchvision", 10, (0.1307,), (0.3081,), "mnist", "mnist"),
    DatasetSpec("cifar10", "CIFAR-10", "torchvision", 10, *_CIFAR10, "cifar10", "cifar10"),
    DatasetSpec("cifar10-jpeg", "CIFAR-10 (JPEG copy)", "image-folder", 10, *_CIFAR10, "cifar10",
                "cifar10-jpeg", note="an approximate JPEG copy of CIFAR-10, compared with the paper's CIFAR-10"),
    DatasetSpec("cifar100", "CIFAR-100", "torchvision", 100, (0.5071, 0.4865, 0.4409),
                (0.2673, 0.2564, 0.2762), "cifar100", "cifar100"),
    DatasetSpec("tiny-imagenet", "Tiny ImageNet", "tiny-imagenet", 200, (0.4802, 0.4481, 0.3975),
                (0.2770, 0.2691, 0.2821), "tiny-imagenet", "tiny-imagenet-200"),
)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


class UnknownDataset(ValueError):
    """A data set name that is neither a registry entry nor ``folder:PATH``."""


def spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; ``folder:PATH`` gets an entry made for it."""
    if not isinstance(name, str):
        raise UnknownDataset(f"data set name must be a string such as 'digits' or 'folder:PATH', got {name!r}")
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX):].strip()
        return DatasetSpec(name, f"image folder {path}", "image-folder", None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                           note="the reader's own images: the paper has no column for them")
    if name not in REGISTRY:
        raise UnknownDataset(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}, or 'folder:PATH' "
                             "for an image folder PATH/{train,test}/<class>/")
    return REGISTRY[name]


def label(name: str) -> str:
    """How the book names a data set; an unknown name is printed as it is."""
    try:
        return spec(name).label
    except UnknownDataset:
        return name


def paper_key(name: str) -> str | None:
    """The paper's data set a run on ``name`` is compared with (None: the paper never used it)."""
    try:
        return spec(name).paper_key
    except UnknownDataset:
        return None


# ------------------------------------------------------------------------------------------ per-profile settings
@dataclass(frozen=True)
class ProfileSettings:
    """Settings a profile changes for one data set, where the profile's own do not fit it, and why.

    ``overrides`` are dotted configuration fields (``"clusters.clusters_per_class"``) applied over
    the profile's own, before the reader's overrides (see :func:`ddm.config.get_profile`)."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""


# (profile, data set) -> its settings there. Absent: the profile's own (every record of MNIST and
# the CIFAR-10 JPEG copy uses those).
#
# Tiny ImageNet at `cpu`: the shared subset holds 50 training / 10 validation images per class
# (the profile asks for 200 / 100), it has 200 classes (the profile's C = 10 would be K = 2,000
# clusters), and its 64x64 colour images cost about 8 ms of one core per image and epoch in the
# cpu profile's ConvNet (w32, depth 3), measured on the project's 2-core machine: one epoch of
# 10,000 images ~80 s, each distillation step of K = 200 synthetic images several seconds. The
# settings below (one cluster per class, K = 200; 10 images per class; 4 epochs; Table 5's 50
# "steps for synset" for Tiny ImageNet) keep chapters 02 and 04 near 40 minutes of one core;
# chapter 04 then unlearns a seeded sample of clusters one at a time
# (ddm.chapters.unlearning.SAMPLES).
PROFILE_SETTINGS: dict[tuple[str, str], ProfileSettings] = {
    ("cpu", "tiny-imagenet"): ProfileSettings(
        overrides={"data.train_per_class": 10, "data.test_per_class": 10, "clusters.clusters_per_class": 1,
                   "train.epochs": 4, "distill.steps": 50, "distill.step_length": 2},
        reason="its 200 classes of 64x64 colour images cost far more per cluster than MNIST's: the profile's "
               "10 clusters per class (K = 2,000), 200 training images per class (the shared subset holds 50), "
               "8 epochs and 300 distillation steps would take days of a CPU core, while one cluster per class "
               "(K = 200), 10 training and 10 test images per class, 4 epochs and the 50 distillation steps of "
               "the paper's Table 5 for Tiny ImageNet keep chapters 02 and 04 near 40 minutes"),
}


def profile_settings(profile: str, name: str) -> ProfileSettings | None:
    """The settings ``profile`` changes for data set ``name`` (None: the profile's own)."""
    return PROFILE_SETTINGS.get((profile, name))


def _dotted(config: Mapping[str, Any], key: str) -> Any:
    section, name = key.split(".", 1)
    return config.get(section, {}).get(name)


def settings_line(profile: str, name: str, config: Mapping[str, Any]) -> str:
    """One line for a chapter's page: the clusters (K), sizes, epochs and distillation steps of a run
    (``config``: its :meth:`~ddm.config.ExperimentConfig.to_dict`), and, where the profile has
    settings of its own for this data set and the run uses them, which and why."""
    classes = spec(name).num_classes if name in REGISTRY else None
    per_class = _dotted(config, "clusters.clusters_per_class")
    k = f"K = {classes} x {per_class} = {classes * per_class}" if classes else f"{per_class} clusters per class"
    sizes = [("data.train_per_class", "training"), ("data.test_per_class", "test")]
    shown = ", ".join(f"{'all' if _dotted(config, key) is None else _dotted(config, key)} {what}" for key, what in sizes)
    text = (f"Settings: {k}; {shown} images per class; {_dotted(config, 'train.epochs')} epochs; "
            f"{_dotted(config, 'distill.steps')} distillation steps of step length {_dotted(config, 'distill.step_length')}.")
    settings = profile_settings(profile, name)
    if settings is not None:
        used = all(_dotted(config, key) == value for key, value in settings.overrides.items())
        if used:
            text += f" The `{profile}` profile sets these for {label(name)} because {settings.reason}."
        else:
            text += (f" (The `{profile}` profile's own settings for {label(name)} are not all in effect in this run: "
                     + ", ".join(f"{key}={value!r}" for key, value in settings.overrides.items()) + ".)")
    return text
