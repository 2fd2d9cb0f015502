"""Tiny ImageNet in chapters 02 and 04: the paper's Fig. 5 (GM against reverse GM) and Table 4's
Tiny ImageNet row with our number beside the paper's, the CIFAR-100 line on both pages, the
per-profile settings and the sampled Fig. 7.

The two runs read the shared Tiny ImageNet subset (``../shared/data``, read-only: the store goes
to a temporary folder) at a tiny configuration: 2 training and 1 test image per class, one
cluster per class (K = 200), a width-8 ConvNet, 2 epochs, 2 distillation steps.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch

from ddm import book, datasets, paper
from ddm.chapters import base, reverse_matching as ch02, unlearning as ch04
from ddm.chapters.base import RunNumbers
from ddm.config import get_profile

from fixtures_core import one_thread

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
HAS_TINY = (SHARED_DATA / "tiny-imagenet" / "tiny-imagenet-200" / "wnids.txt").is_file()
needs_tiny = pytest.mark.skipif(not HAS_TINY, reason=f"no Tiny ImageNet subset under {SHARED_DATA}")

TINY = {"data.train_per_class": 2, "data.test_per_class": 1, "model.width": 8, "train.epochs": 2,
        "clusters.clusters_per_class": 1, "distill.steps": 2, "distill.step_length": 1,
        "online.finetune_steps": 2, "eval.n_test_points": 4, "eval.lds_masks": 2}


# ------------------------------------------------------------------------------------------ Table 4
class _Run:
    """A stand-in for a chapter result: only its numbers are read."""

    def __init__(self, dataset: str, **numbers) -> None:
        self._numbers = RunNumbers(numbers, "quick", dataset, recorded=False)

    def numbers(self) -> RunNumbers:
        return self._numbers


OURS = {"acc_theta0": 0.55, "acc_target": 6.25, "acc_ddm_finetune": 0.95, "acc_match_start": 0.55,
        "acc_match_trained": 3.15}


def test_table4_tiny_imagenet_row_shows_ours_beside_the_paper() -> None:
    mnist = RunNumbers({**OURS, "acc_target": 95.25}, "cpu", "mnist", recorded=True)
    table = ch04.table4(_Run("tiny-imagenet", **OURS), [mnist])
    tiny = table.loc[datasets.label("tiny-imagenet")]
    assert list(tiny.index) == list(ch04.TABLE4_ROUTES)
    printed = paper.TABLE4["tiny-imagenet"]
    assert tiny.loc["Normal", "paper: Acc(theta_tau) (%)"] == "37.5" and tiny.loc["DDM", "paper: Acc(theta_0) (%)"] == "0.1"
    assert tiny.loc["DDM-match", "paper: Acc(theta_tau) (%)"] == f"{printed['DDM-match'][1]:g}"
    # ours, beside each of the paper's numbers
    shown = {k: book.format_number(v, 3) for k, v in OURS.items()}
    assert shown["acc_ddm_finetune"] == "0.950"   # three significant digits, as every table shows them
    assert tiny.loc["Normal", "ours: Acc(theta_0) (%)"] == shown["acc_theta0"]
    assert tiny.loc["Normal", "ours: Acc(theta_tau) (%)"] == shown["acc_target"]
    assert tiny.loc["DDM", "ours: Acc(theta_0) (%)"] == shown["acc_ddm_finetune"]
    assert tiny.loc["DDM", "ours: Acc(theta_tau) (%)"] == shown["acc_target"]
    assert tiny.loc["DDM-match", "ours: Acc(theta_0) (%)"] == shown["acc_match_start"]
    assert tiny.loc["DDM-match", "ours: Acc(theta_tau) (%)"] == shown["acc_match_trained"]
    assert set(tiny["ours from"]) == {"this run (quick, Tiny ImageNet)"}
    assert set(tiny["chance (%)"]) == {book.format_number(0.5, 2)}
    # the recorded MNIST run fills MNIST's rows; no run: blank, and CIFAR-100 says why
    assert table.loc[("MNIST", "Normal"), "ours: Acc(theta_tau) (%)"] == book.format_number(95.25, 3)
    assert "recorded (cpu, MNIST)" == table.loc[("MNIST", "DDM"), "ours from"]
    cifar100 = table.loc[datasets.label("cifar100")]
    assert set(cifar100["ours: Acc(theta_0) (%)"]) == {""} and set(cifar100["ours: Acc(theta_tau) (%)"]) == {""}
    assert all("not available offline" in w and "`paper` profile" in w for w in cifar100["ours from"])
    assert set(table.loc[datasets.label("cifar10")]["ours from"]) == {"no run on this data set"}


def test_table4_prefers_this_run_and_takes_a_recorded_tiny_imagenet_run() -> None:
    recorded = RunNumbers({**OURS, "acc_target": 9.0}, "cpu", "tiny-imagenet", recorded=True)
    table = ch04.table4(_Run("digits", **OURS), [recorded])
    row = table.loc[(datasets.label("tiny-imagenet"), "Normal")]
    assert row["ours: Acc(theta_tau) (%)"] == book.format_number(9.0, 3) and row["ours from"] == "recorded (cpu, Tiny ImageNet)"
    # the digits run has no paper data set: it fills no row
    assert "this run" not in " ".join(table["ours from"])


# ------------------------------------------------------------------------------------------ verdict
def test_erasing_threshold_follows_what_the_target_learnt() -> None:
    assert ch04.erasing_threshold(10.0, 95.0) == ch04.ERASES_DROP              # MNIST-like: unchanged
    assert ch04.erasing_threshold(10.1, 40.8) == ch04.ERASES_DROP              # the CIFAR-10 record: unchanged
    assert ch04.erasing_threshold(0.5, 8.5) == pytest.approx(ch04.ERASES_SHARE * 8.0)
    threshold = ch04.ERASES_SHARE * 8.0

    def text(ddm: float) -> str:
        values = {**OURS, "acc_theta0": 0.5, "acc_target": 8.5, "acc_ddm_finetune": ddm}
        return "\n".join(ch04._reading(RunNumbers(values, "cpu", "tiny-imagenet", recorded=True)))

    assert "does erase" in text(8.5 - threshold - 0.1) and f"{ch04.ERASES_SHARE:.0%}" in text(1.0)
    assert "does **not** erase" in text(8.5 - threshold + 0.1)
    assert "(the paper, Tiny ImageNet: 1.4% to 7.8% against 37.5%)" in text(1.0)


def test_fig5_is_named_for_tiny_imagenet_only() -> None:
    assert ch02.paper_figure("tiny-imagenet") == "Fig. 5" == ch02.paper_figure(datasets.label("tiny-imagenet"))
    for name in ("mnist", "cifar10-jpeg", "digits", None, "folder:/x"):
        assert ch02.paper_figure(name) == "Fig. 4"
    numbers = {"nearest_real_ddm": 0.2, "nearest_real_match": 0.5}
    assert "Privacy (Fig. 5)" in "\n".join(ch02._reading(RunNumbers(numbers, "cpu", "tiny-imagenet", True)))
    assert "Privacy (Fig. 4)" in "\n".join(ch02._reading(RunNumbers(numbers, "cpu", "mnist", True)))


# ------------------------------------------------------------------------------------------ settings
def test_tiny_imagenet_settings_are_named_with_their_reason() -> None:
    settings = datasets.profile_settings("cpu", "tiny-imagenet")
    assert settings is not None and settings.reason
    assert datasets.profile_settings("cpu", "mnist") is None and datasets.profile_settings("cpu", "cifar10-jpeg") is None
    config = get_profile("cpu", **{"data.name": "tiny-imagenet", **settings.overrides}).to_dict()
    line = datasets.settings_line("cpu", "tiny-imagenet", config)
    per_class = settings.overrides["clusters.clusters_per_class"]
    assert f"K = 200 x {per_class} = {200 * per_class}" in line and "because" in line
    plain = datasets.settings_line("cpu", "tiny-imagenet", get_profile("cpu", **{"data.name": "tiny-imagenet"}).to_dict())
    assert "because" not in plain and "not all in effect" in plain
    assert "because" not in datasets.settings_line("cpu", "mnist", get_profile("cpu").to_dict())


def test_sampled_clusters() -> None:
    assert torch.equal(ch04.sampled_clusters(7, None, 0), torch.arange(7))
    assert torch.equal(ch04.sampled_clusters(7, 9, 0), torch.arange(7))
    sample = ch04.sampled_clusters(200, 10, 0)
    assert len(sample) == 10 == len(set(sample.tolist())) and torch.equal(sample, sample.sort().values)
    assert torch.equal(sample, ch04.sampled_clusters(200, 10, 0)) and not torch.equal(sample, ch04.sampled_clusters(200, 10, 1))
    with pytest.raises(ValueError, match="at least 2"):
        ch04.sampled_clusters(200, 1, 0)
    assert ch04.sample_for("cpu", "mnist") is None and ch04.sample_for("cpu", "cifar10-jpeg") is None


# ------------------------------------------------------------------------------------------ pages
def _sources(name: str) -> str:
    return "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / name, as_version=4).cells)


def test_cifar100_line_on_both_pages() -> None:
    assert "not available offline" in ch02.CIFAR100_LINE and "`paper` profile only" in ch02.CIFAR100_LINE
    assert "chapter.CIFAR100_LINE" in _sources("02_reverse_matching.ipynb")
    page = _sources("04_unlearning.ipynb")
    assert "CIFAR-100 is not available offline, so its rows run at the `paper`\nprofile only." in page
    assert "chapter.table4(result, recorded)" in page
    assert "result.sample_note" in page and "result.settings" in page
    assert "chapter.figure_note(result)" in _sources("02_reverse_matching.ipynb")


# ------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    return base.open_experiment("quick", SHARED_DATA, "tiny-imagenet", TINY,
                                cache_root=tmp_path_factory.mktemp("tiny-store"))


@needs_tiny
def test_fig5_on_a_tiny_tiny_imagenet_run(tiny_experiment) -> None:
    with one_thread():
        result = ch02.run(tiny_experiment, second_dataset="auto", reader_dataset="tiny-imagenet")
    assert result.dataset == "tiny-imagenet" and result.second_rows is None
    figure = ch02.synset_figure(result)
    assert figure._suptitle.get_text().startswith("The paper's Fig. 5, Tiny ImageNet.")
    assert len(figure.axes) == len(result.rows) * ch02.FIGURE_COLUMNS
    assert result.rows["real start"].shape[1:] == (3, 64, 64)
    note = ch02.figure_note(result)
    assert "paper's Fig. 5, on Tiny ImageNet" in note and "K = 200 clusters" in note and "K = 200 x 1 = 200" in note
    assert "Privacy (Fig. 5)" in ch02.verdict(result)


@needs_tiny
def test_table4_on_a_tiny_tiny_imagenet_run(tiny_experiment) -> None:
    sample = ch04.Sample(clusters=3, subsets=2, reason="a test")
    with one_thread():
        result = ch04.run(tiny_experiment, sample=sample)
    assert result.measured_clusters == 3
    assert result.per_cluster.groupby("method")["cluster"].nunique().eq(3).all()
    assert "3 of the K = 200 clusters" in result.sample_note and "2 random subsets" in result.sample_note
    row = ch04.table4(result).loc[datasets.label("tiny-imagenet")]
    assert row.loc["Normal", "ours: Acc(theta_tau) (%)"] not in ("", None)
    assert row.loc["DDM", "ours: Acc(theta_0) (%)"] == book.format_number(result.acc_ddm_finetune, 3)
    assert row.loc["DDM", "paper: Acc(theta_0) (%)"] == "0.1"
    beside = base.beside_paper(result, ch04.paper_values)
    assert "paper, Tiny ImageNet" in beside.columns


@needs_tiny
def test_a_chapter_opens_tiny_imagenet_with_the_profiles_own_settings_under_the_readers(tmp_path) -> None:
    exp = base.open_experiment("cpu", data_root=SHARED_DATA, dataset="tiny-imagenet", cache_root=tmp_path,
                               overrides={"train.epochs": 3})
    settings = datasets.profile_settings("cpu", "tiny-imagenet")
    config = exp.config.to_dict()
    for key, value in settings.overrides.items():
        section, name = key.split(".")
        assert config[section][name] == (3 if key == "train.epochs" else value), key   # the reader's override wins
    assert len(exp.train) == 200 * settings.overrides["data.train_per_class"]
    # a data set without settings of its own opens with the profile's configuration, unchanged
    assert base.open_experiment("cpu", data_root=SHARED_DATA, cache_root=tmp_path).config == get_profile("cpu")


def test_a_target_that_learnt_almost_nothing_is_not_judged_on_erasing() -> None:
    # the Tiny ImageNet record: theta_0 1.05%, target 1.2%, the whole synset's fine-tune 1.05%
    values = {**OURS, "acc_theta0": 1.05, "acc_target": 1.2, "acc_ddm_finetune": 1.05}
    text = "\n".join(ch04._reading(RunNumbers(values, "cpu", "tiny-imagenet", recorded=True)))
    assert "**not judged**" in text and "learnt only 0.1 points" in text
    assert "does erase" not in text and "does **not** erase" not in text
    learnt = {**values, "acc_target": 1.05 + ch04.LEARNT_LITTLE + 0.5, "acc_ddm_finetune": 1.05}
    assert "not judged" not in "\n".join(ch04._reading(RunNumbers(learnt, "cpu", "tiny-imagenet", recorded=True)))
