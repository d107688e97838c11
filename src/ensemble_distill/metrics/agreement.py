"""Does a student's per-example uncertainty track the ensemble's?"""

from __future__ import annotations

import math

from scipy.stats import spearmanr
from torch import Tensor


def rank_correlation(scores: Tensor, reference: Tensor) -> float | None:
    """Spearman's ρ between two (N,) per-example scores (e.g. student MI vs ensemble MI).

    Returns None when either score is constant (ρ is undefined: a KD student's MI is 0
    everywhere), rather than a misleading number.
    """
    if scores.shape != reference.shape or scores.dim() != 1:
        raise ValueError(
            f"need two (N,) scores, got {tuple(scores.shape)} and {tuple(reference.shape)}"
        )
    if bool((scores == scores[0]).all()) or bool((reference == reference[0]).all()):
        return None
    rho = spearmanr(scores.double().cpu().numpy(), reference.double().cpu().numpy()).statistic
    return None if math.isnan(rho) else float(rho)
