"""Properties every registered model must have: in-model normalisation, and members that
train as one vmapped ensemble (``stack_module_state`` + ``functional_call``), as the teacher
trainer does."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state

from ensemble_distill.models import MODELS, Classifier, ModelSpec, create_model

MEMBERS = 3


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 8, 8)])
@pytest.mark.parametrize("name", MODELS.names())
def test_normalisation_happens_inside_the_model(
    name: str, input_shape: tuple[int, ...], small_spec: Callable[..., ModelSpec]
) -> None:
    spec = small_spec(name, input_shape)
    mean = (0.49, 0.48, 0.45)[: input_shape[0]]
    std = (0.25, 0.24, 0.26)[: input_shape[0]]
    torch.manual_seed(0)
    normalised = create_model(spec, mean, std)
    torch.manual_seed(0)
    plain = create_model(spec)
    x = torch.rand(4, *input_shape)
    x_normalised = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    torch.testing.assert_close(normalised(x), plain(x_normalised))


def member_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Summed cross-entropy of (M, B, classes) logits against (M, B) labels."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")


def make_members(spec: ModelSpec, dtype: torch.dtype) -> list[Classifier]:
    """``MEMBERS`` differently seeded models of ``spec`` in train mode."""
    members = []
    for seed in range(MEMBERS):
        torch.manual_seed(seed)
        model = create_model(spec, (0.5, 0.4, 0.3), (0.2, 0.3, 0.25))
        members.append(model.to(dtype).train())
    return members


def vmapped_train_step(
    members: list[Classifier], x: Tensor, labels: Tensor
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Stack the members' state and run them on (M, B, ...) inputs in one vmapped call.

    Returns logits (M, B, classes), the stacked parameters (with gradients of
    :func:`member_losses`) and the stacked buffers after the step.
    """
    params, buffers = stack_module_state(members)
    template = copy.deepcopy(members[0]).to("meta")

    def forward(member_params, member_buffers, member_x):
        return functional_call(template, (member_params, member_buffers), (member_x,))

    logits = torch.vmap(forward)(params, buffers, x)
    member_losses(logits, labels).backward()
    return logits, params, buffers


def compare_with_a_loop(
    spec: ModelSpec, dtype: torch.dtype
) -> tuple[list[Classifier], Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """One train step of fresh members, vmapped and looped (the loop updates ``members``).

    Returns the members, vmapped and looped logits, stacked parameters and buffers.
    """
    members = make_members(spec, dtype)
    x = torch.rand(MEMBERS, 8, *spec.input_shape, dtype=dtype)
    labels = torch.randint(0, spec.num_classes, (MEMBERS, 8))
    logits, params, buffers = vmapped_train_step(members, x, labels)
    looped = torch.stack([member(x[m]) for m, member in enumerate(members)])
    member_losses(looped, labels).backward()
    return members, logits, looped, params, buffers


@pytest.mark.parametrize("name", MODELS.names())
def test_vmapped_members_match_a_loop_in_train_mode(
    name: str, small_spec: Callable[..., ModelSpec]
) -> None:
    members, logits, looped, _, buffers = compare_with_a_loop(
        small_spec(name, (3, 16, 16)), torch.float32
    )
    torch.testing.assert_close(logits, looped, atol=1e-5, rtol=1e-5)
    for key, stacked in buffers.items():
        expected = torch.stack([member.get_buffer(key) for member in members])
        torch.testing.assert_close(stacked, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MODELS.names())
def test_vmapped_gradients_match_a_loop(name: str, small_spec: Callable[..., ModelSpec]) -> None:
    """In float64: at initialisation, BatchNorm over a small batch can amplify float32 rounding
    in deep ResNets to ~1% of the gradient in *both* paths, so only float64 tests equivalence."""
    members, _, _, params, _ = compare_with_a_loop(small_spec(name, (3, 16, 16)), torch.float64)
    for key, stacked in params.items():
        expected = torch.stack([member.get_parameter(key).grad for member in members])
        torch.testing.assert_close(stacked.grad, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", MODELS.names())
def test_running_stats_are_updated_per_member(
    name: str, small_spec: Callable[..., ModelSpec]
) -> None:
    members = make_members(small_spec(name, (3, 8, 8)), torch.float32)
    x = torch.rand(MEMBERS, 4, 3, 8, 8)
    _, _, buffers = vmapped_train_step(members, x, torch.randint(0, 10, (MEMBERS, 4)))
    for key, stacked in buffers.items():
        if key.endswith("running_mean"):
            assert not torch.equal(stacked[0], stacked[1])
            assert stacked.abs().sum() > 0
        if key.endswith("num_batches_tracked"):
            assert stacked.tolist() == [1] * MEMBERS
