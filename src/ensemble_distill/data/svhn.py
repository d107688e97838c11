"""SVHN cropped digits (format 2) from the official MATLAB files ``train_32x32.mat`` and
``test_32x32.mat`` (the ``extra`` set is not used)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ensemble_distill.data.base import (
    ArrayDataset,
    DataSplits,
    holdout_split,
    torch_permutations,
)
from ensemble_distill.data.download import check_md5, locate_ood, require
from ensemble_distill.errors import DataError

logger = logging.getLogger(__name__)

BASE_URL = "https://ufldl.stanford.edu/housenumbers/"
TRAIN_FILE = "train_32x32.mat"
TEST_FILE = "test_32x32.mat"
# Published checksums (torchvision's resource list).
MD5: dict[str, str] = {
    TRAIN_FILE: "e26dedcc434d2e4c54c9b2d4a06d8373",
    TEST_FILE: "eb5a983be6a315427106f1b164d9cef3",
}
SIDE = 32
NUM_CLASSES = 10


def load_svhn_splits(
    data_dir: Path | None,
    download: bool,
    split_seed: int,
    val_fraction: float,
    *,
    ood: Callable[[], dict[str, ArrayDataset]],
) -> DataSplits:
    """Official train set split (stratified, seeded) into train / validation; official test set.

    Images are (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64 (digit 0 is label 0).

    Args:
        ood: called once the dataset's own files are read; gives its OOD sets (the registry's
            :func:`~ensemble_distill.data.ood_test_sets`: CIFAR-10's test set, omitted with a
            warning when its archive is not found).
    """
    folder = require("svhn", MD5, BASE_URL, data_dir, download)
    train = read_mat(folder / TRAIN_FILE)
    rest, held = holdout_split(
        len(train), val_fraction, torch_permutations(split_seed), strata=train.y
    )
    return DataSplits(
        name="svhn",
        train=train.subset(rest),
        val=train.subset(held),
        test=read_mat(folder / TEST_FILE),
        num_classes=NUM_CLASSES,
        ood=ood(),
    )


def load_ood_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    """``{"svhn": SVHN test set}`` (an OOD set of others), or ``{}`` when not found."""
    folder = locate_ood("svhn", {TEST_FILE: MD5[TEST_FILE]}, BASE_URL, data_dir, download)
    return {"svhn": read_mat(folder / TEST_FILE)} if folder is not None else {}


def read_mat(path: Path) -> ArrayDataset:
    """Verify the file's MD5, then parse it (see :func:`parse_mat`)."""
    check_md5(path, MD5[path.name])
    logger.info("loading %s", path)
    return parse_mat(path)


def parse_mat(path: Path) -> ArrayDataset:
    """An SVHN ``.mat`` file -> images (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64.

    The file holds ``X``: (32, 32, 3, N) uint8 (row, column, channel, example) and ``y``:
    (N, 1) with labels 1..10, where 10 stands for the digit 0.
    """
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as e:
        # scipy reports damaged files as OSError, ValueError, IndexError, MatReadError, ...
        raise DataError(
            f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}); "
            "delete it and download it again"
        ) from e
    x, y = mat.get("X"), mat.get("y")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4):
        raise DataError(
            f"{path}: X must be a 4-d uint8 array; it is not an SVHN file in format 2 "
            "(cropped digits): download it again"
        )
    if x.shape[:3] != (SIDE, SIDE, 3):
        raise DataError(
            f"{path}: X has shape {x.shape}, expected (32, 32, 3, N); it is not an SVHN file in "
            "format 2 (cropped digits): download it again"
        )
    labels = _labels(y, x.shape[3], path)
    # order="C": a contiguous (N, C, H, W) copy, not a strided view of MATLAB's layout.
    images = x.transpose(3, 2, 0, 1).astype(np.float32, order="C")
    images = torch.from_numpy(images).div_(255.0)
    return ArrayDataset(images, labels)


def _labels(y: object, count: int, path: Path) -> torch.Tensor:
    """(N, 1) labels 1..10 -> (N,) int64 digits 0..9."""
    if not (
        isinstance(y, np.ndarray)
        and y.shape == (count, 1)
        and np.issubdtype(y.dtype, np.number)
        and np.all((y >= 1) & (y <= NUM_CLASSES) & (y == np.round(y)))
    ):
        raise DataError(
            f"{path}: y must be ({count}, 1) labels in 1..10 (one per image); the file is "
            "corrupt: download it again"
        )
    digits = y.reshape(-1).astype(np.int64)
    digits[digits == NUM_CLASSES] = 0  # SVHN labels the digit 0 as 10
    return torch.from_numpy(digits)
