"""The user's image folders (``dataset=imagefolder``), streamed from files: layouts, splits,
decoding against Pillow, planned (prefetched) batches, training bit-identical to the same images
held in memory, the CLI end to end, and every bad folder refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.data import ImageFiles, create_dataset
from ensemble_distill.data.base import holdout_split, torch_permutations
from ensemble_distill.engine import distill_student, prepare, teacher_train_outputs, train_teacher
from ensemble_distill.errors import DataError

CLASSES = ("one", "three", "zero")  # make_image_tree's folders; sorted: the labels 0, 1, 2


def pillow_pixels(path: Path, mode: str) -> torch.Tensor:
    """The oracle: Pillow's own pixels of ``path`` as (C, H, W) in [0, 1]."""
    array = np.asarray(Image.open(path).convert(mode), dtype=np.float64) / 255.0
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).transpose(2, 0, 1)).float()


@pytest.fixture
def tree(tmp_path, make_image_tree) -> Path:
    return make_image_tree(tmp_path / "images")


def test_a_flat_folder_is_split_stratified_and_seeded_like_the_builtin_datasets(tree):
    data = create_dataset("imagefolder", data_dir=tree, workers=0)
    assert data.class_names == CLASSES and data.num_classes == 3
    assert data.input_shape == (1, 12, 12)
    labels = torch.tensor([i for i in range(3) for _ in range(30)])
    rest, test = holdout_split(90, 0.2, torch_permutations(0), strata=labels)
    train, val = holdout_split(len(rest), 0.1, torch_permutations(1), strata=labels[rest])
    assert torch.equal(data.test.y, labels[test])
    assert torch.equal(data.train.y, labels[rest][train])
    assert torch.equal(data.val.y, labels[rest][val])
    paths = [set(split.x.paths) for split in (data.train, data.val, data.test)]
    assert sum(map(len, paths)) == 90 and len(set.union(*paths)) == 90
    assert len(data.ood["ood"]) == 10
    other = create_dataset("imagefolder", data_dir=tree, split_seed=1, workers=0)
    assert set(other.test.x.paths) != paths[2]


def test_given_val_and_test_folders_are_used_as_they_are(tmp_path, make_image_tree):
    root = tmp_path / "splits"
    make_image_tree(root / "train", per_class=20, ood=0)
    make_image_tree(root / "test", per_class=4, ood=0)
    (root / "val" / "zero").mkdir(parents=True)
    for k in range(3):
        Image.new("L", (12, 12), color=k).save(root / "val" / "zero" / f"{k}.png")
    data = create_dataset("imagefolder", data_dir=root, workers=0)
    assert len(data.train) == 60 and len(data.test) == 12 and len(data.val) == 3
    assert data.val.y.tolist() == [2, 2, 2]  # "zero" is label 2 of the training classes
    assert all("test" in p.parts for p in data.test.x.paths) and data.ood == {}


def test_decoded_pixels_are_pillows_for_grey_and_rgb(tree, tmp_path):
    files = create_dataset("imagefolder", data_dir=tree, workers=0).test.x
    index = torch.tensor([[3, 0], [1, 1]])
    batch = files[index]
    assert batch.shape == (2, 2, 1, 12, 12) and batch.dtype == torch.float32
    for (i, j), position in np.ndenumerate(index.numpy()):
        assert torch.equal(batch[i, j], pillow_pixels(files.paths[position], "L"))
    rgb = tmp_path / "rgb"
    colours = np.random.default_rng(1).integers(0, 256, (2, 8, 10, 3), dtype=np.uint8)
    for name, pixels in zip(("a", "b"), colours, strict=True):
        (rgb / name).mkdir(parents=True)
        for k in range(10):
            Image.fromarray(pixels, "RGB").save(rgb / name / f"{k}.png")
    data = create_dataset("imagefolder", data_dir=rgb, workers=0)
    assert data.input_shape == (3, 8, 10)
    assert torch.equal(data.train.x[0], pillow_pixels(data.train.x.paths[0], "RGB"))


def test_image_size_centre_crops_after_scaling_the_shorter_side(tmp_path):
    pixels = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    for name in ("a", "b"):  # two classes of the same image
        (tmp_path / "sizes" / name).mkdir(parents=True)
        for k in range(10):
            Image.fromarray(pixels, "L").save(tmp_path / "sizes" / name / f"{k}.png")
    # The shorter side already has the crop's size: no resampling, a centre crop of columns.
    data = create_dataset("imagefolder", data_dir=tmp_path / "sizes", image_size=12, workers=0)
    assert torch.equal(data.train.x[0][0], torch.from_numpy(pixels[:, 2:14] / 255.0).float())
    scaled = create_dataset(
        "imagefolder", data_dir=tmp_path / "sizes", image_size=[6, 4], resize=9, workers=0
    )
    assert scaled.train.x[:2].shape == (2, 1, 6, 4)
    resized = Image.fromarray(pixels, "L").resize((12, 9), Image.Resampling.BILINEAR)
    expected = np.asarray(resized)[1:7, 4:8] / 255.0
    assert torch.equal(scaled.train.x[0][0], torch.from_numpy(expected).float())


def test_channel_statistics_are_those_of_the_decoded_images(tree):
    data = create_dataset("imagefolder", data_dir=tree, workers=0)
    pixels = data.train.x[:].double()
    assert data.mean == pytest.approx([float(pixels.mean())], rel=1e-9)
    assert data.std == pytest.approx([float(pixels.std())], rel=1e-9)


@pytest.mark.parametrize("workers", [0, 2])
def test_planned_batches_come_decoded_ahead_and_in_order(tree, workers):
    files = create_dataset("imagefolder", data_dir=tree, workers=0).train.x
    streamed = ImageFiles(files.paths, files.transform, workers=workers)
    batches = [torch.randperm(len(files))[:5].view(1, 5) for _ in range(3)]
    streamed.plan(batches)
    for index in batches:
        assert torch.equal(streamed[index], files[index])
    assert not streamed._plan
    streamed.plan(batches)
    assert torch.equal(streamed[batches[1]], files[batches[1]])  # off the plan: read here
    assert not streamed._plan and streamed._planned is None
    assert torch.equal(torch.cat(list(streamed.batches(7))), files[:])


def test_training_on_streamed_images_is_bit_identical_to_training_in_memory(tree):
    config = build_config(
        {
            "dataset": "imagefolder",
            "model": "cnn",
            "model_args": {"channels": [4], "hidden": 16},
            "members": 2,
            "epochs": 2,
            "batch_size": 16,
            "student": {"epochs": 2},
        }
    )
    streamed = create_dataset("imagefolder", data_dir=tree, workers=1)
    held = create_dataset("imagefolder", data_dir=tree, workers=1, in_memory=True)
    assert isinstance(held.train.x, torch.Tensor) and held.class_names == streamed.class_names
    weights = []
    for data in (streamed, held):
        setup = prepare(config, data)
        teacher, _ = train_teacher(setup)
        outputs = teacher_train_outputs(setup, teacher)
        student, _ = distill_student(setup, teacher, "hydra+augment", outputs)
        weights.append({**teacher.state_dict(), **student.state_dict()})
    assert setup.config.memory_format == "channels_last"  # convolutions: the mapped layout too
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


@pytest.mark.slow  # long end to end: `make test-all` only
def test_the_cli_runs_an_image_folder_end_to_end(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "dataset=imagefolder", f"data_dir={tree}"]
    args += ["members=2", "epochs=1", "model_args={widths: [16]}", "eval.latency_repeats=1"]
    args += ["methods=[kd+augment, hydra]", "dataset_args={workers: 1, image_size: 10}"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "imagefolder" and results["ood"] == "ood"
    assert {"kd+augment", "hydra", "ensemble"} <= set(results["methods"])
    manifest = json.loads((out / "students" / "hydra" / "manifest.json").read_text())
    assert manifest["class_names"] == list(CLASSES)
    assert manifest["model"]["input_shape"] == [1, 10, 10]


def corrupt(root: Path) -> None:
    (root / "zero" / "broken.png").write_bytes(b"not an image")


def mixed_sizes(root: Path) -> None:
    Image.new("L", (9, 12)).save(root / "one" / "odd.png")


def empty_class(root: Path) -> None:
    (root / "two").mkdir()
    (root / "two" / "notes.txt").write_text("no images here")


@pytest.mark.parametrize(
    ("spoil", "kwargs", "message"),
    [
        (mixed_sizes, {}, "set dataset_args.image_size"),
        (empty_class, {}, "holds no images"),
        (lambda root: None, {"image_size": 0}, "image_size must be a positive integer"),
        (lambda root: None, {"resize": 20}, "needs dataset_args.image_size"),
        (lambda root: None, {"channels": 2}, "channels must be 1 or 3"),
        (lambda root: (root / "test").mkdir(), {}, "but no train/"),
    ],
)
def test_bad_folders_are_refused_with_the_fix(tree, spoil, kwargs, message):
    spoil(tree)
    with pytest.raises(DataError, match=message):
        create_dataset("imagefolder", data_dir=tree, workers=0, **kwargs)


def test_an_unreadable_image_is_named_when_it_is_read(tree, capsys):
    corrupt(tree)
    data = create_dataset("imagefolder", data_dir=tree, image_size=12, workers=1)
    everything = [data.train.x, data.val.x, data.test.x]
    named = r"image .*broken\.png is not an image \(Pillow cannot identify.*remove or replace"
    with pytest.raises(DataError, match=named) as err:
        for files in everything:
            list(files.batches(8))
    assert str(err.value).startswith("image ") and "\n" not in str(err.value)


def test_unknown_classes_in_a_given_split_and_a_missing_folder_are_refused(
    tmp_path, capsys, make_image_tree
):
    root = tmp_path / "splits"
    make_image_tree(root / "train", per_class=5, ood=0)
    (root / "test" / "seven").mkdir(parents=True)
    Image.new("L", (12, 12)).save(root / "test" / "seven" / "0.png")
    with pytest.raises(DataError, match="class folders seven that the training images lack"):
        create_dataset("imagefolder", data_dir=root, workers=0)
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", "dataset=imagefolder"]) == 2
    assert "set data_dir=DIR" in capsys.readouterr().err and not out.exists()


def test_training_reads_every_batch_from_the_plan(tree, monkeypatch):
    """Teacher and student steps take their batches from the workers' planned stream: only a
    few probes (e.g. ``x[:2]``) are decoded in the training process itself."""
    decoded_here = []
    decode = ImageFiles._decode
    monkeypatch.setattr(
        ImageFiles,
        "_decode",
        lambda self, rows: decoded_here.append(len(rows)) or decode(self, rows),
    )
    config = build_config(
        {
            "dataset": "imagefolder",
            "members": 2,
            "epochs": 2,
            "batch_size": 16,
            "model_args": {"widths": [8]},
            "eval": {"diversity_etas": []},
        }
    )
    setup = prepare(config, create_dataset("imagefolder", data_dir=tree, workers=0))
    teacher, _ = train_teacher(setup)
    distill_student(setup, teacher, "kd+mixup", teacher_train_outputs(setup, teacher))
    assert sum(decoded_here) <= 8, decoded_here
