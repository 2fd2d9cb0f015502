"""Exact retrains on the Dask engine: 1 and 2 local workers against the serial run.

Times ``--retrains`` (6) leave-one-cluster-out exact retrains (``ddm.training.run_retrains``) of
the profile's network, at evenly spaced cluster ids, four ways:

    serial      this process, one job after another (eval.scheduler '', eval.workers 1)
    pool 2      2 spawned processes (eval.scheduler '', eval.workers 2), the engine before Dask
    dask 1      a dask.distributed LocalCluster of 1 one-thread worker process
    dask 2      the same with 2 workers (eval.scheduler 'local', eval.workers 2)

``--malloc-trim`` adds dask 1 and 2 on dask's default LocalCluster, whose workers get
MALLOC_TRIM_THRESHOLD_=65536 (as ``dask worker`` processes do); 'local' leaves glibc's default.

For Dask the cluster is started first (timed apart as "start": the scheduler, the worker
processes, importing torch and ddm in them) and the retrains are then sent to it by address, as
to any existing scheduler ("engine"). ``eval.scheduler='local'`` pays both. Printed: the times,
the speed-ups over serial with and without the start, the ratio dask 1 / dask 2 (the speed-up
of 2 workers over 1), and whether each run's parameters equal the serial run's bit for bit. On
2 cores shared with other work expect < 2x: the point is the engine, not this machine.

The clusters come from the cache (--cache-root); every retrain is recomputed on every run.

    python benchmarks/bench_retrain_engine.py                  # ci profile, ~2-4 min on 2 cores
    python benchmarks/bench_retrain_engine.py --retrains 4 --skip-pool --malloc-trim
"""

from __future__ import annotations

import argparse
import logging
import time
from contextlib import contextmanager

import numpy as np

import common
from common import machine_line, max_abs_diff, timer

from distributed import Client, LocalCluster  # noqa: E402

from ddm.experiment import Experiment  # noqa: E402
from ddm.models import count_parameters  # noqa: E402
from ddm.training import LOCAL_SCHEDULER, Params, RetrainJob, dask_client, run_retrains  # noqa: E402

SIZES: dict[str, object] = {}   # the ci profile as it is: MNIST, 1,000 images, K = 30, tau = 6


def parse_args(argv=None) -> argparse.Namespace:
    parser = common.make_parser(__doc__)
    parser.add_argument("--retrains", type=int, default=6, help="exact retrains per way (default 6)")
    parser.add_argument("--skip-pool", action="store_true", help="skip the 2-process pool run")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="also time dask 1 and 2 on dask's default LocalCluster (MALLOC_TRIM_THRESHOLD_=65536)")
    return parser.parse_args(argv)


def _warm(client: Client) -> None:
    """Import torch and ddm in every worker, so the engine time is the retrains' own."""
    def load() -> None:
        import ddm.training  # noqa: F401
    client.run(load)


@contextmanager
def dask_defaults_cluster(workers: int):
    """A LocalCluster as dask starts it by default (MALLOC_TRIM_THRESHOLD_=65536 in its workers, as
    `dask worker` has), where eval.scheduler='local' leaves glibc's default. Dask writes the
    variable into this process's environment too: run it after the other ways."""
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster, set_as_default=False) as client:
        yield client


def dask_run(workers: int, retrain, malloc_trim: bool = False) -> tuple[float, float, list[Params]]:
    """(start seconds, engine seconds, results) on a fresh LocalCluster of ``workers``: the one
    eval.scheduler='local' starts (``dask_client``), or dask's default one (``malloc_trim``)."""
    start = time.perf_counter()
    cluster = dask_defaults_cluster(workers) if malloc_trim else dask_client(LOCAL_SCHEDULER, workers)
    with cluster as client:
        _warm(client)
        started = time.perf_counter() - start
        begin = time.perf_counter()
        results = retrain(scheduler=client.scheduler.address)   # as to any existing scheduler
        engine = time.perf_counter() - begin
    return started, engine, results


def main(argv=None) -> None:
    args = parse_args(argv)
    exp = common.experiment_from(args, SIZES)
    config = exp.config
    clustering = exp.clusters()
    K = clustering.num_clusters
    ids = sorted(set(np.linspace(0, K - 1, max(1, min(args.retrains, K))).round().astype(int).tolist()))
    jobs = [RetrainJob(clustering.removal_mask([k]), config.train.order_seed) for k in ids]
    model = exp.new_model()

    def retrain(workers: int = 1, scheduler: str = "") -> list[Params]:
        return run_retrains(model, exp.initial_params(), exp.train.images, exp.train.labels, config.train, jobs,
                            workers=workers, progress=False, scheduler=scheduler)

    print(f"setup: {config.profile} profile, {config.data.name} {len(exp.train)} train images, "
          f"{config.model.arch} w{config.model.width} d{config.model.depth} ({count_parameters(model):,} params), "
          f"tau {config.train.epochs} epochs, batch {config.train.batch_size}; {len(jobs)} leave-one-cluster-out "
          f"retrains of K = {K} (clusters {ids}); workers use 1 torch thread, serial uses {config.threads or 'default'}")

    rows: list[tuple[str, float, float, list[Params]]] = []   # (way, start s, engine s, results)
    times: dict[str, float] = {}
    with timer(times, "serial"):
        serial = retrain()
    rows.append(("serial", 0.0, times["serial"], serial))
    if not args.skip_pool:
        with timer(times, "pool"):
            pooled = retrain(workers=2)
        rows.append(("pool 2 (processes)", 0.0, times["pool"], pooled))
    for workers in (1, 2):
        start, engine, results = dask_run(workers, retrain)
        rows.append((f"dask {workers} (LocalCluster)", start, engine, results))
    if args.malloc_trim:   # last: dask leaves the variable in this process's environment
        for workers in (1, 2):
            start, engine, results = dask_run(workers, retrain, malloc_trim=True)
            rows.append((f"dask {workers}, malloc trim", start, engine, results))

    print(f"\n  {'way':<24}{'start s':>9}{'engine s':>10}{'s/retrain':>11}{'vs serial':>11}"
          f"{'incl. start':>13}{'max |dparam| vs serial':>25}")
    base = times["serial"]
    for way, start, engine, results in rows:
        diff = max_abs_diff(serial, results)
        same = "identical" if diff == 0.0 else f"{diff:.1e}"
        print(f"  {way:<24}{start:>9.1f}{engine:>10.1f}{engine / len(jobs):>11.2f}{base / engine:>10.2f}x"
              f"{base / (start + engine):>12.2f}x{same:>25}")
    dask = {way: (start, engine) for way, start, engine, _ in rows if way.startswith("dask")}
    (s1, e1), (s2, e2) = dask["dask 1 (LocalCluster)"], dask["dask 2 (LocalCluster)"]
    print(f"\n  speed-up of 2 Dask workers over 1: {e1 / e2:.2f}x (engine), {(s1 + e1) / (s2 + e2):.2f}x "
          f"(incl. start); ideal 2x on 2 idle cores")
    if args.malloc_trim:
        (_, t1), (_, t2) = dask["dask 1, malloc trim"], dask["dask 2, malloc trim"]
        print(f"  dask's MALLOC_TRIM_THRESHOLD_=65536 over glibc's default (engine): {t1 / e1:.2f}x (1 worker), "
              f"{t2 / e2:.2f}x (2 workers); > 1: the trim is slower")
    print(f"  {machine_line()}")


if __name__ == "__main__":
    main()
