"""Read what ``ensemble-distill run`` saved in a run directory, for reports.

Everything a report shows comes from these files, never from models: results.json,
predictions.safetensors, the history CSVs, diversity.json and config.yaml. Each is checked
against the shape ``ensemble-distill evaluate`` writes before a report reads it, so that an
edited or damaged file is one :class:`DataError` naming it, not a traceback halfway through.
run.log gives only the run's dates, and a report does without them when it has none.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from torch import Tensor

from ensemble_distill.errors import DataError
from ensemble_distill.evaluation import (
    GaussianPredictive,
    Predictive,
    gaussian_predictive,
    predictive,
)
from ensemble_distill.report.table import REGRESSION, task_of

History = list[dict[str, float | None]]
# What a report can do about a file that is not as we wrote it.
REWRITE = "it was edited or damaged; rerun `ensemble-distill evaluate` to rewrite it"
# Files that evaluate does not write (history.csv, config.yaml): a report does without them.
RESTORE = "it was edited or damaged; restore it, or delete it to leave it out of the report"
# config.yaml's first line (see out_folder.SIGNATURE): bookkeeping, not part of the settings.
SIGNATURE_PREFIX = "# written by ensemble-distill;"
# run.log's records start with the date and time they were logged (out_folder.run_log).
LOG_DATE = re.compile(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2}")


def load_results(run_dir: Path) -> dict[str, Any]:
    """``run_dir/results.json``; a :class:`DataError` naming the fix when it is missing or
    malformed."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DataError(
            f"{run_dir} has no results.json; point at a directory written by "
            "`ensemble-distill run --out DIR` (or `evaluate`)"
        )
    try:
        results = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc}); rerun `ensemble-distill evaluate`"
        ) from None
    problem = results_problem(results)
    if problem:
        raise DataError(f"{path}: {problem}; {REWRITE}")
    return results


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def is_number_or_none(value: Any) -> bool:
    return value is None or is_number(value)


def results_problem(results: Any) -> str | None:
    """What in ``results`` differs from the results.json that ``evaluate`` writes (the keys a
    report reads), or None."""
    if not isinstance(results, dict) or not isinstance(results.get("methods"), dict):
        return "no 'methods' table"
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("dataset", lambda v: isinstance(v, str)),
        ("members", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    ]
    optional: list[tuple[str, Callable[[Any], bool]]] = [
        ("task", lambda v: v in ("classification", "regression")),
        ("ood", lambda v: v is None or isinstance(v, str)),
        ("ensemble_size_cnll", lambda v: isinstance(v, list) and all(map(is_number_or_none, v))),
        ("target_mean", is_number),
        ("target_std", is_number),
        ("diversity", diversity_summary_ok),
        ("test_diversity", lambda v: isinstance(v, dict) and all(map(bins_ok, v.values()))),
    ]
    for key, ok in checks + [item for item in optional if item[0] in results]:
        if key not in results or not ok(results[key]):
            return f"{key!r} is missing or not what evaluate writes"
    for name in ("ensemble", "member"):
        if name not in results["methods"]:
            return f"the 'methods' table has no {name!r} row"
    for name, row in results["methods"].items():
        problem = row_problem(row)
        if problem:
            return f"methods[{name!r}]: {problem}"
    return None


def row_problem(row: Any) -> str | None:
    """What in one model's metrics row is not a number (or None; a string for ``*_note``)."""
    if not isinstance(row, dict):
        return "not a table of metrics"
    for key, value in row.items():
        if key.endswith("_note"):
            fits = value is None or isinstance(value, str)
        else:
            fits = is_number_or_none(value)
        if not fits:
            return f"{key!r} is {value!r}, not a number"
    return None


def diversity_summary_ok(summary: Any) -> bool:
    """results.json's ``diversity``: mean diversities and ratios per perturbation and η."""
    if not isinstance(summary, dict):
        return False
    ratios = summary.get("ratio_to_clean_train")
    return (
        all(is_number(summary.get(key)) for key in ("clean_train", "clean_test"))
        and isinstance(ratios, dict)
        and all(
            isinstance(by_eta, dict) and etas_ok(by_eta, is_number) for by_eta in ratios.values()
        )
    )


def etas_ok(by_eta: dict[str, Any], value_ok: Callable[[Any], bool]) -> bool:
    """Keys that read as step sizes η (finite, >= 0), values that pass ``value_ok``."""
    try:
        return all(0 <= float(eta) < math.inf and value_ok(value) for eta, value in by_eta.items())
    except ValueError:
        return False


def bins_ok(bins: Any) -> bool:
    """One diversity-per-confidence-bin curve: bin edges and one value (or None) per bin."""
    if not isinstance(bins, dict):
        return False
    edges, values = bins.get("edges"), bins.get("diversity")
    return (
        isinstance(edges, list)
        and isinstance(values, list)
        and len(edges) == len(values) + 1 >= 2
        and all(map(is_number, edges))
        and all(map(is_number_or_none, values))
    )


def load_diversity(path: Path) -> dict[str, Any] | None:
    """diversity.json (clean and perturbed curves); None when the run measured none."""
    if not path.is_file():
        return None
    try:
        diversity = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); {REWRITE}") from None
    perturbed = diversity.get("perturbed") if isinstance(diversity, dict) else None
    if not (
        isinstance(perturbed, dict)
        and all(bins_ok(diversity.get(key)) for key in ("clean_train", "clean_test"))
        and all(
            isinstance(by_eta, dict) and etas_ok(by_eta, bins_ok) for by_eta in perturbed.values()
        )
    ):
        raise DataError(f"{path} is not the diversity.json evaluate writes; {REWRITE}")
    return diversity


def load_config_text(path: Path) -> str | None:
    """config.yaml as the user would write it (without our signature line); None if absent."""
    if not path.is_file():
        return None
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; {RESTORE}") from None
    head, _, body = text.partition("\n")
    return body if head.startswith(SIGNATURE_PREFIX) else text


def load_run_dates(path: Path) -> tuple[str, str] | None:
    """The first and the last date in run.log (YYYY-MM-DD): when the run started and when it
    last trained or evaluated, since results.json records no date. None when run.log is
    absent, unreadable or has no dated record: the report then says so instead."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")  # dates are ASCII
    except OSError:
        return None
    dates = [match[1] for line in text.splitlines() if (match := LOG_DATE.match(line))]
    return (dates[0], dates[-1]) if dates else None


def load_predictions(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of predictions.safetensors and its metadata (model name → output kind)."""
    if not path.is_file():
        raise DataError(f"{path} is missing; rerun `ensemble-distill evaluate` to write it")
    try:
        with safe_open(path, "pt") as handle:
            names = handle.keys()  # a safe_open handle is not iterable
            return {key: handle.get_tensor(key) for key in names}, handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise DataError(
            f"{path} is unreadable ({exc}); rerun `ensemble-distill evaluate`"
        ) from None


def load_history(path: Path) -> History:
    """Per-epoch rows of a history CSV as floats (None for a blank cell); [] if absent.

    Raises:
        DataError: a cell that is not a number, a row whose cells do not match the header, a
            missing or blank ``loss`` (every report plots it), or a file that is not UTF-8 CSV.
    """
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not readable CSV ({exc}); {RESTORE}") from None
    return [_history_row(path, line, row) for line, row in enumerate(rows, start=2)]


def _history_row(path: Path, line: int, row: dict[str | None, Any]) -> dict[str, float | None]:
    if None in row or None in row.values():
        raise DataError(f"{path} line {line}: its cells do not match the header; {RESTORE}")
    if not row.get("loss"):
        raise DataError(f"{path} line {line}: no 'loss' value; {RESTORE}")
    values: dict[str, float | None] = {}
    for key, value in row.items():
        try:
            values[key] = float(value) if value else None
        except ValueError:
            raise DataError(
                f"{path} line {line}, column {key!r}: {value!r} is not a number; {RESTORE}"
            ) from None
    return values


@dataclass
class RunDir:
    """A finished run: results, raw test/val/OOD outputs, training histories, diversity."""

    path: Path
    results: dict[str, Any]
    tensors: dict[str, Tensor]
    kinds: dict[str, str]
    histories: dict[str, History]
    diversity: dict[str, Any] | None
    config_text: str | None
    run_dates: tuple[str, str] | None  # first and last date in run.log
    _predictive: dict[tuple[str, str], Predictive] = field(default_factory=dict, repr=False)
    _gaussian: dict[tuple[str, str], GaussianPredictive] = field(default_factory=dict, repr=False)

    @cached_property
    def names(self) -> list[str]:
        """Every evaluated model, in the order of results.json (ensemble, member, students)."""
        return list(self.results["methods"])

    @cached_property
    def students(self) -> list[str]:
        return [name for name in self.names if name not in ("ensemble", "member")]

    @property
    def ood(self) -> str | None:
        """The OOD set's name, or None when the run had none."""
        return self.results.get("ood")

    @property
    def ood_conversion(self) -> str | None:
        """How the OOD set's images were converted to the run's shape (results.json's
        ``ood_set.converted``, data/ood.py), or None: not converted, or not recorded."""
        return (self.results.get("ood_set") or {}).get("converted")

    @property
    def task(self) -> str:
        """``"classification"`` or ``"regression"`` (runs without a task: classification)."""
        return task_of(self.results)

    @property
    def is_regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def target_scale(self) -> tuple[float, float]:
        """(mean, std) that turn standardised regression targets into original units;
        (0, 1), i.e. standardised units, for a run that did not save them."""
        return float(self.results.get("target_mean", 0.0)), float(
            self.results.get("target_std", 1.0)
        )

    def labels(self, split: str) -> Tensor:
        return self.tensors[f"labels/{split}"]

    def targets(self, split: str) -> Tensor:
        """Regression targets of ``split`` (val or test) in original units, float64."""
        mean, std = self.target_scale
        return self.labels(split).double() * std + mean

    def inputs(self, split: str) -> Tensor | None:
        """Saved inputs of ``split`` (grid, test or ood: 1-D regression only); None when the
        run saved none."""
        tensor = self.tensors.get(f"inputs/{split}")
        return tensor if tensor is not None and tensor.numel() else None

    def _outputs(self, name: str, split: str) -> Tensor:
        tensor = f"{name}/{split}"
        if tensor not in self.tensors:
            raise DataError(
                f"{self.path}/predictions.safetensors lacks {tensor!r}; "
                "rerun `ensemble-distill evaluate`"
            )
        return self.tensors[tensor]

    def predictive(self, name: str, split: str) -> Predictive:
        """``name``'s probabilities, entropy and MI on ``split`` (val, test or ood), cached."""
        key = (name, split)
        if key not in self._predictive:
            outputs = self._outputs(name, split)
            self._predictive[key] = predictive(outputs, self.kinds.get(name, "logits"))
        return self._predictive[key]

    def gaussian(self, name: str, split: str) -> GaussianPredictive:
        """``name``'s member Gaussians on ``split`` (val, test, ood or grid) in the targets'
        original units (regression runs), cached."""
        key = (name, split)
        if key not in self._gaussian:
            outputs = self._outputs(name, split)
            self._gaussian[key] = gaussian_predictive(outputs, *self.target_scale)
        return self._gaussian[key]


def load_run(run_dir: Path) -> RunDir:
    """Everything a report needs from ``run_dir``; raises :class:`DataError` for a directory
    that is not a finished run."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    tensors, kinds = load_predictions(run_dir / "predictions.safetensors")
    histories = {"teacher": load_history(run_dir / "teacher" / "history.csv")}
    for name in results["methods"]:
        histories[name] = load_history(run_dir / "students" / name / "history.csv")
    return RunDir(
        path=run_dir,
        results=results,
        tensors=tensors,
        kinds=kinds,
        histories={name: rows for name, rows in histories.items() if rows},
        diversity=load_diversity(run_dir / "diversity.json"),
        config_text=load_config_text(run_dir / "config.yaml"),
        run_dates=load_run_dates(run_dir / "run.log"),
    )
