"""The same member twice (``teacher.members``): one file named again, or copies under other
names, is refused with one line naming the files — an "ensemble" of copies never disagrees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import save_file

from ensemble_distill.cli import main
from ensemble_distill.data import create_dataset
from ensemble_distill.models import ModelSpec, create_model

ARGS = ["model_args={widths: [8]}", "eval.latency_repeats=1", "epochs=1", "--quiet"]


def member_file(path: Path, seed: int) -> Path:
    """A digits MLP member (widths [8]) with weights drawn from ``seed``, saved at ``path``."""
    import torch

    torch.manual_seed(seed)
    data = create_dataset("digits")
    spec = ModelSpec("mlp", data.input_shape, data.num_classes, {"widths": [8]})
    save_file(create_model(spec, data.mean, data.std).state_dict(), path)
    return path


def teacher_from(tmp_path: Path, members: str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    out = tmp_path / "out"
    code = main(["train-teacher", "--out", str(out), f"teacher.members={members}", *ARGS])
    return code, capsys.readouterr().err


def test_one_file_named_three_times_is_refused(tmp_path, capsys):
    a = member_file(tmp_path / "a.safetensors", 0)
    code, err = teacher_from(tmp_path, f"[{a}, {a}, {a}]", capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"teacher.members names {a} twice" in err and "own weight file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("as_folder", [False, True])
def test_identical_copies_under_other_names_are_refused(tmp_path, capsys, as_folder):
    folder = tmp_path / "members"
    folder.mkdir()
    a = member_file(folder / "a.safetensors", 0)
    member_file(folder / "b.safetensors", 1)
    copy = shutil.copy(a, folder / "c.safetensors")
    members = str(folder) if as_folder else f"[{a}, {folder / 'b.safetensors'}, {copy}]"
    code, err = teacher_from(tmp_path, members, capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"files {a} and {copy} hold the same bytes (SHA-256 " in err


def test_distinct_members_are_accepted(tmp_path, capsys):
    a, b = (member_file(tmp_path / f"{name}.safetensors", seed) for seed, name in enumerate("ab"))
    code, err = teacher_from(tmp_path, f"[{a}, {b}]", capsys)
    assert code == 0, err
