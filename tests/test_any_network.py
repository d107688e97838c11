"""Hydra, BatchEnsemble and LatentBE students on a network from an import path (issue 31), from
the command line to the run folder and back: trained, evaluated, reported, exported, and rebuilt
by ``load_student`` bit for bit, behind the trust boundary (``trust_code``)."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest
import torch
from optional_packages import import_problem

from ensemble_distill import engine, load_student
from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.errors import CheckpointError

# Importable because pytest puts tests/ on sys.path (tests/any_network_models.py).
RESNET = "any_network_models:tiny_resnet"
MLP = "any_network_models:mlp"
TINY = [
    "model_args={}",
    "members=2",
    "epochs=1",
    "student.epochs=2",  # Hydra's two phases
    "precision=fp32",
    "eval.latency_repeats=1",
    "--quiet",
]
STUDENTS = ("hydra", "be", "kd")


def run_keeping_students(out, *args: str) -> dict[str, torch.nn.Module]:
    """``ensemble-distill run`` into ``out`` with TINY's settings, ``args`` overriding them;
    returns a copy of each student as it was trained (what the run saved), by method."""
    trained = {}
    save = engine.save_student

    def keep(directory, student, manifest):
        trained[directory.name] = copy.deepcopy(student).cpu().eval()
        save(directory, student, manifest)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "save_student", keep)
        assert main(["run", "--out", str(out), *TINY, *args]) == 0
    return trained


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """The issue's acceptance: a ResNet-shaped factory, its classifier named ``fc``."""
    out = tmp_path_factory.mktemp("any") / "run"
    args = [f"model={RESNET}", "student.head=fc", "methods=[hydra, be, kd]"]
    return out, run_keeping_students(out, *args)


def digits_batch() -> torch.Tensor:
    return torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(3))


def test_the_run_trains_evaluates_and_reports_every_student(resnet_run):
    out, trained = resnet_run
    assert set(trained) == set(STUDENTS)
    results = json.loads((out / "results.json").read_text())
    assert set(STUDENTS) <= set(results["methods"])
    assert results["methods"]["hydra"]["mi"] > 0 and results["methods"]["be"]["mi"] > 0
    assert (out / "report.html").is_file() and "| hydra |" in (out / "results.md").read_text()
    manifest = json.loads((out / "students" / "hydra" / "manifest.json").read_text())
    assert manifest["model"] | {"input_shape": None} == {
        "name": RESNET,
        "input_shape": None,
        "num_classes": 10,
        "kwargs": {},
        "head": "fc",
    }


@pytest.mark.parametrize("name", STUDENTS)
def test_load_student_rebuilds_each_bit_for_bit_with_trust_code(resnet_run, name):
    out, trained = resnet_run
    loaded = load_student(out / "students" / name, trust_code=True)
    x = digits_batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), trained[name](x))


@pytest.mark.parametrize("name", STUDENTS)
def test_without_trust_code_the_load_refuses_naming_the_opt_in(resnet_run, name):
    out, _ = resnet_run
    with pytest.raises(CheckpointError, match=rf"import path '{RESNET}'.*trust_code=True"):
        load_student(out / "students" / name)


@pytest.mark.slow  # long end to end: `make test-all` only
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_every_student_exports_with_trust_code(resnet_run, fmt, capsys):
    out, _ = resnet_run
    for name in STUDENTS:
        student = out / "students" / name
        assert main(["export", str(student), "--format", fmt, "--trust-code"]) == 0
        assert (student / f"student.{'pt' if fmt == 'torchscript' else 'onnx'}").is_file()
    assert "max difference from PyTorch" in capsys.readouterr().out


@pytest.mark.slow  # long end to end: `make test-all` only
def test_the_evaluate_step_reads_the_folder_again_with_trust_code(resnet_run, capsys):
    out, _ = resnet_run
    assert main(["evaluate", "--out", str(out), "--quiet"]) == 2  # its config.yaml is a file
    assert "--trust-code" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out), "--quiet", "--trust-code"]) == 0


@pytest.mark.slow  # long end to end: `make test-all` only
def test_split_heads_and_latentbe_on_a_sequential_factory(tmp_path):
    out = tmp_path / "run"
    args = [f"model={MLP}", "student.head=3", "hydra.split=1", "methods=[hydra, latentbe]"]
    trained = run_keeping_students(out, *args)
    hydra = load_student(out / "students" / "hydra", trust_code=True)
    assert len(hydra.heads.stacked) == 3  # each head: Linear, ReLU and the classifier
    x = digits_batch()
    with torch.no_grad():
        for name in ("hydra", "latentbe"):
            loaded = load_student(out / "students" / name, trust_code=True)
            assert torch.equal(loaded(x), trained[name](x))


@pytest.mark.slow
@pytest.mark.vision  # `make test-vision`'s venv has timm; elsewhere it is skipped
@pytest.mark.skipif(import_problem("timm") is not None, reason=str(import_problem("timm")))
def test_the_documented_timm_recipe_end_to_end(tmp_path):
    """docs/data-and-models.md's timm line as written: ``model=timm:create_model`` with no
    ``student.head`` (found by ``get_classifier()``), Hydra, BatchEnsemble and KD on digits,
    each rebuilt from the folder bit for bit."""
    out = tmp_path / "run"
    timm_args = "model_args={model_name: resnet18, num_classes: 10, in_chans: 1}"
    trained = run_keeping_students(
        out, "model=timm:create_model", timm_args, "methods=[hydra, be, kd]"
    )
    x = digits_batch()
    with torch.no_grad():
        for name in STUDENTS:
            loaded = load_student(out / "students" / name, trust_code=True)
            assert torch.equal(loaded(x), trained[name](x))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [f"model={RESNET}", "student.head=fc", "hydra.split=1", "methods=[hydra]"],
            "'hydra.split' takes the last layers of a network from an import path only where "
            "it is a plain nn.Sequential chain",
        ),
        (
            [f"model={RESNET}", "student.head=layer1", "methods=[hydra]"],
            "student.head='layer1' of model 'any_network_models:tiny_resnet' is Block, not "
            "nn.Linear",
        ),
        (
            ["student.head=fc", "methods=[hydra]"],
            "'student.head' names the classifier of a model from an import path; the "
            "student's model 'mlp' is registered",
        ),
        (["student.head=fc;rm"], "'student.head' must be an attribute path"),
    ],
)
def test_what_cannot_work_is_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys, args, message
):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), *args, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_the_defaults_add_hydra_once_the_head_is_named():
    images = SimpleNamespace(task="classification", input_shape=(3, 8, 8))
    config = build_config({"model": RESNET, "model_args": {}})
    assert engine.default_methods(config, images) == ["kd", "endd"]
    named = build_config({"model": RESNET, "model_args": {}, "student": {"head": "fc"}})
    assert engine.default_methods(named, images) == ["kd", "hydra+mixture", "endd"]
