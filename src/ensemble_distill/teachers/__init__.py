"""Teachers: deep ensembles of M members, trained vectorised and saved as safetensors + JSON."""

from ensemble_distill.teachers.ensemble import DeepEnsemble
from ensemble_distill.teachers.train import load_teacher, save_teacher, train_deep_ensemble

__all__ = ["DeepEnsemble", "load_teacher", "save_teacher", "train_deep_ensemble"]
