"""Reproduce the Hydra paper's MNIST comparison and write docs/results/hydra_mnist.{json,md}.

    python benchmarks/reproduce_hydra_mnist.py --data-dir ../shared/data

Runs configs/hydra_mnist.yaml end to end (M = 50 teacher, KD, EnD² and Hydra students) into
runs/hydra_mnist, then writes the results beside the paper's numbers with the machine, the
command and the wall time. ``--reuse-teacher`` keeps a teacher already trained in the run folder
(its training time is then read from its manifest); ``--evaluate-only`` also keeps the trained
students and only re-evaluates (training times again from the manifests).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ensemble_distill.checkpoint import read_manifest
from ensemble_distill.config import load_config
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line

ROOT = Path(__file__).resolve().parents[1]

# Tran et al. 2020, main table, MNIST columns (M = 50; BS in the TFP form; MU = mean MI).
PAPER = {
    "ensemble": {"acc": 0.9851, "nll": 0.0439, "brier_tfp": -0.9780, "mi": 9.97e-06},
    "endd": {"acc": 0.9842, "nll": 0.0521, "brier_tfp": -0.9285, "mi": 0.1158},
    "kd": {"acc": 0.9843, "nll": 0.0497, "brier_tfp": -0.9764, "mi": None},
    "hydra": {"acc": 0.9857, "nll": 0.0465, "brier_tfp": -0.9776, "mi": 2.28e-05},
}
NAMES = {
    "ensemble": "Ensemble (M=50)",
    "member": "one member",
    "endd": "Prior Network (EnD²)",
    "kd": "Knowledge distillation",
    "hydra": "Hydra (head=[100,100,10])",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "hydra_mnist")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results" / "hydra_mnist")
    parser.add_argument("--reuse-teacher", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args()
    config = load_config(
        ROOT / "configs" / "hydra_mnist.yaml", [f"data_dir={args.data_dir}", *args.overrides]
    )
    steps = ("teacher", "distill", "evaluate")[
        2 if args.evaluate_only else 1 if args.reuse_teacher else 0 :
    ]
    start = time.perf_counter()
    results = run(config, args.out, steps=steps, quiet=True)
    wall = time.perf_counter() - start
    teacher_seconds = read_manifest(args.out / "teacher")["train_seconds"]
    student_seconds = {
        name: read_manifest(args.out / "students" / name)["train_seconds"]
        for name in config.methods
    }
    # Phases kept from an earlier run count with the training time their manifests recorded.
    if "teacher" not in steps:
        wall += teacher_seconds
    if "distill" not in steps:
        wall += sum(student_seconds.values())
    record = {
        "command": "python benchmarks/reproduce_hydra_mnist.py " + " ".join(sys.argv[1:]),
        "steps_run": list(steps),
        "machine": machine_info(),
        "wall_seconds": wall,
        "teacher_train_seconds": teacher_seconds,
        "student_train_seconds": student_seconds,
        "config": config.to_dict(),
        "paper": PAPER,
        **results,
    }
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.with_suffix(".json").write_text(json.dumps(record, indent=2))
    args.doc.with_suffix(".md").write_text(markdown(record))
    print(markdown(record))


def fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(record: dict) -> str:
    methods = record["methods"]
    lines = [
        "# Hydra paper's MNIST comparison, reproduced",
        "",
        f"Command: `{record['command']}` (config `configs/hydra_mnist.yaml`).  ",
        f"Machine: {machine_line(record['machine'])}.  ",
        f"Steps run by this command: {', '.join(record['steps_run'])}; phases kept from an "
        "earlier run of it with the same config count with the training time in their "
        "manifests.  ",
        f"Wall time: {record['wall_seconds'] / 60:.1f} min in all (teacher "
        f"{record['teacher_train_seconds'] / 60:.1f} min; students "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in record["student_train_seconds"].items())
        + ").",
        "",
        "## Side by side with the paper (Tran et al. 2020, MNIST columns)",
        "",
        "BS is the TensorFlow-Probability form Σ p̄² − 2 p̄_y = Brier − 1; MU is the mean mutual "
        "information on the test set.",
        "",
        "| model | ACC ours | ACC paper | NLL ours | NLL paper | BS ours | BS paper | MU ours | "
        "MU paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, paper in PAPER.items():
        ours = methods[name]
        mi = "0 (single network)" if name == "kd" else fmt(ours["mi"], ".3g")
        lines.append(
            f"| {NAMES[name]} | {ours['acc']:.4f} | {paper['acc']:.4f} | {ours['nll']:.4f} | "
            f"{paper['nll']:.4f} | {ours['brier_tfp']:.4f} | {paper['brier_tfp']:.4f} | {mi} | "
            f"{fmt(paper['mi'], '.3g')} |"
        )
    lines += [
        "",
        "## All metrics (test split; OOD = Fashion-MNIST test set)",
        "",
        "| model | ACC ↑ | NLL ↓ | Brier ↓ | BS (TFP) ↓ | ECE ↓ | MU | OOD AUROC by MI ↑ | "
        "OOD AUROC by entropy ↑ | Spearman MI vs ensemble, test / OOD | params | "
        "ms/example b1 | ms/example b256 |",
        "|---|" + "---:|" * 12,
    ]
    for name, row in methods.items():
        rho = f"{fmt(row['mi_spearman_test'], '.3f')} / {fmt(row['mi_spearman_ood'], '.3f')}"
        lines.append(
            f"| {NAMES.get(name, name)} | {row['acc']:.4f} | {row['nll']:.4f} | "
            f"{row['brier']:.4f} | {row['brier_tfp']:.4f} | {row['ece']:.4f} | "
            f"{row['mi']:.3g} | {row['ood_auroc_mi']:.4f} | {row['ood_auroc']:.4f} | {rho} | "
            f"{row['params']:,} | {row['latency_ms_b1']:.3f} | {row['latency_ms_b256']:.4f} |"
        )
    return "\n".join(lines) + "\n" + diversity(record) + floors(methods)


def diversity(record: dict) -> str:
    """Why the heads' MI is small: the teachers' disagreement on the inputs Hydra learns from."""
    if "diversity" not in record:
        return ""
    d = record["diversity"]
    ratios = "; ".join(
        f"{name}: "
        + ", ".join(
            f"{ratio:.2f}× at η = {float(eta) * 255:.0f}/255" for eta, ratio in by_eta.items()
        )
        for name, by_eta in d["ratio_to_clean_train"].items()
    )
    return (
        "\n".join(
            [
                "",
                "## The teachers' disagreement on what Hydra learns from",
                "",
                "Mean pairwise KL between the 50 teachers (`diversity.json` in the run folder; "
                "2000 training inputs):",
                f"clean training inputs {d['clean_train']:.3g} nats, clean test inputs "
                f"{d['clean_test']:.3g} nats ({d['clean_test'] / d['clean_train']:.1f}× more).",
                f"Perturbed training inputs, relative to clean training inputs: {ratios}.",
                "",
            ]
        )
        + "\n"
    )


def floors(methods: dict) -> str:
    """The issue's acceptance floors, each with the measured numbers."""
    hydra, kd, endd, ens = (methods[k] for k in ("hydra", "kd", "endd", "ensemble"))
    checks = [
        ("Hydra NLL ≤ KD NLL", hydra["nll"] <= kd["nll"], f"{hydra['nll']:.4f} vs {kd['nll']:.4f}"),
        (
            "Hydra NLL ≤ EnD² NLL",
            hydra["nll"] <= endd["nll"],
            f"{hydra['nll']:.4f} vs {endd['nll']:.4f}",
        ),
        (
            "Hydra accuracy within 0.2 points of the ensemble",
            abs(hydra["acc"] - ens["acc"]) <= 0.002,
            f"{hydra['acc']:.4f} vs {ens['acc']:.4f}",
        ),
        (
            "Spearman ρ of Hydra's and the ensemble's MI on OOD ≥ 0.8",
            (hydra["mi_spearman_ood"] or 0) >= 0.8,
            fmt(hydra["mi_spearman_ood"], ".3f"),
        ),
        (
            "Hydra OOD AUROC by MI ≥ 0.95 × the ensemble's",
            hydra["ood_auroc_mi"] >= 0.95 * ens["ood_auroc_mi"],
            f"{hydra['ood_auroc_mi']:.4f} vs 0.95 × {ens['ood_auroc_mi']:.4f}",
        ),
        ("KD's MI is 0", kd["mi"] == 0, f"{kd['mi']}"),
    ]
    lines = [
        "",
        "## Acceptance floors (same run, against our own ensemble)",
        "",
        "| floor | met | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {value} |" for name, ok, value in checks]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
