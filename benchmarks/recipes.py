"""Distillation recipes: are the students worth more than one member? On MNIST (M = 10, MLP
400-400) and on Fashion-MNIST (M = 4, the CNN of configs/diversity_fashion.yaml). Writes
docs/results/recipes[_fashion].{json,md} and docs/img/recipes[_fashion].png:

    python benchmarks/recipes.py --data-dir ../shared/data --seeds 0 1 2
    python benchmarks/recipes.py --data-dir ../shared/data --dataset fashion-mnist --seeds 0 1 2
    python benchmarks/recipes.py --data-dir ../shared/data --seeds 0 1 2 --tabulate-only

Per seed, the study's teacher (MNIST: configs/mnist.yaml members=10 epochs=8) is trained once
into RUNS/seed<k>/teacher; every recipe of the study (:class:`Study`: VARIANTS on MNIST,
FASHION_VARIANTS on Fashion-MNIST) is a run folder RUNS/seed<k>/<recipe> that starts from a copy
of it and distils and evaluates its students (the pipeline's resume keeps what is finished, so
the command can be stopped and rerun). Settings are chosen per method on *validation* cNLL
(temperature fitted and scored on the validation split); test numbers are read once, for the
chosen and for every recipe, beside the ensemble's DE-1 … DE-M curve. The page holds the seeds
whose recipes are all finished and names the requested ones that are not.

Fashion-MNIST was sized at one torch thread (seconds per epoch: the teacher's 4 members 36,
a student on clean inputs 9-10, on live mixup inputs 31-33, BatchEnsemble 58; each recipe
run adds about 25 s for the teachers' outputs and 50 s of evaluation) so that one seed takes
about 80 minutes: the teacher (15 epochs) and FASHION_VARIANTS; KD and Hydra at 6x on clean
inputs (the package's default budget) and at 4x on pooled mixup were added after, about 40
minutes more per seed each. Left out for cost: live mixup (pooled mixup instead:
perturbation.pool=4), EnD² at 4x and 6x and on mixup, and BatchEnsemble (58 s per epoch:
15 min at 1x; its 2x function-matching row is in docs/results/hydra_tradeoff_fashion.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from seeds import (
    BEFORE_AUTO,
    DEE_FOOTNOTE,
    curve_text,
    dee_marks,
    distil_from_teacher,
    ensemble_curve,
    mean_std,
    read_record,
    tie_text,
    ties,
    val_cnll,
    write_page,
)

from ensemble_distill import metrics
from ensemble_distill.checkpoint import read_manifest
from ensemble_distill.config import load_config
from ensemble_distill.engine import distill_inputs_of, load_student, prepare
from ensemble_distill.methods import input_names
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line
from ensemble_distill.teachers import load_teacher

ROOT = Path(__file__).resolve().parents[1]
# fp32 and Hydra's heads as they were when the study ran (the paper's MLP heads, copied), so
# that its finished runs are kept whatever the defaults become.
BASE = ["members=10", "epochs=8", "eval.latency_repeats=3", "precision=fp32"]
BASE += ["hydra.head_widths=[100, 100]", "hydra.head_init=copy", "endd.target=members"]
# --quick: the same study on digits in seconds (a smoke test; its numbers mean nothing).
QUICK = ["dataset=digits", "members=3", "epochs=2", "model_args={widths: [32]}"]
FUNCTION_MATCHING = ["kd.alpha=1", "kd.temperature=1", "student.schedule=onecycle"]
# recipe -> (methods, overrides). "today": the defaults before this study (KD α = 0.9 at T = 4
# plus labels, cosine, student epochs = the teacher's, cached outputs on clean inputs), spelt
# out so that the recipe stays itself whatever the defaults become.
TODAY = ["kd.alpha=0.9", "kd.temperature=4", "student.schedule=cosine"]
VARIANTS = {
    "today": (["kd", "hydra", "endd"], [*TODAY, "student.epochs_multiple=1"]),
    **{
        f"fm-clean-{k}x": (
            ["kd", "hydra", "endd"],
            [*FUNCTION_MATCHING, f"student.epochs_multiple={k}"],
        )
        for k in (1, 3, 6)
    },
    "fm-mixup-3x": (["kd+mixup", "hydra+mixup"], [*FUNCTION_MATCHING, "student.epochs_multiple=3"]),
    # The same mixup inputs from a pool of 4 copies built once (perturbation.pool): no teacher
    # runs during training. What does the pool's lesser variety cost against live mixup?
    "fm-mixup-pool4-3x": (
        ["kd+mixup", "hydra+mixup"],
        [*FUNCTION_MATCHING, "student.epochs_multiple=3", "perturbation.pool=4"],
    ),
    # EnD² stays below one member on clean inputs: do inputs where the teachers disagree (the
    # reason Malinin et al. distil on auxiliary data) lift it?
    "endd-mixup-3x": (["endd+mixup"], [*FUNCTION_MATCHING, "student.epochs_multiple=3"]),
}

# Fashion-MNIST: configs/diversity_fashion.yaml (M = 4 CNNs, 15 epochs) with fp32 and its Hydra
# heads ([128], copied) pinned, and the student budget given as a multiple of the teacher's
# epochs. The config's own loss (α = 0.9, T = 4, for Hydra too) is "today" here, spelt out.
FASHION_BASE = ["precision=fp32", "hydra.head_widths=[128]", "hydra.head_init=copy"]
FASHION_BASE += ["endd.target=members"]  # EnD²'s 2019 loss, the default when the study ran
FASHION_BASE += ["eval.diversity_etas=[]", "eval.latency_repeats=3", "student.epochs=null"]
FASHION_QUICK = ["dataset=digits", "members=2", "epochs=2", "hydra.head_widths=[8]"]
FASHION_QUICK += ["model_args={channels: [4], hidden: 16, pool_size: 2}"]
FASHION_FM = [*FUNCTION_MATCHING, "hydra.alpha=1", "hydra.temperature=1"]
FASHION_TODAY = [*TODAY, "hydra.alpha=0.9", "hydra.temperature=4"]
# Sized at one torch thread (module docstring): the budgets 1x / 2x / 4x / 6x on clean inputs
# (EnD² at most 2x), and mixup from a pool of 4 copies (no teacher in training: live mixup
# costs 3x a clean epoch here) at 2x and 4x beside clean 2x and 4x.
FASHION_VARIANTS = {
    "today": (["kd", "hydra", "endd"], [*FASHION_TODAY, "student.epochs_multiple=1"]),
    **{
        f"fm-clean-{k}x": (
            ["kd", "hydra", *(["endd"] if k <= 2 else [])],
            [*FASHION_FM, f"student.epochs_multiple={k}"],
        )
        for k in (1, 2, 4, 6)
    },
    **{
        f"fm-mixup-pool4-{k}x": (
            ["kd+mixup", "hydra+mixup"],
            [*FASHION_FM, f"student.epochs_multiple={k}", "perturbation.pool=4"],
        )
        for k in (2, 4)
    },
    # EnD² with the Proxy-Dirichlet target (the default since docs/results/endd_targets.md).
    "fm-clean-2x-proxy": (
        ["endd"],
        [*FASHION_FM, "student.epochs_multiple=2", "endd.target=proxy"],
    ),
}

# Digits (the package's defaults: M = 5 MLPs 256-256, 40 epochs, students at 6x with function
# matching): do unlabelled auxiliary inputs (``distill_data``) beat the 1,293 training inputs?
# The auxiliary set: MNIST training digits shrunk to digits' 8 x 8 frame (no labels used; the
# digits run's OOD set stays scikit-learn's photo patches).
# How the proxy rows are read (since 2026-12-01; before, the Dirichlet's mean α/α₀).
PROXY_TEXT = "its prediction is softmax(s) = (α − 1)/(α₀ − K), the estimate of the members' mean"
PROXY_TEXT += " that its loss fits, not the Dirichlet's mean α/α₀"
AUXILIARY = "mnist_8x8.npz"  # in the study's runs folder
AUXILIARY_COUNT = 20_000
DIGITS_BASE = ["precision=fp32", "eval.latency_repeats=3", "eval.diversity_etas=[]"]
DIGITS_BASE += ["endd.target=members"]
DIGITS_QUICK = ["members=3", "epochs=2", "model_args={widths: [32]}"]
DIGITS_VARIANTS = {
    "fm-clean-6x": (["kd", "hydra", "endd"], []),
    "fm-auxiliary-6x": (["kd", "hydra", "endd"], [f"distill_data=<runs>/{AUXILIARY}"]),
    "fm-clean-6x-proxy": (["endd"], ["endd.target=proxy"]),  # EnD²'s default since this study
}


def write_auxiliary_inputs(data_dir: str, runs: Path) -> None:
    """RUNS/AUXILIARY: the first AUXILIARY_COUNT MNIST training images as digits-like inputs
    (the 20 x 20 box MNIST centres its digits in, area-averaged to 8 x 8, each scaled to a
    maximum of 1 as digits' 0..16 strokes reach 16). Written once."""
    path = runs / AUXILIARY
    if path.is_file():
        return
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ensemble_distill.data import create_dataset

    images = create_dataset("mnist", data_dir=data_dir).train.x[:AUXILIARY_COUNT]
    small = F.adaptive_avg_pool2d(images[:, :, 4:24, 4:24], 8)
    small = small / small.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=small.to(torch.float32).numpy())


@dataclass(frozen=True)
class Study:
    """One data set's study: its teacher and recipes, where it reads and writes, and the page's
    words for it."""

    config: str | None  # under configs/; None: the package's defaults
    base: tuple[str, ...]  # overrides of every run (teacher and students)
    variants: dict[str, tuple[list[str], list[str]]]  # recipe -> (methods, overrides)
    quick: tuple[str, ...]  # --quick: added to base (digits, tiny)
    runs: Path  # RUNS/seed<k>/<recipe>
    doc: Path  # the page and its JSON; the plot is docs/img/<doc name>.png
    title: str
    timing_text: str  # how the seconds were measured
    recipe_text: str  # the teacher and the recipes
    floors_title: str  # {seeds}: the seeds the page holds
    floors: Callable[[dict], list[str]]
    # Writes files the recipes read (data_dir, runs); "<runs>" in an override is ``runs``.
    inputs: Callable[[str, Path], None] | None = None

    def config_for(self, data_dir: str, seed: int, overrides: list[str], methods: list[str]):
        methods_arg = f"methods=[{','.join(methods)}]"
        overrides = [item.replace("<runs>", str(self.runs)) for item in overrides]
        items = [*BEFORE_AUTO, *self.base, f"data_dir={data_dir}", f"seed={seed}"]
        items += [methods_arg, *overrides]
        return load_config(self.config and ROOT / "configs" / self.config, items)


def run_seed(study: Study, data_dir: str, seed: int) -> None:
    """The teacher once, then every recipe from a copy of it (resumable). A finished teacher or
    recipe (its results.json written) is kept as it is, whichever version wrote it: remove its
    folder to rerun it."""
    folder = study.runs / f"seed{seed}"
    teacher_run = folder / "teacher"
    start = time.perf_counter()
    if study.inputs is not None:
        study.inputs(data_dir, study.runs)
    if not (teacher_run / "teacher" / "manifest.json").is_file():
        print(f"seed {seed}: training the teacher ({time.strftime('%H:%M')})", flush=True)
        teacher_config = study.config_for(data_dir, seed, [], ["kd"])
        run(teacher_config, teacher_run, steps=("teacher",), quiet=True)
    print(f"seed {seed}: teacher ready ({time.perf_counter() - start:.0f} s)", flush=True)
    for name, (methods, overrides) in study.variants.items():
        config = study.config_for(data_dir, seed, overrides, methods)
        seconds = distil_from_teacher(teacher_run, folder / name, config)
        if seconds is not None:
            print(f"seed {seed}: {name} done ({seconds:.0f} s)", flush=True)


def training_flops(run_dir: Path, name: str, config, setup, teacher_fwd: int) -> float:
    """Training FLOPs of a student: 3 × its forward FLOPs (forward + backward) per example and
    epoch, plus the teachers' forward where its inputs are not the cached clean ones: live every
    epoch, or once per pooled copy (the ``perturbation.pool`` its manifest records, ``auto``
    decided); auxiliary inputs (``distill_data``) once, when their outputs are cached."""
    student = load_student(run_dir / "students" / name)
    x = setup.data.train.x[:64]
    epochs = config.student_epochs()
    per_example = 3 * metrics.forward_flops(student, x) * epochs
    if input_names(name):
        options = read_manifest(run_dir / "students" / name)["options"]
        per_example += teacher_fwd * (options["perturbation"]["pool"] or epochs)
    total = per_example * len(setup.data.train)
    if config.distill_data is not None and not input_names(name):
        total += teacher_fwd * len(distill_inputs_of(config, setup.data))
    return float(total)


def collect(study: Study, data_dir: str, seed: int) -> dict:
    """Every recipe's rows (test metrics, validation cNLL, training cost) for one seed."""
    folder = study.runs / f"seed{seed}"
    teacher_manifest = read_manifest(folder / "teacher" / "teacher")
    config = study.config_for(data_dir, seed, [], ["kd"])
    setup = prepare(config)
    teacher, _ = load_teacher(folder / "teacher" / "teacher")
    teacher_fwd = metrics.forward_flops(teacher, setup.data.train.x[:64])
    record = {
        "teacher": {
            "train_seconds": teacher_manifest["train_seconds"],
            "train_flops": float(3 * teacher_fwd * len(setup.data.train) * config.epochs),
        },
        "recipes": {},
        # DE-1 … DE-M and every DEE are recomputed here with today's metric code, whichever
        # version wrote the runs (the teacher, hence the curve, is the same in every recipe).
        "curve": ensemble_curve(folder / next(iter(study.variants))),
    }
    curve = record["curve"]
    for recipe, (methods, overrides) in study.variants.items():
        run_dir = folder / recipe
        results = json.loads((run_dir / "results.json").read_text())
        recipe_config = study.config_for(data_dir, seed, overrides, methods)
        rows = {}
        for name, row in results["methods"].items():
            rows[name] = {k: row.get(k) for k in ("acc", "cnll", "ood_auroc", "ood_auroc_mi")}
            rows[name]["dee"] = metrics.deep_ensemble_equivalent(curve, row["cnll"])
            rows[name]["dee_note"] = metrics.dee_note(curve, row["cnll"])
            rows[name]["val_cnll"] = val_cnll(run_dir, name)
            if name not in ("ensemble", "member"):
                manifest = read_manifest(run_dir / "students" / name)
                rows[name]["train_seconds"] = manifest["train_seconds"]
                rows[name]["train_flops"] = training_flops(
                    run_dir, name, recipe_config, setup, teacher_fwd
                )
        record["recipes"][recipe] = rows
    return record


def tabulate(per_seed: dict[int, dict]) -> dict:
    """Mean ± std over seeds per recipe and model, and the choice on validation cNLL."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    keys = ("acc", "cnll", "dee", "ood_auroc", "ood_auroc_mi", "val_cnll")
    keys += ("train_seconds", "train_flops")
    table = {}
    for recipe, rows in first["recipes"].items():
        for name in rows:
            label = name if name in ("ensemble", "member") else f"{name} [{recipe}]"
            if name in ("ensemble", "member") and label in table:
                continue
            table[label] = {
                key: mean_std([per_seed[s]["recipes"][recipe][name].get(key) for s in seeds])
                for key in keys
            }
            notes = {per_seed[s]["recipes"][recipe][name].get("dee_note") for s in seeds}
            table[label] |= {"recipe": recipe, "method": name.split("+")[0]}
            table[label]["dee_notes"] = sorted(note for note in notes if note)
    curve = [mean_std([per_seed[s]["curve"][k] for s in seeds]) for k in range(len(first["curve"]))]
    teacher = {
        key: mean_std([per_seed[s]["teacher"][key] for s in seeds]) for key in first["teacher"]
    }
    chosen, tie = {}, {}
    for label, row in table.items():
        method = row["method"]
        if method in ("ensemble", "member"):
            continue
        best = chosen.get(method)
        if best is None or row["val_cnll"][0] < table[best]["val_cnll"][0]:
            chosen[method] = label
    for method, label in chosen.items():
        same = [other for other, row in table.items() if row["method"] == method]
        if tied := ties(table, label, same, "val_cnll"):
            tie[method] = tied
    summary = {"seeds": seeds, "rows": table, "curve": curve, "teacher": teacher}
    return summary | {"chosen": chosen, "tie": tie}


def floors(summary: dict) -> list[str]:
    """The issue's MNIST floors, checked on the chosen students (test split, mean over seeds)."""
    rows, chosen = summary["rows"], summary["chosen"]
    ensemble = rows["ensemble"]
    picked = [rows[label] for label in chosen.values()]
    best = min(picked, key=lambda r: r["cnll"][0])
    lines = [
        _check("every chosen student's DEE ≥ 2", all(r["dee"][0] >= 2 for r in picked)),
        _check(
            f"best chosen cNLL {best['cnll'][0]:.4f} ≤ 1.02 × ensemble {ensemble['cnll'][0]:.4f}",
            best["cnll"][0] <= 1.02 * ensemble["cnll"][0],
        ),
        _check(
            f"its accuracy {best['acc'][0]:.4f} ≥ ensemble − 0.001 ({ensemble['acc'][0]:.4f})",
            best["acc"][0] >= ensemble["acc"][0] - 0.001,
        ),
        _compute_floor(summary),
    ]
    return lines


def fashion_floors(summary: dict) -> list[str]:
    """The issue's Fashion-MNIST floors, checked on the chosen students (test split, mean over
    the seeds the page holds)."""
    rows, chosen = summary["rows"], summary["chosen"]
    member = rows["member"]
    picked = {label: rows[label] for label in chosen.values()}
    best = min(picked, key=lambda label: picked[label]["cnll"][0])
    return [
        _check("every chosen student's DEE > 1", all(r["dee"][0] > 1 for r in picked.values())),
        _check(
            f"every chosen student's accuracy ≥ one member's ({member['acc'][0]:.4f})",
            all(r["acc"][0] >= member["acc"][0] for r in picked.values()),
        ),
        _check(
            f"best chosen student ({best}, by test cNLL) DEE {picked[best]['dee'][0]:.2f} ≥ 2",
            picked[best]["dee"][0] >= 2,
        ),
        _compute_floor(summary),
    ]


def _compute_floor(summary: dict) -> str:
    """Every chosen student's training seconds and FLOPs ≤ 2 × the teacher's (all members)."""
    rows = summary["rows"]
    picked = [rows[label] for label in summary["chosen"].values()]
    teacher_s, teacher_f = (
        summary["teacher"]["train_seconds"][0],
        summary["teacher"]["train_flops"][0],
    )
    return _check(
        "chosen students' training compute ≤ 2 × the teacher's (seconds and FLOPs)",
        all(
            r["train_seconds"][0] <= 2 * teacher_s and r["train_flops"][0] <= 2 * teacher_f
            for r in picked
        ),
    )


def _check(text: str, ok: bool) -> str:
    return f"- {'met' if ok else '**not met**'}: {text}"


def plot(summary: dict, path: Path) -> None:
    """Test cNLL against training compute (seconds, FLOPs), DE-k as horizontal lines."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    markers = {"today": "o", "fm-clean-1x": "s", "fm-clean-3x": "D", "fm-clean-6x": "P"}
    markers |= {"fm-mixup-3x": "^", "fm-mixup-pool4-3x": "v", "endd-mixup-3x": "^"}
    markers |= {"fm-clean-2x": "D", "fm-clean-4x": "X", "fm-mixup-pool4-2x": "v"}
    markers |= {"fm-mixup-pool4-4x": "<"}
    markers |= {"fm-auxiliary-6x": "*", "fm-clean-6x-proxy": "h", "fm-clean-2x-proxy": "h"}
    colors = {"kd": "#E69F00", "hydra": "#0072B2", "endd": "#009E73"}
    for ax, key, unit in zip(axes, ("train_seconds", "train_flops"), ("s", "FLOPs"), strict=True):
        for k, value in enumerate(summary["curve"], start=1):
            if k in (1, 2, 4, len(summary["curve"])):
                ax.axhline(value[0], color="0.6", lw=0.8, ls=":")
                ax.annotate(
                    f"DE-{k}",
                    (1.0, value[0]),
                    xycoords=("axes fraction", "data"),
                    xytext=(2, -3),
                    textcoords="offset points",
                    fontsize=7,
                    color="0.35",
                )
        for label, row in summary["rows"].items():
            if row["method"] in ("ensemble", "member"):
                continue
            ax.plot(
                row[key][0],
                row["cnll"][0],
                marker=markers.get(row["recipe"], "x"),
                color=colors.get(row["method"], "0.3"),
                ls="none",
                ms=7,
                label=label,
            )
        ax.axvline(summary["teacher"][key][0], color="black", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(f"student training ({unit}); dashed: the teacher's")
    axes[0].set_ylabel("test cNLL (mean over seeds)")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def markdown(study: Study, record: dict) -> str:
    summary = record["summary"]
    seeds = summary["seeds"]
    spread = len(seeds) > 1  # one seed has no spread to show

    def c(value, fmt=".4f"):
        if value is None:
            return "n/a"
        return format(value[0], fmt) + (f" ± {format(value[1], fmt)}" if spread else "")

    lines = [
        f"# {study.title}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {', '.join(map(str, seeds))} "
        + ("(mean ± sample std)" if spread else "(a single seed: no spread)")
        + f". {study.timing_text}",
        "",
    ]
    if record.get("unfinished"):
        lines += [
            "Requested but not finished yet (the command resumes them; the page holds the "
            f"seeds above only): seeds {', '.join(map(str, record['unfinished']))}.",
            "",
        ]
    lines += [
        study.recipe_text,
        "",
        "| model [recipe] | val cNLL (choice) | test ACC | test cNLL | DEE | OOD AUROC (entropy) "
        "| OOD AUROC (MI) | train s | train GFLOPs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    chosen = set(summary["chosen"].values())
    for label, row in summary["rows"].items():
        mark = " **(chosen)**" if label in chosen else ""
        flops = row["train_flops"]
        gflops = None if flops is None else (flops[0] / 1e9, flops[1] / 1e9)
        lines.append(
            f"| {label}{mark} | {c(row['val_cnll'])} | {c(row['acc'])} | {c(row['cnll'])} | "
            f"{c(row['dee'], '.2f')}{dee_marks(row)} | {c(row['ood_auroc'])} | "
            f"{c(row['ood_auroc_mi'])} | "
            f"{c(row['train_seconds'], '.0f')} | {c(gflops, '.0f')} |"
        )
    teacher = summary["teacher"]
    seeds_text = f"mean over {len(seeds)} seeds" if spread else f"seed {seeds[0]} only"
    lines += [
        "",
        f"Teacher training (all {len(summary['curve'])} members): "
        f"{c(teacher['train_seconds'], '.0f')} s, "
        f"{teacher['train_flops'][0] / 1e9:.0f} GFLOPs. DE-k test cNLL: "
        + curve_text(summary["curve"])
        + ".",
        "",
        DEE_FOOTNOTE,
        "",
        *choice_lines(summary),
        f"![cNLL against training compute](../img/{study.doc.name}.png)",
        "",
        f"## {study.floors_title.format(seeds=seeds_text)}",
        "",
        *record["floors"],
        "",
    ]
    return "\n".join(lines)


def choice_lines(summary: dict) -> list[str]:
    """Each method's choice (the lowest mean validation cNLL) and the recipes it ties with."""
    lines = []
    for method, label in summary["chosen"].items():
        tied = summary.get("tie", {}).get(method)
        tie = f": {tie_text(tied, 'the lower mean validation cNLL')}" if tied else ""
        lines.append(f"- {method}: `{label}`{tie}.")
    return ["**Choice** (each method's lowest mean validation cNLL):", "", *lines, ""]


COST_TEXT = (
    "FLOPs are exact counts (FlopCounterMode; training = 3 × forward, plus the teachers' "
    "forward for live inputs, or once per copy for a pool)."
)
STUDIES = {
    "mnist": Study(
        config="mnist.yaml",
        base=tuple(BASE),
        variants=VARIANTS,
        quick=tuple(QUICK),
        runs=ROOT / "runs" / "recipes",
        doc=ROOT / "docs" / "results" / "recipes",
        title="Distillation recipes on MNIST (M = 10): students against one member",
        timing_text="Seconds were measured while other jobs shared the 2 cores at "
        "times (the teacher took 72–138 s for the same work), and the pooled recipe was added "
        f"by a later run with 1 torch thread: read them as rough; {COST_TEXT}",
        recipe_text="Teacher: configs/mnist.yaml with members=10 epochs=8 (MLP 400-400, Adam, "
        "cosine). Recipes: `today` = the defaults before this study (KD α = 0.9, T = 4, plus "
        "labels; cosine; student epochs = teacher epochs; cached teacher outputs on clean "
        "inputs); `fm-*` = function matching (KD α = 1, T = 1; Hydra's defaults already are), "
        "one-cycle schedule (10 % warm-up), student epochs 1× / 3× / 6× the teacher's, on clean "
        "inputs (cached) or mixup inputs (teachers live, Beta(1, 1)); `fm-mixup-pool4-3x` = the "
        "same mixup inputs drawn from 4 copies built once with the teachers' outputs "
        "(`perturbation.pool=4`: no teacher in training); `endd-mixup-3x` = EnD² on live "
        "mixup inputs. Hydra keeps the paper's copied "
        "[100, 100] heads (the default when this study ran; docs/results/hydra_tradeoff.md "
        "chose today's). EnD² keeps its own loss (temperature annealed from 5) in every recipe.",
        floors_title="Floors (issue: MNIST M = 10, test split, mean over 3 seeds)",
        floors=floors,
    ),
    "fashion-mnist": Study(
        config="diversity_fashion.yaml",
        base=tuple(FASHION_BASE),
        variants=FASHION_VARIANTS,
        quick=tuple(FASHION_QUICK),
        runs=ROOT / "runs" / "recipes_fashion",
        doc=ROOT / "docs" / "results" / "recipes_fashion",
        title="Distillation recipes on Fashion-MNIST (M = 4): students against one member",
        timing_text="Seconds: one torch thread (OMP_NUM_THREADS=1), the machine's other core "
        f"shared with other jobs at times: read them as rough; {COST_TEXT}",
        recipe_text="Teacher: configs/diversity_fashion.yaml (M = 4 CNNs: conv 8-16, 7 × 7 "
        "pooled map, dense 256; Adam, cosine, 15 epochs) in fp32. OOD: the MNIST test set. "
        "Recipes: `today` = the config's loss before this study (KD and Hydra α = 0.9, T = 4, "
        "plus labels; cosine; student epochs = the teacher's; cached teacher outputs on clean "
        "inputs); `fm-*` = "
        "function matching (KD and Hydra α = 1, T = 1), one-cycle schedule (10 % warm-up), "
        "student epochs 1× / 2× / 4× / 6× the teacher's on clean inputs (cached; 6×, the "
        "package's default budget, run after the other recipes); `fm-mixup-pool4-{2,4}x` = mixup "
        "inputs (Beta(1, 1)) drawn from 4 copies built once with the teachers' outputs "
        "(`perturbation.pool=4`: no teacher in training), beside `fm-clean-2x` and `fm-clean-4x` "
        "(4×: run after the other recipes, with 6×). Hydra keeps the config's copied [128] heads "
        "in every recipe; EnD² keeps its 2019 loss (members target, temperature annealed from 5),"
        " except in `fm-clean-2x-proxy` (`endd.target=proxy`, the default since "
        "docs/results/endd_targets.md, added after the first seed ran; "
        + PROXY_TEXT
        + "). Sized at one torch thread so that one seed takes about 80 minutes (seconds per epoch:"
        " the teacher's 4 members 36; a student on clean inputs 9–10, on live mixup inputs 31–33;"
        " BatchEnsemble 58); the 6× and pooled 4× recipes about 40 minutes more each. Left out "
        "for cost: live mixup (3× a clean epoch; the pool instead), EnD² at 4×, 6× and on mixup, "
        "and BatchEnsemble (15 min per seed at 1×; its 2× function-matching row is in "
        "docs/results/hydra_tradeoff_fashion.md).",
        floors_title="Floors (issue 15: Fashion-MNIST M = 4, test split, {seeds})",
        floors=fashion_floors,
    ),
    "digits": Study(
        config=None,
        base=tuple(DIGITS_BASE),
        variants=DIGITS_VARIANTS,
        quick=tuple(DIGITS_QUICK),
        runs=ROOT / "runs" / "recipes_digits",
        doc=ROOT / "docs" / "results" / "recipes_digits",
        title="Auxiliary distillation inputs on digits (M = 5): students against one member",
        timing_text=f"Seconds: one torch thread, other jobs sharing the cores: rough; {COST_TEXT}",
        recipe_text="Teacher: the package's defaults (digits, M = 5 MLPs 256-256, Adam, cosine, "
        "40 epochs) in fp32; OOD: scikit-learn's photo patches. Students: the defaults "
        "(function matching, one-cycle, 6× the teacher's epochs) distilled on the 1,293 "
        "training inputs (`fm-clean-6x`) or on 20,000 unlabelled auxiliary inputs "
        "(`fm-auxiliary-6x`: `distill_data=` an .npz of MNIST training digits shrunk to the "
        "8 × 8 frame; each batch draws as many of them as it has labelled examples, teachers' "
        "outputs cached once). EnD² uses the 2019 members target in both; `fm-clean-6x-proxy` "
        "adds EnD² with the Proxy-Dirichlet target (`endd.target=proxy`, the default since "
        "docs/results/endd_targets.md; " + PROXY_TEXT + "). The issue names no floors for digits.",
        floors_title="Floors ({seeds})",
        floors=lambda summary: [_compute_floor(summary)],
        inputs=write_auxiliary_inputs,
    ),
}


def _finished(study: Study, seed: int) -> list[str]:
    """The recipes of ``seed`` whose results are written."""
    folder = study.runs / f"seed{seed}"
    return [recipe for recipe in study.variants if (folder / recipe / "results.json").is_file()]


def study_for(args: argparse.Namespace) -> Study:
    """The --dataset's study; --quick: on digits, tiny, under runs/<runs>_quick; --runs and
    --doc in place of its folders."""
    study = STUDIES[args.dataset]
    if args.quick:  # never into the study's folders or pages
        out = ROOT / "runs" / f"{study.runs.name}_quick"
        study = dataclasses.replace(
            study,
            base=study.base + study.quick,
            runs=out,
            doc=out / "docs" / "results" / study.doc.name,
        )
    if args.runs is not None:
        study = dataclasses.replace(study, runs=args.runs)
    if args.doc is not None:
        study = dataclasses.replace(study, doc=args.doc)
    return study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="required unless --from-json")
    parser.add_argument("--dataset", choices=sorted(STUDIES), default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, help="default: runs/recipes[_fashion]")
    parser.add_argument("--tabulate-only", action="store_true")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help="rewrite the page from the per-seed scores its JSON holds (no runs needed)",
    )
    parser.add_argument("--quick", action="store_true", help="digits, tiny: a smoke test")
    parser.add_argument("--doc", type=Path, help="default: docs/results/recipes[_fashion]")
    args = parser.parse_args()
    if not (args.data_dir or args.from_json):
        parser.error("--data-dir DIR is required (the folder holding the data sets)")
    study = study_for(args)
    if args.from_json:  # the command, machine and scores stay those of the run that made them
        record, per_seed = read_record(study.doc)
    else:
        record, per_seed = measure(args, study)
    if not per_seed:
        return
    record["summary"] = summary = tabulate(per_seed)
    record["floors"] = study.floors(summary)
    plot(summary, study.doc.parent.parent / "img" / f"{study.doc.name}.png")
    write_page(study.doc, record, functools.partial(markdown, study))


def measure(args: argparse.Namespace, study: Study) -> tuple[dict, dict[int, dict]]:
    """Run (or resume) every seed's recipes and score the seeds that finished them all: the
    page's record without its summary, and the scores by seed (none finished: empty)."""
    if not args.tabulate_only:
        for seed in args.seeds:
            run_seed(study, args.data_dir, seed)
    finished = {seed: _finished(study, seed) for seed in args.seeds}
    done = [s for s in args.seeds if len(finished[s]) == len(study.variants)]
    if not done:
        progress = "; ".join(
            f"seed {s}: {len(finished[s])} of {len(study.variants)} recipes" for s in args.seeds
        )
        print(f"No requested seed has all its recipes finished ({progress}): no page written.")
        return {}, {}
    per_seed = {seed: collect(study, args.data_dir, seed) for seed in done}
    record = {
        "command": "python benchmarks/recipes.py --data-dir DIR"
        + (f" --dataset {args.dataset}" if args.dataset != "mnist" else "")
        + " --seeds "
        + " ".join(map(str, args.seeds))
        + (" --quick" if args.quick else ""),
        "machine": (info := machine_info()),
        "machine_line": machine_line(info),
        "date": time.strftime("%Y-%m-%d"),
        "per_seed": per_seed,
    }
    if unfinished := [s for s in args.seeds if s not in done]:
        record["unfinished"] = unfinished
    return record, per_seed


if __name__ == "__main__":
    main()
