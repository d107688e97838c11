"""The output folder OUT of a run: its lock, the signed config.yaml, the ownership of
results.json, temporary files, per-phase progress cleanup and run.log.

OUT is never changed by a run that is refused: :func:`claim_output` checks every value, and what
OUT already holds, before the first file is written, then creates and locks OUT (OUT/.lock,
``flock``: a second run into OUT is refused while one holds it). A run that fails once training
began leaves only ``progress/`` and ``run.log`` changed: config.yaml is written
(:func:`save_config`) just before the first checkpoint or result it describes. Only files this
package wrote are ever removed (its temporary files and progress files, recognised by name and
content). config.yaml carries a signature line, so that a hand-edited one is noticed instead of
silently replaced; a results.json this package did not write is not overwritten.

Under ``torchrun`` rank 0 alone checks, locks and writes OUT (see
:mod:`ensemble_distill.distributed` and docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from ensemble_distill import distributed
from ensemble_distill.checkpoint import atomic_write, encode_text, is_temporary
from ensemble_distill.config import RunConfig, dump_config, load_config
from ensemble_distill.errors import ConfigError, EnsembleDistillError
from ensemble_distill.methods import resolve_method
from ensemble_distill.resume import is_progress_file
from ensemble_distill.settings import (
    fingerprint,
    finished,
    require_checkpoint,
    student_settings,
    teacher_keys,
)

PROGRESS = "progress"
CONFIG = "config.yaml"
RESULTS = "results.json"
LOCK = ".lock"
# config.yaml's first line: the SHA-256 of the rest, so that a hand edit is noticed.
SIGNATURE = "# written by ensemble-distill; sha256 of the lines below: "


@contextlib.contextmanager
def claim_output(
    out: Path,
    config: RunConfig,
    steps: Sequence[str],
    force: bool,
    config_from: Path | None,
) -> Iterator[None]:
    """Check OUT (nothing is written when that refuses), then create and lock it for the block.

    The checks run again once the lock is held: another run may have changed OUT in between.
    Rank 0 alone does this; its verdict is shared with every rank.
    """
    with contextlib.ExitStack() as stack:

        def claim() -> None:
            check_output(out, config, steps, force, config_from)
            stack.callback(start_output(out).close)
            check_output(out, config, steps, force, config_from)

        on_main_rank(claim)
        yield


def on_main_rank(action: Callable[[], None]) -> None:
    """Run ``action`` on rank 0 alone and raise its error on every rank, so that no rank waits
    at a barrier for one that stopped; in one process, just run it."""
    error = None
    if distributed.is_main():
        try:
            action()
        except Exception as exc:
            error = exc
    if distributed.world()[1] > 1:
        message = distributed.gather(None if error is None else str(error))[0]
        if error is None and message is not None:
            raise EnsembleDistillError(message)
    if error is not None:
        raise error


def check_output(
    out: Path,
    config: RunConfig,
    steps: Sequence[str],
    force: bool,
    config_from: Path | None,
) -> None:
    """Refuse, before anything is written, a run that would lose or mix what OUT holds: OUT is
    not a folder; a hand-edited config.yaml with other settings; a results.json that this
    package did not write; a checkpoint trained with other settings (or one a step needs that
    is missing)."""
    if out.is_symlink() and not out.exists():
        raise ConfigError(
            f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist; "
            "create that folder, or pass another --out"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder (created if missing)")
    check_config_file(out / CONFIG, config, force, config_from)
    if "evaluate" in steps:
        check_results_file(out / RESULTS, force)
    check_checkpoints(out, config, steps, force)


def check_config_file(path: Path, config: RunConfig, force: bool, config_from: Path | None) -> None:
    """Refuse to replace a config.yaml that was edited by hand (or not written by us) with
    other settings, unless this run's config was read from it or ``force``."""
    if force or not path.exists() or signed_intact(path) or same_settings(path, config):
        return
    if config_from is not None and config_from.resolve() == path.resolve():
        return
    raise ConfigError(
        f"{path} was edited by hand (or not written by ensemble-distill) and differs from this "
        f"run's settings; pass --config {path} to run with it, move it away to discard it, or "
        "rerun with --force to replace it"
    )


def check_results_file(path: Path, force: bool) -> None:
    """Refuse to overwrite a results.json that this package did not write, unless ``force``."""
    if force or not path.exists() or our_results(path):
        return
    raise ConfigError(
        f"{path} was not written by ensemble-distill; move it away, pass another --out, or "
        "rerun with --force to replace it"
    )


def check_checkpoints(out: Path, config: RunConfig, steps: Sequence[str], force: bool) -> None:
    """A step that trains refuses a finished checkpoint with other settings (unless
    ``force``); a step that only reads one (distill the teacher, evaluate every model) needs
    it present and trained with this config's settings, so that no result mixes settings."""
    teacher = fingerprint(config, teacher_keys(config))
    if "teacher" in steps:
        finished(out / "teacher", teacher, force)
    else:
        require_checkpoint(out / "teacher", teacher)
    if "distill" not in steps and "evaluate" not in steps:
        return
    for name in config.methods:
        method, perturbation = resolve_method(name)
        settings = student_settings(config, method.section, perturbation is not None)
        if "distill" in steps:
            finished(out / "students" / name, settings, force)
        else:
            require_checkpoint(out / "students" / name, settings)


def start_output(out: Path) -> IO[str]:
    """The first change to OUT, once every check passed: create it, lock it, and remove the
    temporary files a killed write left (ours only). Returns the open lock file: the lock
    lasts until it is closed, or until the process ends, however it ends."""
    out.mkdir(parents=True, exist_ok=True)
    handle = lock_output(out)
    for folder in written_folders(out):
        for path in folder.iterdir():
            if is_temporary(path) and path.is_file():
                path.unlink()
    return handle


def lock_output(out: Path) -> IO[str]:
    """Take OUT/.lock (``flock``): a second run into OUT is refused while this one holds it.
    The OS releases it when the process ends, so a killed run never blocks its resume."""
    handle = (out / LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        by = f" (process {holder})" if holder.isdigit() else ""
        raise ConfigError(
            f"{out} is in use by another run{by}; wait until it finishes, or pass another --out"
        ) from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def written_folders(out: Path) -> list[Path]:
    """The folders this package writes files into (where its temporary files may be left)."""
    progress = out / PROGRESS
    folders = [out, out / "teacher", out / "report", progress, progress / "teacher"]
    for parent in (out / "students", progress / "students"):
        folders += [parent, *(p for p in parent.glob("*") if p.is_dir())]
    return [folder for folder in folders if folder.is_dir()]


def save_config(out: Path, config: RunConfig) -> None:
    """Write OUT/config.yaml (signed) unless it already holds these settings; called just
    before the first checkpoint or result it describes is written, so that a run that fails
    earlier leaves none. A hand edit with the same settings is kept as the user wrote it."""
    path = out / CONFIG
    text = signed(dump_config(config))
    current = read_text(path)
    if current == text or (
        current is not None and not signed_intact(path) and same_settings(path, config)
    ):
        return
    atomic_write(path, text)


def signed(text: str) -> str:
    """``text`` under a first line holding its SHA-256."""
    return f"{SIGNATURE}{hashlib.sha256(encode_text(text)).hexdigest()}\n{text}"


def signed_intact(path: Path) -> bool:
    """Whether ``path`` is a config.yaml that we wrote and nobody edited since."""
    head, _, body = (read_text(path) or "").partition("\n")
    return head == f"{SIGNATURE}{hashlib.sha256(encode_text(body)).hexdigest()}"


def same_settings(path: Path, config: RunConfig) -> bool:
    """Whether the config file at ``path`` says what ``config`` says (False if unreadable)."""
    try:
        return dump_config(load_config(path)) == dump_config(config)
    except (EnsembleDistillError, ValueError, OSError):
        return False


def our_results(path: Path) -> bool:
    """Whether ``path`` looks like a results.json written by this package (an earlier
    version's too): a JSON object with ``dataset``, ``members`` and a ``methods`` table."""
    try:
        results = json.loads(read_text(path) or "")
    except ValueError:
        return False
    return (
        isinstance(results, dict)
        and isinstance(results.get("methods"), dict)
        and {"dataset", "members"} <= set(results)
    )


def read_text(path: Path) -> str | None:
    """The text of ``path``; None when it is missing, unreadable or not UTF-8."""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def run_log(path: Path, log: logging.Logger) -> Iterator[None]:
    """Append this package's log records (INFO and up) to ``path`` while the block runs; an
    error that stops the block goes to ``path`` only (the CLI prints it once), and so does
    Ctrl-C, as ``stopped: interrupted``, logged as ``log`` (the run's logger)."""
    handler = logging.FileHandler(path, encoding="utf-8", errors="surrogateescape")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("ensemble_distill")
    previous = package.level
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else exc
        record = log.makeRecord(
            log.name, logging.ERROR, __file__, 0, "stopped: %s", (reason,), None
        )
        handler.handle(record)
        raise
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        handler.close()


def remove_progress(directory: Path) -> None:
    """Remove the progress files (and temporary files) our phases wrote in ``directory``, and
    the folder once empty; a file we cannot recognise as ours stays."""
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if is_progress_file(path) or (is_temporary(path) and path.is_file()):
            path.unlink()
    remove_if_empty(directory)


def remove_empty_progress(out: Path, methods: Sequence[str]) -> None:
    """Remove OUT/progress's own folders (teacher, students/<method>, students, itself) where
    no file is left: the progress of finished phases."""
    progress = out / PROGRESS
    students = [progress / "students" / name for name in methods]
    for folder in (*students, progress / "students", progress / "teacher", progress):
        remove_if_empty(folder)


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def start_over(directory: Path) -> None:
    """``--force``: drop a phase's progress just before it trains again (rank 0; then every
    rank waits, so that none resumes from a file being removed)."""
    if distributed.is_main():
        remove_progress(directory)
    distributed.barrier()
