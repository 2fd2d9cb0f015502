"""Image folders: the layout ``load_dataset("folder:PATH")`` reads, written from tensors.

The book's own-data chapter needs an image folder that exists on every machine: offline, with no
CIFAR-10 copy, it writes the bundled digits out as PNG files and reads them back through the
folder loader, exactly as a reader's folder would be read. The tests build small folders the
same way.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

__all__ = ["write_image_folder", "has_folder_layout"]


def has_folder_layout(path: str | Path) -> bool:
    """Whether ``path`` holds ``train/`` and ``test/`` (or ``val/``) folders, as a folder data set needs."""
    path = Path(path)
    return (path / "train").is_dir() and ((path / "test").is_dir() or (path / "val").is_dir())


def write_image_folder(root: str | Path, splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
                       classes: Sequence[str]) -> Path:
    """Write ``root/<split>/<class>/<i>.png`` for each split's ``(images, labels)``.

    ``images``: (N, C, H, W) floats on [0, 1] (C = 1 grey, 3 colour); ``labels``: (N,) indices into
    ``classes``. The folder is built beside ``root`` and renamed into place, so an interrupted
    write leaves no half folder; an existing ``root`` is replaced. Returns ``root``.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        for split, (images, labels) in splits.items():
            if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) != len(labels):
                raise ValueError(f"split {split!r}: images must be (N, 1 or 3, H, W) with one label each, "
                                 f"got {tuple(images.shape)} and {len(labels)} labels")
            pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for name in classes:
                (staging / split / name).mkdir(parents=True, exist_ok=True)
            for i, (array, label) in enumerate(zip(pixels, labels.tolist())):
                image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array,
                                        mode="L" if array.shape[-1] == 1 else "RGB")
                image.save(staging / split / classes[label] / f"{i:06d}.png")
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root

