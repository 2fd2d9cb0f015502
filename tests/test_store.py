"""The artifact store (ddm.store): config-keyed, refuses mismatches and corrupt files, computes once."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time

import pytest
import torch

from ddm.store import (ArtifactStore, StoreError, atomic_torch_save, atomic_write, atomic_write_text, load_checkpoint,
                       save_checkpoint)

CONFIG = {"train": {"lr": 0.01, "epochs": 3}, "model": {"width": 8}, "seeds": (1, 2)}
OTHER = {"train": {"lr": 0.02, "epochs": 3}, "model": {"width": 8}, "seeds": (1, 2)}


def test_save_load_round_trip(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    obj = {"weights": torch.arange(6.0).reshape(2, 3), "name": "x", "history": [1.0, 2.5]}
    assert not store.exists("target", CONFIG)
    folder = store.save("target", CONFIG, obj)
    assert store.exists("target", CONFIG) and not store.exists("target", OTHER)
    assert folder == store.path("target", CONFIG) and folder.parent == tmp_path / "target"
    assert json.loads((folder / "config.json").read_text())["train"] == {"epochs": 3, "lr": 0.01}
    loaded = store.load("target", CONFIG)
    assert torch.equal(loaded["weights"], obj["weights"])
    assert loaded["name"] == "x" and loaded["history"] == [1.0, 2.5]
    # exactly the two files, no temporary file left behind (whatever it would be named)
    assert sorted(p.name for p in folder.iterdir()) == ["artifact.pt", "config.json"]


def test_different_configurations_get_different_folders(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    assert store.path("target", CONFIG) != store.path("target", OTHER)
    assert store.path("target", CONFIG) != store.path("synset", CONFIG)
    assert store.path("target", CONFIG) == store.path("target", json.loads(json.dumps(CONFIG)))


def test_load_refuses_an_artifact_written_by_another_configuration(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    store.save("target", CONFIG, {"a": 1})
    # An artifact written by CONFIG found where OTHER's would be (a copied folder, a hash clash).
    shutil.copytree(store.path("target", CONFIG), store.path("target", OTHER))
    with pytest.raises(StoreError, match=r"another configuration.*differing keys: \['train.lr'\].*rm -r"):
        store.load("target", OTHER)


def test_load_of_a_missing_artifact_raises_store_error(tmp_path) -> None:
    with pytest.raises(StoreError, match="no config.json"):
        ArtifactStore(tmp_path).load("target", CONFIG)


def test_truncated_artifact_is_reported_as_corrupt_with_the_rm_command(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    folder = store.save("target", CONFIG, {"weights": torch.randn(100, 100)})
    artifact = folder / "artifact.pt"
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="corrupt") as info:
        store.load("target", CONFIG)
    assert f"rm -r {folder}" in str(info.value)
    # get_or_compute does not silently recompute over a corrupt artifact either.
    with pytest.raises(StoreError, match="corrupt"):
        store.get_or_compute("target", CONFIG, lambda: {"weights": torch.zeros(1)})


def test_get_or_compute_computes_once(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([len(calls)])

    first = store.get_or_compute("clusters", CONFIG, compute)
    second = store.get_or_compute("clusters", CONFIG, compute)
    assert len(calls) == 1 and torch.equal(first, second)
    store.get_or_compute("clusters", OTHER, compute)  # another configuration is another artifact
    assert len(calls) == 2
    # A fresh store object on the same root finds it too.
    assert torch.equal(ArtifactStore(tmp_path).get_or_compute("clusters", CONFIG, compute), first)
    assert len(calls) == 2


def test_store_without_root_keeps_nothing(tmp_path) -> None:
    store = ArtifactStore(None)
    calls = []
    for _ in range(2):
        store.get_or_compute("target", CONFIG, lambda: calls.append(1))
    assert len(calls) == 2
    assert not store.exists("target", CONFIG) and store.checkpoint_path("target", CONFIG) is None
    with pytest.raises(StoreError, match="keeps nothing"):
        store.path("target", CONFIG)


def test_checkpoint_path_and_clear(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    store.save("synset", CONFIG, 1)
    store.save("target", CONFIG, 2)
    assert store.checkpoint_path("synset", CONFIG) == store.path("synset", CONFIG) / "checkpoint.pt"
    store.clear("synset")
    assert not store.exists("synset", CONFIG) and store.exists("target", CONFIG)
    store.clear()
    assert not store.exists("target", CONFIG)


def test_corrupt_distillation_checkpoint_is_refused(tmp_path) -> None:
    """A truncated resumable checkpoint must not be half-read: the error names the file and the fix."""
    import pytest
    import torch

    from ddm.clustering import sequence_clusters
    from ddm.config import DistillConfig, TrainConfig
    from ddm.matching import distill_synset
    from ddm.models import make_model
    from ddm.store import StoreError
    from ddm.training import get_params, train_trajectory

    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 2
    model = make_model("convnet", 1, 2, 8, width=4, depth=2)
    trajectory = train_trajectory(model, get_params(model), images, labels, TrainConfig(epochs=2, batch_size=10))
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(StoreError, match="corrupt or truncated.*rm "):
        distill_synset(model, trajectory, images, labels, sequence_clusters(labels, 2), 2,
                       DistillConfig(steps=2, step_length=1), checkpoint_path=checkpoint, progress=False)


# ------------------------------------------------------------------------------------------------
# The one atomic-write helper and the checkpoint file I/O
# ------------------------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "deep" / "er" / "out.json"
    atomic_write_text('{"a": 1}', path)               # creates the folders
    assert path.read_text() == '{"a": 1}'
    atomic_write_text('{"a": 2}', path)
    assert path.read_text() == '{"a": 2}'
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(tmp_path / "w.pt")["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text("old", path)

    def half_then_fail(tmp) -> None:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]    # the temporary file is gone


def test_checkpoint_round_trip_and_absence(tmp_path) -> None:
    path = tmp_path / "synset" / "abc" / "checkpoint.pt"
    assert load_checkpoint(path) is None and load_checkpoint(None) is None
    state = {"syn": torch.randn(2, 1, 8, 8), "step": 7, "history": [0.5, 0.25]}
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["syn"], state["syn"]) and loaded["step"] == 7 and loaded["history"] == [0.5, 0.25]


def test_corrupt_checkpoint_names_the_file_and_the_fix(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"syn": torch.randn(50, 50)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError) as info:
        load_checkpoint(path)
    assert f"distillation checkpoint {path} is corrupt or truncated" in str(info.value)
    assert f"remove it (rm {path}) to restart the distillation" in str(info.value)


def _compute_slowly(root, started) -> None:
    def compute() -> dict:
        started.set()
        time.sleep(1.0)
        return {"made_by": "the other process"}

    ArtifactStore(root).get_or_compute("target", {"a": 1}, compute)


def test_a_second_process_waits_for_the_artifact_being_computed_instead_of_computing_it(tmp_path) -> None:
    context = multiprocessing.get_context("fork")
    started = context.Event()
    other = context.Process(target=_compute_slowly, args=(tmp_path, started))
    other.start()
    assert started.wait(60)

    def compute_again() -> dict:
        raise AssertionError("computed twice")

    assert ArtifactStore(tmp_path).get_or_compute("target", {"a": 1}, compute_again) == {
        "made_by": "the other process"}
    other.join(60)
    assert other.exitcode == 0


def test_claims_exclude_each_other_and_end_with_release(tmp_path) -> None:
    store = ArtifactStore(tmp_path)
    first = store.claim("retrain", {"a": 1}, wait=False)
    assert first is not None
    assert store.claim("retrain", {"a": 1}, wait=False) is None       # flock is per open file
    other = store.claim("retrain", {"a": 2}, wait=False)               # another artifact: free
    assert other is not None
    first.release()
    again = store.claim("retrain", {"a": 1}, wait=False)
    assert again is not None
    again.release()
    other.release()
    assert not (tmp_path / "retrain").exists(), "claims live apart from the artifacts"
    assert ArtifactStore(None).claim("retrain", {"a": 1}, wait=False) is not None
