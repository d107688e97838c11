"""The seeds' CIFAR-10 tables (issue 32, items 2 and 3): the ensemble, DE-1 … DE-M and every
student on the JPEG copy of CIFAR-10 (``DIR/cifar10-jpeg.tar.gz``), beside the Hydra paper's
CIFAR-10 rows, with the corruption curves of every model. Writes docs/results/cifar10.{md,json}
and docs/img/cifar10_shift.png:

    python benchmarks/cifar10.py --data-dir ../shared/data --seeds 0 [--only NAMES]

The teacher (configs/cifar10.yaml: M = 4 ResNet-20s, 30 epochs) is trained once per seed under
runs/cifar10/seed<k>/teacher; every student is distilled from a copy of it into its own run
folder, evaluated on the test split, the OOD set and the corrupted test copies
(``eval.corruptions``), and read from its results.json. Everything resumes: a killed teacher or
student goes on from its last epoch, a finished one is kept. ``--tabulate-only`` rewrites the
page from the finished runs; a row lists the seeds it holds. Sizing (docs/results/
cifar10_sizing.md): on two CPU cores one seed of every student costs days, BatchEnsemble most
(5.3x a KD epoch on ResNet-20); a GPU runs it in hours (``--device cuda``; the page's machine
line then names the GPU). ``--quick``: a few images, a tiny CNN, one corruption (a test).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cifar10_sizing import ARCHIVE, extract_subset
from seeds import (
    cell,
    check_only,
    curve_lines,
    curve_over_seeds,
    dee_marks,
    distil_from_teacher,
    ensemble_curve,
    mean_std,
    page_seeds,
    rows_over_seeds,
    write_page,
)

from ensemble_distill import metrics
from ensemble_distill.config import load_config
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.shift import MEAN, SHIFT_METRICS

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "cifar10"
DOC = ROOT / "docs" / "results" / "cifar10"
PLOT = ROOT / "docs" / "img" / "cifar10_shift.png"
PER_CLASS = 5000  # every training image (and 1,000 test images) of each class
DM_ETA = "perturbation.eta=0.0157"  # 4/255, the Fashion-MNIST study's ODS step
# name -> (method, overrides). Every student distils on live shift-and-flip views (``+augment``,
# as the teachers trained), then its own inputs; Hydra on those views alone is pinned to the
# paper's two phases (``auto`` would read the views as perturbed inputs).
CLEAN_HYDRA = ["hydra.phase1_fraction=0.5", "hydra.adapter_rank=0"]
STUDENTS: dict[str, tuple[str, list[str]]] = {
    "kd": ("kd+augment", []),
    "hydra": ("hydra+augment", CLEAN_HYDRA),
    "hydra+mixture": ("hydra+augment+mixture", []),  # the default Hydra on images
    "endd": ("endd+augment", []),  # the Proxy-Dirichlet target (the default)
    "endd (members)": ("endd+augment", ["endd.target=members"]),  # the 2019 likelihood
    "hydra, paper heads": (
        "hydra+augment",
        [*CLEAN_HYDRA, "hydra.head_widths=[100, 100]", "hydra.head_init=copy"],
    ),
    "be": ("be+augment", []),
    "be + gaussian": ("be+augment+gaussian", [DM_ETA]),
    "be + ods": ("be+augment+ods", [DM_ETA]),
    "be + confods": ("be+augment+confods", [DM_ETA]),
    "latentbe": ("latentbe+augment+diverse", []),
}
# Tran et al. 2020, main table, CIFAR-10 (M = 50; BS in the TFP form; MU = mean MI).
PAPER = {
    "ensemble (M = 50)": {"acc": 0.9226, "nll": 0.2392, "mi": 0.1055},
    "Prior Networks": {"acc": 0.8731, "nll": 0.4392, "mi": 0.0280},
    "knowledge distillation": {"acc": 0.8933, "nll": 0.3598, "mi": None},
    "Hydra (heads [100, 100, 10])": {"acc": 0.8992, "nll": 0.3179, "mi": 0.0074},
}
QUICK = ["model=cnn", "model_args={channels: [4], hidden: 16}", "members=2", "epochs=1"]
QUICK += ["eval.corruptions=[gaussian_noise]", "eval.severities=[1, 5]"]
COLUMNS = ("acc", "nll", "cnll", "brier", "ece", "dee", "mi", "ood_auroc", "ood_auroc_mi")
COLUMNS += ("ood_fpr95", "ood_fpr95_mi", "aurc", "mi_spearman_ood")


def prepare_images(data_dir: str, runs: Path, per_class: int) -> Path:
    """The archive's images extracted once under RUNS/images (train/, test/), with the
    Fashion-MNIST test files beside them for the OOD set."""
    images = extract_subset(Path(data_dir) / ARCHIVE, runs / "images", per_class)
    fashion = images / "fashion-mnist"
    fashion.mkdir(exist_ok=True)
    for path in (Path(data_dir) / "fashion-mnist").glob("t10k-*"):
        if not (fashion / path.name).is_file():
            shutil.copyfile(path, fashion / path.name)
    return images


def config_for(
    images: Path, seed: int, method: str, overrides: list[str], quick: bool, device: str = "cpu"
):
    items = [f"data_dir={images}", f"seed={seed}", f"methods=[{method}]", f"device={device}"]
    items += overrides
    return load_config(ROOT / "configs" / "cifar10.yaml", [*items, *(QUICK if quick else [])])


def run_seed(
    images: Path, runs: Path, seed: int, only: list[str] | None, quick: bool, device: str = "cpu"
) -> None:
    """The teacher once, then every student not finished yet from a copy of it (resumable),
    on ``device`` (``cpu``, or ``cuda`` on a GPU)."""
    check_only(only, STUDENTS)
    folder = runs / f"seed{seed}"
    teacher_run = folder / "teacher"
    if not (teacher_run / "teacher" / "manifest.json").is_file():
        print(f"seed {seed}: training the teacher", flush=True)
        config = config_for(images, seed, "kd", [], quick, device)
        run(config, teacher_run, steps=("teacher",), quiet=True)
    for name, (method, overrides) in STUDENTS.items():
        if only and name not in only:
            continue
        config = config_for(images, seed, method, overrides, quick, device)
        seconds = distil_from_teacher(teacher_run, folder / name, config)
        if seconds is not None:
            print(f"seed {seed}: {name} done ({seconds:.0f} s)", flush=True)


def collect(runs: Path, seed: int) -> dict | None:
    """One seed's rows (the ensemble, one member, every finished student) with their shift
    curves (mean over the corruptions per severity, severity 0 the clean test split), and the
    DE-k curve; None before any student has finished."""
    folder = runs / f"seed{seed}"
    done = [name for name in STUDENTS if (folder / name / "results.json").is_file()]
    if not done:
        return None
    curve = ensemble_curve(folder / done[0])
    rows, shift = {}, {}
    for name in done:
        results = json.loads((folder / name / "results.json").read_text())
        for model, row in results["methods"].items():
            label = name if model not in ("ensemble", "member") else model
            if label in rows:
                continue
            rows[label] = {key: row.get(key) for key in COLUMNS}
            rows[label]["dee"] = metrics.deep_ensemble_equivalent(curve, row["cnll"])
            rows[label]["dee_note"] = metrics.dee_note(curve, row["cnll"])
            clean = {key: row[key] for key in SHIFT_METRICS}
            by_severity = results.get("shift", {}).get(model, {}).get(MEAN, {})
            shift[label] = {"0": clean} | by_severity
    return {"rows": rows, "shift": shift, "curve": curve}


def tabulate(per_seed: dict[int, dict]) -> dict:
    """Mean ± std over the seeds that hold each row, per metric and per severity."""
    per_seed = {seed: record for seed, record in per_seed.items() if record is not None}
    rows, shift = rows_over_seeds(per_seed, COLUMNS), {}
    for name, row in rows.items():
        have = row["seeds"]
        severities = per_seed[have[0]]["shift"][name]
        shift[name] = {
            severity: {
                key: mean_std([per_seed[s]["shift"][name][severity][key] for s in have])
                for key in SHIFT_METRICS
            }
            for severity in severities
        }
    return {
        "seeds": sorted(per_seed),
        "rows": rows,
        "shift": shift,
        "curve": curve_over_seeds(per_seed),
    }


def plot_shift(summary: dict, path: Path) -> None:
    """Accuracy, NLL, ECE and mean MI against the corruptions' severity (0: the clean test
    split), one line per model (mean over seeds and corruptions)."""
    fig, axes = plt.subplots(1, len(SHIFT_METRICS), figsize=(15, 3.6))
    colors = plt.get_cmap("tab20").colors  # as many distinct colours as there are models
    for ax, key in zip(axes, SHIFT_METRICS, strict=True):
        for index, (name, by_severity) in enumerate(summary["shift"].items()):
            severities = sorted(by_severity, key=int)
            style = {"color": colors[index % len(colors)], "lw": 1}
            style |= {"color": "black", "lw": 2} if name == "ensemble" else {}
            style |= {"ls": "--"} if name.startswith(("be", "latentbe")) else {}
            values = [by_severity[s][key][0] for s in severities]
            ax.plot([int(s) for s in severities], values, marker="o", ms=3, label=name, **style)
        ax.set_xlabel("severity (0: clean)")
        ax.set_title({"acc": "accuracy", "nll": "NLL", "ece": "ECE", "mi": "mean MI"}[key])
    axes[-1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(record: dict) -> str:
    summary = record["summary"]
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [
        "# CIFAR-10: the ensemble and its students",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {seeds} (mean ± sample std where a row has "
        "several). Teacher: configs/cifar10.yaml (M = 4 ResNet-20s, 30 epochs, SGD one-cycle, "
        "shift-and-flip augmentation); students at 2x the teacher's epochs on live shift-and-"
        "flip views, then their own inputs, all live (`perturbation.pool=0`: a pool would freeze "
        "3 views of each image; the default Hydra's mixture runs live here too). "
        "Data: the JPEG copy of CIFAR-10 (quality 75; ../shared/data/SOURCES.md), 45,000 "
        "training and 5,000 validation images, the 10,000 test images. OOD: Fashion-MNIST's "
        "test set, grey 28x28 upsampled to 3x32x32: colour alone tells it apart, so read the "
        "OOD columns as weak evidence and the corruption curves below as the colour-native "
        "test. The test metrics are read once, as they are; nothing here was chosen on them.",
        "",
        "## The Hydra paper's CIFAR-10 rows (Tran et al. 2020, M = 50)",
        "",
        "| model | ACC | NLL | mean MI |",
        "|---|---:|---:|---:|",
    ]
    for name, row in PAPER.items():
        mi = "n/a" if row["mi"] is None else f"{row['mi']:.4f}"
        lines.append(f"| {name} | {row['acc']:.4f} | {row['nll']:.4f} | {mi} |")
    lines += [
        "",
        "Differences in setting: M = 4 members here (50 there), ResNet-20 (theirs unnamed in "
        "METHODS.md; Diversity Matters used ResNet-32), 30 teacher epochs, JPEG-compressed "
        "images (absolute numbers sit a little below the papers'; comparisons between methods "
        "on the same images hold). Diversity Matters reports CIFAR-10 recipes but its README "
        "numbers are CIFAR-100's, so no row of it is quoted here.",
        "",
        "## Ours",
        "",
        "| model | seeds | ACC | NLL | cNLL | Brier | ECE | DEE | mean MI | OOD AUROC entropy "
        "/ MI | FPR@95 entropy / MI | AURC | MI ρ OOD |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        auroc = f"{cell(row['ood_auroc'])} / {cell(row['ood_auroc_mi'])}"
        fpr = f"{cell(row['ood_fpr95'])} / {cell(row['ood_fpr95_mi'])}"
        dee = cell(row["dee"], ".2f") + dee_marks(row)
        cells = [cell(row[k]) for k in ("acc", "nll", "cnll", "brier", "ece")]
        seeds_text = ", ".join(map(str, row["seeds"]))
        lines.append(
            f"| {name} | {seeds_text} | {' | '.join(cells)} | {dee} | {cell(row['mi'])} | "
            f"{auroc} | {fpr} | {cell(row['aurc'])} | {cell(row['mi_spearman_ood'], '.3f')} |"
        )
    missing = [name for name in STUDENTS if name not in summary["rows"]]
    lines += [
        *curve_lines(summary["curve"]),
        "Not trained yet (the command resumes and adds them): "
        + (", ".join(f"`{name}`" for name in missing) if missing else "none")
        + ".",
        "",
        "## Under dataset shift",
        "",
        "Accuracy, NLL, ECE and mean MI on corrupted copies of the test split (CIFAR-10-C's "
        "functions, imagecorruptions package: gaussian_noise, defocus_blur, contrast, "
        "jpeg_compression), mean over the corruptions per severity; severity 0 is the clean "
        "test split. A student that keeps the ensemble's uncertainty keeps its curve.",
        "",
        f"![shift curves](../img/{PLOT.name})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding " + ARCHIVE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="+", help="train only these students (names)")
    parser.add_argument("--tabulate-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a few images, a tiny CNN: a test")
    parser.add_argument("--device", default="cpu", help="where to train: cpu, or cuda on a GPU")
    args = parser.parse_args()
    runs = RUNS.with_name("cifar10_quick") if args.quick else RUNS
    images = prepare_images(args.data_dir, runs, 12 if args.quick else PER_CLASS)
    if not args.tabulate_only:
        for seed in args.seeds:
            run_seed(images, runs, seed, args.only, args.quick, args.device)
    seeds = page_seeds(runs, args.seeds, marker="teacher")
    per_seed = {seed: collect(runs, seed) for seed in seeds}
    summary = tabulate(per_seed)
    doc, plot = (runs / "page", runs / "shift.png") if args.quick else (DOC, PLOT)
    plot_shift(summary, plot)
    record = {
        "command": "python benchmarks/cifar10.py --data-dir ../shared/data --seeds "
        + " ".join(map(str, seeds))
        + (f" --device {args.device}" if args.device != "cpu" else ""),
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "per_seed": per_seed,
        "summary": summary,
    }
    write_page(doc, record, markdown)


if __name__ == "__main__":
    main()
