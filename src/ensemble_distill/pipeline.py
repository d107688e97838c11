"""The pipeline behind the CLI: train the teacher, distil every method, evaluate, write results.

Output directory layout::

    OUT/config.yaml              resolved configuration
    OUT/teacher/                 deep ensemble (model.safetensors, manifest.json, history.csv)
    OUT/students/<method>/       one student per method (same files)
    OUT/predictions.safetensors  test and OOD outputs of every model, for reports
    OUT/results.json, .md        metrics of the ensemble, one member and each student
    OUT/progress/                per-epoch state of unfinished phases (removed once finished)
    OUT/tb/<phase>/              TensorBoard events (with tensorboard=true)
    OUT/run.log                  what each run into OUT did
    OUT/.lock                    held (flock) by the run using OUT; a second run is refused

Running again into the same OUT resumes: a finished teacher or student (its manifest is written
last) trained with the same settings is kept, an unfinished phase continues from its last
saved epoch, and evaluation reruns. ``force`` starts every requested step over.

OUT is never changed by a run that is refused: every value, and what OUT already holds, is
checked before the first file is written. A run that fails once training began leaves only
``progress/`` and ``run.log`` changed: config.yaml is written just before the first checkpoint or
result it describes. Only files this package wrote are ever removed (its temporary files and
progress files, recognised by name and content). config.yaml carries a signature line, so that
a hand-edited one is noticed instead of silently replaced, and results.json records the
SHA-256 of the weights behind every row.

Under ``torchrun`` every process runs this pipeline on a shared OUT; rank 0 alone checks, locks
and writes it (see :mod:`ensemble_distill.distributed` and docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import save
from torch import Tensor, nn

from ensemble_distill import distributed, engine
from ensemble_distill.checkpoint import (
    MANIFEST,
    atomic_write,
    encode_text,
    is_temporary,
    read_manifest,
)
from ensemble_distill.config import (
    BEFORE_THE_KEY,
    RETIRED,
    RunConfig,
    dump_config,
    load_config,
)
from ensemble_distill.engine import Setup, hardware_line, load_student, prepare
from ensemble_distill.errors import ConfigError, EnsembleDistillError
from ensemble_distill.evaluation import (
    GAUSSIAN,
    classification_scores,
    cost_metrics,
    epoch_validator,
    has_members,
    input_grid,
    output_kind,
    predict_outputs,
    predictive,
    regression_scores,
)
from ensemble_distill.methods import resolve_method
from ensemble_distill.methods.diversity import diversity_analysis
from ensemble_distill.metrics import diversity_by_confidence
from ensemble_distill.report import build_report, results_markdown
from ensemble_distill.report.html import package_version
from ensemble_distill.resume import is_progress_file
from ensemble_distill.teachers import DeepEnsemble, load_teacher, save_teacher
from ensemble_distill.teachers.train import member_seed
from ensemble_distill.tensorboard_log import phase_log

log = logging.getLogger(__name__)

STEPS = ("teacher", "distill", "evaluate")
PROGRESS = "progress"
CONFIG = "config.yaml"
RESULTS = "results.json"
LOCK = ".lock"
# config.yaml's first line: the SHA-256 of the rest, so that a hand edit is noticed.
SIGNATURE = "# written by ensemble-distill; sha256 of the lines below: "
# The keys that decide the teacher's weights.
TEACHER_KEYS = (
    "dataset",
    "dataset_args",
    "val_fraction",
    "split_seed",
    "seed",
    "model",
    "model_args",
    "members",
    "epochs",
    "batch_size",
    "optim",
    "teacher",
    "precision",  # resolved (engine.resolve_hardware): bf16 rounding changes the weights
    "memory_format",  # so does another convolution algorithm
    "compile",
)
# What decides a teacher loaded from the user's files (``teacher.members``): the files (their
# SHA-256 are in ``teacher``) and the architecture they load into; training keys play no part.
LOADED_TEACHER_KEYS = (
    "dataset",
    "dataset_args",
    "val_fraction",
    "split_seed",
    "model",
    "model_args",
    "members",
    "teacher",
)


def teacher_keys(config: RunConfig) -> tuple[str, ...]:
    """The config keys whose values a finished teacher is checked against on a rerun."""
    return LOADED_TEACHER_KEYS if config.teacher.members is not None else TEACHER_KEYS


def run(
    config: RunConfig,
    out: Path,
    steps: Sequence[str] = STEPS,
    quiet: bool = False,
    force: bool = False,
    config_from: Path | None = None,
    report: bool = True,
) -> dict[str, Any] | None:
    """Run ``steps`` (a subset of teacher, distill, evaluate) into ``out``, resuming what an
    earlier run into ``out`` left unfinished (see the module docstring); ``force`` retrains.
    ``config_from``: the file ``config`` was read from; when it is OUT/config.yaml, a hand
    edit of that file is this run's config, not a conflict. ``report=False`` leaves out
    report.html and report.md after ``evaluate`` (for studies that read results.json only;
    ``ensemble-distill report OUT`` builds them later).

    Returns the results dictionary when ``evaluate`` ran.

    Under a process group of several ranks (``torchrun``, see docs/distributed.md) every rank
    calls this with the same arguments and ``out`` on a shared file system: all ranks train
    together, rank 0 alone writes files and evaluates, and the others return None.
    """
    setup = prepare(config)
    main = distributed.is_main()
    with (
        claim_output(out, setup.config, steps, force, config_from),
        run_log(out / "run.log") if main else contextlib.nullcontext(),
    ):
        log.info("%s into %s", " + ".join(steps), out)
        log.info("computing on %s", hardware_line(setup.config, setup.device))
        teacher = None
        if "teacher" in steps:
            settings = fingerprint(setup.config, teacher_keys(setup.config))
            if finished(out / "teacher", settings, force):
                log.info("teacher: already trained with these settings, kept")
            else:
                teacher = train_teacher(setup, out, quiet, force)
        if "distill" in steps:
            teacher = teacher or load_teacher(out / "teacher", setup.device)[0]
            distill_all(setup, teacher, out, quiet, force)
        if not main:
            return None
        remove_empty_progress(out, setup.config.methods)
        if "evaluate" in steps:
            log.info("evaluating %s ...", evaluation_scope(setup))
            results = evaluate_run(setup, out)
            if report:
                log.info("writing the report ...")
                build_report(out)
                log.info("wrote %s and %s", out / "results.md", out / "report.html")
            return results
    return None


def evaluation_scope(setup: Setup) -> str:
    """What evaluation is about to compute, for the progress note before it (it takes
    seconds, in which nothing else is printed)."""
    students = len(setup.config.methods)
    ood = next(iter(setup.data.ood), None)
    where = f"the test split and the OOD set {ood}" if ood else "the test split"
    plural = "" if students == 1 else "s"
    return f"{students + 2} models (ensemble, member, {students} student{plural}) on {where}"


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
def run_log(path: Path) -> Iterator[None]:
    """Append this package's log records (INFO and up) to ``path`` while the block runs; an
    error that stops the block goes to ``path`` only (the CLI prints it once)."""
    handler = logging.FileHandler(path, encoding="utf-8", errors="surrogateescape")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("ensemble_distill")
    previous = package.level
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    try:
        yield
    except Exception as exc:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "stopped: %s", (exc,), None)
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


def fingerprint(config: RunConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The config's values of ``keys`` as JSON values: the settings that decide a phase's
    weights, stored in its finished checkpoint's manifest."""
    values = config.to_dict()
    return json.loads(json.dumps({key: values[key] for key in keys}))


def student_settings(config: RunConfig, section: str, perturbed: bool) -> dict[str, Any]:
    """What decides a student's weights: its teacher's settings, the student architecture and
    epochs, its method's config section and, if it has them, the perturbation and the
    auxiliary distillation data (``distill_data``)."""
    keys = (*TEACHER_KEYS, "task", "student", section, *(("perturbation",) if perturbed else ()))
    aux = ("distill_data",) if config.distill_data is not None else ()
    return fingerprint(config, (*keys, *aux))


def finished(directory: Path, settings: dict[str, Any], force: bool) -> bool:
    """Whether ``directory`` holds a finished checkpoint trained with ``settings`` (kept).

    Raises:
        ConfigError: it was trained with other settings and ``force`` is not set.
    """
    if force or not (directory / MANIFEST).is_file():
        return False
    changed = changed_settings(directory, settings)
    if changed:
        raise ConfigError(
            f"{directory} was trained with other settings (changed: {changed}); "
            "rerun with --force to retrain it, or use another --out"
        )
    return True


def require_checkpoint(directory: Path, settings: dict[str, Any]) -> None:
    """Refuse a step that reads ``directory`` when its checkpoint is missing or was trained
    with other settings than ``settings`` (its outputs would not be this config's).

    Raises:
        CheckpointError: no finished checkpoint in ``directory``.
        ConfigError: it was trained with other settings.
    """
    changed = changed_settings(directory, settings)
    if changed:
        raise ConfigError(
            f"{directory} was trained with other settings than this run's (changed: "
            f"{changed}); give the values in its {MANIFEST} (check --config, config.yaml and "
            "the key=value overrides), or retrain it with `ensemble-distill run --force`"
        )


def changed_settings(directory: Path, settings: dict[str, Any]) -> str:
    """The keys of ``settings`` that the checkpoint in ``directory`` was trained with other
    values of, comma-separated ('' when none)."""
    saved = read_manifest(directory).get("config")
    if saved == settings:
        return ""
    if not isinstance(saved, dict):
        saved = {}
    defaults = fingerprint(load_config(), list(settings))
    return ", ".join(
        sorted(
            key
            for key in settings
            if not same_setting(saved.get(key, MISSING), settings[key], defaults[key], key)
        )
    )


MISSING = object()  # a key a saved checkpoint's settings do not have


def same_setting(saved: Any, value: Any, default: Any, key: str) -> bool:
    """``saved == value`` for the (dotted) ``key``, where a key missing from the saved settings
    is one the config gained after that checkpoint was written (``perturbation.pool``,
    ``teacher.members``): it was trained as ``config.BEFORE_THE_KEY`` or the default says; a key
    only the saved settings have must be a ``config.RETIRED`` one that means what ``value`` says."""
    if saved is MISSING:
        saved = BEFORE_THE_KEY.get(key, default)
    if not (isinstance(saved, dict) and isinstance(value, dict) and isinstance(default, dict)):
        return saved == value
    saved = dict(saved)
    for name in set(saved) - set(value):
        replaced_by = RETIRED.get(f"{key}.{name}", {}).get(saved.pop(name))
        if replaced_by is None:
            return False
        saved.setdefault(*replaced_by)
    return all(
        same_setting(saved.get(name, MISSING), item, default.get(name), f"{key}.{name}")
        for name, item in value.items()
    )


def train_teacher(setup: Setup, out: Path, quiet: bool, force: bool = False) -> DeepEnsemble:
    """Train the teacher into OUT/teacher, with per-epoch progress in OUT/progress (started
    over with ``force``)."""
    config, data = setup.config, setup.data
    loaded = config.teacher.members is not None
    directory = out / "teacher"
    progress_dir = out / PROGRESS / "teacher"
    if force:
        start_over(progress_dir)
    start = time.perf_counter()
    with phase_log(config.tensorboard, out, "teacher"):
        ensemble, history = engine.train_teacher(
            setup,
            quiet=quiet,
            progress_dir=progress_dir,
            progress_settings=fingerprint(config, teacher_keys(config)),
        )
    seconds = time.perf_counter() - start
    distributed.barrier()  # every rank has read its progress before rank 0 removes it
    if not distributed.is_main():
        return ensemble
    info = {
        "dataset": data.name,
        # None for members loaded from files (their fingerprint names the files' SHA-256)
        "seeds": None if loaded else [member_seed(config.seed, m) for m in range(config.members)],
        "train_seconds": seconds,
        "val_metrics": epoch_validator(ensemble, data.val, setup.device)(config.epochs),
        "config": fingerprint(config, teacher_keys(config)),
    }
    save_config(out, config)
    _write_history(directory / "history.csv", history)
    save_teacher(directory, ensemble, setup.teacher_spec, info)  # manifest last: finished
    remove_progress(progress_dir)
    how = "loaded from teacher.members" if loaded else "trained"
    log.info("teacher: %d members %s in %.1f s", config.members, how, seconds)
    return ensemble


def distill_all(
    setup: Setup, teacher: DeepEnsemble, out: Path, quiet: bool, force: bool = False
) -> None:
    """Train and save one student per configured method into OUT/students, sharing cached
    teacher outputs; students already trained with the same settings are kept (``force``:
    each starts over)."""
    config = setup.config
    train_outputs = engine.teacher_train_outputs(setup, teacher)
    for name in config.methods:
        method, perturbation = resolve_method(name)
        directory = out / "students" / name
        settings = student_settings(config, method.section, perturbation is not None)
        if finished(directory, settings, force):
            log.info("student %s: already trained with these settings, kept", name)
            continue
        progress_dir = out / PROGRESS / "students" / name
        if force:
            start_over(progress_dir)
        start = time.perf_counter()
        with phase_log(config.tensorboard, out, name):
            student, history = engine.distill_student(
                setup,
                teacher,
                name,
                train_outputs,
                quiet=quiet,
                progress_dir=progress_dir,
                progress_settings=settings,
            )
        distributed.barrier()  # every rank has read its progress before rank 0 removes it
        if not distributed.is_main():
            continue
        manifest = engine.student_manifest(setup, name)
        manifest |= {"train_seconds": time.perf_counter() - start, "config": settings}
        save_config(out, config)
        _write_history(directory / "history.csv", history)
        engine.save_student(directory, student, manifest)  # manifest last: finished
        remove_progress(progress_dir)
        log.info("student %s trained in %.1f s", name, manifest["train_seconds"])


def evaluate_run(setup: Setup, out: Path) -> dict[str, Any]:
    """Evaluate the teacher, one member and every student; write results and predictions.

    Outputs are computed once per model and split (val, test, OOD, and for 1-D regression an
    input grid for the report's bands) and saved to OUT/predictions.safetensors. results.json
    records the SHA-256 of each model's weights (``weights_sha256``; ``member`` is the
    teacher's member 0), the ones its manifest vouches for, and for a classification run with
    a student of several members their test diversity per confidence bin next to the
    teacher's (``test_diversity``, :func:`member_diversity`). Every file is written at the end,
    so a failure leaves the earlier results whole.
    """
    config, data = setup.config, setup.data
    teacher, manifest = load_teacher(out / "teacher", setup.device)
    models: dict[str, nn.Module] = {"ensemble": teacher, "member": teacher.member(0)}
    weights = dict.fromkeys(models, manifest["weights_sha256"])
    for name in config.methods:
        models[name] = load_student(out / "students" / name, setup.device)
        weights[name] = read_manifest(out / "students" / name)["weights_sha256"]
    ood_name, ood = next(iter(data.ood.items()), (None, None))
    results: dict[str, Any] = {
        "dataset": data.name,
        "task": data.task,
        "members": config.members,
        "ood": ood_name,
        "version": package_version(),  # of ensemble-distill, which computed these numbers
        "methods": {},
    }
    splits = {"val": data.val.x, "test": data.test.x}
    splits |= {"ood": ood.x} if ood is not None else {}
    if data.task == "regression" and data.input_shape == (1,):
        splits["grid"] = input_grid(data)
    predictions = {"labels/val": data.val.y, "labels/test": data.test.y}
    kinds, outputs = {}, {}
    for name, model in models.items():
        kinds[name] = GAUSSIAN if data.task == "regression" else output_kind(model)
        outputs[name] = {
            split: predict_outputs(model, x, config.eval.batch_size, setup.device)
            for split, x in splits.items()
        }
        predictions |= {f"{name}/{split}": v for split, v in outputs[name].items()}
    if data.task == "regression":
        predictions["inputs/grid"] = splits.get("grid", torch.empty(0))
        if "grid" in splits:  # 1-D inputs: the report draws test points and the OOD region
            predictions["inputs/test"] = data.test.x
            predictions |= {"inputs/ood": ood.x} if ood is not None else {}
        results |= {"target_mean": data.target_mean, "target_std": data.target_std}
        results["methods"] = regression_scores(outputs, data)
    else:
        results["methods"], results["ensemble_size_cnll"] = classification_scores(
            outputs, kinds, data
        )
        if diversity := member_diversity(outputs, kinds):
            results["test_diversity"] = diversity
    for name, model in models.items():
        repeats = config.eval.latency_repeats
        results["methods"][name] |= cost_metrics(model, data.test.x, repeats, setup.device)
    analysis = teacher_diversity(setup, teacher) if config.eval.diversity_etas else None
    if analysis is not None:
        results["diversity"] = diversity_summary(analysis)
    results["weights_sha256"] = weights
    save_config(out, config)
    if analysis is not None:
        atomic_write(out / "diversity.json", json.dumps(analysis, indent=2))
    # The metadata says how to read each model's outputs (logits, Dirichlet or Gaussian).
    blob = save({k: v.contiguous() for k, v in predictions.items()}, metadata=kinds)
    atomic_write(out / "predictions.safetensors", blob)
    atomic_write(out / RESULTS, json.dumps(results, indent=2))
    atomic_write(out / "results.md", results_markdown(results))
    return results


def member_diversity(
    outputs: dict[str, dict[str, Tensor]], kinds: dict[str, str]
) -> dict[str, Any]:
    """Members' disagreement on the test split of every model with members next to the
    teacher's (Nam et al. 2021, Fig. 3b): whether a student kept the ensemble's diversity.

    Per model whose test outputs are the logits of two or more members (the teacher, Hydra,
    BatchEnsemble, LatentBE), :func:`diversity_by_confidence` of its test probabilities,
    binned by its own confidence max p̄; {} when no student has members. KD and one member
    have no members to disagree; EnD²'s Dirichlet has none either (sampled members would add
    noise and a seed), so it is left out. It reads the outputs evaluation already holds (no
    forward pass), so every classification run gets it, without the perturbation analysis of
    ``eval.diversity_etas``.
    """
    tests = {name: by_split["test"] for name, by_split in outputs.items()}
    names = [name for name, test in tests.items() if has_members(test, kinds[name])]
    if set(names) <= {"ensemble"}:
        return {}
    return {name: diversity_by_confidence(predictive(tests[name]).probs) for name in names}


def teacher_diversity(setup: Setup, teacher: DeepEnsemble) -> dict[str, Any]:
    """:func:`diversity_analysis` of the teacher (what OUT/diversity.json holds)."""
    config, data = setup.config, setup.data
    generator = torch.Generator().manual_seed(config.seed)
    count = min(config.eval.diversity_examples, len(data.train))
    index = torch.randperm(len(data.train), generator=generator)[:count]
    analysis = diversity_analysis(
        teacher.cpu(),
        data.train.x[index],
        data.train.y[index],
        data.test.x,
        config.eval.diversity_etas,
        seed=config.seed,
    )
    teacher.to(setup.device)
    return analysis


def diversity_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The mean diversities and ratios of ``analysis`` that results.json keeps."""
    return {
        "member_train_accuracy": analysis["member_train_accuracy"],
        "clean_train": analysis["clean_train"]["mean"],
        "clean_test": analysis["clean_test"]["mean"],
        "ratio_to_clean_train": analysis["ratio_to_clean_train"],
    }


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-epoch training history as CSV (the union of all rows' keys as columns)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())
