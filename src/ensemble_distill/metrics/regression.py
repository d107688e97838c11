"""Regression metrics for Gaussian deep ensembles (METHODS.md, "Teacher: deep ensemble" and
"Metrics": regression).

Member m predicts N(μ_m, σ_m²) (``ensemble_distill.models.gaussian.gaussian_params`` turns a
network's two raw outputs into (μ, σ²)). Member outputs are laid out as (batch, members):
means and variances ``(N, M)``, targets ``(N,)``. The ensemble predictive is the mixture
(1/M) Σ_m N(μ_m, σ_m²) (Lakshminarayanan et al. 2017, "Simple and Scalable Predictive
Uncertainty Estimation using Deep Ensembles"), summarised by its first two moments:

    μ̄ = (1/M) Σ_m μ_m,   σ̄² = (1/M) Σ_m σ_m²  (aleatoric)  +  (1/M) Σ_m (μ_m − μ̄)²  (epistemic).

RMSE, NLL and interval coverage are taken on the moment-matched Gaussian N(μ̄, σ̄²), the
approximation Lakshminarayanan et al. use for evaluation (METHODS.md, "Metrics"). Everything is
computed in float64 on the input's device; aggregate metrics return Python floats and
per-example quantities ``(N,)`` float64 tensors. Bad input raises
:class:`~ensemble_distill.errors.EnsembleDistillError`.

OOD detection for regression reuses :func:`ensemble_distill.metrics.ood.ood_auroc` (and
``ood_aupr``) with the epistemic variance as the score (higher = more OOD)::

    _, _, epistemic_in = mixture_moments(means_in, variances_in)
    _, _, epistemic_out = mixture_moments(means_out, variances_out)
    auroc = ood_auroc(epistemic_in, epistemic_out)   # ood_auroc(score_in, score_out)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ensemble_distill.errors import EnsembleDistillError

# Nominal levels of the central prediction intervals reported by default.
COVERAGE_LEVELS = (0.5, 0.9, 0.95)
_LOG_2PI = math.log(2.0 * math.pi)


def _as_float64(x: Tensor, name: str, dims: tuple[int, ...]) -> Tensor:
    """Validate a real, finite, non-empty tensor with one of ``dims``; return it as float64."""
    if not isinstance(x, Tensor):
        raise EnsembleDistillError(
            f"{name} must be a torch.Tensor, got {type(x).__name__}; "
            "convert it with torch.as_tensor"
        )
    if x.dim() not in dims:
        layouts = " or ".join(("(N,)", "(N, M)")[d - 1] for d in dims)
        raise EnsembleDistillError(
            f"{name} must have shape {layouts}, got {tuple(x.shape)}; "
            "stack member outputs along dim 1 as (batch, members)"
        )
    if x.numel() == 0:
        raise EnsembleDistillError(
            f"{name} has an empty dimension, shape {tuple(x.shape)}; "
            "pass at least one example and one member"
        )
    if x.dtype.is_complex or x.dtype == torch.bool:
        raise EnsembleDistillError(
            f"{name} must be a real-valued tensor, got {x.dtype}; convert it with .double()"
        )
    out = x.detach().to(torch.float64)
    if not torch.isfinite(out).all():
        raise EnsembleDistillError(
            f"{name} contains NaN or Inf; check the model outputs (e.g. a diverged run)"
        )
    return out


def _check_variance(variance: Tensor, name: str, *, strict: bool) -> None:
    """Variances must be > 0 (``strict``, for densities and intervals) or ≥ 0."""
    lo = variance.min().item()
    if lo < 0 or (strict and lo == 0):
        bound = "> 0" if strict else ">= 0"
        raise EnsembleDistillError(
            f"{name} must be {bound}, found min {lo:.4g}; pass variances σ², not raw outputs "
            "or log-variances (see models.gaussian.gaussian_params)"
        )


def _predictive(mean: Tensor, variance: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate one Gaussian per example, (N,) each, and return them as float64."""
    mu = _as_float64(mean, "mean", (1,))
    var = _as_float64(variance, "variance", (1,))
    target = _as_float64(y, "y", (1,)).to(mu.device)
    if not (mu.shape == var.shape == target.shape):
        raise EnsembleDistillError(
            f"mean {tuple(mu.shape)}, variance {tuple(var.shape)} and y {tuple(target.shape)} "
            "must have the same shape (N,); pass one prediction and one target per example"
        )
    _check_variance(var, "variance", strict=True)
    return mu, var.to(mu.device), target


def _as_levels(levels: Sequence[float] | Tensor) -> Tensor:
    """Nominal levels as a 1-D float64 tensor, each strictly inside (0, 1)."""
    p = torch.as_tensor(levels, dtype=torch.float64).reshape(-1)
    if p.numel() == 0 or not torch.isfinite(p).all() or (p <= 0).any() or (p >= 1).any():
        raise EnsembleDistillError(
            f"coverage levels must lie strictly inside (0, 1), got {p.tolist()}; "
            "pass nominal probabilities such as 0.9 for a 90% interval"
        )
    return p


def _standardised_error(mean: Tensor, variance: Tensor, y: Tensor) -> Tensor:
    """|y − μ| / σ per example, (N,)."""
    return (y - mean).abs() / variance.sqrt()


def _z(levels: Tensor) -> Tensor:
    """Half-width of the central p-interval in standard deviations: z = Φ⁻¹((1 + p) / 2)."""
    return torch.special.ndtri((1.0 + levels) / 2.0)


def mixture_moments(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and variance decomposition of the ensemble mixture (1/M) Σ_m N(μ_m, σ_m²).

    μ̄ = (1/M) Σ_m μ_m; aleatoric = (1/M) Σ_m σ_m²; epistemic = Var_m(μ_m) =
    (1/M) Σ_m (μ_m − μ̄)² (population variance, 0 for M = 1). The mixture's total variance is
    aleatoric + epistemic (law of total variance; METHODS.md, "Teacher: deep ensemble").

    Args:
        means: (N, M) member means μ_m; an (N,) tensor is one member.
        variances: (N, M) member variances σ_m² ≥ 0, same shape as ``means``.

    Returns:
        (mean, aleatoric, epistemic), each (N,) float64.
    """
    mu = _as_float64(means, "means", (1, 2))
    var = _as_float64(variances, "variances", (1, 2))
    if mu.shape != var.shape:
        raise EnsembleDistillError(
            f"means {tuple(mu.shape)} and variances {tuple(var.shape)} must have the same "
            "shape (N, M); pass one (μ, σ²) pair per example and member"
        )
    _check_variance(var, "variances", strict=False)
    var = var.to(mu.device)
    if mu.dim() == 1:
        return mu, var, torch.zeros_like(mu)
    mean = mu.mean(dim=1)
    epistemic = (mu - mean[:, None]).square().mean(dim=1)
    return mean, var.mean(dim=1), epistemic


def rmse(mean: Tensor, y: Tensor) -> float:
    """Root mean squared error √((1/N) Σ_n (y_n − μ_n)²).

    Args:
        mean: (N,) point predictions (μ̄ for an ensemble).
        y: (N,) targets.
    """
    mu = _as_float64(mean, "mean", (1,))
    target = _as_float64(y, "y", (1,)).to(mu.device)
    if mu.shape != target.shape:
        raise EnsembleDistillError(
            f"mean {tuple(mu.shape)} and y {tuple(target.shape)} must have the same shape (N,); "
            "pass one prediction per target"
        )
    return (target - mu).square().mean().sqrt().item()


def gaussian_nll(mean: Tensor, variance: Tensor, y: Tensor) -> float:
    """Gaussian negative log-likelihood in nats, including the constant:

    NLL = (1/N) Σ_n [½ log(2π σ_n²) + (y_n − μ_n)² / (2 σ_n²)].

    Args:
        mean: (N,) predictive means.
        variance: (N,) predictive variances, > 0.
        y: (N,) targets.
    """
    mu, var, target = _predictive(mean, variance, y)
    nll = 0.5 * (_LOG_2PI + var.log()) + (target - mu).square() / (2.0 * var)
    return nll.mean().item()


def _level_key(p: float) -> str:
    """0.9 -> "coverage_90", 0.975 -> "coverage_97.5"."""
    return f"coverage_{100.0 * p:g}"


def interval_coverage(
    mean: Tensor,
    variance: Tensor,
    y: Tensor,
    levels: Sequence[float] = COVERAGE_LEVELS,
) -> dict[str, float]:
    """Observed coverage of central Gaussian prediction intervals.

    For nominal level p the interval is μ ± z_p σ with z_p = Φ⁻¹((1 + p) / 2) (closed, so a
    target exactly on the boundary counts as covered); coverage = (1/N) Σ_n 1[|y_n − μ_n| ≤
    z_p σ_n]. A calibrated model has coverage ≈ p.

    Args:
        mean: (N,) predictive means.
        variance: (N,) predictive variances, > 0.
        y: (N,) targets.
        levels: nominal levels in (0, 1).

    Returns:
        ``{"coverage_50": ..., "coverage_90": ..., "coverage_95": ...}`` for the default levels
        (key ``f"coverage_{100 p:g}"``).
    """
    p = _as_levels(levels)
    _, observed = calibration_curve(mean, variance, y, p)
    return {
        _level_key(level): cov for level, cov in zip(p.tolist(), observed.tolist(), strict=True)
    }


def calibration_curve(
    mean: Tensor,
    variance: Tensor,
    y: Tensor,
    levels: Sequence[float] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Observed versus nominal coverage of central intervals, for a regression calibration plot.

    observed_k = (1/N) Σ_n 1[|y_n − μ_n| ≤ Φ⁻¹((1 + p_k) / 2) σ_n]; the diagonal observed = p
    is perfect calibration, a curve below it means over-confident (too narrow) intervals.
    Non-decreasing in p by construction.

    Args:
        mean: (N,) predictive means.
        variance: (N,) predictive variances, > 0.
        y: (N,) targets.
        levels: (K,) nominal levels in (0, 1); default 0.05, 0.10, ..., 0.95.

    Returns:
        (levels (K,), observed (K,)), both float64 on the input's device.
    """
    mu, var, target = _predictive(mean, variance, y)
    p = _as_levels(torch.arange(1, 20, dtype=torch.float64) / 20 if levels is None else levels)
    p = p.to(mu.device)
    error = _standardised_error(mu, var, target)  # (N,)
    observed = (error[None, :] <= _z(p)[:, None]).double().mean(dim=1)
    return p, observed


def regression_metrics(means: Tensor, variances: Tensor, y: Tensor) -> dict[str, float]:
    """All regression metrics of an ensemble (or a single Gaussian model) in one dict.

    Keys: ``rmse`` of μ̄; ``nll`` of the moment-matched predictive N(μ̄, aleatoric + epistemic);
    ``aleatoric`` and ``epistemic``, the per-example variances of :func:`mixture_moments`
    averaged over examples (epistemic = 0 for M = 1); ``coverage_50``, ``coverage_90``,
    ``coverage_95`` of the predictive's central intervals (:func:`interval_coverage`).

    Args:
        means: (N, M) member means; an (N,) tensor is one member.
        variances: (N, M) member variances, > 0.
        y: (N,) targets.
    """
    mean, aleatoric, epistemic = mixture_moments(means, variances)
    total = aleatoric + epistemic
    return {
        "rmse": rmse(mean, y),
        "nll": gaussian_nll(mean, total, y),
        "epistemic": epistemic.mean().item(),
        "aleatoric": aleatoric.mean().item(),
        **interval_coverage(mean, total, y, COVERAGE_LEVELS),
    }
