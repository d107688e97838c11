"""How much do the teachers disagree on the inputs a student is distilled on? (Nam et al. 2021)

Measures the teachers' mean pairwise KL, overall and per confidence bin, on clean training
inputs, on perturbed training inputs (each perturbation, each step size η) and on clean test
inputs: the paper's Figure 3 claim is that training inputs carry almost no diversity, test inputs
more, and ODS restores it where Gaussian noise of the same L2 norm does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ensemble_distill.evaluation import predict_outputs, predictive
from ensemble_distill.methods.perturbations import PERTURBATIONS, PerturbationState
from ensemble_distill.metrics import diversity_by_confidence
from ensemble_distill.teachers import DeepEnsemble


def teacher_probs(teacher: DeepEnsemble, x: Tensor, batch_size: int = 512) -> Tensor:
    """(N, M, C) member probabilities in float64, in eval mode."""
    return predictive(predict_outputs(teacher, x, batch_size)).probs


def perturbed_inputs(
    teacher: DeepEnsemble, x: Tensor, name: str, eta: float, seed: int, batch_size: int = 512
) -> Tensor:
    """``x`` perturbed batch by batch, as during distillation (one teacher draw per batch)."""
    state = PerturbationState(teacher.eval(), eta, 1.0, torch.Generator().manual_seed(seed))
    perturb = PERTURBATIONS.get(name)
    return torch.cat([perturb(x[i : i + batch_size], state) for i in range(0, len(x), batch_size)])


def diversity_analysis(
    teacher: DeepEnsemble,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    etas: Sequence[float],
    perturbations: Sequence[str] = ("gaussian", "ods", "confods"),
    seed: int = 0,
    num_bins: int = 10,
) -> dict[str, Any]:
    """Teacher diversity on clean train/test inputs and perturbed train inputs.

    Returns:
        ``{"clean_train": bins, "clean_test": bins, "perturbed": {name: {eta: bins}}}`` with
        ``bins`` from :func:`diversity_by_confidence`, and ``ratio_to_clean_train``: each
        perturbed mean diversity divided by the clean training inputs' mean; and
        ``member_train_accuracy``, the members' mean accuracy on ``train_x`` (labels
        ``train_y``), which shows whether the teachers are in the regime the paper studies
        (near-perfect training accuracy, hence little diversity on training inputs).
    """
    train_probs = teacher_probs(teacher, train_x)  # (N, M, C)
    clean = diversity_by_confidence(train_probs, num_bins)
    result: dict[str, Any] = {
        "member_train_accuracy": (train_probs.argmax(-1) == train_y[:, None])
        .double()
        .mean()
        .item(),
        "clean_train": clean,
        "clean_test": diversity_by_confidence(teacher_probs(teacher, test_x), num_bins),
        "perturbed": {},
        "ratio_to_clean_train": {},
    }
    for name in perturbations:
        result["perturbed"][name], result["ratio_to_clean_train"][name] = {}, {}
        for eta in etas:
            x = perturbed_inputs(teacher, train_x, name, eta, seed)
            bins = diversity_by_confidence(teacher_probs(teacher, x), num_bins)
            result["perturbed"][name][str(eta)] = bins
            result["ratio_to_clean_train"][name][str(eta)] = bins["mean"] / clean["mean"]
    return result
