"""CIFAR-10 / CIFAR-100 loader on small archives generated in the official format."""

from __future__ import annotations

import logging
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble_distill.data import cifar, create_dataset
from ensemble_distill.data.download import md5_of_file
from ensemble_distill.errors import ChecksumError, DataError


def test_cifar10_shapes_ranges_pixel_layout_and_splits(tmp_path: Path, cifar_archive) -> None:
    cifar_archive(tmp_path / "cifar10")
    splits = create_dataset("cifar10", data_dir=tmp_path, val_fraction=0.2)

    assert splits.num_classes == 10
    assert splits.input_shape == (3, 32, 32)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (80, 20, 10)
    for part in (splits.train, splits.val, splits.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
    assert torch.bincount(splits.val.y, minlength=10).tolist() == [2] * 10  # stratified
    train_rows = {tuple(r) for r in splits.train.x.flatten(1).tolist()}
    assert not train_rows & {tuple(r) for r in splits.val.x.flatten(1).tolist()}  # disjoint


def test_pixel_layout_and_labels_match_the_batch(tmp_path: Path, cifar_archive) -> None:
    archive = cifar_archive(tmp_path)
    layout = cifar.LAYOUTS["cifar10"]
    with tarfile.open(archive) as tar:
        batch = pickle.loads(tar.extractfile(layout.test_member).read(), encoding="bytes")
    test = cifar.read_batches(archive, layout, [layout.test_member])[layout.test_member]
    row = batch[b"data"][3]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row by row.
    channel, y, x = 1, 5, 7
    assert test.x[3, channel, y, x] * 255 == row[channel * 1024 + y * 32 + x]
    assert test.y.tolist() == batch[b"labels"]


def test_cifar100_uses_fine_labels(tmp_path: Path, cifar_archive) -> None:
    archive = cifar_archive(tmp_path, "cifar100")
    splits = create_dataset("cifar100", data_dir=tmp_path, val_fraction=0.5)
    assert splits.num_classes == 100
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 100, 100)
    with tarfile.open(archive) as tar:
        raw = tar.extractfile("cifar-100-python/test").read()
    batch = pickle.loads(raw, encoding="bytes")
    assert splits.test.y.tolist() == batch[b"fine_labels"] != batch[b"coarse_labels"]


def test_numpy2_module_name_is_accepted(cifar_members, batch_pickle) -> None:
    members = cifar_members("cifar10")
    layout = cifar.LAYOUTS["cifar10"]
    modern = members[layout.test_member].replace(b"numpy.core.", b"numpy._core.")
    assert modern != members[layout.test_member]
    assert cifar.unpickle_batch(modern, "test")[b"data"].shape == (10, cifar.PIXELS)


def test_checksum_mismatch_before_parsing(
    tmp_path: Path, cifar_archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = cifar_archive(tmp_path)
    monkeypatch.setitem(cifar.ARCHIVE_MD5, archive.name, "c58f30108f718f92721af3b95e74349a")
    with pytest.raises(ChecksumError, match=r"expected c58f30108f718f92721af3b95e74349a"):
        create_dataset("cifar10", data_dir=tmp_path)


class RunsCommand:
    """A pickle payload that would run a shell command when loaded with plain pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalsCode(RunsCommand):
    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@pytest.mark.parametrize(("payload", "name"), [(RunsCommand, "system"), (EvalsCode, "eval")])
def test_tampered_pickle_is_refused_without_running_it(
    tmp_path: Path, cifar_archive, cifar_members, batch_pickle, payload: type, name: str
) -> None:
    marker = tmp_path / "pwned"
    evil = batch_pickle({b"data": payload(f"touch {marker}")})
    members = {member: evil for member in cifar_members("cifar10")}
    cifar_archive(tmp_path, members=members)
    with pytest.raises(DataError, match=rf"refers to \w+\.{name}, .* refusing to unpickle"):
        create_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_missing_member(tmp_path: Path, cifar_archive, cifar_members) -> None:
    members = cifar_members("cifar10")
    del members["cifar-10-batches-py/data_batch_3"]
    cifar_archive(tmp_path, members=members)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_3"):
        create_dataset("cifar10", data_dir=tmp_path)


def test_truncated_archive(tmp_path: Path, cifar_archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = cifar_archive(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    monkeypatch.setitem(cifar.ARCHIVE_MD5, archive.name, md5_of_file(archive))
    with pytest.raises(DataError, match=r"not a complete tar\.gz archive"):
        create_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({b"data": np.zeros((10, 3072), dtype=np.float32)}, "b'data' must be an"),
        ({b"data": np.zeros((10, 1024), dtype=np.uint8)}, "b'data' must be an"),
        ({b"labels": [0] * 9}, "must hold 10 labels"),
        ({b"labels": [10] * 10}, r"in \[0, 10\)"),
        ({b"labels": b"not a list"}, "must hold 10 labels"),
    ],
    ids=["float-data", "wrong-width", "label-count", "label-range", "label-type"],
)
def test_malformed_batch(
    tmp_path: Path, cifar_archive, cifar_members, batch_pickle, change: dict, match: str
) -> None:
    layout = cifar.LAYOUTS["cifar10"]
    members = cifar_members("cifar10")
    batch = pickle.loads(members[layout.test_member], encoding="bytes")
    members[layout.test_member] = batch_pickle({**batch, **change})
    archive = cifar_archive(tmp_path, members=members)
    with pytest.raises(DataError, match=match):
        cifar.read_batches(archive, layout, [layout.test_member])


def test_garbage_pickle(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a valid CIFAR batch"):
        cifar.unpickle_batch(b"\x80\x02garbage", "x")
    with pytest.raises(DataError, match="not a dict"):
        cifar.unpickle_batch(pickle.dumps([1, 2], protocol=2), "x")


def test_svhn_ood_set(tmp_path: Path, cifar_archive, svhn_mat) -> None:
    cifar_archive(tmp_path / "cifar10")
    svhn_mat(tmp_path / "svhn")
    splits = create_dataset("cifar10", data_dir=tmp_path)
    assert list(splits.ood) == ["svhn"]
    assert splits.ood["svhn"].x.shape == (30, 3, 32, 32)


def test_missing_svhn_warns_and_is_omitted(
    tmp_path: Path, cifar_archive, caplog: pytest.LogCaptureFixture
) -> None:
    cifar_archive(tmp_path, "cifar100")
    with caplog.at_level(logging.WARNING):
        splits = create_dataset("cifar100", data_dir=tmp_path, val_fraction=0.5)
    assert splits.ood == {}
    assert "OOD set svhn omitted" in caplog.text


def test_missing_archive_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz\) not found in") as info:
        create_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar10") in str(info.value)


@pytest.mark.parametrize("prefix", ["../", "/tmp/ensemble-distill-traversal/"])
def test_path_traversal_members_are_never_written(
    tmp_path: Path, cifar_archive, cifar_members, prefix: str
) -> None:
    # Members that would land outside the data folder if extracted: the archive is only ever
    # read in memory and looked up by exact name, so they are neither written nor used.
    members = cifar_members("cifar10")
    evil = {prefix + name: blob for name, blob in members.items()}
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cifar_archive(data_dir, members=evil)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/"):
        create_dataset("cifar10", data_dir=data_dir)
    assert not (tmp_path / "cifar-10-batches-py").exists()
    assert not Path("/tmp/ensemble-distill-traversal").exists()
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]
