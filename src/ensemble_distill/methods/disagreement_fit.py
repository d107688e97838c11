"""Fitting the disagreement temperature s after training (``hydra.disagreement_temperature``,
``be.disagreement_temperature``).

s scales the student's members' logits around their mean, z̃_m = z̄ + s·(z_m − z̄)
(:func:`~ensemble_distill.models.disagreement.scale_disagreement`); it is chosen so that the
student's mean mutual information over the run's validation inputs equals the teacher
ensemble's on the same inputs:

    (1/N) Σ_x MI_student(x; s) = (1/N) Σ_x MI_ensemble(x),   MI = H[p̄] − (1/M) Σ_m H[p_m],

a one-dimensional root of log s on [log 10⁻², log 10²] (a grid scan, then bisection). It is the
members-around-their-mean analogue of temperature scaling (Guo et al. 2017), which fits one
scalar on validation data to match the NLL; here the target is the ensemble's disagreement,
which a compact student keeps in rank but not in size (issue 28). The inputs are the clean
validation inputs and, for a method with a perturbation, those inputs perturbed by it — never
the OOD set, which only the evaluation reads.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor, nn

from ensemble_distill import metrics
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.methods.base import DistillContext
from ensemble_distill.models.disagreement import (
    disagreement_scale,
    scale_disagreement,
    set_disagreement_scale,
)

log = logging.getLogger(__name__)

# The range of s searched: beyond it the members are one (MI ≈ 0) or one-hot votes.
SCALE_BOUNDS = (1e-2, 1e2)
# The grid of log s scanned for the first crossing: 12 points per decade.
GRID_POINTS = 49
# Bisection stops when log s is known to this (s to a relative 1e-9).
LOG_SCALE_TOLERANCE = 1e-9


def mean_mutual_information(logits: Tensor) -> float:
    """(1/N) Σ_x MI(x) of member logits (N, members, classes), in nats, in float64."""
    return float(metrics.mutual_information(torch.softmax(logits.double(), dim=-1)).mean())


def fit_disagreement_scale(
    logits: Tensor, target: float, bounds: tuple[float, float] = SCALE_BOUNDS
) -> float:
    """The smallest s in ``bounds`` at which the mean MI of ``scale_disagreement(logits, s)``
    equals ``target``: the first sign change of mean MI − target on a grid of log s
    (:data:`GRID_POINTS` points), then bisection on log s inside it.

    The mean MI rises with s from 0 (s → 0: the members are one), but not everywhere: where
    the members are nearly one-hot it can overshoot its s → ∞ limit (the entropy of their
    votes) and come back down — in our trials on random logits only beyond s ≈ 40, or with
    member logits spread by ≈ 8 nats — and the MI of one example can fall as s grows. The
    grid keeps the fit from missing a root that a bracket of the two bounds alone would miss.

    Args:
        logits: (N, members, classes) member logits at s = 1.
        target: the mean MI to reach, in nats (the teacher ensemble's).

    Returns:
        s; where no s in ``bounds`` reaches ``target``, the grid's s closest to it (the nearer
        bound when the mean MI rises with s), with a warning.
    """
    z = logits.double()

    def excess(log_scale: float) -> float:
        return mean_mutual_information(scale_disagreement(z, math.exp(log_scale))) - target

    low, high = math.log(bounds[0]), math.log(bounds[1])
    grid = torch.linspace(low, high, GRID_POINTS, dtype=torch.float64).tolist()
    values = [excess(u) for u in grid]
    crossing = next(
        (i for i in range(len(grid) - 1) if values[i] < 0.0 <= values[i + 1]),
        None,
    )
    if crossing is None:
        closest = min(range(len(grid)), key=lambda i: abs(values[i]))
        scale = math.exp(grid[closest])
        log.warning(
            "disagreement temperature: no s in [%g, %g] gives the ensemble's mean validation "
            "MI %.4g (the student's ranges over [%.4g, %.4g]); s = %.4g, the closest",
            *bounds,
            target,
            min(values) + target,
            max(values) + target,
            scale,
        )
        return scale
    low, high = grid[crossing], grid[crossing + 1]
    while high - low > LOG_SCALE_TOLERANCE:
        middle = 0.5 * (low + high)
        if excess(middle) < 0.0:
            low = middle
        else:
            high = middle
    return math.exp(0.5 * (low + high))


def fit_disagreement_temperature(
    student: nn.Module, context: DistillContext, desc: str
) -> dict[str, Any]:
    """Fit the trained ``student``'s s on the run's validation inputs
    (:meth:`DistillContext.validation_inputs`), set it in place and log it.

    Returns:
        What the student's history records: ``disagreement_scale`` (s), and the mean MI on
        those inputs of the teacher (``val_mi_ensemble``), the student at s = 1
        (``val_mi_unscaled``) and at s (``val_mi``); {} where s stays 1 (one member: nothing
        to disagree). Classification only (the methods refuse regression before training).
    """
    set_disagreement_scale(student, 1.0)  # fitted from the members as trained
    batch_size, device = context.config.eval.batch_size, context.device
    inputs = context.validation_inputs()
    ensemble = torch.cat([predict_outputs(context.teacher, x, batch_size, device) for x in inputs])
    unscaled = torch.cat([predict_outputs(student, x, batch_size, device) for x in inputs])
    if unscaled.dim() != 3 or unscaled.shape[1] < 2:
        log.warning("%s: one member cannot disagree; the disagreement temperature stays 1", desc)
        return {}
    target = mean_mutual_information(ensemble)
    set_disagreement_scale(student, fit_disagreement_scale(unscaled, target))
    scale = disagreement_scale(student)  # as stored (float32), what every reader applies
    row = {
        "disagreement_scale": scale,
        "val_mi_ensemble": target,
        "val_mi_unscaled": mean_mutual_information(unscaled),
        "val_mi": mean_mutual_information(scale_disagreement(unscaled.double(), scale)),
    }
    log.info(
        "%s: disagreement temperature s = %.4g on %d validation inputs%s (mean MI: ensemble "
        "%.4g, student %.4g at s = 1, %.4g at s)",
        desc,
        scale,
        len(unscaled),
        " (clean and perturbed)" if len(inputs) > 1 else "",
        row["val_mi_ensemble"],
        row["val_mi_unscaled"],
        row["val_mi"],
    )
    return row


def with_disagreement_temperature(
    student: nn.Module, context: DistillContext, history: list[dict[str, Any]], desc: str
) -> list[dict[str, Any]]:
    """``history`` with :func:`fit_disagreement_temperature`'s record on its last epoch's row
    (the epoch after which s was fitted), having fitted s on ``student``."""
    record = fit_disagreement_temperature(student, context, desc)
    if not history:
        return history
    return [*history[:-1], {**history[-1], **record}]
