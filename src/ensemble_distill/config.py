"""Run configuration: typed defaults, YAML files (``yaml.safe_load``) and ``key=value`` overrides.

Every key has a default here; a YAML file or an override may only set known keys, with values
of the declared type. Nested keys use dots on the command line (``kd.temperature=2``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ensemble_distill.errors import ConfigError


@dataclass
class OptimConfig:
    """Optimiser of every training phase (teacher members and students)."""

    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine (to 0 over training) | constant


@dataclass
class TeacherConfig:
    """How the deep ensemble's members are trained."""

    # Train all members as one computation over stacked weights (true), one after
    # another (false), or auto: stacked for fully connected members, else while
    # M x parameters <= 5e6 (teachers.train.should_vectorize).
    vectorize: str = "auto"


@dataclass
class StudentConfig:
    """The student's body; null means: the same as the teacher members'."""

    model: str | None = None
    model_args: dict | None = None
    epochs: int | None = None


@dataclass
class KDConfig:
    """Hinton KD: L = (1−α)·CE(s, y) + α·T²·KL(p̄_T ‖ σ_T(s))."""

    alpha: float = 0.9
    temperature: float = 4.0


@dataclass
class HydraConfig:
    """Hydra (Tran et al. 2020): shared body, M heads, two phases.

    Phase 1 (the first ``phase1_fraction`` of the epochs) trains body + one head by KD on the
    ensemble mean; phase 2 copies that head into all M and trains head m on member m.
    """

    head_widths: list[int] = field(default_factory=lambda: [100, 100])  # hidden layers per head
    temperature: float = 1.0
    alpha: float = 1.0  # 1: distillation only; < 1 adds (1−α)·CE of the heads' mean on labels
    phase1_fraction: float = 0.5
    # Phase 2 starts with every head a copy of the phase-1 head (the paper); false keeps the
    # other heads at their independent random initialisation.
    copy_head: bool = True


@dataclass
class EnDConfig:
    """EnD² (Malinin et al. 2019): a Prior Network fitted to the members' probabilities."""

    smoothing: float = 1e-3  # member probabilities mixed with uniform: (1−ε)π + ε/C
    initial_temperature: float = 5.0  # annealed linearly to 1 ...
    anneal_fraction: float = 0.5  # ... over this share of the training steps


@dataclass
class BEConfig:
    """BatchEnsemble one-to-one students (Nam et al. 2021): member j learns from teacher j."""

    init: str = "normal"  # r, s ~ N(1, init_std) (2021 code) | ones (2022 code)
    init_std: float = 0.5
    factor_lr_scale: float = 1.0  # learning rate of r, s relative to optim.lr (no weight decay)
    alpha: float = 0.9
    temperature: float = 4.0


@dataclass
class LatentBEConfig:
    """LatentBE (Nam et al. 2022): BE trained with factors from 1 and its diversifying
    perturbation, then folded into one plain network (mean factors)."""

    init: str = "ones"
    init_std: float = 0.5
    factor_lr_scale: float = 1.0
    alpha: float = 1.0  # the 2022 recipe trains on the perturbed inputs only
    temperature: float = 1.0


@dataclass
class PerturbationConfig:
    """Input perturbations of ``METHOD+NAME`` methods (Nam et al. 2021, 2022): gaussian, ods,
    confods, diverse."""

    eta: float = 1 / 255  # step size in [0, 1] pixel units; ODS steps have L2 norm eta·sqrt(D)
    temperature: float = 1.0  # τ of the teacher probabilities that ODS diversifies


@dataclass
class EvalConfig:
    batch_size: int = 1024
    latency_repeats: int = 20
    # Teacher-diversity analysis (Nam et al. 2021, Fig. 3) at these step sizes η, on this many
    # training inputs; an empty list skips it. Written to OUT/diversity.json.
    diversity_etas: list[float] = field(default_factory=list)
    diversity_examples: int = 2000


@dataclass
class Config:
    """Everything a run needs; saved, resolved, as ``config.yaml`` beside its results."""

    dataset: str = "digits"
    dataset_args: dict = field(default_factory=dict)  # e.g. csv: {path: FILE.csv, target: y}
    # classification or regression; null = the dataset's own (set it to have it checked)
    task: str | None = None
    data_dir: str | None = None  # folder with the data files (or DIR/<dataset>/)
    download: bool = False  # fetch missing files over HTTPS, checksums verified
    val_fraction: float = 0.1
    split_seed: int = 0  # fixed train/validation split, independent of `seed`
    seed: int = 0
    device: str = "cpu"
    # fp32, or bf16: training steps under bf16 autocast (weights and optimiser state stay fp32)
    precision: str = "fp32"
    model: str = "mlp"  # architecture of each ensemble member
    model_args: dict = field(default_factory=lambda: {"widths": [256, 256]})
    members: int = 5
    epochs: int = 40
    batch_size: int = 64
    # null = the task's defaults: kd, hydra, endd (classification); kd, hydra (regression)
    methods: list[str] | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    hydra: HydraConfig = field(default_factory=HydraConfig)
    endd: EnDConfig = field(default_factory=EnDConfig)
    be: BEConfig = field(default_factory=BEConfig)
    latentbe: LatentBEConfig = field(default_factory=LatentBEConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides, type-checked."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_yaml(Path(path))
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(data, key, value)
    return build_config(data)


def build_config(data: dict[str, Any]) -> Config:
    """A :class:`Config` from a nested mapping; unknown keys and wrong types are refused."""
    return _build(Config, data, prefix="")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text())
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
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError:
        return key.strip(), text  # a plain string such as a path with odd characters


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
        if dataclasses.is_dataclass(kind):
            values[name] = _build(kind, data[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = _check_type(data[name], kind, f"{prefix}{name}")
    return cls(**values)


def _check_type(value: Any, kind: Any, key: str) -> Any:
    """Return ``value`` if it has type ``kind`` (ints accepted as floats), else raise."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        if len(options) == 1:  # X | None: X's own message names the bad item
            return _check_type(value, options[0], key)
        for option in options:
            try:
                return _check_type(value, option, key)
            except ConfigError:
                continue
        raise _type_error(key, value, kind)
    if kind is type(None):
        if value is None:
            return None
        raise _type_error(key, value, kind)
    if origin is list:
        (item_kind,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise _type_error(key, value, kind)
        return [_check_type(v, item_kind, f"{key}[{i}]") for i, v in enumerate(value)]
    if kind is dict:
        if isinstance(value, dict):
            return value
        raise _type_error(key, value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _is_float(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise _type_error(key, value, kind)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _type_error(key: str, value: Any, kind: Any) -> ConfigError:
    want = getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
    return ConfigError(
        f"config key {key!r} must be {want}, got {value!r} ({type(value).__name__}); fix the value"
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def dump_config(config: Config) -> str:
    """The resolved configuration as YAML (what ``config.yaml`` holds)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
