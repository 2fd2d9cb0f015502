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
