"""MNIST and Fashion-MNIST from the canonical idx ``.gz`` files.

Each is the OOD set of the other (declared in the dataset registry; only its two t10k files
are needed for that).
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ensemble_distill.data.base import (
    ArrayDataset,
    DataSplits,
    holdout_split,
    torch_permutations,
)
from ensemble_distill.data.download import (
    checksum_error,
    locate_ood,
    md5_of_bytes,
    require,
)
from ensemble_distill.errors import DataError

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, columns)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)
SIDE = 28
NUM_CLASSES = 10


@dataclass(frozen=True)
class Digests:
    """MD5s of one idx file.

    ``gz`` is the canonical download's; ``raw`` is the uncompressed idx bytes'. Either one
    matching is enough: redistributors recompress the files (Debian's ``dataset-fashion-mnist``
    does), which changes the ``.gz`` bytes but never the idx bytes inside.
    """

    gz: str
    raw: str


# gz: the published checksums (torchvision's resource lists; /work/shared/data/SOURCES.md).
# raw: md5sum of the gunzipped official files (MNIST's listed in SOURCES.md), recomputed here.
MNIST_DIGESTS: dict[str, Digests] = {
    TRAIN_IMAGES: Digests("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    TRAIN_LABELS: Digests("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    TEST_IMAGES: Digests("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    TEST_LABELS: Digests("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
# gz: the published checksums (torchvision; zalandoresearch/fashion-mnist README).
# raw: md5sum of the gunzipped files of Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1;
# the t10k files and train labels equal the gunzipped official downloads, and all four equal the
# uncompressed checksums published elsewhere (e.g. in several public loaders on GitHub).
FASHION_MNIST_DIGESTS: dict[str, Digests] = {
    TRAIN_IMAGES: Digests("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    TRAIN_LABELS: Digests("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    TEST_IMAGES: Digests("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    TEST_LABELS: Digests("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}


@dataclass(frozen=True)
class IdxSource:
    """Where one idx dataset comes from.

    Attributes:
        system_dirs: folders searched after ``data_dir`` (a distribution package's copy).
    """

    name: str
    base_url: str
    digests: Mapping[str, Digests]
    system_dirs: tuple[Path, ...] = ()


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource("mnist", "https://ossci-datasets.s3.amazonaws.com/mnist/", MNIST_DIGESTS),
    "fashion-mnist": IdxSource(
        "fashion-mnist",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        FASHION_MNIST_DIGESTS,
        # `apt-get install dataset-fashion-mnist` puts the four files here, canonical names.
        (Path("/usr/share/datasets/fashion-mnist"),),
    ),
}


def load_idx_splits(
    name: str,
    data_dir: Path | None,
    download: bool,
    split_seed: int,
    val_fraction: float,
    *,
    ood: Callable[[], dict[str, ArrayDataset]],
) -> DataSplits:
    """Official train set split (stratified, seeded) into train / validation; official test set.

    Images are (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64.

    Args:
        ood: called once the dataset's own files are read; gives its OOD sets (the registry's
            :func:`~ensemble_distill.data.ood_test_sets`: the other dataset's test images,
            omitted with a warning when its t10k files are not found).
    """
    source = SOURCES[name]
    files = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
    md5s = _download_md5s(source, files)
    folder = require(name, md5s, source.base_url, data_dir, download, extra=source.system_dirs)
    logger.info("loading %s from %s", name, folder)
    train = read_pair(folder, source, TRAIN_IMAGES, TRAIN_LABELS)
    rest, held = holdout_split(
        len(train), val_fraction, torch_permutations(split_seed), strata=train.y
    )
    return DataSplits(
        name=name,
        train=train.subset(rest),
        val=train.subset(held),
        test=read_pair(folder, source, TEST_IMAGES, TEST_LABELS),
        num_classes=NUM_CLASSES,
        ood=ood(),
    )


def load_ood_test(name: str, data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    """``{name: its test set}`` (an OOD set of others), or ``{}`` when its t10k files are not
    found."""
    source = SOURCES[name]
    files = _download_md5s(source, [TEST_IMAGES, TEST_LABELS])
    folder = locate_ood(name, files, source.base_url, data_dir, download, extra=source.system_dirs)
    if folder is None:
        return {}
    return {name: read_pair(folder, source, TEST_IMAGES, TEST_LABELS)}


def _download_md5s(source: IdxSource, files: list[str]) -> dict[str, str]:
    return {f: source.digests[f].gz for f in files}


def read_pair(folder: Path, source: IdxSource, images_file: str, labels_file: str) -> ArrayDataset:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 from two verified files."""
    images_path, labels_path = folder / images_file, folder / labels_file
    images = parse_images(read_idx_gz(images_path, source.digests[images_file]), str(images_path))
    labels = parse_labels(read_idx_gz(labels_path, source.digests[labels_file]), str(labels_path))
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_file} holds "
            f"{len(labels)} labels; the files do not belong together: download both again"
        )
    x = torch.from_numpy(images.astype(np.float32)).div_(255.0).unsqueeze(1)
    return ArrayDataset(x, torch.from_numpy(labels.astype(np.int64)))


def read_idx_gz(path: Path, digests: Digests) -> bytes:
    """Uncompressed bytes of an idx ``.gz`` file whose ``.gz`` or idx MD5 matches ``digests``."""
    data = path.read_bytes()
    raw = _gunzip(data, path)
    if md5_of_bytes(data) != digests.gz:
        actual = md5_of_bytes(raw)
        if actual != digests.raw:
            raise checksum_error(f"{path} (uncompressed)", digests.raw, actual)
    return raw


def _gunzip(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path} is not a complete gzip file ({e}); delete it and download it again"
        ) from e


def parse_images(raw: bytes, filename: str) -> np.ndarray:
    """Idx image bytes -> (N, 28, 28) uint8 (a read-only view of ``raw``)."""
    images = _parse_idx(raw, filename, IMAGES_MAGIC)
    if images.shape[1:] != (SIDE, SIDE):
        raise DataError(
            f"{filename} holds {images.shape[1]}x{images.shape[2]} images, expected "
            f"{SIDE}x{SIDE}; it is not an MNIST-style file: download it again"
        )
    return images


def parse_labels(raw: bytes, filename: str) -> np.ndarray:
    """Idx label bytes -> (N,) uint8 in [0, 10) (a read-only view of ``raw``)."""
    labels = _parse_idx(raw, filename, LABELS_MAGIC)
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(
            f"{filename} holds label {labels.max()}, expected 0..{NUM_CLASSES - 1}; the file is "
            "corrupt: download it again"
        )
    return labels


def _parse_idx(raw: bytes, filename: str, magic: int) -> np.ndarray:
    """Validate the header (magic number, dimensions) and the exact length; return the array."""
    ndim = magic & 0xFF  # the magic's last byte is the number of dimensions
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is not None and found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{filename} has idx magic number {found}, expected {magic} ({kind}); "
            "it is not the right file: download it again"
        )
    if len(raw) < header:
        raise DataError(
            f"{filename} is truncated ({len(raw)} bytes, shorter than its header); "
            "download it again"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(
            f"{filename} has {len(raw)} bytes but its header {dims} needs {expected}; "
            "it is truncated or malformed: download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
