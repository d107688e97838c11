"""Hydra's parameters against its fidelity to the ensemble (the Hydra paper's RQ3), on MNIST
(M = 10, MLP 400-400 members). Writes docs/results/hydra_tradeoff.{json,md} and
docs/img/hydra_tradeoff.png:

    python benchmarks/hydra_tradeoff.py --data-dir ../shared/data --seeds 0 1 2
    python benchmarks/hydra_tradeoff.py --data-dir ../shared/data --seeds 0 1 2 --tabulate-only

Per seed, the teacher of configs/mnist.yaml with members=10 epochs=8 — the one
``benchmarks/recipes.py`` trains into RUNS/seed<k>/teacher/teacher, reused when there, else
trained and saved there — then every student of :data:`STUDENTS` at 2x the teacher's epochs,
its outputs on the validation, test and OOD (Fashion-MNIST test) splits saved to
OUT/seed<k>/<student>.safetensors (a finished student is kept: stop and rerun at will). The
page reads everything from those files; a new default is chosen on validation data only
(:func:`choose`), test numbers are read once for every student.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from seeds import mean_std, write_page

from ensemble_distill import metrics
from ensemble_distill.config import load_config
from ensemble_distill.engine import distill_student, prepare, teacher_train_outputs, train_teacher
from ensemble_distill.evaluation import (
    classification_scores,
    output_kind,
    predict_outputs,
    predictive,
)
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers.train import load_teacher, save_teacher

ROOT = Path(__file__).resolve().parents[1]
BASE = ["members=10", "epochs=8", "student.epochs_multiple=2", "eval.latency_repeats=3"]
# --quick: the same study on digits in seconds (a smoke test; its numbers mean nothing).
QUICK = ["dataset=digits", "members=3", "epochs=2", "model_args={widths: [32, 32]}"]
INDEPENDENT = ["hydra.head_init=independent"]
# name -> (method, overrides). With 400-400 members the weight layers are 784→400, 400→400 and
# the classifier: split 1 gives each head the 400→400 layer, split 2 all of them (M networks).
STUDENTS: dict[str, tuple[str, list[str]]] = {
    "kd": ("kd", []),
    "endd": ("endd", []),
    "be": ("be", []),
    "hydra": ("hydra", []),  # the default before this study: MLP heads 100-100, copied
    "hydra independent": ("hydra", INDEPENDENT),
    "hydra perturbed": ("hydra", ["hydra.head_init=perturbed"]),
    "hydra linear heads, independent": ("hydra", ["hydra.head_widths=[]", *INDEPENDENT]),
    "hydra split 1, independent": ("hydra", ["hydra.split=1", *INDEPENDENT]),
    "hydra split 2, independent": ("hydra", ["hydra.split=2", *INDEPENDENT]),
    "hydra + mixup": ("hydra+mixup", []),
    "hydra independent + mixup": ("hydra+mixup", INDEPENDENT),
    "hydra split 1, independent + mixup": ("hydra+mixup", ["hydra.split=1", *INDEPENDENT]),
}
DEFAULT = "hydra"
REFERENCES = ("kd", "endd", "be")
SPLITS = ("val", "test", "ood")


def config_for(data_dir: str | None, seed: int, method: str, overrides: list[str]):
    items = [*BASE, f"seed={seed}", f"methods=[{method}]", *overrides]
    items += [f"data_dir={data_dir}"] if data_dir else []
    return load_config(ROOT / "configs" / "mnist.yaml", items)


def teacher_for(setup, folder: Path):
    """The seed's teacher: loaded from ``folder`` when saved there, else trained and saved."""
    if (folder / "manifest.json").is_file():
        return load_teacher(folder)[0]
    start = time.perf_counter()
    teacher, _ = train_teacher(setup)
    info = {"train_seconds": time.perf_counter() - start}
    save_teacher(folder, teacher, setup.teacher_spec, info)
    return teacher


def splits(setup) -> dict[str, torch.Tensor]:
    """The inputs every model is scored on: validation, test and the OOD set."""
    data = setup.data
    return {"val": data.val.x, "test": data.test.x, "ood": next(iter(data.ood.values())).x}


def save_outputs(path: Path, model, setup, info: dict) -> None:
    """``model``'s outputs on every split, with its kind and ``info`` as metadata."""
    outputs = {
        split: predict_outputs(model, x, setup.config.eval.batch_size).contiguous()
        for split, x in splits(setup).items()
    }
    meta = {"kind": output_kind(model), "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(outputs, path, metadata=meta)


def run_seed(data_dir: str | None, seed: int, runs: Path, out: Path) -> None:
    """The teacher, then every student not finished yet (each written when done)."""
    folder = out / f"seed{seed}"
    setup = prepare(config_for(data_dir, seed, "kd", []))
    teacher = teacher_for(setup, runs / f"seed{seed}" / "teacher" / "teacher")
    if not (folder / "ensemble.safetensors").is_file():
        params = sum(p.numel() for p in teacher.parameters())
        flops = metrics.forward_flops(teacher, setup.data.train.x[:64])
        save_outputs(
            folder / "ensemble.safetensors", teacher, setup, {"params": params, "flops": flops}
        )
    train_outputs = teacher_train_outputs(setup, teacher)
    for name, (method, overrides) in STUDENTS.items():
        path = folder / f"{name}.safetensors"
        if path.is_file():
            continue
        student_setup = prepare(config_for(data_dir, seed, method, overrides), setup.data)
        start = time.perf_counter()
        student, _ = distill_student(student_setup, teacher, method, train_outputs)
        seconds = time.perf_counter() - start
        info = {
            "params": sum(p.numel() for p in student.parameters()),
            "flops": metrics.forward_flops(student.eval(), setup.data.train.x[:64]),
            "train_seconds": seconds,
        }
        save_outputs(path, student, student_setup, info)
        print(f"seed {seed}: {name} ({seconds:.0f} s)", flush=True)


def read_outputs(path: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        return {s: f.get_tensor(s) for s in SPLITS}, meta["kind"], json.loads(meta["info"])


def score_seed(data_dir: str | None, seed: int, out: Path) -> dict[str, dict]:
    """Every model's fidelity to the ensemble on one seed (test and OOD), its validation scores
    (what the choice reads) and its cost."""
    setup = prepare(config_for(data_dir, seed, "kd", []))
    folder = out / f"seed{seed}"
    outputs, kinds, infos = {}, {}, {}
    outputs["ensemble"], kinds["ensemble"], infos["ensemble"] = read_outputs(
        folder / "ensemble.safetensors"
    )
    # Member 0 alone: one member's cost, the DE-1 end of the curve.
    outputs["member"] = {s: v[:, 0] for s, v in outputs["ensemble"].items()}
    kinds["member"] = "logits"
    infos["member"] = {k: v // setup.config.members for k, v in infos["ensemble"].items()}
    for name in STUDENTS:  # those trained so far: a page can be written while the rest run
        if (folder / f"{name}.safetensors").is_file():
            outputs[name], kinds[name], infos[name] = read_outputs(folder / f"{name}.safetensors")
    rows, curve = classification_scores(outputs, kinds, setup.data)
    ensemble_ood_mi = predictive(outputs["ensemble"]["ood"], kinds["ensemble"]).mi.mean()
    ensemble_val = predictive(outputs["ensemble"]["val"], kinds["ensemble"])
    y_val = setup.data.val.y
    for name, row in rows.items():
        val = predictive(outputs[name]["val"], kinds[name])
        ood_mi = predictive(outputs[name]["ood"], kinds[name]).mi.mean()
        row |= infos[name]
        row["ood_mi_ratio"] = float(ood_mi / ensemble_ood_mi)
        row["val_cnll"] = metrics.calibrated_metrics(val.probs, y_val, val.probs, y_val)["cnll"]
        row["val_mi_spearman"] = metrics.rank_correlation(val.mi, ensemble_val.mi)
    return {"rows": rows, "curve": curve}


KEYS = ("acc", "cnll", "dee", "ood_auroc_mi", "mi_spearman_test", "mi_spearman_ood")
KEYS += ("ood_mi_ratio", "val_cnll", "val_mi_spearman", "params", "flops", "train_seconds")


def tabulate(per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    names = [n for n in per_seed[seeds[0]]["rows"] if all(n in per_seed[s]["rows"] for s in seeds)]
    rows = {
        name: {key: mean_std([per_seed[s]["rows"][name].get(key) for s in seeds]) for key in KEYS}
        for name in names
    }
    first = per_seed[seeds[0]]["curve"]
    curve = [mean_std([per_seed[s]["curve"][k] for s in seeds]) for k in range(len(first))]
    missing = [name for name in STUDENTS if name not in rows]
    return {
        "seeds": seeds,
        "rows": rows,
        "curve": curve,
        "chosen": choose(rows),
        "missing": missing,
    }


CHOICE_RULE = (
    "among the Hydra students with at most the old default's parameters (a default must stay "
    "compact) and a validation cNLL within 2 % of the best of them, the one whose per-example "
    "MI ranks the validation examples most like the ensemble's (Spearman ρ); ties go to fewer "
    "parameters"
)


def choose(rows: dict[str, dict]) -> str:
    """The new default Hydra, from validation data only: :data:`CHOICE_RULE`."""
    budget = rows[DEFAULT]["params"][0]
    hydras = {
        name: row
        for name, row in rows.items()
        if name.startswith("hydra") and row["params"][0] <= budget
    }
    best = min(row["val_cnll"][0] for row in hydras.values())
    close = [name for name, row in hydras.items() if row["val_cnll"][0] <= 1.02 * best]

    def fidelity(name: str) -> tuple[float, float]:
        rho = hydras[name]["val_mi_spearman"]
        return (rho[0] if rho else -1.0, -hydras[name]["params"][0])

    return max(close, key=fidelity)


PANELS = (
    ("cnll", "test cNLL (nats) ↓"),
    ("ood_auroc_mi", "OOD AUROC by MI ↑"),
    ("mi_spearman_test", "Spearman ρ of MI with the ensemble's, test ↑"),
    ("mi_spearman_ood", "Spearman ρ of MI with the ensemble's, OOD ↑"),
    ("ood_mi_ratio", "mean OOD MI, student / ensemble"),
)


def plot(summary: dict, path: Path) -> None:
    """Each fidelity measure against parameters (log x), ensemble and references marked."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.0 * len(PANELS), 4.0))
    references = {"kd": "s", "endd": "D", "be": "P", "ensemble": "*", "member": "X"}
    hydras = [name for name in summary["rows"] if name not in references]
    palette = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for name, row in summary["rows"].items():
            if row[key] is None:
                continue
            style = (
                {"marker": references[name], "color": "0.35"}
                if name in references
                else {
                    "marker": "^" if "mixup" in name else "o",
                    "color": palette(hydras.index(name)),
                }
            )
            ax.errorbar(
                row["params"][0],
                row[key][0],
                yerr=row[key][1],
                mfc="none" if name == DEFAULT else None,
                ms=10 if name in (DEFAULT, summary["chosen"]) else 7,
                ls="none",
                label=name + (" (chosen)" if name == summary["chosen"] else ""),
                **style,
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters")
        ax.set_title(title, fontsize=9)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def markdown(record: dict) -> str:
    summary = record["summary"]
    spread = len(summary["seeds"]) > 1  # one seed has no spread to show

    def c(value, fmt=".4f"):
        if value is None:
            return "n/a"
        return format(value[0], fmt) + (f" ± {format(value[1], fmt)}" if spread else "")

    lines = [
        "# Hydra's parameters against its fidelity to the ensemble (RQ3), MNIST M = 10",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {', '.join(map(str, summary['seeds']))}"
        + (" (mean ± sample std)" if spread else " (one seed so far: no spread)")
        + ". Teacher: configs/mnist.yaml with members=10 epochs=8 (MLP "
        "400-400); every student trains 2x the teacher's epochs with the default recipe "
        "(function matching, one cycle). OOD: the Fashion-MNIST test set. *MI ρ*: Spearman "
        "rank correlation of the student's per-example mutual information with the "
        "ensemble's; *OOD MI ratio*: mean MI on the OOD set, student / ensemble. Heads: "
        "`hydra` = the paper's MLP heads (100-100) copied from the phase-1 head (the default "
        "before this study); `independent` / `perturbed` = other head initialisations; "
        "`split k` = each head takes over the members' last k weight layers (k = 2: M full "
        "networks, the ensemble's architecture); `+ mixup` = the teachers live on mixup "
        "inputs. *MFLOPs*: forward FLOPs per example (FlopCounterMode). *train s*: wall "
        "seconds while other jobs shared the machine's two cores at times (the same kind of "
        "student took 12 s to 900 s): rough, read FLOPs for cost.",
        "",
        "| model | params | MFLOPs | test ACC | test cNLL | DEE | OOD AUROC (MI) | MI ρ test | "
        "MI ρ OOD | OOD MI ratio | val cNLL | val MI ρ | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        mark = " **(chosen)**" if name == summary["chosen"] else ""
        mark += " *(old default)*" if name == DEFAULT else ""
        lines.append(
            f"| {name}{mark} | {row['params'][0]:,.0f} | {row['flops'][0] / 1e6:.2f} | "
            f"{c(row['acc'])} | {c(row['cnll'])} | "
            f"{c(row['dee'], '.2f')} | {c(row['ood_auroc_mi'])} | "
            f"{c(row['mi_spearman_test'], '.3f')} | {c(row['mi_spearman_ood'], '.3f')} | "
            f"{c(row['ood_mi_ratio'], '.3f')} | {c(row['val_cnll'])} | "
            f"{c(row['val_mi_spearman'], '.3f')} | {c(row['train_seconds'], '.0f')} |"
        )
    if summary["missing"]:
        lines += [
            "",
            "Not trained yet for every seed (the command resumes and adds them): "
            + ", ".join(f"`{name}`" for name in summary["missing"])
            + ".",
        ]
    lines += [
        "",
        "DE-k test cNLL: "
        + ", ".join(f"DE-{k} {v[0]:.4f}" for k, v in enumerate(summary["curve"], start=1))
        + ".",
        "",
        f"**Choice** (validation data only: {CHOICE_RULE}): `{summary['chosen']}`.",
        "",
        "![fidelity against parameters](../img/hydra_tradeoff.png)",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, help="teachers (default: runs/recipes)")
    parser.add_argument("--out", type=Path, help="students (default: runs/hydra_tradeoff)")
    parser.add_argument("--doc", type=Path, help="page (default: docs/results/hydra_tradeoff)")
    parser.add_argument("--plot", type=Path, help="default: docs/img/hydra_tradeoff.png")
    parser.add_argument("--tabulate-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="digits, tiny, into --out: a test")
    args = parser.parse_args()
    if args.quick:  # never into the study's folders or pages
        BASE[:] = [*BASE, *QUICK]
        args.out = args.out or ROOT / "runs" / "hydra_tradeoff_quick"
        args.runs = args.runs or args.out / "teachers"
        args.doc, args.plot = args.doc or args.out / "page", args.plot or args.out / "page.png"
    args.runs = args.runs or ROOT / "runs" / "recipes"
    args.out = args.out or ROOT / "runs" / "hydra_tradeoff"
    args.doc = args.doc or ROOT / "docs" / "results" / "hydra_tradeoff"
    args.plot = args.plot or ROOT / "docs" / "img" / "hydra_tradeoff.png"
    if not args.tabulate_only:
        for seed in args.seeds:
            run_seed(args.data_dir, seed, args.runs, args.out)
    per_seed = {seed: score_seed(args.data_dir, seed, args.out) for seed in args.seeds}
    summary = tabulate(per_seed)
    plot(summary, args.plot)
    data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
    seeds = " ".join(map(str, args.seeds))
    record = {
        "command": f"python benchmarks/hydra_tradeoff.py{data_dir} --seeds {seeds}",
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "per_seed": per_seed,
        "summary": summary,
    }
    write_page(args.doc, record, markdown)


if __name__ == "__main__":
    main()
