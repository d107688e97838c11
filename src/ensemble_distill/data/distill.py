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

import math
import zipfile
from pathlib import Path
from typing import IO

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
from ensemble_distill.resources import available_memory, byte_text

NUMPY_SUFFIXES = (".npy", ".npz")
NPZ_KEY = "x"
ZIP_MAGIC = b"PK\x03\x04"
FLOAT32_BYTES = 4  # the inputs become float32: the loaded array and its float32 copy coexist


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
        x = read_numpy_inputs(Path(value), tuple(data.train.x.shape[1:]))
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


def read_numpy_inputs(path: Path, example_shape: tuple[int, ...] | None = None) -> Tensor:
    """The float32 inputs of a .npy / .npz file (uint8 divided by 255); never unpickles. The
    array's header is read first: a shape other than (N, *example_shape) or an array that
    would not fit in memory is refused before a byte of it is loaded (or decompressed)."""
    try:
        check_header(*numpy_header(path), path, example_shape)
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


def numpy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype the header of a .npy file, or of the inputs' member of an .npz
    archive (see :func:`_npz_member`), declares; nothing after the header is read.

    Raises:
        OSError, ValueError, EOFError, zipfile.BadZipFile: a file that is no such array.
    """
    with path.open("rb") as handle:
        if handle.read(len(ZIP_MAGIC)) != ZIP_MAGIC:  # as np.load tells .npy from .npz
            handle.seek(0)
            return _array_header(handle)
    with zipfile.ZipFile(path) as archive, archive.open(_npz_member(archive, path)) as member:
        return _array_header(member)


def _array_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy stream ``handle`` from its magic string and header."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:  # 3.0 only stores structured dtypes with non-ASCII field names: not inputs
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:  # pickled Python objects: never loaded
        raise ValueError("an array of Python objects")
    return tuple(shape), dtype


def _npz_member(archive: zipfile.ZipFile, path: Path) -> str:
    """The archive member ``np.load`` reads as the inputs: ``x.npy``, or its only member."""
    names = archive.namelist()
    if f"{NPZ_KEY}.npy" in names:
        return f"{NPZ_KEY}.npy"
    if len(names) == 1:
        return names[0]
    arrays = [name.removesuffix(".npy") for name in names]
    raise ConfigError(
        f"distill_data file {path} holds arrays {arrays or 'none'}; name the inputs "
        f"{NPZ_KEY!r} (numpy.savez(path, {NPZ_KEY}=inputs))"
    )


def check_header(
    shape: tuple[int, ...],
    dtype: np.dtype,
    path: Path,
    example_shape: tuple[int, ...] | None,
) -> None:
    """Refuse, before loading, an array whose header declares another shape than
    (N, *example_shape) (single-channel images may omit the channel axis), or more bytes
    than the memory available now: the array and its float32 copy, the size named."""
    if example_shape is not None and not fits_examples(shape, example_shape):
        raise ConfigError(
            f"distill_data file {path} holds an array of shape {shape}; the training inputs "
            f"are (N, {', '.join(map(str, example_shape))}): give N ≥ 1 inputs of that shape"
        )
    count = math.prod(shape)
    needed = count * dtype.itemsize + (0 if dtype == np.float32 else count * FLOAT32_BYTES)
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"distill_data file {path} holds a {dtype} array of shape {shape}: loading it "
            f"needs {byte_text(needed)}, more than the {byte_text(available)} of memory "
            "available; give fewer inputs"
        )


def fits_examples(shape: tuple[int, ...], example_shape: tuple[int, ...]) -> bool:
    """Whether ``shape`` is (N, *example_shape), or (N, H, W) for (N, 1, H, W) images."""
    if shape[1:] == example_shape:
        return True
    single_channel = len(example_shape) > 1 and example_shape[0] == 1
    return single_channel and shape[1:] == example_shape[1:]


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
