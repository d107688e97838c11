"""BatchEnsemble one-to-one students (Nam et al. 2021) and LatentBE (Nam et al. 2022).

A BatchEnsemble student has one shared weight per layer and rank-one factors per member; member j
is distilled from teacher j only: L = (1−α)·(1/M)Σ_j CE(S_j(x), y) + α·τ²·(1/M)Σ_j
KL(σ_τ(T_j(x̃)) ‖ σ_τ(S_j(x̃))) — the same per-member loss as Hydra's (:func:`hydra_loss`).
LatentBE trains such a student from factors 1 with its diversifying perturbation, then folds the
members into one plain network with the mean factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from ensemble_distill.methods.base import (
    DistillContext,
    DistillMethod,
    DistillOptions,
    distillation_loss,
)
from ensemble_distill.methods.disagreement_fit import with_disagreement_temperature
from ensemble_distill.methods.student_init import MEMBER, load_member_
from ensemble_distill.models import Classifier, ModelSpec
from ensemble_distill.models.batchensemble import (
    BatchEnsemble,
    factor_parameters,
    fold_latent_be,
    shared_parameters,
)
from ensemble_distill.options import at_least, positive
from ensemble_distill.teachers import DeepEnsemble


@dataclass
class OneToOneOptions(DistillOptions):
    """What every BatchEnsemble student trained member by teacher shares (``be``,
    ``latentbe``): factor initialisation and learning rate, α and τ."""

    init: Literal["normal", "ones"] = "normal"  # r, s ~ N(1, init_std) (2021 code) | ones (2022)
    init_std: float = 0.5
    factor_lr_scale: float = 1.0  # learning rate of r, s relative to optim.lr (no weight decay)
    alpha: float = 0.9
    temperature: float = 4.0

    def check(self) -> None:
        super().check()
        at_least(self, 0.0, "init_std")
        positive(self, "factor_lr_scale")


@dataclass
class BEConfig(OneToOneOptions):
    """BatchEnsemble one-to-one students (Nam et al. 2021): member j learns from teacher j."""

    # true: after training, scale the members' logits to z̄ + s·(z_m − z̄) with s fitted so that
    # the mean MI on the validation inputs is the ensemble's (docs/methods.md); false: s = 1
    disagreement_temperature: bool = False


@dataclass
class LatentBEConfig(OneToOneOptions):
    """LatentBE (Nam et al. 2022): BE trained with factors from 1 and its diversifying
    perturbation, then folded into one plain network (mean factors)."""

    init: Literal["normal", "ones"] = "ones"
    alpha: float = 1.0  # the 2022 recipe trains on the perturbed inputs only
    temperature: float = 1.0


def train_one_to_one(
    student: BatchEnsemble, context: DistillContext, options: OneToOneOptions, desc: str
) -> list[dict[str, Any]]:
    """Train a BatchEnsemble member-by-teacher; factors r, s in their own parameter group
    (learning rate × ``factor_lr_scale``, no weight decay: decay would pull them to 0)."""

    def loss_fn(index: Tensor) -> Tensor:
        batch = context.batch(index)
        student.train()
        logits = student(batch.x_distill)  # (batch, members, classes)
        return distillation_loss(student, batch, logits, options, one_to_one=True, regression=False)

    groups = [
        {"params": shared_parameters(student)},
        {
            "params": factor_parameters(student),
            "weight_decay": 0.0,
            "lr": context.optim.lr * options.factor_lr_scale,
        },
    ]
    return context.fit(student, groups, loss_fn, desc=desc, epochs=context.epochs)


class BatchEnsembleDistillation(DistillMethod):
    """``be``: a BatchEnsemble of the student body, one member per teacher."""

    section = "be"
    options_type = BEConfig
    color = "#D55E00"
    trains_members = True

    def student(self, base: Classifier, members: int, options: BEConfig) -> BatchEnsemble:
        return BatchEnsemble.from_model(base, members, options.init, options.init_std)

    def start_from_members(
        self, student: BatchEnsemble, teacher: DeepEnsemble, spec: ModelSpec, options: BEConfig
    ) -> None:
        """``student.init=member``: every member starts as teacher member 0 — the shared
        weights, biases and batch norm from member 0, the factors r = s = 1 (whatever
        ``be.init`` says) — and the one-to-one loss then pulls member j towards teacher j.

        Why not member j from teacher j: member j's weight is W ∘ (s_j r_jᵀ), so members can
        differ only by a rank-one rescaling of one shared W; teacher members trained from
        independent starts are no such rescalings of each other (W_j / W_0 is not a rank-one
        matrix), and batch norm is shared. Any per-member start (say, the best rank-one fit of
        W_j / W_0, or teacher j's biases on W_0) would make no member equal to any teacher,
        where this one makes every member exactly one of them, at the cost of one copy."""
        load_member_(
            student, BatchEnsemble.from_model(teacher.member(0), student.members, "ones"), 0
        )

    def train(
        self, student: BatchEnsemble, context: DistillContext, options: BEConfig
    ) -> list[dict[str, Any]]:
        history = train_one_to_one(student, context, options, desc="be")
        if options.disagreement_temperature:
            history = with_disagreement_temperature(student, context, history, "be")
        return history


class LatentBE(DistillMethod):
    """``latentbe``: one plain network, trained as a BatchEnsemble (factors from 1) on the
    ``diverse`` perturbation (unless ``latentbe+NAME`` names another), then folded."""

    section = "latentbe"
    options_type = LatentBEConfig
    color = "#CC79A7"
    trains_members = True
    default_inputs = ("diverse",)

    def train(
        self, student: nn.Module, context: DistillContext, options: LatentBEConfig
    ) -> list[dict[str, Any]]:
        # student.init=member started the network as member 0: factors 1 keep every member there.
        init = "ones" if context.config.student.init == MEMBER else options.init
        ensemble = BatchEnsemble.from_model(
            student, context.teacher.num_members, init, options.init_std
        )
        context.bind_student(ensemble)
        history = train_one_to_one(ensemble, context, options, desc="latentbe")
        student.load_state_dict(fold_latent_be(ensemble).state_dict())
        return history
