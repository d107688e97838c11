"""Train a deep ensemble: M members, different initialisations and data orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ensemble_distill.checkpoint import check_shapes, load_checkpoint, save_checkpoint
from ensemble_distill.config import OptimConfig
from ensemble_distill.data import DataSplits
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.evaluation import epoch_validator
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.resume import Progress
from ensemble_distill.teachers.ensemble import DeepEnsemble
from ensemble_distill.training import fit, supervised_loss

# Below this many weights in total (M x one member), vmapping the members beats a loop on CPU.
VECTORIZE_MAX_WEIGHTS = 5_000_000


def member_seed(seed: int, member: int) -> int:
    """Initialisation seed of member ``member`` in a run with seed ``seed``."""
    return seed * 1000 + member


def build_members(spec: ModelSpec, data: DataSplits, members: int, seed: int) -> list:
    """M freshly initialised members, each from its own seed."""
    modules = []
    for m in range(members):
        torch.manual_seed(member_seed(seed, m))
        modules.append(create_model(spec, data.mean, data.std))
    return modules


def should_vectorize(choice: str, members: list[torch.nn.Module]) -> bool:
    if choice not in ("auto", "true", "false"):
        raise ConfigError(f"teacher.vectorize must be auto, true or false; got {choice!r}")
    if choice != "auto":
        return choice == "true"
    weights = sum(p.numel() for p in members[0].parameters()) * len(members)
    return weights <= VECTORIZE_MAX_WEIGHTS


def train_deep_ensemble(
    spec: ModelSpec,
    data: DataSplits,
    *,
    members: int,
    seed: int,
    epochs: int,
    batch_size: int,
    optim: OptimConfig,
    vectorize: str = "auto",
    device: torch.device | str = "cpu",
    quiet: bool = False,
    progress_dir: Path | None = None,
    progress_settings: dict[str, Any] | None = None,
) -> tuple[DeepEnsemble, list[dict[str, Any]]]:
    """Train M members by :func:`supervised_loss` (cross-entropy, or Gaussian NLL for
    regression); vectorised (vmap over stacked weights) or one by one.

    Returns:
        The ensemble (on ``device``) and its per-epoch history; in vectorised mode a row's
        ``loss`` is the mean over members and validation metrics are the ensemble's. With
        ``progress_dir``, every epoch is saved there (``teacher.safetensors``, or one
        ``member<m>.safetensors`` per looped member) with ``progress_settings`` (the run's
        config) and training resumes from it: a member whose progress file says it finished
        is not trained again.
    """
    modules = build_members(spec, data, members, seed)
    x, y = data.train.x.to(device), data.train.y.to(device)
    common = dict(
        num_examples=len(y), epochs=epochs, batch_size=batch_size, optim=optim, quiet=quiet
    )
    if should_vectorize(vectorize, modules):
        ensemble = DeepEnsemble(modules).to(device)

        def loss_fn(index: torch.Tensor) -> torch.Tensor:  # index: (members, batch)
            ensemble.train()
            outputs = ensemble.forward_members(x[index])  # (members, batch, classes)
            # Sum of per-member means: each member gets exactly its own gradient.
            return supervised_loss(outputs, y[index]) * members

        seeds = [member_seed(seed, m) for m in range(members)]
        history = fit(
            ensemble.parameters(),
            loss_fn,
            seeds=seeds,
            desc=f"teacher ({members} members, vectorised)",
            on_epoch=epoch_validator(ensemble, data.val, device),
            progress=_progress(progress_dir, "teacher", ensemble, progress_settings),
            **common,
        )
        for row in history:
            row["loss"] /= members
        return ensemble, history

    history = []
    for m, module in enumerate(modules):
        module.to(device)

        def loss_fn(index: torch.Tensor, module=module) -> torch.Tensor:  # index: (1, batch)
            module.train()
            return supervised_loss(module(x[index[0]]), y[index[0]])

        rows = fit(
            module.parameters(),
            loss_fn,
            seeds=[member_seed(seed, m)],
            desc=f"teacher member {m + 1}/{members}",
            on_epoch=epoch_validator(module, data.val, device),
            progress=_progress(progress_dir, f"member{m}", module, progress_settings),
            **common,
        )
        history += [{"member": m, **row} for row in rows]
    return DeepEnsemble(modules).to(device), history


def _progress(
    directory: Path | None, name: str, module: torch.nn.Module, settings: dict[str, Any] | None
) -> Progress | None:
    if directory is None:
        return None
    return Progress(directory / f"{name}.safetensors", module, settings=settings or {})


def save_teacher(
    directory: Path, ensemble: DeepEnsemble, spec: ModelSpec, info: dict[str, Any]
) -> None:
    """Write the ensemble as ``model.safetensors`` + ``manifest.json`` (kind, architecture, M)."""
    manifest = {
        "kind": "deep-ensemble",
        "model": spec.to_dict(),
        "members": ensemble.num_members,
        **info,
    }
    save_checkpoint(directory, ensemble.state_dict(), manifest)


def load_teacher(
    directory: Path, device: torch.device | str = "cpu"
) -> tuple[DeepEnsemble, dict[str, Any]]:
    """Rebuild a saved ensemble, checking names, shapes and dtypes before loading weights."""
    state, manifest = load_checkpoint(directory)
    if manifest.get("kind") != "deep-ensemble":
        raise CheckpointError(f"{directory} holds a {manifest.get('kind')!r}, not a deep ensemble")
    try:
        spec = ModelSpec.from_dict(manifest["model"])
        members = int(manifest["members"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}/manifest.json lacks a valid {exc} entry") from None
    ensemble = DeepEnsemble([create_model(spec) for _ in range(members)])
    check_shapes(ensemble.state_dict(), state, directory)
    ensemble.load_state_dict(state)
    return ensemble.to(device).eval(), manifest
