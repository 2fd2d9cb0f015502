"""Online evaluation (Sec. 3.3, Eq. 9): the perturbed models, obtained by fine-tuning.

A perturbation is a keep-mask p in {0,1}^K; p(k) = 0 deletes cluster k. Its model is the
trained network fine-tuned for T gradient steps on the synthetic images of the deleted clusters.
Two paths give the same parameters: a plain loop over masks (the slow reference) and a
vectorised path that fine-tunes all masks at once with ``torch.func.vmap``. Which is faster was
measured by ``benchmarks/bench_online.py`` on a 2-core CPU (see benchmarks/README.md): vmap is
1.4-2.5x faster for leave-one-out masks (one synthetic image per model) but 2.3-5x slower for
random masks that delete many clusters (the padded batch grows), so the default picks by mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from tqdm import tqdm

from ddm.training import Params, soft_cross_entropy


def _per_image_loss(logits: torch.Tensor, labels: torch.Tensor, label_logits: torch.Tensor | None) -> torch.Tensor:
    if label_logits is None:
        return F.cross_entropy(logits, labels, reduction="none")
    return soft_cross_entropy(logits, label_logits, reduction="none")


def deleted_synset_indices(keep_mask: torch.Tensor, synset_cluster: torch.Tensor) -> torch.Tensor:
    """Indices of the synthetic images whose cluster the mask deletes (p(k) = 0)."""
    deleted = torch.nonzero(~keep_mask.bool()).flatten()
    return torch.nonzero(torch.isin(synset_cluster, deleted)).flatten()


def finetune(model: nn.Module, params: Params, images: torch.Tensor, labels: torch.Tensor,
             label_logits: torch.Tensor | None, steps: int, lr: float) -> Params:
    r"""Eq. 9: :math:`\tilde\theta_{T} = \theta_\tau - \eta \sum_{t<T} \nabla\mathcal L(\tilde\theta_t, p\circ\mathcal S)`.

    Full-batch gradient descent on the given synthetic images for ``steps`` steps; the loss is the
    mean over the images. With no image the parameters are returned unchanged (p = all ones).
    """
    current = {k: v.detach().clone() for k, v in params.items()}
    if len(images) == 0:
        return current
    for _ in range(steps):
        current = {k: v.requires_grad_(True) for k, v in current.items()}
        logits = functional_call(model, current, (images,))
        loss = _per_image_loss(logits, labels, label_logits).mean()
        grads = torch.autograd.grad(loss, list(current.values()))
        current = {k: (v - lr * g).detach() for (k, v), g in zip(current.items(), grads)}
    return current


def finetune_looped(model: nn.Module, params: Params, synset_images: torch.Tensor, synset_labels: torch.Tensor,
                    synset_label_logits: torch.Tensor | None, synset_cluster: torch.Tensor,
                    keep_masks: torch.Tensor, steps: int, lr: float, progress: bool = False) -> list[Params]:
    """The slow reference: fine-tune one perturbed model per mask, one after another."""
    models = []
    for mask in tqdm(keep_masks, desc="fine-tune (loop)", disable=not progress, leave=False):
        idx = deleted_synset_indices(mask, synset_cluster)
        logits = None if synset_label_logits is None else synset_label_logits[idx]
        models.append(finetune(model, params, synset_images[idx], synset_labels[idx], logits, steps, lr))
    return models


def _padded_selection(keep_masks: torch.Tensor, synset_cluster: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, D) indices of deleted synthetic images per mask, padded, and (M, D) weights (0 = pad)."""
    selections = [deleted_synset_indices(m, synset_cluster) for m in keep_masks]
    width = max(1, max(len(s) for s in selections))
    index = torch.zeros(len(selections), width, dtype=torch.long)
    weight = torch.zeros(len(selections), width)
    for i, s in enumerate(selections):
        index[i, : len(s)] = s
        weight[i, : len(s)] = 1.0
    return index, weight


def finetune_vectorised(model: nn.Module, params: Params, synset_images: torch.Tensor, synset_labels: torch.Tensor,
                        synset_label_logits: torch.Tensor | None, synset_cluster: torch.Tensor,
                        keep_masks: torch.Tensor, steps: int, lr: float, chunk: int = 64) -> list[Params]:
    """All perturbed models at once: ``vmap`` over masks of a weighted full-batch step.

    Each mask's deleted images are gathered into a padded batch; pads carry weight 0, so every
    model takes exactly the step of :func:`finetune` (mean over its own images).
    """
    index, weight = _padded_selection(keep_masks, synset_cluster)

    def loss(p, x, y, z, w):
        per_image = _per_image_loss(functional_call(model, p, (x,)), y, z)
        return (per_image * w).sum() / w.sum().clamp_min(1.0)

    outputs: list[Params] = []
    base = {k: v.detach() for k, v in params.items()}
    for start in range(0, len(keep_masks), chunk):
        idx, w = index[start:start + chunk], weight[start:start + chunk]
        m = len(idx)
        x, y = synset_images[idx], synset_labels[idx]
        z = None if synset_label_logits is None else synset_label_logits[idx]
        current = {k: v.unsqueeze(0).expand(m, *v.shape).clone() for k, v in base.items()}
        if z is None:
            step_grad = vmap(grad(lambda p, xx, yy, ww: loss(p, xx, yy, None, ww)))
        else:
            step_grad = vmap(grad(loss))
        for _ in range(steps):
            grads = step_grad(current, x, y, w) if z is None else step_grad(current, x, y, z, w)
            # A mask that deletes nothing has weight 0 everywhere: its gradient is exactly zero.
            current = {k: v - lr * grads[k] for k, v in current.items()}
        outputs += [{k: v[i].clone() for k, v in current.items()} for i in range(m)]
    return outputs


def perturbed_models(model: nn.Module, params: Params, synset_images: torch.Tensor, synset_labels: torch.Tensor,
                     synset_label_logits: torch.Tensor | None, synset_cluster: torch.Tensor,
                     keep_masks: torch.Tensor, steps: int, lr: float, vectorised: bool | None = None,
                     progress: bool = False) -> list[Params]:
    """Eq. 9 for every mask in ``keep_masks`` (M, K) by the chosen path (None: the measured
    faster one, vmap when every mask deletes at most one cluster, else the loop)."""
    if vectorised is None:
        vectorised = bool(((~keep_masks.bool()).sum(1) <= 1).all())
    if vectorised:
        return finetune_vectorised(model, params, synset_images, synset_labels, synset_label_logits,
                                   synset_cluster, keep_masks, steps, lr)
    return finetune_looped(model, params, synset_images, synset_labels, synset_label_logits,
                           synset_cluster, keep_masks, steps, lr, progress)


@torch.no_grad()
def predict_many(model: nn.Module, models: list[Params], images: torch.Tensor) -> torch.Tensor:
    """(M, N, L) logits of every parameter set on the same images."""
    return torch.stack([functional_call(model, p, (images,)) for p in models])


def leave_one_out_masks(num_clusters: int) -> torch.Tensor:
    """(K, K) bool keep-masks, mask k deleting cluster k only."""
    return ~torch.eye(num_clusters, dtype=torch.bool)


def removal_sets(keep_masks: torch.Tensor) -> list[tuple[int, ...]]:
    """The clusters each keep-mask (M, K) deletes, as the removal sets exact retraining takes."""
    return [tuple(torch.nonzero(~mask).flatten().tolist()) for mask in keep_masks]


def random_masks(num_clusters: int, count: int, delete_fraction: float, seed: int) -> torch.Tensor:
    """(count, K) bool keep-masks; each cluster deleted with probability ``delete_fraction``,
    at least one deletion per mask (a mask deleting nothing carries no information)."""
    generator = torch.Generator().manual_seed(seed)
    deleted = torch.rand(count, num_clusters, generator=generator) < delete_fraction
    empty = ~deleted.any(1)
    forced = torch.randint(num_clusters, (int(empty.sum()),), generator=generator)
    deleted[torch.nonzero(empty).flatten(), forced] = True
    return ~deleted
