"""Feed every kind of bad input to the CLI (and to the Python API where the CLI cannot reach)
and record what a user sees; writes docs/reliability.{json,md}.

    python benchmarks/reliability_table.py

Each case runs in a fresh temporary folder. A case passes when it exits with code 2 (CLI) or
raises our own error type (API) with a one-line message and no traceback; a case whose input is
valid (its expected exit code is 0) must succeed. The output-folder cases also check what OUT
holds afterwards (nothing lost, nothing partial): a broken check is appended to the message as
``[BROKEN: …]`` and fails the case.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from ensemble_distill import distill, evaluate, metrics, teacher_from_modules, train_teacher
from ensemble_distill.cli import main
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.data.download import download
from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]
TINY = ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1"]
BROKEN = " [BROKEN: "


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
    return code, message + ("" if not marker.exists() else f"{BROKEN}the payload ran]")


# --- trust boundary (round three) ---
def shell_manifest(work: Path, part: str) -> tuple[Path, Path]:
    """A finished run whose ``part`` manifest names ``os:system`` with a ``touch`` command
    as its model (the weights and their hash untouched); the folder and the marker."""
    out = finished_run(work)
    marker = work / "pwned"
    folder = out / ("teacher" if part == "teacher" else "students/kd")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["model"] |= {"name": "os:system", "kwargs": {"command": f"touch {marker}"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, marker


def ran(marker: Path) -> str:
    return f"{BROKEN}the payload ran]" if marker.exists() else ""


def tampered_manifest_export(work: Path) -> tuple[int, str]:
    folder, marker = shell_manifest(work, "student")
    code, message = cli("export", str(folder), "--format", "torchscript")
    return code, message + ran(marker)


def tampered_manifest_load(work: Path, part: str) -> tuple[int, str]:
    from ensemble_distill import load_student, load_teacher

    folder, marker = shell_manifest(work, part)
    code, message = api(lambda: (load_teacher if part == "teacher" else load_student)(folder))
    return code, message + ran(marker)


def shell_import_path(work: Path, *args: str) -> tuple[int, str]:
    marker = work / "pwned"
    kwargs = f"model_args={{command: 'touch {marker}'}}"
    code, message = cli(*args, "--out", str(work / "out"), "--quiet", kwargs)
    return code, message + ran(marker)


def implicit_config_import_path(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("model: mlp", "model: mypkg.nets:build"))
    return cli("evaluate", "--out", str(out), "--quiet")


# --- end of trust boundary ---


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


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (a missing root: nothing)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def unchanged(root: Path, before: dict[str, bytes]) -> str:
    """'' when ``root`` holds exactly ``before``; else a [BROKEN: …] note naming the change."""
    after = snapshot(root)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"{BROKEN}changed {', '.join(changed)}]" if changed else ""


USER_FILES = {"photos/2024/.IMG_0001.jpg.tmp": b"photo", "progress/mine.txt": b"notes"}


def folder_with_user_files(work: Path) -> Path:
    out = work / "mine"
    for name, data in USER_FILES.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return out


def user_files_refused_run(work: Path) -> tuple[int, str]:
    out = folder_with_user_files(work)
    before = snapshot(out)
    code, message = cli("run", "--out", str(out), "--force", "--quiet", *TINY, "optim.name=bogus")
    return code, message + unchanged(out, before)


def user_files_forced_run(work: Path) -> tuple[int, str]:
    out = folder_with_user_files(work)
    code, message = cli("run", "--out", str(out), "--force", "--quiet", *TINY, "methods=[kd]")
    lost = [name for name, data in USER_FILES.items() if not (out / name).is_file()]
    seen = message or f"finished; kept {', '.join(USER_FILES)}"
    return code, seen + (f"{BROKEN}removed {', '.join(lost)}]" if lost else "")


def refused_run_changes_nothing(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    before = snapshot(out)
    code, message = cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]", "split_seed=1")
    return code, message + unchanged(out, before)


def evaluate_other_settings(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    before = snapshot(out)
    code, message = cli("evaluate", "--out", str(out), "--quiet", "split_seed=1")
    return code, message + unchanged(out, before)


def two_runs_at_once(work: Path) -> tuple[int, str]:
    """A second run into an OUT that a first (another process) is using."""
    out = work / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "ensemble_distill", "run", "--out", str(out), "--quiet", *TINY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (out / "run.log").exists() and first.poll() is None:  # the lock comes first
            time.sleep(0.05)
        code, message = cli("run", "--out", str(out), "--quiet", *TINY, "seed=1")
    finally:
        first.wait()
    return code, message + ("" if first.returncode == 0 else f"{BROKEN}the first run failed]")


def new_out_refused_step(work: Path) -> tuple[int, str]:
    out = work / "new"
    code, message = cli("distill", "--out", str(out), "--quiet", *TINY)
    return code, message + (f"{BROKEN}{out} was created]" if out.exists() else "")


def failed_run_in_a_subprocess(work: Path) -> tuple[int, str]:
    """The CLI as a user runs it (its own console): each line it prints, and what it left."""
    out = work / "new"
    command = [sys.executable, "-m", "ensemble_distill", "run", "--out", str(out), "--quiet"]
    done = subprocess.run(
        [*command, *TINY, "optim.name=sgd", "optim.lr=1e30"], capture_output=True, text=True
    )
    left = {p.name for p in out.glob("*")} - {".lock", "run.log", "progress"}
    note = f"{BROKEN}left {', '.join(sorted(left))}]" if left else ""
    return done.returncode, done.stderr.strip() + note  # two lines (a doubled error) fail


def hand_edited_config(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("latency_repeats: 1", "latency_repeats: 5"))
    before = snapshot(out)
    code, message = cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]")
    return code, message + unchanged(out, before)


def users_results_json(work: Path) -> tuple[int, str]:
    out = work / "mine"
    out.mkdir()
    write(out / "results.json", '{"accuracy": 0.99}')
    before = snapshot(out)
    code, message = cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]")
    return code, message + unchanged(out, before)


def umask_respected(work: Path) -> tuple[int, str]:
    previous = os.umask(0o022)
    try:
        out = work / "run"
        code, message = cli("run", "--out", str(out), "--quiet", *TINY, "methods=[kd]")
    finally:
        os.umask(previous)
    names = ("config.yaml", "results.json", "report.html", "teacher/model.safetensors")
    modes = {name: (out / name).stat().st_mode & 0o777 for name in names}
    wrong = [f"{name} {mode:o}" for name, mode in modes.items() if mode != 0o644]
    seen = message or f"finished; {', '.join(names)}: mode 644"
    return code, seen + (f"{BROKEN}{', '.join(wrong)}]" if wrong else "")


def report_on_edited(work: Path, name: str, text: str) -> tuple[int, str]:
    out = finished_run(work)
    write(out / name, text)
    return cli("report", str(out))


def edited_results(work: Path) -> tuple[int, str]:
    out = finished_run(work)
    results = json.loads((out / "results.json").read_text())
    results["methods"]["kd"]["acc"] = "high"
    write(out / "results.json", json.dumps(results))
    return cli("report", str(out))


def dangling_out(work: Path) -> tuple[int, str]:
    link = work / "link"
    link.symlink_to(work / "gone" / "run")
    code, message = cli("run", "--out", str(link), "--quiet", *TINY)
    return code, message + (
        f"{BROKEN}created the link's target]" if (work / "gone").exists() else ""
    )


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


# Issue #18's bad inputs: each is refused before the first epoch, so a tiny run suffices.
A = ["--quiet", "epochs=1", "members=2", "methods=[kd]"]


def digits_run(work: Path, *args: str) -> tuple[int, str]:
    """``run --out WORK/r`` on digits with :data:`A` and ``args``."""
    return cli("run", "--out", str(work / "r"), *A, *args)


def laughs(levels: int, flow: bool) -> str:
    """Aliases of aliases under ``model_args``: ``levels`` lists of nine, 9**levels values."""
    names = "abcdefghi"[:levels]
    lists = {"a": f"&a [{', '.join('x' * 9)}]"}
    for previous, name in itertools.pairwise(names):
        lists[name] = f"&{name} [{', '.join([f'*{previous}'] * 9)}]"
    if flow:
        return "model_args={" + ", ".join(f"{n}: {v}" for n, v in lists.items()) + "}"
    return "model_args:\n" + "".join(f"  {n}: {v}\n" for n, v in lists.items())


def config_file(work: Path, name: str, data: bytes) -> tuple[int, str]:
    """``run --config WORK/NAME`` holding ``data``."""
    (work / name).write_bytes(data)
    return digits_run(work, "--config", str(work / name))


def config_dir(work: Path) -> tuple[int, str]:
    (work / "cfgdir").mkdir()
    return digits_run(work, "--config", str(work / "cfgdir"))


def table(work: Path, name: str, data: bytes, target: str = "y") -> tuple[int, str]:
    """``run --data WORK/NAME --target TARGET``, the file holding ``data``."""
    (work / name).write_bytes(data)
    return cli("run", "--data", str(work / name), "--target", target, "--out", str(work / "r"), *A)


def rows(cell: str, column: str = "a") -> str:
    """:data:`ROWS` with ``cell`` in column ``column`` of the last row."""
    return ROWS + (f"{cell},1\n" if column == "a" else f"1,{cell}\n")


def mlp(slope: float = 0.01) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LeakyReLU(slope))


def members_with_other_settings() -> None:
    teacher_from_modules([mlp(0.01), mlp(0.3)])


def float_labels_to_classifier() -> None:
    x, y = torch.rand(8, 2), torch.tensor([0, 1] * 4)
    distill(teacher_from_modules([mlp(), mlp()]), train_data=(x, y.float()), epochs=1)


class TupleModel(torch.nn.Module):
    """A module whose forward returns a tuple (as some libraries' models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x


def evaluate_tuple_model() -> None:
    evaluate(TupleModel(), (torch.rand(4, 2), torch.tensor([0, 1, 0, 1])))


def nan_ood_data() -> None:
    x, ood = torch.rand(4, 2), torch.rand(4, 2)
    ood[0, 0] = float("nan")
    evaluate(mlp(), (x, torch.tensor([0, 1, 0, 1])), ood_data=ood)


def negative_lr_api() -> None:
    x, y = torch.rand(8, 2), torch.tensor([0, 1] * 4)
    train_teacher((x, y), members=2, epochs=1, model_args={"widths": [4]}, optim={"lr": -1})


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
    (
        "tampered manifest, export",
        "a student's manifest.json names `os:system` with a `touch` command as its model; "
        "`export DIR`",
        tampered_manifest_export,
    ),
    (
        "tampered manifest, load_student",
        "the same manifest; API: `load_student(DIR)`",
        lambda w: tampered_manifest_load(w, "student"),
    ),
    (
        "tampered manifest, load_teacher",
        "the teacher's manifest.json tampered the same way; API: `load_teacher(DIR)`",
        lambda w: tampered_manifest_load(w, "teacher"),
    ),
    (
        "standard-library import path in a config",
        '`model=os:system "model_args={command: touch …}"`',
        lambda w: shell_import_path(w, "run", "model=os:system"),
    ),
    (
        "standard-library import path as a sweep value",
        '`sweep model=os:system,mlp "model_args={command: touch …}"`',
        lambda w: shell_import_path(w, "sweep", "model=os:system,mlp"),
    ),
    (
        "import path in a run folder's config.yaml",
        "`evaluate --out DIR` where DIR/config.yaml names `model: mypkg.nets:build`",
        implicit_config_import_path,
    ),
    ("damaged progress file", "a truncated per-epoch progress file", damaged_progress),
    (
        "plain-HTTP download",
        "API: `download('http://…')`",
        lambda w: api(lambda: download("http://example.com/x", w / "x", "0" * 32)),
    ),
    (
        "user files in OUT, refused run",
        "`--force optim.name=bogus` into a folder holding `photos/2024/.IMG_0001.jpg.tmp`, "
        "`progress/mine.txt`",
        user_files_refused_run,
    ),
    (
        "user files in OUT, valid run (exit 0 expected)",
        "`--force` into that folder: both files must survive",
        user_files_forced_run,
    ),
    (
        "refused run changes nothing",
        "rerun a finished `--out` with `split_seed=1`; every file compared",
        refused_run_changes_nothing,
    ),
    (
        "evaluate with settings the weights were not trained with",
        "`evaluate split_seed=1` on a finished run",
        evaluate_other_settings,
    ),
    (
        "two runs into one OUT at once",
        "a second `run` while another process runs",
        two_runs_at_once,
    ),
    (
        "error after the data load, new OUT",
        "`distill --out NEW` without a teacher: NEW must not be created",
        new_out_refused_step,
    ),
    (
        "failed run: error printed once, nothing partial",
        "real process, `optim.name=sgd optim.lr=1e30` into a new OUT (only run.log and "
        "progress/ may be left)",
        failed_run_in_a_subprocess,
    ),
    (
        "hand-edited config.yaml",
        "`eval.latency_repeats` edited in OUT/config.yaml, then `run` with the old settings",
        hand_edited_config,
    ),
    ("a user's own results.json in OUT", "`run --out` a folder holding it", users_results_json),
    (
        "file permissions (exit 0 expected)",
        "a run under umask 022: files must be mode 644, not 600",
        umask_respected,
    ),
    (
        "report on an edited history.csv",
        "`report` after a cell of teacher/history.csv became `abc`",
        lambda w: report_on_edited(w, "teacher/history.csv", "epoch,loss\n1,abc\n"),
    ),
    (
        "report on an edited diversity.json",
        '`report` after diversity.json became `{"perturbed": 1}`',
        lambda w: report_on_edited(w, "diversity.json", '{"perturbed": 1}'),
    ),
    (
        "report on an edited results.json",
        "`report` after a metric became the string `high`",
        edited_results,
    ),
    ("`--out` a dangling symlink", "`--out LINK` pointing at a missing folder", dangling_out),
    (
        'nested YAML aliases ("billion laughs")',
        "`run --config laughs.yaml` (408 bytes, aliases of aliases: `9**9` values)",
        lambda w: config_file(w, "laughs.yaml", laughs(9, flow=False).encode()),
    ),
    (
        "nested YAML aliases in an override",
        "`'model_args={a: &a [x,…], b: &b [*a,…], …}'` (`9**5` values)",
        lambda w: digits_run(w, laughs(5, flow=True)),
    ),
    (
        "duplicate YAML key",
        "`--config dup.yaml` with `members` twice",
        lambda w: config_file(w, "dup.yaml", b"members: 2\nmembers: 3\n"),
    ),
    (
        "binary `--config`",
        "`--config bin.yaml` holding non-UTF-8 bytes",
        lambda w: config_file(w, "bin.yaml", b"members: \xff\xfe\x00\x81\n"),
    ),
    ("`--config` a folder", "`--config cfgdir`", config_dir),
    ("NaN option", "`kd.temperature=.nan`", lambda w: digits_run(w, "kd.temperature=.nan")),
    (
        "overflowing float",
        "`kd.temperature=1e400`",
        lambda w: digits_run(w, "kd.temperature=1e400"),
    ),
    (
        "int past int64",
        "`split_seed=100000000000000000000`",
        lambda w: digits_run(w, "split_seed=100000000000000000000"),
    ),
    (
        "seed out of range",
        "`seed=100000000000000000`",
        lambda w: digits_run(w, "seed=100000000000000000"),
    ),
    ("zero lr", "`optim.lr=0`", lambda w: digits_run(w, "optim.lr=0")),
    ("negative lr", "`optim.lr=-1`", lambda w: digits_run(w, "optim.lr=-1")),
    (
        "negative width",
        "`model_args={widths: [-3]}`",
        lambda w: digits_run(w, "model_args={widths: [-3]}"),
    ),
    (
        "zero head width",
        "`methods=[hydra] hydra.head_widths=[0]`",
        lambda w: digits_run(w, "methods=[hydra]", "hydra.head_widths=[0]"),
    ),
    ("zero eval batch", "`eval.batch_size=0`", lambda w: digits_run(w, "eval.batch_size=0")),
    (
        "zero latency repeats",
        "`eval.latency_repeats=0`",
        lambda w: digits_run(w, "eval.latency_repeats=0"),
    ),
    (
        "Hydra split beyond the layers",
        "`methods=[hydra] hydra.split=9`",
        lambda w: digits_run(w, "methods=[hydra]", "hydra.split=9"),
    ),
    (
        "CSV in Latin-1",
        "`--data latin.csv --target y` with a `é` in the header",
        lambda w: table(w, "latin.csv", ROWS.replace("a,y", "café,y").encode("latin-1")),
    ),
    (
        "200,000-character cell",
        "`--data big.csv --target y`",
        lambda w: table(w, "big.csv", rows("1" * 200_000).encode()),
    ),
    (
        "underscored number",
        "CSV with a `1_000_000` cell",
        lambda w: table(w, "t.csv", rows("1_000_000").encode()),
    ),
    (
        "Arabic-Indic digits",
        "CSV with a `١٢٣` cell",
        lambda w: table(w, "t.csv", rows("\u0661\u0662\u0663").encode()),
    ),
    (
        "targets near 1e300",
        "CSV whose `y` column holds 1e300 and -1e300",
        lambda w: table(w, "t.csv", (rows("1e300", "y") + "2,-1e300\n").encode()),
    ),
    (
        "emoji target",
        "`--data ünï.csv --target 😀` on a table without that column",
        lambda w: table(w, "ünï.csv", ROWS.encode(), target="😀"),
    ),
    (
        "members with other settings",
        "API: `teacher_from_modules` of two members, `LeakyReLU(0.01)` and `LeakyReLU(0.3)`",
        lambda w: api(members_with_other_settings),
    ),
    (
        "float 0/1 labels, classifier teacher",
        "API: `distill(teacher, train_data=(x, y.float()))`, two-output members",
        lambda w: api(float_labels_to_classifier),
    ),
    (
        "`evaluate` on a model returning a tuple",
        "API: `evaluate(model, (x, y))`, `forward` returning `(logits, x)`",
        lambda w: api(evaluate_tuple_model),
    ),
    (
        "`nn.Identity` members",
        "API: `teacher_from_modules([nn.Identity()] * 2)`",
        lambda w: api(lambda: teacher_from_modules([torch.nn.Identity()] * 2)),
    ),
    (
        "NaN in `ood_data`",
        "API: `evaluate(model, data, ood_data=x_with_nan)`",
        lambda w: api(nan_ood_data),
    ),
    (
        "negative lr through the API",
        'API: `train_teacher(..., optim={"lr": -1})`',
        lambda w: api(negative_lr_api),
    ),
    # --- image folders (round three) ---
    (
        "decompression bomb in an image folder",
        "`dataset=imagefolder`, a 70-byte PNG whose header claims 100000 x 100000 pixels",
        lambda w: image_folder_bomb(w),
    ),
    (
        "`image_size` beyond Pillow's pixel limit",
        "`dataset_args={image_size: 100000}`",
        lambda w: image_run(w, image_tree(w), "dataset_args={image_size: 100000}"),
    ),
    (
        "`in_memory` images beyond the memory",
        "`dataset_args={in_memory: true, image_size: [9000, 9000]}`, 2000 images",
        lambda w: image_folder_in_memory(w),
    ),
    (
        "more decoding workers than cores",
        "`dataset_args={workers: 1000}`",
        lambda w: image_run(w, image_tree(w), "dataset_args={workers: 1000}"),
    ),
    (
        "empty image file",
        "a 0-byte `x.png` in a class folder",
        lambda w: image_run(w, image_tree(w, spoil=lambda root: (root / "b" / "x.png").touch())),
    ),
    (
        "text file named `.png`",
        "`notes.png` holding text in a class folder",
        lambda w: image_run(w, image_tree(w, spoil=text_as_png)),
    ),
    (
        "symbolic link to a system file",
        "`x.png` linking to `/etc/passwd` in a class folder",
        lambda w: image_run(w, image_tree(w, spoil=link_to_passwd)),
    ),
    (
        "a single class folder",
        "`dataset=imagefolder` with one class folder (a hidden `.../` beside it)",
        lambda w: image_run(w, image_tree(w, classes=("a", "..."))),
    ),
    (
        "12-bit PNGs (exit 0 expected)",
        "16-bit greyscale PNGs holding values 0..4080; decoded values checked ≤ 4080/65535",
        lambda w: image_folder_12_bit(w),
    ),
    (
        "hidden files and folders (exit 0 expected)",
        "0-byte `.png` files in `a/.thumbnails/`, `a/@eaDir/`, `__MACOSX/`, `.../`, `._x.png`",
        lambda w: image_folder_hidden_junk(w),
    ),
    # --- one line, always (round three) ---
    (
        "Ctrl-C during a run (exit 130 expected)",
        "real process, SIGINT once the teacher trains; run.log checked for `stopped: interrupted`",
        lambda w: interrupted_run(w),
    ),
    (
        "Ctrl-C during a sweep (exit 130 expected)",
        "real process, `sweep seed=0,1`, SIGINT once the first point trains",
        lambda w: interrupted_sweep(w),
    ),
    (
        "two sweeps into one folder at once",
        "a second `sweep --out DIR` while another process sweeps into DIR",
        lambda w: two_sweeps_at_once(w),
    ),
    (
        "unclosed bracket in a sweep value",
        '`sweep ... "members=[2, 3"`',
        lambda w: cli("sweep", "--out", str(w / "s"), *TINY, "seed=0,1", "members=[2, 3"),
    ),
    (
        "`ood_data` of another shape",
        "API: `evaluate(model, (x, y), ood_data=...)`, x (N, 4), ood_data (N, 7)",
        lambda w: api(ood_of_another_shape),
    ),
    (
        "`mean_probs` inputs of another shape",
        "API: `mean_probs(model, x)` with x (N, 7) for a model of 4 inputs",
        lambda w: api(mean_probs_of_another_shape),
    ),
    (
        "complex inputs",
        "API: `uncertainty(model, x)` with x complex64",
        lambda w: api(complex_inputs),
    ),
    (
        "float64 model, float32 inputs",
        "API: `mean_probs(model.double(), x)`",
        lambda w: api(float64_model),
    ),
    (
        "members on the meta device",
        "API: `distill([m0, m1], ...)`, members built under `torch.device('meta')`",
        lambda w: api(meta_members),
    ),
    (
        "model on the meta device",
        "API: `evaluate(model, (x, y))`, the model built under `torch.device('meta')`",
        lambda w: api(meta_model),
    ),
    (
        "`save_student` over a user's manifest.json",
        "API: `save_student(student, DIR)`, DIR holding the user's own manifest.json",
        lambda w: save_over_users_manifest(w),
    ),
    (
        "`save_student` to a file",
        "API: `save_student(student, FILE)`",
        lambda w: save_to_a_file(w),
    ),
    (
        "`load_student` with a `str` (exit 0 expected)",
        'API: `load_student("runs/x/students/kd")`',
        lambda w: load_student_from_str(w),
    ),
    (
        "member file of NaN weights",
        "`teacher.members=[nan.safetensors, ok.safetensors]`, every weight NaN",
        lambda w: bad_member(w, "nan"),
    ),
    (
        "member file of integer weights",
        "`teacher.members=[int.safetensors, ok.safetensors]`, weights rounded to int64",
        lambda w: bad_member(w, "int"),
    ),
    (
        "`.pt` member file of pickled objects",
        "`teacher.members=[m.pt, ...]`, a pickle that would run `touch`",
        lambda w: bad_member(w, "pickle"),
    ),
    (
        "`.npy` header claiming 10¹² inputs",
        "`distill_data=huge.npy`, 384 bytes, header shape (10¹², 1, 8, 8) float32",
        lambda w: huge_npy(w),
    ),
    (
        "`.npz` that expands to 1.5 GB, another shape",
        "`distill_data=big.npz`, ~1.5 MB of zeros that hold a (1500, 1000, 1000) uint8 array",
        lambda w: expanding_npz(w),
    ),
    # --- data identity and members (round three) ---
    (
        "image folder grown after training",
        "a finished `dataset=imagefolder` run; one image added to a class folder; `run` again",
        lambda w: changed_folder(w, grow_folder),
    ),
    (
        "image folder shrunk after training",
        "the same, one image removed (as an error message may advise)",
        lambda w: changed_folder(w, lambda root: (root / "c" / "3.png").unlink()),
    ),
    (
        "`evaluate` after the image folder changed",
        "one image added, then `evaluate --out OUT` (config from OUT/config.yaml)",
        lambda w: changed_folder(w, grow_folder, command="evaluate"),
    ),
    (
        "unchanged image folder (exit 0 expected)",
        "`run` again on the same folder: teacher and student kept",
        lambda w: unchanged_folder_reused(w),
    ),
    (
        "changed image folder with `--force` (exit 0 expected)",
        "one image added, `run --force`: retrained, the new identity recorded",
        lambda w: forced_on_changed_folder(w),
    ),
    (
        "CSV table edited after training",
        "`--data t.csv`, then one target cell edited (same size), `run` again",
        lambda w: edited_table(w),
    ),
    (
        "`distill_data` file replaced after training",
        "`distill_data=aux.npy`, then other inputs saved under that name, `run` again",
        lambda w: replaced_distill_file(w),
    ),
    (
        "one member file three times",
        "`teacher.members=[a.safetensors, a.safetensors, a.safetensors]`",
        lambda w: copied_members(w, member_files(w, ("a",), {}) * 3),
    ),
    (
        "identical member files under other names",
        "`teacher.members=[a, b, c]`, c a byte copy of a",
        lambda w: copied_members(w, member_files(w, ("a", "b"), {"c": "a"})),
    ),
    (
        "`members` beyond the memory",
        "`members=1000000000` (digits MLP: 1.5 PB to train and cache its outputs)",
        lambda w: digits_run(w, "members=1000000000"),
    ),
    # --- end of data identity and members ---
]
# Cases whose input is valid: they must succeed (and pass their checks).
EXPECTED_EXIT = {"user files in OUT, valid run (exit 0 expected)": 0}
EXPECTED_EXIT["file permissions (exit 0 expected)"] = 0


# --- image folders (round three) ---
EXPECTED_EXIT["12-bit PNGs (exit 0 expected)"] = 0
EXPECTED_EXIT["hidden files and folders (exit 0 expected)"] = 0


def image_tree(
    work: Path,
    classes: tuple[str, ...] = ("a", "b"),
    spoil: Callable[[Path], object] | None = None,
    bits: int = 8,
) -> Path:
    """A small image folder: 10 random 8x8 greyscale PNGs per class (``bits`` 8, or 12 stored
    in 16-bit PNGs), then ``spoil(root)``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = work / "images"
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(10):
            if bits == 8:
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            else:
                pixels = (rng.integers(0, 256, (8, 8)) * 16).astype(np.uint16)
            Image.fromarray(pixels).save(root / name / f"{k}.png")
    if spoil is not None:
        spoil(root)
    return root


def image_run(work: Path, root: Path, *args: str) -> tuple[int, str]:
    data = ["dataset=imagefolder", f"data_dir={root}"]
    return cli("run", "--out", str(work / "run"), "--quiet", *TINY, "methods=[kd]", *data, *args)


def text_as_png(root: Path) -> None:
    (root / "b" / "notes.png").write_text("my notes, not a picture\n")


def link_to_passwd(root: Path) -> None:
    (root / "b" / "x.png").symlink_to("/etc/passwd")


def image_folder_bomb(work: Path) -> tuple[int, str]:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
    root = image_tree(work)
    (root / "b" / "bomb.png").write_bytes(bomb + chunk(b"IEND", b""))
    return image_run(work, root)


def image_folder_in_memory(work: Path) -> tuple[int, str]:
    """2000 copies (hard links) of an 8x8 PNG, each to be held as 9000x9000 float32."""
    root = image_tree(work)
    for name in ("a", "b"):
        for k in range(10, 1000):
            os.link(root / name / "0.png", root / name / f"{k}.png")
    return image_run(work, root, "dataset_args={in_memory: true, image_size: [9000, 9000]}")


def image_folder_12_bit(work: Path) -> tuple[int, str]:
    from ensemble_distill.data import create_dataset

    root = image_tree(work, bits=12)
    code, message = image_run(work, root)
    data = create_dataset("imagefolder", data_dir=root, workers=0)
    top = max(float(split.x[:].max()) for split in (data.train, data.val, data.test))
    seen = message or f"finished; largest decoded value {top * 65535:.0f}/65535"
    return code, seen + ("" if 0 < top <= 4080 / 65535 else f"{BROKEN}decoded up to {top}]")


def image_folder_hidden_junk(work: Path) -> tuple[int, str]:
    junk = ["a/.thumbnails/0.png", "a/@eaDir/0.png/THUMB.png", "__MACOSX/a/._0.png"]
    junk += [".../0.png", "a/._0.png"]

    def spoil(root: Path) -> None:
        for name in junk:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"")

    code, message = image_run(work, image_tree(work, spoil=spoil))
    return code, message or f"finished; skipped {', '.join(junk)}"


# --- one line, always (round three) ---
EXPECTED_EXIT["Ctrl-C during a run (exit 130 expected)"] = 130
EXPECTED_EXIT["Ctrl-C during a sweep (exit 130 expected)"] = 130
EXPECTED_EXIT["`load_student` with a `str` (exit 0 expected)"] = 0
LONG = ["--quiet", "members=2", "epochs=2000", "model_args={widths: [8]}", "methods=[kd]"]
LABELS = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])


def start_training(args: list[str], root: Path, progress: str) -> subprocess.Popen:
    """``ensemble-distill ARGS`` in its own process, returned once a file matching
    ``progress`` under ``root`` shows that it trains (or once it ended)."""
    command = [sys.executable, "-m", "ensemble_distill", *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not any(root.glob(progress)) and process.poll() is None:
        time.sleep(0.05)
    return process


def stop(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C ``process``; its exit status and what it printed on stderr."""
    import signal

    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode(errors="replace").strip()


def interrupted_run(work: Path) -> tuple[int, str]:
    out = work / "run"
    code, err = stop(start_training(["run", "--out", str(out), *LONG], out, "progress/*/*"))
    last = (out / "run.log").read_text().splitlines()[-1]
    return code, err + ("" if "stopped: interrupted" in last else f"{BROKEN}run.log: {last}]")


def interrupted_sweep(work: Path) -> tuple[int, str]:
    out = work / "sweep"
    args = ["sweep", "--out", str(out), *LONG, "seed=0,1"]
    code, err = stop(start_training(args, out, "*/progress/*/*"))
    logs = [path.read_text().splitlines()[-1] for path in out.glob("*/run.log")]
    stopped = any("stopped: interrupted" in line for line in logs)
    return code, err + ("" if stopped else f"{BROKEN}no run.log says stopped: interrupted]")


def two_sweeps_at_once(work: Path) -> tuple[int, str]:
    out = work / "sweep"
    args = ["sweep", "--out", str(out), *LONG, "seed=0,1"]
    first = start_training(args, out, "*/progress/*/*")
    try:
        code, message = cli(*args)
    finally:
        first_code, _ = stop(first)
    return code, message + ("" if first_code == 130 else f"{BROKEN}the first sweep failed]")


def linear() -> torch.nn.Module:
    return torch.nn.Linear(4, 2)


def ood_of_another_shape() -> None:
    evaluate(linear(), (torch.rand(8, 4), LABELS), ood_data=torch.rand(5, 7))


def mean_probs_of_another_shape() -> None:
    from ensemble_distill import mean_probs

    mean_probs(linear(), torch.rand(5, 7))


def complex_inputs() -> None:
    from ensemble_distill import uncertainty

    uncertainty(linear(), torch.rand(5, 4, dtype=torch.complex64))


def float64_model() -> None:
    from ensemble_distill import mean_probs

    mean_probs(linear().double(), torch.rand(5, 4))


def meta_members() -> None:
    with torch.device("meta"):
        members = [linear(), linear()]
    distill(members, method="kd", train_data=(torch.rand(8, 4), LABELS), epochs=1)


def meta_model() -> None:
    with torch.device("meta"):
        model = linear()
    evaluate(model, (torch.rand(8, 4), LABELS))


def api_student() -> torch.nn.Module:
    """A tiny student of the API (``distill`` on a registered architecture)."""
    x, y = torch.rand(40, 4), torch.tensor([0, 1] * 20)
    teacher = teacher_from_modules([linear(), linear()])
    return distill(teacher, method="kd", train_data=(x, y), epochs=1, model_args={"widths": [4]})


def save_over_users_manifest(work: Path) -> tuple[int, str]:
    from ensemble_distill import save_student

    folder = work / "mine"
    folder.mkdir()
    write(folder / "manifest.json", '{"dataset card": "mine"}')
    before = snapshot(folder)
    code, message = api(lambda: save_student(api_student(), folder))
    return code, message + unchanged(folder, before)


def save_to_a_file(work: Path) -> tuple[int, str]:
    from ensemble_distill import save_student

    path = write(work / "student", "my notes")
    code, message = api(lambda: save_student(api_student(), path))
    return code, message + ("" if path.read_text() == "my notes" else f"{BROKEN}file changed]")


def load_student_from_str(work: Path) -> tuple[int, str]:
    from ensemble_distill import load_student

    out = finished_run(work)
    code, message = api(lambda: load_student(str(out / "students" / "kd")))
    return code, "loaded" if message == "accepted" else message


def bad_member(work: Path, kind: str) -> tuple[int, str]:
    """``run`` with ``teacher.members`` = a spoilt copy of a trained member (``kind``: nan,
    int or pickle) and a good one; a pickle's payload must not run."""
    from safetensors.torch import save_file

    from ensemble_distill import load_teacher

    out = work / "trained"
    cli("train-teacher", "--out", str(out), "--quiet", *TINY)
    state = load_teacher(out).member(0).state_dict()
    save_file(state, work / "ok.safetensors")
    marker = work / "pwned"
    path = work / ("m.pt" if kind == "pickle" else f"{kind}.safetensors")
    if kind == "nan":
        save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, path)
    elif kind == "int":
        save_file({k: v.round().long() for k, v in state.items()}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(marker)))
    members = f"teacher.members=[{path}, {work / 'ok.safetensors'}]"
    code, message = cli("run", "--out", str(work / "run"), "--quiet", *TINY, members)
    return code, message + ("" if not marker.exists() else f"{BROKEN}the payload ran]")


class Payload:
    """Unpickled, it would run ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def huge_npy(work: Path) -> tuple[int, str]:
    import numpy as np

    path = work / "huge.npy"
    with path.open("wb") as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 1, 8, 8)}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(bytes(384 - handle.tell()))
    return cli("run", "--out", str(work / "run"), *TINY, "methods=[kd]", f"distill_data={path}")


def expanding_npz(work: Path) -> tuple[int, str]:
    """An .npz archive of a (1500, 1000, 1000) uint8 array of zeros, written a megabyte at a
    time (never 1.5 GB in memory here)."""
    import zipfile

    import numpy as np

    path = work / "big.npz"
    shape = (1500, 1000, 1000)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("x.npy", "w", force_zip64=True) as member,
    ):
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(member, header)
        block = bytes(1_000_000)
        for _ in range(1500):
            member.write(block)
    return cli("run", "--out", str(work / "run"), *TINY, "methods=[kd]", f"distill_data={path}")


# --- data identity and members (round three) ---
KEPT = "teacher: already trained with these settings, kept"


def identity_tree(work: Path) -> Path:
    """A small image folder: 3 classes of 8 random 8x8 greyscale PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root = work / "images"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for k in range(8):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{k}.png")
    return root


def identity_run(work: Path, *args: str, command: str = "run") -> tuple[int, str]:
    """``COMMAND --out WORK/run`` on WORK/images (a tiny kd run)."""
    data = ["dataset=imagefolder", f"data_dir={work / 'images'}", "dataset_args={workers: 0}"]
    return cli(command, "--out", str(work / "run"), "--quiet", *TINY, "methods=[kd]", *data, *args)


def grow_folder(root: Path) -> None:
    (root / "a" / "new.png").write_bytes((root / "b" / "0.png").read_bytes())


def changed_folder(
    work: Path, change: Callable[[Path], object], command: str = "run"
) -> tuple[int, str]:
    """A finished run on an image folder, ``change(folder)``, then ``COMMAND`` again: refused,
    and nothing in OUT changed."""
    out = finished_on_folder(work)
    change(work / "images")
    before = snapshot(out)
    code, message = identity_run(work, command=command)
    return code, message + unchanged(out, before)


def finished_on_folder(work: Path) -> Path:
    identity_tree(work)
    identity_run(work)
    return work / "run"


def unchanged_folder_reused(work: Path) -> tuple[int, str]:
    out = finished_on_folder(work)
    code, message = identity_run(work)
    kept = (out / "run.log").read_text().count(KEPT) == 1
    note = "" if kept else f"{BROKEN}the teacher was retrained]"
    return code, (message or "finished; teacher and kd kept") + note


def forced_on_changed_folder(work: Path) -> tuple[int, str]:
    out = finished_on_folder(work)
    before = json.loads((out / "teacher" / "manifest.json").read_text())["config"]
    grow_folder(work / "images")
    code, message = identity_run(work, "--force")
    after = json.loads((out / "teacher" / "manifest.json").read_text())["config"]
    same = after.get("data_identity") == before.get("data_identity")
    seen = message or f"retrained on {after.get('data_identity', '?').partition(', sha256')[0]}"
    return code, seen + (f"{BROKEN}the identity was not updated]" if same else "")


def edited_table(work: Path) -> tuple[int, str]:
    table = write(work / "t.csv", ROWS)
    args = ("run", "--data", str(table), "--target", "y", "--out", str(work / "r"), *A)
    cli(*args)
    write(table, ROWS.replace("\n3,6\n", "\n3,7\n"))  # one target edited, same size
    return cli(*args)


def replaced_distill_file(work: Path) -> tuple[int, str]:
    import numpy as np

    inputs = work / "aux.npy"
    np.save(inputs, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    cli("run", "--out", str(work / "r"), *A, f"distill_data={inputs}")
    np.save(inputs, np.random.default_rng(1).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    return cli("run", "--out", str(work / "r"), *A, f"distill_data={inputs}")


def member_files(work: Path, names: tuple[str, ...], copies: dict[str, str]) -> list[Path]:
    """Digits MLP members (widths [8]) saved as NAME.safetensors, then each ``copies`` key a
    byte copy of the member its value names."""
    from safetensors.torch import save_file

    from ensemble_distill.data import create_dataset
    from ensemble_distill.models import ModelSpec, create_model

    data = create_dataset("digits")
    spec = ModelSpec("mlp", data.input_shape, data.num_classes, {"widths": [8]})
    for seed, name in enumerate(names):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = create_model(spec, data.mean, data.std).state_dict()
        save_file(state, work / f"{name}.safetensors")
    for name, original in copies.items():
        (work / f"{name}.safetensors").write_bytes((work / f"{original}.safetensors").read_bytes())
    return [work / f"{name}.safetensors" for name in (*names, *copies)]


def copied_members(work: Path, listed: list[Path]) -> tuple[int, str]:
    members = f"teacher.members=[{', '.join(map(str, listed))}]"
    return cli("train-teacher", "--out", str(work / "r"), *TINY, members, "--quiet")


EXPECTED_EXIT["unchanged image folder (exit 0 expected)"] = 0
EXPECTED_EXIT["changed image folder with `--force` (exit 0 expected)"] = 0
# --- end of data identity and members ---


def run_case(make: Callable[[Path], tuple[int, str]], expected: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        try:
            code, message = make(Path(folder))
        except BaseException:
            return {"exit": None, "message": traceback.format_exc(limit=1), "ok": False}
    message = message.removeprefix("ensemble-distill: error: ").replace(folder, "WORK")
    one_line = len(message.splitlines()) == 1 and "Traceback" not in message
    ok = code == expected and one_line and BROKEN not in message
    return {"exit": code, "message": message, "ok": ok}


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

**Trust boundary.** What may run code, and what may not:

- *Trusted, may name code*: your command line (`key=value` overrides, `sweep` values), a
  `--config FILE` you name (a config that names an import path is code: read it as such), a
  `model=` / `student.model=` `package.module:factory` you pass.
- *Not trusted, data only whatever it says*: run folders someone sends, with their
  `config.yaml` (read implicitly by `distill` / `evaluate`) and checkpoint manifests
  (`teacher/`, `students/<name>/manifest.json`); member files (`teacher.members`),
  `distill_data` `.npy` / `.npz`, image folders, CSV tables, downloads.

A model named by import path (`package.module:factory`) is code: naming it imports the module
and calls the factory. So loading a teacher or a student (`load_teacher`, `load_student`, the
`evaluate` and `distill` steps, `ensemble-distill export`) builds a model that a *manifest*
names by import path only with the explicit opt-in `trust_code=True` (command line
`--trust-code`); without it the refusal names the file, the import path and the opt-in, and
nothing is imported. A run's own steps trust its checkpoints only where they name the import
path the run's config names (the code the user's config already runs). `OUT/config.yaml` read
implicitly (no `--config`) counts as a file in a folder, not as the user's config. Even a
trusted config may not name the standard library or builtins (`os:system`, `builtins:exec`,
`subprocess:run` build no network and run commands): refused before anything is imported, as
is a class that is not a `torch.nn.Module`. Registered names (`mlp`, `cnn`, ...) only choose
among this package's architectures and need no trust. Tested with payloads that would create
a marker file (`tests/test_trust_boundary.py`: tampered manifests on export, `load_student`,
`load_teacher` and `evaluate`; a standard-library import path as an override, in a config
file, as a sweep value and as the student's model): the marker never appears.

**Security.** No general pickle is ever loaded from a user's file: checkpoints are
safetensors plus a JSON manifest with the SHA-256 of the weights, checked (with names, shapes
and dtypes against the architecture) before loading; a pickle put in place of the weights is
refused without running (tested, and below). Members a user brings (`teacher.members`) are
safetensors, or `.pt` state dicts read by `torch.load(weights_only=True)`, whose unpickler
only rebuilds tensors and plain containers (anything else is refused, tested);
`distill_data` files are NumPy arrays read with `allow_pickle=False`. CIFAR archives are read
in memory after their MD5 is checked, never extracted (a member name such as `../x` or
`/etc/x` is never written anywhere), and each batch goes through an unpickler that can only
rebuild NumPy arrays. Downloads are HTTPS only, streamed to a hidden temporary file, checked
against their checksum and only then renamed into
place, so a failed or partial download leaves no file that looks complete.

**The output folder.** Five rules hold for every command (tested in `tests/test_out_folder.py`
and in the rows from "user files in OUT" on):

- *Only files the project wrote are ever removed*: the temporary files of its atomic writes
  (named `.ensemble-distill-NAME.XXXXXXXX.tmp`, looked for only in the folders it writes) and
  its own progress files (`OUT/progress/…/*.safetensors` whose header carries its progress
  metadata). `--force` starts each phase over by removing that phase's progress files just
  before it trains again, nothing else; a user's file anywhere in OUT, `progress/` included,
  stays.
- *A refused or failed run changes nothing in OUT* (or, once training began, only `progress/`
  and `run.log`): `config.yaml` is written just before the first checkpoint or result it
  describes, and `evaluate` writes its files only after every model is scored. Errors are
  printed once (`run.log` keeps a `stopped:` line).
- *Every value is validated before the first file is written*, and so is what OUT already
  holds: a finished checkpoint trained with other settings, a missing teacher, a `config.yaml`
  edited by hand with other settings (its first line is the SHA-256 of the rest, so an edit is
  noticed; `--config OUT/config.yaml` runs with the edit), a `results.json` that the project
  did not write, an `--out` that is a file or a dangling symbolic link.
- *An OUT is locked while a run uses it* (`flock` on `OUT/.lock`, by rank 0 under `torchrun`):
  a second run into it is refused with one line; the OS releases the lock when a process ends,
  however it ends, so a killed run never blocks its resume.
- *Every result in `results.json` is traceable to the weights that produced it*:
  `weights_sha256` records each model's SHA-256 (the one its manifest vouches for, checked on
  loading), and `evaluate` and `distill` refuse checkpoints whose recorded settings differ
  from the config they read, so no score is computed on another split or setting.

Files are written with the permissions a plain `open` gives (0o666 less the umask), and
`report` checks `results.json`, `diversity.json` and every `history.csv` against what
`evaluate` writes before it reads them: an edited or damaged file is one line naming it.

**Fuzzing** (`make test`, hypothesis): the checkpoint weights and manifest readers, the
per-epoch progress reader (random, truncated and bit-flipped bytes), the idx image/label
parsers and the CSV reader (random bytes/text) — 5 tests × 200 cases — either load valid data
or raise our own error type; the distillation losses (5 property tests × 100 cases: ranges,
invariances, agreement with `torch.distributions`) and the metrics (2 × 50: class-permutation
invariance, ranges). 1,600 generated cases per run; no other exception type. Every config
key (`tests/test_config_fuzz.py`, enumerated from the config's dataclasses, so a new key is
fuzzed too): 600 values of the wrong type, NaN / ±inf, integers past int64, empty or blank text
and nested junk must raise our `ConfigError` naming the key; 400 arbitrary values must either
build a config that the engine accepts and that survives `config.yaml` unchanged, or be refused;
30 of them through the real command line must exit 2 with one line and create no OUT.

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
        "from the API) and one line, no traceback — or, for the valid inputs marked exit 0, "
        "succeed — and every check of what OUT holds afterwards passed (a failed check would "
        f"read [BROKEN: …]). Command: `{record['command']}`; machine: "
        f"{machine_line(record['machine'])}.",
    ]
    return "\n".join(lines) + "\n"


def main_() -> None:
    cases = [
        {"input": name, "how": how, **run_case(make, EXPECTED_EXIT.get(name, 2))}
        for name, how, make in CASES
    ]
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
