"""Input perturbations that make teachers disagree, for distillation (Nam et al. 2021, 2022).

A perturbation maps clean inputs x (batch, ...) in [0, 1] to x̃ = clip(x + δ, 0, 1), computed
per batch and detached (inputs that are not pixels, such as a regression table's standardised
features, are not clipped). The same x̃ goes to every teacher and every student member; methods
keep the cross-entropy term on the clean x. Registered by name in ``PERTURBATIONS`` and
combined with any student as ``METHOD+PERTURBATION`` (``be+confods``, ``hydra+ods``, ...).

- ``gaussian``: δ = η·N(0, I) (expected L2 norm ≈ η·√D, that of an ODS step).
- ``ods``: Output Diversified Sampling (Tashiro et al. 2020) as used by Nam et al. 2021: one
  teacher r drawn per batch, p = σ_τ(z_r(x)), w ~ U[−1, 1]^C per example,
  g = ∇_x Σ_b w_bᵀ p_b, δ = η·√D·g/‖g‖₂ per example.
- ``confods``: ODS with δ scaled per example by the teacher's confidence max_k p_k.
- ``diverse``: LatentBE's diversifying perturbation (Nam et al. 2022): a member pair (i, j) per
  batch, one L2-normalised step of size η·√D up the gradient of
  KL(sg(T_j) ‖ T_i) − KL(sg(S_j) ‖ S_i) at temperature 1: where the teachers disagree more than
  the student's members. Needs a student with members (``state.student``).

Only ``gaussian`` ignores the teacher's class probabilities, so only it applies to regression.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.options import Section, at_least, positive
from ensemble_distill.registry import Registry
from ensemble_distill.teachers import DeepEnsemble


@dataclass
class PerturbationConfig(Section):
    """Options of every ``METHOD+NAME`` perturbation (config section ``perturbation``)."""

    eta: float = 1 / 255  # step size in [0, 1] pixel units; ODS steps have L2 norm eta·sqrt(D)
    temperature: float = 1.0  # τ of the teacher probabilities that ODS diversifies

    def check(self) -> None:
        at_least(self, 0.0, "eta")
        positive(self, "temperature")


@dataclass
class PerturbationState:
    """What a perturbation may use: the teacher, its step size and its own random stream."""

    teacher: DeepEnsemble
    eta: float  # step size in [0, 1] pixel units (1/255 = one grey level)
    temperature: float  # τ of the teacher probabilities ODS diversifies
    generator: torch.Generator
    student: nn.Module | None = None  # (batch, members, classes) student, for ``diverse``
    clip: bool = True  # keep x̃ in [0, 1]: true for pixel inputs, false for other features


Perturbation = Callable[[Tensor, PerturbationState], Tensor]
# Perturbations that never read the teacher's class probabilities: the ones regression allows.
PROBABILITY_FREE = ("gaussian",)
# Perturbations that probe the student's members: only for methods that train members.
NEEDS_STUDENT_MEMBERS = ("diverse",)
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def apply_step(x: Tensor, delta: Tensor, clip: bool = True) -> Tensor:
    """x̃ = clip(x + δ, 0, 1) (or x + δ without ``clip``), detached."""
    x_tilde = x + delta
    return (x_tilde.clamp(0.0, 1.0) if clip else x_tilde).detach()


def per_example_unit(g: Tensor) -> Tensor:
    """g / ‖g‖₂ per example (rows of a (batch, ...) tensor); zero rows stay zero."""
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norms.view(-1, *([1] * (g.dim() - 1)))


@PERTURBATIONS.register("gaussian")
def gaussian(x: Tensor, state: PerturbationState) -> Tensor:
    noise = torch.randn(x.shape, generator=state.generator).to(x.device)
    return apply_step(x, state.eta * noise, state.clip)


def ods_direction(x: Tensor, state: PerturbationState) -> tuple[Tensor, Tensor]:
    """Unit ODS directions (batch, ...) and the chosen teacher's confidence max_k p_k (batch,)."""
    member = int(torch.randint(state.teacher.num_members, (1,), generator=state.generator))
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        probs = torch.softmax(state.teacher.forward_member(x, member) / state.temperature, -1)
        weights = torch.rand(probs.shape, generator=state.generator).to(x.device) * 2.0 - 1.0
        (grad,) = torch.autograd.grad((weights * probs).sum(), x)
    return per_example_unit(grad), probs.detach().max(dim=-1).values


@PERTURBATIONS.register("ods")
def ods(x: Tensor, state: PerturbationState) -> Tensor:
    direction, _ = ods_direction(x, state)
    return apply_step(x, state.eta * math.sqrt(x[0].numel()) * direction, state.clip)


@PERTURBATIONS.register("confods")
def confods(x: Tensor, state: PerturbationState) -> Tensor:
    direction, confidence = ods_direction(x, state)
    scale = state.eta * math.sqrt(x[0].numel()) * confidence
    return apply_step(x, scale.view(-1, *([1] * (x.dim() - 1))) * direction, state.clip)


def _pair_divergence(logits: Tensor, i: int, j: int) -> Tensor:
    """Σ_b KL(sg(σ(z_j)) ‖ σ(z_i)) of (batch, members, classes) logits; gradient through i."""
    target = F.log_softmax(logits[:, j].detach(), dim=-1)
    return F.kl_div(F.log_softmax(logits[:, i], dim=-1), target, reduction="sum", log_target=True)


@PERTURBATIONS.register("diverse")
def diverse(x: Tensor, state: PerturbationState) -> Tensor:
    student = state.student
    if student is None:
        raise ValueError("the diverse perturbation needs state.student (a multi-member student)")
    members = state.teacher.num_members
    i, j = torch.randperm(members, generator=state.generator)[:2].tolist()
    was_training = student.training
    student.eval()  # the probe must not move BatchNorm statistics
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        objective = _pair_divergence(state.teacher(x), i, j) - _pair_divergence(student(x), i, j)
        (grad,) = torch.autograd.grad(objective, x)
    student.train(was_training)
    return apply_step(x, state.eta * math.sqrt(x[0].numel()) * per_example_unit(grad), state.clip)
