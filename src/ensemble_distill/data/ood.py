"""The run's OOD set: config key ``ood``, applied by :func:`~ensemble_distill.data.create_dataset`.

OOD AUROC means "tells the test split from these inputs", so it says as much as the OOD set
does: a grey 28x28 set upsampled to a colour run's 3x32x32 is told apart by its colour alone.
So the set is chosen explicitly, and any change made to its images is said, never silent:

* null (the default): the dataset's own — a registered image dataset's OOD partner's test set
  (:data:`~ensemble_distill.data.OOD_PARTNERS`), an image folder's ``DIR/ood/``, a table's
  ``shift`` split; none where it has none.
* ``none``: no OOD set; the OOD metrics are skipped.
* a registered OOD set's name (``mnist``, ``fashion-mnist``, ``cifar10``, ``svhn``): its test
  set, read from ``data_dir`` like the partners, its images converted to the run's input shape
  (:func:`converted_images`) where they differ.
* a folder: every image below it (class sub-folders or flat; labels ignored, hidden names
  skipped), decoded, resized and converted by the training folder's own transform
  (:class:`~ensemble_distill.data.image_files.ImageTransform`; for a registered image dataset,
  resized to its height and width), streamed or held in memory as the training images are.

Whichever it is, ``DataSplits.ood_source`` (:class:`OodSource`) says what the set is and how its
images were converted (``"grey 28x28 upsampled to 3x32x32"``); results.json records it as
``ood_set``, and the run log says it in one line (:func:`ood_line`), a warning when the images
were converted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ensemble_distill.data.base import ArrayDataset, DataSplits, OodSource
from ensemble_distill.data.identity import folder_identity
from ensemble_distill.data.image_files import ImageFiles, ImageTransform, default_workers
from ensemble_distill.data.imagefolder import EXTENSIONS, images_under, stored_forms
from ensemble_distill.errors import DataError
from ensemble_distill.resources import available_memory, byte_text

NONE = "none"
# ITU-R 601-2 luma, the weights of Pillow's convert("L") that a grey training folder's colour
# images go through: a colour set made grey for a grey run is made so alike.
LUMA = (0.299, 0.587, 0.114)
BATCH = 1024  # images converted at once


Form = tuple[int, tuple[int, int]]  # (channels, (height, width)) of a stored image


def choose_ood(
    splits: DataSplits,
    ood: str | None,
    *,
    data_dir: Path | None,
    download: bool,
    workers: int | None = None,
) -> DataSplits:
    """``splits`` with the OOD set ``ood`` names (see the module docstring) and its
    :class:`OodSource` (the pipeline logs it, :func:`ood_line`, once the run log is open).

    Args:
        workers: decoding processes for an OOD folder (the dataset's ``workers``); None: as
            many as the training folder's, else :func:`default_workers`.

    Raises:
        DataError: ``ood`` names no set, a folder without readable images, the run's own
            dataset, or image sets for a run whose inputs are not images.
    """
    if ood is None:
        sets, source = splits.ood, splits.ood_source or default_source(splits)
    elif ood == NONE:
        sets, source = {}, OodSource(None, "none: ood=none, so the OOD metrics are skipped")
    else:
        shape = image_shape(splits, ood)
        from ensemble_distill.data import OOD_TEST_SETS

        if ood in OOD_TEST_SETS:
            sets, source = registered_ood(ood, splits, shape, data_dir, download)
        else:
            sets, source = folder_ood(ood, splits, shape, data_dir, workers)
    return dataclasses.replace(splits, ood=sets, ood_source=source)


def ood_line(source: OodSource) -> tuple[int, str]:
    """The run log's line on the OOD set, and its level: a warning when its images were
    converted to the run's shape (its AUROC may then measure the conversion), else info."""
    if source.name is None:
        return logging.INFO, f"OOD set {source.source}"
    if source.converted is None:
        return logging.INFO, f"OOD set {source.name}: {source.source}"
    return logging.WARNING, (
        f"OOD set {source.name} ({source.source}): {source.converted}, unlike the training "
        "images; results.json says so (ood_set.converted). For a fair OOD AUROC name images "
        "like the training ones (ood=DIR), or skip it with ood=none"
    )


def default_source(splits: DataSplits) -> OodSource:
    """What the dataset's own OOD set is (``ood`` null), in words."""
    from ensemble_distill.data import OOD_PARTNERS

    if not splits.ood:
        return OodSource(
            None,
            f"none: dataset {splits.name} brings no OOD set; name one with ood=DIR (a folder "
            "of images) or ood=NAME (a registered set)",
        )
    name, data = next(iter(splits.ood.items()))
    if OOD_PARTNERS.get(splits.name) == name:
        source = f"{name}'s test set, the OOD partner of {splits.name}"
    else:
        source = f"{splits.name}'s own OOD split"
    shape = tuple(splits.input_shape)
    stored = tuple(data.x.shape[1:])
    converted = conversion([_form(stored)], shape) if len(shape) == len(stored) == 3 else None
    return OodSource(name, source, converted)


def image_shape(splits: DataSplits, ood: str) -> tuple[int, int, int]:
    """The run's (channels, height, width), refused for inputs that are not images."""
    shape = tuple(splits.input_shape)
    if len(shape) != 3:
        raise DataError(
            f"ood={ood!r} names images, but dataset {splits.name} has inputs of shape "
            f"{shape}; set ood to null (the dataset's own OOD set) or none"
        )
    return shape  # type: ignore[return-value]


def registered_ood(
    name: str,
    splits: DataSplits,
    shape: tuple[int, int, int],
    data_dir: Path | None,
    download: bool,
) -> tuple[dict[str, ArrayDataset], OodSource]:
    """The registered set ``name``'s test images, converted to ``shape`` where they differ."""
    from ensemble_distill.data import OOD_TEST_SETS

    if name == splits.name:
        raise DataError(
            f"ood={name} is the run's own dataset, whose test images are in-distribution; "
            "name another set, a folder of images, or none"
        )
    found = OOD_TEST_SETS.get(name)(data_dir, download)
    if not found:  # the reader logged where it looked
        raise DataError(
            f"ood={name}: its test set was not found (the warning above says where it was "
            f"looked for); place its files in DATA_DIR/{name}/, pass download=true, or set "
            "ood=none"
        )
    key, data = next(iter(found.items()))
    converted = conversion([_form(tuple(data.x.shape[1:]))], shape)
    x = data.x if converted is None else converted_images(data.x, shape, splits.transform, name)
    sets = {key: ArrayDataset(x, torch.zeros(len(x), dtype=torch.long))}
    return sets, OodSource(key, f"{name}'s test set (ood={name})", converted)


def folder_ood(
    value: str,
    splits: DataSplits,
    shape: tuple[int, int, int],
    data_dir: Path | None,
    workers: int | None,
) -> tuple[dict[str, ArrayDataset], OodSource]:
    """Every image below the folder ``value``, read through the training folder's transform
    (else resized to ``shape``), streamed when the training images are."""
    from ensemble_distill.data import OOD_TEST_SETS

    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"ood={value!r} is neither none, a registered OOD set "
            f"({', '.join(OOD_TEST_SETS.names())}) nor a folder; give a folder of images, one "
            "of those names, or none"
        )
    if data_dir is not None and folder.resolve() == Path(data_dir).expanduser().resolve():
        raise DataError(
            f"ood={value!r} is data_dir itself, whose images are in-distribution; give a "
            "folder of other images (e.g. DIR/ood/, the default), or none"
        )
    paths = images_under(folder)
    if not paths:
        raise DataError(
            f"ood folder {folder} holds no images ({', '.join(EXTENSIONS)}); add images, or "
            "set ood=none to skip the OOD metrics"
        )
    transform = splits.transform or ImageTransform(shape[0], shape[1:])
    forms = stored_forms(paths)  # headers only: an unreadable file is named before training
    if transform.size is None:
        check_native(paths, forms, transform.native)
    streamed = isinstance(splits.train.x, ImageFiles)
    if workers is None:
        workers = splits.train.x.workers if streamed else default_workers()
    files = ImageFiles(paths, transform, workers=workers)
    if not streamed:  # the training images are in memory: the OOD images join them there
        check_fits(len(paths), shape, value)
        x: Tensor | ImageFiles = torch.cat(list(files.batches(BATCH)))
    else:
        x = files
    name = folder.resolve().name or "ood"
    sets = {name: ArrayDataset(x, torch.zeros(len(paths), dtype=torch.long))}
    return sets, folder_source(name, folder, paths, shape, forms)


def folder_source(
    name: str,
    folder: Path,
    paths: Sequence[Path],
    shape: tuple[int, ...],
    forms: Sequence[Form] | None = None,
) -> OodSource:
    """The :class:`OodSource` of the images ``paths`` below ``folder`` read as ``shape``:
    their conversion (from the headers, ``forms`` where already read) and identity."""
    forms = stored_forms(paths) if forms is None else forms
    converted = conversion(forms, shape) if len(shape) == 3 else None  # type: ignore[arg-type]
    identity = folder_identity(folder, paths)
    return OodSource(name, f"the images under {folder}", converted, identity)


def check_native(paths: Sequence[Path], forms: Sequence[Form], native: tuple[int, int]) -> None:
    """Without ``image_size`` the training images are not resized, and neither are these: each
    must have the training images' (height, width)."""
    for path, (_, size) in zip(paths, forms, strict=True):
        if size != native:
            raise DataError(
                f"ood image {path} is {size[0]}x{size[1]} but the training images are "
                f"{native[0]}x{native[1]}; set dataset_args.image_size to resize every image "
                "to one size"
            )


def check_fits(count: int, shape: tuple[int, int, int], value: str) -> None:
    """``count`` float32 images of ``shape`` must fit in memory, twice while gathered."""
    need = 2 * count * 4 * shape[0] * shape[1] * shape[2]
    free = available_memory()
    if free is not None and need > free:
        raise DataError(
            f"ood={value}: {count} images of {shape[0]}x{shape[1]}x{shape[2]} float32 need "
            f"{byte_text(need)} while they are gathered but {byte_text(free)} is available; "
            "give fewer OOD images, or set ood=none"
        )


def conversion(forms: Sequence[Form], shape: tuple[int, int, int]) -> str | None:
    """How images stored as ``forms`` become ``shape`` (C, H, W), in words — e.g. ``"grey
    28x28 upsampled to 3x32x32"`` — or None when every one already has it."""
    channels, height, width = shape
    kinds = {c for c, _ in forms}
    sizes = sorted({size for _, size in forms}, key=lambda s: (s[0] * s[1], s))
    if kinds == {channels} and sizes == [(height, width)]:
        return None
    kind = {frozenset({1}): "grey", frozenset({3}): "colour"}.get(
        frozenset(kinds), "grey and colour"
    )
    if len(sizes) == 1:
        size = _size(sizes[0])
    else:
        size = f"of {len(sizes)} sizes from {_size(sizes[0])} to {_size(sizes[-1])}"
    if sizes == [(height, width)]:
        verb = "converted"
    elif all(h <= height and w <= width for h, w in sizes):
        verb = "upsampled"
    elif all(h >= height and w >= width for h, w in sizes):
        verb = "downsampled"
    else:
        verb = "resized"
    return f"{kind} {size} {verb} to {channels}x{height}x{width}"


def converted_images(
    x: Tensor, shape: tuple[int, int, int], transform: ImageTransform | None, name: str
) -> Tensor:
    """Images ``x`` (N, c, h, w) in [0, 1] as ``shape`` (C, H, W), batch by batch, as an image
    folder's files are: grey made colour by repeating it, colour made grey by Pillow's luma
    (rounded to 8 bits), then the shorter side scaled (bilinear, antialiased) to the
    transform's ``resize`` (else the crop's longer side) and centre-cropped."""
    check_fits(len(x), shape, name)
    resize = transform.resize if transform is not None else None
    return torch.cat([_converted(batch, shape, resize) for batch in x.split(BATCH)])


def _converted(x: Tensor, shape: tuple[int, int, int], resize: int | None) -> Tensor:
    channels, height, width = shape
    if x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 3 and channels == 1:
        luma = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        x = torch.round((x * luma).sum(dim=1, keepdim=True) * 255) / 255
    h, w = x.shape[-2:]
    scale = (resize or max(height, width)) / min(h, w)
    scaled = (max(height, round(h * scale)), max(width, round(w * scale)))
    if scaled != (h, w):
        x = F.interpolate(x, size=scaled, mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp(0.0, 1.0)  # bilinear overshoots nothing, antialiasing a little
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return x[:, :, top : top + height, left : left + width].contiguous()


def _form(stored: tuple[int, ...]) -> Form:
    return (stored[0], (stored[1], stored[2]))


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
