"""Run configuration: typed defaults, YAML files (``yaml.safe_load``) and ``key=value`` overrides.

Every key has a default here or in its method's section (``methods/kd.py: KDConfig``); a YAML
file or an override may only set known keys, with values of the declared type and range: the
sections validate themselves (:mod:`ensemble_distill.options`), so a :class:`Config` that exists
is valid, before any file is written. Nested keys use dots on the command line
(``kd.temperature=2``).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from ensemble_distill.data import DATASETS, check_dataset_args
from ensemble_distill.data.corruptions import SEVERITIES, corruptions_problem
from ensemble_distill.data.corruptions import load_package as load_corruptions_package
from ensemble_distill.data.distill import distill_data_problem
from ensemble_distill.data.identity import IDENTITY
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, resolve_method
from ensemble_distill.methods.perturbations import PerturbationConfig
from ensemble_distill.methods.student_init import student_init_problem
from ensemble_distill.models import is_factory, model_name_problem
from ensemble_distill.options import (
    INT64,
    InvalidValue,
    Section,
    at_least,
    positive,
    require,
    unit_interval,
)
from ensemble_distill.tensorboard_log import check_installed

# A key whose value a checkpoint written before it cannot be checked against: any value is
# accepted (its data files were not recorded then; they may or may not be today's).
UNRECORDED = object()
# What a checkpoint written before these keys existed was trained as, where that differs from
# today's default; any other missing key counts as its default (which is what the code did).
# Read when a run resumes (settings.same_setting) and when a saved student is rebuilt
# (engine.load_student): a student saved before ``endd.target`` is a ``members`` one.
BEFORE_THE_KEY = {
    "memory_format": "contiguous",
    "hydra.head_init": "copy",
    "endd.target": "members",
    "data_identity": UNRECORDED,
    "distill_data_identity": UNRECORDED,
}
# Keys the run writes itself: what its data files were (data/identity.py), recomputed from the
# files by every run (a value given is replaced) and part of the phases' fingerprints.
IDENTITY_KEYS = ("data_identity", "distill_data_identity")
# ``student.head``: attribute names joined by dots; digits are nn.Sequential indices.
ATTRIBUTE_PATH = re.compile(r"\w+(?:\.\w+)*", re.ASCII)
# Keys a checkpoint may still hold that the config has replaced: saved value -> the (key, value)
# in the same section that means the same.
RETIRED = {"hydra.copy_head": {True: ("head_init", "copy"), False: ("head_init", "independent")}}


@dataclass
class OptimConfig(Section):
    """Optimiser of every training phase (teacher members and students)."""

    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    # cosine: to 0 over training; onecycle: linear warm-up over warmup_fraction, then cosine
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_fraction: float = 0.1  # onecycle only

    def check(self) -> None:
        positive(self, "lr")
        at_least(self, 0.0, "weight_decay")
        unit_interval(self, "momentum")
        fraction = self.warmup_fraction
        require(0.0 <= fraction < 1.0, "warmup_fraction", "must lie in [0, 1)", fraction)


@dataclass
class TeacherConfig(Section):
    """How the deep ensemble's members are trained, or which files hold them."""

    # Train all members as one computation over stacked weights (true), one after
    # another (false), or auto: stacked for fully connected members, for convolutional layer
    # stacks while M x parameters <= 5e6 (on the CPU only while their convolutions have at
    # most 16 channels), for other networks (vmapped) only off the CPU, under the same bound,
    # where vmap can run them (teachers.train.should_vectorize).
    vectorize: Literal["auto", "true", "false"] = "auto"
    # Members you trained: a list of weight files (.safetensors, or .pt / .pth state dicts) or
    # one folder of them (sorted by name), each loaded into `model` + `model_args` instead of
    # training (teachers/files.py). null: train `members` members.
    members: list[str] | str | None = None
    # Written by the run: each file's SHA-256, recorded in config.yaml and checked when the
    # files are loaded again (a changed file is refused). Leave null to take the files as is.
    members_sha256: list[str] | None = None
    # Training augmentation of image inputs: each example shifted by up to this many pixels
    # (zero fill: a random crop of the image padded by it) and, for 3-channel images, flipped
    # left-right with probability 1/2; 4 is the CIFAR ResNets' (He et al. 2016). 0: none.
    augment_shift: int = 0

    def check(self) -> None:
        at_least(self, 0, "augment_shift")
        if isinstance(self.members, list):
            require(bool(self.members), "members", "must list at least one weight file", [])
        if self.members_sha256 is None:
            return
        require(
            isinstance(self.members, list) and len(self.members) == len(self.members_sha256),
            "members_sha256",
            "must give one SHA-256 per file of teacher.members (or be null)",
            self.members_sha256,
        )
        for index, digest in enumerate(self.members_sha256):
            well_formed = re.fullmatch("[0-9a-f]{64}", digest) is not None
            require(well_formed, f"members_sha256[{index}]", "must be 64 hex digits", digest)


@dataclass
class StudentConfig(Section):
    """The students' body and training budget; null means: as the teacher members'."""

    model: str | None = None
    model_args: dict | None = None
    # For a model from an import path: the attribute path of its final Linear classifier (fc,
    # classifier.1, head; 3 for an nn.Sequential's 4th layer), where Hydra puts its heads;
    # null: timm's get_classifier()
    head: str | int | None = None
    # Student epochs; null: epochs_multiple × the teacher's epochs. Distillation is patient:
    # on MNIST 6× reaches the ensemble's calibrated NLL, 1× one member's (docs/results/recipes.md).
    epochs: int | None = None
    epochs_multiple: float = 6.0
    lr: float | None = None  # in place of optim.lr (and weight_decay, schedule) for students
    weight_decay: float | None = None
    # null: optim.schedule; onecycle (warm-up, then cosine) is the recipe of the study above
    schedule: Literal["cosine", "constant", "onecycle"] | None = "onecycle"
    # Where the students' weights start: random (each architecture's own initialisation) |
    # member (the teacher's members' weights, methods/student_init.py) | a .safetensors file
    # of the student's state_dict (e.g. OUT/students/kd/model.safetensors)
    init: str = "random"

    def check(self) -> None:
        if self.model is not None:
            model_name(self.model)
        problem = student_init_problem(self.init)
        require(problem is None, "init", problem or "", self.init)
        if isinstance(self.head, int):  # YAML reads an nn.Sequential index as a number
            self.head = str(self.head)
        if self.head is not None:
            path = ATTRIBUTE_PATH.fullmatch(self.head) is not None
            require(path, "head", "must be an attribute path such as fc or classifier.1", self.head)
        if self.epochs is not None:
            at_least(self, 1, "epochs")
        positive(self, "epochs_multiple")
        if self.lr is not None:
            positive(self, "lr")
        if self.weight_decay is not None:
            at_least(self, 0.0, "weight_decay")


@dataclass
class EvalConfig(Section):
    batch_size: int = 1024
    latency_repeats: int = 20
    # Teacher-diversity analysis (Nam et al. 2021, Fig. 3) at these step sizes η, on this many
    # training inputs; an empty list skips it. Written to OUT/diversity.json.
    diversity_etas: list[float] = field(default_factory=list)
    diversity_examples: int = 2000
    # Dataset shift (Ovadia et al. 2019): every model on copies of the test split corrupted by
    # these CIFAR-10-C corruptions at these severities (data/corruptions.py, shift.py), written
    # to results.json's ``shift``; an empty list skips it. Needs ensemble-distill[shift].
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=lambda: list(SEVERITIES))

    def check(self) -> None:
        at_least(self, 1, "batch_size", "latency_repeats", "diversity_examples")
        for index, eta in enumerate(self.diversity_etas):
            require(eta >= 0, f"diversity_etas[{index}]", "must be >= 0", eta)
        problem = corruptions_problem(self.corruptions)
        require(problem is None, "corruptions", problem or "", self.corruptions)
        for index, severity in enumerate(self.severities):
            require(severity in SEVERITIES, f"severities[{index}]", "must be 1 … 5", severity)
        require(len(self.severities) > 0, "severities", "must list at least one", self.severities)
        once = len(set(self.severities)) == len(self.severities)
        require(once, "severities", "must list each severity once", self.severities)
        if self.corruptions:
            load_corruptions_package()


@dataclass
class RunConfig(Section):
    """The run's own keys; :data:`Config` adds one section per registered method."""

    dataset: str = "digits"
    dataset_args: dict = field(default_factory=dict)  # e.g. csv: {path: FILE.csv, target: y}
    # classification or regression; null = the dataset's own (set it to have it checked)
    task: Literal["classification", "regression"] | None = None
    data_dir: str | None = None  # folder with the data files (or DIR/<dataset>/)
    download: bool = False  # fetch missing files over HTTPS, checksums verified
    # Written by the run: what the dataset's files were (an image folder's images, a CSV
    # table), "N files, B bytes, sha256 HEX" (data/identity.py); recomputed every run, so a
    # changed folder refuses to reuse a trained phase. null for built-in datasets.
    data_identity: str | None = None
    # Unlabelled inputs of every student's distillation term (the label term keeps the
    # training batch): a registered dataset's training inputs, or a .npy / .npz file of inputs
    # shaped as the training inputs (data/distill.py). null: the training inputs.
    distill_data: str | None = None
    distill_data_identity: str | None = None  # written by the run: a distill_data file's, as above
    # The OOD set of the OOD metrics (data/ood.py): null, the dataset's own (its OOD partner's
    # test set, an image folder's DIR/ood/); none: no OOD metrics; a registered set's name
    # (mnist, fashion-mnist, cifar10, svhn) or a folder of images, converted to the run's input
    # shape (a conversion is logged and recorded in results.json's ood_set)
    ood: str | None = None
    # written by the run: an OOD folder's files, as above; in no phase's fingerprint (only
    # evaluation reads the OOD set, and it reruns every time)
    ood_identity: str | None = None
    val_fraction: float = 0.1
    split_seed: int = 0  # fixed train/validation split, independent of `seed`
    seed: int = 0
    device: str = "cpu"
    # bf16: training steps under bf16 autocast (weights and optimiser state stay fp32); auto:
    # bf16 where the hardware computes it natively (a CPU with AMX-BF16 or AVX512-BF16, a GPU
    # with bf16), else fp32. The resolved value is what config.yaml and the manifests record.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # auto: channels-last images for convolutional models (faster oneDNN kernels), else as is
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    compile: bool = False  # torch.compile each training step; falls back to eager with a warning
    # TensorBoard events of every phase under OUT/tb/<phase> (needs the tensorboard package)
    tensorboard: bool = False
    # architecture of each ensemble member: a registered name, or package.module:factory whose
    # factory(**model_args) builds the whole network (e.g. timm:create_model; Hydra students
    # cut it at student.head)
    model: str = "mlp"
    model_args: dict = field(default_factory=lambda: {"widths": [256, 256]})
    members: int = 5
    epochs: int = 40
    batch_size: int = 64
    # null = the task's defaults: kd, hydra, endd (classification); kd, hydra (regression)
    methods: list[str] | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def check(self) -> None:
        registered(DATASETS, "dataset", self.dataset)
        check_dataset_args(self.dataset, self.dataset_args)
        model_name(self.model)
        student_model = self.student.model or self.model
        require(
            self.student.head is None or is_factory(student_model),
            "student.head",
            f"names the classifier of a model from an import path; the student's model "
            f"{student_model!r} is registered and brings its own head: set it to null",
            self.student.head,
        )
        at_least(self, 1, "members", "epochs", "batch_size")
        for key in ("seed", "split_seed"):  # members are seeded seed·1000 + m: keep it in range
            value = getattr(self, key)
            require(0 <= value < 2**32, key, "must lie in [0, 2**32)", value)
        fraction = self.val_fraction
        require(0.0 < fraction < 1.0, "val_fraction", "must lie in (0, 1)", fraction)
        if self.student.epochs is None:  # student_epochs() must be a count of epochs
            multiple = self.student.epochs_multiple
            require(
                multiple * self.epochs < INT64,
                "student.epochs_multiple",
                f"times epochs ({self.epochs}) must stay below 2**63",
                multiple,
            )
        for index, name in enumerate(self.methods or []):
            try:
                resolve_method(name)
            except ConfigError as exc:
                raise InvalidValue(f"methods[{index}]", f"must be a method: {exc}", name) from None
        if self.methods is not None and len(set(self.methods)) != len(self.methods):
            raise InvalidValue("methods", "must list each name once", self.methods)
        check_device(self.device)
        if self.tensorboard:
            check_installed()
        if self.distill_data is not None:
            problem = distill_data_problem(self.distill_data, None)
            if problem is not None:
                raise InvalidValue("distill_data", problem, self.distill_data)
        for key in (*IDENTITY_KEYS, "ood_identity"):
            value = getattr(self, key)
            well_formed = value is None or IDENTITY.fullmatch(value) is not None
            form = "must be null or as a run records it (N files, B bytes, sha256 HEX)"
            require(well_formed, key, form, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def student_epochs(self) -> int:
        """``student.epochs``, else ``student.epochs_multiple`` × ``epochs`` (at least 1)."""
        if self.student.epochs is not None:
            return self.student.epochs
        return max(1, round(self.student.epochs_multiple * self.epochs))

    def student_optim(self) -> OptimConfig:
        """``optim`` with the student's own ``lr``, ``weight_decay`` and ``schedule`` where set."""
        keys = ("lr", "weight_decay", "schedule")
        own = {key: getattr(self.student, key) for key in keys}
        return dataclasses.replace(self.optim, **{k: v for k, v in own.items() if v is not None})


def registered(registry: Any, key: str, name: str) -> None:
    """``name`` must be in ``registry`` (datasets, models)."""
    if name not in registry:
        raise InvalidValue(key, f"must be one of {', '.join(registry.names())}", name)


def model_name(name: str) -> None:
    """Config key ``model`` (also ``student.model``): a registered model or an import path
    ``package.module:factory``; the import itself waits until the model is built."""
    problem = model_name_problem(name)
    if problem is not None:
        raise InvalidValue("model", problem, name)


def check_device(name: str) -> None:
    """``cpu``, or ``cuda[:N]`` where a GPU is visible."""
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InvalidValue("device", "must be cpu, cuda or cuda:N", name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu")


# One section per registered method (``kd``, ``hydra``, ...), of the type the method declares
# (``DistillMethod.options_type``): a new method brings its options with it.
Config = dataclasses.make_dataclass(
    "Config",
    [(m.section, m.options_type, field(default_factory=m.options_type)) for m in METHODS.values()],
    bases=(RunConfig,),
    namespace={
        "__doc__": "Everything a run needs, saved resolved as ``config.yaml`` beside its "
        "results: the run's keys (:class:`RunConfig`), then one section per method.",
        "__module__": __name__,
    },
)


# Keys the Python API's distill() / train_teacher() set themselves or that make no sense for
# in-memory data, with the reason given when a user passes one.
NOT_OPTIONS = {
    "dataset": "the data come from train_data",
    "dataset_args": "the data come from train_data",
    "data_dir": "the data come from train_data",
    "download": "the data come from train_data",
    "task": "the task follows the labels' dtype (int64: classification, float: regression)",
    "methods": "pass method=NAME",
    "student": "pass body=, model= and epochs= instead",
    "tensorboard": "the API writes no files; its returned history has each epoch's metrics",
    "data_identity": "the command line records it from the data files; in-memory data have none",
    "distill_data_identity": "the command line records it from the distill_data file",
    "ood": "pass ood_data= to evaluate()",
    "ood_identity": "the command line records it from an ood folder",
}


def model_args_of(model: str, model_args: dict[str, Any] | None) -> dict[str, Any]:
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


def config_from_options(
    values: dict[str, Any], options: dict[str, Any], section: str | None = None
) -> RunConfig:
    """The Python API's keyword arguments as a validated :data:`Config`: explicit ``values``,
    then ``options`` — keys of the method's ``section`` or top-level keys; unknown keys, and
    keys the API sets itself (:data:`NOT_OPTIONS`), raise a ConfigError naming the fix."""
    top = {f.name for f in dataclasses.fields(Config)}
    section_keys = (
        {f.name for f in dataclasses.fields(getattr(Config(), section))} if section else set()
    )
    data = dict(values)
    section_values: dict[str, Any] = {}
    for key, value in options.items():
        if key in section_keys:
            section_values[key] = value
        elif key in NOT_OPTIONS:
            raise ConfigError(f"{key!r} is not an option here: {NOT_OPTIONS[key]}")
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
            known = sorted(section_keys | (top - set(NOT_OPTIONS) - set(values)))
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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Any:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type-checked."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    return build_config(data)


def build_config(data: dict[str, Any]) -> Any:
    """A :data:`Config` from a nested mapping; unknown keys, wrong types and values out of
    range are refused with a :class:`ConfigError` naming the dotted key. A ``model`` given
    without ``model_args`` takes its own default arguments, not the ``mlp``'s widths."""
    if "model" in data and "model_args" not in data and isinstance(data["model"], str):
        data = data | model_args_of(data["model"], None)
    return _build(Config, data, prefix="")


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give --config the path of a YAML file")
    if not path.exists():
        raise ConfigError(f"config file {path} not found; check the path given to --config")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file; give --config a YAML file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}); give --config a YAML file saved as UTF-8"
        ) from None
    try:
        data = _load_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML ({_first_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. members=10)")
    try:
        value = _load_yaml(text)
    except _Refused as exc:
        raise ConfigError(f"override {key.strip()!r}: {exc}") from None
    except yaml.YAMLError:
        value = text  # a plain string such as a path with odd characters
    return key.strip(), _join_surrogate_pairs(value)


# YAML aliases may expand a document to at most this many values: enough for any config, far
# below what a "billion laughs" (aliases of aliases, exponential) would build.
MAX_YAML_VALUES = 10_000


class _Refused(yaml.YAMLError):
    """Well-formed YAML that a config must not hold: a repeated key, aliases that expand."""


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses repeated keys (YAML keeps the last one silently) and
    aliases that expand past :data:`MAX_YAML_VALUES` values or refer to themselves."""

    anchors_used = False  # set once an alias is read: only then is the expansion measured

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None and self.anchors_used:
            _expanded_size(node, {}, set())
        return node

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self.anchors_used = True
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if repeated:
                raise _Refused(
                    f"key {key!r} is given twice (again on line {key_node.start_mark.line + 1}); "
                    "keep one"
                )
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """The number of values ``node`` stands for once every alias is expanded (each shared node
    counted once per use, computed once): refused past :data:`MAX_YAML_VALUES`."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _Refused("an alias (*name) refers to a value that contains it; write it out")
    open_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    if size > MAX_YAML_VALUES:
        raise _Refused(
            f"its aliases (*name) expand to more than {MAX_YAML_VALUES} values; write the "
            "values out instead of repeating aliases of aliases"
        )
    sizes[id(node)] = size
    return size


def _load_yaml(text: str) -> Any:
    """``text`` parsed by :class:`_ConfigLoader`; nesting too deep to parse is refused."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader: builds no Python objects
    except RecursionError:
        raise _Refused("values nested too deeply to read; flatten them") from None


_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _join_surrogate_pairs(value: Any) -> Any:
    """``value`` with JSON-style escaped pairs (``"\\ud83d\\ude00"``, which YAML reads as two
    halves) joined into the one character they encode (😀); lone halves (undecodable bytes
    of a file name) are kept."""
    if isinstance(value, str):
        return _SURROGATE_PAIR.sub(
            lambda pair: pair.group().encode("utf-16-le", "surrogatepass").decode("utf-16-le"),
            value,
        )
    if isinstance(value, list):
        return [_join_surrogate_pairs(item) for item in value]
    if isinstance(value, dict):
        return {key: _join_surrogate_pairs(item) for key, item in value.items()}
    return value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
    node[leaf] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint} (known: {', '.join(names)})"
            )
    values = {}
    for name in names:
        if name not in data:
            continue
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(data[name], dict):
            values[name] = _build(kind, data[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = data[name]
    try:
        return cls(**values)
    except InvalidValue as exc:
        raise exc.under(prefix) from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
