"""Evaluation metrics: pure functions on torch tensors (METHODS.md, "Metrics").

Probabilities are ``(N, C)`` for one model or ``(N, M, C)`` for M members (batch, members,
classes); labels are ``(N,)`` int64. Aggregate metrics return Python floats, per-example
uncertainty scores ``(N,)`` float64 tensors. Bad input raises
:class:`~ensemble_distill.errors.EnsembleDistillError`.

- :mod:`.classification`: accuracy, NLL, Brier (and its TFP form), ECE and reliability bins,
  predictive / expected entropy, mutual information, pairwise-KL diversity.
- :mod:`.dirichlet`: closed-form mean, expected entropy and MI of a Dirichlet (Prior Network).
- :mod:`.agreement`: rank correlation of a student's uncertainty with the ensemble's.
- :mod:`.ood`: AUROC and AUPR with OOD as the positive class.
- :mod:`.cost`: parameter count and latency per example.
"""

from ensemble_distill.metrics.agreement import rank_correlation
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
from ensemble_distill.metrics.cost import count_parameters, latency_per_example
from ensemble_distill.metrics.dirichlet import (
    dirichlet_expected_entropy,
    dirichlet_mean,
    dirichlet_mutual_information,
)
from ensemble_distill.metrics.ood import ood_aupr, ood_auroc

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "brier",
    "brier_tfp",
    "count_parameters",
    "dirichlet_expected_entropy",
    "dirichlet_mean",
    "dirichlet_mutual_information",
    "ece",
    "expected_entropy",
    "latency_per_example",
    "mean_probs",
    "mutual_information",
    "nll",
    "ood_aupr",
    "ood_auroc",
    "pairwise_kl_diversity",
    "predictive_entropy",
    "rank_correlation",
    "reliability_bins",
]
