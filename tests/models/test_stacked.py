"""Grouped layers against two oracles: each member run alone, and the vmap path."""

import pytest
import torch
from torch import nn

from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.models.base import channels_last
from ensemble_distill.models.stacked import StackedLinear, grouped_leaves
from ensemble_distill.teachers import DeepEnsemble

MLP = ModelSpec("mlp", (1, 6, 6), 4, {"widths": [16, 8]})
CNN = ModelSpec("cnn", (2, 8, 8), 3, {"channels": [4, 6], "hidden": 5, "pool_size": 2})


def members(spec, count, distinct_normalisation=False):
    torch.manual_seed(0)
    channels = spec.input_shape[0]
    modules = []
    for m in range(count):
        shift = 0.1 * m if distinct_normalisation else 0.0
        modules.append(create_model(spec, [0.3 + shift] * channels, [0.5 + shift] * channels))
    return modules


def vmapped(ensemble: DeepEnsemble) -> DeepEnsemble:
    """The same ensemble forced onto the vmap path: the reference implementation."""
    ensemble._leaves = None
    return ensemble


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
@pytest.mark.parametrize("distinct", [False, True], ids=["same-stats", "own-stats"])
def test_eval_outputs_match_each_member_alone(spec, distinct):
    modules = [m.eval() for m in members(spec, 3, distinct)]
    ensemble = DeepEnsemble(modules).eval()
    assert ensemble._leaves is not None
    x = torch.rand(5, *spec.input_shape)
    out = ensemble(x)  # (batch, members, classes)
    for m, module in enumerate(modules):
        torch.testing.assert_close(out[:, m], module(x))
        torch.testing.assert_close(ensemble.forward_member(x, m), module(x))
    xs = torch.rand(3, 5, *spec.input_shape)
    per_member = ensemble.forward_members(xs)
    for m, module in enumerate(modules):
        torch.testing.assert_close(per_member[m], module(xs[m]))


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_training_step_matches_vmap_gradients_and_batch_norm_statistics(spec):
    grouped = DeepEnsemble(members(spec, 3)).train()
    reference = vmapped(DeepEnsemble(members(spec, 3))).train()
    assert grouped._leaves is not None
    xs = torch.rand(3, 7, *spec.input_shape)
    for ensemble in (grouped, reference):
        ensemble.forward_members(xs).square().sum().backward()
    for (name, a), (_, b) in zip(
        grouped.named_parameters(), reference.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, a), (_, b) in zip(grouped.named_buffers(), reference.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, msg=name)  # running mean/var, batches tracked


def test_forward_member_gradient_wrt_input_matches_the_member():
    modules = members(MLP, 4)
    ensemble = DeepEnsemble(modules).eval()
    x = torch.rand(5, *MLP.input_shape, requires_grad=True)
    (grad,) = torch.autograd.grad(ensemble.forward_member(x, 2).sum(), x)
    (expected,) = torch.autograd.grad(modules[2].eval()(x).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_dropout_on_the_shared_input_draws_one_mask_per_member():
    member = nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 3))
    ensemble = DeepEnsemble([member, member]).train()
    assert ensemble._leaves is not None
    out = ensemble(torch.ones(4, 64))  # identical members: only their masks differ
    assert not torch.equal(out[:, 0], out[:, 1])


def test_architectures_beyond_plain_stacks_use_vmap():
    resnet = create_model(ModelSpec("resnet20", (3, 8, 8), 10))
    assert grouped_leaves(resnet) is None
    custom = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    assert grouped_leaves(custom) is None
    ensemble = DeepEnsemble([custom, custom])
    torch.testing.assert_close(ensemble(torch.ones(2, 4))[:, 1], custom(torch.ones(2, 4)))


def test_stacked_linear_gradients_pass_gradcheck():
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(StackedLinear.apply, (x, weight, bias))
    assert torch.autograd.gradcheck(StackedLinear.apply, (x, weight, None))


def test_stacked_linear_under_bf16_autocast_returns_fp32_gradients_close_to_fp32():
    x, weight, bias = torch.randn(3, 8, 16), torch.randn(3, 4, 16), torch.randn(3, 4)
    grads = {}
    for enabled in (False, True):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = StackedLinear.apply(*leaves)
        assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
        out.float().square().sum().backward()
        grads[enabled] = [t.grad for t in leaves]
    for fp32, bf16 in zip(grads[False], grads[True], strict=True):
        assert bf16.dtype == torch.float32
        torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.5)


def test_channels_last_keeps_the_values_and_sets_nhwc_strides_even_for_one_channel():
    for channels in (1, 3):
        x = torch.rand(4, channels, 5, 6)
        y = channels_last(x)
        assert torch.equal(y, x)
        assert y.stride() == (5 * 6 * channels, 1, 6 * channels, channels)
        assert y[torch.tensor([2, 0])].stride() == y.stride()  # batches indexed from it


@pytest.mark.parametrize("input_channels", [1, 2])
def test_grouped_training_step_on_channels_last_data_matches_nchw(input_channels):
    """The channels-last layout is a storage choice: outputs, gradients and batch-norm
    statistics agree with the NCHW run (up to the kernels' summation order)."""
    spec = ModelSpec("cnn", (input_channels, 8, 8), 3, {"channels": [4, 6], "hidden": 5})
    nchw, nhwc = DeepEnsemble(members(spec, 3)).train(), DeepEnsemble(members(spec, 3)).train()
    xs = torch.rand(3, 7, *spec.input_shape)
    out = nchw.forward_members(xs)
    # Per-member batches indexed from channels-last data, as the teacher's training draws them.
    out_last = nhwc.forward_members(channels_last(xs.flatten(0, 1))[torch.arange(21).view(3, 7)])
    torch.testing.assert_close(out_last, out, atol=1e-5, rtol=1e-4)
    out.square().sum().backward()
    out_last.square().sum().backward()
    for (name, a), (_, b) in zip(nchw.named_parameters(), nhwc.named_parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    for (name, a), (_, b) in zip(nchw.named_buffers(), nhwc.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_convolutions_on_channels_last_data_stay_channels_last():
    spec = ModelSpec("cnn", (1, 8, 8), 3, {"channels": [4, 6], "hidden": 5})
    ensemble = DeepEnsemble(members(spec, 3)).train()
    conv_outputs = []
    original = torch.nn.functional.conv2d

    def recording(*args, **kwargs):
        conv_outputs.append(original(*args, **kwargs))
        return conv_outputs[-1]

    xs = channels_last(torch.rand(21, 1, 8, 8))[torch.arange(21).view(3, 7)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.functional, "conv2d", recording)
        ensemble.forward_members(xs)
    assert len(conv_outputs) == 2
    assert all(out.is_contiguous(memory_format=torch.channels_last) for out in conv_outputs)
