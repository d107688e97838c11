"""Multi-layer perceptron on flattened inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn


def mlp_body(
    input_shape: Sequence[int], widths: Sequence[int] = (256, 256)
) -> tuple[nn.Module, int]:
    """Flatten → [Linear → ReLU] per width. Returns (body, feature_dim)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = math.prod(input_shape)
    for width in widths:
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        width_in = width
    return nn.Sequential(*layers), width_in
