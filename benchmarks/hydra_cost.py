"""Inference cost of Hydra vs one member vs the deep ensemble, and batched vs looped heads.

Prints a markdown table and writes JSON. Every ratio is measured in this one run; latencies are
medians over repeats (seconds per example). Defaults: the MNIST setting of
configs/hydra_mnist.yaml (M = 50 MLP members 800-800, Hydra heads [100, 100, 10]).

    python benchmarks/hydra_cost.py --out docs/results/hydra_cost.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from ensemble_distill.methods import METHODS
from ensemble_distill.methods.hydra import HydraConfig
from ensemble_distill.metrics import count_parameters, forward_flops, latency_per_example
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers import DeepEnsemble


class LoopedHeads(nn.Module):
    """The same heads as a Python loop over M plain modules: what Hydra must not do."""

    def __init__(self, heads: nn.ModuleList) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(features) for head in self.heads], dim=1)


def measure(args: argparse.Namespace) -> dict:
    spec = ModelSpec("mlp", (1, 28, 28), 10, {"widths": args.widths})
    torch.manual_seed(0)
    member = create_model(spec).eval()
    ensemble = DeepEnsemble([create_model(spec) for _ in range(args.members)]).eval()
    hydra_method = METHODS.get("hydra")
    options = HydraConfig(head_widths=args.head_widths)
    hydra = hydra_method.build(spec, args.members, options).eval()
    looped = LoopedHeads(nn.ModuleList(hydra.heads.head(m) for m in range(args.members)))
    models = {"member": member, "ensemble": ensemble, "hydra": hydra}
    x1, x256 = torch.rand(1, 1, 28, 28), torch.rand(256, 1, 28, 28)
    rows = {}
    for name, model in models.items():
        rows[name] = {
            "params": count_parameters(model),
            "flops": forward_flops(model, x1),
            "latency_s_b1": latency_per_example(model, x1, repeats=args.repeats),
            "latency_s_b256": latency_per_example(model, x256, repeats=args.repeats),
        }
    with torch.inference_mode():
        f1, f256 = hydra.body(x1), hydra.body(x256)
    heads = {}
    for name, module in (("batched", hydra.heads), ("loop", looped)):
        heads[name] = {
            "flops": forward_flops(module, f1),
            "latency_s_b1": latency_per_example(module, f1, repeats=args.repeats),
            "latency_s_b256": latency_per_example(module, f256, repeats=args.repeats),
        }
    return {"models": rows, "heads": heads}


def ratios(result: dict) -> dict:
    rows, heads = result["models"], result["heads"]
    ensemble, hydra, member = rows["ensemble"], rows["hydra"], rows["member"]
    keys = ("params", "flops", "latency_s_b1", "latency_s_b256")
    return {
        "ensemble_over_hydra": {k: ensemble[k] / hydra[k] for k in keys},
        "hydra_over_member": {k: hydra[k] / member[k] for k in keys},
        # Hydra's FLOP-proportional ideal latency: its FLOPs / a member's x a member's latency.
        "hydra_latency_over_flop_ideal": {
            k: hydra[k] / (hydra["flops"] / member["flops"] * member[k])
            for k in ("latency_s_b1", "latency_s_b256")
        },
        "loop_over_batched_heads": {
            k: heads["loop"][k] / heads["batched"][k] for k in ("latency_s_b1", "latency_s_b256")
        },
    }


def markdown(result: dict) -> str:
    lines = [
        f"Machine: {machine_line(result['machine'])}. Command: `{result['command']}`.",
        "",
        f"M = {result['members']}, body MLP {result['widths']} on 28x28 inputs, heads "
        f"{result['head_widths']} + 10 classes. Latency: median over repeats, seconds per "
        "example reported in ms; FLOPs: forward, 2 per multiply-add (the ensemble's is M x a "
        "member's).",
        "",
        "| model | params | FLOPs / example | ms / example, batch 1 | ms / example, batch 256 | "
        "GFLOP/s at batch 256 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = result["models"] | {f"heads only, {k}": v for k, v in result["heads"].items()}
    for name, row in rows.items():
        params = f"{row['params']:,}" if "params" in row else ""
        gflops = row["flops"] / row["latency_s_b256"] / 1e9
        lines.append(
            f"| {name} | {params} | {row['flops']:,} | {1e3 * row['latency_s_b1']:.3f} | "
            f"{1e3 * row['latency_s_b256']:.4f} | {gflops:.0f} |"
        )
    lines += [
        "",
        "| ratio | params | FLOPs | latency b1 | latency b256 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["ratios"].items():
        cells = [
            f"{row[k]:.2f}" if k in row else ""
            for k in ("params", "flops", "latency_s_b1", "latency_s_b256")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--widths", type=int, nargs="+", default=[800, 800])
    parser.add_argument("--head-widths", type=int, nargs="*", default=[100, 100])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, help="write the JSON here (and .md beside it)")
    args = parser.parse_args()
    result = {
        "machine": machine_info(),
        "command": "python benchmarks/hydra_cost.py " + " ".join(sys.argv[1:]),
        "members": args.members,
        "widths": args.widths,
        "head_widths": args.head_widths,
        **measure(args),
    }
    result["ratios"] = ratios(result)
    text = markdown(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        args.out.with_suffix(".md").write_text("# Hydra inference cost\n\n" + text)


if __name__ == "__main__":
    main()
