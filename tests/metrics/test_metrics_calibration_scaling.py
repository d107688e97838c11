import numpy as np
import pytest
import torch

from ensemble_distill import metrics


def sample(n=4000, classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(n, classes, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_fitted_temperature_undoes_overconfidence():
    logits, labels = sample()
    overconfident = torch.softmax(2.0 * logits, -1)  # the true temperature is 2
    assert metrics.fit_temperature(overconfident, labels) == pytest.approx(2.0, rel=0.1)


def test_fitted_temperature_is_the_grid_minimum():
    logits, labels = sample(n=500, seed=1)
    probs = torch.softmax(logits * 1.3, -1)
    grid = np.exp(np.linspace(np.log(0.2), np.log(5), 2001))
    nlls = [metrics.nll(metrics.temperature_scale(probs, t), labels) for t in grid]
    assert metrics.fit_temperature(probs, labels) == pytest.approx(grid[np.argmin(nlls)], rel=5e-3)


def test_calibrated_metrics_never_worse_on_the_fitting_split():
    logits, labels = sample(n=800, seed=2)
    probs = torch.softmax(3.0 * logits, -1)
    calibrated = metrics.calibrated_metrics(probs, labels, probs, labels)
    assert calibrated["cnll"] <= metrics.nll(probs, labels) + 1e-9
    assert {"temperature", "cnll", "cece", "cbrier"} == set(calibrated)


@pytest.mark.parametrize(
    ("value", "expected"), [(0.75, 2.5), (0.8, 2.0), (1.2, 1.0), (0.6, 4.0), (0.675, 3.5)]
)
def test_deep_ensemble_equivalent_interpolates(value, expected):
    curve = [1.0, 0.8, 0.7, 0.65]
    assert metrics.deep_ensemble_equivalent(curve, value) == pytest.approx(expected)


def test_ensemble_size_curve_ends_at_the_full_ensemble():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(300, 4, 6, generator=generator, dtype=torch.float64)
    labels = torch.randint(6, (300,), generator=generator)
    probs = torch.softmax(logits, -1)
    curve = metrics.ensemble_size_curve(probs[:150], labels[:150], probs[150:], labels[150:])
    assert len(curve) == 4
    full = metrics.calibrated_metrics(probs[:150], labels[:150], probs[150:], labels[150:])
    assert curve[-1] == pytest.approx(full["cnll"])


def test_diversity_by_confidence_bins_and_weights():
    # Two inputs where members agree (diversity 0) and one where they disagree.
    agree = torch.tensor([[0.95, 0.05], [0.95, 0.05]], dtype=torch.float64)  # confidence 0.95
    disagree = torch.tensor([[0.95, 0.05], [0.05, 0.95]], dtype=torch.float64)  # 0.5
    probs = torch.stack([agree, agree, disagree])
    result = metrics.diversity_by_confidence(probs, num_bins=5)
    kl = 0.95 * np.log(19) + 0.05 * np.log(1 / 19)  # KL(p1 ‖ p2) = KL(p2 ‖ p1)
    assert result["mean"] == pytest.approx(kl / 3)
    assert sum(result["counts"]) == 3
    assert result["counts"][0] == 1 and result["diversity"][0] == pytest.approx(kl)  # conf 0.5
    assert result["counts"][-1] == 2 and result["diversity"][-1] == pytest.approx(0.0, abs=1e-12)


def test_member_subsets_enumerate_small_and_sample_large_spaces():
    from ensemble_distill.metrics.calibration import member_subsets

    rng = np.random.default_rng(0)
    assert member_subsets(4, 2, 10, rng) == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    large = member_subsets(50, 25, 10, rng)  # C(50, 25) ≈ 1.3e14: must not be enumerated
    assert len(large) == 10 and len({tuple(s) for s in large}) == 10
    assert all(len(set(s)) == 25 and max(s) < 50 for s in large)
