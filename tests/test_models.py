"""Tests of ddm.models: shapes, DC's layouts, seeded initialisation, torch.func compatibility."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ddm.config import ModelConfig
from ddm.models import (
    ARCHITECTURES,
    INITIALISATIONS,
    NORMAL_STD,
    ModelError,
    build_model,
    count_parameters,
    initialise,
    make_model,
    penultimate_features,
)

SHAPES = [(1, 28), (3, 32), (1, 8)]  # (channels, image size)
SMALL = 16  # test width: every network scales with it


def _images(channels: int, size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize(("channels", "size"), SHAPES)
def test_output_and_feature_shapes(arch: str, channels: int, size: int) -> None:
    model = make_model(arch, channels, 7, size, width=SMALL)
    x = _images(channels, size, n=3)
    logits = model(x)  # (3, 7)
    feats = penultimate_features(model, x)  # (3, F)
    assert logits.shape == (3, 7)
    assert feats.ndim == 2 and feats.shape[0] == 3
    assert feats.shape[1] == model.classifier.in_features
    torch.testing.assert_close(model.classifier(feats), logits)
    assert torch.isfinite(logits).all()


def test_dc_layouts_at_default_width() -> None:
    # DC's ConvNet (width 128, depth 3) on MNIST: 3 conv blocks and a 2048 -> 10 classifier.
    convnet = make_model("convnet", 1, 10, 28)
    expected = (1 * 128 * 9 + 128) + 2 * (128 * 128 * 9 + 128) + 3 * 2 * 128 + (2048 * 10 + 10)
    assert count_parameters(convnet) == expected == 317706
    assert make_model("alexnet", 1, 10, 28).classifier.in_features == 192 * 4 * 4
    assert make_model("alexnet", 3, 10, 32).classifier.in_features == 192 * 4 * 4
    assert make_model("resnet18_ap", 1, 10, 28).classifier.in_features == 512 * 3 * 3
    assert make_model("resnet18_ap", 3, 10, 32).classifier.in_features == 512 * 4 * 4


def test_convnet_pads_mnist_to_32() -> None:
    model = make_model("convnet", 1, 10, 28, width=SMALL, depth=3)
    maps = []
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    handle = first_conv.register_forward_hook(lambda _m, _i, out: maps.append(out.shape))
    feats = model.features(_images(1, 28))
    handle.remove()
    assert maps[0][-2:] == (32, 32)
    assert feats.shape[1] == SMALL * 4 * 4
    # 3-channel 32 px also ends 4x4; 8 px ends 2x2 at depth 2 and 1x1 at depth 3.
    assert make_model("convnet", 3, 10, 32, width=SMALL).classifier.in_features == SMALL * 16
    assert make_model("convnet", 1, 10, 8, width=SMALL, depth=2).classifier.in_features == SMALL * 4
    assert make_model("convnet", 1, 10, 8, width=SMALL, depth=3).classifier.in_features == SMALL


def test_convnet_too_deep_raises() -> None:
    with pytest.raises(ModelError, match="depth"):
        make_model("convnet", 1, 10, 8, width=SMALL, depth=4)


def test_unknown_choices_raise_with_the_valid_ones() -> None:
    with pytest.raises(ModelError) as info:
        make_model("resnet50", 3, 10, 32)
    assert all(a in str(info.value) for a in ARCHITECTURES)
    with pytest.raises(ModelError) as info:
        make_model("convnet", 3, 10, 32, init="orthogonal")
    assert all(s in str(info.value) for s in INITIALISATIONS)
    with pytest.raises(ModelError) as info:
        initialise(make_model("convnet", 3, 10, 32, width=SMALL), "uniform", 0)
    assert all(s in str(info.value) for s in INITIALISATIONS)
    assert issubclass(ModelError, ValueError)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_seeded_initialisation(arch: str) -> None:
    state = torch.random.get_rng_state()
    a = make_model(arch, 3, 10, 32, width=SMALL, seed=1)
    b = make_model(arch, 3, 10, 32, width=SMALL, seed=1)
    c = make_model(arch, 3, 10, 32, width=SMALL, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    # initialise() in place with the same seed reproduces the model.
    initialise(c, "kaiming", 1)
    assert all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_build_model_uses_the_config() -> None:
    config = ModelConfig(arch="convnet", width=SMALL, depth=2, init="xavier", seed=5)
    built = build_model(config, 1, 10, 8)
    made = make_model("convnet", 1, 10, 8, width=SMALL, depth=2, init="xavier", seed=5)
    assert all(torch.equal(p, q) for p, q in zip(built.parameters(), made.parameters()))
    assert built.classifier.in_features == SMALL * 2 * 2


def test_initialisation_statistics() -> None:
    width = 64
    stds = {}
    for scheme in INITIALISATIONS:
        model = make_model("convnet", 3, 10, 32, width=width, init=scheme, seed=0)
        conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)][1]  # 64 -> 64, 3x3
        stds[scheme] = conv.weight.std().item()
        assert torch.all(conv.bias == 0)
        norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
        assert len(norms) == 3                            # one per conv block (depth 3)
        for norm in norms:
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    fan_in = fan_out = width * 9
    assert stds["kaiming"] == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert stds["normal"] == pytest.approx(NORMAL_STD, rel=0.05)
    assert stds["xavier"] == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert len({round(s, 3) for s in stds.values()}) == 3


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_no_batchnorm_and_no_inplace(arch: str) -> None:
    model = make_model(arch, 3, 10, 32, width=SMALL)
    for module in model.modules():
        assert not isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)), module
        assert not getattr(module, "inplace", False), module
        assert not isinstance(module, nn.modules.dropout._DropoutNd), module
    assert len(list(model.buffers())) == 0


def _loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = functional_call(model, params, (x.unsqueeze(0),))
    return nn.functional.cross_entropy(logits, y.unsqueeze(0))


@pytest.mark.parametrize(("arch", "channels", "size"), [("convnet", 1, 28), ("vit", 3, 32), ("alexnet", 1, 8)])
def test_vmap_per_sample_gradients_match_a_loop(arch: str, channels: int, size: int) -> None:
    # float64: the comparison is of the math (vmap vs a loop), not of float32 rounding, which
    # depends on the thread count (the ViT's cls-token gradient differs by ~1e-5 at one thread).
    model = make_model(arch, channels, 5, size, width=SMALL, depth=2, seed=3).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = _images(channels, size, n=4, seed=1).double()
    y = torch.tensor([0, 1, 4, 1])
    per_sample = vmap(grad(lambda p, xi, yi: _loss(model, p, xi, yi)), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad, atol=1e-10, rtol=1e-9, msg=name)


@pytest.mark.parametrize("arch", ["convnet", "resnet18_ap"])
def test_double_backward_through_gradients(arch: str) -> None:
    model = make_model(arch, 1, 10, 8, width=8, depth=2)
    x = _images(1, 8, n=3).requires_grad_(True)
    y = torch.tensor([1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    grad_norm = sum((g**2).sum() for g in grads)
    (dx,) = torch.autograd.grad(grad_norm, x)
    assert torch.isfinite(dx).all()
    assert dx.abs().sum() > 0


def test_count_parameters_against_hand_counts() -> None:
    # The tiny ConvNet of the core tests (width 8, depth 2, 1-channel 8x8 digits, 10 classes):
    # conv 1->8 (3x3 + bias), GroupNorm(8) scale + shift, conv 8->8, GroupNorm(8), Linear(8*2*2 -> 10).
    convnet = make_model("convnet", 1, 10, 8, width=8, depth=2)
    assert count_parameters(convnet) == (1 * 8 * 9 + 8) + 2 * 8 + (8 * 8 * 9 + 8) + 2 * 8 + (32 * 10 + 10) == 1026
    # A module built here, not by ddm.models, with one weight shared by two layers: counted once.
    shared = nn.Linear(4, 4, bias=False)
    module = nn.Sequential(nn.Conv2d(2, 3, kernel_size=2), nn.Flatten(), shared, nn.ReLU(), shared,
                           nn.Linear(4, 5))
    assert count_parameters(module) == (2 * 3 * 2 * 2 + 3) + 4 * 4 + (4 * 5 + 5) == 68
    assert count_parameters(nn.ReLU()) == 0


# ------------------------------------------------------------------------------------------ a network of one's own
from ddm.models import (CUSTOM_PREFIX, CustomModel, as_custom_model, build_model as _build,  # noqa: E402
                        check_model, classifier_layer, model_signature, penultimate_features)


class _OwnNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.logits = nn.Linear(4 * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.body(x))


def test_a_class_an_instance_and_an_import_path_give_the_same_network() -> None:
    config = ModelConfig(arch="ignored", init="xavier", seed=3)
    from_class = _build(config, 1, 5, 6, custom=as_custom_model(_OwnNet))
    from_instance = _build(config, 1, 5, 6, custom=as_custom_model(_OwnNet(1, 5, 6)))
    from_path = _build(config, 1, 5, 6, custom=as_custom_model(f"{__name__}:_OwnNet"))
    for other in (from_instance, from_path):
        for (name, a), (_, b) in zip(from_class.named_parameters(), other.named_parameters()):
            assert torch.equal(a, b), name      # theta_0 comes from init and seed, not from the construction
    assert as_custom_model(_OwnNet).arch == f"{CUSTOM_PREFIX}_OwnNet"


@pytest.mark.parametrize("spec, match", [("nomodule", "neither an architecture"), ("no_such_module:X", "cannot import"),
                                         (42, "must be an architecture name")])
def test_unusable_model_specifications_are_refused(spec, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        as_custom_model(spec)


@pytest.mark.parametrize("layer, match", [(nn.BatchNorm2d(4), "BatchNorm.*GroupNorm"), (nn.Dropout(0.1), "dropout")])
def test_batch_mixing_and_random_layers_are_refused(layer: nn.Module, match: str) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), layer, nn.Flatten(), nn.Linear(4 * 36, 3))
    with pytest.raises(ModelError, match=match):
        check_model(model, torch.zeros(2, 1, 6, 6), 3)


def test_a_network_that_cannot_take_the_images_is_refused() -> None:
    with pytest.raises(ModelError, match=r"cannot take this data set's images \(3, 6, 6\)"):
        check_model(_OwnNet(1, 3, 6), torch.zeros(2, 3, 6, 6), 3)


def test_signature_changes_with_the_structure_only() -> None:
    assert model_signature(_OwnNet(1, 3, 6)) == model_signature(_OwnNet(1, 3, 6))
    assert model_signature(_OwnNet(1, 3, 6)) != model_signature(_OwnNet(1, 4, 6))


def test_penultimate_features_of_ones_own_network_are_the_last_linear_layers_input() -> None:
    model = _OwnNet(1, 3, 6)
    x = torch.randn(5, 1, 6, 6)
    name, layer = classifier_layer(model)
    assert name == "logits" and layer is model.logits
    torch.testing.assert_close(penultimate_features(model, x), model.body(x))


def test_a_custom_arch_without_its_network_names_the_fix() -> None:
    with pytest.raises(ModelError, match="passed in at run time"):
        _build(ModelConfig(arch=f"{CUSTOM_PREFIX}Mine"), 1, 3, 6)


def test_custom_model_factory_must_build_a_module() -> None:
    with pytest.raises(ModelError, match="not an nn.Module"):
        CustomModel("bad", lambda *_: "a string").build(1, 3, 6)
