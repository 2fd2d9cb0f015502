"""Networks: ConvNet, AlexNet, ResNet18_AP and a small ViT, with seeded initialisation.

The architectures follow the dataset-condensation code that the paper builds on
(VICO-UoE/DatasetCondensation, ``networks.py``), re-derived for any image size and made safe
for the function transforms DDM relies on:

- **no BatchNorm anywhere.** Reverse gradient matching (Sec. 3.2, Eq. 6) differentiates a
  distance between *gradients* with respect to the synthetic images (double backward), and the
  attribution code takes per-sample gradients with ``torch.func.vmap(torch.func.grad(...))``.
  BatchNorm mixes the samples of a batch and keeps running statistics as mutable buffers, which
  breaks both. Every norm layer is ``GroupNorm(c, c)`` (instance norm with an affine transform,
  DC's ``"instancenorm"``) or ``LayerNorm`` (ViT).
- **no in-place operations** (``ReLU(inplace=False)``, ``out = out + shortcut``), no dropout, no
  buffers: a model is a pure function of its parameters and input, as ``functional_call`` needs.

Every model is a :class:`Network`: ``model.features(x)`` maps images ``(N, C, H, W)`` to the
penultimate vector ``(N, F)`` and ``model.classifier`` is the final ``nn.Linear(F, classes)``;
``model(x) == model.classifier(model.features(x))``.

``width`` is the ConvNet's channel count. The other networks scale their channels in
proportion, so that the default ``width=128`` gives DC's networks exactly:
AlexNet ``(w, 3w/2, 2w, 3w/2, 3w/2)`` = (128, 192, 256, 192, 192), ResNet18_AP
``(w/2, w, 2w, 4w)`` = (64, 128, 256, 512), ViT embedding dimension ``w`` = 128. ``depth`` is the
ConvNet's number of blocks and is ignored by the others.

Models are constructed on the ``meta`` device and then filled by :func:`initialise` from a seeded
``torch.Generator``, so building a model never draws from (or advances) the global RNG.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from ddm.config import ModelConfig

ARCHITECTURES = ("convnet", "alexnet", "resnet18_ap", "vit")
INITIALISATIONS = ("kaiming", "normal", "xavier")

NORMAL_STD = 0.02
"""Standard deviation of the ``"normal"`` scheme, and of the ViT's class token and position
embedding under every scheme (the BERT/GPT/ViT convention)."""

VIT_DEPTH = 4
VIT_HEADS = 4
VIT_MLP_RATIO = 2


CUSTOM_PREFIX = "custom:"
"""``model.arch`` of a network passed in at run time (:class:`CustomModel`), e.g. ``custom:MyNet``."""


class ModelError(ValueError):
    """An unknown architecture or initialisation, an image size a network cannot take, or a
    network passed in that DDM cannot use (wrong output shape, batch-mixing layers)."""


class Network(nn.Module):
    """``features`` (images -> penultimate vector) followed by a linear ``classifier``.

    Args:
        features: module mapping ``(N, C, H, W)`` to ``(N, num_features)``.
        classifier: the final ``nn.Linear(num_features, num_classes)``.
        arch: name of the architecture, for ``repr`` and bookkeeping.
    """

    def __init__(self, features: nn.Module, classifier: nn.Linear, arch: str) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, num_classes)
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


def _norm(channels: int) -> nn.GroupNorm:
    """Instance norm with an affine transform: DC's ``"instancenorm"``, batch independent."""
    return nn.GroupNorm(channels, channels, affine=True)


def _pads_to_32(in_channels: int, image_size: int) -> bool:
    """DC's rule: a 1-channel 28x28 image (MNIST) gets extra padding in the first conv so that
    the first feature map is 32x32 and the rest of the network is the CIFAR one."""
    return in_channels == 1 and image_size == 28


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ModelError(f"{name} must be a positive integer, got {value!r}")


# ----------------------------------------------------------------------------------------------
# ConvNet
# ----------------------------------------------------------------------------------------------

def _convnet(in_channels: int, num_classes: int, image_size: int, width: int, depth: int) -> Network:
    """DC's ConvNet: ``depth`` x [Conv3x3(width) -> InstanceNorm -> ReLU -> AvgPool2], Linear.

    The first conv uses padding 3 for 1-channel 28x28 input (map 32x32), padding 1 otherwise.
    """
    size = image_size + 4 if _pads_to_32(in_channels, image_size) else image_size
    layers: list[nn.Module] = []
    channels = in_channels
    for d in range(depth):
        if size < 2:
            raise ModelError(
                f"convnet of depth {depth} on {image_size}x{image_size} images: the feature map is "
                f"{size}x{size} before pooling block {d + 1}; use depth <= {d} or larger images")
        padding = 3 if d == 0 and _pads_to_32(in_channels, image_size) else 1
        layers += [nn.Conv2d(channels, width, kernel_size=3, padding=padding), _norm(width),
                   nn.ReLU(inplace=False), nn.AvgPool2d(kernel_size=2, stride=2)]
        channels = width
        size //= 2
    layers.append(nn.Flatten())
    return Network(nn.Sequential(*layers), nn.Linear(width * size * size, num_classes), "convnet")


# ----------------------------------------------------------------------------------------------
# AlexNet
# ----------------------------------------------------------------------------------------------

def _alexnet(in_channels: int, num_classes: int, image_size: int, width: int) -> Network:
    """DC's small AlexNet (no norm layers, as in DC).

    Conv5x5(w, pad 4 for 1-channel 28 px else 2) -> ReLU -> MaxPool2 -> Conv5x5(3w/2) -> ReLU ->
    MaxPool2 -> Conv3x3(2w) -> ReLU -> Conv3x3(3w/2) -> ReLU -> Conv3x3(3w/2) -> ReLU -> MaxPool2,
    Linear. The map is 4x4 before the classifier for 28 and 32 px and 1x1 for 8 px, as in DC. A
    max-pool that would shrink a map below 1x1 (inputs under 8 px) is left out.
    """
    c1, c2, c3 = width, 3 * width // 2, 2 * width
    size = image_size + 4 if _pads_to_32(in_channels, image_size) else image_size
    first_padding = 4 if _pads_to_32(in_channels, image_size) else 2

    def pool() -> list[nn.Module]:
        nonlocal size
        if size < 2:
            return []
        size //= 2
        return [nn.MaxPool2d(kernel_size=2, stride=2)]

    layers: list[nn.Module] = [nn.Conv2d(in_channels, c1, kernel_size=5, padding=first_padding),
                               nn.ReLU(inplace=False)]
    layers += pool()
    layers += [nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=False)]
    layers += pool()
    layers += [nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=False),
               nn.Conv2d(c3, c2, kernel_size=3, padding=1), nn.ReLU(inplace=False),
               nn.Conv2d(c2, c2, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
    layers += pool()
    layers.append(nn.Flatten())
    return Network(nn.Sequential(*layers), nn.Linear(c2 * size * size, num_classes), "alexnet")


# ----------------------------------------------------------------------------------------------
# ResNet18_AP
# ----------------------------------------------------------------------------------------------

class BasicBlockAP(nn.Module):
    """ResNet basic block in which a stride-2 conv is a stride-1 conv followed by AvgPool2.

    ``x -> conv3x3 -> IN -> ReLU -> [AvgPool2] -> conv3x3 -> IN``, plus the shortcut
    (identity, or conv1x1 -> [AvgPool2] -> IN when the shape changes), then ReLU.
    """

    def __init__(self, in_planes: int, planes: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=False)
        self.norm1 = _norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.norm2 = _norm(planes)
        shortcut: list[nn.Module] = []
        if downsample or in_planes != planes:
            shortcut.append(nn.Conv2d(in_planes, planes, kernel_size=1, bias=False))
            if downsample:
                shortcut.append(nn.AvgPool2d(kernel_size=2, stride=2))
            shortcut.append(_norm(planes))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        if self.downsample:
            out = F.avg_pool2d(out, kernel_size=2, stride=2)
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _resnet18_ap(in_channels: int, num_classes: int, image_size: int, width: int) -> Network:
    """DC's ResNet18_AP: 3x3 stem (no max-pool), BasicBlockAP x [2, 2, 2, 2] with planes
    (w/2, w, 2w, 4w), instance norm, and (as in DC) the last map flattened into the classifier
    rather than globally pooled: 4x4 for 32 px, 3x3 for 28 px.

    Stages 2-4 each halve the map, except that a stage which would leave it below 2x2 keeps its
    size (instance norm of a 1x1 map is undefined): 8 px images give 8 -> 4 -> 2 -> 2.
    """
    if image_size < 2:
        raise ModelError(f"resnet18_ap needs images of at least 2x2 (instance norm); got {image_size}x{image_size}")
    planes = (width // 2, width, 2 * width, 4 * width)
    if planes[0] < 1:
        raise ModelError(f"resnet18_ap needs width >= 2 (its first stage has width/2 channels); got {width}")
    size = image_size
    layers: list[nn.Module] = [nn.Conv2d(in_channels, planes[0], kernel_size=3, padding=1, bias=False),
                               _norm(planes[0]), nn.ReLU(inplace=False)]
    in_planes = planes[0]
    for stage, p in enumerate(planes):
        downsample = stage > 0 and size // 2 >= 2
        size = size // 2 if downsample else size
        for block in range(2):
            layers.append(BasicBlockAP(in_planes, p, downsample=downsample and block == 0))
            in_planes = p
    layers.append(nn.Flatten())
    return Network(nn.Sequential(*layers), nn.Linear(in_planes * size * size, num_classes), "resnet18_ap")


# ----------------------------------------------------------------------------------------------
# ViT
# ----------------------------------------------------------------------------------------------

class Attention(nn.Module):
    """Multi-head self-attention written out with matmuls (no fused kernel, so that double
    backward and ``vmap`` work on every device)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, D) -> (N, T, D)
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (N, heads, T, D/heads)
        attn = torch.softmax(q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Patch embedding (conv, kernel = stride = patch), class token, learned position embedding,
    ``depth`` transformer blocks, final LayerNorm; returns the class token ``(N, dim)``."""

    def __init__(self, in_channels: int, image_size: int, patch: int, dim: int, depth: int,
                 heads: int, mlp_ratio: int) -> None:
        super().__init__()
        tokens = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, dim)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, T, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


def vit_patch_size(image_size: int) -> int:
    """Patch size of the ViT: 2 below 16 px (8 px -> 4x4 patches), 4 below 64 px (28 px -> 7x7,
    32 px -> 8x8), 8 from 64 px."""
    return 2 if image_size < 16 else 4 if image_size < 64 else 8


def _vit(in_channels: int, num_classes: int, image_size: int, width: int) -> Network:
    """A small ViT: embedding dimension ``width``, 4 blocks, 4 heads, MLP ratio 2, class token."""
    patch = vit_patch_size(image_size)
    if image_size % patch:
        raise ModelError(f"vit uses {patch}x{patch} patches for {image_size}x{image_size} images, "
                         f"which do not divide them; resize the images to a multiple of {patch}")
    if width % VIT_HEADS:
        raise ModelError(f"vit has {VIT_HEADS} heads, so width (its embedding dimension) must be a "
                         f"multiple of {VIT_HEADS}; got {width}")
    encoder = ViTEncoder(in_channels, image_size, patch, width, VIT_DEPTH, VIT_HEADS, VIT_MLP_RATIO)
    return Network(encoder, nn.Linear(width, num_classes), "vit")


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def make_model(arch: str, in_channels: int, num_classes: int, image_size: int,
               width: int = 128, depth: int = 3, *, init: str = "kaiming", seed: int = 0) -> Network:
    """Build a network for square ``image_size`` x ``image_size`` images, initialised by
    :func:`initialise` with ``init`` and ``seed``.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        in_channels: image channels (1 for MNIST, 3 for CIFAR).
        num_classes: outputs of the classifier.
        image_size: height = width of the images.
        width: ConvNet channels; the other networks scale with it (see the module docstring).
        depth: ConvNet blocks; ignored by the other networks.
        init: one of :data:`INITIALISATIONS`.
        seed: seed of the initialisation.

    Returns:
        a :class:`Network` on the CPU. The global RNG is neither read nor advanced.

    Raises:
        ModelError: unknown ``arch`` or ``init``, or an image size the network cannot take.
    """
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; choose one of {list(ARCHITECTURES)}")
    if init not in INITIALISATIONS:
        raise ModelError(f"unknown initialisation {init!r}; choose one of {list(INITIALISATIONS)}")
    _check_positive(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                    width=width, depth=depth)
    with torch.device("meta"):  # no memory, no RNG draws; initialise() fills the parameters
        if arch == "convnet":
            model = _convnet(in_channels, num_classes, image_size, width, depth)
        elif arch == "alexnet":
            model = _alexnet(in_channels, num_classes, image_size, width)
        elif arch == "resnet18_ap":
            model = _resnet18_ap(in_channels, num_classes, image_size, width)
        else:
            model = _vit(in_channels, num_classes, image_size, width)
    model = model.to_empty(device="cpu")
    return initialise(model, init, seed)


def initialise(model: nn.Module, scheme: str, seed: int) -> nn.Module:
    """Re-initialise ``model`` in place from ``torch.Generator().manual_seed(seed)``; return it.

    - conv and linear weights: ``"kaiming"`` = ``kaiming_normal_`` (fan_in, ReLU gain),
      std ``sqrt(2 / fan_in)``; ``"normal"`` = N(0, 0.02^2) (:data:`NORMAL_STD`);
      ``"xavier"`` = ``xavier_normal_``, std ``sqrt(2 / (fan_in + fan_out))``;
    - conv and linear biases: 0; norm layers (GroupNorm, LayerNorm): weight 1, bias 0;
    - any other parameter (the ViT's class token and position embedding): N(0, 0.02^2).

    Values are drawn on the CPU in ``model.named_parameters()`` order and copied into the
    parameters, so a seed gives the same network on every device and dtype (up to rounding).
    """
    if scheme not in INITIALISATIONS:
        raise ModelError(f"unknown initialisation {scheme!r}; choose one of {list(INITIALISATIONS)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    roles: dict[int, str] = {}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            roles[id(module.weight)] = "weight"
        elif isinstance(module, (nn.GroupNorm, nn.LayerNorm)):
            if module.weight is not None:
                roles[id(module.weight)] = "one"
        else:
            continue
        if getattr(module, "bias", None) is not None:
            roles[id(module.bias)] = "zero"
    with torch.no_grad():
        for _, param in model.named_parameters():
            role = roles.get(id(param), "embedding")
            value = torch.empty(param.shape, dtype=torch.float32)
            if role == "zero":
                value.zero_()
            elif role == "one":
                value.fill_(1.0)
            elif role == "embedding":
                nn.init.normal_(value, 0.0, NORMAL_STD, generator=generator)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(value, mode="fan_in", nonlinearity="relu", generator=generator)
            elif scheme == "normal":
                nn.init.normal_(value, 0.0, NORMAL_STD, generator=generator)
            else:
                nn.init.xavier_normal_(value, generator=generator)
            param.copy_(value)
    return model


# ----------------------------------------------------------------------------------------------
# A network of the reader's own
# ----------------------------------------------------------------------------------------------

# Layers that make a sample's output depend on the rest of its batch or on chance: per-sample
# gradients (vmap), the double backward of reverse matching and the exact retrains' bit-for-bit
# reproducibility all assume a pure function of (parameters, one image).
_REFUSED_LAYERS = {
    nn.modules.batchnorm._BatchNorm: "BatchNorm mixes the samples of a batch and keeps running statistics; "
                                      "use nn.GroupNorm(c, c) (instance norm) or nn.LayerNorm instead",
    nn.modules.dropout._DropoutNd: "dropout makes training random beyond the recorded seed; remove it",
}


@dataclass(frozen=True)
class CustomModel:
    """A network passed in at run time instead of one of :data:`ARCHITECTURES`.

    ``factory(in_channels, num_classes, image_size)`` returns a fresh ``nn.Module`` whose output
    is class logits ``(N, num_classes)``; an ``nn.Module`` given instead is copied (its input and
    output sizes are then the reader's business, checked by :func:`check_model`). theta_0 is drawn
    by :func:`initialise` from ``model.init`` and ``model.seed``, as for the built-in networks, so
    Figure 8's initialisations apply to it too.
    """

    name: str
    factory: Callable[[int, int, int], nn.Module]

    @property
    def arch(self) -> str:
        return CUSTOM_PREFIX + self.name

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        model = self.factory(in_channels, num_classes, image_size)
        if not isinstance(model, nn.Module):
            raise ModelError(f"the model factory {self.name!r} returned {type(model).__name__}, not an nn.Module; "
                             f"it must build the network: factory(in_channels, num_classes, image_size) -> nn.Module")
        return model


def as_custom_model(model: Any) -> CustomModel:
    """A :class:`CustomModel` from an ``nn.Module`` (copied per build), a factory callable, or
    ``"package.module:name"`` naming either (the papermill / command-line form)."""
    if isinstance(model, CustomModel):
        return model
    if isinstance(model, str):
        module_name, _, attribute = model.partition(":")
        if not module_name or not attribute:
            raise ModelError(f"model {model!r} is neither an architecture ({', '.join(ARCHITECTURES)}) nor "
                             f"'package.module:factory' naming a network of your own")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ModelError(f"cannot import model {model!r} ({error}); the module must be importable from the "
                             f"working directory or PYTHONPATH and define {attribute}") from error
        return as_custom_model(target)
    if isinstance(model, nn.Module):
        template = model
        return CustomModel(type(model).__name__, lambda *_: copy.deepcopy(template))
    if callable(model):
        return CustomModel(getattr(model, "__name__", type(model).__name__), model)
    raise ModelError(f"model must be an architecture name, 'package.module:factory', an nn.Module or a factory "
                     f"(in_channels, num_classes, image_size) -> nn.Module; got {type(model).__name__}")


def model_signature(model: nn.Module) -> str:
    """A short hash of a network's structure (its printout, parameter names and shapes, and the
    source of its classes where Python can find it): cached artifacts of a custom network are
    keyed by it, so editing the network never reuses what the old one produced."""
    parts = [repr(model)] + [f"{name}:{tuple(p.shape)}" for name, p in model.named_parameters()]
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        if cls.__module__.startswith("torch."):
            continue
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):   # defined interactively where the source is not kept
            parts.append(cls.__qualname__)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def check_model(model: nn.Module, images: torch.Tensor, num_classes: int) -> None:
    """Refuse, before any training, a network DDM cannot use: batch-mixing or random layers, no
    parameters, or an output that is not ``(N, num_classes)`` logits for ``images``."""
    name = type(model).__name__
    for module in model.modules():
        for layer, why in _REFUSED_LAYERS.items():
            if isinstance(module, layer):
                raise ModelError(f"{name} contains {type(module).__name__}: {why}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(f"{name} has no trainable parameters")
    try:
        with torch.no_grad():
            output = model(images)
    except Exception as error:   # any failure of the reader's forward is reported with the input shape
        raise ModelError(f"{name} cannot take this data set's images {tuple(images.shape[1:])} "
                         f"({type(error).__name__}: {error}); build it for in_channels={images.shape[1]}, "
                         f"image_size={images.shape[-1]}") from error
    expected = (len(images), num_classes)
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelError(f"{name} returns {shape} for {len(images)} images, but the data set has {num_classes} "
                         f"classes: its output must be logits of shape {expected} (make the last layer "
                         f"nn.Linear(..., {num_classes}))")


def build_model(config: ModelConfig, in_channels: int, num_classes: int, image_size: int,
                custom: CustomModel | None = None) -> nn.Module:
    """:func:`make_model` with the architecture, width, depth, init and seed of ``config``; or the
    network ``custom`` builds, initialised from ``config.init`` and ``config.seed``."""
    if custom is not None:
        return initialise(custom.build(in_channels, num_classes, image_size), config.init, config.seed)
    if config.arch.startswith(CUSTOM_PREFIX):
        raise ModelError(f"model.arch {config.arch!r} names a network passed in at run time; pass it again "
                         f"(model=... to Experiment.create or the chapter's model parameter)")
    return make_model(config.arch, in_channels, num_classes, image_size, width=config.width,
                      depth=config.depth, init=config.init, seed=config.seed)


def classifier_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The final linear layer and its name: ``classifier`` of a :class:`Network`, else the last
    ``nn.Linear`` the network registers (the usual place of the logits layer)."""
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        return "classifier", model.classifier
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no nn.Linear layer, so it has no penultimate features; "
                         f"end it with nn.Linear(features, num_classes)")
    return linears[-1]


def penultimate_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The vector before the final linear layer, shape ``(N, F)``: ``model.features(images)``
    for a :class:`Network`, else the input of :func:`classifier_layer` caught by a hook."""
    if isinstance(model, Network):
        return model.features(images)
    _, layer = classifier_layer(model)
    caught: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _module, inputs: caught.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return caught[-1].reshape(len(images), -1)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
