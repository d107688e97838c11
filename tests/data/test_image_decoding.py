"""Image files decoded faithfully (``dataset=imagefolder``): every Pillow mode scaled by its bit
depth, palettes and CMYK converted, alpha composited on black, EXIF orientation applied.

The references are independent of the loader: arrays written into files (16-bit PNGs and PGMs
by a hand-written encoder, not by Pillow), scaled by their bit depth with NumPy, alpha
composited and orientations applied as the specifications define them; only for lossy JPEG and
for LAB is the reference Pillow's own mode-aware conversion of the same file.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_distill.data import create_dataset
from ensemble_distill.data.image_files import ImageTransform
from ensemble_distill.data.imagefolder import image_transform
from ensemble_distill.errors import DataError

RNG = np.random.default_rng(7)
H, W = 6, 8  # not square: a transposition would show


def png_bytes(array: np.ndarray, colour_type: int, bit_depth: int) -> bytes:
    """A PNG written by hand (no Pillow): filter 0 rows, big-endian samples, one IDAT."""
    height, width = array.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    rows = array.reshape(height, width, -1).astype(sample)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def load(path: Path, channels: int | None = None) -> np.ndarray:
    """Our loader on one file (the transform ``create_dataset`` builds for it) as (H, W, C)."""
    return image_transform(path, None, None, channels)(path).numpy().transpose(1, 2, 0)


def saved(tmp_path: Path, image: Image.Image, fmt: str, **options) -> Path:
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, fmt, **options)
    return path


def written(tmp_path: Path, data: bytes, name: str = "image.png") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def on_black(colour: np.ndarray, alpha: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """Composited on black: colour × opacity, in [0, 1] (rounded to 8 bits for 8-bit data)."""
    mixed = colour.astype(np.float64) * (alpha[..., None] / scale)
    return (np.round(mixed) / 255.0) if scale == 255.0 else mixed / scale


def uint16(*shape: int, high: int = 65536) -> np.ndarray:
    return RNG.integers(0, high, (H, W, *shape), dtype=np.uint16).squeeze()


def uint8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, (H, W, *shape), dtype=np.uint8).squeeze()


def grey(array: np.ndarray) -> np.ndarray:
    return array[..., None]


def test_a_12_bit_png_decodes_to_its_values_over_65535_not_to_a_binary_image(tmp_path):
    """The acceptance case: 12-bit data stored in a 16-bit PNG (values 0, 16, ..., 4080)."""
    values = (RNG.integers(0, 256, (H, W)) * 16).astype(np.uint16)
    values[0, :3] = (0, 16, 4080)
    pixels = load(written(tmp_path, png_bytes(values, 0, 16)))
    assert pixels.shape == (H, W, 1) and pixels.max() == pytest.approx(4080 / 65535)
    assert np.allclose(pixels[..., 0], values / 65535, rtol=0, atol=1e-7)
    assert len(np.unique(pixels)) == len(np.unique(values)) > 2


def pillow_16(tmp_path: Path, mode: str, fmt: str) -> tuple[Path, np.ndarray]:
    values = uint16()
    order = ">u2" if mode == "I;16B" else "<u2"
    if mode == "I":
        image = Image.fromarray(values.astype(np.int32), "I")
    else:
        image = Image.frombytes(mode, (W, H), values.astype(order).tobytes())
    return saved(tmp_path, image, fmt), values


def pgm_16(tmp_path: Path) -> tuple[Path, np.ndarray]:
    values = uint16()
    header = f"P5\n{W} {H}\n65535\n".encode()
    return written(tmp_path, header + values.astype(">u2").tobytes(), "image.pgm"), values


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: (written(tmp, png_bytes(v := uint16(), 0, 16)), v),
        lambda tmp: pillow_16(tmp, "I;16", "PNG"),
        lambda tmp: pillow_16(tmp, "I;16", "TIFF"),
        lambda tmp: pillow_16(tmp, "I;16B", "TIFF"),
        lambda tmp: pillow_16(tmp, "I;16L", "TIFF"),
        lambda tmp: pillow_16(tmp, "I", "TIFF"),
        pgm_16,
    ],
    ids=["png-by-hand", "I;16-png", "I;16-tiff", "I;16B-tiff", "I;16L-tiff", "I-tiff", "pgm"],
)
def test_16_bit_greyscale_is_scaled_by_65535_in_every_mode(tmp_path, make):
    path, values = make(tmp_path)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I;16B", "I;16L", "I")  # what is being tested
    pixels = load(path)
    assert pixels.shape == (H, W, 1)
    assert np.allclose(pixels[..., 0], values / 65535, rtol=0, atol=1e-7)
    colour = load(path, channels=3)  # grey as 3 equal channels, at the same precision
    assert np.array_equal(colour, np.repeat(pixels, 3, axis=-1))


@pytest.mark.parametrize(
    ("colour_type", "channels"), [(2, 3), (6, 4), (4, 2)], ids=["RGB", "RGBA", "LA"]
)
def test_16_bit_colour_and_alpha_pngs_are_scaled_by_their_depth(tmp_path, colour_type, channels):
    """Pillow reads 16-bit colour (and grey with alpha) at 8 bits per channel: within 1/255 of
    the exact value (2/255 with alpha), not clipped."""
    values = uint16(channels)
    expected = values / 65535
    if colour_type != 2:
        expected = on_black(values[..., :-1], values[..., -1], scale=65535.0)
    path = written(tmp_path, png_bytes(values, colour_type, 16))
    pixels = load(path, channels=expected.shape[-1])
    assert pixels.shape == (H, W, expected.shape[-1])
    assert np.abs(pixels - expected).max() <= 2 / 255


def test_a_16_bit_image_is_resized_at_float_precision(tmp_path):
    values = (RNG.integers(0, 256, (24, 32)) * 16).astype(np.uint16)  # 12-bit again
    path = written(tmp_path, png_bytes(values, 0, 16))
    pixels = ImageTransform(1, size=(6, 8), resize=6)(path)[0].numpy()  # a quarter, no crop
    scaled = Image.fromarray((values / 65535).astype(np.float32), "F")
    expected = np.asarray(scaled.resize((8, 6), Image.Resampling.BILINEAR))
    assert np.allclose(pixels, expected, rtol=0, atol=1e-6)
    assert pixels.max() <= 4080 / 65535 and len(np.unique(pixels)) > 10


def bilevel(tmp_path, fmt):
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    return saved(tmp_path, Image.fromarray(bits), fmt), grey(bits.astype(np.float64))


def luminance(tmp_path, fmt):
    values = uint8()
    return saved(tmp_path, Image.fromarray(values, "L"), fmt), grey(values / 255)


def rgb(tmp_path, fmt, **options):
    values = uint8(3)
    return saved(tmp_path, Image.fromarray(values, "RGB"), fmt, **options), values / 255


def with_alpha(tmp_path, mode, fmt, **options):
    values = uint8(len(mode))
    values[0, 0, -1], values[0, 1, -1] = 0, 255  # fully transparent and fully opaque pixels
    path = saved(tmp_path, Image.fromarray(values, mode), fmt, **options)
    return path, on_black(values[..., :-1], values[..., -1])


def grey_with_transparent_value(tmp_path):
    values = uint8()
    key = int(values[0, 0])
    path = saved(tmp_path, Image.fromarray(values, "L"), "PNG", transparency=key)
    return path, grey(np.where(values == key, 0, values) / 255)


def palette(tmp_path, fmt, alpha: bool = False, mode="P"):
    colours = RNG.integers(0, 256, (256, 3), dtype=np.uint8)
    index = uint8()
    image = Image.fromarray(index, "P")
    image.putpalette(colours.tobytes())
    expected = colours[index] / 255
    options = {}
    if alpha:
        opacity = RNG.integers(0, 256, 256, dtype=np.uint8)
        opacity[index[0, 0]] = 0
        expected = on_black(colours[index], opacity[index])
        if mode == "PA":
            image = image.convert("PA")
            image.putalpha(Image.fromarray(opacity[index], "L"))
        else:
            options["transparency"] = opacity.tobytes()
    return saved(tmp_path, image, fmt, **options), expected


def cmyk(tmp_path):
    values = uint8(4)
    path = saved(tmp_path, Image.fromarray(values, "CMYK"), "TIFF")
    ink, black = values[..., :3].astype(np.float64), values[..., 3:].astype(np.float64)
    return path, (255 - ink) * (255 - black) / 255 / 255  # the naive conversion, no profile


def ycbcr(tmp_path):
    values = uint8(3).astype(np.float64)
    path = saved(tmp_path, Image.fromarray(values.astype(np.uint8), "YCbCr"), "TIFF")
    y, cb, cr = values[..., 0], values[..., 1] - 128, values[..., 2] - 128  # JFIF (ITU-R 601)
    colour = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return path, np.clip(colour, 0, 255) / 255


def floats(tmp_path):
    values = RNG.random((H, W), dtype=np.float32)
    values[0, :2] = (0.0, 1.0)
    return saved(tmp_path, Image.fromarray(values, "F"), "TIFF"), grey(values)


@pytest.mark.parametrize(
    ("make", "tolerance"),
    [
        (lambda tmp: bilevel(tmp, "PNG"), 0),
        (lambda tmp: bilevel(tmp, "TIFF"), 0),
        (lambda tmp: bilevel(tmp, "BMP"), 0),
        (lambda tmp: luminance(tmp, "PNG"), 0),
        (lambda tmp: luminance(tmp, "TIFF"), 0),
        (lambda tmp: with_alpha(tmp, "LA", "PNG"), 0),
        (grey_with_transparent_value, 0),
        (lambda tmp: rgb(tmp, "PNG"), 0),
        (lambda tmp: rgb(tmp, "BMP"), 0),
        (lambda tmp: rgb(tmp, "PPM"), 0),
        (lambda tmp: rgb(tmp, "WEBP", lossless=True), 0),
        (lambda tmp: with_alpha(tmp, "RGBA", "PNG"), 0),
        (lambda tmp: with_alpha(tmp, "RGBA", "TIFF"), 0),
        (lambda tmp: with_alpha(tmp, "RGBA", "WEBP", lossless=True, exact=True), 0),
        (lambda tmp: palette(tmp, "PNG"), 0),
        (lambda tmp: palette(tmp, "GIF"), 0),
        (lambda tmp: palette(tmp, "PNG", alpha=True), 0),
        (lambda tmp: palette(tmp, "TIFF", alpha=True, mode="PA"), 0),
        (cmyk, 1 / 255),
        (ycbcr, 1 / 255),
        (floats, 0),
    ],
    ids=[
        "1-png", "1-tiff", "1-bmp", "L-png", "L-tiff", "LA-png", "L-tRNS-png", "RGB-png",
        "RGB-bmp", "RGB-ppm", "RGB-webp", "RGBA-png", "RGBA-tiff", "RGBA-webp", "P-png", "P-gif",
        "P-tRNS-png", "PA-tiff", "CMYK-tiff", "YCbCr-tiff", "F-tiff",
    ],
)  # fmt: skip
def test_8_bit_palette_cmyk_alpha_and_float_modes_match_the_reference(tmp_path, make, tolerance):
    path, expected = make(tmp_path)
    pixels = load(path)
    assert pixels.shape == expected.shape and pixels.dtype == np.float32
    assert np.abs(pixels - expected).max() <= tolerance + 1e-7


@pytest.mark.parametrize(
    ("mode", "target"), [("L", "L"), ("RGB", "RGB"), ("CMYK", "RGB")], ids=["L", "RGB", "CMYK"]
)
def test_lossy_jpegs_are_pillows_mode_aware_conversion(tmp_path, mode, target):
    source = Image.fromarray(uint8(4), "CMYK").convert(mode) if mode != "L" else None
    path = saved(tmp_path, source or Image.fromarray(uint8(), "L"), "JPEG", quality=70)
    with Image.open(path) as image:
        assert image.mode == mode
        reference = np.asarray(image.convert(target), dtype=np.float64) / 255
    assert np.array_equal(load(path), reference.reshape(H, W, -1).astype(np.float32))


def test_lab_tiffs_are_pillows_conversion_to_rgb(tmp_path):
    path = saved(tmp_path, Image.fromarray(uint8(3), "RGB").convert("LAB"), "TIFF")
    with Image.open(path) as image:
        assert image.mode == "LAB"
        reference = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    assert np.array_equal(load(path), reference)


# The EXIF orientations as the specification defines them: how the stored rows and columns
# are to be shown. Pillow's ImageOps.exif_transpose is not the reference.
ORIENTED = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1),  # shown turned 90° clockwise
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_the_exif_orientation_is_applied(tmp_path, orientation, fmt):
    values = np.repeat(np.repeat(uint8() // 2 * 2, 8, axis=0), 8, axis=1)  # smooth for JPEG
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = saved(tmp_path, Image.fromarray(values, "L"), fmt, exif=exif.tobytes())
    shown = ORIENTED[orientation](values) / 255
    pixels = load(path)[..., 0]
    assert pixels.shape == shown.shape
    if fmt == "JPEG":
        assert np.abs(pixels - shown).mean() < 2 / 255
    else:
        assert np.array_equal(pixels, shown.astype(np.float32))


def test_a_folder_of_turned_images_has_the_displayed_size(tmp_path):
    """A photo stored 6x8 with orientation 6 (shown 8x6) sits with images stored 8x6."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(10):
            upright = np.ascontiguousarray(uint8().T)  # stored 8x6
            Image.fromarray(upright, "L").save(tmp_path / name / f"{k}.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    turned, path = uint8(), tmp_path / "a" / "0-turned.png"  # the first image: sets the size
    Image.fromarray(turned, "L").save(path, exif=exif.tobytes())
    data = create_dataset("imagefolder", data_dir=tmp_path, workers=0)
    assert data.input_shape == (1, W, H)
    (x,) = [split.x for split in (data.train, data.val, data.test) if path in split.x.paths]
    shown = (np.rot90(turned, -1) / 255).astype(np.float32)
    assert np.array_equal(x[x.paths.index(path)][0].numpy(), shown)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (Image.fromarray(np.array([[0, 70000]], dtype=np.int32), "I"), r"in \[0, 70000\].*16-bit"),
        (
            Image.fromarray(np.array([[0, 2.5]], dtype=np.float32), "F"),
            r"\[0.0, 2.5\].*\[0, 1\]",
        ),
        (Image.fromarray(np.array([[0, np.nan]], dtype=np.float32), "F"), r"nan.*\[0, 1\]"),
    ],
    ids=["I-beyond-16-bit", "F-beyond-1", "F-nan"],
)
def test_values_that_have_no_scale_are_refused_naming_the_file(tmp_path, image, message):
    path = saved(tmp_path, image, "TIFF")
    with pytest.raises(DataError, match=message) as err:
        load(path)
    assert str(err.value).startswith(f"image {path} ") and "\n" not in str(err.value)


def pillow_modes() -> list[str]:
    """Every mode Pillow has (its own list, so that a new mode is tried too)."""
    from PIL import ImageMode

    return sorted(ImageMode._modes) if hasattr(ImageMode, "_modes") else sorted(Image.MODES)


def every_writable(tmp_path: Path) -> list[tuple[str, str, Path]]:
    """(mode, format, file) for every mode Pillow can write in one of our formats."""
    source = Image.fromarray(uint8(3), "RGB")
    written_files = []
    for mode in pillow_modes():
        try:
            image = source.convert(mode)
            if mode == "F":  # float images must hold [0, 1] (tested above)
                image = Image.fromarray(np.asarray(image) / np.float32(255), "F")
        except ValueError:
            raw = uint16().astype("<u2" if mode != "I;16B" else ">u2").tobytes()
            try:
                image = Image.frombytes(mode, (W, H), raw)
            except ValueError:
                continue
        for fmt in ("PNG", "TIFF", "JPEG", "BMP", "GIF", "WEBP", "PPM"):
            buffer = io.BytesIO()
            try:
                image.save(buffer, fmt)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            path = tmp_path / f"{mode.replace(';', '_')}.{fmt.lower()}"
            path.write_bytes(buffer.getvalue())
            written_files.append((mode, fmt, path))
    return written_files


def test_every_mode_pillow_can_write_decodes_into_the_unit_interval(tmp_path):
    files = every_writable(tmp_path)
    modes = {mode for mode, _, _ in files}
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "LAB"} <= modes
    for mode, fmt, path in files:
        for channels in (1, 3):
            pixels = torch.as_tensor(load(path, channels))
            assert pixels.shape == (H, W, channels), (mode, fmt)
            assert torch.isfinite(pixels).all() and 0 <= pixels.min() <= pixels.max() <= 1


def test_a_damaged_exif_block_is_read_as_stored_not_refused(tmp_path):
    """Cameras write broken EXIF: such an image is read as viewers show it, unturned."""
    values = uint8()
    damaged = b"Exif\x00\x00" + b"\x14j'\xca\xae\xda\xfb\xb4" + bytes(range(40))
    for fmt in ("PNG", "WEBP"):
        path = saved(tmp_path, Image.fromarray(values, "L"), fmt, exif=damaged, lossless=True)
        with Image.open(path) as image, pytest.raises(SyntaxError):
            image.getexif()  # what Pillow itself does with it
        assert np.array_equal(load(path, channels=1)[..., 0], (values / 255).astype(np.float32))
