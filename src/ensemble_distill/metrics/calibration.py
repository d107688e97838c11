"""Temperature scaling and the deep-ensemble equivalent (Ashukha et al. 2020).

Calibrated metrics (cNLL, cECE, cBS): one temperature T, fitted on a held-out validation split
by minimising NLL, rescales the log of the ensemble prediction, p̃ = softmax(log p̄ / T).
DEE: the real-valued ensemble size whose calibrated NLL equals a method's, read off the
(monotone) DE-1 … DE-M curve; below 1, extrapolated, when a method is worse than one member.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
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
    monotone: bool = True,
) -> list[float]:
    """Calibrated test NLL of DE-1 … DE-M: entry k−1 averages over up to ``max_subsets``
    random k-member subsets of the (N, M, C) member probabilities.

    With ``monotone`` (the default, and the curve DEE and results.json's ``ensemble_size_cnll``
    use) the per-size means are then made non-increasing by :func:`monotone_curve`, weighted
    by the number of subsets behind each: with few subsets of a large M, sampling noise can
    make DE-(k+1) look worse than DE-k (M = 50 gave the full ensemble a DEE of 37), which no
    ensemble size can mean. ``monotone=False`` gives the raw means.
    """
    members = test_probs.shape[1]
    rng = np.random.default_rng(seed)
    means, counts = [], []
    for size in range(1, members + 1):
        subsets = member_subsets(members, size, max_subsets, rng)
        values = [
            calibrated_metrics(
                val_probs[:, subset], val_labels, test_probs[:, subset], test_labels
            )["cnll"]
            for subset in subsets
        ]
        means.append(float(np.mean(values)))
        counts.append(len(values))
    return monotone_curve(means, counts) if monotone else means


def monotone_curve(values: list[float], weights: list[float]) -> list[float]:
    """The non-increasing sequence closest to ``values`` in weighted least squares, with the
    last entry (DE-M, the full ensemble: one exact value, not a sample) held fixed.

    Isotonic regression by pool-adjacent-violators (scikit-learn's ``IsotonicRegression``) of
    entries 1 … M−1, bounded below by the last entry; for isotonic regression a bound is met
    exactly by clipping the unbounded fit (``y_min``), so this is the weighted least-squares
    fit under both constraints. The full ensemble's own cNLL thus gets DEE = M exactly.
    """
    values = [float(v) for v in values]
    if len(values) < 3:
        # One free entry: the bound alone makes it monotone.
        return [max(v, values[-1]) for v in values[:-1]] + values[-1:]
    sizes = np.arange(1, len(values))
    fit = IsotonicRegression(increasing=False, y_min=values[-1]).fit(
        sizes, values[:-1], sample_weight=weights[:-1]
    )
    return [float(v) for v in fit.predict(sizes)] + values[-1:]


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


DEE_EXTRAPOLATED = "extrapolated"
"""``dee_note`` of a value worse than DE-1: its DEE (< 1) comes from the a + b/k law."""
DEE_CAPPED = "capped"
"""``dee_note`` of a value better than DE-M: its DEE is reported as M, a lower bound."""


def deep_ensemble_equivalent(curve: list[float], value: float) -> float:
    """DEE: the ensemble size n at which the DE-n curve equals ``value`` (Ashukha et al. 2020).

    ``curve[k − 1]`` is DE-k's calibrated NLL, non-increasing in k (:func:`ensemble_size_curve`).

    - Inside the curve, c_M ≤ value ≤ c_1: linear interpolation between neighbouring sizes
      (on a flat stretch, the smallest size that reaches the value, except that c_M itself,
      the full ensemble's own value, gives exactly M).
    - Worse than one member, value > c_1: a size below 1, from the usual shape of ensemble NLL
      against size, cNLL(k) = a + b/k (the members' errors average out as 1/k), through DE-1
      and DE-2: b = 2·(c_1 − c_2), a = 2·c_2 − c_1, inverted, DEE = b / (value − a). It equals
      1 at value = c_1 (continuous with the interpolation), falls towards 0 as the value
      worsens, and reads "the ensemble of a fraction of a member, i.e. of a member with b/n
      more excess NLL". 0 when DE-2 is no better than DE-1 (the law has no scale) or M = 1.
    - Better than the full ensemble, value < c_M: M, a lower bound (no extrapolation beyond
      the measured curve).

    :func:`dee_note` says which applied (``dee_note`` in results.json).
    """
    if value <= curve[-1]:
        return float(len(curve))
    if value > curve[0]:
        if len(curve) < 2 or curve[1] >= curve[0]:
            return 0.0
        b = 2.0 * (curve[0] - curve[1])
        a = 2.0 * curve[1] - curve[0]
        return b / (value - a)
    for k in range(1, len(curve)):
        upper, lower = curve[k - 1], curve[k]
        if value >= upper:  # exactly DE-1 (later sizes: value < upper from the last step)
            return float(k)
        if value >= lower:
            return k + (upper - value) / (upper - lower)
    return float(len(curve))  # unreachable: value > curve[-1] is met by the last segment


def dee_note(curve: list[float], value: float) -> str | None:
    """How :func:`deep_ensemble_equivalent` read ``value``: :data:`DEE_EXTRAPOLATED` (worse
    than DE-1, DEE < 1 from the a + b/k law), :data:`DEE_CAPPED` (better than DE-M, DEE = M
    is a lower bound) or None (interpolated inside the curve)."""
    if value > curve[0]:
        return DEE_EXTRAPOLATED
    if value < curve[-1]:
        return DEE_CAPPED
    return None
