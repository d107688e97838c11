"""Cost of a model: parameters, FLOPs and wall-clock latency per example (METHODS.md, "Cost")."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ensemble_distill.errors import EnsembleDistillError


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters, Σ over ``module.parameters()`` of ``numel``.

    Counts every parameter, trainable or not. A tensor shared between submodules is counted
    once (``parameters()`` de-duplicates), and no distinction is made between a shared body
    and per-member weights: an M-member ensemble's cost is the sum over its members.
    """
    return sum(p.numel() for p in module.parameters())


def forward_flops(model: Callable[[Tensor], Any], example_batch: Tensor) -> int:
    """Forward FLOPs per example (2 per multiply-add), counted by PyTorch's FlopCounterMode
    over one call on ``example_batch`` (B, ...), divided by B.

    Counts matmuls and convolutions (element-wise work is not counted). Operations run inside
    ``torch.func.vmap`` are invisible to the counter: a :class:`DeepEnsemble` whose members
    are not a plain layer stack (e.g. ResNets) reports 0; count one member and multiply by M.
    """
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(example_batch)
    return counter.get_total_flops() // len(example_batch)


def _sync(batch: Tensor) -> None:
    # CUDA kernels run asynchronously; without a barrier the clock would stop before they end.
    if batch.is_cuda:
        torch.cuda.synchronize(batch.device)


def latency_per_example(
    fn: Callable[[Tensor], Any],
    example_batch: Tensor,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median wall-clock seconds of ``fn(example_batch)`` divided by the batch size.

    Each call runs under ``torch.inference_mode`` and is timed with ``time.perf_counter``
    (with a CUDA synchronise around it on GPU); ``warmup`` untimed calls come first so that
    one-off costs (allocation, kernel selection) are excluded, and the median over
    ``repeats`` calls resists outliers. Batch 1 measures latency, a large batch (e.g. 256)
    throughput: the caller passes the batch it wants.

    Args:
        fn: the model's forward, e.g. ``model`` or ``lambda x: model(x).softmax(-1)``.
        example_batch: (B, ...) input batch, on the device to measure.
        repeats: number of timed calls, ≥ 1.
        warmup: number of untimed calls before timing, ≥ 0.

    Returns:
        Seconds per example.
    """
    if not isinstance(example_batch, Tensor) or example_batch.dim() == 0:
        raise EnsembleDistillError(
            "example_batch must be a torch.Tensor with a batch dimension; pass shape (B, ...)"
        )
    batch_size = example_batch.shape[0]
    if batch_size == 0:
        raise EnsembleDistillError("example_batch is empty; pass at least one example")
    if repeats < 1 or warmup < 0:
        raise EnsembleDistillError(
            f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}"
        )
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(example_batch)
        for _ in range(repeats):
            _sync(example_batch)
            start = time.perf_counter()
            fn(example_batch)
            _sync(example_batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / batch_size
