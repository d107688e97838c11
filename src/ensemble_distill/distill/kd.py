"""Hinton knowledge distillation: one network learns the ensemble's mean prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from ensemble_distill.config import Config
from ensemble_distill.distill.base import DistillContext
from ensemble_distill.distill.losses import kd_loss
from ensemble_distill.evaluation import epoch_validator
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.training import fit


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
        config, data, device = context.config, context.data, context.device
        options = self.options(config)
        x, y = data.train.x.to(device), data.train.y.to(device)
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

        return fit(
            student.parameters(),
            loss_fn,
            num_examples=len(y),
            epochs=config.student.epochs or config.epochs,
            batch_size=config.batch_size,
            optim=config.optim,
            seeds=[config.seed],
            desc="kd",
            quiet=context.quiet,
            on_epoch=epoch_validator(student, data.val, device),
        )
