"""Wide ResNets WRN-d-k of Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016).

A 3x3 conv with 16 filters, three groups of n = (d − 4) / 6 pre-activation blocks with 16k,
32k, 64k filters (strides 1, 2, 2), then BN → ReLU → global average pooling. Shortcuts are
1x1 convs where the shape changes. WRN-28-10 has 36.5M parameters with 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.cnn import image_channels, kaiming_init_


class WideBlock(nn.Module):
    """Pre-activation block BN-ReLU-Conv3x3-BN-ReLU-Dropout-Conv3x3 (the paper's Fig. 1d).

    Maps (B, C_in, H, W) -> (B, C_out, ⌈H/stride⌉, ⌈W/stride⌉). Where the shape changes the
    shortcut is a strided 1x1 conv on the pre-activated input, as in the authors' code.
    """

    def __init__(self, width_in: int, width: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(width_in)
        self.conv1 = nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        reshapes = stride != 1 or width_in != width
        self.shortcut = (
            nn.Conv2d(width_in, width, 1, stride=stride, bias=False) if reshapes else None
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


def wrn_body(
    input_shape: Sequence[int], depth: int = 28, widen: int = 10, dropout: float = 0.0
) -> tuple[nn.Module, int]:
    """WRN-``depth``-``widen``: (B, C, H, W) -> (B, 64·``widen``) features.

    Args:
        depth: total depth d; (d − 4) must be a positive multiple of 6 (16, 22, 28, 40).
        widen: widening factor k.
        dropout: dropout rate between the two convs of each block (the paper uses 0.3 for
            some runs; 0 disables it).
    """
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ConfigError(
            f"WRN depth {depth} is invalid; use depth = 6n + 4 (16, 22, 28, 40) in model_args"
        )
    blocks_per_group = (depth - 4) // 6
    layers: list[nn.Module] = [
        nn.Conv2d(image_channels(input_shape, "wrn"), 16, 3, padding=1, bias=False)
    ]
    width_in = 16
    for group, stride in enumerate((1, 2, 2)):
        width = 16 * widen * 2**group
        for index in range(blocks_per_group):
            layers.append(WideBlock(width_in, width, stride if index == 0 else 1, dropout))
            width_in = width
    layers += [nn.BatchNorm2d(width_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return kaiming_init_(nn.Sequential(*layers)), width_in
