"""Turn a model and data into the metrics of METHODS.md (the same functions for every model).

Every model evaluated here returns member logits (batch, members, classes); a single network's
(batch, classes) output is read as one member.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ensemble_distill import metrics
from ensemble_distill.data import ArrayDataset


def as_member_logits(logits: Tensor) -> Tensor:
    """(batch, classes) → (batch, 1, classes); (batch, members, classes) unchanged."""
    return logits.unsqueeze(1) if logits.dim() == 2 else logits


@torch.inference_mode()
def predict_logits(
    model: nn.Module, x: Tensor, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> Tensor:
    """Member logits (N, members, classes) on the CPU, in eval mode, batch by batch."""
    model.eval()
    chunks = [
        as_member_logits(model(x[i : i + batch_size].to(device))).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(chunks)


def member_probs(logits: Tensor) -> Tensor:
    """Softmax over classes in float64 (so tiny probabilities do not round to 0)."""
    return torch.softmax(logits.double(), dim=-1)


def classification_metrics(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """ACC, NLL, Brier (both forms), ECE, mean MI and mean predictive entropy.

    Args:
        probs: (N, M, C) member probabilities.
        labels: (N,).
    """
    return {
        "acc": metrics.accuracy(probs, labels),
        "nll": metrics.nll(probs, labels),
        "brier": metrics.brier(probs, labels),
        "brier_tfp": metrics.brier_tfp(probs, labels),
        "ece": metrics.ece(probs, labels),
        "mi": float(metrics.mutual_information(probs).mean()),
        "entropy": float(metrics.predictive_entropy(probs).mean()),
    }


def ood_metrics(probs_in: Tensor, probs_out: Tensor) -> dict[str, float]:
    """OOD detection, OOD = positive: AUROC by predictive entropy (``ood_auroc``) and by MI."""
    entropy_in = metrics.predictive_entropy(probs_in)
    entropy_out = metrics.predictive_entropy(probs_out)
    mi_in = metrics.mutual_information(probs_in)
    mi_out = metrics.mutual_information(probs_out)
    return {
        "ood_auroc": metrics.ood_auroc(entropy_in, entropy_out),
        "ood_aupr": metrics.ood_aupr(entropy_in, entropy_out),
        "ood_auroc_mi": metrics.ood_auroc(mi_in, mi_out),
        "ood_aupr_mi": metrics.ood_aupr(mi_in, mi_out),
    }


def epoch_validator(
    model: nn.Module, val: ArrayDataset, device: torch.device | str
) -> Callable[[int], dict[str, float]]:
    """A ``fit`` callback returning validation accuracy and NLL of ``model`` after each epoch."""

    def validate(epoch: int) -> dict[str, float]:
        probs = member_probs(predict_logits(model, val.x, device=device))
        return {"val_acc": metrics.accuracy(probs, val.y), "val_nll": metrics.nll(probs, val.y)}

    return validate
