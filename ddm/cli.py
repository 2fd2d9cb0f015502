"""Command line: ``python -m ddm <stage>`` runs one stage of an experiment, cached in the store.

Stages, in the order of the data flow (each runs the ones before it when their artifacts are
missing)::

    train      the target network's trajectory (Eq. 2)                      Experiment.target
    cluster    per-class clusters of the training set (Supp. 6.1)           Experiment.clusters
    distill    the synset by reverse gradient matching (Alg. 1, Eq. 6)      Experiment.synset
    attribute  perturbed models for the eval test points (Eq. 9), the
               attribution matrix (Eq. 7-8) and the top clusters            evaluation.fit_attribution
    unlearn    exact leave-one-cluster-out retraining of all K clusters     Experiment.exact_retrain_logits
    evaluate   target accuracy, K, and how well DDM's leave-one-out effects
               rank the clusters against exact retraining (Spearman, top-1,
               Dist1 of the located cluster, the retraining noise floor)    evaluation.score_methods
    profiles   print the named profiles

attribute, unlearn and evaluate run the protocol of :mod:`ddm.evaluation`, the one copy the
chapters and the tests use too; this module only formats what it returns.

Common options (after the stage name): ``--profile``, ``--dataset``, ``--model``, ``--device``,
``--data-root``, ``--cache-root``, ``--set section.field=value`` (repeatable), ``--threads N``
(the configuration's ``threads``, applied by ``Experiment.create``) and ``--quiet``.
A bad profile, data set, model, device or field exits with status 2 and says what to change.

Examples::

    python -m ddm profiles
    python -m ddm train --profile quick --set train.epochs=3
    python -m ddm evaluate --profile ci --data-root ../shared/data --set eval.workers=2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddm.config import (PROFILES, ExperimentConfig, check_override, get_profile, parse_assignments,
                        resolve_cache_root)
from ddm.store import StoreError, atomic_write_text

STAGES: tuple[str, ...] = ("train", "cluster", "distill", "attribute", "unlearn", "evaluate")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input; reported with exit status 2."""


# ---------------------------------------------------------------------------------------------
# Building the configuration (the parsing and type checking of --set live in ddm.config)
# ---------------------------------------------------------------------------------------------

def make_config(profile: str, assignments: Sequence[str] = (), dataset: str | None = None,
                model: str | None = None, device: str | None = None,
                threads: int | None = None) -> ExperimentConfig:
    """The named profile with ``section.field=value`` overrides (each parsed and checked against
    its field's type by :func:`ddm.config.parse_assignments`), then the data set, architecture,
    device and thread count when given. Raises ``ValueError`` (a :class:`UsageError` or the
    configuration's own) on any bad name or value."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    overrides = parse_assignments(assignments)
    if model is not None and ":" in model:   # "package.module:factory": a network of one's own, see _experiment
        model = None
    for key, value in (("data.name", dataset), ("model.arch", model), ("device", device), ("threads", threads)):
        if value is not None:
            overrides[key] = check_override(key, value)
    config = get_profile(profile, **overrides)
    _check_device(config.device)
    return config


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """:func:`make_config` from the parsed command line."""
    return make_config(args.profile, args.set or [], args.dataset, args.model, args.device, args.threads)


def _check_device(device: str) -> None:
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise UsageError(f"unknown device {device!r} ({error}); use cpu or cuda") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} was asked for but no CUDA GPU is visible; use --device cpu")


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------

def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("experiment")
    group.add_argument("--profile", default="quick", help=f"named profile: {', '.join(PROFILES)} (default quick)")
    group.add_argument("--dataset", help="data set (sets data.name), e.g. digits, mnist, cifar10-jpeg")
    group.add_argument("--model", help="architecture (sets model.arch): convnet, alexnet, resnet18_ap, vit; or a network of "
                            "your own as package.module:factory, factory(in_channels, num_classes, image_size) "
                            "-> nn.Module")
    group.add_argument("--device", help="cpu or cuda (sets device)")
    group.add_argument("--data-root", help="data root (default $DDM_DATA_ROOT, else ./data)")
    group.add_argument("--cache-root", help="artifact store (default $DDM_CACHE, else ./.cache)")
    group.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", default=[],
                       help="override one configuration field (repeatable), e.g. --set train.epochs=3")
    group.add_argument("--threads", type=int, metavar="N",
                       help="torch CPU threads (sets the configuration's threads; default: the profile's, "
                       "0 = torch's choice; on a small, loaded CPU 1 is often much faster than 2)")
    group.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ddm", description="Distilled Datamodel (CVPR 2024), one stage at a time.",
        epilog="Run 'python -m ddm <stage> --help' for a stage's options.")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    common = _common_options()
    sub.add_parser("train", parents=[common], help="train the target network (Eq. 2)")
    sub.add_parser("cluster", parents=[common], help="cluster the training set per class (Supp. 6.1)")
    sub.add_parser("distill", parents=[common], help="distil the synset (Alg. 1, reverse matching)")
    attribute = sub.add_parser("attribute", parents=[common],
                               help="online stage: perturbed models, attribution matrix, top clusters")
    attribute.add_argument("--top", type=int, default=3, help="clusters to print per test point (default 3)")
    attribute.add_argument("--output", type=Path, help="write the effects as JSON to this file")
    unlearn = sub.add_parser("unlearn", parents=[common], help="exact leave-one-cluster-out retraining")
    unlearn.add_argument("--clusters", help="comma-separated cluster ids (default: all K)")
    unlearn.add_argument("--order-seed", type=int, help="data-order seed of the retrains (default train.order_seed)")
    unlearn.add_argument("--output", type=Path, help="write every removal's numbers as JSON to this file")
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="target accuracy, K, and DDM's leave-one-out Spearman vs exact retraining",
                              description="DDM's leave-one-cluster-out effects against exact retraining of "
                              "every cluster (ddm.evaluation, as in the chapters), beside random choice and the "
                              "noise floor: the same retrains under each eval.noise_seeds data order (twice "
                              "the retrains; --set eval.noise_seeds=[] skips it).")
    evaluate.add_argument("--output", type=Path, help="write the summary as JSON to this file")
    profiles = sub.add_parser("profiles", help="print the named profiles")
    profiles.add_argument("names", nargs="*", help="print these profiles in full (default: a summary of all)")
    return parser


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------

def _flatten(config: ExperimentConfig) -> dict[str, Any]:
    """Every field as ``section.field``, including the sections ``to_dict`` leaves out at their
    default (``noise``): a reader looking for what can be overridden sees all of it."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, dict):
            out.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            out[key] = value
    return out


def cmd_profiles(args: argparse.Namespace) -> int:
    unknown = [n for n in args.names if n not in PROFILES]
    if unknown:
        raise UsageError(f"unknown profile(s) {unknown}; choose from {sorted(PROFILES)}")
    if args.names:
        for name in args.names:
            print(f"[{name}]")
            for key, value in _flatten(get_profile(name)).items():
                print(f"  {key} = {value!r}")
        return EXIT_OK
    header = ("profile", "data", "per class", "C", "model", "epochs", "lr", "distil steps", "T", "device")
    rows = [header]
    for name in PROFILES:
        c = get_profile(name)
        rows.append((name, c.data.name, f"{c.data.train_per_class}/{c.data.test_per_class}",
                     str(c.clusters.clusters_per_class), f"{c.model.arch} w{c.model.width} d{c.model.depth}",
                     str(c.train.epochs), str(c.train.lr), str(c.distill.steps),
                     str(c.online.finetune_steps), c.device))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("(per class: train/test images, None = all; C: clusters per class, K = classes x C; "
          "T: fine-tune steps. 'python -m ddm profiles NAME' prints every field.)")
    return EXIT_OK


def _experiment(args: argparse.Namespace, config: ExperimentConfig):
    from ddm.experiment import Experiment

    own = args.model if args.model and ":" in args.model else None
    # Experiment.create checks the network against the data before any training.
    experiment = Experiment.create(config, data_root=args.data_root, cache_root=args.cache_root,
                                   progress=not args.quiet, model=own)
    config = experiment.config
    print(f"profile {config.profile}: {config.data.name} ({len(experiment.train)} train / "
          f"{len(experiment.test)} test), {config.model.arch} width {config.model.width}, "
          f"device {config.device}, {torch.get_num_threads()} thread(s), cache {resolve_cache_root(args.cache_root)}")
    return experiment


def _timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    print(f"{label}: {time.perf_counter() - start:.1f} s")
    return result


def cmd_train(args, config) -> int:
    from ddm.training import accuracy

    experiment = _experiment(args, config)
    trajectory = _timed("train (or load)", experiment.target)
    acc = accuracy(experiment.target_logits(experiment.test.images), experiment.test.labels)
    print(f"target: {trajectory.epochs} epochs, final training loss {float(trajectory.losses[-1]):.4f}, "
          f"test accuracy {acc:.4f}")
    return EXIT_OK


def cmd_cluster(args, config) -> int:
    experiment = _experiment(args, config)
    clustering = _timed("cluster (or load)", experiment.clusters)
    sizes = clustering.sizes()
    print(f"clusters: K = {clustering.num_clusters} ({clustering.method}), sizes min {int(sizes.min())} / "
          f"mean {float(sizes.float().mean()):.1f} / max {int(sizes.max())}")
    return EXIT_OK


def cmd_distill(args, config) -> int:
    experiment = _experiment(args, config)
    synset = _timed("distil (or load)", experiment.synset)
    history = synset.loss_history
    first, last = (f"{history[0]:.4f}", f"{history[-1]:.4f}") if history else ("-", "-")
    print(f"synset: {len(synset.images)} images ({synset.method}/{synset.pairing}, ipc {synset.ipc}), "
          f"matching loss {first} -> {last}")
    if synset.final_layer_cosines:
        cosines = ", ".join(f"{k} {v:+.2f}" for k, v in synset.final_layer_cosines.items())
        print(f"layer cosines with the target gradient: {cosines}")
    return EXIT_OK


def _perturbation_masks(K: int, online) -> tuple[torch.Tensor, str]:
    """The keep-masks DDM's W is fitted on (Eq. 8): the unperturbed model and the K leave-one-out
    masks (then W_k is exactly y(all) - y(without k)), or random masks when
    ``online.n_perturbations`` > 0 (at least K + 1 of them, as the chapters fit W)."""
    from ddm.evaluation import perturbation_masks
    from ddm.online import leave_one_out_masks

    if online.n_perturbations > 0:
        masks = perturbation_masks(K, online)
        return masks, f"Eq. 8 on {len(masks)} random masks"
    masks = torch.cat([torch.ones(1, K, dtype=torch.bool), leave_one_out_masks(K)])
    return masks, f"Eq. 8 on the {K} leave-one-out masks"


def cmd_attribute(args, config) -> int:
    from ddm.attribution import margin_direction, margin_effects
    from ddm.evaluation import fit_attribution

    experiment = _experiment(args, config)
    points = experiment.test_point_indices()
    images, labels = experiment.test.images[points], experiment.test.labels[points]
    start = time.perf_counter()
    clustering, synset = experiment.clusters(), experiment.synset()
    masks, how = _perturbation_masks(clustering.num_clusters, config.online)
    W, _ = fit_attribution(experiment, synset, images, masks)                      # (K, N, L)
    base = experiment.target_logits(images)                                        # (N, L)
    effects = margin_effects(W, margin_direction(base, labels))                    # (N, K)
    print(f"attribution ({how}, {len(points)} test points): {time.perf_counter() - start:.1f} s "
          "(includes distillation when not cached)")
    top = max(1, min(args.top, clustering.num_clusters))
    print(f"top {top} clusters per test point by effect on the true-class margin "
          "(how much deleting the cluster would lower it):")
    records = []
    for row, (point, label) in enumerate(zip(points.tolist(), labels.tolist())):
        order = torch.argsort(effects[row], descending=True)[:top].tolist()
        picks = ", ".join(f"#{k} (class {int(clustering.cluster_class[k])}) {float(effects[row, k]):+.3f}"
                          for k in order)
        print(f"  test {point:5d} label {label} predicted {int(base[row].argmax())}: {picks}")
        records.append({"test_index": point, "label": label, "predicted": int(base[row].argmax()),
                        "top_clusters": order, "effects": effects[row].tolist()})
    if args.output:
        _write_json(args.output, {"config": config.to_dict(), "method": how, "points": records})
    return EXIT_OK


def _parse_clusters(text: str | None, K: int) -> list[int]:
    if text is None:
        return list(range(K))
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as error:
        raise UsageError(f"--clusters expects comma-separated integers, got {text!r}") from error
    bad = [k for k in ids if not 0 <= k < K]
    if bad or not ids:
        raise UsageError(f"--clusters must name ids in 0..{K - 1}, got {text!r}")
    return ids


def cmd_unlearn(args, config) -> int:
    from ddm.attribution import margin_direction
    from ddm.evaluation import GroundTruth, measure_effect_scale
    from ddm.metrics import output_distance
    from ddm.training import accuracy

    experiment = _experiment(args, config)
    clustering = experiment.clusters()
    ids = _parse_clusters(args.clusters, clustering.num_clusters)
    logits = _timed(f"exact retraining of {len(ids)} leave-one-cluster-out models (or load)",
                    lambda: experiment.exact_retrain_logits([(k,) for k in ids], clustering,
                                                            order_seed=args.order_seed))   # (R, N_test, L)
    test = experiment.test
    base = experiment.target_logits(test.images)
    # The evaluation's ground truth over the whole test split, for the removed clusters only.
    truth = GroundTruth(torch.arange(len(test)), test.labels, base, margin_direction(base, test.labels),
                        logits, {}, {})
    change = np.abs(truth.exact_effects())                                          # (N_test, R)
    distance = output_distance(logits, base[None])                                  # (R,): Dist1 over the test set
    accs = [accuracy(l, test.labels) for l in logits]
    target_acc = accuracy(base, test.labels)
    print(f"target test accuracy {target_acc:.4f}; retrained: min {min(accs):.4f} / "
          f"mean {float(np.mean(accs)):.4f} / max {max(accs):.4f}")
    print(f"mean |margin change| over the test set per removal: min {float(change.mean(0).min()):.3f} / "
          f"mean {float(change.mean()):.3f} / max {float(change.mean(0).max()):.3f}; "
          f"predictions flipped {measure_effect_scale(truth).flipped_pct:.2f}%")
    if args.output:
        rows = [{"cluster": k, "class": int(clustering.cluster_class[k]), "size": int(clustering.sizes()[k]),
                 "test_accuracy": acc, "mean_abs_margin_change": float(change[:, i].mean()),
                 "dist1_x100": float(100 * distance[i])}
                for i, (k, acc) in enumerate(zip(ids, accs))]
        _write_json(args.output, {"config": config.to_dict(), "target_accuracy": target_acc,
                                  "order_seed": config.train.order_seed if args.order_seed is None else args.order_seed,
                                  "removals": rows})
    return EXIT_OK


DDM = "ddm"


def cmd_evaluate(args, config) -> int:
    from ddm import baselines
    from ddm.attribution import margin_effects
    from ddm.evaluation import (EXACT, NOISE_FLOOR, RANDOM, best_dist1_x100, calibration, comparison_table,
                                ddm_effects, fit_attribution, leave_one_out_ground_truth, score_methods)
    from ddm.training import accuracy

    experiment = _experiment(args, config)
    test = experiment.test
    target_acc = accuracy(experiment.target_logits(test.images), test.labels)
    clustering, synset = experiment.clusters(), experiment.synset()
    K = clustering.num_clusters
    truth = _timed(f"exact retraining of the {K} leave-one-cluster-out models and the noise floor (or load)",
                   lambda: leave_one_out_ground_truth(experiment, clustering))
    if config.online.n_perturbations > 0:
        masks, how = _perturbation_masks(K, config.online)
        W, _ = fit_attribution(experiment, synset, test.images[truth.test_index], masks)
        effects = margin_effects(W, truth.directions).numpy()                      # (N, K)
    else:
        effects, _ = ddm_effects(experiment, synset, truth)                         # (N, K)
        how = f"the {K} leave-one-out fine-tunes"
    random_pick = baselines.random_effects(len(truth.test_index), K, config.eval.seed)   # evaluation.RANDOM
    labels = {DDM: f"DDM ({how})"}
    scores = score_methods({DDM: effects, RANDOM: random_pick}, truth)
    ddm = scores[DDM]
    noise = scores.get(NOISE_FLOOR)
    summary = {
        "target_accuracy": target_acc, "K": K, "test_points": len(truth.test_index), "attribution": how,
        "spearman_mean": ddm.spearman, "spearman_ci95": list(ddm.interval),
        "top1_agreement": ddm.top1, "random_top1": 1.0 / K,
        "noise_floor_spearman": None if noise is None else noise.spearman,
        "dist1_x100_ddm": ddm.dist1_x100, "dist1_x100_random": scores[RANDOM].dist1_x100,
        "dist1_x100_best": best_dist1_x100(truth),
        "effect_scale_ddm_over_exact": calibration(effects, truth),
        "methods": {key: dataclasses.asdict(value) for key, value in scores.items()},
    }
    print(f"target test accuracy {target_acc:.4f}; K = {K}; {summary['test_points']} test points; "
          f"DDM attribution by {how}")
    print(comparison_table({DDM: effects, RANDOM: random_pick}, truth, labels).to_string(float_format=lambda v: f"{v:.3f}"))
    low, high = ddm.interval
    print(f"leave-one-out Spearman, DDM vs exact retraining: {ddm.spearman:+.3f} (95% interval {low:+.3f} .. "
          f"{high:+.3f}); exact retraining against itself in another data order: "
          + ("not measured (eval.noise_seeds is empty)" if noise is None else f"{noise.spearman:+.3f}"))
    print(f"top-1 agreement {ddm.top1:.2f} (random {1 / K:.2f}); Dist1 x100 of the located cluster "
          f"{ddm.dist1_x100:.3f} (random {summary['dist1_x100_random']:.3f}, "
          f"best possible {summary['dist1_x100_best']:.3f}, exact's own pick {scores[EXACT].dist1_x100:.3f})")
    print(f"mean |DDM effect| / mean |exact effect| = {summary['effect_scale_ddm_over_exact']:.2f} (1 = calibrated)")
    if args.output:
        _write_json(args.output, {"config": config.to_dict(), "summary": summary})
    return EXIT_OK


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN (an undefined correlation) as null, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    """``--output``: the JSON written atomically (the store's one write helper), never half a file."""
    atomic_write_text(json.dumps(_jsonable(data), indent=2, default=str, allow_nan=False) + "\n", path)
    print(f"wrote {path}")


COMMANDS = {"train": cmd_train, "cluster": cmd_cluster, "distill": cmd_distill, "attribute": cmd_attribute,
            "unlearn": cmd_unlearn, "evaluate": cmd_evaluate}


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """Run one stage; return the exit status (0 ok, 1 failure, 2 bad input)."""
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    try:
        if args.stage == "profiles":
            return cmd_profiles(args)
        config = build_config(args)
        return COMMANDS[args.stage](args, config)
    except ValueError as error:   # UsageError, DataError, ModelError, ClusteringError, bad overrides
        print(f"python -m ddm {args.stage}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as error:
        print(f"python -m ddm {args.stage}: cache error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept in the cache", file=sys.stderr)
        return 130
