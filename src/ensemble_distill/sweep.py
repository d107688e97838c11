"""Sweeps: one run per point of a grid of config values, one teacher per teacher setting.

``ensemble-distill sweep --out DIR key=v1,v2 [key2=a,b] [fixed=value ...]`` runs
:func:`ensemble_distill.pipeline.run` for every combination of the swept values::

    DIR/<point>/               a run folder per point (name: its swept values)
    DIR/compare.html, .md      every point side by side (``compare``: tables and a plot)
    DIR/sweep.md, sweep.json   one row per point and student: validation and test metrics,
                               each student's best point by validation NLL marked as chosen

Points whose teacher settings agree share one teacher: the first point of each such group
trains it (or ``teacher_from`` supplies it) and the others get its files hard-linked (copied
where linking fails) before they run, so the pipeline keeps it; a student whose settings the
swept keys leave alone is shared the same way. Every point's config is built and checked, and
every point folder checked, before anything is trained or written. Rerunning the same sweep
keeps every finished point (not even evaluated again); an unfinished one resumes as a run does.
One process only: under ``torchrun`` the sweep is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_distill import distributed
from ensemble_distill.checkpoint import (
    MANIFEST,
    TEMPORARY_PREFIX,
    TEMPORARY_SUFFIX,
    atomic_write,
    is_temporary,
    read_manifest,
)
from ensemble_distill.config import RunConfig, load_config
from ensemble_distill.data import DataSplits
from ensemble_distill.engine import Setup, load_data, prepare
from ensemble_distill.errors import CheckpointError, ConfigError, DataError, EnsembleDistillError
from ensemble_distill.methods import resolve_method
from ensemble_distill.out_folder import CONFIG, check_output, lock_output, same_settings
from ensemble_distill.pipeline import STEPS, run
from ensemble_distill.report import compare_runs
from ensemble_distill.report.rundir import load_history, load_results
from ensemble_distill.settings import (
    changed_settings,
    fingerprint,
    finished,
    student_settings,
    teacher_keys,
)

log = logging.getLogger(__name__)

SEPARATOR = "__"  # between the key=value parts of a point's folder name
MAX_NAME = 80  # longer folder names are cut and end in a hash of the whole point
SAFE = re.compile(r"[^A-Za-z0-9._+=,\[\]-]")  # characters a folder name keeps
CHOSEN = "(chosen on validation)"
TEST_LABEL = "test (not used for the choice)"
METRIC_LABELS = {"nll": "NLL ↓", "acc": "acc ↑", "rmse": "RMSE ↓"}
# Keys that decide the loaded data; points that agree on them share one loaded copy.
DATA_KEYS = ("dataset", "dataset_args", "data_dir", "download", "split_seed", "val_fraction")


# --- the grid --------------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """``text`` split at its top-level commas: outside brackets, braces, parentheses and
    quotes, so that ``[kd,hydra]`` stays one value and ``[],[100,100]`` is two lists."""
    return scan_values(text)[0]


def scan_values(text: str) -> tuple[list[str], str | None]:
    """:func:`split_values`'s parts, and the bracket (brace, parenthesis) outside quotes that
    is left unbalanced: the first one never closed, or a closing one never opened (None when
    all are balanced, or when a quote is left open and so nothing can be told)."""
    parts, current, opened, quote = [], [], [], ""
    unmatched = None
    escaped = False
    for char in text:
        if escaped:  # the character after a backslash in double quotes
            escaped = False
        elif quote:
            escaped = char == "\\" and quote == '"'
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            opened.append(char)
        elif char in "]})":
            if opened:
                opened.pop()
            else:
                unmatched = unmatched or char
        elif char == "," and not opened:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:  # an apostrophe in a plain word (bob's): brackets cannot be judged, YAML will
        return [*parts, "".join(current)], None
    return [*parts, "".join(current)], unmatched or next(iter(opened), None)


def check_brackets(key: str, text: str, unbalanced: str | None) -> None:
    """Refuse ``key=text`` with an ``unbalanced`` bracket: its commas cannot be told apart
    (one list value, or several values?), so no reading of it is safe."""
    if unbalanced is None:
        return
    what = "unclosed bracket" if unbalanced in "[{(" else "unmatched closing bracket"
    raise ConfigError(
        f"sweep: {what} in {key} ({unbalanced!r} in {key}={text}); close every bracket: "
        f"{key}=[2,3] is one list value, {key}=2,3 two values"
    )


def parse_arguments(items: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """The ``key=value`` arguments as (swept keys → their value texts, fixed overrides).

    Raises:
        ConfigError: an unclosed bracket, an empty or repeated value, a swept key given
            again, or no swept key.
    """
    swept: dict[str, list[str]] = {}
    fixed: list[str] = []
    keys = [item.partition("=")[0].strip() for item in items]
    for key, item in zip(keys, items, strict=True):
        text = item.partition("=")[2]
        parts, unbalanced = scan_values(text)
        check_brackets(key, text, unbalanced)
        values = [value.strip() for value in parts]
        if len(values) == 1:
            fixed.append(item)
            continue
        if keys.count(key) > 1:
            raise ConfigError(f"sweep: {key} is swept and given again; give it once ({item})")
        if "" in values:
            raise ConfigError(
                f"sweep: {key}={text} has an empty value; separate the values by single "
                f"commas ({key}=v1,v2), quote a string that holds a comma"
            )
        if len(set(values)) < len(values):
            raise ConfigError(f"sweep: {key}={text} repeats a value; give each value once")
        swept[key] = values
    if not swept:
        raise ConfigError(
            "sweep: no swept key; give at least one key with several comma-separated values, "
            "e.g. kd.temperature=1,2"
        )
    return swept, fixed


@dataclass(frozen=True)
class Point:
    """One combination of swept values: ``(key, value text)`` per swept key, in order."""

    values: tuple[tuple[str, str], ...]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.values]

    @property
    def name(self) -> str:
        """A readable folder name; a hash of the point is appended where characters had to be
        replaced or the name cut, so that two points never share a folder."""
        full = SEPARATOR.join(self.overrides)
        safe = SAFE.sub("_", full)
        if safe == full and len(full) <= MAX_NAME:
            return full
        digest = hashlib.sha256(full.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return f"{safe[: MAX_NAME - 9]}-{digest}"


def grid(swept: dict[str, list[str]]) -> list[Point]:
    """Every combination of the swept values, the first key varying slowest."""
    keys = list(swept)
    combos = itertools.product(*swept.values())
    return [Point(tuple(zip(keys, combo, strict=True))) for combo in combos]


# --- planning: every check before anything is written ----------------------------------------


@dataclass
class Planned:
    """A point with its config (as given, and as prepared) and run folder."""

    point: Point
    config: RunConfig
    setup: Setup
    out: Path

    @property
    def teacher_settings(self) -> dict[str, Any]:
        return fingerprint(self.setup.config, teacher_keys(self.setup.config))


def plan(
    out: Path,
    swept: dict[str, list[str]],
    fixed: Sequence[str],
    config_path: Path | None = None,
    teacher_from: Path | None = None,
) -> list[Planned]:
    """Build and check every point's config and run folder (nothing is written).

    Raises:
        EnsembleDistillError: a value that fails validation (named with its point), two
            points with one config, points of two tasks, a point folder that would be
            refused, or a ``teacher_from`` trained with other settings than a point.
    """
    if distributed.launched():
        raise ConfigError("sweep runs in one process; start it without torchrun")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder (created if missing)")
    planned, loaded, seen = [], {}, {}
    for point in grid(swept):
        try:
            config = load_config(config_path, [*fixed, *point.overrides])
            setup = prepare(config, data_for(config, loaded))
            check_output(out / point.name, setup.config, STEPS, False, None)
        except EnsembleDistillError as exc:
            raise in_point(exc, point) from None
        settings = json.dumps(setup.config.to_dict(), sort_keys=True, default=str)
        same = seen.setdefault(settings, point)
        if same is not point:
            raise ConfigError(
                f"sweep points {same.name} and {point.name} give the same config; drop one "
                "of the values"
            )
        planned.append(Planned(point, config, setup, out / point.name))
    tasks = {item.point.name: item.setup.data.task for item in planned}
    if len(set(tasks.values())) > 1:
        listing = ", ".join(f"{name} ({task})" for name, task in tasks.items())
        raise ConfigError(
            f"sweep points mix classification and regression ({listing}); sweep the datasets "
            "of one task at a time"
        )
    if teacher_from is not None:
        check_teacher(teacher_from, planned)
    return planned


def in_point(error: EnsembleDistillError, point: Point) -> EnsembleDistillError:
    """``error`` with the point it came from before its message, as the nearest error class
    whose constructor takes just a message (:class:`InvalidValue` wants its parts)."""
    kinds = (ConfigError, DataError, CheckpointError)
    kind = next((k for k in kinds if isinstance(error, k)), EnsembleDistillError)
    return kind(f"sweep point {point.name}: {error}")


def data_for(config: RunConfig, loaded: dict[str, DataSplits]) -> DataSplits:
    """The config's data, loaded once per distinct data setting (points mostly share it)."""
    values = config.to_dict()
    key = json.dumps({name: values[name] for name in DATA_KEYS}, sort_keys=True, default=str)
    if key not in loaded:
        loaded[key] = load_data(config)
    return loaded[key]


def check_teacher(teacher: Path, planned: Sequence[Planned]) -> None:
    """Refuse a ``teacher_from`` folder without a finished teacher, or one trained with other
    settings than a point's (its students would not be that point's)."""
    if not (teacher / MANIFEST).is_file():
        raise ConfigError(
            f"--teacher {teacher} holds no finished teacher ({MANIFEST} missing); give a run's "
            "teacher folder (OUT/teacher)"
        )
    for item in planned:
        changed = changed_settings(teacher, item.teacher_settings)
        if changed:
            raise ConfigError(
                f"--teacher {teacher} was trained with other settings than sweep point "
                f"{item.point.name} (changed: {changed}); pass the run's --config, or sweep "
                "no key that changes the teacher"
            )


# --- running ---------------------------------------------------------------------------------


def run_sweep(
    out: Path,
    swept: dict[str, list[str]],
    fixed: Sequence[str] = (),
    config_path: Path | None = None,
    quiet: bool = False,
    teacher_from: Path | None = None,
) -> dict[str, Any]:
    """Run every point of the grid into ``out`` (see the module docstring) and write the
    comparison and the sweep table; returns the sweep record (what sweep.json holds)."""
    planned = plan(out, swept, fixed, config_path, teacher_from)
    with claim_sweep(out):
        for index, item in enumerate(planned, start=1):
            log.info("sweep point %d/%d: %s", index, len(planned), item.point.name)
            share_finished(planned, item, teacher_from)
            if point_done(item):
                log.info("%s: finished with these settings, kept", item.point.name)
            else:
                run(item.config, item.out, quiet=quiet)
        compare_runs([item.out for item in planned], out)
        record = sweep_record(planned, swept, fixed, config_path)
        atomic_write(out / "sweep.json", json.dumps(record, indent=2))
        atomic_write(out / "sweep.md", sweep_markdown(record))
    return record


@contextlib.contextmanager
def claim_sweep(out: Path) -> Iterator[None]:
    """Create the sweep folder and hold its lock (``DIR/.lock``, as a run folder's) for the
    block: a second sweep (or a run) into it meanwhile is refused with one line, instead of
    both writing their points and tables into it. The OS releases it however the process
    ends."""
    out.mkdir(parents=True, exist_ok=True)
    with lock_output(out):
        yield


def checkpoints(item: Planned) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The point's checkpoint folders and the settings each must be trained with: the
    teacher's under ``teacher``, each student's under its method name."""
    out, config = item.out, item.setup.config
    found = {"teacher": (out / "teacher", item.teacher_settings)}
    for name in config.methods:
        method, perturbation = resolve_method(name)
        settings = student_settings(config, method.section, perturbation is not None)
        found[name] = (out / "students" / name, settings)
    return found


def share_finished(planned: Sequence[Planned], item: Planned, teacher_from: Path | None) -> None:
    """Give ``item`` every checkpoint it lacks that another point (or ``teacher_from``)
    already finished with the same settings, so that its run keeps it instead of training it
    again: the teacher, and students whose settings the swept keys do not touch."""
    for role, (folder, settings) in checkpoints(item).items():
        if (folder / MANIFEST).is_file():
            continue
        sources = [teacher_from] if role == "teacher" and teacher_from is not None else []
        sources += [
            other_folder
            for other in planned
            if other is not item
            for other_role, (other_folder, other_settings) in checkpoints(other).items()
            if other_role == role and other_settings == settings
        ]
        source = next((path for path in sources if (path / MANIFEST).is_file()), None)
        if source is not None:
            share_checkpoint(source, folder)
            log.info("%s of %s: shared from %s", role, item.point.name, source)


def share_checkpoint(source: Path, target: Path) -> None:
    """Hard-link (or copy) the files of the finished checkpoint in ``source`` into
    ``target``, the manifest last: a sweep killed in between leaves an unfinished checkpoint,
    never one that looks finished. Files are replaced by rename, so the source is never
    written through a link."""
    target.mkdir(parents=True, exist_ok=True)
    files = [p for p in source.iterdir() if p.is_file() and not is_temporary(p)]
    for path in sorted(files, key=lambda p: p.name == MANIFEST):
        temporary = target / f"{TEMPORARY_PREFIX}{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}"
        temporary.unlink(missing_ok=True)
        try:
            os.link(path, temporary)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(path, temporary)
        os.replace(temporary, target / path.name)


def point_done(item: Planned) -> bool:
    """Whether the point's folder holds this config's finished run: config.yaml with these
    settings, every checkpoint trained with them, and results.json (and the report) computed
    from exactly those weights — then the point is kept without evaluating again."""
    out = item.out
    if not (same_settings(out / CONFIG, item.setup.config) and (out / "report.html").is_file()):
        return False
    folders = checkpoints(item)
    if not all(finished(folder, settings, False) for folder, settings in folders.values()):
        return False
    weights = {
        role: read_manifest(folder)["weights_sha256"] for role, (folder, _) in folders.items()
    }
    teacher = weights.pop("teacher")  # results.json names it ensemble, and member 0 member
    expected = {"ensemble": teacher, "member": teacher, **weights}
    try:
        return load_results(out).get("weights_sha256") == expected
    except EnsembleDistillError:
        return False


# --- the sweep table -------------------------------------------------------------------------


def final_validation(student: Path) -> dict[str, float | None]:
    """The last validated epoch's metrics in the student's history.csv (``val_*`` columns,
    prefix dropped); {} when it never validated."""
    rows = [row for row in load_history(student / "history.csv") if row.get("val_nll") is not None]
    if not rows:
        return {}
    return {key.removeprefix("val_"): value for key, value in rows[-1].items() if key[:4] == "val_"}


def sweep_rows(planned: Sequence[Planned]) -> list[dict[str, Any]]:
    """One row per point and student: swept values, validation and test metrics."""
    rows = []
    for item in planned:
        results = load_results(item.out)
        for student in item.setup.config.methods:
            rows.append(
                {
                    "point": item.point.name,
                    "values": dict(item.point.values),
                    "student": student,
                    "val": final_validation(item.out / "students" / student),
                    "test": results["methods"][student],
                    "chosen": False,
                }
            )
    return rows


def mark_chosen(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Mark each student's row with the lowest validation NLL (the first on ties); returns
    {student: chosen point}. Test metrics play no part."""
    chosen = {}
    for student in dict.fromkeys(row["student"] for row in rows):
        candidates = [
            r for r in rows if r["student"] == student and r["val"].get("nll") is not None
        ]
        if candidates:
            best = min(candidates, key=lambda r: r["val"]["nll"])
            best["chosen"] = True
            chosen[student] = best["point"]
    return chosen


def sweep_record(
    planned: Sequence[Planned],
    swept: dict[str, list[str]],
    fixed: Sequence[str],
    config_path: Path | None,
) -> dict[str, Any]:
    """What sweep.json holds: the grid, the rows and each student's choice."""
    rows = sweep_rows(planned)
    chosen = mark_chosen(rows)
    regression = planned[0].setup.data.task == "regression"
    return {
        "config": None if config_path is None else str(config_path),
        "fixed": list(fixed),
        "swept": swept,
        "task": planned[0].setup.data.task,
        "metrics": ["nll", "rmse"] if regression else ["nll", "acc"],
        "selection": "each student's point with the lowest final-epoch validation NLL; "
        "test metrics are not used for the choice",
        "chosen": chosen,
        "rows": rows,
    }


def sweep_markdown(record: dict[str, Any]) -> str:
    """sweep.md: the rows as one table, the chosen points marked."""
    keys, metrics = list(record["swept"]), record["metrics"]
    headers = ["point", *keys, "student"]
    headers += [f"val {METRIC_LABELS[metric]}" for metric in metrics]
    headers += [f"{TEST_LABEL}: {METRIC_LABELS[metric]}" for metric in metrics]
    headers.append("choice")
    lines = [
        f"# Sweep over {', '.join(keys)} ({len(record['rows'])} rows)",
        "",
        f"Fixed: {', '.join(f'`{item}`' for item in record['fixed']) or 'none'}; config: "
        f"{record['config'] or 'defaults'}.  ",
        f"Each student's point with the lowest validation NLL (final epoch, validation split) is "
        f"marked {CHOSEN}; the columns marked {TEST_LABEL} are reported after the choice. All "
        "models of every point, side by side: compare.md (compare.html).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * (len(keys) + 2) + "---:|" * (2 * len(metrics)) + "---|",
    ]
    for row in record["rows"]:
        cells = [row["point"], *(row["values"][key] for key in keys), row["student"]]
        cells += [number(row["val"].get(metric)) for metric in metrics]
        cells += [number(row["test"].get(metric)) for metric in metrics]
        cells.append(CHOSEN if row["chosen"] else "")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
