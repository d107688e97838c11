"""Distillation methods: students, their losses and options, and the registry of methods
(``METHODS.get("kd")``). Each method lives in one file, found by its paper's name:

- ``kd``: Hinton et al. 2015, one network on the ensemble mean (:mod:`.kd`).
- ``hydra``: Tran et al. 2020, shared body + M heads, head m imitates member m (:mod:`.hydra`).
- ``endd``: EnD², Malinin et al. 2019, a Prior Network on the members' spread (:mod:`.endd`).

- ``be``: Nam et al. 2021, BatchEnsemble one-to-one student (:mod:`.batchensemble`).
- ``latentbe``: Nam et al. 2022, BE folded into one network with mean factors.

Any method can be trained on perturbed inputs (:mod:`.perturbations`): ``hydra+confods``.
Adding a method: one file with its options section, student and training (a
:class:`DistillMethod`), and one ``METHODS.register`` line here (see docs/architecture.md).
"""

from ensemble_distill.methods.base import DistillContext, DistillMethod, distillation_loss
from ensemble_distill.methods.batchensemble import BatchEnsembleDistillation, LatentBE
from ensemble_distill.methods.endd import EnsembleDistributionDistillation, PriorNetwork
from ensemble_distill.methods.hydra import Hydra, HydraStudent
from ensemble_distill.methods.kd import KnowledgeDistillation
from ensemble_distill.methods.losses import dirichlet_nll, ensemble_log_probs, hydra_loss, kd_loss
from ensemble_distill.methods.perturbations import PERTURBATIONS, Perturbation, chain
from ensemble_distill.registry import Registry

METHODS: Registry[DistillMethod] = Registry("method")
METHODS.register("kd")(KnowledgeDistillation())
METHODS.register("hydra")(Hydra())
METHODS.register("endd")(EnsembleDistributionDistillation())
METHODS.register("be")(BatchEnsembleDistillation())
METHODS.register("latentbe")(LatentBE())


def resolve_method(name: str) -> tuple[DistillMethod, Perturbation | None]:
    """``"hydra"`` → (Hydra, None); ``"be+confods"`` → (BatchEnsemble, ConfODS);
    ``"be+mixup+confods"`` → (BatchEnsemble, mixup then ConfODS); ``"latentbe"`` →
    (LatentBE, its default input ``diverse``).

    Raises:
        ConfigError: an unknown method or input name (listing the known ones).
    """
    method = METHODS.get(name.split("+")[0])
    inputs = input_names(name)
    return method, chain([PERTURBATIONS.get(i) for i in inputs]) if inputs else None


def input_names(name: str) -> list[str]:
    """The distillation inputs of a method name, left to right: ``"be+mixup+confods"`` →
    [mixup, confods]; without any, the method's own default (LatentBE: [diverse])."""
    base, *inputs = name.split("+")
    return inputs or list(METHODS.get(base).default_inputs)


__all__ = [
    "METHODS",
    "PERTURBATIONS",
    "DistillContext",
    "DistillMethod",
    "HydraStudent",
    "PriorNetwork",
    "dirichlet_nll",
    "distillation_loss",
    "ensemble_log_probs",
    "hydra_loss",
    "input_names",
    "kd_loss",
    "resolve_method",
]
