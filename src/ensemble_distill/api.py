"""Bring your own ensemble: distil, evaluate and inspect students from Python.

The functions here are a thin layer over the machinery the command line uses — :class:`Config`
(same defaults), :class:`~ensemble_distill.distill.DistillContext`, the ``METHODS`` registry,
:func:`~ensemble_distill.training.fit`, :func:`~ensemble_distill.evaluation.predict_outputs`
and the metric functions — so a student distilled here is trained exactly as ``ensemble-distill
run`` would train it::

    from ensemble_distill import distill, evaluate, teacher_from_modules

    teacher = teacher_from_modules(my_models)  # M trained nn.Modules of one architecture
    student = distill(teacher, method="hydra", train_data=(x, y), body=my_body, epochs=5)
    print(evaluate(student, (x_test, y_test), val_data=(x_val, y_val)))

Data (``train_data``, ``val_data``, ``data``) may be a torch ``Dataset`` yielding ``(x, y)``
pairs, a ``DataLoader`` yielding ``(x, y)`` batches, or an ``(x, y)`` tuple of tensors or NumPy
arrays; it is read once into memory, in the order it yields (a Dataset in index order; a
``DataLoader`` with ``shuffle=True`` gives another order, and so another student, each time).
Inputs become float32 (uint8 images are divided by 255;
keep images in [0, 1], which the input perturbations assume), 1-D inputs become (N, 1). Integer
labels (N,) mean classification; float targets (N,) mean regression, where every network
outputs a Gaussian per member as (μ, raw variance), σ² = softplus(raw) + 1e-6
(:mod:`ensemble_distill.models.gaussian`), in the units of ``y``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ensemble_distill import metrics
from ensemble_distill.config import Config, build_config
from ensemble_distill.data import ArrayDataset, DataSplits, stratified_split
from ensemble_distill.distill import METHODS, DistillContext, HydraStudent, resolve_method
from ensemble_distill.distill.endd import PriorNetwork
from ensemble_distill.errors import ConfigError, DataError
from ensemble_distill.evaluation import (
    classification_metrics,
    gaussian_predictive,
    ood_metrics,
    output_kind,
    predict,
    predict_outputs,
    predictive,
    regression_metrics,
    regression_ood_metrics,
)
from ensemble_distill.models import Classifier, ModelSpec, gaussian
from ensemble_distill.models.batchensemble import BatchEnsemble
from ensemble_distill.models.heads import StackedMLPHeads
from ensemble_distill.pipeline import check_task, load_student, validate
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers import load_teacher as _load_teacher_and_manifest
from ensemble_distill.teachers.train import train_from_config

Teacher: TypeAlias = DeepEnsemble
"""A deep ensemble: ``forward(x)`` gives member outputs (batch, members, classes)."""

DataLike: TypeAlias = Dataset | DataLoader | tuple[Any, Any] | ArrayDataset
"""A torch ``Dataset`` of (x, y) pairs, a ``DataLoader`` of (x, y) batches, or an (x, y) tuple."""

# Config keys that distill() / train_teacher() set themselves or that make no sense for
# in-memory data, with the reason given when a user passes one.
_NOT_OPTIONS = {
    "dataset": "the data come from train_data",
    "dataset_args": "the data come from train_data",
    "data_dir": "the data come from train_data",
    "download": "the data come from train_data",
    "task": "the task follows the labels' dtype (int64: classification, float: regression)",
    "methods": "pass method=NAME",
    "student": "pass body=, model= and epochs= instead",
}
_READ_BATCH = 1024  # examples per batch when reading a Dataset into memory


# --------------------------------------------------------------------------------------------
# Teachers
# --------------------------------------------------------------------------------------------


def teacher_from_modules(modules: Sequence[nn.Module]) -> DeepEnsemble:
    """A :class:`DeepEnsemble` teacher from M trained modules of one architecture.

    Each module maps a batch x (batch, ...) to logits (batch, classes) (or, for regression, to
    (batch, 2) Gaussian outputs). The modules are copied (stacked along a member axis), never
    modified; the teacher is returned in eval mode.

    Raises:
        ConfigError: no modules, or two modules differ in a submodule, parameter or buffer (the
            message names the first difference).
    """
    modules = list(modules)
    if not modules:
        raise ConfigError("teacher_from_modules needs at least one module; got none")
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"member {index} is a {type(module).__name__}, not a torch.nn.Module; "
                "pass a list of modules"
            )
    for index, module in enumerate(modules[1:], start=1):
        _check_same_architecture(modules[0], module, index)
    return DeepEnsemble(modules).eval()


def _check_same_architecture(reference: nn.Module, other: nn.Module, index: int) -> None:
    """Raise a ConfigError naming the first submodule, parameter or buffer where ``other``
    (member ``index``) differs from ``reference`` (member 0)."""
    fix = "every member must have one architecture (the same layers and sizes)"
    for (name_a, mod_a), (name_b, mod_b) in itertools.zip_longest(
        reference.named_modules(), other.named_modules(), fillvalue=(None, None)
    ):
        if name_a != name_b or type(mod_a) is not type(mod_b):
            what_a = f"{name_a or '(root)'}: {type(mod_a).__name__}" if mod_a else "nothing"
            what_b = f"{name_b or '(root)'}: {type(mod_b).__name__}" if mod_b else "nothing"
            raise ConfigError(
                f"member {index} differs from member 0 at module {what_b} "
                f"(member 0 has {what_a}); {fix}"
            )
    for kind, tensors_a, tensors_b in (
        ("parameter", reference.named_parameters(), other.named_parameters()),
        ("buffer", reference.named_buffers(), other.named_buffers()),
    ):
        for (name_a, a), (name_b, b) in itertools.zip_longest(
            tensors_a, tensors_b, fillvalue=(None, None)
        ):
            if name_a != name_b:
                raise ConfigError(
                    f"member {index} has {kind} {name_b!r} where member 0 has {name_a!r}; {fix}"
                )
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ConfigError(
                    f"member {index} differs from member 0 at {kind} {name_a!r}: "
                    f"{tuple(b.shape)} {b.dtype} vs {tuple(a.shape)} {a.dtype}; {fix}"
                )


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> DeepEnsemble:
    """The deep ensemble saved by the command line, from ``OUT/teacher`` or a run folder ``OUT``
    (weights verified against the manifest), in eval mode.

    :func:`ensemble_distill.teachers.load_teacher` also returns the manifest.
    """
    path = Path(path)
    if not (path / "manifest.json").is_file() and (path / "teacher" / "manifest.json").is_file():
        path = path / "teacher"
    return _load_teacher_and_manifest(path, device)[0]


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
    config = _make_config(
        {"members": members, "model": model, "epochs": epochs, "batch_size": batch_size}
        | {"seed": seed}
        | _model_args(model, model_args),
        options,
    )
    validate(config)
    train, val = _train_val(train_data, val_data, config)
    regression = train.y.is_floating_point()
    if num_classes is None:
        num_classes = 1 if regression else int(max(train.y.max(), val.y.max())) + 1
    data = _splits(train, val, num_classes)
    outputs = gaussian.OUTPUTS if regression else num_classes
    spec = ModelSpec(config.model, data.input_shape, outputs, dict(config.model_args))
    device = torch.device(config.device)
    with _seeded(config.seed, device):
        ensemble, _ = train_from_config(spec, data, config, device, quiet=quiet)
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
            ``kd+gaussian``. Regression supports ``kd``, ``hydra`` and ``+gaussian``.
        train_data: the distillation data (see the module docstring); the teacher's outputs
            on it are computed once.
        val_data: validation data, used for the per-epoch validation metrics; default:
            ``val_fraction`` (10 %) of ``train_data``, stratified by class, seeded by
            ``split_seed`` (both config keys, 0.1 and 0 by default).
        body: your student body, any module mapping x (batch, ...) to features (batch, F). It is
            deep-copied (yours is never changed) and gets the method's head(s): ``kd`` a linear
            head, ``hydra`` M MLP heads (``head_widths``), ``be`` / ``latentbe`` its
            BatchEnsemble version, ``endd`` a linear head read as Dirichlet log-concentrations.
            No input normalisation is added: do it inside ``body`` if you need it.
        feature_dim: F; default: inferred from one forward pass of ``body`` on 2 training
            examples.
        model: without ``body``, a registered architecture name (default ``mlp``; arguments
            ``model_args=``, defaults as in :func:`train_teacher`), built as the command line
            builds students: normalising its inputs with the training data's mean and std.
        epochs, batch_size, seed: as the config keys (the student's epochs; every method's
            phases share them, e.g. Hydra's phase 1 takes ``phase1_fraction`` of them).
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
    if not isinstance(teacher, DeepEnsemble):
        if isinstance(teacher, nn.Module):
            raise ConfigError(
                f"teacher is a {type(teacher).__name__}; pass a DeepEnsemble (see "
                "teacher_from_modules) or a list of member modules"
            )
        teacher = teacher_from_modules(teacher)
    base_method, perturbation = resolve_method(method)
    section = base_method.section
    if body is not None and (model is not None or "model_args" in options):
        raise ConfigError("pass either body= (your module) or model= / model_args=, not both")
    config = _make_config(
        {"methods": [method], "members": teacher.num_members, "epochs": epochs}
        | {"batch_size": batch_size, "seed": seed}
        | (
            {"model": model, **_model_args(model, options.pop("model_args", None))} if model else {}
        ),
        options,
        section=section,
    )
    validate(config)
    train, val = _train_val(train_data, val_data, config)
    device = torch.device(config.device)
    teacher.to(device).eval()
    outputs = _teacher_outputs(teacher, train)
    data = _splits(train, val, 1 if train.y.is_floating_point() else outputs)
    check_task(config, data)
    method_options = base_method.options(config)
    with _seeded(config.seed, device):
        if body is None:
            spec = ModelSpec(config.model, data.input_shape, outputs, dict(config.model_args))
            student = base_method.build(spec, config.members, method_options, data.mean, data.std)
        else:
            student = _student_from_body(
                method.partition("+")[0],
                copy.deepcopy(body).to(device),
                feature_dim,
                outputs,
                config.members,
                method_options,
                train.x[:2].to(device),
            )
        student.to(device)
        context = DistillContext(
            data=data,
            teacher=teacher,
            teacher_train_outputs=predict_outputs(teacher, train.x, config.eval.batch_size, device),
            config=config,
            device=device,
            quiet=quiet,
            perturbation=perturbation,
        )
        base_method.train(student, context)
    return student.eval()


def _student_from_body(
    name: str,
    body: nn.Module,
    feature_dim: int | None,
    outputs: int,
    members: int,
    options: dict[str, Any],
    probe: Tensor,
) -> nn.Module:
    """The student of method ``name`` on the user's ``body`` (already a private copy)."""
    if feature_dim is None:
        body.eval()
        try:
            with torch.no_grad():
                features = body(probe)
        except Exception as exc:  # the user's module: report any failure with the input shape
            raise ConfigError(
                f"body cannot take inputs of shape {tuple(probe.shape)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(features, Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ConfigError(
                f"body must map x to features (batch, F); got {shape}: end it with nn.Flatten()"
            )
        feature_dim = features.shape[1]
    body.train()
    if name == "hydra":
        heads = StackedMLPHeads(feature_dim, options["head_widths"], outputs, members)
        return HydraStudent(body, heads)
    base = Classifier(body, nn.Linear(feature_dim, outputs), feature_dim)
    if name in ("kd", "latentbe"):  # LatentBE trains a BatchEnsemble of it and folds it back
        return base
    if name == "be":
        return BatchEnsemble.from_model(base, members, options["init"], options["init_std"])
    if name == "endd":
        return PriorNetwork(base)
    raise ConfigError(
        f"method {name!r} has no student built from a body; pass model=NAME instead of body="
    )


def _teacher_outputs(teacher: DeepEnsemble, train: ArrayDataset) -> int:
    """The teacher's output size (classes, or 2 for regression), checked against the labels."""
    probe = train.x[:2].to(next(teacher.parameters()).device)
    try:
        with torch.no_grad():
            out = teacher(probe)
    except Exception as exc:  # the user's modules: name the input shape they could not take
        raise ConfigError(
            f"the teacher cannot take inputs of shape {tuple(probe.shape)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if out.dim() != 3:
        raise ConfigError(
            f"each teacher member must output (batch, outputs); the teacher gave "
            f"{tuple(out.shape)} where (batch, members, outputs) is needed"
        )
    size = out.shape[-1]
    if train.y.is_floating_point() and size != gaussian.OUTPUTS:
        raise ConfigError(
            f"float targets mean regression, where each member outputs (mean, raw variance): "
            f"2 numbers; the teacher outputs {size}. Use int64 labels for classification"
        )
    return size


def _model_args(model: str, model_args: dict[str, Any] | None) -> dict[str, Any]:
    """``model_args`` when given; else the config's default for ``mlp``, the architecture's
    own defaults (``{}``) for any other model."""
    if model_args is not None:
        return {"model_args": model_args}
    return {} if model == Config.model else {"model_args": {}}


def _sections_with(key: str) -> list[str]:
    """The methods whose config section has ``key``."""
    default = Config()
    return [
        name
        for name in METHODS.names()
        if key in {f.name for f in dataclasses.fields(getattr(default, METHODS.get(name).section))}
    ]


def _make_config(
    values: dict[str, Any], options: dict[str, Any], section: str | None = None
) -> Config:
    """A validated :class:`Config` from explicit ``values``, the method's ``section`` options
    and top-level keys in ``options``; unknown or meaningless keys raise a ConfigError."""
    top = {f.name for f in dataclasses.fields(Config)}
    section_keys = (
        {f.name for f in dataclasses.fields(getattr(Config(), section))} if section else set()
    )
    data = dict(values)
    section_values: dict[str, Any] = {}
    for key, value in options.items():
        if key in section_keys:
            section_values[key] = value
        elif key in _NOT_OPTIONS:
            raise ConfigError(f"{key!r} is not an option here: {_NOT_OPTIONS[key]}")
        elif key in values:
            raise ConfigError(
                f"{key!r} cannot be set here: it is {values[key]!r}, fixed by the teacher or "
                "by the call's own arguments"
            )
        elif key in top:
            data[key] = value
        elif section and (owners := _sections_with(key)):
            raise ConfigError(
                f"{key!r} is an option of {' / '.join(owners)}, not of {section}; "
                f"{section}'s options: {', '.join(sorted(section_keys))}"
            )
        else:
            known = sorted(section_keys | (top - set(_NOT_OPTIONS) - set(values)))
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            owner = f"method section {section!r} or " if section else ""
            raise ConfigError(
                f"unknown option {key!r}{hint} (not a key of {owner}the config; "
                f"known: {', '.join(known)})"
            )
    if section_values:
        nested = data.get(section, {})
        if not isinstance(nested, dict):
            raise ConfigError(f"{section} must be a mapping of its keys to values")
        data[section] = nested | section_values
    return build_config(data)


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
) -> dict[str, float]:
    """The metrics of a ``results.json`` row for ``model`` (a student, a teacher or any module
    giving logits (batch, classes) or member logits (batch, members, classes)) on ``data``.

    Classification: ``acc``, ``nll``, ``brier``, ``brier_tfp``, ``ece``, ``mi``, ``entropy``;
    with ``val_data`` also ``temperature``, ``cnll``, ``cece``, ``cbrier`` (temperature fitted on
    ``val_data``); with ``ood_data`` (inputs; labels, if any, are ignored) ``ood_auroc``,
    ``ood_aupr`` (by predictive entropy), ``ood_auroc_mi``, ``ood_aupr_mi``.
    Regression (float targets): ``rmse``, ``nll``, variances and interval coverage; with
    ``ood_data`` the shift-detection AUROCs. ``val_data`` is not used for regression.

    ``device``: where the model runs; default: where its parameters are.
    """
    device = _model_device(model) if device is None else torch.device(device)
    test = _materialize(data, "data")

    def outputs(x: Tensor) -> Tensor:
        return predict_outputs(model, x, batch_size, device)

    if test.y.is_floating_point():
        pred = _gaussian(outputs(test.x))
        row = regression_metrics(pred, test.y)
        if ood_data is not None:
            row |= regression_ood_metrics(pred, _gaussian(outputs(_inputs(ood_data))))
        return row
    kind = output_kind(model)
    pred = predictive(outputs(test.x), kind)
    _check_labels(test.y, pred.probs.shape[-1], "data")
    row = classification_metrics(pred, test.y)
    if val_data is not None:
        val = _materialize(val_data, "val_data")
        val_probs = predictive(outputs(val.x), kind).probs
        _check_labels(val.y, val_probs.shape[-1], "val_data")
        row |= metrics.calibrated_metrics(val_probs, val.y, pred.probs, test.y)
    if ood_data is not None:
        row |= ood_metrics(pred, predictive(outputs(_inputs(ood_data)), kind))
    return row


def mean_probs(
    model: nn.Module,
    x: Tensor | np.ndarray,
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Tensor:
    """Predictive class probabilities p̄ (batch, classes), float64: the members' mean for
    member logits, softmax for a single network, α/α₀ for a Prior Network (EnD²)."""
    return _predict(model, x, batch_size, device).probs.mean(dim=1)


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
    pred = _predict(model, x, batch_size, device)
    return {
        "entropy": pred.entropy,
        "mutual_information": pred.mi,
        "expected_entropy": pred.entropy - pred.mi,
    }


def _predict(model, x, batch_size, device):
    device = _model_device(model) if device is None else torch.device(device)
    return predict(model, _inputs(x), batch_size, device)


def _gaussian(outputs: Tensor):
    if outputs.shape[-1] != gaussian.OUTPUTS:
        raise DataError(
            "float targets mean regression, where the model must output (mean, raw variance) "
            f"per member; got outputs {tuple(outputs.shape)}. Use int64 labels for classification"
        )
    return gaussian_predictive(outputs)


def _check_labels(y: Tensor, classes: int, what: str) -> None:
    if y.min() < 0 or y.max() >= classes:
        raise DataError(
            f"{what} labels must lie in [0, {classes}) for a model with {classes} outputs; "
            f"found {int(y.min())}..{int(y.max())}"
        )


def _model_device(model: nn.Module) -> torch.device:
    param = next(itertools.chain(model.parameters(), model.buffers()), None)
    return param.device if param is not None else torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _train_val(
    train_data: DataLike, val_data: DataLike | None, config: Config
) -> tuple[ArrayDataset, ArrayDataset]:
    """Both splits in memory; without ``val_data`` a seeded share of ``train_data``."""
    train = _materialize(train_data, "train_data")
    if val_data is not None:
        val = _materialize(val_data, "val_data")
        if val.y.is_floating_point() != train.y.is_floating_point():
            raise DataError(
                "train_data and val_data have different label types (one integer, one float); "
                "use int64 labels for classification and float targets for regression"
            )
        if val.x.shape[1:] != train.x.shape[1:]:
            raise DataError(
                f"val_data inputs are {tuple(val.x.shape[1:])} but train_data inputs are "
                f"{tuple(train.x.shape[1:])}; give both the same shape"
            )
        return train, val
    if len(train) < 2:
        raise DataError("train_data needs at least 2 examples to hold some out for validation")
    rest, held = _carve(train.y, config.val_fraction, config.split_seed)
    return train.subset(rest), train.subset(held)


def _carve(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(rest, held-out) indices: stratified by class for labels, at random for float targets;
    at least one example on each side."""
    if not y.is_floating_point():
        rest, held = stratified_split(y, fraction, seed)
        if len(held) > 0 and len(rest) > 0:
            return rest, held
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=generator)
    count = min(len(y) - 1, max(1, round(len(y) * fraction)))
    return order[count:].sort().values, order[:count].sort().values


def _splits(train: ArrayDataset, val: ArrayDataset, num_classes: int) -> DataSplits:
    """DataSplits of in-memory data (validation doubles as the unused test split)."""
    regression = train.y.is_floating_point()
    return DataSplits(
        name="custom",
        train=train,
        val=val,
        test=val,
        num_classes=1 if regression else num_classes,
        task="regression" if regression else "classification",
    )


def _materialize(data: Any, what: str) -> ArrayDataset:
    """``data`` as in-memory tensors: float32 inputs, int64 labels or float32 targets."""
    if isinstance(data, ArrayDataset):
        x, y = data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data, Dataset):
        x, y = data
    elif isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    elif isinstance(data, DataLoader | Dataset):
        x, y = _read_batches(data, what, labels=True)
    else:
        raise DataError(
            f"{what} must be a torch Dataset, a DataLoader or an (x, y) tuple of tensors; "
            f"got {type(data).__name__}"
        )
    return ArrayDataset(_as_inputs(x, what), _as_targets(y, what))


def _inputs(data: Any) -> Tensor:
    """Inputs only: a tensor or array of inputs, or any data form (labels ignored)."""
    if isinstance(data, Tensor | np.ndarray):
        return _as_inputs(data, "inputs")
    if isinstance(data, ArrayDataset):
        return data.x
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data, Dataset):
        return _as_inputs(data[0], "inputs")
    if isinstance(data, TensorDataset):
        return _as_inputs(data.tensors[0], "inputs")
    if isinstance(data, DataLoader | Dataset):
        return _as_inputs(_read_batches(data, "inputs", labels=False)[0], "inputs")
    raise DataError(
        f"inputs must be a tensor, a torch Dataset, a DataLoader or an (x, y) tuple; "
        f"got {type(data).__name__}"
    )


def _read_batches(
    data: Dataset | DataLoader, what: str, labels: bool
) -> tuple[Tensor, Tensor | None]:
    """Concatenate what a DataLoader yields (a Dataset is read in order, in batches)."""
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=_READ_BATCH)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in loader:
        if isinstance(batch, tuple | list) and len(batch) == 2:
            x, y = batch
        elif not labels and isinstance(batch, Tensor):
            x, y = batch, None
        else:
            raise DataError(
                f"{what} must yield (inputs, labels) pairs; got a batch of type "
                f"{type(batch).__name__}" + (f" with {len(batch)} items" if _sized(batch) else "")
            )
        xs.append(torch.as_tensor(x))
        if y is not None:
            ys.append(torch.as_tensor(y).reshape(-1))
    if not xs:
        raise DataError(f"{what} is empty; give at least one example")
    return torch.cat(xs), (torch.cat(ys) if ys else None)


def _sized(value: Any) -> bool:
    return isinstance(value, Iterable) and hasattr(value, "__len__")


def _as_inputs(x: Any, what: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() == 0:
        raise DataError(f"{what} inputs must have an example axis, (N, ...); got a scalar")
    return x


def _as_targets(y: Any, what: str) -> Tensor:
    y = torch.as_tensor(y)
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise DataError(
            f"{what} labels must be one per example, shape (N,); got {tuple(y.shape)} "
            "(for one-hot labels pass y.argmax(1))"
        )
    return y.float() if y.is_floating_point() else y.long()


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for a block (as the pipeline does before building a student)
    and give the caller's RNG state back afterwards."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


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
    "teacher_from_modules",
    "train_teacher",
    "uncertainty",
]
