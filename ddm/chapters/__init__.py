"""One module per chapter of the book (the top floor of the package).

Each module measures what its chapter shows and nothing else: ``run(exp) -> Result`` (a frozen
dataclass of typed headline numbers and tables), ``paper_values(dataset)`` and
``verdict(result, recorded)``; :mod:`ddm.chapters.base` holds what they share. The notebooks in
``notebooks/`` are narrative plus calls into these modules.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# notebook stem -> module of ddm.chapters
CHAPTERS: dict[str, str] = {
    "01_clustering": "clustering",
    "02_reverse_matching": "reverse_matching",
    "03_online_attribution": "attribution",
    "04_unlearning": "unlearning",
    "05_harmful_data": "harmful_data",
    "06_influence_functions": "influence",
    "07_speed": "speed",
    "08_your_own_data": "own_data",
    "09_why_ddm_fails": "ablations",
    "10_scale": "scale",
    "11_initialisations": "initialisations",
    "12_architectures": "architectures",
    "13_noisy_data": "noisy_data",
    "14_knowledge_distillation": "transfer",
}


def module_for(chapter: str) -> ModuleType:
    """The module of a chapter, by its notebook stem (``"03_online_attribution"``) or a record name
    (``"03_online_attribution.cifar10-jpeg"``)."""
    stem = chapter.split(".", 1)[0]
    if stem not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters are {sorted(CHAPTERS)}")
    return importlib.import_module(f"ddm.chapters.{CHAPTERS[stem]}")
