"""Random shifts and flips of image batches: the standard CIFAR augmentation (He et al. 2016,
§4.2: pad 4 pixels, crop 32 × 32 at random, flip left-right with probability ½), used by
teachers while they train (``teacher.augment_shift``) and by the ``augment`` distillation
input (methods/perturbations.py); and :func:`in_layout_of`, which keeps every perturbed batch
in its input's memory layout.

Shapes: (batch, channels, height, width) in, the same out, in the input's memory layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def in_layout_of(x: Tensor, value: Tensor) -> Tensor:
    """``value``, detached, with exactly ``x``'s strides. Element-wise ops on a one-channel
    channels-last batch return NCHW strides (both layouts are "contiguous" there), and the
    convolutions on it would leave oneDNN's channels-last kernels (models.base.channels_last):
    the teachers' and the student's forward on perturbed inputs would be the slower ones."""
    if value.stride() == x.stride():
        return value.detach()
    return torch.empty_like(x, requires_grad=False).copy_(value.detach())


def shift_and_flip(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image shifted by its own (dy, dx) ~ U{−s, …, s}² with zero fill (s = ``max_shift``:
    a random crop of the image zero-padded by s) and, for 3-channel images, flipped left-right
    with probability ½, all drawn from ``generator``; detached, with ``x``'s strides."""
    batch, _, height, width = x.shape
    padded = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), generator=generator)
    rows = (offsets[0].view(-1, 1) + torch.arange(height)).to(x.device)  # (batch, height)
    cols = (offsets[1].view(-1, 1) + torch.arange(width)).to(x.device)  # (batch, width)
    index = torch.arange(batch, device=x.device).view(-1, 1, 1)
    views = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    views = views.permute(0, 3, 1, 2)  # (batch, channels, height, width)
    if x.shape[1] == 3:
        flip = (torch.rand(batch, generator=generator) < 0.5).to(x.device)
        views = torch.where(flip.view(-1, 1, 1, 1), views.flip(-1), views)
    return in_layout_of(x, views)
