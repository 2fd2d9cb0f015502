"""Tests of ddm.data: the embedded digits, real MNIST, the CIFAR-10 JPEG copy, Tiny ImageNet's official
layout (generated, and the shared subset), and every error path.

Real data come from ``$DDM_DATA_ROOT`` if set, else ``../shared/data`` beside the repository; tests
that need a set skip, saying so, when it is absent. All tests run on a CPU in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddm.data import DATASETS, DataError, ImageData, balanced_subset_indices, check_splits_agree, load_dataset

SHARED = Path(os.environ["DDM_DATA_ROOT"]) if os.environ.get("DDM_DATA_ROOT") else (
    Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
HAS_MNIST = (SHARED / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
HAS_CIFAR_JPEG = (SHARED / "cifar10-jpeg" / "train").is_dir()
needs_mnist = pytest.mark.skipif(not HAS_MNIST, reason=f"real MNIST not found under {SHARED}/mnist (set DDM_DATA_ROOT)")
needs_cifar_jpeg = pytest.mark.skipif(
    not HAS_CIFAR_JPEG, reason=f"CIFAR-10 JPEG copy not found under {SHARED}/cifar10-jpeg (set DDM_DATA_ROOT)"
)
HAS_TINY = (SHARED / "tiny-imagenet" / "tiny-imagenet-200" / "wnids.txt").is_file()
needs_tiny = pytest.mark.skipif(
    not HAS_TINY, reason=f"Tiny-ImageNet subset not found under {SHARED}/tiny-imagenet/tiny-imagenet-200 (set DDM_DATA_ROOT)"
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _image_folder(base: Path, classes: dict[str, list[tuple[int, int]]], split: str = "train") -> Path:
    """Write a tiny ImageFolder ``base/split/<class>/<i>.png`` with the given (height, width) per image."""
    for c, (name, sizes) in enumerate(classes.items()):
        folder = base / split / name
        folder.mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            pixels = np.full((h, w, 3), 40 * c + 10 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return base


# --- digits (embedded) -------------------------------------------------------------------------


def test_digits_split_shapes_and_labels(tmp_path: Path) -> None:
    train = load_dataset("digits", "train", tmp_path)
    test = load_dataset("digits", "test", tmp_path)
    assert len(train) + len(test) == 1797
    assert (len(train), len(test)) == (1347, 450)
    for data in (train, test):
        assert isinstance(data, ImageData)
        assert data.images.shape[1:] == (1, 8, 8) and data.images.dtype == torch.float32
        assert data.labels.dtype == torch.int64 and data.source_indices.dtype == torch.int64
        assert set(data.labels.tolist()) == set(range(10))
        assert (data.channels, data.image_size, data.num_classes) == (1, 8, 10)
    # The split does not depend on the subset seed.
    assert torch.equal(load_dataset("digits", "test", tmp_path, seed=5).images, test.images)


def test_digits_normalisation_and_denormalise(tmp_path: Path) -> None:
    train = load_dataset("digits", "train", tmp_path)
    assert abs(train.images.mean().item()) < 1e-3
    assert abs(train.images.std().item() - 1.0) < 1e-3
    pixels = train.denormalise(train.images)
    assert pixels.min() >= 0 and pixels.max() <= 1
    # Digits take the 17 values k/16 on [0, 1].
    assert torch.allclose(pixels * 16, (pixels * 16).round(), atol=1e-4)


def test_digits_subset_matches_full_split(tmp_path: Path) -> None:
    full = load_dataset("digits", "train", tmp_path)
    sub = load_dataset("digits", "train", tmp_path, per_class=7, seed=3)
    assert len(sub) == 70
    assert torch.bincount(sub.labels).tolist() == [7] * 10
    assert torch.equal(sub.images, full.images[sub.source_indices])
    assert torch.equal(sub.labels, full.labels[sub.source_indices])


# --- balanced_subset_indices ---------------------------------------------------------------------


def test_balanced_subset_indices() -> None:
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    a = balanced_subset_indices(labels, 3, seed=0)
    assert np.all(np.diff(a) > 0)
    assert np.bincount(labels[a]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(a, balanced_subset_indices(labels, 3, seed=0))
    assert not np.array_equal(a, balanced_subset_indices(labels, 3, seed=1))
    assert np.array_equal(balanced_subset_indices(labels, None, seed=0), np.arange(len(labels)))
    with pytest.raises(DataError, match="per_class <= 5"):
        balanced_subset_indices(labels, 6, seed=0)
    with pytest.raises(DataError, match="positive integer"):
        balanced_subset_indices(labels, 0, seed=0)


# --- MNIST (real) --------------------------------------------------------------------------------


@needs_mnist
def test_mnist_full_counts_and_shape() -> None:
    train = load_dataset("mnist", "train", SHARED)
    test = load_dataset("mnist", "test", SHARED)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape[1:] == (1, 28, 28)
    assert train.classes == tuple(str(d) for d in range(10))
    assert abs(train.images.mean().item()) < 1e-2 and abs(train.images.std().item() - 1) < 1e-2


@needs_mnist
def test_mnist_subset_balanced_deterministic_and_traceable() -> None:
    from torchvision.datasets import MNIST

    a = load_dataset("mnist", "train", SHARED, per_class=20, seed=0)
    assert len(a) == 200
    assert torch.bincount(a.labels, minlength=10).tolist() == [20] * 10
    again = load_dataset("mnist", "train", SHARED, per_class=20, seed=0)
    assert torch.equal(a.images, again.images) and torch.equal(a.source_indices, again.source_indices)
    other = load_dataset("mnist", "train", SHARED, per_class=20, seed=1)
    assert not torch.equal(a.source_indices, other.source_indices)
    reference = MNIST(root=str(SHARED / "mnist"), train=True, download=False)
    assert torch.equal(reference.targets[a.source_indices], a.labels)
    raw = reference.data[a.source_indices].float().div(255).unsqueeze(1)
    assert torch.allclose(a.denormalise(a.images), raw, atol=1e-5)


# --- CIFAR-10 JPEG copy (real) -------------------------------------------------------------------


@needs_cifar_jpeg
def test_cifar10_jpeg_subset() -> None:
    data = load_dataset("cifar10-jpeg", "train", SHARED, per_class=5, seed=0)
    assert len(data) == 50
    assert data.images.shape[1:] == (3, 32, 32)
    assert data.classes == CIFAR10_CLASSES
    assert torch.bincount(data.labels).tolist() == [5] * 10
    test = load_dataset("cifar10-jpeg", "test", SHARED, per_class=5, seed=0)
    assert len(test) == 50 and test.split == "test"


@needs_cifar_jpeg
def test_cifar10_jpeg_channel_means_near_readme() -> None:
    data = load_dataset("cifar10-jpeg", "train", SHARED, per_class=20, seed=0)
    means = data.denormalise(data.images).mean(dim=(0, 2, 3))
    # README: train per-channel mean (0.4913, 0.4821, 0.4465); 200 images leave sampling noise.
    assert torch.allclose(means, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.06)


# --- error paths ---------------------------------------------------------------------------------


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet", "train", tmp_path)
    for name in DATASETS:
        assert name in str(info.value)
    assert "folder:PATH" in str(info.value)


def test_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split='test'"):
        load_dataset("digits", "validation", tmp_path)


@pytest.mark.parametrize("name, layout", [("mnist", "mnist/MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_root_names_path_and_fix(tmp_path: Path, name: str, layout: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, "train", tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and layout in message
    assert "download=True" in message and "DDM_DATA_ROOT" in message


def test_missing_image_folder_sets(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="DDM_DATA_ROOT"):
        load_dataset("cifar10-jpeg", "train", tmp_path)
    with pytest.raises(DataError, match="tiny-imagenet-200"):
        load_dataset("tiny-imagenet", "train", tmp_path)
    with pytest.raises(DataError, match="PATH/train"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}", "train", tmp_path)


def test_per_class_too_large_names_class(tmp_path: Path) -> None:
    base = _image_folder(tmp_path / "set", {"cats": [(4, 4)] * 3, "dogs": [(4, 4)] * 2})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path, per_class=3)
    assert "'dogs'" in str(info.value) and "only 2" in str(info.value) and "per_class <= 2" in str(info.value)
    with pytest.raises(DataError, match="per_class <= 43"):  # digits test split: smallest class, 43
        load_dataset("digits", "test", tmp_path, per_class=10_000)


def test_folder_with_one_class(tmp_path: Path) -> None:
    base = _image_folder(tmp_path / "set", {"only": [(4, 4)] * 3})
    with pytest.raises(DataError, match="at least two"):
        load_dataset(f"folder:{base}", "train", tmp_path)


def test_corrupt_image_names_file(tmp_path: Path) -> None:
    base = _image_folder(tmp_path / "set", {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2})
    bad = base / "train" / "b" / "broken.png"
    bad.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    assert str(bad) in str(info.value) and "replace or delete" in str(info.value)


def test_inconsistent_sizes_and_image_size_fix(tmp_path: Path, count_decodes: list[str]) -> None:
    base = _image_folder(tmp_path / "set", {"a": [(4, 4), (4, 4)], "b": [(6, 5), (4, 4)]})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    message = str(info.value)
    assert "image_size=" in message and str(base / "train" / "b" / "0.png") in message and "5x6" in message
    assert count_decodes == [], "the sizes come from the headers, before any pixel is decoded"
    data = load_dataset(f"folder:{base}", "train", tmp_path, image_size=8)
    assert data.images.shape == (4, 3, 8, 8)


def test_folder_loads_with_val_as_test(tmp_path: Path) -> None:
    base = _image_folder(tmp_path / "set", {"a": [(4, 4)] * 3, "b": [(4, 4)] * 3}, split="val")
    data = load_dataset(f"folder:{base}", "test", tmp_path, per_class=2, seed=0)
    assert len(data) == 4 and data.classes == ("a", "b") and data.mean == (0.5, 0.5, 0.5)
    assert data.denormalise(data.images).min() >= 0
    full = load_dataset(f"folder:{base}", "test", tmp_path)
    assert torch.equal(data.images, full.images[data.source_indices])
    with pytest.raises(DataError, match="PATH|train"):
        load_dataset(f"folder:{base}", "train", tmp_path)


# --- folder:PATH: channels follow the files; layouts without class folders ----------------------


def _pixels(mode: str, size: tuple[int, int], value: int) -> Image.Image:
    """A flat image of ``size`` (width, height) in PIL ``mode`` whose grey level is about ``value``."""
    return Image.new("L", size, value).convert(mode)


def _write(folder: Path, files: dict[str, Image.Image]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, image in files.items():
        image.save(folder / file)


@pytest.mark.parametrize("mode, suffix", [("L", "png"), ("L", "jpg"), ("LA", "png"), ("1", "png"), ("I;16", "png")])
def test_folder_of_grey_images_has_one_channel(tmp_path: Path, mode: str, suffix: str) -> None:
    base = tmp_path / "set"
    for c, name in enumerate(("a", "b")):
        for i in range(3):
            value = 255 * c if mode == "1" else 60 * c + 20 * i + 40
            if mode == "I;16":
                image = Image.fromarray(np.full((5, 5), value * 257, dtype=np.uint16))
                assert image.mode == "I;16"
            else:
                image = _pixels(mode, (5, 5), value)
            _write(base / "train" / name, {f"{i}.{suffix}": image})
    data = load_dataset(f"folder:{base}", "train", tmp_path)
    assert data.images.shape == (6, 1, 5, 5) and data.channels == 1
    assert data.mean == (0.5,) and data.std == (0.5,)
    levels = data.denormalise(data.images).mean(dim=(1, 2, 3)) * 255
    expected = torch.tensor([0.0] * 3 + [255.0] * 3) if mode == "1" else torch.tensor(
        [60.0 * c + 20 * i + 40 for c in range(2) for i in range(3)])
    # 16-bit levels v * 257 come back as v exactly (PIL's own convert('L') would clip them to 255).
    assert torch.allclose(levels, expected, atol=2 if suffix == "jpg" else 1e-3), levels
    sub = load_dataset(f"folder:{base}", "train", tmp_path, per_class=2, seed=1, image_size=8)
    assert sub.images.shape == (4, 1, 8, 8)


def test_folder_of_colour_modes_has_three_channels(tmp_path: Path) -> None:
    base = tmp_path / "set"
    colours = {
        "rgb.png": Image.new("RGB", (4, 4), (200, 10, 10)),
        "rgba.png": Image.new("RGBA", (4, 4), (200, 10, 10, 90)),
        "p.png": Image.new("RGB", (4, 4), (200, 10, 10)).convert("P"),  # a palette image counts as colour
        "cmyk.jpg": Image.new("CMYK", (4, 4), (0, 240, 240, 55)),
    }
    _write(base / "train" / "a", colours)
    _write(base / "train" / "b", {"rgb.jpg": Image.new("RGB", (4, 4), (10, 10, 200))})
    data = load_dataset(f"folder:{base}", "train", tmp_path)
    assert data.images.shape == (5, 3, 4, 4) and data.mean == (0.5, 0.5, 0.5)
    red = data.denormalise(data.images)[:, 0].mean(dim=(1, 2))
    assert (red[:4] > 0.7).all() and red[4] < 0.1, red


def test_folder_mixing_grey_and_colour_fails_before_decoding(tmp_path: Path, count_decodes: list[str]) -> None:
    base = tmp_path / "set"
    _write(base / "train" / "a", {f"{i}.png": _pixels("L", (4, 4), 50) for i in range(3)})
    _write(base / "train" / "b", {"0.png": _pixels("L", (4, 4), 90), "1.jpg": _pixels("RGB", (4, 4), 90)})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    message = str(info.value)
    assert "4 are grey-scale" in message and "1 are colour" in message, message
    assert str(base / "train" / "a" / "0.png") in message and str(base / "train" / "b" / "1.jpg") in message
    assert "convert('RGB')" in message
    assert count_decodes == [], "the modes come from the headers, before any pixel is decoded"


def test_registry_image_folders_stay_rgb_with_a_grey_file(tmp_path: Path) -> None:
    base = _tiny_imagenet(tmp_path)
    grey = next((base / "train" / TINY_WNIDS[0] / "images").iterdir())
    _pixels("L", (8, 8), 77).save(grey, "JPEG")  # Tiny ImageNet holds such files: about 2% are grey-scale
    data = load_dataset("tiny-imagenet", "train", tmp_path)
    assert data.images.shape == (3 * TINY_TRAIN, 3, 8, 8)


@needs_cifar_jpeg
def test_cifar10_jpeg_as_a_folder_has_three_channels() -> None:
    data = load_dataset(f"folder:{SHARED / 'cifar10-jpeg'}", "test", SHARED, per_class=3, seed=0)
    assert data.images.shape == (30, 3, 32, 32) and data.classes == CIFAR10_CLASSES


def test_split_folder_of_loose_images_names_what_it_found(tmp_path: Path) -> None:
    base = tmp_path / "set"
    _write(base / "train", {f"{i}.png": _pixels("RGB", (4, 4), 9) for i in range(3)})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    message = str(info.value)
    assert "0 class folder(s)" in message and "3 image file(s) directly in it" in message, message
    assert "no sub-folders" in message and f"{base / 'train'}/<class>/<image files>" in message


def test_folder_of_loose_images_without_train_names_what_it_found(tmp_path: Path) -> None:
    base = tmp_path / "set"
    _write(base, {f"{i}.jpg": _pixels("RGB", (4, 4), 9) for i in range(4)})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    message = str(info.value)
    assert "no train folder" in message and "4 image file(s) directly in it" in message, message
    assert f"{base}/train/<class>/<image files>" in message and f"{base}/test/<class>/<image files>" in message
    # Class folders without a split folder: the message says to move them under train/.
    _write(base / "cats", {"0.png": _pixels("RGB", (4, 4), 9)})
    _write(base / "dogs", {"0.png": _pixels("RGB", (4, 4), 9)})
    with pytest.raises(DataError) as info:
        load_dataset(f"folder:{base}", "train", tmp_path)
    assert "['cats', 'dogs'] are the classes, move them into" in str(info.value), str(info.value)


def test_loose_images_beside_class_folders_are_ignored(tmp_path: Path) -> None:
    base = _image_folder(tmp_path / "set", {"a": [(4, 4)] * 2, "b": [(4, 4)] * 2})
    _write(base / "train", {"stray.png": _pixels("L", (9, 9), 0)})
    data = load_dataset(f"folder:{base}", "train", tmp_path)
    assert data.images.shape == (4, 3, 4, 4)


def test_check_splits_agree(tmp_path: Path) -> None:
    base = tmp_path / "set"
    for split, mode in (("train", "RGB"), ("test", "L")):
        for name in ("a", "b"):
            _write(base / split / name, {"0.png": _pixels(mode, (4, 4), 30)})
    train = load_dataset(f"folder:{base}", "train", tmp_path)
    test = load_dataset(f"folder:{base}", "test", tmp_path)
    check_splits_agree(train, train)
    with pytest.raises(DataError) as info:
        check_splits_agree(train, test)
    message = str(info.value)
    assert "train split has 3 channel(s) (colour)" in message and "test split 1 (grey-scale)" in message
    assert "convert('RGB')" in message
    other = tmp_path / "other"
    for split, names, size in (("train", ("a", "b"), (6, 4)), ("test", ("a", "c"), (4, 4))):
        for name in names:
            _write(other / split / name, {"0.png": _pixels("RGB", size, 30)})
    with pytest.raises(DataError) as info:
        check_splits_agree(load_dataset(f"folder:{other}", "train", tmp_path),
                           load_dataset(f"folder:{other}", "test", tmp_path))
    message = str(info.value)
    assert "only in train ['b'], only in test ['c']" in message and "same class sub-folders" in message
    assert "train images are 6x4 and the test images 4x4" in message and "train images are not square" in message
    assert "one NxN size" in message


# --- Tiny ImageNet: the official archive's layout ----------------------------------------------

# wnids.txt order is deliberately not sorted: labels follow the sorted wnids.
TINY_WNIDS = ("n03000000", "n01000000", "n02000000")
TINY_TRAIN, TINY_VAL = 4, 3  # images per class


def _tiny_pixel(label: int, index: int) -> tuple[int, int, int]:
    """A flat colour that encodes (label, index) and survives JPEG: red = label, green = index."""
    return 60 * label + 30, 40 * index + 20, 128


def _tiny_imagenet(root: Path, folder: str = "tiny-imagenet-200", size: int = 8) -> Path:
    """Write Tiny ImageNet as the official zip unpacks, with TINY_TRAIN/TINY_VAL images per class.

    Validation images are interleaved across classes in the annotation file, as in the archive.
    Returns the unpacked ``tiny-imagenet-200`` folder.
    """
    base = root / folder
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))
    labels = {w: i for i, w in enumerate(sorted(TINY_WNIDS))}
    for wnid in TINY_WNIDS:
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for i in range(TINY_TRAIN):
            Image.new("RGB", (size, size), _tiny_pixel(labels[wnid], i)).save(images / f"{wnid}_{i}.JPEG", "JPEG", quality=95)
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t{size - 1}\t{size - 1}\n")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    (base / "val" / "images").mkdir(parents=True)
    lines, k = [], 0
    for i in range(TINY_VAL):
        for wnid in TINY_WNIDS:
            Image.new("RGB", (size, size), _tiny_pixel(labels[wnid], i)).save(
                base / "val" / "images" / f"val_{k}.JPEG", "JPEG", quality=95)
            lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t{size - 1}\t{size - 1}\n")
            k += 1
    (base / "val" / "val_annotations.txt").write_text("".join(lines))
    return base


def _tree(path: Path) -> list[tuple[str, int]]:
    return sorted((str(f.relative_to(path)), f.stat().st_size) for f in path.rglob("*"))


@pytest.fixture
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every image ddm.data decodes."""
    import ddm.data

    calls: list[str] = []
    original = ddm.data._decode

    def counting(path: str, mode: str) -> torch.Tensor:
        calls.append(path)
        return original(path, mode)

    monkeypatch.setattr(ddm.data, "_decode", counting)
    return calls


@pytest.mark.parametrize("folder", ["tiny-imagenet-200", "tiny-imagenet/tiny-imagenet-200", "tiny-imagenet"])
def test_tiny_imagenet_official_layout_loads(tmp_path: Path, folder: str, count_decodes: list[str]) -> None:
    base = _tiny_imagenet(tmp_path / "root", folder)
    before = _tree(tmp_path)
    sorted_wnids = tuple(sorted(TINY_WNIDS))
    for split, per_split in (("train", TINY_TRAIN), ("test", TINY_VAL)):
        full = load_dataset("tiny-imagenet", split, tmp_path / "root")
        assert full.classes == sorted_wnids and full.num_classes == 3 and full.split == split
        assert full.images.shape == (3 * per_split, 3, 8, 8)
        assert torch.equal(full.source_indices, torch.arange(3 * per_split))
        assert np.bincount(full.labels.numpy()).tolist() == [per_split] * 3
        # The red channel encodes the label the file was written for: labels come from the folder
        # (train) or from val_annotations.txt (test), never from the file order.
        red = full.denormalise(full.images)[:, 0].mean(dim=(1, 2)) * 255
        expected = torch.tensor([_tiny_pixel(int(label), 0)[0] for label in full.labels], dtype=red.dtype)
        assert torch.allclose(red, expected, atol=4), (red, expected)
        count_decodes.clear()
        sub = load_dataset("tiny-imagenet", split, tmp_path / "root", per_class=2, seed=3)
        assert len(count_decodes) == 6, "only the chosen files are decoded"
        assert np.bincount(sub.labels.numpy()).tolist() == [2, 2, 2]
        assert torch.equal(sub.images, full.images[sub.source_indices])
        assert torch.equal(sub.labels, full.labels[sub.source_indices])
        again = load_dataset("tiny-imagenet", split, tmp_path / "root", per_class=2, seed=3)
        assert torch.equal(again.source_indices, sub.source_indices) and torch.equal(again.images, sub.images)
        other = [load_dataset("tiny-imagenet", split, tmp_path / "root", per_class=2, seed=s).source_indices
                 for s in range(4, 8)]
        assert any(not torch.equal(o, sub.source_indices) for o in other), "the seed must change the subset"
    assert _tree(tmp_path) == before, "the loader must not write into the data folder"
    assert (base / "val" / "images").is_dir()


def test_tiny_imagenet_reorganised_val_gives_the_same_split(tmp_path: Path) -> None:
    official = _tiny_imagenet(tmp_path / "official")
    reorganised = _tiny_imagenet(tmp_path / "reorganised")
    val = reorganised / "val"
    for line in (val / "val_annotations.txt").read_text().splitlines():
        file, wnid = line.split()[:2]
        (val / wnid).mkdir(exist_ok=True)
        (val / "images" / file).rename(val / wnid / file)
    (val / "images").rmdir()
    a = load_dataset("tiny-imagenet", "test", tmp_path / "official", per_class=2, seed=1)
    b = load_dataset("tiny-imagenet", "test", tmp_path / "reorganised", per_class=2, seed=1)
    assert a.classes == b.classes == tuple(sorted(TINY_WNIDS))
    assert torch.equal(a.source_indices, b.source_indices) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.images, b.images)
    assert official.is_dir()


def test_tiny_imagenet_without_wnids_takes_classes_from_train(tmp_path: Path) -> None:
    base = _tiny_imagenet(tmp_path)
    (base / "wnids.txt").unlink()
    data = load_dataset("tiny-imagenet", "test", tmp_path)
    assert data.classes == tuple(sorted(TINY_WNIDS)) and len(data) == 3 * TINY_VAL


def _break_missing_annotations(base: Path) -> None:
    (base / "val" / "val_annotations.txt").unlink()


def _break_missing_image(base: Path) -> None:
    (base / "val" / "images" / "val_4.JPEG").unlink()


def _break_unknown_wnid(base: Path) -> None:
    path = base / "val" / "val_annotations.txt"
    path.write_text(path.read_text() + "val_0.JPEG\tn09999999\t0\t0\t7\t7\n")


def _break_missing_train_folder(base: Path) -> None:
    for file in (base / "train" / "n02000000").rglob("*"):
        if file.is_file():
            file.unlink()
    (base / "train" / "n02000000" / "images").rmdir()
    (base / "train" / "n02000000").rmdir()


def _break_missing_wnids(base: Path) -> None:
    """Without wnids.txt the classes come from train/<wnid>/; without both, val/images/ cannot name them."""
    import shutil

    (base / "wnids.txt").unlink()
    shutil.rmtree(base / "train")


@pytest.mark.parametrize("split, breaker, expected", [
    ("test", _break_missing_annotations, ["val_annotations.txt is missing", "Restore it from tiny-imagenet-200.zip"]),
    ("test", _break_missing_image, ["image missing from", "line 5: val_4.JPEG", "Restore val/"]),
    ("test", _break_unknown_wnid, ["wnid not in wnids.txt", "n09999999", "line 10"]),
    ("train", _break_missing_train_folder, ["wnid folder(s) missing ['n02000000']", "train/<wnid>/images/*.JPEG"]),
    ("test", _break_missing_wnids, ["wnids.txt is missing", "restore wnids.txt"]),
])
def test_tiny_imagenet_broken_layout_fails_before_decoding(tmp_path: Path, count_decodes: list[str], split: str,
                                                           breaker, expected: list[str]) -> None:
    base = _tiny_imagenet(tmp_path)
    breaker(base)
    with pytest.raises(DataError) as info:
        load_dataset("tiny-imagenet", split, tmp_path, per_class=1)
    message = str(info.value)
    for text in expected:
        assert text in message, message
    assert count_decodes == [], "no image may be decoded before the layout is checked"


def test_tiny_imagenet_missing_names_both_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("tiny-imagenet", "test", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "tiny-imagenet-200") in message
    assert str(tmp_path / "tiny-imagenet" / "tiny-imagenet-200") in message
    assert "DDM_DATA_ROOT" in message


@needs_tiny
def test_tiny_imagenet_shared_subset_loads(count_decodes: list[str]) -> None:
    wnids = (SHARED / "tiny-imagenet" / "tiny-imagenet-200" / "wnids.txt").read_text().split()
    for split, available in (("train", 50), ("test", 10)):
        # The whole layout is listed and checked, and the subset's size limit reported, with no decode.
        with pytest.raises(DataError, match=f"per_class <= {available}"):
            load_dataset("tiny-imagenet", split, SHARED, per_class=available + 1)
        assert count_decodes == []
        data = load_dataset("tiny-imagenet", split, SHARED, per_class=2, seed=0)
        assert len(count_decodes) == 400, "only the 2 x 200 chosen files are decoded"
        count_decodes.clear()
        assert data.classes == tuple(sorted(wnids)) and data.num_classes == 200
        assert data.images.shape == (400, 3, 64, 64) and data.images.dtype == torch.float32
        assert np.bincount(data.labels.numpy(), minlength=200).tolist() == [2] * 200
        assert int(data.source_indices.max()) < 200 * available
        assert data.denormalise(data.images).min() >= 0
