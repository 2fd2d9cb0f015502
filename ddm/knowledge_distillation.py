"""Knowledge distillation (Supp. 9.3, Eq. 15) and the teachers it distils from.

A student network N is trained on the training set with

.. math:: \\mathcal L_{\\text{total}} = (1-\\alpha)\\,\\mathrm{CE}(N(x), y)
          + \\alpha\\,\\mathrm{KL}\\big(M(x) \\,\\|\\, N(x)\\big)

against a fixed teacher M (Supp. Eq. 15). The paper's teacher (Table 7) was trained by
"knowledge undistillation" (Ma et al., "Undistillable: Making a Nasty Teacher That CANNOT Teach
Students", ICLR 2021): a network that stays accurate while its soft outputs mislead a student.
Its loss, :func:`nasty_teacher_loss`, is the cross-entropy minus a weighted KL to a normally
trained network (the "adversary") at a temperature.

Where the paper is silent we choose, and the chapter (``ddm.chapters.transfer``) says so:

- Eq. 15 as printed has no temperature. :func:`kd_loss` takes one, Hinton's softening
  :math:`T^2\\,\\mathrm{KL}(\\sigma(z_M/T) \\| \\sigma(z_N/T))`, with T = 1 giving Eq. 15 as
  printed; the default settings (:class:`KDConfig`) follow Ma et al.'s CIFAR-10 students
  (alpha = 0.9, T = 4), the setting their nasty teacher was built to defeat.
- The printed KL(N(x), M(x)) names no direction; we take the usual one of distillation,
  the teacher's distribution first: :math:`\\sum_l p^M_l \\log(p^M_l / p^N_l)`.

This module holds the math and the training loops on plain tensors; what is cached, and under
which key, is the chapter's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddm.config import ModelConfig, TrainConfig
from ddm.training import BatchLoss, Params, Trajectory, train_trajectory

NORMAL = "normal"   # a teacher trained by plain cross-entropy
NASTY = "nasty"     # a teacher trained by knowledge undistillation (Ma et al. 2021)
TEACHERS = (NORMAL, NASTY)


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class KDConfig:
    """The settings of the knowledge-distillation chapter: the student's loss (Supp. Eq. 15) and
    the teacher it distils from. Every artifact trained under them is keyed by all of them."""

    alpha: float = _help("alpha of Supp. Eq. 15, the weight of the KL term (Ma et al.'s CIFAR-10 students: 0.9)", 0.9)
    temperature: float = _help("T of the KL term, T^2 KL(softmax(z_M/T) || softmax(z_N/T)); 1 is Eq. 15 as printed "
                               "(Ma et al.'s students: 4)", 4.0)
    teacher: str = _help("normal (plain cross-entropy) | nasty (knowledge undistillation, Ma et al. 2021)", NASTY)
    teacher_arch: str = _help("the teacher's architecture; '' the student's (the profile's)", "")
    teacher_width: int = _help("the teacher's width; 0 the student's", 0)
    teacher_seed: int = _help("seed of the teacher's theta_0 (the student's is model.seed)", 1)
    teacher_epochs: int = _help("epochs of teacher training; 0 the student's tau", 0)
    nasty_omega: float = _help("omega of the nasty teacher's loss, the weight of its KL to the normal teacher "
                               "(Ma et al., CIFAR-10: 0.04)", 0.04)
    nasty_temperature: float = _help("tau_A of the nasty teacher's KL to the normal teacher (Ma et al.: 4)", 4.0)

    def __post_init__(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], not {self.alpha}")
        if self.temperature <= 0 or self.nasty_temperature <= 0:
            raise ValueError("temperatures must be positive")
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; choose one of {list(TEACHERS)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------ losses
def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean', 'sum' or 'none'")


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  reduction: str = "none") -> torch.Tensor:
    r""":math:`\mathrm{KL}\big(\sigma(z_M/T) \,\|\, \sigma(z_N/T)\big) = \sum_l p^M_l (\log p^M_l - \log p^N_l)`
    per image: the KL term of Supp. Eq. 15 (without the :math:`T^2`), and the distance the
    chapter ranks clusters by. ``student_logits`` z_N and ``teacher_logits`` z_M (..., L);
    returns (...) for ``reduction="none"``."""
    log_p_student = F.log_softmax(student_logits / temperature, -1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, -1)
    per_image = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return _reduce(per_image, reduction)


def kd_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor, alpha: float,
            temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    r"""Supp. Eq. 15, the student's loss in knowledge distillation:

    .. math:: (1-\alpha)\,\mathrm{CE}(z_N, y) + \alpha\,T^2\,
              \mathrm{KL}\big(\sigma(z_M/T) \,\|\, \sigma(z_N/T)\big)

    ``student_logits`` z_N (B, L), ``labels`` y (B,), ``teacher_logits`` z_M (B, L), treated as
    constants (detached). T = 1 is the equation as printed; the :math:`T^2` keeps the KL term's
    gradient on the scale of the cross-entropy's as T grows (Hinton et al. 2015). alpha = 0 is
    the plain cross-entropy. Mean over the batch (``reduction="mean"``), or (B,) (``"none"``)."""
    teacher_logits = teacher_logits.detach()
    ce = F.cross_entropy(student_logits, labels, reduction="none")
    kl = kl_to_teacher(student_logits, teacher_logits, temperature, "none")
    return _reduce((1 - alpha) * ce + alpha * temperature ** 2 * kl, reduction)


def nasty_teacher_loss(logits: torch.Tensor, labels: torch.Tensor, adversary_logits: torch.Tensor, omega: float,
                       temperature: float, reduction: str = "mean") -> torch.Tensor:
    r"""Knowledge undistillation (Ma et al. 2021, Eq. 2), the nasty teacher's loss:

    .. math:: \mathrm{CE}(z_T, y) - \omega\,\tau^2\,
              \mathrm{KL}\big(\sigma(z_T/\tau) \,\|\, \sigma(z_A/\tau)\big)

    with z_T the teacher being trained (B, L) and z_A a normally trained network's logits
    (B, L), held fixed: the teacher stays accurate (the cross-entropy) while its softened
    outputs move away from those of a normal network, which is what misleads a student."""
    adversary_logits = adversary_logits.detach()
    ce = F.cross_entropy(logits, labels, reduction="none")
    away = kl_to_teacher(adversary_logits, logits, temperature, "none")   # KL(teacher || adversary)
    return _reduce(ce - omega * temperature ** 2 * away, reduction)


def _rows(table: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``table[index]`` on the device of ``like`` (the loss is called with indices on either)."""
    return table[index.to(table.device)].to(like.device)


def kd_batch_loss(labels: torch.Tensor, teacher_logits: torch.Tensor, alpha: float, temperature: float) -> BatchLoss:
    """Supp. Eq. 15 as the training loop takes a loss (:data:`ddm.training.BatchLoss`):
    ``loss(logits, batch)`` with ``batch`` indices into the training set, whose ``labels`` (N,)
    and teacher's ``teacher_logits`` (N, L) it reads."""
    def loss(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, _rows(labels, batch, logits), _rows(teacher_logits, batch, logits), alpha, temperature)
    return loss


def nasty_batch_loss(labels: torch.Tensor, adversary_logits: torch.Tensor, omega: float,
                     temperature: float) -> BatchLoss:
    """:func:`nasty_teacher_loss` as the training loop takes a loss, reading the adversary's
    ``adversary_logits`` (N, L) on the training images."""
    def loss(logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        return nasty_teacher_loss(logits, _rows(labels, batch, logits), _rows(adversary_logits, batch, logits),
                                  omega, temperature)
    return loss


# ------------------------------------------------------------------------------------------ training
ADVERSARY_SEED_OFFSET = 1
"""The nasty teacher's adversary starts from seed ``teacher_seed + 1``. From the teacher's own theta_0
and data order the two networks would begin identical, where the KL term and its gradient are zero,
and the "nasty" teacher would follow the normal one step for step (it did, on tiny digits)."""


def adversary_config(kd: KDConfig) -> KDConfig:
    """The settings of the normal network a nasty teacher is trained against (Ma et al.'s
    adversary): a normal teacher from another seed (:data:`ADVERSARY_SEED_OFFSET`). For a normal
    teacher, the teacher itself."""
    if kd.teacher == NORMAL:
        return kd
    return dataclasses.replace(kd, teacher=NORMAL, teacher_seed=kd.teacher_seed + ADVERSARY_SEED_OFFSET)


def teacher_model_config(student: ModelConfig, kd: KDConfig) -> ModelConfig:
    """The teacher's network: the student's, except where ``kd`` names another architecture,
    width or seed (its own seed always: a teacher is never the student's theta_0)."""
    return dataclasses.replace(student, arch=kd.teacher_arch or student.arch, width=kd.teacher_width or student.width,
                               seed=kd.teacher_seed)


def teacher_train_config(student: TrainConfig, kd: KDConfig) -> TrainConfig:
    """The teacher's schedule: the student's, with ``kd.teacher_epochs`` when set."""
    return dataclasses.replace(student, epochs=kd.teacher_epochs or student.epochs)


def train_normal_teacher(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                         config: TrainConfig, device: str = "cpu") -> Params:
    """A normal teacher: Eq. 2's training by cross-entropy, final parameters only."""
    return train_trajectory(model, initial, images, labels, config, device=device, save_checkpoints=False).final


def train_nasty_teacher(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                        adversary_logits: torch.Tensor, config: TrainConfig, omega: float, temperature: float,
                        device: str = "cpu") -> Params:
    """A nasty teacher (Ma et al. 2021): the same schedule, the loss :func:`nasty_teacher_loss`
    against a normal network's ``adversary_logits`` (N, L) on the training images."""
    loss = nasty_batch_loss(labels, adversary_logits, omega, temperature)
    return train_trajectory(model, initial, images, labels, config, device=device, save_checkpoints=False,
                            loss=loss).final


def train_student(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                  teacher_logits: torch.Tensor, config: TrainConfig, alpha: float, temperature: float,
                  keep: torch.Tensor | None = None, order_seed: int | None = None, device: str = "cpu",
                  save_checkpoints: bool = True) -> Trajectory:
    """The student's trajectory under Supp. Eq. 15 (Eq. 2's SGD with the KD loss): the teacher's
    ``teacher_logits`` (N, L) on the training images are fixed targets. ``keep`` (N,) bool and
    ``order_seed`` as in :func:`ddm.training.train_trajectory`: with ``keep`` it is the student's
    exact retrain without the dropped images, same theta_0, same data order."""
    loss = kd_batch_loss(labels, teacher_logits, alpha, temperature)
    return train_trajectory(model, initial, images, labels, config, keep=keep, order_seed=order_seed, device=device,
                            save_checkpoints=save_checkpoints, loss=loss)
