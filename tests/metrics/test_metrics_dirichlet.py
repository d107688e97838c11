"""Closed-form Dirichlet uncertainties against Monte-Carlo estimates from Dirichlet samples."""

import itertools

import numpy as np
import pytest
import torch

from ensemble_distill import metrics


@pytest.mark.parametrize("alpha", [[1.0, 1.0, 1.0], [20.0, 2.0, 1.0], [0.5, 3.0, 0.7, 9.0]])
def test_closed_form_matches_monte_carlo(alpha):
    rng = np.random.default_rng(0)
    samples = rng.dirichlet(alpha, size=400_000)  # (S, C)
    entropies = -(samples * np.log(np.clip(samples, 1e-300, None))).sum(-1)
    mean = samples.mean(0)
    mc_expected = entropies.mean()
    mc_mi = -(mean * np.log(mean)).sum() - mc_expected
    log_alpha = torch.log(torch.tensor([alpha], dtype=torch.float64))
    stderr = entropies.std() / np.sqrt(len(entropies))
    assert metrics.dirichlet_expected_entropy(log_alpha).item() == pytest.approx(
        mc_expected, abs=5 * stderr
    )
    assert metrics.dirichlet_mutual_information(log_alpha).item() == pytest.approx(
        mc_mi, abs=5 * stderr + 1e-4
    )
    torch.testing.assert_close(
        metrics.dirichlet_mean(log_alpha)[0], torch.tensor(alpha, dtype=torch.float64) / sum(alpha)
    )


def test_mutual_information_shrinks_as_concentration_grows():
    base = torch.log(torch.tensor([[3.0, 1.0, 1.0]], dtype=torch.float64))
    values = [
        metrics.dirichlet_mutual_information(base + np.log(s)).item() for s in (1, 10, 100, 1000)
    ]
    assert all(a > b for a, b in itertools.pairwise(values)) and values[-1] < 1e-3
