"""Chapter 05 (ddm.chapters.harmful_data): the paper's Table 3 values, the influence-function
rankings on planted predictions, every verdict threshold on both sides with planted numbers (DDM+,
ours, included), and run() on a tiny digits experiment."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddm import influence, removal
from ddm.chapters import harmful_data as chapter
from ddm.chapters.base import RunNumbers
from ddm.config import get_profile
from ddm.experiment import Experiment
from ddm.variants import DDM_PLUS, distill_variants

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401

HEADLINES = chapter.Result.headline_labels()


def planted(**values) -> RunNumbers:
    """A run with only the given headline numbers (the others not measured)."""
    unknown = set(values) - set(HEADLINES)
    assert not unknown, f"not headline fields: {unknown}"
    return RunNumbers(values, "cpu", "mnist", recorded=True)


def reading(**values) -> str:
    return "\n".join(chapter._reading(planted(**values)))


# ------------------------------------------------------------------------------------------ the paper
def test_paper_values_are_table3_rows_keyed_by_headline_fields() -> None:
    values = chapter.paper_values("mnist")
    assert set(values) <= set(HEADLINES)
    assert values["acc_target"] == 95.7
    assert values["acc_ddm_10"] == 95.9 and values["acc_random_50"] == 65.9
    assert values["acc_if_20"] == 81.5 and values["acc_fastif_50"] == 74.0 and values["acc_scaleup_1"] == 96.0
    keys = ("ddm", "random", "if", "fastif", "scaleup")
    assert set(values) == {"acc_target"} | {f"acc_{k}_{x}" for k in keys for x in chapter.FRACTIONS}
    assert not any("ddm_plus" in name for name in values)                 # DDM+ is ours: no paper column
    assert chapter.paper_values("cifar10") == {} and chapter.paper_values("cifar100") == {}


def test_paper_curves_for_mnist_and_unpaired_data_only() -> None:
    curves = chapter.paper_curves("digits")               # no paper column: MNIST is the nearest reference
    assert curves == chapter.paper_curves("mnist")
    assert curves[chapter.RANKING_LABELS["random"]] == {1: 95.8, 10: 92.8, 20: 74.6, 50: 65.9}
    assert curves[chapter.RANKING_LABELS["scaleup"]] == {1: 96.0, 10: 95.2, 20: 82.9, 50: 73.3}
    assert set(curves) == {chapter.RANKING_LABELS[k] for k in ("ddm", "random", "if", "fastif", "scaleup")}
    assert chapter.RANKING_LABELS["ddm_plus"] not in curves                 # DDM+ is ours: no paper curve
    assert chapter.paper_curves("cifar10-jpeg") == {}


def test_ddm_plus_is_a_harmful_first_ranking_of_its_own_marked_ours() -> None:
    assert set(chapter.RANKING_KINDS) == set(chapter.RANKING_LABELS)
    assert chapter.RANKING_LABELS["ddm_plus"] == "DDM+ (ours)"
    assert chapter.RANKING_KINDS["ddm_plus"] == "harmful first"
    # third: the figure colours rankings in this order, so DDM stays blue, random orange, DDM+ green
    assert list(chapter.RANKING_LABELS)[:3] == ["ddm", "random", "ddm_plus"]
    for x in chapter.FRACTIONS:
        field = next(f for f in dataclasses.fields(chapter.Result) if f.name == f"acc_ddm_plus_{x}")
        assert field.default is None and "DDM+" in HEADLINES[field.name] and "ours" in HEADLINES[field.name]


def test_influence_rankings_are_table3s_rows() -> None:
    assert chapter.INFLUENCE_RANKINGS == {"if": influence.IF_EXPLICIT, "fastif": influence.FASTIF,
                                          "scaleup": influence.ARNOLDI}
    assert {influence.PAPER_ROWS[m] for m in chapter.INFLUENCE_RANKINGS.values()} == {"Koh et al.", "FastIF", "Scaleup"}
    for key in chapter.INFLUENCE_RANKINGS:
        assert all(f"acc_{key}_{x}" in HEADLINES for x in chapter.FRACTIONS) and f"seconds_{key}" in HEADLINES


# ------------------------------------------------------------------------------------------ influence
def _planted_changes(target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(4, V, L) changes: cluster 2's deletion raises every true-class logit by 3 (the validation
    loss falls most: the most harmful), cluster 0's by 1, cluster 3 changes nothing, cluster 1's
    lowers them by 2 (the most helpful)."""
    true_class = torch.nn.functional.one_hot(labels, target.shape[1]).float()        # (V, L)
    return torch.tensor([1.0, -2.0, 3.0, 0.0])[:, None, None] * true_class[None]


def test_predicted_objective_ranks_the_cluster_whose_deletion_lowers_the_loss_most_first() -> None:
    target = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))             # (V, L)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    changes = _planted_changes(target, labels)
    loss = chapter.predicted_global_objective(target, changes, labels)
    assert loss.shape == (4,)
    assert list(removal.harmful_first(loss)) == [2, 0, 3, 1]
    # Supp. Eq. 14 on the predicted logits, as the DDM ranking computes it on its fine-tunes
    assert torch.allclose(loss, removal.global_objective(target[None] + changes, labels))
    assert loss[3] == pytest.approx(removal.global_objective(target[None], labels)[0].item())   # nothing changes
    with pytest.raises(ValueError, match="expected changes"):
        chapter.predicted_global_objective(target, changes[:, :3], labels)


def test_influence_rankings_use_the_target_and_each_methods_changes_on_the_validation_set(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 3, generator=generator)        # the fake target's logits ARE the test "images"
    labels = torch.randint(0, 3, (10,), generator=generator)
    val_idx = torch.tensor([1, 4, 5, 8])
    exp = SimpleNamespace(test=SimpleNamespace(images=logits, labels=labels), target_logits=lambda x: x.clone())
    planted = _planted_changes(logits[val_idx], labels[val_idx])
    # each method sees the clusters in another order: its own harmful cluster must come first
    shuffles = {influence.IF_EXPLICIT: [0, 1, 2, 3], influence.FASTIF: [2, 3, 0, 1], influence.ARNOLDI: [1, 2, 3, 0]}
    calls = []

    def fake_run(exp_, method, clustering, test_index):
        calls.append(method)
        assert torch.equal(test_index, val_idx)
        return influence.InfluenceRun(method, planted[shuffles[method]], seconds=len(calls) * 1.5, peak_mb=0.0)

    monkeypatch.setattr(influence, "influence_run", fake_run)
    orders, seconds = chapter.influence_rankings(exp, clustering=None, val_idx=val_idx)
    assert calls == [influence.IF_EXPLICIT, influence.FASTIF, influence.ARNOLDI]
    assert set(orders) == set(seconds) == set(chapter.INFLUENCE_RANKINGS)
    for key, method in chapter.INFLUENCE_RANKINGS.items():
        harmful, helpful = shuffles[method].index(2), shuffles[method].index(1)
        assert orders[key][0] == harmful and orders[key][-1] == helpful, key
        assert sorted(orders[key]) == [0, 1, 2, 3]
    assert seconds == {"if": 1.5, "fastif": 3.0, "scaleup": 4.5}


# ------------------------------------------------------------------------------------------ verdict
def test_a_gap_must_exceed_the_noise_floor() -> None:
    # floor |95 - 94| = 1 point, no spread: DDM 1.5 points above random is clear ...
    clear = reading(acc_target=95.0, acc_noise_floor=94.0, acc_ddm_10=93.5, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly better than a random order at 1 of 1 shares (10%)" in clear
    assert "a floor of 1.0 points" in clear
    # ... a floor of 2 points swallows it
    within = reading(acc_target=95.0, acc_noise_floor=93.0, acc_ddm_10=93.5, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly better than a random order at 0 of 1 shares (none)" in within
    worse = reading(acc_target=95.0, acc_noise_floor=94.0, acc_ddm_10=90.0, acc_random_10=92.0, spread_random_10=0.0)
    assert "clearly worse at 1 (10%)" in worse


def test_a_gap_must_exceed_half_the_random_seeds_spread() -> None:
    # floor 0.2; spread 2.0 -> threshold 1.0: a 1.5-point gap is clear
    clear = reading(acc_target=95.0, acc_noise_floor=94.8, acc_ddm_20=80.0, acc_random_20=78.5, spread_random_20=2.0)
    assert "at 1 of 1 shares (20%)" in clear and "threshold 1.0" in clear
    # spread 4.0 -> threshold 2.0: the same gap is not
    within = reading(acc_target=95.0, acc_noise_floor=94.8, acc_ddm_20=80.0, acc_random_20=78.5, spread_random_20=4.0)
    assert "at 0 of 1 shares (none)" in within and "threshold 2.0" in within


def test_does_removing_one_percent_help_against_the_floor() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.5)          # floor 0.5
    assert "a gain beyond the noise floor" in reading(**common, acc_ddm_1=95.8)
    assert "a loss beyond the noise floor" in reading(**common, acc_ddm_1=94.0)
    assert "within the noise floor" in reading(**common, acc_ddm_1=95.3)
    assert "not judged" in reading(acc_target=95.0, acc_ddm_1=95.8)   # no second data order


def test_signal_check_and_both_ends_of_the_ranking() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.5, acc_random_10=90.0, spread_random_10=0.0)
    hurts = reading(**common, acc_ddm_helpful_10=85.0, acc_ddm_10=91.0)
    assert "hurt more than a random order: it does clearly at 1 of 1 shares (10%)" in hurts
    assert "both* ends" not in hurts
    no_signal = reading(**common, acc_ddm_helpful_10=89.8)
    assert "it does clearly at 0 of 1 shares (none)" in no_signal
    both = reading(**common, acc_ddm_helpful_10=85.0, acc_ddm_10=86.0)
    assert "At 10% *both* ends of DDM's ranking cost accuracy" in both


def test_a_class_counts_as_emptied_above_the_threshold() -> None:
    above = reading(class_share_ddm_10=chapter.CLASS_CROWDED + 1, class_share_ddm_20=chapter.CLASS_CROWDED - 1)
    assert f"more than {chapter.CLASS_CROWDED:g}% of one class at 1 of 2 shares (10%)" in above
    below = reading(class_share_ddm_10=chapter.CLASS_CROWDED - 1)
    assert "at 0 of 1 shares (none)" in below and "no class is emptied" in below


def test_influence_rows_are_judged_against_random_and_the_floor() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.0, acc_random_10=92.0, spread_random_10=0.0)   # floor 1
    clear = reading(**common, acc_if_10=93.5, seconds_if=12.34)
    assert ("**Koh et al. (Table 3's row).** Ranking by Koh et al. influence function (explicit H^-1, last layer) "
            "is clearly better than random at 1 of 1 shares (10%) and clearly worse at 0 (none)") in clear
    assert "Koh et al. − random, in points: 10%: +1.5 (threshold 1.0)" in clear
    assert "The paper's MNIST gaps are +0.1, +0.9, +6.9, +8.4 at 1/10/20/50%. Ranking took 12.3 s." in clear
    within = reading(**common, acc_fastif_10=92.5)                  # inside the floor; no time measured
    assert "**FastIF (Table 3's row).**" in within and "clearly better than random at 0 of 1 shares (none)" in within
    assert "Ranking took" not in within
    worse = reading(**{**common, "spread_random_10": 3.0}, acc_scaleup_10=90.0)     # threshold 1.5
    assert "**Scaleup (Table 3's row).**" in worse and "clearly worse at 1 (10%)" in worse
    assert "Table 3's" not in reading(**common, seconds_if=3.0)                   # no accuracy, no line


def test_verdict_sets_ddm_against_each_influence_function() -> None:
    common = dict(acc_target=95.0, acc_noise_floor=94.0, acc_random_10=92.0, spread_random_10=0.0)   # floor 1
    text = reading(**common, acc_ddm_10=93.0, acc_if_10=95.0, acc_fastif_10=92.5, acc_scaleup_10=91.0)
    assert ("DDM against Koh et al.: clearly better at none, clearly worse at 10%; against FastIF: clearly "
            "better at none, clearly worse at none; against Scaleup: clearly better at 10%, clearly worse at none") in text
    assert "beats the influence functions" not in reading(**common, acc_ddm_10=93.0)


def test_verdict_reads_ddm_plus_against_ddm_and_random() -> None:
    # floor 1, spreads 0 and 4 (threshold 2 at 20%)
    common = dict(acc_target=95.0, acc_noise_floor=94.0, acc_random_10=90.0, spread_random_10=0.0,
                  acc_random_20=80.0, spread_random_20=4.0, acc_ddm_10=91.0, acc_ddm_20=79.0)
    better = reading(**common, acc_ddm_plus_10=93.0, acc_ddm_plus_20=80.5)
    assert "**DDM+ (ours, soft labels; not in the paper).**" in better
    assert ("Against the paper's DDM it is clearly better at 1 of 2 shares (10%) and clearly worse at 0 (none); "
            "DDM+ − DDM, in points: 10%: +2.0 (threshold 1.0); 20%: +1.5 (threshold 2.0)") in better
    assert ("Against a random order it is clearly better at 1 of 2 shares (10%) and clearly worse at 0 (none); "
            "DDM+ − random, in points: 10%: +3.0 (threshold 1.0); 20%: +0.5 (threshold 2.0).") in better
    assert "Here DDM+ improves on the paper's DDM." in better
    worse = reading(**common, acc_ddm_plus_10=89.5, acc_ddm_plus_20=76.5)
    assert "it is clearly better at 0 of 2 shares (none) and clearly worse at 2 (10%, 20%); DDM+ − DDM" in worse
    assert "Here DDM+ falls behind the paper's DDM." in worse
    same = reading(**common, acc_ddm_plus_10=91.5, acc_ddm_plus_20=79.0)
    assert "Here DDM+ is not clearly different from the paper's DDM." in same
    mixed = reading(**common, acc_ddm_plus_10=93.0, acc_ddm_plus_20=76.0)
    assert "Against the paper's DDM the outcome is mixed." in mixed
    # DDM not measured: only the comparison with random, and no summary against DDM
    alone = reading(acc_target=95.0, acc_noise_floor=94.0, acc_random_10=90.0, spread_random_10=0.0,
                    acc_ddm_plus_10=93.0)
    assert "Against a random order it is clearly better at 1 of 1 shares (10%)" in alone
    assert "paper's DDM" not in alone
    # the runs recorded before DDM+ (no DDM+ numbers): no line
    assert "DDM+" not in reading(**common)


def test_verdict_copes_with_numbers_that_were_not_measured() -> None:
    assert chapter._reading(planted()) == []
    only_target = reading(acc_target=95.0)
    assert "no second data order" in only_target and "DDM vs random" not in only_target


# ------------------------------------------------------------------------------------------ run
TINY = get_profile("quick", **{
    "data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 4,
    "train.lr": 0.05, "clusters.clusters_per_class": 4, "distill.steps": 20, "distill.step_length": 1,
    "online.finetune_steps": 5, "eval.n_test_points": 10, "eval.workers": 1,
})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with one_thread():  # set up before the function-scoped single_thread fixture
        exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path_factory.mktemp("store"),
                                progress=False)
        return exp, chapter.run(exp, random_seeds=(0, 1))


def test_run_measures_every_headline_and_its_tables_agree(tiny) -> None:
    exp, result = tiny
    numbers = result.headline_numbers()
    assert all(numbers[name] is not None for name in HEADLINES), [n for n in HEADLINES if numbers[n] is None]
    for name, value in numbers.items():
        assert (value > 0) if name.startswith("seconds_") else (0 <= value <= 100), name
    table = result.accuracy_table
    assert list(table.columns) == (["0% removed"] + [f"{x}% removed" for x in chapter.FRACTIONS]
                                   + [chapter.SECONDS_COLUMN])
    assert table.loc[chapter.RANKING_LABELS["ddm"], "10% removed"] == result.acc_ddm_10
    assert [table.loc[chapter.RANKING_LABELS["ddm_plus"], f"{x}% removed"] for x in chapter.FRACTIONS] == [
        getattr(result, f"acc_ddm_plus_{x}") for x in chapter.FRACTIONS]
    assert np.isnan(table.loc[chapter.RANKING_LABELS["ddm_plus"], chapter.SECONDS_COLUMN])
    # the influence rows: their accuracy and what ranking cost, beside the others
    for key in chapter.INFLUENCE_RANKINGS:
        row = table.loc[chapter.RANKING_LABELS[key]]
        assert [row[f"{x}% removed"] for x in chapter.FRACTIONS] == [getattr(result, f"acc_{key}_{x}")
                                                                     for x in chapter.FRACTIONS]
        assert row[chapter.SECONDS_COLUMN] == getattr(result, f"seconds_{key}")
    assert np.isnan(table.loc[chapter.RANKING_LABELS["ddm"], chapter.SECONDS_COLUMN])
    assert set(result.curves["key"]) == set(chapter.RANKING_LABELS)
    assert table.loc[chapter.RANKING_LABELS["exact_helpful"], "50% removed"] == result.acc_exact_helpful_50
    # the random row is the mean of the seeds, its spread their range
    seeds = result.curves[(result.curves["key"] == "random") & (result.curves["asked (%)"] == 20)]
    assert len(seeds) == 2
    assert result.acc_random_20 == pytest.approx(seeds["test accuracy (%)"].mean())
    assert result.spread_random_20 == pytest.approx(np.ptp(seeds["test accuracy (%)"]))
    # whole clusters: at least the share asked is removed, and more of a class than of the data
    for x in chapter.FRACTIONS:
        assert getattr(result, f"removed_ddm_{x}") >= x
        assert getattr(result, f"class_share_ddm_{x}") >= getattr(result, f"removed_ddm_{x}") - 1e-9
    assert len(result.removed_table) == len(chapter.RANKING_LABELS) - 1 + 2     # random: one row per seed
    assert chapter.verdict(result).startswith("**Profile `quick`")
    assert "**Scaleup (Table 3's row).**" in chapter.verdict(result)
    assert "**DDM+ (ours, soft labels; not in the paper).**" in chapter.verdict(result)


def test_ddm_plus_row_retrains_what_its_own_synset_ranks_most_harmful(tiny) -> None:
    """DDM+ goes through DDM's protocol: Supp. Eq. 14 on its soft-label synset's leave-one-cluster-out
    fine-tunes, the shortest harmful-first prefix of clusters, an exact retrain, the held-out half."""
    exp, result = tiny
    plus = distill_variants(exp, (DDM_PLUS,))[DDM_PLUS]
    assert plus.label_logits is not None                                    # soft labels: not the paper's synset
    clustering = exp.clusters()
    val, held = removal.validation_split(len(exp.test), seed=exp.config.eval.seed)
    order = chapter.synset_order(exp, plus, clustering.num_clusters, exp.test.images[val], exp.test.labels[val])
    rows = result.curves[result.curves["key"] == "ddm_plus"].set_index("asked (%)")
    assert sorted(rows.index) == list(chapter.FRACTIONS) and rows["seed"].isna().all()
    for x in (1, 20):
        chosen = removal.clusters_for_fraction(order, clustering.sizes(), x / 100)
        logits = exp.exact_retrain_logits([chosen], clustering)[0, held]
        expected = (logits.argmax(1) == exp.test.labels[held]).float().mean().item() * 100
        assert rows.loc[x, "clusters removed"] == len(chosen)
        assert rows.loc[x, "test accuracy (%)"] == pytest.approx(expected)
        assert getattr(result, f"acc_ddm_plus_{x}") == pytest.approx(expected)
