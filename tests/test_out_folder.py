"""The output folder's integrity: only our own files are ever removed, a refused run changes
nothing, an OUT in use is locked, a hand-edited config.yaml or a user's results.json is not
overwritten, every result names the weights behind it, files respect the umask, and a report
on edited files is one line (issue 18)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from ensemble_distill import out_folder, pipeline
from ensemble_distill.checkpoint import atomic_write
from ensemble_distill.cli import main
from ensemble_distill.resume import Position, Progress, save_progress

TINY = [
    "members=2",
    "epochs=1",
    "model_args={widths: [8]}",
    "methods=[kd]",
    "eval.latency_repeats=1",
]
# The finished run's settings: TINY with a small diversity analysis (diversity.json).
ARGS = [*TINY, "eval.diversity_etas=[0.1]", "eval.diversity_examples=100"]
RUN = [sys.executable, "-m", "ensemble_distill", "run", "--out"]
# A temporary file that a killed atomic_write leaves behind (its name pattern).
OUR_TEMPORARY = ".ensemble-distill-results.json.k3j9x0ab.tmp"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny run with a diversity analysis (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["run", "--out", str(out), "--quiet", *ARGS]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (its relative path) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def refused(capsys, *args: str) -> str:
    """Run the CLI, require exit 2 with one line; that line."""
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_only_our_own_files_are_removed(run_copy, capsys):
    user_files = {
        "photos/2024/.IMG_0001.jpg.tmp": b"photo",
        ".notes.tmp": b"notes",
        "progress/mine.txt": b"mine",
        "progress/teacher/notes.safetensors": b"not a progress file",
    }
    for name, data in user_files.items():
        (run_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (run_copy / name).write_bytes(data)
    (run_copy / OUR_TEMPORARY).write_bytes(b"half a results.json")
    before = snapshot(run_copy)
    refused(capsys, "run", "--out", str(run_copy), "--force", "--quiet", *ARGS, "optim.lr=-1")
    assert snapshot(run_copy) == before  # refused: nothing removed, nothing written

    assert main(["run", "--out", str(run_copy), "--force", "--quiet", *ARGS]) == 0
    for name, data in user_files.items():
        assert (run_copy / name).read_bytes() == data
    assert not (run_copy / OUR_TEMPORARY).exists()


def test_remove_progress_takes_our_progress_files_only(tmp_path):
    folder = tmp_path / "progress" / "teacher"
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ours = folder / "teacher.safetensors"
    save_progress(
        Progress(ours, module),
        optimizer=optimizer,
        schedule=schedule,
        streams=[torch.Generator()],
        position=Position(1, 1, []),
        settings={},
    )
    (folder / ".ensemble-distill-teacher.safetensors.abcd1234.tmp").write_bytes(b"")
    (folder / "notes.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (folder / "mine.txt").write_text("mine")
    out_folder.remove_progress(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["mine.txt", "notes.safetensors"]


def test_a_refused_run_changes_nothing_and_evaluate_checks_the_weights(run_copy, capsys):
    before = snapshot(run_copy)
    err = refused(capsys, "run", "--out", str(run_copy), "--quiet", *ARGS, "split_seed=1")
    assert "changed: split_seed" in err
    assert snapshot(run_copy) == before  # config.yaml too: evaluate still scores the right split

    for command in ("evaluate", "distill"):
        err = refused(capsys, command, "--out", str(run_copy), "--quiet", "split_seed=1")
        assert "teacher was trained with other settings" in err and "split_seed" in err
        assert "--force" in err
    assert snapshot(run_copy) == before
    assert main(["evaluate", "--out", str(run_copy), "--quiet"]) == 0


def test_results_name_the_weights_that_produced_them(finished_run):
    results = json.loads((finished_run / "results.json").read_text())
    teacher = hashlib.sha256((finished_run / "teacher" / "model.safetensors").read_bytes())
    student = hashlib.sha256((finished_run / "students/kd/model.safetensors").read_bytes())
    assert results["weights_sha256"] == {
        "ensemble": teacher.hexdigest(),
        "member": teacher.hexdigest(),
        "kd": student.hexdigest(),
    }


def test_nothing_is_written_into_a_new_out_when_a_step_is_refused(tmp_path, capsys):
    out = tmp_path / "new"
    err = refused(capsys, "distill", "--out", str(out), "--quiet", *TINY)
    assert "train it first" in err
    assert not out.exists()


def test_a_failed_run_prints_its_error_once_and_leaves_no_config(tmp_path):
    out = tmp_path / "new"
    done = subprocess.run(
        [*RUN, str(out), "--quiet", *TINY, "optim.name=sgd", "optim.lr=1e30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("the loss became") == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # Training began: only the lock, the log and progress may be left, no config.yaml.
    assert {p.name for p in out.iterdir()} <= {".lock", "run.log", "progress"}
    assert "stopped: " in (out / "run.log").read_text()


def test_a_second_run_into_an_out_in_use_is_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    started, release = threading.Event(), threading.Event()
    train_teacher = pipeline.train_teacher

    def slow_teacher(*args, **kwargs):  # run A holds OUT until the test lets it go on
        started.set()
        release.wait(60)
        return train_teacher(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_teacher", slow_teacher)
    codes: list[int] = []
    first = threading.Thread(target=lambda: codes.append(main(["run", "--out", str(out), *TINY])))
    first.start()
    try:
        assert started.wait(60)
        err = refused(capsys, "run", "--out", str(out), "--quiet", *TINY, "seed=1")
        assert "in use by another run" in err and f"process {os.getpid()}" in err
    finally:
        release.set()
        first.join(120)
    assert codes == [0]
    assert json.loads((out / "teacher" / "manifest.json").read_text())["config"]["seed"] == 0


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ensemble_distill import out_folder;"
            f"lock = out_folder.lock_output(Path({str(out)!r})); print('locked', flush=True); "
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(out_folder.ConfigError, match="in use by another run"):
            out_folder.lock_output(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    out_folder.lock_output(out).close()


@pytest.mark.slow  # three end-to-end runs: `make test-all` only
def test_a_hand_edited_config_is_not_reverted(run_copy, capsys):
    config = run_copy / "config.yaml"
    edited = config.read_text().replace("latency_repeats: 1", "latency_repeats: 2")
    config.write_text(edited)
    err = refused(capsys, "run", "--out", str(run_copy), "--quiet", *ARGS)
    assert "edited by hand" in err and f"--config {config}" in err
    assert config.read_text() == edited

    args = ["run", "--out", str(run_copy), "--quiet", "--config", str(config)]
    assert main(args) == 0  # run with the edit: honoured, and the file keeps it
    assert "latency_repeats: 2" in config.read_text()

    commented = "# my own notes\n" + config.read_text()  # same settings: kept as written
    config.write_text(commented)
    assert main(["run", "--out", str(run_copy), "--quiet", *ARGS, "eval.latency_repeats=2"]) == 0
    assert config.read_text() == commented


def test_a_users_own_results_json_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"accuracy": 0.99}')
    err = refused(capsys, "run", "--out", str(out), "--quiet", *TINY)
    assert "results.json was not written by ensemble-distill" in err and "--force" in err
    assert [p.name for p in out.iterdir()] == ["results.json"]


def test_a_dangling_symlink_as_out_is_one_clear_line(tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone" / "run")
    err = refused(capsys, "run", "--out", str(link), "--quiet", *TINY)
    assert "symbolic link" in err and "does not exist" in err
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_respect_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "results.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_run_writes_files_readable_under_the_umask(finished_run):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.yaml", "results.json", "teacher/model.safetensors", "report.html"):
        assert (finished_run / name).stat().st_mode & 0o777 == 0o666 & ~mask


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def set_metric(data):
    data["methods"]["kd"]["acc"] = "high"


EDITS = {
    "history: a word": ("teacher/history.csv", lambda p: p.write_text("epoch,loss\n1,abc\n")),
    "history: ragged": ("students/kd/history.csv", lambda p: p.write_text("epoch,loss\n1,2,3\n")),
    "history: no loss": ("teacher/history.csv", lambda p: p.write_text("epoch,lr\n1,0.1\n")),
    "history: binary": ("teacher/history.csv", lambda p: p.write_bytes(b"\xff\xfe\x00loss")),
    "diversity: wrong type": ("diversity.json", lambda p: p.write_text('{"perturbed": 1}')),
    "diversity: truncated": ("diversity.json", lambda p: p.write_text('{"clean_train": {')),
    "diversity: edges": (
        "diversity.json",
        lambda p: edit_json(p, lambda d: d["clean_train"].update(edges="0,1")),
    ),
    "results: metric a word": ("results.json", lambda p: edit_json(p, set_metric)),
    "results: row a list": (
        "results.json",
        lambda p: edit_json(p, lambda d: d["methods"].update(kd=[1, 2])),
    ),
    "results: members a word": (
        "results.json",
        lambda p: edit_json(p, lambda d: d.update(members="two")),
    ),
    "results: no member row": (
        "results.json",
        lambda p: edit_json(p, lambda d: d["methods"].pop("member")),
    ),
    "results: note a list": (
        "results.json",
        lambda p: edit_json(p, lambda d: d["methods"]["kd"].update(dee_note=[1])),
    ),
    "results: size curve": (
        "results.json",
        lambda p: edit_json(p, lambda d: d.update(ensemble_size_cnll=["x"])),
    ),
    "results: diversity ratio": (
        "results.json",
        lambda p: edit_json(p, lambda d: d["diversity"].update(ratio_to_clean_train={"ods": 1})),
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_report_on_an_edited_file_is_one_line(run_copy, capsys, edit):
    name, change = EDITS[edit]
    change(run_copy / name)
    err = refused(capsys, "report", str(run_copy))
    assert str(run_copy / name) in err and "edited or damaged" in err
