"""Noisy training data (ddm.noise, Table 6): the noise has exactly the stated norm, the noisy
images are a seeded and recorded choice, the clean images are untouched, the detection scores
on hand-made cases, and a noisy configuration never shares a store key with a clean one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ddm import noise
from ddm.config import PROFILES, NoiseConfig, get_profile, parse_override
from ddm.experiment import Experiment

from fixtures_core import DATA_ROOT, digits, single_thread  # noqa: F401


# ------------------------------------------------------------------------------------------ the choice
def test_noisy_indices_are_seeded_sorted_distinct_and_the_asked_share() -> None:
    a = noise.noisy_indices(500, 0.2, seed=3)
    assert len(a) == 100 and torch.equal(a, a.sort().values) and len(set(a.tolist())) == 100
    assert a.min() >= 0 and a.max() < 500
    assert torch.equal(a, noise.noisy_indices(500, 0.2, seed=3))            # same seed, same images
    assert not torch.equal(a, noise.noisy_indices(500, 0.2, seed=4))        # another seed, others
    assert len(noise.noisy_indices(7, 0.2, seed=0)) == 1                    # round(1.4)
    assert len(noise.noisy_indices(10, 0.0, seed=0)) == 0
    with pytest.raises(ValueError, match=r"noise.fraction must be in \[0, 1\]"):
        noise.noisy_indices(10, 1.5, seed=0)


# ------------------------------------------------------------------------------------------ the noise
@pytest.mark.parametrize("kind", noise.NORM_KINDS)
def test_noise_has_exactly_the_stated_norm_per_image(kind: str) -> None:
    delta = noise.noise_of_norm((6, 3, 5, 5), 0.1, kind, torch.Generator().manual_seed(0))
    assert delta.shape == (6, 3, 5, 5)
    assert torch.allclose(noise.image_norms(delta, kind), torch.full((6,), 0.1), atol=1e-7)
    assert not torch.allclose(delta[0], delta[1])                           # a random direction per image
    # the other norm is not the stated one: the two readings differ
    other = "l2" if kind == "linf" else "linf"
    assert not torch.allclose(noise.image_norms(delta, other), torch.full((6,), 0.1), atol=1e-3)
    assert torch.equal(noise.noise_of_norm((2, 1, 3, 3), 0.0, kind, torch.Generator()), torch.zeros(2, 1, 3, 3))


def test_image_norms_by_hand_and_bad_arguments() -> None:
    delta = torch.tensor([[[[0.3, -0.4], [0.0, 0.0]]]])                     # (1, 1, 2, 2)
    assert noise.image_norms(delta, "linf").item() == pytest.approx(0.4)
    assert noise.image_norms(delta, "l2").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown noise norm 'l1'"):
        noise.image_norms(delta, "l1")
    with pytest.raises(ValueError, match="noise.norm must be >= 0"):
        noise.noise_of_norm((1, 1, 2, 2), -0.1, "linf", torch.Generator())


def test_add_noise_divides_by_each_channels_std_and_leaves_the_rest_alone() -> None:
    images = torch.randn(5, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    indices = torch.tensor([1, 3])
    delta = torch.ones(2, 2, 3, 3) * 0.1
    out = noise.add_noise(images, indices, delta, std=(0.5, 0.25))
    assert torch.equal(out[[0, 2, 4]], images[[0, 2, 4]])                   # the clean images: bit for bit
    assert torch.allclose(out[1, 0] - images[1, 0], torch.full((3, 3), 0.2))
    assert torch.allclose(out[3, 1] - images[3, 1], torch.full((3, 3), 0.4))
    assert not torch.equal(out, images) and torch.equal(images, images.clone())   # a copy, input unchanged
    with pytest.raises(ValueError, match="expected noise of shape"):
        noise.add_noise(images, indices, delta[:1], std=(0.5, 0.25))


@pytest.mark.parametrize("kind", noise.NORM_KINDS)
def test_noisy_copy_of_digits_records_its_images_and_has_the_norm_in_pixel_units(kind: str) -> None:
    data = digits("train", 10)
    noisy, indices = noise.noisy_copy(data, 0.2, 0.1, kind, seed=5)
    assert torch.equal(indices, noise.noisy_indices(len(data), 0.2, 5)) and len(indices) == 20
    clean = noise.noisy_mask(len(data), indices) == False  # noqa: E712
    assert torch.equal(noisy.images[torch.from_numpy(clean)], data.images[torch.from_numpy(clean)])
    added = (noisy.images[indices] - data.images[indices]) * torch.tensor(data.std).view(1, -1, 1, 1)
    assert torch.allclose(noise.image_norms(added, kind), torch.full((20,), 0.1), atol=1e-6)
    assert torch.equal(noisy.labels, data.labels) and torch.equal(noisy.source_indices, data.source_indices)
    again, _ = noise.noisy_copy(data, 0.2, 0.1, kind, seed=5)
    assert torch.equal(again.images, noisy.images)                          # one seed: the same data
    other, other_indices = noise.noisy_copy(data, 0.2, 0.1, kind, seed=6)
    assert not torch.equal(other_indices, indices)


# ------------------------------------------------------------------------------------------ detection
def test_detection_precision_and_recall_on_a_hand_made_case() -> None:
    removed = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    noisy = np.array([1, 0, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert noise.detection(removed, noisy) == pytest.approx((1 / 3, 1 / 2))
    assert noise.detection(noisy, noisy) == (1.0, 1.0)
    assert noise.detection(np.zeros(8, bool), noisy) == (0.0, 0.0)          # nothing removed
    assert noise.detection(removed, np.zeros(8, bool)) == (0.0, 0.0)        # nothing noisy
    with pytest.raises(ValueError, match="masks of different shapes"):
        noise.detection(removed[:4], noisy)


def test_cluster_noisy_shares_and_the_oracle_order() -> None:
    assignment = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    noisy = noise.noisy_mask(8, [1, 2, 3, 4, 6, 7])
    assert noise.cluster_noisy_shares(assignment, noisy, 4) == pytest.approx([0.5, 0.75, 1.0, 0.0])
    assert list(noise.noisiest_first(assignment, noisy, 4)) == [2, 1, 0, 3]


# ------------------------------------------------------------------------------------------ configuration
def test_the_noise_section_leaves_every_clean_configuration_as_it_was() -> None:
    for name in PROFILES:
        config = get_profile(name)
        plain = config.to_dict()
        assert "noise" not in plain                                         # so its recorded hash is unchanged
        full = dataclasses.asdict(config)
        assert plain == {k: v for k, v in full.items() if k != "noise"}
    noisy = get_profile("quick", **{"noise.fraction": 0.2})
    assert noisy.to_dict()["noise"] == {"fraction": 0.2, "norm": 0.1, "kind": "linf", "seed": 0}
    assert NoiseConfig().fraction == 0.0
    assert parse_override("noise.fraction", "0.2") == 0.2 and parse_override("noise.kind", "l2") == "l2"


TINY = get_profile("quick", **{"data.train_per_class": 10, "data.test_per_class": 3, "model.width": 8,
                               "model.depth": 2, "train.epochs": 1, "clusters.clusters_per_class": 2})


def test_a_noisy_configuration_has_its_own_store_keys_and_artifacts(tmp_path) -> None:
    clean = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
    noisy = Experiment.create(TINY.with_overrides(**{"noise.fraction": 0.2}), data_root=DATA_ROOT,
                              cache_root=tmp_path, progress=False)
    assert clean.noisy_indices is None
    assert torch.equal(noisy.noisy_indices, noise.noisy_indices(len(clean.train), 0.2, 0))
    # the noise is on the recorded training images only; the test split stays clean
    mask = torch.from_numpy(noise.noisy_mask(len(clean.train), noisy.noisy_indices))
    assert torch.equal(noisy.train.images[~mask], clean.train.images[~mask])
    assert not torch.equal(noisy.train.images[mask], clean.train.images[mask])
    assert torch.equal(noisy.test.images, clean.test.images)
    clean_key, noisy_key = clean._key("model", "train"), noisy._key("model", "train")
    assert set(clean_key) == {"data", "data_fingerprint", "model", "train"}   # a clean key as it always was
    assert noisy_key["noise"] == dataclasses.asdict(noisy.config.noise)
    assert clean.store.path("target", clean_key) != noisy.store.path("target", noisy_key)
    # another noise seed: another key again
    reseeded = TINY.with_overrides(**{"noise.fraction": 0.2, "noise.seed": 1})
    other = Experiment.create(reseeded, data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
    assert other.store.path("target", other._key("model", "train")) != noisy.store.path("target", noisy_key)
    # each trains its own target: two artifacts, different weights
    a, b = clean.target(), noisy.target()
    assert len(list((tmp_path / "target").iterdir())) == 2
    assert any(not torch.equal(x, y) for x, y in zip(a.final.values(), b.final.values()))
