"""Command line: ``python -m ddm <stage>`` runs one stage of an experiment, cached in the store.

Stages, in the order of the data flow (each runs the ones before it when their artifacts are
missing)::

    train      the target network's trajectory (Eq. 2)                      Experiment.target
    cluster    per-class clusters of the training set (Supp. 6.1)           Experiment.clusters
    distill    the synset by reverse gradient matching (Alg. 1, Eq. 6)      Experiment.synset
    attribute  perturbed models for the eval test points (Eq. 9), the
               attribution matrix (Eq. 7-8) and the top clusters            Experiment.perturbed_outputs
    unlearn    exact leave-one-cluster-out retraining of all K clusters     Experiment.exact_retrain_logits
    evaluate   target accuracy, K, and how well DDM's leave-one-out effects
               rank the clusters against exact retraining (Spearman)
    profiles   print the named profiles

Common options (after the stage name): ``--profile``, ``--dataset``, ``--model``, ``--device``,
``--data-root``, ``--cache-root``, ``--set section.field=value`` (repeatable) and ``--quiet``.
A bad profile, data set, model, device or field exits with status 2 and says what to change.

Examples::

    python -m ddm profiles
    python -m ddm train --profile quick --set train.epochs=3
    python -m ddm evaluate --profile ci --data-root ../shared/data --set eval.workers=2
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddm.config import PROFILES, ExperimentConfig, get_profile, resolve_cache_root
from ddm.store import StoreError

STAGES: tuple[str, ...] = ("train", "cluster", "distill", "attribute", "unlearn", "evaluate")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input; reported with exit status 2."""


# ---------------------------------------------------------------------------------------------
# Parsing --set and building the configuration
# ---------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """``--set`` values: JSON first (``3``, ``0.1``, ``true``, ``null``, ``[1, 2]``), then a Python
    literal (``True``, ``None``, ``(1, 2)``), else the text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_assignments(items: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """``["train.epochs=3", ...]`` -> ``{"train.epochs": (3, "3"), ...}`` (parsed value, raw text)."""
    out: dict[str, tuple[Any, str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects section.field=value (e.g. train.epochs=3), got {item!r}")
        out[key] = (parse_value(raw.strip()), raw.strip())
    return out


def _field_type(config: ExperimentConfig, key: str) -> str | None:
    """The annotation of ``section.field`` (or a top-level field) as text; None when unknown
    (``apply_overrides`` then reports the unknown name)."""
    section, _, name = key.rpartition(".")
    holder: Any = getattr(config, section, None) if section else config
    if holder is None or not dataclasses.is_dataclass(holder):
        return None
    for f in dataclasses.fields(holder):
        if f.name == name:
            return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return None


def coerce_value(key: str, value: Any, raw: str, type_text: str | None) -> Any:
    """Check a ``--set`` value against the field's annotation; convert where it is safe
    (an int for a float, a list for a tuple, the raw text for a string)."""
    if type_text is None:
        return value
    optional = "None" in type_text
    base = type_text.replace("| None", "").replace("None |", "").strip()
    if value is None:
        if optional:
            return None
        raise UsageError(f"{key} cannot be None (it is {base})")
    if base == "str":
        return value if isinstance(value, str) else raw
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key} expects true or false, got {raw!r}")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"{key} expects an integer, got {raw!r}")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UsageError(f"{key} expects a number, got {raw!r}")
    if base.startswith("tuple"):
        items = value if isinstance(value, (list, tuple)) else [value]
        if "int" in base and not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise UsageError(f"{key} expects integers, e.g. {key}=[1,2], got {raw!r}")
        return tuple(items)
    return value


def make_config(profile: str, assignments: Sequence[str] = (), dataset: str | None = None,
                model: str | None = None, device: str | None = None) -> ExperimentConfig:
    """The named profile with ``section.field=value`` overrides (checked against each field's
    type), then the data set, architecture and device when given. Raises ``ValueError`` (a
    :class:`UsageError` or the configuration's own) on any bad name or value."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    base = get_profile(profile)
    parsed = parse_assignments(assignments)
    for key, value in (("data.name", dataset), ("model.arch", model), ("device", device)):
        if value is not None:
            parsed[key] = (value, value)
    overrides = {key: coerce_value(key, value, raw, _field_type(base, key)) for key, (value, raw) in parsed.items()}
    config = get_profile(profile, **overrides)   # raises ValueError on an unknown section/field
    _check_device(config.device)
    return config


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    """:func:`make_config` from the parsed command line."""
    return make_config(args.profile, args.set or [], args.dataset, args.model, args.device)


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
    group.add_argument("--model", help="architecture (sets model.arch): convnet, alexnet, resnet18_ap, vit")
    group.add_argument("--device", help="cpu or cuda (sets device)")
    group.add_argument("--data-root", help="data root (default $DDM_DATA_ROOT, else ./data)")
    group.add_argument("--cache-root", help="artifact store (default $DDM_CACHE, else ./.cache)")
    group.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", default=[],
                       help="override one configuration field (repeatable), e.g. --set train.epochs=3")
    group.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; on a small, "
                       "loaded CPU 1 is often much faster than 2)")
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
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="target accuracy, K, and DDM's leave-one-out Spearman vs exact retraining")
    evaluate.add_argument("--output", type=Path, help="write the summary as JSON to this file")
    profiles = sub.add_parser("profiles", help="print the named profiles")
    profiles.add_argument("names", nargs="*", help="print these profiles in full (default: a summary of all)")
    return parser


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------

def _flatten(config: ExperimentConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.to_dict().items():
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

    experiment = Experiment.create(config, data_root=args.data_root, cache_root=args.cache_root,
                                   progress=not args.quiet)
    experiment.new_model()   # an unknown architecture or a size it cannot take fails here, early
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


def _attribution(experiment, points: torch.Tensor):
    """Perturbed outputs on the test points and the fitted W (K, N, L): leave-one-out masks, or
    Eq. 8 on random masks when ``online.n_perturbations`` > 0."""
    from ddm.attribution import fit_attribution_matrix, leave_one_out_attribution
    from ddm.online import leave_one_out_masks, random_masks

    config = experiment.config
    clustering = experiment.clusters()
    synset = experiment.synset()
    K = clustering.num_clusters
    images = experiment.test.images[points]
    base = experiment.target_logits(images)                                        # (N, L)
    if config.online.n_perturbations > 0:
        masks = random_masks(K, config.online.n_perturbations, config.online.delete_fraction, config.online.seed)
        outputs = experiment.perturbed_outputs(synset, masks, images)             # (P, N, L)
        W, _ = fit_attribution_matrix(masks, outputs.reshape(len(masks), -1))
        W = W.reshape(K, *base.shape)
        how = f"Eq. 8 on {len(masks)} random masks"
    else:
        outputs = experiment.perturbed_outputs(synset, leave_one_out_masks(K), images)
        W = leave_one_out_attribution(base, outputs)
        how = f"{K} leave-one-out masks"
    return clustering, base, W, how


def cmd_attribute(args, config) -> int:
    from ddm.attribution import margin_direction, margin_effects

    experiment = _experiment(args, config)
    points = experiment.test_point_indices()
    labels = experiment.test.labels[points]
    start = time.perf_counter()
    clustering, base, W, how = _attribution(experiment, points)
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
        records.append({"test_index": point, "label": label, "top_clusters": order,
                        "effects": effects[row].tolist()})
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
    from ddm.metrics import margins
    from ddm.training import accuracy

    experiment = _experiment(args, config)
    clustering = experiment.clusters()
    ids = _parse_clusters(args.clusters, clustering.num_clusters)
    logits = _timed(f"exact retraining of {len(ids)} leave-one-cluster-out models (or load)",
                    lambda: experiment.exact_retrain_logits([(k,) for k in ids], clustering,
                                                            order_seed=args.order_seed))   # (R, N_test, L)
    test = experiment.test
    base = experiment.target_logits(test.images)
    accs = [accuracy(l, test.labels) for l in logits]
    d = margin_direction(base, test.labels)
    change = (margins(base, d)[None] - margins(logits, d[None])).abs().mean(1)      # (R,)
    print(f"target test accuracy {accuracy(base, test.labels):.4f}; retrained: min {min(accs):.4f} / "
          f"mean {float(np.mean(accs)):.4f} / max {max(accs):.4f}")
    print(f"mean |margin change| over the test set per removal: min {float(change.min()):.3f} / "
          f"mean {float(change.mean()):.3f} / max {float(change.max()):.3f}")
    return EXIT_OK


def cmd_evaluate(args, config) -> int:
    from ddm.attribution import margin_direction, margin_effects
    from ddm.metrics import bootstrap_ci, dist1, margins, rowwise_spearman, top1_agreement
    from ddm.training import accuracy

    experiment = _experiment(args, config)
    test = experiment.test
    target_acc = accuracy(experiment.target_logits(test.images), test.labels)
    points = experiment.test_point_indices()
    labels = test.labels[points]
    clustering, base, W, how = _attribution(experiment, points)
    K = clustering.num_clusters
    d = margin_direction(base, labels)
    ddm_effects = margin_effects(W, d).numpy()                                      # (N, K)
    exact = experiment.exact_retrain_logits([(k,) for k in range(K)], clustering)[:, points]   # (K, N, L)
    exact_effects = (margins(base, d)[None] - margins(exact, d[None])).T.numpy()    # (N, K)
    rho = rowwise_spearman(ddm_effects, exact_effects)
    low, high = bootstrap_ci(rho, seed=config.eval.seed)
    top1 = top1_agreement(ddm_effects, exact_effects)
    d1 = dist1(exact, base[None]).T.numpy()                                         # (N, K): Dist1 of every pick
    picked = d1[np.arange(len(points)), ddm_effects.argmax(1)]
    scale = float(np.abs(ddm_effects).mean() / max(np.abs(exact_effects).mean(), 1e-12))
    summary = {
        "target_accuracy": target_acc, "K": K, "test_points": len(points), "attribution": how,
        "spearman_mean": float(np.nanmean(rho)), "spearman_ci95": [low, high],
        "top1_agreement": top1, "random_top1": 1.0 / K,
        "dist1_x100_ddm": float(100 * picked.mean()), "dist1_x100_random": float(100 * d1.mean()),
        "dist1_x100_best": float(100 * d1.max(1).mean()),
        "effect_scale_ddm_over_exact": scale,
    }
    print(f"target test accuracy {target_acc:.4f}; K = {K}; {len(points)} test points; attribution by {how}")
    print(f"leave-one-out Spearman, DDM vs exact retraining: {summary['spearman_mean']:+.3f} "
          f"(95% CI {low:+.3f} .. {high:+.3f})")
    print(f"top-1 agreement {top1:.2f} (random {1 / K:.2f}); Dist1 x100 of the picked cluster "
          f"{summary['dist1_x100_ddm']:.3f} (random {summary['dist1_x100_random']:.3f}, "
          f"best {summary['dist1_x100_best']:.3f})")
    print(f"mean |DDM effect| / mean |exact effect| = {scale:.2f} (1 = calibrated)")
    if args.output:
        _write_json(args.output, {"config": config.to_dict(), "summary": summary})
    return EXIT_OK


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
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
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
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
