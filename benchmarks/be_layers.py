"""How a BatchEnsemble layer should compute its M members (issue 32: the BatchEnsemble students'
cost on real convolutions). Member j's layer is y_j = s_j ∘ (W (r_j ∘ x) + b_j); two ways to
compute it for all members at once:

* *scale activations*: one matmul / conv by the shared W on all members' rows, between the
  scalings of the activations by r and by s (and b): three elementwise passes over the
  layer's input and output, and their backward;
* *member weights*: one matmul / conv per member with its own weight W ∘ (s_j r_jᵀ) and
  bias s_j ∘ b_j: weight-sized extra work, none on the activations.

One training step (forward and backward, bf16 autocast and channels-last as ``precision=auto``
/ ``memory_format=auto`` choose on a CPU with native bf16, else fp32) of a BatchEnsemble
student with each form in every layer, against a plain network on B rows (one member's
step) and on M·B rows (all members' rows through shared weights: what M members cost at
best), round-robin, fastest of the rounds. Writes docs/results/be_layers.{json,md}:

    python benchmarks/be_layers.py --doc docs/results/be_layers

``--quick``: one tiny model and two rounds, for the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import fastest_ms, micro_main
from torch import Tensor, nn

from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.models.base import channels_last
from ensemble_distill.models.batchensemble import (
    BatchEnsemble,
    BEConv2d,
    BELinear,
    be_layers,
    split_members,
)
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.training import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
BATCH = 128
# name -> (spec, members): the networks the studies distil into BatchEnsembles
WORKLOADS = {
    "mnist-mlp": (ModelSpec("mlp", (784,), 10, {"widths": [400, 400]}), 10),
    "fashion-cnn": (
        ModelSpec("cnn", (1, 28, 28), 10, {"channels": [8, 16], "hidden": 256, "pool_size": 7}),
        4,
    ),
    "cifar-cnn": (ModelSpec("cnn", (3, 32, 32), 10, {}), 4),
    "cifar-resnet20": (ModelSpec("resnet20", (3, 32, 32), 10, {}), 4),
}
QUICK = {"tiny-cnn": (ModelSpec("cnn", (3, 8, 8), 10, {"channels": [4]}), 2)}
Form = Callable[[nn.Module, Tensor], Tensor]


def scale_activations(layer: BELinear | BEConv2d, x: Tensor) -> Tensor:
    """s_j ∘ (W (r_j ∘ x) + b_j) with one call by the shared W on all members' rows."""
    if isinstance(layer, BELinear):
        return BELinear.forward(layer, x)  # the shipped form for fully connected layers
    rows = split_members(x, layer.members)
    factor = (layer.members, 1, -1, 1, 1)  # (members, rows, channels, height, width)
    scaled = (rows * layer.r.view(factor)).flatten(0, 1)
    out = F.conv2d(scaled, layer.weight, None, layer.stride, layer.padding, layer.dilation)
    out = split_members(out, layer.members)
    if layer.bias is not None:
        out = out + layer.bias.view(factor)
    return (out * layer.s.view(factor)).flatten(0, 1)


def member_weights(layer: BELinear | BEConv2d, x: Tensor) -> Tensor:
    """One call per member by W ∘ (s_j r_jᵀ), bias s_j ∘ b_j, on that member's rows."""
    if isinstance(layer, BEConv2d):
        return BEConv2d.forward(layer, x)  # the shipped form for convolutions
    weights = layer.scaled_weight(layer.s, layer.r)
    biases = [None] * layer.members if layer.bias is None else layer.bias * layer.s
    rows = split_members(x, layer.members)
    return torch.cat([F.linear(rows[j], weights[j], biases[j]) for j in range(layer.members)])


def with_form(student: BatchEnsemble, form: Form | None) -> nn.Module:
    """``student`` with every BE layer's forward replaced by ``form`` (in place); None: as
    shipped."""
    if form is not None:
        for layer in be_layers(student):
            layer.forward = lambda x, layer=layer: form(layer, x)
    return student


def train_step(model: nn.Module, x: Tensor, precision: str) -> Callable[[], None]:
    """One forward and backward pass of ``model`` on ``x`` under ``precision``."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        out.float().square().mean().backward()

    return step


def workload_row(spec: ModelSpec, members: int, rounds: int, precision: str) -> dict:
    """Milliseconds per training step of each contender (:func:`timing.fastest_ms`)."""
    torch.manual_seed(0)
    images = len(spec.input_shape) == 3
    layout = torch.channels_last if images and precision == "bf16" else torch.contiguous_format

    def inputs(rows: int) -> Tensor:
        x = torch.randn(rows, *spec.input_shape)
        # channels_last: one-channel images too, as the run's data (engine.as_channels_last)
        return channels_last(x) if layout == torch.channels_last else x

    def student(form: Form | None) -> nn.Module:
        network = create_model(spec).to(memory_format=layout)
        return with_form(BatchEnsemble.from_model(network, members), form)

    plain = create_model(spec).to(memory_format=layout)
    steps = {
        "plain, B rows": train_step(plain, inputs(BATCH), precision),
        "plain, M·B rows": train_step(plain, inputs(members * BATCH), precision),
        "scale activations": train_step(student(scale_activations), inputs(BATCH), precision),
        "member weights": train_step(student(member_weights), inputs(BATCH), precision),
        "as shipped": train_step(student(None), inputs(BATCH), precision),
    }
    return fastest_ms(steps, rounds)


def run(quick: bool, rounds: int) -> dict:
    precision = resolve_precision("auto", "cpu")
    rows = {}
    for name, (spec, members) in (QUICK if quick else WORKLOADS).items():
        ms = workload_row(spec, members, rounds, precision)
        rows[name] = {"model": spec.name, "members": members, "ms": ms}
    return {
        # 15 rounds: with 5, two runs of the same code differed by up to 1.6x on this machine
        "command": f"python benchmarks/be_layers.py --doc docs/results/be_layers --rounds {rounds}",
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "precision": precision,
        "batch": BATCH,
        "rounds": rounds,
        "rows": rows,
    }


CONTENDERS = ("scale activations", "member weights", "as shipped")


def markdown(record: dict) -> str:
    lines = [
        "# BatchEnsemble layers: scale the activations, or form each member's weight",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Precision {record['precision']} "
        f"(what `precision=auto` chooses here), channels-last images under bf16; batch "
        f"B = {record['batch']} per member; one training step (forward and backward), the "
        f"fastest of {record['rounds']} round-robin rounds. *scale activations*: every BE "
        "layer scales its input by r and its output by s around one call by the shared W; "
        "*member weights*: every BE layer calls each member's own weight W ∘ (s_j r_jᵀ); *as "
        "shipped*: BEConv2d forms member weights, BELinear scales the activations "
        "(models/batchensemble.py). *× plain M·B*: over a plain network's step on all M·B "
        "rows (shared weights: what M members cost at best).",
        "",
        "| workload | M | plain, B rows ms | plain, M·B rows ms | "
        + " | ".join(f"{name} ms" for name in CONTENDERS)
        + " | "
        + " | ".join(f"{name} × plain M·B" for name in CONTENDERS)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * 2 * len(CONTENDERS),
    ]
    for name, row in record["rows"].items():
        ms = row["ms"]
        at_best = ms["plain, M·B rows"]
        cells = [f"{ms[c]:.1f}" for c in CONTENDERS]
        cells += [f"{ms[c] / at_best:.2f}" for c in CONTENDERS]
        lines.append(
            f"| {name} | {row['members']} | {ms['plain, B rows']:.1f} | {at_best:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "## Reading", ""]
    for name, row in record["rows"].items():
        ms = row["ms"]
        lines.append(
            f"- {name} ({row['model']}, M = {row['members']}): as shipped "
            f"{ms['as shipped']:.1f} ms a step, "
            f"{ms['as shipped'] / ms['plain, M·B rows']:.2f}x a plain network's step on the "
            f"same M·B rows; scaling the activations in every layer takes "
            f"{ms['scale activations'] / ms['as shipped']:.2f}x as long, member weights in "
            f"every layer {ms['member weights'] / ms['as shipped']:.2f}x."
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    description = __doc__.split("\n\n")[0]
    micro_main(description, ROOT / "docs" / "results" / "be_layers", run, markdown)


if __name__ == "__main__":
    main()
