"""Keep the ensemble's disagreement (issue 28): compact students whose mutual information (MI)
off the training data is the ensemble's, against the levers that might give it. Writes
docs/results/disagreement{,_fashion}.{json,md} and docs/img/disagreement*.png:

    python benchmarks/disagreement.py --data-dir ../shared/data --seeds 0 1 2
    python benchmarks/disagreement.py --dataset fashion-mnist --data-dir ../shared/data

(``--tabulate-only`` rewrites a page from what is saved.) Per seed: the teacher (MNIST: M = 10
MLPs 400-400, 8 epochs; Fashion-MNIST: the M = 4 CNNs of configs/diversity_fashion.yaml),
trained once and kept under runs/disagreement[_fashion]/seed<k>/teacher/teacher, then every
student at 4x the teacher's epochs (the patient budget of docs/results/recipes.md), its
outputs on the validation, test and OOD splits and on two perturbed copies of the validation
split saved to runs/disagreement[_fashion]/seed<k>/<student>.safetensors. A finished student
is kept: stop and rerun at will, one process per seed in parallel if you like. The page reads
those files, and keeps from its JSON the seeds and rows whose files are gone (runs/ is not
committed): a new session trains only what the page lacks, the seed's teacher again first
(it trains bit for bit the same; a different one is refused). More seeds for the few rows a
claim rests on (``--seeds 3 4 --only NAME ...``) join the page without dropping the others: a
row is compared once it has 3 seeds, averaged over the seeds it has.

The validation split has no OOD set, so the choice reads validation inputs alone: the clean
ones (cNLL) and two perturbed copies no student trains on (Gaussian noise of σ = 0.2 and
4 x 4-pixel tile shuffles), where the ensemble's members disagree and a student's MI can be
ranked against theirs.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra_tradeoff import (
    ROOT,
    Study,
    diversity,
    diversity_plot_path,
    mean_diversity,
    plot_diversity,
    read_outputs,
    run_seed,
)
from seeds import (
    MIN_SEEDS,
    cell,
    comparable,
    curve_lines,
    curve_over_seeds,
    dee_marks,
    mean_std,
    page_scores,
    page_seeds,
    read_record,
    rows_over_seeds,
    study_parser,
    study_record,
    tie_text,
    ties,
    write_page,
)

from ensemble_distill import metrics
from ensemble_distill.engine import Setup, prepare
from ensemble_distill.evaluation import (
    classification_scores,
    has_members,
    predictive,
)
from ensemble_distill.methods import input_names
from ensemble_distill.methods.disagreement_fit import (
    fit_disagreement_scale,
    mean_mutual_information,
)
from ensemble_distill.methods.perturbations import PerturbationState, gaussian, patch_shuffle
from ensemble_distill.models.disagreement import scale_disagreement

QUICK = ("dataset=digits", "members=3", "epochs=2", "model_args={widths: [32, 32]}")
LINEAR = ["hydra.head_widths=[]", "hydra.head_init=independent"]  # the default heads
JOINT = ["hydra.phase1_fraction=0"]  # body and heads from the first step: one phase
POOL = ["perturbation.pool=3"]
MIXTURE = ["perturbation.mixture={clean: 1, mixup: 2, patchshuffle: 1}", "perturbation.patch=7"]
HALF_CLEAN = ["perturbation.mixture={clean: 2, mixup: 1, patchshuffle: 1}", "perturbation.patch=7"]
MI_MATCH = ["hydra.disagreement_weight=10"]
LONGER = ["student.epochs_multiple=6"]  # the top of the issue's patient range (4-6x)
ADAPTERS = ["hydra.adapter_rank=16"]
DM_ETA = "perturbation.eta=0.0157"  # 4/255: configs/diversity_fashion.yaml's chosen step

# name -> (method, overrides), cheapest and most telling first (a partial run still reads).
STUDENTS: dict[str, tuple[str, list[str]]] = {
    "kd": ("kd", []),
    "hydra default": ("hydra", LINEAR),
    "hydra joint": ("hydra", [*LINEAR, *JOINT]),
    "hydra joint + mixup": ("hydra+mixup", [*LINEAR, *JOINT, *POOL]),
    "hydra joint + mixture": ("hydra+mixture", [*LINEAR, *JOINT, *POOL, *MIXTURE]),
    "hydra joint + mixture + MI": ("hydra+mixture", [*LINEAR, *JOINT, *POOL, *MIXTURE, *MI_MATCH]),
    "hydra joint + mixture + adapters": (
        "hydra+mixture",
        [*LINEAR, *JOINT, *POOL, *MIXTURE, *ADAPTERS],
    ),
    "hydra joint + mixture + adapters + MI": (
        "hydra+mixture",
        [*LINEAR, *JOINT, *POOL, *MIXTURE, *ADAPTERS, *MI_MATCH],
    ),
    # The mixture's in-distribution cost (cNLL above DE-2's on MNIST), two ways to pay it back:
    # half the inputs clean, or 1.5x the epochs.
    "hydra joint + half-clean mixture + MI": (
        "hydra+mixture",
        [*LINEAR, *JOINT, *POOL, *HALF_CLEAN, *MI_MATCH],
    ),
    "hydra joint + mixture + MI, 6x": (
        "hydra+mixture",
        [*LINEAR, *JOINT, *POOL, *MIXTURE, *MI_MATCH, *LONGER],
    ),
    "hydra joint + ods": ("hydra+ods", [*LINEAR, *JOINT, *POOL, "perturbation.eta=0.0314"]),
    "endd": ("endd", []),
    "be": ("be", []),
    "hydra split 2": ("hydra", ["hydra.head_widths=null", "hydra.split=2", LINEAR[1]]),
    # Diversity Matters re-measured at the patient budget: BatchEnsemble one-to-one students on
    # pooled copies of each input kind, Gaussian noise of the same norm as the ODS steps.
    "be + gaussian": ("be+gaussian", [*POOL, DM_ETA]),
    "be + ods": ("be+ods", [*POOL, DM_ETA]),
    "be + confods": ("be+confods", [*POOL, DM_ETA]),
    "latentbe": ("latentbe", []),
}

MNIST = Study(
    title="MNIST M = 10",
    config="mnist.yaml",
    base=("members=10", "epochs=8", "student.epochs_multiple=4", "eval.latency_repeats=3"),
    students=STUDENTS,
    teacher_text="configs/mnist.yaml with members=10 epochs=8 (MLP 400-400)",
    ood_text="the Fashion-MNIST test set",
    split_text="k = 2: M full networks, the ensemble's architecture",
    runs=ROOT / "runs" / "disagreement",
    out=ROOT / "runs" / "disagreement",
    doc=ROOT / "docs" / "results" / "disagreement",
    plot=ROOT / "docs" / "img" / "disagreement.png",
)
# The students MNIST singled out first (its choice, its most faithful compact student, the
# default and the references), then the rest, so a partial run still reads.
FASHION_ORDER = (
    "hydra default",
    "hydra joint + mixture + adapters",
    "hydra joint + mixture + MI",
    "be",
    "kd",
    "endd",
    "hydra joint + mixture",
    "hydra joint + mixture + adapters + MI",
    "hydra joint",
    "be + gaussian",
    "be + ods",
    "be + confods",
    "latentbe",
)
# hydra_tradeoff's Fashion-MNIST teacher and student recipe, at the patient budget (4x).
FASHION = Study(
    title="Fashion-MNIST M = 4",
    config="diversity_fashion.yaml",
    base=(
        *("student.epochs=null", "student.epochs_multiple=4", "student.schedule=onecycle"),
        *("kd.alpha=1", "kd.temperature=1", "hydra.temperature=1", "hydra.alpha=1"),
        *("eval.latency_repeats=3", "eval.diversity_etas=[]"),
    ),
    students={name: STUDENTS[name] for name in FASHION_ORDER},
    teacher_text="configs/diversity_fashion.yaml (M = 4 CNNs, conv 8-16, dense 256, 15 "
    "epochs) with the project's default student recipe",
    ood_text="the MNIST test set",
    split_text="k = 3: M full networks",
    runs=ROOT / "runs" / "disagreement_fashion",
    out=ROOT / "runs" / "disagreement_fashion",
    doc=ROOT / "docs" / "results" / "disagreement_fashion",
    plot=ROOT / "docs" / "img" / "disagreement_fashion.png",
)
STUDIES = {"mnist": MNIST, "fashion-mnist": FASHION}
# The issue's floor on the Spearman ρ of MI on the OOD set, per study.
RHO_FLOOR = {MNIST.title: 0.85, FASHION.title: 0.70}


def perturbed_validation(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The two perturbed copies of the validation inputs the choice reads (fixed per seed)."""
    state = PerturbationState(None, 0.2, 1.0, torch.Generator().manual_seed(10_000 + seed))
    noise = gaussian(x, state)
    state.patch = 4
    return {"val_noise": noise, "val_tiles": patch_shuffle(x, state)}


def inputs(setup) -> dict[str, torch.Tensor]:
    """Every split a model is scored on: val, its two perturbed copies, test and OOD."""
    data = setup.data
    return {
        "val": data.val.x,
        **perturbed_validation(data.val.x, setup.config.seed),
        "test": data.test.x,
        "ood": next(iter(data.ood.values())).x,
    }


# The post-hoc disagreement temperature's rows: the student's name and this mark.
SCALED = " + s"
# A compact student (the issue's bound): inference FLOPs <= 2x and parameters <= 1.5x a member's.
COMPACT = {"flops": 2.0, "params": 1.5}
VAL_SHIFTS = ("val_noise", "val_tiles")


def with_scaled(outputs: dict[str, dict], kinds: dict[str, str]) -> dict[str, float]:
    """Add, for every student with members, its outputs under the disagreement temperature s
    fitted on the clean validation inputs to the ensemble's mean MI there (never the OOD
    set); {student: s}."""
    target = mean_mutual_information(outputs["ensemble"]["val"])
    scales = {}
    for name in [n for n in outputs if n != "ensemble"]:
        if kinds[name] != "logits" or not has_members(outputs[name]["val"], kinds[name]):
            continue
        scale = fit_disagreement_scale(outputs[name]["val"], target)
        outputs[name + SCALED] = {k: scale_disagreement(v, scale) for k, v in outputs[name].items()}
        kinds[name + SCALED] = kinds[name]
        scales[name] = scale
    return scales


# Inputs whose pool build also back-propagates through one teacher member (an ODS-type step).
GRADIENT_INPUTS = ("ods", "confods")


def training_flops(
    study: Study, data_dir: str | None, seed: int, name: str, flops: int, teacher_flops: int
) -> float:
    """Student ``name``'s training FLOPs per training example (≈, matmuls and convolutions):
    forward and backward, about 3 forward passes, per epoch, of the network it trains (for
    LatentBE the M BatchEnsemble members it folds into one network afterwards: M x ``flops``);
    plus the teachers' outputs on its distillation inputs: one pass over the clean inputs, K
    over a pool of K copies, or one per epoch where the inputs are perturbed live; for an
    ODS-type step one member's forward and backward (3 of its passes) per pass, and for
    ``diverse`` the student's forward and backward and two teacher members' (i's forward and
    backward, j's forward: 4 of a member's passes)."""
    method, overrides = study.students[name]
    config = study.config_for(data_dir, seed, method, overrides)
    epochs, inputs = config.student_epochs(), input_names(method)
    trained = flops * config.members if method == "latentbe" else flops
    if not inputs:
        return 3 * trained * epochs + teacher_flops
    passes = config.perturbation.pool or epochs
    teacher = passes * teacher_flops
    if set(inputs) & set(GRADIENT_INPUTS):
        teacher += passes * 3 * teacher_flops / config.members
    if "diverse" in inputs:
        teacher += passes * (4 * teacher_flops / config.members + 3 * trained)
    return 3 * trained * epochs + teacher


def read_seed(study: Study, data_dir: str | None, seed: int) -> tuple[Setup, dict, dict, dict]:
    """One seed's setup (its data) and saved outputs by name, with their kinds and infos: the
    ensemble, the study's students trained so far (by name), and member 0 alone (one member's
    cost, the DE-1 end of the curve)."""
    setup = prepare(study.config_for(data_dir, seed, "kd", []))
    folder = study.out / f"seed{seed}"
    outputs, kinds, infos = {}, {}, {}
    for name in ["ensemble", *sorted(study.students)]:
        if (folder / f"{name}.safetensors").is_file():
            outputs[name], kinds[name], infos[name] = read_outputs(folder / f"{name}.safetensors")
    outputs["member"] = {split: v[:, 0] for split, v in outputs["ensemble"].items()}
    kinds["member"] = "logits"
    infos["member"] = {k: v // setup.config.members for k, v in infos["ensemble"].items()}
    return setup, outputs, kinds, infos


def fidelity(pred: dict, ensemble: dict, y_val: torch.Tensor) -> dict[str, float]:
    """A model's OOD MI ratio (its mean MI on the OOD set over the ensemble's) and its
    validation cNLL (temperature fitted and scored on validation), from each split's
    :func:`predictive`."""
    val = pred["val"]
    return {
        "ood_mi_ratio": float(pred["ood"].mi.mean() / ensemble["ood"].mi.mean()),
        "val_cnll": metrics.calibrated_metrics(val.probs, y_val, val.probs, y_val)["cnll"],
    }


def score_seed(study: Study, data_dir: str | None, seed: int) -> dict:
    """Every model's accuracy, calibration and fidelity to the ensemble's disagreement on one
    seed, its validation scores (what the choice reads) and its cost relative to a member."""
    setup, outputs, kinds, infos = read_seed(study, data_dir, seed)
    member = infos["member"]
    scales = with_scaled(outputs, kinds)
    rows, curve = classification_scores(outputs, kinds, setup.data)
    ensemble = {k: predictive(v, kinds["ensemble"]) for k, v in outputs["ensemble"].items()}
    y_val = setup.data.val.y
    # DE-k on validation (temperature fitted and scored there): the choice's cNLL bound.
    val_curve = metrics.ensemble_size_curve(
        ensemble["val"].probs, y_val, ensemble["val"].probs, y_val
    )
    for name, row in rows.items():
        pred = {k: predictive(v, kinds[name]) for k, v in outputs[name].items()}
        info = infos[name.removesuffix(SCALED)]
        row["params_x"] = info["params"] / member["params"]
        row["flops_x"] = info["flops"] / member["flops"]
        row["train_seconds"] = info.get("train_seconds")
        base = name.removesuffix(SCALED)
        row["train_flops"] = (
            training_flops(study, data_dir, seed, base, info["flops"], infos["ensemble"]["flops"])
            * len(setup.data.train)
            if base in study.students
            else None
        )
        row["scale"] = scales.get(name.removesuffix(SCALED)) if name.endswith(SCALED) else None
        row |= fidelity(pred, ensemble, y_val)
        for split in VAL_SHIFTS:
            row[f"{split}_rho"] = metrics.rank_correlation(pred[split].mi, ensemble[split].mi)
        shifts = [row[f"{split}_rho"] for split in VAL_SHIFTS]
        row["val_shift_rho"] = None if None in shifts else sum(shifts) / len(shifts)
    return {
        "rows": rows,
        "curve": curve,
        "val_curve": val_curve,
        "diversity": diversity(outputs, kinds),
    }


def ensemble_agreement(study: Study, seeds: list[int]) -> dict | None:
    """How far the ensemble's disagreement is reproducible at all: for each pair of seeds, how
    another ensemble of the same recipe (the other seed's teacher) matches this one's — the
    Spearman ρ of their MI on the test and OOD inputs (the same examples in every seed) and
    the ratio of their mean OOD MI, the smaller over the larger. None below two seeds. A
    student cannot be asked to rank the ensemble's MI more alike than another ensemble does."""
    mi = {}
    for seed in seeds:
        outputs, kind, _ = read_outputs(study.out / f"seed{seed}" / "ensemble.safetensors")
        mi[seed] = {split: predictive(outputs[split], kind).mi for split in ("test", "ood")}
    pairs = list(itertools.combinations(seeds, 2))
    if not pairs:
        return None

    def rho(split: str) -> tuple[float, float] | None:
        return mean_std([metrics.rank_correlation(mi[a][split], mi[b][split]) for a, b in pairs])

    means = [(float(mi[a]["ood"].mean()), float(mi[b]["ood"].mean())) for a, b in pairs]
    return {
        "seeds": seeds,
        "pairs": len(pairs),
        "test_rho": rho("test"),
        "ood_rho": rho("ood"),
        "ood_mi_ratio": mean_std([min(m) / max(m) for m in means]),
    }


def page_agreement(study: Study, seeds: list[int]) -> dict | None:
    """:func:`ensemble_agreement` over the page's teachers where each is on disk, else as the
    page recorded it (their saved outputs are gone)."""
    if set(seeds) <= set(page_seeds(study.out, [])):
        return ensemble_agreement(study, seeds)
    recorded = read_record(study.doc)[0]["summary"]
    agreement = recorded.get("ensemble_agreement")
    return agreement and {"seeds": recorded["seeds"], **agreement}


KEYS = (
    "params_x",
    "flops_x",
    "train_flops",
    "train_seconds",
    "acc",
    "cnll",
    "dee",
    "cece",
    "ood_auroc",
)
KEYS += ("ood_auroc_mi", "mi_spearman_test", "mi_spearman_ood", "ood_mi_ratio", "scale")
KEYS += ("val_cnll", "val_noise_rho", "val_tiles_rho", "val_shift_rho")


def references(per_seed: dict[int, dict], seeds: list[int]) -> dict:
    """What a row is held against, over the seeds the row has: DE-2's test and validation cNLL
    and the ensemble's OOD AUROC by MI. A row of seeds 0-2 on a page whose ensemble has seeds
    0-4 is compared with that ensemble's seeds 0-2, never with teachers it did not distil."""
    return {
        "de2": mean_std([per_seed[s]["curve"][1] for s in seeds]),
        "val_de2": mean_std([per_seed[s]["val_curve"][1] for s in seeds]),
        "ensemble_auroc_mi": mean_std(
            [per_seed[s]["rows"]["ensemble"]["ood_auroc_mi"] for s in seeds]
        ),
    }


def tabulate(study: Study, per_seed: dict[int, dict]) -> dict:
    seeds, rows, curve = (
        sorted(per_seed),
        rows_over_seeds(per_seed, KEYS),
        curve_over_seeds(per_seed),
    )
    for row in rows.values():
        row |= references(per_seed, row["seeds"])
    complete = {name: row for name, row in rows.items() if comparable(row, seeds)}
    chosen, tie, within = choose(complete)
    return {
        "seeds": seeds,
        "rows": rows,
        "curve": curve,
        "diversity": mean_diversity([per_seed[s]["diversity"] for s in seeds]),
        "chosen": chosen,
        "tie": tie,
        "val_de2": mean_std([per_seed[s]["val_curve"][1] for s in seeds]),
        "within_bound": within,
        "dm": dm_over_common_seeds(per_seed, rows),
        "missing": [name for name in study.students if name not in rows],
        "partial": [name for name in rows if name not in complete],
    }


CHOICE_RULE = (
    "among the compact students with an MI (inference FLOPs <= 2x and parameters <= 1.5x "
    "one member's) whose validation cNLL is at most DE-2's on validation (the cNLL floor, read "
    "on validation; within the seeds' std counts), the one whose per-example MI ranks the two "
    "perturbed validation copies (Gaussian σ = 0.2, 4 x 4 tile shuffles) most like the "
    "ensemble's (mean Spearman ρ); where none is within the bound, the most faithful compact "
    "student, with the bound named as missed; a gap in ρ smaller than the seeds' std is a "
    "tie, broken by the lower validation cNLL"
)


def compact(row: dict) -> bool:
    return all(row[f"{key}_x"][0] <= bound for key, bound in COMPACT.items())


def choose(rows: dict[str, dict]) -> tuple[str | None, list[str], bool]:
    """:data:`CHOICE_RULE`, from validation data only: the chosen student (None before a
    compact student with an MI has its seeds), the students it ties with (ρ within the seeds'
    std of the best), and whether it is within the cNLL bound (each row's ``val_de2``, over
    its own seeds: :func:`references`)."""
    students = {
        name: row
        for name, row in rows.items()
        if name not in ("ensemble", "member") and compact(row) and row["val_shift_rho"]
    }
    bound = {
        name: row
        for name, row in students.items()
        if row["val_cnll"][0] - row["val_cnll"][1] <= row["val_de2"][0] + row["val_de2"][1]
    }
    close = bound or students
    if not close:
        return None, [], False
    top = max(close, key=lambda name: close[name]["val_shift_rho"][0])
    tied = [top, *ties(close, top, list(close), "val_shift_rho")]
    chosen = min(tied, key=lambda name: close[name]["val_cnll"][0])
    return chosen, [name for name in tied if name != chosen], bool(bound)


def default_hydra(summaries: dict[str, dict]) -> dict:
    """The one rule across the data sets (``summaries``: each study's title → its summary)
    that sets the default Hydra: the Hydra student every data set's choice picks; where they
    pick different ones, the Hydra students that are the choice or tie with it (ρ within the
    seeds' std) on every data set, the cheapest of them (fewest parameters, mean over the data
    sets). None where no Hydra student is the choice or a tie on all of them."""
    picked = [{s["chosen"], *s["tie"]} for s in summaries.values()]
    # sorted: a set's order changes with the process's hash seed, the page's text must not
    common = sorted(
        name for name in set.intersection(*picked) if STUDENTS[name][0].split("+")[0] == "hydra"
    )
    chosen = {s["chosen"] for s in summaries.values()}
    if len(chosen) == 1 and chosen <= set(common):
        return {"default": chosen.pop(), "common": common, "by": "the choice on every data set"}
    if not common:
        return {"default": None, "common": [], "by": "no Hydra student ties on every data set"}
    cost = {
        name: sum(s["rows"][name]["params_x"][0] for s in summaries.values()) for name in common
    }
    return {
        "default": min(common, key=cost.get),
        "common": common,
        "by": "the cheapest of the students tied on every data set",
    }


def default_lines(default: dict | None) -> list[str]:
    """The page's words for :func:`default_hydra`."""
    if default is None:
        return []
    if default["default"] is None:
        return ["", f"**The default Hydra, both data sets:** none ({default['by']})."]
    tied = ", ".join(f"`{name}`" for name in default["common"])
    return [
        "",
        f"**The default Hydra, both data sets** (the choice on each; where they differ, the "
        f"cheapest student that is the choice or ties with it on both): `{default['default']}`, "
        f"by {default['by']} (chosen or tied on both: {tied}).",
    ]


def floors(row: dict, rho_floor: float) -> list[tuple[str, float, float | None]]:
    """The issue's floors for a student's ``row`` as (what was measured, by how much it misses
    the floor (≤ 0: met), the seeds' std the miss is read against; None where no spread
    applies); the ensemble's and DE-2's values over the row's own seeds (:func:`references`)."""
    (ratio, ratio_std), (rho, rho_std) = row["ood_mi_ratio"], row["mi_spearman_ood"]
    (auroc, auroc_std), floor = row["ood_auroc_mi"], row["ensemble_auroc_mi"][0] - 0.01
    (cnll, cnll_std), (de2, de2_std) = row["cnll"], row["de2"]
    params, flops = row["params_x"][0], row["flops_x"][0]
    return [
        (
            f"inference FLOPs {flops:.2f}x <= 2x and parameters {params:.2f}x <= 1.5x one member's",
            0.0 if compact(row) else 1.0,
            None,
        ),
        (f"OOD MI ratio {ratio:.3f} within [0.5, 2]", max(0.5 - ratio, ratio - 2), ratio_std),
        (f"Spearman ρ of MI on OOD {rho:.3f} >= {rho_floor:.2f}", rho_floor - rho, rho_std),
        (
            f"OOD AUROC by MI {auroc:.4f} >= the ensemble's - 0.01 ({floor:.4f})",
            floor - auroc,
            auroc_std,
        ),
        (f"cNLL {cnll:.4f} <= DE-2's {de2:.4f}", cnll - de2, max(cnll_std, de2_std)),
    ]


def reading(miss: float, std: float | None) -> str:
    """A floor ``met``, a ``tie`` (missed by less than the seeds' std) or ``missed``."""
    if miss <= 0:
        return "met"
    return "tie" if std is not None and miss < std else "missed"


def floor_line(text: str, miss: float, std: float | None) -> str:
    """One floor as the page says it: met, not met, or missed by less than the seeds' std."""
    read = reading(miss, std)
    if read == "tie":
        return f"- **not met, a tie** (short by {miss:.4f} < the seeds' std {std:.4f}): {text}"
    return f"- met: {text}" if read == "met" else f"- **not met**: {text}"


def floor_table(summary: dict, rho_floor: float) -> list[str]:
    """Every compact student with an MI against the fidelity floors, not only the chosen one:
    what a user can have at a compact student's cost, and which floor each one misses."""
    rows = summary["rows"]
    names = [
        name
        for name, row in rows.items()
        if name not in ("ensemble", "member")
        and comparable(row, summary["seeds"])
        and compact(row)
        and row["mi_spearman_ood"]
    ]
    lines = [
        "",
        "Every compact student with an MI against the same floors (*tie*: short by less than "
        "the seeds' std):",
        "",
        "| student | seeds | OOD MI ratio | MI ρ OOD | OOD AUROC by MI (ensemble − 0.01) | "
        "cNLL (DE-2) | floors met |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    marks = {
        name: [reading(miss, std) for _, miss, std in floors(rows[name], rho_floor)[1:]]
        for name in names
    }
    # The students that meet the most floors first (then the most ties): the frontier on top.
    for name in sorted(names, key=lambda n: (-marks[n].count("met"), -marks[n].count("tie"), n)):
        row = rows[name]
        values = (
            f"{row['ood_mi_ratio'][0]:.3f}",
            f"{row['mi_spearman_ood'][0]:.3f}",
            f"{row['ood_auroc_mi'][0]:.4f} ({row['ensemble_auroc_mi'][0] - 0.01:.4f})",
            f"{row['cnll'][0]:.4f} ({row['de2'][0]:.4f})",
        )
        cells = [f"{value} {mark}" for value, mark in zip(values, marks[name], strict=True)]
        met, tied = marks[name].count("met"), marks[name].count("tie")
        ties = f" + {tied} tie" if tied else ""
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(f"| {name} | {seeds} | {' | '.join(cells)} | {met}{ties} of 4 |")
    return lines


def plot(summary: dict, path: Path, rho_floor: float) -> None:
    """Fidelity (OOD MI ratio, OOD ρ) against inference FLOPs relative to one member: the
    frontier a user chooses on; scaled rows hollow, the issue's floors dotted."""
    fig, axes = plt.subplots(1, 2, figsize=(13.0, 4.8))
    panels = (("ood_mi_ratio", "OOD MI ratio, student / ensemble (log)"),)
    panels += (("mi_spearman_ood", "Spearman ρ of MI with the ensemble's, OOD"),)
    palette = plt.get_cmap("tab20")
    names = [n for n in summary["rows"] if n not in ("member",)]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for index, name in enumerate(names):
            row = summary["rows"][name]
            if row[key] is None or row[key][0] <= 0:
                continue  # one network has no MI
            ax.errorbar(
                row["flops_x"][0],
                row[key][0],
                yerr=row[key][1],
                ls="none",
                marker="*" if name == "ensemble" else "o",
                mfc="none" if name.endswith(SCALED) else None,
                ms=11 if name == summary["chosen"] else 6,
                color="black" if name == "ensemble" else palette(index % 20),
                label=name + (" (chosen)" if name == summary["chosen"] else ""),
            )
        ax.axvline(COMPACT["flops"], color="0.6", ls="--", lw=0.8)
        if key == "ood_mi_ratio":
            ax.set_yscale("log")
            ax.axhspan(0.5, 2.0, color="0.9", zorder=0)
        else:
            ax.axhline(rho_floor, color="0.6", ls=":", lw=1.0)
            if agreement := summary.get("ensemble_agreement"):  # another ensemble's ρ
                ax.axhline(agreement["ood_rho"][0], color="black", ls="-.", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("inference FLOPs / one member's (log)")
        ax.set_title(title, fontsize=10)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# Diversity Matters (Nam et al. 2021): ConfODS inputs raise a BatchEnsemble student's fidelity
# over plain BE and over Gaussian noise of the same norm. What the verdict compares, and how.
DM_STUDENT, DM_BASELINES = "be + confods", ("be", "be + gaussian")
DM_METRICS = {"cnll": "cNLL", "ood_mi_ratio": "OOD MI ratio", "mi_spearman_ood": "MI ρ OOD"}
# The page's table of the three students over the seeds they share: column -> (label, format).
DM_COLUMNS = {
    "cnll": ("cNLL", ".4f"),
    "dee": ("DEE", ".2f"),
    "ood_mi_ratio": ("OOD MI ratio", ".3f"),
    "mi_spearman_ood": ("MI ρ OOD", ".3f"),
    "ood_auroc_mi": ("OOD AUROC by MI", ".4f"),
}
DM_KEYS = tuple(DM_COLUMNS)


def dm_better(key: str, mean: float, base: float) -> bool:
    """Whether ``mean`` is the better value of ``key``: a lower cNLL, an MI ratio closer to 1
    (on a log scale), a higher ρ."""
    if key == "cnll":
        return mean < base
    if key == "ood_mi_ratio":
        return abs(math.log(mean)) < abs(math.log(base))
    return mean > base


def dm_verdict(rows: dict[str, dict], seeds: list[int]) -> dict | None:
    """ConfODS − each baseline, per metric, with the larger of the two seeds' std; a win is a
    better value (:func:`dm_better`) by more than that std, a loss a worse one by more than it.
    *reproduced* where ConfODS beats both baselines in every metric, *not reproduced* where it
    beats neither in any, else *partly*. None until the three students have their seeds
    (:func:`comparable`)."""
    names = (DM_STUDENT, *DM_BASELINES)
    if any(name not in rows or not comparable(rows[name], seeds) for name in names):
        return None
    gaps, wins = {}, []
    for key in DM_METRICS:
        for base in DM_BASELINES:
            (mean, std), (base_mean, base_std) = rows[DM_STUDENT][key], rows[base][key]
            beyond = abs(mean - base_mean) > max(std, base_std)
            better = dm_better(key, mean, base_mean)
            gaps[f"{key} vs {base}"] = {
                "gap": mean - base_mean,
                "std": max(std, base_std),
                "win": better and beyond,
                "loss": not better and beyond,
            }
            wins.append(better and beyond)
    verdict = "reproduced" if all(wins) else "not reproduced" if not any(wins) else "partly"
    return {"gaps": gaps, "verdict": verdict}


def dm_over_common_seeds(per_seed: dict[int, dict], rows: dict[str, dict]) -> dict | None:
    """:func:`dm_verdict` over the seeds all three students have (a gap between means of
    different seeds would mix the seeds' spread into it), with those seeds and the three
    students' means ± std over them (``means``)."""
    names = (DM_STUDENT, *DM_BASELINES)
    if any(name not in rows for name in names):
        return None
    common = sorted(set.intersection(*(set(rows[name]["seeds"]) for name in names)))
    paired = rows_over_seeds({seed: per_seed[seed] for seed in common}, DM_KEYS)
    verdict = dm_verdict(paired, common) if len(common) >= MIN_SEEDS else None
    means = {name: {key: paired[name][key] for key in DM_KEYS} for name in names}
    return verdict and {"seeds": common, "means": means, **verdict}


def dm_mark(gap: dict) -> str:
    """A gap's mark on the page: a win, a loss, or none (within the seeds' std: a tie)."""
    return " **win**" if gap["win"] else " **loss**" if gap["loss"] else ""


def dm_lines(verdict: dict | None) -> list[str]:
    """The page's Diversity Matters section."""
    if verdict is None:
        return []
    lines = [
        "",
        "## Diversity Matters re-measured",
        "",
        f"`{DM_STUDENT}` − each baseline, mean over the seeds all three have "
        f"({', '.join(map(str, verdict['seeds']))}; the larger seeds' std in "
        "brackets; **win**: better by more than it: a lower cNLL, an MI ratio closer to 1, a "
        "higher ρ; **loss**: worse by more than it). Reproduced: ConfODS wins against both in "
        "every metric; not reproduced: it wins nowhere; partly: in between.",
        "",
        "| metric | vs `be` | vs `be + gaussian` |",
        "|---|---:|---:|",
    ]
    for key, label in DM_METRICS.items():
        cells = [verdict["gaps"][f"{key} vs {base}"] for base in DM_BASELINES]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{g['gap']:+.4f} ({g['std']:.4f}){dm_mark(g)}" for g in cells)
            + " |"
        )
    lines += [
        "",
        "The three students over those seeds (mean ± std):",
        "",
        "| student | " + " | ".join(label for label, _ in DM_COLUMNS.values()) + " |",
        "|---|" + "---:|" * len(DM_COLUMNS),
    ]
    for name, means in verdict["means"].items():
        cells = [cell(means[key], fmt) for key, (_, fmt) in DM_COLUMNS.items()]
        lines.append(f"| `{name}` | {' | '.join(cells)} |")
    return [*lines, "", f"**Verdict: {verdict['verdict']}.**"]


def tflops(value: tuple[float, float] | None) -> str:
    """Training FLOPs in TFLOPs (the same in every seed: no spread), or n/a."""
    return "n/a" if value is None else f"{value[0] / 1e12:.1f}"


def agreement_lines(agreement: dict | None, c) -> list[str]:
    """The page's reference row in words: how alike two ensembles of the recipe disagree."""
    if agreement is None:
        return []
    return [
        "",
        "**Reference: another ensemble.** The same recipe's teacher of another seed ranks this "
        f"ensemble's per-example MI at Spearman ρ {c(agreement['test_rho'], '.3f')} on the test "
        f"inputs and {c(agreement['ood_rho'], '.3f')} on the OOD set, and its mean OOD MI is "
        f"{c(agreement['ood_mi_ratio'], '.3f')} of the other's (smaller over larger; "
        f"{agreement['pairs']} pairs of the teachers of seeds "
        f"{', '.join(map(str, agreement['seeds']))}). The ensemble's own disagreement off the "
        "training data is reproducible only that far: a student's OOD ρ at that level ranks "
        "the ensemble's MI as faithfully as another ensemble of the same recipe does.",
    ]


def chosen_floor_lines(summary: dict, rho_floor: float) -> list[str]:
    if summary["chosen"] is None:
        return []
    chosen = floors(summary["rows"][summary["chosen"]], rho_floor)
    return [floor_line(*floor) for floor in chosen]


def choice_text(summary: dict) -> str:
    if summary["chosen"] is None:
        return "none yet: the page has no compact student with an MI on enough seeds."
    tie = summary["tie"]
    return (
        f"`{summary['chosen']}`"
        + ("" if summary["within_bound"] else " (no compact student is within the bound)")
        + (f"; {tie_text(tie, 'the lower validation cNLL')}." if tie else ".")
    )


def markdown(study: Study, record: dict) -> str:
    summary = record["summary"]
    spread = len(summary["seeds"]) > 1

    def c(value, fmt=".4f"):
        if value is None:
            return "n/a"
        return format(value[0], fmt) + (f" ± {format(value[1], fmt)}" if spread else "")

    lines = [
        f"# Keeping the ensemble's disagreement, {study.title}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {', '.join(map(str, summary['seeds']))}"
        + (" (mean ± sample std)" if spread else " (one seed so far: no spread)")
        + f". Teacher: {study.teacher_text}; every student trains 4x the teacher's epochs "
        "(function matching, one cycle). "
        f"OOD: {study.ood_text}, never read by a choice. `hydra default` = Hydra's defaults on "
        "clean inputs (two phases, linear heads, no adapters), the default Hydra before this "
        "study; `hydra joint + mixture + adapters` is what `hydra+mixture` (the default Hydra on "
        "images since) trains at its `auto` values. `joint` = body and heads trained "
        "together from the first step (`hydra.phase1_fraction=0`); `mixup` / `mixture` / `ods` "
        "/ `gaussian` / `confods` = 3 pooled copies of the training inputs "
        "(`perturbation.pool=3`), the mixture a quarter clean, half mixup, a quarter 7 x 7 patch "
        "shuffles, ODS at η = 8/255 for Hydra and 4/255 for BatchEnsemble (ConfODS and Gaussian "
        "noise of the same norm too: Diversity Matters' comparison); `MI` = the per-example "
        "MI-matching term (`hydra.disagreement_weight=10`); `adapters` = rank-16 residual "
        "adapters per head (`hydra.adapter_rank=16`); `half-clean mixture` = half clean, a "
        "quarter mixup, a quarter patch shuffles; `6x` = 6x the teacher's epochs instead of 4x; "
        f"`{SCALED.strip()}` = the same student "
        "with its disagreement temperature s fitted on the clean validation inputs to the "
        "ensemble's mean MI there. Costs relative to one member (forward FLOPs per example, "
        "FlopCounterMode); *train TFLOPs*: forward and backward (3 forward passes) per "
        "example and epoch, plus the teachers' outputs on the distillation inputs (once per "
        "pooled copy, with one member's backward pass for ODS-type steps); *train s*: wall "
        "seconds, several studies sharing two cores with other work (rough; read FLOPs).",
        "",
        "| model | params × | FLOPs × | ACC | cNLL | DEE | cECE | OOD AUROC entropy / MI | "
        "MI ρ test | MI ρ OOD | OOD MI ratio | s | val cNLL | val ρ noise / tiles | train TFLOPs | "
        "train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary["rows"].items():
        mark = " **(chosen)**" if name == summary["chosen"] else ""
        mark += " (tie)" if name in summary["tie"] else ""
        if row["seeds"] != summary["seeds"]:
            mark += f" *(seeds {', '.join(map(str, row['seeds']))})*"
        lines.append(
            f"| {name}{mark} | {row['params_x'][0]:.2f} | {row['flops_x'][0]:.2f} | "
            f"{c(row['acc'])} | {c(row['cnll'])} | {c(row['dee'], '.2f')}{dee_marks(row)} | "
            f"{c(row['cece'])} | {c(row['ood_auroc'])} / {c(row['ood_auroc_mi'])} | "
            f"{c(row['mi_spearman_test'], '.3f')} | {c(row['mi_spearman_ood'], '.3f')} | "
            f"{c(row['ood_mi_ratio'], '.3f')} | {c(row['scale'], '.2f')} | "
            f"{c(row['val_cnll'])} | {c(row['val_noise_rho'], '.3f')} / "
            f"{c(row['val_tiles_rho'], '.3f')} | {tflops(row.get('train_flops'))} | "
            f"{c(row['train_seconds'], '.0f')} |"
        )
    if summary["missing"] or summary["partial"]:
        lines += [
            "",
            f"Not trained yet on {MIN_SEEDS} seeds (the command resumes and adds them; a row "
            "marked with its seeds is averaged over those, and the choice and the verdict read "
            f"only rows of at least {MIN_SEEDS} seeds): "
            + ", ".join(f"`{name}`" for name in [*summary["partial"], *summary["missing"]])
            + ".",
        ]
    lines += [
        *curve_lines(summary["curve"]),
        f"Validation DE-2 cNLL: {c(summary['val_de2'])}.",
        "",
        f"**Choice** (validation data only: {CHOICE_RULE}): " + choice_text(summary),
        *default_lines(summary.get("default_hydra")),
        "",
        "## Floors (issue 28; test split and the OOD set, mean over the seeds)",
        "",
        *chosen_floor_lines(summary, RHO_FLOOR[study.title]),
        *floor_table(summary, RHO_FLOOR[study.title]),
        *agreement_lines(summary.get("ensemble_agreement"), c),
        "",
        f"Shaded: the band [0.5, 2] of the OOD MI ratio; dotted: ρ {RHO_FLOOR[study.title]}; "
        "dashed: 2x a member's "
        "FLOPs; dash-dotted: another ensemble's ρ. Hollow: with the disagreement temperature.",
        "",
        f"![fidelity against inference cost](../img/{study.plot.name})",
        *dm_lines(summary["dm"]),
        "",
        "## Diversity per confidence bin",
        "",
        "The members' mean pairwise KL on test and OOD inputs, binned by each model's own "
        "confidence (Nam et al. 2021, Fig. 3b), mean over the seeds: the ensemble (black) and "
        "the students with members.",
        "",
        f"![diversity per confidence bin](../img/{diversity_plot_path(study.plot).name})",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    args = study_parser(__doc__.splitlines()[0], STUDIES).parse_args()
    study = STUDIES[args.dataset]
    if args.quick:  # never into the study's folders or pages
        out = ROOT / "runs" / "disagreement_quick"
        study = dataclasses.replace(
            MNIST, base=MNIST.base + QUICK, runs=out, out=out, doc=out / "page", plot=out / "p.png"
        )
    if not args.tabulate_only:
        for seed in args.seeds:
            run_seed(study, args.data_dir, seed, args.only, inputs)
    score = functools.partial(score_seed, study, args.data_dir)
    per_seed = page_scores(study.doc, study.out, args.seeds, score)
    summary = tabulate(study, per_seed)
    summary["ensemble_agreement"] = page_agreement(study, summary["seeds"])
    # The default Hydra reads both studies' choices: the other's from its page's JSON.
    others = {
        other.title: read_record(other.doc)[0]["summary"]
        for other in STUDIES.values()
        if other is not study and other.doc.with_suffix(".json").is_file() and not args.quick
    }
    if others and all(s["chosen"] for s in [summary, *others.values()]):
        summary["default_hydra"] = default_hydra({study.title: summary, **others})
    plot(summary, study.plot, RHO_FLOOR[study.title])
    shown = {"ensemble", summary["chosen"], "hydra default", "be"}
    chosen_only = {
        **summary,
        "diversity": {k: v for k, v in summary["diversity"].items() if k in shown},
    }
    plot_diversity(chosen_only, diversity_plot_path(study.plot))
    record = study_record("disagreement.py", args, study.students, per_seed, summary)
    write_page(study.doc, record, functools.partial(markdown, study))


if __name__ == "__main__":
    main()
