"""The online stage (ddm.online, Eq. 9): perturbed models by fine-tuning on deleted synsets.

The vectorised path is checked against the looped reference, plain fine-tuning against
torch.optim.SGD, and gradient ascent on a cluster's real images against exact retraining.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ddm.online import (deleted_synset_indices, finetune, finetune_looped, finetune_vectorised,
                        leave_one_out_masks, perturbed_models, predict_many, random_masks)
from ddm.training import predict_logits, retrain_without, set_params

from fixtures_core import (NUM_CLASSES, digits, single_thread, tiny_clustering, tiny_model,  # noqa: F401
                           tiny_train_config, tiny_trajectory)

K, IPC = 6, 2


def _synset(soft: bool):
    """A stand-in synset: K clusters of IPC random images, labels by cluster, optional soft labels."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(K * IPC, 1, 8, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4, 5]).repeat_interleave(IPC)
    logits = torch.randn(K * IPC, NUM_CLASSES, generator=generator) if soft else None
    cluster = torch.arange(K).repeat_interleave(IPC)
    return images, labels, logits, cluster


def _assert_params_close(a: list[dict], b: list[dict], atol: float) -> None:
    assert len(a) == len(b)
    for i, (pa, pb) in enumerate(zip(a, b)):
        for k in pa:
            assert torch.allclose(pa[k], pb[k], atol=atol), (i, k, float((pa[k] - pb[k]).abs().max()))


def _moved(models: list[dict], base: dict) -> list[float]:
    return [max(float((m[k] - base[k]).abs().max()) for k in base) for m in models]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("masks", ["loo", "random"])
def test_vectorised_equals_looped(soft: bool, masks: str) -> None:
    images, labels, logits, cluster = _synset(soft)
    keep = leave_one_out_masks(K) if masks == "loo" else random_masks(K, 7, delete_fraction=0.4, seed=3)
    if masks == "random":
        assert int((~keep).sum(1).max()) >= 2  # several deletions in some mask
    params = tiny_trajectory().final
    args = (tiny_model(), params, images, labels, logits, cluster, keep)
    looped = finetune_looped(*args, steps=3, lr=0.1)
    vectorised = finetune_vectorised(*args, steps=3, lr=0.1)
    _assert_params_close(vectorised, looped, atol=1e-5)
    assert min(_moved(looped, params)) > 1e-3  # every mask deletes something, so every model moved
    # Chunking the masks gives the same models.
    _assert_params_close(finetune_vectorised(*args, steps=3, lr=0.1, chunk=2), vectorised, atol=1e-6)
    # perturbed_models dispatches to either path.
    _assert_params_close(perturbed_models(*args, steps=3, lr=0.1, vectorised=True), vectorised, atol=0)
    _assert_params_close(perturbed_models(*args, steps=3, lr=0.1, vectorised=False), looped, atol=0)


def test_mask_deleting_nothing_returns_parameters_unchanged() -> None:
    images, labels, logits, cluster = _synset(soft=True)
    params = tiny_trajectory().final
    keep = torch.ones(2, K, dtype=torch.bool)
    keep[1, 2] = False
    args = (tiny_model(), params, images, labels, logits, cluster, keep)
    for models in (finetune_looped(*args, steps=2, lr=0.1), finetune_vectorised(*args, steps=2, lr=0.1)):
        assert all(torch.equal(models[0][k], params[k]) for k in params)
        assert not all(torch.equal(models[1][k], params[k]) for k in params)
    empty = finetune(tiny_model(), params, images[:0], labels[:0], None, steps=5, lr=1.0)
    assert all(torch.equal(empty[k], params[k]) for k in params)
    assert empty["classifier.weight"] is not params["classifier.weight"]  # a copy, not an alias


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_finetune_is_full_batch_sgd(soft: bool) -> None:
    images, labels, logits, _ = _synset(soft)
    params = tiny_trajectory().final
    got = finetune(tiny_model(), params, images, labels, logits, steps=3, lr=0.05)
    reference = set_params(tiny_model(), params)
    optimiser = torch.optim.SGD(reference.parameters(), lr=0.05)
    for _ in range(3):
        out = reference(images)
        loss = (F.cross_entropy(out, labels) if logits is None
                else F.cross_entropy(out, F.softmax(logits, -1)))   # torch's, probability targets
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    for name, p in reference.named_parameters():
        assert torch.allclose(got[name], p.detach(), atol=1e-6), name
    # The source parameters are not modified.
    assert torch.equal(params["classifier.weight"], tiny_trajectory().final["classifier.weight"])


def test_deleted_synset_indices_hand_case() -> None:
    cluster = torch.tensor([0, 0, 1, 1, 2, 2])
    keep = torch.tensor([True, False, False])
    assert deleted_synset_indices(keep, cluster).tolist() == [2, 3, 4, 5]
    assert deleted_synset_indices(torch.ones(3, dtype=torch.bool), cluster).tolist() == []


def test_leave_one_out_masks() -> None:
    masks = leave_one_out_masks(4)
    assert masks.shape == (4, 4) and masks.dtype == torch.bool
    assert (~masks).sum(1).tolist() == [1, 1, 1, 1]
    assert torch.equal(~masks, torch.eye(4, dtype=torch.bool))


def test_random_masks_deterministic_and_each_deletes_at_least_one() -> None:
    a, b = random_masks(10, 50, 0.2, seed=1), random_masks(10, 50, 0.2, seed=1)
    assert a.shape == (50, 10) and a.dtype == torch.bool
    assert torch.equal(a, b)
    assert not torch.equal(a, random_masks(10, 50, 0.2, seed=2))
    assert bool(((~a).sum(1) >= 1).all())
    assert 0.1 < float((~a).float().mean()) < 0.35  # about the asked fraction
    # With a fraction of 0 every mask still deletes exactly one cluster.
    none = random_masks(10, 20, 0.0, seed=0)
    assert (~none).sum(1).tolist() == [1] * 20


def test_predict_many_stacks_model_outputs() -> None:
    images = digits("test", 2).images
    models = [tiny_trajectory().checkpoints[i] for i in (0, 2, 4)]
    out = predict_many(tiny_model(), models, images)
    assert out.shape == (3, len(images), NUM_CLASSES)
    for i, p in enumerate(models):
        with torch.no_grad():
            assert torch.allclose(out[i], functional_call(tiny_model(), p, (images,)), atol=1e-6)


def test_gradient_ascent_on_a_cluster_moves_toward_its_exact_retrain() -> None:
    """The idea behind DDM's online stage, with real images in place of the synset: a few small
    steps of gradient ascent on a cluster's images bring the test logits closer to the model
    retrained without that cluster than the untouched target is. Checked on the 3 largest clusters
    (small clusters' retrains are dominated by the changed batch composition)."""
    data, test = digits("train", 10), digits("test", 10)
    clustering, trajectory = tiny_clustering(10, 2), tiny_trajectory()
    model = tiny_model()
    target = predict_logits(model, trajectory.final, test.images)
    report = []
    for k in clustering.sizes().argsort(descending=True)[:3].tolist():
        removed = clustering.removal_mask([k])
        exact = predict_logits(model, retrain_without(model, trajectory.checkpoints[0], data.images, data.labels,
                                                      tiny_train_config(), removed), test.images)
        members = clustering.members(k)
        ascended = finetune(model, trajectory.final, data.images[members], data.labels[members], None,
                            steps=3, lr=-0.005)
        after = predict_logits(model, ascended, test.images)
        before_distance, after_distance = float((target - exact).norm()), float((after - exact).norm())
        report.append(f"cluster {k} ({len(members)} images): {before_distance:.3f} -> {after_distance:.3f}")
        assert after_distance < 0.95 * before_distance, "; ".join(report)
        # The sign matters: descent on the same images moves away from the retrain.
        descended = finetune(model, trajectory.final, data.images[members], data.labels[members], None,
                             steps=3, lr=0.005)
        assert float((predict_logits(model, descended, test.images) - exact).norm()) > before_distance
    # Measured when written: cluster 6 (9 images): 9.625 -> 6.74; cluster 2 (8): 7.121 -> 5.34;
    # cluster 18 (7): 4.488 -> 2.47 (ratios 0.70, 0.75, 0.55).
    print("distance of test logits to the exact retrain, target -> after ascent:", "; ".join(report))


def test_removal_sets_name_the_deleted_clusters() -> None:
    from ddm.online import removal_sets

    keep = torch.tensor([[True, False, True, False], [True, True, True, True], [False, True, True, True]])
    assert removal_sets(keep) == [(1, 3), (), (0,)]
