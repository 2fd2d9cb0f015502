"""Exact retrains on a Dask engine (ddm.training.run_retrains with ``scheduler``): a 2-worker
LocalCluster, or an existing scheduler by address, gives the serial run's parameters bit for bit;
the parent alone saves, so an interrupted batch keeps what finished and a second call retrains only
what is missing; bad settings fail at once with the fix in the message.

One LocalCluster (2 one-thread worker processes, the one ``"local"`` starts) serves the tests that
connect by address; ``"local"`` starts and closes its own. The module runs in 15-30 s on 2 cores.
"""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch

import ddm.experiment
from ddm.config import get_profile
from ddm.experiment import Experiment
from ddm.training import (LOCAL_SCHEDULER, SCHEDULER_ENV, RetrainJob, SchedulerError, check_scheduler,
                          dask_client, flatten_params, get_params, resolve_scheduler, run_retrains)

from fixtures_core import (DATA_ROOT, digits, single_thread, tiny_clustering, tiny_model,  # noqa: F401
                           tiny_train_config, tiny_trajectory)

distributed = pytest.importorskip("distributed")

# The quick profile shrunk to seconds (as tests/test_experiment.py): 400 digits, K = 20 clusters.
TINY = get_profile("quick", **{
    "data.train_per_class": 40, "data.test_per_class": 10, "model.width": 8, "train.epochs": 3,
    "train.lr": 0.05, "clusters.clusters_per_class": 2,
})
REMOVALS = [(0,), (5,), (11,), ()]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tiny_problem():
    data, clustering, trajectory = digits("train", 10), tiny_clustering(10, 2), tiny_trajectory()
    jobs = [RetrainJob(clustering.removal_mask([0]), 0), RetrainJob(clustering.removal_mask([5]), 1),
            RetrainJob(clustering.removal_mask([12]), 0)]
    return (tiny_model(), trajectory.checkpoints[0], data.images, data.labels, tiny_train_config(epochs=2), jobs)


@pytest.fixture(scope="module")
def scheduler_address():
    """An existing scheduler with 2 one-thread worker processes (the one 'local' starts), by address."""
    with dask_client(LOCAL_SCHEDULER, workers=2) as client:
        yield client.scheduler.address


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the same numbers
def test_a_two_worker_local_cluster_equals_the_serial_run_bit_for_bit(capfd) -> None:
    from distributed.deploy.spec import SpecCluster

    def open_clusters() -> set:
        return {c for c in list(SpecCluster._instances) if c.status.name not in ("closed", "closing")}

    before, environ = open_clusters(), dict(os.environ)
    model, *rest = _tiny_problem()
    untouched = flatten_params(get_params(model))
    serial = run_retrains(model, *rest, workers=1, progress=False)
    arrived: list[int] = []
    local = run_retrains(model, *rest, workers=2, progress=False, scheduler="local",
                         on_result=lambda i, params: arrived.append(i))
    assert len(serial) == len(local) == 3
    for a, b in zip(serial, local):
        assert _equal(a, b)   # same seeds, one thread each: bit-identical on CPU
        assert all(v.device.type == "cpu" for v in b.values())
    assert sorted(arrived) == [0, 1, 2]     # every job handed to the parent once
    assert not torch.equal(flatten_params(serial[0]), flatten_params(serial[1]))
    assert torch.equal(flatten_params(get_params(model)), untouched)
    # The cluster run_retrains started is closed again, and dask said nothing on stderr.
    assert open_clusters() == before
    assert dict(os.environ) == environ   # dask's pre-spawn variables (OMP_NUM_THREADS...) put back
    assert "distributed" not in capfd.readouterr().err


def test_an_existing_scheduler_by_address_gives_the_same_and_stays_up(scheduler_address) -> None:
    model, *rest = _tiny_problem()
    serial = run_retrains(model, *rest, progress=False)
    remote = run_retrains(model, *rest, progress=False, scheduler=scheduler_address)
    for a, b in zip(serial, remote):
        assert _equal(a, b)
    with distributed.Client(scheduler_address, timeout=10, set_as_default=False) as client:
        assert len(client.scheduler_info()["workers"]) == 2   # not closed by run_retrains


def test_an_error_in_the_parent_keeps_what_finished_and_cancels_the_rest(scheduler_address) -> None:
    model, *rest = _tiny_problem()
    saved: dict[int, dict] = {}

    def save_then_fail(i: int, params: dict) -> None:
        saved[i] = params
        raise KeyError("interrupted")

    with pytest.raises(KeyError, match="interrupted"):
        run_retrains(model, *rest, progress=False, scheduler=scheduler_address, on_result=save_then_fail)
    assert len(saved) == 1
    (i, params), = saved.items()
    assert _equal(params, run_retrains(model, rest[0], rest[1], rest[2], rest[3], [rest[4][i]], progress=False)[0])
    # Nothing of ours is left running on the shared scheduler.
    with distributed.Client(scheduler_address, timeout=10, set_as_default=False) as client:
        deadline = time.monotonic() + 10
        while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_exact_retrain_logits_on_dask_equal_serial_and_resume_only_what_is_missing(
        tmp_path, scheduler_address, monkeypatch) -> None:
    serial_exp = Experiment.create(TINY, data_root=DATA_ROOT, cache_root=tmp_path / "serial", progress=False)
    clustering = serial_exp.clusters()
    serial = serial_exp.exact_retrain_logits(REMOVALS, clustering)                 # (R, N_test, L)

    on_dask = TINY.with_overrides(**{"eval.scheduler": scheduler_address})
    exp = Experiment.create(on_dask, data_root=DATA_ROOT, cache_root=tmp_path / "dask", progress=False)
    first = exp.exact_retrain_logits(REMOVALS, clustering)
    assert torch.equal(first, serial)

    # An interrupted run: one artifact missing. The next call retrains that one alone.
    key = exp._key("model", "train", clustering=clustering.assignment.tolist(), removed=[5],
                   order_seed=TINY.train.order_seed)
    artifact = exp.store.path("retrain", key) / "artifact.pt"
    assert artifact.exists()
    artifact.unlink()
    calls: list[tuple[int, str]] = []
    real = ddm.experiment.run_retrains

    def spy(*args, **kwargs):
        calls.append((len(args[5]), kwargs["scheduler"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ddm.experiment, "run_retrains", spy)
    again = exp.exact_retrain_logits(REMOVALS, clustering)
    assert calls == [(1, scheduler_address)]
    assert torch.equal(again, serial)
    exp.exact_retrain_logits(REMOVALS, clustering)
    assert len(calls) == 1   # all cached: no engine started


# ----------------------------------------------------------------------------- errors
def test_an_unreachable_scheduler_fails_fast_naming_the_address_and_the_fix() -> None:
    model, *rest = _tiny_problem()
    address = f"tcp://127.0.0.1:{_unused_port()}"
    start = time.perf_counter()
    with pytest.raises(SchedulerError, match=f"cannot reach the Dask scheduler at {address}") as error:
        run_retrains(model, *rest, progress=False, scheduler=address, connect_timeout=1.0)
    assert time.perf_counter() - start < 10
    assert "'local'" in str(error.value) and "dask worker" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_an_unknown_scheduler_names_the_choices(tmp_path) -> None:
    model, *rest = _tiny_problem()
    for bad in ("lokal", "127.0.0.1:8786", "tcp://host", "http://host:8786"):
        with pytest.raises(SchedulerError, match="choose '' .*'local'.*tcp://"):
            run_retrains(model, *rest, progress=False, scheduler=bad)
    with pytest.raises(SchedulerError, match="eval.scheduler 'lokal'"):
        resolve_scheduler("lokal", environ={})
    with pytest.raises(SchedulerError, match=r"\$DDM_SCHEDULER 'sometimes'"):
        resolve_scheduler("", environ={SCHEDULER_ENV: "sometimes"})
    # The experiment checks the setting before any work.
    exp = Experiment.create(TINY.with_overrides(**{"eval.scheduler": "lokal"}), data_root=DATA_ROOT,
                            cache_root=tmp_path, progress=False)
    with pytest.raises(SchedulerError, match="unknown eval.scheduler"):
        exp.exact_retrain_logits([()], exp.clusters())


# ----------------------------------------------------------------------------- $DDM_SCHEDULER
def test_ddm_scheduler_overrides_only_an_empty_setting(monkeypatch) -> None:
    env = {SCHEDULER_ENV: " tcp://10.0.0.5:8786 "}
    assert resolve_scheduler("", environ={}) == ""
    assert resolve_scheduler("", environ=env) == "tcp://10.0.0.5:8786"
    assert resolve_scheduler("  ", environ=env) == "tcp://10.0.0.5:8786"
    assert resolve_scheduler("local", environ=env) == "local"               # the setting wins
    assert resolve_scheduler("tls://[::1]:8786", environ=env) == "tls://[::1]:8786"
    assert resolve_scheduler("", environ={SCHEDULER_ENV: ""}) == ""
    monkeypatch.setenv(SCHEDULER_ENV, "local")
    assert resolve_scheduler("") == "local"                                 # os.environ by default
    monkeypatch.delenv(SCHEDULER_ENV)
    assert resolve_scheduler("") == ""
    assert check_scheduler(" local ") == "local"


def test_the_setting_is_a_configuration_field_and_keys_no_artifact() -> None:
    assert TINY.eval.scheduler == ""
    for name in ("quick", "ci", "cpu", "paper"):
        assert get_profile(name).eval.scheduler == ""
    config = TINY.with_overrides(**{"eval.scheduler": "local"})
    assert config.eval.scheduler == "local"
    # Where retrains ran is not part of what they are: the same store key either way.
    a = Experiment(TINY, digits("train", 10), digits("test", 3), None, None)  # type: ignore[arg-type]
    b = Experiment(config, digits("train", 10), digits("test", 3), None, None)  # type: ignore[arg-type]
    assert a._key("model", "train", removed=[1]) == b._key("model", "train", removed=[1])
