"""End-to-end: the CLI on digits with a tiny config, and every bad input it must refuse."""

import errno
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from ensemble_distill.cli import main
from ensemble_distill.errors import ConfigError

TINY = ["members=3", "epochs=2", "model_args={widths: [16]}", "eval.latency_repeats=2"]


def test_run_writes_results_config_and_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"] == "digits" and results["members"] == 3
    assert results["version"] == metadata.version("ensemble-distill")
    # digits are images: the default Hydra distils on the pooled mixture (issue 28)
    assert set(results["methods"]) == {"ensemble", "member", "kd", "hydra+mixture", "endd"}
    for row in results["methods"].values():
        assert {"acc", "nll", "brier", "ece", "mi", "ood_auroc", "params"} <= set(row)
        assert {"cnll", "cece", "cbrier", "dee", "mi_spearman_ood"} <= set(row)
        assert 0.0 <= row["dee"] <= 3.0  # below 1: worse than one member (extrapolated)
    assert results["methods"]["ensemble"]["params"] == 3 * results["methods"]["member"]["params"]
    assert results["methods"]["kd"]["mi"] == 0.0
    assert results["methods"]["kd"]["mi_spearman_ood"] is None  # undefined for constant MI
    assert results["methods"]["hydra+mixture"]["mi"] > 0 and results["methods"]["endd"]["mi"] > 0
    assert len(results["ensemble_size_cnll"]) == 3
    assert "| kd |" in (out / "results.md").read_text()
    assert "members: 3" in (out / "config.yaml").read_text()
    for folder in ("teacher", "students/kd"):
        assert (out / folder / "model.safetensors").is_file()
        assert (out / folder / "history.csv").read_text().startswith("epoch,")
    assert "\nensemble " in capsys.readouterr().out  # the summary's first row


def test_steps_one_by_one_reuse_the_saved_config(tmp_path):
    out = str(tmp_path / "run")
    assert main(["train-teacher", "--out", out, "--quiet", *TINY, "methods=[kd]"]) == 0
    assert main(["distill", "--out", out, "--quiet"]) == 0
    assert main(["evaluate", "--out", out, "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["members"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset=nope"], "'dataset' must be one of auto-mpg"),
        (["model=nope"], "'model' must be one of cnn, mlp"),
        (["methods=[kd, nope]"], "unknown method 'nope'"),
        (["membrs=3"], "did you mean 'members'"),
        (["members=many"], "'members' must be int"),
        (["members=0"], "'members' must be >= 1, got 0"),
        (["dataset=mnist", "data_dir=/does/not/exist"], "/does/not/exist"),
        (
            ["device=cuda:0"] if not __import__("torch").cuda.is_available() else ["device=tpu"],
            "device",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("ensemble-distill: error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_console_script_help_for_every_command():
    for command in ("run", "train-teacher", "distill", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-m", "ensemble_distill", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "--out" in done.stdout and "key=value" in done.stdout


def test_overrides_may_stand_between_options(tmp_path):
    out = tmp_path / "run"
    args = ["run", "members=2", "--out", str(out), *TINY[1:], "methods=[kd]", "--quiet"]
    assert main([*args, "members=3"]) == 0
    assert "members: 3" in (out / "config.yaml").read_text()


def test_distill_without_teacher_is_a_clear_error(tmp_path, capsys):
    assert main(["distill", "--out", str(tmp_path), "--quiet", *TINY]) == 2
    assert "train it first" in capsys.readouterr().err


@pytest.mark.slow  # long end to end: `make test-all` only
def test_run_writes_a_log_and_a_self_contained_report(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *TINY, "methods=[kd]"]) == 0
    log = (out / "run.log").read_text()
    assert "student kd trained" in log and "teacher: 3 members trained" in log
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html


REGRESSION_TINY = ["members=3", "epochs=3", "model_args={widths: [16]}", "eval.latency_repeats=2"]


def write_table(path, rows=60):
    """A numeric CSV table: y = 2·a − b + noise, with a header row."""
    gen = __import__("numpy").random.default_rng(0)
    a, b = gen.normal(size=rows), gen.normal(size=rows)
    y = 2 * a - b + 0.1 * gen.normal(size=rows)
    lines = ["a,b,y"] + [f"{x:.5f},{z:.5f},{t:.5f}" for x, z, t in zip(a, b, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_regression_run_on_a_users_csv_table(tmp_path, capsys):
    table, out = tmp_path / "table.csv", tmp_path / "run"
    write_table(table)
    args = ["run", "--data", str(table), "--target", "y", "--out", str(out), "--quiet"]
    assert main([*args, *REGRESSION_TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "regression" and results["ood"] == "shift"
    assert set(results["methods"]) == {"ensemble", "member", "kd", "hydra"}  # the task's default
    for row in results["methods"].values():
        assert {"rmse", "nll", "epistemic", "coverage_90", "ood_auroc"} <= set(row)
    assert results["methods"]["kd"]["epistemic"] == 0.0
    assert results["methods"]["kd"]["ood_auroc"] == 0.5  # no epistemic term to rank by
    assert results["methods"]["hydra"]["epistemic"] > 0
    saved = (out / "config.yaml").read_text()
    assert "dataset: csv" in saved and "target: y" in saved and "- hydra" in saved
    assert (out / "report.html").is_file() and "\nhydra " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset=toy-gap", "methods=[endd]"], "method 'endd' does not support regression"),
        (["dataset=toy-gap", "methods=[hydra+ods]"], "hydra+ods' does not support regression"),
        (["dataset=toy-gap", "task=classification"], "is a regression dataset"),
        (["dataset=csv"], "needs dataset_args path, target"),
        (["--data", "x.csv"], "--data and --target go together"),
    ],
)
def test_bad_regression_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_an_output_path_that_cannot_be_a_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert main(["run", "--out", str(blocker / "run"), "--quiet", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read or write" in err and str(blocker) in err and len(err.splitlines()) == 1


def test_a_full_disk_stops_cleanly_and_keeps_earlier_results(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *TINY, "methods=[kd]"]) == 0
    before = (out / "results.json").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ensemble_distill.checkpoint.os.fsync", full)
    capsys.readouterr()
    assert main(["run", "--out", str(out), "--quiet", "--force", *TINY, "methods=[kd]"]) == 2
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and len(err.splitlines()) == 1
    assert (out / "results.json").read_bytes() == before
    assert not list(out.rglob("*.tmp"))


def test_a_loss_that_becomes_nan_stops_and_says_which_epoch_is_kept(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", *TINY, "optim.lr=1e30", "optim.name=sgd"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "the loss became" in err and "lower optim.lr" in err and len(err.splitlines()) == 1


def ascii_console_cli(cwd, *args):
    """``ensemble-distill ARGS`` in a process whose console is ASCII: a C locale, no UTF-8
    mode, no PYTHONIOENCODING (a bare container or a cron job)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONIOENCODING"}
    env |= {"LC_ALL": "C", "PYTHONUTF8": "0"}
    command = [sys.executable, "-m", "ensemble_distill", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)


@pytest.mark.slow  # a real process, long end to end: `make test-all` only
def test_results_and_file_names_print_on_an_ascii_console(tmp_path):
    tiny = ["epochs=1", "members=2", "methods=[kd]", "eval.latency_repeats=1"]
    # A non-ASCII OUT: its name reaches Python as lone surrogates, which every file we write
    # (config.yaml and its signature, run.log, the report) must carry through unchanged.
    done = ascii_console_cli(tmp_path, "run", "--out", "résumé-out", "--quiet", *tiny, TINY[2])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stderr == b""  # no logging error either
    assert (tmp_path / "résumé-out" / "report.html").is_file()
    assert b"\nkd " in done.stdout and b"\\u2191" in done.stdout  # the column arrows, escaped
    refused = ascii_console_cli(tmp_path, "report", "résumé")
    assert refused.returncode == 2
    assert "résumé has no results.json".encode() in refused.stderr  # the name as typed


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("a message\nfrom deep inside\r\non three lines"),
        OSError(errno.EACCES, "Permission denied\nreally", "a\nfile"),
    ],
)
def test_an_error_with_newlines_is_printed_on_one_line(tmp_path, capsys, monkeypatch, error):
    def refuse(args):
        raise error

    monkeypatch.setattr("ensemble_distill.cli.resolve_config", refuse)
    assert main(["run", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("ensemble-distill: error: ")
    assert "deep inside on three" in err or "denied really" in err
