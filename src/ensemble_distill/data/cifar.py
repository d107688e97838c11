"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

The batches inside are Python 2 pickles. Unpickling can run arbitrary code, so the archive is
read in memory (never extracted) and every batch goes through :class:`BatchUnpickler`, which
rebuilds numpy arrays and nothing else.
"""

from __future__ import annotations

import io
import logging
import pickle
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

BASE_URL = "https://www.cs.toronto.edu/~kriz/"
# Published checksums of the archives (the CIFAR page; torchvision).
ARCHIVE_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}
SIDE = 32
PIXELS = 3 * SIDE * SIDE  # one row of b"data": 1024 red, then 1024 green, then 1024 blue bytes

# numpy's array-rebuilding function, taken from a live array so that the same object is found
# under both its numpy 1.x module (which the official pickles name) and its numpy 2.x module.
_reconstruct = np.empty(0).__reduce__()[0]
_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


@dataclass(frozen=True)
class CifarLayout:
    """Member names and keys of one archive.

    Attributes:
        label_key: the batch's label list (CIFAR-100: the 100 fine classes, not the 20 coarse).
    """

    name: str
    archive: str
    train_members: tuple[str, ...]
    test_member: str
    label_key: bytes
    num_classes: int


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        "cifar10",
        "cifar-10-python.tar.gz",
        tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        "cifar-10-batches-py/test_batch",
        b"labels",
        10,
    ),
    "cifar100": CifarLayout(
        "cifar100",
        "cifar-100-python.tar.gz",
        ("cifar-100-python/train",),
        "cifar-100-python/test",
        b"fine_labels",
        100,
    ),
}


def load_cifar_splits(
    name: str,
    data_dir: Path | None,
    download: bool,
    split_seed: int,
    val_fraction: float,
    *,
    ood: Callable[[], dict[str, ArrayDataset]],
) -> DataSplits:
    """Official train set split (stratified, seeded) into train / validation; official test set.

    Images are (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64.

    Args:
        ood: called once the dataset's own files are read; gives its OOD sets (the registry's
            :func:`~ensemble_distill.data.ood_test_sets`: SVHN's test set, omitted with a
            warning when ``test_32x32.mat`` is not found).
    """
    layout = LAYOUTS[name]
    archive = require(name, _md5s(layout), BASE_URL, data_dir, download) / layout.archive
    batches = read_batches(archive, layout, [*layout.train_members, layout.test_member])
    train = _concat([batches[m] for m in layout.train_members])
    rest, held = holdout_split(
        len(train), val_fraction, torch_permutations(split_seed), strata=train.y
    )
    return DataSplits(
        name=name,
        train=train.subset(rest),
        val=train.subset(held),
        test=batches[layout.test_member],
        num_classes=layout.num_classes,
        ood=ood(),
    )


def load_ood_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    """``{"cifar10": CIFAR-10 test set}`` (an OOD set of others), or ``{}`` when not found."""
    layout = LAYOUTS["cifar10"]
    folder = locate_ood(layout.name, _md5s(layout), BASE_URL, data_dir, download)
    if folder is None:
        return {}
    test = read_batches(folder / layout.archive, layout, [layout.test_member])
    return {layout.name: test[layout.test_member]}


def _md5s(layout: CifarLayout) -> dict[str, str]:
    return {layout.archive: ARCHIVE_MD5[layout.archive]}


def read_batches(archive: Path, layout: CifarLayout, members: list[str]) -> dict[str, ArrayDataset]:
    """Verify the archive's MD5, then parse the named batches (images (N, 3, 32, 32) in [0, 1])."""
    check_md5(archive, ARCHIVE_MD5[layout.archive])
    logger.info("loading %s", archive)
    raw = read_members(archive, set(members))
    datasets = {}
    for member in members:
        source = f"{archive}:{member}"
        datasets[member] = batch_dataset(unpickle_batch(raw[member], source), layout, source)
    return datasets


def read_members(archive: Path, names: set[str]) -> dict[str, bytes]:
    """The bytes of the named regular-file members, read in memory in one pass over the tar."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if member.name in names and member.isfile():
                    found[member.name] = tar.extractfile(member).read()
                    if len(found) == len(names):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{archive} is not a complete tar.gz archive ({e}); delete it and download it again"
        ) from e
    missing = sorted(names - found.keys())
    if missing:
        raise DataError(
            f"{archive} lacks {', '.join(missing)}; it is not the official archive: "
            "delete it and download it again"
        )
    return found


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch: numpy arrays, lists, dicts, numbers and strings only.

    A pickle calls whatever global it names; allowing only numpy's array rebuilding means a
    tampered file fails here instead of running its payload.
    """

    def __init__(self, data: bytes, source: str) -> None:
        # encoding="bytes": the batches are Python 2 pickles whose str keys (b"data") stay bytes.
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source} refers to {module}.{name}, which a CIFAR batch never does; "
                "refusing to unpickle it: use the official archive"
            ) from None


def unpickle_batch(data: bytes, source: str) -> dict:
    """One batch as a dict with bytes keys (b"data", b"labels" / b"fine_labels", ...)."""
    try:
        batch = BatchUnpickler(data, source).load()
    except DataError:
        raise
    except Exception as e:
        # A malformed pickle can fail in many ways (UnpicklingError, EOFError, ValueError, ...).
        raise DataError(
            f"{source} is not a valid CIFAR batch ({type(e).__name__}: {e}); "
            "delete the archive and download it again"
        ) from e
    if not isinstance(batch, dict):
        raise DataError(
            f"{source} holds a {type(batch).__name__}, not a dict; use the official archive"
        )
    return batch


def batch_dataset(batch: dict, layout: CifarLayout, source: str) -> ArrayDataset:
    """Images (N, 3, 32, 32) float32 in [0, 1] and labels (N,) int64 of one unpickled batch."""
    data = batch.get(b"data")
    if not _is_pixel_rows(data):
        raise DataError(
            f"{source}: b'data' must be an (N, {PIXELS}) uint8 array; the archive is corrupt: "
            "download it again"
        )
    y = _as_labels(batch.get(layout.label_key))
    if (
        y is None
        or y.shape != (len(data),)
        or y.min(initial=0) < 0
        or y.max(initial=0) >= layout.num_classes
    ):
        raise DataError(
            f"{source}: {layout.label_key!r} must hold {len(data)} labels in "
            f"[0, {layout.num_classes}); the archive is corrupt: download it again"
        )
    # Rows are channel-major (R plane, G plane, B plane, each row by row): a plain reshape.
    x = torch.from_numpy(data.reshape(-1, 3, SIDE, SIDE).astype(np.float32)).div_(255.0)
    return ArrayDataset(x, torch.from_numpy(y))


def _is_pixel_rows(data: object) -> bool:
    return (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == PIXELS
    )


def _as_labels(labels: object) -> np.ndarray | None:
    """A label list as (N,) int64, or None when it is not a list of integers."""
    try:
        return np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        return None


def _concat(parts: list[ArrayDataset]) -> ArrayDataset:
    return ArrayDataset(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
