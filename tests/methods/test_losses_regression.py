"""Regression distillation losses against Monte Carlo, torch.distributions and PyTorch's NLL."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch.distributions import Normal, kl_divergence

from ensemble_distill.methods.losses import (
    gaussian_kl,
    hydra_regression_loss,
    kd_regression_loss,
    moment_matched,
)
from ensemble_distill.metrics import mixture_moments
from ensemble_distill.models.gaussian import MIN_VARIANCE, gaussian_params


def _raw_variance(variance: torch.Tensor) -> torch.Tensor:
    """Inverse of gaussian_params' variance map: softplus(raw) + MIN_VARIANCE = variance."""
    v = variance - MIN_VARIANCE
    return v + torch.log(-torch.expm1(-v))  # log(expm1(v)), stable for large v


PAIRS = [  # (μp, σp², μq, σq²)
    (0.0, 1.0, 0.0, 1.0),
    (0.3, 0.5, -1.0, 2.0),
    (2.0, 4.0, 1.5, 0.7),
    (-1.0, 0.2, -0.8, 0.25),
]


@pytest.mark.parametrize(("mp", "vp", "mq", "vq"), PAIRS[1:])
def test_gaussian_kl_matches_monte_carlo(mp, vp, mq, vq):
    rng = np.random.default_rng(1)
    x = rng.normal(mp, math.sqrt(vp), 200_000)
    log_ratio = norm.logpdf(x, mp, math.sqrt(vp)) - norm.logpdf(x, mq, math.sqrt(vq))
    se = log_ratio.std() / math.sqrt(x.size)
    kl = gaussian_kl(*(torch.tensor(v, dtype=torch.float64) for v in (mp, vp, mq, vq)))
    assert abs(kl.item() - log_ratio.mean()) < 5 * se


def test_gaussian_kl_matches_torch_distributions_and_broadcasts():
    mp, vp, mq, vq = (torch.tensor(col, dtype=torch.float64) for col in zip(*PAIRS, strict=True))
    expected = kl_divergence(Normal(mp, vp.sqrt()), Normal(mq, vq.sqrt()))
    torch.testing.assert_close(gaussian_kl(mp, vp, mq, vq), expected)
    # (B, M) against (B, 1) broadcasts like the tensors themselves
    got = gaussian_kl(mp[:, None], vp[:, None], mq[None, :], vq[None, :])
    expected = kl_divergence(Normal(mp[:, None], vp[:, None].sqrt()), Normal(mq, vq.sqrt()))
    torch.testing.assert_close(got, expected)


def test_gaussian_kl_is_zero_iff_the_gaussians_are_equal():
    mean = torch.randn(10, dtype=torch.float64)
    var = torch.rand(10, dtype=torch.float64) + 0.1
    assert gaussian_kl(mean, var, mean, var).abs().max().item() < 1e-15
    assert (gaussian_kl(mean, var, mean + 1e-3, var) > 0).all()
    assert (gaussian_kl(mean, var, mean, var * 1.01) > 0).all()
    assert (gaussian_kl(mean, var * 1.01, mean, var) > 0).all()


def test_moment_matched_agrees_with_mixture_moments():
    means = torch.randn(6, 4, dtype=torch.float64)
    variances = torch.rand(6, 4, dtype=torch.float64) + 0.1
    mean, variance = moment_matched(means, variances)
    mu, aleatoric, epistemic = mixture_moments(means, variances)
    torch.testing.assert_close(mean, mu)
    torch.testing.assert_close(variance, aleatoric + epistemic)


def test_kd_regression_loss_gradient_and_zero_at_the_moment_matched_teacher():
    torch.manual_seed(1)
    teacher = torch.randn(8, 4, 2, dtype=torch.float64)
    student = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda s: kd_regression_loss(s, teacher), (student,))

    mean, variance = moment_matched(*gaussian_params(teacher))
    matched = torch.stack([mean, _raw_variance(variance)], dim=-1)
    assert kd_regression_loss(matched, teacher).abs().item() < 1e-12
    assert kd_regression_loss(student, teacher).item() > 0

    # ... and it equals the closed form against torch.distributions, averaged over the batch
    s_mean, s_var = gaussian_params(student)
    expected = kl_divergence(Normal(mean, variance.sqrt()), Normal(s_mean, s_var.sqrt())).mean()
    torch.testing.assert_close(kd_regression_loss(student, teacher), expected)


def test_regression_losses_treat_the_teacher_as_a_detached_target():
    teacher = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    student = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    heads = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    (kd_regression_loss(student, teacher) + hydra_regression_loss(heads, teacher)).backward()
    assert teacher.grad is None
    assert student.grad is not None and heads.grad is not None


def test_hydra_regression_loss_matches_a_loop_over_members():
    torch.manual_seed(2)
    teacher = torch.randn(16, 5, 2, dtype=torch.float64)
    heads = torch.randn(16, 5, 2, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for m in range(5):
        mu, var = gaussian_params(teacher[:, m])
        mu_hat, var_hat = gaussian_params(heads[:, m])
        total = total + kl_divergence(Normal(mu, var.sqrt()), Normal(mu_hat, var_hat.sqrt())).mean()
    torch.testing.assert_close(hydra_regression_loss(heads, teacher), total / 5)


def test_hydra_regression_loss_zero_iff_each_head_equals_its_member():
    teacher = torch.randn(16, 5, 2, dtype=torch.float64)
    assert hydra_regression_loss(teacher.clone(), teacher).abs().item() < 1e-12
    swapped = teacher[:, torch.tensor([1, 0, 2, 3, 4])]  # head m must imitate member m
    assert hydra_regression_loss(swapped, teacher).item() > 1e-3
    with pytest.raises(ValueError, match="same shape"):
        hydra_regression_loss(torch.zeros(2, 3, 2), torch.zeros(2, 4, 2))
