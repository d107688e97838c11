"""The checks behind :mod:`ensemble_distill.api` (private: import from ``ensemble_distill``).

Everything the API is handed is checked before it is used, and a bad value is one
:class:`~ensemble_distill.errors.ConfigError` or :class:`~ensemble_distill.errors.DataError`
that names the argument: the teacher and body given to ``distill``; a model's device, dtype
and input shape, its outputs and the labels' task (``evaluate``, ``mean_probs``,
``uncertainty``); and for ``save_student`` the student's manifest, its class names and the
folder, where a user's files are never overwritten.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ensemble_distill import engine
from ensemble_distill.checkpoint import MANIFEST, WEIGHTS, read_manifest
from ensemble_distill.config import model_args_of
from ensemble_distill.data import ArrayDataset
from ensemble_distill.data.adapters import DataLike, as_inputs
from ensemble_distill.errors import CheckpointError, ConfigError, DataError, EnsembleDistillError
from ensemble_distill.evaluation import Predictive, gaussian_predictive, predict
from ensemble_distill.models import gaussian
from ensemble_distill.models.split import split_network
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers.ensemble import check_has_values, teacher_from_modules

# The attribute under which distill() leaves a student's manifest for save_student.
MANIFEST_ATTRIBUTE = "ensemble_distill_manifest"

# --------------------------------------------------------------------------------------------
# distill's teacher and body
# --------------------------------------------------------------------------------------------


def as_teacher(teacher: DeepEnsemble | Sequence[nn.Module], body: nn.Module | None) -> DeepEnsemble:
    """``teacher`` as a :class:`DeepEnsemble` (a list of modules through
    :func:`teacher_from_modules`); it and ``body`` must have weights with values."""
    if not isinstance(teacher, DeepEnsemble):
        if isinstance(teacher, nn.Module):
            raise ConfigError(
                f"teacher is a {type(teacher).__name__}; pass a DeepEnsemble (see "
                "teacher_from_modules) or a list of member modules"
            )
        teacher = teacher_from_modules(teacher)
    check_has_values(teacher, "the teacher")
    if body is not None:
        check_has_values(body, "body")
    return teacher


def student_arguments(
    body: nn.Module | None,
    head: str | None,
    feature_dim: int | None,
    model: str | None,
    options: dict[str, Any],
) -> tuple[nn.Module | None, int | None, dict[str, Any]]:
    """``distill``'s student architecture: ``body=`` and ``feature_dim=`` as given, or, with
    ``head=``, the whole network ``body`` cut at its classifier (models/split.py, as
    ``student.head`` on the command line: a copy with that layer replaced by identity, and the
    layer's ``in_features``); else ``model=`` / ``model_args=`` (taken from ``options``) as
    config keys. A body and a model at once are refused."""
    if body is not None and (model is not None or "model_args" in options):
        raise ConfigError("pass either body= (your module) or model= / model_args=, not both")
    keys = {}
    if model:
        keys = {"model": model, **model_args_of(model, options.pop("model_args", None))}
    if head is None:
        return body, feature_dim, keys
    if body is None:
        raise ConfigError(f"head={head!r} names a layer of body=, your whole network; pass body=")
    if feature_dim is not None:
        raise ConfigError("head= gives the feature size (its in_features); leave feature_dim= out")
    split = split_network(body, head, setting="head")
    return split.body, split.feature_dim, keys


def teacher_outputs_on(teacher: DeepEnsemble, train: ArrayDataset) -> int:
    """The teacher's number of outputs on ``train`` (``distill``'s ``train_data``), whose labels
    must fit its task."""
    outputs = engine.teacher_output_size(teacher, train)
    check_task(
        getattr(teacher, "task", None),
        train.y,
        outputs,
        "train_data",
        "teacher",
        "teacher_from_modules(modules, task='regression')",
    )
    return outputs


# --------------------------------------------------------------------------------------------
# Models and the tensors handed to them
# --------------------------------------------------------------------------------------------


def run_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Where ``model`` runs: where its weights are, which ``device`` (when given) must name;
    a model with weights on the meta device (no values) is refused."""
    check_has_values(model, "the model")
    own = model_device(model)
    if device is None:
        return own
    device = torch.device(device)
    same_index = own.index is None or device.index is None or own.index == device.index
    elsewhere = own.type != device.type or not same_index
    if elsewhere and next(model.parameters(), None) is not None:
        raise ConfigError(
            f"device={str(device)!r} but the model's weights are on {own}; move the model "
            f"there first (model.to({str(device)!r})) or leave device out"
        )
    return device


def check_fits(model: nn.Module, x: Tensor, what: str, device: torch.device) -> None:
    """Run ``model`` on two examples of ``x`` (the inputs of argument ``what``): inputs it
    cannot take (another shape, or weights of another dtype than the float32 inputs) are
    refused with the argument's name and shape, instead of a raw error from inside it."""
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if floats - {torch.float32}:
        kinds = ", ".join(sorted(str(dtype).removeprefix("torch.") for dtype in floats))
        raise ConfigError(
            f"the model's weights are {kinds} but {what} inputs are read as float32; call "
            "model.float() first"
        )
    model.eval()
    try:
        with torch.no_grad():
            model(x[:2].to(device))
    except EnsembleDistillError:
        raise
    except Exception as exc:  # the user's module: name the argument and the shape
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"the model cannot take {what} inputs of shape {tuple(x.shape)} "
            f"({type(exc).__name__}: {detail}); give inputs of the shape it was built for"
        ) from None


def checked_predict(
    model: nn.Module, x: Tensor | np.ndarray, batch_size: int, device: torch.device | str | None
) -> Predictive:
    """:func:`~ensemble_distill.evaluation.predict` of ``model`` on the inputs ``x`` (argument
    ``x`` of ``mean_probs`` and ``uncertainty``) once both are checked."""
    device = run_device(model, device)
    x = as_inputs(x, "x")
    check_fits(model, x, "x", device)
    return predict(model, x, batch_size, device)


def ood_outputs(ood_data: DataLike | Tensor, outputs: Callable[[Tensor, str], Tensor]) -> Tensor:
    """``outputs`` (``evaluate``'s checked forward pass) of the inputs of ``ood_data``."""
    return outputs(as_inputs(ood_data, "ood_data"), "ood_data")


def check_outputs(outputs: Tensor) -> None:
    """A model's outputs must be (batch, outputs) or (batch, members, outputs)."""
    if outputs.dim() < 2:
        raise ConfigError(
            f"the model returned shape {tuple(outputs.shape)}; it must return "
            "(batch, outputs) or (batch, members, outputs)"
        )


def gaussian_outputs(outputs: Tensor):
    if outputs.shape[-1] != gaussian.OUTPUTS:
        raise DataError(
            "float targets mean regression, where the model must output (mean, raw variance) "
            f"per member; got outputs {tuple(outputs.shape)}. Use int64 labels for classification"
        )
    return gaussian_predictive(outputs)


def check_task(
    known: str | None, y: Tensor, outputs: int, what: str, model: str, recourse: str
) -> None:
    """The labels ``y`` of argument ``what`` must fit the model's task: the ``known`` one, or,
    when unknown, float targets that are all 0 or 1 for a model of two outputs are refused —
    those are a binary classifier's labels as floats, which would be read as regression (the
    two logits as a mean and a variance)."""
    labels = "regression" if y.is_floating_point() else "classification"
    if known not in (None, "classification", "regression"):
        raise ConfigError(f"task must be 'classification' or 'regression'; got {known!r}")
    fix = "use int64 labels (y.long())" if labels == "regression" else "use float targets"
    if known is not None and known != labels:
        kind = "float targets" if labels == "regression" else "integer labels"
        raise ConfigError(
            f"the {model} is a {known} model but {what} has {kind}, which mean {labels}; "
            f"{fix} for {known}"
        )
    binary = outputs == gaussian.OUTPUTS and bool(((y == 0) | (y == 1)).all())
    if known is None and labels == "regression" and binary:
        raise ConfigError(
            f"{what} has float targets that are all 0 or 1 and the {model} has 2 outputs, as "
            f"a 2-class classifier does: float targets would mean regression; use int64 "
            f"labels (y.long()) for classification, or say {recourse} if the {model} is a "
            "regression model"
        )


def check_labels(y: Tensor, classes: int, what: str) -> None:
    if y.min() < 0 or y.max() >= classes:
        raise DataError(
            f"{what} labels must lie in [0, {classes}) for a model with {classes} outputs; "
            f"found {int(y.min())}..{int(y.max())}"
        )


def model_device(model: nn.Module) -> torch.device:
    param = next(itertools.chain(model.parameters(), model.buffers()), None)
    return param.device if param is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# save_student
# --------------------------------------------------------------------------------------------


def saved_manifest(student: nn.Module, class_names: Sequence[str] | None) -> dict[str, Any]:
    """The manifest :func:`~ensemble_distill.api.distill` left on ``student``, with
    ``class_names`` checked and added."""
    manifest = getattr(student, MANIFEST_ATTRIBUTE, None)
    if manifest is None:
        raise ConfigError(
            f"save_student saves students that distill() built on a registered architecture "
            f"(model=..., default mlp); this {type(student).__name__} was not (a body= of "
            "your own cannot be rebuilt from a file): save student.state_dict() with "
            "torch.save instead"
        )
    manifest = dict(manifest)
    if class_names is not None:
        manifest["class_names"] = class_names_of(class_names, manifest)
    return manifest


def write_student(directory: Path, student: nn.Module, manifest: dict[str, Any]) -> None:
    """``engine.save_student`` into ``directory`` once :func:`check_student_folder` allows it;
    a file that cannot be written is one error naming it."""
    check_student_folder(directory)
    try:
        engine.save_student(directory, student, manifest)
    except OSError as exc:
        where = exc.filename or directory
        raise ConfigError(
            f"save_student cannot write {where}: {exc.strerror or exc}; check the path, its "
            "permissions and the free disk space"
        ) from None


def check_student_folder(directory: Path) -> None:
    """Refuse to save into ``directory`` when it is a file, or when it holds a manifest.json or
    model.safetensors that is not a student checkpoint of ours (a user's files, or another
    kind of checkpoint): saving replaces both files."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"save_student: {directory} is a file; give a folder (created if missing)"
        )
    if not (directory / MANIFEST).exists():
        if (directory / WEIGHTS).exists():  # no manifest of ours vouches for these weights
            raise CheckpointError(
                f"save_student: {directory / WEIGHTS} was not written by ensemble-distill (no "
                f"{MANIFEST} beside it) and would be overwritten; move it away or choose "
                "another folder"
            )
        return
    try:
        kind = read_manifest(directory).get("kind")
    except EnsembleDistillError:
        kind = None
    if kind != "student":
        what = "not an ensemble-distill checkpoint" if kind is None else f"a {kind!r} checkpoint"
        raise CheckpointError(
            f"save_student: {directory / MANIFEST} is {what} and would be overwritten; move "
            "it away or choose another folder"
        )


def class_names_of(names: Sequence[str], manifest: dict[str, Any]) -> list[str]:
    """``names`` as a list, checked against the student's task and number of classes."""
    if manifest["task"] != "classification":
        raise ConfigError("class_names is for classification students; leave it out")
    classes = manifest["model"]["num_classes"]
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"class_names must be a list of {classes} strings; got {names!r}")
    names = list(names)
    if len(names) != classes:
        raise ConfigError(
            f"class_names has {len(names)} names but the student has {classes} classes; "
            "give one name per class, in label order"
        )
    return names
