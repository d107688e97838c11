"""Scale-out with PyTorch DDP: the process group, who writes, and data-parallel losses.

A run launched by ``torchrun`` has one process (rank) per CPU worker or GPU. Every rank builds
the same data and models from the same seeds; :func:`~ensemble_distill.training.fit` then
splits each global batch between the ranks and averages gradients with
:class:`~torch.nn.parallel.DistributedDataParallel`, and the teacher's members may instead be
split between the ranks (:mod:`ensemble_distill.teachers.train`). Only the main rank (0) writes
the run's files. Without a process group (or with one process) every helper here is a no-op,
so single-process runs are unchanged. See docs/distributed.md.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

# Rank r's perturbation stream is seeded with seed + r * RANK_SEED_STRIDE: far apart, so that no
# two ranks (or runs with nearby seeds) share a stream.
RANK_SEED_STRIDE = 1_000_003


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes the run's files: rank 0, or the only process."""
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process): before a rank reads what rank 0 wrote, or
    before rank 0 removes what the others may still read."""
    if world()[1] > 1:
        dist.barrier()


def launched() -> bool:
    """Whether ``torchrun`` started this process as one of several (its env says so)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def process_group(device_type: str) -> Iterator[None]:
    """Join ``torchrun``'s process group for the block, then leave it.

    NCCL for CUDA (GPU-to-GPU all-reduce), gloo for CPU. On CUDA each process uses GPU
    ``LOCAL_RANK`` of its node, so every rank of a node gets its own GPU. Does nothing when
    not launched by ``torchrun`` with several processes, or when the caller already
    initialised a group (the caller then owns it).
    """
    if not launched() or dist.is_initialized():
        yield
        return
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """``device``, with a bare ``cuda`` made this rank's GPU (``cuda:LOCAL_RANK``)."""
    if device.type == "cuda" and device.index is None and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def perturbation_seed(seed: int) -> int:
    """The seed of this rank's perturbation stream: ``seed`` on rank 0 (as in one process),
    different on every other rank, so ranks do not perturb their shards with the same noise."""
    return seed + world()[0] * RANK_SEED_STRIDE


def fork_streams(generators: Sequence[torch.Generator]) -> None:
    """Re-seed the streams on ranks > 0 from their (resumed) state and the rank.

    A resumed data-parallel phase restores every rank's streams from rank 0's progress file;
    without this, all ranks would continue with rank 0's perturbation noise.
    """
    rank = world()[0]
    if rank == 0:
        return
    for generator in generators:
        base = int(torch.randint(2**62, (1,), generator=generator))
        generator.manual_seed(base + rank * RANK_SEED_STRIDE)


class _Loss(nn.Module):
    """``weight * loss_fn(index)`` as a module owning ``module``, so DDP can wrap it."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, index: Tensor, weight: float) -> Tensor:
        return self.loss_fn(index) * weight


def data_parallel(
    module: nn.Module, loss_fn: Callable[[Tensor], Tensor]
) -> Callable[[Tensor], Tensor]:
    """``loss_fn`` made data-parallel over the ranks; call it with the *global* batch index.

    Every rank draws the same global index batch (streams, N) and computes its shard
    ``index[:, rank::W]`` (n_r examples), weighted by n_r·W/N: DDP's gradient average
    (1/W) Σ_r ∇(n_r·W/N · loss_r) is then ∇ of the global batch mean Σ_r n_r·loss_r / N, also
    for an uneven last batch (``loss_fn`` must be a mean over the batch). A rank whose shard is
    empty (N < W) runs one example with weight 0, because DDP needs every rank's backward.

    The returned value is the global batch mean on every rank (one scalar all-reduce), with
    the shard's gradient: the loss history is the same on every rank, and a non-finite loss
    stops every rank at the same step instead of leaving the others waiting.

    ``find_unused_parameters``: some phases leave parameters of ``module`` unused (e.g. heads
    that a phase does not train).
    """
    rank, size = world()
    wrapped = DistributedDataParallel(_Loss(module, loss_fn), find_unused_parameters=True)

    def shard_loss(index: Tensor) -> Tensor:  # index: (streams, N)
        weight = index[:, rank::size].shape[1] * size / index.shape[1]
        scaled = wrapped(shard(index), weight)
        mean = scaled.detach().clone()
        dist.all_reduce(mean)
        return scaled + (mean / size - scaled).detach()

    return shard_loss


def shard(index: Tensor) -> Tensor:
    """This rank's share ``index[:, rank::W]`` of a global (streams, N) batch index; one example
    (weighted 0 by :func:`data_parallel`) when N < W leaves it none."""
    rank, size = world()
    part = index[:, rank::size]
    return part if part.shape[1] else index[:, :1]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable, e.g. history rows), in rank order."""
    gathered: list[Any] = [None] * world()[1]
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_module(module: nn.Module, src: int) -> None:
    """Overwrite ``module``'s parameters and buffers, on every rank, by rank ``src``'s.

    Every rank passes a module of the same architecture (the receivers' values are discarded);
    ``state_dict`` tensors share storage with the module, so broadcasting them in place updates
    it.
    """
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)
