"""The results table a terminal holds: what ``ensemble-distill run`` and ``evaluate`` print
when they finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ensemble_distill.report import table


def print_summary(results: dict[str, Any], out: Path) -> None:
    """The few columns a terminal holds (:func:`summary_columns`), then where the full table
    and the report are: results.md has 16 columns, 300+ characters a row, which a terminal
    wraps into noise."""
    columns = summary_columns(table.task_of(results) == table.REGRESSION)
    methods = results["methods"]
    rows = [["model", *(header for _, header in columns)]]
    rows += [
        [name, *(table.cell_text(methods[name], column) for column, _ in columns)]
        for name in table.ordered_names(methods)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    ood = results.get("ood") or "none"
    print(
        f"# {results['dataset']}: deep ensemble of {results['members']} members vs students "
        f"(test split; OOD set: {ood})"
    )
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip())
    print(f"all metrics and footnotes: {out / 'results.md'}")
    print(f"report: {out / 'report.html'}")


def summary_columns(regression: bool) -> list[tuple[Any, str]]:
    """(column of results.md, short header) of the terminal summary."""
    if regression:
        chosen = [
            (table.RMSE, "RMSE ↓"),
            (table.NLL, "NLL ↓"),
            (table.COVERAGE_90, "cov90 →0.9"),
            (table.AUROC_EPISTEMIC, "OOD AUROC ↑"),
            (table.PARAMS, "params"),
        ]
    else:
        chosen = [
            (table.ACC, "ACC ↑"),
            (table.NLL, "NLL ↓"),
            (table.CNLL, "cNLL ↓"),
            (table.DEE, "DEE ↑"),
            (table.AUROC, "OOD AUROC ↑"),
            (table.PARAMS, "params"),
        ]
    return chosen
