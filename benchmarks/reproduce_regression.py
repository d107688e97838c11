"""Regression: Gaussian deep ensembles vs KD and Hydra students on every built-in data set,
over several seeds; writes docs/results/regression.{json,md}.

    python benchmarks/reproduce_regression.py --seeds 0 1 2

Each (data set, seed) runs configs/regression.yaml end to end into
runs/regression/<dataset>/seed<k>, then distils one more Hydra from the same teacher with the
paper's scheme (phase 1 on half the epochs, then every head copied from head 0) for the row
``hydra (copied heads)``. The checks of issue 6 are computed from the means over seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from seeds import aggregate, cell, write_page

from ensemble_distill.config import load_config
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("toy-gap", "diabetes", "auto-mpg")
COPIED_HEADS = ["methods=[hydra]", "hydra.head_init=copy", "hydra.phase1_fraction=0.5"]
COLUMNS = [
    ("rmse", "RMSE ↓", ".4g"),
    ("nll", "NLL ↓", ".4f"),
    ("coverage_90", "90 % coverage", ".3f"),
    ("epistemic", "epistemic var, test", ".3g"),
    ("epistemic_ood", "epistemic var, OOD", ".3g"),
    ("ood_auroc", "OOD AUROC (epistemic) ↑", ".3f"),
    ("ood_auroc_total", "OOD AUROC (total var) ↑", ".3f"),
]


def run_dataset(dataset: str, seeds: list[int], out: Path, overrides: list[str]) -> dict:
    """Every seed of one data set: per-seed results and the mean ± std table."""
    per_seed, walls = [], []
    for seed in seeds:
        config = load_config(
            ROOT / "configs" / "regression.yaml", [f"dataset={dataset}", f"seed={seed}", *overrides]
        )
        start = time.perf_counter()
        results = run(config, out / dataset / f"seed{seed}", quiet=True)
        walls.append(time.perf_counter() - start)
        per_seed.append(
            results["methods"]
            | {"hydra (copied heads)": copied_heads(config, out / dataset / f"seed{seed}")}
        )
    return {
        "ood": results["ood"],
        "wall_seconds": walls,
        "table": aggregate(per_seed, [key for key, _, _ in COLUMNS]),
        "per_seed": per_seed,
    }


def copied_heads(config, run_dir: Path) -> dict:
    """Results of a Hydra distilled with the paper's head copying from ``run_dir``'s teacher."""
    variant = run_dir / "copied-heads"
    variant.mkdir(exist_ok=True)
    if not (variant / "teacher").exists():
        (variant / "teacher").symlink_to((run_dir / "teacher").resolve())
    config = load_config(run_dir / "config.yaml", COPIED_HEADS)
    return run(config, variant, steps=("distill", "evaluate"), quiet=True)["methods"]["hydra"]


def checks(record: dict) -> dict[str, dict[str, float | bool]]:
    """Issue 6's floors from the means over seeds, for each Hydra student."""
    toy = record["datasets"]["toy-gap"]["table"]
    hydras = [name for name in toy if name.startswith("hydra")]
    out: dict[str, dict[str, float | bool]] = {}
    for name in hydras:
        gap, train = toy[name]["epistemic_ood"][0], toy[name]["epistemic"][0]
        row = {
            "toy_gap_vs_ensemble": gap / toy["ensemble"]["epistemic_ood"][0],
            "toy_gap_vs_own_train_range": gap / train,
        }
        for dataset in DATASETS[1:]:
            table = record["datasets"][dataset]["table"]
            row[f"{dataset}_nll_minus_kd"] = table[name]["nll"][0] - table["kd"]["nll"][0]
            row[f"{dataset}_rmse_vs_ensemble"] = (
                table[name]["rmse"][0] / table["ensemble"]["rmse"][0]
            )
        row["met"] = (
            row["toy_gap_vs_ensemble"] >= 0.5
            and row["toy_gap_vs_own_train_range"] >= 5
            and all(row[f"{d}_nll_minus_kd"] <= 0 for d in DATASETS[1:])
            and all(abs(row[f"{d}_rmse_vs_ensemble"] - 1) <= 0.05 for d in DATASETS[1:])
        )
        out[name] = row
    return out


def markdown(record: dict) -> str:
    lines = [
        "# Regression: Gaussian deep ensemble (M = 5) vs KD and Hydra",
        "",
        f"Command: `{record['command']}` (config `configs/regression.yaml`).  ",
        f"Machine: {machine_line(record['machine'])}; total wall time "
        f"{record['wall_seconds'] / 60:.1f} min. Mean ± std over seeds "
        f"{', '.join(map(str, record['seeds']))}; test split; metrics in the targets' units.",
        "",
        "`kd` is one Gaussian: it has no epistemic term, so its epistemic variance is 0 and its "
        "AUROC by epistemic variance is 0.5 by construction. `member` is one ensemble member.",
    ]
    for dataset, result in record["datasets"].items():
        lines += [
            "",
            f"## {dataset} (OOD: {result['ood']})",
            "",
            "| model | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        for name, row in result["table"].items():
            cells = [cell(row[key], fmt) for key, _, fmt in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Checks (issue 6, from the means)",
        "",
        "| student | toy gap epistemic / ensemble's (≥ 0.5) | / its own on the training range "
        "(≥ 5) | NLL − KD's: " + ", ".join(DATASETS[1:]) + " (≤ 0) | RMSE / ensemble's "
        "(within 5 %) | all met |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in record["checks"].items():
        nll = ", ".join(f"{row[f'{d}_nll_minus_kd']:+.4f}" for d in DATASETS[1:])
        rmse = ", ".join(f"{row[f'{d}_rmse_vs_ensemble']:.3f}" for d in DATASETS[1:])
        lines.append(
            f"| {name} | {row['toy_gap_vs_ensemble']:.2f} | "
            f"{row['toy_gap_vs_own_train_range']:.1f} | {nll} | {rmse} | "
            f"{'yes' if row['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "regression")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "regression")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args()
    start = time.perf_counter()
    record = {
        "command": "python benchmarks/reproduce_regression.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "seeds": args.seeds,
        "datasets": {d: run_dataset(d, args.seeds, args.out, args.overrides) for d in DATASETS},
    }
    record["wall_seconds"] = time.perf_counter() - start
    record["checks"] = checks(record)
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
