r"""Noisy training data (Supp. 9.2, Table 6).

Table 6 of the supplement adds "random noise with perturbation norm of 0.1" to 20% of the
training images, trains, ranks the training data by its harm to a validation set (Supp. Eq. 14)
and removes the most harmful share. The paper says neither which data set nor what the norm is
measured in. We choose, and the chapter (``ddm.chapters.noisy_data``) says so:

- **which images**: a seeded uniform draw of ``round(fraction x N)`` training images, without
  replacement (:func:`noisy_indices`); the indices are kept with the experiment and the result;
- **the noise**: a standard-normal direction per image, rescaled so that its norm is *exactly*
  the stated one (:func:`noise_of_norm`);
- **the norm**: by default the L-infinity norm on the [0, 1] pixel scale, the convention of
  "perturbation norm" in the robustness literature: no pixel moves by more than 0.1 (a tenth of
  the grey range), the largest by exactly 0.1. The Euclidean reading (``kind="l2"``) is offered
  too: at 0.1 over a whole 28x28 image it moves a pixel by about 0.004 on average, under one grey
  level of an 8-bit image, which cannot be what a table of lost accuracy measured;
- **no clipping**: the noisy pixels may leave [0, 1], so the norm stays exact (the network reads
  normalised values anyway). The noise is added before the data set's normalisation, i.e. a
  channel with standard deviation :math:`\sigma_c` sees :math:`\delta / \sigma_c`
  (:func:`add_noise`).

The detection scores (:func:`detection`) say how many of the noisy images a removal took:
precision (the noisy share of what was removed) and recall (the removed share of the noisy
images). Removal is by whole clusters (Supp. 6.1), so :func:`cluster_noisy_shares` limits what
any cluster ranking can find; :func:`noisiest_first` is the reference order that knows the noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ddm.data import ImageData

NORM_KINDS = ("linf", "l2")


def noisy_indices(num_images: int, fraction: float, seed: int) -> torch.Tensor:
    """The training images that get noise: ``round(fraction * num_images)`` distinct indices
    drawn uniformly with ``torch.Generator().manual_seed(seed)``, sorted. (Supp. 9.2: "random
    noise to 20% of the training data".)"""
    if not 0 <= fraction <= 1:
        raise ValueError(f"noise.fraction must be in [0, 1], not {fraction}")
    count = int(round(fraction * num_images))
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    return order[:count].sort().values


def image_norms(noise: torch.Tensor, kind: str) -> torch.Tensor:
    """(n,) the norm of each image's noise, ``noise`` (n, C, H, W): the largest absolute pixel
    change (``linf``) or the Euclidean norm over all pixels and channels (``l2``)."""
    flat = noise.reshape(len(noise), -1)
    if kind == "linf":
        return flat.abs().amax(1)
    if kind == "l2":
        return flat.norm(dim=1)
    raise ValueError(f"unknown noise norm {kind!r}; choose one of {list(NORM_KINDS)}")


def noise_of_norm(shape: tuple[int, ...], norm: float, kind: str, generator: torch.Generator) -> torch.Tensor:
    r"""Random noise of exactly the given norm per image (Table 6: "random noise with perturbation
    norm of 0.1"), ``shape`` (n, C, H, W), on the [0, 1] pixel scale:

    .. math:: \delta_i = \epsilon\, \frac{g_i}{\lVert g_i \rVert}, \qquad g_i \sim \mathcal N(0, I),

    with :math:`\lVert\cdot\rVert` the L-infinity or the Euclidean norm (``kind``) and
    :math:`\epsilon` = ``norm``."""
    if norm < 0:
        raise ValueError(f"noise.norm must be >= 0, not {norm}")
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    scale = norm / image_norms(g, kind).clamp_min(1e-12)                        # (n,)
    return (g * scale.view(-1, *([1] * (len(shape) - 1)))).float()


def add_noise(images: torch.Tensor, indices: torch.Tensor, noise: torch.Tensor,
              std: tuple[float, ...]) -> torch.Tensor:
    r"""A copy of the normalised ``images`` (N, C, H, W) with ``noise`` (n, C, H, W), given on the
    [0, 1] pixel scale, added to the images ``indices`` (n,): :math:`x_i + \delta_i / \sigma_c`,
    ``std`` the per-channel :math:`\sigma_c` of the normalisation. Every other image is untouched."""
    if noise.shape != (len(indices), *images.shape[1:]):
        raise ValueError(f"expected noise of shape {(len(indices), *images.shape[1:])}, got {tuple(noise.shape)}")
    out = images.clone()
    sigma = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    out[indices] += noise.to(images.dtype) / sigma
    return out


def noisy_copy(data: ImageData, fraction: float, norm: float, kind: str, seed: int
               ) -> tuple[ImageData, torch.Tensor]:
    """``data`` with noise of ``norm`` added to a seeded ``fraction`` of its images, and the
    indices of those images (sorted). One seed draws both the choice and the noise."""
    indices = noisy_indices(len(data), fraction, seed)
    generator = torch.Generator().manual_seed(seed + 1)   # a child seed: the noise apart from the choice
    noise = noise_of_norm((len(indices), *data.images.shape[1:]), norm, kind, generator)
    return dataclasses.replace(data, images=add_noise(data.images, indices, noise, data.std)), indices


def noisy_mask(num_images: int, indices: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) True for the noisy images."""
    mask = np.zeros(num_images, dtype=bool)
    mask[np.asarray(indices, dtype=int)] = True
    return mask


def detection(removed: np.ndarray, noisy: np.ndarray) -> tuple[float, float]:
    """How well a removal found the noisy images, both in [0, 1]: (precision, recall).

    ``removed`` and ``noisy`` are (N,) boolean masks over the training images. Precision is the
    noisy share of the removed images (0 when nothing was removed); recall the removed share of
    the noisy images (0 when none is noisy). A random removal has, in expectation, the noisy
    share of the data as precision and the removed share as recall."""
    removed, noisy = np.asarray(removed, dtype=bool), np.asarray(noisy, dtype=bool)
    if removed.shape != noisy.shape:
        raise ValueError(f"masks of different shapes: removed {removed.shape}, noisy {noisy.shape}")
    hit = int((removed & noisy).sum())
    return hit / max(int(removed.sum()), 1), hit / max(int(noisy.sum()), 1)


def cluster_noisy_shares(assignment: torch.Tensor | np.ndarray, noisy: np.ndarray, num_clusters: int) -> np.ndarray:
    """(K,) the share of each cluster's images that are noisy (0 for an empty cluster)."""
    assignment = np.asarray(assignment, dtype=int)
    sizes = np.bincount(assignment, minlength=num_clusters)
    hits = np.bincount(assignment, weights=np.asarray(noisy, dtype=float), minlength=num_clusters)
    return hits / np.maximum(sizes, 1)


def noisiest_first(assignment: torch.Tensor | np.ndarray, noisy: np.ndarray, num_clusters: int) -> np.ndarray:
    """The oracle order: clusters by their share of noisy images, largest first (a stable sort).
    No method could know it; it shows roughly how much removing whole clusters can find (roughly:
    a shortest prefix by share is not always the most precise set of clusters of that size)."""
    return np.argsort(-cluster_noisy_shares(assignment, noisy, num_clusters), kind="stable")
