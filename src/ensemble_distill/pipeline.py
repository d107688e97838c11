"""The pipeline behind the CLI: train the teacher, distil every method, evaluate, write results.

Output directory layout::

    OUT/config.yaml              resolved configuration
    OUT/teacher/                 deep ensemble (model.safetensors, manifest.json, history.csv)
    OUT/students/<method>/       one student per method (same files)
    OUT/predictions.safetensors  test and OOD outputs of every model, for reports
    OUT/results.json, .md        metrics of the ensemble, one member and each student
    OUT/progress/                per-epoch state of unfinished phases (removed once finished)

Running again into the same OUT resumes: a finished teacher or student (its manifest is written
last) trained with the same settings is kept, an unfinished phase continues from its last
saved epoch, and evaluation reruns. ``force`` starts every requested step over.

Under ``torchrun`` every process runs this pipeline on a shared OUT; rank 0 alone writes it
(see :mod:`ensemble_distill.distributed` and docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from ensemble_distill import distributed, engine
from ensemble_distill.checkpoint import MANIFEST, atomic_write, read_manifest
from ensemble_distill.config import RunConfig, dump_config
from ensemble_distill.engine import Setup, load_student, prepare
from ensemble_distill.errors import ConfigError
from ensemble_distill.evaluation import (
    GAUSSIAN,
    classification_scores,
    cost_metrics,
    epoch_validator,
    input_grid,
    output_kind,
    predict_outputs,
    regression_scores,
)
from ensemble_distill.methods import resolve_method
from ensemble_distill.methods.diversity import diversity_analysis
from ensemble_distill.report import build_report, results_markdown
from ensemble_distill.teachers import DeepEnsemble, load_teacher, save_teacher
from ensemble_distill.teachers.train import member_seed

log = logging.getLogger(__name__)

STEPS = ("teacher", "distill", "evaluate")
PROGRESS = "progress"
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
    "precision",
)


def run(
    config: RunConfig,
    out: Path,
    steps: Sequence[str] = STEPS,
    quiet: bool = False,
    force: bool = False,
) -> dict[str, Any] | None:
    """Run ``steps`` (a subset of teacher, distill, evaluate) into ``out``, resuming what an
    earlier run into ``out`` left unfinished (see the module docstring); ``force`` retrains.

    Returns the results dictionary when ``evaluate`` ran.

    Under a process group of several ranks (``torchrun``, see docs/distributed.md) every rank
    calls this with the same arguments and ``out`` on a shared file system: all ranks train
    together, rank 0 alone writes files and evaluates, and the others return None.
    """
    setup = prepare(config)
    main = distributed.is_main()
    if main:
        start_output(out, setup.config, force)
    distributed.barrier()  # the others look for progress files only once --force removed them
    with run_log(out / "run.log") if main else contextlib.nullcontext():
        log.info("%s into %s", " + ".join(steps), out)
        teacher = None
        if "teacher" in steps:
            if finished(out / "teacher", fingerprint(setup.config, TEACHER_KEYS), force):
                log.info("teacher: already trained with these settings, kept")
            else:
                teacher = train_teacher(setup, out, quiet)
        if "distill" in steps:
            teacher = teacher or load_teacher(out / "teacher", setup.device)[0]
            distill_all(setup, teacher, out, quiet, force)
        if not main:
            return None
        remove_empty_folders(out / PROGRESS)
        if "evaluate" in steps:
            results = evaluate_run(setup, out)
            build_report(out)
            log.info("wrote %s and %s", out / "results.md", out / "report.html")
            return results
    return None


def start_output(out: Path, config: RunConfig, force: bool) -> None:
    """Create ``out``, clear what a killed write (or ``force``) leaves, save the config."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp"):  # left by a write that a kill interrupted
        stale.unlink()
    if force:
        shutil.rmtree(out / PROGRESS, ignore_errors=True)
    atomic_write(out / "config.yaml", dump_config(config))


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append this package's log records (INFO and up) to ``path`` while the block runs."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("ensemble_distill")
    previous = package.level
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    try:
        yield
    except Exception as exc:
        log.error("stopped: %s", exc)
        raise
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        handler.close()


def remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and its sub-folders where no file is left (finished phases' progress)."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def fingerprint(config: RunConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The config's values of ``keys`` as JSON values: the settings that decide a phase's
    weights, stored in its finished checkpoint's manifest."""
    values = config.to_dict()
    return json.loads(json.dumps({key: values[key] for key in keys}))


def student_settings(config: RunConfig, section: str, perturbed: bool) -> dict[str, Any]:
    """What decides a student's weights: its teacher's settings, the student architecture and
    epochs, its method's config section and, if it has one, the perturbation."""
    keys = (*TEACHER_KEYS, "task", "student", section, *(("perturbation",) if perturbed else ()))
    return fingerprint(config, keys)


def finished(directory: Path, settings: dict[str, Any], force: bool) -> bool:
    """Whether ``directory`` holds a finished checkpoint trained with ``settings`` (kept).

    Raises:
        ConfigError: it was trained with other settings and ``force`` is not set.
    """
    if force or not (directory / MANIFEST).is_file():
        return False
    saved = read_manifest(directory).get("config")
    if saved != settings:
        changed = sorted(
            key
            for key in settings
            if not isinstance(saved, dict) or saved.get(key) != settings[key]
        )
        raise ConfigError(
            f"{directory} was trained with other settings (changed: {', '.join(changed)}); "
            "rerun with --force to retrain it, or use another --out"
        )
    return True


def train_teacher(setup: Setup, out: Path, quiet: bool) -> DeepEnsemble:
    """Train the teacher into OUT/teacher, with per-epoch progress in OUT/progress."""
    config, data = setup.config, setup.data
    directory = out / "teacher"
    start = time.perf_counter()
    ensemble, history = engine.train_teacher(
        setup,
        quiet=quiet,
        progress_dir=out / PROGRESS / "teacher",
        progress_settings=fingerprint(config, TEACHER_KEYS),
    )
    seconds = time.perf_counter() - start
    distributed.barrier()  # every rank has read its progress before rank 0 removes it
    if not distributed.is_main():
        return ensemble
    info = {
        "dataset": data.name,
        "seeds": [member_seed(config.seed, m) for m in range(config.members)],
        "train_seconds": seconds,
        "val_metrics": epoch_validator(ensemble, data.val, setup.device)(config.epochs),
        "config": fingerprint(config, TEACHER_KEYS),
    }
    _write_history(directory / "history.csv", history)
    save_teacher(directory, ensemble, setup.teacher_spec, info)  # manifest last: finished
    shutil.rmtree(out / PROGRESS / "teacher", ignore_errors=True)
    log.info("teacher: %d members trained in %.1f s", config.members, seconds)
    return ensemble


def distill_all(
    setup: Setup, teacher: DeepEnsemble, out: Path, quiet: bool, force: bool = False
) -> None:
    """Train and save one student per configured method into OUT/students, sharing cached
    teacher outputs; students already trained with the same settings are kept."""
    config = setup.config
    train_outputs = engine.teacher_train_outputs(setup, teacher)
    for name in config.methods:
        method, perturbation = resolve_method(name)
        directory = out / "students" / name
        settings = student_settings(config, method.section, perturbation is not None)
        if finished(directory, settings, force):
            log.info("student %s: already trained with these settings, kept", name)
            continue
        start = time.perf_counter()
        progress_dir = out / PROGRESS / "students" / name
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
        _write_history(directory / "history.csv", history)
        engine.save_student(directory, student, manifest)  # manifest last: finished
        shutil.rmtree(progress_dir, ignore_errors=True)
        log.info("student %s trained in %.1f s", name, manifest["train_seconds"])


def evaluate_run(setup: Setup, out: Path) -> dict[str, Any]:
    """Evaluate the teacher, one member and every student; write results and predictions.

    Outputs are computed once per model and split (val, test, OOD, and for 1-D regression an
    input grid for the report's bands) and saved to OUT/predictions.safetensors.
    """
    config, data = setup.config, setup.data
    teacher, _ = load_teacher(out / "teacher", setup.device)
    models: dict[str, nn.Module] = {"ensemble": teacher, "member": teacher.member(0)}
    for name in config.methods:
        models[name] = load_student(out / "students" / name, setup.device)
    ood_name, ood = next(iter(data.ood.items()), (None, None))
    results: dict[str, Any] = {
        "dataset": data.name,
        "task": data.task,
        "members": config.members,
        "ood": ood_name,
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
    for name, model in models.items():
        repeats = config.eval.latency_repeats
        results["methods"][name] |= cost_metrics(model, data.test.x, repeats, setup.device)
    if config.eval.diversity_etas:
        results["diversity"] = write_diversity(setup, teacher, out)
    # The metadata says how to read each model's outputs (logits, Dirichlet or Gaussian).
    blob = save({k: v.contiguous() for k, v in predictions.items()}, metadata=kinds)
    atomic_write(out / "predictions.safetensors", blob)
    atomic_write(out / "results.json", json.dumps(results, indent=2))
    atomic_write(out / "results.md", results_markdown(results))
    return results


def write_diversity(setup: Setup, teacher: DeepEnsemble, out: Path) -> dict[str, Any]:
    """Run :func:`diversity_analysis`, write OUT/diversity.json, return the mean ratios."""
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
    atomic_write(out / "diversity.json", json.dumps(analysis, indent=2))
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
