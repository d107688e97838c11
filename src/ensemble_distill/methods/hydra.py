"""Hydra (Tran et al. 2020, arXiv 2001.04694): one shared body, M heads, head m ≈ member m."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ensemble_distill.methods.base import (
    DistillContext,
    DistillMethod,
    DistillOptions,
    distillation_loss,
)
from ensemble_distill.models import Classifier
from ensemble_distill.models.heads import StackedMLPHeads
from ensemble_distill.options import require, unit_interval


@dataclass
class HydraConfig(DistillOptions):
    """Hydra (Tran et al. 2020): shared body, M heads, two phases.

    Phase 1 (the first ``phase1_fraction`` of the epochs) trains body + one head by KD on the
    ensemble mean; phase 2 copies that head into all M and trains head m on member m.
    """

    head_widths: list[int] = field(default_factory=lambda: [100, 100])  # hidden layers per head
    temperature: float = 1.0
    alpha: float = 1.0  # 1: distillation only; < 1 adds (1−α)·CE of the heads' mean on labels
    phase1_fraction: float = 0.5
    # Phase 2 starts with every head a copy of the phase-1 head (the paper); false keeps the
    # other heads at their independent random initialisation.
    copy_head: bool = True

    def check(self) -> None:
        super().check()
        unit_interval(self, "phase1_fraction")
        for index, width in enumerate(self.head_widths):
            require(width >= 1, f"head_widths[{index}]", "must be >= 1", width)


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
    options_type = HydraConfig
    tasks = ("classification", "regression")
    color = "#0072B2"
    trains_members = True

    def student(self, base: Classifier, members: int, options: HydraConfig) -> HydraStudent:
        """The body of ``base`` with M MLP heads (``base``'s linear head is dropped)."""
        outputs = base.head.out_features
        heads = StackedMLPHeads(base.feature_dim, options.head_widths, outputs, members)
        return HydraStudent(base.body, heads)

    def train(
        self, student: HydraStudent, context: DistillContext, options: HydraConfig
    ) -> list[dict[str, Any]]:
        phase1 = round(context.epochs * options.phase1_fraction)
        first_head = FirstHead(student)

        def phase1_loss(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = first_head(batch.x_distill)[:, 0]
            return distillation_loss(
                first_head, batch, outputs, options, one_to_one=False, regression=context.regression
            )

        def phase2_loss(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            outputs = student(batch.x_distill)  # (batch, members, classes)
            return distillation_loss(
                student, batch, outputs, options, one_to_one=True, regression=context.regression
            )

        history = []
        if phase1 > 0:
            rows = context.fit(
                first_head, student.parameters(), phase1_loss, desc="hydra phase 1", epochs=phase1
            )
            history += [{"phase": 1, **row} for row in rows]
        if options.copy_head:
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
