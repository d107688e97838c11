"""Datasets: a registry of loaders returning :class:`DataSplits` (train/val/test + OOD sets).

Images are float tensors in [0, 1]; ``create_dataset("mnist", data_dir=...)`` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ensemble_distill.data.base import ArrayDataset, DataSplits, stratified_split
from ensemble_distill.registry import Registry

# A loader takes (data_dir, download, split_seed, val_fraction) and returns DataSplits.
Loader = Callable[[Path | None, bool, int, float], DataSplits]
DATASETS: Registry[Loader] = Registry("dataset")


@DATASETS.register("digits")
def _digits(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.digits import load_digits_splits

    return load_digits_splits(split_seed, val_fraction)


@DATASETS.register("mnist")
def _mnist(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.idx import load_idx_splits

    return load_idx_splits("mnist", data_dir, download, split_seed, val_fraction)


@DATASETS.register("fashion-mnist")
def _fashion_mnist(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.idx import load_idx_splits

    return load_idx_splits("fashion-mnist", data_dir, download, split_seed, val_fraction)


@DATASETS.register("cifar10")
def _cifar10(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.cifar import load_cifar_splits

    return load_cifar_splits("cifar10", data_dir, download, split_seed, val_fraction)


@DATASETS.register("cifar100")
def _cifar100(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.cifar import load_cifar_splits

    return load_cifar_splits("cifar100", data_dir, download, split_seed, val_fraction)


@DATASETS.register("svhn")
def _svhn(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.svhn import load_svhn_splits

    return load_svhn_splits(data_dir, download, split_seed, val_fraction)


def create_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    split_seed: int = 0,
    val_fraction: float = 0.1,
) -> DataSplits:
    """Load a registered dataset by name.

    Args:
        name: one of ``DATASETS.names()``.
        data_dir: folder holding the dataset's files, either directly or in a sub-folder named
            after the dataset (``DIR/mnist/...``). Unused by ``digits``.
        download: fetch missing files over HTTPS (checksums verified) into ``data_dir``.
        split_seed: seed of the train/validation split; fixed across runs of different seeds.
        val_fraction: share of the training data held out for validation.
    """
    loader = DATASETS.get(name)
    return loader(
        Path(data_dir) if data_dir is not None else None, download, split_seed, val_fraction
    )


__all__ = ["DATASETS", "ArrayDataset", "DataSplits", "create_dataset", "stratified_split"]
