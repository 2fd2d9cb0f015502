"""Image data sets: one loader, one tensor container, balanced seeded subsets.

Every data set comes back as an :class:`ImageData`: all images as one normalised float tensor of
shape ``(N, C, H, W)``, their integer labels, and the index of each image in the full split it
came from (its provenance, stored with every artifact built on it). The data sets are small enough
for the experiments of the paper to hold in memory, which keeps the rest of the package free of
data loaders.

Names understood by :func:`load_dataset` (``DATASETS``, plus ``folder:PATH``):

- ``digits``: scikit-learn's bundled 8x8 digits, the offline default (no files needed);
- ``mnist``, ``cifar10``, ``cifar100``: torchvision's copies under the data root, downloaded only
  when ``download=True``;
- ``cifar10-jpeg``: an approximate JPEG copy of CIFAR-10 in ImageFolder layout;
- ``tiny-imagenet``: Tiny ImageNet 200 as the official ``tiny-imagenet-200.zip`` unpacks
  (``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``),
  or with ``val`` reorganised into ``val/<wnid>/`` class folders; its ``val`` split is the test split;
- ``folder:PATH``: any ImageFolder layout ``PATH/{train,test}`` (or ``PATH/val`` for the test split).
  Its channel count follows the files: 1 when every chosen file is grey-scale, 3 when every one is
  colour (a mix is an error); the registry's image-folder sets are always decoded as RGB.

Invariant: for any ``per_class``, ``sub = load_dataset(name, split, root, per_class, seed)``
satisfies ``sub.images == load_dataset(name, split, root).images[sub.source_indices]`` (and the
same for the labels). For ImageFolder sets and Tiny ImageNet only the chosen files are decoded, and
only after the whole layout of the split has been checked and the headers of the chosen files read
(their PIL mode and size: a mix of grey-scale and colour, or of sizes, fails before any pixel is
decoded). The two splits of one data set must agree (classes, channels, size): see
:func:`check_splits_agree`.

This module reads no environment variables; :func:`ddm.config.resolve_data_root` does.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import functional as TF

from ddm import datasets as registry

__all__ = ["DATASETS", "DataError", "ImageData", "balanced_subset_indices", "check_splits_agree", "load_dataset"]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test")
DATASETS: tuple[str, ...] = registry.NAMES
FOLDER_PREFIX = registry.FOLDER_PREFIX

# Normalisation, labels and loader kinds come from the registry (ddm.datasets).

_ROOT_FIX = "set DDM_DATA_ROOT / the data_root parameter to a folder containing {layout}"


class DataError(ValueError):
    """A bad data set name, split, subset size, layout or file. The message says how to fix it."""


@dataclass(frozen=True, eq=False)
class ImageData:
    """A whole split (or a balanced subset of it) held in memory.

    When ``name`` is ``"cifar10-jpeg"`` the images come from a JPEG-compressed copy of CIFAR-10 that is
    not pixel-exact (mean absolute error about 5.8/255; models score 2-3 points lower): label every
    result obtained from it "CIFAR-10 (JPEG copy)", never plain "CIFAR-10".
    """

    images: torch.Tensor  # shape: (N, C, H, W), float32, (x - mean) / std per channel
    labels: torch.Tensor  # shape: (N,), int64 in [0, num_classes)
    source_indices: torch.Tensor  # shape: (N,), int64, index of each image in the full split
    classes: tuple[str, ...]  # class names; classes[label] names a label
    name: str  # data set name as given to load_dataset
    split: str  # "train" | "test"
    mean: tuple[float, ...]  # per-channel mean used to normalise, on [0, 1]
    std: tuple[float, ...]  # per-channel std used to normalise, on [0, 1]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.labels.shape != (n,) or self.source_indices.shape != (n,):
            raise DataError(
                f"inconsistent ImageData shapes: images {tuple(self.images.shape)}, labels "
                f"{tuple(self.labels.shape)}, source_indices {tuple(self.source_indices.shape)}; "
                "build it with images (N, C, H, W) and labels/source_indices of shape (N,)"
            )
        if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
            raise DataError(
                f"mean/std have {len(self.mean)}/{len(self.std)} entries but the images have "
                f"{self.images.shape[1]} channels; give one mean and one std per channel"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the images (width equals it for every built-in set)."""
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def denormalise(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation for plotting: ``clamp(x * std + mean, 0, 1)``.

        ``images`` has shape ``(..., C, H, W)`` (a batch or one image); synthetic images may leave
        the valid range, hence the clamp.
        """
        images = torch.as_tensor(images)
        shape = (len(self.mean), 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images * std + mean).clamp(0.0, 1.0)


def _check_per_class(per_class: object) -> None:
    if per_class is None:
        return
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise DataError(f"per_class must be a positive integer or None (all images), got {per_class!r}")


def balanced_subset_indices(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` items drawn per label without replacement.

    Classes are visited in increasing label order with one ``numpy.random.default_rng(seed)``, so the
    result depends only on ``(labels, per_class, seed)``. ``per_class=None`` returns every index.
    """
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    _check_per_class(per_class)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if per_class > len(members):
            raise DataError(
                f"per_class={per_class} but label {label} has only {len(members)} images; "
                f"pass per_class <= {len(members)} or None"
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def load_dataset(
    name: str,
    split: str,
    root: Path,
    per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
    image_size: int | None = None,
) -> ImageData:
    """Load a split of a data set, optionally a balanced subset of ``per_class`` images per class.

    Args:
        name: one of ``DATASETS`` or ``"folder:PATH"`` (PATH absolute, or relative to the working
            directory).
        split: ``"train"`` or ``"test"`` (Tiny ImageNet's and a folder's ``val`` serve as test).
        root: the data root (see :func:`ddm.config.resolve_data_root`); unused by ``digits`` and
            ``folder:PATH``.
        per_class: images per class, drawn by :func:`balanced_subset_indices`; ``None`` for all.
        seed: seed of the subset (``digits``' train/test split never depends on it).
        download: let torchvision download MNIST/CIFAR into ``root`` when missing (needs internet).
        image_size: resize every image to ``image_size x image_size`` (antialiased bilinear);
            ``None`` keeps the stored size and requires all images of a folder to share it.

    Raises:
        DataError: for every bad input; the message names the problem and the fix.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; pass split='train' or split='test'")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None (keep the stored size), got {image_size!r}")
    _check_per_class(per_class)
    root = Path(root).expanduser()

    if not isinstance(name, str):
        raise DataError(f"data set name must be a string such as 'digits' or 'folder:PATH', got {name!r}")
    try:
        entry = registry.spec(name)
    except registry.UnknownDataset as error:
        raise DataError(str(error)) from None
    if entry.loader == "image-folder" and name.startswith(FOLDER_PREFIX):
        text = name[len(FOLDER_PREFIX):].strip()
        if not text:
            raise DataError("folder: needs a path, e.g. name='folder:/data/my_images' with my_images/{train,test}/<class>/")
        path = Path(text).expanduser()
        return _load_folder(name, split, _folder_split_dir(path, split), entry.mean, entry.std,
                            per_class, seed, image_size, mode=None)
    if entry.loader == "sklearn-digits":
        return _load_digits(split, per_class, seed, image_size)
    if entry.loader == "torchvision":
        return _load_torchvision(name, split, root, per_class, seed, download, image_size)
    if entry.loader == "image-folder":
        directory = root / entry.subfolder / split
        if not directory.is_dir():
            raise DataError(
                f"{entry.label} not found: expected the ImageFolder {directory}/<class>/*.jpg. "
                "torchvision cannot download this copy; "
                + _ROOT_FIX.format(layout=f"{entry.subfolder}/{{train,test}}/<class>/")
                + ", or use name='cifar10' with download=True for the official files"
            )
        return _load_folder(name, split, directory, entry.mean, entry.std, per_class, seed, image_size, mode="RGB")
    if entry.loader == "tiny-imagenet":
        classes, paths, labels, where = _list_tiny_imagenet(root, split, entry.subfolder or "tiny-imagenet-200")
        # Tiny ImageNet holds some grey-scale JPEGs (about 2%): decoded as RGB like the rest.
        return _decode_listing(name, split, where, classes, paths, labels, entry.mean, entry.std,
                               per_class, seed, image_size, mode="RGB")
    raise DataError(f"data set {name!r} has loader kind {entry.loader!r}, which ddm.data does not know; "
                    "add its branch to load_dataset")


def _stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    entry = registry.spec(name)
    return entry.mean, entry.std


# --- built-in sets ---------------------------------------------------------------------------


def _digits_split(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified 75/25 split of the 1,797 digits (sorted bundle indices), seed-free."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        np.arange(len(targets)), test_size=0.25, random_state=0, stratify=targets
    )
    return np.sort(train), np.sort(test)


def _load_digits(split: str, per_class: int | None, seed: int, image_size: int | None) -> ImageData:
    from sklearn.datasets import load_digits

    bundle = load_digits()
    train, test = _digits_split(bundle.target)
    rows = train if split == "train" else test
    pixels = bundle.images[rows].astype(np.float32) / 16.0  # shape: (n, 8, 8), on [0, 1]
    labels = bundle.target[rows].astype(np.int64)
    chosen = _subset(labels, per_class, seed, tuple(str(d) for d in range(10)), "digits")
    images = torch.from_numpy(pixels[chosen]).unsqueeze(1)  # shape: (n, 1, 8, 8)
    return _finish("digits", split, images, labels[chosen], chosen, tuple(str(d) for d in range(10)),
                   *_stats('digits'), image_size)


_TORCHVISION_LAYOUT = {
    "mnist": ("mnist", "mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"),
    "cifar10": ("cifar10", "cifar10/cifar-10-batches-py/"),
    "cifar100": ("cifar100", "cifar100/cifar-100-python/"),
}


def _load_torchvision(name: str, split: str, root: Path, per_class: int | None, seed: int,
                      download: bool, image_size: int | None) -> ImageData:
    from torchvision import datasets

    folder, layout = _TORCHVISION_LAYOUT[name]
    directory = root / folder
    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    try:
        dataset = cls(root=str(directory), train=split == "train", download=download)
    except (RuntimeError, OSError) as error:
        if download:
            raise DataError(
                f"could not download {name} into {directory} ({error}); check the internet connection, "
                "or download=False and " + _ROOT_FIX.format(layout=layout)
            ) from error
        raise DataError(
            f"{name} not found: expected {root / layout}. Pass download=True when online, or "
            + _ROOT_FIX.format(layout=layout)
        ) from error
    if name == "mnist":
        pixels = dataset.data.numpy()[:, None]  # shape: (n, 1, 28, 28), uint8
        classes = tuple(str(d) for d in range(10))
    else:
        pixels = np.asarray(dataset.data).transpose(0, 3, 1, 2)  # shape: (n, 3, 32, 32), uint8
        classes = tuple(dataset.classes)
    labels = np.asarray(dataset.targets, dtype=np.int64)
    chosen = _subset(labels, per_class, seed, classes, name)
    images = torch.from_numpy(np.ascontiguousarray(pixels[chosen])).float().div_(255.0)
    mean, std = _stats(name)
    return _finish(name, split, images, labels[chosen], chosen, classes, mean, std, image_size)


def _folder_split_dir(path: Path, split: str) -> Path:
    """``path/train`` for the train split; ``path/test``, else ``path/val``, for the test split."""
    if not path.is_dir():
        raise DataError(
            f"image folder {path} does not exist; pass name='folder:PATH' with PATH/train/<class>/ and "
            "PATH/test/<class>/ (or PATH/val/<class>/) holding the images"
        )
    candidates = ("train",) if split == "train" else ("test", "val")
    for candidate in candidates:
        if (path / candidate).is_dir():
            return path / candidate
    images, folders = _folder_contents(path)
    hint = ""
    if folders and not (path / "train").is_dir():
        hint = (f"; if {_first_names(folders)} are the classes, move them into {path}/train/ and put held-out "
                f"images of the same classes in {path}/test/<class>/")
    elif images:
        hint = f"; sort the loose image files into {path}/{candidates[0]}/<class>/ sub-folders"
    raise DataError(
        f"{path} has no {' or '.join(candidates)} folder (found {_describe_contents(images, folders)}); "
        f"lay it out as {path}/train/<class>/<image files> and {path}/test/<class>/<image files> "
        f"(the ImageFolder layout; val/ may stand for test/){hint}"
    )


def _folder_contents(directory: Path) -> tuple[list[str], list[str]]:
    """The image files directly in ``directory`` and its sub-folders (names, sorted; hidden ones skipped)."""
    images, folders = [], []
    for entry in os.scandir(directory):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            folders.append(entry.name)
        elif entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS):
            images.append(entry.name)
    return sorted(images), sorted(folders)


def _first_names(names: Sequence[str], limit: int = 5) -> str:
    return str(list(names[:limit]))[:-1] + (", ...]" if len(names) > limit else "]")


def _describe_contents(images: Sequence[str], folders: Sequence[str]) -> str:
    """What a folder holds, for an error message: '3 image files directly in it (e.g. a.png) and no sub-folders'."""
    loose = f"{len(images)} image file(s) directly in it" + (f" (e.g. {images[0]})" if images else "")
    subs = f"{len(folders)} sub-folder(s) {_first_names(folders)}" if folders else "no sub-folders"
    return f"{loose} and {subs}"


# --- Tiny ImageNet --------------------------------------------------------------------------

_TINY_ZIP = "tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip)"
_TINY_ANNOTATIONS = "val_annotations.txt"


def _tiny_imagenet_base(root: Path, subfolder: str) -> Path:
    """The unpacked ``tiny-imagenet-200`` folder under ``root``.

    Tried in order: ``root/<subfolder>`` (the registry's ``tiny-imagenet-200``, where unzipping into the
    data root puts it), ``root/tiny-imagenet/<subfolder>`` (the shared data folder's layout) and
    ``root/tiny-imagenet`` (the unpacked folder renamed). The first that holds ``wnids.txt``, ``train/``
    or ``val/`` wins.
    """
    candidates = [root / subfolder, root / "tiny-imagenet" / subfolder, root / "tiny-imagenet"]
    for base in candidates:
        if base.is_dir() and any((base / part).exists() for part in ("wnids.txt", "train", "val")):
            return base
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(
        f"Tiny ImageNet not found: none of {tried} holds wnids.txt, train/ or val/. torchvision cannot "
        f"download it; unpack {_TINY_ZIP} into the data root (giving {root / subfolder}/{{wnids.txt,train,val}}), or "
        + _ROOT_FIX.format(layout=f"{subfolder}/ or tiny-imagenet/{subfolder}/")
    )


def _tiny_imagenet_classes(base: Path, split_dir: Path) -> tuple[str, ...]:
    """The wnids, sorted (torchvision's ImageFolder order, so both layouts give the same labels).

    From ``base/wnids.txt``; without it, from the class folders of ``base/train`` (else of ``split_dir``).
    """
    wnids_file = base / "wnids.txt"
    if wnids_file.is_file():
        wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
        bad = [w for w in wnids if len(w.split()) != 1 or w.startswith(".")]
        duplicates = sorted(w for w, n in Counter(wnids).items() if n > 1)
        if bad or duplicates or len(wnids) < 2:
            raise DataError(
                f"{wnids_file} is malformed ({len(wnids)} entries; malformed {bad[:5]}, repeated {duplicates[:5]}); "
                f"it must list one wnid per line, at least two, each once: restore it from {_TINY_ZIP}"
            )
        return tuple(sorted(wnids))
    folder = base / "train" if (base / "train").is_dir() else split_dir
    if not folder.is_dir():
        raise DataError(f"{wnids_file} is missing and there is no {base / 'train'} to take the classes from; "
                        f"restore wnids.txt from {_TINY_ZIP}")
    classes = tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")))
    if len(classes) < 2:
        raise DataError(f"{wnids_file} is missing and {folder} has {len(classes)} class folder(s); "
                        f"restore wnids.txt from {_TINY_ZIP}")
    return classes


def _check_class_folders(directory: Path, classes: tuple[str, ...], what: str) -> None:
    """Every wnid has a folder in ``directory`` and every folder is a wnid."""
    present = {e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")}
    missing = [c for c in classes if c not in present]
    unknown = sorted(present - set(classes))
    if missing or unknown:
        raise DataError(
            f"{directory} does not match the {len(classes)} wnids of {what}: "
            + (f"{len(missing)} wnid folder(s) missing {missing[:5]}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"{len(unknown)} folder(s) that are not wnids {unknown[:5]}" if unknown else "")
            + f". Expected {directory}/<wnid>/ for each wnid ("
            + ("the official layout is train/<wnid>/images/*.JPEG" if directory.name == "train" else
               "or the official layout: val/images/*.JPEG labelled by val/val_annotations.txt")
            + f"); re-unpack {_TINY_ZIP}, or fix wnids.txt"
        )


def _files_by_class(directory: Path, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[str]]:
    """The image files under ``directory/<class>/`` (recursively, sorted within each class, as
    torchvision's ImageFolder lists them), their labels (index in ``classes``) and the classes
    that hold no image; nothing is decoded."""
    samples = make_dataset(str(directory), {c: i for i, c in enumerate(classes)},
                           extensions=IMG_EXTENSIONS, allow_empty=True)
    paths = [path for path, _ in samples]
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes))
    return paths, labels, [classes[i] for i in np.flatnonzero(counts == 0)]


def _list_by_wnid_folders(directory: Path, classes: tuple[str, ...], what: str) -> tuple[list[str], np.ndarray]:
    """Image files under ``directory/<wnid>/`` (recursively: ``<wnid>/images/`` too), sorted per class."""
    _check_class_folders(directory, classes, what)
    paths, labels, empty = _files_by_class(directory, classes)
    if empty:
        raise DataError(
            f"{len(empty)} wnid folder(s) of {directory} hold no images {empty[:5]} (extensions "
            f"{', '.join(IMG_EXTENSIONS)}); restore their images from {_TINY_ZIP}"
        )
    return paths, labels


def _list_val_annotations(val: Path, classes: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """The official validation layout: ``val/images/<file>`` labelled by ``val/val_annotations.txt``.

    Each line is ``<file> <wnid> [box...]`` (tab-separated in the archive). Files come back ordered by
    (label, file name), the order of the reorganised ``val/<wnid>/<file>`` layout, so both layouts
    give the same split. Images in ``val/images`` that no line names are ignored (logged).
    """
    annotations = val / _TINY_ANNOTATIONS
    images = val / "images"
    if not annotations.is_file():
        raise DataError(
            f"{annotations} is missing: {images} holds the validation images but their labels are in "
            f"that file (lines '<file> <wnid> x0 y0 x1 y1'). Restore it from {_TINY_ZIP}"
        )
    if not images.is_dir():
        raise DataError(
            f"{images} is missing: {annotations} labels validation images that should be in {images}/. "
            f"Restore the folder from {_TINY_ZIP}, or lay val out as val/<wnid>/<file> class folders"
        )
    index = {c: i for i, c in enumerate(classes)}
    on_disk = {e.name for e in os.scandir(images) if e.is_file()}
    rows: list[tuple[int, str]] = []
    malformed, unknown, absent, repeated = [], [], [], []
    seen: set[str] = set()
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            malformed.append(number)
            continue
        file, wnid = fields[0], fields[1]
        if wnid not in index:
            unknown.append(f"line {number}: {wnid}")
        elif file not in on_disk:
            absent.append(f"line {number}: {file}")
        elif file in seen:
            repeated.append(f"line {number}: {file}")
        else:
            seen.add(file)
            rows.append((index[wnid], file))
    problems = []
    if malformed:
        problems.append(f"{len(malformed)} line(s) without '<file> <wnid>' (lines {malformed[:5]})")
    if unknown:
        problems.append(f"{len(unknown)} line(s) name a wnid not in wnids.txt ({unknown[:5]})")
    if absent:
        problems.append(f"{len(absent)} line(s) name an image missing from {images} ({absent[:5]})")
    if repeated:
        problems.append(f"{len(repeated)} repeated image(s) ({repeated[:5]})")
    if problems:
        raise DataError(
            f"{annotations} does not match the data: " + "; ".join(problems)
            + f". Restore val/ and wnids.txt from {_TINY_ZIP} (or remove the offending lines in your own copy)"
        )
    counts = np.bincount(np.asarray([r[0] for r in rows], dtype=np.int64), minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"{len(empty)} wnid(s) of wnids.txt have no validation image in {annotations} {empty[:5]}; "
            f"every class needs at least one: restore val/ from {_TINY_ZIP}"
        )
    unlabelled = len(on_disk) - len(rows)
    if unlabelled > 0:
        logger.warning("%d file(s) in %s are not named in %s; ignored", unlabelled, images, annotations)
    rows.sort()
    return [str(images / file) for _, file in rows], np.asarray([label for label, _ in rows], dtype=np.int64)


def _list_tiny_imagenet(root: Path, split: str, subfolder: str) -> tuple[tuple[str, ...], list[str], np.ndarray, Path]:
    """Classes, files and labels of a Tiny ImageNet split, the layout checked and nothing decoded.

    Reads the official archive's layout (``train/<wnid>/images/``, ``val/images/`` with
    ``val/val_annotations.txt``) and the ImageFolder one (``val/<wnid>/``). Writes nothing.
    """
    base = _tiny_imagenet_base(root, subfolder)
    directory = base / ("train" if split == "train" else "val")
    if not directory.is_dir():
        raise DataError(
            f"Tiny ImageNet's {split} split not found: expected {directory} (the test split is the "
            f"official val/ folder). Re-unpack {_TINY_ZIP} so that {base}/{{train,val}} exist"
        )
    classes = _tiny_imagenet_classes(base, directory)
    what = f"{base / 'wnids.txt'}" if (base / "wnids.txt").is_file() else f"{base / 'train'}"
    if split == "train":
        paths, labels = _list_by_wnid_folders(directory, classes, what)
    elif (directory / "images").is_dir() or (
            (directory / _TINY_ANNOTATIONS).is_file() and not any((directory / c).is_dir() for c in classes)):
        paths, labels = _list_val_annotations(directory, classes)  # the official val layout
    else:
        paths, labels = _list_by_wnid_folders(directory, classes, what)
    return classes, paths, labels, directory


# --- ImageFolder sets ------------------------------------------------------------------------


def _list_folder(directory: Path) -> tuple[tuple[str, ...], list[str], np.ndarray]:
    """Class names and (path, label) listing of an ImageFolder, without decoding anything.

    Classes are the sorted non-hidden sub-folders (torchvision's ImageFolder order); files are
    sorted within each class. Image files lying directly in ``directory`` belong to no class: they are
    ignored (logged) when there are class folders, and named in the error when there are too few.
    """
    loose, folders = _folder_contents(directory)
    classes = tuple(folders)
    if len(classes) < 2:
        raise DataError(
            f"{directory} has {len(classes)} class folder(s) {list(classes)} (found "
            f"{_describe_contents(loose, folders)}); a classification data set needs at least two classes: "
            f"put the images of each class in their own sub-folder, {directory}/<class>/<image files>, "
            f"e.g. {directory}/cat/1.png and {directory}/dog/2.png"
        )
    paths, labels, empty = _files_by_class(directory, classes)
    if empty:
        raise DataError(
            f"class folder(s) {empty} in {directory} hold no images (extensions {', '.join(IMG_EXTENSIONS)}); "
            "add images or remove the empty folders"
        )
    if loose:
        logger.warning("%d image file(s) directly in %s (e.g. %s) are in no class folder; ignored",
                       len(loose), directory, loose[0])
    return classes, paths, labels


# PIL modes with one channel; every other mode ('RGB', 'RGBA', 'P', 'CMYK', 'YCbCr', ...) counts as colour.
# A palette ('P') image counts as colour even when its palette is grey.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})  # PIL's convert('L') would clip these


def _unreadable(path: str, error: Exception) -> DataError:
    return DataError(f"cannot read image {path} ({type(error).__name__}: {error}); replace or delete the corrupt file")


def _read_header(path: str) -> tuple[str, tuple[int, int]]:
    """PIL mode and (width, height) of an image file, from its header: no pixel is decoded."""
    try:
        with Image.open(path) as image:
            return image.mode, image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise _unreadable(path, error) from error


def _check_headers(paths: Sequence[str], chosen: np.ndarray, directory: Path, mode: str | None,
                   check_size: bool) -> str:
    """Read the headers of the chosen files and return the PIL mode to decode them with.

    ``mode=None`` follows the files: ``'L'`` (1 channel) when all are grey-scale, ``'RGB'`` when all
    are colour, a :class:`DataError` naming one file of each when they mix. Otherwise ``mode`` is
    returned. With ``check_size``, files of different sizes are a :class:`DataError` too. Raising here
    means no pixel has been decoded.
    """
    grey: list[tuple[str, str]] = []  # (path, PIL mode) of the grey-scale files
    colour: list[tuple[str, str]] = []
    first: tuple[str, tuple[int, int]] | None = None
    for index in chosen:
        path = paths[index]
        file_mode, size = _read_header(path)
        if check_size:
            if first is None:
                first = (path, size)
            elif size != first[1]:
                raise DataError(
                    f"images differ in size: {path} is {size[0]}x{size[1]} but {first[0]} is "
                    f"{first[1][0]}x{first[1][1]} (width x height); resize the files to one size, or pass "
                    "image_size=N to load_dataset to resize them all to NxN"
                )
        if mode is None and file_mode == "F":
            raise DataError(
                f"{path} holds floating-point pixels (PIL mode 'F'), whose range is unknown; save the images "
                "with 8-bit pixels, e.g. Image.open(f).convert('L').save(f) after scaling them to 0..255"
            )
        (grey if file_mode in _GREY_MODES else colour).append((path, file_mode))
    if mode is not None:
        return mode
    if grey and colour:
        raise DataError(
            f"{directory} mixes grey-scale and colour images: of the {len(chosen)} files chosen, "
            f"{len(grey)} are grey-scale (e.g. {grey[0][0]}, PIL mode {grey[0][1]!r}) and {len(colour)} are "
            f"colour (e.g. {colour[0][0]}, PIL mode {colour[0][1]!r}), and a data set has one channel count. "
            "Convert every file to one mode, e.g. Image.open(f).convert('RGB').save(f) for colour "
            "(or .convert('L') for grey-scale)"
        )
    return "L" if grey else "RGB"


def _decode(path: str, mode: str) -> torch.Tensor:
    """One image file as a uint8 tensor of shape (C, H, W) in PIL ``mode`` (``'L'`` or ``'RGB'``).

    Alpha is dropped. 16-bit grey-scale files (modes ``'I;16'``, ``'I'``) are scaled to 8 bits
    (``round(x * 255 / 65535)``) where PIL's ``convert('L')`` would clip them.
    """
    try:
        with Image.open(path) as image:
            file_mode = image.mode
            if mode == "L" and file_mode in _SIXTEEN_BIT:
                pixels = np.asarray(image).astype(np.int64)  # shape: (h, w), forces the full decode
            else:
                return TF.pil_to_tensor(image.convert(mode))  # convert forces the full decode inside the try
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise _unreadable(path, error) from error
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(
            f"{path} has pixel values outside 0..65535 (PIL mode {file_mode!r}), so they cannot be read as 16-bit "
            "grey levels; save the images with 8- or 16-bit pixels"
        )
    eight = (pixels * 255 + 32767) // 65535
    return torch.from_numpy(eight.astype(np.uint8)).unsqueeze(0)  # shape: (1, h, w)


def _load_folder(name: str, split: str, directory: Path, mean: tuple[float, ...], std: tuple[float, ...],
                 per_class: int | None, seed: int, image_size: int | None, mode: str | None) -> ImageData:
    classes, paths, labels = _list_folder(directory)
    return _decode_listing(name, split, directory, classes, paths, labels, mean, std, per_class, seed,
                           image_size, mode)


def _decode_listing(name: str, split: str, directory: Path, classes: Sequence[str], paths: Sequence[str],
                    labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                    per_class: int | None, seed: int, image_size: int | None, mode: str | None) -> ImageData:
    """Decode only the chosen files of a checked listing (``paths[i]`` has label ``labels[i]``).

    ``mode``: the PIL mode to decode with, or ``None`` to follow the files (see :func:`_check_headers`,
    which reads every chosen header, and checks the sizes when ``image_size`` is None, first).
    """
    chosen = _subset(labels, per_class, seed, classes, name)
    mode = _check_headers(paths, chosen, directory, mode, check_size=image_size is None)
    channels = 1 if mode == "L" else 3
    mean, std = _fit_stats(name, mean, std, channels)
    logger.info("decoding %d of %d images (%d channel(s)) from %s", len(chosen), len(paths), channels, directory)
    images = []
    for index in chosen:
        image = _decode(paths[index], mode)  # shape: (channels, h, w), uint8
        if image_size is not None:
            image = _resize(image.float().div_(255.0), image_size)
        elif images and image.shape != images[0].shape:  # a header that lied about the size
            raise DataError(
                f"{paths[index]} decodes to {tuple(image.shape)} pixels but {paths[chosen[0]]} to "
                f"{tuple(images[0].shape)} (channels, height, width); re-save the files at one size, or pass "
                "image_size=N to load_dataset"
            )
        images.append(image)
    stacked = torch.stack(images)
    if stacked.dtype == torch.uint8:
        stacked = stacked.float().div_(255.0)
    # image_size is already applied per file above; _finish only normalises.
    return _finish(name, split, stacked, labels[chosen], chosen, classes, mean, std, None)


def _fit_stats(name: str, mean: tuple[float, ...], std: tuple[float, ...],
               channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation for ``channels`` channels: as given, or one shared value repeated.

    ``folder:PATH`` has the same 0.5 for every channel, so it fits 1 or 3 channels alike.
    """
    if len(mean) == channels and len(std) == channels:
        return tuple(mean), tuple(std)
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return (mean[0],) * channels, (std[0],) * channels
    raise DataError(
        f"{name} has per-channel statistics for {len(mean)} channel(s) but its files have {channels}; give "
        f"one mean and std per channel in ddm/datasets.py, or convert the files to {len(mean)} channel(s)"
    )


def check_splits_agree(train: ImageData, test: ImageData) -> None:
    """Raise a :class:`DataError` unless the two splits fit one network: the same classes in the same
    order, the same channel count and the same square image size.

    :func:`load_dataset` loads one split at a time, so it cannot see that, say, ``PATH/train`` holds
    colour images and ``PATH/test`` grey-scale ones, or that ``PATH/test`` lacks a class folder
    (which would shift its labels); the networks of :mod:`ddm.models` also take square images only.
    """
    where = f"{train.name!r}"
    problems, fixes = [], []
    if train.classes != test.classes:
        only_train = [c for c in train.classes if c not in test.classes]
        only_test = [c for c in test.classes if c not in train.classes]
        detail = (f"only in train {_first_names(only_train)}, only in test {_first_names(only_test)}"
                  if only_train or only_test else "the same names in another order")
        problems.append(f"the train split has {train.num_classes} classes and the test split {test.num_classes} "
                        f"({detail})")
        fixes.append("give the test folder the same class sub-folders as the train folder")
    if train.channels != test.channels:
        kinds = {1: "grey-scale", 3: "colour"}
        problems.append(f"the train split has {train.channels} channel(s) ({kinds.get(train.channels, '?')}) and "
                        f"the test split {test.channels} ({kinds.get(test.channels, '?')})")
        fixes.append("convert the files of both splits to one mode, e.g. Image.open(f).convert('RGB').save(f)")
    sizes = {s: tuple(int(n) for n in d.images.shape[2:]) for s, d in (("train", train), ("test", test))}
    if sizes["train"] != sizes["test"]:
        problems.append(f"the train images are {sizes['train'][1]}x{sizes['train'][0]} and the test images "
                        f"{sizes['test'][1]}x{sizes['test'][0]} (width x height)")
    non_square = [s for s, (h, w) in sizes.items() if h != w]
    if non_square:
        problems.append(f"the {' and '.join(non_square)} images are not square "
                        f"({', '.join(f'{sizes[s][1]}x{sizes[s][0]}' for s in non_square)}, width x height), "
                        "and the networks take NxN images")
    if sizes["train"] != sizes["test"] or non_square:
        fixes.append("resize the files of both splits to one NxN size (or load both with image_size=N)")
    if problems:
        raise DataError(f"the train and test splits of {where} do not fit one network: " + "; ".join(problems)
                        + ". Fix: " + "; ".join(fixes))


# --- shared steps ----------------------------------------------------------------------------


def _subset(labels: np.ndarray, per_class: int | None, seed: int, classes: Sequence[str], name: str) -> np.ndarray:
    """Balanced subset indices, with the class *name* in the error when a class is too small."""
    if per_class is not None:
        counts = np.bincount(labels, minlength=len(classes))
        smallest = int(np.argmin(counts))
        if per_class > counts[smallest]:
            raise DataError(
                f"per_class={per_class} but class {classes[smallest]!r} of {name} has only "
                f"{counts[smallest]} images in this split; pass per_class <= {counts[smallest]} or None"
            )
    return balanced_subset_indices(labels, per_class, seed)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of float images on [0, 1], shape (..., C, H, W) -> (..., C, size, size)."""
    if images.shape[-2:] == (size, size):
        return images
    return TF.resize(images, [size, size], antialias=True).clamp_(0.0, 1.0)


def _finish(name: str, split: str, images: torch.Tensor, labels: np.ndarray, chosen: np.ndarray,
            classes: Sequence[str], mean: tuple[float, ...], std: tuple[float, ...],
            image_size: int | None) -> ImageData:
    """Resize (optional) and normalise float images on [0, 1] into an :class:`ImageData`."""
    if image_size is not None:
        images = _resize(images, image_size)
    images = TF.normalize(images.contiguous(), list(mean), list(std), inplace=True)
    return ImageData(
        images=images.to(torch.float32),
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        source_indices=torch.from_numpy(np.asarray(chosen, dtype=np.int64)),
        classes=tuple(classes),
        name=name,
        split=split,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )

