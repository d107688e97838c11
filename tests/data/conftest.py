"""Small files in exactly the official formats (idx .gz, CIFAR python tar.gz, SVHN .mat).

Each factory fixture writes its files into a folder and patches the loaders' expected digests
to those of the generated files, so the loaders run their real checksum code on them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from ensemble_distill.data import cifar, idx, svhn
from ensemble_distill.data.download import md5_of_bytes, md5_of_file

IDX_FILES = (idx.TRAIN_IMAGES, idx.TRAIN_LABELS, idx.TEST_IMAGES, idx.TEST_LABELS)
IDX_DIGESTS = {"mnist": idx.MNIST_DIGESTS, "fashion-mnist": idx.FASHION_MNIST_DIGESTS}


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic 0x0000_08_<ndim>, big-endian sizes, data."""
    magic = bytes([0, 0, 0x08, array.ndim])
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def balanced_labels(count: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` labels, every class equally often (count must be a multiple), shuffled."""
    return rng.permutation(np.arange(count) % num_classes).astype(np.uint8)


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), like the official CIFAR batches.

    Python 3's own protocol-2 pickler encodes bytes as a call to ``_codecs.encode``, which a
    Python 2 pickle never contains (and the loader rightly refuses).
    """

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_as_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_as_py2_str
    dispatch[str] = save_as_py2_str


def py2_pickle(obj: object) -> bytes:
    """Protocol-2 pickle as numpy 1.x under Python 2 wrote it (``numpy.core.multiarray``)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(
        b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"
    )


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar_batch(
    count: int, num_classes: int, label_key: bytes, rng: np.random.Generator
) -> dict[bytes, object]:
    """A batch dict shaped like the official ones (CIFAR-100 also has coarse labels)."""
    labels = [int(v) for v in balanced_labels(count, num_classes, rng)]
    batch: dict[bytes, object] = {
        b"batch_label": b"generated batch",
        b"data": rng.integers(0, 256, (count, cifar.PIXELS), dtype=np.uint8),
        label_key: labels,
        b"filenames": [f"img_{i}.png".encode() for i in range(count)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in labels]
    return batch


@pytest.fixture
def idx_files(monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict[str, np.ndarray]]:
    """Factory ``(folder, name="mnist", per_class=(10, 2), files=all) -> {file name: array}``.

    ``per_class``: examples per class in the train and test files.
    """

    def make(
        folder: Path,
        name: str = "mnist",
        per_class: tuple[int, int] = (10, 2),
        files: tuple[str, ...] = IDX_FILES,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = {}
        for split, per in zip(("train", "t10k"), per_class, strict=True):
            labels = balanced_labels(per * 10, 10, rng)
            arrays[f"{split}-images-idx3-ubyte.gz"] = rng.integers(
                0, 256, (len(labels), 28, 28), dtype=np.uint8
            )
            arrays[f"{split}-labels-idx1-ubyte.gz"] = labels
        folder.mkdir(parents=True, exist_ok=True)
        for filename in files:
            raw = idx_bytes(arrays[filename])
            gz = gzip.compress(raw, mtime=0)
            (folder / filename).write_bytes(gz)
            digests = idx.Digests(md5_of_bytes(gz), md5_of_bytes(raw))
            monkeypatch.setitem(IDX_DIGESTS[name], filename, digests)
        return arrays

    return make


@pytest.fixture
def cifar_archive(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory ``(folder, name="cifar10", members=None) -> archive path``.

    Writes an archive with the official member names (5 train batches of 20 CIFAR-10 images,
    or one of 200 CIFAR-100 images; a test batch; the meta and readme members), or, when
    ``members`` is given, exactly those members.
    """

    def make(folder: Path, name: str = "cifar10", members: dict[str, bytes] | None = None) -> Path:
        layout = cifar.LAYOUTS[name]
        if members is None:
            members = official_members(layout, np.random.default_rng(0))
        path = write_tar_gz(folder / layout.archive, members)
        monkeypatch.setitem(cifar.ARCHIVE_MD5, layout.archive, md5_of_file(path))
        return path

    return make


def official_members(layout: cifar.CifarLayout, rng: np.random.Generator) -> dict[str, bytes]:
    """Member name -> pickled batch, in the order the official archives list them."""
    k = layout.num_classes
    folder = layout.test_member.split("/")[0]
    members = {f"{folder}/readme.html": b"<html></html>"} if k == 10 else {}
    for member in layout.train_members:
        members[member] = py2_pickle(cifar_batch(2 * k, k, layout.label_key, rng))
    members[layout.test_member] = py2_pickle(cifar_batch(k, k, layout.label_key, rng))
    meta = "batches.meta" if k == 10 else "meta"
    members[f"{folder}/{meta}"] = py2_pickle({b"label_names": [b"c%d" % i for i in range(k)]})
    return members


@pytest.fixture
def cifar_members() -> Callable[[str], dict[str, bytes]]:
    """Factory ``(name) -> {member name: bytes}`` of an official-looking archive, to tamper with."""
    return lambda name: official_members(cifar.LAYOUTS[name], np.random.default_rng(0))


@pytest.fixture
def batch_pickle() -> Callable[[object], bytes]:
    """:func:`py2_pickle`, for tests that build their own batches."""
    return py2_pickle


@pytest.fixture
def svhn_mat(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory ``(folder, filename=TEST_FILE, per_class=3, x=None, y=None) -> path``.

    Writes X (32, 32, 3, N) uint8 and y (N, 1) uint8 in 1..10 with ``scipy.io.savemat``
    (``x`` / ``y`` override them to build malformed files).
    """
    from scipy.io import savemat

    def make(
        folder: Path,
        filename: str = svhn.TEST_FILE,
        per_class: int = 3,
        x: np.ndarray | None = None,
        y: np.ndarray | None = None,
    ) -> Path:
        rng = np.random.default_rng(1)
        labels = balanced_labels(10 * per_class, 10, rng) + 1  # 1..10, 10 meaning digit 0
        if x is None:
            x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
        if y is None:
            y = labels.reshape(-1, 1)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / filename
        savemat(path, {"X": x, "y": y})
        monkeypatch.setitem(svhn.MD5, filename, md5_of_file(path))
        return path

    return make
