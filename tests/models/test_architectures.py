"""Shapes, published parameter counts, cost and configuration errors of the registered models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ensemble_distill.errors import ConfigError
from ensemble_distill.models import MODELS, ModelSpec, create_model
from ensemble_distill.models.cnn import AveragePool
from ensemble_distill.models.resnet import cifar_resnet_body
from ensemble_distill.models.stacked import grouped_leaves

CONV_MODELS = ["cnn", "resnet20", "resnet32", "resnet56", "wrn28"]


def count_parameters(spec: ModelSpec) -> int:
    """Parameters of ``spec`` built on the meta device: no memory, no forward pass."""
    with torch.device("meta"):
        model = create_model(spec)
    return sum(p.numel() for p in model.parameters())


def test_all_architectures_are_registered() -> None:
    assert set(CONV_MODELS) | {"mlp"} <= set(MODELS.names())


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("name", MODELS.names())
def test_output_shape(
    name: str, input_shape: tuple[int, ...], small_spec: Callable[..., ModelSpec]
) -> None:
    model = create_model(small_spec(name, input_shape, num_classes=7))
    x = torch.rand(2, *input_shape)
    assert model.body(x).shape == (2, model.feature_dim)
    assert model(x).shape == (2, 7)
    assert model.eval()(x).shape == (2, 7)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected", "published_millions"),
    [
        ("resnet20", {}, 269_722, 0.27),
        ("resnet32", {}, 464_154, 0.46),
        ("resnet56", {}, 853_018, 0.85),
        ("wrn28", {"widen": 10}, 36_479_194, 36.5),
    ],
)
def test_parameter_counts_match_the_papers(
    name: str, kwargs: dict[str, int], expected: int, published_millions: float
) -> None:
    count = count_parameters(ModelSpec(name, (3, 32, 32), 10, kwargs))
    assert count == expected
    assert round(count / 1e6, 2 if count < 1e6 else 1) == published_millions


def test_wrn28_defaults_to_widen_10() -> None:
    assert count_parameters(ModelSpec("wrn28", (3, 32, 32), 10)) == 36_479_194


def test_cnn_is_cheap_on_28x28() -> None:
    model = create_model(ModelSpec("cnn", (1, 28, 28), 10))
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, 28, 28)).sum().backward()
    assert counter.get_total_flops() < 30e6


@pytest.mark.parametrize(
    ("kwargs", "feature_dim", "has_batch_norm"),
    [
        ({"hidden": None}, 64, True),
        ({"hidden": 32, "batch_norm": False}, 32, False),
        ({"hidden": None, "pool_size": 2}, 64 * 4, True),
    ],
)
def test_cnn_options(kwargs: dict[str, object], feature_dim: int, has_batch_norm: bool) -> None:
    model = create_model(ModelSpec("cnn", (1, 8, 8), 10, kwargs))
    assert model.feature_dim == feature_dim
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == has_batch_norm


def test_wrn_dropout_is_active_in_train_mode_only() -> None:
    model = create_model(
        ModelSpec("wrn28", (3, 8, 8), 10, {"widen": 1, "depth": 10, "dropout": 0.5})
    )
    x = torch.rand(4, 3, 8, 8)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", MODELS.names())
def test_unknown_kwarg_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="model_args"):
        create_model(ModelSpec(name, (3, 32, 32), 10, {"no_such_option": 1}))


@pytest.mark.parametrize("depth", [27, 4])
def test_wrn_bad_depth_names_the_fix(depth: int) -> None:
    with pytest.raises(ConfigError, match=r"6n \+ 4") as error:
        create_model(ModelSpec("wrn28", (3, 32, 32), 10, {"depth": depth}))
    assert "\n" not in str(error.value)


def test_resnet_bad_depth_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"6n \+ 2"):
        cifar_resnet_body((3, 32, 32), depth=21)


@pytest.mark.parametrize("name", CONV_MODELS)
def test_conv_models_reject_flat_inputs(name: str) -> None:
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        create_model(ModelSpec(name, (784,), 10))


@pytest.mark.parametrize("size", [7, (7, 7), (None, 7), 3, (5, None)])
def test_average_pool_is_adaptive_average_pooling(size) -> None:
    """AveragePool against nn.AdaptiveAvgPool2d, values and gradients; a map already of the
    output size is passed through as it is (no pass over it)."""
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    ours, theirs = AveragePool(size)(x), nn.AdaptiveAvgPool2d(size)(x)
    assert torch.equal(ours, theirs)
    weights = torch.randn_like(theirs)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    (expected,) = torch.autograd.grad((theirs * weights).sum(), x)
    assert torch.equal(grad, expected)
    assert (ours is x) == (theirs.shape == x.shape)


def test_the_cnn_pools_with_average_pool_and_still_stacks() -> None:
    model = create_model(ModelSpec("cnn", (1, 28, 28), 10, {"pool_size": 7}))
    assert any(type(m) is AveragePool for m in model.modules())
    assert grouped_leaves(model) is not None  # teachers of it keep the grouped computation
