"""The evaluation report of a run (``report.html``, ``report.md``) and a side-by-side
comparison of several runs (``compare.html``, ``compare.md``).

A report is a list of blocks (headings, notes, tables, figures, code) written twice: as HTML,
self-contained (PNG figures as base64 data URIs, inline CSS, no external reference), and as
markdown linking the same PNGs, written into a folder beside it. Rebuilding from the same
files reproduces every output byte for byte: no absolute paths, PNGs without a software stamp,
and the only dates are the run's own, read from its run.log (a run without one shows the day
the report was built, and says so).
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ensemble_distill.checkpoint import atomic_write
from ensemble_distill.errors import DataError
from ensemble_distill.report import plots
from ensemble_distill.report.rundir import RunDir, load_results, load_run
from ensemble_distill.report.table import (
    BASELINES,
    DEE_FOOTNOTE,
    FPR95_NOTE,
    REFERENCE,
    REGRESSION,
    REGRESSION_NOTE,
    Cell,
    compare_columns,
    compare_rows,
    markdown_grid,
    ordered_names,
    report_tables,
    table_rows,
    task_of,
)
from ensemble_distill.shift import MEAN as SHIFT_MEAN

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #222; background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.5em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p { max-width: 900px; }
table { border-collapse: collapse; font-size: 0.86em; margin: 0.6em 0; }
th, td { padding: 0.3em 0.6em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f4f4; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
tr.reference td { background: #ececec; font-style: italic; }
tr.baseline td { color: #555; }
figure { margin: 0.5em 0 2em; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; max-width: 900px; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""

TABLE_NOTE = (
    "Test split. `ensemble` (first row) is the reference and `member` its first member "
    "alone; neither is ranked. **Bold**: the best student per column (↑ higher is better, "
    "↓ lower is better). cNLL, cECE, cBrier: after temperature scaling fitted on the "
    "validation split; DEE: the deep-ensemble size with the same cNLL; BS (TFP) = Brier − 1; "
    "ρ: Spearman correlation of per-example MI with the ensemble's (n/a for a constant MI). "
    + FPR95_NOTE
    + " AURC: the mean error rate among the k most confident test examples over k = 1 … N; "
    "E-AURC: its excess over a ranking of every correct example first, at the same accuracy. "
    + DEE_FOOTNOTE
)
REGRESSION_TABLE_NOTE = (
    "Test split. `ensemble` (first row) is the reference and `member` its first member "
    "alone; neither is ranked. **Bold**: the best student per column (↑ higher is better, "
    "↓ lower is better, → closest to the nominal value). " + REGRESSION_NOTE
)


# Blocks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Note:
    """A paragraph; may use `code` and **bold**."""

    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[tuple[str, list[Cell]]]


@dataclass(frozen=True)
class Image:
    """A PNG figure: ``key`` names its file, ``title`` is its alt text."""

    key: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Code:
    language: str
    text: str


Block = Heading | Note | Table | Image | Code


def to_markdown(blocks: Sequence[Block], image_dir: str) -> str:
    """The blocks as markdown; images link ``image_dir/KEY.png`` (relative)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}\n")
        elif isinstance(block, Note):
            parts.append(f"{block.text}\n")
        elif isinstance(block, Table):
            parts.append(markdown_grid(block.headers, block.rows))
        elif isinstance(block, Image):
            parts.append(f"![{block.title}]({image_dir}/{block.key}.png)\n\n{block.caption}\n")
        else:
            parts.append(f"```{block.language}\n{block.text.rstrip()}\n```\n")
    return "\n".join(parts)


def to_html(title: str, blocks: Sequence[Block]) -> str:
    """A self-contained HTML page of the blocks."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Note):
            body.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(html_grid(block.headers, block.rows))
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.title)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
        else:
            body.append(f"<pre>{html.escape(block.text.rstrip())}</pre>")
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
    ]
    return "\n".join([*head, "<body>", "<main>", *body, "</main>", "</body>", "</html>", ""])


def html_grid(headers: Sequence[str], rows: Sequence[tuple[str, list[Cell]]]) -> str:
    """An HTML table: the reference and baseline rows styled apart, best cells in bold."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    lines = ["<table>", f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    for name, cells in rows:
        kind = "reference" if name == REFERENCE else "baseline" if name in BASELINES else ""
        opening = f'<tr class="{kind}">' if kind else "<tr>"
        tds = "".join(
            f"<td><strong>{html.escape(t)}</strong></td>" if best else f"<td>{html.escape(t)}</td>"
            for t, best in cells
        )
        lines.append(f"{opening}<td>{html.escape(name)}</td>{tds}</tr>")
    return "\n".join([*lines, "</tbody>", "</table>"])


def _inline_html(text: str) -> str:
    """The two markdown marks the notes use, **bold** and `code`, as HTML; the rest escaped."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def write_document(out: Path, stem: str, title: str, blocks: Sequence[Block]) -> tuple[Path, Path]:
    """Write ``out/STEM.html``, ``out/STEM.md`` and the images into ``out/STEM/``."""
    for block in blocks:
        if isinstance(block, Image):
            atomic_write(out / stem / f"{block.key}.png", block.png)
    html_path, md_path = out / f"{stem}.html", out / f"{stem}.md"
    atomic_write(html_path, to_html(title, blocks))
    atomic_write(md_path, to_markdown([Heading(1, title), *blocks], stem))
    return html_path, md_path


# One run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureSpec:
    """A report figure: file stem, heading, caption and how to draw it from a run."""

    key: str
    title: str
    caption: str
    draw: Callable[[RunDir], Figure | None]


FIGURES = (
    FigureSpec(
        "reliability",
        "Reliability diagrams",
        "Accuracy per confidence bin on the test split; the black outline repeats the "
        "ensemble's bars in every panel, the dotted diagonal is perfect calibration.",
        plots.reliability_figure,
    ),
    FigureSpec(
        "mi_agreement",
        "Per-example uncertainty agreement",
        "Each student's mutual information (model uncertainty) against the ensemble's, "
        "example by example; points on the dotted diagonal agree exactly. A single network "
        "(KD) has MI = 0 everywhere and sits on the floor.",
        plots.mi_agreement_figure,
    ),
    FigureSpec(
        "ood_histograms",
        "OOD detection by predictive entropy",
        "Predictive entropy on the test split (filled) and on the OOD set (outline); the "
        "less they overlap, the higher the AUROC.",
        plots.ood_histogram_figure,
    ),
    FigureSpec(
        "risk_coverage",
        "Selective prediction: risk against coverage",
        "Each model answers its most confident test examples first (confidence: the largest "
        "predicted probability); the curve is the error rate among those answered against the "
        "fraction answered, and AURC its mean over 1 … N answered. The lower the curve, the "
        "better the confidence ranks mistakes last; at full coverage it is 1 − accuracy.",
        plots.risk_coverage_figure,
    ),
    FigureSpec(
        "diversity",
        "Teacher diversity per confidence bin",
        "The teachers' mean pairwise KL on clean training and test inputs and on perturbed "
        "training inputs at each step size η: a student can only learn the diversity that "
        "its distillation inputs carry.",
        lambda run: plots.diversity_figure(run.diversity) if run.diversity else None,
    ),
    FigureSpec(
        "student_diversity",
        "Student diversity per confidence bin",
        "The mean pairwise KL between each student's members (heads, BatchEnsemble members) "
        "on the test split, per bin of its own confidence, next to the teachers' (black, "
        "dashed): a student that keeps the ensemble's disagreement lies on the teacher's line, "
        "a collapsed Hydra orders of magnitude below it.",
        lambda run: plots.student_diversity_figure(run.results.get("test_diversity")),
    ),
    FigureSpec(
        "cost",
        "Quality against cost",
        "Test accuracy and NLL against parameters and latency (log scales). The dashed "
        "segment joins one member and the full ensemble: a good student reaches the "
        "ensemble's quality at the member's cost.",
        lambda run: plots.cost_figure([(run.path.name, run.results)]),
    ),
    FigureSpec(
        "dee",
        "Deep-ensemble equivalent",
        "Calibrated test NLL of deep ensembles of 1 … M members and each student's cNLL: its "
        "DEE is where its line meets the curve. The curve is the monotone (isotonic) fit of the "
        "per-size means that DEE uses. A line above the whole curve meets its dashed "
        "extension a + b/k below one member (DEE < 1, hatched bar); one below it gets M, a "
        "lower bound (hatched bar).",
        lambda run: plots.dee_figure(run.results),
    ),
    FigureSpec(
        "shift",
        "Uncertainty under dataset shift",
        "Accuracy, NLL, ECE and mean MI of every model on the test split corrupted at "
        "severities 1 … 5 (eval.corruptions; each point the mean over the corruptions), "
        "severity 0 being the clean test split. Trustworthy uncertainty loses accuracy but "
        "stays calibrated (ECE flat) while its model uncertainty (MI) rises.",
        lambda run: plots.shift_figure(run.results),
    ),
    FigureSpec(
        "training",
        "Training curves",
        "Validation NLL per epoch of the teacher and every student, and each one's training "
        "loss (every method minimises its own objective, so each has its own axis).",
        lambda run: plots.training_figure(run.histories),
    ),
)

REGRESSION_FIGURES = (
    FigureSpec(
        "bands",
        "Predictive bands",
        "Each model's predictive mean over the input range with ±2 σ bands of its epistemic "
        "variance (dark) and total variance (pale), over the test points; the grey region is "
        "the OOD inputs' range (for `gap`, where there was no training data) and the dashed "
        "lines repeat the ensemble's total band. A single Gaussian (KD, member) has no "
        "epistemic band: only its aleatoric variance can widen there.",
        plots.regression_bands_figure,
    ),
    FigureSpec(
        "calibration",
        "Interval calibration",
        "Observed fraction of test targets inside each model's central interval against the "
        "interval's nominal coverage (left) and the difference (right): on the dashed line is "
        "calibrated, below it over-confident (intervals too narrow).",
        plots.regression_calibration_figure,
    ),
    FigureSpec(
        "uncertainty_ood",
        "Variance on test vs OOD inputs",
        "Per-example epistemic (left) and total (right) variance on the test split (filled) "
        "and the OOD set (outlined), with each model's AUROC for telling them apart: the "
        "higher the OOD boxes sit above the test boxes, the better. A single Gaussian has no "
        "epistemic variance (its epistemic AUROC is 0.5) and can only be compared by total "
        "variance.",
        plots.regression_uncertainty_figure,
    ),
    FigureSpec(
        "cost",
        "Quality against cost",
        "Test RMSE and NLL against parameters and latency (log scales). The dashed segment "
        "joins one member and the full ensemble: a good student reaches the ensemble's "
        "quality at the member's cost.",
        lambda run: plots.cost_figure([(run.path.name, run.results)]),
    ),
    FigureSpec(
        "training",
        "Training curves",
        "Validation Gaussian NLL (on standardised targets, so it can be negative) per epoch of "
        "the teacher and every student, and each one's training loss (every method minimises "
        "its own objective, so each has its own axis).",
        lambda run: plots.training_figure(run.histories),
    ),
)


def build_report(run_dir: Path) -> tuple[Path, Path]:
    """Write ``run_dir/report.html`` (self-contained) and ``run_dir/report.md`` (its PNGs in
    ``run_dir/report/``) from the files of a finished run.

    Returns:
        The paths of report.html and report.md.

    Raises:
        DataError: ``run_dir`` lacks results.json or predictions.safetensors.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    results = run.results
    regression = run.is_regression
    ensemble = "Gaussian deep ensemble" if regression else "deep ensemble"
    title = f"{results['dataset']}: {ensemble} of {results['members']} members vs students"
    note = REGRESSION_TABLE_NOTE if regression else TABLE_NOTE
    blocks: list[Block] = [
        Note(_summary(run)),
        Note(_provenance(run)),
        Heading(2, "Results"),
        Note(note),
    ]
    for name, columns in report_tables(results).items():
        headers = ["model", *(column.header for column in columns)]
        blocks += [Heading(3, name), Table(headers, table_rows(results["methods"], columns))]
    blocks += _diversity_blocks(results.get("diversity"))
    blocks += _shift_blocks(results)
    blocks.append(Heading(2, "Figures"))
    for spec in REGRESSION_FIGURES if regression else FIGURES:
        figure = spec.draw(run)
        if figure is not None:
            png = plots.figure_png(figure)
            blocks += [Heading(3, spec.title), Image(spec.key, spec.title, spec.caption, png)]
    if run.config_text is not None:
        blocks += [Heading(2, "Configuration"), Code("yaml", run.config_text)]
    return write_document(run_dir, "report", title, blocks)


def _summary(run: RunDir) -> str:
    """One line on the data and models (the directory's name only: no absolute path)."""
    if run.is_regression:
        mean, std = run.target_scale
        kind = f"regression (targets: mean {mean:.4g}, sd {std:.4g})"
    else:
        kind = f"{run.predictive(REFERENCE, 'test').probs.shape[-1]} classes"
    return (
        f"Run `{run.path.name}`: {len(run.labels('test'))} test examples, {kind}, "
        f"OOD set: {run.ood or 'none'}{_converted(run)}; students: "
        f"{', '.join(run.students) or 'none'}."
    )


def _converted(run: RunDir) -> str:
    """`` (converted: grey 28x28 upsampled to 3x32x32)`` when the OOD images were converted to
    the run's shape: OOD scores on such a set say less, so the report says so."""
    return f" (**converted: {run.ood_conversion}**)" if run.ood_conversion else ""


def package_version() -> str:
    """This package's installed version (the one building the report), or ``unknown``."""
    try:
        return metadata.version("ensemble-distill")
    except metadata.PackageNotFoundError:
        return "unknown"


def _provenance(run: RunDir) -> str:
    """When the run was made, from run.log's dates (results.json has none), else the day the
    report was built, saying which; and the version of ensemble-distill writing the report."""
    version = f"report by ensemble-distill {package_version()}"
    if run.run_dates is None:
        today = datetime.date.today().isoformat()
        return f"Run date not recorded (no dated run.log); report built {today}, {version}."
    first, last = run.run_dates
    made = first if first == last else f"{first} to {last}"
    return f"Run made {made} (dates from run.log); {version}."


def _diversity_blocks(diversity: Mapping[str, Any] | None) -> list[Block]:
    """The mean teacher diversity on perturbed training inputs over that on clean ones
    (``results["diversity"]``), a row per perturbation; nothing when none was measured."""
    if not diversity or not diversity.get("ratio_to_clean_train"):
        return []
    ratios = diversity["ratio_to_clean_train"]
    etas = list(next(iter(ratios.values())))
    rows = [
        (name, [(f"{by_eta[eta]:.3g}", False) for eta in etas]) for name, by_eta in ratios.items()
    ]
    headers = ["perturbation", *(f"η = {float(eta):g}: diversity / clean train" for eta in etas)]
    return [
        Heading(3, "Teacher diversity on perturbed training inputs"),
        Note(
            f"Mean pairwise KL of the teachers relative to clean training inputs "
            f"({diversity['clean_train']:.3g} nats; clean test inputs: "
            f"{diversity['clean_test']:.3g} nats)."
        ),
        Table(headers, rows),
    ]


def _shift_blocks(results: Mapping[str, Any]) -> list[Block]:
    """The mean over corruptions per severity (``results["shift"][model]["mean"]``), a row per
    model and metric, severity 0 the clean test split; nothing without a ``shift`` block."""
    shift = results.get("shift")
    if not shift:
        return []
    severities = sorted(next(iter(shift.values()))[SHIFT_MEAN], key=int)
    headers = ["model: metric", "clean (0)", *(f"severity {s}" for s in severities)]
    rows = []
    for name in ordered_names(shift):
        for key, label in plots.SHIFT_PANELS:
            _, values = plots.shift_curve(results, name, key)
            rows.append((f"{name}: {label}", [(f"{value:.4g}", False) for value in values]))
    corruptions = ", ".join(c for c in next(iter(shift.values())) if c != SHIFT_MEAN)
    return [
        Heading(3, "Dataset shift: mean over corruptions per severity"),
        Note(f"Corruptions (CIFAR-10-C, Hendrycks & Dietterich 2019): {corruptions}."),
        Table(headers, rows),
    ]


# Several runs ---------------------------------------------------------------------------


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short run names: directory names, or whole paths where two names clash."""
    names = [Path(d).name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def compare_runs(run_dirs: Sequence[Path], out: Path) -> tuple[Path, Path]:
    """Write ``out/compare.html`` and ``out/compare.md``: one table per metric with a column
    per run, and accuracy (RMSE for regression) and NLL against cost with every run in one
    figure. The runs must share a task (classification or regression).

    Raises:
        DataError: a directory lacks results.json, or the runs mix tasks.
    """
    runs = [load_results(Path(d)) for d in run_dirs]
    labels = run_labels(run_dirs)
    tasks = {task_of(results) for results in runs}
    if len(tasks) > 1:
        listing = ", ".join(
            f"{label} ({task_of(r)})" for label, r in zip(labels, runs, strict=True)
        )
        raise DataError(
            f"cannot compare classification and regression runs ({listing}); "
            "compare runs of one task at a time"
        )
    regression = tasks == {REGRESSION}
    headers = [
        "model",
        *(
            f"{label} ({r['dataset']}, {r['members']} members)"
            for label, r in zip(labels, runs, strict=True)
        ),
    ]
    blocks: list[Block] = [
        Note(
            "One table per metric (test split), a column per run. `ensemble` is each run's "
            "reference; **bold**: the best student within each run."
            + ("" if regression else " " + DEE_FOOTNOTE)
            + (" Metrics in each run's original target units." if regression else "")
            + f" Report by ensemble-distill {package_version()}."
        )
    ]
    for column in compare_columns(runs[0]) if runs else []:
        blocks += [Heading(2, column.header), Table(headers, compare_rows(runs, column))]
    figure = plots.cost_figure(list(zip(labels, runs, strict=True)))
    blocks += [
        Heading(2, "Quality against cost"),
        Image(
            "cost",
            "Quality against cost",
            f"Test {'RMSE' if regression else 'accuracy'} and NLL against parameters and "
            "latency, every run (marker) and model (colour); dashed: each run's "
            "member–ensemble segment.",
            plots.figure_png(figure),
        ),
    ]
    title = "Comparison of runs: " + ", ".join(labels)
    return write_document(Path(out), "compare", title, blocks)
