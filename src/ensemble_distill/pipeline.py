"""The pipeline behind the CLI: train the teacher, distil every method, evaluate, write results.

Output directory layout::

    OUT/config.yaml              resolved configuration
    OUT/teacher/                 deep ensemble (model.safetensors, manifest.json, history.csv)
    OUT/students/<method>/       one student per method (same files)
    OUT/predictions.safetensors  test and OOD outputs of every model, for reports
    OUT/results.json, .md        metrics of the ensemble, one member and each student (and,
                                 with eval.corruptions, under dataset shift: shift.py)
    OUT/progress/                per-epoch state of unfinished phases (removed once finished)
    OUT/tb/<phase>/              TensorBoard events (with tensorboard=true)
    OUT/run.log                  what each run into OUT did
    OUT/.lock                    held (flock) by the run using OUT; a second run is refused

Running again into the same OUT resumes: a finished teacher or student (its manifest is written
last) trained with the same settings is kept (:mod:`ensemble_distill.settings`), an unfinished
phase continues from its last saved epoch, and evaluation reruns. ``force`` starts every
requested step over. What guards OUT — the checks before anything is written, the lock, the
signed config.yaml, which files may be removed, run.log — is :mod:`ensemble_distill.out_folder`;
results.json records the SHA-256 of the weights behind every row.

Under ``torchrun`` every process runs this pipeline on a shared OUT; rank 0 alone checks, locks
and writes it (see :mod:`ensemble_distill.distributed` and docs/distributed.md).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save
from torch import Tensor, nn

from ensemble_distill import distributed, engine, preflight
from ensemble_distill.checkpoint import atomic_write, read_manifest
from ensemble_distill.config import RunConfig
from ensemble_distill.data.ood import ood_line
from ensemble_distill.engine import Setup, hardware_line, load_student, prepare
from ensemble_distill.evaluation import (
    cost_metrics,
    epoch_validator,
    predict_outputs,
)
from ensemble_distill.methods import resolve_method
from ensemble_distill.models.disagreement import at_unit_scale
from ensemble_distill.out_folder import (
    PROGRESS,
    RESULTS,
    claim_output,
    remove_empty_progress,
    remove_progress,
    run_log,
    save_config,
    start_over,
)
from ensemble_distill.report import build_report, results_markdown
from ensemble_distill.report.html import package_version
from ensemble_distill.run_scores import (
    diversity_summary,
    evaluation_inputs,
    model_kind,
    predictions_of,
    scores,
    teacher_diversity,
)
from ensemble_distill.settings import fingerprint, finished, student_settings, teacher_keys
from ensemble_distill.teachers import DeepEnsemble, load_teacher, save_teacher
from ensemble_distill.teachers.train import member_seed
from ensemble_distill.tensorboard_log import phase_log

log = logging.getLogger(__name__)

STEPS = ("teacher", "distill", "evaluate")
# The row of a student with a fitted disagreement temperature evaluated at s = 1 ("hydra@s=1").
UNSCALED = "@s=1"


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
    setup = prepare(config, memory=memory_held(steps))
    main = distributed.is_main()
    with (
        claim_output(out, setup.config, steps, force, config_from),
        run_log(out / "run.log", log) if main else contextlib.nullcontext(),
    ):
        log.info("%s into %s", " + ".join(steps), out)
        log.info("computing on %s", hardware_line(setup.config, setup.device))
        if setup.data.ood_source is not None:  # which OOD set, and whether it was converted
            log.log(*ood_line(setup.data.ood_source))
        teacher = None
        if "teacher" in steps:
            settings = fingerprint(setup.config, teacher_keys(setup.config))
            if finished(out / "teacher", settings, force):
                log.info("teacher: already trained with these settings, kept")
            else:
                teacher = train_teacher(setup, out, quiet, force)
        if "distill" in steps:
            teacher = teacher or load_own_teacher(setup, out)[0]
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


def memory_held(steps: Sequence[str]) -> tuple[str, ...]:
    """What a run of ``steps`` holds in memory (checked by ``preflight.check_memory``): the
    teacher in training, or loaded; with ``distill``, its cached outputs too."""
    teacher = preflight.TRAIN if "teacher" in steps else preflight.LOAD
    return (teacher, preflight.OUTPUTS) if "distill" in steps else (teacher,)


def evaluation_scope(setup: Setup) -> str:
    """What evaluation is about to compute, for the progress note before it (it takes
    seconds, in which nothing else is printed)."""
    students = len(setup.config.methods)
    ood = next(iter(setup.data.ood), None)
    where = f"the test split and the OOD set {ood}" if ood else "the test split"
    plural = "" if students == 1 else "s"
    return f"{students + 2} models (ensemble, member, {students} student{plural}) on {where}"


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


def names_model(directory: Path, setup: Setup, teacher: bool = False) -> bool:
    """Whether the checkpoint in ``directory`` names the architecture this run's config names
    (the members' for the teacher, else the students'): an import path there is the user's own
    code, which the config already runs (``engine.prepare``), and may be built. Any other
    import path in a manifest is not trusted (see ``models.require_trusted``)."""
    spec = setup.teacher_spec if teacher else setup.student_spec
    model = read_manifest(directory).get("model")
    return isinstance(model, dict) and model.get("name") == spec.name


def load_own_teacher(setup: Setup, out: Path) -> tuple[DeepEnsemble, dict[str, Any]]:
    """``OUT/teacher``, trusting only the import path that this run's config names."""
    directory = out / "teacher"
    return load_teacher(directory, setup.device, names_model(directory, setup, teacher=True))


def evaluate_run(setup: Setup, out: Path) -> dict[str, Any]:
    """Evaluate the teacher, one member and every student; write results and predictions.

    Outputs are computed once per model and split (val, test, OOD, and for 1-D regression an
    input grid for the report's bands) and saved to OUT/predictions.safetensors. results.json
    records the SHA-256 of each model's weights (``weights_sha256``; ``member`` is the
    teacher's member 0), the ones its manifest vouches for, and for a classification run with
    a student of several members their test diversity per confidence bin next to the
    teacher's (``test_diversity``, :func:`.run_scores.member_diversity`). A student whose
    disagreement temperature was fitted (s ≠ 1) gets a second row, ``NAME@s=1``: the same
    weights at s = 1, so that the scale's effect is visible. Every file is written at the end,
    so a failure leaves the earlier results whole.
    """
    config, data = setup.config, setup.data
    teacher, models, weights = load_models(setup, out)
    splits = evaluation_inputs(data)
    kinds = {name: model_kind(model, data.task) for name, model in models.items()}
    outputs = {
        name: {
            split: predict_outputs(model, x, config.eval.batch_size, setup.device)
            for split, x in splits.items()
        }
        for name, model in models.items()
    }
    results = results_header(setup) | scores(setup, models, kinds, outputs)
    for name, model in models.items():
        repeats = config.eval.latency_repeats
        results["methods"][name] |= cost_metrics(model, data.test.x, repeats, setup.device)
    analysis = teacher_diversity(setup, teacher) if config.eval.diversity_etas else None
    if analysis is not None:
        results["diversity"] = diversity_summary(analysis)
    results["weights_sha256"] = weights
    predictions = predictions_of(data, splits, outputs)
    write_results(out, config, results, predictions, kinds, analysis)
    return results


def load_models(
    setup: Setup, out: Path
) -> tuple[DeepEnsemble, dict[str, nn.Module], dict[str, str]]:
    """The teacher; every model evaluation scores (the ensemble, its member 0, each student and,
    beside a student with a fitted disagreement temperature, the same weights at s = 1); and
    the SHA-256 of each one's weights."""
    teacher, manifest = load_own_teacher(setup, out)
    models: dict[str, nn.Module] = {"ensemble": teacher, "member": teacher.member(0)}
    weights = dict.fromkeys(models, manifest["weights_sha256"])
    for name in setup.config.methods:
        directory = out / "students" / name
        models[name] = load_student(directory, setup.device, names_model(directory, setup))
        weights[name] = read_manifest(directory)["weights_sha256"]
        if (unscaled := at_unit_scale(models[name])) is not None:
            models[name + UNSCALED], weights[name + UNSCALED] = unscaled, weights[name]
    return teacher, models, weights


def results_header(setup: Setup) -> dict[str, Any]:
    """What results.json says of the run before its scores."""
    data = setup.data
    return {
        "dataset": data.name,
        "task": data.task,
        "members": setup.config.members,
        "ood": next(iter(data.ood), None),
        # what the OOD set is and how its images were converted (data/ood.py), or null
        "ood_set": dataclasses.asdict(data.ood_source) if data.ood_source else None,
        "version": package_version(),  # of ensemble-distill, which computed these numbers
        "methods": {},
    }


def write_results(
    out: Path,
    config: RunConfig,
    results: dict[str, Any],
    predictions: dict[str, Tensor],
    kinds: dict[str, str],
    analysis: dict[str, Any] | None,
) -> None:
    """Write config.yaml, diversity.json (with ``analysis``), predictions.safetensors,
    results.json and results.md, each whole or not at all."""
    save_config(out, config)
    if analysis is not None:
        atomic_write(out / "diversity.json", json.dumps(analysis, indent=2))
    # The metadata says how to read each model's outputs (logits, Dirichlet or Gaussian).
    blob = save({k: v.contiguous() for k, v in predictions.items()}, metadata=kinds)
    atomic_write(out / "predictions.safetensors", blob)
    atomic_write(out / RESULTS, json.dumps(results, indent=2))
    atomic_write(out / "results.md", results_markdown(results))


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-epoch training history as CSV (the union of all rows' keys as columns)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())
