"""Recorded headline numbers: ``results/<profile>/<chapter>.json``, with their provenance.

A chapter run with ``record=True`` writes its headline numbers here; later builds at a faster
profile show them beside the live run. Each record carries what is needed to trust and re-make
it: the full configuration and its hash (:func:`ddm.config.config_hash`), the date, the machine,
the torch version and thread count, and the command that produced it. Records are committed;
``tests/test_results.py`` validates every one of them.

Record layout (``schema_version`` 2)::

    {
      "schema_version": 2,
      "profile": "cpu",                      # also the folder name
      "chapter": "03_online_attribution",    # the file name, with ".<dataset>" for another data set
      "dataset": "mnist",                    # the data set it ran on (DataConfig.name)
      "numbers": {"spearman_ddm": 0.25},     # the chapter Result's headline fields, by field name
      "config": {...},                       # ExperimentConfig.to_dict()
      "config_hash": "0123456789ab",         # config_hash(config)
      "date": "2026-11-30T12:00:00+00:00",   # UTC
      "machine": {"node": ..., "platform": ..., "processor": ..., "cpu_count": 2},
      "torch_version": "2.14.1",
      "threads": 1,                          # torch.get_num_threads()
      "command": "papermill notebooks/03_online_attribution.ipynb ... -p record True"
    }

``numbers`` maps the headline fields of the chapter's ``Result`` (:mod:`ddm.chapters`) to ints,
floats, strings or ``None`` (a quantity that could not be measured, never a stand-in value).
Schema 1 (before the chapters became typed modules) keyed numbers by label text; such records
are refused: re-make them with ``make record``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ddm.config import PROJECT_ROOT, config_hash
from ddm.store import atomic_write_text

SCHEMA_VERSION = 2
RESULTS_ROOT = PROJECT_ROOT / "results"
# Profiles from the slowest (most trustworthy) to the fastest: the order in which a chapter looks
# for a recorded run to show beside its live one.
PROFILE_ORDER = ("paper", "cpu", "ci", "quick")

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "profile": str,
    "chapter": str,
    "dataset": str,
    "numbers": dict,
    "config": dict,
    "config_hash": str,
    "date": str,
    "machine": dict,
    "torch_version": str,
    "threads": int,
    "command": str,
}
_MACHINE_FIELDS = ("node", "platform", "processor", "cpu_count")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def record_name(chapter: str, profile: str, dataset: str | None = None) -> str:
    """The record name of ``chapter`` run at ``profile`` on ``dataset``.

    The profile's own data set keeps the plain chapter name (``03_online_attribution``); another
    data set gets it as a suffix (``03_online_attribution.cifar10-jpeg``), so the runs of one
    chapter on two data sets sit side by side instead of overwriting each other.
    """
    from ddm.config import get_profile

    if dataset is None or profile not in PROFILE_ORDER or dataset == get_profile(profile).data.name:
        return chapter
    return f"{chapter}.{re.sub(r'[^A-Za-z0-9_-]+', '-', dataset).strip('-')}"


def record_path(profile: str, chapter: str, root: Path | str = RESULTS_ROOT) -> Path:
    """Where the record of ``chapter`` at ``profile`` lives: ``root/profile/chapter.json``."""
    for what, name in (("profile", profile), ("chapter", chapter)):
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{what} {name!r} is not a plain name (letters, digits, _ . -)")
    return Path(root) / profile / f"{chapter}.json"


def _plain_config(config: Any) -> dict[str, Any]:
    """The configuration as JSON data, exactly as it will read back (tuples become lists)."""
    if hasattr(config, "to_dict"):
        config = config.to_dict()   # an ExperimentConfig: without the sections a clean one leaves out
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or a configuration dataclass, not {type(config).__name__}")
    return json.loads(json.dumps(config, default=str))


def _machine() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def record_results(
    profile: str,
    chapter: str,
    numbers: Mapping[str, Any],
    config: Mapping[str, Any] | Any,
    command: str,
    root: Path | str = RESULTS_ROOT,
    dataset: str | None = None,
) -> Path:
    """Write the headline ``numbers`` of ``chapter`` at ``profile``; return the file's path.

    ``config`` is the full configuration (a dict, or an ``ExperimentConfig``); ``command`` is the
    command line that re-makes the record. The write is atomic (a temporary file in the same
    folder, then ``os.replace``), so an interrupted run never leaves half a record. The record is
    validated before it is written (:func:`validate_record`); a ``ValueError`` lists the problems.
    Non-finite floats (nan, inf) are refused: record ``None`` for a quantity that is undefined.
    """
    import torch

    path = record_path(profile, chapter, root)
    plain = _plain_config(config)
    record = {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "chapter": chapter,
        "dataset": dataset or plain.get("data", {}).get("name", ""),
        "numbers": _plain_numbers(numbers),
        "config": plain,
        "config_hash": config_hash(plain),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "torch_version": str(torch.__version__),
        "threads": int(torch.get_num_threads()),
        "command": command,
    }
    problems = validate_record(record)
    if problems:
        raise ValueError(f"refusing to record {path}: " + "; ".join(problems))

    atomic_write_text(json.dumps(record, indent=2, allow_nan=False) + "\n", path)
    return path


def _plain_numbers(numbers: Mapping[str, Any]) -> dict[str, Any]:
    """Convert numpy / torch scalars to Python numbers, recursively; leave anything else as is."""
    out: dict[str, Any] = {}
    for key, value in numbers.items():
        if isinstance(value, Mapping):
            out[key] = _plain_numbers(value)
        elif hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
            out[key] = value.item()  # numpy or torch scalar
        else:
            out[key] = value
    return out


def load_results(
    profile: str, chapter: str, root: Path | str = RESULTS_ROOT, validate: bool = True
) -> dict[str, Any] | None:
    """The record of ``chapter`` at ``profile``, or ``None`` when none was recorded.

    With ``validate`` (the default) a record that fails :func:`validate_record` raises a
    ``ValueError`` rather than being shown as a result.
    """
    path = record_path(profile, chapter, root)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if validate:
        problems = validate_record(record, path)
        if problems:
            raise ValueError(f"invalid record {path}: " + "; ".join(problems))
    return record


def records_beside(
    chapter: str,
    exclude: str | None = None,
    order: tuple[str, ...] = PROFILE_ORDER,
    root: Path | str = RESULTS_ROOT,
) -> list[dict[str, Any]]:
    """Every record of ``chapter``, on any data set, at the slowest profile (other than
    ``exclude``) that has one: the profile's own data set first, then the others by name.
    Empty when no profile has a record. A chapter running at ``quick`` calls
    ``records_beside(chapter, exclude="quick")`` to find the ``paper``, else ``cpu``, else ``ci``
    records to show beside its live numbers."""
    for profile in order:
        if profile == exclude:
            continue
        folder = Path(root) / profile
        names = [chapter] + sorted(p.stem for p in folder.glob(f"{chapter}.*.json"))
        found = [r for r in (load_results(profile, name, root) for name in names) if r is not None]
        if found:
            return found
    return []


def iter_record_files(root: Path | str = RESULTS_ROOT) -> Iterator[Path]:
    """Every record file under ``root`` (``root/<profile>/<chapter>.json``), sorted."""
    yield from sorted(Path(root).glob("*/*.json"))


def _check_numbers(numbers: Any, where: str, problems: list[str]) -> None:
    for key, value in numbers.items():
        name = f"{where}.{key}"
        if not isinstance(key, str):
            problems.append(f"{name}: key is not a string")
        if isinstance(value, dict):
            _check_numbers(value, name, problems)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name}: {value} is not finite (record None for an undefined quantity)")
        elif value is not None and not isinstance(value, (int, float, str)):
            problems.append(f"{name}: {type(value).__name__} is not a number, string or None")


def validate_record(record: Any, path: Path | str | None = None) -> list[str]:
    """Problems with a record (an empty list when it is sound).

    Checks that every field is present with its type, the schema version, that ``numbers`` holds
    only numbers, strings, ``None`` or nested dicts of those, that ``config_hash`` is the hash of
    ``config`` (so an edited configuration cannot pass for the one that ran), that
    ``config['profile']`` agrees with ``profile``, and, given ``path``, that the file sits at
    ``<profile>/<chapter>.json``.
    """
    if not isinstance(record, dict):
        return [f"a record is a JSON object, not {type(record).__name__}"]
    problems = []
    for name, kind in _FIELDS.items():
        if name not in record:
            problems.append(f"missing field {name!r}")
        elif isinstance(record[name], bool) or not isinstance(record[name], kind):
            problems.append(f"field {name!r} is {type(record[name]).__name__}, expected {kind.__name__}")
    if problems:
        return problems
    if record["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {record['schema_version']} is not {SCHEMA_VERSION}")
    for what in ("profile", "chapter"):
        if not _NAME.match(record[what]):
            problems.append(f"{what} {record[what]!r} is not a plain name")
    _check_numbers(record["numbers"], "numbers", problems)
    if config_hash(record["config"]) != record["config_hash"]:
        problems.append(f"config_hash {record['config_hash']!r} does not match the config "
                        f"(its hash is {config_hash(record['config'])!r})")
    if "profile" in record["config"] and record["config"]["profile"] != record["profile"]:
        problems.append(f"config.profile {record['config']['profile']!r} differs from "
                        f"profile {record['profile']!r}")
    missing = [k for k in _MACHINE_FIELDS if k not in record["machine"]]
    if missing:
        problems.append(f"machine lacks {missing}")
    try:
        _dt.datetime.fromisoformat(record["date"])
    except ValueError:
        problems.append(f"date {record['date']!r} is not ISO 8601")
    if path is not None:
        path = Path(path)
        if (path.parent.name, path.stem) != (record["profile"], record["chapter"]):
            problems.append(f"file {path.parent.name}/{path.name} does not match profile "
                            f"{record['profile']!r} and chapter {record['chapter']!r}")
    return problems
