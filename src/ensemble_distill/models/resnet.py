"""CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016, §4.2).

Depth 6n + 2: a 3x3 conv with ``width`` filters, three stages of n basic blocks with
``width``, 2·``width``, 4·``width`` filters on 32², 16², 8² maps (for 32x32 inputs), global
average pooling. Shortcuts are option A (parameter-free identity; zero-padded channels and
stride-2 subsampling where the shape changes). With 10 classes ResNet-20 / 32 / 56 have
0.27M / 0.46M / 0.85M parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.cnn import image_channels, kaiming_init_


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: (B, C_in, H, W) -> (B, C_out, ⌈H/s⌉, ⌈W/s⌉), subsampling every s-th
    pixel and appending C_out − C_in zero channels (split between both ends, as in common
    CIFAR code)."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        before = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))


class BasicBlock(nn.Module):
    """ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)) (He et al. 2016, Fig. 2 left).

    Maps (B, C_in, H, W) -> (B, C_out, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, width_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        reshapes = stride != 1 or width_in != width
        self.shortcut = ZeroPadShortcut(width - width_in, stride) if reshapes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def cifar_resnet_body(
    input_shape: Sequence[int], depth: int, width: int = 16
) -> tuple[nn.Module, int]:
    """CIFAR ResNet-``depth`` (depth = 6n + 2): (B, C, H, W) -> (B, 4·``width``) features."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ConfigError(
            f"CIFAR ResNet depth {depth} is invalid; use depth = 6n + 2 (20, 32, 44, 56, 110)"
        )
    blocks_per_stage = (depth - 2) // 6
    layers: list[nn.Module] = [
        nn.Conv2d(image_channels(input_shape, f"resnet{depth}"), width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    width_in = width
    for stage in range(3):
        stage_width = width * 2**stage
        for index in range(blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(BasicBlock(width_in, stage_width, stride))
            width_in = stage_width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return kaiming_init_(nn.Sequential(*layers)), width_in


def resnet20_body(input_shape: Sequence[int], width: int = 16) -> tuple[nn.Module, int]:
    """ResNet-20 (n = 3), 0.27M parameters with a 10-class head."""
    return cifar_resnet_body(input_shape, depth=20, width=width)


def resnet32_body(input_shape: Sequence[int], width: int = 16) -> tuple[nn.Module, int]:
    """ResNet-32 (n = 5), 0.46M parameters with a 10-class head."""
    return cifar_resnet_body(input_shape, depth=32, width=width)


def resnet56_body(input_shape: Sequence[int], width: int = 16) -> tuple[nn.Module, int]:
    """ResNet-56 (n = 9), 0.85M parameters with a 10-class head."""
    return cifar_resnet_body(input_shape, depth=56, width=width)
