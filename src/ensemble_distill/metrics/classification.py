"""Classification metrics on predicted probabilities (METHODS.md, "Metrics").

Inputs are probabilities, never logits: ``(N, C)`` for one model or ``(N, M, C)`` for M
members (batch, members, classes). Everything is computed in float64 on the input's device.
Aggregate metrics return Python floats; per-example scores return ``(N,)`` float64 tensors.
All metrics are taken on the ensemble prediction p̄ = (1/M) Σ_m p_m (Hydra, Tran et al. 2020,
arXiv 2001.04694) except the member-level uncertainty and diversity scores.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ensemble_distill.errors import EnsembleDistillError

# Zero probabilities are replaced by the smallest positive (normal) float64 before a log, so
# log 0 becomes about −708 instead of −inf and the metrics stay finite.
_TINY = torch.finfo(torch.float64).tiny
# float32 softmax outputs can overshoot [0, 1] by a few ulps; larger excursions mean logits.
_RANGE_TOL = 1e-6


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of a reliability diagram (equal-width bins on confidence).

    Attributes:
        edges: (B + 1,) bin edges k / B; bin b is (edges[b], edges[b + 1]], bin 0 is closed.
        counts: (B,) int64 number of examples per bin.
        confidence: (B,) mean confidence max_k p̄_k per bin; NaN for an empty bin.
        accuracy: (B,) fraction of correct argmax predictions per bin; NaN for an empty bin.
    """

    edges: Tensor
    counts: Tensor
    confidence: Tensor
    accuracy: Tensor


def _as_probs(probs: Tensor) -> Tensor:
    """Validate probabilities and return them as float64, clipped to [0, 1].

    Raises :class:`EnsembleDistillError` for a non-tensor, a shape other than (N, C) or
    (N, M, C), an empty dimension, NaN/Inf, or values outside [0, 1] by more than 1e-6.
    Rows are not required to sum to 1 (too strict for float32 softmax outputs).
    """
    if not isinstance(probs, Tensor):
        raise EnsembleDistillError(
            f"probs must be a torch.Tensor, got {type(probs).__name__}; "
            "convert it with torch.as_tensor"
        )
    if probs.dim() not in (2, 3):
        raise EnsembleDistillError(
            f"probs must have shape (N, C) or (N, M, C), got {tuple(probs.shape)}; "
            "stack member outputs along dim 1 as (batch, members, classes)"
        )
    if probs.numel() == 0:
        raise EnsembleDistillError(
            f"probs has an empty dimension, shape {tuple(probs.shape)}; "
            "pass at least one example, one member and one class"
        )
    if not probs.is_floating_point():
        raise EnsembleDistillError(
            f"probs must be a floating-point tensor, got {probs.dtype}; convert it with .double()"
        )
    p = probs.detach().to(torch.float64)
    if not torch.isfinite(p).all():
        raise EnsembleDistillError(
            "probs contains NaN or Inf; check the model outputs (e.g. a diverged run)"
        )
    lo, hi = p.min().item(), p.max().item()
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise EnsembleDistillError(
            f"probs has values outside [0, 1] (min {lo:.4g}, max {hi:.4g}); "
            "pass probabilities (softmax outputs), not logits"
        )
    return p.clamp(0.0, 1.0)


def _as_labels(labels: Tensor, p: Tensor) -> Tensor:
    """Validate class indices against validated probabilities ``p``; return int64 on p's device.

    Raises :class:`EnsembleDistillError` for a non-tensor, a non-integer dtype, a shape other
    than (N,), or a label outside [0, C).
    """
    n, c = p.shape[0], p.shape[-1]
    if not isinstance(labels, Tensor):
        raise EnsembleDistillError(
            f"labels must be a torch.Tensor, got {type(labels).__name__}; "
            "convert it with torch.as_tensor(..., dtype=torch.int64)"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise EnsembleDistillError(
            f"labels must be integer class indices, got dtype {labels.dtype}; "
            "convert them with .long()"
        )
    if labels.shape != (n,):
        raise EnsembleDistillError(
            f"labels must have shape ({n},) to match probs, got {tuple(labels.shape)}; "
            "pass one class index per example"
        )
    y = labels.detach().to(device=p.device, dtype=torch.int64)
    lo, hi = y.min().item(), y.max().item()
    if lo < 0 or hi >= c:
        raise EnsembleDistillError(
            f"labels must lie in [0, {c}), found min {lo} and max {hi}; "
            "check that the label encoding matches the model's classes"
        )
    return y


def _mean(p: Tensor) -> Tensor:
    """p̄: (N, C) unchanged, (N, M, C) averaged over members."""
    return p.mean(dim=1) if p.dim() == 3 else p


def _entropy(p: Tensor) -> Tensor:
    """H[p] = −Σ_k p_k log p_k over the last dim, with 0 · log 0 = 0 (torch.xlogy)."""
    return -torch.xlogy(p, p).sum(dim=-1)


def mean_probs(probs: Tensor) -> Tensor:
    """Ensemble prediction p̄ = (1/M) Σ_m p_m.

    Args:
        probs: (N, C) or (N, M, C) probabilities.

    Returns:
        (N, C) float64; an (N, C) input is returned unchanged apart from the dtype.
    """
    return _mean(_as_probs(probs))


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """ACC = (1/N) Σ_n 1[argmax_k p̄_nk = y_n]; ties go to the lowest class index.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    return (_mean(p).argmax(dim=1) == y).double().mean().item()


def _log_mean_prob_of_label(p: Tensor, y: Tensor) -> Tensor:
    """log p̄_y per example, (N,), without ever forming p̄.

    For (N, M, C): log p̄_y = logsumexp_m(log p_{m,y}) − log M, which keeps precision when the
    members' p_{m,y} are tiny. Zeros are clamped at the smallest positive float64 before the log.
    """
    log_p = p.clamp_min(_TINY).log()
    if p.dim() == 2:
        return log_p.gather(1, y[:, None]).squeeze(1)
    index = y[:, None, None].expand(-1, p.shape[1], 1)
    log_p_y = log_p.gather(2, index).squeeze(2)  # (N, M)
    return torch.logsumexp(log_p_y, dim=1) - math.log(p.shape[1])


def nll(probs: Tensor, labels: Tensor) -> float:
    """NLL = −(1/N) Σ_n log p̄_{n, y_n}, in nats, computed in log space.

    For M members log p̄_y = logsumexp_m(log p_{m,y}) − log M (METHODS.md, "Metrics"). A zero
    probability is clamped at the smallest positive float64 (``torch.finfo(float64).tiny``,
    about 2.2e-308) before the log, so a confidently wrong example costs about 708 nats
    instead of making the mean infinite.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    return -_log_mean_prob_of_label(p, y).mean().item()


def brier(probs: Tensor, labels: Tensor) -> float:
    """Brier score (Brier 1950): (1/N) Σ_n Σ_k (p̄_nk − 1[k = y_n])², range [0, 2].

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    p_bar = _mean(p)
    one_hot = torch.nn.functional.one_hot(y, p_bar.shape[1]).to(p_bar.dtype)
    return (p_bar - one_hot).square().sum(dim=1).mean().item()


def brier_tfp(probs: Tensor, labels: Tensor) -> float:
    """Brier score in the TensorFlow-Probability form: (1/N) Σ_n (Σ_k p̄_nk² − 2 p̄_{n,y_n}).

    Equals :func:`brier` − 1 for rows that sum to 1; the Hydra paper's table (Tran et al.
    2020) reports this form, so −0.978 there means a Brier score of 0.022.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
    """
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    p_bar = _mean(p)
    p_y = p_bar.gather(1, y[:, None]).squeeze(1)
    return (p_bar.square().sum(dim=1) - 2 * p_y).mean().item()


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise EnsembleDistillError(
            f"num_bins must be a positive int, got {num_bins!r}; the papers use 15"
        )


def reliability_bins(probs: Tensor, labels: Tensor, num_bins: int = 15) -> ReliabilityBins:
    """Equal-width confidence bins for a reliability diagram (Guo et al. 2017).

    Confidence is max_k p̄_k. Bin b covers (b/B, (b+1)/B]; the first bin is closed, [0, 1/B],
    so confidence 0 is counted, and the last ends at 1, so confidence exactly 1.0 is counted
    (an implementation that uses open upper ends drops it). Edges are computed as k / B in
    float64, so a confidence equal to ``k / num_bins`` lands in the lower bin.

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
        num_bins: B, the number of bins.

    Returns:
        :class:`ReliabilityBins` with per-bin counts, mean confidence and accuracy.
    """
    _check_num_bins(num_bins)
    p = _as_probs(probs)
    y = _as_labels(labels, p)
    confidence, prediction = _mean(p).max(dim=1)
    correct = (prediction == y).to(torch.float64)
    edges = torch.arange(num_bins + 1, dtype=torch.float64, device=p.device) / num_bins
    # bucketize(right=False) gives i with edges[i-1] < x <= edges[i]; x = 0 gives i = 0.
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, num_bins - 1)
    counts = torch.bincount(index, minlength=num_bins)
    zeros = torch.zeros(num_bins, dtype=torch.float64, device=p.device)
    filled = counts > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=p.device)

    def per_bin_mean(values: Tensor) -> Tensor:
        sums = zeros.index_add(0, index, values)
        return torch.where(filled, sums / counts.clamp_min(1), nan)

    return ReliabilityBins(edges, counts, per_bin_mean(confidence), per_bin_mean(correct))


def ece(probs: Tensor, labels: Tensor, num_bins: int = 15) -> float:
    """Expected calibration error (Naeini et al. 2015; Guo et al. 2017), range [0, 1].

    ECE = Σ_b (n_b / N) |acc_b − conf_b| over the equal-width confidence bins of
    :func:`reliability_bins` (bins (lo, hi], first bin closed; empty bins contribute 0).

    Args:
        probs: (N, C) or (N, M, C) probabilities.
        labels: (N,) integer class indices.
        num_bins: number of bins; METHODS.md uses 15.
    """
    bins = reliability_bins(probs, labels, num_bins)
    filled = bins.counts > 0
    weight = bins.counts[filled].to(torch.float64) / bins.counts.sum()
    gap = (bins.accuracy[filled] - bins.confidence[filled]).abs()
    return (weight * gap).sum().item()


def predictive_entropy(probs: Tensor) -> Tensor:
    """Total uncertainty H[p̄] = −Σ_k p̄_k log p̄_k per example, in nats, with 0 · log 0 = 0.

    Args:
        probs: (N, C) or (N, M, C) probabilities.

    Returns:
        (N,) float64.
    """
    return _entropy(_mean(_as_probs(probs)))


def _expected_entropy(p: Tensor) -> Tensor:
    return _entropy(p).mean(dim=1) if p.dim() == 3 else _entropy(p)


def expected_entropy(probs: Tensor) -> Tensor:
    """Aleatoric (data) uncertainty (1/M) Σ_m H[p_m] per example, in nats.

    For an (N, C) input this is H[p], i.e. equal to :func:`predictive_entropy`.

    Args:
        probs: (N, C) or (N, M, C) probabilities.

    Returns:
        (N,) float64.
    """
    return _expected_entropy(_as_probs(probs))


def mutual_information(probs: Tensor) -> Tensor:
    """Epistemic (model) uncertainty MI = H[p̄] − (1/M) Σ_m H[p_m] per example, in nats.

    The Hydra table's "MU" (Tran et al. 2020); decomposition as in Depeweg et al. 2018.
    Exactly 0 for an (N, C) input; mathematically ≥ 0 (Jensen), so tiny negative values
    from rounding are clamped at 0.

    Args:
        probs: (N, C) or (N, M, C) probabilities.

    Returns:
        (N,) float64.
    """
    p = _as_probs(probs)
    if p.dim() == 2:
        return torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
    return (_entropy(_mean(p)) - _expected_entropy(p)).clamp_min(0.0)


def pairwise_kl_diversity(probs: Tensor) -> Tensor:
    """Member diversity: mean over ordered pairs i ≠ j of KL(p_i ‖ p_j), per example, in nats.

    diversity = 1 / (M (M − 1)) Σ_{i ≠ j} Σ_k p_ik (log p_ik − log p_jk)
    (METHODS.md, "Diversity"; Nam et al. 2021, arXiv 2110.14149). 0 · log 0 = 0 in the first
    term; in the second, p_jk = 0 is clamped at the smallest positive float64 (about
    2.2e-308, log ≈ −708), so a pair whose supports differ gives a large finite KL instead
    of +∞. Each KL is clamped at 0 against rounding. 0 for M = 1 or an (N, C) input.

    Args:
        probs: (N, C) or (N, M, C) probabilities.

    Returns:
        (N,) float64.
    """
    p = _as_probs(probs)
    m = p.shape[1] if p.dim() == 3 else 1
    if m == 1:
        return torch.zeros(p.shape[0], dtype=torch.float64, device=p.device)
    neg_entropy = -_entropy(p)  # (N, M): Σ_k p_ik log p_ik
    cross = torch.einsum("nik,njk->nij", p, p.clamp_min(_TINY).log())  # Σ_k p_ik log p_jk
    kl = (neg_entropy[:, :, None] - cross).clamp_min(0.0)  # (N, M, M), KL(p_i ‖ p_j)
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=p.device)
    return (kl * off_diagonal).sum(dim=(1, 2)) / (m * (m - 1))
