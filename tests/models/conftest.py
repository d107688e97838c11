"""Shared helpers for the architecture tests: every registered model in a small, fast size."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ensemble_distill.models import ModelSpec

# Small widths so the whole folder runs in seconds; names not listed use their defaults.
SMALL_KWARGS: dict[str, dict[str, object]] = {
    "mlp": {"widths": (16,)},
    "cnn": {"channels": (4, 8), "hidden": 16},
    "resnet20": {"width": 4},
    "resnet32": {"width": 4},
    "resnet56": {"width": 4},
    "wrn28": {"widen": 1, "depth": 10},
}


@pytest.fixture
def small_spec() -> Callable[..., ModelSpec]:
    """``small_spec(name, input_shape, num_classes=10)``: a cheap :class:`ModelSpec`."""

    def make(name: str, input_shape: tuple[int, ...], num_classes: int = 10) -> ModelSpec:
        return ModelSpec(name, input_shape, num_classes, dict(SMALL_KWARGS.get(name, {})))

    return make
