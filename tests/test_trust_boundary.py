"""The trust boundary (docs/reliability.md): files someone else wrote never make us run code.

Each payload would create a marker file if it ran; every test checks the marker is absent.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from ensemble_distill import load_student, load_teacher
from ensemble_distill.cli import main
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.export import export_student

TINY = ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1", "--quiet"]
PAYLOAD = "ed_test_payload"
# A third-party-looking module: importing it, or calling its factory, leaves a marker.
PAYLOAD_SOURCE = """
from pathlib import Path

from torch import nn

MARKER = Path({marker!r})
(MARKER.parent / "imported").touch()


def build(**kwargs):
    MARKER.touch()
    return nn.Linear(1, 1)


class NotANetwork:
    def __init__(self, **kwargs):
        MARKER.touch()
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished digits run with a kd student; each test tampers with a copy."""
    out = tmp_path_factory.mktemp("trust") / "run"
    assert main(["run", "--out", str(out), *TINY, "methods=[kd]"]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    return shutil.copytree(finished_run, tmp_path / "run")


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """:data:`PAYLOAD` importable for this test; yields the marker its factory creates."""
    marker = tmp_path / "ran"
    (tmp_path / f"{PAYLOAD}.py").write_text(PAYLOAD_SOURCE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, PAYLOAD, raising=False)
    yield marker
    sys.modules.pop(PAYLOAD, None)


def tamper(manifest_path, name: str, kwargs: dict) -> None:
    """Change only the manifest's model: the weights and their hash stay valid."""
    manifest = json.loads(manifest_path.read_text())
    manifest["model"] |= {"name": name, "kwargs": kwargs}
    manifest_path.write_text(json.dumps(manifest))


def shell_payload(marker) -> tuple[str, dict]:
    return "os:system", {"command": f"touch {marker}"}


@pytest.mark.parametrize("part", ["student", "teacher"])
def test_a_manifest_naming_a_shell_command_runs_nothing(run_copy, tmp_path, part):
    marker = tmp_path / "ran"
    directory = run_copy / ("teacher" if part == "teacher" else "students/kd")
    tamper(directory / "manifest.json", *shell_payload(marker))
    load = load_teacher if part == "teacher" else load_student
    with pytest.raises(CheckpointError, match=r"import path 'os:system'.*trust_code=True"):
        load(directory)
    # Trusting the folder does not open the standard library either.
    with pytest.raises(ConfigError, match="standard library"):
        load(directory, trust_code=True)
    assert not marker.exists()


def test_export_of_a_tampered_student_runs_nothing(run_copy, payload, capsys):
    student = run_copy / "students" / "kd"
    tamper(student / "manifest.json", f"{PAYLOAD}:build", {})
    assert main(["export", str(student), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--trust-code" in err and len(err.splitlines()) == 1
    assert not payload.exists() and not (payload.parent / "imported").exists()
    assert PAYLOAD not in sys.modules  # not even imported
    with pytest.raises(CheckpointError, match="trust_code"):
        export_student(student, "torchscript")
    assert not payload.exists()


def test_trust_code_is_the_opt_in_that_builds_a_named_factory(run_copy, payload):
    student = run_copy / "students" / "kd"
    tamper(student / "manifest.json", f"{PAYLOAD}:build", {})
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_student(student, trust_code=True)  # a Linear(1, 1) does not fit the mlp weights
    assert payload.exists()  # the opt-in did what it says: it ran the factory


def test_evaluate_refuses_a_manifest_whose_import_path_the_config_does_not_name(
    run_copy, payload, capsys
):
    tamper(run_copy / "students" / "kd" / "manifest.json", f"{PAYLOAD}:build", {})
    assert main(["evaluate", "--out", str(run_copy), "--quiet"]) == 2
    assert "import path" in capsys.readouterr().err
    assert not payload.exists() and PAYLOAD not in sys.modules


def test_a_config_yaml_in_the_output_folder_is_not_trusted_to_name_code(run_copy, payload, capsys):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("model: mlp", f"model: {PAYLOAD}:build"))
    assert main(["evaluate", "--out", str(run_copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml names the import path" in err and "--trust-code" in err
    assert not payload.exists() and PAYLOAD not in sys.modules


@pytest.mark.parametrize(
    "how",
    ["override", "config file", "sweep value", "student"],
)
def test_a_standard_library_import_path_in_a_config_is_refused_before_import(tmp_path, capsys, how):
    marker = tmp_path / "ran"
    name, kwargs = shell_payload(marker)
    args = [f"model_args={json.dumps(kwargs)}"]
    if how == "override":
        command = ["run", f"model={name}", *args]
    elif how == "config file":
        (tmp_path / "c.yaml").write_text(f"model: '{name}'\nmodel_args: {json.dumps(kwargs)}\n")
        command = ["run", "--config", str(tmp_path / "c.yaml")]
    elif how == "sweep value":
        command = ["sweep", f"model={name},mlp", *args]
    else:
        command = ["run", f"student.model={name}", f"student.model_args={json.dumps(kwargs)}"]
    assert main([*command, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "standard library" in err and len(err.splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_class_that_builds_no_network_is_refused_before_it_is_called(tmp_path, payload):
    with pytest.raises(ConfigError, match="the class NotANetwork, not a function or"):
        from ensemble_distill.models import ModelSpec, create_model

        create_model(ModelSpec(f"{PAYLOAD}:NotANetwork", (1, 8, 8), 10, {}))
    assert not payload.exists()


def test_a_run_of_the_users_own_factory_builds_its_own_checkpoints(tmp_path, payload):
    """The config named the factory, so the run's own checkpoints are built from it."""
    out = tmp_path / "out"
    (payload.parent / f"{PAYLOAD}.py").write_text(
        textwrap.dedent(
            """
            from torch import nn


            def build(**kwargs):
                return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            """
        )
    )
    args = [f"model={PAYLOAD}:build", "model_args={}", "methods=[kd]", *TINY[:2], *TINY[3:]]
    assert main(["run", "--out", str(out), *args]) == 0
    assert main(["evaluate", "--out", str(out), "--quiet", "--trust-code"]) == 0
    student = load_student(out / "students" / "kd", trust_code=True)
    assert student(torch.rand(2, 1, 8, 8)).shape == (2, 10)
