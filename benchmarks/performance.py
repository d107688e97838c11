"""Performance against the machine's limit: GEMM peak, teacher training, distillation, inference.

Every figure is measured in this one run and every ratio compares figures from it; a time is the
median over repeats (epochs for training, calls for inference). Prints a markdown page and
writes it with its JSON (the issue's floors are checked at the end of the page):

    python benchmarks/performance.py --data-dir ../shared/data --doc docs/results/benchmarks

``--quick`` runs a few seconds' version on digits only (what the test suite runs);
``--device cuda`` and ``--precision bf16`` measure a GPU and bf16 autocast in the main tables;
the precision / memory-format / compile table (issue #17) compares those settings itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from seeds import write_page
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ensemble_distill.config import TeacherConfig, build_config
from ensemble_distill.engine import Setup, prepare
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.methods import METHODS, DistillContext, resolve_method
from ensemble_distill.metrics import count_parameters, forward_flops, latency_per_example
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers.train import build_members, should_vectorize, train_from_config
from ensemble_distill.training import supervised_loss

# The three workloads of the issue: each is a config (as a user would write it) and how many
# training examples one timed epoch uses (enough batches that per-epoch overheads are small).
WORKLOADS: dict[str, dict[str, Any]] = {
    "digits-mlp": {"config": {"dataset": "digits"}, "examples": None},
    "mnist-mlp": {
        "config": {
            "dataset": "mnist",
            "model_args": {"widths": [800, 800]},
            "batch_size": 128,
            "hydra": {"head_widths": [100, 100]},
        },
        "examples": 2560,
    },
    "cnn": {
        "config": {
            "dataset": "mnist",
            "model": "cnn",
            "model_args": {"channels": [8, 16], "hidden": 256, "pool_size": 7},
            "batch_size": 128,
            "hydra": {"head_widths": [128]},
        },
        "examples": 2560,
    },
    # configs/diversity_fashion.yaml's members and batch size
    "fashion-cnn": {
        "config": {
            "dataset": "fashion-mnist",
            "model": "cnn",
            "model_args": {"channels": [8, 16], "hidden": 256, "pool_size": 7},
            "batch_size": 128,
        },
        "examples": 2560,
    },
    "digits-cnn": {
        "config": {"dataset": "digits", "model": "cnn", "model_args": {"channels": [8, 16]}},
        "examples": None,
    },
}
STUDENTS = ("kd", "hydra", "endd", "be", "latentbe")
PERTURBED = ("kd+ods", "kd+confods", "hydra+confods")
# How one training epoch can compute (issue #17): fp32 on NCHW images is the reference, then
# each option alone, then what precision=auto and memory_format=auto resolve to on this machine,
# with and without torch.compile.
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32, NCHW": {"precision": "fp32", "memory_format": "contiguous"},
    "fp32, channels-last": {"precision": "fp32", "memory_format": "channels_last"},
    "bf16, NCHW": {"precision": "bf16", "memory_format": "contiguous"},
    "auto": {"precision": "auto", "memory_format": "auto"},
    "auto + compile": {"precision": "auto", "memory_format": "auto", "compile": True},
}
IMAGE_ONLY = ("fp32, channels-last",)  # variants that only differ for convolutional models
PHASES = ("teacher", "kd", "kd+mixup")  # what each variant times
# Timed under the "auto" setting only: each kind of input from a pool of K copies built once
# (perturbation.pool), the teachers never run during training (issue #28's floor: <= 1.3x).
POOL = 4
POOLED_KINDS = ("gaussian", "ods", "confods", "mixup", "mixture")
POOLED = {f"kd+{kind}, pool {POOL}": f"kd+{kind}" for kind in POOLED_KINDS}
POOLED_FLOOR = 1.3
# Each stacked-teacher case and its looped counterpart, for the batched / looped ratio.
LOOPED = {"batched": "looped", "live": "live, looped"}


@dataclasses.dataclass
class Bench:
    """The run's settings: which workloads, member counts, repeats, device and precision."""

    data_dir: str | None
    device: str
    precision: str
    teacher_workloads: tuple[str, ...]
    teacher_members: tuple[int, ...]
    distill_runs: tuple[tuple[str, int], ...]
    inference_workload: str
    inference_members: tuple[int, ...]
    widths: tuple[int, ...]
    rss_models: tuple[str, ...]  # models whose peak RSS is measured (a fresh process each)
    repeats: int
    epochs: int
    # (workload, M) whose teacher and KD-student epochs are timed under every VARIANTS entry
    variant_runs: tuple[tuple[str, int], ...]
    variants: tuple[str, ...]
    variant_rounds: int  # rounds over all variants (each a full set of epochs), fastest kept


def setup_for(bench: Bench, workload: str, members: int, **overrides: Any) -> Setup:
    """The pipeline's :class:`Setup` of ``workload`` with ``members``, its training split cut
    to the workload's timed examples and its validation split to 256 (validation is untimed)."""
    workload_config = WORKLOADS[workload]["config"]
    # Hydra's phases and the pools as every timing before issue 28's ``auto`` values had them
    # (live inputs; the pooled rows set their pool below).
    pinned = {
        "hydra": {**workload_config.get("hydra", {}), "phase1_fraction": 0.5, "adapter_rank": 0},
        "perturbation": {"pool": 0},
    }
    config = build_config(
        workload_config
        | pinned
        | {"data_dir": bench.data_dir, "members": members, "device": bench.device}
        # Students as many epochs as the teacher: a time is per epoch, more add nothing.
        | {"precision": bench.precision, "epochs": bench.epochs}
        | {"student": {"epochs": bench.epochs}}
        | overrides
    )
    setup = prepare(config)
    examples = WORKLOADS[workload]["examples"] or len(setup.data.train)
    data = dataclasses.replace(
        setup.data,
        train=setup.data.train.subset(torch.arange(examples)),
        val=setup.data.val.subset(torch.arange(min(256, len(setup.data.val)))),
    )
    return dataclasses.replace(setup, data=data)


def gemm_peak(device: str, repeats: int) -> dict[str, Any]:
    """fp32 GFLOP/s of square matmuls (2n³ FLOPs each); the peak is the best size's median."""
    sizes = {}
    for n in (256, 512, 1024, 2048, 3072):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        sizes[n] = 2 * n**3 / (latency_per_example(lambda x, b=b: x @ b, a, repeats) * n) / 1e9
    return {"gflops_by_size": sizes, "peak_gflops": max(sizes.values())}


def train_flops_per_example(setup: Setup) -> int:
    """FLOPs of one member's forward + backward per training example (FlopCounterMode)."""
    member = build_members(setup.teacher_spec, setup.data, 1, seed=0)[0].to(setup.device)
    x, y = setup.data.train.x[:64].to(setup.device), setup.data.train.y[:64].to(setup.device)
    counter = FlopCounterMode(display=False)
    with counter:
        supervised_loss(member(x), y).backward()
    return counter.get_total_flops() // len(x)


def gemm_ceiling(setup: Setup, repeats: int) -> float | None:
    """GFLOP/s of exactly the matmuls of one member's training step on a batch, timed alone.

    Per Linear layer (B = batch size): forward x Wᵀ (B x I by I x O), weight gradient gᵀ x
    and, except for the first layer, input gradient g W. This is what the machine's BLAS
    reaches on these shapes, the ceiling of any implementation of the step; None for bodies
    with convolutions (MLPs only).
    """
    member = build_members(setup.teacher_spec, setup.data, 1, seed=0)[0]
    layers = [m for m in member.modules() if isinstance(m, nn.Linear)]
    if any(isinstance(m, nn.Conv2d) for m in member.modules()):
        return None
    batch, device = setup.config.batch_size, setup.device
    flops = seconds = 0.0
    for k, layer in enumerate(layers):
        out_features, in_features = layer.weight.shape
        x = torch.randn(batch, in_features, device=device)
        w = torch.randn(out_features, in_features, device=device)
        g = torch.randn(batch, out_features, device=device)
        products = [(x, w.T), (g.T, x)] + ([(g, w)] if k > 0 else [])
        for a, b in products:
            seconds += latency_per_example(lambda a, b=b: a @ b, a, repeats) * len(a)
            flops += 2 * batch * in_features * out_features
    return flops / seconds / 1e9


def epoch_seconds(history: list[dict[str, Any]]) -> float:
    """Median over epochs (the first excluded: warm-up, compilation) of one epoch of all
    members (looped members have one row per member and epoch, summed)."""
    by_epoch: dict[int, float] = {}
    for row in history:
        by_epoch[row["epoch"]] = by_epoch.get(row["epoch"], 0.0) + row["seconds"]
    timed = [seconds for epoch, seconds in by_epoch.items() if epoch > 1] or list(by_epoch.values())
    return statistics.median(timed)


def teacher_training(bench: Bench, peak: float) -> list[dict[str, Any]]:
    """Samples/s and achieved GFLOP/s of ``train_deep_ensemble``, vectorised vs looped."""
    rows = []
    for workload in bench.teacher_workloads:
        # One member's step, the same at every M: counted and timed once per workload.
        setup = setup_for(bench, workload, 1)
        flops, ceiling = train_flops_per_example(setup), gemm_ceiling(setup, bench.repeats)
        for members in bench.teacher_members:
            setup = setup_for(bench, workload, members)
            examples = len(setup.data.train)
            members_list = build_members(setup.teacher_spec, setup.data, members, seed=0)
            auto = "true" if should_vectorize("auto", members_list) else "false"
            for mode in ("true", "false"):
                _, history = train_from_config(
                    setup.teacher_spec,
                    setup.data,
                    dataclasses.replace(setup.config, teacher=TeacherConfig(vectorize=mode)),
                    setup.device,
                    quiet=True,
                )
                seconds = epoch_seconds(history)
                gflops = members * examples * flops / seconds / 1e9
                rows.append(
                    {
                        "workload": workload,
                        "members": members,
                        "mode": "vectorised" if mode == "true" else "loop",
                        "seconds_per_epoch": seconds,
                        "examples": examples,
                        "examples_per_s": members * examples / seconds,
                        "train_flops_per_example": flops,
                        "gflops": gflops,
                        "fraction_of_peak": gflops / peak,
                        "gemm_ceiling_gflops": ceiling,
                        "auto": mode == auto,
                    }
                )
    return rows


class LoopedTeacher(nn.Module):
    """The ensemble's members as M plain modules called one after another: the baseline that
    batching replaces. Same interface as :class:`DeepEnsemble` for perturbations."""

    def __init__(self, ensemble: DeepEnsemble) -> None:
        super().__init__()
        self.num_members = ensemble.num_members
        self.members = nn.ModuleList(ensemble.member(m) for m in range(self.num_members))

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, ...) → logits (batch, members, classes)."""
        return torch.stack([member(x) for member in self.members], dim=1)

    def forward_member(self, x: Tensor, index: int) -> Tensor:
        return self.members[index](x)


class LiveTeacherContext(DistillContext):
    """Runs the teachers on every clean batch instead of reading their cached outputs."""

    def batch(self, index: Tensor):
        batch = super().batch(index)
        if batch.perturbed:
            return batch
        self.teacher.eval()
        with torch.no_grad():
            return dataclasses.replace(batch, teacher_outputs=self.teacher(batch.x))


def distill_epoch(setup: Setup, teacher: nn.Module, name: str, live: bool) -> tuple[float, int]:
    """Mean seconds per epoch of training student ``name`` (all its phases) on ``teacher``,
    and the student's forward FLOPs per example."""
    seconds, flops, _ = timed_distillation(setup, teacher, name, live)
    return seconds, flops


def timed_distillation(
    setup: Setup, teacher: nn.Module, name: str, live: bool
) -> tuple[float, int, float]:
    """:func:`distill_epoch`, and the seconds its context took to build (a pool of inputs
    with ``perturbation.pool``; nothing otherwise)."""
    method, perturbation = resolve_method(name)
    config, data = setup.config, setup.data
    outputs = predict_outputs(teacher, data.train.x, 1024, setup.device)
    start = time.perf_counter()
    context = (LiveTeacherContext if live else DistillContext)(
        data=data,
        teacher=teacher,
        config=config,
        device=setup.device,
        quiet=True,
        teacher_train_outputs=outputs,
        perturbation=perturbation,
    )
    built = time.perf_counter() - start
    torch.manual_seed(0)
    student = method.build(
        setup.student_spec, config.members, method.options(config), data.mean, data.std
    )
    history = method.train(student.to(setup.device), context, method.options(config))
    flops = forward_flops(student.eval(), data.train.x[:2].to(setup.device))
    return student_epoch_seconds(history), flops, built


def student_epoch_seconds(history: list[dict[str, Any]]) -> float:
    """Mean seconds per epoch over all of a student's phases, each phase's first epoch excluded
    (warm-up, compilation) where a phase has more than one."""
    timed = [row["seconds"] for row in history if row["epoch"] > 1]
    return statistics.mean(timed or [row["seconds"] for row in history])


def distillation(bench: Bench) -> list[dict[str, Any]]:
    """Epoch cost of every student relative to KD's (cached teacher outputs), of KD with live
    teachers, and of perturbed methods with batched (vmapped) vs looped teachers."""
    rows = []
    for workload, members in bench.distill_runs:
        setup = setup_for(bench, workload, members)
        teacher = DeepEnsemble(build_members(setup.teacher_spec, setup.data, members, 0))
        teacher = teacher.to(setup.device)
        looped = LoopedTeacher(teacher).to(setup.device)
        cases = [(name, "cached", teacher, False) for name in STUDENTS]
        cases += [("kd", "live", teacher, True), ("kd", "live, looped", looped, True)]
        for name in PERTURBED:
            cases += [(name, "batched", teacher, False), (name, "looped", looped, False)]
        times = {(n, t): distill_epoch(setup, model, n, live) for n, t, model, live in cases}
        kd_seconds, kd_flops = times["kd", "cached"]
        for (name, teachers), (seconds, flops) in times.items():
            rows.append(
                {
                    "workload": workload,
                    "members": members,
                    "method": name,
                    "teachers": teachers,
                    "seconds_per_epoch": seconds,
                    "over_kd": seconds / kd_seconds,
                    "student_flops_over_kd": flops / kd_flops,
                    "batched_over_looped": (
                        seconds / times[name, LOOPED[teachers]][0] if teachers in LOOPED else None
                    ),
                }
            )
    return rows


def variants(bench: Bench) -> list[dict[str, Any]]:
    """Seconds per teacher epoch and per KD-student epoch (cached teacher outputs, and live
    teachers on mixup inputs) under each of :data:`VARIANTS`, and their speed-ups over the
    fp32 NCHW reference. Variants run round-robin, ``variant_rounds`` times, and each keeps
    its fastest round: on a shared machine the other load only ever slows a round down."""
    rows = []
    for workload, members in bench.variant_runs:
        names = [
            name
            for name in bench.variants
            if name not in IMAGE_ONLY or WORKLOADS[workload]["config"].get("model") == "cnn"
        ]
        best: dict[tuple[str, str], float] = {}
        one_off: dict[tuple[str, str], float] = {}  # the pool's build, fastest round
        resolved: dict[str, dict[str, Any]] = {}
        for _ in range(bench.variant_rounds):
            for name in names:
                setup = setup_for(bench, workload, members, **VARIANTS[name])
                config = setup.config
                resolved[name] = {k: getattr(config, k) for k in ("precision", "memory_format")}
                torch.manual_seed(0)
                teacher, history = train_from_config(
                    setup.teacher_spec, setup.data, config, setup.device, quiet=True
                )
                times = {
                    "teacher": epoch_seconds(history),
                    "kd": distill_epoch(setup, teacher, "kd", live=False)[0],
                    "kd+mixup": distill_epoch(setup, teacher, "kd+mixup", live=False)[0],
                }
                if name == "auto":
                    pooled = dataclasses.replace(
                        setup,
                        config=dataclasses.replace(
                            config,
                            perturbation=dataclasses.replace(config.perturbation, pool=POOL),
                        ),
                    )
                    for phase, method in POOLED.items():
                        seconds, _, built = timed_distillation(pooled, teacher, method, False)
                        times[phase] = seconds
                        one_off[name, phase] = min(built, one_off.get((name, phase), float("inf")))
                for phase, seconds in times.items():
                    key = (name, phase)
                    best[key] = min(seconds, best.get(key, float("inf")))
        for (name, phase), seconds in best.items():
            rows.append(
                {
                    "workload": workload,
                    "members": members,
                    "variant": name,
                    **resolved[name],
                    "compile": bool(VARIANTS[name].get("compile")),
                    "phase": phase,
                    "seconds_per_epoch": seconds,
                    "one_off_seconds": one_off.get((name, phase)),
                    "speedup": (
                        best["fp32, NCHW", phase] / seconds
                        if ("fp32, NCHW", phase) in best
                        else None
                    ),
                    "over_cached_kd": seconds / best[name, "kd"],
                }
            )
    return rows


def inference_model(setup: Setup, name: str) -> nn.Module:
    """An (untrained: cost does not depend on the weights) model to time: one ``member``, the
    ``ensemble`` or the student of method ``name``."""
    torch.manual_seed(0)
    if name == "member":
        return build_members(setup.teacher_spec, setup.data, 1, 0)[0]
    if name == "ensemble":
        return DeepEnsemble(build_members(setup.teacher_spec, setup.data, setup.config.members, 0))
    method = METHODS.get(name)
    return method.build(
        setup.student_spec,
        setup.config.members,
        method.options(setup.config),
        setup.data.mean,
        setup.data.std,
    )


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _peak_rss_child(setup: Setup, name: str) -> float | None:
    """In a fresh process: MiB by which model ``name`` and its batch-256 inference raise the
    peak resident set (Linux VmHWM) above the resident set before the model was built. The
    peak is reset once the model is built, so that the copies made while building it (the
    members before they are stacked) do not count."""
    try:
        before = _status_mib("VmRSS")
    except OSError:
        return None
    x = setup.data.test.x[:256].to(setup.device)
    model = inference_model(setup, name).to(setup.device).eval()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    with torch.inference_mode():
        model(x)
    return _status_mib("VmHWM") - before


def peak_rss(setup: Setup, names: tuple[str, ...]) -> dict[str, float | None]:
    """:func:`_peak_rss_child` for each model, each in its own spawned process (memory freed
    earlier in this process would otherwise be reused and hide the model's)."""
    splits = {s: setup.data.test.subset(torch.arange(256)) for s in ("train", "val", "test")}
    slim = dataclasses.replace(setup, data=dataclasses.replace(setup.data, ood={}, **splits))
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        sizes = pool.starmap(_peak_rss_child, [(slim, n) for n in names])
    return dict(zip(names, sizes, strict=True))


ROUNDS = 5  # latencies are taken round-robin over the compared models, median per model


def inference_rows(
    bench: Bench, workload: str, members: int, names: tuple[str, ...], **overrides
) -> list[dict]:
    """Cost of each model in ``names``. Latencies are measured round-robin (every model once
    per round, ``ROUNDS`` rounds, median per model) so that a slow spell of the machine hits
    every model alike and the ratios between them stay fair."""
    setup = setup_for(bench, workload, members, **overrides)
    x = setup.data.test.x[:256].to(setup.device)
    models = {name: inference_model(setup, name).to(setup.device).eval() for name in names}
    times: dict[tuple[str, int], list[float]] = {(n, b): [] for n in names for b in (1, 256)}
    for _ in range(ROUNDS):
        for name, model in models.items():
            for batch in (1, 256):
                repeats = bench.repeats * (10 if batch == 1 else 1) // ROUNDS
                times[name, batch].append(latency_per_example(model, x[:batch], max(repeats, 1)))
    rss = peak_rss(setup, tuple(n for n in names if n in bench.rss_models))
    rows = []
    for name, model in models.items():
        b1, b256 = (statistics.median(times[name, batch]) for batch in (1, 256))
        rows.append(
            {
                "workload": workload,
                "members": members,
                "model": name,
                "overrides": overrides,
                "params": count_parameters(model),
                "flops": forward_flops(model, x[:1]),
                "latency_s_b1": b1,
                "latency_s_b256": b256,
                "throughput_b256": 1.0 / b256,
                "peak_rss_mib": rss.get(name),
            }
        )
    return rows


def inference(bench: Bench) -> dict[str, list[dict]]:
    """Every model at every M; then the ensemble, KD and Hydra as the body widens."""
    workload = bench.inference_workload
    by_members = [
        row
        for members in bench.inference_members
        for row in inference_rows(bench, workload, members, ("member", "ensemble", *STUDENTS))
    ]
    members = bench.inference_members[len(bench.inference_members) // 2]
    by_width = [
        row
        for width in bench.widths
        for row in inference_rows(
            bench,
            workload,
            members,
            ("member", "ensemble", "kd", "hydra"),
            model_args={"widths": [width, width]},
        )
    ]
    return {"by_members": by_members, "by_width": by_width}


def run(bench: Bench) -> dict[str, Any]:
    started = time.perf_counter()
    gemm = gemm_peak(bench.device, bench.repeats)
    teacher = teacher_training(bench, gemm["peak_gflops"])
    record = {
        "machine": machine_info(),
        "command": "python benchmarks/performance.py " + " ".join(sys.argv[1:]),
        "settings": dataclasses.asdict(bench),
        "gemm": gemm,
        "teacher": teacher,
        "distill": distillation(bench),
        "variants": variants(bench),
        "inference": inference(bench),
    }
    record["checks"] = checks(record)
    record["seconds"] = time.perf_counter() - started
    return record


def _find(rows: list[dict], **match: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def checks(record: dict) -> list[dict[str, Any]]:
    """The issue's floors, each with its measured value (rows a --quick run lacks are skipped).

    Teacher training is held against the peak in the mode ``teacher.vectorize=auto`` picks,
    i.e. what a user gets; both modes are in the teacher table.
    """
    found: list[dict[str, Any]] = []

    def check(floor: str, value: float, met: bool) -> None:
        found.append({"floor": floor, "value": value, "met": met})

    teacher, distill = record["teacher"], record["distill"]
    for row in teacher:
        if row["workload"] == "mnist-mlp" and row["auto"]:
            check(
                f"MNIST MLP teacher training, M = {row['members']} ({row['mode']}): "
                "fraction of GEMM peak >= 0.70",
                row["fraction_of_peak"],
                row["fraction_of_peak"] >= 0.70,
            )
    loop = _find(teacher, workload="digits-mlp", members=10, mode="loop")
    vectorised = _find(teacher, workload="digits-mlp", members=10, mode="vectorised")
    if loop and vectorised:
        speedup = loop["seconds_per_epoch"] / vectorised["seconds_per_epoch"]
        check("digits MLP, M = 10: vectorised speed-up over the loop >= 3", speedup, speedup >= 3)
    rows = record["inference"]["by_members"]
    hydra, ensemble, member = (
        _find(rows, members=50, model=m) for m in ("hydra", "ensemble", "member")
    )
    if hydra and ensemble and member:
        for key, batch in (("latency_s_b1", 1), ("latency_s_b256", 256)):
            ratio = ensemble[key] / hydra[key]
            check(
                f"Hydra M = 50, batch {batch}: ensemble / Hydra latency >= 10", ratio, ratio >= 10
            )
            ideal = hydra["flops"] / member["flops"] * member[key]
            check(
                f"Hydra M = 50, batch {batch}: latency / FLOP-proportional ideal <= 1.5",
                hydra[key] / ideal,
                hydra[key] / ideal <= 1.5,
            )
    for row in distill:
        where = f"{row['workload']}, M = {row['members']}"
        if row["method"] == "hydra" and row["teachers"] == "cached":
            check(f"{where}: Hydra epoch / KD epoch <= 1.5", row["over_kd"], row["over_kd"] <= 1.5)
        if row["batched_over_looped"] is not None and "ods" in row["method"]:
            check(
                f"{where}: {row['method']} batched / looped teachers <= 0.6",
                row["batched_over_looped"],
                row["batched_over_looped"] <= 0.6,
            )
    variant_checks(record.get("variants", []), record["machine"], check)
    return found


def variant_checks(rows: list[dict], machine: dict, check) -> None:
    """Issue #17's floors on the :func:`variants` rows (those a run has)."""
    fashion = "fashion-cnn"

    def row(workload: str, variant: str, phase: str) -> dict | None:
        return _find(rows, workload=workload, variant=variant, phase=phase)

    channels_last = row(fashion, "fp32, channels-last", "teacher")
    if channels_last:
        value = channels_last["speedup"]
        check(
            "Fashion-MNIST CNN teacher epoch: channels-last fp32 / NCHW fp32 >= 1.3",
            value,
            value >= 1.3,
        )
    auto = row(fashion, "auto", "teacher")
    if auto:
        floor = "Fashion-MNIST CNN teacher epoch, CPU with AMX-BF16: precision auto >= 2.5x"
        if "amx_bf16" in str(machine.get("cpu_flags", "")):
            check(floor, auto["speedup"], auto["speedup"] >= 2.5)
        else:
            check(
                f"{floor} (not applicable: the CPU has {machine.get('cpu_flags')}; measured shown)",
                auto["speedup"],
                None,
            )
    for workload, members in {(r["workload"], r["members"]) for r in rows}:
        live = row(workload, "auto", "kd+mixup")
        if live:
            value = live["over_cached_kd"]
            check(
                f"{workload}, M = {members}: KD epoch with live teachers on mixup / cached KD "
                "<= 2.5",
                value,
                value <= 2.5,
            )
        for phase, method in POOLED.items():
            pooled = row(workload, "auto", phase)
            if pooled:
                value = pooled["over_cached_kd"]
                check(
                    f"{workload}, M = {members}: KD epoch on {method.split('+')[1]} inputs from "
                    f"a pool of {POOL} copies (teachers' outputs computed once) / cached KD "
                    f"<= {POOLED_FLOOR}",
                    value,
                    value <= POOLED_FLOOR,
                )
    compiled, eager = row(fashion, "auto + compile", "kd"), row(fashion, "auto", "kd")
    if compiled and eager:
        value = eager["seconds_per_epoch"] / compiled["seconds_per_epoch"]
        check("Fashion-MNIST CNN student (KD) epoch: compile >= 1.2x", value, value >= 1.2)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def markdown(record: dict) -> str:
    gemm = record["gemm"]
    lines = [
        "# Performance benchmarks",
        "",
        f"Machine: {machine_line(record['machine'])}. Command: `{record['command']}` "
        f"({record['seconds'] / 60:.1f} min). Device {record['settings']['device']}, "
        f"precision {record['settings']['precision']}. Times are medians over repeats; every "
        "ratio compares figures from this one run.",
        "",
        "## GEMM peak (fp32 square matmul, 2n³ FLOPs)",
        "",
        "| n | " + " | ".join(str(n) for n in gemm["gflops_by_size"]) + " |",
        "|---|" + "---:|" * len(gemm["gflops_by_size"]),
        "| GFLOP/s | " + " | ".join(f"{v:.0f}" for v in gemm["gflops_by_size"].values()) + " |",
        "",
        f"Peak: **{gemm['peak_gflops']:.0f} GFLOP/s**.",
        "",
        "## Teacher training (`train_deep_ensemble`: forward, backward, Adam step)",
        "",
        "Member-examples per second (M x examples / epoch time) and achieved GFLOP/s (one "
        "member's forward + backward FLOPs per example, counted by FlopCounterMode, x M x "
        "examples / time). *auto*: the mode `teacher.vectorize=auto` picks. *GEMM ceiling*: "
        "the GFLOP/s of exactly the matmuls of one member's training step (forward, weight "
        "and input gradients at the configured batch size), timed alone: what the BLAS "
        "reaches on these shapes (MLPs only).",
        "",
        "| workload | M | mode | s / epoch | member-examples / s | GFLOP/s | of peak | "
        "GEMM ceiling (of peak) | vectorised speed-up |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["teacher"]:
        other = _find(
            record["teacher"], workload=row["workload"], members=row["members"], mode="loop"
        )
        speedup = (
            f"{other['seconds_per_epoch'] / row['seconds_per_epoch']:.2f}x"
            if row["mode"] == "vectorised"
            else ""
        )
        mode = row["mode"] + (" (auto)" if row["auto"] else "")
        ceiling = row["gemm_ceiling_gflops"]
        ceiling = "" if ceiling is None else f"{ceiling:.0f} ({ceiling / gemm['peak_gflops']:.0%})"
        lines.append(
            f"| {row['workload']} | {row['members']} | {mode} | {row['seconds_per_epoch']:.3f} | "
            f"{row['examples_per_s']:,.0f} | {row['gflops']:.1f} | "
            f"{row['fraction_of_peak']:.0%} | {ceiling} | {speedup} |"
        )
    lines += [
        "",
        "## Distillation epoch cost",
        "",
        "Mean seconds per student epoch (all of a method's phases; Hydra: half phase 1, half "
        "phase 2) and the ratio to KD with cached teacher outputs. *cached*: teacher outputs "
        "on the clean training set computed once; *live*: the teachers run on every clean "
        "batch, stacked (*live, looped*: as M separate modules; minus the cached row, these "
        "two isolate what the teacher forward costs); *batched*: perturbed inputs go through "
        "the stacked ensemble; *looped*: through M separate modules. *student FLOPs / KD*: "
        "the student's forward FLOPs per example over the KD student's (Hydra: all heads, "
        "phase 2; the cost a FLOP-bound epoch tracks).",
        "",
        "| workload | M | method | teachers | s / epoch | / KD | student FLOPs / KD | "
        "batched / looped |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in record["distill"]:
        ratio = row["batched_over_looped"]
        lines.append(
            f"| {row['workload']} | {row['members']} | {row['method']} | {row['teachers']} | "
            f"{row['seconds_per_epoch']:.3f} | {row['over_kd']:.2f} | "
            f"{row['student_flops_over_kd']:.2f} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    for key, title in (("by_members", "growth with M"), ("by_width", "growth with body width")):
        lines += [
            "",
            f"## Inference: {title}",
            "",
            "Untrained models of the configured shapes (cost does not depend on the weights). "
            "Latency: ms per example at batch 1 and batch 256; throughput: examples/s at batch "
            "256; peak RSS: MiB by which the built model and its batch-256 inference raise the "
            "peak resident set of a fresh process (Linux VmHWM; includes PyTorch's first-call "
            "workspace). FLOPs: "
            "forward, counted by FlopCounterMode.",
            "",
            "| M | body | model | params | MFLOPs | ms b1 | ms b256 | examples/s b256 | "
            "peak RSS MiB | / ensemble b1 | / ensemble b256 |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = record["inference"][key]
        for row in rows:
            body = row["overrides"].get("model_args", {}).get("widths", "config")
            ensemble = _find(
                rows, members=row["members"], model="ensemble", overrides=row["overrides"]
            )
            lines.append(
                f"| {row['members']} | {body} | {row['model']} | {row['params']:,} | "
                f"{row['flops'] / 1e6:.2f} | {1e3 * row['latency_s_b1']:.3f} | "
                f"{1e3 * row['latency_s_b256']:.4f} | {row['throughput_b256']:,.0f} | "
                f"{_mib(row['peak_rss_mib'])} | "
                f"{ensemble['latency_s_b1'] / row['latency_s_b1']:.1f}x | "
                f"{ensemble['latency_s_b256'] / row['latency_s_b256']:.1f}x |"
            )
    lines += variants_markdown(record.get("variants", []), record["settings"]["variant_rounds"])
    lines += [
        "",
        "## Checks (the issue's floors)",
        "",
        "| floor | measured | met |",
        "|---|---:|---|",
    ]
    met = {True: "yes", False: "**no**", None: "n/a"}
    lines += [f"| {c['floor']} | {c['value']:.2f} | {met[c['met']]} |" for c in record["checks"]]
    return "\n".join(lines) + "\n"


def variants_markdown(rows: list[dict], rounds: int) -> list[str]:
    """The table of :func:`variants`: one line per workload, variant and phase."""
    if not rows:
        return []
    lines = [
        "",
        "## Precision, memory format and compile",
        "",
        "Seconds per epoch of the teacher (all members, `teacher.vectorize=auto`), of a KD "
        "student on cached teacher outputs, and of a KD student with the teachers live on "
        "mixup inputs (`kd+mixup`), under each setting; *speed-up*: over fp32 on NCHW images "
        "(the reference); */ cached KD*: over the same setting's cached-KD epoch. *auto* is "
        "what `precision=auto memory_format=auto` resolve to on this machine (shown). Each "
        f"setting ran {rounds} round(s), round-robin with the others, and keeps its "
        "fastest (the first epoch of each phase excluded: warm-up and compilation). "
        f"*kd+KIND, pool {POOL}* (auto only): KIND inputs drawn from {POOL} copies of the "
        "training inputs built once with the teachers' outputs (`perturbation.pool`; *mixture*: "
        "the default mixture of clean, mixup and patch-shuffled inputs); *one-off s*: that "
        "build.",
        "",
        "| workload | M | setting | precision | memory format | compile | phase | s / epoch | "
        "one-off s | speed-up | / cached KD |",
        "|---|---:|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        one_off = "" if r.get("one_off_seconds") is None else f"{r['one_off_seconds']:.3f}"
        speedup = "n/a" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(
            f"| {r['workload']} | {r['members']} | {r['variant']} | {r['precision']} | "
            f"{r['memory_format']} | {'yes' if r['compile'] else 'no'} | {r['phase']} | "
            f"{r['seconds_per_epoch']:.3f} | {one_off} | {speedup} | {r['over_cached_kd']:.2f} |"
        )
    return [*lines, "", *variants_reading(rows)]


def variants_reading(rows: list[dict]) -> list[str]:
    """What bounds the live-teacher and compile figures, from the rows themselves."""

    def seconds(workload: str, variant: str, phase: str) -> float | None:
        row = _find(rows, workload=workload, variant=variant, phase=phase)
        return None if row is None else row["seconds_per_epoch"]

    lines = []
    for workload, members in sorted({(r["workload"], r["members"]) for r in rows}):
        live = _find(rows, workload=workload, variant="auto", phase="kd+mixup")
        if live:
            lines.append(
                f"- {workload}, M = {members}: live teachers on mixup cost "
                f"{live['over_cached_kd']:.2f}x a cached-KD epoch. The student is one member's "
                "architecture and a training step costs about three forward passes, so the "
                f"teachers' forward (M forward passes) adds about M / 3 = {members / 3:.2f} "
                f"epochs' worth of FLOPs: a FLOP-bound epoch costs about {1 + members / 3:.2f}x. "
                "Only outputs computed once (a cached pool of inputs) can go below that."
            )
        pooled = [_find(rows, workload=workload, variant="auto", phase=p) for p in POOLED]
        cached = seconds(workload, "auto", "kd")
        if all(pooled) and cached and live:
            lines.append(
                f"- {workload}, M = {members}: from a pool of {POOL} copies built once "
                f"(`perturbation.pool={POOL}`) an epoch costs "
                + ", ".join(
                    f"{row['over_cached_kd']:.2f}x ({POOLED[row['phase']].split('+')[1]})"
                    for row in pooled
                )
                + " a cached-KD epoch, after a one-off build worth "
                + ", ".join(f"{row['one_off_seconds'] / cached:.1f}" for row in pooled)
                + f" cached-KD epochs ({POOL} teacher passes over the training inputs, with "
                "gradients for ODS and ConfODS). Live teachers on mixup cost "
                f"{live['over_cached_kd']:.2f}x an epoch. The price of a pool is variety: each "
                f"example has {POOL} perturbed views instead of a new one every epoch."
            )
        compiled = {phase: seconds(workload, "auto + compile", phase) for phase in PHASES}
        eager = {phase: seconds(workload, "auto", phase) for phase in PHASES}
        if all(compiled.values()) and all(eager.values()):
            ratios = ", ".join(f"{p} {eager[p] / compiled[p]:.2f}x" for p in PHASES)
            lines.append(
                f"- {workload}: `compile=true` over eager at the same settings: {ratios}. "
                "Inductor calls the same oneDNN / BLAS kernels for the convolutions and matmuls "
                "that dominate these small models; it can only fuse the element-wise work around "
                "them (normalisation, activations, the loss), and the stacked teacher's Python "
                "loop over layers recompiles per layout and mode. Hence compile stays opt-in."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding mnist/ (for the MNIST workloads)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"))
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per latency")
    parser.add_argument("--quick", action="store_true", help="digits only, small M: seconds")
    parser.add_argument("--doc", type=Path, help="write DOC.md and DOC.json")
    parser.add_argument(
        "--page-only", action="store_true", help="rewrite DOC.md from DOC.json, measuring nothing"
    )
    args = parser.parse_args()
    if args.page_only:
        record = json.loads(args.doc.with_suffix(".json").read_text())
        record["checks"] = checks(record)
        write_page(args.doc, record, markdown)
        return
    common = dict(data_dir=args.data_dir, device=args.device, precision=args.precision)
    if args.quick:
        bench = Bench(
            **common,
            teacher_workloads=("digits-mlp",),
            teacher_members=(2, 4),
            distill_runs=(("digits-mlp", 2),),
            inference_workload="digits-mlp",
            inference_members=(2,),
            widths=(32,),
            rss_models=("ensemble",),
            repeats=3,
            epochs=2,
            variant_runs=(("digits-cnn", 2),),
            variants=("fp32, NCHW", "auto"),
            variant_rounds=1,
        )
    else:
        bench = Bench(
            **common,
            teacher_workloads=("digits-mlp", "mnist-mlp", "cnn"),
            teacher_members=(4, 10, 50),
            distill_runs=(
                ("digits-mlp", 4),
                ("digits-mlp", 10),
                ("mnist-mlp", 4),
                ("mnist-mlp", 10),
            ),
            inference_workload="mnist-mlp",
            inference_members=(4, 10, 50),
            widths=(200, 800, 1600),
            rss_models=("member", "ensemble", *STUDENTS),
            repeats=args.repeats,
            epochs=3,
            variant_runs=(("mnist-mlp", 10), ("fashion-cnn", 4)),
            variants=tuple(VARIANTS),
            variant_rounds=2,
        )
    record = run(bench)
    if args.doc:
        write_page(args.doc, record, markdown)
    else:
        print(markdown(record))


if __name__ == "__main__":
    main()
