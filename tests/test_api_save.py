"""Students distilled in Python are saved as the command line saves them (issue 19, item 7):
``save_student`` writes the CLI's safetensors + manifest, which ``load_student`` and
``ensemble-distill export`` read."""

import importlib.util
import json

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import ensemble_distill
from ensemble_distill import distill, load_student, save_student, train_teacher
from ensemble_distill.checkpoint import MANIFEST, WEIGHTS
from ensemble_distill.cli import main
from ensemble_distill.errors import ConfigError
from ensemble_distill.export import ONNX_MODULES, export_student, read_metadata

HAS_ONNX = all(importlib.util.find_spec(name) for name in ONNX_MODULES)
FORMATS = [
    pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="pip install '.[export]'")),
    "torchscript",
]
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SMALL = {"model_args": {"widths": [16]}, "epochs": 1, "quiet": True}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    return x, torch.tensor(data.target)


@pytest.fixture(scope="module")
def student(digits) -> nn.Module:
    x, y = digits
    teacher = train_teacher((x[:600], y[:600]), members=2, **SMALL)
    options = {"head_widths": [8], "model": "mlp", **SMALL, "epochs": 2}
    return distill(teacher, method="hydra", train_data=(x[:600], y[:600]), **options)


def test_a_saved_student_loads_with_identical_outputs(student, digits, tmp_path):
    directory = save_student(student, tmp_path / "hydra", class_names=CLASS_NAMES)
    assert {path.name for path in directory.iterdir()} == {WEIGHTS, MANIFEST}
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["kind"] == "student" and manifest["method"] == "hydra"
    assert manifest["class_names"] == CLASS_NAMES
    x = digits[0][600:700]
    with torch.no_grad():
        assert torch.equal(load_student(directory)(x), student(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_saved_student_exports_with_its_class_names(student, digits, tmp_path, fmt):
    directory = save_student(student, tmp_path / "hydra", class_names=CLASS_NAMES)
    assert main(["export", str(directory), "--format", fmt]) == 0
    path = directory / ("student.onnx" if fmt == "onnx" else "student.pt")
    info = read_metadata(path)
    assert info["class_names"] == CLASS_NAMES and info["method"] == "hydra"
    assert info["classes"] == 10 and info["members"] == 2


def test_class_names_are_optional_and_then_null_in_the_export(student, tmp_path):
    directory = save_student(student, str(tmp_path / "plain"))  # a str path too
    assert "class_names" not in json.loads((directory / MANIFEST).read_text())
    assert read_metadata(export_student(directory, "torchscript"))["class_names"] is None


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (CLASS_NAMES[:9], "class_names has 9 names but the student has 10 classes"),
        ("0123456789", "class_names must be a list of 10 strings"),
        (list(range(10)), "class_names must be a list of 10 strings"),
    ],
)
def test_bad_class_names_are_refused_before_anything_is_written(student, tmp_path, names, message):
    with pytest.raises(ConfigError, match=message):
        save_student(student, tmp_path / "bad", class_names=names)
    assert not (tmp_path / "bad").exists()


def test_a_student_on_a_users_body_is_refused_with_the_way_out(digits, tmp_path):
    x, y = digits
    teacher = train_teacher((x[:300], y[:300]), members=2, **SMALL)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    student = distill(teacher, method="kd", train_data=(x[:300], y[:300]), body=body, epochs=1)
    with pytest.raises(ConfigError, match=r"save student\.state_dict"):
        save_student(student, tmp_path / "kd")
    assert not (tmp_path / "kd").exists()


def test_save_student_is_part_of_the_package_api():
    assert "save_student" in ensemble_distill.__all__
    assert ensemble_distill.save_student is save_student
