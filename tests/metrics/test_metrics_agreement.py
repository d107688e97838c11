import numpy as np
import pytest
import torch

from ensemble_distill.metrics import rank_correlation


def test_rank_correlation_against_pearson_of_ranks():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    ranks = [np.argsort(np.argsort(v)) for v in (a, b)]  # no ties in continuous samples
    expected = np.corrcoef(*ranks)[0, 1]
    assert rank_correlation(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected)


def test_rank_correlation_is_invariant_to_monotone_maps_and_sign():
    x = torch.rand(30)
    assert rank_correlation(x.exp(), x) == pytest.approx(1.0)
    assert rank_correlation(-x, x) == pytest.approx(-1.0)


def test_constant_scores_have_no_rank_correlation():
    assert rank_correlation(torch.zeros(10), torch.rand(10)) is None


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="two"):
        rank_correlation(torch.rand(3), torch.rand(4))
