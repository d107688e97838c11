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
import dataclasses
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from ensemble_distill import distributed, metrics
from ensemble_distill.checkpoint import (
    MANIFEST,
    atomic_write,
    check_shapes,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from ensemble_distill.config import Config, dump_config
from ensemble_distill.data import DATASETS, DataSplits, check_dataset_args, create_dataset
from ensemble_distill.data.base import TASKS
from ensemble_distill.distill import METHODS, DistillContext, resolve_method
from ensemble_distill.distill.diversity import diversity_analysis
from ensemble_distill.distill.perturbations import PERTURBATIONS, PROBABILITY_FREE
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.evaluation import (
    GAUSSIAN,
    classification_metrics,
    epoch_validator,
    gaussian_predictive,
    ood_metrics,
    output_kind,
    predict_outputs,
    predictive,
    regression_metrics,
    regression_ood_metrics,
)
from ensemble_distill.models import MODELS, ModelSpec, gaussian
from ensemble_distill.models.batchensemble import check_factor_init
from ensemble_distill.report import build_report, results_markdown
from ensemble_distill.teachers import DeepEnsemble, load_teacher, save_teacher
from ensemble_distill.teachers.train import member_seed, train_from_config
from ensemble_distill.training import check_precision

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


@dataclass
class Setup:
    """A validated configuration with its data and architectures, before anything is written."""

    config: Config
    data: DataSplits
    teacher_spec: ModelSpec
    student_spec: ModelSpec
    device: torch.device


def prepare(config: Config) -> Setup:
    """Check every name and value, then load the data; raises before any file is written."""
    validate(config)
    data = load_data(config)
    if config.methods is None:
        config = dataclasses.replace(config, methods=DEFAULT_METHODS[data.task])
    check_task(config, data)
    # A regression network outputs (μ, raw variance) per member: see models.gaussian.
    outputs = gaussian.OUTPUTS if data.task == "regression" else data.num_classes
    teacher_spec = ModelSpec(config.model, data.input_shape, outputs, dict(config.model_args))
    student_spec = ModelSpec(
        config.student.model or config.model,
        data.input_shape,
        outputs,
        dict(
            config.student.model_args
            if config.student.model_args is not None
            else config.model_args
        ),
    )
    device = distributed.local_device(torch.device(config.device))
    return Setup(config, data, teacher_spec, student_spec, device)


def load_data(config: Config) -> DataSplits:
    """The configured dataset; under DDP rank 0 loads it first, so that a download happens
    once (per shared ``data_dir``) and the other ranks read the downloaded files."""
    main = distributed.is_main()
    if not main:
        distributed.barrier()
    try:
        return create_dataset(
            config.dataset,
            data_dir=config.data_dir,
            download=config.download,
            split_seed=config.split_seed,
            val_fraction=config.val_fraction,
            **config.dataset_args,
        )
    finally:  # also when it failed: the others then load and fail alike instead of waiting
        if main:
            distributed.barrier()


DEFAULT_METHODS = {"classification": ["kd", "hydra", "endd"], "regression": ["kd", "hydra"]}


def check_task(config: Config, data: DataSplits) -> None:
    """The dataset's task must be the configured one, and every method must support it."""
    if config.task is not None and config.task != data.task:
        raise ConfigError(
            f"task is {config.task!r} but dataset {config.dataset!r} is a {data.task} dataset; "
            "fix task or dataset"
        )
    for name in config.methods:
        method, _ = resolve_method(name)
        perturbation = name.partition("+")[2]
        regression_ok = data.task != "regression" or perturbation in ("", *PROBABILITY_FREE)
        if data.task not in method.tasks or not regression_ok:
            raise ConfigError(
                f"method {name!r} does not support {data.task}; "
                f"{data.task} methods are {supported_methods(data.task)}"
            )
    if data.task == "regression" and config.eval.diversity_etas:
        raise ConfigError("eval.diversity_etas is for classification; set it to [] for regression")


def supported_methods(task: str) -> str:
    """The method names a task allows, for error messages."""
    names = ", ".join(name for name in METHODS.names() if task in METHODS.get(name).tasks)
    allowed = PROBABILITY_FREE if task == "regression" else PERTURBATIONS.names()
    return f"{names}, each optionally +{' / +'.join(allowed)}"


def validate(config: Config) -> None:
    """Refuse unknown names and impossible values with a one-line message naming the fix."""
    DATASETS.get(config.dataset)
    check_dataset_args(config.dataset, config.dataset_args)
    MODELS.get(config.model)
    if config.student.model is not None:
        MODELS.get(config.student.model)
    if config.task not in (None, *TASKS):
        raise ConfigError(f"task must be one of {', '.join(TASKS)} or null; got {config.task!r}")
    for name in config.methods or []:
        resolve_method(name)
    if config.methods and len(set(config.methods)) != len(config.methods):
        raise ConfigError(f"methods lists a name twice: {config.methods}; list each once")
    for key in ("members", "epochs", "batch_size"):
        if getattr(config, key) < 1:
            raise ConfigError(f"{key} must be at least 1; got {getattr(config, key)}")
    if config.student.epochs is not None and config.student.epochs < 1:
        raise ConfigError(f"student.epochs must be at least 1; got {config.student.epochs}")
    if not 0.0 < config.val_fraction < 1.0:
        raise ConfigError(f"val_fraction must lie in (0, 1); got {config.val_fraction}")
    for section in ("kd", "hydra", "be", "latentbe"):
        options = getattr(config, section)
        if not 0.0 <= options.alpha <= 1.0 or options.temperature <= 0:
            raise ConfigError(
                f"{section}.alpha must lie in [0, 1] and {section}.temperature be positive"
            )
    for section in (config.be, config.latentbe):
        check_factor_init(section.init)
    if config.perturbation.eta < 0 or config.perturbation.temperature <= 0:
        raise ConfigError("perturbation.eta must be >= 0 and perturbation.temperature positive")
    if not 0.0 <= config.hydra.phase1_fraction <= 1.0:
        raise ConfigError("hydra.phase1_fraction must lie in [0, 1]")
    if config.endd.initial_temperature < 1.0 or not 0.0 < config.endd.anneal_fraction <= 1.0:
        raise ConfigError(
            "endd.initial_temperature must be >= 1 and endd.anneal_fraction lie in (0, 1]"
        )
    _check_device(config.device)
    check_precision(config.precision)


def _check_device(name: str) -> None:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu")


def run(
    config: Config,
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


def start_output(out: Path, config: Config, force: bool) -> None:
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


def fingerprint(config: Config, keys: Sequence[str]) -> dict[str, Any]:
    """The config's values of ``keys`` as JSON values: the settings that decide a phase's
    weights, stored in its finished checkpoint's manifest."""
    values = config.to_dict()
    return json.loads(json.dumps({key: values[key] for key in keys}))


def student_settings(config: Config, section: str, perturbed: bool) -> dict[str, Any]:
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
    ensemble, history = train_from_config(
        setup.teacher_spec,
        data,
        config,
        setup.device,
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
    config, data = setup.config, setup.data
    if teacher.num_members != config.members:
        raise ConfigError(
            f"the saved teacher has {teacher.num_members} members but the config "
            f"says members={config.members}; retrain the teacher or fix members"
        )
    context = DistillContext(
        data=data,
        teacher=teacher,
        config=config,
        device=setup.device,
        quiet=quiet,
        teacher_train_outputs=predict_outputs(
            teacher, data.train.x, config.eval.batch_size, setup.device
        ),
    )
    for name in config.methods:
        method, perturbation = resolve_method(name)
        directory = out / "students" / name
        settings = student_settings(config, method.section, perturbation is not None)
        if finished(directory, settings, force):
            log.info("student %s: already trained with these settings, kept", name)
            continue
        options = method.options(config)
        torch.manual_seed(config.seed)
        student = method.build(setup.student_spec, config.members, options, data.mean, data.std)
        start = time.perf_counter()
        progress_dir = out / PROGRESS / "students" / name
        history = method.train(
            student.to(setup.device),
            dataclasses.replace(
                context,
                perturbation=perturbation,
                progress_dir=progress_dir,
                progress_settings=settings,
            ),
        )
        distributed.barrier()  # every rank has read its progress before rank 0 removes it
        if not distributed.is_main():
            continue
        if perturbation is not None:
            options = options | {"perturbation": dataclasses.asdict(config.perturbation)}
        manifest = {
            "kind": "student",
            "method": name,
            "model": setup.student_spec.to_dict(),
            "members": config.members,
            "options": options,
            "dataset": data.name,
            "task": data.task,
            "train_seconds": time.perf_counter() - start,
            "config": settings,
        }
        if data.task == "regression":  # the student predicts standardised targets
            manifest |= {"target_mean": data.target_mean, "target_std": data.target_std}
        _write_history(directory / "history.csv", history)
        save_checkpoint(directory, student.state_dict(), manifest)  # manifest last: finished
        shutil.rmtree(progress_dir, ignore_errors=True)
        log.info("student %s trained in %.1f s", name, manifest["train_seconds"])


def load_student(directory: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild a saved student from its manifest and verified weights."""
    state, manifest = load_checkpoint(directory)
    if manifest.get("kind") != "student":
        raise CheckpointError(f"{directory} holds a {manifest.get('kind')!r}, not a student")
    try:
        method, _ = resolve_method(manifest["method"])
        student = method.build(
            ModelSpec.from_dict(manifest["model"]),
            int(manifest["members"]),
            dict(manifest["options"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}/manifest.json lacks a valid {exc} entry") from None
    check_shapes(student.state_dict(), state, directory)
    student.load_state_dict(state)
    return student.to(device).eval()


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
        results["methods"][name] |= cost_metrics(model, data.test.x, config, setup.device)
    if config.eval.diversity_etas:
        results["diversity"] = write_diversity(setup, teacher, out)
    # The metadata says how to read each model's outputs (logits, Dirichlet or Gaussian).
    blob = save({k: v.contiguous() for k, v in predictions.items()}, metadata=kinds)
    atomic_write(out / "predictions.safetensors", blob)
    atomic_write(out / "results.json", json.dumps(results, indent=2))
    atomic_write(out / "results.md", results_markdown(results))
    return results


def classification_scores(
    outputs: dict[str, dict[str, torch.Tensor]], kinds: dict[str, str], data: DataSplits
) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """Per model: test metrics, calibrated metrics, OOD detection, DEE and the Spearman ρ of
    its MI with the ensemble's; and the ensemble's DE-1 … DE-M calibrated NLL curve."""
    preds = {
        name: {split: predictive(v, kinds[name]) for split, v in by_split.items()}
        for name, by_split in outputs.items()
    }
    ensemble = preds["ensemble"]
    # DE-1 … DE-M calibrated NLL of the teacher's members: the yardstick of DEE.
    curve = metrics.ensemble_size_curve(
        ensemble["val"].probs, data.val.y, ensemble["test"].probs, data.test.y
    )
    rows = {}
    for name, pred in preds.items():
        row = classification_metrics(pred["test"], data.test.y)
        row |= metrics.calibrated_metrics(
            pred["val"].probs, data.val.y, pred["test"].probs, data.test.y
        )
        if "ood" in pred:
            row |= ood_metrics(pred["test"], pred["ood"])
        row["dee"] = metrics.deep_ensemble_equivalent(curve, row["cnll"])
        for split in ("test", "ood") if "ood" in pred else ("test",):
            # Spearman ρ of per-example MI with the ensemble's (None where MI is constant).
            row[f"mi_spearman_{split}"] = metrics.rank_correlation(
                pred[split].mi, ensemble[split].mi
            )
        rows[name] = row
    return rows, curve


def regression_scores(
    outputs: dict[str, dict[str, torch.Tensor]], data: DataSplits
) -> dict[str, dict[str, Any]]:
    """Per model, in the targets' original units: RMSE, NLL, aleatoric and epistemic variance,
    interval coverage, shift detection, and the Spearman ρ of its epistemic variance with the
    ensemble's (None for a single Gaussian, whose epistemic variance is constant zero)."""
    scale = (data.target_mean, data.target_std)
    preds = {
        name: {split: gaussian_predictive(v, *scale) for split, v in by_split.items()}
        for name, by_split in outputs.items()
    }
    targets = data.test.y.double() * data.target_std + data.target_mean
    rows = {}
    for name, pred in preds.items():
        row = regression_metrics(pred["test"], targets)
        if "ood" in pred:
            row |= regression_ood_metrics(pred["test"], pred["ood"])
        row["epistemic_spearman_test"] = metrics.rank_correlation(
            pred["test"].epistemic, preds["ensemble"]["test"].epistemic
        )
        rows[name] = row
    return rows


def input_grid(data: DataSplits, points: int = 400) -> torch.Tensor:
    """(points, 1) evenly spaced inputs over every split's range plus a 10 % margin."""
    x = torch.cat([data.train.x, data.test.x, *(d.x for d in data.ood.values())])
    low, high = float(x.min()), float(x.max())
    margin = 0.1 * (high - low)
    return torch.linspace(low - margin, high + margin, points).unsqueeze(1)


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


def cost_metrics(
    model: nn.Module, x: torch.Tensor, config: Config, device: torch.device
) -> dict[str, float]:
    """Parameters and seconds per example at batch 1 and batch 256 (median of repeats)."""
    model.eval()
    repeats = config.eval.latency_repeats
    return {
        "params": metrics.count_parameters(model),
        "latency_ms_b1": 1e3
        * metrics.latency_per_example(model, x[:1].to(device), repeats=repeats),
        "latency_ms_b256": 1e3
        * metrics.latency_per_example(model, x[:256].to(device), repeats=repeats),
    }


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-epoch training history as CSV (the union of all rows' keys as columns)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())
