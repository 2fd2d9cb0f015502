"""Configuration: frozen dataclasses for every stage and the named profiles.

Every artifact in the store is keyed by the hash of the configuration that made it, so a
changed learning rate can never silently reuse an old trajectory. The four profiles set the
scale of every experiment in the book:

- ``quick``: scikit-learn's bundled digits (8x8), runs anywhere offline in minutes;
- ``ci``: real MNIST (and the CIFAR-10 JPEG copy) from ``../shared/data``, small subsets;
- ``cpu``: the full tables on a CPU, hours;
- ``paper``: the paper's Table 5 settings, for a GPU.

Environment variables are read here (``DDM_DATA_ROOT``, ``DDM_CACHE``) and, for where exact retrains
run, by :func:`ddm.training.resolve_scheduler` (``DDM_SCHEDULER``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class DataConfig:
    name: str = _help("data set: digits, mnist, cifar10, cifar10-jpeg, cifar100, tiny-imagenet, or folder:PATH", "digits")
    train_per_class: int | None = _help("training images per class (None: all)", None)
    test_per_class: int | None = _help("test images per class (None: all)", None)
    seed: int = _help("seed of the balanced subset", 0)


@dataclass(frozen=True)
class ClusterConfig:
    clusters_per_class: int = _help("C, k-means clusters per class; K = L x C (Supp. 6.1)", 10)
    features: str = _help("pixels | learned | sequence ('DDM w/o cluster') | class (one group per class)", "pixels")
    seed: int = _help("seed of k-means", 0)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _help("convnet | alexnet | resnet18_ap | vit", "convnet")
    width: int = _help("width: ConvNet channels per layer; scales the other architectures too", 128)
    depth: int = _help("ConvNet depth (conv blocks)", 3)
    init: str = _help("kaiming | normal | xavier", "kaiming")
    seed: int = _help("seed of theta_0", 0)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _help("tau, epochs of target training (Eq. 2)", 30)
    lr: float = _help("learning rate of the network (Table 5: 0.001 MNIST, 0.01 CIFAR)", 0.01)
    momentum: float = _help("SGD momentum (the paper is silent; 0 keeps Eq. 2-3 exact)", 0.0)
    batch_size: int = _help("mini-batch size", 64)
    order_seed: int = _help("seed of the data order; the exact retrain reuses it", 0)


@dataclass(frozen=True)
class DistillConfig:
    method: str = _help("reverse (DDM, Eq. 6) | match (DDM-match, plain gradient matching) | displacement "
                        "(our ablation: the whole trajectory's push of a cluster, at theta_tau)", "reverse")
    pairing: str = _help("eq6: theta_t with theta_{tau-t}; alg1: theta_t with theta_{t+s}", "alg1")
    step_length: int = _help("s, the step length of Algorithm 1 (Table 5: 4)", 4)
    steps: int = _help("distillation iterations", 200)
    lr_img: float = _help("learning rate of the synthetic images (Table 5: 0.1; Sec. 4.1: 10)", 0.1)
    momentum_img: float = _help("momentum of the image optimiser (as in gradient matching)", 0.5)
    ipc: int = _help("synthetic images per cluster", 1)
    distance: str = _help("layerwise_cosine | cosine | mse | layerwise_cosine_norm (our ablation)", "layerwise_cosine")
    soft_labels: bool = _help("OUR EXTENSION, not the paper's: learnable soft labels", False)
    lr_label: float = _help("learning rate of the soft-label logits", 1.0)
    real_batch: int = _help("real images per cluster per gradient (0: the whole cluster)", 0)
    seed: int = _help("seed of initial images and of the sampled checkpoints", 0)
    checkpoint_every: int = _help("save a resumable checkpoint every n steps", 50)


@dataclass(frozen=True)
class OnlineConfig:
    finetune_steps: int = _help("T, fine-tuning steps on the deleted synsets (Eq. 9)", 10)
    finetune_lr: float = _help("learning rate of the fine-tune (paper: the training lr)", 0.01)
    n_perturbations: int = _help("|P|, random perturbation masks (>= K)", 0)
    delete_fraction: float = _help("expected fraction of clusters a random mask deletes", 0.1)
    vectorised: bool | None = _help("True: all perturbed models at once (torch.func.vmap); False: a loop; "
                                    "None: measured choice (vmap for one-cluster masks, loop otherwise)", None)
    seed: int = _help("seed of the perturbation masks", 0)


@dataclass(frozen=True)
class EvalConfig:
    n_test_points: int = _help("random test points (paper: 20)", 20)
    noise_seeds: tuple[int, ...] = _help("data-order seeds of the retrains that measure the noise floor", (1,))
    lds_masks: int = _help("random cluster masks retrained exactly for the LDS", 10)
    lds_keep_fraction: float = _help("fraction of clusters kept in an LDS mask", 0.5)
    seed: int = _help("seed of the test points and masks", 0)
    workers: int = _help("parallel processes for exact retrains", 1)
    scheduler: str = _help("where exact retrains run: '' (this process, or eval.workers processes), 'local' "
                           "(a dask.distributed LocalCluster of eval.workers one-thread workers), or a Dask "
                           "scheduler address tcp://host:port; empty: $DDM_SCHEDULER, else ''", "")


@dataclass(frozen=True)
class InfluenceConfig:
    """The influence-function baselines of Table 2 (ddm.influence, through dattri)."""

    regularization: float = _help("damping added to every Hessian before inverting it (LiSSA's damping too)", 0.01)
    lissa_depth: int = _help("LiSSA: recursion depth (converges over about lissa_scaling / regularization steps)", 1000)
    lissa_batch: int = _help("LiSSA: training images per recursion step", 50)
    lissa_scaling: float = _help("LiSSA: scaling that keeps the recursion convergent (> the Hessian's top eigenvalue)", 10.0)
    lissa_queries: int = _help("LiSSA: (test point, class) queries whose recursions run at once (memory)", 20)
    fastif_neighbours: int = _help("FastIF: candidate training images per test point (k nearest in feature space)", 100)
    fastif_cg_iterations: int = _help("FastIF: conjugate-gradient iterations of its inverse-Hessian-vector product", 5)
    arnoldi_rank: int = _help("Scaleup: top Hessian eigenvectors kept by the Arnoldi projection (all must be positive)", 20)
    arnoldi_iterations: int = _help("Scaleup: Arnoldi iterations (> rank)", 60)
    arnoldi_data: float = _help("Scaleup: share of the training batches the Hessian-vector products see", 0.25)
    trak_dim: int = _help("TRAK: random projection dimension (< the training images)", 200)
    gradient_batch: int = _help("training images per batch of full-network per-sample gradients (memory)", 250)
    seed: int = _help("seed of the Arnoldi start vector and of TRAK's projection", 0)


@dataclass(frozen=True)
class NoiseConfig:
    """Noisy training images (Supp. 9.2, Table 6; :mod:`ddm.noise`). ``fraction`` 0 (the default)
    leaves the data clean, and a clean configuration's store keys and recorded hash are exactly
    those it had before this section existed."""

    fraction: float = _help("share of the training images that get noise (Table 6: 0.2); 0: none", 0.0)
    norm: float = _help("norm of each image's noise, on the [0, 1] pixel scale (Table 6: 0.1)", 0.1)
    kind: str = _help("linf (largest pixel change equals norm) | l2 (Euclidean norm of the whole image's noise)",
                      "linf")
    seed: int = _help("seed of the noisy images' choice and of their noise", 0)


@dataclass(frozen=True)
class ExperimentConfig:
    profile: str = "quick"
    data: DataConfig = field(default_factory=DataConfig)
    clusters: ClusterConfig = field(default_factory=ClusterConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    device: str = "cpu"
    threads: int = 1  # torch CPU threads; 0 keeps torch's default. Not part of any artifact key.
    noise: NoiseConfig = field(default_factory=NoiseConfig)   # clean data unless noise.fraction > 0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.noise == NoiseConfig():
            # A section added after the first records: left out at its default, so a clean
            # configuration's dict (and the hash recorded with it) is what it always was.
            del out["noise"]
        return out

    def with_overrides(self, **overrides: Any) -> "ExperimentConfig":
        """Return a copy with dotted overrides, e.g. ``{"train.epochs": 5, "data.name": "mnist"}``."""
        return apply_overrides(self, overrides)


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a configuration (a dataclass or plain JSON-able data)."""
    if isinstance(obj, ExperimentConfig):
        obj = obj.to_dict()   # without the sections a clean configuration leaves out (noise)
    elif dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


TOP_LEVEL_FIELDS = ("device", "profile", "threads")


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def _field(key: str) -> dataclasses.Field:
    """The dataclass field an override ``section.field`` (or a top-level name) refers to; a
    ``ValueError`` naming the valid choices when there is none."""
    config = ExperimentConfig()
    if "." not in key:
        if key not in TOP_LEVEL_FIELDS:
            raise ValueError(f"unknown top-level override {key!r}; {_suggest(key, TOP_LEVEL_FIELDS)}"
                             f"use section.field (e.g. train.epochs) or one of {list(TOP_LEVEL_FIELDS)}")
        return next(f for f in dataclasses.fields(config) if f.name == key)
    section, name = key.split(".", 1)
    sections = [f.name for f in dataclasses.fields(config) if dataclasses.is_dataclass(getattr(config, f.name))]
    if section not in sections:
        raise ValueError(f"unknown configuration section {section!r} in override {key!r}; "
                         f"{_suggest(section, sections)}sections are {sections}")
    fields = {f.name: f for f in dataclasses.fields(getattr(config, section))}
    if name not in fields:
        raise ValueError(f"unknown field {name!r} in section {section!r}; {_suggest(name, fields)}"
                         f"fields are {list(fields)} ('python -m ddm profiles quick' prints every field)")
    return fields[name]


def check_threads(threads: Any) -> int:
    """``threads`` must be an integer >= 0 (0 keeps torch's own choice)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"threads must be an integer >= 0 (the torch CPU threads; 0 keeps torch's default), "
                         f"got {threads!r}")
    return threads


def apply_overrides(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """Replace fields named ``section.field`` (or top-level ``device``/``profile``/``threads``).
    The values are used as given; :func:`apply_text_overrides` parses and type-checks text."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None and "." not in key:
            continue
        _field(key)   # raises on an unknown section or field
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
        else:
            top[key] = check_threads(value) if key == "threads" else value
    replaced = {s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items()}
    return dataclasses.replace(config, **replaced, **top)


# ---------------------------------------------------------------------------------------------
# Overrides given as text (the command line's --set section.field=value, the benchmarks)
# ---------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """An override's text: JSON first (``3``, ``0.1``, ``true``, ``null``, ``[1, 2]``), then a
    Python literal (``True``, ``None``, ``(1, 2)``), else the text itself as a string."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def field_type(key: str) -> str:
    """The annotation of ``section.field`` (or a top-level field) as text, e.g. ``'int | None'``;
    a ``ValueError`` naming the valid fields when the key is unknown."""
    annotation = _field(key).type
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def coerce_value(key: str, value: Any, raw: str, type_text: str) -> Any:
    """Check a parsed override against the field's annotation ``type_text``; convert where it is
    safe (an int for a float, a list for a tuple, the raw text for a string)."""
    optional = "None" in type_text
    base = type_text.replace("| None", "").replace("None |", "").strip()
    if value is None:
        if optional:
            return None
        raise ValueError(f"{key} cannot be None (it is {base})")
    if base == "str":
        return value if isinstance(value, str) else raw
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key} expects true or false, got {raw!r}")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{key} expects an integer, got {raw!r}")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{key} expects a number, got {raw!r}")
    if base.startswith("tuple"):
        items = value if isinstance(value, (list, tuple)) else [value]
        if "int" in base and not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise ValueError(f"{key} expects integers, e.g. {key}=[1,2], got {raw!r}")
        return tuple(items)
    return value


def check_override(key: str, value: Any, raw: str | None = None) -> Any:
    """A Python value for field ``key``, checked against the field's type (and ``threads`` >= 0)."""
    checked = coerce_value(key, value, str(value) if raw is None else raw, field_type(key))
    return check_threads(checked) if key == "threads" else checked


def parse_override(key: str, text: str) -> Any:
    """The typed value of ``section.field=text``: ``parse_override("train.epochs", "3") == 3``.
    Raises ``ValueError`` for an unknown field or a value of the wrong type, naming the fix."""
    text = text.strip()
    return check_override(key.strip(), parse_value(text), text)


def split_assignment(item: str) -> tuple[str, str]:
    """``"train.epochs=3"`` -> ``("train.epochs", "3")``."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"an override is section.field=value (e.g. --set train.epochs=3), got {item!r}")
    return key.strip(), raw.strip()


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["train.epochs=3", "data.name=mnist"]`` -> ``{"train.epochs": 3, "data.name": "mnist"}``,
    every value type-checked (:func:`parse_override`); a later item wins over an earlier one."""
    out: dict[str, Any] = {}
    for item in items:
        key, raw = split_assignment(item)
        out[key] = parse_override(key, raw)
    return out


def apply_text_overrides(config: ExperimentConfig, items: Iterable[str]) -> ExperimentConfig:
    """``config`` with ``section.field=value`` overrides given as text, each type-checked."""
    return apply_overrides(config, parse_assignments(items))


def _profile_quick() -> ExperimentConfig:
    return ExperimentConfig(
        profile="quick",
        data=DataConfig(name="digits", train_per_class=None, test_per_class=None),
        clusters=ClusterConfig(clusters_per_class=5),
        model=ModelConfig(arch="convnet", width=32, depth=2),
        train=TrainConfig(epochs=10, lr=0.05, batch_size=32),
        distill=DistillConfig(steps=200, step_length=2, lr_img=0.1),
        online=OnlineConfig(finetune_steps=10, finetune_lr=0.05),
        eval=EvalConfig(n_test_points=20, noise_seeds=(1,), lds_masks=20),
    )


def _profile_ci() -> ExperimentConfig:
    return ExperimentConfig(
        profile="ci",
        data=DataConfig(name="mnist", train_per_class=100, test_per_class=50),
        clusters=ClusterConfig(clusters_per_class=3),
        model=ModelConfig(arch="convnet", width=32, depth=3),
        train=TrainConfig(epochs=6, lr=0.05, batch_size=32),
        distill=DistillConfig(steps=100, step_length=2, lr_img=0.1),
        online=OnlineConfig(finetune_steps=6, finetune_lr=0.05),
        eval=EvalConfig(n_test_points=20, noise_seeds=(1,), lds_masks=10),
    )


def _profile_cpu() -> ExperimentConfig:
    return ExperimentConfig(
        profile="cpu",
        # The paper's K = 100 (C = 10) on 2,000 MNIST images; sized so that every exact retrain
        # the chapters need (~220 of ~18 s each, two at a time) fits in about an hour of a 2-core CPU.
        data=DataConfig(name="mnist", train_per_class=200, test_per_class=100),
        clusters=ClusterConfig(clusters_per_class=10),
        model=ModelConfig(arch="convnet", width=32, depth=3),
        train=TrainConfig(epochs=8, lr=0.05, batch_size=64),
        distill=DistillConfig(steps=300, step_length=4, lr_img=0.1),
        online=OnlineConfig(finetune_steps=8, finetune_lr=0.05),
        eval=EvalConfig(n_test_points=20, noise_seeds=(1,), lds_masks=20, workers=2),
    )


def _profile_paper() -> ExperimentConfig:
    # Table 5 (MNIST row): lr_net 0.001, lr_img 0.1, 30 epochs, step length 4, cosine; C = 10.
    return ExperimentConfig(
        profile="paper",
        data=DataConfig(name="mnist"),
        clusters=ClusterConfig(clusters_per_class=10),
        model=ModelConfig(arch="convnet", width=128, depth=3),
        train=TrainConfig(epochs=30, lr=0.001, batch_size=256),
        distill=DistillConfig(steps=1000, step_length=4, lr_img=0.1),
        online=OnlineConfig(finetune_steps=30, finetune_lr=0.001),
        eval=EvalConfig(n_test_points=20, noise_seeds=(1, 2), lds_masks=100),
        device="cuda",
        threads=0,
    )


PROFILES = {"quick": _profile_quick, "ci": _profile_ci, "cpu": _profile_cpu, "paper": _profile_paper}


def get_profile(name: str, **overrides: Any) -> ExperimentConfig:
    """The named profile's configuration, with optional dotted overrides."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return apply_overrides(PROFILES[name](), overrides)


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """Data root: the argument, else ``$DDM_DATA_ROOT``, else the project's ``data/``."""
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get("DDM_DATA_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    return PROJECT_ROOT / "data"


def resolve_cache_root(root: str | os.PathLike | None = None) -> Path:
    """Artifact store root: the argument, else ``$DDM_CACHE``, else the project's ``.cache/``."""
    if root:
        return Path(root).expanduser().resolve()
    env = os.environ.get("DDM_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return PROJECT_ROOT / ".cache"
