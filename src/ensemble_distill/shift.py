"""Uncertainty under dataset shift: every model on corrupted copies of the test split.

Ovadia et al. (NeurIPS 2019), "Can you trust your model's uncertainty? Evaluating predictive
uncertainty under dataset shift", follow accuracy, NLL and ECE as the CIFAR-10-C corruptions
(Hendrycks & Dietterich, ICLR 2019) grow from severity 1 to 5: a model whose uncertainty can be
trusted loses accuracy but stays calibrated, and its model uncertainty (mean MI) rises. Each
(corruption, severity) copy is made batch by batch (:mod:`ensemble_distill.data.corruptions`),
run through every model and scored with the test split's own metric functions
(:func:`~ensemble_distill.evaluation.classification_metrics`); only the scores are kept, so
memory stays one batch of images plus one copy's outputs.

results.json's ``shift``: ``{model: {corruption: {severity: {acc, nll, ece, mi}}}}``, and under
``mean`` the mean over the corruptions per severity (severities as strings, as JSON keys are).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ensemble_distill.data import ImageFiles, batches_of
from ensemble_distill.data.corruptions import corrupt_batch
from ensemble_distill.evaluation import Predictive, classification_metrics, predict_outputs
from ensemble_distill.evaluation import predictive as predictive_of

SHIFT_METRICS = ("acc", "nll", "ece", "mi")
MEAN = "mean"  # the key of the mean over corruptions, beside the corruptions' own


def shift_row(pred: Predictive, labels: Tensor) -> dict[str, float]:
    """The test split's :func:`classification_metrics`, kept to :data:`SHIFT_METRICS`."""
    row = classification_metrics(pred, labels)
    return {key: row[key] for key in SHIFT_METRICS}


def corrupted_outputs(
    models: Mapping[str, nn.Module],
    x: Tensor | ImageFiles,
    corruption: str,
    severity: int,
    run_seed: int,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, Tensor]:
    """Each model's raw outputs (N, …) on the copy of ``x`` (N, C, H, W) corrupted by
    ``corruption`` at ``severity``, made ``batch_size`` images at a time."""
    chunks: dict[str, list[Tensor]] = {name: [] for name in models}
    start = 0
    for batch in batches_of(x, batch_size):
        shifted = corrupt_batch(batch, corruption, severity, run_seed, start)
        for name, model in models.items():
            chunks[name].append(predict_outputs(model, shifted, batch_size, device))
        start += len(batch)
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def mean_over_corruptions(by_corruption: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict:
    """``{severity: {metric: mean over corruptions}}`` from ``{corruption: {severity: row}}``."""
    rows = list(by_corruption.values())
    return {
        severity: {
            key: sum(row[severity][key] for row in rows) / len(rows) for key in SHIFT_METRICS
        }
        for severity in rows[0]
    }


def shift_scores(
    models: Mapping[str, nn.Module],
    kinds: Mapping[str, str],
    x: Tensor | ImageFiles,
    labels: Tensor,
    corruptions: Sequence[str],
    severities: Sequence[int],
    run_seed: int,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, Any]]:
    """results.json's ``shift`` block (see the module docstring) for ``models`` (their output
    kinds in ``kinds``) on the test inputs ``x`` and ``labels``."""
    scores: dict[str, dict[str, Any]] = {name: {} for name in models}
    for corruption in corruptions:
        for severity in severities:
            outputs = corrupted_outputs(
                models, x, corruption, severity, run_seed, batch_size, device
            )
            for name, out in outputs.items():
                row = shift_row(predictive_of(out, kinds[name]), labels)
                scores[name].setdefault(corruption, {})[str(severity)] = row
    for by_corruption in scores.values():
        by_corruption[MEAN] = mean_over_corruptions(by_corruption)
    return scores
