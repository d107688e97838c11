"""Image folders (``dataset=imagefolder``) that a user did not mean, or that would take a
machine down: hidden files and folders skipped at every level, fewer than two classes,
decompression bombs, an ``image_size``, ``in_memory`` or ``workers`` beyond the machine, and
files that are not images — each refused before the work, in one line naming the file and
the problem."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_distill.cli import main
from ensemble_distill.data import create_dataset, imagefolder
from ensemble_distill.data.image_files import ImageFiles, ImageTransform
from ensemble_distill.errors import ConfigError, DataError


@pytest.fixture
def tree(tmp_path, make_image_tree) -> Path:
    return make_image_tree(tmp_path / "images", per_class=10, ood=4)


def every_path(data) -> set[Path]:
    splits = (data.train, data.val, data.test, *data.ood.values())
    return {path for split in splits for path in split.x.paths}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b""))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


# --- hidden files and folders ---------------------------------------------------------------


def junk(path: Path) -> None:
    """A file that would break the run if it were read: not an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_hidden_files_and_folders_are_skipped_at_every_level(tree, tmp_path):
    wanted = {p for p in tree.rglob("*.png")}  # the reference: what the fixture wrote
    for hidden in [
        "zero/.thumbnails/000.png",  # a hidden folder inside a class
        "zero/@eaDir/000.png/SYNOPHOTO_THUMB_M.png",  # Synology's thumbnails
        "one/deeper/.cache/1.png",  # hidden two levels down
        "one/._000.png",  # macOS resource fork
        ".../0.png",  # a class folder that is hidden (its name starts with '.')
        ".git/objects/0.png",
        "__MACOSX/zero/._000.png",  # what unzipping a macOS archive leaves
        "lost+found/0.png",
        "ood/.cache/0.png",
        "ood/noise/@eaDir/0.png",
    ]:
        junk(tree / hidden)
    kept = tree / "one" / "deeper" / "kept.png"  # an ordinary sub-folder still counts
    Image.new("L", (12, 12), 7).save(kept)
    data = create_dataset("imagefolder", data_dir=tree, workers=0)
    assert every_path(data) == wanted | {kept}
    assert data.class_names == ("one", "three", "zero")


def test_a_data_dir_inside_a_hidden_folder_is_read(tmp_path, make_image_tree):
    root = make_image_tree(tmp_path / ".cache" / "images", per_class=10, ood=0)
    data = create_dataset("imagefolder", data_dir=root, workers=0)
    assert len(every_path(data)) == 30


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (["zero"], r"has only the class folder zero, and a classifier needs at least two"),
        ([], r"has no class folders, and a classifier needs at least two"),
    ],
)
def test_fewer_than_two_classes_are_refused(tree, keep, message):
    import shutil

    for name in ("one", "three", "zero"):
        if name not in keep:
            shutil.rmtree(tree / name)
    junk(tree / ".hidden-class" / "0.png")  # a hidden folder is no class
    with pytest.raises(DataError, match=message) as err:
        create_dataset("imagefolder", data_dir=tree, workers=0)
    assert str(tree) in one_line(err)


# --- files that are not images --------------------------------------------------------------


def empty(path: Path) -> str:
    path.write_bytes(b"")
    return rf"image {path} is an empty file \(0 bytes\)"


def text(path: Path) -> str:
    path.write_text("these are my notes, not a picture\n")
    return rf"image {path} is not an image \(Pillow cannot identify it; is it really a \.png"


def link_to_passwd(path: Path) -> str:
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    path.symlink_to("/etc/passwd")
    return rf"image {path} is a symbolic link to /etc/passwd, which is not an image"


@pytest.mark.parametrize("spoil", [empty, text, link_to_passwd])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("one/000-bad.png", {}),  # the first image: it sets the channels and the size
        ("zero/zzz-bad.png", {}),  # another one: every header is read for the size check
        ("zero/zzz-bad.png", {"image_size": 12}),  # streamed: read when its batch is decoded
    ],
    ids=["first", "header-check", "decoded"],
)
def test_files_that_are_not_images_are_named_with_their_problem(tree, spoil, name, kwargs):
    message = spoil(tree / name)
    with pytest.raises(DataError, match=message) as err:
        data = create_dataset("imagefolder", data_dir=tree, workers=1, **kwargs)
        for split in (data.train, data.val, data.test):
            list(split.x.batches(8))  # in a worker process: the same one line
    assert "remove" in one_line(err)


def test_the_cli_names_a_link_to_a_system_file_in_one_line(tree, tmp_path, capsys):
    link_to_passwd(tree / "zero" / "x.png")
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "dataset=imagefolder", f"data_dir={tree}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "symbolic link to /etc/passwd" in err
    assert "permissions" not in err and not out.exists()


# --- decompression bombs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("one/000-bomb.png", {}),
        ("zero/zzz-bomb.png", {}),
        ("zero/zzz-bomb.png", {"image_size": 12}),
    ],
    ids=["first", "header-check", "decoded"],
)
def test_a_png_claiming_ten_billion_pixels_is_one_line_naming_it(tree, name, kwargs):
    path = tree / name
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 100
    with pytest.raises(DataError, match=rf"image {path} claims 10,000,000,000 pixels") as err:
        data = create_dataset("imagefolder", data_dir=tree, workers=1, **kwargs)
        for split in (data.train, data.val, data.test):
            list(split.x.batches(8))
    assert f"{Image.MAX_IMAGE_PIXELS:,}" in one_line(err)


def test_the_cli_refuses_a_bomb_in_one_line(tree, tmp_path, capsys):
    (tree / "zero" / "bomb.png").write_bytes(bomb_png())
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "dataset=imagefolder", f"data_dir={tree}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bomb.png claims 10,000,000,000 pixels" in err


def test_pillows_warning_band_is_refused_too(tree, monkeypatch):
    """Between Pillow's limit and twice the limit Pillow only warns; here it refuses."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 12x12 images: 144 pixels
    with pytest.raises(DataError, match=r"claims 144 pixels, more than the 100") as err:
        create_dataset("imagefolder", data_dir=tree, workers=0)
    one_line(err)


def test_a_resize_that_would_exceed_the_pixel_limit_is_refused(tmp_path):
    path = tmp_path / "thin.png"
    Image.new("L", (3000, 1)).save(path)  # scaled to 224 rows: 672,000 columns first
    with pytest.raises(DataError, match=rf"image {path} \(1x3000\) would be scaled to 224x"):
        ImageTransform(1, size=(224, 224))(path)


# --- resources checked before the work ------------------------------------------------------


@pytest.fixture
def nothing_decoded(monkeypatch):
    """Fails the test if any image is decoded."""

    def refuse(self, path):
        raise AssertionError(f"{path} was decoded")

    monkeypatch.setattr(ImageTransform, "__call__", refuse)


@pytest.mark.parametrize("size", [100_000, [9460, 9460]])
def test_an_image_size_beyond_pillows_pixel_limit_is_refused_up_front(tree, size, nothing_decoded):
    height, width = (size, size) if isinstance(size, int) else size
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"image_size {height}x{width} is {height * width:,}"):
        create_dataset("imagefolder", data_dir=tree, image_size=size, workers=0)
    assert time.perf_counter() - start < 5


def test_the_largest_image_size_under_the_limit_is_accepted(tree, nothing_decoded):
    side = int(Image.MAX_IMAGE_PIXELS**0.5)  # 9459: 89,472,681 pixels
    data = create_dataset("imagefolder", data_dir=tree, image_size=side, workers=0)
    assert data.input_shape == (1, side, side)


def test_in_memory_images_beyond_the_available_memory_are_refused_up_front(
    tree, monkeypatch, nothing_decoded
):
    need = 2 * (30 + 4) * 1 * 20 * 20 * 4  # twice N x C x H x W x 4 bytes (ood included)
    monkeypatch.setattr(imagefolder, "available_memory", lambda: need - 1)
    with pytest.raises(DataError, match=r"in_memory needs 108.8 kB \(34 images of 1x20x20"):
        create_dataset("imagefolder", data_dir=tree, image_size=20, in_memory=True, workers=0)


def test_in_memory_images_that_fit_are_decoded(tree, monkeypatch):
    need = 2 * 34 * 1 * 20 * 20 * 4
    monkeypatch.setattr(imagefolder, "available_memory", lambda: need)
    data = create_dataset("imagefolder", data_dir=tree, image_size=20, in_memory=True, workers=0)
    assert isinstance(data.train.x, torch.Tensor) and data.train.x.shape[1:] == (1, 20, 20)


def test_the_available_memory_is_what_the_kernel_reports():
    available = imagefolder.available_memory()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert available is not None and 0 < available <= total


def test_more_workers_than_cores_are_refused_with_the_fix(tree, tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(ConfigError, match=rf"workers={cores + 1} is more than the {cores}") as err:
        create_dataset("imagefolder", data_dir=tree, workers=cores + 1)
    assert f"set dataset_args.workers to at most {cores}" in one_line(err)
    data = create_dataset("imagefolder", data_dir=tree, workers=cores)
    assert data.train.x.workers == cores
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "dataset=imagefolder", f"data_dir={tree}"]
    assert main([*args, "dataset_args={workers: 100000}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()


def test_the_default_workers_leave_a_core_to_training():
    cores = len(os.sched_getaffinity(0))
    from ensemble_distill.data.image_files import default_workers

    assert default_workers() == min(4, cores - 1)


def test_decoded_images_are_unchanged_by_the_checks(tree):
    """The same pixels as Pillow's own decoding of the plain 8-bit files."""
    files = create_dataset("imagefolder", data_dir=tree, workers=0).train.x
    assert isinstance(files, ImageFiles)
    for i in (0, len(files) - 1):
        expected = np.asarray(Image.open(files.paths[i]), dtype=np.float32) / 255
        assert torch.equal(files[i][0], torch.from_numpy(expected))
