"""Tests of the command line (``python -m ddm``): profiles, bad input, and two tiny stages.

``main(argv)`` is called in-process (importing torch again in a subprocess costs more than the
stages themselves); one test runs ``python -m ddm`` for real to check the entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddm.cli import coerce_value, main, parse_value
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


def test_unknown_profile_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", "--profile", "nope", "--cache-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'nope'" in err and "quick" in err


@pytest.mark.parametrize(("assignment", "message"), [
    ("train.nope=3", "unknown field 'nope' in section 'train'"),
    ("nosection.epochs=3", "unknown configuration section 'nosection'"),
    ("train.epochs=abc", "train.epochs expects an integer"),
    ("train.epochs", "--set expects section.field=value"),
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


def test_parse_value_json_literal_string() -> None:
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("None") is None and parse_value("(1, 2)") == (1, 2)
    assert parse_value("mnist") == "mnist" and parse_value("folder:/x") == "folder:/x"


def test_coerce_value_follows_the_annotation() -> None:
    lr = coerce_value("train.lr", 1, "1", "float")
    assert lr == 1.0 and isinstance(lr, float)
    assert coerce_value("eval.noise_seeds", [1, 2], "[1,2]", "tuple[int, ...]") == (1, 2)
    assert coerce_value("data.name", 7, "7", "str") == "7"
    assert coerce_value("data.train_per_class", None, "null", "int | None") is None


def test_train_then_cluster_on_tiny_digits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["train", *TINY, "--cache-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "target: 1 epochs" in out and "test accuracy" in out
    assert any((tmp_path / "target").iterdir())
    assert main(["cluster", *TINY, "--cache-root", str(tmp_path)]) == 0
    assert "K = 50" in capsys.readouterr().out   # digits: 10 classes x 5 clusters (quick)
    assert main(["train", *TINY, "--cache-root", str(tmp_path)]) == 0   # second time: loaded from the cache


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "ddm", "train", "--profile", "nope", "--cache-root", str(tmp_path)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "unknown profile 'nope'" in result.stderr
