"""Target training and exact unlearning (ddm.training): the same schedule reproduces the target
bit for bit when nothing is removed, so a retrain measures the removed cluster's effect alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddm.training import (RetrainJob, epoch_orders, flatten_params, get_params, predict_logits,
                          retrain_without, run_retrains, set_params, soft_cross_entropy, train_trajectory)

from fixtures_core import (digits, single_thread, tiny_clustering, tiny_model,  # noqa: F401
                           tiny_train_config, tiny_trajectory)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trajectory_shape_start_and_training_progress() -> None:
    trajectory = tiny_trajectory()
    assert trajectory.epochs == 4 and len(trajectory.checkpoints) == 5
    assert _equal(trajectory.checkpoints[0], get_params(tiny_model()))
    assert trajectory.epoch_orders.shape == (4, len(digits("train", 10)))
    assert trajectory.losses.shape == (4,) and trajectory.losses[-1] < trajectory.losses[0]
    assert not _equal(trajectory.checkpoints[1], trajectory.checkpoints[0])
    assert trajectory.final is trajectory.checkpoints[-1]


def test_keep_all_reproduces_the_target_bit_for_bit() -> None:
    data = digits("train", 10)
    initial = tiny_trajectory().checkpoints[0]
    config = tiny_train_config(epochs=2)
    plain = train_trajectory(tiny_model(), initial, data.images, data.labels, config, keep=None)
    kept = train_trajectory(tiny_model(), initial, data.images, data.labels, config,
                            keep=torch.ones(len(data), dtype=torch.bool))
    assert len(plain.checkpoints) == len(kept.checkpoints) == 3
    for a, b in zip(plain.checkpoints, kept.checkpoints):
        assert _equal(a, b)
    assert torch.equal(plain.losses, kept.losses)


def test_retrain_removing_nothing_equals_target_and_removing_a_cluster_changes_it() -> None:
    data, clustering, trajectory = digits("train", 10), tiny_clustering(10, 2), tiny_trajectory()
    config = tiny_train_config()
    nothing = retrain_without(tiny_model(), trajectory.checkpoints[0], data.images, data.labels, config,
                              removed=torch.zeros(len(data), dtype=torch.bool))
    assert _equal(nothing, trajectory.final)
    removed = clustering.removal_mask([3])
    without = retrain_without(tiny_model(), trajectory.checkpoints[0], data.images, data.labels, config, removed)
    change = float((flatten_params(without) - flatten_params(trajectory.final)).norm())
    assert change > 1e-3, change
    # Dropping the cluster's images by hand and retraining with a keep mask is the same computation.
    by_keep = train_trajectory(tiny_model(), trajectory.checkpoints[0], data.images, data.labels, config,
                               keep=~removed, save_checkpoints=False).final
    assert _equal(without, by_keep)


def test_removing_every_image_of_a_batch_skips_it() -> None:
    """An empty batch takes no step: removing everything leaves theta_0 untouched."""
    data = digits("train", 10)
    initial = tiny_trajectory().checkpoints[0]
    out = retrain_without(tiny_model(), initial, data.images, data.labels, tiny_train_config(epochs=1),
                          removed=torch.ones(len(data), dtype=torch.bool))
    assert _equal(out, initial)


def test_epoch_orders_deterministic_per_seed_and_different_across_seeds() -> None:
    a, b, c = epoch_orders(50, 3, 7), epoch_orders(50, 3, 7), epoch_orders(50, 3, 8)
    assert a.shape == (3, 50) and a.dtype == torch.int64
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # a fresh permutation every epoch
    for row in a:
        assert torch.equal(row.sort().values, torch.arange(50))


def test_order_seed_override_changes_the_run() -> None:
    data = digits("train", 10)
    initial = tiny_trajectory().checkpoints[0]
    config = tiny_train_config(epochs=1)
    default = train_trajectory(tiny_model(), initial, data.images, data.labels, config)
    other = train_trajectory(tiny_model(), initial, data.images, data.labels, config, order_seed=5)
    assert other.order_seed == 5 and default.order_seed == config.order_seed
    assert not _equal(default.final, other.final)


def test_predict_logits_matches_the_model() -> None:
    data, params = digits("test", 3), tiny_trajectory().final
    model = set_params(tiny_model(), params)
    with torch.no_grad():
        expected = model(data.images)
    got = predict_logits(tiny_model(), params, data.images, batch_size=7)
    assert torch.allclose(got, expected, atol=1e-6)


def test_run_retrains_in_two_processes_equals_one() -> None:
    data, clustering, trajectory = digits("train", 10), tiny_clustering(10, 2), tiny_trajectory()
    config = tiny_train_config(epochs=2)
    jobs = [RetrainJob(clustering.removal_mask([0]), 0), RetrainJob(clustering.removal_mask([5]), 1)]
    model = tiny_model()
    untouched = flatten_params(get_params(model))
    args = (model, trajectory.checkpoints[0], data.images, data.labels, config, jobs)
    serial = run_retrains(*args, workers=1, progress=False)
    parallel = run_retrains(*args, workers=2, progress=False)
    # run_retrains leaves the caller's model alone. In a worker its parameters arrive in shared
    # memory (torch's pickling), one storage for all jobs: training them in place would race.
    assert torch.equal(flatten_params(get_params(model)), untouched)
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-4), k
    assert not torch.allclose(flatten_params(serial[0]), flatten_params(serial[1]))
    # Each job is the plain retrain it describes.
    direct = retrain_without(tiny_model(), trajectory.checkpoints[0], data.images, data.labels, config,
                             jobs[1].removed, order_seed=1)
    assert _equal(serial[1], direct)


def test_soft_cross_entropy_equals_torch_cross_entropy_with_probability_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    target_logits = 3 * torch.randn(6, 10, generator=generator, dtype=torch.float64, requires_grad=True)
    probabilities = F.softmax(target_logits, -1)
    per_image = soft_cross_entropy(logits, target_logits, reduction="none")
    torch.testing.assert_close(per_image, F.cross_entropy(logits, probabilities, reduction="none"))
    mean = soft_cross_entropy(logits, target_logits)
    expected = F.cross_entropy(logits, probabilities)
    torch.testing.assert_close(mean, expected)
    # the gradients with respect to both the logits and the soft labels agree too
    got = torch.autograd.grad(mean, (logits, target_logits))
    want = torch.autograd.grad(expected, (logits, target_logits))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # a one-hot-like soft label is the hard-label cross-entropy
    labels = torch.tensor([0, 3, 9, 1, 1, 5])
    hard = soft_cross_entropy(logits, 1e4 * F.one_hot(labels, 10).double())
    torch.testing.assert_close(hard, F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="unknown reduction 'sum'"):
        soft_cross_entropy(logits, target_logits, reduction="sum")
