"""Architectures: a registry of bodies (``create_model("mlp", ...)``), heads and layers.

Registered bodies: ``mlp``; ``cnn`` (small CNN); ``resnet20`` / ``resnet32`` / ``resnet56``
(CIFAR ResNets, He et al. 2016); ``wrn28`` (Wide ResNet, Zagoruyko & Komodakis 2016; kwargs
``widen``, ``depth``, ``dropout``).

Every registered model is a :class:`Classifier` ``head(body(x))`` whose body starts with the
dataset's normalisation, so inputs and perturbations live in [0, 1] pixel space.

A name with a colon, ``package.module:factory``, is a model from another library or the user's
own code: ``factory(**model_args)`` must return the whole network (inputs as the dataset gives
them, [0, 1] pixels, to outputs), e.g. ``timm:create_model`` with ``model_args`` ``{model_name:
resnet18, num_classes: 10, in_chans: 1}``. It has no body/head split, so only the methods whose
student is the whole network take it as the student.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

from torch import nn

from ensemble_distill.errors import ConfigError
from ensemble_distill.models.base import Classifier, ModelSpec, Normalize
from ensemble_distill.models.cnn import cnn_body
from ensemble_distill.models.mlp import mlp_body
from ensemble_distill.models.resnet import resnet20_body, resnet32_body, resnet56_body
from ensemble_distill.models.wrn import wrn_body
from ensemble_distill.registry import Registry

# A body factory takes (input_shape, **kwargs) and returns (body, feature_dim).
BodyFactory = Callable[..., tuple[nn.Module, int]]
MODELS: Registry[BodyFactory] = Registry("model")
MODELS.register("mlp")(mlp_body)
MODELS.register("cnn")(cnn_body)
MODELS.register("resnet20")(resnet20_body)
MODELS.register("resnet32")(resnet32_body)
MODELS.register("resnet56")(resnet56_body)
MODELS.register("wrn28")(wrn_body)


# ``package.module:factory`` (the factory may be an attribute path, ``module:Class.build``).
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH = re.compile(f"{_DOTTED}:{_DOTTED}", re.ASCII)


def is_factory(name: str) -> bool:
    """Whether model ``name`` is an import path (``module:factory``) rather than registered."""
    return ":" in name


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model (None when it can): not registered, or an import path
    that is not ``package.module:factory``. Nothing is imported here (see :func:`create_model`)."""
    if is_factory(name):
        if _IMPORT_PATH.fullmatch(name):
            return None
        return "must be an import path package.module:factory (e.g. timm:create_model)"
    if name in MODELS:
        return None
    return f"must be one of {', '.join(MODELS.names())}, or an import path package.module:factory"


def create_model(
    spec: ModelSpec,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build ``spec``: a registered architecture as a :class:`Classifier` with a linear head, an
    import path ``module:factory`` as whatever network ``factory(**spec.kwargs)`` returns.

    Args:
        spec: architecture name, input shape, classes and keyword arguments.
        mean, std: per-channel normalisation of a registered architecture; defaults (0, 1) are
            overwritten when a checkpoint is loaded. A factory's network gets the inputs as
            they are.
    """
    if is_factory(spec.name):
        return _from_factory(spec)
    factory = MODELS.get(spec.name)
    channels = spec.input_shape[0] if len(spec.input_shape) > 1 else 1
    mean = mean if mean is not None else (0.0,) * channels
    std = std if std is not None else (1.0,) * channels
    try:
        body, feature_dim = factory(spec.input_shape, **spec.kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"bad arguments {spec.kwargs} for model {spec.name!r} ({exc}); "
            "fix model_args (or student.model_args) in the config"
        ) from None
    normalize = Normalize(mean, std, input_dims=len(spec.input_shape))
    return Classifier(
        nn.Sequential(normalize, body), nn.Linear(feature_dim, spec.num_classes), feature_dim
    )


def _from_factory(spec: ModelSpec) -> nn.Module:
    """``factory(**spec.kwargs)`` of the import path ``spec.name``, checked to be a module."""
    model = import_factory(spec.name)
    try:
        network = model(**spec.kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"bad arguments {spec.kwargs} for model {spec.name!r} ({exc}); set model_args (or "
            "student.model_args) to the factory's keyword arguments (model_args={} for none)"
        ) from None
    if not isinstance(network, nn.Module):
        raise ConfigError(
            f"model {spec.name!r} returned a {type(network).__name__}, not a torch.nn.Module; "
            "name a factory that builds the network"
        )
    return network


def import_factory(name: str) -> Callable[..., object]:
    """The callable that the import path ``name`` (``package.module:attribute``) names.

    Raises:
        ConfigError: the module cannot be imported, lacks the attribute, or it is not callable;
            the message names the registered models as the alternative.
    """
    module_name, _, attribute = name.partition(":")
    instead = f"or use a registered model: {', '.join(MODELS.names())}"
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model {name!r}: cannot import module {module_name} ({exc}); install it (or put "
            f"its folder on PYTHONPATH) {instead}"
        ) from None
    except Exception as exc:  # the module's own code failed while importing
        raise ConfigError(
            f"model {name!r}: importing module {module_name} failed ({type(exc).__name__}: "
            f"{exc}); fix that module {instead}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"model {name!r}: {module_name} has no attribute {attribute!r}; check the "
                f"name after the colon {instead}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"model {name!r}: {attribute} is a {type(target).__name__}, not a function or "
            "class that builds a network"
        )
    return target


__all__ = [
    "MODELS",
    "Classifier",
    "ModelSpec",
    "Normalize",
    "create_model",
    "import_factory",
    "is_factory",
    "model_name_problem",
]
