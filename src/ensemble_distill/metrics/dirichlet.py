"""Closed-form uncertainties of a Dirichlet prediction (Prior Networks, Malinin & Gales 2018).

A Prior Network outputs concentrations α (batch, classes) with α₀ = Σ_k α_k. Its predictive is
the expected categorical p̄ = α / α₀, and its uncertainty splits like an ensemble's:
total H[p̄] = expected entropy E_Dir[H[π]] + mutual information MI.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dirichlet_mean(log_alpha: Tensor) -> Tensor:
    """p̄ = α / α₀ = softmax(log α): (batch, classes) float64."""
    return torch.softmax(log_alpha.double(), dim=-1)


def dirichlet_expected_entropy(log_alpha: Tensor) -> Tensor:
    """E_{π~Dir(α)} H[π] = −Σ_k (α_k/α₀)(ψ(α_k + 1) − ψ(α₀ + 1)): (batch,) float64."""
    alpha = log_alpha.double().exp()
    alpha0 = alpha.sum(-1, keepdim=True)
    terms = (alpha / alpha0) * (torch.digamma(alpha + 1.0) - torch.digamma(alpha0 + 1.0))
    return -terms.sum(-1)


def dirichlet_mutual_information(log_alpha: Tensor) -> Tensor:
    """MI = H[α/α₀] − E_Dir[H[π]] (≥ 0; tiny negative rounding clamped): (batch,) float64."""
    mean = dirichlet_mean(log_alpha)
    total = -torch.xlogy(mean, mean).sum(-1)
    return (total - dirichlet_expected_entropy(log_alpha)).clamp_min(0.0)
