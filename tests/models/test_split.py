"""The body/head split of any network (models/split.py): where Hydra puts its heads on a network
from an import path. The networks are tests/any_network_models.py's (a torchvision-style
ResNet with an ``fc``, the same with timm's ``get_classifier()``, a plain Sequential MLP)."""

from __future__ import annotations

import pytest
import torch
from any_network_models import TimmStyleResNet, TinyResNet, mlp
from torch import nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models import ModelSpec, create_classifier
from ensemble_distill.models.split import head_path, split_chain, split_network


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_a_resnet_splits_at_fc_into_a_body_of_features_and_its_linear_head(x):
    network = TinyResNet(width=4, classes=10).eval()
    base = split_network(network, "fc").eval()
    assert isinstance(base.body.fc, nn.Identity) and isinstance(network.fc, nn.Linear)
    assert base.feature_dim == 4 and (base.head.in_features, base.head.out_features) == (4, 10)
    with torch.no_grad():
        features = base.body(x)
        assert features.shape == (5, 4)
        assert torch.equal(base.head(features), network(x))  # the same network, cut in two
    assert base.head.weight is not network.fc.weight  # copies: the user's network is untouched


def test_a_sequential_mlp_splits_at_its_last_layer_and_is_a_chain(x):
    network = mlp(hidden=16, classes=10)
    base = split_network(network, "3")
    chain = split_chain(network, "3")
    assert [type(layer) for layer in chain.body] == [nn.Flatten, nn.Linear, nn.ReLU]
    with torch.no_grad():
        assert base.body(x).shape == chain.body(x).shape == (5, 16)
        assert torch.equal(base(x), network(x)) and torch.equal(chain(x), network(x))
    assert split_chain(TinyResNet(), "fc") is None  # a residual block is no chain
    assert split_chain(nn.Sequential(*network, nn.ReLU()), "3") is None  # not ending in it


def test_a_nested_head_is_named_by_its_dotted_path(x):
    network = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Dropout(0.5), nn.Linear(64, 3)))
    base = split_network(network.eval(), "1.1")
    assert base.feature_dim == 64 and isinstance(base.body[1][1], nn.Identity)
    with torch.no_grad():
        assert torch.equal(base(x), network(x))


def test_timms_get_classifier_finds_the_head_without_a_name(x):
    network = TimmStyleResNet().eval()
    assert head_path(network) == "fc"
    base = split_network(network)
    with torch.no_grad():
        assert torch.equal(base.eval()(x), network(x))


def test_create_classifier_cuts_a_factorys_network_at_spec_head():
    spec = ModelSpec("any_network_models:tiny_resnet", (1, 8, 8), 10, {"width": 6}, "fc")
    base = create_classifier(spec)
    assert base.feature_dim == 6 and isinstance(base.body.fc, nn.Identity)
    registered = create_classifier(ModelSpec("mlp", (1, 8, 8), 10, {"widths": [8]}))
    assert registered.feature_dim == 8  # a registered model keeps its own split


@pytest.mark.parametrize(
    ("network", "head", "message"),
    [
        (
            TinyResNet(),
            "fcc",
            "student.head='fcc' names no layer of model 'pkg:net'; set student.head=NAME, the "
            "attribute path of its final Linear layer (its Linear layers: fc)",
        ),
        (
            TinyResNet(),
            "avgpool",
            "student.head='avgpool' of model 'pkg:net' is AdaptiveAvgPool2d, not nn.Linear, "
            "whose in_features are the body's feature size; set student.head=NAME",
        ),
        (
            TinyResNet(),
            None,
            "cannot tell the classifier of model 'pkg:net' (it has no timm get_classifier()); "
            "set student.head=NAME, the attribute path of its final Linear layer (its Linear "
            "layers: fc)",
        ),
        (nn.Sequential(nn.Flatten()), None, "(it has no Linear layer)"),
        (
            nn.Sequential(*(nn.Linear(4, 4) for _ in range(8))),
            None,
            "(the last 6 of its 8 Linear layers: 2, 3, 4, 5, 6, 7)",
        ),
    ],
)
def test_refusals_name_the_problem_and_the_fix_in_one_line(network, head, message):
    with pytest.raises(ConfigError) as caught:
        split_network(network, head, model="pkg:net")
    assert message in str(caught.value) and "\n" not in str(caught.value)
