"""Choose the perturbation step size η by the student's validation NLL.

    python benchmarks/choose_eta.py --run runs/diversity_fashion/seed0 --data-dir DIR \\
        --methods hydra+confods --etas 1 2 4 8

For each η (in units of 1/255) every method in ``--methods`` is distilled from the teacher
already trained in ``--run`` (config from ``--run``/config.yaml), into RUN/eta_sweep/eta<k>;
the table (final-epoch validation NLL and accuracy per η) goes to ``--doc`` .md and .json.
The test split is never looked at.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from seeds import write_page

from ensemble_distill.config import load_config
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]


def final_validation(student_dir: Path) -> dict[str, float]:
    """Validation accuracy and NLL after the last epoch, from the student's history.csv."""
    with (student_dir / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    return {"val_acc": float(last["val_acc"]), "val_nll": float(last["val_nll"])}


def sweep(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {eta/255: final validation metrics}}."""
    table: dict[str, dict[str, dict[str, float]]] = {m: {} for m in args.methods}
    for k in args.etas:
        out = args.run / "eta_sweep" / f"eta{k:g}"
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "teacher").exists():
            (out / "teacher").symlink_to((args.run / "teacher").resolve())
        config = load_config(
            args.run / "config.yaml",
            [
                f"data_dir={args.data_dir}",
                f"methods={json.dumps(args.methods)}",
                f"perturbation.eta={k / 255}",
            ],
        )
        run(config, out, steps=("distill",), quiet=True)
        for method in args.methods:
            table[method][f"{k:g}"] = final_validation(out / "students" / method)
    return table


def markdown(record: dict) -> str:
    etas = list(next(iter(record["table"].values())))
    lines = [
        "# Choosing the perturbation step size η by validation NLL",
        "",
        f"Command: `{record['command']}`.  ",
        f"Machine: {machine_line(record['machine'])}; wall time {record['wall_seconds'] / 60:.1f} "
        "min. Validation split only (the test split is not used).",
        "",
        "| student | " + " | ".join(f"η = {e}/255" for e in etas) + " | chosen |",
        "|---|" + "---:|" * (len(etas) + 1),
    ]
    for method, by_eta in record["table"].items():
        cells = [f"{by_eta[e]['val_nll']:.4f} ({by_eta[e]['val_acc']:.4f})" for e in etas]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {record['chosen'][method]}/255 |")
    lines += ["", "Cells: validation NLL (validation accuracy) after the last epoch."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with a teacher")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--methods", nargs="+", default=["hydra+confods"])
    parser.add_argument("--etas", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--doc", type=Path, required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    table = sweep(args)
    record = {
        "command": "python benchmarks/choose_eta.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "wall_seconds": time.perf_counter() - start,
        "table": table,
        "chosen": {m: min(t, key=lambda e: t[e]["val_nll"]) for m, t in table.items()},
    }
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
