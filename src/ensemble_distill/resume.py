"""Per-epoch training state, saved atomically so that a killed run resumes where it stopped.

One phase of training (the teacher, one looped teacher member, a student phase) keeps one
progress file, a single ``.safetensors`` written by
:func:`~ensemble_distill.checkpoint.atomic_write` after every epoch, so a reader finds the
previous epoch's state or the new one, never a mixture. Its tensors are the module's parameters
and buffers, the optimiser's tensors and every random stream (data order, perturbations, the
global torch generator). Its header metadata holds, as JSON, the epoch, the global step, the
history so far, the optimiser's and schedule's other state and the settings the phase was
started with, plus a SHA-256 of all of it, checked before anything is restored. Nothing is
pickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from ensemble_distill.checkpoint import atomic_write, check_shapes
from ensemble_distill.errors import CheckpointError
from ensemble_distill.models.disagreement import default_scales

FORMAT_VERSION = 1
# A progress header holds settings and history: far below this; a larger one is not ours.
MAX_HEADER_BYTES = 64 * 2**20


@dataclass
class Progress:
    """Where and what :func:`~ensemble_distill.training.fit` saves after every epoch.

    Attributes:
        path: the progress file (``.safetensors``).
        module: the module being trained; its whole ``state_dict`` (buffers too) is saved.
        generators: random streams besides the data order that the loss draws from (e.g. a
            perturbation's), restored on resume.
        settings: what else decides this phase's result (e.g. the run's config values); a
            progress file saved with other settings is refused rather than resumed.
    """

    path: Path
    module: nn.Module
    generators: Sequence[torch.Generator] = ()
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Position:
    """Where a resumed phase continues: after ``epoch`` epochs and ``step`` steps."""

    epoch: int
    step: int
    history: list[dict[str, Any]]


def save_progress(
    progress: Progress,
    *,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    streams: Sequence[torch.Generator],
    position: Position,
    settings: dict[str, Any],
) -> None:
    """Write the phase's complete state after ``position.epoch`` epochs, atomically."""
    tensors = {f"model.{k}": v for k, v in progress.module.state_dict().items()}
    optim_state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in optim_state["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    for name, generators in (("stream", streams), ("extra", progress.generators)):
        for i, generator in enumerate(generators):
            tensors[f"rng.{name}.{i}"] = generator.get_state()
    tensors["rng.global"] = torch.get_rng_state()
    header = {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "epoch": position.epoch,
        "step": position.step,
        "history": position.history,
        "param_groups": optim_state["param_groups"],
        "optim_scalars": scalars,
        "schedule": schedule.state_dict(),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    text = json.dumps(header)
    metadata = {"progress": text, "sha256": _digest(tensors, text)}
    atomic_write(progress.path, save(tensors, metadata=metadata))


def load_progress(
    progress: Progress,
    *,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    streams: Sequence[torch.Generator],
    settings: dict[str, Any],
) -> Position | None:
    """Restore a saved phase into ``progress.module``, ``optimizer``, ``schedule`` and the
    random streams; None when there is no progress file yet.

    Raises:
        CheckpointError: the file is not a readable progress file, or it was written by a phase
            with other settings (epochs, batch size, data, seeds) or another architecture.
    """
    if not progress.path.is_file():
        return None
    tensors, header = _read(progress.path)
    if header.get("settings") != settings:
        raise CheckpointError(
            f"{progress.path} was saved by a run with other settings ({header.get('settings')} "
            f"vs {settings}); use a new output directory, or --force to start over"
        )
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    # A phase saved before the students had a disagreement scale resumes with s = 1.
    model = default_scales(progress.module.state_dict(), model)
    check_shapes(progress.module.state_dict(), model, progress.path)
    progress.module.load_state_dict(model)
    try:
        optimizer.load_state_dict(_optimizer_state(tensors, header))
        schedule.load_state_dict(header["schedule"])
        for name, generators in (("stream", streams), ("extra", progress.generators)):
            for i, generator in enumerate(generators):
                generator.set_state(tensors[f"rng.{name}.{i}"])
        torch.set_rng_state(tensors["rng.global"])
        return Position(int(header["epoch"]), int(header["step"]), list(header["history"]))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise CheckpointError(
            f"{progress.path} does not fit this phase ({exc!r}); delete it to redo that phase"
        ) from None


def is_progress_file(path: Path) -> bool:
    """Whether ``path`` is a progress file this package wrote: a ``.safetensors`` file whose
    header carries our progress metadata. Only such files are removed when a phase finishes or
    ``--force`` starts it over; anything else in ``OUT/progress`` (a user's file) stays."""
    if path.suffix != ".safetensors" or not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size > MAX_HEADER_BYTES:
                return False
            metadata = json.loads(handle.read(size)).get("__metadata__") or {}
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a mapping
        return False
    return isinstance(metadata, dict) and {"progress", "sha256"} <= set(metadata)


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    blob = path.read_bytes()
    try:
        tensors = load(blob)
        header_size = int.from_bytes(blob[:8], "little")
        metadata = json.loads(blob[8 : 8 + header_size]).get("__metadata__", {})
        text, digest = metadata["progress"], metadata["sha256"]
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable progress file ({exc!r}); delete it to redo that phase"
        ) from None
    if _digest(tensors, text) != digest:
        raise CheckpointError(
            f"{path} does not match its own hash (tampered or damaged); delete it to redo "
            "that phase"
        )
    header = json.loads(text)
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has an unknown format; delete it to redo that phase")
    return tensors, header


def _digest(tensors: dict[str, Tensor], header: str) -> str:
    """SHA-256 of the tensors (serialised deterministically, sorted by name) and the header."""
    return hashlib.sha256(save(tensors) + header.encode()).hexdigest()


def _optimizer_state(tensors: dict[str, Tensor], header: dict[str, Any]) -> dict[str, Any]:
    """The optimiser's ``state_dict`` from the file's tensors and JSON scalars."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in header["optim_scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": header["param_groups"]}
