"""Hydra's parameters against its fidelity to the ensemble (the Hydra paper's RQ3), on MNIST
(M = 10, MLP 400-400 members) and Fashion-MNIST (M = 4, the CNN of
configs/diversity_fashion.yaml). Writes docs/results/hydra_tradeoff[_fashion].{json,md} and
docs/img/hydra_tradeoff[_fashion].png:

    python benchmarks/hydra_tradeoff.py --data-dir ../shared/data --seeds 0 1 2
    python benchmarks/hydra_tradeoff.py --data-dir ../shared/data --dataset fashion-mnist --seeds 0
    python benchmarks/hydra_tradeoff.py --data-dir ../shared/data --seeds 0 1 2 --tabulate-only

Per seed, the study's teacher — on MNIST the one ``benchmarks/recipes.py`` trains into
runs/recipes/seed<k>/teacher/teacher — reused when saved, else trained and saved; then every
student of the study at 2x the teacher's epochs, its outputs on the validation, test and OOD
splits saved to OUT/seed<k>/<student>.safetensors (a finished student is kept: stop and rerun
at will). The page reads everything from those files; a new default is chosen on validation
data only (:func:`choose`), test numbers are read once for every student.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from seeds import (
    BEFORE_AUTO,
    check_only,
    curve_lines,
    dee_marks,
    mean_std,
    read_record,
    tie_text,
    ties,
    write_page,
)

from ensemble_distill import metrics
from ensemble_distill.config import load_config
from ensemble_distill.engine import distill_student, prepare, teacher_train_outputs, train_teacher
from ensemble_distill.evaluation import (
    classification_scores,
    has_members,
    output_kind,
    predict_outputs,
    predictive,
)
from ensemble_distill.methods import resolve_method
from ensemble_distill.out_folder import remove_progress
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.settings import student_settings
from ensemble_distill.teachers.train import load_teacher, save_teacher

ROOT = Path(__file__).resolve().parents[1]
# --quick: the MNIST study on digits in seconds (a smoke test; its numbers mean nothing).
QUICK = ("dataset=digits", "members=3", "epochs=2", "model_args={widths: [32, 32]}")
# Every student pins its head design, so a change of the defaults changes no row.
PAPER_HEADS = ["hydra.head_widths=[100, 100]"]  # the paper's MNIST heads (the old default)
COPY = ["hydra.head_init=copy"]
INDEPENDENT = ["hydra.head_init=independent"]
LINEAR = ["hydra.head_widths=[]", *INDEPENDENT]


def split(k: int) -> list[str]:
    return ["hydra.head_widths=null", f"hydra.split={k}", *INDEPENDENT]


# name -> (method, overrides). With 400-400 members the weight layers are 784→400, 400→400 and
# the classifier: split 1 gives each head the 400→400 layer, split 2 all of them (M networks).
STUDENTS: dict[str, tuple[str, list[str]]] = {
    "kd": ("kd", []),
    "endd": ("endd", ["endd.target=members"]),  # the default when the study ran
    "be": ("be", []),
    "hydra": ("hydra", [*PAPER_HEADS, *COPY]),  # the default before this study
    "hydra independent": ("hydra", [*PAPER_HEADS, *INDEPENDENT]),
    "hydra perturbed": ("hydra", [*PAPER_HEADS, "hydra.head_init=perturbed"]),
    "hydra linear heads, independent": ("hydra", LINEAR),
    "hydra split 1, independent": ("hydra", split(1)),
    "hydra split 2, independent": ("hydra", split(2)),
    "hydra + mixup": ("hydra+mixup", [*PAPER_HEADS, *COPY]),
    "hydra independent + mixup": ("hydra+mixup", [*PAPER_HEADS, *INDEPENDENT]),
    "hydra split 1, independent + mixup": ("hydra+mixup", split(1)),
    "hydra linear heads, independent + mixup": ("hydra+mixup", LINEAR),
}
# The CNN's weight layers are conv 1→8, conv 8→16, 784→256 and the classifier: split 1 gives
# each head the 784→256 layer, nearly all of a member's parameters. Fewer students than on
# MNIST (the CNN costs more on 2 cores), the most telling first.
FASHION_STUDENTS = {
    name: STUDENTS[name]
    for name in (
        "kd",
        "hydra",
        "hydra linear heads, independent",
        "hydra independent",
        "be",
        "endd",
        "hydra linear heads, independent + mixup",
        "hydra split 1, independent",
    )
}
DEFAULT = "hydra"
REFERENCES = ("kd", "endd", "be")


@dataclass(frozen=True)
class Study:
    """One data set's study: its teacher and students, and where it reads and writes."""

    title: str
    config: str  # under configs/
    base: tuple[str, ...]  # overrides of every run (teacher and students)
    students: dict[str, tuple[str, list[str]]]
    teacher_text: str  # the page's description of the teacher
    ood_text: str
    split_text: str  # what split k means for these members
    runs: Path  # the teachers: runs/seed<k>/teacher/teacher
    out: Path  # the students' outputs: out/seed<k>/<student>.safetensors
    doc: Path
    plot: Path

    def config_for(self, data_dir: str | None, seed: int, method: str, overrides: list[str]):
        items = [*BEFORE_AUTO, *self.base, f"seed={seed}", f"methods=[{method}]", *overrides]
        items += [f"data_dir={data_dir}"] if data_dir else []
        return load_config(ROOT / "configs" / self.config, items)


STUDIES = {
    "mnist": Study(
        title="MNIST M = 10",
        config="mnist.yaml",
        base=("members=10", "epochs=8", "student.epochs_multiple=2", "eval.latency_repeats=3"),
        students=STUDENTS,
        teacher_text="configs/mnist.yaml with members=10 epochs=8 (MLP 400-400)",
        ood_text="the Fashion-MNIST test set",
        split_text="k = 2: M full networks, the ensemble's architecture",
        runs=ROOT / "runs" / "recipes",
        out=ROOT / "runs" / "hydra_tradeoff",
        doc=ROOT / "docs" / "results" / "hydra_tradeoff",
        plot=ROOT / "docs" / "img" / "hydra_tradeoff.png",
    ),
    # The paper recipe of configs/diversity_fashion.yaml replaced by the project's defaults, so
    # both studies compare the same students.
    "fashion-mnist": Study(
        title="Fashion-MNIST M = 4",
        config="diversity_fashion.yaml",
        base=(
            *("student.epochs=null", "student.epochs_multiple=2", "student.schedule=onecycle"),
            *("kd.alpha=1", "kd.temperature=1"),
            *("hydra.temperature=1", "hydra.alpha=1"),
            *("eval.latency_repeats=3", "eval.diversity_etas=[]"),
        ),
        students=FASHION_STUDENTS,
        teacher_text="configs/diversity_fashion.yaml (M = 4 CNNs, conv 8-16, dense 256, "
        "15 epochs) with the project's default student recipe",
        ood_text="the MNIST test set",
        split_text="k = 3: M full networks",
        runs=ROOT / "runs" / "hydra_tradeoff_fashion" / "teachers",
        out=ROOT / "runs" / "hydra_tradeoff_fashion",
        doc=ROOT / "docs" / "results" / "hydra_tradeoff_fashion",
        plot=ROOT / "docs" / "img" / "hydra_tradeoff_fashion.png",
    ),
}


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


def save_outputs(path: Path, model, setup, info: dict, inputs=splits) -> None:
    """``model``'s outputs on every split of ``inputs(setup)``, with its kind and ``info`` as
    metadata."""
    outputs = {
        split: predict_outputs(model, x, setup.config.eval.batch_size).contiguous()
        for split, x in inputs(setup).items()
    }
    meta = {"kind": output_kind(model), "info": json.dumps(info)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(outputs, path, metadata=meta)


def run_seed(
    study: Study, data_dir: str | None, seed: int, only: list[str] | None = None, inputs=splits
) -> None:
    """The teacher, then every student not finished yet (each written when done; ``only``:
    those of these names), their outputs on every split of ``inputs(setup)``."""
    check_only(only, study.students)
    folder = study.out / f"seed{seed}"
    setup = prepare(study.config_for(data_dir, seed, "kd", []))
    teacher = teacher_for(setup, study.runs / f"seed{seed}" / "teacher" / "teacher")
    if not (folder / "ensemble.safetensors").is_file():
        params = sum(p.numel() for p in teacher.parameters())
        flops = metrics.forward_flops(teacher, setup.data.train.x[:64])
        info = {"params": params, "flops": flops}
        save_outputs(folder / "ensemble.safetensors", teacher, setup, info, inputs)
    train_outputs = teacher_train_outputs(setup, teacher)
    for name, (method, overrides) in study.students.items():
        path = folder / f"{name}.safetensors"
        if path.is_file() or (only and name not in only):
            continue
        student_setup = prepare(study.config_for(data_dir, seed, method, overrides), setup.data)
        # Per-epoch progress, as a run keeps it: a student killed mid-training resumes there.
        progress = folder / "progress" / name
        resumed = progress.is_dir()
        kind, perturbation = resolve_method(method)
        settings = student_settings(student_setup.config, kind.section, perturbation is not None)
        start = time.perf_counter()
        student, _ = distill_student(
            student_setup,
            teacher,
            method,
            train_outputs,
            progress_dir=progress,
            progress_settings=settings,
        )
        seconds = time.perf_counter() - start
        info = {
            "params": sum(p.numel() for p in student.parameters()),
            "flops": metrics.forward_flops(student.eval(), setup.data.train.x[:64]),
            # a resumed student's seconds miss the part before the interruption: unknown
            "train_seconds": None if resumed else seconds,
        }
        save_outputs(path, student, student_setup, info, inputs)
        remove_progress(progress)
        print(f"seed {seed}: {name} ({seconds:.0f} s{', resumed' if resumed else ''})", flush=True)


def read_outputs(path: Path) -> tuple[dict[str, torch.Tensor], str, dict]:
    """The outputs :func:`save_outputs` wrote (every split it saved), their kind and info."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        outputs = {split: f.get_tensor(split) for split in f.keys()}  # noqa: SIM118
        return outputs, meta["kind"], json.loads(meta["info"])


def score_seed(study: Study, data_dir: str | None, seed: int) -> dict[str, dict]:
    """Every model's fidelity to the ensemble on one seed (test and OOD), its validation scores
    (what the choice reads) and its cost."""
    setup = prepare(study.config_for(data_dir, seed, "kd", []))
    folder = study.out / f"seed{seed}"
    outputs, kinds, infos = {}, {}, {}
    outputs["ensemble"], kinds["ensemble"], infos["ensemble"] = read_outputs(
        folder / "ensemble.safetensors"
    )
    # Member 0 alone: one member's cost, the DE-1 end of the curve.
    outputs["member"] = {s: v[:, 0] for s, v in outputs["ensemble"].items()}
    kinds["member"] = "logits"
    infos["member"] = {k: v // setup.config.members for k, v in infos["ensemble"].items()}
    for name in study.students:  # those trained so far: a page can be written while the rest run
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
    return {"rows": rows, "curve": curve, "diversity": diversity(outputs, kinds)}


def diversity(outputs: dict[str, dict], kinds: dict[str, str]) -> dict[str, dict]:
    """{model: {split: bins}}: the members' mean pairwise KL per bin of the model's own
    confidence on test and OOD inputs (Nam et al. 2021, Fig. 3b), for the models with members
    (the ensemble, Hydra, BatchEnsemble)."""
    return {
        name: {
            split: metrics.diversity_by_confidence(predictive(by_split[split], kinds[name]).probs)
            for split in ("test", "ood")
        }
        for name, by_split in outputs.items()
        if has_members(by_split["test"], kinds[name])
    }


KEYS = ("acc", "cnll", "dee", "ood_auroc_mi", "mi_spearman_test", "mi_spearman_ood")
KEYS += ("ood_mi_ratio", "val_cnll", "val_mi_spearman", "params", "flops", "train_seconds")


def tabulate(study: Study, per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    names = [n for n in per_seed[seeds[0]]["rows"] if all(n in per_seed[s]["rows"] for s in seeds)]
    rows = {}
    for name in names:
        rows[name] = {
            key: mean_std([per_seed[s]["rows"][name].get(key) for s in seeds]) for key in KEYS
        }
        notes = {per_seed[s]["rows"][name].get("dee_note") for s in seeds}
        rows[name]["dee_notes"] = sorted(note for note in notes if note)
    first = per_seed[seeds[0]]["curve"]
    curve = [mean_std([per_seed[s]["curve"][k] for s in seeds]) for k in range(len(first))]
    missing = [name for name in study.students if name not in rows]
    return {
        "seeds": seeds,
        "rows": rows,
        "curve": curve,
        "diversity": mean_diversity([per_seed[s]["diversity"] for s in seeds]),
        "chosen": (chosen := choose(rows))[0],
        "tie": chosen[1],
        "missing": missing,
    }


def mean_diversity(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Per model and split, the bins' edges and the mean over seeds of each bin's diversity (the
    seeds where the model was scored and the bin is not empty)."""
    names = list(dict.fromkeys(name for seed in per_seed for name in seed))
    summary = {}
    for name in names:
        scored = [seed[name] for seed in per_seed if name in seed]
        summary[name] = {}
        for split, first in scored[0].items():
            bins = zip(*(seed[split]["diversity"] for seed in scored), strict=True)
            summary[name][split] = {
                "edges": first["edges"],
                "diversity": [(mean_std(values) or (None,))[0] for values in bins],
            }
    return summary


CHOICE_RULE = (
    "among the Hydra students with at most 3x KD's parameters (the issue's bound on a compact "
    "default) and a validation cNLL within 2 % of the best of them, the one whose per-example "
    "MI ranks the validation examples most like the ensemble's (Spearman ρ); a gap in ρ "
    "smaller than the seeds' std is a tie, broken by fewer parameters"
)


def choose(rows: dict[str, dict]) -> tuple[str, list[str]]:
    """The new default Hydra, from validation data only (:data:`CHOICE_RULE`), and the
    students it ties with."""
    budget = 3 * rows["kd"]["params"][0]
    hydras = {
        name: row
        for name, row in rows.items()
        if name.startswith("hydra") and row["params"][0] <= budget and row["val_mi_spearman"]
    }
    best = min(row["val_cnll"][0] for row in hydras.values())
    close = [name for name, row in hydras.items() if row["val_cnll"][0] <= 1.02 * best]
    top = max(close, key=lambda name: hydras[name]["val_mi_spearman"][0])
    tied = [top, *ties(hydras, top, close, "val_mi_spearman")]
    chosen = min(tied, key=lambda name: (hydras[name]["params"][0], tied.index(name)))
    return chosen, [name for name in tied if name != chosen]


def floors(rows: dict[str, dict], chosen: str) -> list[tuple[str, bool]]:
    """The issue's floors for ``chosen`` as (what was measured, met)."""
    row, kd, ensemble = rows[chosen], rows["kd"], rows["ensemble"]
    rho, ratio = row["mi_spearman_ood"][0], row["ood_mi_ratio"][0]
    auroc, floor = row["ood_auroc_mi"][0], 0.97 * ensemble["ood_auroc_mi"][0]
    size = row["params"][0] / kd["params"][0]
    return [
        (f"parameters {size:.2f}x KD's <= 3x", size <= 3),
        (f"Spearman ρ of MI with the ensemble's on OOD {rho:.3f} >= 0.8", rho >= 0.8),
        (f"mean OOD MI ratio {ratio:.3f} within [1/3, 3]", 1 / 3 <= ratio <= 3),
        (f"OOD AUROC by MI {auroc:.4f} >= 0.97 x the ensemble's ({floor:.4f})", auroc >= floor),
        (
            f"cNLL {row['cnll'][0]:.4f} <= KD's {kd['cnll'][0]:.4f}",
            row["cnll"][0] <= kd["cnll"][0],
        ),
    ]


PANELS = (
    ("cnll", "test cNLL (nats) ↓"),
    ("ood_auroc_mi", "OOD AUROC by MI ↑"),
    ("mi_spearman_test", "Spearman ρ of MI with the ensemble's, test ↑"),
    ("mi_spearman_ood", "Spearman ρ of MI with the ensemble's, OOD ↑"),
    ("ood_mi_ratio", "mean OOD MI, student / ensemble (log)"),
)


def plot(summary: dict, path: Path) -> None:
    """Each fidelity measure against parameters (log x), ensemble and references marked, the
    issue's floors as dotted lines, the legend in the sixth panel."""
    fig, grid = plt.subplots(2, 3, figsize=(14.0, 8.0))
    axes = list(grid.flat)
    references = {"kd": "s", "endd": "D", "be": "P", "ensemble": "*", "member": "X"}
    hydras = [name for name in summary["rows"] if name not in references]
    palette = plt.get_cmap("tab20")
    for ax, (key, title) in zip(axes, PANELS, strict=False):
        for name, row in summary["rows"].items():
            if row[key] is None or (key == "ood_mi_ratio" and row[key][0] <= 0):
                continue  # one network has no MI: nothing to place on a log axis
            style = (
                {"marker": references[name], "color": "0.35"}
                if name in references
                else {
                    "marker": "^" if "mixup" in name else "o",
                    "color": palette(hydras.index(name) % 20),
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
        floor_lines(ax, key, summary["rows"])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(millions))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("parameters")
        ax.set_title(title, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].axis("off")
    axes[-1].legend(handles, labels, fontsize=8, loc="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def millions(value: float, _position: int) -> str:
    return f"{value / 1e6:g}M"


def floor_lines(ax, key: str, rows: dict[str, dict]) -> None:
    """The issue's floor for ``key`` (dotted) and the 3x-KD parameter bound (dashed)."""
    ax.axvline(3 * rows["kd"]["params"][0], color="0.6", ls="--", lw=0.8)
    if key == "cnll":
        ax.axhline(rows["kd"]["cnll"][0], color="0.6", ls=":", lw=1.0)
    elif key == "ood_auroc_mi":
        ax.axhline(0.97 * rows["ensemble"]["ood_auroc_mi"][0], color="0.6", ls=":", lw=1.0)
    elif key == "mi_spearman_ood":
        ax.axhline(0.8, color="0.6", ls=":", lw=1.0)
    elif key == "ood_mi_ratio":
        ax.set_yscale("log")
        ax.axhspan(1 / 3, 3, color="0.9", zorder=0)


def plot_diversity(summary: dict, path: Path) -> None:
    """The members' mean pairwise KL per confidence bin on test and OOD inputs: the ensemble
    (black) against the students with members (Nam et al. 2021, Fig. 3b)."""
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.0), sharey=True)
    names = list(summary["diversity"])
    palette = plt.get_cmap("tab10")
    splits = (("test", "test inputs"), ("ood", "OOD inputs"))
    for ax, (split, title) in zip(axes, splits, strict=True):
        for index, name in enumerate(names):
            bins = summary["diversity"][name][split]
            edges = bins["edges"]
            centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
            values = [v if v is not None and v > 0 else float("nan") for v in bins["diversity"]]
            ensemble = name == "ensemble"
            ax.plot(
                centres,
                values,
                color="black" if ensemble else palette(index % 10),
                ls="--" if ensemble else "-",
                marker="s" if ensemble else ("^" if "mixup" in name else "o"),
                ms=3.5,
                lw=1.8 if ensemble or name == summary["chosen"] else 1.0,
                label=name + (" (chosen)" if name == summary["chosen"] else ""),
            )
        ax.set_yscale("log")
        ax.set_xlabel("the model's confidence max p̄ (bin centre)")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("members' mean pairwise KL (nats, log)")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def diversity_plot_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_diversity{path.suffix}")


def markdown(study: Study, record: dict) -> str:
    summary = record["summary"]
    spread = len(summary["seeds"]) > 1  # one seed has no spread to show

    def c(value, fmt=".4f"):
        if value is None:
            return "n/a"
        return format(value[0], fmt) + (f" ± {format(value[1], fmt)}" if spread else "")

    lines = [
        f"# Hydra's parameters against its fidelity to the ensemble (RQ3), {study.title}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {', '.join(map(str, summary['seeds']))}"
        + (" (mean ± sample std)" if spread else " (one seed so far: no spread)")
        + f". Teacher: {study.teacher_text}; every student trains 2x the teacher's epochs "
        "with the default recipe (function matching, one cycle). "
        f"OOD: {study.ood_text}. *MI ρ*: Spearman "
        "rank correlation of the student's per-example mutual information with the "
        "ensemble's; *OOD MI ratio*: mean MI on the OOD set, student / ensemble. Heads: "
        "`hydra` = the paper's MLP heads (100-100) copied from the phase-1 head (the default "
        "before this study); `independent` / `perturbed` = other head initialisations; "
        "`split k` = each head takes over the members' last k weight layers "
        f"({study.split_text}); `linear heads` = one linear layer per head on the body's "
        "features; `+ mixup` = the teachers live on mixup "
        "inputs. *MFLOPs*: forward FLOPs per example (FlopCounterMode). *train s*: wall "
        "seconds with 1 or 2 torch threads while other jobs shared the machine's two cores "
        "(the same kind of student took 12 s to 900 s): rough, read FLOPs for cost.",
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
            f"{c(row['dee'], '.2f')}{dee_marks(row)} | {c(row['ood_auroc_mi'])} | "
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
    tie = summary.get("tie")
    lines += [
        *curve_lines(summary["curve"]),
        f"**Choice** (validation data only: {CHOICE_RULE}): `{summary['chosen']}`"
        + (f"; {tie_text(tie, 'fewer parameters')}." if tie else "."),
        "",
        "## Floors (issue 16: the default Hydra at no more than 3x KD's parameters; test "
        "split, mean over the seeds)",
        "",
        *(
            f"- {'met' if met else '**not met**'}: {text}"
            for text, met in floors(summary["rows"], summary["chosen"])
        ),
        "",
        "Dotted: the issue's floors (KD's cNLL; 0.97 x the ensemble's AUROC; ρ 0.8; the band "
        "[1/3, 3] of the OOD MI ratio, log scale); dashed: 3x KD's parameters.",
        "",
        f"![fidelity against parameters](../img/{study.plot.name})",
        "",
        "## Diversity per confidence bin",
        "",
        "The members' mean pairwise KL on test and OOD inputs, binned by each model's own "
        "confidence (Nam et al. 2021, Fig. 3b), mean over the seeds. A student that keeps the "
        "ensemble's disagreement lies on the black line; copied heads lie far below it, most "
        "on OOD inputs, where the ensemble disagrees most.",
        "",
        f"![diversity per confidence bin](../img/{diversity_plot_path(study.plot).name})",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--dataset", choices=sorted(STUDIES), default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tabulate-only", action="store_true")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="rewrite the page from the per-seed scores its JSON holds (no outputs needed)",
    )
    parser.add_argument("--quick", action="store_true", help="MNIST's study on digits: a test")
    args = parser.parse_args()
    study = STUDIES[args.dataset]
    if args.quick:  # never into the study's folders or pages
        out = ROOT / "runs" / "hydra_tradeoff_quick"
        study = dataclasses.replace(
            STUDIES["mnist"],
            base=STUDIES["mnist"].base + QUICK,
            runs=out / "teachers",
            out=out,
            doc=out / "page",
            plot=out / "page.png",
        )
    if args.from_json:  # the command, machine and scores stay those of the run that made them
        record, per_seed = read_record(study.doc)
    else:
        if not args.tabulate_only:
            for seed in args.seeds:
                run_seed(study, args.data_dir, seed)
        per_seed = {seed: score_seed(study, args.data_dir, seed) for seed in args.seeds}
        data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
        dataset = f" --dataset {args.dataset}" if args.dataset != "mnist" else ""
        seeds = " ".join(map(str, args.seeds))
        record = {
            "command": f"python benchmarks/hydra_tradeoff.py{data_dir}{dataset} --seeds {seeds}",
            "machine": machine_info(),
            "machine_line": machine_line(machine_info()),
            "per_seed": per_seed,
        }
    record["summary"] = summary = tabulate(study, per_seed)
    plot(summary, study.plot)
    plot_diversity(summary, diversity_plot_path(study.plot))
    write_page(study.doc, record, functools.partial(markdown, study))


if __name__ == "__main__":
    main()
