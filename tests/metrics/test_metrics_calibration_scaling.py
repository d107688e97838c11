import itertools

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


@pytest.mark.slow  # 2,001-point grid: `make test-all` only
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


CURVE = [1.0, 0.8, 0.7, 0.65]  # DE-1 … DE-4
# The a + b/k law through DE-1 and DE-2, solved by hand: 1.0 = a + b, 0.8 = a + b/2, so
# b = 0.4, a = 0.6 and DEE = 0.4 / (value − 0.6) below one member.


@pytest.mark.parametrize(
    ("value", "expected", "note"),
    [
        (0.75, 2.5, None),
        (0.8, 2.0, None),
        (0.675, 3.5, None),
        (1.0, 1.0, None),  # exactly DE-1
        (0.65, 4.0, None),  # the full ensemble's own value: M
        (0.6, 4.0, "capped"),  # better than the curve: M, a lower bound, flagged
        (1.2, 0.4 / 0.6, "extrapolated"),  # worse than one member: below 1, never clamped
        (1.4, 0.5, "extrapolated"),
        (2.6, 0.2, "extrapolated"),
    ],
)
def test_deep_ensemble_equivalent_interpolates_and_extrapolates_below_one(value, expected, note):
    assert metrics.deep_ensemble_equivalent(CURVE, value) == pytest.approx(expected)
    assert metrics.dee_note(CURVE, value) == note


def test_dee_extrapolation_reproduces_the_law_it_inverts():
    # On a curve that follows cNLL(k) = a + b/k exactly, DEE recovers k for fractional k too.
    a, b = 0.3, 0.5
    curve = [a + b / k for k in range(1, 6)]
    for k in (0.9, 0.5, 0.25, 0.1):
        assert metrics.deep_ensemble_equivalent(curve, a + b / k) == pytest.approx(k)


def test_dee_is_continuous_at_one_member_and_decreasing_in_the_value():
    curve = [0.3, 0.25, 0.24]
    below = metrics.deep_ensemble_equivalent(curve, 0.3 + 1e-9)
    above = metrics.deep_ensemble_equivalent(curve, 0.3 - 1e-9)
    assert below == pytest.approx(1.0, abs=1e-6) and above == pytest.approx(1.0, abs=1e-6)
    assert below < 1.0 <= above
    values = np.linspace(0.2, 5.0, 400)
    dees = [metrics.deep_ensemble_equivalent(curve, v) for v in values]
    assert all(x >= y for x, y in itertools.pairwise(dees))
    assert 0.0 < dees[-1] < 0.05  # falls towards 0, never below


def test_dee_below_one_needs_a_curve_that_falls():
    assert metrics.deep_ensemble_equivalent([0.3, 0.3], 0.4) == 0.0  # no scale to extrapolate
    assert metrics.deep_ensemble_equivalent([0.3], 0.4) == 0.0  # M = 1: no DE-2
    assert metrics.deep_ensemble_equivalent([0.3], 0.3) == 1.0


def test_dee_on_a_flat_stretch_is_the_smallest_size_that_reaches_it():
    curve = [1.0, 0.8, 0.8, 0.6]
    assert metrics.deep_ensemble_equivalent(curve, 0.8) == 2.0
    assert metrics.deep_ensemble_equivalent(curve, 0.7) == pytest.approx(3.5)


def reference_pava(values, weights):
    """Non-increasing weighted isotonic regression by pool-adjacent-violators, written out
    independently of the library: merge adjacent blocks while a later mean exceeds an
    earlier one."""
    blocks = []  # [weighted mean, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m1, w1, n1), (m2, w2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return [m for m, _, n in blocks for _ in range(n)]


def test_monotone_curve_pools_violators_and_keeps_the_full_ensemble():
    values = [0.50, 0.40, 0.42, 0.35, 0.36, 0.37, 0.30]
    weights = [4, 6, 4, 1, 10, 10, 1]
    smoothed = metrics.monotone_curve(values, weights)
    # By hand: (0.40·6 + 0.42·4) / 10 and (0.35·1 + 0.36·10 + 0.37·10) / 21; DE-7 unchanged.
    pooled = (0.35 + 3.6 + 3.7) / 21
    assert smoothed == pytest.approx([0.5, 0.408, 0.408, pooled, pooled, pooled, 0.30])
    assert metrics.monotone_curve([0.5, 0.4, 0.3], [1, 1, 1]) == pytest.approx([0.5, 0.4, 0.3])


def test_monotone_curve_fixes_a_full_ensemble_that_looks_worse_than_a_smaller_one():
    # The M = 50 failure in miniature: sampled DE-3 (0.30) beats the exact DE-4 (0.40), which
    # gave the full ensemble a DEE below M. DE-4 is held; the earlier sizes are bounded by it.
    raw = [0.5, 0.3, 0.32, 0.4]
    smoothed = metrics.monotone_curve(raw, [4, 6, 4, 1])
    assert smoothed == pytest.approx([0.5, 0.4, 0.4, 0.4])
    # (Read naively, the raw curve first reaches 0.4 at size 1.5, between DE-1 and DE-2.)
    assert metrics.deep_ensemble_equivalent(smoothed, 0.4) == 4.0
    assert metrics.deep_ensemble_equivalent(smoothed, 0.45) == pytest.approx(1.5)


@pytest.mark.parametrize("seed", range(20))
def test_monotone_curve_matches_an_independent_pava(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 30))
    values = list(1 / np.arange(1, size + 1) + rng.normal(0, 0.1, size))
    weights = list(rng.integers(1, 11, size).astype(float))
    smoothed = metrics.monotone_curve(values, weights)
    assert all(a >= b for a, b in itertools.pairwise(smoothed))
    assert smoothed[-1] == values[-1]
    # Bounded isotonic regression = the unbounded fit of DE-1 … DE-(M−1), clipped at DE-M.
    expected = [max(v, values[-1]) for v in reference_pava(values[:-1], weights[:-1])]
    np.testing.assert_allclose(smoothed[:-1], expected, rtol=1e-12, atol=1e-12)


def member_probs(members, seed, n=300, classes=6):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=generator)
    signal = 1.5 * torch.nn.functional.one_hot(labels, classes)
    logits = signal[:, None] + torch.randn(n, members, classes, generator=generator)
    return torch.softmax(logits.double(), -1), labels


@pytest.mark.parametrize("members", [3, 5, pytest.param(12, marks=pytest.mark.slow)])
def test_the_full_ensemble_gets_dee_m_exactly(members):
    probs, labels = member_probs(members, seed=members)
    val, test = slice(0, 150), slice(150, None)
    curve = metrics.ensemble_size_curve(probs[val], labels[val], probs[test], labels[test])
    assert all(a >= b for a, b in itertools.pairwise(curve))
    full = metrics.calibrated_metrics(probs[val], labels[val], probs[test], labels[test])
    assert metrics.deep_ensemble_equivalent(curve, full["cnll"]) == float(members)
    assert metrics.dee_note(curve, full["cnll"]) is None


def test_ensemble_size_curve_smooths_the_raw_means_by_subset_counts():
    probs, labels = member_probs(4, seed=7)
    args = (probs[:150], labels[:150], probs[150:], labels[150:])
    raw = metrics.ensemble_size_curve(*args, monotone=False)
    # M = 4: every subset is enumerated, C(4, k) of them.
    assert metrics.ensemble_size_curve(*args) == metrics.monotone_curve(raw, [4, 6, 4, 1])


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
