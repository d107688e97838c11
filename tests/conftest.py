"""Shared fixtures: tiny data and a tiny config so the suite runs in minutes on 2 cores."""

from __future__ import annotations

import pytest
import torch

from ensemble_distill.config import build_config
from ensemble_distill.data import ArrayDataset, DataSplits


def tiny_splits(num_classes: int = 3, n: int = 60, seed: int = 0) -> DataSplits:
    """Separable 1x4x4 'images': class c lights up pixel c, plus noise."""
    generator = torch.Generator().manual_seed(seed)

    def make(count: int) -> ArrayDataset:
        y = torch.arange(count) % num_classes
        x = 0.2 * torch.rand(count, 1, 4, 4, generator=generator)
        x.view(count, -1)[torch.arange(count), y] += 0.8
        return ArrayDataset(x, y)

    ood = ArrayDataset(
        torch.rand(20, 1, 4, 4, generator=generator), torch.zeros(20, dtype=torch.long)
    )
    return DataSplits("tiny", make(n), make(n // 3), make(n // 2), num_classes, {"noise": ood})


@pytest.fixture
def splits() -> DataSplits:
    return tiny_splits()


@pytest.fixture
def tiny_config():
    """A digits config small enough for seconds-long end-to-end runs."""
    return build_config(
        {
            "members": 3,
            "epochs": 2,
            "batch_size": 128,
            "model_args": {"widths": [16]},
            "eval": {"latency_repeats": 2},
        }
    )


IMAGE_CLASSES = {"zero": 0, "one": 1, "three": 3}  # class folder -> the digit it holds


def write_image_tree(root, per_class: int = 30, *, size: int = 12, ood: int = 10):
    """A class-per-folder image tree (dataset=imagefolder): real digits (scikit-learn's) as
    grey ``size`` x ``size`` PNGs, ``per_class`` per class, plus random noise images under
    ood/noise/ (found recursively). Returns ``root``."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for name, digit in IMAGE_CLASSES.items():
        for k, image in enumerate(digits.images[digits.target == digit][:per_class]):
            path = root / name / f"{k:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            grey = Image.fromarray((image * 255 / 16).astype(np.uint8), "L")
            grey.resize((size, size), Image.Resampling.NEAREST).save(path)
    rng = np.random.default_rng(0)
    for k in range(ood):
        path = root / "ood" / "noise" / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(path)
    return root


@pytest.fixture(scope="session")
def make_image_tree():
    """:func:`write_image_tree`, for tests in any folder."""
    return write_image_tree
