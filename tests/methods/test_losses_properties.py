"""Property tests (hypothesis) of the distillation losses: ranges, invariances, oracles."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.distributions import Dirichlet, Normal, kl_divergence

from ensemble_distill.methods.losses import (
    dirichlet_nll,
    gaussian_kl,
    hydra_loss,
    hydra_regression_loss,
    kd_loss,
    kd_regression_loss,
)

PROPERTY = settings(max_examples=100, deadline=None)
FINITE = st.floats(-8, 8, allow_nan=False, allow_infinity=False)


@st.composite
def logits(draw, members: bool = True):
    b, m, c = draw(st.integers(1, 6)), draw(st.integers(1, 4)), draw(st.integers(2, 5))
    shape = (b, m, c) if members else (b, c)
    return torch.from_numpy(draw(arrays(np.float64, shape, elements=FINITE))), (b, m, c)


@PROPERTY
@given(data=st.data(), temperature=st.floats(0.5, 5))
def test_kd_loss_is_nonnegative_and_zero_at_the_teachers_mean(data, temperature):
    teacher, (b, _, c) = data.draw(logits())
    student = torch.from_numpy(data.draw(arrays(np.float64, (b, c), elements=FINITE)))
    labels = torch.zeros(b, dtype=torch.long)
    loss = kd_loss(student, teacher, labels, alpha=1.0, temperature=temperature)
    assert loss >= -1e-9
    # log of the teacher's mean tempered probabilities, read back at temperature T, is p̄_T.
    mean = torch.softmax(teacher / temperature, -1).mean(1).log() * temperature
    assert kd_loss(mean, teacher, labels, alpha=1.0, temperature=temperature).abs() < 1e-9


@PROPERTY
@given(data=st.data(), temperature=st.floats(0.5, 5))
def test_hydra_loss_is_nonnegative_zero_on_the_teacher_and_member_order_equivariant(
    data, temperature
):
    teacher, (b, m, c) = data.draw(logits())
    student = torch.from_numpy(data.draw(arrays(np.float64, (b, m, c), elements=FINITE)))
    loss = hydra_loss(student, teacher, temperature=temperature)
    assert loss >= -1e-9
    assert hydra_loss(teacher, teacher, temperature=temperature).abs() < 1e-9
    order = torch.randperm(m)
    permuted = hydra_loss(student[:, order], teacher[:, order], temperature=temperature)
    torch.testing.assert_close(permuted, loss)


@PROPERTY
@given(data=st.data())
def test_dirichlet_nll_matches_torch_distributions(data):
    log_alpha, (b, m, c) = data.draw(logits(members=False))
    member_logits = data.draw(arrays(np.float64, (b, m, c), elements=FINITE))
    probs = torch.softmax(torch.from_numpy(member_logits), -1)
    smoothing = 1e-3
    smoothed = (1 - smoothing) * probs + smoothing / c
    expected = -Dirichlet(log_alpha.exp().unsqueeze(1)).log_prob(smoothed).mean()
    torch.testing.assert_close(dirichlet_nll(log_alpha, probs, smoothing=smoothing), expected)


GAUSS = st.tuples(st.floats(-5, 5), st.floats(0.01, 10), st.floats(-5, 5), st.floats(0.01, 10))


@PROPERTY
@given(params=GAUSS)
def test_gaussian_kl_agrees_with_torch_and_is_nonnegative(params):
    mp, vp, mq, vq = (torch.tensor(v, dtype=torch.float64) for v in params)
    kl = gaussian_kl(mp, vp, mq, vq)
    assert kl >= -1e-12
    expected = kl_divergence(Normal(mp, vp.sqrt()), Normal(mq, vq.sqrt()))
    torch.testing.assert_close(kl, expected)


@PROPERTY
@given(data=st.data())
def test_regression_losses_are_nonnegative_and_shift_invariant(data):
    raw, (b, m, _) = data.draw(logits())
    teacher = raw[..., :2].contiguous()
    student = torch.from_numpy(data.draw(arrays(np.float64, (b, m, 2), elements=FINITE)))
    shift = torch.tensor([data.draw(st.floats(-3, 3)), 0.0], dtype=torch.float64)
    for loss, s in ((hydra_regression_loss, student), (kd_regression_loss, student[:, 0])):
        value = loss(s, teacher)
        assert value >= -1e-9
        # Moving every mean by the same amount changes no KL.
        torch.testing.assert_close(loss(s + shift, teacher + shift), value)
