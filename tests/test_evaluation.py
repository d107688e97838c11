import torch

from ensemble_distill import metrics
from ensemble_distill.evaluation import DIRICHLET, classification_metrics, predictive


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
