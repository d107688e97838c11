"""BatchEnsemble (Wen, Tran & Ba, ICLR 2020) as the one-to-one student of Nam et al. 2021, and
its LatentBE weight averaging (Nam et al. 2022).

Every ``nn.Linear`` / ``nn.Conv2d`` of a network becomes a layer with one shared weight W and
per-member rank-one factors r_j (over inputs), s_j (over outputs) and a bias b_j:

    y_j = s_j ∘ (W (r_j ∘ x) + b_j),   i.e. member j's weight is W ∘ (s_j r_jᵀ).

Layout: inside a BatchEnsemble network the batch is tiled **member-major** — rows
[j·B, (j+1)·B) of a (members·B, ...) tensor belong to member j — and every BE layer handles
all members with one matmul / conv call. Layers without parameters and BatchNorm are shared
and simply see the tiled batch. :class:`BatchEnsemble` turns the network's (members·B, C)
logits into the project's (B, members, C) layout.

Typical use::

    student = BatchEnsemble.from_model(create_model(spec), members=4, init="normal")
    optimizer = SGD([{"params": shared_parameters(student), "weight_decay": 5e-4},
                     {"params": factor_parameters(student), "lr": ..., "weight_decay": 0.0}])
    plain = fold_latent_be(student)  # LatentBE: one network, W̄ = W ∘ (s̄ r̄ᵀ)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.base import channels_last
from ensemble_distill.models.disagreement import SCALE_BUFFER, scale_disagreement

FACTOR_INITS = ("normal", "ones")


def check_member_major(x: Tensor, members: int) -> None:
    """A ValueError unless x's rows split into ``members`` equal blocks."""
    if x.shape[0] % members != 0:
        raise ValueError(
            f"a BatchEnsemble batch of {x.shape[0]} rows is not a multiple of {members} "
            "members; tile the batch member-major to (members·B, ...)"
        )


def split_members(x: Tensor, members: int) -> Tensor:
    """(members·B, ...) member-major → (members, B, ...) (a view)."""
    check_member_major(x, members)
    return x.view(members, x.shape[0] // members, *x.shape[1:])


def tile_images(x: Tensor) -> Tensor:
    """(members, B, ...) → (members·B, ...) member-major, images (members, B, C, H, W) stored
    channels-last where x is: flattening copies an expanded x to NCHW strides, and a
    convolution on NCHW inputs keeps every later layer NCHW (max-pooling alone then takes 5x
    as long)."""
    flat = x.flatten(0, 1)
    if x.dim() == 5 and x.stride(2) == 1 and x.shape[-2:].numel() > 1:
        return channels_last(flat)
    return flat


class BatchEnsembleLayer(nn.Module):
    """Shared weight W (out, in, ...), factors r (members, in), s (members, out) and bias
    b (members, out) or None; subclasses define the forward pass and :meth:`fold`."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _setup(self, layer: nn.Linear | nn.Conv2d, members: int, init: str, std: float) -> None:
        """Take W from ``layer``, replicate its bias over members, initialise r and s."""
        if members < 1:
            raise ConfigError(f"BatchEnsemble needs at least 1 member, got {members}; fix members")
        self.members = members
        self.weight = layer.weight
        out_features, in_features = layer.weight.shape[:2]
        self.r = nn.Parameter(layer.weight.new_empty(members, in_features))
        self.s = nn.Parameter(layer.weight.new_empty(members, out_features))
        bias = None if layer.bias is None else layer.bias.detach().expand(members, -1).clone()
        self.bias = None if bias is None else nn.Parameter(bias)
        init_factors_(self, init, std)

    @torch.no_grad()
    def copy_from_(self, layer: nn.Linear | nn.Conv2d) -> None:
        """W ← ``layer``'s weight and every member's bias ← ``layer``'s bias, in place."""
        self.weight.copy_(layer.weight)
        if self.bias is not None and layer.bias is not None:
            self.bias.copy_(layer.bias.expand_as(self.bias))

    def scaled_weight(self, s: Tensor, r: Tensor) -> Tensor:
        """W ∘ (s rᵀ) for s (..., out) and r (..., in) with the same leading dims:
        (..., out, in, *kernel), [..., o, i, ...] = W[o, i, ...]·s[..., o]·r[..., i]."""
        kernel = (1,) * (self.weight.dim() - 2)
        s_view = s.reshape(*s.shape, 1, *kernel)
        r_view = r.reshape(*r.shape[:-1], 1, r.shape[-1], *kernel)
        return self.weight * s_view * r_view

    def folded_weight(self) -> Tensor:
        """LatentBE weight W̄ = W ∘ (s̄ r̄ᵀ), with r̄, s̄ the member means of the factors
        (W̄[o, i, ...] = W[o, i, ...]·s̄[o]·r̄[i])."""
        return self.scaled_weight(self.s.mean(0), self.r.mean(0))

    def folded_bias(self) -> Tensor | None:
        """LatentBE bias b̄ = s̄ ∘ mean_j(b_j), or None without a bias."""
        return None if self.bias is None else self.s.mean(0) * self.bias.mean(0)

    @torch.no_grad()
    def average_factors_(self) -> None:
        """Set every member's r, s and b to their member means, in place."""
        for param in (self.r, self.s, self.bias):
            if param is not None:
                param.copy_(param.mean(0, keepdim=True).expand_as(param))

    def fold(self) -> nn.Module:
        """The plain layer with weight :meth:`folded_weight` and bias :meth:`folded_bias`."""
        raise NotImplementedError


class BELinear(BatchEnsembleLayer):
    """BatchEnsemble ``nn.Linear``: y_j = s_j ∘ (W (r_j ∘ x) + b_j) for member j.

    W (out, in) is initialised like ``nn.Linear``, b like its bias (the same for every
    member), r (members, in) and s (members, out) by :func:`init_factors_`.
    Maps (members·B, ..., in) member-major → (members·B, ..., out) with one matmul by the
    shared W between the scalings by r and s: a fully connected layer's activations are small
    beside its weight, so this beats M matmuls by member weights W ∘ (s_j r_jᵀ), which
    :class:`BEConv2d` uses (docs/results/be_layers.md).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        members: int,
        bias: bool = True,
        *,
        init: str = "normal",
        std: float = 0.5,
    ) -> None:
        super().__init__()
        self._setup(nn.Linear(in_features, out_features, bias), members, init, std)

    @classmethod
    def from_linear(
        cls, layer: nn.Linear, members: int, init: str = "normal", std: float = 0.5
    ) -> BELinear:
        """A BE layer whose W and (replicated) bias are copies of ``layer``'s."""
        bias = layer.bias is not None
        be = cls(layer.in_features, layer.out_features, members, bias, init=init, std=std)
        be.to(layer.weight).copy_from_(layer)
        return be

    def forward(self, x: Tensor) -> Tensor:
        xs = split_members(x, self.members).reshape(self.members, -1, x.shape[-1])
        out = F.linear(xs * self.r.unsqueeze(1), self.weight)  # (members, rows, out)
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return (out * self.s.unsqueeze(1)).reshape(*x.shape[:-1], -1)

    def fold(self) -> nn.Linear:
        out_features, in_features = self.weight.shape
        layer = nn.Linear(in_features, out_features, self.bias is not None)
        return _load_folded(layer.to(self.weight), self)

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return (
            f"{in_features}, {out_features}, members={self.members}, bias={self.bias is not None}"
        )


class BEConv2d(BatchEnsembleLayer):
    """BatchEnsemble ``nn.Conv2d``: y_j = s_j ∘ (conv(r_j ∘ x, W) + b_j), r over input and
    s over output channels, computed as conv(x_j, W ∘ (s_j r_jᵀ)) + s_j ∘ b_j: one conv
    call per member on its rows with its own weight. Forming the M weights is weight-sized
    work; scaling the activations by r and s instead, as :class:`BELinear` does, costs three
    passes over a feature map and more in the backward pass: a training step of the
    project's convolutional BatchEnsembles took 1.6-3.4x as long (docs/results/be_layers.md).

    W (out, in, kh, kw) is initialised like ``nn.Conv2d``, b like its bias (the same for every
    member), r and s by :func:`init_factors_`. Only ungrouped, zero-padded convs.
    Maps (members·B, in, H, W) member-major → (members·B, out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        bias: bool = True,
        *,
        members: int,
        dilation: int | tuple[int, int] = 1,
        init: str = "normal",
        std: float = 0.5,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias
        )
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self._setup(conv, members, init, std)

    @classmethod
    def from_conv(
        cls, layer: nn.Conv2d, members: int, init: str = "normal", std: float = 0.5
    ) -> BEConv2d:
        """A BE layer whose W, geometry and (replicated) bias are copies of ``layer``'s."""
        if layer.groups != 1 or layer.padding_mode != "zeros":
            raise ConfigError(
                f"BatchEnsemble supports only ungrouped, zero-padded convs, got {layer}; "
                "use groups=1 and padding_mode='zeros' in the architecture"
            )
        be = cls(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.bias is not None,
            members=members,
            dilation=layer.dilation,
            init=init,
            std=std,
        )
        be.to(layer.weight).copy_from_(layer)
        return be

    def forward(self, x: Tensor) -> Tensor:
        weights = self.scaled_weight(self.s, self.r)  # (members, out, in, kh, kw)
        biases = [None] * self.members if self.bias is None else self.bias * self.s
        check_member_major(x, self.members)
        # Slices keep x's strides, where a view (split_members) gives one-channel images NCHW
        # strides and oneDNN then runs every later layer NCHW (be_layers.md: a training step
        # of the Fashion-MNIST CNN took 1.25x as long). Slices by a size, not chunk(), which
        # the ONNX export fixes to the traced batch size.
        size = x.shape[0] // self.members
        rows = [x[j * size : (j + 1) * size] for j in range(self.members)]
        return torch.cat(
            [
                F.conv2d(rows[j], weights[j], biases[j], self.stride, self.padding, self.dilation)
                for j in range(self.members)
            ]
        )

    def fold(self) -> nn.Conv2d:
        out_channels, in_channels, *kernel_size = self.weight.shape
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            tuple(kernel_size),
            self.stride,
            self.padding,
            self.dilation,
            bias=self.bias is not None,
        )
        return _load_folded(conv.to(self.weight), self)

    def extra_repr(self) -> str:
        out_channels, in_channels, *kernel_size = self.weight.shape
        return (
            f"{in_channels}, {out_channels}, kernel_size={tuple(kernel_size)}, "
            f"stride={self.stride}, padding={self.padding}, members={self.members}, "
            f"bias={self.bias is not None}"
        )


def _load_folded(layer: nn.Linear | nn.Conv2d, be: BatchEnsembleLayer) -> nn.Module:
    """Copy ``be``'s folded weight and bias into the plain ``layer``."""
    with torch.no_grad():
        layer.weight.copy_(be.folded_weight())
        bias = be.folded_bias()
        if bias is not None and layer.bias is not None:
            layer.bias.copy_(bias)
    return layer


def be_layers(module: nn.Module) -> list[BatchEnsembleLayer]:
    """Every BatchEnsemble layer in ``module`` (itself included)."""
    return [layer for layer in module.modules() if isinstance(layer, BatchEnsembleLayer)]


def check_factor_init(mode: str) -> None:
    """A ConfigError unless ``mode`` is one of :data:`FACTOR_INITS`."""
    if mode not in FACTOR_INITS:
        raise ConfigError(
            f"unknown BatchEnsemble factor init {mode!r}; use one of {', '.join(FACTOR_INITS)}"
        )


@torch.no_grad()
def init_factors_(module: nn.Module, mode: str, std: float = 0.5) -> nn.Module:
    """Initialise r and s of every BE layer in ``module``, in place.

    Args:
        mode: ``"normal"``: r, s ~ N(1, std²) (Nam et al. 2021 code); ``"ones"``: exactly 1
            (Nam et al. 2022 code, diversity then comes only from distillation).
        std: standard deviation for ``"normal"``.
    """
    check_factor_init(mode)
    for layer in be_layers(module):
        for factor in (layer.r, layer.s):
            if mode == "normal":
                factor.normal_(1.0, std)
            else:
                factor.fill_(1.0)
    return module


def _replace_layers(module: nn.Module, members: int, init: str, std: float) -> None:
    """Swap every nn.Linear / nn.Conv2d below ``module`` for its BE version, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, BELinear.from_linear(child, members, init, std))
        elif isinstance(child, nn.Conv2d):
            setattr(module, name, BEConv2d.from_conv(child, members, init, std))
        else:
            _replace_layers(child, members, init, std)


def to_batchensemble(
    model: nn.Module, members: int, init: str = "normal", std: float = 0.5
) -> nn.Module:
    """A deep copy of ``model`` with every nn.Linear / nn.Conv2d replaced by its BE version.

    Each BE layer's W is the original weight and each member's bias the original bias, so
    with r = s = 1 (``init="ones"``) every member computes exactly ``model``. Everything else
    (Normalize, BatchNorm — shared across members —, activations, pooling, dropout,
    parameter-free shortcuts) is copied unchanged and sees the (members·B, ...) tiled batch.
    """
    check_factor_init(init)  # before copying a large model
    network = copy.deepcopy(model)
    _replace_layers(network, members, init, std)
    return network


class BatchEnsemble(nn.Module):
    """A BatchEnsemble network evaluated for all members at once.

    Attributes:
        network: a network converted by :func:`to_batchensemble`; maps member-major
            (members·B, ...) inputs to (members·B, classes) logits.
        members: M.
        disagreement_scale: buffer s, shape (): :meth:`forward` scales the members' logits
            around their mean by it (:func:`scale_disagreement`); 1, no change, unless fitted
            after training (``be.disagreement_temperature``).
    """

    disagreement_scale: Tensor

    def __init__(self, network: nn.Module, members: int) -> None:
        super().__init__()
        layers = be_layers(network)
        if not layers or any(layer.members != members for layer in layers):
            raise ValueError(
                f"network must consist of BatchEnsemble layers with {members} members; "
                "convert it with to_batchensemble(model, members)"
            )
        self.network = network
        self.members = members
        self.register_buffer(SCALE_BUFFER, torch.ones(()))

    @classmethod
    def from_model(
        cls, model: nn.Module, members: int, init: str = "normal", std: float = 0.5
    ) -> BatchEnsemble:
        """``BatchEnsemble(to_batchensemble(model, members, init, std), members)``."""
        return cls(to_batchensemble(model, members, init, std), members)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, ...) → logits (B, members, classes); every member sees the same x, and the
        members' logits are scaled around their mean by s."""
        logits = self.forward_tiled(x.unsqueeze(0).expand(self.members, *x.shape))
        return scale_disagreement(logits, self.disagreement_scale)

    def forward_tiled(self, x: Tensor) -> Tensor:
        """Each member its own inputs: x (members, B, ...) with x[j] for member j →
        logits (B, members, classes), unscaled (s compares members on one input)."""
        if x.shape[0] != self.members:
            raise ValueError(
                f"forward_tiled expects inputs (members={self.members}, B, ...), got "
                f"{tuple(x.shape)}; use forward for inputs shared by all members"
            )
        logits = self.network(tile_images(x))
        return split_members(logits, self.members).transpose(0, 1)


def factor_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The rank-one factors r and s of every BE layer (own learning rate, no weight decay)."""
    return [factor for layer in be_layers(module) for factor in (layer.r, layer.s)]


def shared_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Every parameter of ``module`` that is not in :func:`factor_parameters` (W, biases,
    BatchNorm)."""
    factors = {id(factor) for factor in factor_parameters(module)}
    return [param for param in module.parameters() if id(param) not in factors]


@torch.no_grad()
def average_factors_(model: nn.Module) -> nn.Module:
    """Set r, s and b of every member to the member means, in every BE layer, in place."""
    for layer in be_layers(model):
        layer.average_factors_()
    return model


def _fold_layers(module: nn.Module) -> None:
    """Swap every BE layer below ``module`` for its folded plain layer, in place."""
    for name, child in module.named_children():
        if isinstance(child, BatchEnsembleLayer):
            setattr(module, name, child.fold())
        else:
            _fold_layers(child)


@torch.no_grad()
def fold_latent_be(model: BatchEnsemble) -> nn.Module:
    """LatentBE (Nam et al. 2022): one plain network from a trained BatchEnsemble.

    Every BE layer becomes nn.Linear / nn.Conv2d with W̄ = W ∘ (s̄ r̄ᵀ) and b̄ = s̄ ∘ mean_j b_j,
    where r̄, s̄ are the member means of the factors (not the mean of the products). Everything
    else (BatchNorm statistics included) is copied. Maps (B, ...) → (B, classes); equals every
    member of the model after :func:`average_factors_`.
    """
    network = copy.deepcopy(model.network)
    _fold_layers(network)
    return network


__all__ = [
    "FACTOR_INITS",
    "BEConv2d",
    "BELinear",
    "BatchEnsemble",
    "BatchEnsembleLayer",
    "average_factors_",
    "be_layers",
    "check_factor_init",
    "factor_parameters",
    "fold_latent_be",
    "init_factors_",
    "shared_parameters",
    "split_members",
    "to_batchensemble",
]
