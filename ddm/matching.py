"""Reverse gradient matching (Sec. 3.2, Eq. 1-6, Algorithm 1) and plain gradient matching.

For every cluster D_k a tiny synthetic set S_k (``ipc`` images, initialised from real images of
the cluster and labelled with its class) is optimised so that the gradient it gives at one point
of the target trajectory points *against* the gradient the real cluster gave at another point.
Fine-tuning the trained network on S_k then walks back the cluster's contribution: that is the
"reverse" in the name. Plain gradient matching (the ablation "DDM-match") matches the gradient
itself, at the same checkpoint, as in dataset condensation.

The K synset gradients of a step are taken by one of three paths of :func:`matching_objective`,
equal to float32 rounding: closed-form per-sample gradients from one batched pass (the default
where the network allows it), torch.func ``vmap`` over the clusters (the fallback), and a plain
loop over the clusters (the reference the tests hold the others to).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.overrides import TorchFunctionMode
from tqdm import tqdm

from ddm.clustering import Clustering
from ddm.config import DistillConfig
from ddm.models import BasicBlockAP, Network
from ddm.store import load_checkpoint, save_checkpoint
from ddm.training import BatchLoss, Params, Trajectory, soft_cross_entropy

log = logging.getLogger(__name__)

_EPS = 1e-6  # as in gradient-matching condensation's distance_wb: guards a zero-norm gradient

VMAP_CHUNK_IMAGES = 128
"""Synthetic images per vmap call in :func:`synset_cluster_gradients` (``chunk_size`` of vmap is
this divided by ipc). One call over all K = 1,000 clusters (ConvNet w32 on MNIST) was 2.1-2.4x
slower than chunks of 128 images (``benchmarks/bench_distill.py --no-chunk``): every activation
of the double backward is then a 130 MB tensor, mapped fresh from the system each time. At
K * ipc <= 128 it is one call, the same numbers as without chunks."""

PER_SAMPLE_CHUNK_IMAGES = 64
"""Synthetic images per pass of the per-sample path of :func:`matching_objective` (whole
clusters: this divided by ipc). The pass is limited by memory traffic on the CPU, and smaller
passes stay in cache longer: with the benchmark's ConvNet (w32, MNIST-shaped) at K = 1,000,
chunks of 64 images were ~10% faster than 128 and ~5% faster than 32 (each pass also has a
fixed cost of about 4 ms, which makes 16 slower still); at K = 100 one pass and chunks of 64
took the same time within noise. The chunks change no number beyond float32 rounding."""


# --------------------------------------------------------------------------------------------
# Gradient distances
# --------------------------------------------------------------------------------------------
def layerwise_cosine_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""Layer-wise cosine distance of gradient matching (the Dist of Eq. 6 for CNNs).

    Every weight tensor is viewed as one row per output unit, ``(out, -1)``, and the distance is
    :math:`\sum_{\text{layers}} \sum_{i} \big(1 - \cos(g^a_{i}, g^b_{i})\big)`. One-dimensional
    tensors (biases, normalisation scales) contribute nothing, as in the condensation code.
    """
    total = torch.zeros(())
    for name, a in g_a.items():
        if a.dim() <= 1:
            continue
        b = g_b[name]
        a2, b2 = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        cos = (a2 * b2).sum(-1) / (a2.norm(dim=-1) * b2.norm(dim=-1) + _EPS)
        total = total + (1 - cos).sum()
    return total


def layer_cosines(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine between the two gradients, layer by layer (every weight tensor flattened)."""
    out = {}
    for name, a in g_a.items():
        if a.dim() <= 1:
            continue
        b = g_b[name]
        out[name] = float(F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).squeeze())
    return out


def flat_cosine_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`1 - \cos(\mathrm{vec}(g^a), \mathrm{vec}(g^b))` over all parameters at once."""
    a = torch.cat([v.reshape(-1) for v in g_a.values()])
    b = torch.cat([g_b[k].reshape(-1) for k in g_a])
    return 1 - (a * b).sum() / (a.norm() * b.norm() + _EPS)


def mse_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\sum_{\text{layers}} \lVert g^a - g^b \rVert^2` (the paper's Dist for the ViT)."""
    total = torch.zeros(())
    for name, a in g_a.items():
        total = total + ((a - g_b[name]) ** 2).sum()
    return total


def layerwise_cosine_norm_distance(g_a: dict[str, torch.Tensor], g_b: dict[str, torch.Tensor]) -> torch.Tensor:
    r"""OUR ABLATION, not the paper's: the layer-wise cosine distance plus a term for each weight
    tensor's size, so that matching keeps the gradient's magnitude as well as its direction:

    .. math:: \sum_{\text{layers}} \Big[\sum_i \big(1 - \cos(g^a_i, g^b_i)\big)
              + \big(\lVert g^a\rVert / \lVert g^b\rVert - 1\big)^2\Big]

    (the ratio, not the difference, of the norms: scale-free like the cosine)."""
    total = layerwise_cosine_distance(g_a, g_b)
    for name, a in g_a.items():
        if a.dim() <= 1:
            continue
        total = total + (a.norm() / (g_b[name].norm() + _EPS) - 1) ** 2
    return total


DISTANCES = {"layerwise_cosine": layerwise_cosine_distance, "cosine": flat_cosine_distance,
             "mse": mse_distance, "layerwise_cosine_norm": layerwise_cosine_norm_distance}


def get_distance(name: str):
    if name not in DISTANCES:
        raise ValueError(f"unknown gradient distance {name!r}; choose one of {sorted(DISTANCES)}")
    return DISTANCES[name]


def compared_parameters(distance: str, params: Params) -> list[str]:
    """The parameters whose gradients ``distance`` reads: the weight tensors (dim > 1) for the
    layer-wise cosine, which ignores biases and normalisation scales, else all of them. The
    synset gradients are taken with respect to these only (the others held fixed), which spares
    the double backward their part of the graph and changes no number."""
    get_distance(distance)
    if distance in ("layerwise_cosine", "layerwise_cosine_norm"):
        names = [k for k, v in params.items() if v.dim() > 1]
        if names:
            return names
    return list(params)


# --------------------------------------------------------------------------------------------
# Losses and gradients
# --------------------------------------------------------------------------------------------
def synset_loss(model: nn.Module, params: Params, images: torch.Tensor, labels: torch.Tensor,
                label_logits: torch.Tensor | None) -> torch.Tensor:
    """L(theta, S): hard-label cross-entropy, or soft-label cross-entropy with our extension."""
    logits = functional_call(model, params, (images,))
    if label_logits is None:
        return F.cross_entropy(logits, labels)
    return soft_cross_entropy(logits, label_logits)


def cluster_gradients(model: nn.Module, params: Params, images: torch.Tensor, labels: torch.Tensor,
                      clustering: Clustering, real_batch: int = 0,
                      generator: torch.Generator | None = None,
                      loss: BatchLoss | None = None) -> dict[str, torch.Tensor]:
    r""":math:`\nabla_\theta \mathcal L(\theta, \mathcal D_k)` for every cluster k, stacked: (K, *shape).

    The loss of a cluster is its mean cross-entropy, or ``loss(logits, members)`` when given (a
    :data:`ddm.training.BatchLoss`, e.g. the student's knowledge-distillation loss, Supp. Eq. 15).
    ``real_batch > 0`` samples that many images per cluster instead of using all of them.
    """
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    per_cluster: list[tuple[torch.Tensor, ...]] = []
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        if real_batch and len(members) > real_batch:
            members = members[torch.randperm(len(members), generator=generator)[:real_batch]]
        logits = functional_call(model, params, (images[members],))
        value = F.cross_entropy(logits, labels[members]) if loss is None else loss(logits, members)
        per_cluster.append(torch.autograd.grad(value, list(params.values())))
    return {name: torch.stack([g[i] for g in per_cluster]) for i, name in enumerate(params)}


def synset_cluster_gradients(model: nn.Module, params: Params, syn_images: torch.Tensor,
                             syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                             num_clusters: int, names: Sequence[str] | None = None,
                             chunk_images: int | None = VMAP_CHUNK_IMAGES) -> dict[str, torch.Tensor]:
    r""":math:`\nabla_\theta \mathcal L(\theta, \mathcal S_k)` for all k at once (torch.func
    ``vmap`` over ``grad``), kept differentiable with respect to the synthetic images and soft
    labels: (K, *shape).

    ``names`` restricts the gradient to those parameters (the others are held fixed; default all).
    ``chunk_images`` caps the synthetic images per vmap call (:data:`VMAP_CHUNK_IMAGES`; None: one
    call). :func:`synset_cluster_gradients_looped` is the slow reference: one autograd pass per
    cluster.
    """
    ipc = len(syn_images) // num_clusters
    imgs = syn_images.reshape(num_clusters, ipc, *syn_images.shape[1:])
    labs = syn_labels.reshape(num_clusters, ipc)
    names = list(params) if names is None else list(names)
    wrt = {k: params[k].detach() for k in names}
    fixed = {k: v.detach() for k, v in params.items() if k not in wrt}
    chunk = None if chunk_images is None else max(1, chunk_images // max(1, ipc))
    chunk = None if chunk is not None and chunk >= num_clusters else chunk

    def loss(p, x, y, z):
        return synset_loss(model, {**fixed, **p}, x, y, z)

    if label_logits is None:
        return vmap(grad(lambda p, x, y: loss(p, x, y, None)), in_dims=(None, 0, 0),
                    chunk_size=chunk)(wrt, imgs, labs)
    logit_rows = label_logits.reshape(num_clusters, ipc, -1)
    return vmap(grad(loss), in_dims=(None, 0, 0, 0), chunk_size=chunk)(wrt, imgs, labs, logit_rows)


def synset_cluster_gradients_looped(model: nn.Module, params: Params, syn_images: torch.Tensor,
                                    syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                                    num_clusters: int, names: Sequence[str] | None = None
                                    ) -> list[dict[str, torch.Tensor]]:
    r"""The slow reference of :func:`synset_cluster_gradients`: one
    ``torch.autograd.grad(..., create_graph=True)`` per cluster, one after another. Returns the K
    gradient dicts as a list (each differentiable with respect to the images and soft labels)."""
    ipc = len(syn_images) // num_clusters
    names = list(params) if names is None else list(names)
    leaves = {k: v.detach().requires_grad_(k in names) for k, v in params.items()}
    out = []
    for k in range(num_clusters):
        rows = slice(k * ipc, (k + 1) * ipc)
        logits = None if label_logits is None else label_logits[rows]
        value = synset_loss(model, leaves, syn_images[rows], syn_labels[rows], logits)
        grads = torch.autograd.grad(value, [leaves[n] for n in names], create_graph=True)
        out.append(dict(zip(names, grads)))
    return out


# --------------------------------------------------------------------------------------------
# GroupNorm with a lean double backward (used inside the per-sample pass)
# --------------------------------------------------------------------------------------------
def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_p a_{ncp} b_{ncp}` over the positions of every sample and channel: (N, C)."""
    return torch.linalg.vecdot(a, b)   # 5x faster here than einsum (N*C one-by-one matrix products)


class _GroupNormInputGradient(torch.autograd.Function):
    r"""The input gradient of GroupNorm, :math:`\bar x = s\,(v - a - \hat x b)`, as a function of
    the output gradient :math:`\bar y` and of the input x, with a hand-written backward.

    Per sample and group of m = D * HxW entries: :math:`s = 1/\sigma`, :math:`\hat x = s (x - \mu)`,
    :math:`v = \gamma \bar y` (:math:`\gamma` per channel), a and b the means of v and of
    :math:`v \hat x`. PyTorch differentiates its GroupNorm backward (``create_graph=True``)
    through a composite of some seven elementwise operations on the activation, whose backward
    adds about fourteen; on the benchmark's ConvNet that was a third of a distillation step.
    Here the forward is the fused kernel, and the backward, for an incoming
    :math:`g = \partial L/\partial\bar x`, is

    .. math:: \partial L/\partial\bar y = \gamma P g, \qquad
              \partial L/\partial x = P J - s^2 \hat x \,(G_v - a G_1 - b G_h)/m, \qquad
              J = -s\,(v G_h/m + b\, g),

    with :math:`P u = s (u - \overline{u} - \hat x\, \overline{u \hat x})` (the input gradient
    of an affine-free GroupNorm, symmetric) and :math:`G_1, G_h, G_v` the group sums of g,
    :math:`g \hat x`, :math:`g v`; from :math:`\partial\hat x_q/\partial x_p = s(\delta_{pq} -
    1/m - \hat x_p \hat x_q/m)` and :math:`\partial s/\partial x_p = -s^2 \hat x_p/m`. Every
    group sum is a sum over the group's channels of per-channel dot products with x, so both
    results are :math:`c_1 g + c_2 x + c_3` and :math:`e_1 \bar y + e_2 g + e_3 x + e_4` with
    coefficients per sample and channel: five reductions and five passes over the activation.
    Tested against PyTorch's double backward and by ``gradgradcheck``.
    """

    @staticmethod
    def forward(ctx, grad_out, x, weight, mean, rstd, groups):
        N, C = x.shape[:2]
        ctx.save_for_backward(grad_out, x, weight, mean, rstd)
        ctx.groups = groups
        return torch.ops.aten.native_group_norm_backward(grad_out, x, mean, rstd, weight, N, C, x[0, 0].numel(),
                                                         groups, [True, False, False])[0]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        grad_out, x, weight, mean, rstd = ctx.saved_tensors
        G = ctx.groups
        N, C = x.shape[:2]
        D = C // G
        shape = x.shape
        xc, yc, gc = (t.reshape(N, C, -1) for t in (x, grad_out, g))        # (N, C, HxW)
        m = D * xc.shape[-1]
        gamma = torch.ones(C, dtype=x.dtype, device=x.device) if weight is None else weight
        # Per-channel sums (N, C), then group sums (N, G) with gamma where v enters.
        s_y, s_g = yc.sum(-1), gc.sum(-1)
        s_yx, s_gx, s_gy = _channel_dot(yc, xc), _channel_dot(gc, xc), _channel_dot(gc, yc)

        def group(t: torch.Tensor) -> torch.Tensor:                      # (N, C) -> (N, G, 1)
            return t.reshape(N, G, D).sum(-1, keepdim=True)

        mu, s = mean.reshape(N, G, 1), rstd.reshape(N, G, 1)
        gam = gamma.reshape(1, G, D)
        A_v = group(gamma * s_y)                                          # sum v
        B_v = s * (group(gamma * s_yx) - mu * A_v)                        # sum v x_hat
        G_1 = group(s_g)                                                  # sum g
        G_h = s * (group(s_gx) - mu * G_1)                                # sum g x_hat
        G_v = group(gamma * s_gy)                                         # sum g v
        a, b = A_v / m, B_v / m

        def per_channel(t: torch.Tensor) -> torch.Tensor:                # (N, G, D) -> (N, C, 1)
            return t.expand(N, G, D).reshape(N, C, 1)

        d_grad_out = d_x = d_weight = None
        if ctx.needs_input_grad[0]:
            # gamma P g = c1 g + c2 x + c3
            c1 = per_channel(gam * s)
            c2 = per_channel(-gam * s * s * G_h / m)
            c3 = per_channel(gam * (-s * G_1 / m + s * s * mu * G_h / m))
            d_grad_out = torch.addcmul(c3, xc, c2).addcmul_(gc, c1).reshape(shape)
        if ctx.needs_input_grad[1]:
            sum_J = -s * (G_h / m * A_v + b * G_1)                        # sum J
            sum_Jh = -s * (G_h / m * B_v + b * G_h)                       # sum J x_hat
            Q = s * sum_Jh / m + s * s * (G_v - a * G_1 - b * G_h) / m
            e1 = per_channel(-s * s * gam * G_h / m)
            e2 = per_channel(-s * s * b)
            e3 = per_channel(-s * Q)
            e4 = per_channel(-s * sum_J / m + s * Q * mu)
            d_x = torch.addcmul(e4, xc, e3).addcmul_(yc, e1).addcmul_(gc, e2).reshape(shape)
        if ctx.needs_input_grad[2]:
            # sum over samples and positions of grad_out * P g, channel by channel
            pg = (s * s_gy.reshape(N, G, D) - s * G_1 / m * s_y.reshape(N, G, D)
                  - s * s * G_h / m * (s_yx.reshape(N, G, D) - mu * s_y.reshape(N, G, D)))
            d_weight = pg.reshape(N, C).sum(0)
        return d_grad_out, d_x, d_weight, None, None, None


class _GroupNorm(torch.autograd.Function):
    r"""GroupNorm :math:`y = \gamma \hat x + \beta` by the fused kernel, whose input gradient is
    :class:`_GroupNormInputGradient` (cheap to differentiate again); the affine parameters'
    gradients :math:`\sum \bar y \hat x` and :math:`\sum \bar y` are plain differentiable ops."""

    @staticmethod
    def forward(ctx, x, groups, weight, bias, eps):
        N, C = x.shape[:2]
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, N, C, x[0, 0].numel(), groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.eps = groups, eps
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean, rstd = ctx.saved_tensors
        N, C = x.shape[:2]
        d_x = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_x = _GroupNormInputGradient.apply(grad_out, x, weight, mean, rstd, ctx.groups)
        if ctx.needs_input_grad[2]:
            # x_hat afresh (not from the saved statistics) so that this stays differentiable in x.
            x_hat = F.group_norm(x, ctx.groups, None, None, ctx.eps)
            d_weight = (grad_out * x_hat).reshape(N, C, -1).sum((0, 2))
        if ctx.needs_input_grad[3]:
            d_bias = grad_out.reshape(N, C, -1).sum((0, 2))
        return d_x, None, d_weight, d_bias, None


def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """``F.group_norm`` (same signature, values and gradients to float32 rounding) by
    :class:`_GroupNorm`, whose double backward is a few passes over the activation."""
    return _GroupNorm.apply(input, num_groups, weight, bias, eps)


# --------------------------------------------------------------------------------------------
# Average pooling as block means (used inside the per-sample pass)
# --------------------------------------------------------------------------------------------
class _BlockMean(torch.autograd.Function):
    r"""Non-overlapping average pooling, :math:`y_{ij} = \frac{1}{k_h k_w} \sum_{a<k_h, b<k_w}
    x_{i k_h + a,\, j k_w + b}` (rows and columns beyond the last whole block dropped, as
    ``avg_pool2d`` without padding or ceil mode does), by strided slices and adds. Its backward is
    :class:`_BlockSpread`, the adjoint, whose backward is this again: both are linear, so every
    derivative order costs one cheap pass. PyTorch's CPU ``avg_pool2d`` kernel and its backward
    were 3-5x slower per element than these adds on the benchmark's ConvNet, and the pooling is
    run four times per layer in a step (forward, backward, and both again in the double
    backward)."""

    @staticmethod
    def forward(ctx, x, kh, kw):
        ctx.kh, ctx.kw, ctx.size = kh, kw, x.shape[-2:]
        ho, wo = x.shape[-2] // kh, x.shape[-1] // kw
        rows = x[..., 0:ho * kh:kh, :wo * kw]                                 # (..., ho, wo*kw)
        for a in range(1, kh):
            rows = rows + x[..., a:ho * kh:kh, :wo * kw]
        out = rows[..., 0::kw]                                                # (..., ho, wo)
        for b in range(1, kw):
            out = out + rows[..., b::kw]
        return out * (1.0 / (kh * kw))

    @staticmethod
    def backward(ctx, grad):
        return _BlockSpread.apply(grad, ctx.kh, ctx.kw, ctx.size), None, None


class _BlockSpread(torch.autograd.Function):
    """The adjoint of :class:`_BlockMean`: every output entry divided by the block size and
    copied to the entries of its block (zeros beyond the last whole block)."""

    @staticmethod
    def forward(ctx, grad, kh, kw, size):
        ctx.kh, ctx.kw = kh, kw
        *lead, ho, wo = grad.shape
        # Columns, then rows: two copies with a contiguous inner run, 2x faster than one 6-d expand.
        cols = (grad * (1.0 / (kh * kw)))[..., None].expand(*lead, ho, wo, kw).reshape(*lead, ho, wo * kw)
        spread = cols[..., None, :].expand(*lead, ho, kh, wo * kw).reshape(*lead, ho * kh, wo * kw)
        if (ho * kh, wo * kw) != tuple(size):
            spread = F.pad(spread, (0, size[1] - wo * kw, 0, size[0] - ho * kh))
        return spread

    @staticmethod
    def backward(ctx, grad):
        return _BlockMean.apply(grad, ctx.kh, ctx.kw), None, None, None


def _avg_pool2d_blocks(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                       divisor_override=None):
    """``F.avg_pool2d`` (same signature and values, to float32 rounding) by :class:`_BlockMean`
    when the pooling is in non-overlapping blocks without padding, else ``F.avg_pool2d`` itself."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
    stride = (kh, kw) if stride is None or stride == [] else stride
    sh, sw = (stride, stride) if isinstance(stride, int) else tuple(stride)
    pads = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if (sh, sw) == (kh, kw) and pads == (0, 0) and not ceil_mode and divisor_override is None and input.dim() >= 3:
        return _BlockMean.apply(input, kh, kw)
    return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


class _ReLU(torch.autograd.Function):
    """``F.relu`` whose backward is :class:`_ReLUGradient`. PyTorch's ReLU backward
    (``threshold_backward``) returns, in a double backward, a tensor of zeros for its dependence on
    the activation, which is filled and then added to that activation's gradient: two passes over
    the largest tensors of the step for nothing. Here that derivative is None (the mask is
    piecewise constant), and the rest is the same."""

    @staticmethod
    def forward(ctx, x):
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return _ReLUGradient.apply(grad, out)


class _ReLUGradient(torch.autograd.Function):
    r""":math:`\bar x = \bar y \, [y > 0]`: linear in :math:`\bar y` (its backward is the same
    mask), constant in y almost everywhere (None)."""

    @staticmethod
    def forward(ctx, grad, out):
        ctx.save_for_backward(out)
        return torch.ops.aten.threshold_backward(grad, out, 0)

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return _ReLUGradient.apply(grad, out), None


def _relu(input, inplace=False):
    """``F.relu`` (same signature; ``inplace`` is ignored: nothing here may be modified in place)."""
    return _ReLU.apply(input)


_FAST_FUNCTIONS = {F.avg_pool2d: _avg_pool2d_blocks, F.relu: _relu, torch.relu: _relu, F.group_norm: _group_norm}
"""Functions replaced inside the per-sample pass (:class:`_FastFunctionsMode`) by equivalents
whose double backward is cheaper: the same values to float32 rounding (bit for bit for ReLU)."""


class _FastFunctionsMode(TorchFunctionMode):
    """Within the block, the functions of :data:`_FAST_FUNCTIONS` (those of ``nn.AvgPool2d``,
    ``nn.ReLU`` and ``nn.GroupNorm``, and the same functions called directly, as in ResNet18_AP's
    blocks) go to their replacements; every other function runs unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return _FAST_FUNCTIONS.get(func, func)(*args, **(kwargs or {}))


# --------------------------------------------------------------------------------------------
# Closed-form per-sample gradients (the fast path)
# --------------------------------------------------------------------------------------------
_PER_SAMPLE_LAYERS = (nn.Linear, nn.Conv2d, nn.GroupNorm)
"""Module types whose weight gradient :func:`synset_cluster_gradients_per_sample` writes out in
closed form from the layer's input and the gradient at its output."""

_PER_SAMPLE_CONTAINERS = (Network, BasicBlockAP, nn.Sequential, nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid,
                          nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)
"""Parameter-free module types known to treat every sample of a batch on its own (matched by
exact type: a subclass may override ``forward``). Anything else, BatchNorm or a user's module
that might mix the samples of a batch, sends the objective to the generic vmap path."""


def per_sample_layers(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[nn.Module, str]] | None:
    """The layers of ``model`` whose parameters ``names`` (``functional_call`` names) are, as
    ``{name: (module, "weight" | "bias")}``; None when :func:`synset_cluster_gradients_per_sample`
    cannot take the model.

    It can when every module is of an exact type in ``_PER_SAMPLE_LAYERS`` or
    ``_PER_SAMPLE_CONTAINERS`` (so that the loss of every image depends on that image alone),
    no parameter is shared between modules, and every convolution is 2-d and ungrouped, with
    zero padding given as numbers (other padding modes pad before the input the hook records).
    The ConvNet, AlexNet and ResNet18_AP qualify; the ViT (attention, LayerNorm, its class token
    and position embedding) does not.
    """
    allowed = _PER_SAMPLE_LAYERS + _PER_SAMPLE_CONTAINERS
    for module in model.modules():
        if type(module) not in allowed:
            return None
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or module.padding_mode != "zeros"
                                              or isinstance(module.padding, str)):
            return None
    if len(list(model.named_parameters(remove_duplicate=False))) != len(dict(model.named_parameters())):
        return None
    layers: dict[str, tuple[nn.Module, str]] = {}
    for prefix, module in model.named_modules():
        for role, _ in module.named_parameters(recurse=False):
            layers[f"{prefix}.{role}" if prefix else role] = (module, role)
    if any(name not in layers for name in names):
        return None
    return {name: layers[name] for name in names}


class _GroupedConvWeightGradient(torch.autograd.Function):
    r"""The weight gradient of a grouped convolution, :math:`\nabla_W = \sum_j \sum_p \bar y_{j,p}
    u_{j,p}^\top` group by group (``torch.nn.grad.conv2d_weight``), with a backward that treats a
    one-channel input apart.

    The backward is PyTorch's own (:math:`\partial/\partial x` a transposed convolution of
    :math:`\bar y` with the incoming weight gradient, :math:`\partial/\partial\bar y` a
    convolution of x with it), except that for one input channel per group (the first layer on
    grey-scale images) the convolution is a batched matmul of the unfolded input: oneDNN's
    grouped kernel for that shape was 5x slower (3.4 against 0.6 ms for 32 clusters at 28 px).
    """

    @staticmethod
    def forward(ctx, x, grad_out, weight_shape, stride, padding, dilation, groups):
        ctx.save_for_backward(x, grad_out)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.weight_shape = weight_shape
        return torch.nn.grad.conv2d_weight(x, weight_shape, grad_out, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_weight):
        x, grad_out = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        d_x = d_grad_out = None
        if ctx.needs_input_grad[0]:
            d_x = torch.nn.grad.conv2d_input(x.shape, d_weight, grad_out, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            out_total, in_channels, kh, kw = ctx.weight_shape
            if in_channels == 1:
                patches = F.unfold(x, (kh, kw), dilation, padding, stride)        # (B, G*kh*kw, P)
                patches = patches.reshape(x.shape[0], groups, kh * kw, -1)       # (B, G, kh*kw, P)
                out = torch.matmul(d_weight.reshape(groups, out_total // groups, kh * kw), patches)
                d_grad_out = out.reshape(grad_out.shape)                         # (B, G*O, Ho, Wo)
            else:
                d_grad_out = F.conv2d(x, d_weight, None, stride, padding, dilation, groups)
        return d_x, d_grad_out, None, None, None, None, None


def _conv2d_cluster_weight_gradient(module: nn.Conv2d, inputs: torch.Tensor, grad_out: torch.Tensor,
                                    num_clusters: int) -> torch.Tensor:
    r""":math:`\nabla_W = \sum_{n \in k} \sum_p \bar y_{n,p} u_{n,p}^\top` of a convolution for every
    cluster k at once: (K, O, C, kh, kw).

    The clusters become the groups of one grouped convolution (the K clusters' channels side by
    side, the ipc images of a cluster its batch), whose weight gradient is then the K clusters'
    gradients stacked (:class:`_GroupedConvWeightGradient`). On the CPU this was 3-5x faster,
    backward included, than unfolding the input into patches and a batched matmul (oneDNN's
    kernel against MKL's small batched GEMMs, ConvNet w32 at K = 100).
    """
    K = num_clusters
    ipc = inputs.shape[0] // K
    # (K*ipc, C, H, W) -> (ipc, K*C, H, W): image j of every cluster in batch row j.
    x = inputs.reshape(K, ipc, *inputs.shape[1:]).transpose(0, 1).reshape(ipc, -1, *inputs.shape[2:])
    g = grad_out.reshape(K, ipc, *grad_out.shape[1:]).transpose(0, 1).reshape(ipc, -1, *grad_out.shape[2:])
    out_channels, in_channels, kh, kw = module.weight.shape
    weight = _GroupedConvWeightGradient.apply(x, g, (K * out_channels, in_channels, kh, kw), module.stride,
                                              module.padding, module.dilation, K)
    return weight.reshape(K, out_channels, in_channels, kh, kw)


def _layer_weight_gradient(module: nn.Module, role: str, inputs: torch.Tensor, grad_out: torch.Tensor,
                           num_clusters: int) -> torch.Tensor:
    r"""The gradient of :math:`\sum_n \ell_n` with respect to one parameter of one layer, summed
    within each cluster of consecutive samples: (K, *parameter shape).

    ``inputs`` (N, ...) is what the layer received and ``grad_out`` (N, ...) the gradient at its
    output, N = K * ipc. With the output :math:`y = W x + b` (position by position for a
    convolution, whose input is unfolded into the patches :math:`u_p`):

    .. math:: \nabla_W = \sum_{n \in k} \sum_p \bar y_{n,p} \, u_{n,p}^\top, \qquad
              \nabla_b = \sum_{n \in k} \sum_p \bar y_{n,p},

    and for GroupNorm, :math:`y = \gamma \hat x + \beta`: :math:`\nabla_\gamma = \sum \bar y \odot
    \hat x`, :math:`\nabla_\beta = \sum \bar y` over the cluster's samples and positions.
    """
    K = num_clusters
    n = grad_out.shape[0]
    if isinstance(module, nn.GroupNorm):
        reduce = tuple(range(2, grad_out.dim()))
        if role == "bias":
            per_sample = grad_out.sum(reduce) if reduce else grad_out
        else:
            x_hat = F.group_norm(inputs, module.num_groups, None, None, module.eps)
            per_sample = (grad_out * x_hat).sum(reduce) if reduce else grad_out * x_hat
        return per_sample.reshape(K, n // K, -1).sum(1)                       # (K, C)
    if isinstance(module, nn.Conv2d):
        if role == "bias":
            return grad_out.sum((2, 3)).reshape(K, n // K, -1).sum(1)         # (K, O)
        return _conv2d_cluster_weight_gradient(module, inputs, grad_out, K)
    # nn.Linear on (N, ..., in): every leading position is a sample's row.
    g = grad_out.reshape(K, -1, grad_out.shape[-1])                           # (K, ipc*T, out)
    if role == "bias":
        return g.sum(1)                                                       # (K, out)
    x = inputs.reshape(K, -1, inputs.shape[-1])                               # (K, ipc*T, in)
    return torch.bmm(g.transpose(1, 2), x)                                    # (K, out, in)


def synset_cluster_gradients_per_sample(model: nn.Module, params: Params, syn_images: torch.Tensor,
                                        syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                                        num_clusters: int, names: Sequence[str] | None = None
                                        ) -> dict[str, torch.Tensor] | None:
    r""":math:`\nabla_\theta \mathcal L(\theta, \mathcal S_k)` for all k from one batched forward
    and one batched backward, kept differentiable with respect to the synthetic images and soft
    labels: (K, *shape), the same tensors as :func:`synset_cluster_gradients`; None when
    :func:`per_sample_layers` rejects the model (the caller falls back to the vmap path).

    The loss of every image depends on that image alone (no BatchNorm: the norm layers are per
    image), so the gradient of :math:`\sum_k \mathcal L(\theta, \mathcal S_k)` with respect to a
    layer's output holds, row by row, the gradient of each image's own loss (divided by ipc, as
    :math:`\mathcal L(\theta, \mathcal S_k)` is the mean over the cluster's ipc images). Each
    weight gradient is then a batched product of that with the layer's input
    (:func:`_layer_weight_gradient`), summed within the cluster. This replaces vmap's K small
    double backwards by one larger one, and pooling, ReLU and GroupNorm are swapped for
    equivalents with a cheaper double backward (:class:`_FastFunctionsMode`): at K = 100 a step
    of the benchmark's ConvNet was 1.4-1.6x faster than with vmap (``benchmarks/bench_distill.py``).
    """
    names = list(params) if names is None else list(names)
    layers = per_sample_layers(model, names)
    if layers is None:
        return None
    ipc = len(syn_images) // num_clusters
    differentiable = syn_images.requires_grad or (label_logits is not None and label_logits.requires_grad)
    if not differentiable:   # the layers' outputs must still carry a graph for autograd.grad to reach
        syn_images = syn_images.detach().requires_grad_(True)
    modules = {id(module): module for module, _ in layers.values()}
    records: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {key: [] for key in modules}

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        records[id(module)].append((args[0], output))

    handles = [module.register_forward_hook(record) for module in modules.values()]
    try:
        with torch.enable_grad(), _FastFunctionsMode():
            logits = functional_call(model, {k: v.detach() for k, v in params.items()}, (syn_images,))
    finally:
        for handle in handles:
            handle.remove()
    with torch.enable_grad():
        if label_logits is None:
            total = F.cross_entropy(logits, syn_labels, reduction="sum") / ipc
        else:
            total = soft_cross_entropy(logits, label_logits, reduction="none").sum() / ipc
        calls = [(key, i) for key, calls in records.items() for i in range(len(calls))]
        outputs = [records[key][i][1] for key, i in calls]
        grads = torch.autograd.grad(total, outputs, create_graph=differentiable, allow_unused=True)
        grad_at = {call: (torch.zeros_like(out) if g is None else g) for call, out, g in zip(calls, outputs, grads)}
        out: dict[str, torch.Tensor] = {}
        for name, (module, role) in layers.items():
            key = id(module)
            parts = [_layer_weight_gradient(module, role, records[key][i][0], grad_at[(key, i)], num_clusters)
                     for i in range(len(records[key]))]   # a module called twice: its gradients add
            if not parts:
                out[name] = torch.zeros(num_clusters, *params[name].shape, dtype=syn_images.dtype,
                                        device=syn_images.device)
                continue
            out[name] = parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
    if not differentiable:
        out = {k: v.detach() for k, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------
# Checkpoint pairing
# --------------------------------------------------------------------------------------------
def checkpoint_pairs(epochs: int, method: str, pairing: str, step_length: int) -> list[tuple[int, int]]:
    r"""Every admissible (real checkpoint t, synset checkpoint) pair.

    - reverse, ``eq6``: :math:`(t, \tau - t)` for :math:`0 \le t < \tau` (Eq. 5-6);
    - reverse, ``alg1``: :math:`(t, t + s)` for :math:`t + s < \tau` (Algorithm 1 as printed);
    - match: :math:`(t, t)` for :math:`0 \le t < \tau` (plain gradient matching);
    - displacement: :math:`(\tau, \tau)` only (see :func:`displacement_target`).
    """
    if method == "match":
        return [(t, t) for t in range(epochs)]
    if method == "displacement":      # one target, the whole trajectory's; the synset at theta_tau
        return [(epochs, epochs)]
    if method != "reverse":
        raise ValueError(f"unknown distillation method {method!r}; choose 'reverse', 'match' or 'displacement'")
    if pairing == "eq6":
        return [(t, epochs - t) for t in range(epochs)]
    if pairing == "alg1":
        pairs = [(t, t + step_length) for t in range(epochs) if t + step_length < epochs]
        if not pairs:
            raise ValueError(f"Algorithm 1 needs t + s < tau: step length {step_length} leaves no pair "
                             f"within {epochs} epochs; lower distill.step_length or train longer")
        return pairs
    raise ValueError(f"unknown checkpoint pairing {pairing!r}; choose 'eq6' or 'alg1'")


# --------------------------------------------------------------------------------------------
# The objective and the distillation loop
# --------------------------------------------------------------------------------------------
OBJECTIVE_PATHS = ("auto", "per_sample", "vmap", "looped")
"""How :func:`matching_objective` takes the K synset gradients: ``per_sample`` (closed-form
per-sample gradients from one batched pass, :func:`synset_cluster_gradients_per_sample`),
``vmap`` (torch.func over the clusters, :func:`synset_cluster_gradients`), ``looped`` (the
slow reference, :func:`synset_cluster_gradients_looped`); ``auto``: per_sample when the model
allows it (:func:`per_sample_layers`), else vmap."""


def matching_objective(model: nn.Module, real_params: Params, syn_params: Params,
                       real_grads: dict[str, torch.Tensor], syn_images: torch.Tensor,
                       syn_labels: torch.Tensor, label_logits: torch.Tensor | None,
                       num_clusters: int, distance: str, reverse: bool,
                       vectorised: bool = True, chunk_images: int | None = VMAP_CHUNK_IMAGES,
                       path: str | None = None,
                       per_sample_chunk_images: int | None = PER_SAMPLE_CHUNK_IMAGES) -> torch.Tensor:
    r"""One term of Eq. 6 summed over clusters:

    .. math:: \sum_\kappa \mathrm{Dist}\big(\nabla\mathcal L(\theta', \mathcal S_\kappa),\
              \mp\nabla\mathcal L(\theta_t, \mathcal D_\kappa)\big)

    with the minus sign for reverse matching (DDM) and the plus sign for plain matching.
    ``real_grads`` are the detached cluster gradients at ``real_params`` (theta_t).

    ``path`` (one of :data:`OBJECTIVE_PATHS`) chooses how the K synset gradients are taken. The
    default, ``auto``, is the fastest one the model allows: closed-form per-sample gradients from
    one batched pass per chunk of :data:`PER_SAMPLE_CHUNK_IMAGES` images
    (``per_sample_chunk_images``; None: one pass) for networks of convolutions, linear and norm
    layers (ConvNet, AlexNet, ResNet18_AP), and the torch.func vmap pass otherwise (the ViT, a
    user's module; ``chunk_images``: its chunks, see :func:`synset_cluster_gradients`). The
    distances are taken with ``vmap`` over clusters. ``vectorised=False`` is shorthand for
    ``path="looped"``, the slow reference kept beside them: a Python loop of K small
    double-backward graphs. All paths give the same objective and gradients to float32 rounding
    (tested). ``benchmarks/bench_distill.py`` times them: on a 2-core CPU with the ConvNet w32,
    the per-sample step was 2.8-3.8x faster than the loop at K = 100 and 4-5x at K = 1,000, the
    vmap step 1.7-2.7x and 2.6-3.3x, the lower figures when other processes loaded the machine
    (the loop works in cache and barely notices them; the batched paths are memory-bound).
    """
    del real_params  # the real gradients were taken there; kept for a readable call site
    path = ("auto" if vectorised else "looped") if path is None else path
    if path not in OBJECTIVE_PATHS:
        raise ValueError(f"unknown objective path {path!r}; choose one of {list(OBJECTIVE_PATHS)}")
    dist = get_distance(distance)
    names = compared_parameters(distance, syn_params)
    sign = -1.0 if reverse else 1.0
    if path == "looped":
        per_cluster = synset_cluster_gradients_looped(model, syn_params, syn_images, syn_labels, label_logits,
                                                      num_clusters, names)
        total = torch.zeros((), dtype=syn_images.dtype, device=syn_images.device)
        for k, syn_grads in enumerate(per_cluster):
            total = total + dist(syn_grads, {n: sign * real_grads[n][k] for n in names})
        return total
    targets = {k: sign * real_grads[k] for k in names}
    per_sample = path != "vmap" and per_sample_layers(model, names) is not None
    if path == "per_sample" and not per_sample:
        raise ValueError(f"path 'per_sample' cannot take this model ({type(model).__name__}): a module of it "
                         f"is not one per_sample_layers knows; use path 'auto' (falls back to vmap) or 'vmap'")
    if not per_sample:
        syn_grads = synset_cluster_gradients(model, syn_params, syn_images, syn_labels, label_logits, num_clusters,
                                             names, chunk_images)
        return vmap(dist)(syn_grads, targets).sum()
    ipc = len(syn_images) // num_clusters
    step = num_clusters if per_sample_chunk_images is None else max(1, per_sample_chunk_images // max(1, ipc))
    total = torch.zeros((), dtype=syn_images.dtype, device=syn_images.device)
    for start in range(0, num_clusters, step):
        stop = min(num_clusters, start + step)
        rows = slice(start * ipc, stop * ipc)
        syn_grads = synset_cluster_gradients_per_sample(
            model, syn_params, syn_images[rows], syn_labels[rows],
            None if label_logits is None else label_logits[rows], stop - start, names)
        total = total + vmap(dist)(syn_grads, {k: v[start:stop] for k, v in targets.items()}).sum()
    return total


@dataclass
class Synset:
    """The distilled synthetic set: ``ipc`` images for each of the K clusters."""

    images: torch.Tensor              # (K*ipc, C, H, W), normalised like the training images
    labels: torch.Tensor              # (K*ipc,) int64 hard labels (the cluster's class)
    cluster: torch.Tensor             # (K*ipc,) int64 cluster of every synthetic image
    label_logits: torch.Tensor | None  # (K*ipc, L) learnable soft labels (our extension) or None
    initial_images: torch.Tensor      # (K*ipc, C, H, W) the real images it started from
    initial_sources: torch.Tensor     # (K*ipc,) training indices of those real images
    loss_history: list[float] = field(default_factory=list)
    method: str = "reverse"
    pairing: str = "alg1"
    final_layer_cosines: dict[str, float] = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        return len(self.images) // (int(self.cluster.max()) + 1)

    def targets(self) -> torch.Tensor:
        """Soft targets (K*ipc, L) if learnt, else None-equivalent hard labels."""
        return self.label_logits if self.label_logits is not None else self.labels


def initial_synset(images: torch.Tensor, clustering: Clustering, ipc: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random real images of every cluster (ipc each, seeded): the synset's starting point."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for k in range(clustering.num_clusters):
        members = clustering.members(k)
        if len(members) < ipc:
            raise ValueError(f"cluster {k} has {len(members)} images, fewer than ipc={ipc}; lower distill.ipc")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:ipc]])
    sources = torch.cat(chosen)
    return images[sources].clone(), sources


def displacement_target(model: nn.Module, checkpoints: list[Params], images: torch.Tensor, labels: torch.Tensor,
                        clustering: Clustering, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    r"""OUR ABLATION, not the paper's: what cluster k did to the whole trajectory, as one target.

    SGD moved the weights by :math:`-\frac{\eta}{B}\sum_{i\in\mathcal D_k}\nabla\ell_i(\theta_t)
    \approx -\frac{\eta |\mathcal D_k|}{B}\, g_k(\theta_t)` per epoch on account of cluster k
    (:math:`g_k` its mean gradient), so training without it ends near
    :math:`\theta_\tau + \frac{\eta |\mathcal D_k|}{B}\sum_{t<\tau} g_k(\theta_t)`. A fine-tune of T
    steps at rate :math:`\eta'` on the synset gets there when
    :math:`\nabla\mathcal L(\theta_\tau, \mathcal S_k) = -\frac{\eta|\mathcal D_k|}{B\,\eta' T}
    \sum_{t<\tau} g_k(\theta_t)`. Returns :math:`s_k \sum_{t<\tau} g_k(\theta_t)` per parameter, (K, *shape),
    with ``scale`` :math:`s_k` (K,) (the matching negates it, as reverse matching does)."""
    total: dict[str, torch.Tensor] | None = None
    for params in checkpoints[:-1]:
        g = cluster_gradients(model, params, images, labels, clustering)
        total = g if total is None else {k: total[k] + g[k] for k in total}
    assert total is not None
    return {k: v * scale.to(v).reshape(-1, *([1] * (v.dim() - 1))) for k, v in total.items()}


def distill_synset(model: nn.Module, trajectory: Trajectory, images: torch.Tensor, labels: torch.Tensor,
                   clustering: Clustering, num_classes: int, config: DistillConfig,
                   checkpoint_path=None, progress: bool = True, stop_after: int | None = None,
                   device: str = "cpu", displacement_scale: torch.Tensor | None = None,
                   real_loss: BatchLoss | None = None) -> Synset:
    """Algorithm 1 (offline stage): distil one synthetic set per cluster.

    ``real_loss`` (None: the cross-entropy) is the training loss whose cluster gradients the synset
    matches, as :func:`cluster_gradients` takes it: the trajectory's own loss when that was not the
    cross-entropy (the knowledge-distillation student of Supp. Eq. 15). The synset's own loss stays
    the cross-entropy on its hard (or soft) labels, the loss the fine-tune of Eq. 9 uses.

    ``config.method == "displacement"`` (our ablation) matches the synset's gradient at
    theta_tau to :func:`displacement_target` with ``displacement_scale`` (K,) (default 1).

    ``checkpoint_path`` makes the run resumable: the state is saved every
    ``config.checkpoint_every`` steps and picked up again by a later call with the same
    configuration (the file I/O is the store's :func:`~ddm.store.save_checkpoint` and
    :func:`~ddm.store.load_checkpoint`). ``stop_after`` ends the loop early (used to test resumption).
    """
    if real_loss is not None and config.method == "displacement":
        raise ValueError("the displacement ablation matches cross-entropy gradients only; real_loss is not "
                         "supported there (use method 'reverse' or 'match')")
    reverse = config.method in ("reverse", "displacement")
    pairs = checkpoint_pairs(trajectory.epochs, config.method, config.pairing, config.step_length)
    K = clustering.num_clusters
    images, labels = images.to(device), labels.to(device)
    init_images, sources = initial_synset(images.cpu(), clustering, config.ipc, config.seed)
    syn = init_images.clone().to(device).requires_grad_(True)
    syn_labels = clustering.cluster_class.repeat_interleave(config.ipc).to(device)
    cluster_of = torch.arange(K).repeat_interleave(config.ipc)
    variables = [syn]
    label_logits = None
    if config.soft_labels:
        # Start from a confident one-hot so step 0 equals the hard-label objective.
        label_logits = (F.one_hot(syn_labels, num_classes).float() * 5.0).requires_grad_(True)
    optimiser = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum_img)
    label_optimiser = (torch.optim.SGD([label_logits], lr=config.lr_label, momentum=0.5)
                       if label_logits is not None else None)
    generator = torch.Generator().manual_seed(config.seed + 1)
    history: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint_path, "distillation")   # None when there is none
    if state is not None:
        with torch.no_grad():
            syn.copy_(state["syn"])
            if label_logits is not None:
                label_logits.copy_(state["label_logits"])
        optimiser.load_state_dict(state["optimiser"])
        if label_optimiser is not None:
            label_optimiser.load_state_dict(state["label_optimiser"])
        generator.set_state(state["generator"])
        history, start = state["history"], state["step"]
        log.info("resuming distillation at step %d from %s", start, checkpoint_path)

    checkpoints = [{k: v.to(device) for k, v in c.items()} for c in trajectory.checkpoints]
    cache: dict[int, dict[str, torch.Tensor]] = {}
    cacheable = config.real_batch == 0

    if config.method == "displacement":
        scale = torch.ones(K) if displacement_scale is None else displacement_scale
        cache[trajectory.epochs] = displacement_target(model, checkpoints, images, labels, clustering, scale)
        cacheable = True

    def real_grads_at(t: int) -> dict[str, torch.Tensor]:
        if cacheable and t in cache:
            return cache[t]
        g = cluster_gradients(model, checkpoints[t], images, labels, clustering, config.real_batch, generator,
                              loss=real_loss)
        if cacheable:
            cache[t] = g
        return g

    end = config.steps if stop_after is None else min(config.steps, stop_after)
    for step in tqdm(range(start, end), desc=f"distil ({config.method}/{config.pairing})",
                     disable=not progress, initial=start, total=config.steps):
        t_real, t_syn = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        objective = matching_objective(model, checkpoints[t_real], checkpoints[t_syn], real_grads_at(t_real),
                                       syn, syn_labels, label_logits, K, config.distance, reverse)
        optimiser.zero_grad(set_to_none=True)
        if label_optimiser is not None:
            label_optimiser.zero_grad(set_to_none=True)
        objective.backward()
        optimiser.step()
        if label_optimiser is not None:
            label_optimiser.step()
        history.append(float(objective.detach()) / K)
        done = step + 1
        if checkpoint_path is not None and (done % config.checkpoint_every == 0 or done == end):
            save_checkpoint({"syn": syn.detach().cpu(), "step": done, "history": history,
                             "label_logits": None if label_logits is None else label_logits.detach().cpu(),
                             "optimiser": optimiser.state_dict(),
                             "label_optimiser": None if label_optimiser is None else label_optimiser.state_dict(),
                             "generator": generator.get_state()}, checkpoint_path)
    # The layer cosines report each pair's reversed real gradient; the displacement target is no
    # such gradient, so that variant reports none.
    cosines = {} if config.method == "displacement" else mean_layer_cosines(
        model, trajectory, images, labels, clustering, syn.detach(), syn_labels,
        None if label_logits is None else label_logits.detach(), pairs, reverse, real_loss=real_loss)
    return Synset(images=syn.detach().cpu(), labels=syn_labels.cpu(), cluster=cluster_of,
                  label_logits=None if label_logits is None else label_logits.detach().cpu(),
                  initial_images=init_images, initial_sources=sources, loss_history=history,
                  method=config.method, pairing=config.pairing, final_layer_cosines=cosines)


def mean_layer_cosines(model: nn.Module, trajectory: Trajectory, images: torch.Tensor, labels: torch.Tensor,
                       clustering: Clustering, syn: torch.Tensor, syn_labels: torch.Tensor,
                       label_logits: torch.Tensor | None, pairs: list[tuple[int, int]],
                       reverse: bool, max_pairs: int = 4, real_loss: BatchLoss | None = None) -> dict[str, float]:
    """Per layer, the cosine between the synset gradient and its target (the reversed real
    gradient for DDM), averaged over clusters and a few checkpoint pairs. 1 = perfect match."""
    K = clustering.num_clusters
    chosen = pairs[:: max(1, len(pairs) // max_pairs)][:max_pairs]
    sums: dict[str, list[float]] = {}
    for t_real, t_syn in chosen:
        real = cluster_gradients(model, trajectory.checkpoints[t_real], images.cpu(), labels.cpu(), clustering,
                                 loss=real_loss)
        synth = synset_cluster_gradients(model, trajectory.checkpoints[t_syn], syn.cpu(), syn_labels.cpu(),
                                         None if label_logits is None else label_logits.cpu(), K)
        sign = -1.0 if reverse else 1.0
        for k in range(K):
            cos = layer_cosines({n: v[k] for n, v in synth.items()}, {n: sign * v[k] for n, v in real.items()})
            for name, value in cos.items():
                sums.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in sums.items()}
