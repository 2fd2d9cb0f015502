"""What every chapter module shares: typed results, records, the tables beside the paper, verdicts.

A chapter module (``ddm/chapters/<name>.py``) has

- ``CHAPTER``: its notebook's stem, e.g. ``"03_online_attribution"`` (also its record's name);
- ``Result``: a frozen, keyword-only dataclass derived from :class:`ChapterResult`. Its headline
  numbers are fields declared with :func:`headline` (typed, labelled in words; these and only
  these are recorded), its tables are fields declared with :func:`table` (DataFrames), and
  anything else a figure needs is declared with :func:`detail`;
- ``run(exp, ...) -> Result``: the measurement;
- ``paper_values(dataset) -> dict``: the paper's number for each headline field it reports, for
  one of the paper's data sets (``"mnist"``, ``"cifar10"``, ...), keyed by field name;
- ``verdict(result, recorded=()) -> str``: plain words computed from the numbers of this run and
  of every recorded run (:func:`recorded_runs`), each with the threshold it uses named.

Nothing is keyed by a table's row position or a label's text: a verdict reads ``result.<field>``
or, for a recorded run, the same field name in the record.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ddm import book, datasets, results
from ddm.config import ExperimentConfig, get_profile
from ddm.experiment import Experiment

_MISSING = dataclasses.MISSING


NOT_RECORDED_NOTE = "added after the cpu records were made: measured in this run only (make record adds it)"
"""The note that marks a headline field as added after the chapter's records
(:meth:`ChapterResult.not_yet_recorded`), which ``tests/test_results.py`` lets them lack until re-made."""


def headline(label: str, *, digits: int = 3, default: Any = _MISSING, note: str = "") -> Any:
    """A headline number of a chapter: recorded, shown in the tables under ``label``, read by verdicts.

    ``digits`` is how many significant digits the tables show; ``note`` is printed beside it.
    A headline that could not be measured in a run is ``None`` (give ``default=None``).
    """
    metadata = {"headline": label, "digits": digits, "note": note}
    if default is _MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def table(label: str) -> Any:
    """A table of the chapter (a DataFrame), shown in the notebook, never recorded."""
    return field(metadata={"table": label}, repr=False, compare=False)


def detail(default: Any = _MISSING) -> Any:
    """Anything else the chapter's figures need (arrays, synsets, clusterings): never recorded."""
    if default is _MISSING:
        return field(metadata={"detail": True}, repr=False, compare=False)
    return field(default=default, metadata={"detail": True}, repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class ChapterResult:
    """The base of every chapter's result: which profile and data set produced it."""

    profile: str
    dataset: str

    @classmethod
    def headline_labels(cls) -> dict[str, str]:
        """Field name -> label in words, for every headline field, in declaration order."""
        return {f.name: f.metadata["headline"] for f in dataclasses.fields(cls) if "headline" in f.metadata}

    @classmethod
    def not_yet_recorded(cls) -> frozenset[str]:
        """The headline fields added after the chapter's records were made: those whose note says
        so (:data:`NOT_RECORDED_NOTE`); ``tests/test_results.py`` lets a record lack exactly these."""
        return frozenset(name for name, note in cls.headline_notes().items() if NOT_RECORDED_NOTE in note)

    @classmethod
    def headline_digits(cls) -> dict[str, int]:
        return {f.name: f.metadata["digits"] for f in dataclasses.fields(cls) if "headline" in f.metadata}

    @classmethod
    def headline_notes(cls) -> dict[str, str]:
        return {f.name: f.metadata["note"] for f in dataclasses.fields(cls) if f.metadata.get("note")}

    def headline_numbers(self) -> dict[str, Any]:
        """Field name -> plain Python number (or None / str) for every headline field."""
        return {name: plain_number(getattr(self, name)) for name in self.headline_labels()}

    def tables(self) -> dict[str, pd.DataFrame]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if "table" in f.metadata}

    def numbers(self) -> "RunNumbers":
        """This run's headline numbers as a verdict reads them."""
        return RunNumbers(self.headline_numbers(), self.profile, self.dataset, recorded=False)


def result_class(base: type, generated: Mapping[str, tuple[Any, Any]], extra: Sequence[tuple[str, Any, Any]],
                 module: str) -> type:
    """The ``Result`` of a chapter whose headline fields come in families (one per stage, method
    or sweep point) made by a loop instead of written out: ``generated`` maps a field name to
    ``(type, headline(...))``, ``extra`` lists ``(name, type, table(...) or detail(...))``. A
    frozen, keyword-only dataclass on ``base`` (a :class:`ChapterResult` with the fixed fields),
    like the hand-written ones."""
    fields = [(name, kind, spec) for name, (kind, spec) in generated.items()]
    return dataclasses.make_dataclass("Result", fields + list(extra), bases=(base,), frozen=True, kw_only=True,
                                      namespace={"__module__": module})


def plain_number(value: Any) -> Any:
    """numpy / torch scalars to Python numbers; NaN to None (a number that was not measured)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    raise TypeError(f"a headline number must be a number, a string or None, not {type(value).__name__}")


# ------------------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class RunNumbers:
    """One run's headline numbers (this run's, or a recorded one's) and where they come from."""

    values: Mapping[str, Any]
    profile: str
    dataset: str
    recorded: bool

    def __getitem__(self, name: str) -> Any:
        return self.values.get(name)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    def has(self, *names: str) -> bool:
        """Whether every one of ``names`` was measured in this run."""
        return all(self.values.get(n) is not None for n in names)

    @property
    def where(self) -> str:
        """E.g. "profile `cpu`, MNIST, recorded" (what a verdict names as the run it judges)."""
        return f"profile `{self.profile}`, {datasets.label(self.dataset)}, {'recorded' if self.recorded else 'this run'}"


def recorded_runs(chapter: str, profile: str, root: str | Path = results.RESULTS_ROOT) -> list[RunNumbers]:
    """The recorded runs of ``chapter`` at the slowest profile other than ``profile`` that has
    any (``paper``, else ``cpu``, else ``ci``), one per data set."""
    out = []
    for record in results.records_beside(chapter, exclude=profile, root=root):
        out.append(RunNumbers(record["numbers"], record["profile"], record["dataset"], recorded=True))
    return out


def verdict_for(reading: Callable[[RunNumbers], list[str]], result: ChapterResult,
                recorded: Iterable[RunNumbers] = ()) -> str:
    """A chapter's verdict: ``reading`` applied to this run and to every recorded run, each under
    a heading naming the profile and data set it judges."""
    parts = []
    for run in [result.numbers(), *recorded]:
        lines = reading(run)
        if lines:
            parts.append(f"**{run.where[0].upper()}{run.where[1:]}.**\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def plus_reading(run: RunNumbers, labels: Mapping[str, str], band: float, noun: str) -> list[str]:
    """One indented verdict line reading DDM+ (ours) against random choice and the paper's DDM for
    every arm of ``labels`` (arm key -> name) whose ``spearman_plus_<arm>``,
    ``spearman_random_<arm>`` and ``spearman_ddm_<arm>`` the run holds; ``band`` is the margin
    that counts as a difference, ``noun`` what the arms are ("networks"). [] when none is there."""
    shown = [a for a in labels if run.has(f"spearman_plus_{a}", f"spearman_random_{a}", f"spearman_ddm_{a}")]
    if not shown:
        return []

    def names(arms: Sequence[str]) -> str:
        return ", ".join(labels[a] for a in arms) or "none"

    listing = ", ".join(f"{labels[a]} {run[f'spearman_plus_{a}']:+.2f}" for a in shown)
    beats = [a for a in shown if run[f"spearman_plus_{a}"] > run[f"spearman_random_{a}"] + band]
    better = [a for a in shown if run[f"spearman_plus_{a}"] > run[f"spearman_ddm_{a}"] + band]
    return [f"  DDM+ (ours, soft labels) reaches {listing}: above random choice by more than {band:g} for "
            f"{len(beats)} of {len(shown)} {noun} ({names(beats)}), above the paper's DDM for {len(better)} "
            f"({names(better)})."]


# ------------------------------------------------------------------------------------------ setup
def open_experiment(profile: str = "quick", data_root: str | Path | None = None, dataset: str | None = None,
                    overrides: Mapping[str, Any] | None = None, cache_root: str | Path | None = None,
                    progress: bool = False, model: Any = None,
                    chapter_settings: Mapping[str, datasets.ProfileSettings] | None = None) -> Experiment:
    """The experiment a chapter runs: the profile's configuration, another data set if asked
    (``dataset``: a registry name or ``folder:PATH``), another network (``model``: an
    architecture name, or one of your own as ``"package.module:factory"``, an ``nn.Module`` or a
    factory; see :meth:`ddm.experiment.Experiment.create`), any dotted ``overrides``
    (``{"train.epochs": 5}``). Where the profile has settings of its own for the data set
    (:data:`ddm.datasets.PROFILE_SETTINGS`, e.g. Tiny ImageNet at ``cpu``) they apply first, then
    the chapter's own for the profile (``chapter_settings``: profile -> settings, for a chapter
    whose protocol costs more than the profile affords), and ``overrides`` over both."""
    overrides = dict(overrides or {})
    if dataset:
        overrides["data.name"] = dataset
    name = overrides.get("data.name") or get_profile(profile).data.name
    settings = [datasets.profile_settings(profile, name), (chapter_settings or {}).get(profile)]
    overrides = {**{k: v for s in settings if s for k, v in s.overrides.items()}, **overrides}
    config: ExperimentConfig = get_profile(profile, **overrides)
    return Experiment.create(config, data_root=data_root, cache_root=cache_root, progress=progress, model=model)


def fewer_clusters(clusters_per_class: int, why: str) -> datasets.ProfileSettings:
    """A chapter's settings for a profile where its protocol cannot afford the profile's K: the
    same run at ``clusters_per_class`` clusters per class, because ``why`` (printed on the page)."""
    return datasets.ProfileSettings(overrides={"clusters.clusters_per_class": clusters_per_class}, reason=why)


def chapter_settings_note(chapter_settings: Mapping[str, datasets.ProfileSettings], exp: Experiment) -> str:
    """One line for the page where the chapter runs at settings of its own for this profile (and
    the run uses them): which, and why; "" otherwise."""
    settings = chapter_settings.get(exp.config.profile)
    if settings is None:
        return ""
    config = exp.config.to_dict()
    used = all(config[key.split(".")[0]][key.split(".")[1]] == value for key, value in settings.overrides.items())
    changes = ", ".join(f"`{key} = {value!r}`" for key, value in settings.overrides.items())
    if not used:
        return (f"(The `{exp.config.profile}` profile's own settings for this chapter, {changes}, are not all in "
                f"effect in this run.)")
    return f"At the `{exp.config.profile}` profile this chapter runs with {changes}, because {settings.reason}."


def provenance(exp: Experiment) -> str:
    """The footer of every figure: profile, data set and its size."""
    c = exp.config
    return (f"profile {c.profile} · {datasets.label(c.data.name)} · {len(exp.train)} train / {len(exp.test)} test · "
            f"{c.model.arch} w{c.model.width} · tau={c.train.epochs}")


# ------------------------------------------------------------------------------------------ records
def record(chapter: str, result: ChapterResult, exp: Experiment) -> Path:
    """Write the result's headline fields to ``results/<profile>/<chapter>[.<dataset>].json``."""
    profile, dataset = exp.config.profile, exp.config.data.name
    name = results.record_name(chapter, profile, dataset)
    with_dataset = f" DATASET={dataset}" if name != chapter else ""
    command = (f"make record PROFILE={profile} DATA_ROOT={exp.data_root}{with_dataset}  "
               f"# papermill notebooks/{chapter}.ipynb -p profile {profile} -p data_root {exp.data_root}"
               f"{f' -p dataset {dataset}' if with_dataset else ''} -p record True")
    return results.record_results(profile, name, result.headline_numbers(), exp.config.to_dict(), command,
                                  dataset=dataset)


# ------------------------------------------------------------------------------------------ tables
# The paper's data set shown beside runs on data the paper never used (digits, an image folder).
DEFAULT_PAPER_DATASET = "mnist"


def _paper_columns(paper_values: Callable[[str], Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict]:
    """Paper column header -> {field: value}, one column per paper data set among ``names``
    (MNIST's when none of them is one of the paper's data sets: the nearest reference there is)."""
    keys = list(dict.fromkeys(k for k in (datasets.paper_key(n) for n in names) if k)) or [DEFAULT_PAPER_DATASET]
    columns = {}
    for key in keys:
        values = {k: v for k, v in dict(paper_values(key)).items() if v is not None}
        if values:
            columns[f"paper, {datasets.label(key)}"] = values
    return columns


def _run_column(run: RunNumbers) -> str:
    kind = "recorded" if run.recorded else "this run"
    return f"ours, {kind} ({run.profile}, {datasets.label(run.dataset)})"


def _frame(result: ChapterResult, fields: Sequence[str], runs: Sequence[RunNumbers],
           papers: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    labels, digits, notes = result.headline_labels(), result.headline_digits(), result.headline_notes()
    with_notes = any(notes.get(f) for f in fields)
    rows = []
    for name in fields:
        row = {"quantity": labels[name]}
        for run in runs:
            row[_run_column(run)] = book.format_number(run[name], digits[name])
        for header, values in papers.items():
            row[header] = book.as_printed(values.get(name))
        if with_notes:
            row["note"] = notes.get(name, "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("quantity") if rows else pd.DataFrame()


def _runs_and_papers(result: ChapterResult, paper_values: Callable[[str], Mapping[str, Any]],
                     recorded: Sequence[RunNumbers]) -> tuple[list[RunNumbers], dict[str, dict], set[str]]:
    """This run and the recorded ones, the paper's columns for their data sets, and the headline
    fields the paper reports in any of them."""
    runs = [result.numbers(), *recorded]
    papers = _paper_columns(paper_values, [r.dataset for r in runs])
    return runs, papers, set().union(*[set(v) for v in papers.values()])


def beside_paper(result: ChapterResult, paper_values: Callable[[str], Mapping[str, Any]],
                 recorded: Sequence[RunNumbers] = ()) -> pd.DataFrame:
    """The rows the paper reports: this run, every recorded run, and one paper column per data
    set of the paper among them. A blank cell: not measured, or not reported."""
    runs, papers, reported = _runs_and_papers(result, paper_values, recorded)
    fields = [name for name in result.headline_labels() if name in reported]
    return _frame(result, fields, runs, papers)


def beyond_paper(result: ChapterResult, paper_values: Callable[[str], Mapping[str, Any]],
                 recorded: Sequence[RunNumbers] = ()) -> pd.DataFrame:
    """Everything we measured that the paper does not report: this run and every recorded run."""
    runs, _, reported = _runs_and_papers(result, paper_values, recorded)
    fields = [name for name in result.headline_labels() if name not in reported]
    return _frame(result, fields, runs, {})
