"""Result tables in the style of the Hydra paper's main table, in markdown and as plain cells.

Every column says its unit and which direction is better (↑/↓, or → a nominal value); in each
such column the best *student* is marked (bold). The teacher ``ensemble`` is the reference row
and ``member`` (its first member alone) the baseline: neither competes for "best".

Classification and regression runs have their own columns; ``results["task"]`` says which
(runs written before regression existed have no such key and are classification).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ensemble_distill.metrics.calibration import DEE_CAPPED, DEE_EXTRAPOLATED

REFERENCE = "ensemble"
BASELINES = (REFERENCE, "member")
CLASSIFICATION, REGRESSION = "classification", "regression"


@dataclass(frozen=True)
class Column:
    """One table column: a results key, its header (unit, ↑/↓), format and better direction.

    ``better`` is +1 when higher is better, −1 when lower is better and 0 when neither
    (e.g. mean MI, which should match the ensemble's rather than be large or small).
    ``nominal``, when set, is the ideal value instead (e.g. 0.9 for the coverage of a 90 %
    interval): the value closest to it is best, whatever ``better`` says.
    ``note_key``, when set, names a results key whose value (one of :data:`NOTE_MARKS`) marks
    the cell, e.g. a DEE extrapolated below one member.
    """

    key: str
    header: str
    fmt: str
    better: int = 0
    nominal: float | None = None
    note_key: str | None = None


# How a flagged cell reads (``{}``: the formatted value), and the footnote that explains it.
NOTE_MARKS = {DEE_EXTRAPOLATED: "{}†", DEE_CAPPED: "≥ {}"}
DEE_FOOTNOTE = (
    "DEE†: worse than one member's cNLL, so below 1 by the ensemble-size law "
    "cNLL(k) = a + b/k through DE-1 and DE-2 (DEE = b / (cNLL − a)); ≥ M: better than the "
    "full ensemble, M is a lower bound."
)

# What the FPR95 columns mean (results.md and the report say it the same way).
FPR95_NOTE = (
    "FPR@95 % TPR: the fraction of test inputs flagged as OOD at the uncertainty threshold that "
    "flags 95 % of the OOD set."
)


ACC = Column("acc", "ACC (fraction) ↑", "{:.4f}", +1)
NLL = Column("nll", "NLL (nats) ↓", "{:.4f}", -1)
BRIER = Column("brier", "Brier ↓", "{:.4f}", -1)
BRIER_TFP = Column("brier_tfp", "BS (TFP) ↓", "{:.4f}", -1)
ECE = Column("ece", "ECE ↓", "{:.4f}", -1)
CNLL = Column("cnll", "cNLL (nats) ↓", "{:.4f}", -1)
CECE = Column("cece", "cECE ↓", "{:.4f}", -1)
CBRIER = Column("cbrier", "cBrier ↓", "{:.4f}", -1)
TEMPERATURE = Column("temperature", "T (fitted on val; 1 = unchanged)", "{:.3f}")
DEE = Column("dee", "DEE (members) ↑", "{:.2f}", +1, note_key="dee_note")
MI = Column("mi", "MU (mean MI, nats)", "{:.3g}")
ENTROPY = Column("entropy", "mean entropy (nats)", "{:.3g}")
RHO_TEST = Column("mi_spearman_test", "MI Spearman ρ vs ensemble, test ↑", "{:.3f}", +1)
RHO_OOD = Column("mi_spearman_ood", "MI Spearman ρ vs ensemble, OOD ↑", "{:.3f}", +1)
AUROC = Column("ood_auroc", "OOD AUROC (entropy) ↑", "{:.4f}", +1)
AUPR = Column("ood_aupr", "OOD AUPR (entropy) ↑", "{:.4f}", +1)
AUROC_MI = Column("ood_auroc_mi", "OOD AUROC (MI) ↑", "{:.4f}", +1)
AUPR_MI = Column("ood_aupr_mi", "OOD AUPR (MI) ↑", "{:.4f}", +1)
FPR95 = Column("ood_fpr95", "OOD FPR@95 % TPR (entropy) ↓", "{:.4f}", -1)
FPR95_MI = Column("ood_fpr95_mi", "OOD FPR@95 % TPR (MI) ↓", "{:.4f}", -1)
# Three significant digits: an accurate model's AURC is ~1e-3, where four decimals read 0.0012.
AURC = Column("aurc", "AURC ↓", "{:.3g}", -1)
EAURC = Column("eaurc", "E-AURC ↓", "{:.3g}", -1)
PARAMS = Column("params", "params (count) ↓", "{:,}", -1)
LATENCY_B1 = Column("latency_ms_b1", "ms/example (batch 1) ↓", "{:.3f}", -1)
LATENCY_B256 = Column("latency_ms_b256", "ms/example (batch 256) ↓", "{:.4f}", -1)

# Regression: metrics in the targets' original units (variances in squared units).
RMSE = Column("rmse", "RMSE (target units) ↓", "{:.4g}", -1)
EPISTEMIC = Column("epistemic", "epistemic var (mean, units²)", "{:.4g}")
ALEATORIC = Column("aleatoric", "aleatoric var (mean, units²)", "{:.4g}")
COVERAGE_50 = Column("coverage_50", "coverage 50 % (fraction, → 0.50)", "{:.3f}", nominal=0.5)
COVERAGE_90 = Column("coverage_90", "coverage 90 % (fraction, → 0.90)", "{:.3f}", nominal=0.9)
COVERAGE_95 = Column("coverage_95", "coverage 95 % (fraction, → 0.95)", "{:.3f}", nominal=0.95)
AUROC_EPISTEMIC = Column("ood_auroc", "OOD AUROC (epistemic var) ↑", "{:.4f}", +1)
AUROC_TOTAL = Column("ood_auroc_total", "OOD AUROC (total var) ↑", "{:.4f}", +1)
EPISTEMIC_OOD = Column("epistemic_ood", "epistemic var on OOD (mean, units²)", "{:.4g}")
RHO_EPISTEMIC = Column(
    "epistemic_spearman_test", "epistemic Spearman ρ vs ensemble, test ↑", "{:.3f}", +1
)

# The single table of results.md.
COLUMNS = [
    ACC,
    NLL,
    BRIER,
    BRIER_TFP,
    ECE,
    CNLL,
    DEE,
    MI,
    AUROC,
    FPR95,
    AUROC_MI,
    FPR95_MI,
    PARAMS,
    LATENCY_B1,
    LATENCY_B256,
]

# The report's tables: every metric of results.json, grouped so that no table is too wide.
REPORT_TABLES: dict[str, list[Column]] = {
    "Accuracy and calibration (test split)": [
        ACC,
        NLL,
        BRIER,
        BRIER_TFP,
        ECE,
        CNLL,
        CECE,
        CBRIER,
        TEMPERATURE,
        DEE,
    ],
    "Uncertainty and OOD detection": [
        MI,
        ENTROPY,
        RHO_TEST,
        RHO_OOD,
        AUROC,
        AUPR,
        FPR95,
        AUROC_MI,
        AUPR_MI,
        FPR95_MI,
    ],
    "Selective prediction (test split)": [AURC, EAURC],
    "Cost": [PARAMS, LATENCY_B1, LATENCY_B256],
}

# The metrics that compare_runs puts side by side, one table each.
COMPARE_COLUMNS = [ACC, NLL, ECE, CNLL, DEE, RHO_TEST, AUROC, FPR95, PARAMS, LATENCY_B256]

REGRESSION_COLUMNS = [
    RMSE,
    NLL,
    COVERAGE_50,
    COVERAGE_90,
    COVERAGE_95,
    EPISTEMIC,
    AUROC_EPISTEMIC,
    AUROC_TOTAL,
    RHO_EPISTEMIC,
    PARAMS,
    LATENCY_B1,
    LATENCY_B256,
]
REGRESSION_REPORT_TABLES: dict[str, list[Column]] = {
    "Accuracy and calibration (test split)": [
        RMSE,
        NLL,
        COVERAGE_50,
        COVERAGE_90,
        COVERAGE_95,
    ],
    "Uncertainty and OOD detection": [
        EPISTEMIC,
        ALEATORIC,
        RHO_EPISTEMIC,
        AUROC_EPISTEMIC,
        AUROC_TOTAL,
        EPISTEMIC_OOD,
    ],
    "Cost": [PARAMS, LATENCY_B1, LATENCY_B256],
}
REGRESSION_COMPARE_COLUMNS = [
    RMSE,
    NLL,
    COVERAGE_90,
    RHO_EPISTEMIC,
    AUROC_EPISTEMIC,
    AUROC_TOTAL,
    PARAMS,
    LATENCY_B256,
]

Cell = tuple[str, bool]  # (text, marked best)


def task_of(results: Mapping[str, Any]) -> str:
    """``"classification"`` or ``"regression"``; runs without a ``task`` key are classification."""
    return results.get("task") or CLASSIFICATION


def summary_columns(results: Mapping[str, Any]) -> list[Column]:
    """The columns of results.md for this run's task."""
    return REGRESSION_COLUMNS if task_of(results) == REGRESSION else COLUMNS


def report_tables(results: Mapping[str, Any]) -> dict[str, list[Column]]:
    """The report's tables (title → columns) for this run's task."""
    return REGRESSION_REPORT_TABLES if task_of(results) == REGRESSION else REPORT_TABLES


def compare_columns(results: Mapping[str, Any]) -> list[Column]:
    """The metrics that compare_runs shows for runs of this task."""
    return REGRESSION_COMPARE_COLUMNS if task_of(results) == REGRESSION else COMPARE_COLUMNS


def ordered_names(methods: Mapping[str, Any]) -> list[str]:
    """The reference and baseline first, then the students in their saved order."""
    return [n for n in BASELINES if n in methods] + [n for n in methods if n not in BASELINES]


def best_students(methods: Mapping[str, Mapping[str, Any]], column: Column) -> set[str]:
    """The students with the best value in ``column`` as displayed (all of them on a tie).

    Empty when the column has no direction, no student has a value, or every student ties
    (e.g. every DEE at M): marking them all would single nobody out. With a
    ``nominal`` value the student closest to it is best.
    """
    if not column.better and column.nominal is None:
        return set()
    # Compared as shown: two cells that read the same are both best or neither.
    shown = {
        name: float(format_value(row[column.key], column).replace(",", ""))
        for name, row in methods.items()
        if name not in BASELINES and row.get(column.key) is not None
    }
    if column.nominal is not None:
        nominal = column.nominal
        score = {name: -abs(value - nominal) for name, value in shown.items()}
    else:
        score = {name: column.better * value for name, value in shown.items()}
    best = max(score.values(), default=None)
    winners = {name for name, value in score.items() if value == best}
    return winners if len(winners) < len(shown) or len(shown) == 1 else set()


def format_value(value: Any, column: Column) -> str:
    """The cell text; ``n/a`` for a missing or undefined value."""
    return "n/a" if value is None else column.fmt.format(value)


def cell_text(row: Mapping[str, Any], column: Column) -> str:
    """The cell text of ``row`` in ``column``, marked per :data:`NOTE_MARKS` when its
    ``note_key`` says so (e.g. ``0.62†`` for a DEE extrapolated below one member)."""
    text = format_value(row.get(column.key), column)
    note = row.get(column.note_key) if column.note_key and text != "n/a" else None
    return NOTE_MARKS[note].format(text) if note in NOTE_MARKS else text


def table_rows(
    methods: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]
) -> list[tuple[str, list[Cell]]]:
    """One ``(model, cells)`` row per model, reference first, best students marked."""
    best = {column.key: best_students(methods, column) for column in columns}
    return [
        (
            name,
            [(cell_text(methods[name], c), name in best[c.key]) for c in columns],
        )
        for name in ordered_names(methods)
    ]


def compare_rows(runs: Sequence[Mapping[str, Any]], column: Column) -> list[tuple[str, list[Cell]]]:
    """One metric across runs: a row per model (union over runs), a cell per run; the best
    student is marked within each run."""
    union: dict[str, None] = {}
    for results in runs:
        union |= dict.fromkeys(results["methods"])
    best = [best_students(results["methods"], column) for results in runs]
    return [
        (
            name,
            [
                (cell_text(results["methods"].get(name, {}), column), name in b)
                for results, b in zip(runs, best, strict=True)
            ],
        )
        for name in ordered_names(union)
    ]


def markdown_grid(headers: Sequence[str], rows: Sequence[tuple[str, list[Cell]]]) -> str:
    """A markdown table: a left-aligned label column, right-aligned cells, best in bold."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
    ]
    for name, cells in rows:
        texts = [f"**{text}**" if best else text for text, best in cells]
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(methods: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """``methods`` (results["methods"]) as a markdown table over ``columns``."""
    headers = ["model", *(column.header for column in columns)]
    return markdown_grid(headers, table_rows(methods, columns))


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown table of ``results["methods"]``: one row per model, ensemble first; the
    columns of the run's task."""
    if task_of(results) == REGRESSION:
        return _regression_markdown(results)
    ood = results.get("ood")
    lines = [
        f"# {results['dataset']}: deep ensemble of {results['members']} members vs students",
        "",
        f"Test split; OOD set: {ood or 'none'}. BS (TFP) = Brier − 1, the form of the Hydra "
        "paper's table. cNLL: NLL after temperature scaling fitted on the validation split; "
        f"DEE: the deep-ensemble size with the same cNLL. {FPR95_NOTE} `ensemble` (first row) "
        "is the reference and `member` its first member alone; **bold**: the best student per "
        "column. " + DEE_FOOTNOTE,
        "",
        markdown_table(results["methods"], COLUMNS),
    ]
    return "\n".join(lines)


REGRESSION_NOTE = (
    "Metrics are in the targets' original units (variances in squared units); NLL is the "
    "Gaussian NLL of the moment-matched predictive N(μ̄, aleatoric + epistemic). Epistemic "
    "variance is the variance of the members' means; coverage is the fraction of test targets "
    "inside the central 50/90/95 % interval (→: closest to nominal is best). `kd` and `member` "
    "are single Gaussians with no epistemic term: their epistemic variance is 0 and their "
    "epistemic AUROC is 0.5 by construction, so compare them by AUROC (total var). ρ: Spearman "
    "correlation of per-example epistemic variance with the ensemble's (n/a for a single "
    "Gaussian)."
)


def _regression_markdown(results: dict[str, Any]) -> str:
    """results.md of a regression run."""
    ood = results.get("ood")
    lines = [
        f"# {results['dataset']}: Gaussian deep ensemble of {results['members']} members "
        "vs students",
        "",
        f"Test split; OOD set: {ood or 'none'}. {REGRESSION_NOTE} `ensemble` (first row) is "
        "the reference and `member` its first member alone; **bold**: the best student per "
        "column.",
        "",
        markdown_table(results["methods"], REGRESSION_COLUMNS),
    ]
    return "\n".join(lines)
