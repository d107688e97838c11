"""The body/head split of any network: the layers before its final classifier, and that layer.

A network from an import path (``model=package.module:factory``) is whole: inputs to outputs.
Hydra puts M heads on a body's feature vector, so such a network is cut at its final
``nn.Linear``, named by its attribute path (config key ``student.head``: ``fc`` for torchvision
ResNets, ``classifier.1`` for a Sequential classifier, ``head`` ...) or found by timm's
``get_classifier()``. Shapes, for a network (B, *input) → (B, classes):

- body: a deep copy of the network with that layer replaced by ``nn.Identity()``,
  (B, *input) → (B, F), F the layer's ``in_features``;
- head: a copy of the layer, (B, F) → (B, classes).

BatchEnsemble needs no split: it converts the whole network
(:func:`~ensemble_distill.models.batchensemble.to_batchensemble`).
"""

from __future__ import annotations

import copy

from torch import nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.base import Classifier
from ensemble_distill.models.stacked import grouped_leaves

SHOWN = 6  # candidate Linear layers an error message lists
SETTING = "student.head"  # the command line's key; distill() names its own argument


def split_network(
    network: nn.Module, head: str | None = None, *, model: str = "", setting: str = SETTING
) -> Classifier:
    """``network`` as a :class:`Classifier`: a copy of it with the layer at ``head`` (default:
    :func:`head_path`) replaced by ``nn.Identity()`` as the body, a copy of that layer as the
    head, and its ``in_features`` as the feature size; ``network`` itself is never changed.

    Args:
        model, setting: the network's name (its import path) and the setting that names its
            head, for the error messages.

    Raises:
        ConfigError: no head is named or found, ``head`` names no layer, or a layer that is not
            an ``nn.Linear``.
    """
    path = head_path(network, head, model=model, setting=setting)
    layer = linear_head(network, path, model=model, setting=setting)
    body = copy.deepcopy(network)
    owner, _, name = path.rpartition(".")
    setattr(body.get_submodule(owner), name, nn.Identity())
    return Classifier(body, copy.deepcopy(layer), layer.in_features)


def split_chain(
    network: nn.Module, head: str | None = None, *, model: str = ""
) -> Classifier | None:
    """``network`` as a :class:`Classifier` whose body is the plain layer stack before its head
    (an ``nn.Sequential`` of copies, (B, *input) → (B, F)), if the network is a plain
    ``nn.Sequential`` chain of layers (:func:`~ensemble_distill.models.stacked.grouped_leaves`)
    ending in ``head``: only then are its last k layers a network of their own (Hydra's
    ``split``). None for any other network.

    Raises:
        ConfigError: as :func:`split_network`.
    """
    path = head_path(network, head, model=model)
    layer = linear_head(network, path, model=model)
    leaves = grouped_leaves(network)
    if not leaves or leaves[-1] is not layer:
        return None
    body = nn.Sequential(*copy.deepcopy(leaves[:-1]))
    return Classifier(body, copy.deepcopy(layer), layer.in_features)


def linear_head(
    network: nn.Module, path: str, *, model: str = "", setting: str = SETTING
) -> nn.Linear:
    """The layer at ``path``, which must be an ``nn.Linear``: its ``in_features`` are the
    body's feature size F.

    Raises:
        ConfigError: the layer is of another type.
    """
    layer = network.get_submodule(path)
    if not isinstance(layer, nn.Linear):
        raise ConfigError(
            f"{setting}={path!r} of {_named(model)} is {type(layer).__name__}, not "
            f"nn.Linear, whose in_features are the body's feature size; {_fix(setting)} "
            f"({_linear_layers(network)})"
        )
    return layer


def head_path(
    network: nn.Module, head: str | None = None, *, model: str = "", setting: str = SETTING
) -> str:
    """The attribute path of ``network``'s final classifier: ``head`` when given (checked to
    name a layer), else the layer timm's ``get_classifier()`` returns, found by identity among
    ``named_modules()``.

    Raises:
        ConfigError: ``head`` names no layer; no ``head`` and no ``get_classifier()`` (or one
            returning a layer outside the network).
    """
    if head is not None:
        layers = dict(network.named_modules())
        if not head or head not in layers:
            raise ConfigError(
                f"{setting}={head!r} names no layer of {_named(model)}; {_fix(setting)} "
                f"({_linear_layers(network)})"
            )
        return head
    get_classifier = getattr(network, "get_classifier", None)
    if callable(get_classifier):
        classifier = get_classifier()
        for path, layer in network.named_modules():
            if layer is classifier and path:
                return path
    raise ConfigError(
        f"cannot tell the classifier of {_named(model)} (it has no timm get_classifier()); "
        f"{_fix(setting)} ({_linear_layers(network)})"
    )


def _fix(setting: str) -> str:
    return f"set {setting}=NAME, the attribute path of its final Linear layer"


def _named(model: str) -> str:
    return f"model {model!r}" if model else "the network"


def _linear_layers(network: nn.Module) -> str:
    """The network's Linear layers by attribute path, the candidates for ``student.head``."""
    names = [path for path, layer in network.named_modules() if isinstance(layer, nn.Linear)]
    if not names:
        return "it has no Linear layer"
    if len(names) > SHOWN:  # a transformer has dozens; the classifier is usually the last
        return f"the last {SHOWN} of its {len(names)} Linear layers: " + ", ".join(names[-SHOWN:])
    return "its Linear layers: " + ", ".join(names)
