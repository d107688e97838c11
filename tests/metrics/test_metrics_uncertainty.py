"""Entropies, mutual information and pairwise-KL diversity against scipy."""

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr
from scipy.stats import entropy

from ensemble_distill.metrics import (
    expected_entropy,
    mutual_information,
    pairwise_kl_diversity,
    predictive_entropy,
)


def test_predictive_entropy_matches_scipy(make_probs):
    probs, _ = make_probs(50, 4, 6)
    expected = entropy(probs.numpy().mean(axis=1), axis=1)
    out = predictive_entropy(probs)
    assert out.shape == (50,) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)


def test_expected_entropy_matches_scipy(make_probs):
    probs, _ = make_probs(50, 4, 6)
    expected = entropy(probs.numpy(), axis=2).mean(axis=1)
    np.testing.assert_allclose(expected_entropy(probs).numpy(), expected, rtol=1e-12)


def test_single_model_entropies_agree(make_probs):
    probs, _ = make_probs(50, 6)
    expected = entropy(probs.numpy(), axis=1)
    np.testing.assert_allclose(predictive_entropy(probs).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(expected_entropy(probs).numpy(), expected, rtol=1e-12)


def test_entropy_of_one_hot_is_zero_not_nan():
    probs = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    assert predictive_entropy(probs).item() == 0.0


def test_mutual_information_matches_scipy(make_probs):
    probs, _ = make_probs(50, 4, 6)
    p = probs.numpy()
    expected = entropy(p.mean(axis=1), axis=1) - entropy(p, axis=2).mean(axis=1)
    out = mutual_information(probs)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9, atol=1e-15)
    assert (out >= 0).all()


def test_mutual_information_zero_when_members_agree(make_probs):
    probs, _ = make_probs(200, 6)
    agreeing = probs[:, None, :].repeat(1, 3, 1)
    # p̄ equals each member only up to the rounding of a float64 mean, which can make
    # H[p̄] − mean H[p_m] slightly negative: the result must still be ≥ 0.
    mi = mutual_information(agreeing)
    np.testing.assert_allclose(mi.numpy(), 0.0, atol=1e-14)
    assert (mi >= 0).all()


def test_mutual_information_zero_for_single_model_and_single_member(make_probs):
    probs, _ = make_probs(20, 6)
    assert (mutual_information(probs) == 0).all()
    assert (mutual_information(probs[:, None, :]) == 0).all()


def test_mutual_information_of_disjoint_one_hot_members_is_log_two():
    probs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    assert mutual_information(probs).item() == pytest.approx(math.log(2), rel=1e-12)


def _scipy_pairwise_kl(p: np.ndarray) -> np.ndarray:
    n, m, _ = p.shape
    total = np.zeros(n)
    for i in range(m):
        for j in range(m):
            if i != j:
                total += rel_entr(p[:, i], p[:, j]).sum(axis=1)
    return total / (m * (m - 1))


@pytest.mark.parametrize("members", [2, 5])
def test_pairwise_kl_matches_scipy(make_probs, members):
    probs, _ = make_probs(40, members, 7)
    expected = _scipy_pairwise_kl(probs.numpy())
    np.testing.assert_allclose(pairwise_kl_diversity(probs).numpy(), expected, rtol=1e-9)


def test_pairwise_kl_is_symmetrised_over_ordered_pairs():
    # KL is asymmetric; the ordered-pair mean is (KL(p‖q) + KL(q‖p)) / 2 for M = 2.
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    probs = torch.tensor(np.stack([p, q])[None])
    expected = (rel_entr(p, q).sum() + rel_entr(q, p).sum()) / 2
    assert pairwise_kl_diversity(probs).item() == pytest.approx(expected, rel=1e-12)


def test_pairwise_kl_zero_for_identical_members_and_single_member(make_probs):
    probs, _ = make_probs(20, 6)
    identical = probs[:, None].repeat(1, 3, 1)
    np.testing.assert_allclose(pairwise_kl_diversity(identical).numpy(), 0.0, atol=1e-14)
    assert (pairwise_kl_diversity(probs[:, None]) == 0).all()
    assert (pairwise_kl_diversity(probs) == 0).all()


def test_pairwise_kl_with_zero_probabilities_is_finite():
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    value = pairwise_kl_diversity(probs).item()
    assert math.isfinite(value) and value > 100
