"""Temperature scaling and the deep-ensemble equivalent (Ashukha et al. 2020).

Calibrated metrics (cNLL, cECE, cBS): one temperature T, fitted on a held-out validation split
by minimising NLL, rescales the log of the ensemble prediction, p̃ = softmax(log p̄ / T).
DEE: the real-valued ensemble size whose calibrated NLL equals a method's.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from ensemble_distill.metrics.classification import brier, ece, mean_probs, nll

_TINY = torch.finfo(torch.float64).tiny


def log_mean_probs(probs: Tensor) -> Tensor:
    """log p̄ (N, C) of (N, C) or (N, M, C) probabilities, in float64."""
    return mean_probs(probs).clamp_min(_TINY).log()


def fit_temperature(probs: Tensor, labels: Tensor) -> float:
    """T > 0 minimising the NLL of softmax(log p̄ / T) on (validation) ``probs``, ``labels``.

    Searched over log T in [log 0.05, log 20] (bounded Brent), so the result is always finite.
    """
    log_p = log_mean_probs(probs)
    labels = labels.long()

    def objective(log_t: float) -> float:
        scaled = torch.log_softmax(log_p / math.exp(log_t), dim=-1)
        return float(-scaled.gather(1, labels[:, None]).mean())

    result = minimize_scalar(
        objective,
        bounds=(math.log(0.05), math.log(20.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return math.exp(result.x)


def temperature_scale(probs: Tensor, temperature: float) -> Tensor:
    """softmax(log p̄ / T): calibrated (N, C) probabilities."""
    return torch.softmax(log_mean_probs(probs) / temperature, dim=-1)


def calibrated_metrics(
    val_probs: Tensor, val_labels: Tensor, test_probs: Tensor, test_labels: Tensor
) -> dict[str, float]:
    """cNLL, cECE, cBS on test with the temperature fitted on validation (also returned)."""
    temperature = fit_temperature(val_probs, val_labels)
    scaled = temperature_scale(test_probs, temperature)
    return {
        "temperature": temperature,
        "cnll": nll(scaled, test_labels),
        "cece": ece(scaled, test_labels),
        "cbrier": brier(scaled, test_labels),
    }


def ensemble_size_curve(
    val_probs: Tensor,
    val_labels: Tensor,
    test_probs: Tensor,
    test_labels: Tensor,
    max_subsets: int = 10,
    seed: int = 0,
) -> list[float]:
    """Calibrated test NLL of DE-1 … DE-M: entry k−1 averages over up to ``max_subsets``
    random k-member subsets of the (N, M, C) member probabilities."""
    members = test_probs.shape[1]
    rng = np.random.default_rng(seed)
    curve = []
    for size in range(1, members + 1):
        subsets = member_subsets(members, size, max_subsets, rng)
        values = [
            calibrated_metrics(
                val_probs[:, subset], val_labels, test_probs[:, subset], test_labels
            )["cnll"]
            for subset in subsets
        ]
        curve.append(float(np.mean(values)))
    return curve


def member_subsets(
    members: int, size: int, count: int, rng: np.random.Generator
) -> list[list[int]]:
    """All ``size``-member subsets when there are at most ``count``, else ``count`` distinct
    random ones (never enumerating C(M, k), which is astronomically large for M = 50)."""
    if math.comb(members, size) <= count:
        return [list(c) for c in itertools.combinations(range(members), size)]
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < count:
        chosen.add(tuple(sorted(rng.choice(members, size, replace=False).tolist())))
    return [list(c) for c in sorted(chosen)]


def deep_ensemble_equivalent(curve: list[float], value: float) -> float:
    """DEE: the ensemble size n at which the DE-n curve equals ``value``, by linear
    interpolation between neighbouring sizes (Ashukha et al. 2020).

    ``curve[k − 1]`` is DE-k's calibrated NLL (decreasing in k). Values worse than DE-1 give
    1.0 and values better than DE-M give M: the curve says nothing outside [1, M].
    """
    if value >= curve[0]:
        return 1.0
    for k in range(1, len(curve)):
        upper, lower = curve[k - 1], curve[k]
        if lower <= value:
            return k + (upper - value) / (upper - lower)
    return float(len(curve))
