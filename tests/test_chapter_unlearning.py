"""Chapter 04 (ddm.chapters.unlearning): Table 4 both ways, Fig. 7, error against clusters deleted.

The verdict is exercised on planted numbers on each side of every named threshold; ``run`` on a
tiny digits experiment (a temporary store, ~20 s) is checked against the same quantities
computed directly from the experiment's public functions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ddm import paper
from ddm.chapters import unlearning as chapter
from ddm.chapters.base import RunNumbers
from ddm.config import get_profile
from ddm.experiment import Experiment
from ddm.metrics import output_distance
from ddm.online import finetune, leave_one_out_masks
from ddm.training import accuracy, predict_logits

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401


# ------------------------------------------------------------------------------------------ paper
def test_paper_values_are_headline_fields_and_table4() -> None:
    fields = chapter.Result.headline_labels()
    for key in ("mnist", "cifar10", "cifar100", "tiny-imagenet"):
        values = chapter.paper_values(key)
        assert values and set(values) <= set(fields), key
    mnist = chapter.paper_values("mnist")
    assert mnist["acc_ddm_finetune"] == paper.TABLE4["mnist"]["DDM"][0] == 0.6
    assert mnist["acc_match_trained"] == paper.TABLE4["mnist"]["DDM-match"][1] == 85.0
    assert mnist["acc_match_start"] == 12.6 and mnist["acc_theta0"] == 12.5 and mnist["acc_target"] == 95.7
    assert "acc_match_finetune" not in mnist  # our previous protocol is not the paper's row
    assert chapter.paper_values("digits") == {}


# ------------------------------------------------------------------------------------------ verdict
GOOD = {  # a run where every claim holds
    "acc_theta0": 10.0, "acc_target": 95.0, "acc_ddm_finetune": 5.0, "acc_match_finetune": 94.0,
    "acc_soft_finetune": 20.0, "acc_match_start": 10.0, "acc_match_trained": 80.0, "synset_train_steps": 100,
    "closer_ddm": 70.0, "closer_ddm_slow": 80.0, "closer_soft": 60.0, "closer_random_other": 10.0,
    "closer_ascent": 30.0, "closer_noise": 50.0,
    "distance_ddm": 0.01, "distance_ddm_slow": 0.02, "distance_soft": 0.02, "distance_random_other": 0.05,
    "distance_ascent": 0.5, "distance_unchanged": 0.03, "distance_noise": 0.005,
    "subset_clusters": 10.0, "distance_subsets_ddm": 0.1, "distance_subsets_unchanged": 0.2,
    "distance_all_ddm": 0.3, "distance_all_unchanged": 0.8,
}


def reading(**changes) -> str:
    values = {**GOOD, **changes}
    return "\n".join(chapter._reading(RunNumbers(values, "ci", "mnist", recorded=False)))


def test_planted_good_run_reads_as_the_paper_claims() -> None:
    text = reading()
    assert "does erase" in text and "goes past theta_0" in text
    assert "comes from reverse matching" in text
    assert "DDM lands nearer its end" in text
    assert "DDM moves most clusters' models the right way" in text
    assert "carries cluster-specific signal" in text
    assert "the comparison has signal" in text
    assert text.count("(closer than doing nothing)") == 2


def test_erasing_threshold_on_each_side() -> None:
    above = reading(acc_ddm_finetune=GOOD["acc_target"] - chapter.ERASES_DROP - 1)
    below = reading(acc_ddm_finetune=GOOD["acc_target"] - chapter.ERASES_DROP + 1)
    assert "does erase" in above and "does **not** erase" not in above
    assert "does **not** erase" in below and "neither erases" in below
    soft_above = reading(acc_soft_finetune=GOOD["acc_target"] - chapter.ERASES_DROP - 1)
    soft_below = reading(acc_soft_finetune=GOOD["acc_target"] - chapter.ERASES_DROP + 1)
    assert "(erasing)" in soft_above and "(not erasing)" in soft_below


def test_past_theta0_threshold_on_each_side() -> None:
    past = reading(acc_ddm_finetune=GOOD["acc_theta0"] - chapter.PAST_THETA0 - 0.5)
    near = reading(acc_ddm_finetune=GOOD["acc_theta0"] - chapter.PAST_THETA0 + 0.5)
    assert "goes past" in past and "goes past" not in near and "does erase" in near


def test_control_that_erases_too() -> None:
    text = reading(acc_match_finetune=GOOD["acc_target"] - chapter.ERASES_DROP - 5)
    assert "it erases too" in text and "comes from reverse matching" not in text


def test_end_gap_margin_on_each_side() -> None:
    # DDM lands 5 points from theta_0's accuracy (10 vs 5); move DDM-match's gap around it.
    ddm_gap = abs(GOOD["acc_ddm_finetune"] - GOOD["acc_theta0"])
    nearer = reading(acc_match_trained=GOOD["acc_target"] - (ddm_gap + chapter.END_GAP_MARGIN + 1))
    tied = reading(acc_match_trained=GOOD["acc_target"] - (ddm_gap + chapter.END_GAP_MARGIN - 1))
    match_nearer = reading(acc_ddm_finetune=GOOD["acc_theta0"] + 30, acc_match_trained=GOOD["acc_target"] - 1)
    assert "DDM lands nearer its end" in nearer
    assert "Neither lands clearly nearer" in tied
    assert "DDM-match lands nearer its end" in match_nearer


def test_closer_majority_on_each_side() -> None:
    most = reading(closer_ddm=chapter.CLOSER_MAJORITY + 1)
    few = reading(closer_ddm=chapter.CLOSER_MAJORITY - 1, closer_ddm_slow=chapter.CLOSER_MAJORITY - 1)
    assert "moves most clusters' models the right way" in most
    assert "Doing nothing is the better approximation" in few
    assert "direction of the update, not only its size, misses" in few
    overshoot = reading(closer_ddm=chapter.CLOSER_MAJORITY - 1, closer_ddm_slow=chapter.CLOSER_MAJORITY + 1)
    assert "the paper's rate overshoots" in overshoot
    assert "both rates beat doing nothing" in reading()
    assert "full rate is needed" in reading(closer_ddm_slow=chapter.CLOSER_MAJORITY - 1)


def test_specificity_ratio_on_each_side() -> None:
    same = reading(distance_random_other=GOOD["distance_ddm"] * (chapter.NOT_SPECIFIC_RATIO - 0.05))
    apart = reading(distance_random_other=GOOD["distance_ddm"] * (chapter.NOT_SPECIFIC_RATIO + 0.05))
    assert "not specific to its cluster" in same
    assert "carries cluster-specific signal" in apart


def test_noise_floor_and_more_clusters_on_each_side() -> None:
    loud = reading(distance_noise=GOOD["distance_unchanged"] * 2)
    assert "cannot be told from noise" in loud
    worse = reading(distance_subsets_ddm=0.3, distance_all_ddm=0.9)
    assert worse.count("(no closer than doing nothing)") == 2


def test_reading_copes_with_numbers_not_measured() -> None:
    assert chapter._reading(RunNumbers({}, "cpu", "mnist", recorded=True)) == []
    partial = {k: v for k, v in GOOD.items() if k not in ("distance_noise", "closer_noise", "acc_match_finetune")}
    text = "\n".join(chapter._reading(RunNumbers(partial, "cpu", "mnist", recorded=True)))
    assert "Noise floor" not in text and "previous protocol" not in text and "does erase" in text


# ------------------------------------------------------------------------------------------ run
TINY = get_profile("quick", **{
    "data.train_per_class": 30, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
    "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 20, "distill.step_length": 1,
    "online.finetune_steps": 4, "eval.lds_masks": 3,
})


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    with one_thread():
        exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path_factory.mktemp("store"),
                                progress=False)
        calls = []
        original = exp.perturbed_outputs

        def counting(synset, masks, images, online=None):
            calls.append((synset, masks.clone(), online))
            return original(synset, masks, images, online)

        exp.perturbed_outputs = counting
        result = chapter.run(exp)
        del exp.perturbed_outputs  # the tests below call the real method
        return exp, result, calls


def test_run_headlines_are_recordable_numbers(measured) -> None:
    _, result, _ = measured
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    assert all(isinstance(v, (int, float)) for v in numbers.values()), numbers


def test_run_table4_against_direct_computation(measured) -> None:
    exp, result, _ = measured
    model = exp.new_model()
    test_x, test_y = exp.test.images, exp.test.labels
    theta0 = exp.initial_params()
    assert result.acc_theta0 == pytest.approx(accuracy(predict_logits(model, theta0, test_x), test_y) * 100)
    assert result.acc_match_start == result.acc_theta0  # the paper's Acc_0 of DDM-match: where it starts
    steps = TINY.train.epochs * math.ceil(len(exp.train) / TINY.train.batch_size)
    assert result.synset_train_steps == steps
    match = exp.synset(dataclasses.replace(TINY.distill, method="match"))
    trained = finetune(model, theta0, match.images, match.labels, None, steps, TINY.train.lr)
    assert result.acc_match_trained == pytest.approx(accuracy(predict_logits(model, trained, test_x), test_y) * 100)
    assert list(result.synset_training.index)[0] == 0 and list(result.synset_training.index)[-1] == steps
    ddm = exp.synset(dataclasses.replace(TINY.distill, method="reverse", pairing="alg1"))
    tuned = finetune(model, exp.target().final, ddm.images, ddm.labels, None, TINY.online.finetune_steps,
                     TINY.online.finetune_lr)
    assert result.acc_ddm_finetune == pytest.approx(accuracy(predict_logits(model, tuned, test_x), test_y) * 100)
    theta0_logits = predict_logits(model, theta0, test_x)
    scale = chapter.DISTANCE_SCALE
    assert result.distance_all_ddm == pytest.approx(
        scale * float(output_distance(predict_logits(model, tuned, test_x), theta0_logits)), rel=1e-5)
    assert result.distance_all_unchanged == pytest.approx(
        scale * float(output_distance(exp.target_logits(test_x), theta0_logits)), rel=1e-5)


def test_run_fig7_against_direct_computation(measured) -> None:
    exp, result, _ = measured
    clustering = exp.clusters()
    K = clustering.num_clusters
    exact = exp.exact_retrain_logits([(k,) for k in range(K)], clustering)
    target = exp.target_logits(exp.test.images)
    assert result.distance_unchanged == pytest.approx(
        chapter.DISTANCE_SCALE * float(output_distance(target[None], exact).mean()), rel=1e-5)
    wide = result.per_cluster.pivot(index="cluster", columns="method", values="distance to exact")
    ddm = wide[chapter.METHOD_LABELS[chapter.DDM]].to_numpy()
    unchanged = wide[chapter.METHOD_LABELS[chapter.UNCHANGED]].to_numpy()
    assert result.distance_ddm == pytest.approx(ddm.mean())
    assert result.closer_ddm == pytest.approx((ddm < unchanged).mean() * 100)
    # random choice: each cluster is scored with some *other* cluster's fine-tune
    synset = exp.synset(dataclasses.replace(TINY.distill, method="reverse", pairing="alg1"))
    loo = exp.perturbed_outputs(synset, leave_one_out_masks(K), exp.test.images)
    pairwise = chapter.DISTANCE_SCALE * output_distance(loo[:, None], exact[None]).numpy()  # (j, k)
    for k, value in enumerate(wide[chapter.METHOD_LABELS[chapter.RANDOM_OTHER]]):
        hits = np.flatnonzero(np.isclose(pairwise[:, k], value, rtol=1e-5))
        assert len(hits) and k not in hits
    # the one-cluster point of the error-against-deleted comparison is Fig. 7's own mean
    one = result.by_deleted.loc[chapter.ONE]
    assert one[f"distance to exact x100, {chapter.FINETUNED}"] == pytest.approx(result.distance_ddm)
    assert one[f"distance to exact x100, {chapter.UNTOUCHED}"] == pytest.approx(result.distance_unchanged)
    assert result.subset_clusters == pytest.approx(result.by_deleted.loc[chapter.SUBSETS, "clusters deleted (mean)"])


def test_run_computes_the_leave_one_out_fine_tunes_once(measured) -> None:
    exp, _, calls = measured
    K = exp.clusters().num_clusters
    loo = leave_one_out_masks(K)
    at_profile_rate = [c for c in calls if c[2] is None and c[1].shape == loo.shape and torch.equal(c[1], loo)
                       and c[0].method == "reverse" and c[0].label_logits is None]
    assert len(at_profile_rate) == 1


def test_train_on_synset_in_pieces_equals_one_run(measured) -> None:
    exp, _, _ = measured
    model = exp.new_model()
    match = exp.synset(dataclasses.replace(TINY.distill, method="match"))
    theta0 = exp.initial_params()
    pieces, curve = chapter.train_on_synset(model, theta0, match, exp.test.images, exp.test.labels, 13, 0.05,
                                            points=4)
    whole = finetune(model, theta0, match.images, match.labels, None, 13, 0.05)
    assert all(torch.allclose(pieces[k], whole[k], atol=1e-6) for k in whole)
    assert list(curve.index) == [0, 3, 6, 10, 13]
