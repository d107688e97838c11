"""Deep ensemble (Lakshminarayanan et al. 2017): M members of one architecture, stacked.

The members' weights are stacked along a leading member axis and evaluated as one batched
computation instead of M small ones: as grouped layers (:mod:`ensemble_distill.models.stacked`)
when the members are a plain layer stack, else with ``torch.func.vmap`` over
``functional_call`` (any architecture).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.stacked import grouped_forward, grouped_leaves


class DeepEnsemble(nn.Module):
    """M members with stacked weights; ``forward`` returns member logits (batch, members, classes).

    Attributes:
        stacked: a copy of the member architecture whose every parameter and buffer has an extra
            leading member axis (shape (M, ...)). It keeps the original names, so checkpoints
            read like a single model's; it is only ever called through ``vmap``.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a deep ensemble needs at least one member")
        params, buffers = stack_module_state(list(members))
        self.num_members = len(members)
        self.stacked = copy.deepcopy(members[0])
        for name, value in params.items():
            _set_tensor(self.stacked, name, nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            _set_tensor(self.stacked, name, value.clone())
        # The stateless skeleton functional_call runs; a plain list hides it from nn.Module so
        # .to(), .state_dict() and .parameters() see only the stacked weights.
        self._skeleton = [copy.deepcopy(members[0]).to("meta")]
        # The stacked copy's own layers, when they can run as grouped layers (else vmap).
        self._leaves = grouped_leaves(self.stacked)

    def train(self, mode: bool = True) -> DeepEnsemble:
        self._skeleton[0].train(mode)
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, ...) shared by all members → logits (batch, members, classes)."""
        if self._leaves is not None:
            return grouped_forward(self._leaves, x, self.num_members, per_member=False).transpose(
                0, 1
            )
        return self._vmapped(in_dims_x=None)(x).transpose(0, 1)

    def forward_members(self, x: Tensor) -> Tensor:
        """x: (members, batch, ...), one batch per member → logits (members, batch, classes)."""
        if self._leaves is not None:
            return grouped_forward(self._leaves, x, self.num_members, per_member=True)
        return self._vmapped(in_dims_x=0)(x)

    def forward_member(self, x: Tensor, index: int) -> Tensor:
        """Member ``index`` alone: x (batch, ...) → logits (batch, classes); differentiable."""
        if self._leaves is not None:
            one = slice(index, index + 1)
            return grouped_forward(self._leaves, x, 1, per_member=False, select=lambda t: t[one])[0]
        params = {name: value[index] for name, value in self.stacked.named_parameters()}
        buffers = {name: value[index] for name, value in self.stacked.named_buffers()}
        return functional_call(self._skeleton[0], (params, buffers), (x,))

    def member(self, index: int) -> nn.Module:
        """A plain module holding member ``index``'s weights (a copy)."""
        module = copy.deepcopy(self._skeleton[0]).to_empty(device=self._device())
        state = {name: value[index] for name, value in self.stacked.state_dict().items()}
        module.load_state_dict(state)
        return module.train(self.training)

    def _vmapped(self, in_dims_x: int | None):
        params = dict(self.stacked.named_parameters())
        buffers = dict(self.stacked.named_buffers())
        skeleton = self._skeleton[0]

        def call(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(skeleton, (p, b), (x,))

        # randomness="different": dropout masks differ between members, as in a real ensemble.
        batched = vmap(call, in_dims=(0, 0, in_dims_x), randomness="different")
        return lambda x: batched(params, buffers, x)

    def _device(self) -> torch.device:
        return next(self.stacked.parameters()).device


def _set_tensor(module: nn.Module, dotted: str, value: Tensor) -> None:
    """Replace the parameter or buffer at ``dotted`` (e.g. ``body.1.weight``) by ``value``."""
    *path, leaf = dotted.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if isinstance(value, nn.Parameter):
        owner._parameters[leaf] = value
    else:
        owner._buffers[leaf] = value


def check_same_architecture(reference: nn.Module, other: nn.Module, index: int) -> None:
    """Raise a ConfigError naming the first submodule, parameter or buffer where ``other``
    (member ``index``) differs from ``reference`` (member 0)."""
    fix = "every member must have one architecture (the same layers and sizes)"
    for (name_a, mod_a), (name_b, mod_b) in itertools.zip_longest(
        reference.named_modules(), other.named_modules(), fillvalue=(None, None)
    ):
        if name_a != name_b or type(mod_a) is not type(mod_b):
            what_a = f"{name_a or '(root)'}: {type(mod_a).__name__}" if mod_a else "nothing"
            what_b = f"{name_b or '(root)'}: {type(mod_b).__name__}" if mod_b else "nothing"
            raise ConfigError(
                f"member {index} differs from member 0 at module {what_b} "
                f"(member 0 has {what_a}); {fix}"
            )
    for kind, tensors_a, tensors_b in (
        ("parameter", reference.named_parameters(), other.named_parameters()),
        ("buffer", reference.named_buffers(), other.named_buffers()),
    ):
        for (name_a, a), (name_b, b) in itertools.zip_longest(
            tensors_a, tensors_b, fillvalue=(None, None)
        ):
            if name_a != name_b:
                raise ConfigError(
                    f"member {index} has {kind} {name_b!r} where member 0 has {name_a!r}; {fix}"
                )
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ConfigError(
                    f"member {index} differs from member 0 at {kind} {name_a!r}: "
                    f"{tuple(b.shape)} {b.dtype} vs {tuple(a.shape)} {a.dtype}; {fix}"
                )


def teacher_from_modules(modules: Sequence[nn.Module]) -> DeepEnsemble:
    """A :class:`DeepEnsemble` teacher from M trained modules of one architecture.

    Each module maps a batch x (batch, ...) to logits (batch, classes) (or, for regression, to
    (batch, 2) Gaussian outputs). The modules are copied (stacked along a member axis), never
    modified; the teacher is returned in eval mode.

    Raises:
        ConfigError: no modules, or two modules differ in a submodule, parameter or buffer (the
            message names the first difference).
    """
    modules = list(modules)
    if not modules:
        raise ConfigError("teacher_from_modules needs at least one module; got none")
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"member {index} is a {type(module).__name__}, not a torch.nn.Module; "
                "pass a list of modules"
            )
    for index, module in enumerate(modules[1:], start=1):
        check_same_architecture(modules[0], module, index)
    return DeepEnsemble(modules).eval()
