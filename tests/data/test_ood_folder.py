"""The run's OOD set (config key ``ood``, data/ood.py): a folder of images read as the training
folder is, a registered set converted to the run's shape and said so (warning, results.json),
``ood=none``, bad inputs refused in one line with the fix, the folder's identity recorded, and
the CLI end to end on tiny folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from ensemble_distill import data as data_module
from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.data import ArrayDataset, ImageFiles, create_dataset
from ensemble_distill.data.identity import folder_identity
from ensemble_distill.data.ood import converted_images, ood_line
from ensemble_distill.errors import ConfigError, DataError

SIZE = 8  # the training images' side; the run's input shape is 3 x SIZE x SIZE


def write_images(folder: Path, count: int, mode: str, size: int, seed: int) -> list[Path]:
    """``count`` random ``mode`` (L or RGB) PNGs of ``size`` x ``size`` in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size, size) if mode == "L" else (size, size, 3)
    paths = []
    for k in range(count):
        path = folder / f"{k:02d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def rgb_tree(tmp_path) -> Path:
    """A tiny RGB training folder: two classes of 8 x 8 colour images, no ood/."""
    root = tmp_path / "train_rgb"
    write_images(root / "cat", 10, "RGB", SIZE, seed=1)
    write_images(root / "dog", 10, "RGB", SIZE, seed=2)
    return root


@pytest.fixture
def rgb_ood(tmp_path) -> Path:
    """A flat folder of RGB images of the training images' size."""
    write_images(tmp_path / "rgb_ood", 6, "RGB", SIZE, seed=3)
    return tmp_path / "rgb_ood"


@pytest.fixture
def grey_ood(tmp_path) -> Path:
    """Grey 6 x 6 images in class sub-folders (their labels are ignored)."""
    write_images(tmp_path / "grey_ood" / "a", 3, "L", 6, seed=4)
    write_images(tmp_path / "grey_ood" / "b", 2, "L", 6, seed=5)
    return tmp_path / "grey_ood"


def load(root: Path, ood: str | None, **kwargs):
    return create_dataset("imagefolder", data_dir=root, workers=0, ood=ood, **kwargs)


def test_an_rgb_folder_is_read_as_the_training_images_are(rgb_tree, rgb_ood):
    data = load(rgb_tree, str(rgb_ood), image_size=SIZE)
    assert list(data.ood) == ["rgb_ood"]
    files = data.ood["rgb_ood"].x
    assert isinstance(files, ImageFiles) and files.shape == (6, 3, SIZE, SIZE)
    assert files.transform == data.train.x.transform  # the training folder's own transform
    first = torch.from_numpy(np.asarray(Image.open(rgb_ood / "00.png"), dtype=np.float32) / 255)
    assert torch.equal(files[torch.tensor([0])][0], first.permute(2, 0, 1))
    source = data.ood_source
    assert source.name == "rgb_ood" and source.converted is None
    assert source.source == f"the images under {rgb_ood}"
    assert ood_line(source) == (logging.INFO, f"OOD set rgb_ood: {source.source}")


def test_a_grey_folder_is_made_colour_and_resized_and_said_so(rgb_tree, grey_ood):
    streamed = load(rgb_tree, str(grey_ood), image_size=SIZE)
    x = torch.cat(list(streamed.ood["grey_ood"].x.batches(4)))
    assert x.shape == (5, 3, SIZE, SIZE)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey as RGB
    expected = Image.open(grey_ood / "a" / "00.png").convert("RGB")
    expected = expected.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    assert torch.equal(
        x[0], torch.from_numpy(np.asarray(expected) / np.float32(255)).permute(2, 0, 1)
    )
    converted = "grey 6x6 upsampled to 3x8x8"
    assert streamed.ood_source.converted == converted
    level, line = ood_line(streamed.ood_source)
    assert level == logging.WARNING and converted in line and "\n" not in line
    held = load(rgb_tree, str(grey_ood), image_size=SIZE, in_memory=True)
    assert isinstance(held.ood["grey_ood"].x, torch.Tensor)  # in memory as the training images
    assert torch.equal(held.ood["grey_ood"].x, x)


def test_the_default_ood_folder_is_described_and_its_conversion_warned(rgb_tree, grey_ood):
    grey_ood.rename(rgb_tree / "ood")  # DIR/ood/: the image folder's own OOD set, as before
    data = load(rgb_tree, None, image_size=SIZE, in_memory=True)
    assert list(data.ood) == ["ood"] and data.ood["ood"].x.shape == (5, 3, SIZE, SIZE)
    assert data.ood_source.converted == "grey 6x6 upsampled to 3x8x8"
    assert data.ood_source.identity is not None
    assert ood_line(data.ood_source)[0] == logging.WARNING


def fake_mnist(data_dir, download):
    """A registered grey 28 x 28 test set (MNIST's shape) without MNIST's files."""
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return {"mnist": ArrayDataset(x, torch.zeros(4, dtype=torch.long))}


@pytest.fixture
def fake_registered(monkeypatch):
    monkeypatch.setitem(data_module.OOD_TEST_SETS._entries, "mnist", fake_mnist)


def test_a_registered_grey_set_is_converted_to_the_run_and_said_so(rgb_tree, fake_registered):
    data = load(rgb_tree, "mnist", image_size=32)
    x = data.ood["mnist"].x
    assert x.shape == (4, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    source = data.ood_source
    assert source.converted == "grey 28x28 upsampled to 3x32x32" and source.identity is None
    assert "mnist's test set" in source.source
    level, line = ood_line(source)
    assert level == logging.WARNING and "OOD set mnist (mnist's test set" in line
    assert ood_line(create_dataset("digits").ood_source)[0] == logging.INFO  # matched shapes


def test_converted_tensors_match_a_folder_image_converted_by_pillow(tmp_path):
    """A registered set is converted as an image folder's files are: up to Pillow's 8-bit
    rounding, the same pixels as the same image saved as a PNG and read by the transform."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    from ensemble_distill.data.image_files import ImageTransform

    oracle = ImageTransform(3, (32, 32))(tmp_path / "g.png")
    tensor = torch.from_numpy(grey / np.float32(255))[None, None]
    ours = converted_images(tensor, (3, 32, 32), None, "test")[0]
    assert (ours - oracle).abs().max() <= 1.5 / 255
    colour = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    Image.fromarray(colour.transpose(1, 2, 0), "RGB").save(tmp_path / "c.png")
    oracle = ImageTransform(1, (8, 8))(tmp_path / "c.png")
    ours = converted_images(torch.from_numpy(colour / np.float32(255))[None], (1, 8, 8), None, "t")
    assert (ours[0] - oracle).abs().max() <= 1.01 / 255  # Pillow's integer luma rounding


def test_ood_none_drops_the_ood_set_even_a_default_one(tmp_path, make_image_tree):
    tree = make_image_tree(tmp_path / "digits", per_class=12)  # with an ood/ folder
    assert "ood" in load(tree, None).ood
    data = load(tree, "none")
    assert data.ood == {} and data.ood_source.name is None
    assert data.ood_source.source.startswith("none: ood=none")
    assert create_dataset("digits", ood="none").ood == {}


def unreadable(folder: Path) -> None:
    write_images(folder, 2, "RGB", SIZE, seed=6)
    (folder / "broken.png").write_bytes(b"not an image")


def only_text(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.txt").write_text("no images")
    write_images(folder / ".hidden", 2, "RGB", SIZE, seed=7)  # hidden: skipped


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda folder: None, {}, r"is neither none, a registered OOD set \(.*mnist.*\) nor a"),
        (only_text, {}, "holds no images .*add images, or set ood=none"),
        (unreadable, {}, r"broken\.png is not an image .*remove or replace it"),
        (
            lambda folder: write_images(folder, 2, "RGB", 5, seed=8),
            {"image_size": None},
            "ood image .* is 5x5 but the training images are 8x8; set dataset_args.image_size",
        ),
    ],
)
def test_bad_ood_folders_are_refused_in_one_line_with_the_fix(
    rgb_tree, tmp_path, make, kwargs, message
):
    folder = tmp_path / "bad"
    make(folder)
    with pytest.raises(DataError, match=message) as err:
        load(rgb_tree, str(folder), **{"image_size": SIZE, **kwargs})
    assert "\n" not in str(err.value)


def test_in_distribution_and_non_image_ood_sets_are_refused(rgb_tree, tmp_path):
    with pytest.raises(DataError, match="is data_dir itself, whose images are in-distribution"):
        load(rgb_tree, str(rgb_tree), image_size=SIZE)
    with pytest.raises(DataError, match=r"names images, but dataset toy-gap has inputs"):
        create_dataset("toy-gap", ood=str(tmp_path))
    with pytest.raises(ConfigError, match="'ood' must be a non-empty text"):
        build_config({"ood": " "})


def test_an_ood_folders_identity_changes_with_its_files(rgb_tree, rgb_ood):
    first = load(rgb_tree, str(rgb_ood), image_size=SIZE).ood_source.identity
    paths = sorted(rgb_ood.glob("*.png"))
    assert first == folder_identity(rgb_ood, paths)
    write_images(rgb_ood / "more", 1, "RGB", SIZE, seed=9)
    assert load(rgb_tree, str(rgb_ood), image_size=SIZE).ood_source.identity != first


@pytest.mark.slow
def test_the_cli_names_converts_and_skips_the_ood_set(rgb_tree, rgb_ood, grey_ood, tmp_path):
    grey_ood.rename(rgb_tree / "ood")  # the silent case before: grey DIR/ood/ in a colour run
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "dataset=imagefolder", f"data_dir={rgb_tree}"]
    args += ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1"]
    args += ["methods=[kd]", f"dataset_args={{workers: 0, image_size: {SIZE}}}"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ood"] == "ood"
    assert results["ood_set"]["converted"] == "grey 6x6 upsampled to 3x8x8"
    warned = [line for line in (out / "run.log").read_text().splitlines() if "WARNING" in line]
    assert any("grey 6x6 upsampled to 3x8x8" in line for line in warned)

    assert main([*args, f"ood={rgb_ood}"]) == 0  # trained phases kept: only evaluation reads it
    results = json.loads((out / "results.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert results["ood"] == "rgb_ood" and results["ood_set"]["converted"] is None
    assert config["ood_identity"] == results["ood_set"]["identity"] is not None
    assert "ood_auroc" in results["methods"]["kd"]
    assert "already trained with these settings, kept" in (out / "run.log").read_text()

    assert main([*args, "ood=none"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["ood"] is None and results["ood_set"]["source"].startswith("none: ood=none")
    assert "ood_auroc" not in results["methods"]["kd"]
