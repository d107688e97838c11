"""Hinton knowledge distillation: one network learns the ensemble's mean prediction.

For regression the student is one Gaussian fitted to the moment-matched ensemble Gaussian; it
has no epistemic term (Var_m(μ_m) of one member is 0), which is what Hydra keeps.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ensemble_distill.distill.base import DistillContext, DistillMethod, label_loss
from ensemble_distill.distill.losses import kd_loss, kd_regression_loss


class KnowledgeDistillation(DistillMethod):
    """Student = the body with a linear head; loss :func:`kd_loss` on cached teacher logits
    (:func:`kd_regression_loss` on the teacher's Gaussians for regression)."""

    section = "kd"
    tasks = ("classification", "regression")

    def train(self, student: nn.Module, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        alpha, temperature = options["alpha"], options["temperature"]

        def loss_fn(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = student(batch.x_distill)
            if context.regression:
                distill = kd_regression_loss(outputs, batch.teacher_outputs)
            else:  # kd_loss with α = 1 is the distillation term alone; its CE part is on clean x.
                distill = kd_loss(
                    outputs, batch.teacher_outputs, batch.y, alpha=1.0, temperature=temperature
                )
            return alpha * distill + (1.0 - alpha) * label_loss(student, batch, outputs)

        return context.fit(student, student.parameters(), loss_fn, desc="kd", epochs=context.epochs)
