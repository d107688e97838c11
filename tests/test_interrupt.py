"""Ctrl-C (SIGINT) during ``run`` or ``sweep`` (issue 30, item 5): one line, exit status 130, a
``stopped: interrupted`` line in run.log — in a real process interrupted while it trains."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensemble_distill.cli import INTERRUPTED, main

# Enough epochs that the teacher is still training when the signal comes.
LONG = ["--quiet", "members=2", "epochs=2000", "model_args={widths: [8]}", "methods=[kd]"]
LINE = "ensemble-distill: interrupted; rerun the same command to resume"


def interrupt_while_training(args: list[str], progress: str, root: Path) -> tuple[int, str]:
    """Start ``ensemble-distill ARGS``, send SIGINT once a file matching ``progress`` (under
    ``root``) shows that training began; the exit status and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ensemble_distill", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell's background job (`make test-all &`) ignores SIGINT,
        # the child would inherit that and Python would then never raise KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not any(root.glob(progress)) and process.poll() is None:
            assert time.monotonic() < deadline, "training never began"
            time.sleep(0.05)
        assert process.poll() is None, "the command ended before it was interrupted"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, err.strip()


@pytest.mark.slow  # a real process, long end to end: `make test-all` only
def test_ctrl_c_during_a_run_prints_one_line_and_logs_it(tmp_path):
    out = tmp_path / "out"
    code, err = interrupt_while_training(
        ["run", "--out", str(out), *LONG], "progress/teacher/*.safetensors", out
    )
    assert (code, err) == (INTERRUPTED, LINE)
    assert "stopped: interrupted" in (out / "run.log").read_text().splitlines()[-1]
    assert not (out / "teacher" / "manifest.json").exists()  # stopped, not finished


@pytest.mark.slow  # a real process, long end to end: `make test-all` only
def test_ctrl_c_during_a_sweep_prints_one_line_and_logs_it(tmp_path):
    out = tmp_path / "sweep"
    code, err = interrupt_while_training(
        ["sweep", "--out", str(out), *LONG, "seed=0,1"], "*/progress/teacher/*.safetensors", out
    )
    assert (code, err) == (INTERRUPTED, LINE)
    logs = [path.read_text().splitlines()[-1] for path in out.glob("*/run.log")]
    assert len(logs) == 1 and "stopped: interrupted" in logs[0]
    assert not (out / "sweep.md").exists()


def test_ctrl_c_in_a_command_that_does_not_train_says_only_interrupted(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ensemble_distill.config_listing.config_listing", interrupted)
    assert main(["config"]) == INTERRUPTED
    assert capsys.readouterr().err.strip() == "ensemble-distill: interrupted"


@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_an_interrupted_pipeline_command_exits_130_in_process(monkeypatch, capsys, command):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("ensemble_distill.pipeline.run", interrupted)
    assert main([command, "--out", "unused", "--quiet"]) == INTERRUPTED
    assert capsys.readouterr().err.strip() == LINE
