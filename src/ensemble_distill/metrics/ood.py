"""Out-of-distribution detection metrics (METHODS.md, "Metrics": OOD detection).

OOD examples are the positive class and a higher score means "more OOD" (e.g. mutual
information or predictive entropy), as in Hendrycks & Gimpel 2017 and the Hydra paper
(Tran et al. 2020). AUROC and AUPR come from scikit-learn rather than being re-implemented
here; FPR at 95 % TPR is one order statistic, computed directly.
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


def _in_and_out(score_in: Tensor, score_out: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Both groups' scores, validated, as float64 numpy."""
    return _as_scores(score_in, "score_in"), _as_scores(score_out, "score_out")


def _targets_and_scores(score_in: Tensor, score_out: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the two groups: targets 0 for in-distribution, 1 for OOD."""
    s_in, s_out = _in_and_out(score_in, score_out)
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


def ood_fpr_at_tpr(score_in: Tensor, score_out: Tensor, tpr: float = 0.95) -> float:
    """False-positive rate at 95 % true-positive rate (FPR95), OOD the positive class: the
    fraction of in-distribution examples flagged as OOD at the threshold that flags 95 % of
    the OOD examples (Hendrycks & Gimpel 2017; Liang et al. 2018, ODIN; OpenOOD).

    An example is flagged when its score s ≥ t, so TPR(t) = #{s_out ≥ t} / N_out and
    FPR(t) = #{s_in ≥ t} / N_in, and

        FPR95 = min { FPR(t) : TPR(t) ≥ 0.95 } = FPR(s_out,(k)),   k = ⌈0.95 · N_out⌉,

    s_out,(k) the k-th largest OOD score: both rates fall as t rises, so the minimum sits at
    the highest threshold that still flags k OOD examples. No interpolation between
    thresholds: tied scores are flagged together, and the value is the smallest FPR among the
    points of ``sklearn.metrics.roc_curve`` with TPR ≥ 0.95. 0 is perfect; 1 when every
    in-distribution score reaches the threshold (e.g. a constant score, as a single network's
    MI); about 0.95 for uninformative scores. Lower is better.

    Args:
        score_in: (N_in,) scores of in-distribution examples.
        score_out: (N_out,) scores of OOD examples; higher means more OOD.
        tpr: the TPR to reach, in (0, 1].
    """
    if not 0.0 < tpr <= 1.0:
        raise EnsembleDistillError(f"tpr must lie in (0, 1], got {tpr}; pass e.g. 0.95")
    s_in, s_out = _in_and_out(score_in, score_out)
    n_out = s_out.size
    # The smallest k with k/N_out ≥ tpr, compared in float64 exactly as sklearn's TPRs
    # (tps / N_out) are, so that a boundary case such as 19/20 = 0.95 is decided the same way.
    k = int(np.searchsorted(np.arange(1, n_out + 1) / n_out, tpr, side="left")) + 1
    threshold = np.sort(s_out)[n_out - k]  # the k-th largest OOD score
    return float(np.mean(s_in >= threshold))
