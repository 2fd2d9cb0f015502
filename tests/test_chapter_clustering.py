"""Chapter 01 (clustering): its measurement on the bundled digits and every verdict threshold."""

from __future__ import annotations

import pytest

from ddm.chapters import base, clustering as chapter


def _run(**values) -> base.RunNumbers:
    numbers = dict(clusters_per_class=10, num_clusters=100, smallest_cluster=10, median_cluster=20.0,
                   largest_cluster=25, ari_learned_vs_pixels=0.3, ari_sequence_vs_pixels=0.0)
    numbers.update(values)
    return base.RunNumbers(numbers, "cpu", "mnist", True)


def test_run_on_digits_measures_the_three_groupings(tmp_path) -> None:
    exp = base.open_experiment("quick", overrides={"train.epochs": 1}, cache_root=tmp_path)
    result = chapter.run(exp)
    assert result.num_clusters == 10 * result.clusters_per_class == len(result.groupings["pixels"].sizes())
    sizes = result.groupings["pixels"].sizes()
    assert result.smallest_cluster == int(sizes.min()) and result.largest_cluster == int(sizes.max())
    assert int(sizes.sum()) == len(exp.train)
    # consecutive runs are a different partition from k-means, but every run is of equal size (+-1)
    assert -0.2 < result.ari_sequence_vs_pixels < 0.9
    runs = result.groupings["sequence"].sizes()
    assert int(runs.max() - runs.min()) <= 1 + int(exp.train.labels.bincount().max() - exp.train.labels.bincount().min())
    assert list(result.summary.columns)[-1] == "agreement with pixel clusters (ARI)"
    assert set(result.headline_numbers()) == set(chapter.Result.headline_labels())


def test_paper_values_name_the_papers_K() -> None:
    assert chapter.paper_values("mnist") == {"clusters_per_class": 10, "num_clusters": 100}
    assert chapter.paper_values("cifar100")["num_clusters"] == 1000
    assert chapter.paper_values("tiny-imagenet") == {}


@pytest.mark.parametrize("ari, words", [(chapter.ARI_SAME_UNITS + 0.01, "matters little"),
                                        (chapter.ARI_SAME_UNITS - 0.01, "*different* units")])
def test_feature_extractor_threshold(ari: float, words: str) -> None:
    assert words in "\n".join(chapter._reading(_run(ari_learned_vs_pixels=ari)))


@pytest.mark.parametrize("largest, words", [(int(10 * chapter.SIZE_RATIO_UNEQUAL) + 1, "mixes its size"),
                                            (int(10 * chapter.SIZE_RATIO_UNEQUAL), "comparable units")])
def test_size_threshold(largest: int, words: str) -> None:
    assert words in "\n".join(chapter._reading(_run(largest_cluster=largest)))


def test_K_below_the_papers_is_said() -> None:
    assert "the paper's C = 10" in chapter._reading(_run())[0]
    assert "fewer than the paper's" in chapter._reading(_run(clusters_per_class=3, num_clusters=30))[0]


def test_unmeasured_numbers_are_skipped() -> None:
    assert chapter._reading(_run(ari_learned_vs_pixels=None, smallest_cluster=None)) == [
        chapter._reading(_run())[0]]
