"""Chapter 14 (ddm.chapters.transfer): Table 7 on tiny digits, the KD artifacts' store keys, the
KL ranking objective, and the verdict's thresholds on planted numbers."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import pytest
import torch

from ddm.chapters import base, transfer as chapter
from ddm.chapters.base import RunNumbers
from ddm.clustering import Clustering
from ddm.knowledge_distillation import adversary_config, kl_to_teacher
from ddm.training import predict_logits

from fixtures_core import experiment, one_thread, single_thread  # noqa: F401


@pytest.fixture(scope="module")
def result(experiment):
    with one_thread():
        return chapter.run(experiment, random_seeds=(0, 1))


def test_run_measures_every_headline(result) -> None:
    numbers = result.headline_numbers()
    assert set(numbers) == set(chapter.Result.headline_labels())
    missing = sorted(k for k, v in numbers.items() if v is None)
    assert not missing, f"not measured: {missing}"
    assert numbers["num_clusters"] == 20 and numbers["train_images"] == 300 and numbers["teacher_kind"] == "nasty"
    for name, value in numbers.items():
        if name.startswith("acc_"):
            assert 0 <= value <= 100, name
    for x in chapter.FRACTIONS:
        assert x <= numbers[f"removed_ddm_{x}"] < x + 15
    assert len(result.curves) == len(chapter.FRACTIONS) * (len(chapter.RANKING_LABELS) - 1 + 2)
    assert list(result.accuracy_table.columns) == ["0%", "10%", "20%", "30%", "40%"]
    assert result.accuracy_table.loc["paper, CIFAR-10 (Table 7): DDM", "20%"] == 94.2


def test_ddm_plus_is_ours_ranked_by_the_same_objective(experiment, result) -> None:
    """DDM+ (ours) is distilled from the same student with learnable soft labels, ranked by the
    paper's KL objective: the ranking given the paper's synset in its place is the paper's. Its
    numbers are marked as missing from the records that predate it; the verdict reads it."""
    clustering = experiment.clusters()
    plus = chapter.student_synset(experiment, chapter.KD, clustering, chapter.DDM_PLUS)
    paper_synset = chapter.student_synset(experiment, chapter.KD, clustering)
    assert plus.label_logits is not None and paper_synset.label_logits is None
    val_idx, _ = chapter.removal.validation_split(len(experiment.test), seed=experiment.config.eval.seed)
    with one_thread():
        orders, _ = chapter.rankings(experiment, chapter.KD, paper_synset, clustering, val_idx, (0,), paper_synset)
    assert list(orders[chapter.PLUS]) == list(orders["ddm"])
    assert chapter.Result.not_yet_recorded() == {f"acc_{chapter.PLUS}_{x}" for x in chapter.FRACTIONS}
    assert list(result.accuracy_table.index[:2]) == [f"ours: {chapter.RANKING_LABELS[k]}" for k in ("ddm", chapter.PLUS)]
    assert "DDM+ (ours, soft labels; not the paper's method, no row in Table 7)" in chapter.verdict(result)


def test_the_student_is_reproduced_exactly_by_a_retrain_that_removes_nothing(experiment, result) -> None:
    clustering = experiment.clusters()
    again = chapter.student_retrain_logits(experiment, chapter.KD, [()], clustering)[0]
    direct = predict_logits(experiment.new_model(), chapter.student(experiment, chapter.KD).final,
                            experiment.test.images)
    assert torch.equal(again, direct)


def test_kd_artifacts_never_share_a_key_with_the_plain_target(experiment, result) -> None:
    plain = experiment._key("model", "train")
    key = chapter.artifact_key(experiment, chapter.KD)
    assert key != plain and key["kd"] == dataclasses.asdict(chapter.KD)
    assert experiment.store.exists("kd_student", key) and not experiment.store.exists("kd_student", plain)
    other = chapter.artifact_key(experiment, dataclasses.replace(chapter.KD, alpha=0.5))
    assert other != key
    student = chapter.student(experiment, chapter.KD).final
    target = experiment.target().final
    assert any(not torch.equal(student[n], target[n]) for n in student)   # trained by another loss
    assert all(torch.equal(a, b) for a, b in zip(chapter.student(experiment, chapter.KD).checkpoints[0].values(),
                                                 experiment.target().checkpoints[0].values()))   # same theta_0


def test_the_nasty_teacher_is_trained_against_an_adversary_from_another_start(experiment) -> None:
    adversary = adversary_config(chapter.KD)
    assert adversary.teacher == "normal" and adversary.teacher_seed != chapter.KD.teacher_seed
    assert adversary_config(adversary) == adversary
    same_start = dataclasses.replace(chapter.KD, teacher="normal")     # a normal teacher from the nasty one's theta_0
    nasty, normal = chapter.teacher(experiment, chapter.KD), chapter.teacher(experiment, same_start)
    other = chapter.teacher(experiment, adversary)
    assert any(not torch.equal(nasty[n], normal[n]) for n in nasty)
    assert any(not torch.equal(normal[n], other[n]) for n in normal)
    x = experiment.train.images[:50]
    assert float(kl_to_teacher(chapter.teacher_logits(experiment, adversary, x),
                               chapter.teacher_logits(experiment, chapter.KD, x), 4.0).mean()) > 0


def test_the_kl_objective_ranks_the_cluster_that_brings_the_student_to_its_teacher_first() -> None:
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]])          # (V, L)
    unlearned = torch.stack([teacher + torch.tensor([[0.0, 1.5]]), teacher, teacher * 0])   # (K, V, L)
    objective = chapter.kl_objective(unlearned, teacher)
    assert float(objective[1]) == pytest.approx(0.0, abs=1e-7) and bool((objective[[0, 2]] > 0).all())
    from ddm import removal
    assert removal.harmful_first(objective)[0] == 1
    with pytest.raises(ValueError, match="expected logits"):
        chapter.kl_objective(unlearned[:, :1], teacher)


def test_cluster_kl_is_each_clusters_mean() -> None:
    clustering = Clustering(assignment=torch.tensor([0, 1, 1]), cluster_class=torch.tensor([0, 1]), method="test")
    teacher = torch.zeros(3, 2)
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
    got = chapter.cluster_kl(student, teacher, clustering)
    assert float(got[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(got[1]) == pytest.approx(float(kl_to_teacher(student[2], teacher[2])) / 2, rel=1e-6)


def _run(**values) -> RunNumbers:
    numbers = {"acc_student": 90.0, "acc_noise_floor": 89.0}
    for x in chapter.FRACTIONS:
        numbers.update({f"acc_random_{x}": 80.0, f"spread_random_{x}": 1.0})
    numbers.update(values)
    return RunNumbers(numbers, "cpu", "mnist", recorded=True)


def test_a_gap_must_exceed_the_noise_floor_and_half_the_seeds_spread() -> None:
    run = _run(acc_ddm_10=81.5, acc_ddm_20=81.5, acc_ddm_30=80.5, acc_ddm_40=78.0)
    above, below, _ = chapter._compare(run, "ddm", "random", chapter._noise_floor(run))
    assert (above, below) == ([10, 20], [40])
    text = "\n".join(chapter._reading(run))
    assert "clearly better than a random order at 2 of 4 shares (10%, 20%)" in text
    wide = _run(acc_ddm_10=81.5, acc_ddm_20=81.5, acc_ddm_30=80.5, acc_ddm_40=78.0,
                **{f"spread_random_{x}": 4.0 for x in chapter.FRACTIONS})     # margin 2.0: nothing is clear
    assert chapter._compare(wide, "ddm", "random", chapter._noise_floor(wide))[:2] == ([], [])


def test_the_verdict_reads_whether_the_teacher_teaches_and_removal_helps() -> None:
    run = _run(acc_teacher=95.0, acc_no_teacher=93.0, acc_student_normal_teacher=94.0, acc_ddm_10=92.5,
               teacher_kind="nasty")
    text = "\n".join(chapter._reading(run))
    assert "-3.0 points against the same network trained without a teacher (beyond the noise floor)" in text
    assert "scores 92.5% (+2.5 points against nothing removed, beyond the noise floor" in text
    near = _run(acc_teacher=95.0, acc_no_teacher=90.5, acc_student_normal_teacher=90.0, teacher_kind="normal")
    assert "(within the noise floor)" in "\n".join(chapter._reading(near))


def test_paper_values_are_table7_for_cifar10_only() -> None:
    values = chapter.paper_values("cifar10")
    assert values["acc_student"] == 94.1 and values["acc_ddm_20"] == 94.2 and values["acc_random_40"] == 85.8
    assert set(values) <= set(chapter.Result.headline_labels())
    assert chapter.paper_values("mnist") == {}


def test_figure_and_verdict_of_a_run(experiment, result) -> None:
    figures = chapter.figures(result, base.provenance(experiment))
    fig = figures["fig-kd-removal"]
    ours, printed = fig.axes[0], fig.axes[1]
    assert "Ours" in ours.get_title() and "Table 7" in printed.get_title()
    assert ours.get_xscale() == printed.get_xscale() == "linear"
    # the paper's rows sit on their own axes, ours never share them
    assert {line.get_label() for line in printed.get_lines()} == {chapter.RANKING_LABELS[k] for k in chapter.PAPER_ROWS}
    assert not any("paper" in line.get_label() for line in ours.get_lines())
    plt.close(fig)
    assert "this run" in chapter.verdict(result)
