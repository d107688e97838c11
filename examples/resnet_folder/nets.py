"""ResNet-18 for small colour images: the factory of ``model=nets:resnet18``.

``resnet18(num_classes, width=64)`` is torchvision's ResNet-18 adapted to 32×32 inputs as is usual
for CIFAR-sized images: a 3×3 stride-1 stem and no max-pool (a 7×7 stride-2 stem and a
max-pool would leave 1×1 maps after ``layer4``). Its classifier is ``fc``: ``student.head=fc``.

Where torchvision cannot be imported (not installed, or PyPI's CUDA-built wheel beside a CPU
torch, whose import fails), and for ``width`` ≠ 64 (torchvision's basic blocks are 64 wide),
the network is :class:`ResNet18`, written below with torchvision's module names, shapes,
forward pass and initialisation: the two give the same ``state_dict`` keys and shapes, so a
run folder made with one is rebuilt by the other (``--trust-code``), and
:data:`BACKEND` says which one this process uses.
"""

from __future__ import annotations

from torch import Tensor, nn

try:  # torchvision's import raises RuntimeError where its C++ ops do not match torch's build
    import torchvision
except (ImportError, OSError, RuntimeError) as exc:
    torchvision = None
    BACKEND = f"built-in ResNet18 (torchvision not importable: {type(exc).__name__}: {exc})"
else:
    BACKEND = f"torchvision {torchvision.__version__}"


def resnet18(num_classes: int = 10, width: int = 64, in_chans: int = 3) -> nn.Module:
    """ResNet-18 with a 3×3 stride-1 stem and no max-pool, mapping (B, ``in_chans``, H, W)
    pixels in [0, 1] to (B, ``num_classes``) logits; channels ``width`` · (1, 2, 4, 8)."""
    if torchvision is None or width != 64:
        return ResNet18(num_classes, width, in_chans)
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's ``ResNet(BasicBlock, [2, 2, 2, 2])`` with the small-image stem."""

    def __init__(self, num_classes: int = 10, width: int = 64, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        widths = [width * 2**k for k in range(4)]
        inplanes = width
        for index, planes in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            layer = nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes))
            setattr(self, f"layer{index}", layer)
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[-1], num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
