"""Sweeps refuse what they cannot do right (issue 30, item 5): a value with an unclosed bracket
(named as such, not "no swept key"), and a second sweep into a folder that a running sweep
holds (locked like a run folder), each with one line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ensemble_distill.cli import main
from ensemble_distill.errors import ConfigError
from ensemble_distill.sweep import parse_arguments, scan_values

TINY = ["--quiet", "members=2", "model_args={widths: [8]}", "methods=[kd]"]


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("members=[2, 3", r"unclosed bracket in members \('\[' in members=\[2, 3\)"),
        ("model_args={widths: [8]", r"unclosed bracket in model_args \('\{'"),
        ("members=2,3]", r"unmatched closing bracket in members \('\]'"),
    ],
)
def test_an_unbalanced_bracket_is_named_with_its_key(item, message):
    with pytest.raises(ConfigError, match=message):
        parse_arguments(["seed=0,1", item])


def test_balanced_or_quoted_values_are_not_refused():
    assert scan_values("[2, 3],[4]") == (["[2, 3]", "[4]"], None)
    assert scan_values("'[',x") == (["'['", "x"], None)  # a bracket inside quotes
    swept, fixed = parse_arguments(["seed=0,1", "dataset_args={path: bob's.csv}"])
    assert swept == {"seed": ["0", "1"]} and fixed == ["dataset_args={path: bob's.csv}"]


def test_the_cli_says_unclosed_bracket_in_one_line(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *TINY, "members=[2, 3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ensemble-distill: error: sweep: unclosed bracket in members")
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.slow  # long end to end: `make test-all` only
def test_a_second_sweep_into_a_folder_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), *TINY, "epochs=2000", "seed=0,1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "ensemble_distill", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(out.glob("*/progress/teacher/*")) and first.poll() is None:
            assert time.monotonic() < deadline, "the first sweep never began training"
            time.sleep(0.05)
        assert first.poll() is None, "the first sweep ended early"
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert f"{out} is in use by another run (process {first.pid})" in err
        assert len(err.splitlines()) == 1
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
