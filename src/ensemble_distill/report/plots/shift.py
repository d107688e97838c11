"""The dataset-shift figure, read from results.json's ``shift`` block.

Accuracy, NLL, ECE and mean MI of every model against corruption severity, severity 0
being the clean test split; :func:`shift_curve` is also what the report's shift table
reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from ensemble_distill.report.plots.style import label_grid, method_style, new_figure, panels, styled

# Dataset shift: (results.json key, axis label) of each panel of shift_figure.
SHIFT_PANELS = (
    ("acc", "accuracy ↑"),
    ("nll", "NLL (nats) ↓"),
    ("ece", "ECE ↓"),
    ("mi", "mean MI (nats)"),
)


def shift_curve(results: Mapping[str, Any], name: str, key: str) -> tuple[list[int], list[float]]:
    """Severities 0, s₁, … and model ``name``'s ``key`` there: 0 is the clean test split
    (``methods``), the others the mean over corruptions (``shift[name]["mean"]``)."""
    mean = results["shift"][name]["mean"]
    severities = sorted(mean, key=int)
    values = [results["methods"][name][key], *(mean[s][key] for s in severities)]
    return [0, *map(int, severities)], values


@styled
def shift_figure(results: Mapping[str, Any]) -> Figure | None:
    """Accuracy, NLL, ECE and mean MI against corruption severity (Ovadia et al. 2019, Fig. 2
    in spirit), a line per model, each point the mean over ``eval.corruptions``; severity 0 is
    the clean test split. None without results.json's ``shift`` block."""
    shift = results.get("shift")
    if not shift:
        return None
    figure = new_figure(10, 6.4)
    axes = panels(figure, len(SHIFT_PANELS), 2)
    for ax, (key, label) in zip(axes, SHIFT_PANELS, strict=True):
        for name in shift:
            severities, values = shift_curve(results, name, key)
            style = method_style(name)
            ax.plot(
                severities,
                values,
                color=style.color,
                ls=style.linestyle,
                marker=style.marker,
                label=name,
            )
        ax.set(title=label, xticks=severities)
    label_grid(axes, 2, "severity (0 = clean test split)", "mean over corruptions")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
