"""Datasets: a registry of loaders returning :class:`DataSplits` (train/val/test + OOD sets).

``create_dataset(name, data_dir=..., **dataset_args)`` is the entry point.

* Classification: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``,
  ``svhn``; images are float tensors in [0, 1], labels int64.
* The user's images: ``imagefolder`` (``data_dir`` with one sub-folder per class; streamed
  from disk by worker processes, see :mod:`ensemble_distill.data.imagefolder`; dataset_args
  ``image_size``, ``resize``, ``channels``, ``test_fraction``, ``workers``, ``in_memory``;
  its OOD set is ``DIR/ood/``, if present).
* Regression (``task="regression"``, ``num_classes=1``, targets float32 standardised with
  training statistics): ``toy-gap`` (1-D cubic with a gap, OOD set ``gap``), ``diabetes``,
  ``auto-mpg`` and ``csv`` (the user's own table; dataset_args ``path``, ``target`` and
  optionally ``shift_feature``); tables have a covariate-shift OOD set ``shift``.

A loader is called as ``loader(data_dir, download, split_seed, val_fraction, **dataset_args)``;
the keyword-only parameters of its signature are the dataset_args it accepts (required when
they have no default). Anything else is refused with a :class:`ConfigError`.

An image dataset's OOD set is another dataset's official test set: its *OOD partner*, declared
in :data:`OOD_PARTNERS` next to the registrations (the partner's test-set reader is registered
in :data:`OOD_TEST_SETS`); it is omitted with a warning when the partner's files are not found.
``create_dataset(..., ood=...)`` (config key ``ood``) replaces it with another set, a folder
of images or none, and says how its images were converted (:mod:`ensemble_distill.data.ood`).

Every split (test and validation carving) goes through :func:`holdout_split`. The user's own
in-memory data become :class:`DataSplits` through :mod:`ensemble_distill.data.adapters`
(``as_dataset``, ``as_inputs``, ``train_val``, ``in_memory_splits``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ensemble_distill.data.adapters import (
    DataLike,
    as_dataset,
    as_inputs,
    in_memory_splits,
    train_val,
)
from ensemble_distill.data.base import (
    ArrayDataset,
    DataSplits,
    OodSource,
    holdout_split,
    stratified_split,
    torch_permutations,
)
from ensemble_distill.data.identity import file_identity, folder_identity
from ensemble_distill.data.image_files import ImageFiles, batches_of
from ensemble_distill.data.ood import choose_ood, folder_source
from ensemble_distill.errors import ConfigError
from ensemble_distill.registry import Registry

# A loader takes (data_dir, download, split_seed, val_fraction, **dataset_args) -> DataSplits.
Loader = Callable[..., DataSplits]
DATASETS: Registry[Loader] = Registry("dataset")

# A test-set reader takes (data_dir, download) -> {name: test set}, or {} (with a warning) when
# the files are not found; only DIR/<name>/ (and system folders) are searched, never DIR itself.
TestSetReader = Callable[[Path | None, bool], dict[str, ArrayDataset]]
OOD_TEST_SETS: Registry[TestSetReader] = Registry("OOD test set")

# Each image dataset's OOD partner: the dataset whose official test set is its OOD set.
OOD_PARTNERS: dict[str, str] = {
    "mnist": "fashion-mnist",
    "fashion-mnist": "mnist",
    "cifar10": "svhn",
    "cifar100": "svhn",
    "svhn": "cifar10",
}


def ood_test_sets(name: str, data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    """Dataset ``name``'s OOD sets: ``{partner: the partner's test set}`` (see
    :data:`OOD_PARTNERS`), or ``{}`` when it has no partner or the partner's files are not found
    (then a warning says where they were looked for)."""
    partner = OOD_PARTNERS.get(name)
    if partner is None:
        return {}
    return OOD_TEST_SETS.get(partner)(data_dir, download)


def _ood(name: str, data_dir: Path | None, download: bool) -> Callable[[], dict[str, ArrayDataset]]:
    """``ood_test_sets`` for a loader to call once its own files are read."""
    return functools.partial(ood_test_sets, name, data_dir, download)


@DATASETS.register("digits")
def _digits(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.digits import load_digits_splits

    return load_digits_splits(split_seed, val_fraction)


@DATASETS.register("mnist")
def _mnist(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.idx import load_idx_splits

    ood = _ood("mnist", data_dir, download)
    return load_idx_splits("mnist", data_dir, download, split_seed, val_fraction, ood=ood)


@OOD_TEST_SETS.register("mnist")
def _mnist_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    from ensemble_distill.data.idx import load_ood_test

    return load_ood_test("mnist", data_dir, download)


@DATASETS.register("fashion-mnist")
def _fashion_mnist(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.idx import load_idx_splits

    ood = _ood("fashion-mnist", data_dir, download)
    return load_idx_splits("fashion-mnist", data_dir, download, split_seed, val_fraction, ood=ood)


@OOD_TEST_SETS.register("fashion-mnist")
def _fashion_mnist_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    from ensemble_distill.data.idx import load_ood_test

    return load_ood_test("fashion-mnist", data_dir, download)


@DATASETS.register("cifar10")
def _cifar10(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.cifar import load_cifar_splits

    ood = _ood("cifar10", data_dir, download)
    return load_cifar_splits("cifar10", data_dir, download, split_seed, val_fraction, ood=ood)


@OOD_TEST_SETS.register("cifar10")
def _cifar10_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    from ensemble_distill.data.cifar import load_ood_test

    return load_ood_test(data_dir, download)


@DATASETS.register("cifar100")
def _cifar100(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.cifar import load_cifar_splits

    ood = _ood("cifar100", data_dir, download)
    return load_cifar_splits("cifar100", data_dir, download, split_seed, val_fraction, ood=ood)


@DATASETS.register("svhn")
def _svhn(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.svhn import load_svhn_splits

    ood = _ood("svhn", data_dir, download)
    return load_svhn_splits(data_dir, download, split_seed, val_fraction, ood=ood)


@OOD_TEST_SETS.register("svhn")
def _svhn_test(data_dir: Path | None, download: bool) -> dict[str, ArrayDataset]:
    from ensemble_distill.data.svhn import load_ood_test

    return load_ood_test(data_dir, download)


@DATASETS.register("imagefolder")
def _imagefolder(
    data_dir: Path | None,
    download: bool,
    split_seed: int,
    val_fraction: float,
    *,
    image_size: int | list[int] | None = None,
    resize: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    workers: int | None = None,
    in_memory: bool = False,
):
    from ensemble_distill.data.imagefolder import load_imagefolder_splits

    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"dataset_args.workers must be an integer ≥ 0; got {workers!r}")
    if not isinstance(in_memory, bool):
        raise ConfigError(f"dataset_args.in_memory must be true or false; got {in_memory!r}")
    splits = load_imagefolder_splits(
        data_dir,
        split_seed,
        val_fraction,
        image_size=image_size,
        resize=resize,
        channels=channels,
        test_fraction=test_fraction,
        workers=workers,
        in_memory=in_memory,
    )
    identity = image_folder_identity(data_dir, splits)
    splits = dataclasses.replace(
        splits, identity=identity, ood_source=own_ood_source(data_dir, splits)
    )
    # Decoded once into float32 tensors: faster where they fit, the same weights.
    return splits.in_memory() if in_memory else splits


def image_folder_identity(data_dir: Path, splits: DataSplits) -> str:
    """The identity of the image files behind the training, validation and test splits, named
    relative to ``data_dir`` (:mod:`ensemble_distill.data.identity`; OOD images left out)."""
    files = [splits.train.x, splits.val.x, splits.test.x]
    paths = [path for split in files if isinstance(split, ImageFiles) for path in split.paths]
    return folder_identity(Path(data_dir).expanduser(), paths)


def own_ood_source(data_dir: Path, splits: DataSplits) -> OodSource:
    """What an image folder's own OOD set, ``DIR/ood/``, is (read while its files are known,
    before they may be decoded into memory), or that there is none."""
    from ensemble_distill.data.imagefolder import OOD_FOLDER

    folder = Path(data_dir).expanduser() / OOD_FOLDER
    files = splits.ood[OOD_FOLDER].x if OOD_FOLDER in splits.ood else None
    if not isinstance(files, ImageFiles):
        return OodSource(
            None,
            f"none: {folder}/ does not exist; put OOD images there or name a folder with ood=DIR",
        )
    return folder_source(OOD_FOLDER, folder, files.paths, splits.input_shape)


@DATASETS.register("toy-gap")
def _toy_gap(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.regression import load_toy_gap_splits

    return load_toy_gap_splits(split_seed, val_fraction)


@DATASETS.register("diabetes")
def _diabetes(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.regression import load_diabetes_splits

    return load_diabetes_splits(split_seed, val_fraction)


@DATASETS.register("auto-mpg")
def _auto_mpg(data_dir: Path | None, download: bool, split_seed: int, val_fraction: float):
    from ensemble_distill.data.regression import load_auto_mpg_splits

    return load_auto_mpg_splits(split_seed, val_fraction)


@DATASETS.register("csv")
def _csv(
    data_dir: Path | None,
    download: bool,
    split_seed: int,
    val_fraction: float,
    *,
    path: str,
    target: str,
    shift_feature: str | None = None,
):
    from ensemble_distill.data.regression import load_csv_splits

    for key, value in (("path", path), ("target", target), ("shift_feature", shift_feature)):
        if value is not None and not isinstance(value, str | Path):
            raise ConfigError(f"dataset 'csv': {key} must be a string; got {value!r}")
    # A relative path is resolved against the working directory, not data_dir.
    splits = load_csv_splits(path, target, split_seed, val_fraction, shift_feature=shift_feature)
    return dataclasses.replace(splits, identity=file_identity(Path(path)))


def dataset_args_of(name: str) -> dict[str, bool]:
    """The dataset_args a registered dataset accepts: {argument name: required}."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    return {
        p.name: p.default is inspect.Parameter.empty
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_dataset_args(name: str, dataset_args: Mapping[str, Any]) -> None:
    """Refuse unknown or missing dataset_args with a :class:`ConfigError` naming the fix."""
    accepted = dataset_args_of(name)
    takes = ", ".join(accepted) if accepted else "none"
    unknown = sorted(set(dataset_args) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} does not take dataset_args {', '.join(unknown)}; it takes: {takes}"
        )
    missing = [key for key, required in accepted.items() if required and key not in dataset_args]
    if missing:
        raise ConfigError(
            f"dataset {name!r} needs dataset_args {', '.join(missing)}; it takes: {takes}"
        )


def create_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    ood: str | None = None,
    **dataset_args: Any,
) -> DataSplits:
    """Load a registered dataset by name, with the OOD set ``ood`` names.

    Args:
        name: one of ``DATASETS.names()``.
        data_dir: folder holding the dataset's files, either directly or in a sub-folder named
            after the dataset (``DIR/mnist/...``). Unused by ``digits`` and the regression sets.
        download: fetch missing files over HTTPS (checksums verified) into ``data_dir``.
        split_seed: seed of the train/validation split; fixed across runs of different seeds.
        val_fraction: share of the training data held out for validation.
        ood: the OOD set (:mod:`ensemble_distill.data.ood`): None, the dataset's own;
            ``"none"``; a registered OOD set's name; or a folder of images.
        dataset_args: loader-specific options, e.g. ``path="data.csv", target="price"`` for
            ``csv`` (see :func:`dataset_args_of`); other datasets take none.
    """
    loader = DATASETS.get(name)
    check_dataset_args(name, dataset_args)
    folder = Path(data_dir) if data_dir is not None else None
    splits = loader(folder, download, split_seed, val_fraction, **dataset_args)
    workers = dataset_args.get("workers")
    return choose_ood(splits, ood, data_dir=folder, download=download, workers=workers)


__all__ = [
    "DATASETS",
    "OOD_PARTNERS",
    "OOD_TEST_SETS",
    "ArrayDataset",
    "DataLike",
    "DataSplits",
    "ImageFiles",
    "OodSource",
    "as_dataset",
    "as_inputs",
    "batches_of",
    "check_dataset_args",
    "create_dataset",
    "dataset_args_of",
    "holdout_split",
    "in_memory_splits",
    "ood_test_sets",
    "stratified_split",
    "torch_permutations",
    "train_val",
]
