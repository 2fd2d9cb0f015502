"""Gradient distances of ddm.matching (the Dist of Eq. 6) against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import vmap

from ddm.matching import (DISTANCES, flat_cosine_distance, get_distance, layer_cosines,
                          layerwise_cosine_distance, mse_distance)

EPS = 1e-6  # the guard in the denominator shifts a unit cosine by at most ~1e-6


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_layerwise_cosine_hand_computed_rows() -> None:
    # Row 0: (3,4).(4,3) = 24, |.| = 5 and 5 -> cos 0.96 -> 0.04.  Row 1: (1,0).(0,2) = 0 -> 1.
    a = {"w": _t([[3.0, 4.0], [1.0, 0.0]])}
    b = {"w": _t([[4.0, 3.0], [0.0, 2.0]])}
    assert float(layerwise_cosine_distance(a, b)) == pytest.approx(0.04 + 1.0, abs=EPS)


def test_layerwise_cosine_sums_over_layers_and_views_conv_weights_per_output_unit() -> None:
    # A conv weight (out=2, in=1, 1, 2): each output unit is one row of 2 numbers.
    conv_a = _t([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    conv_b = _t([[[[0.0, 1.0]]], [[[2.0, 2.0]]]])  # row 0 orthogonal (1), row 1 parallel (0)
    lin_a, lin_b = _t([[1.0, 0.0, 0.0]]), _t([[1.0, 1.0, 0.0]])  # cos = 1/sqrt(2)
    got = layerwise_cosine_distance({"conv": conv_a, "lin": lin_a}, {"conv": conv_b, "lin": lin_b})
    assert float(got) == pytest.approx(1.0 + 0.0 + (1 - 1 / math.sqrt(2)), abs=EPS)
    # Flattening the whole conv weight instead (one row) would give 1 - cos(all) = 1 - 3/sqrt(10):
    assert abs(float(got) - (1 - 3 / math.sqrt(10) + 1 - 1 / math.sqrt(2))) > 0.1


def test_layerwise_cosine_identical_zero_opposite_two_per_row() -> None:
    g = {"w1": _t([[1.0, -2.0, 0.5], [0.3, 0.3, 4.0]]), "w2": _t([[2.0, 1.0]]), "b": _t([1.0, 2.0])}
    minus = {k: -v for k, v in g.items()}
    assert float(layerwise_cosine_distance(g, g)) == pytest.approx(0.0, abs=3 * EPS)
    # 3 rows in the two weight tensors, each at distance 1 - (-1) = 2.
    assert float(layerwise_cosine_distance(g, minus)) == pytest.approx(6.0, abs=3 * EPS)


def test_layerwise_cosine_ignores_one_dimensional_tensors() -> None:
    w = _t([[1.0, 2.0], [3.0, -1.0]])
    a = {"w": w, "bias": _t([1.0, 2.0]), "norm.weight": _t([5.0])}
    b = {"w": w, "bias": _t([-1.0, -2.0]), "norm.weight": _t([-7.0])}
    assert float(layerwise_cosine_distance(a, b)) == pytest.approx(0.0, abs=2 * EPS)
    assert float(layerwise_cosine_distance({"bias": _t([1.0, 2.0])}, {"bias": _t([-1.0, 0.0])})) == 0.0
    assert set(layer_cosines(a, b)) == {"w"}


def test_layer_cosines_flatten_each_layer() -> None:
    a = {"w": _t([[3.0, 4.0], [1.0, 0.0]])}
    b = {"w": _t([[4.0, 3.0], [0.0, 2.0]])}
    # Flattened: (3,4,1,0).(4,3,0,2) = 24, norms sqrt(26) and sqrt(29).
    assert layer_cosines(a, b)["w"] == pytest.approx(24 / math.sqrt(26 * 29), abs=1e-6)


def test_flat_cosine_distance_hand_computed_includes_biases() -> None:
    a = {"w": _t([[1.0, 0.0]]), "b": _t([0.0])}
    b = {"w": _t([[1.0, 1.0]]), "b": _t([1.0])}
    # vec(a) = (1,0,0), vec(b) = (1,1,1): cos = 1/sqrt(3).
    assert float(flat_cosine_distance(a, b)) == pytest.approx(1 - 1 / math.sqrt(3), abs=EPS)
    assert float(flat_cosine_distance(a, a)) == pytest.approx(0.0, abs=EPS)
    assert float(flat_cosine_distance(a, {k: -v for k, v in a.items()})) == pytest.approx(2.0, abs=EPS)


def test_mse_distance_hand_computed_includes_all_tensors() -> None:
    a = {"w": _t([[1.0, 2.0], [0.0, 0.0]]), "b": _t([3.0])}
    b = {"w": _t([[0.0, 2.0], [0.0, -2.0]]), "b": _t([1.0])}
    assert float(mse_distance(a, b)) == pytest.approx(1.0 + 4.0 + 4.0)
    assert float(mse_distance(a, a)) == 0.0


def test_distances_under_vmap_equal_the_per_cluster_loop() -> None:
    """matching_objective applies the distance with vmap over clusters: same numbers as a loop."""
    generator = torch.Generator().manual_seed(0)
    shapes = {"conv": (3, 2, 3, 3), "lin": (4, 5), "bias": (4,)}
    a = {k: torch.randn(6, *s, generator=generator) for k, s in shapes.items()}
    b = {k: torch.randn(6, *s, generator=generator) for k, s in shapes.items()}
    for name, dist in DISTANCES.items():
        batched = vmap(dist)(a, b)
        looped = torch.stack([dist({k: v[i] for k, v in a.items()}, {k: v[i] for k, v in b.items()})
                              for i in range(6)])
        assert torch.allclose(batched, looped, atol=1e-5), name


def test_get_distance_names_and_unknown_name() -> None:
    assert get_distance("layerwise_cosine") is layerwise_cosine_distance
    assert get_distance("cosine") is flat_cosine_distance
    assert get_distance("mse") is mse_distance
    with pytest.raises(ValueError, match="unknown gradient distance 'l1'.*layerwise_cosine"):
        get_distance("l1")
