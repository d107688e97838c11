"""What a run's evaluation computes from its models' outputs (:func:`.pipeline.evaluate_run`
writes it): the inputs every model is scored on, the scores of each task, the members'
diversity, and what OUT/predictions.safetensors holds. No file is read or written here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ensemble_distill.data import DataSplits
from ensemble_distill.engine import Setup
from ensemble_distill.evaluation import (
    GAUSSIAN,
    classification_scores,
    has_members,
    input_grid,
    output_kind,
    predictive,
    regression_scores,
)
from ensemble_distill.methods.diversity import diversity_analysis
from ensemble_distill.metrics import diversity_by_confidence
from ensemble_distill.shift import shift_scores
from ensemble_distill.teachers import DeepEnsemble


def evaluation_inputs(data: DataSplits) -> dict[str, Tensor]:
    """The inputs every model is evaluated on: validation, test, the first OOD set and, for
    1-D regression, a grid for the report's bands."""
    splits = {"val": data.val.x, "test": data.test.x}
    if data.ood:
        splits["ood"] = next(iter(data.ood.values())).x
    if data.task == "regression" and data.input_shape == (1,):
        splits["grid"] = input_grid(data)
    return splits


def model_kind(model: nn.Module, task: str) -> str:
    """How to read a model's outputs: Gaussians for regression, else logits or Dirichlet."""
    return GAUSSIAN if task == "regression" else output_kind(model)


def scores(
    setup: Setup,
    models: dict[str, nn.Module],
    kinds: dict[str, str],
    outputs: dict[str, dict[str, Tensor]],
) -> dict[str, Any]:
    """Every model's metrics from its ``outputs`` (regression, or classification with the
    ensemble-size cNLL curve, the members' diversity and, with ``eval.corruptions``, the
    scores under dataset shift: shift.py, which runs the models again on corrupted inputs)."""
    config, data = setup.config, setup.data
    if data.task == "regression":
        return {
            "methods": regression_scores(outputs, data),
            "target_mean": data.target_mean,
            "target_std": data.target_std,
        }
    scored: dict[str, Any] = {}
    scored["methods"], scored["ensemble_size_cnll"] = classification_scores(outputs, kinds, data)
    if diversity := member_diversity(outputs, kinds):
        scored["test_diversity"] = diversity
    if config.eval.corruptions:
        ev = config.eval
        shift = (ev.corruptions, ev.severities, config.seed, ev.batch_size, setup.device)
        scored["shift"] = shift_scores(models, kinds, data.test.x, data.test.y, *shift)
    return scored


def predictions_of(
    data: DataSplits, splits: dict[str, Tensor], outputs: dict[str, dict[str, Tensor]]
) -> dict[str, Tensor]:
    """What OUT/predictions.safetensors holds: the labels, each model's outputs per split as
    ``NAME/SPLIT`` and, for regression, the inputs the report draws."""
    predictions = {"labels/val": data.val.y, "labels/test": data.test.y}
    for name, by_split in outputs.items():
        predictions |= {f"{name}/{split}": value for split, value in by_split.items()}
    if data.task == "regression":
        predictions["inputs/grid"] = splits.get("grid", torch.empty(0))
        if "grid" in splits:  # 1-D inputs: the report draws test points and the OOD region
            predictions["inputs/test"] = data.test.x
            predictions |= {"inputs/ood": splits["ood"]} if "ood" in splits else {}
    return predictions


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
