"""The synsets the book compares: the paper's DDM under both pairings, plain gradient matching
(DDM-match) and our soft-label extension, each a configuration of :class:`ddm.config.DistillConfig`.

Chapters ask for a variant by its constant (``PAPER_DDM``, ...), never by its display text, so a
label can be reworded without breaking anything that reads the numbers.
"""

from __future__ import annotations

import dataclasses

from ddm.config import DistillConfig
from ddm.experiment import Experiment
from ddm.matching import Synset

PAPER_DDM = "ddm_alg1"          # the paper's method as printed in Algorithm 1 (theta_t with theta_{t+s})
DDM_EQ6 = "ddm_eq6"             # the pairing of Eq. 6 (theta_t with theta_{tau-t})
DDM_MATCH = "ddm_match"         # plain gradient matching, the paper's ablation "DDM-match"
DDM_SOFT = "ddm_soft"           # OUR EXTENSION: Algorithm 1 with learnable soft labels

LABELS = {
    PAPER_DDM: "DDM, Alg. 1 pairing (t, t+s)",
    DDM_EQ6: "DDM, Eq. 6 pairing (t, tau-t)",
    DDM_MATCH: "DDM-match (plain gradient matching)",
    DDM_SOFT: "DDM + soft labels (ours, not the paper's)",
}
SHORT_LABELS = {PAPER_DDM: "DDM (Alg. 1)", DDM_EQ6: "DDM (Eq. 6)", DDM_MATCH: "DDM-match",
                DDM_SOFT: "DDM + soft (ours)"}


def variant_config(base: DistillConfig, variant: str) -> DistillConfig:
    """The distillation configuration of ``variant`` built on the profile's ``base``."""
    changes = {
        PAPER_DDM: {"method": "reverse", "pairing": "alg1"},
        DDM_EQ6: {"method": "reverse", "pairing": "eq6"},
        DDM_MATCH: {"method": "match"},
        DDM_SOFT: {"method": "reverse", "pairing": "alg1", "soft_labels": True},
    }
    if variant not in changes:
        raise ValueError(f"unknown synset variant {variant!r}; choose one of {sorted(changes)}")
    return dataclasses.replace(base, **changes[variant])


def distill_variants(exp: Experiment, variants: tuple[str, ...] = tuple(LABELS)) -> dict[str, Synset]:
    """The synsets of ``variants`` (all four by default), keyed by variant constant; each is
    distilled once and cached by the experiment's store."""
    return {v: exp.synset(variant_config(exp.config.distill, v)) for v in variants}


def with_lr_img(exp: Experiment, lr_img: float) -> Synset:
    """The paper's DDM with another image learning rate (Table 5: 0.1; Sec. 4.1: 10)."""
    return exp.synset(dataclasses.replace(variant_config(exp.config.distill, PAPER_DDM), lr_img=lr_img))
