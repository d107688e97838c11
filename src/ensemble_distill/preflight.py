"""What a run is refused for before anything is written or trained: a dataset of another task
than the methods', a network that cannot be built or does not fit the data, a body/head split
at the wrong layer, a ``student.init`` the students cannot start from, a teacher too big for
the memory. :func:`ensemble_distill.engine.prepare` runs these on every config, from the
command line and the Python API alike; each refusal names the key to fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ensemble_distill.data import DataSplits
from ensemble_distill.data.corruptions import shift_data_problem
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, input_names, resolve_method
from ensemble_distill.methods.base import require_members_architecture
from ensemble_distill.methods.perturbations import (
    NEEDS_IMAGES,
    NEEDS_STUDENT_MEMBERS,
    PERTURBATIONS,
    PROBABILITY_FREE,
    expand_mixture,
)
from ensemble_distill.methods.student_init import MEMBER, is_weights_file
from ensemble_distill.models import ModelSpec, create_classifier, create_model, is_factory
from ensemble_distill.resources import available_memory, byte_text

if TYPE_CHECKING:
    from ensemble_distill.config import RunConfig

# What prepare()'s caller will hold in memory (its ``memory``): the teacher in training, or
# loaded (from OUT/teacher or the member files), and its outputs cached over the distillation
# inputs (what ``distill`` holds for every student).
TRAIN, LOAD, OUTPUTS = "train", "load", "outputs"


def memory_need(
    config: RunConfig, member: nn.Module, outputs: int, memory: Collection[str]
) -> tuple[int, int, str]:
    """Bytes the teacher needs on the training device and in host memory, and how they were
    counted, by a simple rule that counts only what certainly is allocated (so a refusal is
    never wrong): float32 numbers at 4 bytes; per member its weights and buffers, and in
    training a gradient and the optimiser's moments per parameter (Adam 2, SGD with momentum
    1); the cached outputs — ``outputs`` per member (distillation inputs × classes) — twice,
    as their batches are concatenated. Activations, the data and the students come on top."""
    members = config.members
    state = sum(tensor.numel() for tensor in member.state_dict().values())
    parameters = sum(parameter.numel() for parameter in member.parameters())
    weights, cached, parts = 0, 0, []
    if TRAIN in memory and config.teacher.members is None:
        moments = 2 if config.optim.name == "adam" else int(config.optim.momentum > 0)
        weights = 4 * (state + parameters * (1 + moments))
        extra = f"a gradient and {moments} optimiser moment{'' if moments == 1 else 's'}"
        parts.append(f"{members} x {state} weights, {extra} each")
    elif {TRAIN, LOAD} & set(memory):
        weights = 4 * state
        parts.append(f"{members} x {state} weights")
    if OUTPUTS in memory:
        cached = 2 * 4 * outputs
        parts.append(f"{members} x {outputs} cached outputs, held twice")
    return members * weights, members * cached, "; ".join(parts)


def check_memory(
    config: RunConfig,
    member: nn.Module,
    outputs: int,
    device: torch.device,
    memory: Collection[str],
) -> None:
    """Refuse a ``members`` count whose teacher (:func:`memory_need`; ``member`` built on the
    meta device) cannot fit in the memory available now: the GPU's free memory for the
    weights, host memory for the rest (all of it on a CPU). Nothing is checked where the
    available memory is unknown (no /proc/meminfo)."""
    on_device, on_host, counted = memory_need(config, member, outputs, memory)
    host = available_memory()
    places = [(on_device + on_host, host, "memory")]
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
        places = [(on_device, free, f"{device} memory"), (on_host, host, "memory")]
    for need, free, where in places:
        if free is not None and need > free:
            raise ConfigError(
                f"members={config.members} needs at least {byte_text(need)} of {where} for the "
                f"teacher ({counted}; 4 bytes each) but {byte_text(free)} is available; lower "
                "members or the model's size, or free memory"
            )


def check_shift_data(config: RunConfig, data: DataSplits) -> None:
    """``eval.corruptions`` needs a classification dataset of 1- or 3-channel images."""
    if config.eval.corruptions:
        problem = shift_data_problem(data.input_shape, data.task)
        if problem is not None:
            raise ConfigError(f"eval.corruptions {problem}; set eval.corruptions to []")


def check_task(config: RunConfig, data: DataSplits) -> None:
    """The dataset's task must be the configured one, and every method must support it."""
    if config.task is not None and config.task != data.task:
        raise ConfigError(
            f"task is {config.task!r} but dataset {config.dataset!r} is a {data.task} dataset; "
            "fix task or dataset"
        )
    for name in config.methods:
        method, _ = resolve_method(name)
        inputs = input_names(name)
        if len(set(inputs)) != len(inputs):
            raise ConfigError(f"method {name!r} names an input twice; name each once")
        inputs = expand_mixture(inputs, config.perturbation)
        if set(inputs) & set(NEEDS_STUDENT_MEMBERS):
            members = ", ".join(m.section for m in METHODS.values() if m.trains_members)
            if not method.trains_members:
                raise ConfigError(
                    f"method {name!r}: +diverse probes the student's members; use it with "
                    f"a method whose student trains as members: {members}"
                )
            if config.members < 2:
                raise ConfigError(
                    f"method {name!r} uses +diverse, which compares two members; set members "
                    "to at least 2"
                )
        images = [i for i in inputs if i in NEEDS_IMAGES]
        if images and len(data.input_shape) != 3:
            raise ConfigError(
                f"method {name!r}: +{images[0]} needs images (channels, height, width); "
                f"dataset {data.name!r} has inputs of shape {data.input_shape}: use +mixup "
                "instead"
            )
        regression_ok = data.task != "regression" or set(inputs) <= set(PROBABILITY_FREE)
        if data.task not in method.tasks or not regression_ok:
            raise ConfigError(
                f"method {name!r} does not support {data.task}; "
                f"{data.task} methods are {supported_methods(data.task)}"
            )
    if data.task == "regression" and config.eval.diversity_etas:
        raise ConfigError("eval.diversity_etas is for classification; set it to [] for regression")


def supported_methods(task: str) -> str:
    """The method names a task allows, for error messages."""
    names = ", ".join(name for name in METHODS.names() if task in METHODS.get(name).tasks)
    allowed = PROBABILITY_FREE if task == "regression" else PERTURBATIONS.names()
    return f"{names}, each optionally +{' / +'.join(allowed)}"


def check_buildable(spec: ModelSpec, key: str, data: DataSplits) -> nn.Module:
    """Build ``spec`` on the meta device (no memory, no random draws): arguments (config key
    ``key``) that cannot build it, or build a layer without weights, are refused now rather
    than once training starts; a network from an import path must also map ``data``'s inputs
    to the task's outputs. Returns the model built (on the meta device)."""
    fix = f"fix {key} (model {spec.name!r}, arguments {spec.kwargs})"
    model = build_on_meta(lambda: create_model(spec), "the model", fix)
    if is_factory(spec.name):
        check_factory_outputs(spec, data, fix)
    return model


def check_factory_outputs(spec: ModelSpec, data: DataSplits, fix: str) -> None:
    """A network from an import path, built once for real (the caller's random state kept),
    must map two training inputs to (2, outputs): the classes, or (mean, raw variance) for
    regression. Nothing else says how many outputs a factory's network gives."""
    probe = data.train.x[:2]
    with torch.random.fork_rng(devices=[]):
        out = probe_forward(create_model(spec).eval(), probe, f"model {spec.name!r}", fix)
    need = (len(probe), spec.num_classes)
    if not isinstance(out, Tensor) or tuple(out.shape) != need:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        outputs = (
            "mean and raw variance" if data.task == "regression" else f"{spec.num_classes} classes"
        )
        raise ConfigError(
            f"model {spec.name!r} gives outputs {shape} for inputs {tuple(probe.shape)}, where "
            f"{need} ({outputs} of dataset {data.name!r}) are needed; {fix} (timm: num_classes)"
        )


def probe_forward(module: nn.Module, probe: Tensor, who: str, fix: str = "") -> Any:
    """``module(probe)`` without gradients. ``module`` is the user's (a network, a body, a
    teacher's members): any failure is a ConfigError naming ``who``, the input shape it
    could not take and ``fix``, not a traceback from inside their code."""
    try:
        with torch.no_grad():
            return module(probe)
    except Exception as exc:  # the user's module: report any failure with the input shape
        raise ConfigError(
            f"{who} cannot take inputs of shape {tuple(probe.shape)} "
            f"({type(exc).__name__}: {exc}){'; ' + fix if fix else ''}"
        ) from exc


def check_split_body(spec: ModelSpec, data: DataSplits) -> None:
    """The body of a network from an import path, cut at its head (``student.head``; built
    once for real, the caller's random state kept), must map two training inputs to
    (2, F), F the head's ``in_features``: a head path that names another Linear layer than
    the final classifier is refused before training, not halfway through it."""
    probe = data.train.x[:2]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        base = create_classifier(spec).eval()
        try:
            features = base.body(probe)
        except Exception as exc:  # the user's network without that layer: name what failed
            features = f"{type(exc).__name__}: {exc}"
    need = (len(probe), base.feature_dim)
    if not isinstance(features, Tensor) or tuple(features.shape) != need:
        head = f"student.head={spec.head!r}" if spec.head else "its get_classifier() layer"
        got = tuple(features.shape) if isinstance(features, Tensor) else f"an error ({features})"
        raise ConfigError(
            f"model {spec.name!r} without {head} gives {got} for inputs {tuple(probe.shape)}, "
            f"where features {need} (the head's in_features) are needed: that layer is not its "
            "final classifier; set student.head to the attribute path of the last Linear layer"
        )


def check_student_init(
    config: RunConfig, teacher_spec: ModelSpec, student_spec: ModelSpec, students_from_spec: bool
) -> RunConfig:
    """Refuse a ``student.init`` the students cannot start from, before training: ``member``
    for another architecture than the members' or for the user's own body; a weights file
    is made absolute (what config.yaml records; it is read by :func:`check_student_buildable`).
    """
    init = config.student.init
    if init == MEMBER:
        if not students_from_spec:
            raise ConfigError(
                "student.init=member copies the members' weights into a student of their "
                "architecture, and a body of your own is not theirs; leave body= out (the "
                "student is then the members' model), or set student.init=random"
            )
        require_members_architecture(
            "student.init=member", teacher_spec, student_spec, "set student.init=random"
        )
    if is_weights_file(init):
        student = dataclasses.replace(config.student, init=str(Path(init).absolute()))
        config = dataclasses.replace(config, student=student)
    return config


@contextlib.contextmanager
def refused_as_config_error(what: str, fix: str) -> Iterator[None]:
    """An architecture's own complaint while ``what`` is built or sized (a negative width, a
    layer too big for any tensor) as a :class:`ConfigError` naming ``what`` and ``fix``."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot build {what}: {type(exc).__name__}: {exc}; {fix}") from None


def build_on_meta(build: Callable[[], nn.Module], what: str, fix: str) -> nn.Module:
    """``build()`` on the meta device (no memory, no random draws): an architecture that
    cannot be built, or builds a layer without weights, is a :class:`ConfigError` naming
    ``what`` and ``fix``."""
    with (
        refused_as_config_error(what, fix),
        torch.device("meta"),
        torch.random.fork_rng(devices=[]),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # zero-size layers are reported below instead
        model = build()
    empty = [name for name, p in model.named_parameters() if p.numel() == 0]
    if empty:
        raise ConfigError(f"{what} has a layer without weights ({empty[0]}); {fix}")
    return model
