"""Shifted copies of an image test split: the common corruptions of CIFAR-10-C.

Hendrycks & Dietterich (ICLR 2019), "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations", define 15 corruptions (noise, blur, weather, digital) plus 4
held-out ones, each at severities 1 … 5; Ovadia et al. (NeurIPS 2019), "Can you trust your
model's uncertainty?", evaluate calibration and uncertainty on them. The functions are those of
the ``imagecorruptions`` module (Michaelis et al. 2019), installed by the
``imagecorruptions-imaug`` distribution (``pip install ensemble-distill[shift]``): the original
``imagecorruptions`` 1.1.2 no longer imports (it needs ``pkg_resources`` and scikit-image's
removed ``multichannel`` argument).

Small images. The package's :func:`imagecorruptions.corrupt` refuses images under 32 × 32
pixels (its functions were tuned for ImageNet-C's 224 × 224); every function runs on smaller
ones, so :func:`corrupt_image` calls them directly (``corruption_dict[name]``), after the same
conversion ``corrupt`` does: a grey image is stacked to 3 identical channels, and the result is
cast with ``np.uint8`` as ``corrupt`` casts it. On 32 × 32 RGB images the output is exactly
``corrupt``'s. A grey image's result is brought back to one channel by keeping its first (red)
channel: the colour-free corruptions leave the three channels equal, and the noises, drawn per
channel, keep their per-pixel strength (a channel mean would shrink their standard deviation by
up to √3).

Seeding. Most functions draw from numpy's global random state; ``impulse_noise`` and
``glass_blur`` draw from their own generators and take a ``seed`` argument. Image ``i`` of a
(corruption, severity) gets the seed :func:`image_seed` (run seed, corruption, severity, i):
the global state is seeded with it around the call and restored after, and it is passed as
``seed`` to the two that take one. The copies are hence deterministic, independent of batching
and call order, and leave the caller's random state untouched.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from ensemble_distill.errors import ConfigError

# ``imagecorruptions.get_corruption_names("all")``: the 15 common ones, then the 4 held out
# for validation (speckle_noise … saturate). Listed here so that a config is checked without
# the optional package; tests/data/test_corruptions.py checks the list against it.
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)
# Functions drawing from their own generator (scikit-image's, numba's), seeded by argument.
SEEDED_BY_ARGUMENT = frozenset({"impulse_noise", "glass_blur"})
INSTALL = "pip install ensemble-distill[shift]"
MISSING = (
    "eval.corruptions needs the imagecorruptions module (distribution imagecorruptions-imaug), "
    "which does not import ({}); run `" + INSTALL + "` or set eval.corruptions to []"
)


def load_package() -> ModuleType:
    """The ``imagecorruptions`` module; a ConfigError naming the install when it is missing."""
    try:
        import imagecorruptions
    except ImportError as exc:
        raise ConfigError(MISSING.format(exc)) from None
    return imagecorruptions


def corruptions_problem(names: list[str]) -> str | None:
    """What is wrong with ``eval.corruptions`` (unknown or repeated names), or None."""
    unknown = [name for name in names if name not in CORRUPTIONS]
    if unknown:
        return f"names unknown corruptions {unknown}; known: {', '.join(CORRUPTIONS)}"
    if len(set(names)) != len(names):
        return "must list each corruption once"
    return None


def shift_data_problem(input_shape: tuple[int, ...], task: str) -> str | None:
    """Why a dataset cannot be corrupted (not classification, not (C, H, W) images with 1 or
    3 channels), or None."""
    if task != "classification":
        return f"needs a classification dataset, this one is {task}"
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        return f"needs images shaped (1 or 3 channels, H, W), this dataset's are {input_shape}"
    return None


def image_seed(run_seed: int, name: str, severity: int, index: int) -> int:
    """The numpy seed (< 2**32) of image ``index``'s copy under ``name`` at ``severity``."""
    key = [run_seed, zlib.crc32(name.encode()), severity, index]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


@contextmanager
def seeded_global_state(seed: int) -> Iterator[None]:
    """numpy's global random state seeded with ``seed`` inside, restored on exit."""
    # The package draws from the legacy global state: it is the state to seed.
    saved = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def corrupt_image(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """One image's corrupted copy.

    Args:
        image: (H, W, C) uint8, C = 1 (grey) or 3 (RGB).
        name: one of :data:`CORRUPTIONS`; severity: 1 … 5.
        seed: numpy seed, e.g. :func:`image_seed`.

    Returns:
        (H, W, C) uint8, the same shape.
    """
    from PIL import Image

    functions = load_package().corruption_dict
    grey = image.shape[-1] == 1
    rgb = np.repeat(image, 3, axis=-1) if grey else image
    extra = {"seed": seed} if name in SEEDED_BY_ARGUMENT else {}
    with seeded_global_state(seed):
        out = np.uint8(functions[name](Image.fromarray(rgb), severity, **extra))
    return out[..., :1] if grey else out


def to_uint8_images(x: Tensor) -> np.ndarray:
    """(B, C, H, W) floats in [0, 1] → (B, H, W, C) uint8 (rounded)."""
    scaled = (x.detach().float().cpu().clamp(0, 1) * 255).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8_images(images: np.ndarray) -> Tensor:
    """(B, H, W, C) uint8 → (B, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


def corrupt_batch(x: Tensor, name: str, severity: int, run_seed: int, start: int = 0) -> Tensor:
    """Corrupted copies of a batch of images.

    Args:
        x: (B, C, H, W) in [0, 1], C = 1 or 3; images ``start`` … ``start + B − 1`` of the split
            (their indices seed them, so any batching gives the same copies).
        name, severity: the corruption; run_seed: the run's ``seed``.

    Returns:
        (B, C, H, W) float32 in [0, 1], on the CPU.
    """
    images = to_uint8_images(x)
    out = np.stack(
        [
            corrupt_image(image, name, severity, image_seed(run_seed, name, severity, start + i))
            for i, image in enumerate(images)
        ]
    )
    return from_uint8_images(out)
