"""Shared plumbing of the benchmark scripts: options, threads, the machine line, timing.

Benchmarks print ratios measured in one run; they never assert on time. Every script sets
torch's thread count explicitly (``--threads``, default 1: on a small CPU shared with other
work, two threads were measured 10-40x slower than one) and prints it with the machine. The
count is the configuration's ``threads`` (:func:`config_from`), which ``Experiment.create``
applies: the one thread setting of the package.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # run as `python benchmarks/x.py` without installing ddm
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ddm.cli import make_config  # noqa: E402
from ddm.config import ExperimentConfig  # noqa: E402

DEFAULT_CACHE = "/tmp/ddm-bench-cache"

# ddm.matching logs float(objective) of a tensor that requires grad; harmless, but it clutters output.
warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")


def default_data_root() -> str:
    """$DDM_DATA_ROOT, else the shared data beside the checkout, else the project's data/."""
    if os.environ.get("DDM_DATA_ROOT"):
        return os.environ["DDM_DATA_ROOT"]
    shared = ROOT.parent / "shared" / "data"
    return str(shared if shared.is_dir() else ROOT / "data")


def make_parser(doc: str, profile: str = "ci") -> argparse.ArgumentParser:
    """A script's parser: its docstring's first paragraph as description, plus the options every
    benchmark shares (:func:`add_common_args`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, profile)
    return parser


def add_common_args(parser: argparse.ArgumentParser, profile: str = "ci") -> None:
    parser.add_argument("--profile", default=profile, help=f"base profile (default {profile})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a configuration field (repeatable), applied after the script's own sizes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--data-root", default=default_data_root(), help="data root (default: %(default)s)")
    parser.add_argument("--cache-root", default=DEFAULT_CACHE,
                        help="artifact store for the cached target/clusters (default %(default)s)")


def config_from(args: argparse.Namespace, sizes: dict[str, object]) -> ExperimentConfig:
    """The profile, the script's default sizes, then the user's --set overrides, with
    ``--threads`` as the configuration's ``threads`` (applied by ``Experiment.create``)."""
    items = [f"{k}={v}" for k, v in sizes.items()] + list(args.set)
    return make_config(args.profile, items, threads=args.threads)


def experiment_from(args: argparse.Namespace, sizes: dict[str, object]):
    """The benchmark's experiment (:func:`config_from`), after which the machine line is printed:
    Experiment.create applies config.threads, which the line reports."""
    from ddm.experiment import Experiment

    exp = Experiment.create(config_from(args, sizes), data_root=args.data_root, cache_root=args.cache_root,
                            progress=False)
    print(machine_line())
    return exp


def machine_line(config: ExperimentConfig | None = None) -> str:
    """The machine, load, versions and thread count of a run: ``config.threads`` when given (a
    process that builds no Experiment), else torch's current count."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    threads = config.threads if config is not None and config.threads else torch.get_num_threads()
    return (f"machine: {platform.node()} {platform.machine()} ({os.cpu_count()} cores, load "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}), python {platform.python_version()}, "
            f"torch {torch.__version__}, threads {threads}, "
            f"{_dt.datetime.now().astimezone().isoformat(timespec='minutes')}")


@contextmanager
def timer(result: dict, key: str):
    """``with timer(times, "online"):`` stores the elapsed seconds in ``times["online"]``."""
    start = time.perf_counter()
    yield
    result[key] = time.perf_counter() - start


def best_of(repeats: int, fn):
    """Run ``fn`` ``repeats`` times; return (minimum seconds, last result). The minimum is the
    least disturbed by other processes on a shared machine."""
    best, out = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def max_abs_diff(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> float:
    """Largest absolute difference between two lists of parameter dicts."""
    return max(float((x[k] - y[k]).abs().max()) for x, y in zip(a, b) for k in x)
