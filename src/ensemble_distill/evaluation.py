"""Turn a model's outputs into the metrics of METHODS.md (the same functions for every model).

Models return either member logits (batch, members, classes) — ensembles, Hydra, KD (a single
network's (batch, classes) output is read as one member) — or, for Prior Networks (EnD²),
a Dirichlet's outputs (batch, classes), flagged by ``output_kind``: ``"dirichlet"``, the
log-concentrations log α, or ``"proxy_dirichlet"`` (the Proxy-Dirichlet target's student),
s with α = e^s + 1 and softmax(s) its prediction.
For regression every model returns raw Gaussian outputs (batch, members, 2) or (batch, 2), read
by :func:`gaussian_predictive`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill import metrics
from ensemble_distill.data import ArrayDataset, DataSplits, ImageFiles, batches_of
from ensemble_distill.errors import ConfigError
from ensemble_distill.models.gaussian import gaussian_params

LOGITS = "logits"
DIRICHLET = "dirichlet"
PROXY_DIRICHLET = "proxy_dirichlet"
GAUSSIAN = "gaussian"


def output_kind(model: nn.Module) -> str:
    """``"logits"`` (member logits), ``"dirichlet"`` (log-concentrations) or
    ``"proxy_dirichlet"`` (s, α = e^s + 1)."""
    return getattr(model, "output_kind", LOGITS)


@dataclass(frozen=True)
class Predictive:
    """What the metrics need from a model on N examples.

    Attributes:
        probs: (N, M, C) member probabilities; (N, 1, C) p̄ for a single network or a
            Dirichlet's mean α/α₀; for ``"proxy_dirichlet"`` softmax(s) = (α − 1)/(α₀ − C).
        entropy: (N,) total uncertainty H[p̄] (a Dirichlet's: H[α/α₀]).
        mi: (N,) model uncertainty: the members' mutual information, or a Dirichlet's
            closed-form MI.
    """

    probs: Tensor
    entropy: Tensor
    mi: Tensor


def predictive(outputs: Tensor, kind: str = LOGITS) -> Predictive:
    """:class:`Predictive` from raw outputs, in float64.

    A Proxy-Dirichlet student's prediction is softmax(s), the estimate of the members' mean
    that its loss fits (the Dirichlet's own mean α/α₀ is pulled towards uniform by the +1
    offsets where the members disagree); its uncertainties are the Dirichlet's, so that
    H[α/α₀] = E[H[π]] + MI still splits (Ryabinin et al.'s evaluation code reads it so).
    """
    if kind in (DIRICHLET, PROXY_DIRICHLET):
        values = outputs.double()
        proxy = kind == PROXY_DIRICHLET
        log_alpha = F.softplus(values) if proxy else values  # proxy: log(e^s + 1)
        mean = metrics.dirichlet_mean(log_alpha)
        point = torch.softmax(values, dim=-1) if proxy else mean
        return Predictive(
            point.unsqueeze(1),
            metrics.predictive_entropy(mean),
            metrics.dirichlet_mutual_information(log_alpha),
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


def has_members(outputs: Tensor, kind: str = LOGITS) -> bool:
    """Whether ``outputs`` are the logits of two or more members (batch, members, classes): a
    model whose members can disagree (the teacher, Hydra, BatchEnsemble), unlike one network
    or a Prior Network's Dirichlet."""
    return kind == LOGITS and outputs.dim() == 3 and outputs.shape[1] >= 2


def as_member_logits(logits: Tensor) -> Tensor:
    """(batch, classes) → (batch, 1, classes); (batch, members, classes) unchanged."""
    return logits.unsqueeze(1) if logits.dim() == 2 else logits


@torch.inference_mode()
def predict_outputs(
    model: nn.Module,
    x: Tensor | ImageFiles,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The model's raw outputs on ``x`` (a tensor, or image files decoded by worker
    processes), on the CPU, in eval mode, batch by batch."""
    model.eval()
    chunks = [
        _output_tensor(model(batch.to(device))).float().cpu() for batch in batches_of(x, batch_size)
    ]
    return torch.cat(chunks)


def _output_tensor(output: Any) -> Tensor:
    """``output`` if it is one tensor; a model returning a tuple, a dict or anything else is
    refused here with the fix, instead of failing deep inside a metric."""
    if isinstance(output, Tensor):
        return output
    raise ConfigError(
        f"the model returned a {type(output).__name__}, not one tensor; wrap it so that "
        "forward(x) returns logits (batch, classes), member logits (batch, members, classes) "
        "or, for regression, (batch, 2)"
    )


def predict(
    model: nn.Module, x: Tensor, batch_size: int = 1024, device: torch.device | str = "cpu"
) -> Predictive:
    return predictive(predict_outputs(model, x, batch_size, device), output_kind(model))


def classification_metrics(pred: Predictive, labels: Tensor) -> dict[str, float]:
    """ACC, NLL, Brier (both forms), ECE, selective-prediction AURC and E-AURC (confidence
    max p̄), mean MI and mean predictive entropy."""
    return {
        "acc": metrics.accuracy(pred.probs, labels),
        "nll": metrics.nll(pred.probs, labels),
        "brier": metrics.brier(pred.probs, labels),
        "brier_tfp": metrics.brier_tfp(pred.probs, labels),
        "ece": metrics.ece(pred.probs, labels),
        "aurc": metrics.aurc(pred.probs, labels),
        "eaurc": metrics.eaurc(pred.probs, labels),
        "mi": float(pred.mi.mean()),
        "entropy": float(pred.entropy.mean()),
    }


def ood_metrics(pred_in: Predictive, pred_out: Predictive) -> dict[str, float]:
    """OOD detection, OOD = positive: AUROC, AUPR and FPR at 95 % TPR by predictive entropy
    (``ood_auroc``, ``ood_aupr``, ``ood_fpr95``) and by MI (``*_mi``; a single network's MI
    is 0 everywhere: AUROC 0.5, FPR95 1)."""
    return {
        "ood_auroc": metrics.ood_auroc(pred_in.entropy, pred_out.entropy),
        "ood_aupr": metrics.ood_aupr(pred_in.entropy, pred_out.entropy),
        "ood_fpr95": metrics.ood_fpr_at_tpr(pred_in.entropy, pred_out.entropy),
        "ood_auroc_mi": metrics.ood_auroc(pred_in.mi, pred_out.mi),
        "ood_aupr_mi": metrics.ood_aupr(pred_in.mi, pred_out.mi),
        "ood_fpr95_mi": metrics.ood_fpr_at_tpr(pred_in.mi, pred_out.mi),
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


def classification_row(
    test: Predictive,
    labels: Tensor,
    *,
    val: tuple[Predictive, Tensor] | None = None,
    ood: Predictive | None = None,
) -> dict[str, float]:
    """One model's row of classification results: :func:`classification_metrics` on the test
    split; with ``val`` (predictive, labels) the calibrated metrics (temperature fitted on
    it); with ``ood`` the OOD detection metrics."""
    row = classification_metrics(test, labels)
    if val is not None:
        row |= metrics.calibrated_metrics(val[0].probs, val[1], test.probs, labels)
    if ood is not None:
        row |= ood_metrics(test, ood)
    return row


def regression_row(
    test: GaussianPredictive, targets: Tensor, *, ood: GaussianPredictive | None = None
) -> dict[str, float]:
    """One model's row of regression results (targets in original units), with shift
    detection when ``ood`` is given."""
    row = regression_metrics(test, targets)
    if ood is not None:
        row |= regression_ood_metrics(test, ood)
    return row


def classification_scores(
    outputs: dict[str, dict[str, Tensor]], kinds: dict[str, str], data: DataSplits
) -> tuple[dict[str, dict[str, Any]], list[float]]:
    """Per model (``outputs[name][split]``, splits val, test and optionally ood; ``ensemble``
    among them): :func:`classification_row`, the DEE (``dee``; ``dee_note``: "extrapolated"
    below one member, "capped" at M, or None, see :func:`~ensemble_distill.metrics.
    deep_ensemble_equivalent`) and the Spearman ρ of its MI with the ensemble's; and the
    ensemble's DE-1 … DE-M calibrated NLL curve, made monotone (the one DEE reads)."""
    preds = {
        name: {split: predictive(v, kinds[name]) for split, v in by_split.items()}
        for name, by_split in outputs.items()
    }
    ensemble = preds["ensemble"]
    # DE-1 … DE-M calibrated NLL of the teacher's members (monotone): the yardstick of DEE.
    curve = metrics.ensemble_size_curve(
        ensemble["val"].probs, data.val.y, ensemble["test"].probs, data.test.y
    )
    rows = {}
    for name, pred in preds.items():
        row = classification_row(
            pred["test"], data.test.y, val=(pred["val"], data.val.y), ood=pred.get("ood")
        )
        row["dee"] = metrics.deep_ensemble_equivalent(curve, row["cnll"])
        row["dee_note"] = metrics.dee_note(curve, row["cnll"])
        for split in ("test", "ood") if "ood" in pred else ("test",):
            # Spearman ρ of per-example MI with the ensemble's (None where MI is constant).
            row[f"mi_spearman_{split}"] = metrics.rank_correlation(
                pred[split].mi, ensemble[split].mi
            )
        rows[name] = row
    return rows, curve


def regression_scores(
    outputs: dict[str, dict[str, Tensor]], data: DataSplits
) -> dict[str, dict[str, Any]]:
    """Per model, in the targets' original units: :func:`regression_row` and the Spearman ρ of
    its epistemic variance with the ensemble's (None for a single Gaussian, whose epistemic
    variance is constant zero)."""
    scale = (data.target_mean, data.target_std)
    preds = {
        name: {split: gaussian_predictive(v, *scale) for split, v in by_split.items()}
        for name, by_split in outputs.items()
    }
    targets = data.test.y.double() * data.target_std + data.target_mean
    rows = {}
    for name, pred in preds.items():
        row = regression_row(pred["test"], targets, ood=pred.get("ood"))
        row["epistemic_spearman_test"] = metrics.rank_correlation(
            pred["test"].epistemic, preds["ensemble"]["test"].epistemic
        )
        rows[name] = row
    return rows


def input_grid(data: DataSplits, points: int = 400) -> Tensor:
    """(points, 1) evenly spaced inputs over every split's range plus a 10 % margin."""
    x = torch.cat([data.train.x, data.test.x, *(d.x for d in data.ood.values())])
    low, high = float(x.min()), float(x.max())
    margin = 0.1 * (high - low)
    return torch.linspace(low - margin, high + margin, points).unsqueeze(1)


def cost_metrics(
    model: nn.Module, x: Tensor, repeats: int, device: torch.device | str
) -> dict[str, float]:
    """Parameters and milliseconds per example at batch 1 and batch 256 (median of
    ``repeats``)."""
    model.eval()
    return {
        "params": metrics.count_parameters(model),
        "latency_ms_b1": 1e3
        * metrics.latency_per_example(model, x[:1].to(device), repeats=repeats),
        "latency_ms_b256": 1e3
        * metrics.latency_per_example(model, x[:256].to(device), repeats=repeats),
    }
