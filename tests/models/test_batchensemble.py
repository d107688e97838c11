"""BatchEnsemble layers, conversion of every registered model, and LatentBE folding."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models import MODELS, ModelSpec, create_model
from ensemble_distill.models.base import channels_last
from ensemble_distill.models.batchensemble import (
    BatchEnsemble,
    BEConv2d,
    BELinear,
    average_factors_,
    be_layers,
    factor_parameters,
    fold_latent_be,
    init_factors_,
    shared_parameters,
    to_batchensemble,
)

MEMBERS = 3
IMAGE = (3, 8, 8)


@torch.no_grad()
def randomize_(model: nn.Module) -> nn.Module:
    """Distinct per-member biases and non-trivial BatchNorm statistics and affine parameters,
    so that member order, bias handling and BatchNorm are all visible in the outputs."""
    for layer in be_layers(model):
        if layer.bias is not None:
            layer.bias.normal_(0.0, 0.3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0.0, 0.3)
    return model


@torch.no_grad()
def as_member_(model: nn.Module, member: int) -> nn.Module:
    """Give every member the factors and bias of ``member``, in place."""
    for layer in be_layers(model):
        for param in (layer.r, layer.s, layer.bias):
            if param is not None:
                param.copy_(param[member : member + 1].expand_as(param))
    return model


def input_shape(name: str) -> tuple[int, ...]:
    return (12,) if name == "mlp" else IMAGE


def small_model(small_spec: Callable[..., ModelSpec], name: str) -> nn.Module:
    """A float64 model with 5 classes and random BatchNorm state, in eval mode."""
    spec = small_spec(name, input_shape(name), num_classes=5)
    return randomize_(create_model(spec)).double().eval()


def test_be_linear_equals_a_plain_linear_per_member():
    torch.manual_seed(0)
    plain = nn.Linear(4, 6)
    x = torch.randn(MEMBERS * 5, 4)
    unit = BELinear.from_linear(plain, MEMBERS, init="ones")
    for j, out in enumerate(unit(x).view(MEMBERS, 5, 6)):
        torch.testing.assert_close(out, plain(x[j * 5 : (j + 1) * 5]))

    layer = randomize_(BELinear(4, 6, MEMBERS))
    for j, out in enumerate(layer(x).view(MEMBERS, 5, 6)):
        weight = layer.weight * layer.s[j][:, None] * layer.r[j][None, :]
        expected = F.linear(x[j * 5 : (j + 1) * 5], weight, layer.s[j] * layer.bias[j])
        torch.testing.assert_close(out, expected)


def test_be_conv_equals_a_plain_conv_per_member():
    torch.manual_seed(0)
    plain = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = torch.randn(MEMBERS * 2, 3, 7, 7)
    unit = BEConv2d.from_conv(plain, MEMBERS, init="ones")
    assert unit(x).shape == (MEMBERS * 2, 4, 4, 4)
    for j, out in enumerate(unit(x).view(MEMBERS, 2, 4, 4, 4)):
        torch.testing.assert_close(out, plain(x[j * 2 : (j + 1) * 2]))

    layer = randomize_(BEConv2d(3, 4, 3, stride=2, padding=1, members=MEMBERS))
    for j, out in enumerate(layer(x).view(MEMBERS, 2, 4, 4, 4)):
        weight = layer.weight * layer.s[j].view(-1, 1, 1, 1) * layer.r[j].view(1, -1, 1, 1)
        bias = layer.s[j] * layer.bias[j]
        expected = F.conv2d(x[j * 2 : (j + 1) * 2], weight, bias, stride=2, padding=1)
        torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("bias", [True, False])
def test_be_conv_values_and_gradients_match_scaling_the_activations(bias):
    """Reference: BatchEnsemble's own form, s_j ∘ (conv(r_j ∘ x, W) + b_j), one conv on all
    members' rows; the layer folds r and s into member weights instead (same function, same
    gradients for W, r, s, b and the input, float64)."""
    torch.manual_seed(0)
    layer = randomize_(BEConv2d(3, 4, 3, padding=1, bias=bias, members=MEMBERS)).double()
    x = torch.randn(MEMBERS * 2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    weight_of_out = torch.randn(MEMBERS * 2, 4, 6, 6, dtype=torch.float64)

    def reference() -> torch.Tensor:
        rows = x.view(MEMBERS, 2, 3, 6, 6) * layer.r.view(MEMBERS, 1, 3, 1, 1)
        out = F.conv2d(rows.flatten(0, 1), layer.weight, padding=1).view(MEMBERS, 2, 4, 6, 6)
        if layer.bias is not None:
            out = out + layer.bias.view(MEMBERS, 1, 4, 1, 1)
        return (out * layer.s.view(MEMBERS, 1, 4, 1, 1)).flatten(0, 1)

    tensors = [x, *layer.parameters()]
    got = torch.autograd.grad((layer(x) * weight_of_out).sum(), tensors)
    expected = torch.autograd.grad((reference() * weight_of_out).sum(), tensors)
    torch.testing.assert_close(layer(x), reference())
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("name", MODELS.names())
def test_unit_factors_reproduce_the_original_model(
    name: str, small_spec: Callable[..., ModelSpec]
) -> None:
    torch.manual_seed(0)
    model = small_model(small_spec, name)
    ensemble = BatchEnsemble(to_batchensemble(model, MEMBERS, init="ones"), MEMBERS).eval()
    assert not be_layers(model)  # the original is untouched
    x = torch.rand(4, *input_shape(name), dtype=torch.float64)
    logits = ensemble(x)
    assert logits.shape == (4, MEMBERS, 5)
    for j in range(MEMBERS):
        torch.testing.assert_close(logits[:, j], model(x))


def test_forward_is_member_major(small_spec: Callable[..., ModelSpec]) -> None:
    torch.manual_seed(0)
    ensemble = randomize_(BatchEnsemble.from_model(small_model(small_spec, "cnn"), MEMBERS))
    ensemble.eval()
    x = torch.rand(MEMBERS, 2, *IMAGE, dtype=torch.float64)  # each member its own inputs
    shared, tiled = ensemble(x[0]), ensemble.forward_tiled(x)
    assert shared.shape == tiled.shape == (2, MEMBERS, 5)
    for j in range(MEMBERS):
        only_j = as_member_(copy.deepcopy(ensemble), j)
        torch.testing.assert_close(shared[:, j], only_j(x[0])[:, 0])
        torch.testing.assert_close(tiled[:, j], only_j(x[j])[:, 0])
    assert not torch.allclose(shared[:, 0], shared[:, 1])
    with pytest.raises(ValueError, match="members"):
        ensemble.forward_tiled(x.flatten(0, 1))


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20", "wrn28"])
def test_latent_be_folds_the_member_means(name: str, small_spec: Callable[..., ModelSpec]):
    torch.manual_seed(0)
    model = small_model(small_spec, name)
    ensemble = randomize_(BatchEnsemble.from_model(model, MEMBERS, init="normal")).eval()
    folded = fold_latent_be(ensemble)  # random, non-averaged factors
    assert [type(m) for m in folded.modules()] == [type(m) for m in model.modules()]
    x = torch.rand(4, *input_shape(name), dtype=torch.float64)
    assert not torch.allclose(ensemble(x)[:, 0], ensemble(x)[:, 1])
    logits = average_factors_(ensemble)(x)
    for j in range(MEMBERS):
        torch.testing.assert_close(logits[:, j], folded(x), rtol=1e-5, atol=1e-5)


def test_factor_init_modes():
    torch.manual_seed(0)
    layer = BELinear(300, 200, members=4, init="normal", std=0.5)
    factors = torch.cat([layer.r.flatten(), layer.s.flatten()])
    assert abs(factors.mean().item() - 1.0) < 0.03
    assert abs(factors.std().item() - 0.5) < 0.03
    init_factors_(layer, "ones")
    assert torch.equal(layer.r, torch.ones_like(layer.r))
    assert torch.equal(layer.s, torch.ones_like(layer.s))
    with pytest.raises(ConfigError, match="use one of normal, ones") as error:
        init_factors_(layer, "uniform")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="uniform"):
        to_batchensemble(nn.Linear(2, 2), MEMBERS, init="uniform")


def test_factor_and_shared_parameters_partition_the_model(
    small_spec: Callable[..., ModelSpec],
) -> None:
    ensemble = BatchEnsemble.from_model(small_model(small_spec, "resnet20"), MEMBERS)
    factors, shared = factor_parameters(ensemble), shared_parameters(ensemble)
    ids = [id(p) for p in factors + shared]
    assert len(ids) == len(set(ids)) == len(list(ensemble.parameters()))
    assert len(factors) == 2 * len(be_layers(ensemble))
    assert all(p.shape[0] == MEMBERS and p.dim() == 2 for p in factors)


def test_wrong_member_count_or_batch_is_rejected(small_spec: Callable[..., ModelSpec]) -> None:
    network = to_batchensemble(small_model(small_spec, "mlp"), MEMBERS)
    with pytest.raises(ValueError, match="to_batchensemble"):
        BatchEnsemble(network, MEMBERS + 1)
    with pytest.raises(ValueError, match="multiple of 3"):
        network(torch.rand(4, 12, dtype=torch.float64))


def test_one_channel_images_stay_channels_last_through_every_layer():
    """A channels-last batch of one-channel images (models.base.channels_last) reaches every
    convolution, BatchNorm and pooling channels-last, as in the plain network: tiling the
    members' copies and slicing them per member keep its strides (NCHW there made a training
    step of the Fashion-MNIST CNN 1.3x slower). The outputs are the NCHW batch's."""
    spec = ModelSpec("cnn", (1, 12, 12), 5, {"channels": [4, 8], "hidden": 16, "pool_size": 3})
    model = BatchEnsemble(randomize_(to_batchensemble(create_model(spec), MEMBERS)), MEMBERS)
    model.eval()
    layouts = []

    def record(module, inputs, output):
        layouts.append((type(module).__name__, output.stride(1) == 1))

    for module in model.modules():
        if isinstance(module, (BEConv2d, nn.BatchNorm2d, nn.MaxPool2d)):
            module.register_forward_hook(record)
    x = torch.rand(4, 1, 12, 12)
    with torch.no_grad():
        out = model(channels_last(x))
        assert layouts and all(last for _, last in layouts), layouts
        torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-6)
    assert not any(last for _, last in layouts[len(layouts) // 2 :])  # NCHW stays NCHW
