"""Presentation helpers the chapters call: the profile banner and the standard tables.

Nothing here computes a result. The helpers format what a chapter measured, what was recorded
earlier (:mod:`ddm.results`) and what the paper printed, and leave a cell blank, never filled in,
where a number was not measured.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ddm import datasets
from ddm.config import PROFILES, PROJECT_ROOT, ExperimentConfig, resolve_data_root

BLANK = ""  # what an unmeasured cell shows
ROW_KEYS = ("quantity", "this_run", "recorded", "paper", "note")


def _as_dict(config: ExperimentConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(config, ExperimentConfig):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"expected an ExperimentConfig or its dict, not {type(config).__name__}")


def dataset_label(name: str) -> str:
    """How the book names a data set (the registry's label; ``folder:PATH`` becomes ``image folder PATH``)."""
    return datasets.label(name)


def _per_class(n: int | None) -> str:
    return "all" if n is None else str(n)


def profile_banner(config: ExperimentConfig | Mapping[str, Any], data_root: str | Path | None = None) -> str:
    """One markdown paragraph naming the profile, data, sizes, date and threads of this run.

    Chapters show it under their title (``display(Markdown(profile_banner(cfg, data_root)))``)
    so a reader always knows which run the page's numbers come from.
    """
    import torch

    c = _as_dict(config)
    data, clusters, model = c["data"], c["clusters"], c["model"]
    name = data["name"]
    try:
        classes = datasets.spec(name).num_classes
    except datasets.UnknownDataset:
        classes = None
    per_class = clusters["clusters_per_class"]
    k = f"K = {classes} x {per_class} = {classes * per_class}" if classes else f"{per_class} per class"
    if name == "digits":
        root = "bundled with scikit-learn"
    else:
        resolved = resolve_data_root(data_root)
        try:
            root = f"`{resolved.relative_to(PROJECT_ROOT)}`"
        except ValueError:
            root = f"`{resolved}`"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"**Profile `{c.get('profile', '?')}`**: {dataset_label(name)} (data: {root}), "
        f"{_per_class(data['train_per_class'])} training and {_per_class(data['test_per_class'])} "
        f"test images per class; clusters {k}; {model['arch']} width {model['width']}, "
        f"depth {model['depth']}; tau = {c['train']['epochs']} epochs; "
        f"{c['distill']['steps']} distillation steps; T = {c['online']['finetune_steps']} fine-tune "
        f"steps. Run on {when} on {c.get('device', 'cpu')} with {torch.get_num_threads()} torch "
        f"thread(s). Every number on this page comes from this run, unless it is marked as "
        f"recorded or as the paper's."
    )


def profiles_table() -> pd.DataFrame:
    """One row per profile of :data:`ddm.config.PROFILES`: what each one runs."""
    rows = []
    for name, make in PROFILES.items():
        c = make()
        rows.append({
            "profile": name,
            "data set": dataset_label(c.data.name),
            "train / class": _per_class(c.data.train_per_class),
            "test / class": _per_class(c.data.test_per_class),
            "clusters / class (C)": c.clusters.clusters_per_class,
            "model": c.model.arch,
            "width": c.model.width,
            "depth": c.model.depth,
            "epochs (tau)": c.train.epochs,
            "lr": c.train.lr,
            "batch": c.train.batch_size,
            "distill steps": c.distill.steps,
            "step length (s)": c.distill.step_length,
            "lr images": c.distill.lr_img,
            "fine-tune steps (T)": c.online.finetune_steps,
            "fine-tune lr": c.online.finetune_lr,
            "test points": c.eval.n_test_points,
            "LDS masks": c.eval.lds_masks,
            "noise seeds": len(c.eval.noise_seeds),
            "device": c.device,
        })
    return pd.DataFrame(rows).set_index("profile")


MAX_DECIMALS = 4   # tools/check_outputs.py refuses floats with more decimals in a page


def format_number(value: Any, digits: int = 3) -> str:
    """A number as a table shows it: ``digits`` significant digits, no exponent for ordinary
    magnitudes, integers as they are; ``None`` and NaN become a blank, strings pass through."""
    if value is None:
        return BLANK
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return BLANK
    if math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= digits - 1 and magnitude < 9:
        return f"{value:.0f}"
    if -3 <= magnitude < digits - 1:
        # At most MAX_DECIMALS decimals (the book's output check refuses longer floats); a number
        # below 0.01 then keeps two significant digits instead of ``digits``.
        return f"{value:.{min(digits - 1 - magnitude, MAX_DECIMALS)}f}"
    return f"{value:.{digits - 1}e}"


def comparison_table(
    rows: Sequence[Mapping[str, Any]],
    this_profile: str | None = None,
    recorded_profile: str | None = None,
    paper_label: str = "paper",
    digits: int = 3,
    recorded_columns: Mapping[str, str] | None = None,
    paper_columns: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Our numbers beside the paper's: ``quantity | ours (this run) | ours (recorded, profile X) | paper``.

    Each row is a dict with ``quantity`` (the row's name) and any of ``this_run``, ``recorded``,
    ``paper`` (numbers, strings or ``None``) and ``note``. A missing or ``None`` value leaves the
    cell blank: a blank means "not measured", never an estimate. Unknown keys raise ``ValueError``
    (so a misspelt key cannot silently blank a column). The ``note`` column appears only when a
    row has one. The cells are formatted strings (:func:`format_number`).

    ``recorded_columns`` (row key -> column header) replaces the single ``recorded`` column with
    several, one per recorded run (e.g. the ``cpu`` runs on MNIST and on CIFAR-10); rows then use
    those keys instead of ``recorded``. ``paper_columns`` does the same for ``paper`` (one column
    per data set of the paper's, e.g. MNIST and CIFAR-10).
    """
    this_col = f"ours (this run, {this_profile})" if this_profile else "ours (this run)"
    rec_col = (f"ours (recorded, profile {recorded_profile})" if recorded_profile
               else "ours (recorded: none)")
    for name, extra in (("recorded_columns", recorded_columns), ("paper_columns", paper_columns)):
        clash = set(extra or {}) & set(ROW_KEYS)
        if clash:
            raise ValueError(f"{name} may not reuse the row keys {sorted(clash)}")
    recorded = dict(recorded_columns) if recorded_columns else {"recorded": rec_col}
    papers = dict(paper_columns) if paper_columns else {"paper": paper_label}
    if set(recorded) & set(papers):
        raise ValueError(f"recorded_columns and paper_columns share keys {sorted(set(recorded) & set(papers))}")
    columns = {"this_run": this_col, **recorded, **papers}
    allowed = {"quantity", "note", *columns}
    has_note = any("note" in row for row in rows)
    table = []
    for i, row in enumerate(rows):
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"row {i} has unknown keys {sorted(unknown)}; keys are {sorted(allowed)}")
        if "quantity" not in row:
            raise ValueError(f"row {i} has no 'quantity'")
        if recorded_profile is None and row.get("recorded") is not None:
            raise ValueError(f"row {i} ({row['quantity']}) has a recorded value; name its "
                             "profile with recorded_profile=")
        out = {"quantity": str(row["quantity"])}
        for key, col in columns.items():
            out[col] = format_number(row.get(key), digits)
        if has_note:
            out["note"] = str(row.get("note") or BLANK)
        table.append(out)
    frame = pd.DataFrame(table, columns=["quantity", *columns.values()] + (["note"] if has_note else []))
    return frame.set_index("quantity")


# ------------------------------------------------------------------------------- notebook helpers
class _Shown:
    """A glued value whose text form is exactly ``text`` (a glued str would show its quotes)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def quiet_notebook() -> None:
    """What every chapter's hidden setup cell calls: no warnings, log lines or progress bars in
    the book's outputs (the numbers and figures are the output), and figures sized for a page."""
    import logging
    import warnings

    import matplotlib

    warnings.filterwarnings("ignore")
    pd.set_option("display.max_colwidth", None)   # notes and labels in full, never cut with "..."
    logging.getLogger().setLevel(logging.ERROR)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight"})


def glue_numbers(result: Any, prefix: str = "") -> None:
    """Glue every headline field of a chapter result under its field name (``prefix`` + name),
    formatted as the tables show it, for ``{glue:text}`` in the chapter's prose."""
    from myst_nb import glue

    digits = result.headline_digits()
    for name, value in result.headline_numbers().items():
        text = format_number(value, digits[name]) or "not measured"
        glue(prefix + name, _Shown(text), display=False)


def glue_text(name: str, text: str) -> None:
    """Glue a short text (a verdict sentence, a data-set label) for ``{glue:text}``."""
    from myst_nb import glue

    glue(name, _Shown(text), display=False)


def glue_figure(name: str, fig: Any) -> None:
    """Glue a matplotlib figure for a ``{glue:figure}`` directive with a numbered caption, and
    close it so that it is not shown a second time without its caption."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def show_table(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A table as the book shows it: every number with ``digits`` significant digits, NaN blank."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = [format_number(v.item() if hasattr(v, "item") else v, digits) for v in shown[column]]
    return shown


# ------------------------------------------------------------------------------- Table 5
_SETTING_ROWS = {  # Table 5's column -> (the book's words, how to read it from a profile's configuration)
    "lr_net": ("network learning rate", lambda c: c.train.lr),
    "lr_img": ("synthetic-image learning rate", lambda c: c.distill.lr_img),
    "epochs": ("training epochs (tau)", lambda c: c.train.epochs),
    "synset_steps": ("'step for synset' (Table 5, meaning not stated) / distillation steps (ours)", lambda c: c.distill.steps),
    "step_length": ("step length s (Algorithm 1)", lambda c: c.distill.step_length),
    "distance": ("gradient distance", lambda c: {"layerwise_cosine": "cosine (layer-wise)"}.get(
        c.distill.distance, c.distill.distance)),
}


def as_printed(value: Any) -> str:
    """A number as the paper prints it (0.6 stays 0.6, not 0.600; a setting's 0.001 stays 0.001);
    blank when not reported."""
    return BLANK if value is None else (f"{value:g}" if isinstance(value, (int, float)) else str(value))


def _settings_columns() -> dict[str, dict[str, Any]]:
    """Source (a row of Table 5, Sec. 4.1, each profile) -> {setting key: value}."""
    from ddm import paper

    columns: dict[str, dict[str, Any]] = {f"paper, Table 5: {data}, {nets}": values
                                          for (data, nets), values in paper.TABLE5.items()}
    columns["paper, Sec. 4.1 (no data set named)"] = dict(paper.SEC41_SETTINGS)
    for name, make in PROFILES.items():
        c = make()
        columns[f"profile {name} ({dataset_label(c.data.name)}, {c.model.arch})"] = {
            key: read(c) for key, (_, read) in _SETTING_ROWS.items()}
    return columns


def settings_table() -> pd.DataFrame:
    """Supp. Table 5 beside every profile of :data:`ddm.config.PROFILES`, generated, not typed:
    one row per source (the paper's rows, Sec. 4.1, each profile), one column per setting. The
    paper's values come from :data:`ddm.paper.TABLE5` and :data:`ddm.paper.SEC41_SETTINGS`, the
    profiles' from their configurations; :func:`settings_notes` says where they disagree."""
    rows = [{"source": header, **{words: as_printed(values.get(key)) for key, (words, _) in _SETTING_ROWS.items()}}
            for header, values in _settings_columns().items()]
    return pd.DataFrame(rows).set_index("source")


def settings_notes() -> str:
    """Markdown bullets: the paper's own conflicts (Sec. 4.1 against Table 5) and every profile that
    departs from the paper's ConvNet row for its data set (digits and image folders against MNIST's)."""
    from ddm import paper

    configs = {name: make() for name, make in PROFILES.items()}
    cnn = {data: values for (data, nets), values in paper.TABLE5.items() if not nets.endswith("ViT")}

    def paper_row(config: ExperimentConfig) -> dict[str, Any]:
        key = datasets.paper_key(config.data.name)
        return cnn["MNIST"] if key in (None, "mnist") else next(v for d, v in cnn.items() if d != "MNIST")

    lines = []
    for key, (words, read) in _SETTING_ROWS.items():
        notes = []
        if key in paper.SEC41_SETTINGS:
            by_data = "; ".join(f"{as_printed(v[key])} for {d}" for d, v in cnn.items())
            notes.append(f"the paper conflicts: Table 5 gives {by_data} (CNNs), Sec. 4.1 gives "
                         f"{as_printed(paper.SEC41_SETTINGS[key])}")
        departs = [f"{name} {as_printed(read(c))}" for name, c in configs.items()
                   if not as_printed(read(c)).startswith(as_printed(paper_row(c)[key]))]
        if departs:
            notes.append("our profiles differ from the paper's row for their data set: " + ", ".join(departs))
        if notes:
            lines.append(f"* **{words}**: " + "; ".join(notes) + ".")
    return "\n".join(lines)
