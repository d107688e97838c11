"""Bring your own members: ``teacher.members`` (weight files or a folder) through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ensemble_distill.cli import main
from ensemble_distill.data import create_dataset
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.teachers import load_teacher

TINY = ["model_args={widths: [16]}", "precision=fp32", "eval.latency_repeats=1", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A 2-member teacher trained by the CLI (OUT/teacher) whose members are saved as
    safetensors files, ``.pt`` state dicts and ``.pt`` training checkpoints."""
    root = tmp_path_factory.mktemp("trained")
    assert main(["train-teacher", "--out", str(root / "out"), "members=2", "epochs=1", *TINY]) == 0
    teacher, _ = load_teacher(root / "out" / "teacher")
    for index in range(teacher.num_members):
        state = teacher.member(index).state_dict()
        save_file(state, root / f"member{index}.safetensors")
        torch.save(state, root / f"member{index}.pt")
        torch.save({"epoch": 1, "state_dict": state}, root / f"checkpoint{index}.pth")
    return root


def teacher_from_files(out: Path, members: str, *extra: str) -> int:
    """``train-teacher`` with ``teacher.members=members``; the exit status."""
    return main(["train-teacher", "--out", str(out), f"teacher.members={members}", *extra, *TINY])


def test_members_from_files_are_the_trained_members_exactly(trained, tmp_path):
    files = f"[{trained / 'member0.safetensors'}, {trained / 'checkpoint1.pth'}]"
    assert teacher_from_files(tmp_path / "out", files) == 0
    loaded, manifest = load_teacher(tmp_path / "out" / "teacher")
    original, _ = load_teacher(trained / "out" / "teacher")
    assert manifest["members"] == 2 and manifest["seeds"] is None
    state = load_file(tmp_path / "out" / "teacher" / "model.safetensors")
    original_state = load_file(trained / "out" / "teacher" / "model.safetensors")
    assert state.keys() == original_state.keys()
    assert all(torch.equal(state[key], original_state[key]) for key in state)
    x = create_dataset("digits").test.x
    assert torch.equal(predict_outputs(loaded, x), predict_outputs(original, x))
    settings = manifest["config"]["teacher"]
    digest = hashlib.sha256((trained / "member0.safetensors").read_bytes()).hexdigest()
    assert settings["members_sha256"][0] == digest


def test_a_folder_of_members_runs_end_to_end(trained, tmp_path):
    folder = tmp_path / "members"
    folder.mkdir()
    for index in (0, 1):  # .pt state dicts, sorted by name; other files are ignored
        (folder / f"m{index}.pt").write_bytes((trained / f"member{index}.pt").read_bytes())
    (folder / "notes.txt").write_text("not a member")
    out = tmp_path / "out"
    args = ["run", "--out", str(out), f"teacher.members={folder}", "epochs=1", "methods=[kd]"]
    assert main([*args, *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["members"] == 2 and set(results["methods"]) == {"ensemble", "member", "kd"}
    predictions = load_file(out / "predictions.safetensors")
    original, _ = load_teacher(trained / "out" / "teacher")
    x = create_dataset("digits").test.x
    assert torch.equal(predictions["ensemble/test"], predict_outputs(original, x))


def test_a_changed_member_file_is_noticed_on_resume(trained, tmp_path):
    member = tmp_path / "member0.safetensors"
    member.write_bytes((trained / "member0.safetensors").read_bytes())
    files = f"[{member}, {trained / 'member1.safetensors'}]"
    out = tmp_path / "out"
    assert teacher_from_files(out, files) == 0
    assert teacher_from_files(out, files) == 0  # the same files: kept
    # Training keys do not decide a loaded teacher: another seed or epochs keeps it.
    assert teacher_from_files(out, files, "seed=3", "epochs=2", "optim.lr=0.5") == 0
    assert "kept" in (out / "run.log").read_text().splitlines()[-1]
    state = load_file(member)
    state["head.bias"] = state["head.bias"] + 1.0
    save_file(state, member)
    assert teacher_from_files(out, files) == 2  # another file: refused, not silently kept
    assert teacher_from_files(out, files, "--force") == 0
    bias = load_file(out / "teacher" / "model.safetensors")["stacked.head.bias"][0]
    assert torch.equal(bias, state["head.bias"])


def test_a_file_changed_since_config_yaml_recorded_it_is_refused(trained, tmp_path, capsys):
    member = tmp_path / "member0.pt"
    member.write_bytes((trained / "member0.pt").read_bytes())
    out = tmp_path / "out"
    assert teacher_from_files(out, f"[{member}, {trained / 'member1.pt'}]") == 0
    capsys.readouterr()
    state = torch.load(member, weights_only=True)
    torch.save({key: value * 2 for key, value in state.items()}, member)
    config = str(out / "config.yaml")
    assert main(["train-teacher", "--out", str(out), "--config", config, "--force", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{member} changed since this run recorded it" in err and "Traceback" not in err


def _write(path: Path, kind: str, trained: Path) -> None:
    """A member file that must be refused: ``kind`` says how it is wrong."""
    state = load_file(trained / "member0.safetensors")
    if kind == "missing":
        del state["head.bias"]
    elif kind == "unexpected":
        state |= {f"extra.{i}": torch.zeros(1) for i in range(5)}
    elif kind == "prefixed":
        state = {f"module.{key}": value for key, value in state.items()}
    if path.suffix != ".pt":
        save_file(state, path)
    elif kind == "pickle":
        torch.save(torch.nn.Linear(2, 2), path)  # a whole module: weights_only refuses it
    elif kind == "not a state dict":
        torch.save([1, 2, 3], path)
    elif kind == "damaged":
        path.write_bytes(b"not a torch file")


@pytest.mark.parametrize(
    ("kind", "name", "args", "message"),
    [
        ("absent", "gone.safetensors", [], "gone.safetensors does not exist"),
        ("missing", "m.safetensors", [], "1 missing keys ('head.bias')"),
        ("unexpected", "m.safetensors", [], "5 unexpected keys ('extra.0', 'extra.1', 'extra.2'"),
        ("prefixed", "m.safetensors", [], "every key in the file starts with 'module.'"),
        (
            "shapes",
            "m.safetensors",
            ["model_args={widths: [32]}"],
            "'body.1.1.weight' has shape (16, 64) in the file but (32, 64) in the model",
        ),
        ("pickle", "m.pt", [], "holds Python objects (torch.nn.modules.linear.Linear), refused"),
        ("not a state dict", "m.pt", [], "holds a list, not a state dict"),
        ("damaged", "m.pt", [], "is not a readable torch.save file"),
        ("suffix", "m.txt", [], "m.txt is not a weight file"),
        ("count", "m.safetensors", ["members=3"], "members=3 but teacher.members gives 2"),
    ],
)
def test_bad_member_files_exit_2_with_one_line_and_write_nothing(
    trained, tmp_path, capsys, kind, name, args, message
):
    path = tmp_path / name
    if kind != "absent":
        _write(path, kind, trained)
    out = tmp_path / "out"
    files = f"[{path}, {trained / 'member1.safetensors'}]"
    assert main(["run", "--out", str(out), f"teacher.members={files}", *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("ensemble-distill: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[]", "'teacher.members' must list at least one weight file"),
        ("/does/not/exist", "/does/not/exist is not a folder"),
        ("EMPTY", "holds no .safetensors / .pt / .pth files"),
    ],
)
def test_bad_member_lists_exit_2(tmp_path, capsys, value, message):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    value = value.replace("EMPTY", str(tmp_path / "empty"))
    assert main(["run", "--out", str(out), f"teacher.members={value}", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_recorded_hashes_must_match_the_files_one_each(capsys, tmp_path):
    args = ["teacher.members=[a.pt]", "teacher.members_sha256=[abc]"]
    assert main(["run", "--out", str(tmp_path / "out"), *args, *TINY]) == 2
    assert "'teacher.members_sha256[0]' must be 64 hex digits" in capsys.readouterr().err
