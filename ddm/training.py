"""Target training with a saved trajectory (Eq. 2) and exact unlearning by retraining.

The target network is trained from theta_0 by mini-batch SGD for tau epochs; the parameters at
the end of every epoch form the trajectory theta_0, ..., theta_tau that reverse gradient matching
reads. The data order is drawn from ``order_seed`` and recorded. Exact unlearning retrains from
the same theta_0 with the *same* order, the removed images dropped from their batches: with
nothing removed it reproduces the target bit for bit, so the effect it measures is the removed
cluster's alone. Retraining under another ``order_seed`` measures the noise floor.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ddm.config import TrainConfig

Params = dict[str, torch.Tensor]


def get_params(model: nn.Module) -> Params:
    """A detached copy of the model's parameters (the models have no buffers that train)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def set_params(model: nn.Module, params: Params) -> nn.Module:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    return model


def flatten_params(params: Params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


@dataclass(frozen=True)
class Trajectory:
    """theta_0 .. theta_tau of one training run, with the schedule that produced it."""

    checkpoints: list[Params]       # tau + 1 parameter dicts, theta_0 first
    epoch_orders: torch.Tensor      # (tau, N) int64, the permutation used in every epoch
    losses: torch.Tensor            # (tau,) mean training loss of every epoch
    order_seed: int

    @property
    def epochs(self) -> int:
        return len(self.checkpoints) - 1

    @property
    def final(self) -> Params:
        return self.checkpoints[-1]


def epoch_orders(num_samples: int, epochs: int, order_seed: int) -> torch.Tensor:
    """(epochs, N) permutations drawn from a generator seeded with ``order_seed``."""
    generator = torch.Generator().manual_seed(order_seed)
    return torch.stack([torch.randperm(num_samples, generator=generator) for _ in range(epochs)])


def train_trajectory(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                     config: TrainConfig, keep: torch.Tensor | None = None,
                     order_seed: int | None = None, device: str = "cpu",
                     save_checkpoints: bool = True, progress: bool = False) -> Trajectory:
    r"""Eq. 2: :math:`\theta_{t+1} = \theta_t - \eta \nabla \mathcal L(\theta_t, \mathcal B_t)` for tau epochs.

    ``keep`` (N,) bool drops images (False) from every batch of the same schedule: exact
    unlearning. A batch left empty is skipped, the optimiser untouched. ``order_seed`` defaults
    to ``config.order_seed``; a different one gives a retrain under a fresh data order.
    """
    seed = config.order_seed if order_seed is None else order_seed
    orders = epoch_orders(len(images), config.epochs, seed)
    model = set_params(model.to(device), {k: v.to(device) for k, v in initial.items()})
    optimiser = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    images, labels = images.to(device), labels.to(device)
    keep_device = keep.to(device) if keep is not None else None
    checkpoints = [get_params(model)] if save_checkpoints else []
    losses = []
    for epoch in tqdm(range(config.epochs), desc="train", disable=not progress, leave=False):
        total, seen = 0.0, 0
        for batch in orders[epoch].to(device).split(config.batch_size):
            if keep_device is not None:
                batch = batch[keep_device[batch]]
                if len(batch) == 0:
                    continue
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        losses.append(total / max(seen, 1))
        if save_checkpoints:
            checkpoints.append(get_params(model))
    if not save_checkpoints:
        checkpoints = [get_params(model)]
    cpu_checkpoints = [{k: v.cpu() for k, v in c.items()} for c in checkpoints]
    return Trajectory(cpu_checkpoints, orders, torch.tensor(losses), seed)


def retrain_without(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                    config: TrainConfig, removed: torch.Tensor, order_seed: int | None = None,
                    device: str = "cpu") -> Params:
    """Exact unlearning: retrain from theta_0 on D minus the ``removed`` (N,) bool images."""
    return train_trajectory(model, initial, images, labels, config, keep=~removed,
                            order_seed=order_seed, device=device, save_checkpoints=False).final


@dataclass(frozen=True)
class RetrainJob:
    """One exact retrain: which images to drop and under which data order."""

    removed: torch.Tensor   # (N,) bool
    order_seed: int


def _run_job(args) -> Params:
    model, initial, images, labels, config, job, device, threads = args
    if threads:
        torch.set_num_threads(threads)
    # A worker process receives the parent's parameters in shared memory (torch's pickling), the
    # same storage for every job: training them in place would race with the other workers.
    model = copy.deepcopy(model)
    return retrain_without(model, initial, images, labels, config, job.removed, job.order_seed, device)


def run_retrains(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig, jobs: list[RetrainJob], workers: int = 1, device: str = "cpu",
                 progress: bool = True, on_result=None) -> list[Params]:
    """Run independent exact retrains, in ``workers`` processes when more than one.

    Each worker uses one thread: on a small CPU several one-thread trainings are faster than one
    many-thread training. ``on_result(i, params)`` is called as each job's result arrives.
    """
    args = [(model, initial, images, labels, config, job, device, 1 if workers > 1 else 0) for job in jobs]
    results: list[Params] = []

    def collect(stream):
        for i, params in enumerate(tqdm(stream, total=len(args), desc="exact retrains", disable=not progress)):
            if on_result is not None:
                on_result(i, params)  # e.g. save at once, so an interrupted batch resumes
            results.append(params)
        return results

    if workers <= 1 or len(jobs) <= 1:
        return collect(_run_job(a) for a in args)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return collect(pool.map(_run_job, args))


@torch.no_grad()
def predict_logits(model: nn.Module, params: Params, images: torch.Tensor,
                   batch_size: int = 512, device: str = "cpu") -> torch.Tensor:
    """(N, L) logits of the model with ``params`` on ``images``."""
    model = set_params(model.to(device), {k: v.to(device) for k, v in params.items()})
    model.eval()
    out = [model(chunk.to(device)).cpu() for chunk in images.split(batch_size)]
    model.train()
    return torch.cat(out)


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r"""Cross-entropy against the soft label :math:`\mathrm{softmax}(z)` of ``target_logits`` z:
    :math:`-\sum_l \mathrm{softmax}(z)_l \log \mathrm{softmax}(\mathrm{logits})_l` per image,
    averaged over the batch (``reduction="mean"``) or not (``"none"``). The one copy the synset's
    loss (matching) and the fine-tune (online) use with learnable soft labels."""
    per_image = -(F.softmax(target_logits, -1) * F.log_softmax(logits, -1)).sum(-1)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return per_image.mean()
    raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'none'")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())
