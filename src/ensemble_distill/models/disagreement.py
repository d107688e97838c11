"""The disagreement temperature: one scalar s that scales members' logits around their mean.

    z̃_m = z̄ + s·(z_m − z̄),   z̄ = (1/M) Σ_m z_m          (logits, per example and class)

The members' mean logit z̄ is unchanged; s > 1 spreads the members apart (more mutual
information, MI = H[p̄] − (1/M) Σ_m H[p_m]), s < 1 draws them together, s → 0 makes them one.
It is the members-around-their-mean analogue of temperature scaling (Guo et al. 2017, "On
calibration of modern neural networks"), which scales one network's logits around 0: a
student with members (Hydra's heads, BatchEnsemble) stores s as a buffer
(:data:`SCALE_BUFFER`, shape ()) applied in its forward, so the scale travels with its weights
and every reader of the members (evaluation, the API, the export) sees it. s is fitted after
training (``methods.disagreement_fit``); until then it is 1, which changes nothing, bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

# The students' buffer holding s; a checkpoint saved before it existed loads with s = 1.
SCALE_BUFFER = "disagreement_scale"


def scale_disagreement(logits: Tensor, scale: Tensor | float) -> Tensor:
    """z̃_m = z̄ + s·(z_m − z̄) over the members of ``logits`` (batch, members, classes).

    Computed as z_m + (s − 1)·(z_m − z̄): at s = 1 that adds exact zeros, so the output (and
    the gradient through it) is the input bit for bit, and a student that was never fitted
    computes what it did before the scale existed. The dtype is the logits' (a 0-d ``scale``
    does not promote bf16 logits)."""
    # Σ/M, not .mean(): the ONNX exporter names a node after its op, and a node named
    # "mean" collides with the export's output of that name (a regression student's).
    centred = logits - logits.sum(dim=1, keepdim=True) / logits.shape[1]
    return logits + (scale - 1.0) * centred


def default_scales(
    expected: Mapping[str, Tensor], loaded: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``loaded`` (a saved state dict) plus s = 1 for each :data:`SCALE_BUFFER` that the
    architecture's state dict ``expected`` has and ``loaded`` lacks: weights saved before the
    buffer existed, whose members computed exactly what s = 1 computes. Any other missing or
    extra name is left for the caller's shape check to refuse."""
    missing = {
        name: torch.ones((), dtype=tensor.dtype)
        for name, tensor in expected.items()
        if name.rpartition(".")[2] == SCALE_BUFFER and tensor.dim() == 0 and name not in loaded
    }
    return {**loaded, **missing}


def disagreement_scale(model: nn.Module) -> float | None:
    """The model's own s (its top-level :data:`SCALE_BUFFER`), or None if it has none."""
    scale = getattr(model, SCALE_BUFFER, None)
    return float(scale) if isinstance(scale, Tensor) else None


@torch.no_grad()
def set_disagreement_scale(model: nn.Module, scale: float) -> None:
    """Set the model's s in place (its buffer keeps its dtype and device)."""
    getattr(model, SCALE_BUFFER).fill_(scale)


def at_unit_scale(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with s = 1 — what its members computed before the fit — or None
    when ``model`` has no s or its s is already 1 (there is nothing else to show)."""
    scale = disagreement_scale(model)
    if scale is None or scale == 1.0:
        return None
    unscaled = copy.deepcopy(model)
    set_disagreement_scale(unscaled, 1.0)
    return unscaled


__all__ = [
    "SCALE_BUFFER",
    "at_unit_scale",
    "default_scales",
    "disagreement_scale",
    "scale_disagreement",
    "set_disagreement_scale",
]
