"""Networks a user might bring by import path (``model=any_network_models:tiny_resnet``), for
the tests of Hydra and BatchEnsemble students on any network (tests/test_any_network.py,
tests/models/test_split.py). Importable because pytest puts tests/ on ``sys.path``.

Both map digits-sized images (B, 1, 8, 8) to logits (B, classes), as a factory's network must.
"""

from __future__ import annotations

from torch import Tensor, nn


class Block(nn.Module):
    """A torchvision-style basic block: x + bn(conv(relu(bn(conv(x))))), then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(out)))


class TinyResNet(nn.Module):
    """A stem conv, one residual block, global average pooling and an ``fc`` Linear: the shape
    of torchvision's ResNets, whose classifier is ``fc``. (B, C, H, W) → (B, classes)."""

    def __init__(self, in_chans: int = 1, width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = Block(width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.avgpool(x).flatten(1))


class TimmStyleResNet(TinyResNet):
    """:class:`TinyResNet` with timm's ``get_classifier()``: its classifier needs no name."""

    def get_classifier(self) -> nn.Module:
        return self.fc


def tiny_resnet(**kwargs) -> TinyResNet:
    return TinyResNet(**kwargs)


def timm_style_resnet(**kwargs) -> TimmStyleResNet:
    return TimmStyleResNet(**kwargs)


def mlp(inputs: int = 64, hidden: int = 16, classes: int = 10) -> nn.Sequential:
    """A plain ``nn.Sequential`` chain, (B, 1, 8, 8) → (B, classes); its classifier is ``3``."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
