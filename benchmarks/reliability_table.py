"""Feed every kind of bad input to the CLI (and to the Python API where the CLI cannot reach)
and record what a user sees; writes docs/reliability.{json,md}.

    python benchmarks/reliability_table.py

Each case runs in a fresh temporary folder. A case passes when it exits with code 2 (CLI) or
raises our own error type (API) with a one-line message and no traceback.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from ensemble_distill import metrics
from ensemble_distill.cli import main
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.data.download import download
from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]
TINY = ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1"]


def cli(*args: str) -> tuple[int, str]:
    """Exit code and stderr of ``ensemble-distill ARGS``, run in-process."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, err.getvalue().strip()


def finished_run(work: Path) -> Path:
    out = work / "run"
    cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]")
    return out


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tampered_weights(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    weights = out / "students" / "kd" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    return cli("evaluate", "--out", str(out), "--quiet")


def pickle_payload(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    marker = work / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (out / "students" / "kd" / "model.safetensors").write_bytes(pickle.dumps(Payload()))
    code, message = cli("evaluate", "--out", str(out), "--quiet")
    return code, message + ("" if not marker.exists() else " [PAYLOAD RAN]")


def damaged_progress(work: Path) -> tuple[int, str]:
    out = work / "run"
    progress = out / "progress" / "teacher" / "teacher.safetensors"
    progress.parent.mkdir(parents=True)
    progress.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    return cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]")


def members_mismatch(work: Path) -> tuple[int, str]:
    out = work / "run"
    cli("train-teacher", "--out", str(out), "--quiet", *TINY)
    return cli("distill", "--out", str(out), "--quiet", "members=3")


def other_settings(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    return cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]", "epochs=2")


def full_disk(work: Path) -> tuple[int, str]:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch("ensemble_distill.checkpoint.os.fsync", no_space):
        return cli("run", "--out", str(work / "run"), "--quiet", *TINY)


def api(call: Callable[[], object]) -> tuple[int, str]:
    """(2, message) when ``call`` raises our error type; anything else is a failure."""
    try:
        call()
    except EnsembleDistillError as exc:
        return 2, str(exc)
    return 0, "accepted"


def labels_out_of_range() -> None:
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 7])
    data = ArrayDataset(x, y)
    DataSplits("mine", data, data, data, num_classes=3)


def csv(work: Path, text: str) -> tuple[int, str]:
    table = write(work / "table.csv", text)
    return cli("run", "--data", str(table), "--target", "y", "--out", str(work / "r"), "--quiet")


ROWS = "a,y\n" + "".join(f"{i},{2 * i}\n" for i in range(20))
CASES: list[tuple[str, str, Callable[[Path], tuple[int, str]]]] = [
    ("unknown config key", "`membrs=3`", lambda w: cli("run", "--out", str(w), "membrs=3")),
    ("wrong type", "`members=many`", lambda w: cli("run", "--out", str(w), "members=many")),
    ("impossible value", "`members=0`", lambda w: cli("run", "--out", str(w), "members=0")),
    (
        "unknown dataset",
        "`dataset=imagenet`",
        lambda w: cli("run", "--out", str(w), "dataset=imagenet"),
    ),
    (
        "unknown method",
        "`methods=[kd, nope]`",
        lambda w: cli("run", "--out", str(w), "methods=[kd, nope]"),
    ),
    (
        "method unfit for the task",
        "`dataset=toy-gap methods=[endd]`",
        lambda w: cli("run", "--out", str(w), "dataset=toy-gap", "methods=[endd]"),
    ),
    (
        "missing data files",
        "`dataset=mnist data_dir=/nowhere`",
        lambda w: cli("run", "--out", str(w), "dataset=mnist", "data_dir=/nowhere"),
    ),
    (
        "unknown config file",
        "`--config missing.yaml`",
        lambda w: cli("run", "--config", str(w / "missing.yaml"), "--out", str(w)),
    ),
    (
        "YAML that is not a mapping",
        "a config file holding `[1, 2]`",
        lambda w: cli("run", "--config", str(write(w / "c.yaml", "[1, 2]")), "--out", str(w / "r")),
    ),
    ("NaN in the data", "CSV with a `nan` cell", lambda w: csv(w, ROWS + "nan,1\n")),
    ("Inf in the data", "CSV with an `inf` cell", lambda w: csv(w, ROWS + "1,inf\n")),
    ("non-numeric cell", "CSV with `abc`", lambda w: csv(w, ROWS + "abc,1\n")),
    (
        "wrong shape (ragged rows)",
        "CSV row with 3 cells under a 2-column header",
        lambda w: csv(w, ROWS + "1,2,3\n"),
    ),
    ("empty dataset", "CSV with only a header", lambda w: csv(w, "a,y\n")),
    (
        "target column missing",
        "`--target y` on a table without `y`",
        lambda w: csv(w, ROWS.replace("a,y", "a,b")),
    ),
    (
        "--data without --target",
        "`--data t.csv`",
        lambda w: cli("run", "--data", "t.csv", "--out", str(w)),
    ),
    (
        "label out of range",
        "API: labels 0..7 with `num_classes=3`",
        lambda w: api(labels_out_of_range),
    ),
    (
        "NaN in probabilities",
        "API: `metrics.nll` of probabilities with a NaN",
        lambda w: api(
            lambda: metrics.nll(torch.tensor([[[float("nan"), 1.0]]]), torch.tensor([0]))
        ),
    ),
    (
        "probabilities of the wrong shape",
        "API: `metrics.accuracy` with 3 labels for 2 examples",
        lambda w: api(
            lambda: metrics.accuracy(torch.full((2, 1, 2), 0.5), torch.tensor([0, 1, 0]))
        ),
    ),
    (
        "teacher/student member count mismatch",
        "`distill members=3` on a 2-member teacher",
        members_mismatch,
    ),
    (
        "settings changed on a finished run",
        "rerun into the same `--out` with `epochs=2`",
        other_settings,
    ),
    (
        "unwritable output folder",
        "`--out` below a regular file",
        lambda w: cli("run", "--out", str(write(w / "f", "x") / "run"), *TINY),
    ),
    ("full disk", "every fsync fails with ENOSPC", full_disk),
    (
        "loss becomes NaN",
        "`optim.name=sgd optim.lr=1e30`",
        lambda w: cli(
            "run", "--out", str(w / "r"), "--quiet", *TINY, "optim.name=sgd", "optim.lr=1e30"
        ),
    ),
    ("tampered weights", "one byte of a student's weights flipped", tampered_weights),
    (
        "pickle payload as weights",
        "a pickle that would run `touch` in place of model.safetensors",
        pickle_payload,
    ),
    ("damaged progress file", "a truncated per-epoch progress file", damaged_progress),
    (
        "plain-HTTP download",
        "API: `download('http://…')`",
        lambda w: api(lambda: download("http://example.com/x", w / "x", "0" * 32)),
    ),
]


def run_case(make: Callable[[Path], tuple[int, str]]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        try:
            code, message = make(Path(folder))
        except BaseException:
            return {"exit": None, "message": traceback.format_exc(limit=1), "ok": False}
    message = message.removeprefix("ensemble-distill: error: ").replace(folder, "WORK")
    one_line = len(message.splitlines()) == 1 and "Traceback" not in message
    return {"exit": code, "message": message, "ok": code == 2 and one_line}


INTRO = """# Reliability: resume, nothing lost, bad input refused

Written by `python benchmarks/reliability_table.py` (its JSON beside this file).

**Resume.** Every training phase (the vectorised teacher, or each looped member; each student
phase) saves its complete state after every epoch to `OUT/progress/…/<phase>.safetensors`:
weights and buffers, optimiser and schedule state, every random stream (data order,
perturbations, torch's global generator), the epoch, the step and the history, with the run's
settings and a SHA-256 of all of it. The file is replaced atomically (temporary file, fsync,
rename), so a kill leaves the previous epoch or the new one. `ensemble-distill run` into an
existing `OUT` resumes: a finished teacher or student (its manifest, written last, records the
settings it was trained with) is kept, an unfinished phase continues from its last epoch, and
evaluation reruns. A phase trained with other settings is refused (exit 2) unless `--force`,
which retrains. With a fixed `seed` on CPU a resumed run ends with exactly the metrics of an
uninterrupted one: `tests/test_resume.py` checks it bit for bit inside one process, and
`tests/test_kill_resume.py` kills a real `run` with SIGKILL at random moments (several times),
resumes it, compares every metric with an uninterrupted run's and parses every file left
behind.

**Security.** Nothing is ever unpickled from a user's file: checkpoints are safetensors plus a
JSON manifest with the SHA-256 of the weights, checked (with names, shapes and dtypes against
the architecture) before loading; a pickle put in place of the weights is refused without
running (tested, and below). CIFAR archives are read in memory after their MD5 is checked,
never extracted (a member name such as `../x` or `/etc/x` is never written anywhere), and each
batch goes through an unpickler that can only rebuild NumPy arrays. Downloads are HTTPS only,
streamed to a hidden temporary file, checked against their checksum and only then renamed into
place, so a failed or partial download leaves no file that looks complete.

**Fuzzing** (`make test`, hypothesis): the checkpoint weights and manifest readers, the
per-epoch progress reader (random, truncated and bit-flipped bytes), the idx image/label
parsers and the CSV reader (random bytes/text) — 5 tests × 200 cases — either load valid data
or raise our own error type; the distillation losses (5 property tests × 100 cases: ranges,
invariances, agreement with `torch.distributions`) and the metrics (2 × 50: class-permutation
invariance, ranges). 1,600 generated cases per run; no other exception type.

## Every bad input tried

"""


def markdown(record: dict) -> str:
    lines = [
        "| bad input | how it was tried | exit | what the user sees |",
        "|---|---|---:|---|",
    ]
    for case in record["cases"]:
        message = case["message"].replace("|", "\\|")
        lines.append(f"| {case['input']} | {case['how']} | {case['exit']} | {message} |")
    passed = sum(case["ok"] for case in record["cases"])
    lines += [
        "",
        f"{passed} of {len(record['cases'])} cases end with exit code 2 (or our own error type "
        f"from the API) and one line, no traceback. Command: `{record['command']}`; machine: "
        f"{machine_line(record['machine'])}.",
    ]
    return "\n".join(lines) + "\n"


def main_() -> None:
    cases = [{"input": name, "how": how, **run_case(make)} for name, how, make in CASES]
    record = {
        "command": "python benchmarks/reliability_table.py",
        "machine": machine_info(),
        "cases": cases,
    }
    (ROOT / "docs" / "reliability.json").write_text(json.dumps(record, indent=2))
    table = markdown(record)
    (ROOT / "docs" / "reliability.md").write_text(INTRO + table)
    print(table)
    if not all(case["ok"] for case in cases):
        sys.exit(1)


if __name__ == "__main__":
    main_()
