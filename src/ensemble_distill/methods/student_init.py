"""Where a student's weights start (``student.init``): ``random``, ``member`` or a weights file.

* ``random`` (the default): each architecture's own initialisation, as always.
* ``member``: the teacher's members' weights where the student has their shapes (each method
  says which, :meth:`~ensemble_distill.methods.base.DistillMethod.start_from_members`): a
  student that starts where the members are needs far fewer epochs to match them than one from
  random weights. Only for a student of the members' architecture (the same ``ModelSpec``).
* a ``.safetensors`` file: the student's ``state_dict()`` (e.g. a finished student's
  ``OUT/students/kd/model.safetensors``), loaded strictly: every name and shape must be the
  student's. Only safetensors, which holds tensors alone: the file is data, never code (a
  pickle could run any code when read).

The start is applied once, right after the student is built and before its training; a resumed
run then restores its trained weights over it (``resume.Progress``), so a run resumes as it
started.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.teachers.files import key_mismatch, shape_mismatch, shapes

if TYPE_CHECKING:
    from ensemble_distill.methods.base import DistillMethod
    from ensemble_distill.models import ModelSpec
    from ensemble_distill.teachers import DeepEnsemble

RANDOM, MEMBER = "random", "member"
SUFFIX = ".safetensors"
# What a refused member start should do instead (the architecture is not the members').
MEMBER_FIX = (
    "the student's architecture must be the members': leave student.model and "
    "student.model_args null, or set student.init=random"
)


def student_init_problem(value: Any) -> str | None:
    """Why ``value`` cannot be ``student.init`` (None when it can); the file itself is read
    when the run is prepared (:func:`file_shapes`), not here: a config is valid anywhere."""
    if value in (RANDOM, MEMBER):
        return None
    if not isinstance(value, str) or not value.endswith(SUFFIX):
        return (
            f"must be {RANDOM}, {MEMBER} or the path of a {SUFFIX} file of the student's "
            "weights (pickles such as .pt are refused: they can run code)"
        )
    return None


def is_weights_file(init: str) -> bool:
    """Whether ``student.init`` names a weights file (not ``random`` or ``member``)."""
    return init not in (RANDOM, MEMBER)


def file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """The names and shapes in the safetensors file ``path``, read from its header alone."""
    try:
        with safe_open(str(path), "pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 (not iterable)
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of the safetensors file ``path`` (on the CPU)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str | Path, exc: Exception) -> ConfigError:
    if not Path(path).is_file():
        what = "is a folder" if Path(path).is_dir() else "does not exist"
        return ConfigError(
            f"student.init: {path} {what}; give the path of the student's weights "
            f"({SUFFIX}), or set student.init=random"
        )
    return ConfigError(
        f"student.init: {path} is not a readable {SUFFIX} file ({exc}); save the student's "
        "weights with safetensors.torch.save_file(student.state_dict(), path)"
    )


def weights_mismatch(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> str | None:
    """What a strict load of tensors of shapes ``found`` into a module whose state has the
    shapes ``expected`` would refuse (the names first, then the first shape); None: it fits."""
    return key_mismatch(list(expected), list(found)) or shape_mismatch(expected, found)


def check_weights_file(path: str | Path, student: nn.Module, what: str) -> None:
    """Refuse, before any training, the file ``path`` when it does not fit ``student`` (built
    on any device, the meta device included: only names and shapes are compared); ``what``
    names the student in the one-line error."""
    problem = weights_mismatch(shapes(student.state_dict()), file_shapes(path))
    if problem:
        raise ConfigError(
            f"student.init file {path} does not fit {what}: {problem}; save that student's "
            "state_dict() (a finished one's is OUT/students/METHOD/model.safetensors), or set "
            "student.init=random"
        )


@torch.no_grad()
def load_weights_(module: nn.Module, state: Mapping[str, Tensor], source: str, fix: str) -> None:
    """``module.load_state_dict(state)`` checked first: a missing, extra or differently shaped
    tensor is one ConfigError naming ``source`` (where ``state`` came from) and ``fix``."""
    problem = weights_mismatch(shapes(module.state_dict()), shapes(state))
    if problem:
        raise ConfigError(f"{source} does not fit the student: {problem}; {fix}")
    module.load_state_dict(state, strict=True)


def load_member_(module: nn.Module, member: nn.Module, index: int) -> None:
    """``module`` ← teacher member ``index`` (``member``, a plain module), strictly."""
    source = f"student.init=member: teacher member {index}"
    load_weights_(module, member.state_dict(), source, MEMBER_FIX)


def start_student(
    method: DistillMethod,
    student: nn.Module,
    teacher: DeepEnsemble,
    spec: ModelSpec,
    options: Any,
    init: str,
) -> None:
    """Set the freshly built ``student`` of ``method`` (on ``spec``, with its ``options``) to
    where ``student.init`` = ``init`` says it starts; ``random`` leaves it untouched."""
    if init == RANDOM:
        return
    if init == MEMBER:
        method.start_from_members(student, teacher, spec, options)
        return
    check_weights_file(init, student, f"the student of method {method.section!r}")
    with torch.no_grad():
        student.load_state_dict(read_weights(init), strict=True)
