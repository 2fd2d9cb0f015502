"""The per-sample path of the matching objective (ddm.matching): its building blocks and coverage.

The path takes the K synset gradients in closed form from one batched pass
(``synset_cluster_gradients_per_sample``) and, inside that pass, swaps average pooling, ReLU and
GroupNorm for equivalents whose double backward is cheaper. Each replacement is checked against
PyTorch's own function to second order in float64 (``gradgradcheck``, and the double backward
compared entry by entry); the per-sample gradients against the vmap path for every architecture
it takes; the fallback to vmap for models it cannot take. Its agreement with the looped
reference inside the objective is in ``test_matching.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddm.matching import (_avg_pool2d_blocks, _group_norm, _GroupedConvWeightGradient, _relu, matching_objective,
                          per_sample_layers, synset_cluster_gradients, synset_cluster_gradients_per_sample)
from ddm.models import make_model
from ddm.training import get_params

from fixtures_core import NUM_CLASSES, single_thread, tiny_model, tiny_trajectory  # noqa: F401


def _second_order(fn, inputs: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """d/d(inputs, v) of <d<fn(inputs), v>/d inputs, w>: the double backward the objective runs,
    for fixed random v and w (zeros where an input is unused)."""
    generator = torch.Generator().manual_seed(seed)
    out = fn(*inputs)
    v = torch.randn(out.shape, generator=generator, dtype=out.dtype).requires_grad_(True)
    first = torch.autograd.grad((out * v).sum(), inputs, create_graph=True)
    total = sum((g * torch.randn(g.shape, generator=generator, dtype=g.dtype)).sum() for g in first)
    second = torch.autograd.grad(total, [*inputs, v], allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(second, [*inputs, v])]


# --------------------------------------------------------------------------------------------
# Replacements with a cheap double backward
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("groups, channels, spatial", [(4, 4, (5, 5)), (2, 4, (3, 3)), (3, 6, (7,))],
                         ids=["instance-norm", "groups-of-2", "1d"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_group_norm_replacement_equals_pytorch_to_second_order(groups: int, channels: int, spatial: tuple,
                                                               affine: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, channels, *spatial, generator=generator, dtype=torch.float64).requires_grad_(True)
    inputs = [x]
    if affine:
        weight = (1 + torch.randn(channels, generator=generator, dtype=torch.float64)).requires_grad_(True)
        bias = torch.randn(channels, generator=generator, dtype=torch.float64).requires_grad_(True)
        inputs += [weight, bias]

    def ours(*args):
        return _group_norm(args[0], groups, *args[1:], eps=1e-5)

    def theirs(*args):
        return F.group_norm(args[0], groups, *args[1:], eps=1e-5)

    assert torch.allclose(ours(*inputs), theirs(*inputs), rtol=0, atol=1e-12)
    for a, b in zip(_second_order(ours, inputs), _second_order(theirs, inputs)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradgradcheck(ours, inputs)


@pytest.mark.parametrize("shape, args", [((2, 3, 8, 8), (2,)), ((2, 3, 9, 7), (2,)), ((2, 2, 9, 9), (3,)),
                                         ((2, 2, 8, 6), ((2, 3),)), ((3, 8, 8), (2,)), ((2, 2, 8, 8), (2, 1))],
                         ids=["2x2", "odd-size", "3x3", "2x3", "unbatched", "overlapping"])
def test_block_pooling_equals_avg_pool2d_to_second_order(shape: tuple, args: tuple) -> None:
    """Blocks (kernel = stride, no padding) by slices, including sizes that leave a remainder;
    anything else (``overlapping``: stride 1) is F.avg_pool2d itself."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_(True)
    assert torch.allclose(_avg_pool2d_blocks(x, *args), F.avg_pool2d(x, *args), rtol=0, atol=1e-14)
    ours = _second_order(lambda t: _avg_pool2d_blocks(t, *args), [x])
    theirs = _second_order(lambda t: F.avg_pool2d(t, *args), [x])
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda t: _avg_pool2d_blocks(t, *args), [x])


def test_relu_replacement_equals_relu_to_second_order() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64).requires_grad_(True)
    assert torch.equal(_relu(x), torch.relu(x))
    for a, b in zip(_second_order(_relu, [x]), _second_order(torch.relu, [x])):
        assert torch.equal(a, b)
    assert torch.autograd.gradgradcheck(_relu, [x])


@pytest.mark.parametrize("in_channels, stride, padding, dilation", [(1, 1, 3, 1), (1, 2, 1, 1), (3, 1, 1, 2)],
                         ids=["one-channel", "one-channel-strided", "three-channels-dilated"])
def test_grouped_conv_weight_gradient_equals_pytorch_with_its_backward(in_channels: int, stride: int, padding: int,
                                                                        dilation: int) -> None:
    """The grouped weight gradient (a batch of 2 images, 3 groups = clusters) and its backward,
    whose one-input-channel case is an unfolded matmul instead of a grouped convolution."""
    generator = torch.Generator().manual_seed(4)
    groups, out_channels, size = 3, 4, 7
    x = torch.randn(2, groups * in_channels, size, size, generator=generator, dtype=torch.float64)
    out_size = (size + 2 * padding - dilation * 2 - 1) // stride + 1
    g = torch.randn(2, groups * out_channels, out_size, out_size, generator=generator, dtype=torch.float64)
    shape = (groups * out_channels, in_channels, 3, 3)

    def ours(x, g):
        return _GroupedConvWeightGradient.apply(x, g, shape, (stride,) * 2, (padding,) * 2, (dilation,) * 2, groups)

    def theirs(x, g):
        return torch.nn.grad.conv2d_weight(x, shape, g, stride, padding, dilation, groups)

    inputs = [x.requires_grad_(True), g.requires_grad_(True)]
    assert torch.allclose(ours(*inputs), theirs(*inputs), rtol=0, atol=1e-12)
    w = torch.randn(shape, generator=generator, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((ours(*inputs) * w).sum(), inputs),
                    torch.autograd.grad((theirs(*inputs) * w).sum(), inputs)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(ours, inputs)


# --------------------------------------------------------------------------------------------
# Per-sample gradients: coverage and fallback
# --------------------------------------------------------------------------------------------
def _random_setup(arch: str, K: int, ipc: int, soft: bool, dtype=torch.float64):
    model = make_model(arch, 1, NUM_CLASSES, 8, width=8, depth=2, seed=0).to(dtype)
    generator = torch.Generator().manual_seed(5)
    params = {k: v.detach() + 0.05 * torch.randn(v.shape, generator=generator, dtype=dtype)
              for k, v in get_params(model).items()}
    images = torch.randn(K * ipc, 1, 8, 8, generator=generator, dtype=dtype).requires_grad_(True)
    labels = (torch.arange(K) % NUM_CLASSES).repeat_interleave(ipc)
    logits = torch.randn(K * ipc, NUM_CLASSES, generator=generator, dtype=dtype).requires_grad_(True) if soft else None
    return model, params, images, labels, logits


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("ipc", [1, 2])
@pytest.mark.parametrize("arch", ["convnet", "alexnet", "resnet18_ap"])
def test_per_sample_gradients_equal_vmap_for_every_architecture_they_take(arch: str, ipc: int, soft: bool) -> None:
    """All parameters (biases and norm scales too), in float64, and the gradient of a random
    functional of them with respect to the images and soft labels (the double backward)."""
    K = 3
    model, params, images, labels, logits = _random_setup(arch, K, ipc, soft)
    assert per_sample_layers(model, list(params)) is not None
    got = synset_cluster_gradients_per_sample(model, params, images, labels, logits, K)
    ref = synset_cluster_gradients(model, params, images, labels, logits, K)
    assert list(got) == list(ref) == list(params)
    generator = torch.Generator().manual_seed(6)
    weights = {k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in ref.items()}
    leaves = [images] + ([] if logits is None else [logits])
    outer = [torch.autograd.grad(sum((g[k] * weights[k]).sum() for k in g), leaves) for g in (got, ref)]
    scale = max(float(v.detach().abs().max()) for v in ref.values())   # a conv bias before a norm: ~1e-17 noise
    for name in ref:
        assert got[name].shape == (K, *params[name].shape)
        assert torch.allclose(got[name], ref[name], rtol=1e-9, atol=1e-9 * scale), name
    for a, b in zip(*outer):
        assert float(b.abs().max()) > 0
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.detach().abs().max()))


def test_per_sample_gradients_of_constant_images_are_detached_and_equal() -> None:
    """Images that need no gradient (as in the final layer cosines) give plain tensors."""
    model, params, images, labels, _ = _random_setup("convnet", 3, 1, False)
    images = images.detach()
    got = synset_cluster_gradients_per_sample(model, params, images, labels, None, 3)
    ref = synset_cluster_gradients(model, params, images, labels, None, 3)
    for name in ref:
        assert not got[name].requires_grad
        assert torch.allclose(got[name], ref[name], rtol=1e-9, atol=1e-12), name


def test_per_sample_chunks_change_no_number() -> None:
    K, ipc = 5, 2
    model, params, images, labels, logits = _random_setup("convnet", K, ipc, True, dtype=torch.float32)
    real = {k: torch.randn(K, *v.shape, generator=torch.Generator().manual_seed(8)) for k, v in params.items()}

    def objective(chunk):
        return matching_objective(model, params, params, real, images, labels, logits, K, "layerwise_cosine",
                                  reverse=True, path="per_sample", per_sample_chunk_images=chunk)

    whole = objective(None)
    for chunk in (1, 2, 4, 7, 100):    # 1 image with ipc 2: one cluster per pass
        assert torch.allclose(objective(chunk), whole, rtol=1e-6), chunk


class _BatchMixing(nn.Module):
    """A parameter-free module the per-sample path does not know (it mixes the batch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(0, keepdim=True)


class _Block(nn.Sequential):
    """A subclass of a known container: it might override forward, so it is not trusted."""


def _unsupported_models() -> dict[str, nn.Module]:
    def convnet_with(module: nn.Module) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), module, nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))

    return {"vit": make_model("vit", 1, NUM_CLASSES, 8, width=8, seed=0),
            "batchnorm": convnet_with(nn.BatchNorm2d(4)),
            "batch-mixing": convnet_with(_BatchMixing()),
            "subclassed-container": convnet_with(_Block(nn.Identity())),
            "reflect-padding": nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                                             nn.Linear(256, 10)),
            "grouped-conv": nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                                          nn.Flatten(), nn.Linear(256, 10)),
            "shared-weights": (lambda lin: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), lin, nn.ReLU(), lin,
                                                         nn.Linear(64, 10)))(nn.Linear(64, 64))}


@pytest.mark.parametrize("name", list(_unsupported_models()))
def test_auto_falls_back_to_vmap_for_models_the_per_sample_path_cannot_take(name: str) -> None:
    model = _unsupported_models()[name].eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert per_sample_layers(model, list(params)) is None
    K = 2
    generator = torch.Generator().manual_seed(9)
    images = torch.randn(K, 1, 8, 8, generator=generator)
    labels = torch.tensor([1, 2])
    real = {k: torch.randn(K, *v.shape, generator=generator) for k, v in params.items()}
    assert synset_cluster_gradients_per_sample(model, params, images, labels, None, K) is None
    if name != "batchnorm":       # vmap cannot take BatchNorm either (nor can the loop tell it apart)
        auto = matching_objective(model, params, params, real, images, labels, None, K, "mse", reverse=True)
        vmapped = matching_objective(model, params, params, real, images, labels, None, K, "mse", reverse=True,
                                     path="vmap")
        assert torch.equal(auto, vmapped)
    with pytest.raises(ValueError, match="path 'per_sample' cannot take this model"):
        matching_objective(model, params, params, real, images, labels, None, K, "mse", reverse=True,
                           path="per_sample")


def test_matching_objective_rejects_an_unknown_path() -> None:
    params = tiny_trajectory().checkpoints[1]
    real = {k: v.unsqueeze(0) for k, v in params.items()}
    with pytest.raises(ValueError, match="unknown objective path 'fast'"):
        matching_objective(tiny_model(), params, params, real, torch.zeros(1, 1, 8, 8), torch.tensor([0]), None, 1,
                           "mse", reverse=True, path="fast")
