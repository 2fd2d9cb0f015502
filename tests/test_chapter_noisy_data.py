"""Chapter 13 (ddm.chapters.noisy_data): Table 6's values, the detection bar by hand, every verdict
threshold on planted numbers, and run() on a tiny digits experiment: every headline measured (DDM+,
ours, too), the noisy images recorded and the detection scores recomputed from what was removed."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import pytest

from ddm import noise, paper, removal
from ddm.chapters import base, harmful_data, noisy_data as chapter
from ddm.chapters.base import RunNumbers
from ddm.variants import DDM_PLUS, PAPER_DDM, distill_variants

from fixtures_core import one_thread, single_thread  # noqa: F401

HEADLINES = chapter.Result.headline_labels()


def planted(**values) -> RunNumbers:
    """A run with only the given headline numbers (the others not measured)."""
    unknown = set(values) - set(HEADLINES)
    assert not unknown, f"not headline fields: {unknown}"
    return RunNumbers(values, "cpu", "mnist", recorded=True)


def reading(**values) -> str:
    return "\n".join(chapter._reading(planted(**values)))


# ------------------------------------------------------------------------------------------ the paper
def test_paper_values_are_table6_rows_for_any_data_set() -> None:
    values = chapter.paper_values("mnist")
    assert set(values) <= set(HEADLINES)
    assert values["acc_target"] == 78.4
    assert [values[f"acc_ddm_{x}"] for x in chapter.FRACTIONS] == [82.0, 79.3, 73.6, 70.1]
    assert [values[f"acc_random_{x}"] for x in chapter.FRACTIONS] == [70.5, 68.8, 61.3, 55.7]
    assert chapter.paper_values("cifar10") == values == chapter.paper_values("digits")   # no data set named
    assert paper.TABLE6["Random"][0] == paper.TABLE6["DDM"][0] == 78.4
    assert chapter.NOISE_FRACTION == 0.2 and paper.TABLE6_NOISE["norm"] == 0.1
    assert chapter.paper_curves()[chapter.RANKING_LABELS["ddm"]] == {10: 82.0, 20: 79.3, 30: 73.6, 40: 70.1}
    assert not any("plus" in name for name in values)                # DDM+ is ours: Table 6 has no row for it


def test_ddm_plus_is_ours_and_its_numbers_may_be_absent() -> None:
    """The cpu records predate DDM+: every DDM+ field is named not yet recorded, defaults to None,
    says so on the page and says it is ours; every other ranking's stays required."""
    fields = chapter.Result.__dataclass_fields__
    plus = {name for name in HEADLINES if f"_{chapter.PLUS}_" in name}
    assert len(plus) == 4 * len(chapter.FRACTIONS)                   # accuracy, precision, recall, removed
    assert chapter.Result.not_yet_recorded() == plus
    for name in plus:
        assert fields[name].default is None, name
        assert chapter.Result.headline_notes()[name] == base.NOT_RECORDED_NOTE
        assert "DDM+ ranking (ours, soft labels; not the paper's)" in HEADLINES[name]
    assert fields["acc_ddm_10"].default is dataclasses.MISSING
    assert chapter.RANKING_LABELS[chapter.PLUS] == "DDM+ (ours)"
    assert chapter.ROW_ORDER[:2] == ("ddm", chapter.PLUS) and set(chapter.ROW_ORDER) == set(chapter.RANKING_LABELS)


# ------------------------------------------------------------------------------------------ verdict
def test_chance_threshold_by_hand() -> None:
    # p = 0.2, N = 100, n = 10: se = sqrt(0.16 / 10 * 90 / 99) = 0.12060
    assert chapter.chance_threshold(20.0, 10.0, 100) == pytest.approx(20 + chapter.DETECTION_Z * 12.060, abs=1e-2)
    # removing everything: no sampling error left
    assert chapter.chance_threshold(20.0, 100.0, 100) == pytest.approx(20.0)


def test_detection_must_beat_the_chance_bar() -> None:
    common = dict(noisy_share=20.0, train_images=1000, removed_ddm_10=10.0)   # bar = 20 + 2 x 3.8 = 27.6
    above = reading(**common, precision_ddm_10=30.0, recall_ddm_40=50.0)
    assert "DDM (Supp. Eq. 14): above chance at 1 of 1 shares (10%); precision 10%: 30% (bar 28%)" in above
    assert "DDM's removal of 40% took 50% of the noisy images" in above
    below = reading(**common, precision_ddm_10=26.0)
    assert "above chance at 0 of 1 shares (none)" in below
    assert "Detecting" not in reading(precision_ddm_10=30.0)                  # no noisy share: not judged


def test_ddm_against_random_must_exceed_the_floor_and_half_the_spread() -> None:
    common = dict(acc_target=80.0, acc_noise_floor=79.0, acc_random_20=70.0)   # floor 1
    clear = reading(**common, acc_ddm_20=71.5, spread_random_20=0.0)
    assert "clearly better than a random order at 1 of 1 shares (20%)" in clear
    assert "Table 6's gaps are +11.5, +10.5, +12.3, +14.4 at 10/20/30/40%" in clear
    spread = reading(**common, acc_ddm_20=71.5, spread_random_20=4.0)          # threshold 2.0
    assert "at 0 of 1 shares (none)" in spread and "threshold 2.0" in spread
    worse = reading(**common, acc_ddm_20=67.0, spread_random_20=0.0)
    assert "clearly worse at 1 (20%)" in worse


def test_ddm_plus_is_read_against_random_and_the_papers_ddm() -> None:
    common = dict(acc_target=80.0, acc_noise_floor=79.0, acc_random_20=70.0, spread_random_20=0.0,
                  acc_ddm_20=71.5)                                             # floor 1
    better = reading(**common, acc_ddm_plus_20=74.0)                          # +4.0 on random, +2.5 on DDM
    assert "**DDM+ (ours, soft labels; not the paper's method, no row in Table 6).**" in better
    assert ("Against a random order it is clearly better at 1 of 1 shares (20%) and clearly worse at 0 (none); "
            "DDM+ − random, in points: 20%: +4.0 (threshold 1.0)") in better
    assert ("Against the paper's DDM it is clearly better at 1 of 1 shares (20%) and clearly worse at 0 (none); "
            "DDM+ − DDM, in points: 20%: +2.5 (threshold 1.0).") in better
    assert "Here DDM+ improves on the paper's DDM." in better
    worse = reading(**common, acc_ddm_plus_20=69.0)                           # -1.0 on random, -2.5 on DDM
    assert "Against a random order it is clearly better at 0 of 1 shares (none) and clearly worse at 0 (none)" in worse
    assert "Against the paper's DDM it is clearly better at 0 of 1 shares (none) and clearly worse at 1 (20%)" in worse
    assert "Here DDM+ falls behind the paper's DDM." in worse
    spread = reading(**{**common, "spread_random_20": 6.0}, acc_ddm_plus_20=74.0)   # threshold 3.0: random only
    assert "Against a random order it is clearly better at 1 of 1" in spread
    assert "Against the paper's DDM it is clearly better at 0 of 1 shares (none)" in spread
    only_ddm = reading(acc_ddm_30=60.0, acc_ddm_plus_30=70.0)                # no random order measured
    assert "Against a random order" not in only_ddm and "30%: +10.0 (threshold 0.0)" in only_ddm
    assert "DDM+" not in reading(**common)                                    # a record made before DDM+
    found = reading(noisy_share=20.0, train_images=1000, removed_ddm_plus_10=10.0, precision_ddm_plus_10=30.0)
    assert "DDM+ (ours): above chance at 1 of 1 shares (10%); precision 10%: 30% (bar 28%)" in found


def test_what_the_noise_costs_is_judged_against_the_floor() -> None:
    common = dict(acc_target=80.0, acc_noise_floor=79.5)                      # floor 0.5
    assert "a loss beyond the noise floor" in reading(**common, acc_clean=85.0)
    assert "the noise did no measurable harm" in reading(**common, acc_clean=80.3)
    assert "not judged" in reading(acc_target=80.0, acc_clean=85.0)
    assert "Does removing data help?" in reading(**common, acc_ddm_10=82.0)
    assert "a gain beyond the noise floor" in reading(**common, acc_ddm_10=82.0)


def test_every_reference_ranking_and_the_oracle_are_judged() -> None:
    common = dict(acc_target=80.0, acc_noise_floor=79.0, acc_random_30=70.0, spread_random_30=0.0)
    text = reading(**common, acc_exact_30=75.0, acc_tracin_30=70.5, acc_if_30=60.0, acc_oracle_30=74.0)
    assert "**Exact leave-one-out retrains.** Against random removal: clearly better at 1 of 1 shares (30%)" in text
    assert "**TracIn-style.** Against random removal: clearly better at 0 of 1 shares (none)" in text
    assert "clearly worse at 1 (30%)" in text                                  # Koh et al.
    assert "This order knows which images are noisy" in text


def test_verdict_copes_with_numbers_that_were_not_measured() -> None:
    assert chapter._reading(planted()) == []
    assert "no second data order" in reading(acc_target=80.0)


# ------------------------------------------------------------------------------------------ run
TINY = {"data.train_per_class": 20, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
        "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 6, "distill.step_length": 1,
        "online.finetune_steps": 3, "eval.n_test_points": 8, "eval.workers": 1}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def result(experiment):
    with one_thread():
        return chapter.run(experiment, random_seeds=(0, 1))


def test_the_noisy_experiment_is_another_configuration(experiment) -> None:
    noisy = chapter.noisy_experiment(experiment)
    assert noisy.config.noise.fraction == chapter.NOISE_FRACTION and experiment.config.noise.fraction == 0
    assert chapter.noisy_experiment(noisy) is noisy                   # noise already asked for: kept as it is
    assert chapter.clean_experiment(experiment) is experiment
    assert chapter.clean_experiment(noisy).config == experiment.config
    assert noisy.store.path("target", noisy._key("model", "train")) != \
        experiment.store.path("target", experiment._key("model", "train"))


def test_run_measures_every_headline(result) -> None:
    numbers = result.headline_numbers()
    missing = [n for n in HEADLINES if numbers[n] is None]
    assert not missing, missing
    assert result.train_images == 200 and result.noisy_images == 40 and result.noisy_share == pytest.approx(20.0)
    assert result.noise_kind == "linf" and result.noise_norm == 0.1
    assert result.noise_norm_min == pytest.approx(0.1, abs=1e-6)
    assert result.noise_norm_max == pytest.approx(0.1, abs=1e-6)
    for name, value in numbers.items():
        if name.startswith(("acc_", "precision_", "recall_", "removed_")):
            assert 0 <= value <= 100, name
    for x in chapter.FRACTIONS:
        for key in chapter.RANKING_LABELS:
            assert numbers[f"removed_{key}_{x}"] >= x                       # whole clusters: at least the share
    assert result.seconds_if > 0
    assert set(result.curves["key"]) == set(chapter.RANKING_LABELS)
    plus = result.curves[result.curves["key"] == chapter.PLUS]
    assert len(plus) == len(chapter.FRACTIONS) and set(plus["ranking"]) == {"DDM+ (ours)"}
    assert all(numbers[f"acc_ddm_plus_{x}"] is not None for x in chapter.FRACTIONS)


def test_the_noisy_images_are_recorded_and_the_scores_recomputed(experiment, result) -> None:
    noisy = chapter.noisy_experiment(experiment)
    assert np.array_equal(result.noisy_indices, noise.noisy_indices(200, 0.2, 0).numpy())
    assert np.array_equal(result.noisy_indices, noisy.noisy_indices.numpy())
    clustering = noisy.clusters()
    mask = noise.noisy_mask(200, result.noisy_indices)
    assert result.cluster_noisy_shares == pytest.approx(noise.cluster_noisy_shares(clustering.assignment, mask, 20))
    assert result.noisiest_cluster == pytest.approx(100 * result.cluster_noisy_shares.max())
    # the oracle takes the noisiest clusters: recompute its first removal's precision and recall by hand
    oracle = noise.noisiest_first(clustering.assignment, mask, 20)
    clusters = removal.clusters_for_fraction(oracle, clustering.sizes(), 0.1)
    taken = np.isin(clustering.assignment.numpy(), clusters)
    assert result.precision_oracle_10 == pytest.approx(100 * (taken & mask).sum() / taken.sum())
    assert result.recall_oracle_10 == pytest.approx(100 * (taken & mask).sum() / mask.sum())
    assert result.precision_oracle_10 >= max(result.precision_random_10, 20.0)
    # DDM+ (ours) and the paper's DDM: one objective (chapter 05's Supp. Eq. 14) on two synsets; recompute
    # DDM+'s first removal's precision and recall from its order
    val_idx, _ = removal.validation_split(len(noisy.test), seed=noisy.config.eval.seed)
    synsets = distill_variants(noisy, (PAPER_DDM, DDM_PLUS))
    orders, _ = harmful_data.rankings(noisy, synsets[PAPER_DDM], clustering, val_idx, ())
    x, y = noisy.test.images[val_idx], noisy.test.labels[val_idx]
    assert np.array_equal(harmful_data.synset_order(noisy, synsets[PAPER_DDM], 20, x, y), orders["ddm"])
    plus = harmful_data.synset_order(noisy, synsets[DDM_PLUS], 20, x, y)
    assert sorted(plus.tolist()) == list(range(20))
    taken = np.isin(clustering.assignment.numpy(), removal.clusters_for_fraction(plus, clustering.sizes(), 0.1))
    assert result.precision_ddm_plus_10 == pytest.approx(100 * (taken & mask).sum() / taken.sum())
    assert result.recall_ddm_plus_10 == pytest.approx(100 * (taken & mask).sum() / mask.sum())
    # the random row is the mean of the seeds
    seeds = result.curves[(result.curves["key"] == "random") & (result.curves["asked (%)"] == 30)]
    assert len(seeds) == 2 and result.recall_random_30 == pytest.approx(seeds["recall (%)"].mean())
    assert result.spread_random_30 == pytest.approx(np.ptp(seeds["test accuracy (%)"]))


def test_tables_figures_and_verdict(result) -> None:
    table = result.accuracy_table
    assert list(table.columns) == ["0% removed"] + [f"{x}% removed" for x in chapter.FRACTIONS]
    assert table.loc[chapter.RANKING_LABELS["ddm"], "20% removed"] == result.acc_ddm_20
    assert table.iloc[0]["0% removed"] == result.acc_clean
    assert table.loc[chapter.RANKING_LABELS["exact"], "0% removed"] == result.acc_target
    assert len(result.detection_table) == len(chapter.RANKING_LABELS) + 1          # and the chance row
    ddm_row = list(table.index).index(chapter.RANKING_LABELS["ddm"])
    assert table.index[ddm_row + 1] == "DDM+ (ours)"
    assert table.loc["DDM+ (ours)", "40% removed"] == result.acc_ddm_plus_40
    assert list(result.detection_table.index)[2] == "DDM+ (ours)"                 # below chance and DDM
    # DDM+'s rows sit below DDM's, their paper cells blank; a record made before DDM+ shows blanks
    before = planted(acc_target=80.0, acc_ddm_10=81.0)
    shown = chapter.beside_paper(result, [before])
    assert list(shown[chapter.PAPER_LABEL]) == ["78.4", "82.0", "79.3", "73.6", "70.1", "", "", "", "",
                                                "70.5", "68.8", "61.3", "55.7"]
    plus_rows = [HEADLINES[f"acc_ddm_plus_{x}"] for x in chapter.FRACTIONS]
    assert list(shown.index[5:9]) == plus_rows
    assert all(shown.loc[plus_rows].iloc[:, 0] != "") and all(shown.loc[plus_rows].iloc[:, 1] == "")
    figures = chapter.figures(result, "provenance")
    assert set(figures) == {"fig-noisy-removal", "fig-noisy-detection"}
    for fig in figures.values():
        assert fig.axes[0].get_xlabel() and fig.axes[0].get_legend_handles_labels()[1]
        for ax in fig.axes[:2 if fig is figures["fig-noisy-detection"] else 1]:
            colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
            assert "DDM+ (ours)" in colours                                      # its own curve, its own colour
            others = [c for label, c in colours.items() if label != "DDM+ (ours)" and not label.startswith("_")]
            assert colours["DDM+ (ours)"] not in others
        plt.close(fig)
    text = chapter.verdict(result, [before])
    assert text.startswith("**Profile `quick`") and "Table 6's claim" in text and "Detecting the noisy images" in text
    assert text.count("**DDM+ (ours, soft labels") == 1                          # this run; not the old record
