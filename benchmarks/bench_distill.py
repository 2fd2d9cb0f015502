"""One distillation step: the default path and the vmap path against the looped reference, at K = 10, 100, 1,000.

A step of Algorithm 1 (ddm.matching.distill_synset) once the real cluster gradients are cached:
the K synset gradients at theta', kept differentiable (a double backward), the K distances to the
(reversed) real gradients, the backward to the synthetic images, the SGD step. Three paths of
``matching_objective``:

  looped      ``path="looped"`` (``vectorised=False``): K small double-backward graphs one after
              another (``torch.autograd.grad(create_graph=True)`` per cluster), the reference;
  vmap        ``path="vmap"``: torch.func ``vmap(grad(...))`` over the clusters in chunks of
              ``VMAP_CHUNK_IMAGES`` images, the distances with ``vmap``, one graph (the default
              until issue 12; still the fallback for models the per-sample path cannot take);
  per-sample  ``path="auto"``, the default: the per-sample gradients in closed form from one
              batched forward and one batched backward to the layers' outputs, per chunk of
              ``PER_SAMPLE_CHUNK_IMAGES`` images, with pooling, ReLU and GroupNorm swapped for
              equivalents with a cheap double backward (``synset_cluster_gradients_per_sample``).

All start every timed step from the same synthetic images, so they compute the same numbers:
the script prints the relative difference of the objective between per-sample and looped and,
per cluster, that of the gradient with respect to its synthetic images (median and worst
cluster). Repetitions are interleaved (looped, vmap, per-sample, looped, ...) so that a burst of
load from other processes hits all; the median and the minimum of each are printed, with the
ratios looped / per-sample (median and min) and looped / vmap (median). Target (issue 12):
looped / per-sample >= 3x at K = 100. ``--no-chunk`` adds the vmap path in one call (no chunks)
as a fourth column.

The model is the profile's (default ``cpu``: ConvNet width 32 depth 3, 10 classes) on random
tensors shaped like its data (MNIST: 1 x 28 x 28): the time of a step does not depend on the
pixel values. The real images are random too, ``--real-per-cluster`` per cluster, and their
cluster gradients are computed once per K (``cluster_gradients``, itself a loop over clusters;
the distillation caches them per checkpoint) and timed separately. No data is read, so
``--data-root`` and ``--cache-root`` are accepted and unused.

    python benchmarks/bench_distill.py                       # K = 10, 100, 1000; ~4 min on 2 loaded cores
    python benchmarks/bench_distill.py --clusters 100 --repeats 9
    python benchmarks/bench_distill.py --set distill.soft_labels=true --no-chunk
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
from common import machine_line

import torch  # noqa: E402  (after common, which puts the checkout on sys.path)

from ddm.clustering import Clustering  # noqa: E402
from ddm.config import check_threads  # noqa: E402
from ddm.datasets import spec  # noqa: E402
from ddm.matching import (PER_SAMPLE_CHUNK_IMAGES, VMAP_CHUNK_IMAGES, cluster_gradients,  # noqa: E402
                          compared_parameters, matching_objective, per_sample_layers)
from ddm.models import build_model, count_parameters  # noqa: E402
from ddm.training import get_params  # noqa: E402

# Image shape of the data sets a profile names (the registry has no shape: it is read from the files).
SHAPES = {"digits": (1, 8), "mnist": (1, 28), "cifar10": (3, 32), "cifar10-jpeg": (3, 32), "cifar100": (3, 32),
          "tiny-imagenet": (3, 64)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.make_parser(__doc__, profile="cpu")
    parser.add_argument("--clusters", default="10,100,1000", help="comma-separated K values (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed steps of each path per K, interleaved, after one untimed warm-up (default 5)")
    parser.add_argument("--real-per-cluster", type=int, default=20,
                        help="random real images per cluster (the cpu profile: 2,000 images / K = 100; default 20)")
    parser.add_argument("--no-chunk", action="store_true",
                        help=f"also time the vmap path in one call "
                             f"(default: chunks of {VMAP_CHUNK_IMAGES} images)")
    return parser.parse_args(argv)


def make_step(model, params_real, params_syn, real_grads, init, labels, logits, K, config, path, chunk):
    """A closure running one distillation step from ``init``; returns (objective, image gradient)."""
    distill = config.distill

    def step():
        syn = init.clone().requires_grad_(True)
        z = None if logits is None else logits.clone().requires_grad_(True)
        groups = [{"params": [syn]}] + ([] if z is None else [{"params": [z], "lr": distill.lr_label, "momentum": 0.5}])
        optimiser = torch.optim.SGD(groups, lr=distill.lr_img, momentum=distill.momentum_img)   # as distill_synset
        objective = matching_objective(model, params_real, params_syn, real_grads, syn, labels, z, K,
                                       distill.distance, distill.method == "reverse", path=path,
                                       chunk_images=chunk)
        optimiser.zero_grad(set_to_none=True)
        objective.backward()
        image_grad = syn.grad.detach().clone()
        optimiser.step()
        return objective.detach(), image_grad

    return step


def bench_k(K: int, config, args) -> dict:
    distill = config.distill
    channels, size = SHAPES.get(config.data.name, (1, 28))
    classes = spec(config.data.name).num_classes or 10
    model = build_model(config.model, channels, classes, size)
    params = {k: v.detach() for k, v in get_params(model).items()}
    generator = torch.Generator().manual_seed(0)
    # Two points of a trajectory: theta_t (real) and theta' (synset); the init plus a small step.
    params_syn = {k: v + 0.01 * torch.randn(v.shape, generator=generator) for k, v in params.items()}
    if distill.method == "match":         # plain matching pairs theta_t with itself
        params_syn = params
    cluster_class = torch.arange(K) % classes
    n = args.real_per_cluster
    real_images = torch.randn(K * n, channels, size, size, generator=generator)
    assignment = torch.arange(K).repeat_interleave(n)
    clustering = Clustering(assignment=assignment, cluster_class=cluster_class, method="random")
    start = time.perf_counter()
    real_grads = cluster_gradients(model, params, real_images, cluster_class[assignment], clustering)
    real_s = time.perf_counter() - start

    ipc = distill.ipc
    init = torch.randn(K * ipc, channels, size, size, generator=generator)
    labels = cluster_class.repeat_interleave(ipc)
    logits = (torch.nn.functional.one_hot(labels, classes).float() * 5.0) if distill.soft_labels else None

    def step(path, chunk=VMAP_CHUNK_IMAGES):
        return make_step(model, params, params_syn, real_grads, init, labels, logits, K, config, path, chunk)

    paths = {"looped": step("looped"), "vmap": step("vmap"), "per-sample": step("auto")}
    if args.no_chunk:
        paths["vmap, no chunks"] = step("vmap", None)
    times: dict[str, list[float]] = {name: [] for name in paths}
    results = {name: fn() for name, fn in paths.items()}          # warm-up, and the numbers compared
    for _ in range(max(1, args.repeats)):
        for name, fn in paths.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ref_obj, ref_grad = results["looped"]
    fast_obj, fast_grad = results["per-sample"]
    # Per cluster: the largest difference of its images' gradient over the largest entry of it.
    per_cluster = ((fast_grad - ref_grad).reshape(K, -1).abs().max(1).values
                   / ref_grad.reshape(K, -1).abs().max(1).values.clamp_min(1e-30))
    fallback = per_sample_layers(model, compared_parameters(distill.distance, params_syn)) is None
    return {"K": K, "times": times, "real_s": real_s, "params": count_parameters(model), "fallback": fallback,
            "d_objective": abs(float(fast_obj - ref_obj)) / abs(float(ref_obj)),
            "d_grad_median": float(per_cluster.median()), "d_grad_worst": float(per_cluster.max())}


def main(argv=None) -> None:
    args = parse_args(argv)
    config = common.config_from(args, {})
    if check_threads(config.threads):
        torch.set_num_threads(config.threads)
    print(machine_line(config))
    distill, m = config.distill, config.model
    channels, size = SHAPES.get(config.data.name, (1, 28))
    print(f"one distillation step, profile {config.profile}: {m.arch} w{m.width} d{m.depth} on random "
          f"{channels}x{size}x{size} tensors ({config.data.name}-shaped), ipc {distill.ipc}, "
          f"{distill.method}, {distill.distance}, soft labels {distill.soft_labels}; "
          f"{args.repeats} interleaved repeats per path after a warm-up; vmap chunks of {VMAP_CHUNK_IMAGES} images, "
          f"per-sample chunks of {PER_SAMPLE_CHUNK_IMAGES}")
    names = ["looped", "vmap", "per-sample"] + (["vmap, no chunks"] if args.no_chunk else [])
    header = f"  {'K':>5}" + "".join(f"{n + ' s (med/min)':>28}" for n in names)
    header += (f"{'loop/new med':>14}{'loop/new min':>14}{'loop/vmap med':>15}{'|d obj|/|obj|':>15}"
               f"{'d grad: median':>16}{'worst cluster':>15}{'real grads s':>14}")
    print(header)
    for K in [int(k) for k in args.clusters.split(",")]:
        r = bench_k(K, config, args)
        t = r["times"]
        med = {n: statistics.median(v) for n, v in t.items()}
        low = {n: min(v) for n, v in t.items()}
        row = f"  {K:>5}" + "".join(f"{med[n]:>19.3f} / {low[n]:<6.3f}" for n in names)
        row += (f"{med['looped'] / med['per-sample']:>13.2f}x{low['looped'] / low['per-sample']:>13.2f}x"
                f"{med['looped'] / med['vmap']:>14.2f}x"
                f"{r['d_objective']:>15.1e}{r['d_grad_median']:>16.1e}{r['d_grad_worst']:>15.1e}{r['real_s']:>14.2f}")
        print(row, flush=True)
        if r["fallback"]:
            print(f"  (the per-sample path cannot take {m.arch}: the default fell back to the vmap path)")
    print(f"  ({r['params']:,} parameters.) loop/new > 1: the per-sample step (the default) is faster than the loop. "
          f"'d obj', 'd grad': per-sample against looped; 'd grad': per cluster, the "
          f"largest difference of d objective / d its images between the paths over the largest entry (median "
          f"and worst cluster; the paths round the forward differently (batch sizes), and a pre-activation within "
          f"float32 rounding of a ReLU's kink flips its mask in one of them: at K = 1,000 one cluster in a "
          f"thousand can differ by 1e-2 to 1e-1, and against float64 the loop is as often the one off). "
          f"'real grads': the K cluster gradients at one checkpoint (a loop over clusters, batched within each; "
          f"computed once per checkpoint and cached by the distillation, not in a step).")


if __name__ == "__main__":
    main()
