"""scikit-learn's bundled 8x8 digits (no download) and its OOD set of natural-image patches."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ensemble_distill.data.base import ArrayDataset, DataSplits, holdout_split, torch_permutations

TEST_FRACTION = 0.2
NUM_PATCHES = 500


def load_digits_splits(split_seed: int, val_fraction: float) -> DataSplits:
    """1797 digits, 10 classes; stratified test (20 %) and validation splits, seeded.

    OOD set ``patches``: natural-image patches at the digits' resolution (see
    :func:`natural_patches`).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(digits.target).long()
    full = ArrayDataset(x, y)
    rest, test = holdout_split(len(y), TEST_FRACTION, torch_permutations(split_seed), strata=y)
    train, val = holdout_split(
        len(rest), val_fraction, torch_permutations(split_seed + 1), strata=y[rest]
    )
    return DataSplits(
        name="digits",
        train=full.subset(rest[train]),
        val=full.subset(rest[val]),
        test=full.subset(test),
        num_classes=10,
        ood={
            "patches": ArrayDataset(
                natural_patches(NUM_PATCHES, seed=split_seed),
                torch.zeros(NUM_PATCHES, dtype=torch.long),
            )
        },
    )


def natural_patches(count: int, seed: int, size: int = 8, crop: int = 32) -> Tensor:
    """Grey-scale patches of scikit-learn's two bundled photographs, shaped like digits.

    Why this OOD set: it is real image data that ships with scikit-learn (so digits stays
    download-free), and it is clearly not a digit. Each ``crop``x``crop`` patch is
    area-averaged down to ``size``x``size`` and min-max scaled to [0, 1] like the digits'
    full 0..16 range, so a detector cannot succeed on brightness or contrast alone.

    Returns:
        (count, 1, size, size) float32 in [0, 1].
    """
    from sklearn.datasets import load_sample_images

    photos = [img.mean(axis=2) for img in load_sample_images().images]  # grey (H, W)
    rng = np.random.default_rng(seed)
    patches = np.empty((count, size, size))
    for i in range(count):
        photo = photos[i % len(photos)]
        top = rng.integers(0, photo.shape[0] - crop + 1)
        left = rng.integers(0, photo.shape[1] - crop + 1)
        block = photo[top : top + crop, left : left + crop]
        f = crop // size
        small = block.reshape(size, f, size, f).mean(axis=(1, 3))
        span = small.max() - small.min()
        patches[i] = (small - small.min()) / span if span > 0 else 0.0
    return torch.from_numpy(patches).float().unsqueeze(1)
