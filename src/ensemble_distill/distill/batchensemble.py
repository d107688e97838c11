"""BatchEnsemble one-to-one students (Nam et al. 2021) and LatentBE (Nam et al. 2022).

A BatchEnsemble student has one shared weight per layer and rank-one factors per member; member j
is distilled from teacher j only: L = (1−α)·(1/M)Σ_j CE(S_j(x), y) + α·τ²·(1/M)Σ_j
KL(σ_τ(T_j(x̃)) ‖ σ_τ(S_j(x̃))) — the same per-member loss as Hydra's (:func:`hydra_loss`).
LatentBE trains such a student from factors 1 with its diversifying perturbation, then folds the
members into one plain network with the mean factors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ensemble_distill.distill.base import DistillContext, DistillMethod, label_loss
from ensemble_distill.distill.losses import hydra_loss
from ensemble_distill.distill.perturbations import PERTURBATIONS
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.models.batchensemble import (
    BatchEnsemble,
    factor_parameters,
    fold_latent_be,
    shared_parameters,
)


def train_one_to_one(
    student: BatchEnsemble, context: DistillContext, options: dict[str, Any], desc: str
) -> list[dict[str, Any]]:
    """Train a BatchEnsemble member-by-teacher; factors r, s in their own parameter group
    (learning rate × ``factor_lr_scale``, no weight decay: decay would pull them to 0)."""
    alpha, temperature = options["alpha"], options["temperature"]

    def loss_fn(index: Tensor) -> Tensor:
        batch = context.batch(index)
        student.train()
        logits = student(batch.x_distill)  # (batch, members, classes)
        distill = hydra_loss(logits, batch.teacher_outputs, temperature=temperature)
        return alpha * distill + (1.0 - alpha) * label_loss(student, batch, logits)

    groups = [
        {"params": shared_parameters(student)},
        {
            "params": factor_parameters(student),
            "weight_decay": 0.0,
            "lr": context.config.optim.lr * options["factor_lr_scale"],
        },
    ]
    return context.fit(student, groups, loss_fn, desc=desc, epochs=context.epochs)


class BatchEnsembleDistillation(DistillMethod):
    """``be``: a BatchEnsemble of the student body, one member per teacher."""

    section = "be"

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: dict[str, Any],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> BatchEnsemble:
        return BatchEnsemble.from_model(
            create_model(spec, mean, std), members, options["init"], options["init_std"]
        )

    def train(self, student: BatchEnsemble, context: DistillContext) -> list[dict[str, Any]]:
        return train_one_to_one(student, context, self.options(context.config), desc="be")


class LatentBE(DistillMethod):
    """``latentbe``: one plain network, trained as a BatchEnsemble (factors from 1) on the
    ``diverse`` perturbation (unless ``latentbe+NAME`` names another), then folded."""

    section = "latentbe"

    def train(self, student: nn.Module, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        ensemble = BatchEnsemble.from_model(
            student, context.teacher.num_members, options["init"], options["init_std"]
        )
        if context.perturbation is None:
            context = dataclasses.replace(context, perturbation=PERTURBATIONS.get("diverse"))
        context.bind_student(ensemble)
        history = train_one_to_one(ensemble, context, options, desc="latentbe")
        student.load_state_dict(fold_latent_be(ensemble).state_dict())
        return history
