"""Train a deep ensemble: M members, different initialisations and data orders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ensemble_distill import distributed
from ensemble_distill.checkpoint import (
    MANIFEST,
    check_shapes,
    load_checkpoint,
    save_checkpoint,
)
from ensemble_distill.data import DataSplits
from ensemble_distill.data.augment import shift_and_flip
from ensemble_distill.data.image_files import planner
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.evaluation import epoch_validator
from ensemble_distill.models import ModelSpec, create_model, require_trusted
from ensemble_distill.models.stacked import grouped_leaves
from ensemble_distill.resume import Progress
from ensemble_distill.teachers.ensemble import DeepEnsemble, can_stack
from ensemble_distill.training import fit, supervised_loss

if TYPE_CHECKING:
    from ensemble_distill.config import OptimConfig, RunConfig

# Stacked members of a plain fully connected stack (grouped layers, no convolution) beat a loop
# at every size measured (benchmarks/performance.py, teacher table: 1.1-2.8x for MLPs on digits
# and MNIST, M = 4..50). Grouped convolutions win only while the ensemble is small: the
# 50-member small CNN (10 M weights) trains 1.7x faster in a loop. vmapped networks lose on the
# CPU even when small (benchmarks/cifar10_sizing.py: ResNets, M = 4).
VECTORIZE_MAX_WEIGHTS = 5_000_000
# On the CPU grouped convolutions pay only while they are narrow: a stacked step of 4 members
# takes 0.53-0.96x the looped time with convolutions of 8 and 16 channels, 1.44-2.36x with the
# default cnn's 32 and 64 (fp32 and bf16; docs/results/teacher_stacking.md).
STACKED_CONV_MAX_CHANNELS = 16
# Offset of a member's augmentation stream from its initialisation seed (teacher.augment_shift).
AUGMENT_STREAM = 7_919


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


def should_vectorize(
    choice: str,
    members: list[torch.nn.Module],
    probe: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> bool:
    """``teacher.vectorize``: ``true``, ``false``, or ``auto``: stacked when the members are a
    fully connected layer stack; a convolutional layer stack (grouped layers) while M x weights
    <= ``VECTORIZE_MAX_WEIGHTS`` and, on the CPU, its convolutions have at most
    ``STACKED_CONV_MAX_CHANNELS`` output channels; any other network (stacked by
    ``torch.func.vmap``) only off the CPU, under the same bound and where vmap can run it on
    the inputs ``probe`` (a user's network may not be; None: not tried)."""
    if choice not in ("auto", "true", "false"):
        raise ConfigError(f"teacher.vectorize must be auto, true or false; got {choice!r}")
    if choice != "auto":
        return choice == "true"
    leaves = grouped_leaves(members[0])
    convs = [leaf for leaf in leaves or [] if isinstance(leaf, nn.Conv2d)]
    if leaves is not None and not convs:
        return True
    weights = sum(p.numel() for p in members[0].parameters()) * len(members)
    if weights > VECTORIZE_MAX_WEIGHTS:
        return False
    if torch.device(device).type == "cpu":
        if leaves is None:
            # vmap on CPU runs some ops (the ResNets' pooling: as_strided_) by a per-member
            # fallback: 4 ResNet-20s train 2.6x faster one after another (cifar10_sizing.md).
            return False
        if max(conv.out_channels for conv in convs) > STACKED_CONV_MAX_CHANNELS:
            return False
    return probe is None or can_stack(members, probe)


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
    precision: str = "fp32",
    compile: bool = False,
    augment_shift: int = 0,
    quiet: bool = False,
    progress_dir: Path | None = None,
    progress_settings: dict[str, Any] | None = None,
) -> tuple[DeepEnsemble, list[dict[str, Any]]]:
    """Train M members by :func:`supervised_loss` (cross-entropy, or Gaussian NLL for
    regression); vectorised (stacked weights, see :class:`DeepEnsemble`) or one by one, in
    ``precision`` (``fp32``, ``bf16`` autocast or ``auto``), compiled with ``compile`` (see
    :func:`~ensemble_distill.training.fit`). With ``augment_shift`` s > 0 every training batch
    of images is shifted by up to s pixels and flipped (3 channels) first
    (:func:`~ensemble_distill.data.augment.shift_and_flip`), each member from a random stream
    of its own, so stacked, looped and per-rank training augment a member alike.

    Returns:
        The ensemble (on ``device``) and its per-epoch history; in vectorised mode a row's
        ``loss`` is the mean over members and validation metrics are the ensemble's. With
        ``progress_dir``, every epoch is saved there (``teacher.safetensors``, or one
        ``member<m>.safetensors`` per looped member) with ``progress_settings`` (the run's
        config) and training resumes from it: a member whose progress file says it finished
        is not trained again.

    Under a process group of W > 1 ranks (see :mod:`ensemble_distill.distributed`) with
    M >= W, rank r trains members r, r + W, ... (each with its own seed and data order, so as
    in one process) and saves their progress itself (``teacher-rank<r>of<W>.safetensors`` when
    vectorised), then every rank receives the others' members. The history is then as in one
    process, but vectorised rows have no validation metrics (no rank holds the ensemble
    during training). With M < W the members are trained data-parallel instead
    (:func:`~ensemble_distill.training.fit`).
    """
    modules = build_members(spec, data, members, seed)
    rank, size = distributed.world()
    # Under DDP with at least one member per rank, rank r trains members r, r + W, ... alone;
    # with fewer members than ranks every rank trains all of them on its share of each batch.
    split = size > 1 and members >= size
    x = data.train.x.to(device)  # a view that decodes onto ``device`` when streamed from files
    if augment_shift and len(data.input_shape) != 3:
        raise ConfigError(
            f"teacher.augment_shift={augment_shift} shifts images (channels, height, width); "
            f"these inputs have shape {tuple(data.input_shape)}: set teacher.augment_shift=0"
        )
    job = _Job(
        data=data,
        x=x,
        y=data.train.y.to(device),
        seed=seed,
        members=members,
        device=device,
        split=split,
        augment_shift=augment_shift,
        progress_dir=progress_dir,
        progress_settings=progress_settings,
        fit_args=dict(
            num_examples=len(data.train),
            epochs=epochs,
            batch_size=batch_size,
            optim=optim,
            quiet=quiet,
            precision=precision,
            compile=compile,
            prefetch=planner(x),
        ),
    )
    ids = list(range(rank, members, size)) if split else list(range(members))
    # Decided on all M members, so that every rank (and a single process) decides alike.
    vectorized = should_vectorize(vectorize, modules, data.train.x[:2], device)
    train = _train_stacked if vectorized else _train_looped
    trained, history = train([modules[m] for m in ids], ids, job)
    if not split:
        return DeepEnsemble(trained).to(device) if isinstance(trained, list) else trained, history
    for m, module in zip(ids, trained, strict=True):
        modules[m] = module
    parts = distributed.gather(history)
    if vectorized:
        history = _merge_epochs(parts, [len(range(r, members, size)) for r in range(size)])
    else:  # one process's order: member by member
        history = sorted((row for part in parts for row in part), key=lambda row: row["member"])
    return _exchange(modules, device), history


def train_from_config(
    spec: ModelSpec, data: DataSplits, config: RunConfig, device: torch.device | str, **kwargs: Any
) -> tuple[DeepEnsemble, list[dict[str, Any]]]:
    """:func:`train_deep_ensemble` with the config's members, seed, epochs, batch size,
    optimiser, vectorisation, precision and compile; ``kwargs`` as there (quiet, progress files)."""
    return train_deep_ensemble(
        spec,
        data,
        members=config.members,
        seed=config.seed,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optim=config.optim,
        vectorize=config.teacher.vectorize,
        precision=config.precision,
        compile=config.compile,
        augment_shift=config.teacher.augment_shift,
        device=device,
        **kwargs,
    )


@dataclass
class _Job:
    """What training any subset of the members needs; ``members`` is the whole ensemble's M,
    ``split`` whether this rank trains only its own subset (see ``train_deep_ensemble``)."""

    data: DataSplits
    x: torch.Tensor
    y: torch.Tensor
    seed: int
    members: int
    device: torch.device | str
    split: bool
    augment_shift: int
    progress_dir: Path | None
    progress_settings: dict[str, Any] | None
    fit_args: dict[str, Any]

    def progress(
        self, name: str, module: nn.Module, streams: list[torch.Generator]
    ) -> Progress | None:
        """Where phase ``name`` saves ``module`` and the augmentation ``streams``, or None."""
        if self.progress_dir is None:
            return None
        path = self.progress_dir / f"{name}.safetensors"
        return Progress(path, module, streams, settings=self.progress_settings or {})

    def streams(self, ids: list[int]) -> list[torch.Generator]:
        """Members ``ids``' augmentation streams, each seeded by the member's own seed; none
        without augmentation."""
        if not self.augment_shift:
            return []
        seeds = [member_seed(self.seed, m) + AUGMENT_STREAM for m in ids]
        return [torch.Generator().manual_seed(seed) for seed in seeds]

    def inputs(self, index: torch.Tensor, streams: list[torch.Generator]) -> torch.Tensor:
        """The training inputs of ``index`` (members, batch): (members, batch, ...), each
        member's augmented from its own stream when ``streams`` are given."""
        inputs = self.x[index]
        if not streams:
            return inputs
        pairs = zip(inputs, streams, strict=True)
        return torch.stack([shift_and_flip(batch, self.augment_shift, s) for batch, s in pairs])


def _train_stacked(
    modules: list[nn.Module], ids: list[int], job: _Job
) -> tuple[DeepEnsemble | list[nn.Module], list[dict[str, Any]]]:
    """Members ``ids`` (``modules``) trained together on their stacked weights.

    Returns the ensemble and its rows; with ``job.split`` the trained members as modules and
    rows without validation metrics (this rank's subset is not the ensemble).
    """
    count = len(ids)
    ensemble = DeepEnsemble(modules).to(job.device)
    y, streams = job.y, job.streams(ids)

    def loss_fn(index: torch.Tensor) -> torch.Tensor:  # index: (members, batch)
        ensemble.train()
        outputs = ensemble.forward_members(job.inputs(index, streams))  # (members, batch, C)
        # Sum of per-member means: each member gets exactly its own gradient.
        return supervised_loss(outputs, y[index]) * count

    rank, size = distributed.world()
    name, desc = "teacher", f"teacher ({count} members, vectorised)"
    if job.split:  # one progress file per rank: each rank saves the members it trains
        name, desc = f"teacher-rank{rank}of{size}", f"teacher (members {ids}, vectorised)"
    history = fit(
        ensemble.parameters(),
        loss_fn,
        seeds=[member_seed(job.seed, m) for m in ids],
        desc=desc,
        on_epoch=None if job.split else epoch_validator(ensemble, job.data.val, job.device),
        progress=job.progress(name, ensemble, streams),
        module=None if job.split else ensemble,
        summed_over=count,
        **job.fit_args,
    )
    if not job.split:
        return ensemble, history
    return [ensemble.member(i) for i in range(count)], history


def _train_looped(
    modules: list[nn.Module], ids: list[int], job: _Job
) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """Members ``ids`` (``modules``) trained one after another, in place; their rows tagged
    with ``member``."""
    history = []
    for m, module in zip(ids, modules, strict=True):
        module.to(job.device)
        streams = job.streams([m])

        def loss_fn(index: torch.Tensor, module=module, streams=streams) -> torch.Tensor:
            module.train()  # index: (1, batch)
            return supervised_loss(module(job.inputs(index, streams)[0]), job.y[index[0]])

        rows = fit(
            module.parameters(),
            loss_fn,
            seeds=[member_seed(job.seed, m)],
            desc=f"teacher member {m + 1}/{job.members}",
            on_epoch=epoch_validator(module, job.data.val, job.device),
            progress=job.progress(f"member{m}", module, streams),
            module=None if job.split else module,
            **job.fit_args,
        )
        history += [{"member": m, **row} for row in rows]
    return modules, history


def _merge_epochs(parts: list[list[dict[str, Any]]], counts: list[int]) -> list[dict[str, Any]]:
    """One row per epoch from the ranks' rows (``parts[r]``, ``counts[r]`` members each): the
    loss averaged over all members, as one process records it, and the slowest rank's time."""
    merged = []
    for rows in zip(*parts, strict=True):
        loss = sum(count * row["loss"] for count, row in zip(counts, rows, strict=True))
        merged.append(
            {
                "epoch": rows[0]["epoch"],
                "loss": loss / sum(counts),
                "lr": rows[0]["lr"],
                "seconds": max(row["seconds"] for row in rows),
            }
        )
    return merged


def _exchange(modules: list[nn.Module], device: torch.device | str) -> DeepEnsemble:
    """The full ensemble on every rank: member m's weights come from rank m % W, which
    trained it (the other ranks hold an untrained module of the same shapes). In eval mode,
    as training left the trained ones (stacking needs one mode)."""
    size = distributed.world()[1]
    for m, module in enumerate(modules):
        distributed.broadcast_module(module.to(device).eval(), src=m % size)
    return DeepEnsemble(modules).to(device)


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
    directory: Path, device: torch.device | str = "cpu", trust_code: bool = False
) -> tuple[DeepEnsemble, dict[str, Any]]:
    """Rebuild a saved ensemble, checking names, shapes and dtypes before loading weights.

    ``trust_code``: build members that the manifest names by import path (it runs that code;
    see :func:`ensemble_distill.models.require_trusted`). Registered models need no trust.
    """
    state, manifest = load_checkpoint(directory)
    if manifest.get("kind") != "deep-ensemble":
        raise CheckpointError(f"{directory} holds a {manifest.get('kind')!r}, not a deep ensemble")
    try:
        spec = ModelSpec.from_dict(manifest["model"])
        members = int(manifest["members"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}/manifest.json lacks a valid {exc} entry") from None
    require_trusted(spec.name, f"{directory}/{MANIFEST}", trust_code)
    ensemble = DeepEnsemble([create_model(spec) for _ in range(members)])
    check_shapes(ensemble.state_dict(), state, directory)
    ensemble.load_state_dict(state)
    return ensemble.to(device).eval(), manifest
