"""Architectures: a registry of bodies (``create_model("mlp", ...)``), heads and layers.

Registered bodies: ``mlp``; ``cnn`` (small CNN); ``resnet20`` / ``resnet32`` / ``resnet56``
(CIFAR ResNets, He et al. 2016); ``wrn28`` (Wide ResNet, Zagoruyko & Komodakis 2016; kwargs
``widen``, ``depth``, ``dropout``).

Every model is a :class:`Classifier` ``head(body(x))`` whose body starts with the dataset's
normalisation, so inputs and perturbations live in [0, 1] pixel space.
"""

from __future__ import annotations

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


def create_model(
    spec: ModelSpec,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Classifier:
    """Build ``spec`` as a :class:`Classifier` with a linear head.

    Args:
        spec: architecture name, input shape, classes and keyword arguments.
        mean, std: per-channel normalisation; defaults (0, 1) are overwritten when a
            checkpoint is loaded.
    """
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


__all__ = ["MODELS", "Classifier", "ModelSpec", "Normalize", "create_model"]
