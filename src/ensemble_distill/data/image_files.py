"""Images read from files as they are needed, instead of held in memory.

:class:`ImageFiles` stands in for an (N, channels, height, width) float32 tensor of pixels in
[0, 1] wherever the engine indexes one: ``x[index]``, ``x[a:b]``, ``x.to(device)``, ``len(x)``,
``x.shape``. Only the indexed images are decoded, by Pillow, so 50 000 RGB images at 224² need
no 30 GB of memory. Two paths keep the decoding off the critical path, both through a
:class:`torch.utils.data.DataLoader` with worker processes:

* sequential passes (prediction, evaluation, teacher outputs): :func:`batches_of`;
* training: ``fit`` knows each epoch's batches when it draws the epoch's order and hands them
  to :meth:`ImageFiles.plan`; the workers then decode them ahead, in that order, while the
  network trains on the previous ones. Indexing with anything other than the next planned
  batch decodes in the calling process (and drops the plan).

Decoding is deterministic, so results do not depend on the number of workers.

How a file becomes pixels in [0, 1] (:func:`decode`), whatever its format and Pillow mode:

* the EXIF orientation is applied first (``ImageOps.exif_transpose``): the image is read the
  way viewers show it, and its size is the displayed one;
* integers are scaled by their bit depth: 8-bit modes by 255; 16-bit greyscale (``I;16``,
  ``I;16B``, ``I;16L``, and ``I``, which must hold 0..65535) by 65535, kept at float precision
  through resizing (a 12-bit image stored in 16 bits decodes to at most 4095/65535); 16-bit
  colour files, which Pillow reads at 8 bits per channel, by 255; ``1`` (bilevel) is 0 or 1;
  ``F`` (32-bit float) is taken as it is and must lie in [0, 1];
* palette images (``P``, ``PA``) through their palette; ``CMYK``, ``YCbCr``, ``LAB`` and
  ``HSV`` by Pillow's conversion to RGB (embedded ICC profiles are not applied);
* alpha — an alpha channel (``LA``, ``PA``, ``RGBA``, premultiplied ``La``/``RGBa``) or a
  transparent colour (a PNG's ``tRNS``) — is composited on black: each channel is multiplied
  by the opacity, so fully transparent pixels are 0 whatever colour they store;
* grey sources give 3 equal channels where the dataset is colour, colour sources Pillow's
  luma (ITU-R 601-2) where it is grey.

Before any pixel is decoded, a file whose header claims more pixels than Pillow's limit
(``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485: a decompression bomb or an image too large to
decode) is refused, and so is a resize that would scale an image beyond it. Every unreadable
file is refused with one line naming the file and the problem (:func:`open_image`): an empty
file, a file that is not an image, a symbolic link to something that is not one.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ensemble_distill.errors import DataError

log = logging.getLogger(__name__)

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" must hold 0..65535 too
GREY_MODES = ("1", "L", "LA", "La", "F", *SIXTEEN_BIT_MODES)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
ORIENTATION = 0x0112  # the EXIF tag; 5..8 swap width and height


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """Decoding processes when the config names none: one core is left to training."""
    return min(4, max(0, cores() - 1))


def pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit on pixels per image (None where it is switched off)."""
    from PIL import Image

    return Image.MAX_IMAGE_PIXELS


@contextmanager
def open_image(path: Path) -> Iterator:
    """``path`` opened by Pillow; every failure, while opening or decoding in the ``with``
    block, becomes a one-line :class:`DataError` naming the file and what is wrong with it.

    A header that claims more pixels than :func:`pixel_limit` is refused before anything is
    decoded (Pillow only warns between the limit and twice the limit; here both refuse).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(_bomb_message(path, str(exc))) from None
    except UnidentifiedImageError:
        raise DataError(_not_an_image_message(path)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"cannot read image {path} ({exc}); remove or replace it") from None


def _bomb_message(path: Path, pillow_message: str) -> str:
    claimed = re.search(r"\((\d+) pixels\)", pillow_message)
    pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels"
    return (
        f"image {path} claims {pixels}, more than the {pixel_limit():,} Pillow decodes (a "
        "decompression bomb, or an image too large to decode); remove it or save it smaller"
    )


def _not_an_image_message(path: Path) -> str:
    """Why Pillow could not identify ``path``, in the words a user needs."""
    if path.is_symlink():
        target = os.path.realpath(path)
        return (
            f"image {path} is a symbolic link to {target}, which is not an image (Pillow "
            "cannot identify it); remove the link or point it at an image"
        )
    if os.path.getsize(path) == 0:
        return f"image {path} is an empty file (0 bytes); remove it or copy the image again"
    return (
        f"image {path} is not an image (Pillow cannot identify it; is it really a "
        f"{path.suffix} file?); remove or replace it"
    )


def upright_size(image) -> tuple[int, int]:
    """(height, width) of an opened image as displayed: its EXIF orientation applied, from the
    header only (nothing decoded; an EXIF block after a PNG's pixels counts once decoded).

    A TIFF's stored size is read from its tags: recent Pillows report it already turned."""
    from PIL import Image

    height, width = image.height, image.width
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 256 in tags and 257 in tags:  # ImageWidth, ImageLength
        height, width = int(tags[257]), int(tags[256])
    return (width, height) if _orientation(image, Image.Image.getexif) > 4 else (height, width)


def _orientation(image, getexif) -> int:
    """The EXIF orientation of ``image`` read by ``getexif`` (1..8): 1 where there is none or
    where the EXIF block is damaged — such a file is read as stored, as viewers show it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" notes
            orientation = getexif(image).get(ORIENTATION, 1)
    except Exception:  # damaged EXIF raises SyntaxError, struct.error, ValueError, ...
        return 1
    return orientation if orientation in range(1, 9) else 1


def decode(image, path: Path, channels: int):
    """An opened image, upright, as a Pillow image of mode ``L`` or ``RGB`` (8-bit sources) or
    ``F`` (16-bit and float greyscale, in [0, 1]) — see the module docstring for the rules."""
    from PIL import ImageOps

    image = _loaded(image, path)
    if _orientation(image, type(image).getexif) != 1:
        image = ImageOps.exif_transpose(image)
    image = _canonical(image, path)
    if image.mode == "F":
        return image
    return image.convert("L" if channels == 1 else "RGB")


def _loaded(image, path: Path):
    """``image`` with its pixels decoded. Pillow's TIFF reader turns an image by its
    orientation itself, but for an uncompressed TIFF turned by 5..8 its Python path (Pillow
    13) scrambles the pixels: such a file is read again through libtiff, which turns it right
    (tested)."""
    from PIL import Image, TiffImagePlugin

    python_tiff = getattr(image, "use_load_libtiff", None) is False
    if not (python_tiff and _orientation(image, Image.Image.getexif) > 4):
        image.load()
        return image
    default, TiffImagePlugin.READ_LIBTIFF = TiffImagePlugin.READ_LIBTIFF, True
    try:
        with Image.open(path) as again:
            again.load()
            return again.copy()
    finally:
        TiffImagePlugin.READ_LIBTIFF = default


def _canonical(image, path: Path):
    """``image`` as ``L``, ``RGB`` (alpha and transparency composited on black) or ``F``."""
    mode, transparent = image.mode, "transparency" in image.info
    if mode in SIXTEEN_BIT_MODES or mode == "F":
        return _grey_float(image, path)
    if mode in ("LA", "La") or (mode in ("1", "L") and transparent):
        return _on_black(image.convert("LA"))
    if mode in ALPHA_MODES or transparent:
        return _on_black(image.convert("RGBA"))
    return image if mode in ("1", "L", "RGB") else image.convert("RGB")


def _on_black(image):
    """An ``LA`` or ``RGBA`` image composited on black: colour × alpha / 255, rounded."""
    from PIL import Image

    pixels = np.asarray(image).astype(np.uint32)
    colour = ((pixels[..., :-1] * pixels[..., -1:] + 127) // 255).astype(np.uint8)
    return Image.fromarray(colour[..., 0] if image.mode == "LA" else colour)


def _grey_float(image, path: Path):
    """A 16-bit (or float) greyscale image as mode ``F`` in [0, 1], its transparent value 0."""
    from PIL import Image

    values = np.asarray(image)
    if image.mode == "F":
        if not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise DataError(
                f"image {path} holds floating-point pixels in [{values.min()}, "
                f"{values.max()}]; float images must lie in [0, 1]: rescale it or save it "
                "as 8- or 16-bit integers"
            )
        return image
    if values.min() < 0 or values.max() > 65535:
        raise DataError(
            f"image {path} holds 32-bit integer pixels in [{values.min()}, {values.max()}]; "
            "integer greyscale images are read as 16-bit (0..65535): save it as a 16-bit PNG "
            "or TIFF"
        )
    grey = values.astype(np.float32) / np.float32(65535)
    key = image.info.get("transparency")
    if isinstance(key, int):
        grey[values == key] = 0
    return Image.fromarray(grey, "F")


@dataclass(frozen=True)
class ImageTransform:
    """How one file becomes a (channels, height, width) float32 tensor in [0, 1].

    Attributes:
        channels: 1 (Pillow mode ``L``) or 3 (``RGB``).
        size: the output (height, width); None: the file's own size, which must then be
            ``native`` (every image of a dataset has one shape).
        resize: the shorter side is scaled to this (bilinear, antialiased) before the centre
            crop to ``size``; None: to the crop's longer side, so that the crop fits.
        native: the (height, width) every file must have when ``size`` is None.
    """

    channels: int
    size: tuple[int, int] | None = None
    resize: int | None = None
    native: tuple[int, int] | None = None

    @property
    def output_shape(self) -> tuple[int, int, int]:
        height, width = self.size or self.native
        return (self.channels, height, width)

    def __call__(self, path: Path) -> Tensor:
        with open_image(path) as image:
            image = decode(image, path, self.channels)
        if self.size is not None:
            image = self._resized_crop(image, path)
        elif (image.height, image.width) != self.native:
            raise DataError(
                f"image {path} is {image.height}x{image.width} but the others are "
                f"{self.native[0]}x{self.native[1]}; set dataset_args.image_size to resize "
                "every image to one size"
            )
        return _tensor(image, self.channels)

    def _resized_crop(self, image, path: Path):
        from PIL import Image

        height, width = self.size
        shorter = self.resize or max(height, width)
        scale = shorter / min(image.height, image.width)
        scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        limit = pixel_limit()
        if limit is not None and scaled[0] * scaled[1] > limit:
            raise DataError(
                f"image {path} ({image.height}x{image.width}) would be scaled to "
                f"{scaled[1]}x{scaled[0]} before the centre crop, more than the {limit:,} "
                "pixels Pillow decodes; crop it to a less elongated shape or remove it"
            )
        if scaled != image.size:
            image = image.resize(scaled, Image.Resampling.BILINEAR)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))


def _tensor(image, channels: int) -> Tensor:
    """A decoded ``L``/``RGB`` (÷255) or ``F`` image as a (channels, H, W) float32 tensor."""
    if image.mode == "F":
        pixels = np.asarray(image, dtype=np.float32)[..., None].repeat(channels, axis=-1)
        return torch.from_numpy(pixels.transpose(2, 0, 1).copy())
    pixels = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, -1)
    return torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255.0)


class _Files(Dataset):
    """The DataLoader's view: file i decoded (what a worker process runs)."""

    def __init__(self, paths: Sequence[Path], transform: ImageTransform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return self.transform(self.paths[i])


class ImageFiles:
    """An (N, channels, height, width) float32 image tensor read from ``paths`` on indexing.

    Args:
        paths: one file per example, in example order.
        transform: how a file is decoded, resized and cropped.
        workers: DataLoader worker processes for sequential passes and planned batches (0:
            decode in the calling process).
        device: where indexed batches are put (:meth:`to`).
        layout: applied to every decoded batch, e.g. a channels-last copy (:meth:`mapped`).
    """

    dtype = torch.float32

    def __init__(
        self,
        paths: Sequence[Path],
        transform: ImageTransform,
        *,
        workers: int = 0,
        device: torch.device | str = "cpu",
        layout: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.transform = transform
        self.workers = workers
        self.device = torch.device(device)
        self.layout = layout
        self._stats: tuple[list[float], list[float]] | None = None
        self._plan: deque[Tensor] = deque()
        self._planned: Iterator[Tensor] | None = None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), *self.transform.output_shape))

    def __len__(self) -> int:
        return len(self.paths)

    def dim(self) -> int:
        return 4

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, shape {tuple(self.shape)}, workers={self.workers})"

    def _like(self, **changes) -> ImageFiles:
        kwargs = dict(workers=self.workers, device=self.device, layout=self.layout) | changes
        other = ImageFiles(kwargs.pop("paths", self.paths), self.transform, **kwargs)
        if "paths" not in changes:
            other._stats = self._stats
        return other

    def to(self, device: torch.device | str) -> ImageFiles:
        """The same files, with indexed batches put on ``device``."""
        return self._like(device=device)

    def mapped(self, layout: Callable[[Tensor], Tensor]) -> ImageFiles:
        """The same files, every decoded batch passed through ``layout`` (e.g. channels-last)."""
        return self._like(layout=layout)

    def subset(self, index: Tensor) -> ImageFiles:
        """Examples ``index`` (int64), without reading a file."""
        return self._like(paths=[self.paths[i] for i in index.tolist()])

    def __getitem__(self, index: int | slice | Tensor) -> Tensor:
        """The images at ``index``: (*index.shape, C, H, W) for an integer tensor, (k, C, H, W)
        for a slice, (C, H, W) for an int. The next planned batch comes from the workers."""
        if isinstance(index, int):
            return self._finish(self.transform(self.paths[index]).unsqueeze(0))[0]
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        index = torch.as_tensor(index).cpu()
        flat = index.flatten()
        if self._plan and torch.equal(flat, self._plan[0]):
            self._plan.popleft()
            batch = next(self._planned)
        else:
            if self._plan:  # the caller went off the plan: stop decoding ahead for it
                log.debug("batch off the plan; decoding in the calling process until the next")
                self._plan, self._planned = deque(), None
            batch = self._decode(flat.tolist())
        return _unflatten(self._finish(batch), tuple(index.shape))

    def _decode(self, rows: list[int]) -> Tensor:
        if not rows:
            return torch.empty((0, *self.transform.output_shape))
        return torch.stack([self.transform(self.paths[i]) for i in rows])

    def _finish(self, batch: Tensor) -> Tensor:
        """A decoded (n, C, H, W) batch in the layout and on the device indexing gives."""
        if self.layout is not None:
            batch = self.layout(batch)
        return batch.to(self.device)

    def _loader(self, batches: list[list[int]]) -> Iterator[Tensor]:
        """The decoded ``batches`` in order, from worker processes (or this one)."""
        loader = DataLoader(
            _Files(self.paths, self.transform),
            batch_sampler=batches,
            num_workers=self.workers,
            prefetch_factor=4 if self.workers else None,
            # Its own seed source: a DataLoader otherwise draws one from torch's global RNG,
            # and training would no longer be the same with streamed and in-memory images.
            generator=torch.Generator(),
        )
        return _short_errors(iter(loader))

    def plan(self, batches: Sequence[Tensor]) -> None:
        """The index tensors the next ``x[index]`` calls will use, in order: decoded ahead."""
        self._plan = deque(b.flatten().cpu() for b in batches)
        self._planned = self._loader([b.tolist() for b in self._plan])

    def _in_order(self, batch_size: int) -> list[list[int]]:
        starts = range(0, len(self), batch_size)
        return [list(range(s, min(s + batch_size, len(self)))) for s in starts]

    def batches(self, batch_size: int) -> Iterator[Tensor]:
        """Every image in order, ``batch_size`` at a time (the last batch may be smaller)."""
        for batch in self._loader(self._in_order(batch_size)):
            yield self._finish(batch)

    def channel_stats(self, batch_size: int = 256) -> tuple[list[float], list[float]]:
        """Per-channel mean and (unbiased) standard deviation over every image, in one pass
        (float64 sums), computed once."""
        if self._stats is None:
            total = squares = 0
            for batch in self._loader(self._in_order(batch_size)):
                pixels = batch.double().transpose(0, 1).flatten(1)  # (C, n·H·W)
                total = total + pixels.sum(1)
                squares = squares + (pixels * pixels).sum(1)
            count = len(self) * math.prod(self.transform.output_shape[1:])
            mean = total / count
            variance = (squares - count * mean * mean) / max(count - 1, 1)
            self._stats = (mean.tolist(), variance.clamp_min(0).sqrt().tolist())
        return self._stats


def _unflatten(batch: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(n, C, H, W) as (*shape, C, H, W), n = prod(shape), the image axes' strides kept as
    they are (``view`` renormalises a one-channel channels-last batch's, and then convolutions
    take another path than on an indexed in-memory tensor)."""
    if len(shape) == 1:
        return batch
    outer = [batch.stride(0) * math.prod(shape[i + 1 :]) for i in range(len(shape))]
    return batch.as_strided((*shape, *batch.shape[1:]), (*outer, *batch.stride()[1:]))


def _short_errors(batches: Iterator[Tensor]) -> Iterator[Tensor]:
    """A worker's DataError re-raised with its own one-line message (the DataLoader's copy
    carries the worker's traceback)."""
    try:
        yield from batches
    except DataError as exc:
        last = str(exc).strip().splitlines()[-1]  # "ensemble_distill.errors.DataError: ..."
        raise DataError(re.sub(r"^[\w.]*DataError: ", "", last)) from None


def batches_of(x: Tensor | ImageFiles, batch_size: int) -> Iterator[Tensor]:
    """``x`` in order, ``batch_size`` examples at a time: slices of a tensor, or images decoded
    by worker processes for :class:`ImageFiles`."""
    if isinstance(x, ImageFiles):
        yield from x.batches(batch_size)
        return
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def planner(*sources: Tensor | ImageFiles | None) -> Callable[[Sequence[Tensor]], None] | None:
    """What ``fit`` calls with each epoch's index batches so that the :class:`ImageFiles`
    among ``sources`` decode them ahead; None when none streams."""
    streamed = [x for x in sources if isinstance(x, ImageFiles)]
    if not streamed:
        return None

    def plan(batches: Sequence[Tensor]) -> None:
        for x in streamed:
            x.plan(batches)

    return plan


def in_unit_interval(x: Tensor | ImageFiles) -> bool:
    """Whether every value of ``x`` lies in [0, 1] (decoded pixels always do)."""
    return isinstance(x, ImageFiles) or bool(x.min() >= 0 and x.max() <= 1)
