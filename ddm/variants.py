"""The synsets the book compares: the paper's DDM under both pairings, plain gradient matching
(DDM-match) and our extension DDM+, each a configuration of :class:`ddm.config.DistillConfig`.

**DDM+ (ours)** is Algorithm 1 with learnable soft labels. Chapter 09 tries each change of the
paper's DDM it can think of, one at a time (distances that keep gradient magnitude, more images per
cluster, a whole-trajectory target, soft labels, their combinations, a tuned online stage), against
exact leave-one-cluster-out retraining, and picks the best on half of the test points: at the cpu
profile it picked soft labels on MNIST and on CIFAR-10 (JPEG copy) alike (on CIFAR-10 with a tuned
online learning rate, which was chosen per data set and so is not part of the package's DDM+).
``DDM_PLUS`` is the constant chapters use; ``DDM_SOFT`` names the same synset, and the artifacts
and records made under that name stay valid.

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
DDM_PLUS = DDM_SOFT             # the same synset under the name the book gives it: DDM+ (ours)

LABELS = {
    PAPER_DDM: "DDM, Alg. 1 pairing (t, t+s)",
    DDM_EQ6: "DDM, Eq. 6 pairing (t, tau-t)",
    DDM_MATCH: "DDM-match (plain gradient matching)",
    DDM_SOFT: "DDM+ (ours, not the paper's): Alg. 1 with learnable soft labels",
}
SHORT_LABELS = {PAPER_DDM: "DDM (Alg. 1)", DDM_EQ6: "DDM (Eq. 6)", DDM_MATCH: "DDM-match",
                DDM_SOFT: "DDM+ (ours)"}


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
