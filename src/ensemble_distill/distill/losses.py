"""Distillation losses as pure functions of logits.

Shapes: student logits (batch, classes) or (batch, members, classes); teacher logits
(batch, members, classes). Temperatures divide logits: σ_T(v) = softmax(v / T).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def ensemble_log_probs(teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """log p̄_T with p̄_T = (1/M) Σ_m σ_T(z_m): the log of the mean of member *probabilities*.

    Computed as logsumexp_m log σ_T(z_m) − log M, so it never takes the log of a rounded 0.

    Args:
        teacher_logits: (batch, members, classes).

    Returns:
        (batch, classes) log-probabilities.
    """
    members = teacher_logits.shape[1]
    log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(members)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
) -> Tensor:
    """Hinton et al. 2015 knowledge distillation towards the ensemble mean.

    L = (1 − α)·CE(s, y) + α·T²·KL(p̄_T ‖ σ_T(s)), p̄_T = (1/M) Σ_m σ_T(z_m),
    averaged over the batch. The T² factor keeps gradient magnitudes comparable across T.

    Args:
        student_logits: (batch, classes).
        teacher_logits: (batch, members, classes).
        labels: (batch,); unused when α = 1.
    """
    target = ensemble_log_probs(teacher_logits, temperature)
    student = F.log_softmax(student_logits / temperature, dim=-1)
    # kl_div(input, target) = KL(target ‖ input); both given as log-probabilities.
    kl = F.kl_div(student, target, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * kl
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * F.cross_entropy(student_logits, labels)
    return loss
