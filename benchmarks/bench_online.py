"""Online evaluation vs exact retraining, and vectorised vs looped fine-tuning.

(a) DDM's online stage for all K clusters (fine-tune theta_tau on each cluster's synset, Eq. 9,
    then predict the test points) against exact leave-one-cluster-out retraining of all K
    (train from theta_0 on D minus the cluster, same schedule, predict the same points). The
    paper's scale claim is that the online stage makes attribution cheap; the target here is a
    ratio >= 100x at K = 100. By default only ``--exact-sample`` retrains are timed and their
    mean time is multiplied by K (the output says EXTRAPOLATED); ``--full`` times all K. The
    offline cost (clustering + distillation, timed here, not loaded) is reported too, with the
    ratio exact / (offline + online).
(b) ``finetune_vectorised`` (torch.func.vmap over masks) against ``finetune_looped`` for the K
    leave-one-out masks and for random masks: best-of-``--repeats`` time of each, the largest
    parameter difference between them, and the ratio.

The target network and the clusters of the experiment come from the cache (--cache-root);
everything that is timed is recomputed on every run.

    python benchmarks/bench_online.py                   # ~3 min on 2 loaded cores
    python benchmarks/bench_online.py --full            # all K exact retrains (~10-20 min)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import common
from common import best_of, max_abs_diff, timer

import torch  # noqa: E402  (after common, which puts the checkout on sys.path)

from ddm import clustering as clustering_mod  # noqa: E402
from ddm.experiment import Experiment  # noqa: E402
from ddm.matching import Synset, distill_synset  # noqa: E402
from ddm.models import count_parameters  # noqa: E402
from ddm.online import (finetune_looped, finetune_vectorised, leave_one_out_masks, perturbed_models,  # noqa: E402
                        predict_many, random_masks)
from ddm.training import RetrainJob, predict_logits, run_retrains  # noqa: E402

# MNIST, 100 images per class, 10 pixel clusters per class: K = 100 as in the paper.
SIZES = {"data.name": "mnist", "data.train_per_class": 100, "data.test_per_class": 50,
         "clusters.clusters_per_class": 10, "distill.steps": 30, "eval.n_test_points": 20}


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.make_parser(__doc__)
    parser.add_argument("--exact-sample", type=int, default=5, help="exact retrains to time (default 5)")
    parser.add_argument("--full", action="store_true", help="time all K exact retrains (no extrapolation)")
    parser.add_argument("--random-masks", type=int, default=50, help="random masks for part (b) (default 50)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of each part-(b) timing; the best counts")
    parser.add_argument("--chunk", type=int, default=64, help="masks per vmap call in finetune_vectorised")
    parser.add_argument("--skip-a", action="store_true", help="only part (b)")
    parser.add_argument("--skip-b", action="store_true", help="only part (a)")
    return parser.parse_args(argv)


def part_a(exp: Experiment, args, points: torch.Tensor) -> Synset:
    config = exp.config
    trajectory = exp.target()          # cached: the target itself is not what is timed
    model = exp.new_model()
    images = exp.test.images[points]
    times: dict[str, float] = {}

    # Offline: clustering and distillation, both recomputed.
    with timer(times, "cluster"):
        clustering = clustering_mod.kmeans_clusters(clustering_mod.pixel_features(exp.train.images),
                                                    exp.train.labels, config.clusters.clusters_per_class,
                                                    config.clusters.seed)
    K = clustering.num_clusters
    with timer(times, "distill"):
        synset = distill_synset(exp.new_model(), trajectory, exp.train.images, exp.train.labels, clustering,
                                exp.num_classes, config.distill, progress=False)
    offline = times["cluster"] + times["distill"]

    # Online: every leave-one-out model, then the test points.
    online = config.online
    with timer(times, "finetune"):
        models = perturbed_models(model, trajectory.final, synset.images, synset.labels, synset.label_logits,
                                  synset.cluster, leave_one_out_masks(K), online.finetune_steps,
                                  online.finetune_lr, vectorised=online.vectorised)
    with timer(times, "predict"):
        predict_many(model, models, images)
    online_s = times["finetune"] + times["predict"]

    # Exact: retrain without a cluster, predict the same points.
    sample = list(range(K)) if args.full else \
        sorted(set(np.linspace(0, K - 1, max(1, min(args.exact_sample, K))).round().astype(int).tolist()))
    jobs = [RetrainJob(clustering.removal_mask([k]), config.train.order_seed) for k in sample]
    start = time.perf_counter()
    finals = run_retrains(model, exp.initial_params(), exp.train.images, exp.train.labels, config.train, jobs,
                          workers=1, progress=False)
    for params in finals:
        predict_logits(model, params, images)
    measured = time.perf_counter() - start
    per_retrain = measured / len(sample)
    exact = per_retrain * K
    how = "measured" if len(sample) == K else f"EXTRAPOLATED: {len(sample)} of {K} retrains timed, mean x K"

    print(f"\n(a) online evaluation of all K = {K} clusters vs exact leave-one-cluster-out retraining")
    print(f"  setup: {config.data.name} {len(exp.train)} train images, {len(points)} test points, "
          f"{config.model.arch} w{config.model.width} d{config.model.depth} ({count_parameters(model):,} params), "
          f"tau {config.train.epochs} epochs, batch {config.train.batch_size}, lr {config.train.lr}; "
          f"T = {online.finetune_steps} "
          f"fine-tune steps ({'vectorised' if online.vectorised else 'looped'})")
    print(f"  offline: clustering {times['cluster']:.1f} s + distillation {times['distill']:.1f} s "
          f"({config.distill.steps} steps, {times['distill'] / config.distill.steps:.2f} s/step) = {offline:.1f} s")
    print(f"  online:  fine-tune {times['finetune']:.2f} s + predict {times['predict']:.2f} s = {online_s:.2f} s "
          f"for all K ({online_s / K * 1000:.0f} ms per cluster)")
    print(f"  exact:   {per_retrain:.2f} s per retrain x K = {exact:.0f} s ({how})")
    print(f"  ratio exact / online             = {exact / online_s:7.0f}x   (target >= 100x at K = 100)")
    print(f"  ratio exact / (offline + online) = {exact / (offline + online_s):7.1f}x   "
          f"(offline at {config.distill.steps} distillation steps)")
    for steps in sorted({config.distill.steps, 200, 400} - {config.distill.steps}):
        scaled = times["cluster"] + times["distill"] / config.distill.steps * steps
        print(f"  ratio exact / (offline + online) = {exact / (scaled + online_s):7.1f}x   "
              f"(offline scaled linearly to {steps} steps: {scaled:.0f} s)")
    return synset


def part_b(exp: Experiment, args, synset: Synset | None) -> None:
    config = exp.config
    trajectory = exp.target()
    synset = synset if synset is not None else exp.synset()   # only the fine-tunes are timed here
    model = exp.new_model()
    K = int(synset.cluster.max()) + 1
    online = config.online
    count = args.random_masks
    mask_sets = {"leave-one-out": leave_one_out_masks(K),
                 f"random (p_delete {online.delete_fraction})": random_masks(K, count, online.delete_fraction,
                                                                             online.seed)}
    print(f"\n(b) vectorised (torch.func.vmap, chunk {args.chunk}) vs looped fine-tuning, T = "
          f"{online.finetune_steps} steps, best of {args.repeats}")
    print(f"  {'masks':<28}{'models':>7}{'imgs/mask':>10}{'looped s':>10}{'vector s':>10}"
          f"{'loop/vec':>10}{'max |dparam|':>14}{'relative':>12}")
    for name, masks in mask_sets.items():
        fargs = (model, trajectory.final, synset.images, synset.labels, synset.label_logits, synset.cluster, masks,
                 online.finetune_steps, online.finetune_lr)
        looped_s, looped = best_of(args.repeats, lambda: finetune_looped(*fargs))
        vector_s, vector = best_of(args.repeats, lambda: finetune_vectorised(*fargs, chunk=args.chunk))
        scale = max(float(v.abs().max()) for v in trajectory.final.values())
        max_rel = max_abs_diff(looped, vector) / scale
        deleted = float((~masks).sum(1).float().mean()) * synset.ipc
        print(f"  {name:<28}{len(masks):>7}{deleted:>10.1f}{looped_s:>10.2f}{vector_s:>10.2f}"
              f"{looped_s / vector_s:>9.2f}x{max_abs_diff(looped, vector):>14.2e}{max_rel:>12.1e}")
    print("  loop/vec > 1: the vectorised path is faster.")


def main(argv=None) -> None:
    args = parse_args(argv)
    exp = common.experiment_from(args, SIZES)
    config = exp.config
    points = exp.test_point_indices()
    synset = None if args.skip_a else part_a(exp, args, points)
    if not args.skip_b:
        part_b(exp, args, synset)


if __name__ == "__main__":
    main()
