"""What every distillation method gets, and what it must provide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ensemble_distill.config import Config
from ensemble_distill.data import DataSplits
from ensemble_distill.evaluation import epoch_validator
from ensemble_distill.models import ModelSpec
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.training import fit


@dataclass
class DistillContext:
    """Inputs shared by all methods of one run.

    Attributes:
        teacher_train_logits: (N_train, members, classes) teacher logits on the clean training
            inputs, computed once and reused by every unperturbed method and epoch.
    """

    data: DataSplits
    teacher: DeepEnsemble
    teacher_train_logits: Tensor
    config: Config
    device: torch.device
    quiet: bool = False

    def fit(
        self, student: nn.Module, params, loss_fn, *, desc: str, epochs: int
    ) -> list[dict[str, Any]]:
        """:func:`~ensemble_distill.training.fit` with the run's batch size, optimiser and seed,
        validating ``student`` after each epoch."""
        return fit(
            params,
            loss_fn,
            num_examples=len(self.data.train),
            epochs=epochs,
            batch_size=self.config.batch_size,
            optim=self.config.optim,
            seeds=[self.config.seed],
            desc=desc,
            quiet=self.quiet,
            on_epoch=epoch_validator(student, self.data.val, self.device),
        )

    @property
    def epochs(self) -> int:
        """Student epochs: ``student.epochs``, else the teacher's ``epochs``."""
        return self.config.student.epochs or self.config.epochs


class DistillMethod(Protocol):
    """A student type and how to train it; registered by name in ``METHODS``."""

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: dict[str, Any],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        """The untrained student; ``options`` is the method's config section as a dict."""

    def train(self, student: nn.Module, context: DistillContext) -> list[dict[str, Any]]:
        """Train ``student`` in place; return its per-epoch history."""

    def options(self, config: Config) -> dict[str, Any]:
        """The config section this method reads (saved in the student's manifest)."""
