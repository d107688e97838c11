"""Gaussian outputs for regression: a network's 2 raw outputs per member become N(μ, σ²)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

# σ² floor: keeps the Gaussian NLL finite when a member becomes over-confident on a training
# point (Lakshminarayanan et al. 2017 use softplus + 1e-6 the same way).
MIN_VARIANCE = 1e-6
OUTPUTS = 2  # (μ, raw variance) per member


def gaussian_params(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """Raw outputs (..., 2) -> mean (...) and variance (...) = softplus(raw) + MIN_VARIANCE."""
    if outputs.shape[-1] != OUTPUTS:
        raise ValueError(f"Gaussian outputs need a last dimension of 2, got {tuple(outputs.shape)}")
    return outputs[..., 0], F.softplus(outputs[..., 1]) + MIN_VARIANCE
