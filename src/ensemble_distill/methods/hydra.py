"""Hydra (Tran et al. 2020, arXiv 2001.04694): one shared body, M heads, head m ≈ member m."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.methods.base import (
    DistillContext,
    DistillMethod,
    DistillOptions,
    distillation_loss,
    require_members_architecture,
)
from ensemble_distill.methods.disagreement_fit import with_disagreement_temperature
from ensemble_distill.methods.losses import disagreement_loss
from ensemble_distill.methods.student_init import MEMBER_FIX, load_member_
from ensemble_distill.metrics.cost import count_parameters
from ensemble_distill.models import (
    Classifier,
    ModelSpec,
    as_classifier,
    create_classifier,
    create_model,
    is_factory,
)
from ensemble_distill.models.disagreement import SCALE_BUFFER, scale_disagreement
from ensemble_distill.models.heads import (
    LowRankAdapters,
    StackedLayerHeads,
    StackedMLPHeads,
    copy_member_,
    perturb_members_,
)
from ensemble_distill.models.split import split_chain
from ensemble_distill.models.stacked import grouped_leaves
from ensemble_distill.options import InvalidValue, at_least, positive, require, unit_interval
from ensemble_distill.teachers import DeepEnsemble

log = logging.getLogger(__name__)

# The layers that count as one of the member architecture's weight layers for ``split``.
WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)

# The paper's MNIST heads (Tran et al. 2020, main table: head = [100, 100, 10]): what a null
# head_widths means, as it did when they were the default.
PAPER_HEAD_WIDTHS = (100, 100)
HeadInit = Literal["copy", "independent", "perturbed", "members"]
# ``adapter_rank: auto`` on perturbed inputs: the rank the disagreement study measured
AUTO_ADAPTER_RANK = 16
# A compact student (issue 28) has at most this many times one network's parameters: the set
# the disagreement study chose its Hydra from, so ``auto`` adapters never leave it.
COMPACT_PARAMETERS = 1.5


@dataclass
class HydraConfig(DistillOptions):
    """Hydra (Tran et al. 2020): shared body, M heads, two phases.

    Phase 1 (the first ``phase1_fraction`` of the epochs) trains body + one head by KD on the
    ensemble mean; phase 2 trains head m on member m, all heads at once.

    The heads (issue 16: how Hydra trades parameters against the ensemble's diversity, the
    paper's RQ3) are either MLPs on the body's feature vector (``head_widths``: hidden widths;
    [] for one linear layer per head; null for the paper's MNIST heads [100, 100], what null
    meant before linear heads became the default, so older checkpoints load as they were
    trained) or, with ``split: k``, copies of the member architecture's last k weight layers and
    its classifier on the body's earlier layers; k = all of them makes M full networks, the
    ensemble's own architecture. ``split`` excludes hidden ``head_widths``.

    The defaults — linear heads, each from its own random start — are the choice of the RQ3
    study on validation data (docs/results/hydra_tradeoff.md, MNIST M = 10, 3 seeds): with about
    half the parameters of the paper's copied [100, 100] heads they rank the OOD inputs' MI
    more like the ensemble (Spearman ρ 0.73 vs 0.62), keep 6.6× more of its OOD MI and reach a
    better calibrated NLL (0.0480 vs 0.0508).

    Two options aim at the members' disagreement off the training data (issue 28):
    ``adapter_rank`` r > 0 gives each head a rank-r residual adapter on the body's features
    (:class:`~ensemble_distill.models.heads.LowRankAdapters`, 2·F·r weights per head), and
    ``disagreement_weight`` λ > 0 adds λ·(MI_student − MI_teacher)² per example
    (:func:`~ensemble_distill.methods.losses.disagreement_loss`) to phase 2's loss.
    ``phase1_fraction: 0`` with ``head_init: independent`` trains body and heads jointly from
    the first step (one phase). Left ``auto``, both follow the inputs (:meth:`Hydra.resolve`):
    on clean inputs the paper's two phases and no adapters, as above; on perturbed inputs
    (``hydra+mixture``, the default Hydra on images) one joint phase with rank-16 adapters
    (lower where 16 would take the student past 1.5x one network's parameters), the student
    the disagreement study chose on validation on both MNIST and Fashion-MNIST
    (docs/results/disagreement.md).

    ``head_init`` says what the heads start phase 2 from:

    * ``copy`` — every head a copy of the phase-1 head (the paper): the heads' disagreement,
      and so their mutual information, starts at 0 and grows only from what phase 2 teaches
      them on training inputs, where the members agree most;
    * ``independent`` — each head keeps its own random initialisation, as the members of a
      deep ensemble do (Lakshminarayanan et al. 2017: diversity from initialisation); phase 1
      trains head 0 only;
    * ``perturbed`` — a copy plus Gaussian noise per head, element and tensor, of standard
      deviation ``head_init_std`` × that tensor's own: heads start near the fitted phase-1
      head yet apart from step 0 (as in the "shrink and perturb" warm start of Ash & Adams
      2020, without the shrink);
    * ``members`` (``split`` only) — head m takes teacher member m's last layers and the body
      member 0's first layers, so the student starts as the ensemble itself (exactly so when
      the heads take over all layers); needs the student's architecture to be the members'.
      Phase 1 still trains body + head 0 for ``phase1_fraction`` of the epochs: set it to 0
      to distil one-to-one from the ensemble's own weights.
    """

    # Hidden widths of each head's MLP; []: linear heads; null: the paper's MNIST heads [100, 100]
    head_widths: list[int] | None = field(default_factory=list)
    temperature: float = 1.0
    alpha: float = 1.0  # 1: distillation only; < 1 adds (1−α)·CE of the heads' mean on labels
    # auto: 0.5 (the paper's two phases) on clean inputs, 0 (one joint phase) on perturbed ones
    phase1_fraction: float | Literal["auto"] = "auto"
    head_init: HeadInit = "independent"  # copy: the paper's
    head_init_std: float = 0.1  # ``perturbed``: noise sd relative to each tensor's sd
    # The member architecture's last weight layers (Linear / Conv2d) each head takes over;
    # null: heads of head_widths on the body's features.
    split: int | None = None
    # > 0: each head gets a rank-r residual adapter on the body's features (LowRankAdapters);
    # auto: 16 (AUTO_ADAPTER_RANK) on perturbed inputs without split, capped to keep the
    # student within 1.5x one network's parameters (Hydra.compact_adapter_rank); else 0
    adapter_rank: int | Literal["auto"] = "auto"
    # λ of the per-example disagreement term λ·(MI_student − MI_teacher)² (disagreement_loss)
    disagreement_weight: float = 0.0
    # true: after training, scale the heads' logits to z̄ + s·(z_m − z̄) with s fitted so that
    # the mean MI on the validation inputs is the ensemble's (docs/methods.md); false: s = 1
    disagreement_temperature: bool = False

    def check(self) -> None:
        super().check()
        if self.phase1_fraction != "auto":
            unit_interval(self, "phase1_fraction")
        for index, width in enumerate(self.head_widths or []):
            require(width >= 1, f"head_widths[{index}]", "must be >= 1", width)
        positive(self, "head_init_std")
        if self.adapter_rank != "auto":
            at_least(self, 0, "adapter_rank")
        at_least(self, 0.0, "disagreement_weight")
        require(
            self.adapter_rank in (0, "auto") or self.split is None,
            "adapter_rank",
            "adapts the body's feature vector, which split heads do not take: set "
            "hydra.split=null, or hydra.adapter_rank=0",
            self.adapter_rank,
        )
        if self.split is not None:
            require(self.split >= 1, "split", "must be >= 1 or null (MLP heads)", self.split)
            require(
                not self.head_widths,
                "split",
                "cannot be combined with hidden head_widths (the heads are then the members' "
                "last layers): set hydra.head_widths=[], or hydra.split=null for MLP heads",
                self.split,
            )
        require(
            self.head_init != "members" or self.split is not None,
            "head_init",
            "can be 'members' only with split set (heads that are the members' last layers)",
            self.head_init,
        )

    @property
    def mlp_widths(self) -> list[int]:
        """The heads' hidden widths (when ``split`` is null); none: linear heads."""
        return list(PAPER_HEAD_WIDTHS if self.head_widths is None else self.head_widths)


class HydraStudent(nn.Module):
    """``heads(body(x))``: features → outputs (batch, members, classes).

    The heads are a :class:`StackedMLPHeads` on a feature vector (batch, F), or, with
    ``split``, a :class:`StackedLayerHeads` on the body's activations (batch, ...); either way
    all M run in one batched computation. The heads' logits are then scaled around their mean
    by the buffer ``disagreement_scale`` (:func:`scale_disagreement`; 1, no change, unless
    ``disagreement_temperature`` fitted it).
    """

    disagreement_scale: Tensor

    def __init__(
        self,
        body: nn.Module,
        heads: StackedMLPHeads | StackedLayerHeads,
        adapters: LowRankAdapters | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.heads = heads
        self.adapters = adapters
        # s of scale_disagreement: 1 (no change) until hydra.disagreement_temperature fits it
        self.register_buffer(SCALE_BUFFER, torch.ones(()))

    def forward(self, x: Tensor, heads: slice = slice(None)) -> Tensor:
        features = self.body(x)
        if self.adapters is not None:
            features = self.adapters(features, heads)
        return scale_disagreement(self.heads(features, heads), self.disagreement_scale)


class FirstHead(nn.Module):
    """The Hinton head alone, (batch, 1, classes): what phase 1 trains and validates."""

    def __init__(self, student: HydraStudent) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x, heads=slice(0, 1))


class Hydra(DistillMethod):
    """Two phases: (1) body + head 0 by KD on p̄_T; (2) the heads start as ``head_init`` says
    (a copy of head 0 in the paper), then :func:`hydra_loss` of head m against member m. With
    α < 1 both phases add (1−α) times the heads' mean cross-entropy on the clean labels.

    Regression: heads output Gaussians; phase 1 fits the moment-matched ensemble Gaussian
    (:func:`kd_regression_loss`), phase 2 minimises (1/M) Σ_m KL(N(μ_m, σ_m²) ‖ N(μ̂_m, σ̂_m²))
    (:func:`hydra_regression_loss`); the temperature is unused."""

    section = "hydra"
    options_type = HydraConfig
    tasks = ("classification", "regression")
    color = "#0072B2"
    trains_members = True
    sized_by_network = True  # auto adapters keep the student compact

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: HydraConfig,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> HydraStudent:
        """The untrained student on ``spec`` (a network from an import path cut at its head,
        ``spec.head``: :func:`~ensemble_distill.models.create_classifier`); with ``split``,
        head m's layers come from an m-th fresh build of ``spec``, so independent heads start
        as the architecture's own initialisation draws them (Kaiming fan-out convolutions for
        ``cnn``, ...)."""
        if options.split is None:
            return self.student(create_classifier(spec, mean, std), members, options)
        donors = [split_donor(spec, options.split, mean, std) for _ in range(members)]
        return split_student(donors, options.split)

    def resolve(
        self,
        options: HydraConfig,
        perturbed: bool,
        network: Classifier | None = None,
        members: int = 1,
    ) -> HydraConfig:
        """``auto`` phases and adapters decided: on clean inputs the paper's two phases without
        adapters (the RQ3 study's default); on perturbed inputs one joint phase and, for heads
        on the body's features, rank-:data:`AUTO_ADAPTER_RANK` adapters — the Hydra the
        disagreement study chose on validation on MNIST and Fashion-MNIST (issue 28) — lowered
        on a small ``network`` (one network of the student's architecture) to the rank that
        keeps the student compact (:meth:`compact_adapter_rank`). The engine resolves them per
        method name (``engine.method_options``); a caller that does not gets no adapters and
        the phases of its context's inputs."""
        phase1 = options.phase1_fraction
        rank = options.adapter_rank
        if phase1 == "auto":
            phase1 = 0.0 if perturbed else 0.5
        if rank == "auto":
            rank = AUTO_ADAPTER_RANK if perturbed and options.split is None else 0
            if rank and network is not None:
                rank = min(rank, self.compact_adapter_rank(network, members, options))
        return dataclasses.replace(options, phase1_fraction=phase1, adapter_rank=rank)

    def compact_adapter_rank(self, network: Classifier, members: int, options: HydraConfig) -> int:
        """The largest adapter rank r at which the student on ``network``'s body with
        ``members`` heads keeps at most :data:`COMPACT_PARAMETERS` times ``network``'s
        parameters: r = ⌊(1.5·P_network − P_hydra(r = 0)) / (2·F·M)⌋, clipped at 0 (each rank
        adds 2·F weights per head, :class:`~ensemble_distill.models.heads.LowRankAdapters`).
        The heads are counted on the meta device, drawing nothing from the random stream."""
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            without = self.student(network, members, dataclasses.replace(options, adapter_rank=0))
        budget = COMPACT_PARAMETERS * count_parameters(network) - count_parameters(without)
        return max(0, int(budget // (2 * network.feature_dim * members)))

    def check_architectures(
        self, options: HydraConfig, teacher_spec: ModelSpec, student_spec: ModelSpec
    ) -> None:
        if options.head_init == "members":
            require_members_architecture(
                "hydra.head_init=members",
                teacher_spec,
                student_spec,
                "choose another hydra.head_init",
            )

    def start_from_members(
        self, student: HydraStudent, teacher: DeepEnsemble, spec: ModelSpec, options: HydraConfig
    ) -> None:
        """``student.init=member``: the body from member 0 and head m from member m. With
        ``split`` that is :func:`init_from_members` (head m = member m's last layers, as
        ``head_init: members``: with all layers split, head m is member m exactly); with linear
        heads, head m = member m's classifier on member 0's features (head 0 is member 0
        exactly; the others are as near their members as one shared body allows). What has no
        counterpart in a member starts as it is built: MLP heads (hidden ``head_widths``; the
        body still comes from member 0) and adapters (which start as the identity, B = 0, so
        they change nothing at the start). ``head_init`` still applies after phase 1: ``copy``
        and ``perturbed`` replace these heads by head 0's (``phase1_fraction: 0`` distils
        one-to-one from the members' own weights)."""
        if options.split is not None:
            init_from_members(student, teacher, "student.init=member", "set student.init=random")
            return
        members = [as_classifier(teacher.member(m), spec) for m in range(teacher.num_members)]
        load_member_(student.body, members[0].body, 0)
        if options.mlp_widths:
            return
        if student.heads.members != teacher.num_members:
            raise ConfigError(
                f"student.init=member: {student.heads.members} heads for "
                f"{teacher.num_members} members; {MEMBER_FIX}"
            )
        for index, member in enumerate(members):
            copy_linear_head_(student.heads, index, member.head)

    def student(self, base: Classifier, members: int, options: HydraConfig) -> HydraStudent:
        """The body of ``base`` with M MLP heads (``base``'s linear head is dropped), or with
        ``split`` the body's first layers with M copies of its last layers and head; heads
        1..M−1 are then re-drawn by each layer's own ``reset_parameters``. Adapters left
        ``auto`` here (options the engine did not :meth:`resolve`) are none, as on clean
        inputs."""
        options = self.resolve(options, perturbed=False)
        if options.split is None:
            outputs = base.head.out_features
            heads = StackedMLPHeads(base.feature_dim, options.mlp_widths, outputs, members)
            adapters = None
            if options.adapter_rank:
                adapters = LowRankAdapters(base.feature_dim, options.adapter_rank, members)
            return HydraStudent(base.body, heads, adapters)
        donors = [base, *(reinitialised(base) for _ in range(members - 1))]
        return split_student(donors, options.split)

    def train(
        self, student: HydraStudent, context: DistillContext, options: HydraConfig
    ) -> list[dict[str, Any]]:
        options = self.resolve(options, perturbed=context.perturbation is not None)
        phase1 = phase1_epochs(context.epochs, options.phase1_fraction)
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
            loss = distillation_loss(
                student, batch, outputs, options, one_to_one=True, regression=context.regression
            )
            if options.disagreement_weight:
                mismatch = disagreement_loss(outputs, batch.teacher_outputs)
                loss = loss + options.disagreement_weight * mismatch
            return loss

        if options.disagreement_weight and context.regression:
            raise ConfigError(
                "hydra.disagreement_weight matches the members' mutual information, which "
                "regression heads do not have; set it to 0"
            )
        if options.disagreement_temperature and context.regression:
            raise ConfigError(
                "hydra.disagreement_temperature scales the heads' logits, which regression "
                "heads do not have (they output Gaussians); set it to false"
            )
        if options.head_init == "members":
            init_from_members(student, context.teacher)
        history = []
        if phase1 > 0:
            rows = context.fit(
                first_head, student.parameters(), phase1_loss, desc="hydra phase 1", epochs=phase1
            )
            history += [{"phase": 1, **row} for row in rows]
        start_heads(student, options, context.config.seed)
        rows = context.fit(
            student,
            student.parameters(),
            phase2_loss,
            desc="hydra phase 2",
            epochs=context.epochs - phase1,
        )
        history += [{"phase": 2, **row} for row in rows]
        if options.disagreement_temperature:
            history = with_disagreement_temperature(student, context, history, "hydra")
        return history


def phase1_epochs(epochs: int, fraction: float) -> int:
    """Phase 1's share of the student's ``epochs``: ``round(fraction × epochs)``, but with a
    fraction strictly between 0 and 1 each phase gets at least one epoch — rounding alone
    skipped phase 1 at 1 epoch (round(0.5) = 0) and could leave phase 2 none. One epoch cannot
    hold both phases: phase 1 is then skipped with a warning (the heads still learn their
    members, which a lone phase 1 would never teach them). A fraction of 0 or 1 is taken as
    asked: one phase only."""
    if fraction in (0.0, 1.0):
        return round(epochs * fraction)
    if epochs < 2:
        log.warning(
            "hydra.phase1_fraction=%s: %d student epoch cannot hold both phases; phase 1 is "
            "skipped — set student.epochs >= 2 (in Python: distill(..., epochs=2))",
            fraction,
            epochs,
        )
        return 0
    return min(epochs - 1, max(1, round(epochs * fraction)))


def start_heads(student: HydraStudent, options: HydraConfig, seed: int) -> None:
    """The heads' phase-2 start (``head_init``): ``copy`` and ``perturbed`` copy head 0 into
    every head, ``perturbed`` then adds its noise (drawn from ``seed`` alone); ``independent``
    and ``members`` keep the heads as they are."""
    if options.head_init in ("copy", "perturbed"):
        student.heads.copy_head(0)
        if student.adapters is not None:
            copy_member_(student.adapters, 0)
    if options.head_init == "perturbed":
        generator = torch.Generator().manual_seed(seed)
        perturb_members_(student.heads, options.head_init_std, generator)


def split_student(donors: Sequence[Classifier], split: int) -> HydraStudent:
    """Donor 0's first layers as the body; head m = donor m's last ``split`` weight layers (with
    the layers between them) and its classifier. The donors are one architecture."""
    cut = split_point(donors[0], split)
    body = nn.Sequential(*grouped_leaves(donors[0].body)[:cut])
    tails = [nn.Sequential(*grouped_leaves(donor.body)[cut:], donor.head) for donor in donors]
    return HydraStudent(body, StackedLayerHeads(tails))


def split_donor(
    spec: ModelSpec, split: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> Classifier:
    """One build of ``spec`` whose last ``split`` weight layers a head takes over: a registered
    architecture as built; a network from an import path cut at its head (``spec.head``),
    only if it is a plain ``nn.Sequential`` chain ending in that head — the last layers of any
    other network are no network of their own.

    Raises:
        InvalidValue: (key ``hydra.split``) a network from an import path that is no such chain.
    """
    network = create_model(spec, mean, std)
    if not is_factory(spec.name):
        return network
    donor = split_chain(network, spec.head, model=spec.name)
    if donor is None:
        raise InvalidValue(
            "hydra.split",
            "takes the last layers of a network from an import path only where it is a plain "
            "nn.Sequential chain (Linear, Conv2d, BatchNorm2d, ReLU, pooling, Flatten) ending "
            f"in its head; model {spec.name!r} builds a {type(network).__name__}: set "
            "hydra.split=null for heads on its features",
            split,
        )
    return donor


def split_point(base: Classifier, split: int) -> int:
    """The index, among the layers of ``base.body``, of the first layer the heads take over.

    Raises:
        InvalidValue: (key ``hydra.split``) the body is not a plain layer stack, or ``split``
            exceeds its weight layers.
    """
    leaves = grouped_leaves(base.body)
    if leaves is None or grouped_leaves(base.head) is None:
        raise InvalidValue(
            "hydra.split",
            "needs a student that is a plain stack of layers (nn.Sequential of Linear, Conv2d, "
            "BatchNorm2d, ReLU, pooling, Flatten: the mlp and cnn models); set it to null "
            "for MLP heads",
            split,
        )
    weights = [index for index, leaf in enumerate(leaves) if isinstance(leaf, WEIGHT_LAYERS)]
    if not weights:
        raise InvalidValue(
            "hydra.split", "needs a student body with weight layers; set it to null", split
        )
    require(
        split <= len(weights),
        "hydra.split",
        f"must lie in [1, {len(weights)}] for this student (its body has {len(weights)} "
        "weight layers before the classifier)",
        split,
    )
    return weights[len(weights) - split]


def reinitialised(base: Classifier) -> Classifier:
    """A copy of ``base`` with every layer re-drawn by its own ``reset_parameters``."""
    fresh = copy.deepcopy(base)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh


@torch.no_grad()
def copy_linear_head_(heads: StackedMLPHeads, index: int, layer: nn.Module) -> None:
    """Linear head ``index`` of ``heads`` ← the ``nn.Linear`` ``layer`` (a member's classifier;
    no bias: 0). The stacked weight is (members, in, out), the transpose of ``layer``'s.

    Raises:
        ConfigError: ``layer`` is no ``nn.Linear`` of the head's shape.
    """
    weight, bias = heads.weights[0][index], heads.biases[0][index]
    if not isinstance(layer, nn.Linear) or layer.weight.T.shape != weight.shape:
        raise ConfigError(
            f"student.init=member: member {index}'s classifier {layer} does not fit a linear "
            f"head of shape {tuple(weight.T.shape)}; {MEMBER_FIX}"
        )
    weight.copy_(layer.weight.T)
    bias.copy_(layer.bias if layer.bias is not None else torch.zeros_like(bias))


@torch.no_grad()
def init_from_members(
    student: HydraStudent,
    teacher: DeepEnsemble,
    setting: str = "hydra.head_init=members",
    instead: str = "choose another hydra.head_init",
) -> None:
    """``head_init: members`` (and ``student.init: member`` with ``split``): the body ←
    member 0's first layers, head m ← member m's last layers and classifier (weights and
    batch-norm statistics). ``setting`` and ``instead`` name the choice in an error and the
    other way out.

    Raises:
        ConfigError: the student's architecture is not the members', or the heads are not one
            per member.
    """
    body = grouped_leaves(student.body)
    heads = grouped_leaves(student.heads.stacked)
    members = grouped_leaves(teacher.stacked)
    mismatch = architecture_mismatch(body, heads, members)
    if student.heads.members != teacher.num_members:
        mismatch = f"{student.heads.members} heads for {teacher.num_members} members"
    if mismatch:
        raise ConfigError(
            f"{setting} needs the student's architecture to be the members' ({mismatch}); "
            f"leave student.model and student.model_args null, or {instead}"
        )
    for ours, theirs in zip(body, members, strict=False):
        for name, tensor in layer_tensors(ours).items():
            tensor.copy_(layer_tensors(theirs)[name][0])
    for ours, theirs in zip(heads, members[len(body) :], strict=True):
        for name, tensor in layer_tensors(ours).items():
            tensor.copy_(layer_tensors(theirs)[name])


def architecture_mismatch(
    body: list[nn.Module], heads: list[nn.Module], members: list[nn.Module] | None
) -> str | None:
    """The first layer where the student (``body`` layers, then the stacked ``heads`` layers)
    differs from the members' stacked layers; None if it does not."""
    if members is None:
        return "the members are not a plain stack of layers"
    if len(body) + len(heads) != len(members):
        return f"{len(body) + len(heads)} layers against the members' {len(members)}"
    # Body layers are one network's, (shape); head layers are stacked like the members', (M, shape).
    pairs = [(ours, theirs, 1) for ours, theirs in zip(body, members, strict=False)]
    pairs += [(ours, theirs, 0) for ours, theirs in zip(heads, members[len(body) :], strict=True)]
    for index, (ours, theirs, member_axis) in enumerate(pairs):
        mine, others = layer_tensors(ours), layer_tensors(theirs)
        same = (
            type(ours) is type(theirs)
            and mine.keys() == others.keys()
            and all(mine[name].shape == others[name].shape[member_axis:] for name in mine)
        )
        if not same:
            return f"layer {index} is {ours} where the members have {theirs}"
    return None


def layer_tensors(layer: nn.Module) -> dict[str, Tensor]:
    """A layer's own parameters and buffers by name."""
    return dict(layer.named_parameters(recurse=False)) | dict(layer.named_buffers(recurse=False))
