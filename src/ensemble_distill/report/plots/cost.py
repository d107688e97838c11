"""Figures of quality against cost, read from results.json alone.

Accuracy (RMSE) and NLL against parameters and latency for one run or several
(:func:`cost_figure`, classification and regression), and the deep-ensemble equivalent of
each student: the ensemble size whose calibrated NLL it matches (:func:`dee_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ensemble_distill import metrics
from ensemble_distill.report.plots.style import (
    count_label,
    log_scale,
    method_style,
    new_figure,
    plain_number,
    styled,
    time_unit,
)
from ensemble_distill.report.table import NOTE_MARKS, REGRESSION, task_of

# results.json's cost keys (parameters, then latencies in ms) and what their axes say.
COST_AXES = (
    ("params", "parameters"),
    ("latency_ms_b256", "latency per example at batch 256"),
)
QUALITY_AXES = (
    ("acc", "test accuracy (fraction) ↑"),
    ("nll", "test NLL (nats) ↓"),
)
REGRESSION_QUALITY_AXES = (
    ("rmse", "test RMSE (target units) ↓"),
    ("nll", "test NLL (nats) ↓"),
)
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


@styled
def cost_figure(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> Figure:
    """Accuracy (RMSE for regression runs) and NLL against parameters and latency (log x),
    for one run or several.

    ``runs``: ``(label, results)`` pairs. The dashed grey segment joins ``member`` (one
    network) and ``ensemble`` (all of them): a good student sits at the member's cost with
    the ensemble's quality. Colour is the model; with several runs the marker is the run.
    """
    regression = any(task_of(results) == REGRESSION for _, results in runs)
    figure = new_figure(9.5, 6.2)
    # Shared x per column: the upper panel's limits and ticks are the lower one's, whose
    # labels they use (label_outer), even where one quality is missing for some model.
    grid = figure.subplots(2, 2, sharex="col", squeeze=False)
    quality_axes = REGRESSION_QUALITY_AXES if regression else QUALITY_AXES
    for row, (quality, quality_label) in enumerate(quality_axes):
        for col, (cost, cost_label) in enumerate(COST_AXES):
            ax = grid[row, col]
            for index, (_, results) in enumerate(runs):
                marker = RUN_MARKERS[index % len(RUN_MARKERS)] if len(runs) > 1 else None
                _cost_points(ax, results["methods"], cost, quality, marker)
            costs = [r.get(cost) or 0 for _, results in runs for r in results["methods"].values()]
            _cost_axis(ax, cost, cost_label, max(costs))
            ax.set(ylabel=quality_label)
            ax.label_outer()
    figure.legend(handles=_cost_legend(runs), loc="outside right upper")
    return figure


def _cost_axis(ax: Axes, cost: str, label: str, largest: float) -> None:
    """The log x axis of one cost with short tick labels: parameter counts as 500 / 20k / 1M,
    latencies as numbers in the :func:`time_unit` of the ``largest``, named in the label."""
    if cost == "params":
        log_scale(ax, "x", count_label)
        ax.set_xlabel(f"{label} (count, log scale)")
        return
    unit, size = time_unit(largest)
    log_scale(ax, "x", lambda value: plain_number(value / size))
    ax.set_xlabel(f"{label} ({unit}, log scale)")


def _cost_points(
    ax: Axes,
    methods: Mapping[str, Mapping[str, Any]],
    cost: str,
    quality: str,
    marker: str | None,
) -> None:
    """One run's models as points, with the member–ensemble segment."""
    ends = [methods[n] for n in ("member", "ensemble") if n in methods]
    if len(ends) == 2 and all(r.get(cost) and r.get(quality) is not None for r in ends):
        ax.plot(
            [r[cost] for r in ends],
            [r[quality] for r in ends],
            ls="--",
            color="0.6",
            lw=1,
            zorder=1,
        )
    for index, (name, row) in enumerate(methods.items()):
        if row.get(cost) and row.get(quality) is not None:
            style = method_style(name)
            ax.scatter(
                row[cost],
                row[quality],
                color=style.color,
                marker=marker or style.marker,
                # Later models drawn smaller: students that share a member's parameter count
                # and accuracy stay visible as concentric markers instead of hiding it.
                s=(110 if marker is None else 80)
                if name == "ensemble"
                else max(30, 72 - 8 * index),
                edgecolors="white",
                linewidths=0.6,
                zorder=3,
            )


def _cost_legend(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Line2D]:
    """Handles for every model (colour) and, with several runs, every run (marker)."""
    names: dict[str, None] = {}
    for _, results in runs:
        names |= dict.fromkeys(results["methods"])
    several = len(runs) > 1
    handles = [
        Line2D(
            [],
            [],
            ls="",
            color=method_style(n).color,
            marker="o" if several else method_style(n).marker,
            label=n,
        )
        for n in names
    ]
    if several:
        handles += [
            Line2D(
                [],
                [],
                ls="",
                color="0.3",
                marker=RUN_MARKERS[i % len(RUN_MARKERS)],
                label=f"run: {label}",
            )
            for i, (label, _) in enumerate(runs)
        ]
    return handles


@styled
def dee_figure(results: Mapping[str, Any]) -> Figure | None:
    """Left: calibrated NLL of DE-1 … DE-M (results.json's monotone curve, the one DEE
    reads) with each student's cNLL (its DEE is where they meet; below one member, on the
    dashed a + b/k extension); right: DEE per student as bars, hatched where extrapolated
    below 1 or capped at M. None without the DE-k curve."""
    curve = results.get("ensemble_size_cnll")
    if not curve:
        return None
    methods = results["methods"]
    students = [n for n in methods if n not in ("ensemble", "member")]
    flagged = {
        n: methods[n].get("dee_note") in (metrics.DEE_EXTRAPOLATED, metrics.DEE_CAPPED)
        for n in students
    }
    figure = new_figure(10, 3.6)
    left, right = figure.subplots(1, 2, width_ratios=(1.2, 1))
    sizes = np.arange(1, len(curve) + 1)
    left.plot(sizes, curve, color="black", marker="o", label="DE-k (deep ensemble of k)")
    below = [
        methods[n]["dee"]
        for n in students
        if methods[n].get("dee") is not None and methods[n]["dee"] < 1
    ]
    if below and len(curve) > 1 and curve[1] < curve[0]:
        # The extrapolation DEE uses below one member: cNLL(k) = a + b/k through DE-1, DE-2.
        b, a = 2 * (curve[0] - curve[1]), 2 * curve[1] - curve[0]
        k = np.linspace(max(0.8 * min(below), 0.05), 1, 50)
        left.plot(k, a + b / k, color="black", ls="--", lw=1, label="a + b/k (k < 1)")
    for name in students:
        row, style = methods[name], method_style(name)
        if row.get("cnll") is None or row.get("dee") is None:
            continue
        dee = f"{row['dee']:.2f}"  # marked as in the tables: 0.62† below 1, ≥ M capped
        left.axhline(
            row["cnll"],
            color=style.color,
            ls=style.linestyle,
            lw=1.2,
            label=f"{name} (DEE {NOTE_MARKS.get(row.get('dee_note'), '{}').format(dee)})",
        )
        left.plot(row["dee"], row["cnll"], marker=style.marker, color=style.color, ms=7)
    left.set(
        xlabel="ensemble size k (members)",
        ylabel="calibrated test NLL (nats) ↓",
        title="cNLL of DE-k and of each student",
    )
    # Whole ensemble sizes, thinned for a large M (50 labels would run into each other).
    left.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True))
    left.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    values = [methods[n].get("dee") or 0.0 for n in students]
    bars = right.bar(students, values, color=[method_style(n).color for n in students])
    for bar, name in zip(bars, students, strict=True):
        if flagged[name]:  # extrapolated below 1 (0.62† in the legend) or capped at M (≥ M)
            bar.set_hatch("//")
    for level, text, style in (
        (len(curve), f"full ensemble ({len(curve)})", "--"),
        (1, "one member (1)", ":"),
    ):
        # Labelled on the line itself: a legend box would sit on the bars or the line.
        right.axhline(level, color="0.35", lw=1, ls=style)
        right.annotate(
            text,
            (0, level),
            xycoords=("axes fraction", "data"),
            xytext=(2, 2),
            textcoords="offset points",
            fontsize=7.5,
            color="0.25",
        )
    right.set(
        ylim=(0, len(curve) * 1.12),
        ylabel="DEE (members) ↑",
        title="deep-ensemble equivalent per student",
    )
    right.tick_params(axis="x", labelrotation=30 if len(students) > 3 else 0)
    return figure
