"""Auxiliary distillation inputs: config key ``distill_data``.

Students may distil on unlabelled inputs other than the training set (the label term keeps the
clean labelled batch). ``distill_data`` names them in one of two forms:

* a registered dataset: its *training* inputs (labels ignored), read from the run's
  ``data_dir``. It may be neither the run's dataset (its training inputs are the default) nor
  the run's OOD partner (:data:`OOD_PARTNERS`): distilling on the evaluation's OOD data would
  make the OOD scores meaningless.
* a ``.npy`` / ``.npz`` file of inputs (N, ...), read with ``allow_pickle=False`` (a file can
  hold no code): the array ``x`` of an ``.npz``, or its only array. uint8 arrays are images
  in 0..255 and are divided by 255; float arrays must already be scaled as the training inputs
  (images in [0, 1]). Single-channel images may omit the channel axis. A relative path is
  resolved against the working directory.

Either way the inputs must have the training inputs' shape; regression runs take none, since
their features are standardised with training statistics a file cannot be checked against.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ensemble_distill.data import (
    DATASETS,
    OOD_PARTNERS,
    DataSplits,
    create_dataset,
    dataset_args_of,
)
from ensemble_distill.data.image_files import ImageFiles, in_unit_interval
from ensemble_distill.errors import ConfigError

NUMPY_SUFFIXES = (".npy", ".npz")
NPZ_KEY = "x"


def is_numpy_file(value: str) -> bool:
    """Whether ``distill_data`` names a .npy / .npz file rather than a registered dataset."""
    return Path(value).suffix.lower() in NUMPY_SUFFIXES


def distill_data_problem(value: str, dataset: str | None) -> str | None:
    """Why ``value`` cannot be the ``distill_data`` of a run on ``dataset`` (phrased to follow
    "config key 'distill_data'"), or None when it can. ``dataset`` None (the config alone,
    before the data say which dataset the run is on, e.g. the API's): its form only."""
    if is_numpy_file(value):
        return None
    if value not in DATASETS:
        names = ", ".join(DATASETS.names())
        return f"must be a registered dataset ({names}) or a .npy / .npz file of inputs"
    if value == "imagefolder":
        return "names imagefolder, which reads the run's data_dir: save those images as .npz"
    if any(dataset_args_of(value).values()):
        return f"names dataset {value!r}, which needs dataset_args: save its inputs as .npz"
    if value == dataset:
        return "is the run's own dataset, whose training inputs are the default: set it to null"
    if OOD_PARTNERS.get(dataset) == value:
        return (
            f"is the OOD partner of dataset {dataset!r}: the evaluation scores its test set "
            "as OOD data, so never distil on it; choose another dataset or a .npy / .npz file"
        )
    return None


def load_distill_inputs(
    value: str,
    data: DataSplits,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    split_seed: int = 0,
    val_fraction: float = 0.1,
) -> Tensor:
    """The inputs ``distill_data`` names (see the module docstring), checked against ``data``'s
    training inputs: (N, ...) float32 of the same shape and scale.

    Raises:
        ConfigError: a regression run, a name :func:`distill_data_problem` refuses, a file that
            cannot be read, or inputs of another shape or scale.
    """
    if data.task == "regression":
        raise ConfigError(
            "distill_data is for classification: regression features are standardised with "
            "training statistics; set distill_data to null"
        )
    problem = distill_data_problem(value, data.name)
    if problem is not None:
        raise ConfigError(f"config key 'distill_data' {problem}, got {value!r}")
    if is_numpy_file(value):
        x = read_numpy_inputs(Path(value))
    else:
        splits = create_dataset(
            value,
            data_dir=data_dir,
            download=download,
            split_seed=split_seed,
            val_fraction=val_fraction,
        )
        x = splits.train.x
    return checked_inputs(x, data.train.x, value)


def read_numpy_inputs(path: Path) -> Tensor:
    """The float32 inputs of a .npy / .npz file (uint8 divided by 255); never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = _npz_inputs(loaded, path)
    except FileNotFoundError:
        raise ConfigError(f"distill_data file {path} not found; check the path") from None
    except OSError as exc:
        raise ConfigError(f"cannot read distill_data file {path} ({exc}); check the path") from None
    except (ValueError, EOFError, zipfile.BadZipFile):
        raise ConfigError(
            f"distill_data file {path} is not a numeric .npy / .npz array (objects and pickles "
            "are never loaded); save one with numpy.save or numpy.savez"
        ) from None
    return _as_float_inputs(loaded, path)


def _npz_inputs(archive: np.lib.npyio.NpzFile, path: Path) -> np.ndarray:
    """The array ``x`` of an .npz archive, or its only array."""
    names = list(archive.files)
    if NPZ_KEY in names:
        return archive[NPZ_KEY]
    if len(names) == 1:
        return archive[names[0]]
    raise ConfigError(
        f"distill_data file {path} holds arrays {names or 'none'}; name the inputs "
        f"{NPZ_KEY!r} (numpy.savez(path, {NPZ_KEY}=inputs))"
    )


def _as_float_inputs(array: np.ndarray, path: Path) -> Tensor:
    """uint8 images scaled to [0, 1]; other real numbers as float32; anything else refused."""
    if array.dtype == np.uint8:
        return torch.from_numpy(array.astype(np.float32) / 255.0)
    if array.dtype.kind not in "iuf":
        raise ConfigError(
            f"distill_data file {path} holds {array.dtype} values; save numbers (uint8 images "
            "or floats scaled as the training inputs)"
        )
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


def checked_inputs(x: Tensor, train_x: Tensor | ImageFiles, value: str) -> Tensor:
    """``x`` shaped and scaled as ``train_x`` (a missing single channel axis added), refused
    with the fix when it is empty, not finite, of another shape or outside [0, 1] pixels."""
    shape = tuple(train_x.shape[1:])
    if x.dim() == len(shape) and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
        x = x.unsqueeze(1)  # (N, H, W) for one-channel images (N, 1, H, W)
    if tuple(x.shape[1:]) != shape or len(x) == 0:
        raise ConfigError(
            f"distill_data {value!r} has inputs of shape {tuple(x.shape)}; the training inputs "
            f"are (N, {', '.join(map(str, shape))}): give N ≥ 1 inputs of that shape"
        )
    if not torch.isfinite(x).all():
        raise ConfigError(f"distill_data {value!r} holds NaN or Inf; give finite inputs")
    pixels = in_unit_interval(train_x)
    if pixels and not bool(x.min() >= 0 and x.max() <= 1):
        raise ConfigError(
            f"distill_data {value!r} has values in [{float(x.min()):g}, {float(x.max()):g}] but "
            "the training inputs lie in [0, 1]: scale them to [0, 1] (or save uint8 0..255)"
        )
    return x.to(train_x.dtype).contiguous()
