"""Selective prediction: the risk–coverage curve and its area (METHODS.md, "Metrics").

A classifier allowed to abstain answers its most confident examples first. With the N test
examples sorted by confidence κ_n = max_k p̄_nk, descending, the risk at coverage k/N is the
error rate among the k most confident (Geifman & El-Yaniv 2017, "Selective classification
for deep neural networks"). AURC is the mean of the N risks; E-AURC subtracts the AURC of an
oracle that answers every correct example before any wrong one, which leaves the part due to
the ranking rather than to the accuracy (Geifman, Uziel & El-Yaniv 2019, "Bias-reduced
uncertainty estimation for deep neural classifiers", ICLR). Lower is better for both.

Inputs are probabilities as in :mod:`.classification`: ``(N, C)`` or ``(N, M, C)``; the
prediction is argmax_k p̄_nk, as in :func:`~.classification.accuracy`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ensemble_distill.metrics.classification import _as_labels, _as_probs, _mean


def _confidence_and_errors(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(N,) confidence max_k p̄_nk and (N,) float64 error indicators 1[argmax_k p̄_nk ≠ y_n]."""
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    p_bar = _mean(p)
    # argmax, not max's index: ties between classes go to the lowest index, as in accuracy.
    return p_bar.max(dim=1).values, (p_bar.argmax(dim=1) != y).double()


def _expected_cumulative_errors(confidence: Tensor, errors: Tensor) -> Tensor:
    """(N,) E[errors among the k most confident], k = 1 … N, ties broken uniformly at random.

    A group of g examples with equal confidence holding e errors is answered in a random
    order, so its first j examples hold j·e/g errors in expectation: the cumulative count is
    exact at each group's end and linear inside it. Any fixed order (e.g. the dataset's)
    would let the examples' order decide the curve of a model with many equal confidences
    (a saturated softmax, a constant prediction).
    """
    order = torch.argsort(confidence, descending=True, stable=True)
    _, sizes = torch.unique_consecutive(confidence[order], return_counts=True)
    # before[i]: errors among the i most confident (i = 0 … N); a tie group [start, end)
    # holds before[end] − before[start] of them.
    before = torch.cat([errors.new_zeros(1), errors[order].cumsum(0)])
    ends = sizes.cumsum(0)
    starts = ends - sizes
    group = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes)
    rank_in_group = torch.arange(1, errors.numel() + 1, device=errors.device) - starts[group]
    rate_in_group = (before[ends] - before[starts]) / sizes
    return before[starts][group] + rank_in_group * rate_in_group[group]


def risk_coverage(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The risk–coverage curve: coverage c_k = k/N and risk r_k = (errors among the k most
    confident examples) / k, k = 1 … N, most confident first.

    Ties in confidence count in expectation over a uniformly random order of the tied
    examples (inside a tie group the cumulative error count rises linearly), so the curve
    does not depend on the examples' order.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.

    Returns:
        (N,) float64 coverages and (N,) float64 risks; the last risk is 1 − accuracy.
    """
    confidence, errors = _confidence_and_errors(probs, labels)
    answered = torch.arange(1, errors.numel() + 1, dtype=torch.float64, device=errors.device)
    return answered / errors.numel(), _expected_cumulative_errors(confidence, errors) / answered


def aurc(probs: Tensor, labels: Tensor) -> float:
    """Area under the risk–coverage curve, AURC = (1/N) Σ_{k=1}^{N} r_k (Geifman et al. 2019).

    The mean of :func:`risk_coverage`'s risks at coverages 1/N … N/N, ties in confidence in
    expectation over their order; in [0, 1], lower is better.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    return risk_coverage(probs, labels)[1].mean().item()


def optimal_aurc(probs: Tensor, labels: Tensor) -> float:
    """AURC of the oracle ranking (every correct example before any wrong one) at the same
    accuracy: with E errors among N, r*_k = max(0, k − (N − E)) / k and AURC* = (1/N) Σ_k r*_k.

    Geifman et al. 2019 give r̂ + (1 − r̂)·ln(1 − r̂), r̂ = E/N, its limit for large N; the
    finite sum is used so that E-AURC = AURC − AURC* ≥ 0 exactly.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    _, errors = _confidence_and_errors(probs, labels)
    n = errors.numel()
    answered = torch.arange(1, n + 1, dtype=torch.float64, device=errors.device)
    wrong = (answered - (n - errors.sum())).clamp_min(0.0)
    return (wrong / answered).mean().item()


def eaurc(probs: Tensor, labels: Tensor) -> float:
    """Excess AURC, E-AURC = AURC − AURC* (Geifman et al. 2019): what the confidence ranking
    costs beyond the oracle's at the same accuracy; 0 for a perfect ranking, ≥ 0 always.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    return aurc(probs, labels) - optimal_aurc(probs, labels)
