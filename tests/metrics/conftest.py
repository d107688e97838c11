"""Shared random inputs for the metric tests."""

from collections.abc import Callable

import numpy as np
import pytest
import torch


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, in float64."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def make_probs(rng: np.random.Generator) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Factory: (probs, labels) with probs of ``shape`` (softmax of scaled Gaussian logits)."""

    def make(*shape: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
        probs = softmax(scale * rng.standard_normal(shape))
        labels = rng.integers(0, shape[-1], size=shape[0])
        return torch.from_numpy(probs), torch.from_numpy(labels)

    return make
