"""The one training loop every phase uses (teacher members, KD, Hydra, ...).

A batch is an index tensor into the data (tensors in memory, or image files that decode what
they are indexed with); ``fit`` draws the indices, steps the optimiser and schedule, and records
one history row per epoch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ensemble_distill import distributed
from ensemble_distill.errors import ConfigError, EnsembleDistillError
from ensemble_distill.models.gaussian import gaussian_params
from ensemble_distill.resume import Position, Progress, load_progress, save_progress

if TYPE_CHECKING:
    from ensemble_distill.config import OptimConfig

log = logging.getLogger(__name__)


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 if it is half precision (bf16 or fp16, as networks under autocast
    output), else unchanged (float64 stays float64). Losses compute on it: an 8-bit mantissa is
    too coarse for sums of KL terms and for log Γ (an EnD² student trained on bf16 outputs
    diverged to NaN on MNIST)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def supervised_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean loss of ``outputs`` (..., K) against ``targets`` (...), by the targets' type.

    Integer labels: cross-entropy of logits (K = classes). Float regression targets: Gaussian
    NLL, ½·log(2πσ²) + (y − μ)²/(2σ²), of N(μ, σ²) = ``gaussian_params(outputs)`` (K = 2), the
    proper scoring rule deep-ensemble members are trained with (Lakshminarayanan et al. 2017).
    """
    outputs = full_precision(outputs)
    if targets.is_floating_point():
        mean, variance = gaussian_params(outputs)
        return F.gaussian_nll_loss(mean, targets, variance, full=True)
    return F.cross_entropy(outputs.flatten(0, -2), targets.flatten())


def make_optimizer(
    params: Iterable[Tensor] | list[dict], config: OptimConfig
) -> torch.optim.Optimizer:
    """Adam or SGD (Nesterov-free momentum) with the config's learning rate and weight decay.

    On CPU and CUDA the fused implementation updates every parameter in one kernel: for a
    stacked 50-member ensemble the default (foreach) Adam spends as long in its element-wise
    passes over memory as the matmuls take (benchmarks/performance.py).
    """
    params = list(params)
    tensors = [
        p for group in params for p in (group["params"] if isinstance(group, dict) else [group])
    ]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in tensors)
    if config.name == "adam":
        return torch.optim.Adam(
            params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None
        )
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    raise ConfigError(f"unknown optimizer {config.name!r}; use optim.name=adam or optim.name=sgd")


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    """Raise a ConfigError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; use precision=auto, precision=fp32 or precision=bf16"
        )


def native_bf16(device: torch.device | str) -> str | None:
    """The feature by which ``device`` computes bf16 natively, or None where it would emulate
    it (slower than fp32): AMX or AVX512-BF16 on a CPU, bf16 support on a CUDA GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return "a CUDA GPU with bf16" if torch.cuda.is_bf16_supported() else None
    if device.type != "cpu":
        return None
    # torch's own CPU feature probes (cpuinfo), on every OS; AMX tiles come with AMX-BF16.
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 where :func:`native_bf16` finds support."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def autocast(optimizer: torch.optim.Optimizer, precision: str) -> torch.autocast:
    """bf16 autocast on the device of the optimised parameters, or a disabled context."""
    device = optimizer.param_groups[0]["params"][0].device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compiled(loss_fn: Callable[[Tensor], Tensor], desc: str) -> Callable[[Tensor], Tensor]:
    """``torch.compile(loss_fn)`` (inductor: fused kernels for the forward and the backward),
    or ``loss_fn`` itself from the first call on which compiling fails, with one warning.

    A failure inside the compiler is not the user's: the step is rerun eagerly, where a real
    error in ``loss_fn`` is raised as usual. The last, smaller batch of an epoch compiles once
    more, with dynamic shapes.
    """
    fast = torch.compile(loss_fn)
    failed = False

    def step(index: Tensor) -> Tensor:
        nonlocal failed
        if failed:
            return loss_fn(index)
        try:
            return fast(index)
        except Exception as exc:
            if not type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning(
                "%s: compile=true failed (%s: %s); training without torch.compile",
                desc,
                type(exc).__name__,
                first_line[:200],
            )
            failed = True
            return loss_fn(index)

    return step


def make_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int):
    """Per-step learning-rate schedule: cosine decay to 0, constant, or one cycle: a linear
    warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if config.schedule == "onecycle":
        factor = functools.partial(
            one_cycle, warmup=round(config.warmup_fraction * total_steps), total=total_steps
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ConfigError(
        f"unknown schedule {config.schedule!r}; use optim.schedule=cosine|constant|onecycle"
    )


def one_cycle(step: int, warmup: int, total: int) -> float:
    """The one-cycle learning-rate factor at ``step``: (step + 1)/warmup while warming up,
    then ½·(1 + cos(π·t)) with t the share of the remaining steps done."""
    if step < warmup:
        return (step + 1) / warmup
    done = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


class FitReporter:
    """What :func:`fit` tells a listener as it trains (e.g. TensorBoard, ``tensorboard_log``).

    This base class listens to nothing. Step numbers are those of one ``fit`` call: steps done
    so far, carried over a resume.
    """

    def begin(self, total_steps: int) -> None:
        """A ``fit`` call starts (or resumes); it runs ``total_steps`` steps in all."""

    def step(self, step: int, loss: float) -> None:
        """Step ``step`` (counted from 1) is done; ``loss`` its batch's loss, per member."""

    def epoch(self, step: int, lr: float, metrics: dict[str, float]) -> None:
        """An epoch ended after ``step`` steps: the learning rate and ``on_epoch``'s metrics."""


_REPORTER: contextvars.ContextVar[FitReporter | None] = contextvars.ContextVar(
    "fit_reporter", default=None
)


@contextlib.contextmanager
def reporting(reporter: FitReporter) -> Iterator[None]:
    """Report every :func:`fit` run inside the block to ``reporter``.

    A context rather than an argument of ``fit``: a phase's ``fit`` calls sit layers below
    whoever knows where to report (the teacher's members in ``teachers.train``, each method's
    phases), and none of those layers has to pass it on.
    """
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def index_batches(
    num_examples: int, batch_size: int, generators: Sequence[torch.Generator]
) -> Iterator[Tensor]:
    """One epoch of batches, shape (streams, batch), one stream per generator.

    Each stream follows its own random permutation, so ensemble members trained together see
    the data in the same orders as when trained one by one. The last batch may be smaller.
    """
    order = torch.stack([torch.randperm(num_examples, generator=g) for g in generators])
    for start in range(0, num_examples, batch_size):
        yield order[:, start : start + batch_size]


def fit(
    params: Iterable[Tensor] | list[dict],
    loss_fn: Callable[[Tensor], Tensor],
    *,
    num_examples: int,
    epochs: int,
    batch_size: int,
    optim: OptimConfig,
    seeds: Sequence[int],
    desc: str = "train",
    quiet: bool = False,
    on_epoch: Callable[[int], dict[str, float]] | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    precision: str = "fp32",
    module: nn.Module | None = None,
    compile: bool = False,
    summed_over: int = 1,
    prefetch: Callable[[list[Tensor]], None] | None = None,
) -> list[dict[str, Any]]:
    """Minimise ``loss_fn(batch_index)`` over ``epochs`` passes of the data.

    Args:
        params: parameters or parameter groups to optimise.
        loss_fn: maps a (streams, batch) index tensor to a scalar loss; it sets the modules'
            train mode and moves data itself.
        seeds: one seed per data stream; ``len(seeds)`` independent orders are drawn per
            epoch (one per vectorised member, each as if that member trained alone).
        on_epoch: called after each epoch with the epoch number; its dict (e.g. validation
            metrics) is added to the history row.
        on_step: called before every step with the global step number (counted from 0, and
            carried over a resume), for schedules inside the loss such as EnD²'s temperature.
        progress: save the complete state after every epoch to ``progress.path`` and, when
            that file exists, resume from it (a finished phase returns its history at once).
        precision: ``fp32``; ``bf16`` to run ``loss_fn`` under bf16 autocast on the
            parameters' device (weights, gradients and optimiser state stay fp32); ``auto``
            (:func:`resolve_precision`): bf16 where the device computes it natively.
        compile: run ``loss_fn`` through ``torch.compile`` (:func:`compiled`).
        summed_over: ``loss_fn`` returns the sum of this many per-member mean losses (stacked
            members, so that each gets exactly its own gradient); the history and the
            progress bar show their mean, the loss of one member as a looped member reports it.
        prefetch: called at the start of every epoch with the index batches ``loss_fn`` will
            get, in order (this rank's shares under data parallelism): streamed images
            decode them ahead (:func:`~ensemble_distill.data.image_files.planner`).
        module: the module owning ``params``. Given one, and an initialised process group of
            W > 1 ranks, training is data-parallel: every rank draws the same batches and
            computes its 1/W share of each (see :func:`distributed.data_parallel`), only rank
            0 saves progress and every rank resumes from it. Without: this rank trains alone
            (e.g. its share of the teacher's members) and saves its own progress.

    Each step's loss and each epoch's learning rate and metrics also go to the
    :class:`FitReporter` of the :func:`reporting` block around the call, if any.

    Returns:
        One row per epoch: ``epoch``, mean ``loss`` (per example and, with ``summed_over``, per
        member), ``lr``, ``seconds`` and ``on_epoch``'s keys.

    Raises:
        EnsembleDistillError: the loss became NaN or infinite (the progress file, if any,
            keeps the last good epoch).
    """
    optimizer = make_optimizer(params, optim)
    precision = resolve_precision(precision, optimizer.param_groups[0]["params"][0].device)
    if compile:
        loss_fn = compiled(loss_fn, desc)
    steps_per_epoch = math.ceil(num_examples / batch_size)
    schedule = make_schedule(optimizer, optim, epochs * steps_per_epoch)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    settings = {
        "desc": desc,
        "epochs": epochs,
        "batch_size": batch_size,
        "num_examples": num_examples,
        "seeds": list(seeds),
        "phase": progress.settings if progress else {},
    }
    state = dict(optimizer=optimizer, schedule=schedule, streams=generators)
    position = (load_progress(progress, **state, settings=settings) if progress else None) or (
        Position(epoch=0, step=0, history=[])
    )
    history, step = position.history, position.step
    reporter = _REPORTER.get() or FitReporter()
    reporter.begin(epochs * steps_per_epoch)
    parallel = module is not None and distributed.world()[1] > 1
    if parallel:
        loss_fn = distributed.data_parallel(module, loss_fn)
        if position.epoch > 0:
            distributed.fork_streams(progress.generators)
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=position.epoch * steps_per_epoch,
        desc=desc,
        disable=quiet or not distributed.is_main(),
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    for epoch in range(position.epoch + 1, epochs + 1):
        start, total, count = time.perf_counter(), 0.0, 0
        batches = list(index_batches(num_examples, batch_size, generators))
        if prefetch is not None:
            prefetch([distributed.shard(b) for b in batches] if parallel else batches)
        for index in batches:
            if on_step is not None:
                on_step(step)
            with autocast(optimizer, precision):
                loss = loss_fn(index)
            if not torch.isfinite(loss):
                bar.close()
                kept = (
                    f"; {progress.path} keeps epoch {epoch - 1}" if progress and epoch > 1 else ""
                )
                raise EnsembleDistillError(
                    f"{desc}: the loss became {loss.item()} in epoch {epoch}{kept}; "
                    "lower optim.lr or check the data for extreme values"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            value = loss.item()
            total += value * index.shape[1]
            count += index.shape[1]
            reporter.step(step, value / summed_over)
            bar.update()
        row = {
            "epoch": epoch,
            "loss": total / count / summed_over,
            "lr": schedule.get_last_lr()[0],
            "seconds": time.perf_counter() - start,
        }
        metrics = on_epoch(epoch) if on_epoch is not None else {}
        row |= metrics
        reporter.epoch(step, row["lr"], metrics)
        history.append(row)
        if progress is not None and (distributed.is_main() or not parallel):
            save_progress(
                progress, **state, position=Position(epoch, step, history), settings=settings
            )
        bar.set_postfix(loss=f"{row['loss']:.4f}")
    bar.close()
    return history
