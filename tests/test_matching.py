"""Reverse gradient matching (ddm.matching): pairing, gradients, the objective, and the loop.

The fast paths (per-cluster gradients, vmapped synset gradients) are checked against a plain
autograd loop; the gradient of the objective with respect to the synthetic images against
finite differences in double precision; the distillation loop for descent, determinism and
bit-exact resumption.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddm.matching import (checkpoint_pairs, cluster_gradients, compared_parameters, distill_synset,
                          initial_synset, matching_objective, synset_cluster_gradients,
                          synset_cluster_gradients_looped)
from ddm.store import load_checkpoint
from ddm.training import set_params, train_trajectory

from fixtures_core import (NUM_CLASSES, digits, random_params_like, single_thread,  # noqa: F401
                           tiny_clustering, tiny_distill_config, tiny_model, tiny_train_config, tiny_trajectory)


# --------------------------------------------------------------------------------------------
# Checkpoint pairing
# --------------------------------------------------------------------------------------------
def test_checkpoint_pairs_eq6_pairs_t_with_tau_minus_t() -> None:
    assert checkpoint_pairs(5, "reverse", "eq6", step_length=4) == [(0, 5), (1, 4), (2, 3), (3, 2), (4, 1)]


def test_checkpoint_pairs_alg1_pairs_t_with_t_plus_s_inside_tau() -> None:
    assert checkpoint_pairs(5, "reverse", "alg1", step_length=2) == [(0, 2), (1, 3), (2, 4)]
    assert checkpoint_pairs(5, "reverse", "alg1", step_length=4) == [(0, 4)]
    pairs = checkpoint_pairs(10, "reverse", "alg1", step_length=3)
    assert [t for t, _ in pairs] == list(range(7))        # every t with t + 3 < 10
    for t, t_syn in pairs:
        assert t_syn == t + 3 and t_syn < 10


def test_checkpoint_pairs_match_pairs_t_with_itself() -> None:
    assert checkpoint_pairs(3, "match", "alg1", step_length=99) == [(0, 0), (1, 1), (2, 2)]


def test_checkpoint_pairs_errors() -> None:
    with pytest.raises(ValueError, match="t \\+ s < tau.*step length 5.*5 epochs"):
        checkpoint_pairs(5, "reverse", "alg1", step_length=5)
    with pytest.raises(ValueError, match="unknown distillation method"):
        checkpoint_pairs(5, "forward", "alg1", 1)
    with pytest.raises(ValueError, match="unknown checkpoint pairing"):
        checkpoint_pairs(5, "reverse", "eq5", 1)


# --------------------------------------------------------------------------------------------
# Gradients: fast paths against a plain autograd loop
# --------------------------------------------------------------------------------------------
def test_cluster_gradients_equal_per_cluster_autograd() -> None:
    data, clustering = digits("train", 10), tiny_clustering(10, 2)
    params = tiny_trajectory().checkpoints[2]
    model = tiny_model()
    got = cluster_gradients(model, params, data.images, data.labels, clustering)
    reference = set_params(tiny_model(), params)
    for k in range(clustering.num_clusters):
        members = torch.nonzero(clustering.assignment == k).flatten()
        reference.zero_grad()
        F.cross_entropy(reference(data.images[members]), data.labels[members]).backward()
        for name, p in reference.named_parameters():
            assert got[name].shape == (clustering.num_clusters, *p.shape)
            assert torch.allclose(got[name][k], p.grad, atol=1e-6), (k, name)
    # The gradients differ between clusters (the stacking is not a broadcast of one cluster).
    assert not torch.allclose(got["classifier.weight"][0], got["classifier.weight"][1])


def test_cluster_gradients_real_batch_subsamples_seeded() -> None:
    data, clustering = digits("train", 10), tiny_clustering(10, 2)
    params = tiny_trajectory().checkpoints[1]
    model = tiny_model()
    full = cluster_gradients(model, params, data.images, data.labels, clustering)
    big = cluster_gradients(model, params, data.images, data.labels, clustering, real_batch=1000)
    assert all(torch.equal(full[k], big[k]) for k in full)  # a batch larger than every cluster: all of it
    one = [cluster_gradients(model, params, data.images, data.labels, clustering, real_batch=2,
                             generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert all(torch.equal(one[0][k], one[1][k]) for k in full)
    assert not torch.allclose(one[0]["classifier.weight"], full["classifier.weight"])


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_synset_cluster_gradients_equal_per_cluster_loop(soft: bool) -> None:
    K, ipc = 3, 2
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(K * ipc, 1, 8, 8, generator=generator)
    labels = torch.tensor([0, 0, 4, 4, 9, 9])
    logits = torch.randn(K * ipc, NUM_CLASSES, generator=generator) if soft else None
    params = tiny_trajectory().checkpoints[3]
    got = synset_cluster_gradients(tiny_model(), params, images, labels, logits, K)
    reference = set_params(tiny_model(), params)
    for k in range(K):
        rows = slice(k * ipc, (k + 1) * ipc)
        out = reference(images[rows])
        if soft:
            loss = F.cross_entropy(out, F.softmax(logits[rows], -1))   # torch's, probability targets
        else:
            loss = F.cross_entropy(out, labels[rows])
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        for (name, _), g in zip(reference.named_parameters(), grads):
            assert torch.allclose(got[name][k], g, atol=1e-6), (k, name)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_matching_objective_image_gradient_matches_finite_differences(soft: bool) -> None:
    """d objective / d synthetic images (a double backward) against a central difference."""
    torch.manual_seed(0)
    K = 2
    model = tiny_model().double()
    trajectory = tiny_trajectory()
    real_params = {k: v.double() for k, v in trajectory.checkpoints[1].items()}
    syn_params = {k: v.double() for k, v in trajectory.checkpoints[3].items()}
    real_grads = {k: v.double().unsqueeze(0).repeat(K, *[1] * v.dim())
                  for k, v in random_params_like(syn_params, seed=1).items()}
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(K, 1, 8, 8, generator=generator, dtype=torch.float64)
    labels = torch.tensor([3, 7])
    logits = torch.randn(K, NUM_CLASSES, generator=generator, dtype=torch.float64) if soft else None

    def objective(x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        return matching_objective(model, real_params, syn_params, real_grads, x, labels, z, K,
                                  "layerwise_cosine", reverse=True)

    x = images.clone().requires_grad_(True)
    z = None if logits is None else logits.clone().requires_grad_(True)
    value = objective(x, z)
    assert value.dtype == torch.float64
    value.backward()
    direction = torch.randn(images.shape, generator=generator, dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(images + h * direction, logits) - objective(images - h * direction, logits)) / (2 * h)
    analytic = (x.grad * direction).sum()
    assert abs(float(numeric)) > 1e-3  # the check is not vacuous
    assert float(analytic) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)
    if soft:
        dz = torch.randn(logits.shape, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            numeric_z = (objective(images, logits + h * dz) - objective(images, logits - h * dz)) / (2 * h)
        assert float((z.grad * dz).sum()) == pytest.approx(float(numeric_z), rel=1e-5, abs=1e-8)


def test_reverse_objective_is_match_objective_against_negated_gradients() -> None:
    K = 2
    params = tiny_trajectory().checkpoints[2]
    real = {k: v.unsqueeze(0).repeat(K, *[1] * v.dim()) for k, v in random_params_like(params, 5).items()}
    images, labels = digits("train", 10).images[:K], torch.tensor([0, 1])
    args = (tiny_model(), params, params)
    reverse = matching_objective(*args, real, images, labels, None, K, "layerwise_cosine", reverse=True)
    match_neg = matching_objective(*args, {k: -v for k, v in real.items()}, images, labels, None, K,
                                   "layerwise_cosine", reverse=False)
    match = matching_objective(*args, real, images, labels, None, K, "layerwise_cosine", reverse=False)
    assert torch.allclose(reverse, match_neg)
    assert not torch.allclose(reverse, match)


def _objective_and_grads(vectorised: bool, method: str, soft: bool, distance: str = "layerwise_cosine",
                         dtype: torch.dtype = torch.float32, K: int = 5, ipc: int = 2, path: str | None = None):
    """The objective of one distillation step on the tiny model and its gradient with respect to
    the synthetic images (and soft labels): the quantities the step uses. ``path`` as in
    matching_objective (None: ``vectorised`` decides)."""
    trajectory = tiny_trajectory()
    real_params = {k: v.to(dtype) for k, v in trajectory.checkpoints[1].items()}
    t_syn = 1 if method == "match" else 3
    syn_params = {k: v.to(dtype) for k, v in trajectory.checkpoints[t_syn].items()}
    data, clustering = digits("train", 10), tiny_clustering(10, 1)    # K = 10 real clusters; the first K used
    real_grads = {k: v[:K].to(dtype) for k, v in
                  cluster_gradients(tiny_model(), trajectory.checkpoints[1], data.images, data.labels,
                                    clustering).items()}
    model = tiny_model().to(dtype)
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(K * ipc, 1, 8, 8, generator=generator).to(dtype).requires_grad_(True)
    labels = torch.arange(K).repeat_interleave(ipc)
    z = (torch.randn(K * ipc, NUM_CLASSES, generator=generator).to(dtype).requires_grad_(True) if soft else None)
    value = matching_objective(model, real_params, syn_params, real_grads, x, labels, z, K, distance,
                               reverse=method == "reverse", vectorised=vectorised, path=path)
    value.backward()
    return value.detach(), x.grad, None if z is None else z.grad


@pytest.mark.parametrize("ipc", [1, 2])
@pytest.mark.parametrize("distance", ["layerwise_cosine", "mse"])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("method", ["reverse", "match"])
@pytest.mark.parametrize("path", ["per_sample", "vmap"])
def test_matching_objective_fast_paths_equal_looped_reference(path: str, method: str, soft: bool, distance: str,
                                                              ipc: int) -> None:
    """The per-sample path (the default for the ConvNet) and the vmap path agree with the looped
    reference (K double-backward graphs one after another) to float32 rounding: the objective,
    d/d images and d/d soft labels, each against a float64 loop. The tolerance is ~100 float32
    ulps of the largest entry, or twice the looped float32 reference's own error where that is
    larger: with ipc 1 and soft labels every float32 path is 1e-5 to 6e-5 off float64 in d/d
    images, the loop most. The check is not vacuous (gradients nonzero)."""
    fast = _objective_and_grads(True, method, soft, distance, ipc=ipc, path=path)
    slow = _objective_and_grads(False, method, soft, distance, ipc=ipc)
    exact = _objective_and_grads(False, method, soft, distance, dtype=torch.float64, ipc=ipc)
    for got, ref, truth, what in zip(fast, slow, exact, ("objective", "d/d images", "d/d soft labels")):
        if truth is None:
            assert got is None and ref is None
            continue
        scale = float(truth.abs().max())
        assert scale > 1e-4, what
        assert got.dtype == ref.dtype == torch.float32
        ref_error = float((ref.double() - truth).abs().max())
        assert ref_error <= 1e-4 * scale, what                 # the reference itself is float32-accurate
        tolerance = max(1e-5 * scale, 2 * ref_error)
        assert float((got.double() - truth).abs().max()) <= tolerance, what
        assert float((got - ref).abs().max()) <= tolerance + ref_error, what


def test_matching_objective_default_is_the_per_sample_path() -> None:
    """``vectorised=True`` (the default) takes the per-sample path for the ConvNet: bit for bit."""
    default = _objective_and_grads(True, "reverse", True)
    per_sample = _objective_and_grads(True, "reverse", True, path="per_sample")
    for a, b in zip(default, per_sample):
        assert torch.equal(a, b)


@pytest.mark.parametrize("distance", ["cosine", "mse"])
def test_matching_objective_vectorised_equals_looped_for_other_distances(distance: str) -> None:
    for path in ("per_sample", "vmap"):
        fast = _objective_and_grads(True, "reverse", True, distance, path=path)
        slow = _objective_and_grads(False, "reverse", True, distance)
        for got, ref in zip(fast, slow):
            assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())), path


def test_synset_cluster_gradients_chunks_and_subsets_change_no_number() -> None:
    """vmap in chunks of clusters (any size) and gradients restricted to the compared parameters
    give the same tensors as one call over everything; the looped reference agrees."""
    K, ipc = 5, 2
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(K * ipc, 1, 8, 8, generator=generator)
    labels = torch.arange(K).repeat_interleave(ipc)
    params = tiny_trajectory().checkpoints[2]
    model = tiny_model()
    whole = synset_cluster_gradients(model, params, images, labels, None, K, chunk_images=None)
    assert set(whole) == set(params)
    atol = 1e-6 * max(float(v.abs().max()) for v in whole.values())   # float32 rounding (conv biases
    for chunk in (1, 2, 4, 6, 100):                                     # before a norm: ~1e-8 noise)
        chunked = synset_cluster_gradients(model, params, images, labels, None, K, chunk_images=chunk)
        for name in whole:
            assert torch.allclose(chunked[name], whole[name], rtol=1e-5, atol=atol), (chunk, name)
    names = compared_parameters("layerwise_cosine", params)
    assert names and all(params[n].dim() > 1 for n in names) and len(names) < len(params)
    assert compared_parameters("mse", params) == compared_parameters("cosine", params) == list(params)
    subset = synset_cluster_gradients(model, params, images, labels, None, K, names)
    assert list(subset) == names
    looped = synset_cluster_gradients_looped(model, params, images, labels, None, K, names)
    for name in names:
        assert torch.equal(subset[name], whole[name]), name
        stacked = torch.stack([g[name] for g in looped])
        assert torch.allclose(stacked, whole[name], rtol=1e-5, atol=atol), name
    with pytest.raises(ValueError, match="unknown gradient distance"):
        compared_parameters("l1", params)


# --------------------------------------------------------------------------------------------
# The distillation loop (Algorithm 1)
# --------------------------------------------------------------------------------------------
def _distil(config, **kwargs):
    data = digits("train", 10)
    return distill_synset(tiny_model(), tiny_trajectory(), data.images, data.labels, tiny_clustering(10, 2),
                          NUM_CLASSES, config, progress=False, **kwargs)


def test_initial_synset_takes_seeded_real_images_of_each_cluster() -> None:
    data, clustering = digits("train", 10), tiny_clustering(10, 2)
    K, smallest = clustering.num_clusters, int(clustering.sizes().min())
    images, sources = initial_synset(data.images, clustering, ipc=1, seed=4)
    assert images.shape == (K, 1, 8, 8)
    assert torch.equal(images, data.images[sources])
    assert torch.equal(clustering.assignment[sources], torch.arange(K))
    assert torch.equal(initial_synset(data.images, clustering, 1, seed=4)[1], sources)
    assert not torch.equal(initial_synset(data.images, clustering, 1, seed=5)[1], sources)
    with pytest.raises(ValueError, match=f"has {smallest} images, fewer than ipc={smallest + 1}"):
        initial_synset(data.images, clustering, ipc=smallest + 1, seed=0)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_distill_synset_lowers_its_objective(soft: bool) -> None:
    synset = _distil(tiny_distill_config(steps=30, soft_labels=soft))
    history = synset.loss_history
    assert len(history) == 30
    late = sum(history[-5:]) / 5
    assert late < history[0], f"reverse matching did not descend: first {history[0]:.3f}, last 5 mean {late:.3f}"
    assert not torch.equal(synset.images, synset.initial_images)
    K = tiny_clustering(10, 2).num_clusters
    assert synset.images.shape == (K, 1, 8, 8) and synset.ipc == 1
    assert torch.equal(synset.labels, tiny_clustering(10, 2).cluster_class)
    assert (synset.label_logits is not None) == soft
    assert "classifier.weight" in synset.final_layer_cosines


def test_distill_synset_is_deterministic() -> None:
    config = tiny_distill_config(steps=8, soft_labels=True)
    a, b = _distil(config), _distil(config)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.label_logits, b.label_logits)
    assert a.loss_history == b.loss_history
    c = _distil(tiny_distill_config(steps=8, soft_labels=True, seed=1))
    assert not torch.equal(a.images, c.images)


def test_train_trajectory_is_deterministic() -> None:
    data = digits("train", 10)
    runs = [train_trajectory(tiny_model(), tiny_trajectory().checkpoints[0], data.images, data.labels,
                             tiny_train_config(epochs=2)) for _ in range(2)]
    assert len(runs[0].checkpoints) == len(runs[1].checkpoints) == 3
    for a, b in zip(runs[0].checkpoints, runs[1].checkpoints):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(runs[0].losses, runs[1].losses)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_distill_synset_resumes_exactly(tmp_path, soft: bool) -> None:
    config = tiny_distill_config(steps=16, checkpoint_every=5, soft_labels=soft)
    whole = _distil(config)
    checkpoint = tmp_path / "checkpoint.pt"
    first = _distil(config, checkpoint_path=checkpoint, stop_after=10)
    assert checkpoint.exists() and len(first.loss_history) == 10
    assert load_checkpoint(checkpoint)["step"] == 10
    resumed = _distil(config, checkpoint_path=checkpoint)
    assert resumed.loss_history == pytest.approx(whole.loss_history, abs=1e-6)
    assert torch.allclose(resumed.images, whole.images, atol=1e-6)
    assert torch.equal(resumed.images, whole.images)  # in fact bit for bit
    if soft:
        assert torch.equal(resumed.label_logits, whole.label_logits)
    # The last step is always saved, even off the checkpoint_every grid (16 is not a multiple of 5).
    assert load_checkpoint(checkpoint)["step"] == 16


# ------------------------------------------------------------------------------------------ our ablations
def test_cosine_norm_distance_by_hand() -> None:
    from ddm.matching import layerwise_cosine_norm_distance

    a = {"w": torch.tensor([[3.0, 4.0]]), "b": torch.tensor([1.0])}
    b = {"w": torch.tensor([[6.0, 8.0]]), "b": torch.tensor([5.0])}      # same direction, half the size
    assert float(layerwise_cosine_norm_distance(a, b)) == pytest.approx((0.5 - 1) ** 2, abs=1e-6)
    c = {"w": torch.tensor([[-4.0, 3.0]]), "b": torch.tensor([0.0])}     # orthogonal, same size
    assert float(layerwise_cosine_norm_distance(a, c)) == pytest.approx(1.0, abs=1e-6)


def test_displacement_target_is_the_scaled_sum_over_the_trajectory() -> None:
    from ddm.matching import cluster_gradients, displacement_target

    trajectory = tiny_trajectory(per_class=6, epochs=3)
    clustering = tiny_clustering(per_class=6, clusters_per_class=2)
    data = digits(per_class=6)
    model = tiny_model()
    scale = torch.arange(1.0, clustering.num_clusters + 1)
    target = displacement_target(model, trajectory.checkpoints, data.images, data.labels, clustering, scale)
    by_hand = [cluster_gradients(model, p, data.images, data.labels, clustering) for p in trajectory.checkpoints[:-1]]
    for name, value in target.items():
        expected = sum(g[name] for g in by_hand) * scale.reshape(-1, *([1] * (value.dim() - 1)))
        torch.testing.assert_close(value, expected)


def test_displacement_distillation_matches_at_the_final_checkpoint_only() -> None:
    from ddm.matching import checkpoint_pairs

    assert checkpoint_pairs(5, "displacement", "alg1", 4) == [(5, 5)]
    trajectory = tiny_trajectory(per_class=6, epochs=3)
    clustering = tiny_clustering(per_class=6, clusters_per_class=2)
    data = digits(per_class=6)
    synset = distill_synset(tiny_model(), trajectory, data.images, data.labels, clustering, 10,
                            tiny_distill_config(method="displacement", steps=3), progress=False)
    assert synset.method == "displacement" and len(synset.loss_history) == 3
    assert synset.final_layer_cosines == {}
