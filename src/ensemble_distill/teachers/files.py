"""Members the user trained, read from weight files instead of trained (``teacher.members``).

Each file holds one member's weights: a ``.safetensors`` file, or a ``.pt`` / ``.pth`` state
dict read with ``torch.load(weights_only=True)`` (never an arbitrary pickle). The architecture
— and so every setting that is not a weight — comes from the run's ``model`` and
``model_args``; a file only brings weights and buffers, loaded strictly: a missing, extra or
differently shaped tensor is refused with its name, never filled in or skipped.

The run records each file's SHA-256 (``teacher.members_sha256``): the teacher's settings
fingerprint holds them, so a finished teacher made from other files is noticed, and a file that
changed since is refused when loaded again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import pickletools
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers.ensemble import DeepEnsemble, teacher_from_modules

if TYPE_CHECKING:
    from ensemble_distill.config import RunConfig

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
# Keys of a saved training checkpoint that hold the state dict (torch.save({"state_dict": ...})).
STATE_DICT_KEYS = ("state_dict", "model")
# What torch.load(weights_only=True) says of an object it refuses to build: "GLOBAL" and its
# name ("Unsupported global: GLOBAL a.B was not ...", "unsupported GLOBAL posix.system whose").
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# The pickle opcodes that name a global (a class or function the unpickler would import).
GLOBAL_OPCODES = ("GLOBAL", "INST", "STACK_GLOBAL")
SHOWN_KEYS = 3  # missing or unexpected keys named in an error; the rest are counted


def resolve_member_files(config: RunConfig) -> RunConfig:
    """``config`` with ``teacher.members`` as the list of files it names (a folder's weight
    files sorted by name), ``teacher.members_sha256`` their SHA-256 and ``members`` their
    count — what config.yaml and the teacher's fingerprint record. Hashes already recorded
    (a saved config.yaml) are kept: the files are checked against them when loaded.

    Raises:
        ConfigError: a file or folder is missing, a folder holds no weight files, or
            ``members`` was set (to another value than its default) to another count than the
            files'.
    """
    teacher = config.teacher
    if teacher.members_sha256 is not None:
        files = [str(Path(name).absolute()) for name in teacher.members]
        hashes = teacher.members_sha256
    else:
        paths = member_paths(teacher.members)
        files, hashes = [str(path) for path in paths], [sha256(path) for path in paths]
    check_distinct(files, hashes)
    default = next(f.default for f in dataclasses.fields(config) if f.name == "members")
    if config.members not in (len(files), default):
        raise ConfigError(
            f"members={config.members} but teacher.members gives {len(files)} weight files; "
            "leave members out (it follows the files) or give that many files"
        )
    teacher = dataclasses.replace(teacher, members=files, members_sha256=hashes)
    return dataclasses.replace(config, members=len(files), teacher=teacher)


def check_distinct(files: Sequence[str], hashes: Sequence[str]) -> None:
    """Refuse two members with the same bytes (one SHA-256): the same file named twice, or
    copies under other names. Copies are one member: their "ensemble" has no disagreement
    (mutual information 0) and its scores would count one network several times.

    Raises:
        ConfigError: naming the first two files with the same bytes.
    """
    first: dict[str, str] = {}
    for name, digest in zip(files, hashes, strict=True):
        if digest not in first:
            first[digest] = name
            continue
        same = f"files {first[digest]} and {name} hold the same bytes (SHA-256 {digest[:16]}…)"
        if first[digest] == name:
            same = f"names {name} twice"
        raise ConfigError(
            f"teacher.members {same}: copies of one member make no ensemble (they never "
            "disagree); give each member's own weight file"
        )


def member_paths(members: str | Sequence[str]) -> list[Path]:
    """The weight files ``teacher.members`` names (absolute): the listed files, or a folder's
    ``*.safetensors`` / ``*.pt`` / ``*.pth`` files sorted by name; each must be a file."""
    if isinstance(members, str):
        folder = Path(members)
        if not folder.is_dir():
            raise ConfigError(
                f"teacher.members: {folder} is not a folder; give a folder of weight files or a "
                "list of files ([a.safetensors, b.safetensors])"
            )
        paths = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        if not paths:
            raise ConfigError(
                f"teacher.members: folder {folder} holds no {' / '.join(WEIGHT_SUFFIXES)} "
                "files; save one file per member there"
            )
        return [path.absolute() for path in paths]
    paths = [Path(name) for name in members]
    for index, path in enumerate(paths):
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"teacher.members[{index}]: {path} {what}; give the path of a weight file "
                f"({' / '.join(WEIGHT_SUFFIXES)})"
            )
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ConfigError(
                f"teacher.members[{index}]: {path} is not a weight file; give "
                f"{' / '.join(WEIGHT_SUFFIXES)} files (save the model's state_dict())"
            )
    return [path.absolute() for path in paths]


def sha256(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in blocks (member files may be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_member_files(spec: ModelSpec, config: RunConfig, model: nn.Module) -> None:
    """Read every file of a resolved config (:func:`resolve_member_files`) and check that it
    fits ``model`` (``spec`` built on the meta device), so that a bad file is refused before
    the run writes anything."""
    expected = model.state_dict()
    files, hashes = config.teacher.members, config.teacher.members_sha256
    for path, digest in zip(map(Path, files), hashes, strict=True):
        check_fits(expected, read_state_dict(path, digest), path, spec)


def load_member_files(
    spec: ModelSpec, config: RunConfig, mean: Sequence[float], std: Sequence[float], task: str
) -> DeepEnsemble:
    """The teacher whose members are the files of a resolved config
    (:func:`resolve_member_files`): each file checked against its recorded SHA-256, loaded
    strictly into a fresh ``spec``, then stacked by :func:`teacher_from_modules` (which
    refuses members that differ in architecture or settings)."""
    files, hashes = config.teacher.members, config.teacher.members_sha256
    modules = []
    for path, digest in zip(map(Path, files), hashes, strict=True):
        module = create_model(spec, mean, std)
        state = read_state_dict(path, digest)
        check_fits(module.state_dict(), state, path, spec)
        module.load_state_dict(state, strict=True)
        modules.append(module)
    return teacher_from_modules(modules, task=task)


def read_state_dict(path: Path, expected_sha256: str) -> dict[str, Tensor]:
    """The state dict in ``path`` (safetensors, or a ``torch.load(weights_only=True)`` state
    dict, possibly under a ``state_dict`` / ``model`` key), from bytes whose SHA-256 is
    ``expected_sha256``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"teacher member file {path} cannot be read ({exc.strerror}); check the path"
        ) from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ConfigError(
            f"teacher member file {path} changed since this run recorded it (its SHA-256 is no "
            "longer teacher.members_sha256's); set teacher.members_sha256=null to use the file "
            "as it is now"
        )
    if path.suffix == ".safetensors":
        return _as_state_dict(_read_safetensors(path, data), path)
    return _as_state_dict(_unpickle(path, data), path)


def _read_safetensors(path: Path, data: bytes) -> dict[str, Tensor]:
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise ConfigError(
            f"teacher member file {path} is not a readable safetensors file ({exc}); save it "
            "with safetensors.torch.save_file(model.state_dict(), path)"
        ) from None


def _unpickle(path: Path, data: bytes) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, nothing run.
    torch's warnings (a pickle protocol it did not expect) are left out: the error says it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        objects = REFUSED_GLOBAL.findall(str(exc)) or pickled_globals(data)
        if not objects:  # not a pickle torch can read at all
            raise _unreadable(path, exc) from None
        raise ConfigError(
            f"teacher member file {path} holds Python objects ({', '.join(objects)[:120]}), "
            "refused (only tensors are read); save the weights only: "
            "torch.save(model.state_dict(), path), or a .safetensors file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def pickled_globals(data: bytes) -> list[str]:
    """The globals (``module.name``) that ``data``, read as a plain pickle stream by
    :mod:`pickletools` (which runs nothing), names: a ``pickle.dump`` of Python objects, which
    ``torch.load`` cannot even parse. [] when ``data`` is no whole pickle stream."""
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "STACK_GLOBAL":  # module and name: the last two strings pushed
                names.append(".".join(strings[-2:]))
            elif opcode.name in GLOBAL_OPCODES:
                names.append(str(arg).replace(" ", "."))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # arbitrary bytes: any failure to parse means "not a pickle"
        return []
    return list(dict.fromkeys(names))


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(
        f"teacher member file {path} is not a readable torch.save file ({type(exc).__name__}: "
        "damaged or another format); save it with torch.save(model.state_dict(), path)"
    )


def _as_state_dict(state: Any, path: Path) -> dict[str, Tensor]:
    """``state``, or the state dict under one of :data:`STATE_DICT_KEYS`, checked to map
    names to tensors."""
    if isinstance(state, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(
            f"teacher member file {path} holds a {type(state).__name__}, not a state dict (a "
            "mapping of parameter names to tensors); save model.state_dict()"
        )
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise ConfigError(
                f"teacher member file {path} is not a state dict: entry {str(name)[:60]!r} holds "
                f"a {type(value).__name__}, not a tensor; save model.state_dict()"
            )
    return dict(state)


def check_fits(
    expected: dict[str, Tensor], state: dict[str, Tensor], path: Path, spec: ModelSpec
) -> None:
    """Refuse a file's ``state`` that ``load_state_dict(strict=True)`` into a model with state
    ``expected`` would: name missing and unexpected keys (a few, and their count), else the
    first tensor of another shape."""
    architecture = f"model {spec.name!r} with model_args {spec.kwargs}"
    keys = key_mismatch(list(expected), list(state))
    if keys:
        raise ConfigError(
            f"teacher member file {path} does not fit {architecture}: {keys}; give the model "
            "and model_args the members were trained with"
        )
    shape = shape_mismatch(shapes(expected), shapes(state))
    if shape:
        raise ConfigError(
            f"teacher member file {path} does not fit {architecture}: {shape}; give the "
            "model_args the members were trained with"
        )
    check_values(expected, state, path)


def shapes(state: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape by name (what a strict load checks besides the names)."""
    return {key: tuple(tensor.shape) for key, tensor in state.items()}


def key_mismatch(expected: Sequence[str], found: Sequence[str]) -> str | None:
    """What a strict load of a state with keys ``found`` into one with keys ``expected`` would
    refuse: "2 missing keys ('a', 'b') and 1 unexpected keys ('c')" (a few named, all counted,
    with a hint when only a common prefix differs); None when the keys are the same."""
    found_keys, expected_keys = set(found), set(expected)
    missing = [key for key in expected if key not in found_keys]
    unexpected = sorted(key for key in found if key not in expected_keys)
    if not (missing or unexpected):
        return None
    parts = [
        f"{len(keys)} {what} ({_some(keys)})"
        for what, keys in (("missing keys", missing), ("unexpected keys", unexpected))
        if keys
    ]
    return " and ".join(parts) + _prefix_hint(list(found), list(expected))


def shape_mismatch(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> str | None:
    """The first tensor (same names assumed) whose shape in ``found`` (a file) is not the one
    in ``expected`` (the model), as "'w' has shape (3,) in the file but (4,) in the model";
    None when all fit."""
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            return (
                f"{key!r} has shape {tuple(found[key])} in the file but {tuple(shape)} in the model"
            )
    return None


def check_values(expected: dict[str, Tensor], state: dict[str, Tensor], path: Path) -> None:
    """Refuse integer tensors where the model has floating ones, and weights that are NaN or
    Inf: named with the file here, instead of as NaN probabilities ("a diverged run") once
    the teacher is evaluated."""
    for key, tensor in expected.items():
        value = state[key]
        if tensor.is_floating_point() and not value.is_floating_point():
            raise ConfigError(
                f"integer weights in {path} ({key!r} is {value.dtype}, the model's is "
                f"{tensor.dtype}); save the trained float weights, model.state_dict()"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ConfigError(
                f"weights not finite in file {path} ({key!r} holds NaN or Inf); give the "
                "weights of a member whose training did not diverge"
            )


def _some(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:SHOWN_KEYS])
    return shown + (", ..." if len(keys) > SHOWN_KEYS else "")


def _prefix_hint(found: list[str], expected: list[str]) -> str:
    """A hint when the file's keys are the model's under a common prefix (``module.`` of a
    DistributedDataParallel, ``_orig_mod.`` of torch.compile)."""
    prefix = next(iter(found), "").partition(".")[0] + "."
    if all(key.startswith(prefix) for key in found) and sorted(
        key.removeprefix(prefix) for key in found
    ) == sorted(expected):
        return f" (every key in the file starts with {prefix!r}: save the unwrapped model's)"
    return ""
