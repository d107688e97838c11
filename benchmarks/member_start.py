"""Students that start from a member (issue 31): KD, Hydra and BatchEnsemble from random weights
against ``student.init=member`` at 1x, 2x and 4x the teacher's epochs. Writes
docs/results/member_start{,_fashion}.{json,md}:

    python benchmarks/member_start.py --data-dir ../shared/data --seeds 0 1 2
    python benchmarks/member_start.py --dataset fashion-mnist --data-dir ../shared/data

(``--tabulate-only`` rewrites a page from what is saved.) The teachers are the disagreement
study's (benchmarks/disagreement.py: MNIST M = 10 MLPs 400-400, 8 epochs; Fashion-MNIST the
M = 4 CNNs of configs/diversity_fashion.yaml), loaded from runs/disagreement[_fashion]/seed<k>/
teacher/teacher, or trained there when missing. Its random-start students at 4x are this
study's too (same config, ``student.init=random`` being the default): they are copied, not
trained again. Every other student's outputs on the validation, test and OOD splits are saved
to runs/member_start[_fashion]/seed<k>/<student>.safetensors; a finished student is kept, so
stop and rerun at will (one process per seed in parallel if you like). The page keeps from its
JSON the seeds and rows whose files are gone (runs/ is not committed).
A student is compared once it has 3 seeds; where a gap is smaller than the std, seeds 3 and 4
of the students it rests on join with ``--seeds 3 4 --only NAME ...``.

The verdict reads validation data only: ``member`` becomes the default only if, on both data
sets, it lowers every student's validation cNLL at the default budget (4x) by more than the
seeds' std and costs no more than the seeds' std of its validation MI rank agreement (a
perturbed copy of the validation inputs, Gaussian σ = 0.2, where the members disagree). Every
member start begins as member 0, so the page ranks member 0 among the members on validation and
on test: a start luckier on validation than on test leans the validation gaps its way.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import torch
from disagreement import (
    FASHION,
    LINEAR,
    MNIST,
    QUICK,
    fidelity,
    perturbed_validation,
    read_seed,
)
from hydra_tradeoff import ROOT, Study, run_seed
from seeds import (
    MIN_SEEDS,
    cell,
    curve_lines,
    curve_over_seeds,
    dee_marks,
    page_scores,
    rows_over_seeds,
    study_parser,
    study_record,
    write_page,
)

from ensemble_distill import metrics
from ensemble_distill.evaluation import classification_scores, predictive

METHODS = {"kd": ("kd", []), "hydra": ("hydra", LINEAR), "be": ("be", [])}
BUDGETS = (1, 2, 4)
INITS = ("random", "member")
# The disagreement study's students with this study's config: (its name, ours).
REUSED = {"kd": "kd random 4x", "hydra default": "hydra random 4x", "be": "be random 4x"}


def student_name(method: str, init: str, budget: int) -> str:
    return f"{method} {init} {budget}x"


def students() -> dict[str, tuple[str, list[str]]]:
    """name -> (method, overrides); cheapest first, so a partial run still reads."""
    table = {}
    for budget in BUDGETS:
        for name, (method, overrides) in METHODS.items():
            for init in INITS:
                table[student_name(name, init, budget)] = (
                    method,
                    [*overrides, f"student.epochs_multiple={budget}", f"student.init={init}"],
                )
    return table


def study_of(base: Study, suffix: str) -> Study:
    """``base``'s teachers and data, this study's students and folders."""
    return dataclasses.replace(
        base,
        students=students(),
        out=ROOT / "runs" / f"member_start{suffix}",
        doc=ROOT / "docs" / "results" / f"member_start{suffix}",
    )


STUDIES = {"mnist": study_of(MNIST, ""), "fashion-mnist": study_of(FASHION, "_fashion")}


def inputs(setup) -> dict[str, torch.Tensor]:
    """Validation, its Gaussian copy, test and OOD: what a student is scored on."""
    data = setup.data
    noise = perturbed_validation(data.val.x, setup.config.seed)["val_noise"]
    ood = next(iter(data.ood.values())).x
    return {"val": data.val.x, "val_noise": noise, "test": data.test.x, "ood": ood}


def copy_reused(study: Study, origin: Path, seed: int) -> None:
    """Hard-link (else copy) the disagreement study's random 4x students of ``seed``."""
    for theirs, ours in REUSED.items():
        source = origin / f"seed{seed}" / f"{theirs}.safetensors"
        target = study.out / f"seed{seed}" / f"{ours}.safetensors"
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.hardlink_to(source)
            except OSError:
                shutil.copyfile(source, target)


def start_rank(ensemble: dict, data) -> dict[str, int]:
    """Member 0's rank (1: the best) by cNLL among the teacher's members, on validation
    (temperature fitted and scored there, as a student's validation cNLL) and on test. Every
    member-start student begins as member 0, so where member 0 ranks better on validation than
    on test, the validation gaps lean towards the member start by member 0's luck there."""
    val, test = ensemble["val"].probs, ensemble["test"].probs  # (batch, members, classes)
    y_val, y_test = data.val.y, data.test.y
    cnll = {"val": [], "test": []}
    for m in range(val.shape[1]):
        temperature = metrics.fit_temperature(val[:, m], y_val)
        for split, probs, labels in (("val", val, y_val), ("test", test, y_test)):
            scaled = metrics.temperature_scale(probs[:, m], temperature)
            cnll[split].append(metrics.nll(scaled, labels))
    return {split: 1 + sum(c < values[0] for c in values[1:]) for split, values in cnll.items()}


def score_seed(study: Study, data_dir: str | None, seed: int) -> dict:
    """Every saved student's test scores, validation scores and training cost on one seed, and
    member 0's :func:`start_rank`."""
    setup, outputs, kinds, infos = read_seed(study, data_dir, seed)
    rows, curve = classification_scores(outputs, kinds, setup.data)
    ensemble = {k: predictive(v, kinds["ensemble"]) for k, v in outputs["ensemble"].items()}
    y_val, examples = setup.data.val.y, len(setup.data.train)
    for name in study.students:
        if name not in rows:
            continue
        row, info = rows[name], infos[name]
        pred = {k: predictive(v, kinds[name]) for k, v in outputs[name].items()}
        budget = int(name.split()[-1].removesuffix("x"))
        # Forward and backward: about 3x a forward pass per example and epoch.
        row["train_flops"] = 3 * info["flops"] * examples * budget * setup.config.epochs
        row["train_seconds"] = info.get("train_seconds")
        row |= fidelity(pred, ensemble, y_val)
        row["val_noise_rho"] = metrics.rank_correlation(
            pred["val_noise"].mi, ensemble["val_noise"].mi
        )
    return {"rows": rows, "curve": curve, "start_rank": start_rank(ensemble, setup.data)}


KEYS = ("acc", "cnll", "dee", "ood_auroc_mi", "mi_spearman_ood", "ood_mi_ratio")
KEYS += ("train_flops", "train_seconds", "val_cnll", "val_noise_rho")


def tabulate(per_seed: dict[int, dict]) -> dict:
    """Mean ± std over the seeds that have each row (a study may still be running)."""
    seeds, rows = sorted(per_seed), rows_over_seeds(per_seed, KEYS)
    curve = curve_over_seeds(per_seed)
    return {"seeds": seeds, "rows": rows, "curve": curve, "verdicts": verdicts(rows)}


def gap(rows: dict, a: str, b: str, key: str) -> dict | None:
    """``a`` − ``b`` in ``key`` (means), with the larger of the two stds: beyond it or a tie."""
    if a not in rows or b not in rows or rows[a][key] is None or rows[b][key] is None:
        return None
    (mean_a, std_a), (mean_b, std_b) = rows[a][key], rows[b][key]
    return {"gap": mean_a - mean_b, "std": max(std_a, std_b)}


def verdicts(rows: dict) -> dict[str, dict]:
    """Per student and budget, member − random in validation cNLL and validation MI ρ, over the
    seeds each has: rows of ``MIN_SEEDS`` seeds or more only, even on a page of fewer (a std of
    one or two seeds is no yardstick for a default)."""
    complete = {name: row for name, row in rows.items() if len(row["seeds"]) >= MIN_SEEDS}
    table = {}
    for method in METHODS:
        for budget in BUDGETS:
            member, random = (student_name(method, init, budget) for init in ("member", "random"))
            table[f"{method} {budget}x"] = {
                key: gap(complete, member, random, key) for key in ("val_cnll", "val_noise_rho")
            }
    return table


def better(entry: dict | None, lower: bool) -> bool | None:
    """Whether member start wins beyond the seeds' std (None: not measured)."""
    if entry is None:
        return None
    return (-entry["gap"] if lower else entry["gap"]) > entry["std"]


def default_verdict(summary: dict) -> str:
    """This data set's vote for ``student.init=member`` (see the module docstring)."""
    votes = []
    for method in METHODS:
        entry = summary["verdicts"][f"{method} 4x"]
        cnll, rho = entry["val_cnll"], entry["val_noise_rho"]
        if cnll is None:
            return f"none yet, `{method}` at 4x is not trained on {MIN_SEEDS} seeds"
        costs_rho = rho is not None and -rho["gap"] > rho["std"]
        votes.append(bool(better(cnll, lower=True)) and not costs_rho)
    return "yes" if all(votes) else "no"


def signed(entry: dict | None, fmt: str, lower: bool) -> str:
    """``+gap (std s)`` and who wins: *tie* within the std, else *member* or *random*."""
    if entry is None:
        return "n/a"
    word = (
        "tie"
        if abs(entry["gap"]) <= entry["std"]
        else ("member" if better(entry, lower) else "random")
    )
    return f"{entry['gap']:+{fmt}} (std {entry['std']:{fmt}}) {word}"


def start_lines(per_seed: dict) -> list[str]:
    """Member 0's :func:`start_rank` per seed (seeds recorded before it was kept have none)."""
    ranked = {
        seed: scores["start_rank"] for seed, scores in per_seed.items() if "start_rank" in scores
    }
    if not ranked:
        return []
    seeds = ", ".join(map(str, ranked))
    val, test = (", ".join(str(r[split]) for r in ranked.values()) for split in ("val", "test"))
    return [
        f"Member 0, where every member-start student begins, ranks among the teacher's members "
        f"by cNLL (1: the best) {val} on validation and {test} on test (seeds {seeds}). Where "
        "it ranks better on validation than on test, the validation gaps below lean towards "
        "the member start: member 0's luck on the validation set comes with it.",
        "",
    ]


def markdown(study: Study, record: dict) -> str:
    summary = record["summary"]
    seeds = ", ".join(map(str, summary["seeds"]))
    lines = [
        f"# Students that start from a member, {study.title}",
        "",
        f"Command: `{record['command']}`  ",
        f"Machine: {record['machine_line']}. Seeds: {seeds} "
        f"(mean ± sample std). Teacher: {study.teacher_text}, the disagreement study's "
        f"(benchmarks/disagreement.py). Students: `kd`, `hydra` (linear heads on clean inputs), "
        f"`be`, at 1x, 2x and 4x the teacher's epochs, from random weights or from the members "
        f"(`student.init=member`: the body and head of member 0; Hydra's head m and BE's shared "
        f"weights as docs/methods.md says). OOD: {study.ood_text}. *train GFLOPs*: 3 x the "
        "forward FLOPs per example x training examples x epochs; *train s*: wall seconds on "
        "one core, with other work on the machine (rough).",
        "",
        "| student | ACC | cNLL | DEE | OOD AUROC MI | MI ρ OOD | OOD MI ratio | val cNLL "
        "| val ρ noise | train GFLOPs | train s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = summary["rows"]
    order = ["ensemble", "member", *[n for n in study.students if n in rows]]
    for name in [n for n in order if n in rows]:
        row = rows[name]
        flops = row["train_flops"]
        partial = "" if row["seeds"] == summary["seeds"] else f" (seeds {row['seeds']})"
        lines.append(
            f"| {name}{partial} | {cell(row['acc'])} | {cell(row['cnll'])} | "
            f"{cell(row['dee'], '.2f')}{dee_marks(row)} | {cell(row['ood_auroc_mi'])} | "
            f"{cell(row['mi_spearman_ood'], '.3f')} | {cell(row['ood_mi_ratio'], '.3f')} | "
            f"{cell(row['val_cnll'])} | {cell(row['val_noise_rho'], '.3f')} | "
            f"{'n/a' if flops is None else f'{flops[0] / 1e9:.0f}'} | "
            f"{cell(row['train_seconds'], '.0f')} |"
        )
    missing = [n for n in study.students if n not in rows]
    if missing:
        lines += ["", "Not trained yet: " + ", ".join(f"`{n}`" for n in missing) + "."]
    lines += curve_lines(summary["curve"])
    lines += start_lines(record["per_seed"])
    lines += [
        "## Member start against random start (validation only)",
        "",
        "member − random, mean over the seeds, with the larger of the two seeds' std; *tie*: "
        "the gap is within it; else the start that wins beyond it (lower cNLL, higher ρ).",
        "",
        "| student | budget | val cNLL | val ρ noise |",
        "|---|---:|---:|---:|",
    ]
    for key, entry in summary["verdicts"].items():
        method, budget = key.split()
        lines.append(
            f"| {method} | {budget} | {signed(entry['val_cnll'], '.4f', lower=True)} | "
            f"{signed(entry['val_noise_rho'], '.3f', lower=False)} |"
        )
    text = default_verdict(summary)
    lines += [
        "",
        f"**Vote for `student.init=member` as the default on this data set: {text}.** The rule: "
        "every student's validation cNLL at 4x lower than from random weights beyond the "
        "seeds' std, and its validation MI ρ not lower beyond it; the default changes only if "
        "both data sets vote yes.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = study_parser(__doc__.splitlines()[0], STUDIES).parse_args()
    study = STUDIES[args.dataset]
    origin = (MNIST if args.dataset == "mnist" else FASHION).out
    if args.quick:  # never into the study's folders or pages
        out = ROOT / "runs" / "member_start_quick"
        study = dataclasses.replace(
            study, base=MNIST.base + QUICK, runs=out, out=out, doc=out / "page"
        )
        origin = out / "none"
    if not args.tabulate_only:
        for seed in args.seeds:
            copy_reused(study, origin, seed)
            run_seed(study, args.data_dir, seed, args.only, inputs)
    score = functools.partial(score_seed, study, args.data_dir)
    per_seed = page_scores(study.doc, study.out, args.seeds, score)
    summary = tabulate(per_seed)
    record = study_record("member_start.py", args, study.students, per_seed, summary)
    write_page(study.doc, record, functools.partial(markdown, study))


if __name__ == "__main__":
    main()
