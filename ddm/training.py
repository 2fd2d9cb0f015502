"""Target training with a saved trajectory (Eq. 2) and exact unlearning by retraining.

The target network is trained from theta_0 by mini-batch SGD for tau epochs; the parameters at
the end of every epoch form the trajectory theta_0, ..., theta_tau that reverse gradient matching
reads. The data order is drawn from ``order_seed`` and recorded. Exact unlearning retrains from
the same theta_0 with the *same* order, the removed images dropped from their batches: with
nothing removed it reproduces the target bit for bit, so the effect it measures is the removed
cluster's alone. Retraining under another ``order_seed`` measures the noise floor.

The exact retrains behind every ground truth are independent jobs. :func:`run_retrains` runs
them in this process, in a pool of local processes, or on a Dask engine (``dask.distributed``):
a local cluster it starts and closes, or an existing scheduler given by address
(:func:`resolve_scheduler`). Workers only return parameters; the caller saves each result as it
arrives (``on_result``), so the store keeps a single writer and an interrupted run resumes.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ddm.config import TrainConfig

Params = dict[str, torch.Tensor]
BatchLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A training loss other than the cross-entropy: ``loss(logits, batch)`` -> the batch's mean loss, with
``logits`` (B, L) the network's output on the images ``batch`` (B,) int64 (indices into the training set,
so that a loss can read per-image targets, e.g. a teacher's logits)."""


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
                     save_checkpoints: bool = True, progress: bool = False,
                     loss: BatchLoss | None = None) -> Trajectory:
    r"""Eq. 2: :math:`\theta_{t+1} = \theta_t - \eta \nabla \mathcal L(\theta_t, \mathcal B_t)` for tau epochs.

    ``keep`` (N,) bool drops images (False) from every batch of the same schedule: exact
    unlearning. A batch left empty is skipped, the optimiser untouched. ``order_seed`` defaults
    to ``config.order_seed``; a different one gives a retrain under a fresh data order.
    ``loss`` (a :data:`BatchLoss`, e.g. the knowledge-distillation loss of Supp. Eq. 15) replaces
    the batch's mean cross-entropy; None (the default) is the cross-entropy.
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
            logits = model(images[batch])
            value = F.cross_entropy(logits, labels[batch]) if loss is None else loss(logits, batch)
            optimiser.zero_grad(set_to_none=True)
            value.backward()
            optimiser.step()
            total += float(value.detach()) * len(batch)
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
                    device: str = "cpu", loss: BatchLoss | None = None) -> Params:
    """Exact unlearning: retrain from theta_0 on D minus the ``removed`` (N,) bool images
    (``loss``: as in :func:`train_trajectory`; None, the cross-entropy)."""
    return train_trajectory(model, initial, images, labels, config, keep=~removed,
                            order_seed=order_seed, device=device, save_checkpoints=False, loss=loss).final


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


# ---------------------------------------------------------------------------------------------
# The Dask engine (dask.distributed, futures API)
# ---------------------------------------------------------------------------------------------

SCHEDULER_ENV = "DDM_SCHEDULER"
LOCAL_SCHEDULER = "local"
CONNECT_TIMEOUT_S = 10.0   # seconds to reach a scheduler by address, and for it to have a worker
_ADDRESS = re.compile(r"^(tcp|tls)://\S+:\d+$")
SCHEDULER_CHOICES = "'' (this process, or eval.workers processes), 'local' (a Dask LocalCluster) " \
                    "or a Dask scheduler address such as tcp://127.0.0.1:8786"


class SchedulerError(ValueError):
    """A retrain engine that cannot be used: an unknown setting or an unreachable scheduler."""


def check_scheduler(scheduler: str, source: str = "scheduler") -> str:
    """``scheduler`` stripped, if it is '', 'local' or a ``tcp://``/``tls://`` address with a
    port; else a :class:`SchedulerError` naming ``source`` and the choices."""
    text = scheduler.strip() if isinstance(scheduler, str) else scheduler
    if text in ("", LOCAL_SCHEDULER) or (isinstance(text, str) and _ADDRESS.match(text)):
        return text
    raise SchedulerError(f"unknown {source} {scheduler!r}; choose {SCHEDULER_CHOICES}")


def resolve_scheduler(setting: str = "", environ: Mapping[str, str] | None = None) -> str:
    """Where exact retrains run: ``setting`` (``eval.scheduler``), else ``$DDM_SCHEDULER`` when
    the setting is empty, checked by :func:`check_scheduler`. ``environ`` defaults to
    ``os.environ`` (tests pass a dict)."""
    if setting and setting.strip():
        return check_scheduler(setting, "eval.scheduler")
    env = os.environ if environ is None else environ
    return check_scheduler(env.get(SCHEDULER_ENV, ""), f"${SCHEDULER_ENV}")


@dataclass(frozen=True)
class _RetrainInputs:
    """What every job shares, sent to the workers once (scattered), not once per job."""

    model: nn.Module
    initial: Params
    images: torch.Tensor
    labels: torch.Tensor
    config: TrainConfig
    device: str


@contextmanager
def _environ_restored() -> Iterator[None]:
    """``os.environ`` as it was on entry after the block: what was added is removed, what was
    changed or removed is put back."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextmanager
def _distributed_logs_at(level: int) -> Iterator[None]:
    """dask's loggers at ``level`` for the block (its handler writes to the stderr of import time;
    a LocalCluster's start-up would otherwise print INFO lines there)."""
    loggers = [logging.getLogger(name) for name in ("distributed", "dask")]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before):
            logger.setLevel(old)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    # A worker of a scheduler given by address may serve others too: restore its setting.
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _dask_job(inputs: _RetrainInputs, job: RetrainJob) -> Params:
    """One retrain on a Dask worker, one torch thread (runs there; CPU tensors come back)."""
    with _torch_threads(1):
        # The scattered inputs are one object per worker, shared by its jobs: train a copy.
        model = copy.deepcopy(inputs.model)
        return retrain_without(model, inputs.initial, inputs.images, inputs.labels, inputs.config,
                               job.removed, job.order_seed, inputs.device)


@contextmanager
def dask_client(scheduler: str, workers: int = 1, connect_timeout: float = CONNECT_TIMEOUT_S):
    """A ``distributed.Client`` on ``scheduler``: ``"local"`` starts a LocalCluster of
    ``workers`` one-thread processes and closes it on exit; an address connects to an existing
    scheduler (within ``connect_timeout`` s, waiting as long for one worker) and on exit closes
    only this connection, never the scheduler. Neither becomes dask's default client."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise SchedulerError(f"scheduler {scheduler!r} needs dask.distributed, which is not installed "
                             f"(pip install distributed); or set eval.scheduler to ''") from error

    if scheduler == LOCAL_SCHEDULER:
        # Dask writes its workers' environment into this process's os.environ before spawning
        # them (distributed.nanny.pre-spawn-environ, __DASK_PARENT_PID): put it back when done.
        # Among those variables is MALLOC_TRIM_THRESHOLD_=65536, which made a one-thread retrain
        # 1.1-1.9x slower in a worker than in this process (ci profile, benchmarks/
        # bench_retrain_engine.py): leave the allocator at glibc's default, as in the serial run.
        # The HTTP server gets a free port (":0"), and dask's own logs show only errors; the
        # workers' only critical ones: a worker whose heartbeat races the cluster's shutdown logs
        # an ERROR with a traceback, and a job's own error reaches this process through its future.
        # No route to a proxy for the workers' pages: without jupyter-server-proxy installed, the
        # scheduler logs that (with a traceback) on every start.
        routes = [r for r in dask.config.get("distributed.scheduler.http.routes") if r != "distributed.http.proxy"]
        with _environ_restored(), _distributed_logs_at(logging.ERROR), \
                dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                 "distributed.scheduler.http.routes": routes}), \
                LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
                Client(cluster, set_as_default=False) as client:
            yield client
        return
    fix = (f"start one (dask scheduler; dask worker {scheduler}), or set eval.scheduler / "
           f"${SCHEDULER_ENV} to another address, to 'local' or to ''")
    try:
        client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise SchedulerError(f"cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s "
                             f"({error}); {fix}") from error
    with client:
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except (OSError, TimeoutError) as error:
            raise SchedulerError(f"the Dask scheduler at {scheduler} has no worker after {connect_timeout:g} s; "
                                 f"start one (dask worker {scheduler})") from error
        yield client


def _run_on_dask(inputs: _RetrainInputs, jobs: list[RetrainJob], scheduler: str, workers: int,
                 connect_timeout: float, progress: bool,
                 on_result: Callable[[int, Params], None] | None) -> list[Params]:
    """One future per job; the parent hands each result to ``on_result`` as it completes."""
    if not jobs:
        return []
    results: list[Params | None] = [None] * len(jobs)
    with dask_client(scheduler, workers, connect_timeout) as client:
        from distributed import as_completed   # importable: dask_client checked

        shared = client.scatter(inputs, broadcast=True, hash=False)
        pending = {client.submit(_dask_job, shared, job, pure=False): i for i, job in enumerate(jobs)}
        try:
            for future in tqdm(as_completed(list(pending), loop=client.loop), total=len(jobs),
                               desc="exact retrains", disable=not progress):
                i = pending.pop(future)
                params = future.result()   # re-raises a job's error here
                if on_result is not None:
                    on_result(i, params)   # the single writer: save at once, so an interrupted run resumes
                results[i] = params
        finally:
            if pending:   # an error or an interrupt: leave no orphan work on a shared cluster
                client.cancel(list(pending))
    return results  # type: ignore[return-value]


def run_retrains(model: nn.Module, initial: Params, images: torch.Tensor, labels: torch.Tensor,
                 config: TrainConfig, jobs: list[RetrainJob], workers: int = 1, device: str = "cpu",
                 progress: bool = True, on_result: Callable[[int, Params], None] | None = None,
                 scheduler: str = "", connect_timeout: float = CONNECT_TIMEOUT_S) -> list[Params]:
    """Run independent exact retrains; their parameters in the order of ``jobs``.

    ``scheduler`` (checked by :func:`check_scheduler`; :func:`resolve_scheduler` adds
    ``$DDM_SCHEDULER``) says where they run: ``""`` in this process, or in ``workers`` local
    processes when more than one; ``"local"`` on a Dask LocalCluster of ``workers`` one-thread
    worker processes, started here and closed on return; ``"tcp://host:port"`` on the workers of
    an existing Dask scheduler (``workers`` is then the cluster's business), which stays up.
    Parallel workers use one torch thread each: on a small CPU several one-thread trainings are
    faster than one many-thread training, and the results equal the serial run's at one thread
    bit for bit. ``on_result(i, params)`` is called in this process as job ``i`` finishes (in
    completion order on Dask): the caller saves there, so whatever finished before an
    interruption is kept.
    """
    scheduler = check_scheduler(scheduler)
    if scheduler:
        inputs = _RetrainInputs(model, initial, images, labels, config, device)
        return _run_on_dask(inputs, jobs, scheduler, workers, connect_timeout, progress, on_result)
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
