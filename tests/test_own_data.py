"""Every chapter on a reader's own data and network, as the introduction tells a reader to run it:
a generated image folder, a data root holding nothing else, and a network from a module of the
reader's, all passed through papermill's parameters. Also the own-data chapter's pieces, and the
errors a reader's folder or network gets before any training starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from ddm.chapters import base, own_data
from ddm.config import get_profile
from ddm.data import DataError
from ddm.experiment import Experiment
from ddm.folders import has_folder_layout, write_image_folder
from ddm.models import CUSTOM_PREFIX, ModelError

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("ant", "bee", "cat")
SIZE = 10
NETWORK = '''
from torch import nn


class TinyNet(nn.Module):
    """A reader's network: conv, instance norm, pooling, linear logits."""

    def __init__(self, in_channels, num_classes, image_size):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.GroupNorm(8, 8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.out = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.out(self.body(x))
'''
# Small enough for every chapter to run in seconds on 3 x 40 images.
TINY = {"model.width": 8, "train.epochs": 3, "train.lr": 0.05, "clusters.clusters_per_class": 2,
        "distill.steps": 6, "distill.step_length": 1, "online.finetune_steps": 3, "eval.n_test_points": 4,
        "eval.lds_masks": 4, "influence.lissa_depth": 30, "influence.arnoldi_iterations": 12,
        "influence.arnoldi_rank": 4, "influence.fastif_neighbours": 15, "influence.trak_dim": 20}


def _images(per_class: int, seed: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose class shows in their mean colour, so a network can learn them."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    images = 0.35 * torch.rand(len(labels), channels, SIZE, SIZE, generator=generator)
    for c in range(len(CLASSES)):
        images[labels == c, c % channels] += 0.5
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> dict[str, Path]:
    """The reader's folder, an empty data root, a module with their network, a cache."""
    top = tmp_path_factory.mktemp("reader")
    images = write_image_folder(top / "images", {"train": _images(40, 0), "test": _images(8, 1)}, CLASSES)
    (top / "modules").mkdir()
    (top / "modules" / "readers_nets.py").write_text(NETWORK)
    (top / "data").mkdir()
    return {"images": images, "modules": top / "modules", "data": top / "data", "cache": top / "cache",
            "out": top / "out"}


def _notebooks() -> list[Path]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [ROOT / f"{entry['file']}.ipynb" for entry in toc["chapters"]
            if (ROOT / f"{entry['file']}.ipynb").is_file()]


@pytest.mark.parametrize("notebook", _notebooks(), ids=lambda p: p.stem)
def test_every_chapter_runs_on_a_folder_and_a_network_of_the_readers(notebook: Path, reader, monkeypatch) -> None:
    import papermill

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(reader["modules"]), str(ROOT)]))
    monkeypatch.setenv("DDM_CACHE", str(reader["cache"]))
    monkeypatch.delenv("DDM_DATA_ROOT", raising=False)
    out = reader["out"] / notebook.name
    out.parent.mkdir(exist_ok=True)
    papermill.execute_notebook(str(notebook), str(out), kernel_name="python3", progress_bar=False, cwd=str(ROOT),
                               parameters={"profile": "quick", "data_root": str(reader["data"]),
                                           "dataset": f"folder:{reader['images']}",
                                           "model": "readers_nets:TinyNet", "overrides": TINY})
    shown = json.dumps(json.loads(out.read_text())["cells"])
    # The banner names the reader's folder and network: nothing fell back to the profile's own.
    assert str(reader["images"]) in shown and f"{CUSTOM_PREFIX}TinyNet" in shown
    assert not list(reader["data"].iterdir()), "a chapter wrote into the reader's data root"


# ------------------------------------------------------------------------------------------ the chapter's pieces
def test_choose_dataset_takes_the_readers_folder_first(tmp_path: Path) -> None:
    name, note = own_data.choose_dataset("ci", tmp_path, "folder:/somewhere")
    assert name == "folder:/somewhere" and "Your data set" in note


def test_choose_dataset_writes_the_digits_once_when_offline(tmp_path: Path) -> None:
    name, note = own_data.choose_dataset("quick", tmp_path / "data", None, cache_root=tmp_path / "cache")
    folder = tmp_path / "cache" / own_data.DIGITS_FOLDER
    assert name == f"folder:{folder}" and has_folder_layout(folder) and "offline" in note
    stamp = (folder / "train").stat().st_mtime_ns
    assert own_data.choose_dataset("quick", tmp_path / "data", None, cache_root=tmp_path / "cache")[0] == name
    assert (folder / "train").stat().st_mtime_ns == stamp     # read again, not rewritten


def test_choose_dataset_reads_the_cifar_copy_as_a_plain_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / own_data.EXAMPLE_FOLDER, {"train": _images(2, 0), "test": _images(1, 1)}, CLASSES)
    name, _ = own_data.choose_dataset("ci", tmp_path, None, cache_root=tmp_path / "cache")
    assert name == f"folder:{tmp_path / own_data.EXAMPLE_FOLDER}"
    # quick stays offline on the digits even when the copy is there
    assert own_data.EXAMPLE_FOLDER not in own_data.choose_dataset("quick", tmp_path, None, tmp_path / "c")[0]


def test_written_folder_reads_back_pixel_for_pixel(tmp_path: Path) -> None:
    from ddm.data import load_dataset

    images, labels = _images(3, 0, channels=1)
    write_image_folder(tmp_path / "grey", {"train": (images, labels), "test": (images, labels)}, CLASSES)
    data = load_dataset(f"folder:{tmp_path / 'grey'}", "train", tmp_path)
    assert data.channels == 1 and data.classes == CLASSES
    back = data.denormalise(data.images)
    order = torch.as_tensor(data.labels).argsort(stable=True)
    assert torch.allclose(back[order], (images * 255).round() / 255, atol=1 / 255)


def _tiny_net(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.GroupNorm(4, 4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def test_chapter_run_checks_the_located_clusters_by_exact_retraining(reader) -> None:
    exp = base.open_experiment("quick", reader["data"], f"folder:{reader['images']}", TINY,
                               cache_root=reader["cache"], model=_tiny_net)
    result = own_data.run(exp, test_points=3)
    assert result.model_name == "Sequential" and result.num_classes == 3 and result.channels == 3
    assert result.num_clusters == 6 and result.test_points == 3
    numbers = result.headline_numbers()
    assert all(numbers[k] is not None for k in own_data.Result.headline_labels()), numbers
    # every located cluster, plus the noise run, was retrained
    assert 2 <= result.retrains <= 4 * 3 + 1
    assert "exact check" in own_data.verdict(result) or "Dist1" in own_data.verdict(result)


# ------------------------------------------------------------------------------------------ errors before training
def _config(**overrides):
    return get_profile("quick", **{**TINY, **overrides})


def test_a_class_smaller_than_its_clusters_is_refused_before_training(reader) -> None:
    config = _config(**{"data.name": f"folder:{reader['images']}", "clusters.clusters_per_class": 41})
    with pytest.raises(ValueError, match="41 clusters per class.*at most 40"):
        Experiment.create(config, reader["data"], reader["cache"], model=_tiny_net)


def test_a_network_with_the_wrong_output_is_refused_before_training(reader, monkeypatch) -> None:
    import ddm.training as training

    monkeypatch.setattr(training, "train_trajectory", lambda *a, **k: pytest.fail("trained before the check"))
    config = _config(**{"data.name": f"folder:{reader['images']}"})
    with pytest.raises(ModelError, match=r"returns \(2, 7\).*3 classes.*nn.Linear\(\.\.\., 3\)"):
        Experiment.create(config, reader["data"], reader["cache"],
                          model=lambda c, L, s: nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 7)))


def test_a_folder_without_class_folders_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        (tmp_path / "flat" / split).mkdir(parents=True)
        Image.new("RGB", (SIZE, SIZE)).save(tmp_path / "flat" / split / "a.png")
    with pytest.raises(DataError, match="class folder"):
        Experiment.create(_config(**{"data.name": f"folder:{tmp_path / 'flat'}"}), tmp_path, tmp_path / "cache")


def test_grey_and_colour_images_mixed_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = tmp_path / "mixed" / split / name
            folder.mkdir(parents=True)
            Image.new("L" if c == 0 else "RGB", (SIZE, SIZE)).save(folder / "a.png")
            Image.new("L" if c == 0 else "RGB", (SIZE, SIZE)).save(folder / "b.png")
    with pytest.raises(DataError, match="grey.*colour|colour.*grey"):
        Experiment.create(_config(**{"data.name": f"folder:{tmp_path / 'mixed'}", "clusters.clusters_per_class": 1}),
                          tmp_path, tmp_path / "cache")


def test_artifacts_of_two_networks_of_ones_own_never_mix(reader) -> None:
    """Same name, another structure: another key, so a cached target is never reused for it."""
    config = _config(**{"data.name": f"folder:{reader['images']}"})
    narrow = Experiment.create(config, reader["data"], reader["cache"], model=_tiny_net)

    def _tiny_net_wider(c: int, L: int, s: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.GroupNorm(6, 6), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, L))
    _tiny_net_wider.__name__ = "_tiny_net"
    wide = Experiment.create(config, reader["data"], reader["cache"], model=_tiny_net_wider)
    assert narrow.config.model.arch == wide.config.model.arch == f"{CUSTOM_PREFIX}_tiny_net"
    assert narrow._key("model", "train") != wide._key("model", "train")
