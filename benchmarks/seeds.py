"""Aggregating a benchmark's per-seed results (mean ± sample std, table cells) and writing
its results page; distilling run folders from a shared teacher and reading their saved
predictions (validation cNLL, the DE-k curve)."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from safetensors import safe_open

from ensemble_distill import metrics
from ensemble_distill.evaluation import predictive
from ensemble_distill.pipeline import run
from ensemble_distill.report.machine import machine_info, machine_line

# What every input did before Hydra's ``auto`` phases and adapters and ``perturbation.pool:
# auto`` (issue 28): the studies written before pin it, so their rows keep their meaning.
BEFORE_AUTO = ("hydra.phase1_fraction=0.5", "hydra.adapter_rank=0", "perturbation.pool=0")


def study_parser(description: str, datasets: Sequence[str]) -> argparse.ArgumentParser:
    """The command line of a resumable study of students per seed (disagreement, member
    start): the data folder, the data set, the seeds, a subset of the students, rewriting the
    page from what is saved, and a smoke run on digits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/")
    parser.add_argument("--dataset", choices=sorted(datasets), default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="train only these students (names)")
    parser.add_argument("--tabulate-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="the study on digits: a test")
    return parser


def check_only(only: Sequence[str] | None, students: Iterable[str]) -> None:
    """Refuse an ``--only`` name the study has no student of, before the teacher's minutes: a
    misspelt name would otherwise train nothing, silently."""
    names = list(students)
    if only and (unknown := [name for name in only if name not in names]):
        listed = ", ".join(f"'{name}'" for name in names)
        raise SystemExit(f"--only: no student named {unknown}; the study's students: {listed}")


def page_seeds(out: Path, asked: Sequence[int], marker: str = "ensemble.safetensors") -> list[int]:
    """The seeds a study's page covers: those asked for and every other seed already trained
    under ``out`` (``seed<k>/`` holding ``marker``: its teacher's saved outputs, or its
    teacher folder), so that training one seed's missing rows (``--seeds 1 --only NAME``)
    never rewrites the page with that seed alone."""
    trained = {
        int(folder.name.removeprefix("seed"))
        for folder in out.glob("seed*/")
        if folder.name.removeprefix("seed").isdigit() and (folder / marker).exists()
    }
    return sorted(trained | set(asked))


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    """(mean, sample std) of the values that exist; std 0 for one value; None for none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def aggregate(
    per_seed: Sequence[dict[str, dict[str, float | None]]], keys: Sequence[str]
) -> dict[str, dict[str, tuple[float, float] | None]]:
    """{model: {metric: (mean, std)}} over seeds, for the models of the first seed."""
    return {
        name: {key: mean_std([rows[name].get(key) for rows in per_seed]) for key in keys}
        for name in per_seed[0]
    }


# A study trains every student on at least this many seeds (issue 28's 3); the rows a choice or a
# claim rests on by a gap smaller than the seeds' std may have more (``--seeds 3 4 --only ...``,
# 5 in all), and every row is averaged over the seeds it has.
MIN_SEEDS = 3


def comparable(row: dict, seeds: list[int]) -> bool:
    """Whether a row has the seeds a choice or a verdict reads: ``MIN_SEEDS`` of them (every
    seed of a page with fewer); a row still training on its first seeds has not."""
    return len(row["seeds"]) >= min(MIN_SEEDS, len(seeds))


def study_command(prefix: str, seeds: Sequence[int], rows: dict[str, dict], students) -> str:
    """The shell line that trains what a study's page holds: every student on the page's first
    ``MIN_SEEDS`` seeds, then (``&&``) the later seeds for only the ``students`` that have
    them (``--seeds 3 4 --only NAME ...``), so that rerunning it gives the same page."""
    first, extra = list(seeds[:MIN_SEEDS]), list(seeds[MIN_SEEDS:])
    command = f"{prefix} --seeds {' '.join(map(str, first))}"
    names = [name for name in students if set(extra) & set(rows.get(name, {}).get("seeds", ()))]
    if names:
        only = " ".join(shlex.quote(name) for name in names)
        command += f" && {prefix} --seeds {' '.join(map(str, extra))} --only {only}"
    return command


def rows_over_seeds(per_seed: dict[int, dict], keys: Sequence[str]) -> dict[str, dict]:
    """Each row of ``per_seed[seed]["rows"]`` as (mean, std) per key over the seeds that have
    it (a study may still be running), with those seeds and the DEE notes any of them has."""
    seeds = sorted(per_seed)
    names = list(dict.fromkeys(n for s in seeds for n in per_seed[s]["rows"]))
    rows = {}
    for name in names:
        have = [s for s in seeds if name in per_seed[s]["rows"]]
        rows[name] = {k: mean_std([per_seed[s]["rows"][name].get(k) for s in have]) for k in keys}
        notes = {per_seed[s]["rows"][name].get("dee_note") for s in have}
        rows[name] |= {"seeds": have, "dee_notes": sorted(note for note in notes if note)}
    return rows


def curve_over_seeds(per_seed: dict[int, dict]) -> list[tuple[float, float] | None]:
    """The DE-1 … DE-M test cNLL of ``per_seed[seed]["curve"]``, (mean, std) over the seeds."""
    seeds = sorted(per_seed)
    return [
        mean_std([per_seed[s]["curve"][k] for s in seeds])
        for k in range(len(per_seed[seeds[0]]["curve"]))
    ]


def cell(value: tuple[float, float] | None, fmt: str = ".4f") -> str:
    """``mean ± std`` in ``fmt``, or ``n/a``."""
    if value is None:
        return "n/a"
    return f"{format(value[0], fmt)} ± {format(value[1], fmt)}"


def ties(rows: dict[str, dict], chosen: str, candidates: Sequence[str], key: str) -> list[str]:
    """The candidates whose mean ``key`` equals the chosen one's or lies closer to it than the
    seeds' std (the larger of the two): a gap smaller than the noise is a tie, not a finding."""
    best = rows[chosen][key]

    def tied(value: tuple[float, float]) -> bool:
        gap = abs(value[0] - best[0])
        return gap == 0 or gap < max(best[1], value[1])

    return [
        name
        for name in candidates
        if name != chosen and rows[name][key] is not None and tied(rows[name][key])
    ]


def tie_text(tied: Sequence[str], broken_by: str) -> str:
    """The page's words for a choice within noise: ``tie (gap < std) with `a`, broken by …``."""
    return f"tie (gap < std) with {', '.join(f'`{n}`' for n in tied)}, broken by {broken_by}"


def read_record(doc: Path) -> tuple[dict, dict[int, dict]]:
    """``doc``.json and its per-seed scores by seed (none for a page of one run): a page
    rewritten from what its run saved (a change to how the page tabulates or reads it, not to
    the measurements)."""
    record = json.loads(doc.with_suffix(".json").read_text())
    return record, {int(seed): scores for seed, scores in record.get("per_seed", {}).items()}


def same_teacher(a: dict, b: dict) -> bool:
    """Whether two scorings of a seed read the same teacher: its ensemble's test and OOD scores
    agree to rounding."""
    ra, rb = a["rows"]["ensemble"], b["rows"]["ensemble"]
    return all(math.isclose(ra[k], rb[k], rel_tol=1e-6) for k in ("acc", "cnll", "ood_auroc"))


def merge_seed(recorded: dict | None, fresh: dict) -> dict:
    """One seed's scores from its folder (``fresh``) and from the page's record, which stands
    for students whose saved outputs are gone (``runs/`` is not kept): the fresh rows (and
    per-student ``diversity``) replace the recorded ones, and rows only recorded stay. Only
    with the page's teacher: a student of another teacher would sit beside rows it was never
    compared with."""
    if recorded is None:
        return fresh
    if not same_teacher(recorded, fresh):
        raise ValueError("a seed's scores merged under another teacher than its recorded one")
    merged = {**recorded, **fresh}
    for key in ("rows", "diversity"):
        if key in recorded:
            merged[key] = recorded[key] | fresh.get(key, {})
    return merged


def page_scores(
    doc: Path, out: Path, asked: Sequence[int], score: Callable[[int], dict]
) -> dict[int, dict]:
    """Every seed's scores for a page: each seed trained under ``out`` scored afresh
    (``score(seed)``) and merged with the page's record (:func:`merge_seed`), and recorded
    seeds whose folders are gone as recorded. So a study outlives its ``runs/`` folder: what a
    session finished is on the committed page, and the next trains only what is missing."""
    recorded = read_record(doc)[1] if doc.with_suffix(".json").is_file() else {}
    on_disk = page_seeds(out, [])
    if lost := sorted(set(asked) - set(on_disk) - set(recorded)):
        raise SystemExit(
            f"seeds {lost} are neither trained under {out} nor on the page "
            f"{doc.with_suffix('.json')}: train them first (drop --tabulate-only)"
        )
    fresh = {}
    for seed in on_disk:
        scores = score(seed)
        if seed in recorded and not same_teacher(recorded[seed], scores):
            raise SystemExit(
                f"seed {seed}: the teacher under {out / f'seed{seed}'} is not the one the page "
                f"{doc.with_suffix('.json')} recorded (its test scores differ): train every "
                "student of the seed again (move the page's JSON away), or restore the folder"
            )
        fresh[seed] = merge_seed(recorded.get(seed), scores)
    return dict(sorted((recorded | fresh).items()))


def study_record(
    script: str, args: argparse.Namespace, students, per_seed: dict, summary: dict
) -> dict:
    """A seed study's page record (:func:`study_parser`'s ``args``): the command that rebuilds
    it, the machine, the per-seed scores and their summary."""
    data_dir = f" --data-dir {args.data_dir}" if args.data_dir else ""
    dataset = f" --dataset {args.dataset}" if args.dataset != "mnist" else ""
    prefix = f"python benchmarks/{script}{dataset}{data_dir}"
    return {
        "command": study_command(prefix, summary["seeds"], summary["rows"], students),
        "machine": machine_info(),
        "machine_line": machine_line(machine_info()),
        "per_seed": per_seed,
        "summary": summary,
    }


def write_page(doc: Path, record: dict, markdown: Callable[[dict], str]) -> None:
    """Write ``doc``.json (the record) and ``doc``.md (its page), and print the page."""
    page = markdown(record)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.with_suffix(".json").write_text(json.dumps(record, indent=2))
    doc.with_suffix(".md").write_text(page)
    print(page)


def distil_from_teacher(teacher_run: Path, out: Path, config) -> float | None:
    """Distil and evaluate ``config``'s students into run folder ``out``, starting from a copy
    of ``teacher_run``'s teacher (trained once per seed, shared by every variant); resumable.
    A finished run (its results.json written) is kept as it is, whichever version wrote it:
    returns None; else the seconds it took. No report.html (a study reads results.json; the
    report took a third of a small run's time): ``ensemble-distill report OUT`` builds it."""
    if (out / "results.json").is_file():
        return None
    if not (out / "teacher").is_dir():
        shutil.copytree(teacher_run / "teacher", out / "teacher")
    start = time.perf_counter()
    run(config, out, steps=("distill", "evaluate"), quiet=True, report=False)
    return time.perf_counter() - start


def val_cnll(run_dir: Path, model: str) -> float:
    """Calibrated NLL on the validation split (temperature fitted on it): the selection score."""
    with safe_open(run_dir / "predictions.safetensors", "pt") as f:
        kind = f.metadata()[model]
        probs = predictive(f.get_tensor(f"{model}/val"), kind).probs
        labels = f.get_tensor("labels/val")
    return metrics.calibrated_metrics(probs, labels, probs, labels)["cnll"]


def ensemble_curve(run_dir: Path) -> list[float]:
    """The teacher's DE-1 … DE-M calibrated test NLL from a run's saved member outputs."""
    with safe_open(run_dir / "predictions.safetensors", "pt") as f:
        val, test = f.get_tensor("ensemble/val"), f.get_tensor("ensemble/test")
        y_val, y_test = f.get_tensor("labels/val"), f.get_tensor("labels/test")
    return metrics.ensemble_size_curve(predictive(val).probs, y_val, predictive(test).probs, y_test)


DEE_FOOTNOTE = (
    "†: DEE below 1 in some seed, extrapolated by the ensemble-size law cNLL(k) = a + b/k "
    "through DE-1 and DE-2 (docs/methods.md); (≥): capped at M, a lower bound."
)


def curve_lines(curve: Sequence[tuple[float, float]]) -> list[str]:
    """The lines a study page prints below its table: the DEE footnote and the DE-k curve."""
    return ["", DEE_FOOTNOTE, "", f"DE-k test cNLL: {curve_text(curve)}.", ""]


def dee_marks(row: dict) -> str:
    """† where some seed's DEE was extrapolated below DE-1, (≥) where capped at M."""
    marks = {"extrapolated": "†", "capped": " (≥)"}
    return "".join(marks[note] for note in row.get("dee_notes", []) if note in marks)


def curve_text(curve: Sequence[tuple[float, float]]) -> str:
    """``DE-1 c1, DE-2 c2, ...``: the mean DE-k test cNLL over seeds, to 4 decimals."""
    return ", ".join(f"DE-{k} {v[0]:.4f}" for k, v in enumerate(curve, start=1))
