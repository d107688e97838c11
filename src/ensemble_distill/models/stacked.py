"""Grouped layers: M members of a plain layer stack run as one computation on stacked weights.

``torch.func.vmap`` runs any architecture on stacked weights, but pays a fixed Python cost per
call that dominates small models (a 10-member digits MLP forward takes twice as long through
vmap as through the code below; ``benchmarks/performance.py``). Members built only from
``Sequential`` containers of the layers in :data:`LEAVES` (our MLP and CNN, and such user
models) instead run as:

- the first ``Linear`` or ``Conv2d`` on the shared input: one matmul / one convolution with
  the M members' output units side by side (M·O outputs);
- later ``Linear``: one batched matmul (``baddbmm``) over (M, B, I) activations;
- later ``Conv2d``: one grouped convolution (``groups = M``) over (B, M·C, H, W), the members'
  channels side by side; ``BatchNorm2d`` one batch norm over those M·C channels (each channel
  belongs to one member, so batch statistics are per member, as when run alone);
- element-wise layers and pooling: once over the whole stack.

Everything else (ResNets, user modules with their own ``forward``) goes through vmap.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.models.base import Classifier, Normalize
from ensemble_distill.models.cnn import AveragePool

# Layers applied to any layout unchanged (element-wise, or per channel on (N, C, H, W)).
ELEMENTWISE = (nn.ReLU, nn.Dropout, nn.Identity)
POOLING = (nn.MaxPool2d, nn.AdaptiveAvgPool2d, AveragePool)
LEAVES = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Flatten, Normalize, *ELEMENTWISE, *POOLING)

# Activation layouts: the shared input (B, ...); per member (M, B, ...); images with the
# members' channels side by side (B, M·C, H, W).
SHARED, MEMBERS, CHANNELS = "shared", "members", "channels"


def grouped_leaves(module: nn.Module) -> list[nn.Module] | None:
    """The layers ``module`` applies, in order, if it is a plain stack of :data:`LEAVES`
    (inside ``Classifier`` and ``nn.Sequential``); None if it needs vmap."""
    if type(module) is Classifier:
        body, head = grouped_leaves(module.body), grouped_leaves(module.head)
        return None if body is None or head is None else body + head
    if type(module) is nn.Sequential:
        leaves: list[nn.Module] = []
        for child in module:
            found = grouped_leaves(child)
            if found is None:
                return None
            leaves += found
        return leaves
    if type(module) is nn.Flatten and module.end_dim != -1:
        return None
    if type(module) is nn.Conv2d and (module.groups != 1 or module.padding_mode != "zeros"):
        return None
    if type(module) is nn.BatchNorm2d and module.momentum is None:  # cumulative averaging
        return None
    return [module] if type(module) in LEAVES else None


def grouped_forward(
    leaves: list[nn.Module],
    x: Tensor,
    members: int,
    *,
    per_member: bool,
    select: Callable[[Tensor], Tensor] = lambda t: t,
) -> Tensor:
    """Run ``leaves`` (whose parameters and buffers are stacked, (M, ...)) on ``x``.

    Args:
        x: (B, ...) shared by every member, or (M, B, ...) one batch per member when
            ``per_member``.
        select: applied to every stacked tensor first (e.g. ``t[i : i + 1]`` runs member i
            alone); ``members`` must match what it leaves.

    Returns:
        (M, B, K) outputs.

    Images stored channels-last (:func:`~ensemble_distill.models.base.channels_last`) keep
    that layout through the convolutions (oneDNN's faster kernels on CPU).
    """
    layout = MEMBERS if per_member else SHARED
    # Read off the input: with one channel, element-wise ops may hand on NCHW strides.
    nhwc = x.dim() >= 4 and x.stride(-3) == 1
    for leaf in leaves:
        x, layout = _apply(leaf, x, layout, members, select, nhwc)
    if layout == SHARED:  # a member without parameters: every member outputs the same
        return x.expand(members, *x.shape)
    return x if layout == MEMBERS else _channels_to_members(x, members)


def _apply(leaf, x, layout, members, select, nhwc):
    if isinstance(leaf, nn.Dropout) and leaf.training and layout == SHARED:
        # Each member draws its own mask, as M separate models (and vmap) do.
        return leaf(_to_members(x, layout, members)), MEMBERS
    if isinstance(leaf, ELEMENTWISE):
        return leaf(x), layout
    if isinstance(leaf, POOLING):
        if layout != MEMBERS:
            return leaf(x), layout
        return leaf(x.flatten(0, 1)).unflatten(0, (members, -1)), layout
    if isinstance(leaf, Normalize):
        mean, std = select(leaf.mean), select(leaf.std)  # (M, 1, C, ...)
        # One small comparison per call (a device sync on GPU) buys the single-GEMM first layer.
        if layout == SHARED and bool((mean == mean[:1]).all() and (std == std[:1]).all()):
            return (x - mean[0]) / std[0], layout  # the same data statistics in every member
        return (_to_members(x, layout, members) - mean) / std, MEMBERS
    if isinstance(leaf, nn.Flatten):
        if layout == CHANNELS:
            x, layout = _channels_to_members(x, members), MEMBERS
        return x.flatten(1 if layout == SHARED else 2), layout
    if isinstance(leaf, nn.Linear):
        return _linear(leaf, x, layout, members, select), MEMBERS
    if isinstance(leaf, nn.Conv2d):
        return _conv(leaf, x, layout, members, select, nhwc), CHANNELS
    return _batch_norm(leaf, _to_channels(x, layout, members), select), CHANNELS


def _linear(leaf: nn.Linear, x: Tensor, layout: str, members: int, select) -> Tensor:
    weight = select(leaf.weight)  # (M, O, I)
    bias = select(leaf.bias) if leaf.bias is not None else None
    if layout == SHARED:  # one GEMM: (B, I) @ (I, M·O)
        out = F.linear(x, weight.flatten(0, 1), None if bias is None else bias.flatten())
        return out.unflatten(1, (members, -1)).transpose(0, 1)
    if torch.jit.is_tracing():  # TorchScript cannot save a Python autograd.Function (export)
        return stacked_linear(_to_members(x, layout, members), weight, bias)
    return StackedLinear.apply(_to_members(x, layout, members), weight, bias)


def stacked_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """y_m = x_m W_mᵀ + b_m for every member m, x (M, B, I), W (M, O, I), b (M, O) → (M, B, O):
    the forward of :class:`StackedLinear`, without its backward."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


class StackedLinear(torch.autograd.Function):
    """y_m = x_m W_mᵀ + b_m for every member m: x (M, B, I), W (M, O, I), b (M, O) → (M, B, O).

    Autograd of ``baddbmm(b, x, Wᵀ)`` would produce the weight gradient as (xᵀ g)ᵀ, a
    transposed view that is then copied into W's layout; on CPU that copy took a third of a
    50-member MNIST MLP's training step. Here ∂L/∂W = gᵀ x is computed in W's layout directly.
    Under autocast the backward runs in the dtype of the incoming gradient and returns
    gradients in the dtypes of the inputs.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return stacked_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, weight.to(grad.dtype)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(grad.transpose(1, 2), x.to(grad.dtype)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(1).to(weight.dtype)
        return grad_x, grad_w, grad_b


def _conv(leaf: nn.Conv2d, x: Tensor, layout: str, members: int, select, nhwc: bool) -> Tensor:
    weight = select(leaf.weight).flatten(0, 1)  # (M·O, C, k, k)
    bias = select(leaf.bias).flatten() if leaf.bias is not None else None
    groups = 1 if layout == SHARED else members
    if layout == MEMBERS:
        x = _members_to_channels(x, nhwc)
    return F.conv2d(x, weight, bias, leaf.stride, leaf.padding, leaf.dilation, groups)


def _batch_norm(leaf: nn.BatchNorm2d, x: Tensor, select) -> Tensor:
    """One batch norm over the M·C channels; running statistics are updated in place
    through views of the stacked buffers."""
    training = leaf.training or leaf.running_mean is None
    if leaf.training and leaf.num_batches_tracked is not None:
        select(leaf.num_batches_tracked).add_(1)
    stats = [
        select(t).flatten() if t is not None else None
        for t in (leaf.running_mean, leaf.running_var)
    ]
    affine = [select(t).flatten() if t is not None else None for t in (leaf.weight, leaf.bias)]
    return F.batch_norm(x, *stats, *affine, training, leaf.momentum, leaf.eps)


def _to_members(x: Tensor, layout: str, members: int) -> Tensor:
    if layout == SHARED:
        return x.expand(members, *x.shape)
    return _channels_to_members(x, members) if layout == CHANNELS else x


def _to_channels(x: Tensor, layout: str, members: int) -> Tensor:
    if layout == SHARED:
        return x.repeat(1, members, 1, 1)
    return _members_to_channels(x) if layout == MEMBERS else x


def _members_to_channels(x: Tensor, nhwc: bool = False) -> Tensor:
    """(M, B, C, H, W) -> (B, M·C, H, W), stored channels-last with ``nhwc``."""
    if nhwc:
        members, batch, channels, height, width = x.shape
        grouped = x.permute(1, 3, 4, 0, 2).contiguous()  # (B, H, W, M, C) in memory order
        return grouped.view(batch, height, width, members * channels).permute(0, 3, 1, 2)
    return x.transpose(0, 1).flatten(1, 2)


def _channels_to_members(x: Tensor, members: int) -> Tensor:
    """(B, M·C, H, W) -> (M, B, C, H, W)."""
    return x.unflatten(1, (members, -1)).transpose(0, 1)
