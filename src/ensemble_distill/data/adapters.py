"""In-memory data adapters: the user's own data as :class:`ArrayDataset` / :class:`DataSplits`.

Data (``train_data``, ``val_data``, ``data``) may be a torch ``Dataset`` yielding ``(x, y)``
pairs, a ``DataLoader`` yielding ``(x, y)`` batches, an ``(x, y)`` tuple of tensors or NumPy
arrays, or an :class:`ArrayDataset`; it is read once into CPU memory, in the order it yields (a
Dataset in index order; a ``DataLoader`` with ``shuffle=True`` gives another order each time).
Inputs become float32 (uint8 images are divided by 255; keep images in [0, 1], which the input
perturbations assume), 1-D inputs become (N, 1). Integer labels (N,) (or (N, 1)) become int64
and mean classification; float targets (N,) become float32 and mean regression.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ensemble_distill.data.base import (
    ArrayDataset,
    DataSplits,
    holdout_split,
    torch_permutations,
)
from ensemble_distill.errors import DataError

DataLike: TypeAlias = Dataset | DataLoader | tuple[Any, Any] | ArrayDataset
"""A torch ``Dataset`` of (x, y) pairs, a ``DataLoader`` of (x, y) batches, or an (x, y) tuple."""

_READ_BATCH = 1024  # examples per batch when reading a Dataset into memory


def train_val(
    train_data: DataLike, val_data: DataLike | None, fraction: float, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """Both splits in memory; without ``val_data`` a seeded share of ``train_data``.

    Args:
        fraction: share of ``train_data`` held out for validation when ``val_data`` is None
            (``Config.val_fraction``): stratified by class for integer labels, at random for
            float targets; at least one example on each side.
        seed: seed of that split (``Config.split_seed``).
    """
    train = as_dataset(train_data, "train_data")
    if val_data is not None:
        val = as_dataset(val_data, "val_data")
        if val.y.is_floating_point() != train.y.is_floating_point():
            raise DataError(
                "train_data and val_data have different label types (one integer, one float); "
                "use int64 labels for classification and float targets for regression"
            )
        check_same_shape(val.x, "val_data", train.x, "train_data")
        return train, val
    if len(train) < 2:
        raise DataError("train_data needs at least 2 examples to hold some out for validation")
    rest, held = _carve(train.y, fraction, seed)
    return train.subset(rest), train.subset(held)


def check_same_shape(x: Tensor, what: str, reference: Tensor, reference_what: str) -> None:
    """Refuse inputs ``x`` (argument ``what``) whose examples are not shaped as those of
    ``reference`` (argument ``reference_what``), naming both, before a model meets them."""
    if x.shape[1:] != reference.shape[1:]:
        raise DataError(
            f"{what} inputs are {tuple(x.shape[1:])} but {reference_what} inputs are "
            f"{tuple(reference.shape[1:])}; give both the same shape"
        )


def _carve(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(rest, held-out) indices: stratified by class for labels, at random for float targets
    (or when a stratified split leaves a side empty); at least one example on each side."""
    if not y.is_floating_point():
        rest, held = holdout_split(len(y), fraction, torch_permutations(seed), strata=y)
        if len(held) > 0 and len(rest) > 0:
            return rest, held
    return holdout_split(len(y), fraction, torch_permutations(seed), min_rest=1)


def in_memory_splits(train: ArrayDataset, val: ArrayDataset, num_classes: int) -> DataSplits:
    """DataSplits of in-memory data (validation doubles as the unused test split)."""
    regression = train.y.is_floating_point()
    return DataSplits(
        name="custom",
        train=train,
        val=val,
        test=val,
        num_classes=1 if regression else num_classes,
        task="regression" if regression else "classification",
    )


def as_dataset(data: Any, what: str) -> ArrayDataset:
    """``data`` as in-memory tensors: float32 inputs, int64 labels or float32 targets.

    Args:
        what: the argument's name in error messages, e.g. ``"train_data"``.
    """
    if isinstance(data, ArrayDataset):
        x, y = data.x, data.y
    elif isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data, Dataset):
        x, y = data
    elif isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    elif isinstance(data, DataLoader | Dataset):
        x, y = _read_batches(data, what, labels=True)
    else:
        raise DataError(
            f"{what} must be a torch Dataset, a DataLoader or an (x, y) tuple of tensors; "
            f"got {type(data).__name__}"
        )
    return ArrayDataset(_as_inputs(x, what), _as_targets(y, what))


def as_inputs(data: Any, what: str = "inputs") -> Tensor:
    """Inputs only: a tensor or array of inputs, or any data form (labels ignored).

    Args:
        what: the argument's name in error messages, e.g. ``"ood_data"``.
    """
    if isinstance(data, Tensor | np.ndarray):
        return _as_inputs(data, what)
    if isinstance(data, ArrayDataset):
        return _as_inputs(data.x, what)
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data, Dataset):
        return _as_inputs(data[0], what)
    if isinstance(data, TensorDataset):
        return _as_inputs(data.tensors[0], what)
    if isinstance(data, DataLoader | Dataset):
        return _as_inputs(_read_batches(data, what, labels=False)[0], what)
    raise DataError(
        f"{what} must be a tensor, a torch Dataset, a DataLoader or an (x, y) tuple; "
        f"got {type(data).__name__}"
    )


def _read_batches(
    data: Dataset | DataLoader, what: str, labels: bool
) -> tuple[Tensor, Tensor | None]:
    """Concatenate what a DataLoader yields (a Dataset is read in order, in batches)."""
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=_READ_BATCH)
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    for batch in loader:
        if isinstance(batch, tuple | list) and len(batch) == 2:
            x, y = batch
        elif not labels and isinstance(batch, Tensor):
            x, y = batch, None
        else:
            raise DataError(
                f"{what} must yield (inputs, labels) pairs; got a batch of type "
                f"{type(batch).__name__}" + (f" with {len(batch)} items" if _sized(batch) else "")
            )
        xs.append(torch.as_tensor(x))
        if y is not None:
            ys.append(torch.as_tensor(y).reshape(-1))
    if not xs:
        raise DataError(f"{what} is empty; give at least one example")
    return torch.cat(xs), (torch.cat(ys) if ys else None)


def _sized(value: Any) -> bool:
    return isinstance(value, Iterable) and hasattr(value, "__len__")


def _as_inputs(x: Any, what: str) -> Tensor:
    x = _in_memory(x, what, "inputs")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    x = x.float()
    if x.dim() == 1:
        x = x.unsqueeze(1)
    if x.dim() == 0:
        raise DataError(f"{what} inputs must have an example axis, (N, ...); got a scalar")
    _check_finite(x, what, "inputs")
    return x


def _in_memory(values: Any, what: str, kind: str) -> Tensor:
    """``values`` as a CPU tensor of real numbers (the engine's data live in CPU memory and go
    to the device batch by batch); tensors on the meta device (shapes without values) and
    complex numbers are refused, naming the argument, rather than failing later inside
    torch."""
    values = torch.as_tensor(values)
    if values.is_meta:
        raise DataError(
            f"{what} {kind} are on the meta device (shapes without values); give tensors "
            "that hold data"
        )
    if values.is_complex():
        raise DataError(f"{what} {kind} are complex ({values.dtype}); give real numbers")
    return values.cpu()


def _check_finite(values: Tensor, what: str, kind: str) -> None:
    """Refuse NaN or infinite values here, naming the argument and the first bad example,
    rather than as a metric's or a training step's NaN much later."""
    if values.numel() == 0:
        return
    bad = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
    if bad.any():
        raise DataError(
            f"{what} {kind} contain NaN or Inf (or values past float32's 3.4e38): "
            f"{int(bad.sum())} of {len(values)} examples, the first at index "
            f"{int(bad.nonzero()[0])}; drop, fill or rescale them"
        )


def _as_targets(y: Any, what: str) -> Tensor:
    y = _in_memory(y, what, "labels")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise DataError(
            f"{what} labels must be one per example, shape (N,); got {tuple(y.shape)} "
            "(for one-hot labels pass y.argmax(1))"
        )
    if y.is_floating_point():
        y = y.float()
        _check_finite(y, what, "targets")
        return y
    return y.long()


__all__ = [
    "DataLike",
    "as_dataset",
    "as_inputs",
    "check_same_shape",
    "in_memory_splits",
    "train_val",
]
