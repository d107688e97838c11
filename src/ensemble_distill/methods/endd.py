"""Ensemble Distribution Distillation, EnD² (Malinin, Mlodozeniec & Gales 2019).

The student is a Prior Network: its outputs are log-concentrations of a Dirichlet over the
class probabilities, fitted by maximum likelihood to the individual members' predictions, so
their spread (not only their mean) is learnt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ensemble_distill.evaluation import DIRICHLET
from ensemble_distill.methods.base import DistillContext, DistillMethod
from ensemble_distill.methods.losses import dirichlet_nll
from ensemble_distill.models import Classifier
from ensemble_distill.options import Section, require
from ensemble_distill.training import full_precision


@dataclass
class EnDConfig(Section):
    """EnD² (Malinin et al. 2019): a Prior Network fitted to the members' probabilities."""

    smoothing: float = 1e-3  # member probabilities mixed with uniform: (1−ε)π + ε/C
    initial_temperature: float = 5.0  # annealed linearly to 1 ...
    anneal_fraction: float = 0.5  # ... over this share of the training steps

    def check(self) -> None:
        require(0.0 <= self.smoothing < 1.0, "smoothing", "must lie in [0, 1)", self.smoothing)
        t0 = self.initial_temperature
        require(t0 >= 1.0, "initial_temperature", "must be >= 1", t0)
        fraction = self.anneal_fraction
        require(0.0 < fraction <= 1.0, "anneal_fraction", "must lie in (0, 1]", fraction)


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
    options_type = EnDConfig
    color = "#009E73"

    def student(self, base: Classifier, members: int, options: EnDConfig) -> PriorNetwork:
        return PriorNetwork(base)

    def train(
        self, student: PriorNetwork, context: DistillContext, options: EnDConfig
    ) -> list[dict[str, Any]]:
        steps_per_epoch = -(-len(context.data.train) // context.config.batch_size)
        anneal_steps = max(1, round(options.anneal_fraction * context.epochs * steps_per_epoch))
        start_temperature = options.initial_temperature
        temperature = start_temperature

        def set_temperature(step: int) -> None:  # the global step survives a resume
            nonlocal temperature
            progress = min(step / anneal_steps, 1.0)
            temperature = start_temperature + progress * (1.0 - start_temperature)

        def loss_fn(index: Tensor) -> Tensor:
            batch = context.batch(index)
            student.train()
            teacher_logits = full_precision(batch.teacher_outputs)
            member_probs = torch.softmax(teacher_logits / temperature, dim=-1)
            log_alpha = full_precision(student(batch.x_distill)) / temperature
            return dirichlet_nll(log_alpha, member_probs, smoothing=options.smoothing)

        return context.fit(
            student,
            student.parameters(),
            loss_fn,
            desc="endd",
            epochs=context.epochs,
            on_step=set_temperature,
        )
