"""Chapter 12 (ddm.chapters.architectures): Fig. 3's four networks on tiny digits, each against its
own exact retraining, the batch heat maps, and the verdict's thresholds on planted numbers."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from ddm import book, evaluation
from ddm.chapters import architectures as chapter, base
from ddm.chapters.attribution import BATCH_LABEL, BATCH_SIZE
from ddm.chapters.base import RunNumbers
from ddm.config import get_profile
from ddm.models import ModelError
from ddm.variants import PAPER_DDM, distill_variants

from fixtures_core import CHAPTER_TINY, experiment, one_thread, single_thread  # noqa: F401


@pytest.fixture(scope="module")
def result(experiment):
    with one_thread():
        return chapter.run(experiment)


def test_run_measures_every_headline(result) -> None:
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = sorted(k for k, v in numbers.items() if v is None)
    assert not missing, f"not measured: {missing}"
    assert result.test_points == 8 and result.num_clusters == 20 and result.batch_images == 10
    assert result.exact_retrains == 4 * 20 + len(chapter.NOISE_FLOOR_ARCHS) * 21
    for name, value in numbers.items():
        if name.startswith(("spearman_", "batch_spearman_", "alike_")):
            assert -1 <= value <= 1, name
        if name.startswith("own_rank_"):
            assert 1 <= value <= 10, name


def test_the_four_networks_differ_and_share_the_clusters(experiment, result) -> None:
    arms = {arch: chapter.experiment_for(experiment, arch) for arch in chapter.ARCHS}
    assert [arms[a].config.model.arch for a in chapter.ARCHS] == list(chapter.ARCHS)
    assert len({getattr(result, f"parameters_{a}") for a in chapter.ARCHS}) == 4
    clusterings = [arms[a].clusters() for a in chapter.ARCHS]
    assert all(torch.equal(c.assignment, clusterings[0].assignment) for c in clusterings[1:])
    assert result.clusters_identical


def test_each_heat_map_is_its_networks_batch_effects(experiment, result) -> None:
    """The DDM panel of each network is evaluation.class_by_cluster of that network's batch
    effects, and the exact panel reads the retrains on the very images that batch averages over."""
    for arch in chapter.ARCHS:
        arm = chapter.experiment_for(experiment, arch)
        clustering = arm.clusters()
        synset = distill_variants(arm, (PAPER_DDM,))[PAPER_DDM]
        batch = evaluation.batch_effects(arm, synset, BATCH_LABEL, BATCH_SIZE)
        assert np.allclose(result.heat_ddm[arch], evaluation.class_by_cluster(batch, clustering), atol=1e-6), arch
        truth = evaluation.leave_one_out_ground_truth(arm, clustering, chapter.label_batch(arm, BATCH_LABEL))
        ddm_on_batch, _ = evaluation.ddm_effects(arm, synset, truth)
        assert np.allclose(ddm_on_batch.mean(0), batch, atol=1e-6), arch
        assert np.allclose(result.heat_exact[arch],
                           evaluation.class_by_cluster(truth.exact_effects().mean(0), clustering)), arch
        assert not np.allclose(result.heat_ddm[arch], result.heat_exact[arch]), arch


def test_different_networks_give_different_ground_truths(result) -> None:
    exact = {arch: result.batch_weights[arch]["exact"] for arch in chapter.ARCHS}
    for a, b in chapter.ARCH_PAIRS:
        assert not np.allclose(exact[a], exact[b]), (a, b)


def test_only_the_vit_distils_with_table5s_vit_row(experiment) -> None:
    for arch in chapter.ARCHS:
        config = chapter.experiment_for(experiment, arch).config
        if arch == "vit":
            assert (config.distill.lr_img, config.distill.distance) == (0.005, "mse")
        else:
            assert config.distill == experiment.config.distill
        assert bool(config.eval.noise_seeds) == (arch in chapter.NOISE_FLOOR_ARCHS), arch
        assert config.clusters == experiment.config.clusters
        lr = experiment.config.train.lr * chapter.ARCH_LR_FACTORS.get(arch, 1.0)
        assert config.train == dataclasses.replace(experiment.config.train, lr=lr), arch
        online_lr = experiment.config.online.finetune_lr * chapter.ARCH_LR_FACTORS.get(arch, 1.0)
        assert config.online == dataclasses.replace(experiment.config.online, finetune_lr=online_lr), arch


def test_alexnets_learning_rate_is_scaled_except_at_the_paper_profile() -> None:
    """AlexNet (no normalisation layer) trains, and is fine-tuned online, at a lower rate at our
    profiles (the online stage runs at the training rate, as in the paper); at `paper` Table 5's
    rates stand for every network."""
    for profile in ("quick", "ci", "cpu", "paper"):
        config = get_profile(profile)
        overrides = chapter.arm_overrides(config, "alexnet")
        scaled = profile != "paper"
        assert ("train.lr" in overrides) is scaled and ("online.finetune_lr" in overrides) is scaled, profile
        if scaled:
            assert overrides["train.lr"] == pytest.approx(0.4 * config.train.lr)
            assert overrides["online.finetune_lr"] == pytest.approx(0.4 * config.online.finetune_lr)
        assert not {"train.lr", "online.finetune_lr"} & set(chapter.arm_overrides(config, "convnet"))


def test_the_profiles_network_is_its_own_target(experiment) -> None:
    """The profile's ConvNet with its noise floor is chapter 03's target (one store key)."""
    assert "convnet" in chapter.NOISE_FLOOR_ARCHS
    assert chapter.experiment_for(experiment, "convnet").config == experiment.config


def test_a_readers_network_is_set_aside_and_said(tmp_path) -> None:
    def factory(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))

    exp = base.open_experiment("quick", overrides=CHAPTER_TINY, cache_root=tmp_path, model=factory)
    assert exp.custom_model is not None and "your own" in chapter.reader_network_note(exp)
    arm = chapter.experiment_for(exp, "alexnet")
    assert arm.custom_model is None and arm.config.model.arch == "alexnet"
    assert chapter.reader_network_note(base.open_experiment("quick", overrides=CHAPTER_TINY, cache_root=tmp_path)) == ""


def test_a_network_that_cannot_take_the_images_is_skipped(experiment, monkeypatch) -> None:
    real = chapter.experiment_for

    def refusing_vit(exp, arch):
        if arch == "vit":
            raise ModelError("vit uses 4x4 patches, which do not divide 30x30 images")
        return real(exp, arch)

    monkeypatch.setattr(chapter, "experiment_for", refusing_vit)
    arms, skipped = chapter.open_arms(experiment)
    assert list(arms) == ["convnet", "alexnet", "resnet18_ap"] and "patches" in skipped["vit"]
    assert "patches" in chapter._settings_table(arms, skipped).loc["simple ViT", "not run"]


def test_class_rank_reads_the_mean_weight_of_a_row() -> None:
    heat = np.array([[0.1, 0.3], [0.5, 0.5], [-1.0, 0.0]])
    assert [chapter.class_rank(heat, row) for row in range(3)] == [2, 1, 3]


def test_tables_and_figures_are_in_words(result) -> None:
    names = [chapter.ARCH_LABELS[a] for a in chapter.ARCHS]
    assert list(result.per_arch.index) == names and list(result.settings.index) == names
    assert list(result.settings["noise floor"]) == ["yes" if a in chapter.NOISE_FLOOR_ARCHS else "no"
                                                    for a in chapter.ARCHS]
    assert len(result.likeness) == len(chapter.ARCH_PAIRS)
    for frame in (result.per_arch, result.likeness, result.settings):   # blanks, never "nan"
        assert "nan" not in book.show_table(frame).to_string().lower()
    figures = chapter.figures(result, "profile quick · test")
    assert set(figures) == {"fig-arch-heat-batch", "fig-arch-spearman"}
    for fig in figures.values():
        plt.close(fig)


def test_the_noise_floor_listing_names_who_has_one(monkeypatch) -> None:
    assert chapter.noise_floor_listing().startswith("ConvNet, AlexNet and simple ViT have a noise floor")
    monkeypatch.setattr(chapter, "NOISE_FLOOR_ARCHS", ("convnet",))
    assert chapter.noise_floor_listing() == ("ConvNet has a noise floor; AlexNet, ResNet18_AP and simple ViT "
                                             "do not")


# ------------------------------------------------------------------------------------------ verdict
def _run(**values) -> RunNumbers:
    """A planted run: every network traces the batch to its class under DDM and exact
    retraining, DDM beats random, heat maps alike as much as the ground truth's, comparable
    targets of the right size; nothing near a threshold unless asked."""
    numbers: dict = {}
    for arch in chapter.ARCHS:
        numbers.update({f"spearman_ddm_{arch}": 0.5, f"spearman_random_{arch}": 0.0,
                        f"spearman_tracin_{arch}": 0.4, f"accuracy_{arch}": 95.0, f"own_rank_ddm_{arch}": 1,
                        f"own_rank_exact_{arch}": 1, f"batch_spearman_{arch}": 0.6, f"calibration_ddm_{arch}": 1.0})
    for arch in chapter.NOISE_FLOOR_ARCHS:
        numbers[f"spearman_noise_{arch}"] = 0.7
    for a, b in chapter.ARCH_PAIRS:
        numbers.update({f"alike_ddm_{a}_{b}": 0.7, f"alike_exact_{a}_{b}": 0.7})
    numbers.update(values)
    unknown = set(numbers) - set(chapter.Result.headline_labels())
    assert not unknown, unknown
    return RunNumbers(numbers, "cpu", "mnist", recorded=True)


def _reading(**values) -> str:
    return "\n".join(chapter._reading(_run(**values)))


def _pairs(whose: str, value: float) -> dict:
    return {f"alike_{whose}_{a}_{b}": value for a, b in chapter.ARCH_PAIRS}


@pytest.mark.parametrize("ranks, words", [((1, 1, 1, 1), "the paper's observation reproduces"),
                                          ((1, 3, 1, 2), "holds for ConvNet, ResNet18_AP only"),
                                          ((2, 3, 4, 5), "for **none** does DDM trace the batch")])
def test_the_own_class_is_read_at_rank_one(ranks: tuple, words: str) -> None:
    text = _reading(**{f"own_rank_ddm_{a}": r for a, r in zip(chapter.ARCHS, ranks)})
    assert words in text and f"first for {ranks.count(1)} of 4 networks" in text


def test_exact_retraining_missing_the_own_class_is_said() -> None:
    text = _reading(**{f"own_rank_exact_{a}": 2 for a in chapter.ARCHS})
    assert "Exact retraining puts it first for 0 of 4 networks" in text
    assert "is not what deleting clusters does" in text


@pytest.mark.parametrize("value, words", [(0.7, "matching heat maps reproduces"), (0.3, "they are **not** alike")])
def test_alike_is_read_at_the_named_threshold(value: float, words: str) -> None:
    assert words in _reading(**_pairs("ddm", value), **_pairs("exact", value))


@pytest.mark.parametrize("exact, words", [(0.3, "more alike than the ground truths"),
                                          (0.72, "as alike across networks as the ground truth"),
                                          (0.95, "differ across networks more than the ground truth")])
def test_ddm_likeness_is_read_beside_the_ground_truths(exact: float, words: str) -> None:
    assert words in _reading(**_pairs("ddm", 0.7), **_pairs("exact", exact))


def test_ddm_losing_to_random_everywhere_is_said() -> None:
    text = _reading(**{f"spearman_ddm_{a}": 0.02 for a in chapter.ARCHS})
    assert "for 0 of 4 networks" in text and "not what deleting a cluster does" in text


def test_ddm_beating_random_for_some_networks_names_them() -> None:
    text = _reading(spearman_ddm_vit=0.0, spearman_ddm_alexnet=0.03)
    assert "for 2 of 4 networks (ConvNet, ResNet18_AP)" in text


def test_ddm_plus_is_read_against_random_and_the_papers_ddm() -> None:
    text = _reading(**{f"spearman_plus_{a}": 0.3 for a in chapter.ARCHS if a != "vit"}, spearman_plus_vit=0.02,
                    spearman_ddm_convnet=0.0)
    assert "DDM+ (ours, soft labels) reaches ConvNet +0.30" in text
    assert "above random choice by more than 0.05 for 3 of 4 networks (ConvNet, AlexNet, ResNet18_AP)" in text
    assert "above the paper's DDM for 1 (ConvNet)" in text
    assert "DDM+" not in _reading()


def test_a_network_without_a_noise_floor_is_read_without_one() -> None:
    text = _reading()
    assert "ResNet18_AP +0.50 (random +0.00, TracIn-style +0.40)" in text
    assert "ConvNet +0.50 (random +0.00, TracIn-style +0.40, noise floor +0.70)" in text


@pytest.mark.parametrize("vit, words", [(85.0, "simple ViT trains more than 5 points below the best"),
                                        (92.0, "All within 5 points of the best")])
def test_a_weaker_network_is_named(vit: float, words: str) -> None:
    assert words in _reading(accuracy_vit=vit)


@pytest.mark.parametrize("size, off", [(1.5, False), (3.0, True), (0.3, True)])
def test_the_size_of_the_weights_is_read_at_the_named_factor(size: float, off: bool) -> None:
    text = _reading(calibration_ddm_resnet18_ap=size)
    assert ("For ResNet18_AP the size is off" in text) is off


def test_unmeasured_networks_are_not_read() -> None:
    text = _reading(**{f"own_rank_ddm_{a}": None for a in chapter.ARCHS}, **_pairs("ddm", None))
    assert "Fig. 3's first observation" not in text and "second observation" not in text
    assert "Each against its own exact retraining" in text


def test_fig3_prints_no_number() -> None:
    assert chapter.paper_values("mnist") == {} and chapter.paper_values("cifar10") == {}
