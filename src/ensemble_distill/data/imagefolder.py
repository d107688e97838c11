"""The user's own images: a folder with one sub-folder per class (torchvision's ImageFolder
layout), streamed from disk (:class:`~ensemble_distill.data.image_files.ImageFiles`).

Layouts of ``data_dir`` (the class folders' names, sorted, are the classes in label order)::

    DIR/<class>/*.png                   test and validation split off at random (seeded)
    DIR/train/<class>/*.png             the same, training images under train/
    DIR/train/..., DIR/val/<class>/..., DIR/test/<class>/...   given splits (either or both)
    DIR/ood/**/*.png                    optional: out-of-distribution images (set "ood")

Any format Pillow reads counts as an image (:data:`EXTENSIONS`); other files are ignored, and
so is everything hidden: at every level below ``data_dir`` (class folders, their sub-folders,
files, ``ood/``), a name that starts with ``.`` or is a known metadata folder
(:data:`METADATA_FOLDERS`: ``@eaDir``, ``__MACOSX``, ...) is skipped with all it holds. A
classifier needs at least two class folders. How files become pixels (bit depth, palette,
alpha, EXIF orientation): :mod:`ensemble_distill.data.image_files`.

Resources are checked before any image is decoded: ``workers`` at most the cores this process
may use (more only compete for them; the fix is stated), ``image_size`` at most Pillow's pixel
limit per image, and with ``in_memory`` the decoded images (twice N x C x H x W x 4 bytes
while they are gathered) against the memory available.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ensemble_distill.data.base import ArrayDataset, DataSplits, holdout_split, torch_permutations
from ensemble_distill.data.image_files import (
    GREY_MODES,
    ImageFiles,
    ImageTransform,
    cores,
    open_image,
    pixel_limit,
    upright_size,
)
from ensemble_distill.errors import ConfigError, DataError
from ensemble_distill.resources import available_memory, byte_text

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLITS = ("train", "val", "test")
OOD_FOLDER = "ood"
# Folders that file managers, NAS boxes, archivers and file systems add beside the user's files.
METADATA_FOLDERS = frozenset(
    {"@eaDir", "__MACOSX", "#recycle", "$RECYCLE.BIN", "System Volume Information", "lost+found"}
)


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is skipped at every level: a dot name or metadata."""
    return name.startswith(".") or name in METADATA_FOLDERS


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS and not is_hidden(path.name)


def images_under(folder: Path) -> list[Path]:
    """Every image below ``folder``, hidden folders not entered, sorted (symbolic links to
    folders below it are not followed, as ``Path.rglob`` does not)."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not is_hidden(name)]
        found += [path for name in files if is_image(path := Path(parent, name))]
    return sorted(found)


def class_folders(root: Path) -> list[Path]:
    """The class sub-folders of ``root`` (hidden ones and the split/OOD names skipped), sorted."""
    reserved = {*SPLITS, OOD_FOLDER}
    folders = (p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name))
    return sorted(p for p in folders if p.name not in reserved)


def scan_classes(root: Path, classes: Sequence[str] | None = None) -> tuple[list[Path], Tensor]:
    """Every image under ``root/<class>/`` (recursively) and its label.

    Args:
        classes: the classes in label order (from the training folder); None: ``root``'s own.
            A class folder of ``root`` outside them is refused.
    """
    folders = class_folders(root)
    names = [p.name for p in folders] if classes is None else list(classes)
    unknown = sorted({p.name for p in folders} - set(names))
    if unknown:
        raise DataError(
            f"{root} has class folders {', '.join(unknown)} that the training images lack; "
            f"the classes are {', '.join(names)}: rename or remove them"
        )
    paths, labels = [], []
    for folder in folders:
        images = images_under(folder)
        if not images:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(EXTENSIONS)}); add images "
                "or remove the folder"
            )
        paths += images
        labels += [names.index(folder.name)] * len(images)
    return paths, torch.tensor(labels, dtype=torch.long)


def load_imagefolder_splits(
    data_dir: Path | None,
    split_seed: int,
    val_fraction: float,
    *,
    image_size: int | Sequence[int] | None = None,
    resize: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.2,
    workers: int | None = None,
    in_memory: bool = False,
) -> DataSplits:
    """The images of ``data_dir`` as streamed :class:`DataSplits` (see the module docstring).

    Missing splits are held out stratified and seeded like every built-in dataset's: the test
    split (``test_fraction``) with ``split_seed``, then validation (``val_fraction``) with
    ``split_seed + 1``. Class names are kept (``DataSplits.class_names``) for the manifests.
    ``in_memory``: the caller will decode every image into memory; checked to fit first.
    """
    from ensemble_distill.data.image_files import default_workers

    workers = default_workers() if workers is None else check_workers(workers)
    root = _root(data_dir)
    train_root = root / "train" if (root / "train").is_dir() else root
    classes = [p.name for p in class_folders(train_root)]
    check_classes(train_root, classes)
    paths, labels = scan_classes(train_root)
    given = {
        split: scan_classes(root / split, classes)
        for split in ("val", "test")
        if train_root != root and (root / split).is_dir()
    }
    ood = _ood_images(root)
    transform = image_transform(paths[0], image_size, resize, channels)
    if transform.size is None:
        every = [*paths, *(p for split, _ in given.values() for p in split), *ood]
        check_native_sizes(every, transform.native)

    def files(split_paths: Sequence[Path]) -> ImageFiles:
        return ImageFiles(split_paths, transform, workers=workers)

    def dataset(split_paths: Sequence[Path], split_labels: Tensor, what: str) -> ArrayDataset:
        if not split_paths:
            fraction = {"val": "val_fraction", "test": "dataset_args.test_fraction"}.get(what)
            raise DataError(
                f"the {what} split of {root} is empty; add images"
                + (f", raise {fraction}" if fraction else "")
                + f" or give {root}/train/<class>/ and {root}/{what}/<class>/ folders"
            )
        return ArrayDataset(files(split_paths), split_labels)

    if "test" not in given:
        rest, held = _split(labels, test_fraction, split_seed)
        given["test"] = ([paths[i] for i in held], labels[held])
        paths, labels = [paths[i] for i in rest], labels[rest]
    if "val" not in given:
        rest, held = _split(labels, val_fraction, split_seed + 1)
        given["val"] = ([paths[i] for i in held], labels[held])
        paths, labels = [paths[i] for i in rest], labels[rest]
    if in_memory:
        every = len(paths) + sum(len(split) for split, _ in given.values()) + len(ood)
        check_fits_in_memory(every, transform.output_shape)
    return DataSplits(
        name="imagefolder",
        train=dataset(paths, labels, "train"),
        val=dataset(*given["val"], "val"),
        test=dataset(*given["test"], "test"),
        num_classes=len(classes),
        ood={OOD_FOLDER: ArrayDataset(files(ood), torch.zeros(len(ood), dtype=torch.long))}
        if ood
        else {},
        class_names=tuple(classes),
        transform=transform,
    )


def check_workers(workers: int) -> int:
    """``workers`` if this machine has the cores for them: decoding is CPU work, and more
    processes than cores only compete for them (and for memory)."""
    available = cores()
    if workers > available:
        raise ConfigError(
            f"dataset_args.workers={workers} is more than the {available} CPU cores this "
            f"process may use, and more decoding processes than cores only slow each other "
            f"down; set dataset_args.workers to at most {available} (0: decode in the training "
            "process)"
        )
    return workers


def check_classes(root: Path, classes: Sequence[str]) -> None:
    """A classifier needs two classes: a single class folder would train a 1-class model
    that scores accuracy 1.0."""
    hidden = sorted(p.name for p in root.iterdir() if p.is_dir() and is_hidden(p.name))
    if hidden:
        log.info("%s: skipped hidden folders %s", root, ", ".join(hidden))
    if len(classes) < 2:
        found = f"only the class folder {classes[0]}" if classes else "no class folders"
        raise DataError(
            f"{root} has {found}, and a classifier needs at least two; put each class's "
            f"images in its own sub-folder ({root}/<class>/image.png; names starting with "
            "'.' and metadata folders such as @eaDir are skipped)"
        )


def check_fits_in_memory(count: int, shape: tuple[int, int, int]) -> None:
    """``count`` decoded float32 images of ``shape`` (C, H, W) must fit in memory, twice: the
    decoded batches and the tensor they are gathered into coexist for a moment."""
    need = 2 * count * 4 * shape[0] * shape[1] * shape[2]
    free = available_memory()
    if free is not None and need > free:
        c, h, w = shape
        raise DataError(
            f"dataset_args.in_memory needs {byte_text(need)} ({count} images of {c}x{h}x{w} "
            f"float32 take {byte_text(need // 2)}, twice that while they are gathered) but "
            f"{byte_text(free)} is available; set in_memory: false to stream them from disk, or a "
            "smaller image_size"
        )


def _root(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(
            "dataset imagefolder reads data_dir: set data_dir=DIR, a folder with one "
            "sub-folder of images per class"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"data_dir {root} is not a folder; set data_dir to your image folder")
    if not (root / "train").is_dir():
        stray = [split for split in ("val", "test") if (root / split).is_dir()]
        if stray:
            raise DataError(
                f"{root} has {stray[0]}/ but no train/; put the training images in "
                f"{root}/train/<class>/"
            )
    return root


def _split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must lie in (0, 1); got {fraction}")
    return holdout_split(len(labels), fraction, torch_permutations(seed), strata=labels)


def _ood_images(root: Path) -> list[Path]:
    folder = root / OOD_FOLDER
    return images_under(folder) if folder.is_dir() else []


def image_transform(
    first: Path,
    image_size: int | Sequence[int] | None,
    resize: int | None,
    channels: int | None,
) -> ImageTransform:
    """The dataset_args checked and made a transform; ``first`` (the first training image)
    decides the channels and, without ``image_size``, the size every image must have."""
    size = _size(image_size)
    if resize is not None and (size is None or not isinstance(resize, int) or resize < 1):
        raise DataError(
            "dataset_args.resize (the shorter side before the centre crop) must be a positive "
            "integer and needs dataset_args.image_size (the crop)"
        )
    if channels not in (None, 1, 3):
        raise DataError(f"dataset_args.channels must be 1 or 3; got {channels!r}")
    with open_image(first) as image:
        mode, native = image.mode, upright_size(image)
    channels = channels or (1 if mode in GREY_MODES else 3)
    return ImageTransform(channels, size, resize, None if size else native)


def _size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = [image_size] * 2 if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
        raise DataError(
            f"dataset_args.image_size must be a positive integer or [height, width]; "
            f"got {image_size!r}"
        )
    limit = pixel_limit()
    if limit is not None and size[0] * size[1] > limit:
        raise DataError(
            f"dataset_args.image_size {size[0]}x{size[1]} is {size[0] * size[1]:,} pixels per "
            f"image ({byte_text(4 * size[0] * size[1])} per channel as float32), more than the "
            f"{limit:,} pixels Pillow decodes; choose a smaller image_size"
        )
    return (size[0], size[1])


def stored_forms(paths: Sequence[Path]) -> list[tuple[int, tuple[int, int]]]:
    """Each image's channels (1: a grey mode, else 3) and (height, width) as displayed, from
    its header alone; an unreadable file is a one-line :class:`DataError` naming it."""
    forms = []
    for path in paths:
        with open_image(path) as image:
            forms.append((1 if image.mode in GREY_MODES else 3, upright_size(image)))
    return forms


def check_native_sizes(paths: Sequence[Path], native: tuple[int, int]) -> None:
    """Without ``image_size`` every image must have the first one's size as displayed (its
    EXIF orientation applied; headers only)."""
    for path in paths:
        with open_image(path) as image:
            height, width = upright_size(image)
        if (height, width) != native:
            raise DataError(
                f"image {path} is {height}x{width} but {paths[0]} is {native[0]}x{native[1]}; "
                "set dataset_args.image_size to resize every image to one size"
            )
