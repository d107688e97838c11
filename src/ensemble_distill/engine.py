"""The one engine under both faces: the command line (:mod:`.pipeline`) and the Python API
(:mod:`.api`). It turns a validated config and in-memory data into trained teachers and
students, and saves and loads students. What a config is refused for before anything is
written is :mod:`.preflight`, which :func:`prepare` runs.

Both faces call the same functions, so a student is trained the same way from either: for the
same data, config and seed, the weights are bit-identical. The one seeding rule: every
training phase (the teacher, each student) runs under :func:`seeded` with the config's seed —
torch's global RNG seeded for the block and given back afterwards.

What the faces add: :mod:`.pipeline` resume, evaluation files and the report, with
:mod:`.out_folder` (the output folder's guard) and :mod:`.settings` (the fingerprints);
:mod:`.api` the adapters from the user's modules and data, with :mod:`.api_checks`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ensemble_distill import distributed
from ensemble_distill.checkpoint import MANIFEST, check_shapes, load_checkpoint, save_checkpoint
from ensemble_distill.config import BEFORE_THE_KEY
from ensemble_distill.data import ArrayDataset, DataSplits, ImageFiles, create_dataset
from ensemble_distill.data.distill import is_numpy_file, load_distill_inputs
from ensemble_distill.data.identity import file_identity
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.methods import (
    DistillContext,
    DistillMethod,
    input_names,
    resolve_method,
)
from ensemble_distill.methods.perturbations import (
    AUTO_POOL,
    check_pool,
    pool_copies,
)
from ensemble_distill.methods.student_init import (
    check_weights_file,
    is_weights_file,
    start_student,
)
from ensemble_distill.models import (
    Classifier,
    ModelSpec,
    create_classifier,
    gaussian,
    is_factory,
    require_trusted,
)
from ensemble_distill.models.base import channels_last, has_convolutions
from ensemble_distill.models.disagreement import default_scales, disagreement_scale
from ensemble_distill.preflight import (
    OUTPUTS,
    TRAIN,
    build_on_meta,
    check_buildable,
    check_memory,
    check_shift_data,
    check_split_body,
    check_student_init,
    check_task,
    probe_forward,
    refused_as_config_error,
)
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers.files import (
    check_member_files,
    load_member_files,
    resolve_member_files,
)
from ensemble_distill.teachers.train import train_from_config
from ensemble_distill.training import native_bf16, resolve_precision

if TYPE_CHECKING:
    from ensemble_distill.config import RunConfig

log = logging.getLogger(__name__)

DEFAULT_METHODS = {"classification": ["kd", "hydra", "endd"], "regression": ["kd", "hydra"]}
# On images the default Hydra distils on pooled clean, mixup and patch-shuffled inputs (one
# joint phase, adapters: Hydra.resolve), the student that keeps the ensemble's disagreement off
# the training data (docs/results/disagreement.md); patch shuffles need images.
IMAGE_HYDRA = "hydra+mixture"
# The methods whose student puts its own heads on a body: on a network from an import path
# (``module:factory``) they need its body/head split (``student.head``, models/split.py). The
# others take the whole network (kd, endd) or convert all its layers (be, latentbe).
SPLIT_METHODS = ("hydra",)


@dataclass
class Setup:
    """A validated configuration with its data and architectures, before anything is written.

    Attributes:
        teacher_spec, student_spec: the members' and the students' architectures; their
            outputs are the classes, or (μ, raw variance) for regression (``models.gaussian``).
        distill_inputs: the auxiliary inputs of ``distill_data`` that students distil on, or
            None: the training inputs.
    """

    config: RunConfig
    data: DataSplits
    teacher_spec: ModelSpec
    student_spec: ModelSpec
    device: torch.device
    distill_inputs: Tensor | None = None


def prepare(
    config: RunConfig,
    data: DataSplits | None = None,
    *,
    students_from_spec: bool = True,
    memory: Collection[str] = (TRAIN, OUTPUTS),
) -> Setup:
    """The data (loaded from the config when not given) checked against the config, the task's
    default methods, and both architectures built once — with ``students_from_spec`` (False
    when the user brings the students' body) every method's student too — so that every bad
    value is refused before any file is written or any training starts; ``memory``: what the
    caller will hold (:func:`.preflight.check_memory`), refused when it cannot fit.

    The resolved config records the data's identity (``data_identity``, and
    ``distill_data_identity`` for a ``distill_data`` file): part of every phase's fingerprint."""
    data = data if data is not None else load_data(config)
    ood_identity = data.ood_source.identity if data.ood_source is not None else None
    config = dataclasses.replace(config, data_identity=data.identity, ood_identity=ood_identity)
    if config.methods is None:
        config = dataclasses.replace(config, methods=default_methods(config, data))
    # The user's members: files listed and hashed, then (when hashed now) checked below.
    new_files = config.teacher.members is not None and config.teacher.members_sha256 is None
    if config.teacher.members is not None:
        config = resolve_member_files(config)
    check_task(config, data)
    check_shift_data(config, data)
    outputs = gaussian.OUTPUTS if data.task == "regression" else data.num_classes
    student_args = config.student.model_args
    teacher_spec = ModelSpec(config.model, data.input_shape, outputs, dict(config.model_args))
    student_spec = ModelSpec(
        config.student.model or config.model,
        data.input_shape,
        outputs,
        dict(student_args if student_args is not None else config.model_args),
        config.student.head,
    )
    models = [check_buildable(teacher_spec, "model_args", data)]
    # The default student is the members' architecture (its head path says only where to cut).
    if dataclasses.replace(student_spec, head=None) != teacher_spec:
        if student_args is None:
            student_key = "student.model_args (null: the members' model_args are used)"
        else:
            student_key = "student.model_args"
        models.append(check_buildable(student_spec, student_key, data))
    if new_files:
        check_member_files(teacher_spec, config, models[0])
    config = check_student_init(config, teacher_spec, student_spec, students_from_spec)
    distilling = OUTPUTS in memory  # a run that reads no weights file builds no student
    if students_from_spec:
        for name in config.methods:
            check_student_buildable(teacher_spec, student_spec, config, name, distilling)
        if is_factory(student_spec.name) and split_methods(config.methods):
            check_split_body(student_spec, data)
    device = distributed.local_device(torch.device(config.device))
    config = resolve_hardware(config, data, device, any(map(has_convolutions, models)))
    if config.memory_format == "channels_last":
        data = channels_last_data(data)
    distill_inputs = distill_inputs_of(config, data)
    config = dataclasses.replace(config, distill_data_identity=distill_data_identity(config))
    examples = len(data.train) if distill_inputs is None else len(distill_inputs)
    check_memory(config, models[0], examples * outputs, device, memory)
    inputs_of = {name: input_names(name) for name in config.methods}
    shapes = (data.input_shape, (config.members, outputs))
    check_pool(config.perturbation, inputs_of, examples, *shapes)
    return Setup(config, data, teacher_spec, student_spec, device, distill_inputs)


def distill_data_identity(config: RunConfig) -> str | None:
    """The identity of a ``distill_data`` file (:mod:`ensemble_distill.data.identity`); None
    for a registered dataset's inputs (or none)."""
    if config.distill_data is None or not is_numpy_file(config.distill_data):
        return None
    return file_identity(Path(config.distill_data))


def distill_inputs_of(config: RunConfig, data: DataSplits) -> Tensor | None:
    """The inputs ``distill_data`` names, checked against ``data`` (in its memory format);
    None without it: students distil on the training inputs."""
    if config.distill_data is None:
        return None
    x = load_distill_inputs(
        config.distill_data,
        data,
        data_dir=config.data_dir,
        download=config.download,
        split_seed=config.split_seed,
        val_fraction=config.val_fraction,
    )
    return as_channels_last(x) if config.memory_format == "channels_last" else x


def as_channels_last(x: Tensor | ImageFiles) -> Tensor | ImageFiles:
    """Images stored channels-last: a copy of a tensor, or image files whose every decoded
    batch is."""
    return x.mapped(channels_last) if isinstance(x, ImageFiles) else channels_last(x)


def default_methods(config: RunConfig, data: DataSplits) -> list[str]:
    """The task's default methods, Hydra as :data:`IMAGE_HYDRA` on image classification; for
    a student from an import path without ``student.head``, those that need no body/head split
    (not :data:`SPLIT_METHODS`)."""
    methods = DEFAULT_METHODS[data.task]
    if data.task == "classification" and len(data.input_shape) == 3:
        methods = [IMAGE_HYDRA if name == "hydra" else name for name in methods]
    if is_factory(config.student.model or config.model) and config.student.head is None:
        methods = split_methods(methods, keep=False)
    return methods


def split_methods(names: Collection[str], keep: bool = True) -> list[str]:
    """The methods among ``names`` whose student needs a body/head split
    (:data:`SPLIT_METHODS`); ``keep=False``: the others."""
    return [name for name in names if (resolve_method(name)[0].section in SPLIT_METHODS) == keep]


def resolve_hardware(
    config: RunConfig, data: DataSplits, device: torch.device, convolutional: bool
) -> RunConfig:
    """``config`` with ``precision`` and ``memory_format`` resolved for this machine: ``auto``
    precision is bf16 where ``device`` computes it natively (:func:`~ensemble_distill.training.
    native_bf16`), ``auto`` memory format channels-last for convolutional models on images.

    The resolved values are what ``config.yaml``, the fingerprints and the manifests record,
    since they decide the weights (bf16 rounding, another convolution algorithm)."""
    images = len(data.input_shape) == 3
    if config.memory_format == "channels_last" and not images:
        raise ConfigError(
            f"memory_format=channels_last needs images (channels, height, width); dataset "
            f"{data.name!r} has inputs of shape {data.input_shape}: use memory_format=auto"
        )
    memory_format = config.memory_format
    if memory_format == "auto":
        memory_format = "channels_last" if images and convolutional else "contiguous"
    precision = resolve_precision(config.precision, device)
    return dataclasses.replace(config, precision=precision, memory_format=memory_format)


def hardware_line(config: RunConfig, device: torch.device) -> str:
    """How the run computes, for the log: precision (and why), memory format, compile."""
    native = native_bf16(device)
    why = f" (computed natively: {native})" if config.precision == "bf16" and native else ""
    steps = "compiled steps (torch.compile)" if config.compile else "eager steps"
    return (
        f"{device}: precision {config.precision}{why}, memory format {config.memory_format}, "
        f"{steps}"
    )


def channels_last_data(data: DataSplits) -> DataSplits:
    """``data`` with every image tensor stored channels-last (:func:`~ensemble_distill.models.
    channels_last`): batches indexed from it, and the convolutions on them, stay so."""
    return data.with_inputs(as_channels_last)


def load_data(config: RunConfig) -> DataSplits:
    """The configured dataset; under DDP rank 0 loads it first, so that a download happens
    once (per shared ``data_dir``) and the other ranks read the downloaded files."""
    main = distributed.is_main()
    if not main:
        distributed.barrier()
    try:
        return create_dataset(
            config.dataset,
            data_dir=config.data_dir,
            download=config.download,
            split_seed=config.split_seed,
            val_fraction=config.val_fraction,
            ood=config.ood,
            **config.dataset_args,
        )
    finally:  # also when it failed: the others then load and fail alike instead of waiting
        if main:
            distributed.barrier()


def check_student_buildable(
    teacher_spec: ModelSpec, spec: ModelSpec, config: RunConfig, name: str, distilling: bool
) -> None:
    """Build method ``name``'s student of ``spec`` on the meta device, after the method's own
    check of both architectures: options that need the architecture to judge (e.g.
    ``hydra.split`` beyond its layers) are refused before training; when ``distilling``, so is
    a ``student.init`` file that does not fit it."""
    method, _ = resolve_method(name)
    what, fix = (
        f"the student of method {name!r}",
        f"fix the {method.section}.* options or student.model_args",
    )
    with refused_as_config_error(what, fix):  # sizing ``auto`` options builds students too
        options = method_options(config, name, spec)
    method.check_architectures(options, teacher_spec, spec)

    def build() -> nn.Module:
        return method.build(spec, config.members, options)

    student = build_on_meta(build, what, fix)
    if distilling and is_weights_file(config.student.init):
        check_weights_file(config.student.init, student, what)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG for a block and give the caller's RNG state back afterwards."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def train_teacher(
    setup: Setup, *, quiet: bool = True, **progress: Any
) -> tuple[DeepEnsemble, list[dict[str, Any]]]:
    """Train the deep ensemble of ``setup`` (see :func:`~ensemble_distill.teachers.train.
    train_deep_ensemble`; ``progress``: its ``progress_dir`` and ``progress_settings``); with
    ``teacher.members`` set, load the user's members from those files instead (no history)."""
    config, data = setup.config, setup.data
    with seeded(config.seed, setup.device):
        if config.teacher.members is not None:
            teacher = load_member_files(setup.teacher_spec, config, data.mean, data.std, data.task)
            return teacher.to(setup.device), []
        return train_from_config(
            setup.teacher_spec, data, config, setup.device, quiet=quiet, **progress
        )


def teacher_train_outputs(setup: Setup, teacher: DeepEnsemble) -> Tensor:
    """(N, members, outputs) teacher outputs on the clean distillation inputs (the training
    inputs, or ``setup.distill_inputs``): computed once and shared by every student that
    distils on them."""
    if teacher.num_members != setup.config.members:
        raise ConfigError(
            f"the saved teacher has {teacher.num_members} members but the config "
            f"says members={setup.config.members}; retrain the teacher or fix members"
        )
    x = setup.data.train.x if setup.distill_inputs is None else setup.distill_inputs
    return predict_outputs(teacher, x, setup.config.eval.batch_size, setup.device)


def teacher_output_size(teacher: DeepEnsemble, train: ArrayDataset) -> int:
    """The teacher's output size (classes, or 2 for regression), checked against the labels."""
    probe = train.x[:2].to(next(teacher.parameters()).device)
    out = probe_forward(teacher, probe, "the teacher")
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


def distill_student(
    setup: Setup,
    teacher: DeepEnsemble,
    name: str,
    train_outputs: Tensor,
    *,
    body: nn.Module | None = None,
    feature_dim: int | None = None,
    quiet: bool = True,
    progress_dir: Path | None = None,
    progress_settings: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Build and train the student of method ``name`` (``METHOD[+PERTURBATION]``).

    Args:
        train_outputs: :func:`teacher_train_outputs`.
        body: the user's body (copied, never changed) in place of ``setup.student_spec``.
        feature_dim: the body's feature size; default: found by one forward pass.
        progress_dir, progress_settings: per-epoch progress files to resume from.

    Returns:
        The trained student (on the setup's device) and its per-epoch history.
    """
    data = setup.data
    method, perturbation = resolve_method(name)
    with seeded(setup.config.seed, setup.device):
        base = None if body is None else base_from_body(body, setup, feature_dim)
        config = method_config(setup, name, base)  # ``auto`` sized against the user's body
        options = method.options(config)
        if perturbation is not None and setup.config.perturbation.pool == "auto":
            limit = f"{AUTO_POOL} copies would pass the pool limit"
            live = f"live (its inputs probe the student, or {limit})"
            copies = f"{config.perturbation.pool} copies" if config.perturbation.pool else live
            log.info("%s: perturbation.pool=auto: %s", name, copies)
        if base is None:
            student = method.build(setup.student_spec, config.members, options, data.mean, data.std)
        else:
            student = method.student(base, config.members, options)
        student.to(setup.device)
        # Before training, which restores a resumed run's weights over this start.
        start_student(method, student, teacher, setup.student_spec, options, config.student.init)
        context = DistillContext(
            data=data,
            teacher=teacher,
            teacher_train_outputs=train_outputs,
            config=config,
            device=setup.device,
            quiet=quiet,
            perturbation=perturbation,
            progress_dir=progress_dir,
            progress_settings=progress_settings or {},
            distill_inputs=setup.distill_inputs,
        )
        context.bind_student(student)  # for perturbations that probe it (``diverse``)
        history = method.train(student, context, options)
    return student, history


def base_from_body(body: nn.Module, setup: Setup, feature_dim: int | None) -> Classifier:
    """A private copy of the user's ``body`` with a linear head of the task's outputs."""
    body = copy.deepcopy(body).to(setup.device)
    if feature_dim is None:
        probe = setup.data.train.x[:2].to(setup.device)
        features = probe_forward(body.eval(), probe, "body")
        if not isinstance(features, Tensor) or features.dim() != 2:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features)
            raise ConfigError(
                f"body must map x to features (batch, F); got {shape}: end it with nn.Flatten()"
            )
        feature_dim = features.shape[1]
    body.train()
    head = nn.Linear(feature_dim, setup.student_spec.num_classes).to(setup.device)
    return Classifier(body, head, feature_dim)


def one_network(spec: ModelSpec) -> Classifier:
    """One network of ``spec`` on the meta device (:func:`build_on_meta`: nothing allocated,
    no random draws): what a method's ``auto`` options are sized against."""
    fix = "fix model / student.model_args"
    return build_on_meta(lambda: create_classifier(spec), f"a network of {spec.name!r}", fix)


def method_options(
    config: RunConfig, name: str, spec: ModelSpec, network: Classifier | None = None
) -> Any:
    """Method ``name``'s section of ``config`` with its ``auto`` values decided for its inputs
    and, for a method :attr:`~ensemble_distill.methods.base.DistillMethod.sized_by_network`,
    sized against ``network`` (by default :func:`one_network` of ``spec``)
    (:meth:`~ensemble_distill.methods.base.DistillMethod.resolve`)."""
    method, _ = resolve_method(name)
    if method.sized_by_network and network is None:
        network = one_network(spec)
    perturbed = bool(input_names(name))
    return method.resolve(method.options(config), perturbed, network, config.members)


def method_config(setup: Setup, name: str, network: Classifier | None = None) -> RunConfig:
    """``setup.config`` as method ``name`` trains with it: its section's ``auto`` values
    (sized against ``network``, by default one of ``setup.student_spec``) and
    ``perturbation.pool`` decided (:func:`method_options`,
    :func:`~ensemble_distill.methods.perturbations.pool_copies`)."""
    config, data = setup.config, setup.data
    method, _ = resolve_method(name)
    examples = len(data.train) if setup.distill_inputs is None else len(setup.distill_inputs)
    outputs = (config.members, setup.student_spec.num_classes)
    pool = pool_copies(config.perturbation, input_names(name), examples, data.input_shape, outputs)
    return dataclasses.replace(
        config,
        perturbation=dataclasses.replace(config.perturbation, pool=pool),
        **{method.section: method_options(config, name, setup.student_spec, network)},
    )


def student_manifest(setup: Setup, name: str) -> dict[str, Any]:
    """What :func:`load_student` needs to rebuild the student of method ``name``: the options
    it trained with (``auto`` values decided, :func:`method_config`)."""
    method, perturbation = resolve_method(name)
    config = method_config(setup, name)
    options = dataclasses.asdict(method.options(config))
    if perturbation is not None:
        options["perturbation"] = dataclasses.asdict(config.perturbation)
    manifest = {
        "kind": "student",
        "method": name,
        "model": setup.student_spec.to_dict(),
        "members": setup.config.members,
        "options": options,
        "dataset": setup.data.name,
        "task": setup.data.task,
    }
    if setup.data.class_names is not None:  # e.g. an image folder's class folders
        manifest["class_names"] = list(setup.data.class_names)
    if setup.data.task == "regression":  # the student predicts standardised targets
        manifest |= {"target_mean": setup.data.target_mean, "target_std": setup.data.target_std}
    return manifest


def save_student(directory: Path, student: nn.Module, manifest: dict[str, Any]) -> None:
    """Weights, then the manifest (written last: a student with a manifest is finished); a
    student with members records its disagreement scale s there too (1: never fitted)."""
    scale = disagreement_scale(student)
    if scale is not None:
        manifest = {**manifest, "disagreement_scale": scale}
    save_checkpoint(directory, student.state_dict(), manifest)


def saved_options(method: DistillMethod, saved: dict[str, Any]) -> Any:
    """The method's options as a student's manifest saved them. An option the manifest lacks
    was added after it was written: the student was built as ``BEFORE_THE_KEY`` says (e.g. an
    EnD² student without ``target`` is a ``members`` one), else as its default."""
    fields = {f.name for f in dataclasses.fields(method.options_type)}
    before = {
        name: BEFORE_THE_KEY[f"{method.section}.{name}"]
        for name in fields - set(saved)
        if f"{method.section}.{name}" in BEFORE_THE_KEY
    }
    return method.options_type(**{k: v for k, v in saved.items() if k in fields}, **before)


def load_student(
    directory: Path, device: torch.device | str = "cpu", trust_code: bool = False
) -> nn.Module:
    """Rebuild a saved student from its manifest and verified weights, in eval mode.

    ``trust_code``: build a model that the manifest names by import path (it runs that code;
    see :func:`ensemble_distill.models.require_trusted`). Registered models need no trust.
    """
    state, manifest = load_checkpoint(directory)
    if manifest.get("kind") != "student":
        raise CheckpointError(f"{directory} holds a {manifest.get('kind')!r}, not a student")
    try:
        method, _ = resolve_method(manifest["method"])
        options = saved_options(method, manifest["options"])
        spec = ModelSpec.from_dict(manifest["model"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{directory}/manifest.json lacks a valid {exc} entry") from None
    require_trusted(spec.name, f"{directory}/{MANIFEST}", trust_code)
    try:  # a ConfigError here names the model it cannot build: it passes as it is
        student = method.build(spec, int(manifest["members"]), options)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}/manifest.json lacks a valid {exc} entry") from None
    # A student saved before it had a disagreement scale loads with s = 1 (what it computed).
    expected = student.state_dict()
    state = default_scales(expected, state)
    check_shapes(expected, state, directory)
    student.load_state_dict(state)
    return student.to(device).eval()
