"""M classification heads evaluated as one batched computation (Hydra's heads).

The heads' weights are stacked, (members, in, out) per layer, and applied with ``einsum``:
one kernel per layer for all M heads, never a Python loop over M modules.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class StackedMLPHeads(nn.Module):
    """M MLP heads ``in → hidden... → classes`` with ReLU between layers.

    Each head is initialised like ``nn.Linear`` (Kaiming-uniform weights, uniform bias), but
    independently. ``forward`` maps features (batch, in) to logits (batch, members, classes).
    """

    def __init__(
        self, in_features: int, hidden: Sequence[int], num_classes: int, members: int
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden, num_classes]
        self.members = members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for width_in, width_out in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(width_in)  # nn.Linear's default init, per head
            self.weights.append(
                nn.Parameter(torch.empty(members, width_in, width_out).uniform_(-bound, bound))
            )
            self.biases.append(
                nn.Parameter(torch.empty(members, width_out).uniform_(-bound, bound))
            )

    def forward(self, features: Tensor, heads: slice = slice(None)) -> Tensor:
        """features: (batch, in) → logits (batch, members, classes) of the heads in ``heads``."""
        # Batched matmuls over the member axis, (members, batch, width) inside: the stacked
        # weights are used in their stored layout, never copied (einsum would permute them).
        h = torch.baddbmm(
            self.biases[0][heads].unsqueeze(1),
            features.expand(self._count(heads), *features.shape),
            self.weights[0][heads],
        )
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(bias[heads].unsqueeze(1), torch.relu(h), weight[heads])
        return h.transpose(0, 1)

    def _count(self, heads: slice) -> int:
        return len(range(*heads.indices(self.members)))

    @torch.no_grad()
    def copy_head(self, source: int = 0) -> None:
        """Make every head equal to head ``source`` (Hydra's phase 1 → phase 2 step)."""
        for param in [*self.weights, *self.biases]:
            param.copy_(param[source : source + 1].expand_as(param))

    def head(self, index: int) -> nn.Sequential:
        """Head ``index`` as plain ``nn.Linear`` layers (for checks and export)."""
        layers: list[nn.Module] = []
        for weight, bias in zip(self.weights, self.biases, strict=True):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[index].T)
                linear.bias.copy_(bias[index])
            layers += [linear, nn.ReLU()]
        return nn.Sequential(*layers[:-1])
