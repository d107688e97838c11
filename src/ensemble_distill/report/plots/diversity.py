"""Figures of members' diversity: their mean pairwise KL per confidence bin.

The teachers' on clean and perturbed training inputs (diversity.json), and each student's
members' on the test split next to the teachers' (results.json's ``test_diversity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ensemble_distill.report.plots.style import method_style, new_figure, styled

# Members' pairwise KL (nats) below this is drawn on it: a collapsed student's can be 0.
DIVERSITY_FLOOR = 1e-6


@styled
def diversity_figure(diversity: Mapping[str, Any]) -> Figure:
    """The teachers' mean pairwise KL per confidence bin: clean train and test inputs, and
    each perturbation of the training inputs at each step size η (one panel each)."""
    perturbed = diversity["perturbed"]
    panels = list(perturbed) or [None]  # None: a run that measured clean inputs only
    figure = new_figure(3.4 * len(panels), 3.4)
    etas = sorted({eta for by_eta in perturbed.values() for eta in by_eta}, key=float)
    shades = mpl.colormaps["viridis"](np.linspace(0.15, 0.85, max(1, len(etas))))
    eta_colors = {eta: to_hex(shade) for eta, shade in zip(etas, shades, strict=False)}
    grid = figure.subplots(1, len(panels), sharey=True, squeeze=False)
    for ax, name in zip(grid[0], panels, strict=True):
        _diversity_line(ax, diversity["clean_train"], "0.55", "-", "o")
        _diversity_line(ax, diversity["clean_test"], "black", "--", "s")
        for eta, bins in perturbed.get(name, {}).items():
            _diversity_line(ax, bins, eta_colors[eta], "-", "^")
        ax.set_yscale("log")
        ax.set(
            title=f"perturbation: {name}" if name else "clean inputs",
            xlabel="ensemble confidence max p̄ (bin centre)",
            ylabel="mean pairwise KL (nats, log)",
        )
        ax.label_outer()
    handles = [
        Line2D([], [], color="0.55", marker="o", label="clean train"),
        Line2D([], [], color="black", ls="--", marker="s", label="clean test"),
        *(
            Line2D(
                [],
                [],
                color=eta_colors[eta],
                marker="^",
                label=f"perturbed train, η = {float(eta):g} (≈ {round(float(eta) * 255, 1):g}/255)",
            )
            for eta in etas
        ),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    return figure


@styled
def student_diversity_figure(diversity: Mapping[str, Any] | None) -> Figure | None:
    """Each student's members' mean pairwise KL on the test split per bin of its own
    confidence, next to the teachers' (black, dashed): Nam et al. 2021, Fig. 3b.

    ``diversity`` is results.json's ``test_diversity`` (model → bins); None for a run without
    a student of several members, or one evaluated before it was measured. A collapsed
    student's KL can be exactly 0, which a log axis cannot show: values below
    :data:`DIVERSITY_FLOOR` sit on the floor (dotted), so that the collapse stays visible.
    """
    students = [name for name in diversity or {} if name != "ensemble"]
    if not students:
        return None
    figure = new_figure(5.0, 3.6)
    ax = figure.subplots()
    handles = []
    for name in students:
        style = method_style(name)
        _diversity_line(ax, diversity[name], style.color, style.linestyle, style.marker, True)
        handles.append(
            Line2D([], [], color=style.color, ls=style.linestyle, marker=style.marker, label=name)
        )
    if "ensemble" in diversity:
        _diversity_line(ax, diversity["ensemble"], "black", "--", "s", True)
        handles.append(Line2D([], [], color="black", ls="--", marker="s", label="ensemble"))
    values = [v for bins in diversity.values() for v in bins["diversity"] if v is not None]
    if min(values, default=DIVERSITY_FLOOR) < DIVERSITY_FLOOR:
        ax.axhline(DIVERSITY_FLOOR, color="0.5", ls=":", lw=1)
        label = f"floor: KL < {DIVERSITY_FLOOR:g} nats (or 0)"
        handles.append(Line2D([], [], color="0.5", ls=":", label=label))
    ax.set_yscale("log")
    ax.set(
        xlabel="each model's own confidence max p̄ (bin centre)",
        ylabel="mean pairwise KL (nats, log)",
        title="members' diversity on the test split",
    )
    figure.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)))
    return figure


def _diversity_line(
    ax: Axes, bins: Mapping[str, Any], color: str, ls: str, marker: str, floored: bool = False
) -> None:
    """One diversity-per-bin curve; empty bins (None) skipped, and values below
    :data:`DIVERSITY_FLOOR` drawn on it when ``floored``, else zeros skipped (off a log axis)."""
    edges = np.asarray(bins["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    floor = DIVERSITY_FLOOR if floored else 0.0
    values = np.array([np.nan if v is None else max(v, floor) for v in bins["diversity"]])
    values[values <= 0] = np.nan  # unfloored zeros: off a log axis
    ax.plot(centres, values, color=color, ls=ls, marker=marker, ms=3.5, lw=1.3)
