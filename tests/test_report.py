"""ddm.report: the choices a chapter makes before it computes anything."""

from __future__ import annotations

from ddm import report


def test_no_second_data_set_offline_or_when_it_equals_the_first() -> None:
    assert report.second_dataset_synsets("quick", "auto", None, {}) is None
    assert report.second_dataset_synsets("ci", None, None, {}) is None
    assert report.second_dataset_synsets("ci", "mnist", None, {}) is None  # ci runs on MNIST
    assert report.second_dataset_synsets("cpu", "cifar10-jpeg", None,
                                         {"data.name": "cifar10-jpeg"}) is None


def test_versus_paper_labels_the_paper_column_with_the_data_set() -> None:
    table = report.versus_paper("no_such_chapter", "quick", {"acc": 1.0}, {"acc": 2.0}, dataset="mnist")
    assert list(table.columns) == ["ours (this run, quick)", "ours (recorded: none)", "paper (MNIST)"]
    assert table.loc["acc"].tolist() == ["1.00", "", "2.00"]


def test_versus_paper_with_a_function_gives_one_paper_column_per_data_set() -> None:
    table = report.versus_paper("no_such_chapter", "ci", {"Acc theta_0 (%)": 10.0}, report.unlearning_paper_values,
                                dataset="cifar10-jpeg")
    assert list(table.columns) == ["ours (this run, ci)", "ours (recorded: none)", "paper (CIFAR-10)"]
    assert table.loc["Acc theta_0 (%)"].tolist() == ["10.0", "", "12.6"]  # Table 4, CIFAR-10, Normal
    # data the paper never used: no paper values, one blank paper column
    table = report.versus_paper("no_such_chapter", "quick", {"x": 1.0}, report.unlearning_paper_values,
                                dataset="digits")
    assert list(table.columns) == ["ours (this run, quick)", "ours (recorded: none)", "paper"]


def test_paper_values_follow_the_papers_tables() -> None:
    assert report.attribution_paper_values("mnist")["Dist1 x100, DDM"] == 10.8
    assert report.attribution_paper_values("cifar10-jpeg")["hierarchical speed-up (x)"] == 5.0
    assert report.attribution_paper_values("digits") == {}
    assert report.removal_paper_values("mnist")["accuracy after removing 10%, DDM (%)"] == 95.9
    assert report.removal_paper_values("cifar10") == {}
    assert report.removal_paper_curves("mnist")["Random"] == {1: 95.8, 10: 92.8, 20: 74.6, 50: 65.9}
