"""Evaluation metrics: pure functions on torch tensors (METHODS.md, "Metrics").

Probabilities are ``(N, C)`` for one model or ``(N, M, C)`` for M members (batch, members,
classes); labels are ``(N,)`` int64. Aggregate metrics return Python floats, per-example
uncertainty scores ``(N,)`` float64 tensors. Bad input raises
:class:`~ensemble_distill.errors.EnsembleDistillError`.

- :mod:`.classification`: accuracy, NLL, Brier (and its TFP form), ECE and reliability bins,
  predictive / expected entropy, mutual information, pairwise-KL diversity.
- :mod:`.dirichlet`: closed-form mean, expected entropy and MI of a Dirichlet (Prior Network).
- :mod:`.agreement`: rank correlation of a student's uncertainty with the ensemble's.
- :mod:`.calibration`: temperature scaling (cNLL, cECE, cBS) and the deep-ensemble equivalent
  (DEE, below 1 when worse than one member; ``dee_note`` flags values off the DE-k curve).
- :mod:`.diversity`: members' pairwise-KL diversity per bin of confidence.
- :mod:`.ood`: AUROC, AUPR and FPR at 95 % TPR with OOD as the positive class.
- :mod:`.selective`: selective prediction: the risk–coverage curve, AURC and E-AURC.
- :mod:`.regression`: Gaussian ensembles' mixture moments (aleatoric / epistemic), RMSE,
  Gaussian NLL, interval coverage and calibration curve; means and variances ``(N, M)``.
- :mod:`.cost`: parameter count, forward FLOPs and latency per example.
"""

from ensemble_distill.metrics.agreement import rank_correlation
from ensemble_distill.metrics.calibration import (
    DEE_CAPPED,
    DEE_EXTRAPOLATED,
    calibrated_metrics,
    dee_note,
    deep_ensemble_equivalent,
    ensemble_size_curve,
    fit_temperature,
    monotone_curve,
    temperature_scale,
)
from ensemble_distill.metrics.classification import (
    ReliabilityBins,
    accuracy,
    brier,
    brier_tfp,
    ece,
    expected_entropy,
    mean_probs,
    mutual_information,
    nll,
    pairwise_kl_diversity,
    predictive_entropy,
    reliability_bins,
)
from ensemble_distill.metrics.cost import count_parameters, forward_flops, latency_per_example
from ensemble_distill.metrics.dirichlet import (
    dirichlet_expected_entropy,
    dirichlet_mean,
    dirichlet_mutual_information,
)
from ensemble_distill.metrics.diversity import diversity_by_confidence
from ensemble_distill.metrics.ood import ood_aupr, ood_auroc, ood_fpr_at_tpr
from ensemble_distill.metrics.regression import (
    calibration_curve,
    gaussian_nll,
    interval_coverage,
    mixture_moments,
    regression_metrics,
    rmse,
)
from ensemble_distill.metrics.selective import aurc, eaurc, optimal_aurc, risk_coverage

__all__ = [
    "DEE_CAPPED",
    "DEE_EXTRAPOLATED",
    "ReliabilityBins",
    "accuracy",
    "aurc",
    "brier",
    "brier_tfp",
    "calibrated_metrics",
    "calibration_curve",
    "count_parameters",
    "dee_note",
    "deep_ensemble_equivalent",
    "dirichlet_expected_entropy",
    "dirichlet_mean",
    "dirichlet_mutual_information",
    "diversity_by_confidence",
    "eaurc",
    "ece",
    "ensemble_size_curve",
    "expected_entropy",
    "fit_temperature",
    "forward_flops",
    "gaussian_nll",
    "interval_coverage",
    "latency_per_example",
    "mean_probs",
    "mixture_moments",
    "monotone_curve",
    "mutual_information",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "ood_fpr_at_tpr",
    "optimal_aurc",
    "pairwise_kl_diversity",
    "predictive_entropy",
    "rank_correlation",
    "regression_metrics",
    "reliability_bins",
    "risk_coverage",
    "rmse",
    "temperature_scale",
]
