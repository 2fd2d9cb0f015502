"""Peak resident memory of every stage, each in a fresh process.

Stages, in order (each a new Python process, so its peak is its own; later stages load what
earlier ones left in a fresh store):

    import    interpreter + torch + ddm, nothing loaded (the floor under every other row)
    data      Experiment.create: train and test split in memory
    target    training the target network, keeping the trajectory (Eq. 2)
    cluster   per-class k-means on pixels
    distill   reverse gradient matching (Alg. 1)
    online    the K leave-one-out perturbed models (looped fine-tunes) and their predictions
    online-vec  the same with finetune_vectorised
    exact     --exact-retrains leave-one-cluster-out retrains (eval.workers processes)

Two peaks are shown: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the stage's process (exact,
kept by the kernel), and, when psutil is importable (it comes with the notebook tools; it is not
required), the largest sum of RSS over the stage's process and all its children, sampled every
0.05 s: that is what parallel exact retrains (``eval.workers`` processes) hold together. The
tree sum counts pages shared between processes more than once, so it is an upper bound. The target for
the ``cpu`` profile on MNIST: every stage within 4 GiB. A run at ``--profile cpu`` takes long
(400 distillation steps); ``--distill-steps`` shortens it. Fewer steps do not lower the peak once
every checkpoint has been drawn (the real-gradient cache then holds all of them); the output says
when the steps were shortened.

    python benchmarks/bench_memory.py                              # ci profile, ~2-3 min
    python benchmarks/bench_memory.py --profile cpu --distill-steps 40
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import machine_line

STAGES = ("import", "data", "target", "cluster", "distill", "online", "online-vec", "exact")
BUDGET_GIB = 4.0
MARK = "RESULT "


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.make_parser(__doc__)
    parser.set_defaults(cache_root=None)
    parser.add_argument("--distill-steps", type=int, help="override distill.steps (shortens the distill stage)")
    parser.add_argument("--exact-retrains", type=int, default=2, help="exact retrains in the exact stage (default 2)")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of the stages")
    parser.add_argument("--keep", action="store_true", help="keep the fresh store afterwards")
    parser.add_argument("--stage", help=argparse.SUPPRESS)   # internal: run one stage in this process
    return parser.parse_args(argv)


def _gib(kib: int) -> float:
    return kib / 1024 ** 2


def run_stage(args: argparse.Namespace) -> None:
    """Child process: run one stage, print its peak memory as one JSON line."""
    start = time.perf_counter()
    note = ""
    if args.stage != "import":   # --threads reaches torch through the configuration (Experiment.create)
        from ddm.experiment import Experiment
        from ddm.online import leave_one_out_masks

        overrides = {"distill.steps": args.distill_steps} if args.distill_steps else {}
        config = common.config_from(args, overrides)
        exp = Experiment.create(config, data_root=args.data_root, cache_root=args.cache_root, progress=False)
        if args.stage == "target":
            exp.target()
        elif args.stage == "cluster":
            note = f"K = {exp.clusters().num_clusters}"
        elif args.stage == "distill":
            exp.synset()
            from ddm.matching import checkpoint_pairs
            n = len({t for t, _ in checkpoint_pairs(config.train.epochs, config.distill.method,
                                                     config.distill.pairing, config.distill.step_length)})
            expected = n * (1 - (1 - 1 / n) ** config.distill.steps)
            note = (f"{config.distill.steps} steps; real-gradient cache: {expected:.1f} of {n} "
                    "checkpoints expected to be drawn")
        elif args.stage in ("online", "online-vec"):
            import dataclasses
            online = dataclasses.replace(config.online, vectorised=args.stage == "online-vec")
            K = exp.clusters().num_clusters
            out = exp.perturbed_outputs(exp.synset(), leave_one_out_masks(K), exp.test.images[exp.test_point_indices()],
                                        online=online)
            note = f"{K} models x {out.shape[1]} points"
        elif args.stage == "exact":
            clustering = exp.clusters()
            n = min(args.exact_retrains, clustering.num_clusters)
            exp.exact_retrain_logits([(k,) for k in range(n)], clustering)
            note = f"{n} retrains, {config.eval.workers} worker(s)"
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(MARK + json.dumps({"stage": args.stage, "self_kib": self_kib,
                             "seconds": time.perf_counter() - start, "note": note}), flush=True)


def run_sampled(command: list[str], interval: float = 0.05) -> tuple[subprocess.CompletedProcess, int | None]:
    """Run ``command``; with psutil, also the largest RSS sum of its process tree (kiB)."""
    try:
        import psutil
    except ImportError:
        return subprocess.run(command, capture_output=True, text=True), None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        peak = 0
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(interval)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, proc.returncode, out.read(), err.read()), peak // 1024


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.stage:
        run_stage(args)
        return
    config = common.config_from(args, {"distill.steps": args.distill_steps} if args.distill_steps else {})
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        sys.exit(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    fresh = args.cache_root is None
    if fresh:
        store = Path(tempfile.mkdtemp(prefix=f"memory-{args.profile}-", dir=_bench_dir()))
    else:
        store = Path(args.cache_root)
    print(machine_line(config))   # each stage's child process applies config.threads
    print(f"profile {args.profile}: {config.data.name} {config.data.train_per_class}/class, "
          f"C = {config.clusters.clusters_per_class}, {config.model.arch} w{config.model.width} d{config.model.depth}, "
          f"tau {config.train.epochs}, distill {config.distill.steps} steps"
          + (f" (SHORTENED from the profile by --distill-steps)" if args.distill_steps else "")
          + f"; store {store}{' (fresh)' if fresh else ''}")
    passthrough = ["--profile", args.profile, "--threads", str(args.threads), "--data-root", args.data_root,
                   "--cache-root", str(store), "--exact-retrains", str(args.exact_retrains)]
    passthrough += [a for item in args.set for a in ("--set", item)]
    if args.distill_steps:
        passthrough += ["--distill-steps", str(args.distill_steps)]
    print(f"\n  {'stage':<11}{'peak RSS GiB':>13}{'tree sum GiB':>14}{'seconds':>9}  note")
    rows = []
    try:
        for stage in stages:
            result, tree_kib = run_sampled([sys.executable, __file__, "--stage", stage, *passthrough])
            lines = [l for l in result.stdout.splitlines() if l.startswith(MARK)]
            if result.returncode != 0 or not lines:
                print(f"  {stage:<11} FAILED (exit {result.returncode}):\n{result.stderr[-2000:]}")
                break
            row = json.loads(lines[-1][len(MARK):])
            row["tree_kib"] = tree_kib or 0
            rows.append(row)
            tree = f"{_gib(tree_kib):14.2f}" if tree_kib else f"{'-':>14}"
            print(f"  {stage:<11}{_gib(row['self_kib']):13.2f}{tree}{row['seconds']:9.1f}  {row['note']}")
    finally:
        if fresh and not args.keep:
            shutil.rmtree(store, ignore_errors=True)
    if rows:
        peak = max(max(r["self_kib"], r["tree_kib"]) for r in rows)
        print(f"\n  largest peak {_gib(peak):.2f} GiB: {'within' if _gib(peak) <= BUDGET_GIB else 'OVER'} "
              f"the {BUDGET_GIB:.0f} GiB budget")


def _bench_dir() -> str:
    path = Path(common.DEFAULT_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


if __name__ == "__main__":
    main()
