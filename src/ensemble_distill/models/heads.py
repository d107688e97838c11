"""M classification heads evaluated as one batched computation (Hydra's heads).

The heads' weights are stacked, (members, ...) per layer, and applied as batched matmuls or
grouped layers: one kernel per layer for all M heads, never a Python loop over M modules.
:class:`StackedMLPHeads` are MLPs on the body's feature vector; :class:`StackedLayerHeads` are
copies of a member architecture's last layers (Hydra's ``split``).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ensemble_distill.models.stacked import grouped_forward, grouped_leaves


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
        """features: (batch, in), shared by the heads, or (heads, batch, in), one per head in
        ``heads`` (from :class:`LowRankAdapters`) → logits (batch, members, classes)."""
        # Batched matmuls over the member axis, (members, batch, width) inside: the stacked
        # weights are used in their stored layout, never copied (einsum would permute them).
        if features.dim() == 2:
            features = features.expand(self._count(heads), *features.shape)
        h = torch.baddbmm(self.biases[0][heads].unsqueeze(1), features, self.weights[0][heads])
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(bias[heads].unsqueeze(1), torch.relu(h), weight[heads])
        return h.transpose(0, 1)

    def _count(self, heads: slice) -> int:
        return len(range(*heads.indices(self.members)))

    @torch.no_grad()
    def copy_head(self, source: int = 0) -> None:
        """Make every head equal to head ``source`` (Hydra's phase 1 → phase 2 step)."""
        copy_member_(self, source)

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


class LowRankAdapters(nn.Module):
    """Per-member low-rank residual adapters on shared features: capacity for the members'
    disagreement between linear heads and whole copied layers (issue 28).

    f_m = f + relu(f A_m) B_m, A_m (in, rank), B_m (rank, in): 2·in·rank weights per member.
    A is drawn like ``nn.Linear``'s weights, B starts at 0, so every member starts at the
    shared features and the adapters grow from there (the zero-initialised factor of LoRA,
    Hu et al. 2022). ``forward`` maps (batch, in) to (members, batch, in), the layout
    :class:`StackedMLPHeads` takes per member.
    """

    def __init__(self, in_features: int, rank: int, members: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.members = members
        self.down = nn.Parameter(torch.empty(members, in_features, rank).uniform_(-bound, bound))
        self.up = nn.Parameter(torch.zeros(members, rank, in_features))

    def forward(self, features: Tensor, heads: slice = slice(None)) -> Tensor:
        """features (batch, in) → per-member features (members in ``heads``, batch, in)."""
        down, up = self.down[heads], self.up[heads]
        shared = features.expand(len(down), *features.shape)
        return torch.baddbmm(shared, torch.relu(torch.bmm(shared, down)), up)


class StackedLayerHeads(nn.Module):
    """M heads that are copies of a plain layer stack (a member's last layers and its classifier),
    run as one computation with the grouped layers of :mod:`~ensemble_distill.models.stacked`.

    Hydra with ``split: k`` puts such heads on the body: the member architecture's last k weight
    layers become per-head, so k = all of them makes M full networks on a shared input.
    ``forward`` maps shared features (batch, ...) to outputs (batch, members, classes).

    Attributes:
        stacked: a copy of the head's layer stack whose every parameter and buffer has a leading
            member axis (M, ...), as in :class:`~ensemble_distill.teachers.DeepEnsemble`.
    """

    def __init__(self, tails: Sequence[nn.Module]) -> None:
        super().__init__()
        if not tails or grouped_leaves(tails[0]) is None:
            raise ValueError("stacked heads need a plain stack of grouped layers (models.stacked)")
        self.members = len(tails)
        self.stacked = copy.deepcopy(tails[0])
        member_modules = zip(*(tail.modules() for tail in tails), strict=True)
        for stacked, members in zip(self.stacked.modules(), member_modules, strict=True):
            for name, _ in list(stacked.named_parameters(recurse=False)):
                value = torch.stack([getattr(member, name).detach() for member in members])
                setattr(stacked, name, nn.Parameter(value))
            for name, _ in list(stacked.named_buffers(recurse=False)):
                stacked.register_buffer(name, torch.stack([getattr(m, name) for m in members]))
        self._leaves = grouped_leaves(self.stacked)

    def forward(self, features: Tensor, heads: slice = slice(None)) -> Tensor:
        """features: (batch, ...) → outputs (batch, members, classes) of the heads in ``heads``."""
        count = len(range(*heads.indices(self.members)))
        if count == self.members:  # no slicing: gradients land in the stacked layout directly
            outputs = grouped_forward(self._leaves, features, count, per_member=False)
        else:
            outputs = grouped_forward(
                self._leaves, features, count, per_member=False, select=lambda t: t[heads]
            )
        return outputs.transpose(0, 1)

    @torch.no_grad()
    def copy_head(self, source: int = 0) -> None:
        """Make every head equal to head ``source`` (Hydra's phase 1 → phase 2 step), batch-norm
        statistics included."""
        copy_member_(self, source)

    def head(self, index: int) -> nn.Module:
        """Head ``index`` as a plain module (a copy; for checks and export)."""
        module = copy.deepcopy(self.stacked)
        for name, value in module.state_dict().items():
            _replace(module, name, value[index].clone())
        return module


def _replace(module: nn.Module, dotted: str, value: Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer ``dotted`` of ``module``."""
    *path, leaf = dotted.split(".")
    owner = module.get_submodule(".".join(path))
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value)
    else:
        owner._buffers[leaf] = value


@torch.no_grad()
def copy_member_(heads: nn.Module, source: int = 0) -> None:
    """Copy member ``source`` of every stacked parameter and buffer of ``heads`` (each (M, ...))
    into all members."""
    for tensor in [*heads.parameters(), *heads.buffers()]:
        tensor.copy_(tensor[source : source + 1].expand_as(tensor))


@torch.no_grad()
def perturb_members_(heads: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Add N(0, (scale · s)²) noise to every member of every stacked parameter (M, ...) of
    ``heads``, s the standard deviation of that member's tensor, drawn per member and element.

    Relative noise keeps the perturbation the same size for every layer whatever its scale;
    buffers (batch-norm statistics) are left alone. Noise is drawn on the CPU from ``generator``
    so that it depends on the seed alone, not on the device or on the global random stream.
    """
    for param in heads.parameters():
        spread = param.detach().flatten(1).std(dim=1, correction=0)  # 0 for one element
        noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        shape = (-1,) + (1,) * (param.dim() - 1)
        param.add_(noise.to(param.device) * (scale * spread).view(shape))
