"""What every distillation method gets, and what it must provide.

A method (:class:`DistillMethod`) owns everything about itself: its options section (a typed
:class:`~ensemble_distill.options.Section` that validates itself), the student it builds
around a body, how it trains that student, the tasks it supports and its colour in reports.
The engine (:mod:`ensemble_distill.engine`) calls these; nothing else dispatches on a method's
name.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ensemble_distill import distributed
from ensemble_distill.data import DataSplits
from ensemble_distill.data.image_files import ImageFiles, batches_of, in_unit_interval, planner
from ensemble_distill.errors import ConfigError
from ensemble_distill.evaluation import as_member_logits, epoch_validator
from ensemble_distill.methods.losses import (
    hydra_loss,
    hydra_regression_loss,
    kd_loss,
    kd_regression_loss,
)
from ensemble_distill.methods.perturbations import (
    InputPool,
    Perturbation,
    PerturbationState,
    build_pool,
)
from ensemble_distill.methods.student_init import load_member_
from ensemble_distill.models import Classifier, ModelSpec, create_model
from ensemble_distill.options import Section, positive, unit_interval
from ensemble_distill.resume import Progress
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.training import fit, supervised_loss

if TYPE_CHECKING:
    from ensemble_distill.config import OptimConfig, RunConfig

log = logging.getLogger(__name__)
# The perturbed validation inputs' stream: the run's seed plus this (the draws' is seed + 1).
VALIDATION_STREAM = 2


@dataclass
class Batch:
    """One training batch as every method sees it.

    Attributes:
        x, y: clean inputs (batch, ...) and labels or regression targets (batch,): for the
            supervised term.
        x_distill: inputs of the distillation term: ``x`` itself, or other inputs: a
            perturbed x̃ and/or a batch of the auxiliary inputs (``distill_data``).
        teacher_outputs: (batch, members, classes) teacher logits on ``x_distill``; for
            regression (batch, members, 2) raw Gaussian outputs (see ``models.gaussian``).
    """

    x: Tensor
    y: Tensor
    x_distill: Tensor
    teacher_outputs: Tensor

    @property
    def perturbed(self) -> bool:
        """Whether the distillation inputs differ from ``x`` (the label term then needs its
        own forward pass on ``x``)."""
        return self.x_distill is not self.x


@dataclass
class DistillContext:
    """Inputs shared by all methods of one run.

    Attributes:
        teacher_train_outputs: (N, members, classes) teacher outputs on the distillation
            inputs (the clean training inputs, or ``distill_inputs``), computed once and reused
            by every unperturbed method and epoch.
        perturbation: the input perturbation of this method (``METHOD+NAME``), or None; with
            one, teachers run live on each perturbed batch, as one call of the ensemble, unless
            ``perturbation.pool`` = K ≥ 1: then K perturbed copies of the distillation inputs
            and the teachers' outputs on them are computed once, here (:class:`InputPool`).
        progress_dir: where each training phase keeps its per-epoch progress file (see
            :mod:`ensemble_distill.resume`) and resumes from; None: no progress files.
        progress_settings: what decides the student's weights (the run's config values),
            saved in its progress files so that other settings are never resumed.
        distill_inputs: auxiliary unlabelled inputs (``distill_data``) of the distillation
            term, or None: the training inputs. Each batch then draws its distillation inputs
            from them at random, as many as its labelled examples.
    """

    data: DataSplits
    teacher: DeepEnsemble
    teacher_train_outputs: Tensor
    config: RunConfig
    device: torch.device
    quiet: bool = False
    perturbation: Perturbation | None = None
    progress_dir: Path | None = None
    progress_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    distill_inputs: Tensor | None = None

    def __post_init__(self) -> None:
        self._x = self.data.train.x.to(self.device)
        self._y = self.data.train.y.to(self.device)
        self._cached = self.teacher_train_outputs.to(self.device)
        self._state = PerturbationState(
            self.teacher,
            self.config.perturbation.eta,
            self.config.perturbation.temperature,
            # Under DDP each rank perturbs its own shard: with its own noise (rank 0's as alone).
            torch.Generator().manual_seed(distributed.perturbation_seed(self.config.seed)),
            clip=in_unit_interval(self.data.train.x),
            mixup_alpha=self.config.perturbation.mixup_alpha,
            max_shift=self.config.perturbation.max_shift,
            patch=self.config.perturbation.patch,
            mixture=self.config.perturbation.mixture,
        )
        aux = self.distill_inputs
        self._aux = None if aux is None else aux.to(self.device)
        # Which auxiliary rows and which pooled copies a batch gets: a stream of its own,
        # saved with the progress, so a resumed run draws what an uninterrupted one would.
        seed = distributed.perturbation_seed(self.config.seed) + 1
        self._draws = torch.Generator().manual_seed(seed)
        # The engine decides ``auto`` per method (engine.method_config); undecided, it is live.
        pool = self.config.perturbation.pool
        pooled = self.perturbation is not None and pool != "auto" and pool > 0
        self._pool = self._build_pool() if pooled else None

    def _build_pool(self) -> InputPool:
        """The K perturbed copies of the distillation inputs and their teacher outputs."""
        start = time.perf_counter()
        pool = build_pool(
            self._x if self._aux is None else self._aux,
            self.perturbation,
            self._state,
            self.config.perturbation.pool,
            self.config.eval.batch_size,
            self.config.precision,
        )
        log.info(
            "input pool: %d copies of %d inputs (%.1f MB) built in %.2f s",
            pool.copies,
            pool.examples,
            pool.nbytes / 2**20,
            time.perf_counter() - start,
        )
        return pool

    @property
    def pool(self) -> InputPool | None:
        """The pool of perturbed distillation inputs (``perturbation.pool`` ≥ 1), or None."""
        return self._pool

    def bind_student(self, student: nn.Module) -> None:
        """Let perturbations that probe the student (``diverse``) see ``student``."""
        self._state.student = student

    def batch(self, index: Tensor) -> Batch:
        """The batch of training examples ``index`` (1, batch) drawn by ``fit``, with its
        distillation inputs: the same examples, or as many random auxiliary inputs; clean
        (cached outputs), from the pool, or perturbed live."""
        rows = index[0]
        x, y = self._x[rows], self._y[rows]
        if self._aux is not None:
            rows = torch.randint(len(self._aux), (len(rows),), generator=self._draws)
        if self._pool is not None:
            return Batch(x, y, *self._pool.draw(rows.to(self.device), self._draws))
        x_source = x if self._aux is None else self._aux[rows]
        if self.perturbation is None:
            return Batch(x, y, x_source, self._cached[rows])
        self.teacher.eval()
        x_tilde = self.perturbation(x_source, self._state)
        # Every member (stacked, or one by one where DeepEnsemble.loops_inference says so), no
        # autograd graph, in the autocast precision ``fit`` runs the step in.
        with torch.no_grad():
            return Batch(x, y, x_tilde, self.teacher(x_tilde))

    def fit(
        self, student: nn.Module, params, loss_fn, *, desc: str, epochs: int, on_step=None
    ) -> list[dict[str, Any]]:
        """:func:`~ensemble_distill.training.fit` with the run's batch size, optimiser and seed,
        validating ``student`` after each epoch and saving progress under ``progress_dir``
        (one file per ``desc``: a method's phases resume separately); data-parallel over
        ``student`` (which must own ``params``) under a process group of several ranks."""
        progress = None
        if self.progress_dir is not None:
            path = self.progress_dir / f"{desc.replace(' ', '-')}.safetensors"
            progress = Progress(path, student, self._streams(), settings=self.progress_settings)
        return fit(
            params,
            loss_fn,
            num_examples=len(self.data.train),
            epochs=epochs,
            batch_size=self.config.batch_size,
            optim=self.optim,
            seeds=[self.config.seed],
            desc=desc,
            quiet=self.quiet,
            on_epoch=epoch_validator(student, self.data.val, self.device),
            on_step=on_step,
            progress=progress,
            precision=self.config.precision,
            module=student,
            compile=self.config.compile,
            prefetch=planner(self._x),
        )

    def validation_inputs(self) -> list[Tensor | ImageFiles]:
        """The inputs a post-hoc fit on validation data reads (never the OOD set): the clean
        validation inputs and, when the method has a perturbation, one perturbed copy of them,
        batch by batch (``eval.batch_size``). The copy draws from a stream of its own, seeded
        by the run's seed alone: the training streams (and so a resume) are untouched, and
        every rank of a data-parallel run perturbs alike (it fits the same value)."""
        clean = self.data.val.x
        if self.perturbation is None:
            return [clean]
        generator = torch.Generator().manual_seed(self.config.seed + VALIDATION_STREAM)
        state = dataclasses.replace(self._state, generator=generator)
        self.teacher.eval()
        batches = batches_of(clean, self.config.eval.batch_size)
        perturbed = [self.perturbation(x.to(self.device), state).cpu() for x in batches]
        return [clean, torch.cat(perturbed)]

    def _streams(self) -> list[torch.Generator]:
        """The random streams a resume restores: the perturbation's, and the draws' when
        batches draw auxiliary rows or pooled copies (progress files of other runs hold only
        the first)."""
        drawing = self._aux is not None or self._pool is not None
        return [self._state.generator, *([self._draws] if drawing else [])]

    @property
    def regression(self) -> bool:
        """Whether the teacher's outputs are Gaussians (regression) rather than logits."""
        return self.data.task == "regression"

    @property
    def epochs(self) -> int:
        """Student epochs: ``student.epochs``, else ``student.epochs_multiple`` × the teacher's
        ``epochs`` (rounded), else the teacher's."""
        return self.config.student_epochs()

    @property
    def optim(self) -> OptimConfig:
        """The students' optimiser: ``optim`` with any ``student.lr`` / ``weight_decay`` /
        ``schedule`` in its place."""
        return self.config.student_optim()


def require_members_architecture(
    setting: str, teacher_spec: ModelSpec, student_spec: ModelSpec, instead: str
) -> None:
    """Refuse ``setting`` (e.g. ``hydra.head_init=members``), which copies the members' weights
    into the student, unless the student's architecture is the members'; ``instead`` is the
    other way out the error names.

    Raises:
        ConfigError: another architecture (or other arguments) for the student.
    """
    # The head path only says where a network from an import path is cut: not another
    # architecture.
    if dataclasses.replace(student_spec, head=teacher_spec.head) != teacher_spec:
        raise ConfigError(
            f"{setting} copies the members' weights, so the student's architecture must be "
            f"theirs ({teacher_spec.name} {teacher_spec.kwargs}, not {student_spec.name} "
            f"{student_spec.kwargs}); leave student.model and student.model_args null, or "
            f"{instead}"
        )


def label_loss(student: nn.Module, batch: Batch, distill_outputs: Tensor) -> Tensor:
    """(1/M) Σ_j ℓ(S_j(x), y) on the clean inputs, M = the student's members (1 for one net);
    ℓ is :func:`~ensemble_distill.training.supervised_loss` (cross-entropy or Gaussian NLL).

    Reuses ``distill_outputs`` (the student's outputs on ``batch.x_distill``) when unperturbed.
    """
    outputs = as_member_logits(student(batch.x) if batch.perturbed else distill_outputs)
    return supervised_loss(outputs, batch.y[:, None].expand(outputs.shape[:2]))


def distillation_loss(
    student: nn.Module,
    batch: Batch,
    outputs: Tensor,
    options: DistillOptions,
    *,
    one_to_one: bool,
    regression: bool,
) -> Tensor:
    """The objective of KD, Hydra and BatchEnsemble: α·D + (1 − α)·(1/M) Σ_j ℓ(S_j(x), y).

    D is the distillation term on ``batch.x_distill``, where ``outputs`` = ``student(x̃)``:

    * ``one_to_one=False`` (Hinton et al. 2015): T²·KL(p̄_T ‖ σ_T(s)) to the members' mean
      probabilities (:func:`kd_loss`); for regression the KL to the moment-matched ensemble
      Gaussian (:func:`kd_regression_loss`).
    * ``one_to_one=True`` (Hydra, BatchEnsemble): (1/M) Σ_m T²·KL(σ_T(z_m) ‖ σ_T(s_m)), student
      member m against teacher m (:func:`hydra_loss`; Gaussians: :func:`hydra_regression_loss`).

    The label term ℓ (cross-entropy, or Gaussian NLL) is on the clean inputs
    (:func:`label_loss`).
    """
    teacher = batch.teacher_outputs
    if one_to_one:
        distill = (
            hydra_regression_loss(outputs, teacher)
            if regression
            else hydra_loss(outputs, teacher, temperature=options.temperature)
        )
    elif regression:
        distill = kd_regression_loss(outputs, teacher)
    else:  # kd_loss with α = 1 is the distillation term alone; the label term follows
        distill = kd_loss(outputs, teacher, batch.y, alpha=1.0, temperature=options.temperature)
    if options.alpha == 1.0:  # no label term: a perturbed batch then needs no clean forward
        return distill
    return options.alpha * distill + (1.0 - options.alpha) * label_loss(student, batch, outputs)


@dataclass
class DistillOptions(Section):
    """The options every KD-style objective shares (:func:`distillation_loss`): the weight α
    of the distillation term against the labels' and the softmax temperature T."""

    alpha: float = 0.9
    temperature: float = 4.0

    def check(self) -> None:
        unit_interval(self, "alpha")
        positive(self, "temperature")


class DistillMethod(abc.ABC):
    """A student type and how to train it; registered by name in ``METHODS``.

    Attributes:
        section: the method's name and its config section (``kd``, ``hydra``, ...).
        options_type: the section's dataclass; the run's config holds one instance.
        tasks: the tasks it supports (``classification``, ``regression``).
        color: its colour in every report figure.
        trains_members: whether the student trains as M members (Hydra's heads, BatchEnsemble):
            what the ``diverse`` perturbation probes.
        default_inputs: the distillation inputs used when the method's name gives none.
        sized_by_network: whether :meth:`resolve` sizes ``auto`` options against one network
            of the student's architecture (Hydra's adapters), which the engine then builds.
    """

    section: ClassVar[str]
    options_type: ClassVar[type[Section]]
    tasks: ClassVar[tuple[str, ...]] = ("classification",)
    color: ClassVar[str]
    trains_members: ClassVar[bool] = False
    default_inputs: ClassVar[tuple[str, ...]] = ()
    sized_by_network: ClassVar[bool] = False

    def options(self, config: RunConfig) -> Any:
        """The method's section of ``config``."""
        return getattr(config, self.section)

    def resolve(
        self, options: Any, perturbed: bool, network: Classifier | None = None, members: int = 1
    ) -> Any:
        """``options`` with their ``auto`` values decided for a student distilled on
        ``perturbed`` inputs or on the clean ones, with ``members`` members, sized against
        ``network`` (one network of its architecture) where given (Hydra's phases and
        adapters); a method without such values returns them as they are."""
        return options

    def build(
        self,
        spec: ModelSpec,
        members: int,
        options: Any,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> nn.Module:
        """The untrained student on the registered architecture ``spec`` (inputs normalised
        with ``mean`` and ``std``)."""
        return self.student(create_model(spec, mean, std), members, options)

    def check_architectures(
        self, options: Any, teacher_spec: ModelSpec, student_spec: ModelSpec
    ) -> None:
        """Refuse options that the members' and the student's architectures rule out, before
        any training (raise a ConfigError naming the key); by default there are none."""
        return None

    def start_from_members(
        self, student: nn.Module, teacher: DeepEnsemble, spec: ModelSpec, options: Any
    ) -> None:
        """``student.init=member``: set the freshly built ``student`` (on ``spec``, the
        members' architecture) to the teacher's members' weights where the shapes allow. By
        default the student is one network of the members' architecture (KD, LatentBE before
        its BatchEnsemble is made), which starts as member 0: body and head.

        Raises:
            ConfigError: the members' weights do not fit the student (naming the first
                mismatch).
        """
        load_member_(student, teacher.member(0), 0)

    def student(self, base: Classifier, members: int, options: Any) -> nn.Module:
        """The untrained student built around ``base`` — a body with a linear head, from a
        registered architecture or the user's own body; by default ``base`` itself."""
        return base

    @abc.abstractmethod
    def train(
        self, student: nn.Module, context: DistillContext, options: Any
    ) -> list[dict[str, Any]]:
        """Train ``student`` in place with ``options`` (its section); return its history."""
