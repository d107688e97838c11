"""The data's identity in the settings' fingerprint (``data/identity.py``): a changed image
folder, CSV table or ``distill_data`` file refuses to reuse a trained phase; an unchanged one
is reused; ``--force`` retrains; checkpoints from before the key are still accepted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ensemble_distill.cli import main
from ensemble_distill.config import load_config
from ensemble_distill.data import create_dataset
from ensemble_distill.data.identity import IDENTITY, describe_change, file_identity
from ensemble_distill.errors import ConfigError

TINY = ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1"]
IMAGES = ["dataset=imagefolder", "dataset_args={workers: 0}", "methods=[kd]", "--quiet", *TINY]
KEPT = "teacher: already trained with these settings, kept"


def identity_of(tree: Path, **kwargs) -> str:
    return create_dataset("imagefolder", data_dir=tree, workers=0, **kwargs).identity


def run(out: Path, tree: Path, *extra: str, command: str = "run") -> int:
    return main([command, "--out", str(out), f"data_dir={tree}", *IMAGES, *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_image_tree) -> tuple[Path, Path]:
    """An image folder (3 classes x 12 images) and a finished run on it (teacher, kd)."""
    root = tmp_path_factory.mktemp("finished")
    tree = make_image_tree(root / "images", per_class=12, size=8, ood=2)
    assert run(root / "out", tree) == 0
    return tree, root / "out"


@pytest.fixture
def copy(finished, tmp_path) -> tuple[Path, Path]:
    """A private copy of :func:`finished`'s folder and run (new modification times)."""
    tree, out = finished
    shutil.copytree(tree, tmp_path / "images", copy_function=shutil.copy)
    shutil.copytree(out, tmp_path / "out", copy_function=shutil.copy)
    return tmp_path / "images", tmp_path / "out"


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def grow(tree: Path) -> None:
    shutil.copy(tree / "one" / "000.png", tree / "one" / "new.png")


def shrink(tree: Path) -> None:
    (tree / "zero" / "003.png").unlink()


def test_the_identity_is_the_files_not_where_they_are(finished, tmp_path):
    tree, _ = finished
    assert IDENTITY.fullmatch(identity_of(tree)).group(1) == "36"  # 3 x 12; OOD images not
    shutil.copytree(tree, tmp_path / "moved", copy_function=shutil.copy)  # other mtimes
    assert identity_of(tmp_path / "moved") == identity_of(tree)
    assert identity_of(tree, in_memory=True) == identity_of(tree)


@pytest.mark.parametrize(
    "change",
    [
        grow,
        shrink,
        lambda tree: (tree / "one" / "000.png").rename(tree / "one" / "renamed.png"),
        lambda tree: (tree / "one" / "000.png").rename(tree / "zero" / "from_one.png"),
    ],
    ids=["grown", "shrunk", "renamed", "relabelled"],
)
def test_any_change_of_the_images_changes_the_identity(copy, change):
    tree, _ = copy
    before = identity_of(tree)
    change(tree)
    assert identity_of(tree) != before


def test_an_image_edited_in_place_changes_it(copy):
    tree, _ = copy
    image = tree / "one" / "edited.bmp"  # uncompressed: an edit keeps the size
    Image.new("L", (8, 8), 10).save(image)
    before, size = identity_of(tree), image.stat().st_size
    Image.new("L", (8, 8), 11).save(image)
    assert image.stat().st_size == size
    assert identity_of(tree) != before


def test_ood_images_are_not_part_of_it(copy):
    tree, _ = copy
    before = identity_of(tree)
    shutil.copy(tree / "ood" / "noise" / "0.png", tree / "ood" / "noise" / "extra.png")
    assert identity_of(tree) == before


@pytest.mark.parametrize(("change", "counts"), [(grow, "37 files"), (shrink, "35 files")])
def test_a_changed_folder_refuses_to_reuse_the_trained_phases(copy, capsys, change, counts):
    tree, out = copy
    before = snapshot(out)
    change(tree)
    capsys.readouterr()
    assert run(out, tree) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "teacher was trained with other settings (changed: data_identity (" in err
    assert f"{counts} of " in err and "36 files of " in err and "--force" in err
    assert snapshot(out) == before  # refused before anything was written


def test_an_unchanged_folder_reuses_them(copy):
    tree, out = copy
    teacher = (out / "teacher" / "model.safetensors").read_bytes()
    assert run(out, tree) == 0
    log = (out / "run.log").read_text()
    assert KEPT in log.splitlines()[-1] or KEPT in log
    assert log.count("student kd: already trained with these settings, kept") == 1
    assert (out / "teacher" / "model.safetensors").read_bytes() == teacher


def test_force_retrains_on_the_changed_folder(copy):
    tree, out = copy
    grow(tree)
    assert run(out, tree, "--force") == 0
    for phase in ("teacher", "students/kd"):
        manifest = json.loads((out / phase / "manifest.json").read_text())
        assert manifest["config"]["data_identity"] == identity_of(tree)
    assert run(out, tree) == 0  # and the new folder is now the trained one


@pytest.mark.parametrize("step", ["evaluate", "distill"])
def test_steps_that_read_checkpoints_notice_a_changed_folder(copy, capsys, step):
    tree, out = copy
    shrink(tree)
    capsys.readouterr()
    # the rest of the config from OUT/config.yaml (which names the original folder)
    assert main([step, "--out", str(out), f"data_dir={tree}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "trained with other settings than this run's (changed: data_identity (" in err
    assert len(err.splitlines()) == 1, err


def test_a_checkpoint_from_before_the_key_is_accepted(copy):
    tree, out = copy
    for phase in ("teacher", "students/kd"):
        path = out / phase / "manifest.json"
        manifest = json.loads(path.read_text())
        del manifest["config"]["data_identity"]
        path.write_text(json.dumps(manifest))
    assert run(out, tree) == 0
    assert KEPT in (out / "run.log").read_text()


def test_a_changed_csv_table_is_noticed(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,y\n" + "".join(f"{i},{2 * i}\n" for i in range(30)))
    out = tmp_path / "out"
    args = ["run", "--data", str(table), "--target", "y", "--out", str(out), "--quiet", *TINY]
    assert main([*args, "methods=[kd]"]) == 0
    saved = json.loads((out / "teacher" / "manifest.json").read_text())["config"]
    assert saved["data_identity"] == file_identity(table)
    table.write_text(table.read_text().replace("\n7,14\n", "\n7,15\n"))  # one target edited
    capsys.readouterr()
    assert main([*args, "methods=[kd]"]) == 2
    err = capsys.readouterr().err
    assert "changed: data_identity (as many files (1 file) and bytes (" in err, err


@pytest.mark.slow  # an end-to-end run: `make test-all` only
def test_a_changed_distill_data_file_retrains_the_students_only(tmp_path, capsys):
    inputs = tmp_path / "aux.npy"
    np.save(inputs, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["run", "--out", str(out), "--quiet", *TINY, "methods=[kd]", f"distill_data={inputs}"]
    assert main(args) == 0
    np.save(inputs, np.random.default_rng(1).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "students/kd was trained with other settings (changed: distill_data_identity (" in err
    assert "data_identity (" not in err.replace("distill_data_identity (", "")
    assert main([*args, "--force"]) == 0


def test_the_teacher_of_built_in_data_has_no_identity(tmp_path):
    out = tmp_path / "out"
    assert main(["train-teacher", "--out", str(out), "--quiet", *TINY]) == 0
    saved = json.loads((out / "teacher" / "manifest.json").read_text())["config"]
    assert "data_identity" not in saved  # settings as before the key: old progress still fits


def test_a_config_cannot_set_an_identity_of_another_form():
    with pytest.raises(ConfigError, match="data_identity"):
        load_config(None, ["data_identity=abc"])
    recorded = f"3 files, 10 bytes, sha256 {'0' * 64}"
    assert load_config(None, [f"data_identity={recorded}"]).data_identity == recorded


def test_the_change_is_described_by_counts_and_sizes():
    digest = "0" * 64
    then, now = f"36 files, 900 bytes, sha256 {digest}", f"37 files, 925 bytes, sha256 {digest}"
    said = describe_change(then, now)
    assert said == "37 files of 925 bytes now, 36 files of 900 bytes when trained"
    assert describe_change(then, then) == ""
    assert "not those" in describe_change(None, now)
