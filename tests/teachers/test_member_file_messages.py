"""A bad member file (``teacher.members``) is named with what is wrong with it (issue 30,
item 5): weights that are not finite, integer weights, pickled Python objects — one line,
before anything is written, instead of a later "probs contains NaN … a diverged run" or
"damaged or another format"."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ensemble_distill.cli import main
from ensemble_distill.models import ModelSpec, create_model

ARGS = ["model_args={widths: [8]}", "precision=fp32", "eval.latency_repeats=1", "--quiet"]


def member_state(seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a digits MLP (widths [8]) such as ``teacher.members`` loads."""
    torch.manual_seed(seed)
    return create_model(ModelSpec("mlp", (1, 8, 8), 10, {"widths": [8]})).state_dict()


class Payload:
    """Unpickled, it would run a shell command creating ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bad_file(folder: Path, kind: str) -> Path:
    state = member_state(0)
    if kind == "nan":
        state["head.weight"] = torch.full_like(state["head.weight"], float("nan"))
    elif kind == "inf":
        state["body.1.1.bias"][0] = float("inf")
    elif kind in ("integers", "integers.pt"):
        state = {key: value.round().to(torch.int64) for key, value in state.items()}
    if kind == "integers.pt":
        torch.save(state, folder / "m.pt")
        return folder / "m.pt"
    if kind == "torch payload":
        torch.save(Payload(folder / "marker"), folder / "m.pt")
        return folder / "m.pt"
    if kind == "pickle payload":
        (folder / "m.pt").write_bytes(pickle.dumps(Payload(folder / "marker")))
        return folder / "m.pt"
    save_file(state, folder / "m.safetensors")
    return folder / "m.safetensors"


def teacher_from(out: Path, files: list[Path]) -> int:
    members = f"[{', '.join(map(str, files))}]"
    return main(["train-teacher", "--out", str(out), f"teacher.members={members}", *ARGS])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "weights not finite in file {path} ('head.weight' holds NaN or Inf)"),
        ("inf", "weights not finite in file {path} ('body.1.1.bias' holds NaN or Inf)"),
        ("integers", "integer weights in {path} ('body.0.mean' is torch.int64"),
        ("integers.pt", "integer weights in {path} ('body.0.mean' is torch.int64"),
        ("torch payload", "{path} holds Python objects (posix.system), refused (only tensors"),
        ("pickle payload", "{path} holds Python objects (posix.system), refused (only tensors"),
    ],
)
def test_a_bad_member_file_is_named_with_its_problem(tmp_path, capsys, kind, message):
    good = tmp_path / "good.safetensors"
    save_file(member_state(1), good)
    path = bad_file(tmp_path, kind)
    out = tmp_path / "out"
    assert teacher_from(out, [path, good]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(path=path) in err, err
    assert err.startswith("ensemble-distill: error:") and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "marker").exists()


def test_finite_float_member_files_load(tmp_path):
    files = []
    for seed in (0, 1):
        save_file(member_state(seed), tmp_path / f"m{seed}.safetensors")
        files.append(tmp_path / f"m{seed}.safetensors")
    assert teacher_from(tmp_path / "out", files) == 0
