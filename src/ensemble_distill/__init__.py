"""Distil a deep ensemble into one compact network that keeps its uncertainty.

The Python API (:mod:`ensemble_distill.api`), importable from the package itself::

    from ensemble_distill import distill, evaluate, teacher_from_modules

    teacher = teacher_from_modules(my_models)
    student = distill(teacher, method="hydra", train_data=(x, y), body=my_body)
    print(evaluate(student, (x_test, y_test)))

The names are loaded on first use, so ``import ensemble_distill.config`` (and the command
line's start-up) does not pay for the whole package.

``ensemble_distill.methods`` is the function :func:`ensemble_distill.api.distill`, also after the
subpackage of the same name is imported; import from the subpackage by its full name, as
``from ensemble_distill.methods import METHODS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from ensemble_distill.api import (
        DataLike,
        DeepEnsemble,
        Teacher,
        evaluate,
        load_student,
        load_teacher,
        mean_probs,
        save_student,
        teacher_from_modules,
        train_teacher,
        uncertainty,
    )

__all__ = [
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


def distill(teacher: DeepEnsemble | Sequence[nn.Module], /, **kwargs: Any) -> nn.Module:
    """Distil ``teacher`` into one student: :func:`ensemble_distill.api.distill`, where every
    keyword argument is documented (``method``, ``train_data``, ``body``, ``epochs``, ...)."""
    from ensemble_distill.api import distill as run

    return run(teacher, **kwargs)


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("ensemble_distill.api"), name)
    raise AttributeError(f"module 'ensemble_distill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
