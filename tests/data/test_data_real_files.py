"""The loaders on the real MNIST / Fashion-MNIST files of this project (skipped where absent)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from ensemble_distill.data import DATASETS, DataSplits, create_dataset, idx
from ensemble_distill.data.download import md5_of_bytes

pytestmark = pytest.mark.slow  # reads the real data files in ../shared/data

SHARED = Path("/work/shared/data")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
MNIST_FILES = [SHARED / "mnist" / f for f in idx.MNIST_DIGESTS]


def test_all_datasets_are_registered() -> None:
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"} <= set(DATASETS)


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    if not all(p.is_file() for p in MNIST_FILES):
        pytest.skip(f"the MNIST files are not in {SHARED / 'mnist'}")
    return create_dataset("mnist", data_dir=SHARED)


def test_mnist_counts_and_pixel_mean(mnist: DataSplits) -> None:
    assert len(mnist.train) + len(mnist.val) == 60000
    assert len(mnist.test) == 10000
    assert len(mnist.val) == pytest.approx(6000, abs=10)
    assert mnist.input_shape == (1, 28, 28)
    full_train = torch.cat([mnist.train.x, mnist.val.x])
    assert float(full_train.double().mean()) == pytest.approx(0.1307, abs=1e-4)
    assert torch.bincount(mnist.test.y).tolist()[:3] == [980, 1135, 1032]


def test_mnist_ood_is_fashion_mnist_test(mnist: DataSplits) -> None:
    if not (SHARED / "fashion-mnist" / idx.TEST_IMAGES).is_file():
        pytest.skip("the Fashion-MNIST t10k files are absent")
    assert list(mnist.ood) == ["fashion-mnist"]
    assert mnist.ood["fashion-mnist"].x.shape == (10000, 1, 28, 28)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("mnist", SHARED / "mnist"),
        ("fashion-mnist", SHARED / "fashion-mnist"),
        ("fashion-mnist", DEBIAN_FASHION),
    ],
)
def test_uncompressed_digests_match_the_real_files(name: str, folder: Path) -> None:
    digests = idx.SOURCES[name].digests
    present = [f for f in digests if (folder / f).is_file()]
    if not present:
        pytest.skip(f"no {name} files in {folder}")
    for filename in present:
        raw = gzip.decompress((folder / filename).read_bytes())
        assert md5_of_bytes(raw) == digests[filename].raw, filename


def test_fashion_mnist_from_the_debian_package() -> None:
    if not (DEBIAN_FASHION / idx.TRAIN_IMAGES).is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    # The shared folder lacks the train images, so the Debian copy (other .gz bytes) is used.
    splits = create_dataset("fashion-mnist", data_dir=SHARED)
    assert len(splits.train) + len(splits.val) == 60000
    assert len(splits.test) == 10000
    assert torch.bincount(splits.test.y).tolist() == [1000] * 10
    if (SHARED / "mnist" / idx.TEST_IMAGES).is_file():
        assert splits.ood["mnist"].x.shape == (10000, 1, 28, 28)
