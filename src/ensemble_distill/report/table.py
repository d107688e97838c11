"""The results table, in the style of the Hydra paper's main table."""

from __future__ import annotations

from typing import Any

# (key, header, format); arrows say which direction is better.
COLUMNS = [
    ("acc", "ACC ↑", "{:.4f}"),
    ("nll", "NLL ↓", "{:.4f}"),
    ("brier", "Brier ↓", "{:.4f}"),
    ("brier_tfp", "BS (TFP) ↓", "{:.4f}"),
    ("ece", "ECE ↓", "{:.4f}"),
    ("cnll", "cNLL ↓", "{:.4f}"),
    ("dee", "DEE ↑", "{:.2f}"),
    ("mi", "MU (mean MI, nats)", "{:.3g}"),
    ("ood_auroc", "OOD AUROC (entropy) ↑", "{:.4f}"),
    ("ood_auroc_mi", "OOD AUROC (MI) ↑", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("latency_ms_b1", "ms/example (batch 1)", "{:.3f}"),
    ("latency_ms_b256", "ms/example (batch 256)", "{:.4f}"),
]


def results_markdown(results: dict[str, Any]) -> str:
    """A markdown table of ``results["methods"]``: one row per model, ensemble first."""
    ood = results.get("ood")
    lines = [
        f"# {results['dataset']}: deep ensemble of {results['members']} members vs students",
        "",
        f"Test split; OOD set: {ood or 'none'}. BS (TFP) = Brier − 1, the form of the Hydra "
        "paper's table. cNLL: NLL after temperature scaling fitted on the validation split; "
        "DEE: the deep-ensemble size with the same cNLL. `member` is the ensemble's first "
        "member alone.",
        "",
        "| model | " + " | ".join(header for _, header, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for name, row in results["methods"].items():
        cells = [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)
