"""The training curves figure, read from each model's saved history.csv.

Validation NLL per epoch of every model on one axis and each model's training loss on its
own (the objectives differ); a teacher trained member by member gets a curve per member,
and Hydra's second phase is marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ensemble_distill.report.plots.style import (
    MethodStyle,
    epoch_axis,
    log_scale,
    method_style,
    new_figure,
    plain_number,
    styled,
)
from ensemble_distill.report.rundir import History

# Training curves longer than this get a marker every few epochs instead of every epoch.
MARKED_EPOCHS = 30


def _epoch_curves(rows: History) -> list[History]:
    """One curve per teacher member when they were trained one by one, else one curve
    (Hydra's two phases, whose epochs restart at 1, run on as one)."""
    if rows and rows[0].get("member") is not None:
        members = dict.fromkeys(row["member"] for row in rows)
        return [[row for row in rows if row["member"] == m] for m in members]
    return [rows]


@styled
def training_figure(histories: Mapping[str, History]) -> Figure | None:
    """Validation NLL per epoch of every model (top) and each model's own training loss
    (bottom; the objectives differ, so each gets its own axis). The NLL axis is logarithmic
    unless some NLL is ≤ 0 (a Gaussian NLL can be negative). Every curve has markers, so
    that a one-epoch run shows a point rather than an empty panel."""
    if not histories:
        return None
    names = list(histories)
    figure = new_figure(max(8.0, 2.6 * len(names)), 5.8)
    axes = figure.subplot_mosaic([["nll"] * len(names), names], height_ratios=(1.1, 1))
    for name in names:
        style = method_style("ensemble" if name == "teacher" else name)
        curves = _epoch_curves(histories[name])
        for index, rows in enumerate(curves):
            nll = [row.get("val_nll") for row in rows]
            label = (name if len(curves) == 1 else f"{name} (each member)") if index == 0 else None
            if None not in nll:
                _epoch_line(axes["nll"], nll, style, label)
            _epoch_line(axes[name], [row["loss"] for row in rows], style, None)
        _mark_phases(axes[name], histories[name])
        axes[name].set(title=name, xlabel="epoch")
        epoch_axis(axes[name], max(map(len, curves)))
    axes[names[0]].set_ylabel("training loss (own objective)")
    nll_ax = axes["nll"]
    values = [row.get("val_nll") for rows in histories.values() for row in rows]
    logarithmic = all(value is None or value > 0 for value in values)
    if logarithmic:
        log_scale(nll_ax, "y", plain_number)
    epoch_axis(nll_ax, max(len(rows) for h in histories.values() for rows in _epoch_curves(h)))
    nll_ax.set(
        xlabel="epoch",
        ylabel=f"validation NLL (nats{', log' if logarithmic else ''}) ↓",
        title="validation NLL per epoch",
    )
    nll_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _epoch_line(ax: Axes, values: Sequence[float], style: MethodStyle, label: str | None) -> None:
    """One value per epoch (1, 2, …) as a line with the model's markers; a marker every few
    epochs on a long curve, where one per epoch would merge into a thick line."""
    ax.plot(
        np.arange(1, len(values) + 1),
        values,
        color=style.color,
        ls=style.linestyle,
        lw=1.4,
        marker=style.marker,
        ms=3.5,
        markevery=math.ceil(len(values) / MARKED_EPOCHS),
        label=label,
    )


def _mark_phases(ax: Axes, rows: History) -> None:
    """A dotted line where Hydra's second phase (all heads) starts."""
    phases = [row.get("phase") for row in rows]
    if None not in phases and len(set(phases)) > 1:
        start = phases.index(phases[-1]) + 0.5
        ax.axvline(start, color="0.4", ls=":", lw=1)
        ax.annotate(
            "phase 2",
            (start, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
        )
