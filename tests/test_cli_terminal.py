"""What a practitioner sees in the terminal (issue 19, item 5): --version, the key listing of
``ensemble-distill config``, help that offers only the options a command takes, the teacher's
progress bar, the progress notes and the compact summary after a run."""

import json
import subprocess
import sys
from importlib import metadata
from typing import ClassVar

import pytest
from test_config_validation import config_leaves

from ensemble_distill import training
from ensemble_distill.cli import main
from ensemble_distill.config import OptimConfig, StudentConfig
from ensemble_distill.config_listing import field_comments
from ensemble_distill.data import DATASETS, dataset_args_of
from ensemble_distill.methods import METHODS
from ensemble_distill.methods.perturbations import PERTURBATIONS
from ensemble_distill.models import MODELS, ModelSpec
from ensemble_distill.teachers import train_deep_ensemble

TINY = ["epochs=1", "members=2", "model_args={widths: [8]}", "eval.latency_repeats=1"]
WIDTH = 100  # what a terminal shows without wrapping


def test_version_prints_the_installed_packages_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    version = metadata.version("ensemble-distill")
    assert capsys.readouterr().out.strip() == f"ensemble-distill {version}"


def test_config_lists_every_key_with_its_default_and_the_registered_names(capsys):
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    keys = {line.split(" = ")[0] for line in lines if " = " in line and not line.startswith("#")}
    assert keys == {key for key, _ in config_leaves()}
    assert "student.epochs_multiple = 6.0" in lines
    assert "model_args = {widths: [256, 256]}" in lines  # as written after key= on the line
    listed = "\n".join(lines)
    for registry in (DATASETS, MODELS, METHODS, PERTURBATIONS):
        assert all(name in listed for name in registry.names())
    for name in ("csv", "imagefolder"):  # the datasets that take dataset_args name them
        args = ", ".join(dataset_args_of(name))
        assert f"#   {name} takes dataset_args: {args}" in lines


def test_config_comments_are_the_source_comments_above_and_beside_each_key(capsys):
    optim, student = field_comments(OptimConfig), field_comments(StudentConfig)
    assert optim["momentum"] == "sgd only"  # beside the field
    assert optim["schedule"].startswith("cosine: to 0 over training")  # the line above
    assert student["epochs"].startswith("Student epochs; null:")  # two lines above, joined
    assert student["epochs"].endswith("1× one member's (docs/results/recipes.md).")
    assert "lr" not in optim  # no comment: none made up
    assert main(["config"]) == 0
    assert "optim.momentum = 0.9  # sgd only" in capsys.readouterr().out.splitlines()


def test_config_takes_no_other_arguments(capsys):
    with pytest.raises(SystemExit) as done:
        main(["config", "members=3"])
    assert done.value.code == 2


def help_text(command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ensemble_distill", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    ("command", "fix"),
    [
        ("distill", "reads the data that OUT/config.yaml names"),
        ("evaluate", "reads the data that OUT/config.yaml names"),
        ("sweep", "dataset=csv dataset_args="),
    ],
)
def test_commands_without_data_options_refuse_them(command, fix, tmp_path, capsys):
    text = help_text(command)
    assert "--data" not in text and "--target" not in text
    for option in (["--data", "t.csv"], ["--target=y"]):
        with pytest.raises(SystemExit) as done:
            main([command, "--out", str(tmp_path / "run"), *option])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert "applies to run and train-teacher only" in err and fix in err
    assert not (tmp_path / "run").exists()


def test_help_names_the_config_file_as_in_the_usage_line():
    text = help_text("run")
    assert "--config FILE" in text and "--config CONFIG" not in text
    assert "--data FILE.csv" in text and "--out DIR" in text
    assert "ensemble-distill config" in text  # where every key is listed


class RecordingBar:
    """A stand-in for tqdm that keeps every postfix it is given."""

    postfixes: ClassVar[list[dict]] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def update(self, *args) -> None:
        pass

    def set_postfix(self, **values) -> None:
        RecordingBar.postfixes.append(values)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("vectorize", ["true", "false"])
def test_the_teacher_bar_shows_the_loss_of_its_history(splits, monkeypatch, vectorize):
    monkeypatch.setattr(training, "tqdm", RecordingBar)
    monkeypatch.setattr(RecordingBar, "postfixes", [])
    spec = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})
    _, history = train_deep_ensemble(
        spec,
        splits,
        members=3,
        seed=0,
        epochs=2,
        batch_size=16,
        optim=OptimConfig(lr=1e-2),
        vectorize=vectorize,
        quiet=False,
    )
    # Vectorised: one row per epoch, the members' mean loss (not their sum, 3x as large).
    assert [bar["loss"] for bar in RecordingBar.postfixes] == [
        f"{row['loss']:.4f}" for row in history
    ]


@pytest.mark.slow  # five students and a report: `make test-all` only
def test_a_run_notes_evaluation_and_report_and_prints_a_summary_that_fits_a_terminal(
    tmp_path, capsys, caplog, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a short OUT, as a user types it
    methods = "methods=[kd, hydra, endd, be, hydra+gaussian]"
    with caplog.at_level("INFO", logger="ensemble_distill"):
        assert main(["run", "--out", "run", "--quiet", *TINY, methods]) == 0
    notes = [record.getMessage() for record in caplog.records]
    evaluating = "evaluating 7 models (ensemble, member, 5 students) on the test split and "
    assert notes[-3].startswith(evaluating) and notes[-2] == "writing the report ..."
    assert evaluating in (tmp_path / "run" / "run.log").read_text()
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= WIDTH
    assert lines[-2:] == ["all metrics and footnotes: run/results.md", "report: run/report.html"]
    names = [line.split()[0] for line in lines[2:-2]]
    assert names == ["ensemble", "member", "kd", "hydra", "endd", "be", "hydra+gaussian"]
    acc = json.loads((tmp_path / "run" / "results.json").read_text())["methods"]["kd"]["acc"]
    assert f"{acc:.4f}" in lines[4]  # the kd row, as results.md formats it


def test_a_reader_that_leaves_early_is_not_an_error():
    """`ensemble-distill config | head -1`: the pipe closes before the listing is written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ensemble_distill", "config"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the child has imported torch, let alone printed
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0
    assert b"error" not in stderr.lower()
