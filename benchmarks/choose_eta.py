"""Choose the perturbation step size η by the student's validation NLL: a sweep.

    python benchmarks/choose_eta.py --run runs/diversity_fashion/seed0 --data-dir DIR \\
        --methods hydra+confods --etas 1 2 4 8

An instance of ``ensemble-distill sweep`` (:mod:`ensemble_distill.sweep`): the same as ::

    ensemble-distill sweep --config RUN/config.yaml --teacher RUN/teacher \\
        --out RUN/eta_sweep data_dir=DIR "methods=[hydra+confods]" \\
        perturbation.eta=0.00392...,0.00784...,...

Every η (in units of 1/255) is one point: each method in ``--methods`` is distilled from the
teacher already trained in ``--run`` (config from ``--run``/config.yaml, teacher shared, never
retrained) into RUN/eta_sweep/perturbation.eta=<η>. Each method's η is the sweep's choice:
the lowest final-epoch validation NLL. The table (validation NLL and accuracy per η) goes to
``--doc`` .md and .json; the test metrics the sweep also computes (RUN/eta_sweep/sweep.md)
play no part in the choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from seeds import write_page

from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.sweep import run_sweep

ETA = "perturbation.eta"
DIVERSITY_OFF = "eval.diversity_etas=[]"


def sweep(args: argparse.Namespace) -> tuple[dict[str, dict[str, dict[str, float]]], dict]:
    """({method: {η·255: final validation metrics}}, {method: chosen η·255}) from the sweep
    over ``perturbation.eta`` in RUN/eta_sweep."""
    labels = {repr(k / 255): f"{k:g}" for k in args.etas}  # the swept value → η in 1/255
    record = run_sweep(
        args.run / "eta_sweep",
        {ETA: list(labels)},
        # No diversity analysis: it describes the teacher, which every point shares.
        [f"data_dir={args.data_dir}", f"methods={json.dumps(args.methods)}", DIVERSITY_OFF],
        config_path=args.run / "config.yaml",
        quiet=True,
        teacher_from=args.run / "teacher",
    )
    table: dict[str, dict[str, dict[str, float]]] = {m: {} for m in args.methods}
    chosen = {}
    for row in record["rows"]:
        eta = labels[row["values"][ETA]]
        table[row["student"]][eta] = {"val_acc": row["val"]["acc"], "val_nll": row["val"]["nll"]}
        if row["chosen"]:
            chosen[row["student"]] = eta
    return table, chosen


def markdown(record: dict) -> str:
    etas = list(next(iter(record["table"].values())))
    lines = [
        "# Choosing the perturbation step size η by validation NLL",
        "",
        f"Command: `{record['command']}`.  ",
        f"Machine: {machine_line(record['machine'])}; wall time {record['wall_seconds'] / 60:.1f} "
        "min. Chosen on the validation split; the test metrics (eta_sweep/sweep.md) are not used.",
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
    table, chosen = sweep(args)
    record = {
        "command": "python benchmarks/choose_eta.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "wall_seconds": time.perf_counter() - start,
        "table": table,
        "chosen": chosen,
    }
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
