"""MNIST / Fashion-MNIST loader on small idx .gz files generated in the official format."""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble_distill.data import create_dataset, idx
from ensemble_distill.data.download import md5_of_bytes
from ensemble_distill.errors import ChecksumError, DataError

IMAGES = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
LABELS = np.array([0, 9, 4], dtype=np.uint8)


def idx_raw(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    return magic + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.tobytes()


@pytest.fixture(autouse=True)
def no_system_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide a locally installed Debian Fashion-MNIST: these tests search tmp_path only."""
    source = dataclasses.replace(idx.SOURCES["fashion-mnist"], system_dirs=())
    monkeypatch.setitem(idx.SOURCES, "fashion-mnist", source)


def test_parse_round_trip() -> None:
    assert np.array_equal(idx.parse_images(idx_raw(IMAGES), "img"), IMAGES)
    assert np.array_equal(idx.parse_labels(idx_raw(LABELS), "lab"), LABELS)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (idx_raw(IMAGES)[:-1], "truncated or malformed"),
        (idx_raw(IMAGES) + b"\0", "truncated or malformed"),
        (idx_raw(IMAGES)[:10], "truncated"),
        (idx_raw(LABELS), "magic number 2049, expected 2051"),
        (idx_raw(np.zeros((2, 27, 28), dtype=np.uint8)), "27x28 images"),
    ],
    ids=["one-byte-short", "trailing-byte", "short-header", "wrong-magic", "wrong-size"],
)
def test_malformed_images_name_the_file(raw: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        idx.parse_images(raw, "train-images-idx3-ubyte.gz")
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "download it again" in str(info.value)


def test_malformed_labels() -> None:
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        idx.parse_labels(idx_raw(IMAGES), "lab")
    with pytest.raises(DataError, match="label 10"):
        idx.parse_labels(idx_raw(np.array([3, 10], dtype=np.uint8)), "lab")


def test_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_raw(LABELS))[:-12])
    with pytest.raises(DataError, match="not a complete gzip file"):
        idx.read_idx_gz(path, idx.Digests("0" * 32, "0" * 32))


def test_either_digest_is_accepted(tmp_path: Path) -> None:
    raw = idx_raw(LABELS)
    canonical, recompressed = gzip.compress(raw, mtime=0), gzip.compress(raw, mtime=1)
    assert canonical != recompressed
    path = tmp_path / "labels.gz"
    path.write_bytes(canonical)
    digests = idx.Digests(md5_of_bytes(canonical), md5_of_bytes(raw))
    assert idx.read_idx_gz(path, dataclasses.replace(digests, raw="0" * 32)) == raw
    path.write_bytes(recompressed)  # like Debian's copy: other .gz bytes, same idx bytes
    assert idx.read_idx_gz(path, digests) == raw


def test_checksum_mismatch_names_file_and_digests(tmp_path: Path) -> None:
    raw = idx_raw(LABELS)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ChecksumError) as info:
        idx.read_idx_gz(path, idx.Digests("1" * 32, "2" * 32))
    message = str(info.value)
    assert str(path) in message
    assert "2" * 32 in message
    assert md5_of_bytes(raw) in message
    assert "download it again" in message


def test_unpatched_digests_reject_generated_files(tmp_path: Path, idx_files) -> None:
    idx_files(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(idx.MNIST_DIGESTS, idx.TRAIN_IMAGES, idx.Digests("1" * 32, "2" * 32))
        with pytest.raises(ChecksumError, match=r"train-images-idx3-ubyte\.gz"):
            create_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("layout", ["direct", "sub-folder"])
def test_load_shapes_ranges_and_splits(tmp_path: Path, idx_files, layout: str) -> None:
    folder = tmp_path if layout == "direct" else tmp_path / "mnist"
    arrays = idx_files(folder, per_class=(10, 2))
    splits = create_dataset("mnist", data_dir=tmp_path, split_seed=3, val_fraction=0.2)

    assert splits.name == "mnist"
    assert splits.num_classes == 10
    assert splits.input_shape == (1, 28, 28)
    for part in (splits.train, splits.val, splits.test):
        assert part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
    assert len(splits.train) == 80 and len(splits.val) == 20
    assert torch.bincount(splits.val.y, minlength=10).tolist() == [2] * 10  # stratified

    # Train + val is the official train set, each example exactly once (disjoint splits).
    images = torch.from_numpy(arrays[idx.TRAIN_IMAGES].astype(np.float32) / 255).unsqueeze(1)
    joined = torch.cat([splits.train.x, splits.val.x]).flatten(1)
    assert sorted(map(tuple, joined.tolist())) == sorted(map(tuple, images.flatten(1).tolist()))
    test_images = torch.from_numpy(arrays[idx.TEST_IMAGES].astype(np.float32))
    assert torch.equal(splits.test.x.squeeze(1) * 255, test_images)
    assert torch.equal(splits.test.y, torch.from_numpy(arrays[idx.TEST_LABELS].astype(np.int64)))


def test_split_depends_only_on_split_seed(tmp_path: Path, idx_files) -> None:
    idx_files(tmp_path, per_class=(10, 2))
    a = create_dataset("mnist", data_dir=tmp_path, split_seed=1, val_fraction=0.2)
    b = create_dataset("mnist", data_dir=tmp_path, split_seed=1, val_fraction=0.2)
    c = create_dataset("mnist", data_dir=tmp_path, split_seed=2, val_fraction=0.2)
    assert torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.val.x, c.val.x)


def test_ood_set_is_the_other_dataset(tmp_path: Path, idx_files) -> None:
    idx_files(tmp_path / "mnist", "mnist")
    test_files = (idx.TEST_IMAGES, idx.TEST_LABELS)
    other = idx_files(tmp_path / "fashion-mnist", "fashion-mnist", files=test_files, seed=5)
    splits = create_dataset("mnist", data_dir=tmp_path)
    assert list(splits.ood) == ["fashion-mnist"]
    ood = splits.ood["fashion-mnist"]
    assert ood.x.shape == (20, 1, 28, 28)
    assert torch.equal(
        ood.x.squeeze(1) * 255, torch.from_numpy(other[idx.TEST_IMAGES] * 1.0).float()
    )


def test_missing_ood_set_warns_and_is_omitted(
    tmp_path: Path, idx_files, caplog: pytest.LogCaptureFixture
) -> None:
    idx_files(tmp_path / "mnist")
    with caplog.at_level(logging.WARNING):
        splits = create_dataset("mnist", data_dir=tmp_path)
    assert splits.ood == {}
    assert "OOD set fashion-mnist omitted" in caplog.text
    assert str(tmp_path / "fashion-mnist") in caplog.text


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(DataError, match=f"data folder {missing} does not exist.*download=true"):
        create_dataset("mnist", data_dir=missing)


def test_missing_files_name_the_folders(tmp_path: Path, idx_files) -> None:
    idx_files(tmp_path / "mnist", files=(idx.TEST_IMAGES, idx.TEST_LABELS))
    with pytest.raises(DataError) as info:
        create_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert f"not found in {tmp_path}, {tmp_path / 'mnist'}" in message
    assert "pass data_dir=DIR" in message and "download=true" in message


def test_default_folder_is_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path / ".cache" / "ensemble-distill" / "mnist")):
        create_dataset("mnist")


def test_download_fetches_missing_files_over_https(
    tmp_path: Path, idx_files, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Generate the files in one "server" folder per dataset and serve them by URL.
    server = {name: tmp_path / "server" / name for name in idx.SOURCES}
    idx_files(server["mnist"], "mnist")
    idx_files(server["fashion-mnist"], "fashion-mnist", files=(idx.TEST_IMAGES, idx.TEST_LABELS))
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        for name, source in idx.SOURCES.items():
            if url.startswith(source.base_url):
                return io.BytesIO((server[name] / url.removeprefix(source.base_url)).read_bytes())
        raise AssertionError(f"unexpected URL {url}")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    data_dir = tmp_path / "data"
    splits = create_dataset("mnist", data_dir=data_dir, download=True)
    assert len(splits.test) == 20
    assert len(requested) == 4 + 2  # all MNIST files, then the Fashion-MNIST t10k files
    assert all(u.startswith("https://") for u in requested)
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(
        [idx.TRAIN_IMAGES, idx.TRAIN_LABELS, idx.TEST_IMAGES, idx.TEST_LABELS]
    )
    assert list(splits.ood) == ["fashion-mnist"]
