"""Out-of-distribution detection metrics (METHODS.md, "Metrics": OOD detection).

OOD examples are the positive class and a higher score means "more OOD" (e.g. mutual
information or predictive entropy), as in Hendrycks & Gimpel 2017 and the Hydra paper
(Tran et al. 2020). The ranking statistics come from scikit-learn rather than being
re-implemented here.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import Tensor

from ensemble_distill.errors import EnsembleDistillError


def _as_scores(scores: Tensor, name: str) -> np.ndarray:
    """Validate one group's scores: a non-empty, finite, 1-D tensor; return float64 numpy."""
    if not isinstance(scores, Tensor):
        raise EnsembleDistillError(
            f"{name} must be a torch.Tensor, got {type(scores).__name__}; "
            "convert it with torch.as_tensor"
        )
    if scores.dim() != 1 or scores.numel() == 0:
        raise EnsembleDistillError(
            f"{name} must be a non-empty 1-D tensor of per-example scores, "
            f"got shape {tuple(scores.shape)}; pass one score per example"
        )
    array = scores.detach().cpu().double().numpy()
    if not np.isfinite(array).all():
        raise EnsembleDistillError(
            f"{name} contains NaN or Inf; check the model outputs before scoring OOD detection"
        )
    return array


def _targets_and_scores(score_in: Tensor, score_out: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the two groups: targets 0 for in-distribution, 1 for OOD."""
    s_in = _as_scores(score_in, "score_in")
    s_out = _as_scores(score_out, "score_out")
    targets = np.concatenate([np.zeros(s_in.size), np.ones(s_out.size)])
    return targets, np.concatenate([s_in, s_out])


def ood_auroc(score_in: Tensor, score_out: Tensor) -> float:
    """Area under the ROC curve for separating OOD (positive) from in-distribution examples.

    AUROC = P(s_out > s_in) + ½ P(s_out = s_in), the Mann–Whitney U statistic over
    n_in · n_out; 0.5 is chance, 1.0 perfect. Computed with ``sklearn.metrics.roc_auc_score``.

    Args:
        score_in: (N_in,) scores of in-distribution examples.
        score_out: (N_out,) scores of OOD examples; higher means more OOD.
    """
    targets, scores = _targets_and_scores(score_in, score_out)
    return float(roc_auc_score(targets, scores))


def ood_aupr(score_in: Tensor, score_out: Tensor) -> float:
    """Area under the precision–recall curve with OOD as the positive class.

    Average precision AP = Σ_n (R_n − R_{n−1}) P_n over score thresholds in decreasing order
    (``sklearn.metrics.average_precision_score``); chance level is N_out / (N_in + N_out).

    Args:
        score_in: (N_in,) scores of in-distribution examples.
        score_out: (N_out,) scores of OOD examples; higher means more OOD.
    """
    targets, scores = _targets_and_scores(score_in, score_out)
    return float(average_precision_score(targets, scores))
