"""Chapter 06 (Tables 1 and 2): its measurement on tiny digits, the paper's numbers, and every
verdict threshold on planted runs."""

from __future__ import annotations

import pytest

from ddm import book, paper
from ddm.chapters import base, influence as chapter

from fixtures_core import one_thread, single_thread  # noqa: F401

TINY = {"data.train_per_class": 30, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
        "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 10, "distill.step_length": 1,
        "online.finetune_steps": 4, "eval.n_test_points": 5, "eval.lds_masks": 5,
        "influence.lissa_depth": 50, "influence.arnoldi_iterations": 15, "influence.arnoldi_rank": 5,
        "influence.fastif_neighbours": 20}
ON_CLUSTERS = ("random", "predict", "clustering", "ddm_match", "ddm", "ddm_plus", "if", "lissa", "fastif",
               "scaleup", "tracin", "trak")


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> chapter.Result:
    with one_thread():
        exp = base.open_experiment("quick", overrides=TINY, cache_root=tmp_path_factory.mktemp("store"))
        return chapter.run(exp, draws=2)


# ------------------------------------------------------------------------------------------ run
def test_run_on_tiny_digits_measures_every_field(result) -> None:
    assert result.num_clusters == 20 and result.test_points == 10 and result.test_draws == 2
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = sorted(k for k, v in numbers.items() if v is None)
    assert not missing, f"not measured: {missing}"
    assert 1 <= result.retrains_ddm_wo_cluster <= 20 + 1
    assert list(result.table1.index) == [chapter.LABELS[s] for s in (*chapter.TABLE1, "ddm_plus", "exact", "noise")]
    assert list(result.table2.index) == [chapter.LABELS[s] for s in
                                         (*chapter.TABLE2, "ddm_plus", *chapter.BEYOND_PAPER, "exact", "noise")]


def test_ddm_plus_sits_beside_the_papers_rows_with_no_paper_value(result) -> None:
    # DDM+ is ours: never one of the paper's rows, and its paper cells stay blank in both tables.
    assert "ddm_plus" not in (*chapter.TABLE1, *chapter.TABLE2, *chapter.PAPER_TABLE1, *chapter.PAPER_TABLE2)
    assert "ours" in chapter.LABELS["ddm_plus"]
    for frame in (result.table1, result.table2):
        row = frame.loc[chapter.LABELS["ddm_plus"]]
        assert all(row[c] == book.BLANK for c in frame.columns if c.startswith("paper"))
        assert row["Dist1 x100 (± spread over draws)"] != book.BLANK
    for key in ("mnist", "cifar10", "cifar100"):
        assert not any(k.endswith("ddm_plus") for k in chapter.paper_values(key))


def test_exact_retrainings_own_pick_bounds_every_method_on_the_same_clusters(result) -> None:
    # The exact pick maximises the realised Dist1 (and Dist3) at every test point, so no method
    # locating clusters of the same clustering can exceed it in any draw.
    for suffix in ON_CLUSTERS:
        for ours, best in zip(result.dist1_draws[suffix], result.dist1_draws["exact"]):
            assert ours <= best + 1e-9, suffix
        assert getattr(result, f"dist3_{suffix}") <= result.dist3_exact + 1e-9, suffix
    # Dist3 = 1 / (1 + x) with x a squared distance between probability vectors (<= 2).
    assert all(1 / 3 <= getattr(result, f"dist3_{s}") <= 1 for s in ON_CLUSTERS)


def test_spread_is_the_standard_deviation_of_the_draws(result) -> None:
    import numpy as np

    for suffix, values in result.dist1_draws.items():
        assert getattr(result, f"dist1_x100_{suffix}") == pytest.approx(np.mean(values))
        assert getattr(result, f"dist1_sd_{suffix}") == pytest.approx(np.std(values, ddof=1))
    assert all(getattr(result, f"{q}_sd_{s}") >= 0 for q in ("dist2", "dist3") for s in (*chapter.TABLE1, "exact"))
    assert " ± " in result.table1.loc[chapter.LABELS["ddm"], "Dist2 (± spread)"]


def test_every_method_is_timed(result) -> None:
    for suffix in ("ddm", "ddm_plus", "if", "lissa", "fastif", "scaleup", "tracin", "trak"):
        assert getattr(result, f"seconds_{suffix}") > 0
        assert getattr(result, f"peak_mb_{suffix}") >= 0


# ------------------------------------------------------------------------------------------ paper
def test_paper_values_are_tables_1_and_2() -> None:
    mnist = chapter.paper_values("mnist")
    assert mnist["dist1_x100_ddm"] == paper.TABLE1["DDM-full"]["mnist"][0] == paper.TABLE2["DDM"]["mnist"]
    assert mnist["dist1_x100_if"] == 10.0 and mnist["dist1_x100_fastif"] == 9.8 and mnist["dist1_x100_scaleup"] == 10.4
    assert mnist["dist2_ddm_wo_cluster"] == 0.55 and mnist["dist1_x100_predict"] == 5.5
    assert "dist2_predict" not in mnist                 # "-" in Table 1: not reported
    assert mnist["num_clusters"] == 100
    assert chapter.paper_values("cifar10")["dist1_x100_scaleup"] == 6.5
    assert chapter.paper_values("digits") == {}
    # Table 1 and Table 2 agree wherever they report the same method.
    for key in ("mnist", "cifar10", "cifar100"):
        assert paper.TABLE1["Random Select"][key][0] == paper.TABLE2["Random"][key]
        assert paper.TABLE1["DDM-full"][key][0] == paper.TABLE2["DDM"][key]


# ------------------------------------------------------------------------------------------ verdict
def _run(**values) -> base.RunNumbers:
    """A planted run: DDM clearly above every influence function, all above the noise."""
    numbers = dict(test_draws=3,
                   dist1_x100_ddm=10.0, dist1_sd_ddm=0.5, dist1_x100_if=6.0, dist1_sd_if=0.5,
                   dist1_x100_fastif=5.0, dist1_sd_fastif=0.5, dist1_x100_scaleup=5.5, dist1_sd_scaleup=0.5,
                   dist1_x100_random=2.0, dist1_sd_random=0.5, dist1_x100_noise=1.0, dist1_sd_noise=0.1,
                   dist1_x100_exact=20.0, dist1_sd_exact=1.0, dist1_x100_ddm_wo_cluster=4.0,
                   dist1_sd_ddm_wo_cluster=0.5, spearman_ddm=0.5, spearman_if=0.2, spearman_fastif=0.1,
                   spearman_scaleup=0.1, spearman_random=0.0, spearman_noise=0.6,
                   seconds_ddm=2.0, peak_mb_ddm=10.0, seconds_if=20.0, peak_mb_if=300.0)
    numbers.update(values)
    return base.RunNumbers(numbers, "cpu", "mnist", True)


def _text(**values) -> str:
    return "\n".join(chapter._reading(_run(**values)))


def test_verdict_says_the_claim_holds_when_ddm_is_clearly_above() -> None:
    assert "the claim holds here" in _text()


def test_verdict_says_the_claim_fails_when_an_influence_function_is_clearly_above() -> None:
    text = _text(dist1_x100_fastif=14.0)
    assert "does **not** hold" in text and "FastIF" in text


def test_verdict_calls_gaps_within_the_spreads_indistinguishable() -> None:
    # gap 0.9 < SPREADS_APART x (0.5 + 0.5)
    assert "not distinguishable" in _text(dist1_x100_if=9.1)
    assert "the claim holds" in _text(dist1_x100_if=8.9)


def test_verdict_names_methods_below_the_noise() -> None:
    text = _text(dist1_x100_noise=7.0)
    below = text.split("Below the noise: ")[1].split(": their picks")[0]
    assert below == "Koh et al., FastIF, Scaleup, Random Select"
    assert "Every method's pick stands above that noise" in _text()


def test_verdict_flags_when_dist1_and_the_ground_truth_disagree() -> None:
    assert "Dist1 says the same" in _text()
    assert "**disagree**" in _text(spearman_if=0.8)


def test_verdict_of_the_ablation_orders_the_rows() -> None:
    text = _text()
    assert "DDM-full 10.00 > DDM w/o cluster 4.00 > Random Select 2.00" in text
    assert "DDM-full is above DDM w/o cluster" in text
    assert ("the paper's MNIST column orders them DDM-match 10.8 > DDM-full 10.8 > DDM w/o cluster 9.1 > "
            "Clustering-based 6.2 > Predict-based 5.5 > Random Select 3.3") in text
    cifar = "\n".join(chapter._reading(base.RunNumbers(_run().values, "cpu", "cifar10-jpeg", True)))
    assert "the paper's CIFAR-10 column orders them DDM-full 6.8 > DDM w/o cluster 5.9" in cifar


def test_verdict_says_when_even_the_best_pick_is_below_the_noise() -> None:
    text = _text(dist1_x100_noise=25.0)
    assert "Even the best pick stays below it" in text
    assert "The paper's Random Select reaches 3.3 on MNIST" in text
    assert "Even the best pick" not in _text()


def test_verdict_flags_a_pick_that_ignores_the_test_image() -> None:
    assert "the same cluster whatever the test image" in _text(same_pick_pct_ddm=100.0, same_pick_pct_exact=20.0)
    assert "Its picks vary with the test image" in _text(same_pick_pct_ddm=30.0, same_pick_pct_exact=20.0)


def test_verdict_reads_ddm_plus_against_the_papers_ddm_and_random_choice() -> None:
    plus = dict(dist1_x100_ddm_plus=12.0, dist1_sd_ddm_plus=0.5, spearman_ddm_plus=0.52)
    text = _text(**plus)
    line = next(li for li in text.split("\n") if li.startswith("* **DDM+ (ours"))
    assert "moves the output by 12.00 ± 0.50 (Dist1 x100)" in line
    # gap 2.0 > SPREADS_APART x (0.5 + 0.5); gap 10.0 to random
    assert "above the paper's DDM (10.00 ± 0.50; gap +2.00, spreads 1.00)" in line
    assert "above random choice (2.00 ± 0.50; gap +10.00, spreads 1.00)" in line
    # Spearman 0.52 against 0.50: within SPEARMAN_BAND
    assert "DDM+ reaches +0.52: indistinguishable from the paper's DDM (+0.50) and above random choice (+0.00)" in line
    # Within the spreads, and clearly below.
    assert "not distinguishable from the paper's DDM" in _text(**{**plus, "dist1_x100_ddm_plus": 10.9})
    assert "below the paper's DDM" in _text(**{**plus, "dist1_x100_ddm_plus": 8.9})
    assert "below the paper's DDM (+0.50)" in _text(**{**plus, "spearman_ddm_plus": 0.4})
    # One number without the other: only that half is read.
    only_dist1 = _text(dist1_x100_ddm_plus=12.0, dist1_sd_ddm_plus=0.5)
    assert "above the paper's DDM" in only_dist1 and "DDM+ reaches" not in only_dist1
    assert "DDM+ reaches +0.52" in _text(spearman_ddm_plus=0.52)


def test_verdict_says_nothing_of_ddm_plus_when_it_was_not_measured() -> None:
    # The recorded cpu runs were made without DDM+.
    assert "DDM+" not in _text()
    for run in base.recorded_runs(chapter.CHAPTER, "quick"):
        text = "\n".join(chapter._reading(run))
        assert ("DDM+ (ours" in text) == (run.has("dist1_x100_ddm_plus") or run.has("spearman_ddm_plus"))


def test_same_pick_share_is_measured_from_the_picks(result) -> None:
    assert 100 / result.num_clusters <= result.same_pick_pct_random <= 100
    assert result.same_pick_pct_exact >= 100 / result.test_points


def test_table_cells_never_show_more_than_four_decimals() -> None:
    numbers = {"dist3_ddm": 0.99912, "dist3_sd_ddm": 0.00023, "dist1_x100_ddm": 0.000112, "dist1_sd_ddm": 0.00004}
    assert chapter._mean_spread(numbers, "ddm", "dist3") == "0.999 ± 0.0002"
    assert chapter._mean_spread(numbers, "ddm") == "0.0001 ± 0"
