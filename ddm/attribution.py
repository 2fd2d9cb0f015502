"""The attribution matrix (Sec. 3.3, Eq. 7-8) and hierarchical attribution (Supp. 6.2, Eq. 11).

A linear datamodel predicts a test output from the keep-mask p of the K clusters,
``y(p) ~ W p + b`` (Eq. 7). W is fitted by weighted least squares over the perturbed models
(Eq. 8). Row k of W is the output cluster k adds: the change that deleting it would undo.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def perturbation_weights(keep_masks: torch.Tensor) -> torch.Tensor:
    r"""beta_p of Eq. 8. The paper weights masks "by the number of zeros" without a formula;
    we use :math:`\beta_p = 1 / \#\{k: p(k) = 0\}` so that masks deleting one cluster, whose
    outputs carry the cleanest signal, count most. A mask deleting nothing gets weight 1."""
    deleted = (~keep_masks.bool()).sum(1).float()
    return 1.0 / deleted.clamp_min(1.0)


def fit_attribution_matrix(keep_masks: torch.Tensor, outputs: torch.Tensor,
                           weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eq. 8: :math:`\min_{W,b} \sum_p \beta_p \lVert y_p - (W^\top p + b) \rVert_2^2`.

    ``keep_masks`` (P, K), ``outputs`` (P, D): one output vector per perturbed model (D may stack
    several test points). Returns W (K, D) and b (D,). Solved exactly by weighted least squares
    (numpy ``lstsq``, the minimum-norm solution when the masks do not determine W).
    """
    p = keep_masks.double()
    design = torch.cat([p, torch.ones(len(p), 1, dtype=torch.float64)], 1)      # (P, K+1)
    beta = perturbation_weights(keep_masks) if weights is None else weights
    root = beta.double().sqrt()[:, None]
    solution, *_ = np.linalg.lstsq((design * root).numpy(), (outputs.double() * root).numpy(), rcond=None)
    solution = torch.from_numpy(solution)
    return solution[:-1].float(), solution[-1].float()


def predict_outputs(W: torch.Tensor, b: torch.Tensor, keep_masks: torch.Tensor) -> torch.Tensor:
    """Eq. 7: y = W^T p + b for every mask, (P, D)."""
    return keep_masks.float() @ W + b


def leave_one_out_attribution(full_output: torch.Tensor, loo_outputs: torch.Tensor) -> torch.Tensor:
    """The special case |P| = K with one cluster deleted per mask: W_k = y(all) - y(without k).

    ``full_output`` (D,), ``loo_outputs`` (K, D) -> W (K, D). This equals the Eq. 8 solution
    on those K masks plus the unperturbed one.
    """
    return full_output.unsqueeze(0) - loo_outputs


def margin_direction(target_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, L) vectors d with d . z = z_y - z_r: the margin of the true class y over the runner-up
    class r *of the target model*. Fixing r keeps the margin linear in the logits, so a W fitted
    on logits gives the margin's attribution directly."""
    runner = target_logits.clone()
    runner[torch.arange(len(labels)), labels] = -torch.inf
    r = runner.argmax(1)
    d = torch.zeros_like(target_logits)
    d[torch.arange(len(labels)), labels] = 1.0
    d[torch.arange(len(labels)), r] -= 1.0
    return d


def margin_effects(W: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """W (K, N, L), directions (N, L) -> (N, K): how much cluster k adds to each test margin, i.e.
    how much deleting it would lower the margin (positive = the cluster supports the prediction)."""
    return torch.einsum("knl,nl->nk", W, directions)


def hierarchical_pick(class_effects: torch.Tensor, cluster_effects_within: Mapping[int, torch.Tensor],
                      cluster_ids_within: Mapping[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Eq. 11: :math:`l^* = \arg\max_l W_l`, then :math:`c^* = \arg\max_c W_{l^*, c}`.

    ``class_effects`` (N, L) from the class-level synset; ``cluster_effects_within[l]`` (N, C)
    effects of the C clusters of class l and ``cluster_ids_within[l]`` their global ids.
    Only the chosen classes' entries of ``cluster_effects_within`` are read, so a mapping that
    computes an entry when it is first read (:func:`ddm.evaluation.hierarchical_vs_flat`) runs
    the C fine-tunes of the chosen class and no others: L + C instead of L x C.
    """
    chosen_class = class_effects.argmax(1)
    chosen_cluster = torch.empty_like(chosen_class)
    for i, l in enumerate(chosen_class.tolist()):
        local = int(cluster_effects_within[l][i].argmax())
        chosen_cluster[i] = cluster_ids_within[l][local]
    return chosen_class, chosen_cluster
