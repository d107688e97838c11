"""Property tests: class-permutation invariance and ranges of the metrics."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ensemble_distill.metrics import (
    accuracy,
    brier,
    ece,
    expected_entropy,
    mean_probs,
    mutual_information,
    nll,
    pairwise_kl_diversity,
    predictive_entropy,
)

LOGIT = st.floats(-15, 15, allow_nan=False, allow_infinity=False)


@st.composite
def probs_and_labels(draw) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 12))
    m = draw(st.integers(1, 4))
    c = draw(st.integers(2, 6))
    logits = draw(arrays(np.float64, (n, m, c), elements=LOGIT))
    probs = torch.from_numpy(logits).softmax(dim=-1)
    labels = torch.from_numpy(draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1))))
    return probs, labels


def _permute_classes(probs, labels, seed):
    c = probs.shape[-1]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(c))
    # New class k is old class perm[k], so old label y becomes the k with perm[k] == y.
    return probs[..., perm], torch.argsort(perm)[labels]


@settings(max_examples=50, deadline=None)
@given(probs_and_labels(), st.integers(0, 2**32 - 1))
def test_class_permutation_invariance(data, seed):
    probs, labels = data
    permuted, permuted_labels = _permute_classes(probs, labels, seed)
    for metric in (nll, brier):
        assert math.isclose(
            metric(permuted, permuted_labels), metric(probs, labels), rel_tol=1e-9, abs_tol=1e-12
        )
    for score in (predictive_entropy, expected_entropy, mutual_information, pairwise_kl_diversity):
        np.testing.assert_allclose(score(permuted), score(probs), rtol=1e-9, atol=1e-12)
    # Accuracy and ECE depend on argmax, which is only permutation-invariant without ties:
    # checked on the examples without one (rejecting whole draws instead made Hypothesis
    # discard most of them, its tie-prone small logits, and fail its health check).
    top2 = mean_probs(probs).topk(2, dim=1).values
    untied = top2[:, 0] - top2[:, 1] > 1e-9
    if untied.any():
        probs, labels = probs[untied], labels[untied]
        permuted, permuted_labels = permuted[untied], permuted_labels[untied]
        assert accuracy(permuted, permuted_labels) == accuracy(probs, labels)
        assert math.isclose(ece(permuted, permuted_labels), ece(probs, labels), abs_tol=1e-12)


@settings(max_examples=50, deadline=None)
@given(probs_and_labels())
def test_metric_ranges(data):
    probs, labels = data
    m, c = probs.shape[1], probs.shape[2]
    tol = 1e-12
    assert 0 <= accuracy(probs, labels) <= 1
    assert nll(probs, labels) >= 0
    assert -tol <= brier(probs, labels) <= 2 + tol
    assert 0 <= ece(probs, labels) <= 1 + tol
    total = predictive_entropy(probs)
    assert (total >= 0).all() and (total <= math.log(c) + tol).all()
    mi = mutual_information(probs)
    assert (mi >= 0).all() and (mi <= min(math.log(m), math.log(c)) + tol).all()
    assert (mi <= total + tol).all()
    assert (pairwise_kl_diversity(probs) >= 0).all()
