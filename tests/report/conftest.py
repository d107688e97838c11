"""Fake finished run directories, written the way the pipeline writes them, from tiny tensors.

Classification: the ensemble (3 members), its first member, and three students covering every
output kind: ``kd`` (one network's logits), ``hydra`` (member logits) and ``endd`` (Dirichlet
log-concentrations); the test diversity per confidence bin of the two with members.

Regression: a 1-D toy with a gap (test inputs on [-4, -1] ∪ [1, 4], OOD inputs in the gap
(-1, 1), a 50-point input grid), like ``toy-gap``. A Gaussian ensemble of 3 members whose means
spread apart in the gap, its first member, ``kd`` (one Gaussian) and ``hydra`` (3 heads); raw
(mean, pre-softplus variance) outputs on standardised targets, results.json computed from them
with the pipeline's own metric functions.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from ensemble_distill import metrics
from ensemble_distill.evaluation import (
    DIRICHLET,
    GAUSSIAN,
    LOGITS,
    classification_metrics,
    gaussian_predictive,
    ood_metrics,
    predictive,
    regression_metrics,
    regression_ood_metrics,
)

CLASSES, MEMBERS = 3, 3
SIZES = {"val": 30, "test": 40, "ood": 20}
STUDENTS = ("kd", "hydra", "endd")


def fake_outputs(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Labels and raw outputs of every model on val, test and ood; the output kinds."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for split, n in SIZES.items():
        labels = torch.arange(n) % CLASSES
        # In-distribution inputs push the true class up; OOD inputs push nothing.
        signal = 3.0 * torch.nn.functional.one_hot(labels, CLASSES) * (split != "ood")
        if split != "ood":
            tensors[f"labels/{split}"] = labels

        def noise(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator)

        ensemble = signal[:, None] + noise(n, MEMBERS, CLASSES)
        tensors[f"ensemble/{split}"] = ensemble
        tensors[f"member/{split}"] = ensemble[:, 0].clone()
        tensors[f"kd/{split}"] = signal + noise(n, CLASSES)
        tensors[f"hydra/{split}"] = ensemble + 0.3 * noise(n, MEMBERS, CLASSES)
        tensors[f"endd/{split}"] = 0.5 * signal + 0.5 + 0.3 * noise(n, CLASSES)
    kinds = {name: LOGITS for name in ("ensemble", "member", "kd", "hydra")} | {"endd": DIRICHLET}
    return tensors, kinds


def ood_metrics_keys() -> list[str]:
    """The keys :func:`ood_metrics` adds to a row, which a run without an OOD set lacks."""
    pred = predictive(torch.zeros(2, CLASSES))
    return list(ood_metrics(pred, pred))


def fake_results(tensors: dict[str, torch.Tensor], kinds: dict[str, str]) -> dict[str, Any]:
    """results.json as the pipeline computes it, with made-up cost figures."""
    y_val, y_test = tensors["labels/val"], tensors["labels/test"]
    results: dict[str, Any] = {"dataset": "tiny", "members": MEMBERS, "ood": "noise"}
    pred = {
        (name, split): predictive(tensors[f"{name}/{split}"], kind)
        for name, kind in kinds.items()
        for split in SIZES
    }
    results["ensemble_size_cnll"] = metrics.ensemble_size_curve(
        pred["ensemble", "val"].probs, y_val, pred["ensemble", "test"].probs, y_test
    )
    methods = {}
    for index, name in enumerate(kinds):
        row = classification_metrics(pred[name, "test"], y_test)
        row |= metrics.calibrated_metrics(
            pred[name, "val"].probs, y_val, pred[name, "test"].probs, y_test
        )
        row |= ood_metrics(pred[name, "test"], pred[name, "ood"])
        row["dee"] = metrics.deep_ensemble_equivalent(results["ensemble_size_cnll"], row["cnll"])
        row["dee_note"] = metrics.dee_note(results["ensemble_size_cnll"], row["cnll"])
        for split in ("test", "ood"):
            row[f"mi_spearman_{split}"] = metrics.rank_correlation(
                pred[name, split].mi, pred["ensemble", split].mi
            )
        scale = MEMBERS if name == "ensemble" else 1 + index / 10
        row |= {
            "params": int(1000 * scale),
            "latency_ms_b1": 0.1 * scale,
            "latency_ms_b256": 0.01 * scale,
        }
        methods[name] = row
    results["methods"] = methods
    return results


def write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def epoch_rows(epochs: int, start_loss: float, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            **extra,
            "epoch": epoch,
            "loss": start_loss / epoch,
            "lr": 0.1,
            "seconds": 0.5,
            "val_acc": 0.5 + 0.1 * epoch,
            "val_nll": 1.0 / epoch,
        }
        for epoch in range(1, epochs + 1)
    ]


def fake_diversity(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """diversity.json with two perturbations at two step sizes."""
    clean = torch.softmax(tensors["ensemble/val"].double(), dim=-1)
    test = torch.softmax(tensors["ensemble/test"].double(), dim=-1)
    analysis: dict[str, Any] = {
        "clean_train": metrics.diversity_by_confidence(clean, 5),
        "clean_test": metrics.diversity_by_confidence(test, 5),
        "perturbed": {},
        "ratio_to_clean_train": {},
    }
    for name, strength in (("ods", 1.5), ("confods", 2.0)):
        analysis["perturbed"][name], analysis["ratio_to_clean_train"][name] = {}, {}
        for eta in (0.0039, 0.0314):
            probs = torch.softmax(strength * (1 + eta) * tensors["ensemble/val"].double(), -1)
            bins = metrics.diversity_by_confidence(probs, 5)
            analysis["perturbed"][name][str(eta)] = bins
            analysis["ratio_to_clean_train"][name][str(eta)] = (
                bins["mean"] / analysis["clean_train"]["mean"]
            )
    return analysis


def fake_test_diversity(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """results.json's ``test_diversity``: the models with members (ensemble, hydra), each
    binned by its own confidence on the test split."""
    return {
        name: metrics.diversity_by_confidence(torch.softmax(tensors[f"{name}/test"].double(), -1))
        for name in ("ensemble", "hydra")
    }


def make_run(
    directory: Path,
    seed: int = 0,
    ood: bool = True,
    diversity: bool = True,
    test_diversity: bool = True,
) -> Path:
    """Write a fake run into ``directory`` (created) and return it; ``test_diversity=False``
    writes a run from before the students' diversity was measured."""
    directory.mkdir(parents=True)
    tensors, kinds = fake_outputs(seed)
    results = fake_results(tensors, kinds)
    if test_diversity:
        results["test_diversity"] = fake_test_diversity(tensors)
    if not ood:
        results["ood"] = None
        tensors = {k: v for k, v in tensors.items() if not k.endswith("/ood")}
        for row in results["methods"].values():
            for key in [*ood_metrics_keys(), "mi_spearman_ood"]:
                row.pop(key)
    if diversity:
        analysis = fake_diversity(tensors)
        (directory / "diversity.json").write_text(json.dumps(analysis, indent=2))
        results["diversity"] = {
            "clean_train": analysis["clean_train"]["mean"],
            "clean_test": analysis["clean_test"]["mean"],
            "ratio_to_clean_train": analysis["ratio_to_clean_train"],
        }
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        directory / "predictions.safetensors",
        metadata=kinds,
    )
    (directory / "results.json").write_text(json.dumps(results, indent=2))
    (directory / "config.yaml").write_text("dataset: tiny\nmembers: 3\nepochs: 3\n")
    teacher = [row for m in range(MEMBERS) for row in epoch_rows(3, 2.0 + m, member=m)]
    write_history(directory / "teacher" / "history.csv", teacher)
    write_history(directory / "students" / "kd" / "history.csv", epoch_rows(3, 4.0))
    hydra = epoch_rows(1, 3.0, phase=1) + epoch_rows(2, 1.0, phase=2)
    write_history(directory / "students" / "hydra" / "history.csv", hydra)
    write_history(directory / "students" / "endd" / "history.csv", epoch_rows(3, -5.0))
    return directory


# Regression --------------------------------------------------------------------------------

TARGET_MEAN, TARGET_STD = 0.5, 20.0
REGRESSION_SIZES = {"val": 30, "test": 60, "ood": 25, "grid": 50}
REGRESSION_MODELS = ("ensemble", "member", "kd", "hydra")


def _inputs(split: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1) inputs: in the two training intervals, in the gap, or an even grid."""
    if split == "grid":
        return torch.linspace(-4.5, 4.5, n).unsqueeze(1)
    u = torch.rand(n, 1, generator=generator)
    if split == "ood":
        return 2 * u - 1
    sign = torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0).unsqueeze(1)
    return sign * (1 + 3 * u)


def fake_regression_outputs(seed: int) -> dict[str, torch.Tensor]:
    """Inputs, standardised targets and raw outputs of every model on every split."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for split, n in REGRESSION_SIZES.items():
        x = _inputs(split, n, generator)
        f = (x[:, 0] ** 3 - TARGET_MEAN) / TARGET_STD  # the noise-free target, standardised
        if split in ("val", "test"):
            tensors[f"labels/{split}"] = f + 0.1 * torch.randn(n, generator=generator)
        if split != "val":
            tensors[f"inputs/{split}"] = x
        in_gap = (x[:, 0].abs() < 1).float()
        # Member means disagree more in the gap: epistemic variance grows there.
        spread = (0.05 + 0.5 * in_gap)[:, None] * torch.randn(n, MEMBERS, generator=generator)
        raw_var = torch.full((n, MEMBERS), -2.0)
        ensemble = torch.stack([f[:, None] + spread, raw_var], dim=-1)
        tensors[f"ensemble/{split}"] = ensemble
        tensors[f"member/{split}"] = ensemble[:, 0].clone()
        tensors[f"kd/{split}"] = torch.stack([f, torch.full((n,), -1.5) + in_gap], dim=-1)
        tensors[f"hydra/{split}"] = ensemble + 0.02 * torch.randn(
            n, MEMBERS, 2, generator=generator
        )
    return tensors


def fake_regression_results(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """results.json as evaluate_run computes it for regression, with made-up costs."""
    scale = (TARGET_MEAN, TARGET_STD)
    targets = tensors["labels/test"].double() * TARGET_STD + TARGET_MEAN
    pred = {
        (name, split): gaussian_predictive(tensors[f"{name}/{split}"], *scale)
        for name in REGRESSION_MODELS
        for split in ("test", "ood")
    }
    methods = {}
    for index, name in enumerate(REGRESSION_MODELS):
        row = regression_metrics(pred[name, "test"], targets)
        row |= regression_ood_metrics(pred[name, "test"], pred[name, "ood"])
        row["epistemic_spearman_test"] = metrics.rank_correlation(
            pred[name, "test"].epistemic, pred["ensemble", "test"].epistemic
        )
        size = MEMBERS if name == "ensemble" else 1 + index / 10
        row |= {
            "params": int(500 * size),
            "latency_ms_b1": 0.05 * size,
            "latency_ms_b256": 0.005 * size,
        }
        methods[name] = row
    return {
        "dataset": "toy-gap",
        "task": "regression",
        "members": MEMBERS,
        "ood": "gap",
        "methods": methods,
        "target_mean": TARGET_MEAN,
        "target_std": TARGET_STD,
    }


def make_regression_run(directory: Path, seed: int = 0, one_dimensional: bool = True) -> Path:
    """Write a fake regression run into ``directory`` (created) and return it.

    ``one_dimensional=False`` mimics a tabular dataset with a covariate-shift OOD set: no grid
    and no saved inputs (``inputs/grid`` is an empty tensor, as evaluate_run writes it).
    """
    directory.mkdir(parents=True)
    tensors = fake_regression_outputs(seed)
    results = fake_regression_results(tensors)
    if not one_dimensional:
        tensors = {
            k: v for k, v in tensors.items() if not k.endswith("/grid") and "inputs/" not in k
        }
        tensors["inputs/grid"] = torch.empty(0)
        results |= {"dataset": "diabetes", "ood": "shift"}
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        directory / "predictions.safetensors",
        metadata=dict.fromkeys(REGRESSION_MODELS, GAUSSIAN),
    )
    (directory / "results.json").write_text(json.dumps(results, indent=2))
    (directory / "config.yaml").write_text("dataset: toy-gap\nmembers: 3\nepochs: 3\n")
    # Gaussian NLLs on standardised targets go below zero.
    for name, rows in (("teacher", epoch_rows(3, 1.0)), ("kd", epoch_rows(3, 0.5))):
        for row in rows:
            row["val_nll"] -= 0.6
            row["val_rmse"] = row.pop("val_acc")
        folder = directory / name if name == "teacher" else directory / "students" / name
        write_history(folder / "history.csv", rows)
    return directory


@pytest.fixture(scope="package")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fake run with an OOD set and a diversity analysis (read-only: copy to modify)."""
    return make_run(tmp_path_factory.mktemp("runs") / "run_a")


@pytest.fixture
def make_fake_run():
    """:func:`make_run`, for tests that need a variant or a writable copy."""
    return make_run


@pytest.fixture(scope="package")
def regression_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fake 1-D regression run with an OOD gap (read-only: copy to modify)."""
    return make_regression_run(tmp_path_factory.mktemp("runs") / "reg_a")


@pytest.fixture
def make_fake_regression_run():
    """:func:`make_regression_run`, for a variant or a writable copy."""
    return make_regression_run
