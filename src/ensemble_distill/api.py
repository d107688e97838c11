"""Bring your own ensemble: distil, evaluate and inspect students from Python.

A thin face over :mod:`ensemble_distill.engine`, the same engine ``ensemble-distill run`` calls,
with the same :data:`~ensemble_distill.config.Config` (same defaults and checks): for the same
data, config and seed a student distilled here has the command line's weights, bit for bit::

    from ensemble_distill import distill, evaluate, teacher_from_modules

    teacher = teacher_from_modules(my_models)  # M trained nn.Modules of one architecture
    student = distill(teacher, method="hydra", train_data=(x, y), body=my_body, epochs=5)
    print(evaluate(student, (x_test, y_test), val_data=(x_val, y_val)))

Data (``train_data``, ``val_data``, ``data``) may be a torch ``Dataset`` yielding ``(x, y)``
pairs, a ``DataLoader`` yielding ``(x, y)`` batches, or an ``(x, y)`` tuple of tensors or NumPy
arrays; it is read once into memory (:mod:`ensemble_distill.data.adapters`), in the order it
yields (a ``DataLoader`` with ``shuffle=True`` gives another order, and so another student,
each time). Inputs become float32 (uint8 images are divided by 255; keep images in [0, 1],
which the input perturbations assume), 1-D inputs become (N, 1). Integer labels (N,) mean
classification; float targets (N,) mean regression, where every network outputs a Gaussian per
member as (μ, raw variance), σ² = softplus(raw) + 1e-6 (:mod:`ensemble_distill.models.gaussian`),
in the units of ``y``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn

from ensemble_distill import engine, preflight
from ensemble_distill.api_checks import (
    MANIFEST_ATTRIBUTE,
    as_teacher,
    check_fits,
    check_labels,
    check_outputs,
    check_task,
    checked_predict,
    gaussian_outputs,
    ood_outputs,
    run_device,
    saved_manifest,
    student_arguments,
    teacher_outputs_on,
    write_student,
)
from ensemble_distill.config import config_from_options, model_args_of
from ensemble_distill.data.adapters import (
    DataLike,
    as_dataset,
    check_same_shape,
    in_memory_splits,
    train_val,
)
from ensemble_distill.evaluation import (
    classification_row,
    output_kind,
    predict_outputs,
    predictive,
    regression_row,
)
from ensemble_distill.methods import METHODS, resolve_method
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers import load_teacher as _load_teacher_and_manifest
from ensemble_distill.teachers.ensemble import teacher_from_modules

Teacher: TypeAlias = DeepEnsemble
"""A deep ensemble: ``forward(x)`` gives member outputs (batch, members, classes)."""

# --------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------


def load_teacher(
    path: str | Path, device: torch.device | str = "cpu", *, trust_code: bool = False
) -> DeepEnsemble:
    """The deep ensemble saved by the command line, from ``OUT/teacher`` or a run folder ``OUT``
    (weights verified against the manifest), in eval mode.

    ``trust_code=True`` lets a manifest that names its members' model by import path
    (``model=package.module:factory``) import and run that factory; leave it off for a folder
    you did not write. :func:`ensemble_distill.teachers.load_teacher` also returns the manifest.
    """
    path = Path(path)
    if not (path / "manifest.json").is_file() and (path / "teacher" / "manifest.json").is_file():
        path = path / "teacher"
    return _load_teacher_and_manifest(path, device, trust_code)[0]


def train_teacher(
    train_data: DataLike,
    *,
    val_data: DataLike | None = None,
    members: int = 5,
    model: str = "mlp",
    model_args: dict[str, Any] | None = None,
    num_classes: int | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    quiet: bool = True,
    **options: Any,
) -> DeepEnsemble:
    """Train a deep ensemble of ``members`` networks ``model`` (a registered architecture:
    ``mlp``, ``cnn``, ``resnet20``, ...) on your data, as ``ensemble-distill train-teacher`` does.

    Args:
        train_data, val_data: see the module docstring; without ``val_data``, ``val_fraction``
            (10 %) of ``train_data`` is held out for validation, seeded by ``split_seed``.
        model_args: the architecture's arguments; default: the config's ``{"widths": [256,
            256]}`` for ``mlp``, the architecture's own defaults for the others.
        num_classes: C; default: the largest label + 1. Unused for regression.
        options: further top-level config keys, e.g. ``optim={"lr": 2e-3}``, ``device="cuda"``,
            ``teacher={"vectorize": "false"}``.

    Returns:
        The trained ensemble in eval mode. Members normalise their inputs with the training
        data's mean and standard deviation. Regression targets are used as given (the command
        line standardises its tables): standardise targets far from unit scale yourself.
    """
    config = config_from_options(
        {"members": members, "model": model, "epochs": epochs, "batch_size": batch_size}
        | {"seed": seed}
        | model_args_of(model, model_args),
        options,
    )
    train, val = train_val(train_data, val_data, config.val_fraction, config.split_seed)
    regression = train.y.is_floating_point()
    if num_classes is None:
        num_classes = 1 if regression else int(max(train.y.max(), val.y.max())) + 1
    setup = engine.prepare(
        config, in_memory_splits(train, val, num_classes), memory=[preflight.TRAIN]
    )
    ensemble, _ = engine.train_teacher(setup, quiet=quiet)
    ensemble.task = setup.data.task  # checked against the labels it is later used with
    return ensemble.eval()


# --------------------------------------------------------------------------------------------
# Distillation
# --------------------------------------------------------------------------------------------


def distill(
    teacher: DeepEnsemble | Sequence[nn.Module],
    *,
    method: str = "hydra",
    train_data: DataLike,
    val_data: DataLike | None = None,
    body: nn.Module | None = None,
    feature_dim: int | None = None,
    head: str | None = None,
    model: str | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    quiet: bool = True,
    **options: Any,
) -> nn.Module:
    """Distil ``teacher`` into one student trained by ``method``; returns it in eval mode.

    Args:
        teacher: a :class:`DeepEnsemble` (:func:`teacher_from_modules`, :func:`load_teacher`,
            :func:`train_teacher`) or a list of modules, passed to :func:`teacher_from_modules`;
            it is moved to ``device`` and put in eval mode.
        method: a registered method — ``kd``, ``hydra``, ``endd``, ``be``, ``latentbe`` —
            optionally with an input perturbation: ``hydra+confods``, ``be+ods``,
            ``kd+gaussian``; ``hydra+mixture`` keeps the members' disagreement off the
            training data (the command line's default Hydra on images; docs/methods.md).
            Regression supports ``kd``, ``hydra`` and ``+gaussian``.
        train_data: the distillation data (see the module docstring); the teacher's outputs
            on it are computed once.
        val_data: validation data, used for the per-epoch validation metrics; default:
            ``val_fraction`` (10 %) of ``train_data``, stratified by class, seeded by
            ``split_seed`` (both config keys, 0.1 and 0 by default).
        body: your student body, any module mapping x (batch, ...) to features (batch, F). It is
            deep-copied (yours is never changed) and gets the method's head(s): ``kd`` a linear
            head, ``hydra`` M heads (linear by default; MLPs with ``head_widths``), ``be`` /
            ``latentbe`` its BatchEnsemble version, ``endd`` a linear head read as Dirichlet
            log-concentrations.
            No input normalisation is added: do it inside ``body`` if you need it.
        feature_dim: F; default: inferred from one forward pass of ``body`` on 2 training
            examples.
        head: with ``body=`` a whole network (inputs to logits, e.g. a torchvision ResNet),
            the attribute path of its final ``nn.Linear`` (``"fc"``): cut there, as
            ``student.head`` is on the command line.
        model: without ``body``, a registered architecture name (default ``mlp``; arguments
            ``model_args=``, defaults as in :func:`train_teacher`), built as the command line
            builds students: normalising its inputs with the training data's mean and std.
        epochs: the student's epochs (``student.epochs``); every method's phases share them,
            e.g. Hydra's phase 1 takes ``phase1_fraction`` of them. Distillation is patient:
            see docs/results/recipes.md for what more epochs buy.
        batch_size, seed: as the config keys.
        quiet: hide the progress bars.
        options: the method's config section, e.g. ``temperature=2``, ``alpha=0.5``,
            ``head_widths=[64]`` for Hydra (see ``config.py``), and top-level config keys, e.g.
            ``optim={"lr": 2e-3}``, ``perturbation={"eta": 8 / 255}``, ``device="cuda"``,
            ``model_args={"widths": [128]}``, ``val_fraction=0.2``.

    Returns:
        The trained student, in eval mode: ``student(x)`` gives member logits
        (batch, members, classes) for ``hydra`` and ``be``, logits (batch, classes) for ``kd``
        and ``latentbe``, Dirichlet log-concentrations (batch, classes) for ``endd``; for
        regression raw Gaussian outputs with a last dimension of 2.

    Raises:
        ConfigError: an unknown method, option or value (with the fix), or a teacher or body
            that does not fit the data.
        DataError: data that cannot be read as (inputs, labels).
    """
    body, feature_dim, model_keys = student_arguments(body, head, feature_dim, model, options)
    teacher = as_teacher(teacher, body)
    config = config_from_options(
        {"methods": [method], "members": teacher.num_members, "epochs": epochs}
        | {"student": {"epochs": epochs}, "batch_size": batch_size, "seed": seed}
        | model_keys,
        options,
        section=resolve_method(method)[0].section,
    )
    train, val = train_val(train_data, val_data, config.val_fraction, config.split_seed)
    device = torch.device(config.device)
    teacher.to(device).eval()
    outputs = teacher_outputs_on(teacher, train)
    setup = engine.prepare(
        config,
        in_memory_splits(train, val, 1 if train.y.is_floating_point() else outputs),
        students_from_spec=body is None,  # a user's body is checked when the student is built
        memory=[preflight.OUTPUTS],  # the teacher is the caller's, already in memory
    )
    student, _ = engine.distill_student(
        setup,
        teacher,
        method,
        engine.teacher_train_outputs(setup, teacher),
        body=body,
        feature_dim=feature_dim,
        quiet=quiet,
    )
    if body is None:  # a registered architecture: load_student can rebuild it
        setattr(student, MANIFEST_ATTRIBUTE, engine.student_manifest(setup, method))
    return student.eval()


def save_student(
    student: nn.Module, directory: str | Path, *, class_names: Sequence[str] | None = None
) -> Path:
    """Save a student from :func:`distill` as the command line saves its students:
    ``model.safetensors`` and ``manifest.json`` in ``directory`` (created if missing), so that
    :func:`load_student` and ``ensemble-distill export DIRECTORY`` work on it.

    Args:
        student: a student :func:`distill` built on a registered architecture (``model=``, or
            the default ``mlp``), which the manifest can name. A student on your own
            ``body=`` cannot be rebuilt from a file: save its ``state_dict()`` with
            ``torch.save`` and rebuild the module yourself.
        class_names: the name of each class, in label order (classification only); kept in
            the manifest and in an export's metadata.

    Returns:
        ``directory``, as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: a student without a manifest (see ``student``), ``class_names`` that
            do not name its classes, or a ``directory`` that is a file or cannot be written.
        CheckpointError: ``directory`` holds a ``manifest.json`` or ``model.safetensors``
            that is not a student saved by ensemble-distill: a user's files are never
            overwritten.
    """
    manifest = saved_manifest(student, class_names)
    directory = Path(directory)
    write_student(directory, student, manifest)
    return directory


def load_student(
    path: str | Path, device: torch.device | str = "cpu", *, trust_code: bool = False
) -> nn.Module:
    """The student saved in ``path`` (``OUT/students/<method>``, or a :func:`save_student`
    folder; ``str`` or :class:`~pathlib.Path`), rebuilt from its manifest and verified
    weights, in eval mode. ``trust_code=True`` lets a manifest that names the model by import
    path import and run it; leave it off for a folder you did not write."""
    return engine.load_student(Path(path), device, trust_code)


# --------------------------------------------------------------------------------------------
# Evaluation and uncertainty
# --------------------------------------------------------------------------------------------


def evaluate(
    model: nn.Module,
    data: DataLike,
    ood_data: DataLike | Tensor | None = None,
    val_data: DataLike | None = None,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    task: str | None = None,
) -> dict[str, float]:
    """The metrics of a ``results.json`` row for ``model`` (a student, a teacher or any module
    giving logits (batch, classes) or member logits (batch, members, classes)) on ``data``.

    Classification: ``acc``, ``nll``, ``brier``, ``brier_tfp``, ``ece``, ``mi``, ``entropy``,
    ``aurc``, ``eaurc``; with ``val_data`` also ``temperature``, ``cnll``, ``cece``, ``cbrier``
    (temperature fitted on ``val_data``); with ``ood_data`` (inputs; labels, if any, are
    ignored) ``ood_auroc``, ``ood_aupr``, ``ood_fpr95`` (by predictive entropy),
    ``ood_auroc_mi``, ``ood_aupr_mi``, ``ood_fpr95_mi``.
    Regression (float targets): ``rmse``, ``nll``, variances and interval coverage; with
    ``ood_data`` the shift-detection AUROCs. ``val_data`` is not used for regression.

    ``device``: where the model runs; default: where its parameters are.
    ``task``: ``"classification"`` or ``"regression"``, checked against the labels; default:
    the model's own (a teacher from :func:`train_teacher` or :func:`teacher_from_modules`),
    else unknown: then float targets that are all 0 or 1 for a model with two outputs (a
    classifier's labels passed as floats) are refused.
    """
    device = run_device(model, device)
    test = as_dataset(data, "data")
    check_fits(model, test.x, "data", device)

    def outputs(x: Tensor, what: str) -> Tensor:
        check_same_shape(x, what, test.x, "data")
        return predict_outputs(model, x, batch_size, device)

    test_outputs = outputs(test.x, "data")
    check_outputs(test_outputs)
    known = getattr(model, "task", None) if task is None else task
    check_task(
        known, test.y, test_outputs.shape[-1], "data", "model", "evaluate(..., task='regression')"
    )
    if test.y.is_floating_point():
        ood = None if ood_data is None else gaussian_outputs(ood_outputs(ood_data, outputs))
        return regression_row(gaussian_outputs(test_outputs), test.y, ood=ood)
    kind = output_kind(model)
    pred = predictive(test_outputs, kind)
    check_labels(test.y, pred.probs.shape[-1], "data")
    val = None
    if val_data is not None:
        labelled = as_dataset(val_data, "val_data")
        val = (predictive(outputs(labelled.x, "val_data"), kind), labelled.y)
        check_labels(labelled.y, val[0].probs.shape[-1], "val_data")
    ood = None if ood_data is None else predictive(ood_outputs(ood_data, outputs), kind)
    return classification_row(pred, test.y, val=val, ood=ood)


def mean_probs(
    model: nn.Module,
    x: Tensor | np.ndarray,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Predictive class probabilities p̄ (batch, classes), float64: the members' mean for
    member logits, softmax for a single network, α/α₀ for a Prior Network (EnD²; with the
    Proxy-Dirichlet target, its offset-free mean softmax(s) = (α − 1)/(α₀ − C))."""
    return checked_predict(model, x, batch_size, device).probs.mean(dim=1)


def uncertainty(
    model: nn.Module,
    x: Tensor | np.ndarray,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Per-example uncertainties, each (batch,) float64, in nats:

    * ``entropy``: total uncertainty H[p̄];
    * ``mutual_information``: model (epistemic) uncertainty — the members' mutual
      information, a Prior Network's closed form, 0 for a single network;
    * ``expected_entropy``: data (aleatoric) uncertainty, ``entropy − mutual_information``.
    """
    pred = checked_predict(model, x, batch_size, device)
    return {
        "entropy": pred.entropy,
        "mutual_information": pred.mi,
        "expected_entropy": pred.entropy - pred.mi,
    }


__all__ = [
    "METHODS",
    "DataLike",
    "DeepEnsemble",
    "Teacher",
    "distill",
    "evaluate",
    "load_student",
    "load_teacher",
    "mean_probs",
    "save_student",
    "teacher_from_modules",
    "train_teacher",
    "uncertainty",
]
