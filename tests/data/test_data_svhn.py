"""SVHN loader on small .mat files written with scipy.io.savemat in the official layout."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from ensemble_distill.data import create_dataset, svhn
from ensemble_distill.data.download import md5_of_file
from ensemble_distill.errors import ChecksumError, DataError


def test_parse_layout_and_label_mapping(tmp_path: Path, svhn_mat) -> None:
    path = svhn_mat(tmp_path)
    mat = loadmat(path)
    data = svhn.read_mat(path)
    assert data.x.shape == (30, 3, 32, 32) and data.x.dtype == torch.float32
    assert data.x.is_contiguous()
    # X is (row, column, channel, example); ours is (example, channel, row, column).
    n, c, row, col = 4, 2, 9, 13
    assert data.x[n, c, row, col] * 255 == mat["X"][row, col, c, n]
    y = mat["y"].ravel()
    assert data.y.dtype == torch.int64
    assert torch.equal(data.y, torch.from_numpy(np.where(y == 10, 0, y).astype(np.int64)))
    assert sorted(data.y.unique().tolist()) == list(range(10))


def test_splits(tmp_path: Path, svhn_mat) -> None:
    svhn_mat(tmp_path / "svhn", svhn.TRAIN_FILE, per_class=10)
    svhn_mat(tmp_path / "svhn", svhn.TEST_FILE)
    splits = create_dataset("svhn", data_dir=tmp_path, split_seed=4, val_fraction=0.2)
    assert splits.input_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 30)
    assert torch.bincount(splits.val.y, minlength=10).tolist() == [2] * 10
    for part in (splits.train, splits.val, splits.test):
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
    train_rows = {tuple(r) for r in splits.train.x.flatten(1).tolist()}
    assert not train_rows & {tuple(r) for r in splits.val.x.flatten(1).tolist()}


def test_cifar10_ood_set(tmp_path: Path, svhn_mat, cifar_archive) -> None:
    svhn_mat(tmp_path, svhn.TRAIN_FILE, per_class=10)
    svhn_mat(tmp_path, svhn.TEST_FILE)
    cifar_archive(tmp_path / "cifar10")
    splits = create_dataset("svhn", data_dir=tmp_path)
    assert list(splits.ood) == ["cifar10"]
    assert splits.ood["cifar10"].x.shape == (10, 3, 32, 32)


def test_missing_cifar10_warns_and_is_omitted(
    tmp_path: Path, svhn_mat, caplog: pytest.LogCaptureFixture
) -> None:
    svhn_mat(tmp_path, svhn.TRAIN_FILE, per_class=10)
    svhn_mat(tmp_path, svhn.TEST_FILE)
    with caplog.at_level(logging.WARNING):
        splits = create_dataset("svhn", data_dir=tmp_path)
    assert splits.ood == {}
    assert "OOD set cifar10 omitted" in caplog.text


def test_checksum_mismatch(tmp_path: Path, svhn_mat, monkeypatch: pytest.MonkeyPatch) -> None:
    path = svhn_mat(tmp_path)
    monkeypatch.setitem(svhn.MD5, svhn.TEST_FILE, "eb5a983be6a315427106f1b164d9cef3")
    with pytest.raises(ChecksumError, match=f"{path} has md5 .* expected eb5a983b"):
        svhn.read_mat(path)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((32, 32, 3, 4), dtype=np.float64), None, "X must be a 4-d uint8 array"),
        (np.zeros((28, 28, 3, 4), dtype=np.uint8), None, r"expected \(32, 32, 3, N\)"),
        (np.zeros((32, 32, 3, 30), dtype=np.uint8), np.zeros((30, 1)), "labels in 1..10"),
        (np.zeros((32, 32, 3, 30), dtype=np.uint8), np.ones((29, 1)), r"y must be \(30, 1\)"),
    ],
    ids=["float-x", "wrong-size", "label-zero", "label-count"],
)
def test_malformed_contents(tmp_path: Path, svhn_mat, x, y, match: str) -> None:
    path = svhn_mat(tmp_path, x=x, y=y)
    with pytest.raises(DataError, match=match):
        svhn.read_mat(path)


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_file(tmp_path: Path, svhn_mat, monkeypatch, keep: float) -> None:
    path = svhn_mat(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    monkeypatch.setitem(svhn.MD5, svhn.TEST_FILE, md5_of_file(path))
    with pytest.raises(DataError, match="not a readable MATLAB file"):
        svhn.read_mat(path)


def test_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"svhn files .* not found in") as info:
        create_dataset("svhn", data_dir=tmp_path)
    assert "download=true" in str(info.value)
