"""Result tables in the style of the Hydra paper's main table, in markdown and as plain cells.

Every column says its unit and which direction is better (↑/↓); in each such column the best
*student* is marked (bold). The teacher ``ensemble`` is the reference row and ``member`` (its
first member alone) the baseline: neither competes for "best".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REFERENCE = "ensemble"
BASELINES = (REFERENCE, "member")


@dataclass(frozen=True)
class Column:
    """One table column: a results key, its header (unit, ↑/↓), format and better direction.

    ``better`` is +1 when higher is better, −1 when lower is better and 0 when neither
    (e.g. mean MI, which should match the ensemble's rather than be large or small).
    """

    key: str
    header: str
    fmt: str
    better: int = 0


ACC = Column("acc", "ACC (fraction) ↑", "{:.4f}", +1)
NLL = Column("nll", "NLL (nats) ↓", "{:.4f}", -1)
BRIER = Column("brier", "Brier ↓", "{:.4f}", -1)
BRIER_TFP = Column("brier_tfp", "BS (TFP) ↓", "{:.4f}", -1)
ECE = Column("ece", "ECE ↓", "{:.4f}", -1)
CNLL = Column("cnll", "cNLL (nats) ↓", "{:.4f}", -1)
CECE = Column("cece", "cECE ↓", "{:.4f}", -1)
CBRIER = Column("cbrier", "cBrier ↓", "{:.4f}", -1)
TEMPERATURE = Column("temperature", "T (fitted on val; 1 = unchanged)", "{:.3f}")
DEE = Column("dee", "DEE (members) ↑", "{:.2f}", +1)
MI = Column("mi", "MU (mean MI, nats)", "{:.3g}")
ENTROPY = Column("entropy", "mean entropy (nats)", "{:.3g}")
RHO_TEST = Column("mi_spearman_test", "MI Spearman ρ vs ensemble, test ↑", "{:.3f}", +1)
RHO_OOD = Column("mi_spearman_ood", "MI Spearman ρ vs ensemble, OOD ↑", "{:.3f}", +1)
AUROC = Column("ood_auroc", "OOD AUROC (entropy) ↑", "{:.4f}", +1)
AUPR = Column("ood_aupr", "OOD AUPR (entropy) ↑", "{:.4f}", +1)
AUROC_MI = Column("ood_auroc_mi", "OOD AUROC (MI) ↑", "{:.4f}", +1)
AUPR_MI = Column("ood_aupr_mi", "OOD AUPR (MI) ↑", "{:.4f}", +1)
PARAMS = Column("params", "params (count) ↓", "{:,}", -1)
LATENCY_B1 = Column("latency_ms_b1", "ms/example (batch 1) ↓", "{:.3f}", -1)
LATENCY_B256 = Column("latency_ms_b256", "ms/example (batch 256) ↓", "{:.4f}", -1)

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
    AUROC_MI,
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
        AUROC_MI,
        AUPR_MI,
    ],
    "Cost": [PARAMS, LATENCY_B1, LATENCY_B256],
}

# The metrics that compare_runs puts side by side, one table each.
COMPARE_COLUMNS = [ACC, NLL, ECE, CNLL, DEE, RHO_TEST, AUROC, PARAMS, LATENCY_B256]

Cell = tuple[str, bool]  # (text, marked best)


def ordered_names(methods: Mapping[str, Any]) -> list[str]:
    """The reference and baseline first, then the students in their saved order."""
    return [n for n in BASELINES if n in methods] + [n for n in methods if n not in BASELINES]


def best_students(methods: Mapping[str, Mapping[str, Any]], column: Column) -> set[str]:
    """The students with the best value in ``column`` as displayed (all of them on a tie).

    Empty when the column has no direction, no student has a value, or every student ties
    (e.g. all DEEs clamped at 1): marking them all would single nobody out.
    """
    if not column.better:
        return set()
    # Compared as shown: two cells that read the same are both best or neither.
    shown = {
        name: float(format_value(row[column.key], column).replace(",", ""))
        for name, row in methods.items()
        if name not in BASELINES and row.get(column.key) is not None
    }
    best = max((column.better * value for value in shown.values()), default=None)
    winners = {name for name, value in shown.items() if column.better * value == best}
    return winners if len(winners) < len(shown) or len(shown) == 1 else set()


def format_value(value: Any, column: Column) -> str:
    """The cell text; ``n/a`` for a missing or undefined value."""
    return "n/a" if value is None else column.fmt.format(value)


def table_rows(
    methods: Mapping[str, Mapping[str, Any]], columns: Sequence[Column]
) -> list[tuple[str, list[Cell]]]:
    """One ``(model, cells)`` row per model, reference first, best students marked."""
    best = {column.key: best_students(methods, column) for column in columns}
    return [
        (
            name,
            [(format_value(methods[name].get(c.key), c), name in best[c.key]) for c in columns],
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
                (format_value(results["methods"].get(name, {}).get(column.key), column), name in b)
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
    """A markdown table of ``results["methods"]``: one row per model, ensemble first."""
    ood = results.get("ood")
    lines = [
        f"# {results['dataset']}: deep ensemble of {results['members']} members vs students",
        "",
        f"Test split; OOD set: {ood or 'none'}. BS (TFP) = Brier − 1, the form of the Hydra "
        "paper's table. cNLL: NLL after temperature scaling fitted on the validation split; "
        "DEE: the deep-ensemble size with the same cNLL. `ensemble` (first row) is the "
        "reference and `member` its first member alone; **bold**: the best student per column.",
        "",
        markdown_table(results["methods"], COLUMNS),
    ]
    return "\n".join(lines)
