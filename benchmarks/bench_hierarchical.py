"""Hierarchical vs flat attribution of one test point (Supp. 6.2, Eq. 11).

Flat: fine-tune one perturbed model per cluster (K = L x C leave-one-out models), predict the
test point with each, take the cluster with the largest effect on its margin.
Hierarchical: first the L leave-one-class-out models of a class-level synset (one group per
class, distilled with ``ClusterConfig(features="class", clusters_per_class=1)``), pick the class
l* with the largest effect, then the C leave-one-cluster-out models of class l*'s clusters and
pick inside it: L + C fine-tunes instead of L x C.

Each test point is attributed on its own, as in the paper's claim, and both paths are timed per
point (fine-tunes + predictions). The paper claims 5x (CIFAR-10, K = 100: 100 vs 10 + 10
fine-tunes) and 10x (CIFAR-100, K = 1000: 1000 vs 100 + 10). The script also reports how often the
two paths pick the same cluster. Synsets (both levels) and the target come from the cache; their
distillation time is printed when this run had to compute them.

    python benchmarks/bench_hierarchical.py                                  # MNIST, K = 100
    python benchmarks/bench_hierarchical.py --set data.name=cifar10-jpeg     # the paper's CIFAR-10 setting
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import common

import torch  # noqa: E402

from ddm.attribution import hierarchical_pick, leave_one_out_attribution, margin_direction, margin_effects  # noqa: E402
from ddm.experiment import Experiment  # noqa: E402
from ddm.online import leave_one_out_masks, perturbed_models, predict_many  # noqa: E402
from ddm.training import predict_logits  # noqa: E402

SIZES = {"data.name": "mnist", "data.train_per_class": 100, "data.test_per_class": 50,
         "clusters.clusters_per_class": 10, "distill.steps": 30}


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.make_parser(__doc__)
    parser.add_argument("--points", type=int, default=10, help="test points attributed one by one (default 10)")
    parser.add_argument("--vectorised", action="store_true", help="fine-tune with finetune_vectorised")
    return parser.parse_args(argv)


def loo_effects(exp: Experiment, model, final, synset, masks: torch.Tensor, x: torch.Tensor, base: torch.Tensor,
                d: torch.Tensor, vectorised: bool) -> torch.Tensor:
    """(1, M) margin effects of the M masks' perturbed models on one test point."""
    online = exp.config.online
    models = perturbed_models(model, final, synset.images, synset.labels, synset.label_logits,
                              synset.cluster, masks, online.finetune_steps, online.finetune_lr, vectorised=vectorised)
    outputs = predict_many(model, models, x)                                   # (M, 1, L)
    return margin_effects(leave_one_out_attribution(base, outputs), d)        # (1, M)


def cached_synset(exp: Experiment, clusters=None):
    start = time.perf_counter()
    synset = exp.synset(clusters=clusters)
    seconds = time.perf_counter() - start
    return synset, ("loaded from the cache" if seconds < 2 else f"distilled in {seconds:.0f} s")


def main(argv=None) -> None:
    args = parse_args(argv)
    exp = common.experiment_from(args, SIZES)
    config = exp.config
    vectorised = args.vectorised or config.online.vectorised
    final = exp.target().final     # loaded once: Experiment.target() reads the store on every call
    clustering = exp.clusters()
    class_config = dataclasses.replace(config.clusters, features="class", clusters_per_class=1)
    classes = exp.clusters(class_config)
    flat_synset, flat_note = cached_synset(exp)
    class_synset, class_note = cached_synset(exp, class_config)
    K, L = clustering.num_clusters, classes.num_clusters
    C = config.clusters.clusters_per_class
    model = exp.new_model()
    flat_masks, class_masks = leave_one_out_masks(K), leave_one_out_masks(L)
    ids_of = {l: torch.nonzero(clustering.cluster_class == int(classes.cluster_class[l])).flatten()
              for l in range(L)}

    points = exp.test_point_indices()[: args.points]
    flat_s = hier_s = 0.0
    same_cluster = same_class = 0
    for i in points.tolist():
        x, y = exp.test.images[i:i + 1], exp.test.labels[i:i + 1]
        base = predict_logits(model, final, x)                                 # (1, L)
        d = margin_direction(base, y)

        start = time.perf_counter()
        flat_pick = int(loo_effects(exp, model, final, flat_synset, flat_masks, x, base[0], d, vectorised).argmax())
        flat_s += time.perf_counter() - start

        start = time.perf_counter()
        class_effects = loo_effects(exp, model, final, class_synset, class_masks, x, base[0], d, vectorised)   # (1, L)
        l = int(class_effects.argmax())
        within = loo_effects(exp, model, final, flat_synset, flat_masks[ids_of[l]], x, base[0], d, vectorised)  # (1, C)
        chosen_class, chosen_cluster = hierarchical_pick(class_effects, {l: within}, {l: ids_of[l]})
        hier_s += time.perf_counter() - start

        same_cluster += int(chosen_cluster[0]) == flat_pick
        same_class += int(clustering.cluster_class[flat_pick]) == int(classes.cluster_class[int(chosen_class[0])])

    n = len(points)
    print(f"\nhierarchical vs flat attribution, one test point at a time ({n} points)")
    print(f"  setup: {config.data.name} {len(exp.train)} train images, L = {L} classes x C = {C} clusters = K = {K}, "
          f"{config.model.arch} w{config.model.width}, T = {config.online.finetune_steps} fine-tune steps "
          f"({'vectorised' if vectorised else 'looped'})")
    print(f"  synsets: cluster level (K = {K}) {flat_note}; class level (L = {L}) {class_note}; "
          f"{config.distill.steps} distillation steps each")
    print(f"  flat:         {K:5d} fine-tunes, {flat_s / n * 1000:7.0f} ms per test point")
    print(f"  hierarchical: {L + C:5d} fine-tunes ({L} + {C}), {hier_s / n * 1000:7.0f} ms per test point")
    print(f"  speed-up {flat_s / hier_s:.1f}x measured; {K / (L + C):.1f}x by fine-tune count")
    print(f"  paper's claim: 5x (CIFAR-10, K = 100: 100 vs 10 + 10 -> {100 / 20:.1f}x by count), "
          f"10x (CIFAR-100, K = 1000: 1000 vs 100 + 10 -> {1000 / 110:.1f}x by count)")
    print(f"  agreement: same cluster picked {same_cluster}/{n}; hierarchical class = class of the flat pick "
          f"{same_class}/{n}")


if __name__ == "__main__":
    main()
