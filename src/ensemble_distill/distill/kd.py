"""Hinton knowledge distillation: one network learns the ensemble's mean prediction."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ensemble_distill.distill.base import DistillContext, DistillMethod, clean_cross_entropy
from ensemble_distill.distill.losses import kd_loss


class KnowledgeDistillation(DistillMethod):
    """Student = the body with a linear head; loss :func:`kd_loss` on cached teacher logits."""

    section = "kd"

    def train(self, student: nn.Module, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        alpha, temperature = options["alpha"], options["temperature"]

        def loss_fn(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            logits = student(batch.x_distill)
            # kd_loss with α = 1 is the distillation term alone; its CE part is on clean x.
            distill = kd_loss(
                logits, batch.teacher_logits, batch.y, alpha=1.0, temperature=temperature
            )
            return alpha * distill + (1.0 - alpha) * clean_cross_entropy(student, batch, logits)

        return context.fit(student, student.parameters(), loss_fn, desc="kd", epochs=context.epochs)
