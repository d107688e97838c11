"""Hydra (Tran et al. 2020, arXiv 2001.04694): one shared body, M heads, head m ≈ member m."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ensemble_distill.distill.base import DistillContext, DistillMethod, label_loss
from ensemble_distill.distill.losses import (
    hydra_loss,
    hydra_regression_loss,
    kd_loss,
    kd_regression_loss,
)
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.models.heads import StackedMLPHeads


class HydraStudent(nn.Module):
    """``heads(body(x))``: features (batch, F) → logits (batch, members, classes).

    The heads are a :class:`StackedMLPHeads`, evaluated together in one batched computation.
    """

    def __init__(self, body: nn.Module, heads: StackedMLPHeads) -> None:
        super().__init__()
        self.body = body
        self.heads = heads

    def forward(self, x: Tensor, heads: slice = slice(None)) -> Tensor:
        return self.heads(self.body(x), heads)


class FirstHead(nn.Module):
    """The Hinton head alone, (batch, 1, classes): what phase 1 trains and validates."""

    def __init__(self, student: HydraStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x, heads=slice(0, 1))


class Hydra(DistillMethod):
    """Two phases: (1) body + head 0 by KD on p̄_T; (2) copy head 0 to all heads, then
    :func:`hydra_loss` of head m against member m. With α < 1 both phases add (1−α) times the
    heads' mean cross-entropy on the clean labels.

    Regression: heads output Gaussians; phase 1 fits the moment-matched ensemble Gaussian
    (:func:`kd_regression_loss`), phase 2 minimises (1/M) Σ_m KL(N(μ_m, σ_m²) ‖ N(μ̂_m, σ̂_m²))
    (:func:`hydra_regression_loss`); the temperature is unused."""

    section = "hydra"
    tasks = ("classification", "regression")

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: dict[str, Any],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> HydraStudent:
        base = create_model(spec, mean, std)
        heads = StackedMLPHeads(base.feature_dim, options["head_widths"], spec.num_classes, members)
        return HydraStudent(base.body, heads)

    def train(self, student: HydraStudent, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        alpha, temperature = options["alpha"], options["temperature"]
        phase1 = round(context.epochs * options["phase1_fraction"])

        first_head = FirstHead(student)

        def phase1_loss(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = first_head(batch.x_distill)[:, 0]
            if context.regression:
                distill = kd_regression_loss(outputs, batch.teacher_outputs)
            else:
                distill = kd_loss(
                    outputs, batch.teacher_outputs, batch.y, alpha=1.0, temperature=temperature
                )
            return alpha * distill + (1.0 - alpha) * label_loss(first_head, batch, outputs)

        def phase2_loss(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = student(batch.x_distill)  # (batch, members, classes)
            if context.regression:
                distill = hydra_regression_loss(outputs, batch.teacher_outputs)
            else:
                distill = hydra_loss(outputs, batch.teacher_outputs, temperature=temperature)
            return alpha * distill + (1.0 - alpha) * label_loss(student, batch, outputs)

        history = []
        if phase1 > 0:
            rows = context.fit(
                first_head, student.parameters(), phase1_loss, desc="hydra phase 1", epochs=phase1
            )
            history += [{"phase": 1, **row} for row in rows]
        if options["copy_head"]:
            student.heads.copy_head(0)
        rows = context.fit(
            student,
            student.parameters(),
            phase2_loss,
            desc="hydra phase 2",
            epochs=context.epochs - phase1,
        )
        history += [{"phase": 2, **row} for row in rows]
        return history
