"""Building blocks every architecture shares: in-model normalisation and the body/head split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


class Normalize(nn.Module):
    """(x − mean) / std per channel, inside the model, so inputs stay in [0, 1] pixel space."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_dims: int) -> None:
        super().__init__()
        view = (1, len(mean)) + (1,) * (input_dims - 1)  # broadcast over (B, C, H, W) or (B, D)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(view))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(view))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``head(body(x))``: a body ending in a feature vector and a head producing logits.

    Students reuse ``body`` and replace ``head`` (Hydra puts M heads on one body).

    Attributes:
        body: (B, *input_shape) -> (B, feature_dim); starts with :class:`Normalize`.
        head: (B, feature_dim) -> (B, num_classes) logits.
    """

    def __init__(self, body: nn.Module, head: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture (the weights, incl. normalisation, live in
    the checkpoint). Serialisable to JSON with :meth:`to_dict`.

    Attributes:
        head: for a network from an import path, the attribute path of its final classifier
            (config key ``student.head``; :mod:`~ensemble_distill.models.split`), where a
            student puts its own heads; None: found by timm's ``get_classifier()``, or unused.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self) | {"input_shape": list(self.input_shape)}
        if self.head is None:  # manifests without a head read as before the key existed
            del data["head"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        head = data.get("head")
        if head is not None and not isinstance(head, str):
            raise ValueError("head")  # a tampered manifest: only an attribute path is read
        return cls(
            data["name"],
            tuple(data["input_shape"]),
            int(data["num_classes"]),
            dict(data.get("kwargs", {})),
            head,
        )


def channels_last(x: Tensor) -> Tensor:
    """Images (N, C, H, W) stored channels-last: strides (H·W·C, 1, W·C, C), also when C = 1.

    ``Tensor.contiguous(memory_format=torch.channels_last)`` returns a one-channel tensor
    unchanged (its NCHW strides are channels-last too), and then a convolution keeps the NCHW
    path; these explicit strides make oneDNN take its channels-last kernels, whose outputs stay
    channels-last through every later layer. Indexing and element-wise ops keep the strides,
    so a dataset converted once gives channels-last batches.
    """
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` contains a 2-D convolution (what channels-last speeds up)."""
    return any(isinstance(layer, nn.Conv2d) for layer in model.modules())
