"""Turn a model's outputs into the metrics of METHODS.md (the same functions for every model).

Models return either member logits (batch, members, classes) — ensembles, Hydra, KD (a single
network's (batch, classes) output is read as one member) — or, for Prior Networks (EnD²),
Dirichlet log-concentrations (batch, classes), flagged by ``output_kind = "dirichlet"``.
For regression every model returns raw Gaussian outputs (batch, members, 2) or (batch, 2), read
by :func:`gaussian_predictive`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ensemble_distill import metrics
from ensemble_distill.data import ArrayDataset
from ensemble_distill.models.gaussian import gaussian_params

LOGITS = "logits"
DIRICHLET = "dirichlet"
GAUSSIAN = "gaussian"


def output_kind(model: nn.Module) -> str:
    """``"logits"`` (member logits) or ``"dirichlet"`` (log-concentrations)."""
    return getattr(model, "output_kind", LOGITS)


@dataclass(frozen=True)
class Predictive:
    """What the metrics need from a model on N examples.

    Attributes:
        probs: (N, M, C) member probabilities; (N, 1, C) p̄ for a single network or a
            Dirichlet's mean α/α₀.
        entropy: (N,) total uncertainty H[p̄].
        mi: (N,) model uncertainty: the members' mutual information, or a Dirichlet's
            closed-form MI.
    """

    probs: Tensor
    entropy: Tensor
    mi: Tensor


def predictive(outputs: Tensor, kind: str = LOGITS) -> Predictive:
    """:class:`Predictive` from raw outputs, in float64."""
    if kind == DIRICHLET:
        mean = metrics.dirichlet_mean(outputs)
        return Predictive(
            mean.unsqueeze(1),
            metrics.predictive_entropy(mean),
            metrics.dirichlet_mutual_information(outputs),
        )
    probs = torch.softmax(as_member_logits(outputs).double(), dim=-1)
    return Predictive(probs, metrics.predictive_entropy(probs), metrics.mutual_information(probs))


@dataclass(frozen=True)
class GaussianPredictive:
    """A regression model's members on N examples, in the targets' original units.

    Attributes:
        means, variances: (N, M) member Gaussians N(μ_m, σ_m²); M = 1 for one network.
    """

    means: Tensor
    variances: Tensor

    @property
    def epistemic(self) -> Tensor:
        """(N,) Var_m(μ_m): zero for a single Gaussian."""
        return metrics.mixture_moments(self.means, self.variances)[2]

    @property
    def total_variance(self) -> Tensor:
        """(N,) mean_m σ_m² + Var_m(μ_m)."""
        _, aleatoric, epistemic = metrics.mixture_moments(self.means, self.variances)
        return aleatoric + epistemic


def gaussian_predictive(
    outputs: Tensor, target_mean: float = 0.0, target_std: float = 1.0
) -> GaussianPredictive:
    """:class:`GaussianPredictive` from raw outputs (N, [M,] 2) of a model trained on targets
    standardised as (y − ``target_mean``) / ``target_std``; in float64."""
    mean, variance = gaussian_params(as_member_logits(outputs).double())
    return GaussianPredictive(mean * target_std + target_mean, variance * target_std**2)


def as_member_logits(logits: Tensor) -> Tensor:
    """(batch, classes) → (batch, 1, classes); (batch, members, classes) unchanged."""
    return logits.unsqueeze(1) if logits.dim() == 2 else logits


@torch.inference_mode()
def predict_outputs(
    model: nn.Module, x: Tensor, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> Tensor:
    """The model's raw outputs on ``x``, on the CPU, in eval mode, batch by batch."""
    model.eval()
    chunks = [
        model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
    ]
    return torch.cat(chunks)


def predict(
    model: nn.Module, x: Tensor, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> Predictive:
    return predictive(predict_outputs(model, x, batch_size, device), output_kind(model))


def classification_metrics(pred: Predictive, labels: Tensor) -> dict[str, float]:
    """ACC, NLL, Brier (both forms), ECE, mean MI and mean predictive entropy."""
    return {
        "acc": metrics.accuracy(pred.probs, labels),
        "nll": metrics.nll(pred.probs, labels),
        "brier": metrics.brier(pred.probs, labels),
        "brier_tfp": metrics.brier_tfp(pred.probs, labels),
        "ece": metrics.ece(pred.probs, labels),
        "mi": float(pred.mi.mean()),
        "entropy": float(pred.entropy.mean()),
    }


def ood_metrics(pred_in: Predictive, pred_out: Predictive) -> dict[str, float]:
    """OOD detection, OOD = positive: AUROC/AUPR by predictive entropy (``ood_auroc``) and MI."""
    return {
        "ood_auroc": metrics.ood_auroc(pred_in.entropy, pred_out.entropy),
        "ood_aupr": metrics.ood_aupr(pred_in.entropy, pred_out.entropy),
        "ood_auroc_mi": metrics.ood_auroc(pred_in.mi, pred_out.mi),
        "ood_aupr_mi": metrics.ood_aupr(pred_in.mi, pred_out.mi),
    }


def regression_metrics(pred: GaussianPredictive, targets: Tensor) -> dict[str, float]:
    """RMSE, Gaussian NLL of the moment-matched predictive, mean aleatoric and epistemic
    variance, coverage of central 50/90/95 % intervals; ``targets`` in original units."""
    return metrics.regression_metrics(pred.means, pred.variances, targets.double())


def regression_ood_metrics(
    pred_in: GaussianPredictive, pred_out: GaussianPredictive
) -> dict[str, float]:
    """Shift detection, OOD = positive: AUROC by epistemic variance (``ood_auroc``; 0.5 for a
    single Gaussian, which has none) and by total variance; mean epistemic variance on OOD."""
    return {
        "ood_auroc": metrics.ood_auroc(pred_in.epistemic, pred_out.epistemic),
        "ood_auroc_total": metrics.ood_auroc(pred_in.total_variance, pred_out.total_variance),
        "epistemic_ood": float(pred_out.epistemic.mean()),
    }


def epoch_validator(
    model: nn.Module, val: ArrayDataset, device: torch.device | str
) -> Callable[[int], dict[str, float]]:
    """A ``fit`` callback returning validation accuracy and NLL of ``model`` after each epoch
    (RMSE and Gaussian NLL, in standardised units, for regression targets)."""

    def validate(epoch: int) -> dict[str, float]:
        if val.y.is_floating_point():
            pred = gaussian_predictive(predict_outputs(model, val.x, device=device))
            row = regression_metrics(pred, val.y)
            return {"val_rmse": row["rmse"], "val_nll": row["nll"]}
        pred = predict(model, val.x, device=device)
        return {
            "val_acc": metrics.accuracy(pred.probs, val.y),
            "val_nll": metrics.nll(pred.probs, val.y),
        }

    return validate
