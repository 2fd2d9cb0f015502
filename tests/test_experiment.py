"""The whole pipeline on digits (ddm.experiment): determinism, caching, exact unlearning, and the
headline check that DDM's leave-one-cluster-out predictions rank clusters like exact retraining.

Every experiment writes to a temporary store. The figures measured when the tests were written
are stated beside the assertions; the tests print the ones they see (``pytest -s``).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
import torch

import ddm.clustering
import ddm.experiment
from ddm.attribution import leave_one_out_attribution, margin_direction, margin_effects
from ddm.config import get_profile
from ddm.experiment import Experiment
from ddm.metrics import margins, rowwise_spearman
from ddm.online import leave_one_out_masks

from fixtures_core import DATA_ROOT, one_thread, single_thread  # noqa: F401

TINY = get_profile("quick", **{
    "data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 4,
    "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 40, "distill.step_length": 1,
    "online.finetune_steps": 5, "eval.n_test_points": 10,
})


def loo_effects(exp: Experiment, synset, online=None) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """DDM's and exact retraining's leave-one-cluster-out margin effects on the evaluation's test
    points, (N, K) each, plus DDM's perturbed outputs (K, N, L) and the exact retrains' test logits."""
    clustering = exp.clusters()
    K = clustering.num_clusters
    idx = exp.test_point_indices()
    x, y = exp.test.images[idx], exp.test.labels[idx]
    base = exp.target_logits(x)                                                      # (N, L)
    d = margin_direction(base, y)                                                    # (N, L)
    outputs = exp.perturbed_outputs(synset, leave_one_out_masks(K), x, online)       # (K, N, L)
    ddm_effects = margin_effects(leave_one_out_attribution(base, outputs), d).numpy()  # (N, K)
    exact = exp.exact_retrain_logits([(k,) for k in range(K)], clustering)           # (K, N_test, L)
    exact_effects = (margins(base, d)[None] - margins(exact[:, idx], d[None])).T.numpy()  # (N, K)
    return ddm_effects, exact_effects, outputs, exact


def run_pipeline(cache_root) -> dict:
    exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=cache_root, progress=False)
    trajectory = exp.target()
    clustering = exp.clusters()
    synset = exp.synset()
    ddm_effects, exact_effects, outputs, exact = loo_effects(exp, synset)
    return {"exp": exp, "final": trajectory.final, "assignment": clustering.assignment, "synset": synset.images,
            "outputs": outputs, "exact": exact, "ddm_effects": ddm_effects, "exact_effects": exact_effects,
            "spearman": float(np.nanmean(rowwise_spearman(ddm_effects, exact_effects)))}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    with one_thread():  # set up before the function-scoped single_thread fixture
        return run_pipeline(tmp_path_factory.mktemp("store"))


def test_pipeline_shapes_and_artifacts(pipeline) -> None:
    exp = pipeline["exp"]
    K = 10 * 2
    assert len(exp.train) == 400 and len(exp.test) == 100
    assert pipeline["synset"].shape == (K, 1, 8, 8)
    assert pipeline["outputs"].shape == (K, 10, 10) and pipeline["exact"].shape == (K, 100, 10)
    assert pipeline["ddm_effects"].shape == pipeline["exact_effects"].shape == (10, K)
    for kind in ("target", "clusters", "synset", "retrain"):
        assert any((exp.store.root / kind).glob("*/artifact.pt")), kind
    assert not list(exp.store.root.glob("synset/*/checkpoint.pt"))  # removed once the synset is saved
    print(f"tiny digits pipeline: DDM LOO Spearman vs exact retraining = {pipeline['spearman']:.3f}")


def test_pipeline_is_deterministic_in_a_fresh_store(pipeline, tmp_path) -> None:
    again = run_pipeline(tmp_path / "fresh")
    assert all(torch.equal(pipeline["final"][k], again["final"][k]) for k in again["final"])
    for key in ("assignment", "synset", "outputs", "exact"):
        assert torch.equal(pipeline[key], again[key]), key
    assert np.array_equal(pipeline["ddm_effects"], again["ddm_effects"])
    assert again["spearman"] == pipeline["spearman"]


def test_second_run_reuses_every_cached_stage(pipeline, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a cached stage was recomputed")

    monkeypatch.setattr(ddm.experiment, "train_trajectory", refuse)
    monkeypatch.setattr(ddm.experiment, "distill_synset", refuse)
    monkeypatch.setattr(ddm.experiment, "run_retrains", refuse)
    monkeypatch.setattr(ddm.clustering, "kmeans_clusters", refuse)
    again = run_pipeline(pipeline["exp"].store.root)  # a new Experiment on the same store
    for key in ("assignment", "synset", "outputs", "exact"):
        assert torch.equal(pipeline[key], again[key]), key


def test_changed_configuration_is_not_served_from_the_cache(pipeline, monkeypatch) -> None:
    calls = []
    original = ddm.experiment.train_trajectory
    monkeypatch.setattr(ddm.experiment, "train_trajectory", lambda *a, **k: calls.append(1) or original(*a, **k))
    config = TINY.with_overrides(**{"train.epochs": 1})
    exp = Experiment.create(config, data_root=DATA_ROOT, cache_root=pipeline["exp"].store.root, progress=False)
    assert exp.target().epochs == 1 and calls == [1]


def test_create_applies_the_configured_threads(tmp_path) -> None:
    """config.threads is the one thread setting: Experiment.create applies it to torch (process-wide),
    0 leaves torch's count alone, and a negative count is refused."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        Experiment.create(TINY.with_overrides(threads=2), data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
        assert torch.get_num_threads() == 2
        Experiment.create(TINY.with_overrides(threads=0), data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
        assert torch.get_num_threads() == 2
        Experiment.create(TINY.with_overrides(threads=1), data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be an integer >= 0"):
            Experiment.create(dataclasses.replace(TINY, threads=-1), data_root=DATA_ROOT, cache_root=tmp_path)
    finally:
        torch.set_num_threads(before)


def test_exact_retrain_of_the_all_keep_set_equals_the_target(pipeline) -> None:
    exp = pipeline["exp"]
    clustering = exp.clusters()
    nothing_removed = exp.exact_retrain_logits([()], clustering)[0]
    assert torch.equal(nothing_removed, exp.target_logits(exp.test.images))
    # ... and removing a cluster does change the test logits.
    assert not torch.allclose(pipeline["exact"][0], nothing_removed)


def test_exact_retrains_another_process_claimed_are_waited_for_not_redone(pipeline) -> None:
    """Chapters executed side by side share one store: a retrain someone else has claimed is
    waited for and its result used; the unclaimed ones are retrained here meanwhile."""
    exp = pipeline["exp"]
    clustering = exp.clusters()
    removal_sets, seed = [(0, 1), (2, 3), (4, 5)], 7   # an order seed no other test retrains with
    keys = [exp.retrain_key(removal, clustering, seed) for removal in removal_sets]
    # flock claims are per open file, so a second claim from this process stands for another process.
    held = exp.store.claim("retrain", keys[1], wait=False)
    assert held is not None and exp.store.claim("retrain", keys[1], wait=False) is None
    result = {}
    worker = threading.Thread(target=lambda: result.update(
        logits=exp.exact_retrain_logits(removal_sets, clustering, order_seed=seed)))
    worker.start()
    deadline = time.monotonic() + 300
    while not (exp.store.exists("retrain", keys[0]) and exp.store.exists("retrain", keys[2])):
        assert worker.is_alive() and time.monotonic() < deadline, "the unclaimed retrains were not made"
        time.sleep(0.05)
    time.sleep(0.5)
    assert worker.is_alive() and not exp.store.exists("retrain", keys[1]), "a claimed retrain was redone"
    theirs = torch.full((len(exp.test), 10), 7.0)
    exp.store.save("retrain", keys[1], {"test_logits": theirs})
    held.release()
    worker.join(60)
    assert not worker.is_alive()
    assert torch.equal(result["logits"][1], theirs)
    assert not torch.allclose(result["logits"][0], result["logits"][2])   # two real, different retrains


def test_a_removal_set_listed_twice_is_retrained_once(pipeline) -> None:
    exp = pipeline["exp"]
    twice = exp.exact_retrain_logits([(6,), (6,)], exp.clusters(), order_seed=8)
    assert torch.equal(twice[0], twice[1])


# ------------------------------------------------------------------------------------------------
# The headline figure
# ------------------------------------------------------------------------------------------------
LARGER = get_profile("quick", **{
    "data.train_per_class": 60, "data.test_per_class": 10, "model.width": 16, "train.epochs": 8,
    "train.lr": 0.05, "clusters.clusters_per_class": 2, "distill.steps": 100, "distill.step_length": 2,
    "distill.pairing": "alg1", "online.finetune_steps": 10, "online.finetune_lr": 0.001,
    "eval.n_test_points": 20,
})


def test_digits_ddm_loo_correlation(tmp_path) -> None:
    """DDM's leave-one-cluster-out margin effects against exact leave-one-cluster-out retraining
    (same theta_0 and data order), mean Spearman over 20 test points, K = 20 clusters, 600 digits.

    Measured when written (seed 0 of this setting; 'ours' = learnable soft labels, our extension):
    soft labels 0.359 (alg1) / 0.322 (eq6) at fine-tune lr 0.001, 0.354 / 0.330 at lr 0.01; over
    model/order/test-point seeds 1-3: 0.369, 0.432, 0.215 (alg1), 0.366, 0.341, 0.329 (eq6).
    The paper's hard labels: 0.062 (alg1) / -0.005 (eq6) at lr 0.001, -0.139 / -0.152 at lr 0.01;
    seeds 1-3: -0.180, -0.232, -0.077 (alg1), -0.201, -0.292, -0.098 (eq6). So only the soft-label
    variant is asserted to correlate positively; the hard-label figure is printed.
    """
    exp = Experiment.create(LARGER, data_root=DATA_ROOT, cache_root=tmp_path, progress=False)
    figures = {}
    for soft in (True, False):
        synset = exp.synset(dataclasses.replace(LARGER.distill, soft_labels=soft))
        ddm_effects, exact_effects, _, _ = loo_effects(exp, synset)
        figures[soft] = float(np.nanmean(rowwise_spearman(ddm_effects, exact_effects)))
    message = (f"DDM LOO Spearman vs exact retraining on digits (K=20, 20 test points): soft labels "
               f"{figures[True]:.3f} (0.359 when written), hard labels {figures[False]:.3f} (0.062 when written)")
    print(message)
    assert figures[True] > 0, message


def test_unlearning_per_cluster_measures_each_reference_against_the_exact_retrain(pipeline) -> None:
    from ddm import variants
    from ddm.chapters import unlearning
    from ddm.metrics import output_distance

    exp, exact = pipeline["exp"], pipeline["exact"]
    clustering = exp.clusters()
    K = clustering.num_clusters
    synset = exp.synset()
    ddm = exp.perturbed_outputs(synset, leave_one_out_masks(K), exp.test.images)
    distances = unlearning.per_cluster_distances(exp, {variants.PAPER_DDM: synset, variants.DDM_SOFT: synset},
                                                 clustering, exact, ddm)
    assert set(distances) == {unlearning.UNCHANGED, unlearning.DDM, unlearning.DDM_SLOW, unlearning.SOFT,
                              unlearning.RANDOM_OTHER, unlearning.ASCENT, unlearning.NOISE}
    assert all(d.shape == (K,) for d in distances.values())
    scale = unlearning.DISTANCE_SCALE
    target = exp.target_logits(exp.test.images)
    np.testing.assert_allclose(distances[unlearning.UNCHANGED], scale * output_distance(target[None], exact).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(distances[unlearning.DDM], scale * output_distance(ddm, exact).numpy(), rtol=1e-5)
    np.testing.assert_allclose(distances[unlearning.SOFT], distances[unlearning.DDM], rtol=1e-5)
    # random choice: cluster k is scored with some *other* cluster's fine-tune
    pairwise = scale * output_distance(ddm[:, None], exact[None]).numpy()        # (j, k)
    for k, value in enumerate(distances[unlearning.RANDOM_OTHER]):
        hits = np.flatnonzero(np.isclose(pairwise[:, k], value, rtol=1e-5))
        assert len(hits) and k not in hits
    noise = exp.exact_retrain_logits([(k,) for k in range(K)], clustering, order_seed=1)
    np.testing.assert_allclose(distances[unlearning.NOISE], scale * output_distance(noise, exact).numpy(), rtol=1e-5)
    # a tenth of the rate moves the model less far from where it started
    moved = output_distance(ddm, target[None]).mean()
    slow = exp.perturbed_outputs(synset, leave_one_out_masks(K), exp.test.images,
                                 dataclasses.replace(exp.config.online, finetune_lr=exp.config.online.finetune_lr / 10))
    assert output_distance(slow, target[None]).mean() < moved


def test_closer_than_doing_nothing_by_hand() -> None:
    from ddm.chapters import unlearning

    table = unlearning.closer_than_doing_nothing({unlearning.UNCHANGED: np.array([1.0, 2.0, 3.0]),
                                                  "m": np.array([0.5, 2.5, 1.0])})
    assert list(table.index) == [unlearning.UNCHANGED, "m"]
    assert table.loc["m", "mean distance x100"] == pytest.approx(4 / 3)
    assert table.loc["m", "median distance x100"] == pytest.approx(1.0)
    assert table.loc["m", "closer than doing nothing (% of clusters)"] == pytest.approx(200 / 3)
    assert np.isnan(table.loc[unlearning.UNCHANGED, "closer than doing nothing (% of clusters)"])


def test_harmful_removal_retrains_what_each_ranking_selects(pipeline) -> None:
    from ddm import removal
    from ddm.chapters import harmful_data

    exp = pipeline["exp"]
    clustering = exp.clusters()
    synset = exp.synset()
    result = harmful_data.run(exp, random_seeds=(0, 1))
    curves = result.curves
    assert set(curves["key"]) == set(harmful_data.RANKING_LABELS)
    assert (curves["removed (%)"] >= curves["asked (%)"] - 1e-9).all()

    # the DDM row at 20% is the retrain without the clusters Supp. Eq. 14 ranks most harmful
    val, held = removal.validation_split(len(exp.test), seed=exp.config.eval.seed)
    K = clustering.num_clusters
    loss = removal.global_objective(exp.perturbed_outputs(synset, leave_one_out_masks(K), exp.test.images[val]),
                                    exp.test.labels[val])
    chosen = removal.clusters_for_fraction(removal.harmful_first(loss), clustering.sizes(), 0.2)
    logits = exp.exact_retrain_logits([chosen], clustering)[0, held]
    expected = (logits.argmax(1) == exp.test.labels[held]).float().mean().item() * 100
    row = curves[(curves["key"] == "ddm") & (curves["asked (%)"] == 20)].iloc[0]
    assert row["test accuracy (%)"] == pytest.approx(expected) == pytest.approx(result.acc_ddm_20)
    assert row["clusters removed"] == len(chosen)
    # 0%: the target itself, and the same training under another data order
    target = exp.target_logits(exp.test.images[held])
    assert result.acc_target == pytest.approx((target.argmax(1) == exp.test.labels[held]).float().mean().item() * 100)
    assert result.acc_noise_floor is not None