"""Golden values (computed independently with NumPy) and invariants of the KD loss."""

import math

import pytest
import torch

from ensemble_distill.methods.losses import dirichlet_nll, ensemble_log_probs, hydra_loss, kd_loss

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[[1.5, 1.0, 0.0], [0.5, 2.5, -0.5]], [[0.0, 0.0, 2.0], [1.0, -2.0, 4.0]]])
LABELS = torch.tensor([1, 2])


@pytest.mark.parametrize(
    ("alpha", "temperature", "golden"),
    [
        (1.0, 1.0, 0.035326101644971394),
        (0.9, 4.0, 0.05572885410687645),
        (0.5, 2.0, 0.15027740166527326),
    ],
)
def test_kd_loss_golden_values(alpha, temperature, golden):
    loss = kd_loss(STUDENT.double(), TEACHER.double(), LABELS, alpha=alpha, temperature=temperature)
    assert loss.item() == pytest.approx(golden, rel=1e-12)


def test_kd_target_is_mean_of_probabilities_not_of_logits():
    teacher = torch.tensor([[[10.0, 0.0], [0.0, 10.0]]])  # members disagree completely
    probs = ensemble_log_probs(teacher).exp()
    torch.testing.assert_close(probs, torch.tensor([[0.5, 0.5]]), atol=1e-4, rtol=0)
    # averaging logits would give the same here; make them asymmetric to tell them apart
    teacher = torch.tensor([[[4.0, 0.0], [0.0, 1.0]]])
    expected = torch.softmax(teacher, -1).mean(1)
    torch.testing.assert_close(ensemble_log_probs(teacher).exp(), expected)


def test_kd_loss_zero_when_student_matches_single_member_teacher():
    logits = torch.randn(8, 5)
    loss = kd_loss(
        logits, logits.unsqueeze(1), torch.zeros(8, dtype=torch.long), alpha=1.0, temperature=3.0
    )
    assert loss.abs().item() < 1e-6


def test_kd_loss_gradient_matches_finite_differences():
    student = STUDENT.double().clone().requires_grad_()
    torch.autograd.gradcheck(
        lambda s: kd_loss(s, TEACHER.double(), LABELS, alpha=0.7, temperature=2.0), (student,)
    )


def test_ensemble_log_probs_survive_extreme_logits():
    teacher = torch.tensor([[[800.0, 0.0], [0.0, 800.0]]])
    assert torch.isfinite(ensemble_log_probs(teacher)).all()
    assert ensemble_log_probs(teacher)[0, 0].item() == pytest.approx(-math.log(2))


HEADS = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], [[0.5, 0.0, 1.0], [0.0, -1.0, 3.0]]])


@pytest.mark.parametrize(
    ("temperature", "golden"), [(1.0, 0.06087797602020776), (2.0, 0.10347668913757035)]
)
def test_hydra_loss_golden_values(temperature, golden):
    loss = hydra_loss(HEADS.double(), TEACHER.double(), temperature=temperature)
    assert loss.item() == pytest.approx(golden, rel=1e-12)


def test_hydra_loss_is_zero_when_every_head_equals_its_member():
    teacher = torch.randn(16, 5, 4)
    assert hydra_loss(teacher.clone(), teacher, temperature=2.0).abs().item() < 1e-6
    # ... and positive when the heads are swapped: head m must imitate member m, not any member
    swapped = teacher[:, torch.tensor([1, 0, 2, 3, 4])]
    assert hydra_loss(swapped, teacher, temperature=2.0).item() > 1e-3


def test_hydra_loss_refuses_member_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        hydra_loss(torch.zeros(2, 3, 4), torch.zeros(2, 5, 4), temperature=1.0)


@pytest.mark.parametrize(
    ("smoothing", "golden"), [(1e-3, -2.0558413682264574), (1e-2, -1.8915717854655434)]
)
def test_dirichlet_nll_golden_values_from_scipy(smoothing, golden):
    log_alpha = STUDENT.double()  # reused as log-concentrations
    probs = torch.softmax(TEACHER.double(), -1)
    loss = dirichlet_nll(log_alpha, probs, smoothing=smoothing)
    assert loss.item() == pytest.approx(golden, rel=1e-10)


def test_dirichlet_nll_matches_torch_distributions():
    log_alpha = torch.randn(6, 4, dtype=torch.float64)
    probs = torch.distributions.Dirichlet(torch.ones(4)).sample((6, 3)).double()
    expected = (
        -torch.distributions.Dirichlet(log_alpha.exp().unsqueeze(1))
        .log_prob(0.999 * probs + 0.001 / 4)
        .mean()
    )
    torch.testing.assert_close(dirichlet_nll(log_alpha, probs, smoothing=1e-3), expected)


@pytest.mark.parametrize("loss", ["kd", "hydra", "endd"])
def test_losses_compute_in_float32_on_bf16_outputs(loss):
    """Under bf16 autocast the networks hand over bf16 outputs: each loss must equal its
    float64 value on those same (already rounded) numbers to float32 accuracy, not bf16's."""
    torch.manual_seed(0)
    student = (torch.randn(64, 4, 10) * 3).bfloat16()
    teacher = (torch.randn(64, 4, 10) * 3).bfloat16()
    labels = torch.randint(0, 10, (64,))
    member_probs = torch.softmax(teacher.double(), -1).bfloat16()

    def value(dtype):
        s, t = student.to(dtype), teacher.to(dtype)
        if loss == "kd":
            return kd_loss(s[:, 0], t, labels, alpha=1.0, temperature=2.0)
        if loss == "hydra":
            return hydra_loss(s, t, temperature=2.0)
        return dirichlet_nll(s[:, 0], member_probs.to(dtype), smoothing=1e-3)

    got, exact = value(torch.bfloat16), value(torch.float64)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-6)
