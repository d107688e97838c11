"""Hinton knowledge distillation: one network learns the ensemble's mean prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from ensemble_distill.config import Config
from ensemble_distill.distill.base import DistillContext
from ensemble_distill.distill.losses import kd_loss
from ensemble_distill.models import ModelSpec, create_model


class KnowledgeDistillation:
    """Student = the body with a linear head; loss :func:`kd_loss` on cached teacher logits."""

    def options(self, config: Config) -> dict[str, Any]:
        return asdict(config.kd)

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: dict[str, Any],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        return create_model(spec, mean, std)

    def train(self, student: nn.Module, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        train, device = context.data.train, context.device
        x, y = train.x.to(device), train.y.to(device)
        teacher_logits = context.teacher_train_logits.to(device)

        def loss_fn(index: Tensor) -> Tensor:
            batch = index[0]
            student.train()
            return kd_loss(
                student(x[batch]),
                teacher_logits[batch],
                y[batch],
                alpha=options["alpha"],
                temperature=options["temperature"],
            )

        return context.fit(student, student.parameters(), loss_fn, desc="kd", epochs=context.epochs)
