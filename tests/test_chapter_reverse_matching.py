"""Chapter 02 (reverse gradient matching): the memorisation measure by hand, the choice of the
second data set, a tiny run of the chapter (with and without a second data set) and every verdict
threshold on both sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddm import variants
from ddm.chapters import base, reverse_matching as chapter

from fixtures_core import single_thread  # noqa: F401

TINY = {"data.train_per_class": 8, "data.test_per_class": 4, "model.width": 8, "train.epochs": 2,
        "clusters.clusters_per_class": 2, "distill.steps": 4, "distill.step_length": 1}


def _run(**values) -> base.RunNumbers:
    numbers = dict(
        target_test_accuracy=95.0, target_final_loss=0.1, loss_alg1=50.0, loss_eq6=52.0, loss_lr_img_10=49.0,
        classifier_cosine_ddm=-0.5, classifier_cosine_soft=0.6, classifier_cosine_match=0.95,
        nearest_real_start=1.0, nearest_real_ddm=0.1, nearest_real_match=0.9, nearest_real_soft=0.7,
        own_start_cosine_ddm=-0.3, own_start_cosine_eq6=-0.3, own_start_cosine_match=0.95, own_start_cosine_soft=0.7,
        own_start_nearest_ddm=0.0, own_start_nearest_eq6=0.0, own_start_nearest_match=80.0,
        own_start_nearest_soft=10.0, own_start_rank_ddm=900.0, own_start_rank_eq6=900.0, own_start_rank_match=1.0,
        own_start_rank_soft=20.0)
    numbers.update(values)
    return base.RunNumbers(numbers, "cpu", "mnist", True)


def _text(run: base.RunNumbers) -> str:
    return "\n".join(chapter._reading(run))


# ------------------------------------------------------------------------------------------ measurement
def test_memorisation_by_hand() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(6, 1, 4, 4, generator=generator, dtype=torch.float64)
    # image 0: an exact copy of its start (real 2); image 1: the negative of its start (real 1);
    # image 2: a copy of real 0 whose recorded start is real 3 (another real image is closer).
    synthetic = torch.stack([real[2], -real[1], real[0]])
    sources = torch.tensor([2, 1, 3])
    found = chapter.memorisation(real, synthetic, sources)
    assert chapter.memorisation(real, synthetic, sources, chunk=2) == pytest.approx(found, abs=1e-12)  # chunks change nothing
    flat = real.reshape(6, -1)
    cos = torch.nn.functional.cosine_similarity(flat[0:1], flat[3:4]).item()
    rank_2 = 1 + int((torch.nn.functional.cosine_similarity(flat[0:1], flat) > cos + 1e-12).sum())
    rank_1 = 6  # -real[1] has cosine -1 with real[1]: every other real image is closer
    assert found["own"] == pytest.approx((1.0 - 1.0 + cos) / 3, abs=1e-9)
    assert found["own_nearest"] == pytest.approx(100 / 3)
    assert found["own_rank"] == float(np.median([1, rank_1, rank_2]))
    # an even number of images: the median is the mean of the middle two ranks
    assert chapter.memorisation(real, synthetic[:2], sources[:2])["own_rank"] == (1 + rank_1) / 2
    assert rank_2 >= 2
    nearest_1 = torch.nn.functional.cosine_similarity(-flat[1:2], flat).max().item()
    assert found["nearest"] == pytest.approx((1.0 + nearest_1 + 1.0) / 3, abs=1e-9)
    assert found["highest"] == pytest.approx(1.0)


@pytest.mark.parametrize("profile, first, asked, reader, expected", [
    ("quick", "digits", "auto", None, None),
    ("ci", "mnist", "auto", None, "cifar10-jpeg"),
    ("cpu", "cifar10-jpeg", "auto", None, "mnist"),
    ("cpu", "cifar10", "auto", None, "mnist"),
    ("ci", "mnist", "auto", "mnist", None),          # the reader chose the data set: no second one
    ("ci", "mnist", "mnist", None, None),            # the same data set twice
    ("ci", "mnist", None, None, None),
    ("quick", "digits", "mnist", None, "mnist"),     # asked for explicitly, even at quick
])
def test_choice_of_the_second_data_set(profile, first, asked, reader, expected) -> None:
    name, note = chapter.choose_second_dataset(profile, first, asked, reader)
    assert name == expected
    assert note and "\n" not in note


def _folder(root, classes: int = 3, train: int = 8, test: int = 4, size: int = 8):
    generator = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = generator.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return f"folder:{root}"


def test_run_on_tiny_digits_without_the_second_data_set(tmp_path) -> None:
    exp = base.open_experiment("quick", data_root=tmp_path, overrides=TINY, cache_root=tmp_path / "store")
    result = chapter.run(exp, second_dataset="mnist")   # no MNIST files under tmp_path: skipped, no failure
    assert result.second_dataset_name is None and result.second_privacy is None and result.second_rows is None
    assert "could not be used" in result.second_note
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = [k for k, v in numbers.items() if v is None and not k.startswith("second_")]
    assert missing == []
    assert all(numbers[k] is None for k in numbers if k.startswith("second_"))
    # the real starting images are their own nearest real image, at cosine 1
    assert result.nearest_real_start == pytest.approx(1.0)
    start = result.privacy.loc[chapter.REAL_START]
    assert start[chapter.PRIVACY_COLUMNS["own_nearest"]] == 100 and start[chapter.PRIVACY_COLUMNS["own_rank"]] == 1
    assert list(result.privacy.index) == [chapter.REAL_START, *[variants.LABELS[v] for v in variants.LABELS]]
    assert result.layer_cosines.columns[-1] == "classifier"
    assert result.classifier_cosine_match == pytest.approx(result.layer_cosines.loc[
        variants.LABELS[variants.DDM_MATCH], "classifier"])
    assert list(result.rows) == ["real start", *[variants.SHORT_LABELS[v] for v in variants.LABELS]]
    assert len(result.synsets[variants.PAPER_DDM].loss_history) == TINY["distill.steps"]
    assert chapter.second_figure(result) is None
    assert chapter.verdict(result)   # reads this run's numbers without failing
    # the paper prints no number here: nothing beside the paper, every headline beyond it
    assert base.beside_paper(result, chapter.paper_values).empty
    assert len(base.beyond_paper(result, chapter.paper_values)) == len(numbers)


def test_run_with_a_second_data_set(tmp_path) -> None:
    exp = base.open_experiment("quick", data_root=tmp_path, overrides=TINY, cache_root=tmp_path / "store")
    other = _folder(tmp_path / "images")
    result = chapter.run(exp, second_dataset=other)
    assert result.second_dataset_name == f"image folder {tmp_path / 'images'}"
    assert result.second_nearest_real_ddm is not None and result.second_own_start_rank_match is not None
    assert list(result.second_synsets) == list(chapter.SECOND_VARIANTS)
    assert result.second_privacy.loc[chapter.REAL_START, chapter.PRIVACY_COLUMNS["own_nearest"]] == 100
    assert "image folder" in chapter.verdict(result)
    # ... and none when the reader chose the data set of the chapter
    again = chapter.run(exp, second_dataset=other, reader_dataset="digits")
    assert again.second_dataset_name is None and "you chose" in again.second_note


def test_paper_values_are_headline_fields() -> None:
    fields = set(chapter.Result.headline_labels())
    for key in ("mnist", "cifar10", "cifar100", "tiny-imagenet"):
        assert set(chapter.paper_values(key)) <= fields


# ------------------------------------------------------------------------------------------ verdict
@pytest.mark.parametrize("soft, words", [(-0.5 + chapter.SOFT_LABEL_GAIN + 0.01, "fix the sign problem"),
                                         (-0.5 + chapter.SOFT_LABEL_GAIN - 0.01, "did not help")])
def test_soft_label_threshold(soft: float, words: str) -> None:
    assert words in _text(_run(classifier_cosine_ddm=-0.5, classifier_cosine_soft=soft))


@pytest.mark.parametrize("match, words", [(-0.5 + chapter.SOFT_LABEL_GAIN + 0.01, "the reversal, not the layer"),
                                          (-0.5 + chapter.SOFT_LABEL_GAIN - 0.01, "on the same layer.")])
def test_plain_matching_on_the_classifier_layer(match: float, words: str) -> None:
    assert words in _text(_run(classifier_cosine_ddm=-0.5, classifier_cosine_match=match))


@pytest.mark.parametrize("lr10, words", [(100 * chapter.LOSS_RATIO_CLEAR - 1, "clearly lower"),
                                         (100 * chapter.LOSS_RATIO_CLEAR + 1, "about the same"),
                                         (100 / chapter.LOSS_RATIO_CLEAR + 1, "clearly higher")])
def test_image_learning_rate_threshold(lr10: float, words: str) -> None:
    assert words in _text(_run(loss_alg1=100.0, loss_lr_img_10=lr10))


@pytest.mark.parametrize("ddm, words", [(0.5 - chapter.PRIVACY_MARGIN - 0.005, "claim holds here"),
                                        (0.5 - chapter.PRIVACY_MARGIN + 0.005, "not supported"),
                                        (0.5 + chapter.PRIVACY_MARGIN + 0.005, "contradicted")])
def test_privacy_margin(ddm: float, words: str) -> None:
    assert words in _text(_run(nearest_real_ddm=ddm, nearest_real_match=0.5))


@pytest.mark.parametrize("cosine, words", [(chapter.NEAR_COPY_COSINE, "near-copies of their starting images"),
                                           (chapter.NEAR_COPY_COSINE - 0.01, "still partly their starting images"),
                                           (chapter.MOVED_AWAY_COSINE, "still partly their starting images"),
                                           (chapter.MOVED_AWAY_COSINE - 0.01, "moved away from their starting")])
def test_memorisation_thresholds(cosine: float, words: str) -> None:
    line = [x for x in chapter._reading(_run(own_start_cosine_match=cosine)) if x.startswith("  * DDM-match")][0]
    assert words in line


@pytest.mark.parametrize("share, words", [(chapter.OWN_NEAREST_MOST, "(most)"),
                                          (chapter.OWN_NEAREST_MOST - 1, "(a minority)")])
def test_own_start_nearest_threshold(share: float, words: str) -> None:
    line = [x for x in chapter._reading(_run(own_start_nearest_match=share)) if x.startswith("  * DDM-match")][0]
    assert words in line


def test_second_data_set_lines_only_when_measured() -> None:
    assert "second data set" not in _text(_run()) and "CIFAR" not in _text(_run())
    second = _run(second_dataset_name="CIFAR-10 (JPEG copy)", second_nearest_real_ddm=0.2,
                  second_nearest_real_match=0.8, second_own_start_cosine_ddm=0.1, second_own_start_cosine_match=0.95,
                  second_own_start_nearest_ddm=0.0, second_own_start_nearest_match=90.0,
                  second_own_start_rank_ddm=500.0, second_own_start_rank_match=1.0)
    text = _text(second)
    assert "Privacy (Fig. 4), CIFAR-10 (JPEG copy)" in text and "Memorisation, CIFAR-10 (JPEG copy)" in text
    copies = [x for x in chapter._reading(second) if x.startswith("  * ") and "**near-copies" in x]
    assert [x.split(":")[0] for x in copies] == ["  * DDM-match", "  * DDM-match"]   # on both data sets


def test_unmeasured_numbers_are_skipped() -> None:
    assert chapter._reading(base.RunNumbers({}, "cpu", "mnist", True)) == []
    lines = chapter._reading(_run(classifier_cosine_soft=None, nearest_real_ddm=None))
    assert not any("Classifier layer" in x or "Privacy" in x for x in lines)
    assert any("Memorisation" in x for x in lines)
