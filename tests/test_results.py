"""ddm.results: records round-trip, tampering is caught, and every committed record is valid."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ddm.chapters import CHAPTERS, module_for
from ddm.chapters.base import NOT_RECORDED_NOTE
from ddm.config import PROJECT_ROOT, config_hash, get_profile
from ddm.results import (
    RESULTS_ROOT,
    iter_record_files,
    load_results,
    record_name,
    record_path,
    record_results,
    records_beside,
    validate_record,
)

NUMBERS = {"spearman": 0.25, "top1": 3, "verdict": "not reproduced", "missing": None,
           "mnist": {"dist1_x100": 10.2, "dist2": 0.7}}


@pytest.fixture
def record_file(tmp_path: Path) -> Path:
    config = get_profile("quick")
    return record_results("quick", "03_online_attribution", NUMBERS, config,
                          command="make record PROFILE=quick", root=tmp_path)


def test_round_trip(tmp_path: Path, record_file: Path) -> None:
    assert record_file == tmp_path / "quick" / "03_online_attribution.json"
    record = load_results("quick", "03_online_attribution", root=tmp_path)
    assert record is not None
    assert validate_record(record, record_file) == []
    assert record["numbers"] == NUMBERS
    config = get_profile("quick").to_dict()
    assert record["config_hash"] == config_hash(config)  # tuples and lists hash alike
    assert record["config"]["train"]["epochs"] == config["train"]["epochs"]
    assert record["profile"] == "quick" and record["chapter"] == "03_online_attribution"
    assert record["dataset"] == "digits"  # the configuration's data set when none is named
    assert record["command"] == "make record PROFILE=quick"
    assert record["threads"] >= 1 and record["torch_version"]
    assert set(record["machine"]) >= {"node", "platform", "processor", "cpu_count"}
    assert record["date"].endswith("+00:00")
    assert not list(tmp_path.rglob("*.tmp")), "the atomic write left a temporary file"


def test_absent_record_is_none(tmp_path: Path) -> None:
    assert load_results("cpu", "01_clustering", root=tmp_path) is None
    assert records_beside("01_clustering", root=tmp_path) == []


def test_record_accepts_a_plain_dict_and_numpy_scalars(tmp_path: Path) -> None:
    import numpy as np

    config = get_profile("ci").to_dict()
    path = record_results("ci", "01_clustering", {"acc": np.float64(0.5), "n": np.int64(7)},
                          config, command="x", root=tmp_path)
    record = json.loads(path.read_text())
    assert record["numbers"] == {"acc": 0.5, "n": 7}
    assert validate_record(record, path) == []


def test_overwrite_replaces_the_record(tmp_path: Path, record_file: Path) -> None:
    record_results("quick", "03_online_attribution", {"spearman": 0.5}, get_profile("quick"),
                   command="again", root=tmp_path)
    record = load_results("quick", "03_online_attribution", root=tmp_path)
    assert record["numbers"] == {"spearman": 0.5} and record["command"] == "again"


def test_records_beside_prefers_the_slowest_profile(tmp_path: Path) -> None:
    for profile in ("ci", "cpu"):
        record_results(profile, "04_unlearning", {"acc": 1.0}, get_profile(profile),
                       command="x", root=tmp_path)
    assert [r["profile"] for r in records_beside("04_unlearning", root=tmp_path)] == ["cpu"]
    assert [r["profile"] for r in records_beside("04_unlearning", exclude="cpu", root=tmp_path)] == ["ci"]


def test_record_name_keeps_the_profiles_own_data_set_plain() -> None:
    assert record_name("03_online_attribution", "cpu", None) == "03_online_attribution"
    assert record_name("03_online_attribution", "cpu", "mnist") == "03_online_attribution"
    assert record_name("03_online_attribution", "cpu", "cifar10-jpeg") == "03_online_attribution.cifar10-jpeg"
    assert record_name("01_clustering", "quick", "mnist") == "01_clustering.mnist"
    # a folder path becomes a plain name that record_path accepts
    name = record_name("01_clustering", "ci", "folder:/data/my set")
    assert name == "01_clustering.folder-data-my-set"
    assert record_path("ci", name, root="r").name == f"{name}.json"


def test_records_beside_lists_every_data_set_of_the_slowest_profile(tmp_path: Path) -> None:
    cifar = get_profile("cpu", **{"data.name": "cifar10-jpeg"})
    record_results("cpu", record_name("04_unlearning", "cpu", "cifar10-jpeg"), {"acc": 2.0}, cifar,
                   command="x", root=tmp_path)
    record_results("cpu", "04_unlearning", {"acc": 1.0}, get_profile("cpu"), command="x", root=tmp_path)
    record_results("ci", "04_unlearning", {"acc": 3.0}, get_profile("ci"), command="x", root=tmp_path)
    found = records_beside("04_unlearning", exclude="quick", root=tmp_path)
    assert [(r["profile"], r["config"]["data"]["name"], r["numbers"]["acc"]) for r in found] == [
        ("cpu", "mnist", 1.0), ("cpu", "cifar10-jpeg", 2.0)]
    assert [r["profile"] for r in records_beside("04_unlearning", exclude="cpu", root=tmp_path)] == ["ci"]
    # another chapter whose name starts alike is not picked up
    assert records_beside("04_unlearning_extra", root=tmp_path) == []


def test_tampered_hash_is_rejected(record_file: Path) -> None:
    record = json.loads(record_file.read_text())
    record["config"]["train"]["epochs"] += 1  # the config no longer matches its hash
    problems = validate_record(record)
    assert any("config_hash" in p for p in problems)
    record_file.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="config_hash"):
        load_results("quick", "03_online_attribution", root=record_file.parent.parent)
    assert load_results("quick", "03_online_attribution", root=record_file.parent.parent,
                        validate=False) is not None


def test_edited_hash_is_rejected(record_file: Path) -> None:
    record = json.loads(record_file.read_text())
    record["config_hash"] = "0" * 12
    assert any("config_hash" in p for p in validate_record(record))


@pytest.mark.parametrize("field", ["schema_version", "profile", "chapter", "dataset", "numbers", "config",
                                   "config_hash", "date", "machine", "torch_version", "threads",
                                   "command"])
def test_missing_field_is_rejected(record_file: Path, field: str) -> None:
    record = json.loads(record_file.read_text())
    del record[field]
    assert f"missing field {field!r}" in validate_record(record)


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(threads="1"), "field 'threads'"),
    (lambda r: r.update(threads=True), "field 'threads'"),
    (lambda r: r["numbers"].update(bad=[1, 2]), "numbers.bad"),
    (lambda r: r["numbers"]["mnist"].update(bad={1, 2}), "numbers.mnist.bad"),
    (lambda r: r.update(schema_version=99), "schema_version"),
    (lambda r: r.update(date="yesterday"), "date"),
    (lambda r: r.update(profile="cpu"), "config.profile"),
    (lambda r: r.update(machine={}), "machine lacks"),
])
def test_wrong_content_is_rejected(record_file: Path, change, expected: str) -> None:
    record = json.loads(record_file.read_text())
    change(record)
    assert any(expected in p for p in validate_record(record)), validate_record(record)


def test_misplaced_file_is_rejected(record_file: Path, tmp_path: Path) -> None:
    record = json.loads(record_file.read_text())
    assert any("does not match" in p for p in validate_record(record, tmp_path / "cpu" / "x.json"))


def test_invalid_numbers_are_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not finite"):
        record_results("quick", "01_clustering", {"x": float("nan")}, get_profile("quick"),
                       command="x", root=tmp_path)
    with pytest.raises(ValueError, match="plain name"):
        record_path("quick", "../escape", root=tmp_path)
    assert not list(tmp_path.rglob("*.json"))


def test_a_record_of_the_first_schema_is_refused(record_file: Path) -> None:
    record = json.loads(record_file.read_text())
    record["schema_version"] = 1
    assert any("schema_version 1" in p for p in validate_record(record))


def test_not_a_dict() -> None:
    assert validate_record([1, 2]) != []


def test_results_folder_exists() -> None:
    assert RESULTS_ROOT == PROJECT_ROOT / "results"
    assert RESULTS_ROOT.is_dir(), "results/ (committed records of headline numbers) is missing"


COMMITTED = list(iter_record_files())
# Every chapter has a cpu record on MNIST (the profile's own data set) and on the CIFAR-10 JPEG copy.
RECORDED_DATASETS = {"mnist": "", "cifar10-jpeg": ".cifar10-jpeg"}


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_chapter_has_its_cpu_records(chapter: str) -> None:
    if not getattr(module_for(chapter), "RECORDS", True):   # the own-data chapter: the data are the reader's
        assert not list(RESULTS_ROOT.glob(f"*/{chapter}*.json")), f"{chapter} records nothing, yet has records"
        return
    for dataset, suffix in RECORDED_DATASETS.items():
        path = RESULTS_ROOT / "cpu" / f"{chapter}{suffix}.json"
        assert path.is_file(), f"{path.relative_to(PROJECT_ROOT)} is missing: make record PROFILE=cpu " \
                               f"DATA_ROOT=../shared/data DATASET={dataset}"
        assert json.loads(path.read_text())["dataset"] == dataset


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(RESULTS_ROOT)) for p in COMMITTED])
def test_committed_record_is_valid(path: Path) -> None:
    record = json.loads(path.read_text())
    assert validate_record(record, path) == []
    # Its numbers are exactly the headline fields of the chapter's Result, by field name, but for
    # those the chapter marks as added after its records were made (Result.not_yet_recorded()).
    module = module_for(record["chapter"])
    fields = set(module.Result.headline_labels())
    missing, unknown = fields - set(record["numbers"]), set(record["numbers"]) - fields
    assert not unknown and missing <= module.Result.not_yet_recorded(), (
        f"{path.name}: not recorded {sorted(missing)}, unknown {sorted(unknown)}: re-make it with make record")
    assert record["config"]["data"]["name"] == record["dataset"]


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_fields_not_yet_recorded_default_to_not_measured(chapter: str) -> None:
    """A field the chapter's records predate (marked by its note) defaults to None, so a page that
    reads an older record shows it as not measured instead of failing."""
    result = module_for(chapter).Result
    defaults = {f.name: f.default for f in dataclasses.fields(result)}
    assert all(defaults[name] is None for name in result.not_yet_recorded())


def test_a_noisy_configuration_is_recorded_with_its_noise(tmp_path: Path) -> None:
    """The noise section is left out of a clean configuration (so older records keep their hash)
    and kept in a noisy one: the record, its hash and the configuration's own hash agree."""
    clean = get_profile("quick")
    noisy = clean.with_overrides(**{"noise.fraction": 0.2})
    path = record_results("quick", "13_noisy_data", NUMBERS, noisy, command="x", root=tmp_path)
    record = load_results("quick", "13_noisy_data", root=tmp_path)
    assert record["config"]["noise"]["fraction"] == 0.2 and "noise" not in clean.to_dict()
    assert record["config_hash"] == config_hash(noisy) == config_hash(noisy.to_dict()) != config_hash(clean)
    assert config_hash(clean) == config_hash(clean.to_dict())
    assert validate_record(record, path) == []
