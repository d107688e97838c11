"""Architectures: a registry of bodies (``create_model("mlp", ...)``), heads and layers.

Registered bodies: ``mlp``; ``cnn`` (small CNN); ``resnet20`` / ``resnet32`` / ``resnet56``
(CIFAR ResNets, He et al. 2016); ``wrn28`` (Wide ResNet, Zagoruyko & Komodakis 2016; kwargs
``widen``, ``depth``, ``dropout``).

Every registered model is a :class:`Classifier` ``head(body(x))`` whose body starts with the
dataset's normalisation, so inputs and perturbations live in [0, 1] pixel space.

A name with a colon, ``package.module:factory``, is a model from another library or the user's
own code: ``factory(**model_args)`` must return the whole network (inputs as the dataset gives
them, [0, 1] pixels, to outputs), e.g. ``timm:create_model`` with ``model_args`` ``{model_name:
resnet18, num_classes: 10, in_chans: 1}``. Students that put their own heads on a body (Hydra)
cut it at its final classifier (:func:`create_classifier`, :mod:`.split`); the others take the
whole network (KD, EnD²), or convert it (BatchEnsemble, LatentBE).

An import path is code: naming one runs it. A config the user wrote is trusted to do so (the
standard library and builtins are refused outright: they build no network, and ``os:system``
would run a shell command); a manifest in a folder someone else wrote is not, so loading one
that names an import path needs an explicit opt-in (:func:`require_trusted`,
docs/reliability.md "Trust boundary").
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Sequence

from torch import nn

from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.models.base import Classifier, ModelSpec, Normalize
from ensemble_distill.models.cnn import cnn_body
from ensemble_distill.models.mlp import mlp_body
from ensemble_distill.models.resnet import resnet20_body, resnet32_body, resnet56_body
from ensemble_distill.models.split import split_network
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
    """Why ``name`` cannot name a model (None when it can): not registered, an import path
    that is not ``package.module:factory``, or one into the standard library or builtins.
    Nothing is imported here (see :func:`create_model`)."""
    if is_factory(name):
        if not _IMPORT_PATH.fullmatch(name):
            return "must be an import path package.module:factory (e.g. timm:create_model)"
        return _standard_library_problem(name)
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


def create_classifier(
    spec: ModelSpec,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """``spec`` as a body and a linear head: a registered architecture as :func:`create_model`
    builds it, a network from an import path cut at its final classifier ``spec.head``
    (:func:`~ensemble_distill.models.split.split_network`: body (B, *input) → (B, F), head
    (B, F) → (B, classes))."""
    return as_classifier(create_model(spec, mean, std), spec)


def as_classifier(network: nn.Module, spec: ModelSpec) -> Classifier:
    """A network built from ``spec`` (:func:`create_model`) as a body and a linear head: a
    registered architecture's is one already; one from an import path is cut at ``spec.head``
    (a copy: ``network`` itself is never changed)."""
    if not is_factory(spec.name):
        return network
    return split_network(network, spec.head, model=spec.name)


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


def _standard_library_problem(name: str) -> str | None:
    """Why the import path ``name`` is refused before anything is imported: its top-level
    module is part of Python itself (``os:system``, ``builtins:exec``, ``subprocess:run``),
    which builds no network and can run any command. None for other modules."""
    top = name.partition(":")[0].split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (
            f"names {top!r}, part of Python's standard library, which builds no network (and "
            "could run commands); name a factory in your own package or a library such as timm"
        )
    return None


def require_trusted(name: str, source: str, trust_code: bool) -> None:
    """Refuse to build the model ``name`` that a file (``source``) names when it is an import
    path and ``trust_code`` is not set: a manifest someone else wrote must not run code.
    Registered names are always safe: they only choose among this package's architectures.

    Raises:
        CheckpointError: ``name`` is an import path and ``trust_code`` is False.
    """
    if trust_code or not is_factory(name):
        return
    raise CheckpointError(
        f"{source} names the import path {name!r} as its model: building it would import and "
        "run that code; if you trust whoever wrote this folder, pass trust_code=True (command "
        "line: --trust-code)"
    )


def import_factory(name: str) -> Callable[..., object]:
    """The callable that the import path ``name`` (``package.module:attribute``) names.

    Raises:
        ConfigError: the module is part of the standard library (refused before importing),
            cannot be imported, lacks the attribute, or it is not callable; the message names
            the registered models as the alternative.
    """
    module_name, _, attribute = name.partition(":")
    instead = f"or use a registered model: {', '.join(MODELS.names())}"
    refused = _standard_library_problem(name)
    if refused:
        raise ConfigError(f"model {name!r} {refused}")
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
    builds_no_module = isinstance(target, type) and not issubclass(target, nn.Module)
    if not callable(target) or builds_no_module:
        what = f"the class {target.__name__}" if builds_no_module else f"a {type(target).__name__}"
        raise ConfigError(
            f"model {name!r}: {attribute} is {what}, not a function or torch.nn.Module class "
            "that builds a network"
        )
    return target


__all__ = [
    "MODELS",
    "Classifier",
    "ModelSpec",
    "Normalize",
    "create_classifier",
    "create_model",
    "import_factory",
    "is_factory",
    "model_name_problem",
    "require_trusted",
]
