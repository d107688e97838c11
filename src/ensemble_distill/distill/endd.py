"""Ensemble Distribution Distillation, EnD² (Malinin, Mlodozeniec & Gales 2019).

The student is a Prior Network: its outputs are log-concentrations of a Dirichlet over the
class probabilities, fitted by maximum likelihood to the individual members' predictions, so
their spread (not only their mean) is learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ensemble_distill.distill.base import DistillContext, DistillMethod
from ensemble_distill.distill.losses import dirichlet_nll
from ensemble_distill.evaluation import DIRICHLET
from ensemble_distill.models import ModelSpec, create_model


class PriorNetwork(nn.Module):
    """A classifier read as a Dirichlet: ``forward`` gives log α (batch, classes).

    The metrics read ``output_kind`` and use the closed-form mean α/α₀ and mutual information.
    """

    output_kind = DIRICHLET

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class EnsembleDistributionDistillation(DistillMethod):
    """Loss :func:`dirichlet_nll` of the members' tempered probabilities under Dir(exp(s/T));
    T falls linearly from ``initial_temperature`` to 1 over ``anneal_fraction`` of the steps."""

    section = "endd"

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: dict[str, Any],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> PriorNetwork:
        return PriorNetwork(create_model(spec, mean, std))

    def train(self, student: PriorNetwork, context: DistillContext) -> list[dict[str, Any]]:
        options = self.options(context.config)
        steps_per_epoch = -(-len(context.data.train) // context.config.batch_size)
        anneal_steps = max(1, round(options["anneal_fraction"] * context.epochs * steps_per_epoch))
        start_temperature = options["initial_temperature"]
        temperature = start_temperature

        def set_temperature(step: int) -> None:  # the global step survives a resume
            nonlocal temperature
            progress = min(step / anneal_steps, 1.0)
            temperature = start_temperature + progress * (1.0 - start_temperature)

        def loss_fn(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            member_probs = torch.softmax(batch.teacher_outputs / temperature, dim=-1)
            log_alpha = student(batch.x_distill) / temperature
            return dirichlet_nll(log_alpha, member_probs, smoothing=options["smoothing"])

        return context.fit(
            student,
            student.parameters(),
            loss_fn,
            desc="endd",
            epochs=context.epochs,
            on_step=set_temperature,
        )
