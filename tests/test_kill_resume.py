"""A run killed with SIGKILL at random moments, then resumed, ends exactly where an uninterrupted
run ends, and leaves no corrupt file behind; finished phases are kept, other settings refused."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from ensemble_distill.checkpoint import is_temporary
from ensemble_distill.cli import main

pytestmark = pytest.mark.slow  # SIGKILL and resume, many runs: `make test-all` only

TINY = [
    "members=3",
    "epochs=8",
    "model_args={widths: [32]}",
    "methods=[kd, hydra, endd, hydra+gaussian]",
    "eval.latency_repeats=1",
]
# Wall-clock figures differ between any two runs; everything else must be identical.
TIMINGS = ("latency_ms_b1", "latency_ms_b256")


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "ensemble_distill", "run", "--out", str(out), "--quiet", *TINY]


def environment() -> dict[str, str]:
    # One thread: the same float summation order in every process.
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def metrics(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    for row in results["methods"].values():
        for key in TIMINGS:
            row.pop(key)
    return results


def assert_nothing_corrupt(out: Path, killed: bool = False) -> None:
    """Every file parses: safetensors load, JSON and YAML parse. No temporary file is left,
    except, right after a SIGKILL, the one a write was filling (nothing can remove it then; the
    next run does, :func:`is_temporary` telling it from the user's files)."""
    for path in out.rglob("*"):
        if not path.is_file() or (killed and is_temporary(path)):
            continue
        assert not path.name.endswith(".tmp"), f"leftover temporary file {path}"
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                    handle.get_tensor(key)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())


def test_sigkill_at_random_moments_then_resume_gives_identical_results(tmp_path):
    reference = tmp_path / "reference"
    start = time.perf_counter()
    subprocess.run(command(reference), env=environment(), check=True, capture_output=True)
    duration = time.perf_counter() - start

    out, rng, kills = tmp_path / "killed", random.Random(0), 0
    for _ in range(4):
        process = subprocess.Popen(
            command(out), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # Early enough that a resumed run, which keeps the finished phases, is still running;
        # under a loaded machine the reference run's duration is only a rough guide.
        time.sleep(rng.uniform(0.15, 0.6) * duration)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert_nothing_corrupt(out, killed=True)
    subprocess.run(command(out), env=environment(), check=True, capture_output=True)
    assert kills >= 2, "the run finished before it could be killed; lengthen it"
    assert metrics(out) == metrics(reference)
    assert_nothing_corrupt(out)
    assert not (out / "progress").exists()  # finished phases leave no progress behind


def test_a_finished_run_is_kept_and_other_settings_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    quick = ["members=2", "epochs=2", "model_args={widths: [8]}", "methods=[kd]"]
    assert main(["run", "--out", str(out), "--quiet", *quick]) == 0
    weights = (out / "students" / "kd" / "model.safetensors").stat().st_mtime_ns
    assert main(["run", "--out", str(out), "--quiet", *quick]) == 0
    log = (out / "run.log").read_text()
    assert "teacher: already trained" in log and "student kd: already trained" in log
    assert (out / "students" / "kd" / "model.safetensors").stat().st_mtime_ns == weights

    assert main(["run", "--out", str(out), "--quiet", *quick, "kd.temperature=2"]) == 2
    assert "trained with other settings (changed: kd)" in capsys.readouterr().err
    assert main(["run", "--out", str(out), "--quiet", "--force", *quick, "kd.temperature=2"]) == 0
    manifest = json.loads((out / "students" / "kd" / "manifest.json").read_text())
    assert manifest["config"]["kd"]["temperature"] == 2.0
