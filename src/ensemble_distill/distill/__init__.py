"""Distillation: students, their losses and the registry of methods (``METHODS.get("kd")``).

Methods: ``kd`` (Hinton et al. 2015).
"""

from ensemble_distill.distill.base import DistillContext, DistillMethod
from ensemble_distill.distill.kd import KnowledgeDistillation
from ensemble_distill.distill.losses import ensemble_log_probs, kd_loss
from ensemble_distill.registry import Registry

METHODS: Registry[DistillMethod] = Registry("method")
METHODS.register("kd")(KnowledgeDistillation())

__all__ = ["METHODS", "DistillContext", "DistillMethod", "ensemble_log_probs", "kd_loss"]
