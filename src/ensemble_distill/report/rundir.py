"""Read what ``ensemble-distill run`` saved in a run directory, for reports.

Everything a report shows comes from these files, never from models: results.json,
predictions.safetensors, the history CSVs, diversity.json and config.yaml.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
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
    if not isinstance(results, dict) or not isinstance(results.get("methods"), dict):
        raise DataError(f"{path} has no 'methods' table; rerun `ensemble-distill evaluate`")
    return results


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
    """Per-epoch rows of a history CSV as floats (None for a blank cell); [] if absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [
            {key: float(value) if value else None for key, value in row.items()}
            for row in csv.DictReader(handle)
        ]


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
    diversity_path = run_dir / "diversity.json"
    config_path = run_dir / "config.yaml"
    return RunDir(
        path=run_dir,
        results=results,
        tensors=tensors,
        kinds=kinds,
        histories={name: rows for name, rows in histories.items() if rows},
        diversity=json.loads(diversity_path.read_text()) if diversity_path.is_file() else None,
        config_text=config_path.read_text() if config_path.is_file() else None,
    )
