"""Supp. Eq. 15 (ddm.knowledge_distillation): the KD loss against hand-computed values and its
closed-form gradient, the nasty teacher's loss, the training and matching loss hooks, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddm import knowledge_distillation as kd
from ddm.matching import cluster_gradients, distill_synset
from ddm.training import train_trajectory

from fixtures_core import (digits, single_thread, tiny_clustering, tiny_distill_config, tiny_model,  # noqa: F401
                           tiny_train_config, tiny_trajectory)


def test_kd_loss_on_a_hand_computed_case() -> None:
    student = torch.tensor([[0.0, 0.0]])                  # p_N = (1/2, 1/2)
    teacher = torch.tensor([[0.0, math.log(3.0)]])        # p_M = (1/4, 3/4) at T = 1
    label = torch.tensor([1])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    expected = 0.7 * math.log(2.0) + 0.3 * kl
    assert float(kd.kd_loss(student, label, teacher, alpha=0.3)) == pytest.approx(expected, rel=1e-6)
    # T = 2: p_M = softmax(0, ln(3)/2) = (1, sqrt 3) / (1 + sqrt 3); the KL term is scaled by T^2 = 4.
    q = 1 / (1 + math.sqrt(3.0))
    kl_t = q * math.log(q / 0.5) + (1 - q) * math.log((1 - q) / 0.5)
    got = float(kd.kd_loss(student, label, teacher, alpha=0.3, temperature=2.0))
    assert got == pytest.approx(0.7 * math.log(2.0) + 0.3 * 4 * kl_t, rel=1e-6)


def test_alpha_zero_is_the_plain_cross_entropy_and_alpha_one_the_kl_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 5, generator=generator), torch.randn(7, 5, generator=generator)
    y = torch.randint(5, (7,), generator=generator)
    for temperature in (1.0, 4.0):
        torch.testing.assert_close(kd.kd_loss(s, y, t, 0.0, temperature), F.cross_entropy(s, y))
        torch.testing.assert_close(kd.kd_loss(s, y, t, 1.0, temperature),
                                   temperature ** 2 * kd.kl_to_teacher(s, t, temperature, "mean"))
    assert float(kd.kl_to_teacher(t, t, 3.0, "sum")) == pytest.approx(0.0, abs=1e-6)
    assert bool((kd.kl_to_teacher(s, t) > 0).all())


def test_kd_gradient_is_the_closed_form_and_leaves_the_teacher_alone() -> None:
    generator = torch.Generator().manual_seed(1)
    s = torch.randn(6, 4, generator=generator, requires_grad=True)
    t = torch.randn(6, 4, generator=generator, requires_grad=True)
    y = torch.randint(4, (6,), generator=generator)
    alpha, T = 0.6, 3.0
    kd.kd_loss(s, y, t, alpha, T).backward()
    # d/ds of (1-a) CE + a T^2 KL(softmax(t/T) || softmax(s/T)), mean over B:
    closed = ((1 - alpha) * (F.softmax(s, -1) - F.one_hot(y, 4))
              + alpha * T * (F.softmax(s / T, -1) - F.softmax(t / T, -1))).detach() / len(s)
    torch.testing.assert_close(s.grad, closed)
    assert t.grad is None   # the teacher's logits are fixed targets


def test_nasty_teacher_loss_on_a_hand_computed_case_and_its_sign() -> None:
    teacher = torch.tensor([[0.0, 0.0]])                  # p_T = (1/2, 1/2)
    adversary = torch.tensor([[0.0, math.log(3.0)]])      # p_A = (1/4, 3/4) at tau = 1
    label = torch.tensor([0])
    away = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)    # KL(p_T || p_A)
    got = float(kd.nasty_teacher_loss(teacher, label, adversary, omega=0.1, temperature=1.0))
    assert got == pytest.approx(math.log(2.0) - 0.1 * away, rel=1e-6)
    # Omega rewards moving away from the adversary: the loss falls as the distributions part.
    further = torch.tensor([[1.0, -1.0]])
    assert float(kd.nasty_teacher_loss(further, label, adversary, 0.1, 1.0)) < got
    torch.testing.assert_close(kd.nasty_teacher_loss(adversary, label, adversary, 0.5, 4.0),
                               F.cross_entropy(adversary, label))


def test_settings_are_checked_and_the_teacher_gets_its_own_network() -> None:
    with pytest.raises(ValueError, match="alpha"):
        kd.KDConfig(alpha=1.5)
    with pytest.raises(ValueError, match="teacher"):
        kd.KDConfig(teacher="kind")
    from ddm.config import ModelConfig, TrainConfig
    student = ModelConfig(arch="convnet", width=32, seed=0)
    teacher = kd.teacher_model_config(student, kd.KDConfig(teacher_arch="resnet18_ap", teacher_seed=5))
    assert (teacher.arch, teacher.width, teacher.seed) == ("resnet18_ap", 32, 5)
    assert kd.teacher_train_config(TrainConfig(epochs=7), kd.KDConfig(teacher_epochs=3)).epochs == 3
    assert kd.teacher_train_config(TrainConfig(epochs=7), kd.KDConfig()).epochs == 7


def _teacher_logits(seed: int = 3) -> torch.Tensor:
    data = digits("train", 10)
    return torch.randn(len(data), 10, generator=torch.Generator().manual_seed(seed))


def test_the_training_hook_keeps_the_cross_entropy_by_default_and_alpha_zero_matches_it() -> None:
    data, model = digits("train", 10), tiny_model()
    initial = tiny_trajectory().checkpoints[0]
    config = tiny_train_config(epochs=2)
    plain = train_trajectory(model, initial, data.images, data.labels, config)
    hooked = train_trajectory(model, initial, data.images, data.labels, config,
                              loss=lambda logits, batch: F.cross_entropy(logits, data.labels[batch]))
    for a, b in zip(plain.final.values(), hooked.final.values()):
        assert torch.equal(a, b)
    zero = kd.train_student(model, initial, data.images, data.labels, _teacher_logits(), config, alpha=0.0,
                            temperature=4.0)
    for a, b in zip(plain.final.values(), zero.final.values()):
        torch.testing.assert_close(a, b)
    distilled = kd.train_student(model, initial, data.images, data.labels, _teacher_logits(), config, alpha=0.9,
                                 temperature=4.0)
    assert any(not torch.allclose(a, b) for a, b in zip(plain.final.values(), distilled.final.values()))


def test_the_student_is_deterministic_and_exact_unlearning_reproduces_it() -> None:
    data, model = digits("train", 10), tiny_model()
    initial = tiny_trajectory().checkpoints[0]
    config = tiny_train_config(epochs=2)
    runs = [kd.train_student(model, initial, data.images, data.labels, _teacher_logits(), config, 0.5, 2.0)
            for _ in range(2)]
    for a, b in zip(runs[0].final.values(), runs[1].final.values()):
        assert torch.equal(a, b)
    assert torch.equal(runs[0].losses, runs[1].losses)
    kept = kd.train_student(model, initial, data.images, data.labels, _teacher_logits(), config, 0.5, 2.0,
                            keep=torch.ones(len(data), dtype=torch.bool), save_checkpoints=False)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].final.values(), kept.final.values()))
    other = kd.train_student(model, initial, data.images, data.labels, _teacher_logits(), config, 0.5, 2.0,
                             order_seed=9)
    assert any(not torch.equal(a, b) for a, b in zip(runs[0].final.values(), other.final.values()))


def test_cluster_gradients_of_the_kd_loss_match_a_per_cluster_reference() -> None:
    data, model, clustering = digits("train", 10), tiny_model(), tiny_clustering()
    params = tiny_trajectory().checkpoints[1]
    teacher = _teacher_logits()
    loss = kd.kd_batch_loss(data.labels, teacher, 0.7, 3.0)
    got = cluster_gradients(model, params, data.images, data.labels, clustering, loss=loss)
    plain = cluster_gradients(model, params, data.images, data.labels, clustering)
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    for k in (0, clustering.num_clusters - 1):
        members = clustering.members(k)
        logits = torch.func.functional_call(model, leaves, (data.images[members],))
        value = kd.kd_loss(logits, data.labels[members], teacher[members], 0.7, 3.0)
        reference = torch.autograd.grad(value, list(leaves.values()))
        for (name, g), r in zip(got.items(), reference):
            torch.testing.assert_close(g[k], r)
    assert any(not torch.allclose(got[n], plain[n]) for n in got)


def test_distilling_against_the_kd_loss_changes_the_synset_and_refuses_the_displacement_ablation() -> None:
    data, model, clustering = digits("train", 10), tiny_model(), tiny_clustering()
    trajectory = tiny_trajectory()
    config = tiny_distill_config(steps=3)
    plain = distill_synset(model, trajectory, data.images, data.labels, clustering, 10, config, progress=False)
    zero = distill_synset(model, trajectory, data.images, data.labels, clustering, 10, config, progress=False,
                          real_loss=kd.kd_batch_loss(data.labels, _teacher_logits(), 0.0, 4.0))
    torch.testing.assert_close(plain.images, zero.images, atol=1e-5, rtol=1e-4)
    distilled = distill_synset(model, trajectory, data.images, data.labels, clustering, 10, config, progress=False,
                               real_loss=kd.kd_batch_loss(data.labels, _teacher_logits(), 0.9, 4.0))
    assert not torch.allclose(plain.images, distilled.images)
    with pytest.raises(ValueError, match="displacement"):
        distill_synset(model, trajectory, data.images, data.labels, clustering, 10,
                       tiny_distill_config(method="displacement", steps=1), progress=False,
                       real_loss=kd.kd_batch_loss(data.labels, _teacher_logits(), 0.9, 4.0))
