"""A small CNN for 8x8 to 32x32 images, and the helpers every convolutional body shares."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ensemble_distill.errors import ConfigError


def image_channels(input_shape: Sequence[int], model: str) -> int:
    """Channels C of an image ``input_shape`` (C, H, W); a ConfigError for any other shape."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {model!r} needs an image input_shape (C, H, W), got {tuple(input_shape)}; "
            "use an image dataset or the 'mlp' model"
        )
    return int(input_shape[0])


def kaiming_init_(module: nn.Module) -> nn.Module:
    """He et al. 2015 normal init, N(0, 2 / (k·k·C_out)), for every conv in ``module``, in place.

    This is the ``fan_out`` form used by the reference code of the CIFAR ResNets (He et al. 2016)
    and Wide ResNets (Zagoruyko & Komodakis 2016); conv biases start at zero.
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


class AveragePool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that passes a map already of its output size through as it is:
    (B, C, H, W) → (B, C, *output_size). Averaging 1 × 1 windows is the identity, yet PyTorch
    still makes a pass over the map and another in the backward, about a tenth of a
    BatchEnsemble training step of the 7 × 7-pooled CNN of configs/diversity_fashion.yaml
    (28 × 28 images are 7 × 7 after its two stages)."""

    def forward(self, x: Tensor) -> Tensor:
        size = self.output_size
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        if all(s is None or s == d for s, d in zip(sizes, x.shape[-2:], strict=True)):
            return x
        return super().forward(x)


def conv_stage(width_in: int, width: int, batch_norm: bool) -> list[nn.Module]:
    """Conv3x3 → [BatchNorm] → ReLU → MaxPool2: (B, width_in, H, W) -> (B, width, ⌈H/2⌉, ⌈W/2⌉).

    ``ceil_mode`` keeps a 1x1 map at 1x1, so deep stacks still work on 8x8 inputs.
    """
    conv = nn.Conv2d(width_in, width, kernel_size=3, padding=1, bias=not batch_norm)
    norm: list[nn.Module] = [nn.BatchNorm2d(width)] if batch_norm else []
    return [conv, *norm, nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]


def cnn_body(
    input_shape: Sequence[int],
    channels: Sequence[int] = (32, 64),
    hidden: int | None = 128,
    batch_norm: bool = True,
    pool_size: int = 1,
) -> tuple[nn.Module, int]:
    """Small CNN: one :func:`conv_stage` per entry of ``channels``, average pooling to a
    ``pool_size`` x ``pool_size`` map, flatten, then an optional Linear(``hidden``) → ReLU.

    ``pool_size=1`` is global average pooling; a larger map keeps where features are (7 is the
    whole 7x7 map of a 28x28 image after two stages), which lets a small CNN fit its training
    set almost perfectly. Maps (B, C, H, W) -> (B, feature_dim) for any H, W (8x8 digits up to
    32x32 CIFAR); feature_dim is ``hidden``, or ``channels[-1]·pool_size²`` when ``hidden`` is
    None or 0.
    With the defaults a 28x28 image costs 7.7 MFLOPs forward (3.8M multiply-adds) and
    23 MFLOPs forward + backward.
    """
    width_in = image_channels(input_shape, "cnn")
    layers: list[nn.Module] = []
    for width in channels:
        layers += conv_stage(width_in, width, batch_norm)
        width_in = width
    layers += [AveragePool(pool_size), nn.Flatten()]
    width_in *= pool_size * pool_size
    if hidden:
        layers += [nn.Linear(width_in, hidden), nn.ReLU()]
        width_in = hidden
    return kaiming_init_(nn.Sequential(*layers)), width_in
