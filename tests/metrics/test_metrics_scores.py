"""Accuracy, NLL and Brier against scikit-learn and independent numpy formulas."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss

from ensemble_distill.metrics import accuracy, brier, brier_tfp, mean_probs, nll


def test_mean_probs_averages_members_and_passes_single_model_through(make_probs):
    probs, _ = make_probs(6, 3, 4)
    np.testing.assert_allclose(mean_probs(probs).numpy(), probs.numpy().mean(axis=1))
    single = probs[:, 0].float()
    out = mean_probs(single)
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), single.double().numpy())


def test_accuracy_matches_sklearn_single_model(make_probs):
    probs, labels = make_probs(200, 7)
    expected = accuracy_score(labels.numpy(), probs.numpy().argmax(axis=1))
    assert accuracy(probs, labels) == pytest.approx(expected)


def test_accuracy_uses_member_mean(make_probs):
    probs, labels = make_probs(200, 5, 7)
    p_bar = probs.numpy().mean(axis=1)
    expected = accuracy_score(labels.numpy(), p_bar.argmax(axis=1))
    assert accuracy(probs, labels) == pytest.approx(expected)


def test_accuracy_is_not_majority_vote():
    # Member votes 2:1 for class 0, but the mean probability favours class 1.
    probs = torch.tensor([[[0.55, 0.45], [0.55, 0.45], [0.0, 1.0]]], dtype=torch.float64)
    assert accuracy(probs, torch.tensor([1])) == 1.0


def test_nll_matches_sklearn_log_loss_single_model(make_probs):
    probs, labels = make_probs(300, 10)
    expected = log_loss(labels.numpy(), probs.numpy(), labels=list(range(10)))
    assert nll(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_nll_ensemble_matches_mean_then_log(make_probs):
    probs, labels = make_probs(300, 4, 10)
    p_bar = probs.numpy().mean(axis=1)
    expected = -np.mean(np.log(p_bar[np.arange(300), labels.numpy()]))
    assert nll(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_nll_ensemble_is_not_mean_of_member_nlls(make_probs):
    probs, labels = make_probs(100, 4, 10)
    member_mean = np.mean([nll(probs[:, m], labels) for m in range(4)])
    assert nll(probs, labels) < member_mean  # Jensen: the mixture is better than the average


def test_nll_with_zero_probability_is_finite_and_large():
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    value = nll(probs, torch.tensor([1, 0]))
    assert math.isfinite(value)
    assert value > 300  # (−log of a clamped zero + log 2) / 2, far above any real example


def test_nll_ensemble_with_all_members_zero_on_label_is_finite():
    probs = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]], dtype=torch.float64)
    assert math.isfinite(nll(probs, torch.tensor([1])))


@pytest.mark.parametrize("members", [1, 3])
def test_nll_saturated_confidence(members):
    eps = 1e-12
    row = [1 - eps, eps / 2, eps / 2]
    probs = torch.tensor([[row] * members], dtype=torch.float64)
    if members == 1:
        probs = probs[:, 0]
    assert nll(probs, torch.tensor([0])) == pytest.approx(-math.log1p(-eps), rel=1e-6)
    assert nll(probs, torch.tensor([1])) == pytest.approx(-math.log(eps / 2), rel=1e-9)


def test_nll_ensemble_keeps_tiny_member_probability():
    # Members give the label 0 and 1e-300, so p̄_y = 0.5e-300: no clamping may kick in.
    probs = torch.tensor([[[0.0, 1.0], [1e-300, 1.0]]], dtype=torch.float64)
    assert nll(probs, torch.tensor([0])) == pytest.approx(-math.log(0.5e-300), rel=1e-9)


def _numpy_brier(p_bar: np.ndarray, labels: np.ndarray) -> float:
    one_hot = np.eye(p_bar.shape[1])[labels]
    return float(np.mean(np.sum((p_bar - one_hot) ** 2, axis=1)))


@pytest.mark.parametrize("shape", [(200, 6), (200, 4, 6)])
def test_brier_matches_numpy_formula(make_probs, shape):
    probs, labels = make_probs(*shape)
    p_bar = probs.numpy().mean(axis=1) if len(shape) == 3 else probs.numpy()
    assert brier(probs, labels) == pytest.approx(_numpy_brier(p_bar, labels.numpy()), rel=1e-12)


def test_brier_matches_sklearn_multiclass(make_probs):
    probs, labels = make_probs(200, 6)
    expected = brier_score_loss(
        labels.numpy(), probs.numpy(), labels=list(range(6)), scale_by_half=False
    )
    assert brier(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_brier_binary_is_twice_sklearn_binary(make_probs):
    # sklearn's binary Brier (p_1 − y)² counts one class; the two-class sum is twice that.
    probs, labels = make_probs(200, 2)
    expected = brier_score_loss(labels.numpy(), probs.numpy()[:, 1])
    assert brier(probs, labels) == pytest.approx(2 * expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(100, 5), (100, 3, 5)])
def test_brier_tfp_is_brier_minus_one(make_probs, shape):
    probs, labels = make_probs(*shape)
    assert brier_tfp(probs, labels) == pytest.approx(brier(probs, labels) - 1, abs=1e-12)


def test_brier_extremes():
    perfect = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert brier(perfect, torch.tensor([0, 1])) == 0.0
    assert brier(perfect, torch.tensor([1, 0])) == 2.0
