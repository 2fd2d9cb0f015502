"""Tiny seeded CPU fixtures shared by the tests of the method's core (matching, training, online...).

Everything here is small enough to run in a fraction of a second on one core: a 2-block ConvNet
of width 8 on 8x8 digits, a few images per class, 2 clusters per class. The builders are cached
(``functools.lru_cache``) so several test modules share one target run; callers must not modify
the tensors they get back (clone first). For the chapters' tests, :data:`CHAPTER_TINY` and the
:func:`experiment` fixture open a tiny "quick" experiment of their own in each test module.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from functools import lru_cache

import pytest
import torch

from ddm.clustering import Clustering, kmeans_clusters, pixel_features
from ddm.config import DistillConfig, TrainConfig
from ddm.data import ImageData, load_dataset
from ddm.models import Network, make_model
from ddm.training import Params, Trajectory, get_params, train_trajectory

NUM_CLASSES = 10
DATA_ROOT = tempfile.gettempdir()  # digits are bundled with scikit-learn: the root is never read

# The overrides of the "quick" profile under which a chapter's whole run takes seconds on one core.
CHAPTER_TINY = {"data.train_per_class": 30, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
                "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 6, "distill.step_length": 1,
                "online.finetune_steps": 3, "eval.n_test_points": 8}


@contextmanager
def one_thread():
    """One intra-op thread inside the block (restored after). On a small shared CPU two threads were
    10-20x slower than one, and float results depend (in the last bits) on the thread count, so a
    computation compared bit for bit with another must run under the same count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def single_thread():
    """Every test of a module that imports this fixture runs under :func:`one_thread`."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The "quick" profile under :data:`CHAPTER_TINY`, with a store of its own per test module."""
    from ddm.chapters import base

    return base.open_experiment("quick", overrides=CHAPTER_TINY, cache_root=tmp_path_factory.mktemp("store"))


def tiny_model(width: int = 8, seed: int = 0) -> Network:
    """A 2-block ConvNet for 1-channel 8x8 images and 10 classes (~1k parameters at width 8)."""
    return make_model("convnet", 1, NUM_CLASSES, 8, width=width, depth=2, seed=seed)


@lru_cache(maxsize=None)
def digits(split: str = "train", per_class: int | None = 10, seed: int = 0) -> ImageData:
    """A balanced seeded subset of the bundled digits."""
    return load_dataset("digits", split, DATA_ROOT, per_class=per_class, seed=seed)


def tiny_train_config(epochs: int = 4, lr: float = 0.05, batch_size: int = 16, order_seed: int = 0) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, momentum=0.0, batch_size=batch_size, order_seed=order_seed)


@lru_cache(maxsize=None)
def tiny_clustering(per_class: int = 10, clusters_per_class: int = 2) -> Clustering:
    data = digits("train", per_class)
    return kmeans_clusters(pixel_features(data.images), data.labels, clusters_per_class, seed=0)


@lru_cache(maxsize=None)
def tiny_trajectory(per_class: int = 10, epochs: int = 4, width: int = 8) -> Trajectory:
    """The target run of the tiny model on ``per_class`` digits per class (cached)."""
    data = digits("train", per_class)
    model = tiny_model(width)
    return train_trajectory(model, get_params(model), data.images, data.labels, tiny_train_config(epochs))


def tiny_distill_config(**overrides) -> DistillConfig:
    values = dict(method="reverse", pairing="alg1", step_length=1, steps=30, lr_img=0.1, momentum_img=0.5,
                  ipc=1, distance="layerwise_cosine", soft_labels=False, seed=0, checkpoint_every=5)
    values.update(overrides)
    return DistillConfig(**values)


def random_params_like(params: Params, seed: int, scale: float = 1.0) -> Params:
    """Seeded Gaussian tensors with the shapes of ``params`` (for gradient-shaped test inputs)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(v.shape, generator=generator) for k, v in params.items()}
