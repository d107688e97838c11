"""When training a convolutional ensemble's members stacked pays on the CPU (issue 32: teacher
members on real convolutions; ``teacher.vectorize=auto``). Stacked, the M members of a plain
layer stack train as one computation: their convolutions as one grouped convolution over
M·C channels (models/stacked.py); looped, one member after another. One training step of M = 4
members (forward, backward and an Adam step), in fp32 on NCHW images and in bf16 on
channels-last ones (what ``precision=auto`` / ``memory_format=auto`` choose on a CPU with
native bf16), for the ``cnn`` at the widths users train: the default (32, 64 channels) on
CIFAR-sized and MNIST-sized images, and the narrow one of configs/diversity_fashion.yaml and
of the digits benchmarks (8, 16). Then inference: the M members' outputs on a batch of the
evaluation's size without gradients (evaluation, the teacher's outputs for distillation), the
same networks and a ResNet-20 (stacked by ``torch.func.vmap``), stacked against looped (what
``DeepEnsemble.loops_inference`` decides). Round-robin, fastest of the rounds. Writes
docs/results/teacher_stacking.{json,md}:

    python benchmarks/teacher_stacking.py --doc docs/results/teacher_stacking

``--quick``: one tiny model and two rounds, for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from timing import fastest_ms, micro_main
from torch import Tensor

from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.teachers.train import should_vectorize
from ensemble_distill.training import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
BATCH = 128
MEMBERS = 4
NARROW = {"channels": [8, 16], "hidden": 256, "pool_size": 7}
WORKLOADS = {
    "cnn 32-64, 3 x 32 x 32": ModelSpec("cnn", (3, 32, 32), 10, {}),
    "cnn 32-64, 1 x 28 x 28": ModelSpec("cnn", (1, 28, 28), 10, {}),
    "cnn 8-16, 1 x 28 x 28": ModelSpec("cnn", (1, 28, 28), 10, NARROW),
    "cnn 8-16, 1 x 8 x 8": ModelSpec("cnn", (1, 8, 8), 10, {"channels": [8, 16]}),
}
QUICK = {"cnn 4, 1 x 8 x 8": ModelSpec("cnn", (1, 8, 8), 10, {"channels": [4]})}
SETTINGS = ("fp32", "auto")
# Inference: also a network only vmap stacks; batches of eval.batch_size (the default).
INFERENCE_WORKLOADS = {**WORKLOADS, "resnet20, 3 x 32 x 32": ModelSpec("resnet20", (3, 32, 32), 10)}
INFERENCE_BATCH = 1024


def steps(spec: ModelSpec, precision: str) -> dict[str, Callable[[], None]]:
    """One training step of the M members, stacked and looped, under ``precision``."""
    bf16 = precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    torch.manual_seed(0)
    members = [create_model(spec).to(memory_format=layout) for _ in range(MEMBERS)]
    x = torch.randn(BATCH, *spec.input_shape).contiguous(memory_format=layout)
    y = torch.randint(spec.num_classes, (BATCH,))

    def loss(logits: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(logits.float(), y)

    ensemble = DeepEnsemble(members)  # stacks copies of the members' weights
    stacked_optimizer = torch.optim.Adam(ensemble.parameters())
    looped_optimizers = [torch.optim.Adam(member.parameters()) for member in members]

    def stacked() -> None:
        stacked_optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = ensemble.forward_members(x.expand(MEMBERS, *x.shape))
        sum(loss(out) for out in outputs).backward()
        stacked_optimizer.step()

    def looped() -> None:
        for member, optimizer in zip(members, looped_optimizers, strict=True):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = member(x)
            loss(logits).backward()
            optimizer.step()

    return {"stacked": stacked, "looped": looped}


def inference(spec: ModelSpec, precision: str, batch: int) -> dict[str, Callable[[], None]]:
    """The M members' outputs on one batch without gradients, stacked and looped."""
    torch.manual_seed(0)
    ensemble = DeepEnsemble([create_model(spec) for _ in range(MEMBERS)]).eval()
    x = torch.randn(batch, *spec.input_shape)

    def call(loop: bool) -> Callable[[], None]:
        def forward() -> None:
            ensemble.loop_inference = loop
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, precision == "bf16"):
                ensemble(x)

        return forward

    return {"stacked": call(False), "looped": call(True)}


def convolutions(network: torch.nn.Module) -> list[torch.nn.Conv2d]:
    """The network's convolutions, in order (their widths decide ``auto``)."""
    return [module for module in network.modules() if isinstance(module, torch.nn.Conv2d)]


def run(quick: bool, rounds: int) -> dict:
    rows = {}
    for name, spec in (QUICK if quick else WORKLOADS).items():
        members = [create_model(spec) for _ in range(MEMBERS)]
        auto = "stacked" if should_vectorize("auto", members) else "looped"
        for setting in SETTINGS:
            precision = resolve_precision(setting, "cpu")
            ms = fastest_ms(steps(spec, precision), rounds)
            rows[f"{name}, {setting}"] = {
                "workload": name,
                "channels": [conv.out_channels for conv in convolutions(members[0])],
                "setting": setting,
                "precision": precision,
                "auto": auto,
                "ms": ms,
                "stacked_over_looped": ms["stacked"] / ms["looped"],
            }
    inference_rows, batch = {}, 64 if quick else INFERENCE_BATCH
    for name, spec in (QUICK if quick else INFERENCE_WORKLOADS).items():
        probe = DeepEnsemble([create_model(spec) for _ in range(MEMBERS)]).eval()
        with torch.no_grad():
            auto = "looped" if probe.loops_inference(torch.zeros(1)) else "stacked"
        for setting in SETTINGS:
            precision = resolve_precision(setting, "cpu")
            ms = fastest_ms(inference(spec, precision, batch), rounds)
            inference_rows[f"{name}, {setting}"] = {
                "workload": name,
                "setting": setting,
                "precision": precision,
                "auto": auto,
                "ms": ms,
                "stacked_over_looped": ms["stacked"] / ms["looped"],
            }
    return {
        "command": "python benchmarks/teacher_stacking.py --doc docs/results/teacher_stacking",
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "members": MEMBERS,
        "batch": BATCH,
        "rounds": rounds,
        "rows": rows,
        "inference_batch": batch,
        "inference": inference_rows,
    }


def table(rows: dict) -> list[str]:
    """The markdown table of stacked against looped milliseconds per workload and setting."""
    lines = [
        "| workload | setting | stacked ms | looped ms | stacked / looped | auto picks |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows.values():
        ms = row["ms"]
        lines.append(
            f"| {row['workload']} | {row['setting']} ({row['precision']}) | "
            f"{ms['stacked']:.1f} | {ms['looped']:.1f} | {row['stacked_over_looped']:.2f} | "
            f"{row['auto']} |"
        )
    return lines


def markdown(record: dict) -> str:
    lines = [
        "# Convolutional teachers: members stacked or one after another",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. M = {record['members']} members, batch "
        f"{record['batch']}; one training step of all members (forward, backward, Adam), the "
        f"fastest of {record['rounds']} round-robin rounds. *fp32*: NCHW images; *auto*: what "
        "`precision=auto` / `memory_format=auto` choose here (bf16 on channels-last images "
        "where the CPU computes bf16 natively). *stacked*: one computation, the convolutions "
        "grouped over the members; *looped*: one member after another; *auto picks*: what "
        "`teacher.vectorize=auto` chooses for these members on the CPU.",
        "",
    ]
    lines += table(record["rows"])
    lines += [
        "",
        "A stacked / looped ratio above 1: stacking is slower. `teacher.vectorize=auto` stacks "
        "a convolutional layer stack on the CPU only while its convolutions are narrow "
        "(teachers/train.py: `STACKED_CONV_MAX_CHANNELS`); any number is taken as measured here, "
        "on this machine.",
        "",
        "## Inference",
        "",
        f"The M members' outputs on a batch of {record['inference_batch']} without gradients "
        "(evaluation, the teacher's outputs for distillation), the fastest of "
        f"{record['rounds']} rounds; *auto picks*: what `DeepEnsemble.loops_inference` chooses "
        "on the CPU (one after another for a network with convolutions). The ResNet-20 is not "
        "a layer stack: stacked, it runs under `torch.func.vmap`.",
        "",
    ]
    lines += [*table(record["inference"]), ""]
    return "\n".join(lines)


def main() -> None:
    description = __doc__.split("\n\n")[0]
    micro_main(description, ROOT / "docs" / "results" / "teacher_stacking", run, markdown)


if __name__ == "__main__":
    main()
