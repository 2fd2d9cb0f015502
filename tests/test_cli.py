"""Tests of the command line (``python -m ddm``): profiles, bad input, threads, and every stage on
tiny digits (train, cluster; attribute, unlearn and evaluate checked against ddm.evaluation).

``main(argv)`` is called in-process (importing torch again in a subprocess costs more than the
stages themselves); one test runs ``python -m ddm`` for real to check the entry point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddm.experiment
from ddm.cli import main, make_config
from ddm.config import PROFILES

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--profile", "quick", "--quiet", "--threads", "1", "--set", "train.epochs=1", "--set", "model.width=8"]


@pytest.fixture(autouse=True)
def _restore_threads():
    """``--threads`` sets torch's global thread count; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_profiles_lists_every_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    for name in PROFILES:
        assert name in out


def test_profiles_prints_fields_of_one_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "ci"]) == 0
    out = capsys.readouterr().out
    assert "train.epochs = 6" in out and "data.name = 'mnist'" in out
    assert "noise.fraction = 0.0" in out   # a section left out of a clean configuration's dict is still listed


def test_unknown_profile_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--profile", "nope", "--cache-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "quick" in err


@pytest.mark.parametrize(("assignment", "message"), [
    ("train.nope=3", "unknown field 'nope' in section 'train'"),
    ("nosection.epochs=3", "unknown configuration section 'nosection'"),
    ("train.epochs=abc", "train.epochs expects an integer"),
    ("train.epochs", "an override is section.field=value (e.g. --set train.epochs=3)"),
    ("threads=-2", "threads must be an integer >= 0"),
])
def test_bad_set_exits_2(assignment: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--cache-root", str(tmp_path), "--set", assignment]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("option", "message"), [
    (["--dataset", "nope"], "unknown data set 'nope'"),
    (["--model", "nope"], "unknown architecture 'nope'"),
])
def test_bad_dataset_or_model_exits_2(option: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    assert main(["train", "--cache-root", str(tmp_path), "--quiet", *option]) == 2
    assert message in capsys.readouterr().err


def test_train_then_cluster_on_tiny_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["train", *TINY, "--cache-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(re.search(r"target: 1 epochs, final training loss [0-9.]+, test accuracy ([0-9.]+)", out)[1])
    assert 0 <= accuracy <= 1
    assert any((tmp_path / "target").iterdir())
    assert main(["cluster", *TINY, "--cache-root", str(tmp_path)]) == 0
    assert "K = 50" in capsys.readouterr().out   # digits: 10 classes x 5 clusters (quick)

    def refuse(*args, **kwargs):
        raise AssertionError("the cached target was trained again")

    monkeypatch.setattr(ddm.experiment, "train_trajectory", refuse)
    assert main(["train", *TINY, "--cache-root", str(tmp_path)]) == 0   # second time: loaded from the cache
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "ddm", "train", "--profile", "nope", "--cache-root", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "unknown profile 'nope'" in result.stderr


# ------------------------------------------------------------------------------------------------
# Threads: --threads is the configuration's threads, which Experiment.create applies
# ------------------------------------------------------------------------------------------------
def test_threads_option_is_the_configuration_setting() -> None:
    assert make_config("quick", threads=2).threads == 2
    assert make_config("quick").threads == PROFILES["quick"]().threads      # the profile's when not given
    assert make_config("quick", ["threads=3"]).threads == 3
    assert make_config("quick", ["threads=3"], threads=2).threads == 2      # the option wins over --set
    with pytest.raises(ValueError, match="threads must be an integer >= 0"):
        make_config("quick", threads=-1)


def test_cli_threads_reach_torch_through_the_experiment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = ddm.experiment.Experiment.create.__func__

    def spy(cls, config, *args, **kwargs):
        seen.append(config.threads)
        return original(cls, config, *args, **kwargs)

    monkeypatch.setattr(ddm.experiment.Experiment, "create", classmethod(spy))
    torch.set_num_threads(1)
    small = ["--profile", "quick", "--quiet", "--set", "model.width=8", "--set", "data.train_per_class=20",
             "--cache-root", str(tmp_path)]
    assert main(["cluster", *small, "--threads", "2"]) == 0
    assert seen == [2] and torch.get_num_threads() == 2
    assert ", 2 thread(s)," in capsys.readouterr().out
    assert main(["cluster", *small, "--threads", "-1"]) == 2
    assert "threads must be an integer >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# attribute, unlearn and evaluate: the protocol of ddm.evaluation, on a tiny configuration
# ------------------------------------------------------------------------------------------------
SMALL = ["--profile", "quick", "--quiet", "--threads", "1", "--set", "data.train_per_class=20",
         "--set", "data.test_per_class=4", "--set", "model.width=8", "--set", "train.epochs=4",
         "--set", "clusters.clusters_per_class=2", "--set", "distill.steps=8", "--set", "distill.step_length=1",
         "--set", "online.finetune_steps=3", "--set", "eval.n_test_points=8"]
K_SMALL = 20   # 10 classes x 2 clusters


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """One store for the module: the stages below share the target, clusters, synset and retrains."""
    return tmp_path_factory.mktemp("cli-store")


def _small_experiment(store: Path):
    """The experiment the command line builds for SMALL, opened directly (same store: nothing recomputed)."""
    from ddm.experiment import Experiment

    assignments = [SMALL[i + 1] for i, a in enumerate(SMALL) if a == "--set"]
    config = make_config("quick", assignments, threads=1)
    return Experiment.create(config, cache_root=store, progress=False)


def _run(stage: str, store: Path, *extra: str) -> int:
    return main([stage, *SMALL, "--cache-root", str(store), *extra])


def test_cli_evaluate_reports_what_evaluation_computes(small_store: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ddm.evaluation import best_dist1_x100, ddm_effects, leave_one_out_ground_truth, located_metrics
    from ddm.metrics import rowwise_spearman

    out_file = tmp_path / "evaluate.json"
    assert _run("evaluate", small_store, "--output", str(out_file)) == 0
    printed = capsys.readouterr().out
    record = json.loads(out_file.read_text())
    summary = record["summary"]
    assert record["config"]["threads"] == 1 and record["config"]["clusters"]["clusters_per_class"] == 2
    assert {"target_accuracy", "K", "test_points", "attribution", "spearman_mean", "spearman_ci95", "top1_agreement",
            "random_top1", "noise_floor_spearman", "dist1_x100_ddm", "dist1_x100_random", "dist1_x100_best",
            "effect_scale_ddm_over_exact", "methods"} <= set(summary)
    assert summary["K"] == K_SMALL and summary["test_points"] == 8 and summary["random_top1"] == 1 / K_SMALL
    assert 0.1 < summary["target_accuracy"] <= 1          # trained: better than chance on 10 classes
    low, high = summary["spearman_ci95"]
    assert -1 <= low <= summary["spearman_mean"] <= high <= 1
    assert -1 <= summary["noise_floor_spearman"] <= 1 and 0 <= summary["top1_agreement"] <= 1
    assert set(summary["methods"]) == {"ddm", "random", "noise_floor", "exact"}
    assert summary["methods"]["exact"]["spearman"] == 1.0 and summary["methods"]["exact"]["top1"] == 1.0
    assert 0 <= summary["dist1_x100_ddm"] <= summary["dist1_x100_best"]
    assert 0 <= summary["dist1_x100_random"] <= summary["dist1_x100_best"]
    assert summary["effect_scale_ddm_over_exact"] > 0
    assert f"{summary['spearman_mean']:+.3f}" in printed and "Noise floor" in printed

    # The same numbers from ddm.evaluation directly, on the experiment the command line built.
    exp = _small_experiment(small_store)
    truth = leave_one_out_ground_truth(exp, exp.clusters())
    effects, _ = ddm_effects(exp, exp.synset(), truth)
    assert summary["dist1_x100_ddm"] == pytest.approx(located_metrics(effects, truth)["dist1_x100"], rel=1e-6)
    assert summary["spearman_mean"] == pytest.approx(float(np.nanmean(rowwise_spearman(effects, truth.exact_effects()))))
    assert summary["dist1_x100_best"] == pytest.approx(best_dist1_x100(truth), rel=1e-6)


def test_cli_attribute_effects_are_the_leave_one_out_ones(small_store: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from ddm.evaluation import ddm_effects, leave_one_out_ground_truth

    out_file = tmp_path / "attribute.json"
    assert _run("attribute", small_store, "--top", "2", "--output", str(out_file)) == 0
    printed = capsys.readouterr().out
    record = json.loads(out_file.read_text())
    assert "leave-one-out" in record["method"]
    points = record["points"]
    exp = _small_experiment(small_store)
    assert [p["test_index"] for p in points] == exp.test_point_indices().tolist()
    effects = np.array([p["effects"] for p in points])                              # (N, K)
    assert effects.shape == (8, K_SMALL) and np.isfinite(effects).all()
    for p in points:
        assert len(p["top_clusters"]) == 2
        assert p["top_clusters"] == list(np.argsort(p["effects"])[::-1][:2])
        assert f"test {p['test_index']:5d} label {p['label']}" in printed
    # Eq. 8 on the leave-one-out masks and the unperturbed model is W_k = y(all) - y(without k):
    # the effects evaluation.ddm_effects measures.
    truth = leave_one_out_ground_truth(exp, exp.clusters())
    expected, _ = ddm_effects(exp, exp.synset(), truth)
    np.testing.assert_allclose(effects, expected, atol=1e-4)


def test_cli_attribute_with_random_perturbations(small_store: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "attribute.json"
    assert _run("attribute", small_store, "--set", "online.n_perturbations=30", "--output", str(out_file)) == 0
    record = json.loads(out_file.read_text())
    assert record["method"] == "Eq. 8 on 30 random masks"
    assert record["config"]["online"]["n_perturbations"] == 30
    effects = np.array([p["effects"] for p in record["points"]])
    assert effects.shape == (8, K_SMALL) and np.isfinite(effects).all() and np.abs(effects).max() > 0


def test_cli_unlearn_measures_the_evaluations_exact_effects(small_store: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from ddm.evaluation import leave_one_out_ground_truth
    from ddm.metrics import output_distance

    out_file = tmp_path / "unlearn.json"
    assert _run("unlearn", small_store, "--clusters", "0,3", "--output", str(out_file)) == 0
    record = json.loads(out_file.read_text())
    assert record["order_seed"] == 0 and [r["cluster"] for r in record["removals"]] == [0, 3]
    exp = _small_experiment(small_store)
    clustering = exp.clusters()
    everything = torch.arange(len(exp.test))
    truth = leave_one_out_ground_truth(exp, clustering, test_index=everything)
    exact = np.abs(truth.exact_effects())                                           # (N_test, K)
    for row in record["removals"]:
        k = row["cluster"]
        assert row["class"] == int(clustering.cluster_class[k]) and row["size"] == int(clustering.sizes()[k])
        assert 0 <= row["test_accuracy"] <= 1
        assert row["mean_abs_margin_change"] == pytest.approx(float(exact[:, k].mean()), rel=1e-5)
        assert row["dist1_x100"] == pytest.approx(
            100 * float(output_distance(truth.exact_logits[k], truth.target_logits)), rel=1e-5)
        assert row["mean_abs_margin_change"] > 0
    assert "predictions flipped" in capsys.readouterr().out
    assert _run("unlearn", small_store, "--clusters", "0,99") == 2
    assert "--clusters must name ids in 0..19" in capsys.readouterr().err
