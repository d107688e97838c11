import pytest
import torch
from scipy.stats import norm

from ensemble_distill import metrics
from ensemble_distill.evaluation import (
    DIRICHLET,
    PROXY_DIRICHLET,
    classification_metrics,
    classification_row,
    gaussian_predictive,
    ood_metrics,
    predictive,
    regression_metrics,
)
from ensemble_distill.models.gaussian import gaussian_params


def test_single_network_logits_are_one_member():
    logits = torch.randn(6, 4)
    pred = predictive(logits)
    assert pred.probs.shape == (6, 1, 4)
    torch.testing.assert_close(pred.probs[:, 0], torch.softmax(logits.double(), -1))
    assert pred.mi.abs().max() == 0


def test_member_logits_give_ensemble_uncertainty():
    logits = torch.randn(6, 3, 4)
    pred = predictive(logits)
    probs = torch.softmax(logits.double(), -1)
    torch.testing.assert_close(pred.mi, metrics.mutual_information(probs))
    torch.testing.assert_close(pred.entropy, metrics.predictive_entropy(probs))


def test_dirichlet_outputs_use_closed_forms():
    log_alpha = torch.randn(6, 4)
    pred = predictive(log_alpha, DIRICHLET)
    alpha = log_alpha.double().exp()
    torch.testing.assert_close(pred.probs[:, 0], alpha / alpha.sum(-1, keepdim=True))
    torch.testing.assert_close(pred.mi, metrics.dirichlet_mutual_information(log_alpha))
    row = classification_metrics(pred, torch.zeros(6, dtype=torch.long))
    assert row["mi"] > 0 and 0 <= row["acc"] <= 1


def test_proxy_dirichlet_outputs_predict_the_offset_free_mean():
    """s with α = e^s + 1: the prediction (α − 1)/(α₀ − C), the Dirichlet's uncertainties."""
    s = torch.randn(6, 4, dtype=torch.float64) * 3
    pred = predictive(s, PROXY_DIRICHLET)
    alpha = s.exp() + 1.0
    offset_free = (alpha - 1.0) / (alpha.sum(-1, keepdim=True) - 4)
    torch.testing.assert_close(pred.probs[:, 0], offset_free)
    dirichlet = predictive(alpha.log(), DIRICHLET)
    torch.testing.assert_close(pred.entropy, dirichlet.entropy)
    torch.testing.assert_close(pred.mi, dirichlet.mi)
    # The +1 pulls the Dirichlet's own mean towards uniform: its entropy is the larger.
    assert (pred.entropy > metrics.predictive_entropy(pred.probs[:, 0])).all()


def test_gaussian_predictive_reports_original_units():
    torch.manual_seed(0)
    raw = torch.randn(50, 3, 2)  # (N, M, 2) standardised outputs
    pred = gaussian_predictive(raw, target_mean=10.0, target_std=4.0)
    mean, variance = gaussian_params(raw.double())
    torch.testing.assert_close(pred.means, mean * 4 + 10)
    torch.testing.assert_close(pred.variances, variance * 16)
    torch.testing.assert_close(pred.epistemic, (mean * 4).var(dim=1, unbiased=False))
    torch.testing.assert_close(pred.total_variance, pred.variances.mean(1) + pred.epistemic)
    single = gaussian_predictive(raw[:, 0])  # (N, 2): one Gaussian, no epistemic term
    assert single.means.shape == (50, 1) and (single.epistemic == 0).all()


def test_regression_metrics_match_scipy_in_original_units():
    torch.manual_seed(1)
    raw, y = torch.randn(200, 2), torch.randn(200).double() * 4 + 10
    pred = gaussian_predictive(raw, 10.0, 4.0)
    row = regression_metrics(pred, y)
    mu, sd = pred.means[:, 0].numpy(), pred.variances[:, 0].sqrt().numpy()
    assert row["nll"] == pytest.approx(-norm.logpdf(y.numpy(), mu, sd).mean())
    assert row["rmse"] == pytest.approx(float(((pred.means[:, 0] - y) ** 2).mean().sqrt()))


def test_ood_metrics_add_fpr95_by_entropy_and_by_mi():
    torch.manual_seed(2)
    pred_in, pred_out = predictive(3 * torch.randn(60, 4, 5)), predictive(torch.randn(30, 4, 5))
    row = ood_metrics(pred_in, pred_out)
    assert row["ood_fpr95"] == metrics.ood_fpr_at_tpr(pred_in.entropy, pred_out.entropy)
    assert row["ood_fpr95_mi"] == metrics.ood_fpr_at_tpr(pred_in.mi, pred_out.mi)
    assert row["ood_fpr95"] != row["ood_fpr95_mi"]  # two scores, not one twice
    # One network has no MI (0 everywhere): chance AUROC, and every input flagged at 95 % TPR.
    single = ood_metrics(predictive(torch.randn(60, 5)), predictive(torch.randn(30, 5)))
    assert single["ood_auroc_mi"] == 0.5 and single["ood_fpr95_mi"] == 1.0


def test_every_classification_row_has_aurc_and_eaurc():
    torch.manual_seed(3)
    labels = torch.randint(0, 5, (80,))
    for outputs, kind in (
        (torch.randn(80, 4, 5), "logits"),  # ensemble / Hydra
        (torch.randn(80, 5), "logits"),  # one network
        (torch.randn(80, 5), DIRICHLET),
    ):
        pred = predictive(outputs, kind)
        row = classification_row(pred, labels, ood=predictive(torch.randn(20, 5)))
        assert row["aurc"] == metrics.aurc(pred.probs, labels)
        assert row["eaurc"] == metrics.eaurc(pred.probs, labels)
        assert 0 <= row["eaurc"] <= row["aurc"] <= 1
        assert {"ood_fpr95", "ood_fpr95_mi"} <= set(row)
