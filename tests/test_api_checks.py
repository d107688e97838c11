"""Every API entry point checks what it is handed (issue 30, item 5): inputs against the model
(shape, device, dtype) with the argument named, models with weights on the meta device, a
``save_student`` folder that holds a user's files, and ``str`` paths for the loaders."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ensemble_distill import (
    distill,
    evaluate,
    load_student,
    mean_probs,
    save_student,
    teacher_from_modules,
    uncertainty,
)
from ensemble_distill.checkpoint import MANIFEST, WEIGHTS
from ensemble_distill.errors import CheckpointError, ConfigError, DataError

X, Y = torch.rand(12, 4), torch.tensor([0, 1, 2] * 4)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def on_meta() -> nn.Module:
    with torch.device("meta"):
        return model()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m: evaluate(m, (X, Y), ood_data=torch.rand(5, 7)),
            DataError,
            r"ood_data inputs are \(7,\) but data inputs are \(4,\)",
        ),
        (
            lambda m: evaluate(m, (X, Y), val_data=(torch.rand(5, 7), Y[:5])),
            DataError,
            r"val_data inputs are \(7,\) but data inputs are \(4,\)",
        ),
        (
            lambda m: evaluate(m, (torch.rand(12, 7), Y)),
            ConfigError,
            r"the model cannot take data inputs of shape \(12, 7\) \(RuntimeError: mat1",
        ),
        (
            lambda m: mean_probs(m, torch.rand(5, 7)),
            ConfigError,
            r"the model cannot take x inputs of shape \(5, 7\)",
        ),
        (
            lambda m: uncertainty(m, torch.rand(5, 2, 2)),
            ConfigError,
            r"the model cannot take x inputs of shape \(5, 2, 2\)",
        ),
        (
            lambda m: mean_probs(m, torch.rand(5, 4, dtype=torch.complex64)),
            DataError,
            r"x inputs are complex \(torch.complex64\); give real numbers",
        ),
        (
            lambda m: mean_probs(m, torch.rand(5, 4, device="meta")),
            DataError,
            "x inputs are on the meta device",
        ),
        (
            lambda m: evaluate(m, (X, Y), ood_data=torch.rand(5, 4, device="meta")),
            DataError,
            "ood_data inputs are on the meta device",
        ),
        (
            lambda m: evaluate(m, (X, Y.to(torch.complex64))),
            DataError,
            "data labels are complex",
        ),
        (
            lambda m: mean_probs(m.double(), X),
            ConfigError,
            "the model's weights are float64 but x inputs are read as float32; call model.float",
        ),
        (
            lambda m: mean_probs(m, X, device="meta"),
            ConfigError,
            r"device='meta' but the model's weights are on cpu; move the model there first",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_refused_naming_the_argument(call, error, message):
    with pytest.raises(error, match=message) as refused:
        call(model())
    assert len(str(refused.value).splitlines()) == 1


def test_inputs_that_fit_are_evaluated():
    m = model()
    row = evaluate(m, (X, Y), ood_data=torch.rand(5, 4), val_data=(X, Y))
    assert {"acc", "ood_auroc", "cnll"} <= set(row)
    assert mean_probs(m, X, device="cpu").shape == (12, 3)
    assert uncertainty(m, X.numpy())["entropy"].shape == (12,)


@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda: evaluate(on_meta(), (X, Y)), "the model"),
        (lambda: mean_probs(on_meta(), X), "the model"),
        (lambda: uncertainty(on_meta(), X), "the model"),
        (lambda: teacher_from_modules([model(), on_meta()]), "member 1"),
        (lambda: distill([on_meta(), on_meta()], train_data=(X, Y), epochs=1), "member 0"),
        (
            lambda: distill(
                teacher_from_modules([model(), model()]),
                method="kd",
                train_data=(X, Y),
                body=on_meta()[:2],
                epochs=1,
            ),
            "body",
        ),
    ],
)
def test_weights_on_the_meta_device_are_one_clear_error(call, what):
    with pytest.raises(ConfigError, match=f"^{what} has weights on the meta device"):
        call()


# --- save_student and load_student --------------------------------------------------------------


@pytest.fixture(scope="module")
def student() -> nn.Module:
    x, y = torch.rand(60, 4), torch.tensor([0, 1, 2] * 20)
    teacher = teacher_from_modules([model(), model()])
    options = {"model_args": {"widths": [4]}, "quiet": True}
    return distill(teacher, method="kd", train_data=(x, y), epochs=1, **options)


def test_save_student_keeps_a_users_manifest_and_weights(student, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / MANIFEST).write_text('{"name": "my dataset card"}')
    with pytest.raises(CheckpointError, match="is not an ensemble-distill checkpoint"):
        save_student(student, tmp_path / "mine")
    assert json.loads((tmp_path / "mine" / MANIFEST).read_text()) == {"name": "my dataset card"}
    assert not (tmp_path / "mine" / WEIGHTS).exists()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / WEIGHTS).write_bytes(b"someone's weights")
    with pytest.raises(CheckpointError, match="was not written by ensemble-distill"):
        save_student(student, tmp_path / "theirs")
    assert (tmp_path / "theirs" / WEIGHTS).read_bytes() == b"someone's weights"


def test_save_student_replaces_its_own_student_but_not_a_teacher(student, tmp_path):
    first = save_student(student, tmp_path / "kd")
    assert save_student(student, str(tmp_path / "kd")) == first  # ours: replaced
    manifest = json.loads((first / MANIFEST).read_text())
    manifest["kind"] = "deep-ensemble"
    (first / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="is a 'deep-ensemble' checkpoint"):
        save_student(student, first)


def test_save_student_to_a_file_is_one_clear_error(student, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        save_student(student, tmp_path / "f")
    with pytest.raises(ConfigError, match="save_student cannot write"):
        save_student(student, tmp_path / "f" / "kd")
    assert (tmp_path / "f").read_text() == "x"


def test_load_student_takes_a_str_as_well_as_a_path(student, tmp_path):
    directory = save_student(student, tmp_path / "kd")
    with torch.no_grad():
        expected = student(X)
        assert torch.equal(load_student(str(directory))(X), expected)
        assert torch.equal(load_student(directory)(X), expected)
