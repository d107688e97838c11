"""Deep ensemble (Lakshminarayanan et al. 2017): M members of one architecture, stacked.

The members' weights are stacked along a leading member axis and evaluated as one batched
computation instead of M small ones: as grouped layers (:mod:`ensemble_distill.models.stacked`)
when the members are a plain layer stack, else with ``torch.func.vmap`` over
``functional_call``. A network vmap cannot run (data-dependent control flow, ``.item()``, ...,
as a user's own module may hold) runs member by member on the same stacked weights.

Without gradients on the CPU (evaluation, the teacher's outputs for distillation) convolutional
members run one after another too: there a loop beats both the grouped convolutions and vmap
(docs/results/teacher_stacking.md, inference table).
"""

from __future__ import annotations

import copy
import itertools
import types
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
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
        # Set once vmap failed where one member at a time ran: from then on, member by member.
        self._looped = False
        # Inference: None lets :meth:`loops_inference` decide; True / False force it.
        self.loop_inference: bool | None = None
        self._convolutional = any(
            isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in members[0].modules()
        )

    def train(self, mode: bool = True) -> DeepEnsemble:
        self._skeleton[0].train(mode)
        return super().train(mode)

    def loops_inference(self, x: Tensor) -> bool:
        """Whether a call on ``x`` runs the members one after another instead of stacked:
        ``loop_inference`` when set, else without gradients on the CPU for a network with
        convolutions (where the loop is faster; with gradients the training rule,
        ``teacher.vectorize``, has already chosen how the members train)."""
        if self.loop_inference is not None:
            return self.loop_inference
        return self._convolutional and x.device.type == "cpu" and not torch.is_grad_enabled()

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, ...) shared by all members → logits (batch, members, classes)."""
        if self.loops_inference(x):
            return self._looped_forward(x, None).transpose(0, 1)
        if self._leaves is not None:
            return grouped_forward(self._leaves, x, self.num_members, per_member=False).transpose(
                0, 1
            )
        return self._each_member(x, in_dims_x=None).transpose(0, 1)

    def forward_members(self, x: Tensor) -> Tensor:
        """x: (members, batch, ...), one batch per member → logits (members, batch, classes)."""
        if self.loops_inference(x):
            return self._looped_forward(x, 0)
        if self._leaves is not None:
            return grouped_forward(self._leaves, x, self.num_members, per_member=True)
        return self._each_member(x, in_dims_x=0)

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

    def _each_member(self, x: Tensor, in_dims_x: int | None) -> Tensor:
        """(members, batch, outputs): vmapped, or member by member once vmap failed on a
        network that runs that way. An input no member can take fails in the loop too, and
        that error (the member's own) is raised."""
        if not self._looped:
            try:
                return self._vmapped(in_dims_x)(x)
            except Exception:  # vmap's refusal of the network, whatever it is: try the loop
                outputs = self._looped_forward(x, in_dims_x)
                self._looped = True
                return outputs
        return self._looped_forward(x, in_dims_x)

    def _looped_forward(self, x: Tensor, in_dims_x: int | None) -> Tensor:
        """Member by member through :meth:`forward_member`, stacked (members, batch, ...)."""
        return torch.stack(
            [
                self.forward_member(x if in_dims_x is None else x[index], index)
                for index in range(self.num_members)
            ]
        )

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


def can_stack(members: Sequence[nn.Module], x: Tensor) -> bool:
    """Whether vmap runs the members (a stacked copy of up to two, in training mode) on the
    inputs ``x``; the caller's random state and the members are left as they were."""
    ensemble = DeepEnsemble(list(members)[:2]).train()
    if ensemble._leaves is not None:
        return True
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        try:
            ensemble._vmapped(in_dims_x=None)(x)
        except Exception:  # vmap's refusal, whatever it is: the members then run one by one
            return False
    return True


def check_has_values(module: nn.Module, what: str) -> None:
    """Refuse ``module`` (named ``what`` in the message) when a parameter or buffer lives on
    the meta device: shapes without values (``torch.device("meta")``, an empty-weights
    initialisation), which torch would only report as a raw NotImplementedError later."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    if any(tensor.is_meta for tensor in tensors):
        raise ConfigError(
            f"{what} has weights on the meta device (shapes without values); load its weights "
            "first: module.to_empty(device='cpu'), then module.load_state_dict(state)"
        )


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


# What every nn.Module keeps in its __dict__ (weights, submodules, hooks, the train flag):
# anything else a module holds is a setting (LeakyReLU's slope, Dropout's p, a user's scale).
_MODULE_STATE = frozenset(vars(nn.Module())) | {"training"}


def check_same_settings(reference: nn.Module, other: nn.Module, index: int) -> None:
    """Raise a ConfigError naming the first submodule whose settings (attributes other than
    weights and buffers) differ from member 0's: a stacked teacher runs every member with
    member 0's, so a member with its own settings would be silently changed."""
    for (name, mod_a), (_, mod_b) in zip(
        reference.named_modules(), other.named_modules(), strict=True
    ):
        settings_a, settings_b = _settings(mod_a), _settings(mod_b)
        for key in sorted(settings_a.keys() | settings_b.keys()):
            value_a, value_b = settings_a.get(key, _MISSING), settings_b.get(key, _MISSING)
            if not _same(value_a, value_b):
                raise ConfigError(
                    f"member {index} differs from member 0 in the setting {key!r} of module "
                    f"{name or '(root)'} ({type(mod_b).__name__}): {_shown(value_b)} vs "
                    f"{_shown(value_a)}; a teacher runs every member with member 0's settings, "
                    "so give every member the same settings (only weights and buffers may differ)"
                )


_MISSING = object()


def _settings(module: nn.Module) -> dict[str, Any]:
    """The module's own attributes, less its machinery and any view of its weights (an LSTM
    keeps its parameters in a list too)."""
    return {
        key: value
        for key, value in vars(module).items()
        if key not in _MODULE_STATE and not _holds_weights(value)
    }


def _holds_weights(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(_holds_weights(item) for item in value)
    if isinstance(value, weakref.ref):
        return isinstance(value(), nn.Parameter)
    return isinstance(value, nn.Parameter)


def _same(a: Any, b: Any) -> bool:
    """Whether two setting values are equal (tensors and arrays by value, functions by their
    code and captured values, bound methods by their function)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, nn.Module):  # a module held outside _modules: its type is its setting
        return True
    if isinstance(a, types.MethodType):
        return a.__func__ is b.__func__
    if isinstance(a, types.FunctionType):
        cells_a, cells_b = a.__closure__ or (), b.__closure__ or ()
        return (
            a.__code__ == b.__code__
            and _same(a.__defaults__, b.__defaults__)
            and len(cells_a) == len(cells_b)
            and all(
                _same(x.cell_contents, y.cell_contents)
                for x, y in zip(cells_a, cells_b, strict=True)
            )
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # an object whose == is not a truth value: only itself is the same
        return a is b


def _shown(value: Any) -> str:
    return "nothing" if value is _MISSING else repr(value)[:80]


def teacher_from_modules(modules: Sequence[nn.Module], *, task: str | None = None) -> DeepEnsemble:
    """A :class:`DeepEnsemble` teacher from M trained modules of one architecture.

    Each module maps a batch x (batch, ...) to logits (batch, classes) (or, for regression, to
    (batch, 2) Gaussian outputs). The modules are copied (stacked along a member axis), never
    modified; the teacher is returned in eval mode.

    Args:
        task: ``"classification"`` or ``"regression"``, checked against the labels of the data
            it is used with; default: unknown (the labels' dtype decides, and float targets that
            are all 0 or 1 with two outputs, which look like class labels, are refused).

    Raises:
        ConfigError: no modules, modules without weights, or two modules that differ in a
            submodule, parameter, buffer or setting (the message names the first difference).
    """
    if task not in (None, "classification", "regression"):
        raise ConfigError(f"task must be 'classification', 'regression' or None; got {task!r}")
    modules = list(modules)
    if not modules:
        raise ConfigError("teacher_from_modules needs at least one module; got none")
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"member {index} is a {type(module).__name__}, not a torch.nn.Module; "
                "pass a list of modules"
            )
    if next(modules[0].parameters(), None) is None:
        raise ConfigError(
            f"the members ({type(modules[0]).__name__}) have no parameters; a teacher's "
            "members are trained networks with weights"
        )
    for index, module in enumerate(modules):
        check_has_values(module, f"member {index}")
    for index, module in enumerate(modules[1:], start=1):
        check_same_architecture(modules[0], module, index)
        check_same_settings(modules[0], module, index)
    teacher = DeepEnsemble(modules).eval()
    teacher.task = task
    return teacher
