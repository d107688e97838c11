"""Hinton knowledge distillation: one network learns the ensemble's mean prediction.

For regression the student is one Gaussian fitted to the moment-matched ensemble Gaussian; it
has no epistemic term (Var_m(μ_m) of one member is 0), which is what Hydra keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ensemble_distill.methods.base import (
    DistillContext,
    DistillMethod,
    DistillOptions,
    distillation_loss,
)


@dataclass
class KDConfig(DistillOptions):
    """Hinton KD: L = (1−α)·CE(s, y) + α·T²·KL(p̄_T ‖ σ_T(s)).

    The defaults are pure function matching (α = 1, T = 1: the KL to the members' mean
    probabilities, no labels), which with a patient schedule reaches the ensemble's calibrated
    NLL on MNIST where α = 0.9 at T = 4 stays at one member's (docs/results/recipes.md)."""

    alpha: float = 1.0
    temperature: float = 1.0


class KnowledgeDistillation(DistillMethod):
    """Student = the body with a linear head; loss :func:`kd_loss` on the teacher's logits
    (:func:`kd_regression_loss` on the teacher's Gaussians for regression)."""

    section = "kd"
    options_type = KDConfig
    tasks = ("classification", "regression")
    color = "#E69F00"

    def train(
        self, student: nn.Module, context: DistillContext, options: KDConfig
    ) -> list[dict[str, Any]]:
        def loss_fn(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = student(batch.x_distill)
            return distillation_loss(
                student, batch, outputs, options, one_to_one=False, regression=context.regression
            )

        return context.fit(student, student.parameters(), loss_fn, desc="kd", epochs=context.epochs)
