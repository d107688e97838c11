"""Regression metrics against independent oracles: SciPy, scikit-learn and sampling."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import mean_squared_error

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import (
    calibration_curve,
    gaussian_nll,
    interval_coverage,
    mixture_moments,
    ood_auroc,
    regression_metrics,
    rmse,
)


def _ensemble(rng: np.random.Generator, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Random member means (n, m) and variances (n, m) > 0."""
    return rng.normal(0.0, 2.0, (n, m)), rng.uniform(0.1, 3.0, (n, m))


def test_mixture_moments_match_numpy_and_sampling_from_the_mixture(rng):
    means, variances = _ensemble(rng, 3, 4)
    mean, aleatoric, epistemic = mixture_moments(
        torch.from_numpy(means), torch.from_numpy(variances)
    )
    np.testing.assert_allclose(mean.numpy(), means.mean(1), rtol=1e-12)
    np.testing.assert_allclose(aleatoric.numpy(), variances.mean(1), rtol=1e-12)
    np.testing.assert_allclose(epistemic.numpy(), np.var(means, axis=1, ddof=0), rtol=1e-12)

    samples = 200_000
    for n in range(3):  # draw from (1/M) Σ_m N(μ_m, σ_m²): pick a member, then sample it
        member = rng.integers(0, 4, samples)
        x = rng.normal(means[n, member], np.sqrt(variances[n, member]))
        total = (aleatoric + epistemic)[n].item()
        assert abs(x.mean() - mean[n].item()) < 5 * math.sqrt(total / samples)
        # Var of the sample variance ≈ (μ₄ − σ⁴)/S; bound μ₄ by the sample's own 4th moment.
        se_var = math.sqrt((np.mean((x - x.mean()) ** 4) - x.var() ** 2) / samples)
        assert abs(x.var() - total) < 5 * se_var


def test_mixture_moments_single_member_has_zero_epistemic(rng):
    means, variances = _ensemble(rng, 5, 1)
    mean, aleatoric, epistemic = mixture_moments(
        torch.from_numpy(means), torch.from_numpy(variances)
    )
    np.testing.assert_allclose(mean.numpy(), means[:, 0])
    np.testing.assert_allclose(aleatoric.numpy(), variances[:, 0])
    assert (epistemic == 0).all()
    # a 1-D input is one member too
    _, _, epistemic_1d = mixture_moments(torch.from_numpy(means[:, 0]), torch.ones(5))
    assert (epistemic_1d == 0).all()


def test_rmse_matches_sklearn(rng):
    mean, y = rng.normal(size=50), rng.normal(size=50)
    expected = math.sqrt(mean_squared_error(y, mean))
    assert rmse(torch.from_numpy(mean).float(), torch.from_numpy(y)) == pytest.approx(
        expected, rel=1e-6
    )
    assert rmse(torch.from_numpy(y), torch.from_numpy(y)) == 0.0


def test_gaussian_nll_matches_scipy_logpdf(rng):
    mean, variance, y = rng.normal(size=40), rng.uniform(0.01, 5.0, 40), rng.normal(size=40)
    expected = -norm.logpdf(y, loc=mean, scale=np.sqrt(variance)).mean()
    got = gaussian_nll(*(torch.from_numpy(a) for a in (mean, variance, y)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_coverage_of_a_well_specified_gaussian_is_nominal(rng):
    n = 20_000
    mean, sd = rng.normal(0.0, 3.0, n), rng.uniform(0.2, 4.0, n)
    y = rng.normal(mean, sd)
    tensors = [torch.from_numpy(a) for a in (mean, sd**2, y)]
    coverage = interval_coverage(*tensors)
    assert set(coverage) == {"coverage_50", "coverage_90", "coverage_95"}
    for key, p in [("coverage_50", 0.5), ("coverage_90", 0.9), ("coverage_95", 0.95)]:
        assert abs(coverage[key] - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial s.e.

    # the same counts from SciPy's quantile function, exactly
    for p in (0.5, 0.9, 0.975):
        inside = np.abs(y - mean) <= norm.ppf((1 + p) / 2) * sd
        key = f"coverage_{100 * p:g}"
        assert interval_coverage(*tensors, levels=(p,))[key] == pytest.approx(inside.mean())


def test_coverage_is_exactly_one_or_zero():
    mean, variance = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 4.0])
    assert set(interval_coverage(mean, variance, mean.clone()).values()) == {1.0}
    far = mean + 100 * variance.sqrt()
    assert set(interval_coverage(mean, variance, far).values()) == {0.0}


def test_calibration_curve_is_monotone_and_diagonal_when_calibrated(rng):
    n = 5_000
    mean, sd = rng.normal(size=n), rng.uniform(0.5, 2.0, n)
    y = rng.normal(mean, 1.5 * sd)  # over-confident model: true spread is 1.5 sd
    levels, observed = calibration_curve(*(torch.from_numpy(a) for a in (mean, sd**2, y)))
    np.testing.assert_allclose(levels.numpy(), np.arange(1, 20) / 20)
    assert observed.shape == (19,)
    assert (observed.diff() >= 0).all()
    assert (observed < levels).all()  # too narrow intervals under-cover

    y = rng.normal(mean, sd)
    levels, observed = calibration_curve(
        *(torch.from_numpy(a) for a in (mean, sd**2, y)), levels=[0.1, 0.5, 0.99]
    )
    assert (observed.diff() >= 0).all()
    assert (observed - levels).abs().max() < 4 * math.sqrt(0.25 / n)


def test_regression_metrics_use_the_moment_matched_predictive(rng):
    n, m = 200, 5
    means, variances = _ensemble(rng, n, m)
    y = rng.normal(means.mean(1), 1.0)
    out = regression_metrics(*(torch.from_numpy(a) for a in (means, variances, y)))
    assert set(out) == {
        "rmse",
        "nll",
        "epistemic",
        "aleatoric",
        "coverage_50",
        "coverage_90",
        "coverage_95",
    }
    mu, total = means.mean(1), variances.mean(1) + means.var(1)
    assert out["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, mu)), rel=1e-12)
    assert out["nll"] == pytest.approx(-norm.logpdf(y, mu, np.sqrt(total)).mean(), rel=1e-12)
    assert out["epistemic"] == pytest.approx(means.var(1).mean(), rel=1e-12)
    assert out["aleatoric"] == pytest.approx(variances.mean(), rel=1e-12)
    inside = np.abs(y - mu) <= norm.ppf(0.95) * np.sqrt(total)
    assert out["coverage_90"] == pytest.approx(inside.mean())

    single = regression_metrics(
        *(torch.from_numpy(a[:, :1]) for a in (means, variances)), torch.from_numpy(y)
    )
    assert single["epistemic"] == 0.0


def test_epistemic_variance_as_ood_score(rng):
    """Members that agree in-distribution and disagree out of it give AUROC 1."""
    variances = torch.ones(100, 4, dtype=torch.float64)
    in_means = torch.from_numpy(rng.normal(0.0, 0.1, (100, 4)))
    out_means = torch.from_numpy(rng.normal(0.0, 10.0, (100, 4)))
    _, _, epistemic_in = mixture_moments(in_means, variances)
    _, _, epistemic_out = mixture_moments(out_means, variances)
    assert ood_auroc(epistemic_in, epistemic_out) == 1.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mixture_moments(torch.zeros(3, 2), torch.ones(3, 4)), "same shape"),
        (lambda: mixture_moments(torch.zeros(3, 2), -torch.ones(3, 2)), ">= 0"),
        (lambda: mixture_moments(torch.zeros(3, 2, 2), torch.ones(3, 2, 2)), "shape"),
        (lambda: gaussian_nll(torch.zeros(3), torch.zeros(3), torch.zeros(3)), "> 0"),
        (lambda: gaussian_nll(torch.zeros(3), torch.ones(3), torch.zeros(4)), "same shape"),
        (lambda: rmse(torch.tensor([0.0, math.nan]), torch.zeros(2)), "NaN"),
        (lambda: rmse([0.0], torch.zeros(1)), "torch.Tensor"),
        (
            lambda: interval_coverage(torch.zeros(2), torch.ones(2), torch.zeros(2), (1.0,)),
            "(0, 1)",
        ),
    ],
)
def test_bad_input_raises_a_user_error(call, match):
    with pytest.raises(EnsembleDistillError, match=match):
        call()
