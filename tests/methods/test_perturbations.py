"""Perturbations against finite differences and their defining norms."""

import math

import pytest
import torch

from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, PERTURBATIONS, resolve_method
from ensemble_distill.methods.perturbations import PerturbationState, ods_direction
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble

SPEC = ModelSpec("mlp", (1, 3, 3), 4, {"widths": [6]})


def make_state(eta=0.01, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    teacher = DeepEnsemble([create_model(SPEC) for _ in range(3)]).to(dtype).eval()
    return PerturbationState(
        teacher, eta, temperature=2.0, generator=torch.Generator().manual_seed(seed)
    )


def test_ods_direction_matches_finite_differences_of_w_dot_p():
    state = make_state()
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    generator_state = state.generator.get_state()
    direction, _ = ods_direction(x, state)
    # Replay the same random draws: the teacher index, then w.
    replay = torch.Generator().set_state(generator_state)
    member = int(torch.randint(3, (1,), generator=replay))

    def objective(inputs):
        probs = torch.softmax(state.teacher.forward_member(inputs, member) / 2.0, -1)
        return probs

    weights = torch.rand((2, 4), generator=replay).double() * 2 - 1
    eps = 1e-6
    grad = torch.zeros_like(x)
    for i in range(9):
        step = torch.zeros(9, dtype=torch.float64)
        step[i] = eps
        step = step.view(1, 3, 3)
        plus = (weights * objective(x + step)).sum(-1)
        minus = (weights * objective(x - step)).sum(-1)
        grad.view(2, -1)[:, i] = (plus - minus) / (2 * eps)
    expected = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(direction, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["ods", "confods"])
def test_step_norms(name):
    state = make_state(eta=1e-3)
    x = torch.full((5, 1, 3, 3), 0.5, dtype=torch.float64)  # far from the clip at 0 and 1
    generator_state = state.generator.get_state()
    x_tilde = PERTURBATIONS.get(name)(x, state)
    norms = (x_tilde - x).flatten(1).norm(dim=1)
    expected = torch.full((5,), 1e-3 * math.sqrt(9), dtype=torch.float64)
    if name == "confods":
        state.generator.set_state(generator_state)
        _, confidence = ods_direction(x, state)
        expected = expected * confidence
        assert (confidence < 1).all()
    torch.testing.assert_close(norms, expected)


def test_gaussian_norm_and_clipping():
    state = make_state(eta=0.05)
    x = torch.full((400, 1, 3, 3), 0.5, dtype=torch.float64)
    noise = PERTURBATIONS.get("gaussian")(x, state) - x
    assert noise.std().item() == pytest.approx(0.05, rel=0.1)
    state.eta = 10.0
    clipped = PERTURBATIONS.get("gaussian")(x, state)
    assert clipped.min() >= 0 and clipped.max() <= 1 and not clipped.requires_grad


def test_method_names_combine_with_perturbations():
    method, perturbation = resolve_method("hydra+confods")
    assert method is METHODS.get("hydra")
    assert perturbation is PERTURBATIONS.get("confods")
    assert resolve_method("kd")[1] is None
    with pytest.raises(ConfigError, match="unknown perturbation 'nope'"):
        resolve_method("kd+nope")


def test_diverse_step_has_norm_eta_sqrt_d_and_needs_a_student():
    from ensemble_distill.models.batchensemble import BatchEnsemble

    state = make_state(eta=1e-3)
    x = torch.full((4, 1, 3, 3), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="student"):
        PERTURBATIONS.get("diverse")(x, state)
    state.student = BatchEnsemble.from_model(create_model(SPEC), 3).double()
    norms = (PERTURBATIONS.get("diverse")(x, state) - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((4,), 3e-3, dtype=torch.float64))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(set(PERTURBATIONS.names()) - {"diverse"}))
def test_every_perturbation_keeps_the_inputs_memory_layout(name, channels):
    """A channels-last batch stays channels-last, also with one channel (where x + noise
    comes back with NCHW strides and the convolutions leave their channels-last kernels)."""
    from ensemble_distill.models.base import channels_last

    spec = ModelSpec("cnn", (channels, 8, 8), 4, {"channels": [2], "hidden": 8})
    torch.manual_seed(0)
    state = PerturbationState(
        DeepEnsemble([create_model(spec) for _ in range(2)]).eval(),
        0.05,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
        patch=2,
        mixture={"clean": 1, "mixup": 1, "gaussian": 1},
    )
    for x in (torch.rand(6, channels, 8, 8), channels_last(torch.rand(6, channels, 8, 8))):
        assert PERTURBATIONS.get(name)(x, state).stride() == x.stride()


def test_diverse_step_climbs_the_teacher_pair_divergence_less_the_students():
    """The diverse direction against finite differences of the objective written out with
    every member's logits: KL(sg(T_j) ‖ T_i) − KL(sg(S_j) ‖ S_i) for the pair (i, j) the step
    draws (the targets j held fixed, as the stop-gradient says)."""
    from ensemble_distill.models.batchensemble import BatchEnsemble

    state = make_state(eta=1e-4)
    state.student = BatchEnsemble.from_model(create_model(SPEC), 3).double().eval()
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64) * 0.5 + 0.25  # away from the clip
    generator_state = state.generator.get_state()
    step = PERTURBATIONS.get("diverse")(x, state) - x
    i, j = torch.randperm(3, generator=torch.Generator().set_state(generator_state))[:2].tolist()
    with torch.no_grad():
        fixed_teacher, fixed_student = state.teacher(x)[:, j], state.student(x)[:, j]

    def kl(target_logits, logits):  # per example, KL(σ(target) ‖ σ(logits))
        p = torch.softmax(target_logits, -1)
        return (p * (torch.log_softmax(target_logits, -1) - torch.log_softmax(logits, -1))).sum(-1)

    def objective(inputs):
        teacher, student = state.teacher(inputs)[:, i], state.student(inputs)[:, i]
        return kl(fixed_teacher, teacher) - kl(fixed_student, student)

    eps, grad = 1e-6, torch.zeros_like(x)
    for k in range(9):
        delta = torch.zeros(9, dtype=torch.float64)
        delta[k] = eps
        delta = delta.view(1, 3, 3)
        grad.view(2, -1)[:, k] = (objective(x + delta) - objective(x - delta)) / (2 * eps)
    expected = 1e-4 * 3 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(step, expected, atol=1e-9, rtol=1e-5)
