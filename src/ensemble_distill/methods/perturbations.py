"""Distillation inputs: where the student meets the teachers, beyond the clean training set.

Each maps clean inputs x (batch, ...) in [0, 1] to new inputs x̃ (batch, ...), computed per
batch and detached; the teachers run live on x̃ as one call of the ensemble, and the same x̃ goes
to every student member; methods keep the label term on the clean x. Registered by name in
``PERTURBATIONS`` and combined with any student as ``METHOD+NAME``, chained left to right:
``hydra+mixup``, ``be+confods``, ``be+mixup+confods`` (mixup, then a ConfODS step).

Views of the data (Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and
consistent": function matching on varied views):

- ``augment``: a random view of each image: shifted by up to ``max_shift`` pixels (zero
  padding, a random crop back to size), and for 3-channel (natural) images flipped left-right
  with probability ½. Images only.
- ``mixup``: x̃ = λ·x + (1 − λ)·x[π], λ ~ Beta(a, a) per example (a = ``mixup_alpha``), π a
  random pairing within the batch (Zhang et al. 2018); labelled by the teachers only.

Non-examples made from the training set alone (issue 28: the members disagree off the data,
so the student must see inputs off the data; never the evaluation's OOD set):

- ``patchshuffle``: each image cut into ``patch`` × ``patch`` tiles whose order is permuted at
  random per image: the data's own strokes and textures in no class's arrangement (the jigsaw
  inputs of Noroozi & Favaro 2016, here as inputs the teachers label). Images only.

``clean`` leaves the inputs as they are, and ``mixture`` gives each example one of the inputs
of ``perturbation.mixture`` (name → weight) at random, in proportion to the weights: e.g.
``hydra+mixture`` with ``{clean: 1, mixup: 2, patchshuffle: 1}`` trains on a quarter clean, half
mixup and a quarter patch-shuffled inputs in every batch (or pooled copy).

Perturbations that make teachers disagree (Nam et al. 2021, 2022), x̃ = clip(x + δ, 0, 1)
(inputs that are not pixels, such as a regression table's standardised features, are not
clipped):

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

A pool (``perturbation.pool`` = K ≥ 1, :class:`InputPool`) perturbs K copies of the
distillation inputs once, before training, with the teachers' outputs on them; each batch then
draws one copy per example, and no teacher runs during training. It trades K × the inputs'
memory for the teachers' forward passes (and ODS's backward pass) of every step; ``diverse``
probes the student being trained, so it always runs live. ``auto`` (the default) pools
:data:`AUTO_POOL` copies for every method whose inputs can be pooled and whose pool fits
:data:`MAX_POOL_BYTES`, and runs the others live (:func:`pool_copies`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.data.augment import in_layout_of, shift_and_flip
from ensemble_distill.data.image_files import ImageFiles, batches_of
from ensemble_distill.errors import ConfigError
from ensemble_distill.options import Section, at_least, positive, require
from ensemble_distill.registry import Registry
from ensemble_distill.resources import byte_text
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.training import resolve_precision


@dataclass
class PerturbationConfig(Section):
    """Options of every ``METHOD+NAME`` perturbation (config section ``perturbation``)."""

    eta: float = 1 / 255  # step size in [0, 1] pixel units; ODS steps have L2 norm eta·sqrt(D)
    temperature: float = 1.0  # τ of the teacher probabilities that ODS diversifies
    mixup_alpha: float = 1.0  # mixup: λ ~ Beta(a, a); 1 = uniform
    max_shift: int = 2  # augment: largest shift in pixels
    patch: int = 7  # patchshuffle: tile side in pixels (at most half the image's side is used)
    # mixture: each example takes one of these inputs at random, in proportion to its weight
    mixture: dict = field(default_factory=lambda: {"clean": 1, "mixup": 2, "patchshuffle": 1})
    # 0: perturb every batch live. K >= 1: perturb K copies of the distillation inputs once,
    # with the teachers' outputs on them, and draw one copy per example (no teacher in training).
    # auto: 3 copies (AUTO_POOL) where the method's inputs can be pooled and fit, else live.
    pool: int | Literal["auto"] = "auto"

    def check(self) -> None:
        at_least(self, 0.0, "eta", "max_shift")
        if self.pool != "auto":
            at_least(self, 0, "pool")
        positive(self, "temperature", "mixup_alpha", "patch")
        for name, weight in self.mixture.items():
            known = [n for n in PERTURBATIONS.names() if n not in MIXTURE_EXCLUDED]
            require(name in known, f"mixture.{name}", f"must name one of {', '.join(known)}", name)
            ok = isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0
            require(ok, f"mixture.{name}", "must be a weight >= 0", weight)
        require(sum(self.mixture.values()) > 0, "mixture", "needs a positive weight", self.mixture)


@dataclass
class PerturbationState:
    """What a perturbation may use: the teacher, its step size and its own random stream."""

    teacher: DeepEnsemble
    eta: float  # step size in [0, 1] pixel units (1/255 = one grey level)
    temperature: float  # τ of the teacher probabilities ODS diversifies
    generator: torch.Generator
    student: nn.Module | None = None  # (batch, members, classes) student, for ``diverse``
    clip: bool = True  # keep x̃ in [0, 1]: true for pixel inputs, false for other features
    mixup_alpha: float = 1.0
    max_shift: int = 2
    patch: int = 7
    mixture: dict[str, float] = field(default_factory=lambda: {"clean": 1.0})


Perturbation = Callable[[Tensor, PerturbationState], Tensor]
# Inputs that never read the teacher's class probabilities: the ones regression allows.
PROBABILITY_FREE = ("clean", "gaussian", "mixup")
# Inputs that need images (batch, channels, height, width).
NEEDS_IMAGES = ("augment", "patchshuffle")
# Perturbations that probe the student's members: only for methods that train members.
NEEDS_STUDENT_MEMBERS = ("diverse",)
# What a mixture may not hold: itself, and what probes the student (it would then run live).
MIXTURE_EXCLUDED = ("mixture", *NEEDS_STUDENT_MEMBERS)
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def expand_mixture(inputs: list[str], config: PerturbationConfig) -> list[str]:
    """``inputs`` with ``mixture`` replaced by the inputs of its positive weights: what a
    method's distillation inputs can be, for the checks of what each input needs."""
    parts = [name for name, weight in config.mixture.items() if weight > 0]
    return [part for name in inputs for part in (parts if name == "mixture" else [name])]


def apply_step(x: Tensor, delta: Tensor, clip: bool = True) -> Tensor:
    """x̃ = clip(x + δ, 0, 1) (or x + δ without ``clip``), detached, in ``x``'s layout."""
    x_tilde = x + delta
    return in_layout_of(x, x_tilde.clamp(0.0, 1.0) if clip else x_tilde)


def per_example_unit(g: Tensor) -> Tensor:
    """g / ‖g‖₂ per example (rows of a (batch, ...) tensor); zero rows stay zero."""
    norms = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norms.view(-1, *([1] * (g.dim() - 1)))


def chain(perturbations: list[Perturbation]) -> Perturbation:
    """The perturbations applied one after another, left to right."""
    if len(perturbations) == 1:
        return perturbations[0]

    def chained(x: Tensor, state: PerturbationState) -> Tensor:
        for perturbation in perturbations:
            x = perturbation(x, state)
        return x

    return chained


@PERTURBATIONS.register("augment")
def augment(x: Tensor, state: PerturbationState) -> Tensor:
    """Random shifts of up to ``state.max_shift`` pixels (zero fill); left-right flips of
    3-channel images with probability ½. Each example draws its own
    (:func:`~ensemble_distill.data.augment.shift_and_flip`)."""
    return shift_and_flip(x, state.max_shift, state.generator)


@PERTURBATIONS.register("clean")
def clean(x: Tensor, state: PerturbationState) -> Tensor:
    """The inputs as they are (a mixture's or a pool's unperturbed share)."""
    return x.detach()


@PERTURBATIONS.register("patchshuffle")
def patch_shuffle(x: Tensor, state: PerturbationState) -> Tensor:
    """Each image's ``p`` × ``p`` tiles in a random order of its own (p = ``state.patch``, at
    most half the shorter side, so there are at least four tiles); the rows and columns past
    the last whole tile stay where they are."""
    batch, channels, height, width = x.shape
    p = max(1, min(state.patch, min(height, width) // 2))
    rows, cols = height // p, width // p
    tiles = (
        x[:, :, : rows * p, : cols * p]
        .reshape(batch, channels, rows, p, cols, p)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(batch, rows * cols, channels, p, p)
    )
    order = torch.rand(batch, rows * cols, generator=state.generator).argsort(dim=1)
    shuffled = tiles[torch.arange(batch).view(-1, 1), order.to(x.device)]
    region = (
        shuffled.reshape(batch, rows, cols, channels, p, p)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(batch, channels, rows * p, cols * p)
    )
    out = x.clone()
    out[:, :, : rows * p, : cols * p] = region
    return out.detach()


@PERTURBATIONS.register("mixture")
def mixture(x: Tensor, state: PerturbationState) -> Tensor:
    """Each example perturbed by one input of ``state.mixture`` (name → weight), drawn in
    proportion to the weights; each input runs once, on the examples that drew it."""
    names = list(state.mixture)
    weights = torch.tensor([float(state.mixture[name]) for name in names])
    choice = torch.multinomial(weights, x.shape[0], replacement=True, generator=state.generator)
    out = x.clone()
    for k, name in enumerate(names):
        rows = (choice == k).nonzero().flatten().to(x.device)
        if len(rows):
            out[rows] = PERTURBATIONS.get(name)(x[rows], state)
    return out.detach()


@PERTURBATIONS.register("mixup")
def mixup(x: Tensor, state: PerturbationState) -> Tensor:
    """λ·x + (1 − λ)·x[π], λ ~ Beta(a, a) per example, π a random pairing in the batch."""
    lam = _beta(state.mixup_alpha, x.shape[0], state.generator).to(x.device, x.dtype)
    partner = torch.randperm(x.shape[0], generator=state.generator).to(x.device)
    lam = lam.view(-1, *([1] * (x.dim() - 1)))
    return in_layout_of(x, lam * x + (1.0 - lam) * x[partner])


def _beta(a: float, count: int, generator: torch.Generator) -> Tensor:
    """``count`` draws of Beta(a, a), seeded from ``generator`` (torch's Beta sampler takes no
    generator, and the perturbation's stream is what a resume restores)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(a, a, count)).float()


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


def _pair_divergence(logits_i: Tensor, logits_j: Tensor) -> Tensor:
    """Σ_b KL(sg(σ(z_j)) ‖ σ(z_i)) of two members' (batch, classes) logits; gradient through
    i only."""
    target = F.log_softmax(logits_j.detach(), dim=-1)
    return F.kl_div(F.log_softmax(logits_i, dim=-1), target, reduction="sum", log_target=True)


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
    with torch.no_grad():  # only member i's gradient counts: j is the target
        teacher_j = state.teacher.forward_member(x, j)
    with torch.enable_grad():
        # Two teacher members, not all M: the probe's teacher work is one member's forward and
        # backward and another's forward, where all M's forward and backward took 3M passes
        teacher_i, students = state.teacher.forward_member(x, i), student(x)
        objective = _pair_divergence(teacher_i, teacher_j) - _pair_divergence(
            students[:, i], students[:, j]
        )
        (grad,) = torch.autograd.grad(objective, x)
    student.train(was_training)
    return apply_step(x, state.eta * math.sqrt(x[0].numel()) * per_example_unit(grad), state.clip)


# The most memory a pool (``perturbation.pool``: inputs and teacher outputs) may take.
MAX_POOL_BYTES = 8 * 2**30
# The copies ``perturbation.pool=auto`` pools: those every perturbed student of the disagreement
# study trained on (docs/results/disagreement.md), where a pool's perturbed epoch costs what a
# cached clean one does (docs/methods.md).
AUTO_POOL = 3


@dataclass
class InputPool:
    """K perturbed copies of N distillation inputs, copy-major (K·N, ...), and the teachers'
    float32 outputs on them (K·N, members, outputs): computed once, drawn from every step."""

    inputs: Tensor
    outputs: Tensor
    copies: int

    @property
    def examples(self) -> int:
        """N: the distillation inputs each copy perturbs."""
        return len(self.inputs) // self.copies

    @property
    def nbytes(self) -> int:
        return self.inputs.nbytes + self.outputs.nbytes

    def draw(self, rows: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One of the K copies of each of ``rows`` at random (from ``generator``, which a
        resume restores): their inputs and the teachers' outputs on them."""
        copy = torch.randint(self.copies, (len(rows),), generator=generator).to(rows.device)
        flat = copy * self.examples + rows
        return self.inputs[flat], self.outputs[flat]


def build_pool(
    x: Tensor | ImageFiles,
    perturbation: Perturbation,
    state: PerturbationState,
    copies: int,
    batch_size: int,
    precision: str,
) -> InputPool:
    """``copies`` passes of ``perturbation`` over ``x`` in batches of ``batch_size``, with
    ``state`` (its generator: the same stream a live run starts from), and the teachers'
    outputs on each batch as one call of the ensemble, without gradients, under bf16
    autocast when ``precision`` is or resolves to bf16 (as a live step computes them: ``fit``
    resolves ``auto`` the same way)."""
    teacher = state.teacher.eval()
    count = len(x)
    inputs, outputs = None, []
    enabled = resolve_precision(precision, x.device) == "bf16"
    bf16 = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=enabled)
    for copy in range(copies):
        # In order, batch by batch: slices of a tensor, or streamed images decoded ahead.
        for start, batch in zip(
            range(0, count, batch_size), batches_of(x, batch_size), strict=True
        ):
            if inputs is None:  # the pool keeps the inputs' layout (channels-last stays so)
                inputs = _pool_storage(batch, copies * count)
            x_tilde = perturbation(batch, state)
            inputs[copy * count + start : copy * count + start + len(x_tilde)] = x_tilde
            with torch.no_grad(), bf16:
                outputs.append(teacher(x_tilde).float())
    return InputPool(inputs, torch.cat(outputs), copies)


def _pool_storage(batch: Tensor, size: int) -> Tensor:
    """Uninitialised room for ``size`` inputs like ``batch``: its dtype, device and layout."""
    images = batch.dim() == 4 and batch.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if images else torch.contiguous_format
    shape = (size, *batch.shape[1:])
    return torch.empty(shape, dtype=batch.dtype, device=batch.device, memory_format=layout)


def pool_bytes(
    copies: int, examples: int, input_shape: Sequence[int], output_shape: Sequence[int]
) -> int:
    """The float32 bytes of ``copies`` pooled copies of ``examples`` inputs and their teacher
    outputs."""
    return 4 * copies * examples * (math.prod(input_shape) + math.prod(output_shape))


def pool_copies(
    config: PerturbationConfig,
    inputs: Sequence[str],
    examples: int,
    input_shape: Sequence[int],
    output_shape: Sequence[int],
) -> int:
    """The pooled copies a method with distillation ``inputs`` trains on (0: live): none
    without inputs; ``perturbation.pool`` when it is a count (:func:`check_pool` refused what
    it cannot pool); for ``auto``, :data:`AUTO_POOL` unless an input probes the student or the
    pool would pass :data:`MAX_POOL_BYTES`."""
    if not inputs:
        return 0
    if config.pool != "auto":
        return config.pool
    live = set(inputs) & set(NEEDS_STUDENT_MEMBERS)
    fits = pool_bytes(AUTO_POOL, examples, input_shape, output_shape) <= MAX_POOL_BYTES
    return AUTO_POOL if fits and not live else 0


def check_pool(
    config: PerturbationConfig,
    inputs_of: dict[str, list[str]],
    examples: int,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
) -> None:
    """Refuse a count in ``perturbation.pool`` before anything trains: for a method whose
    inputs probe the student (``inputs_of``: each method name's input names), or when K copies
    of ``examples`` inputs and their teacher outputs would exceed :data:`MAX_POOL_BYTES`
    (``auto`` runs those live instead)."""
    pooled = {name: inputs for name, inputs in inputs_of.items() if inputs}
    if config.pool in (0, "auto") or not pooled:
        return
    for name, inputs in pooled.items():
        live = [i for i in inputs if i in NEEDS_STUDENT_MEMBERS]
        if live:
            raise ConfigError(
                f"perturbation.pool={config.pool} cannot pool method {name!r}: its +{live[0]} "
                "input probes the student being trained, so it must run live; set "
                "perturbation.pool=0 or give the method another input"
            )
    size = pool_bytes(config.pool, examples, input_shape, output_shape)
    if size > MAX_POOL_BYTES:
        raise ConfigError(
            f"perturbation.pool={config.pool} would hold {byte_text(size)} ({config.pool} "
            f"copies of {examples} inputs and their teacher outputs), above the "
            f"{byte_text(MAX_POOL_BYTES)} limit; lower perturbation.pool (0: live)"
        )
