"""Ensemble Distribution Distillation, EnD² (Malinin, Mlodozeniec & Gales 2019).

The student is a Prior Network: its outputs are log-concentrations of a Dirichlet over the
class probabilities, fitted to the individual members' predictions, so their spread (not only
their mean) is learnt. ``endd.target`` says how:

* ``members`` — maximum likelihood of every member's (smoothed, tempered) probabilities
  (Malinin et al. 2019; :func:`~ensemble_distill.methods.losses.dirichlet_nll`);
* ``proxy`` — the reverse KL to a Proxy-Dirichlet fitted to the members in closed form (mean
  the members' mean, precision Minka's estimate), Ryabinin, Malinin & Gales 2021
  (:func:`~ensemble_distill.methods.losses.proxy_dirichlet_loss`), with the student's
  concentrations offset by 1 (α = e^s + 1) as in their released commands. Its point
  prediction is softmax(s) = (α − 1)/(α₀ − K), the estimate of the members' mean that the
  proxy target fits, as in their evaluation code; the Dirichlet Dir(α) gives the uncertainty
  (kind :data:`~ensemble_distill.evaluation.PROXY_DIRICHLET`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from ensemble_distill.evaluation import DIRICHLET, PROXY_DIRICHLET
from ensemble_distill.methods.base import DistillContext, DistillMethod
from ensemble_distill.methods.losses import dirichlet_nll, proxy_dirichlet_loss
from ensemble_distill.methods.student_init import load_member_
from ensemble_distill.models import Classifier, ModelSpec
from ensemble_distill.options import Section, require
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.training import full_precision

EnDTarget = Literal["members", "proxy"]
TARGETS: tuple[str, ...] = get_args(EnDTarget)


@dataclass
class EnDConfig(Section):
    """EnD² (Malinin et al. 2019): a Prior Network fitted to the members' probabilities."""

    # proxy: reverse KL to the Proxy-Dirichlet of Ryabinin et al. 2021, chosen on validation
    # cNLL (docs/results/endd_targets.md); members: Dirichlet NLL of every member (the 2019
    # paper; the next three keys are its only: proxy has no smoothing or temperature).
    target: EnDTarget = "proxy"
    smoothing: float = 1e-3  # member probabilities mixed with uniform: (1−ε)π + ε/C
    initial_temperature: float = 5.0  # annealed linearly to 1 ...
    anneal_fraction: float = 0.5  # ... over this share of the training steps

    def check(self) -> None:
        allowed = ", ".join(TARGETS)
        require(self.target in TARGETS, "target", f"must be one of {allowed}", self.target)
        require(0.0 <= self.smoothing < 1.0, "smoothing", "must lie in [0, 1)", self.smoothing)
        t0 = self.initial_temperature
        require(t0 >= 1.0, "initial_temperature", "must be >= 1", t0)
        fraction = self.anneal_fraction
        require(0.0 < fraction <= 1.0, "anneal_fraction", "must lie in (0, 1]", fraction)


class PriorNetwork(nn.Module):
    """A classifier read as a Dirichlet over the class probabilities.

    ``forward`` gives the network's output unchanged; ``output_kind`` says how the metrics and
    the export read it: log α (batch, classes), the mean α/α₀ the prediction (EnD², kind
    :data:`~ensemble_distill.evaluation.DIRICHLET`); or, with ``proxy`` (the Proxy-Dirichlet
    target's student), s with α = e^s + 1, a Dirichlet that is never sparse (Ryabinin et al.'s
    model offset 1), and softmax(s) the prediction (kind
    :data:`~ensemble_distill.evaluation.PROXY_DIRICHLET`).
    """

    def __init__(self, network: nn.Module, proxy: bool = False) -> None:
        super().__init__()
        self.network = network
        self.proxy = proxy

    @property
    def output_kind(self) -> str:
        return PROXY_DIRICHLET if self.proxy else DIRICHLET

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


class EnsembleDistributionDistillation(DistillMethod):
    """``target: members``: loss :func:`dirichlet_nll` of the members' tempered probabilities
    under Dir(exp(s/T)); T falls linearly from ``initial_temperature`` to 1 over
    ``anneal_fraction`` of the steps. ``target: proxy``: loss :func:`proxy_dirichlet_loss` of
    the members' logits at T = 1, the student's α offset by 1."""

    section = "endd"
    options_type = EnDConfig
    color = "#009E73"

    def student(self, base: Classifier, members: int, options: EnDConfig) -> PriorNetwork:
        return PriorNetwork(base, proxy=options.target == "proxy")

    def start_from_members(
        self, student: PriorNetwork, teacher: DeepEnsemble, spec: ModelSpec, options: EnDConfig
    ) -> None:
        """``student.init=member``: the network starts as member 0, body and output layer
        (the log-concentrations have the logits' shape): its Dirichlet's mean is then member
        0's softmax, its spread what training teaches it."""
        load_member_(student.network, teacher.member(0), 0)

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
            outputs = full_precision(student(batch.x_distill))
            if options.target == "proxy":
                return proxy_dirichlet_loss(outputs, teacher_logits)  # α = e^s + 1
            member_probs = torch.softmax(teacher_logits / temperature, dim=-1)
            log_alpha = outputs / temperature
            return dirichlet_nll(log_alpha, member_probs, smoothing=options.smoothing)

        return context.fit(
            student,
            student.parameters(),
            loss_fn,
            desc="endd",
            epochs=context.epochs,
            on_step=set_temperature,
        )
