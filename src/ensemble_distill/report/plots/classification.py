"""Figures of a classification run's predictions on the test split and the OOD set.

Reliability diagrams, each student's per-example MI against the ensemble's, predictive
entropy on test vs OOD inputs, and risk–coverage curves (selective prediction), all
computed from the probabilities the run saved (:class:`.rundir.RunDir`).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from ensemble_distill import metrics
from ensemble_distill.report.plots.style import (
    label_grid,
    method_style,
    new_figure,
    panels,
    styled,
)
from ensemble_distill.report.rundir import RunDir

# MI spans many orders of magnitude and is exactly 0 for single networks: log axes need a floor.
MI_FLOOR = 1e-6
# Reliability bins with fewer test examples than this are drawn pale.
FEW_EXAMPLES = 10
# The risk–coverage axis is scaled to the risks from this coverage on: the first few answered
# examples make the risk jump between 0 and 1, which would flatten an accurate model's curve.
RISK_SCALE_FROM = 0.05


@styled
def reliability_figure(run: RunDir, num_bins: int = 15) -> Figure:
    """Reliability diagrams (test split): the ensemble, then every other model with the
    ensemble's per-bin accuracy outlined over it; the test ECE in each title. Bins holding
    fewer than :data:`FEW_EXAMPLES` examples are pale: their accuracy is mostly noise."""
    labels = run.labels("test")
    bins = {
        name: metrics.reliability_bins(run.predictive(name, "test").probs, labels, num_bins)
        for name in run.names
    }
    figure = new_figure(3.0 * min(4, len(run.names)), 0.4 + 2.9 * math.ceil(len(run.names) / 4))
    axes = panels(figure, len(run.names), 4)
    for ax, name in zip(axes, run.names, strict=True):
        _reliability_panel(ax, bins[name], method_style(name).color)
        if name != "ensemble":
            # baseline=None: no drop to zero at the ends, empty (NaN) bins leave gaps.
            ax.stairs(
                bins["ensemble"].accuracy.numpy(),
                bins["ensemble"].edges.numpy(),
                baseline=None,
                color="black",
                lw=1.3,
            )
        ece = run.results["methods"][name].get("ece")
        ax.set(title=f"{name}: ECE {'n/a' if ece is None else f'{ece:.4f}'}")
    label_grid(axes, 4, "confidence max p̄ (binned)", "accuracy in bin")
    handles = [
        Patch(color="0.45", label="accuracy per bin (colour: model)"),
        Patch(color="0.45", alpha=0.3, label=f"pale: bin of < {FEW_EXAMPLES} examples"),
        Line2D([], [], color="black", lw=1.3, label="ensemble's accuracy per bin"),
        Line2D([], [], color="0.5", ls=":", label="perfect calibration"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4)
    return figure


def _reliability_panel(ax: Axes, bins: metrics.ReliabilityBins, color: str) -> None:
    """Accuracy bars per confidence bin, pale where the bin is nearly empty."""
    edges = bins.edges.numpy()
    alphas = np.where(bins.counts.numpy() >= FEW_EXAMPLES, 0.8, 0.3)
    ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
    ax.bar(
        edges[:-1],
        bins.accuracy.numpy(),
        width=np.diff(edges),
        align="edge",
        color=[to_rgba(color, a) for a in alphas],
        edgecolor="white",
        linewidth=0.5,
    )
    ax.set(xlim=(0, 1), ylim=(0, 1.02))


@styled
def mi_agreement_figure(run: RunDir) -> Figure | None:
    """Each student's per-example MI against the ensemble's (log–log, floored at
    :data:`MI_FLOOR`, the same limits in every panel), on the test split and the OOD set;
    Spearman ρ in each title."""
    if not run.students:
        return None
    splits = ["test", *(["ood"] if run.ood else [])]
    split_names = {"test": "test (in-distribution)", "ood": f"OOD ({run.ood})"}
    mi = {
        (name, split): np.maximum(run.predictive(name, split).mi.numpy(), MI_FLOOR)
        for name in ["ensemble", *run.students]
        for split in splits
    }
    limits = (MI_FLOOR / 2, 2 * max(float(values.max()) for values in mi.values()))
    figure = new_figure(3.1 * len(run.students), 0.3 + 3.0 * len(splits))
    grid = figure.subplots(len(splits), len(run.students), squeeze=False)
    for row, split in enumerate(splits):
        for col, name in enumerate(run.students):
            ax = grid[row, col]
            _mi_panel(ax, mi["ensemble", split], mi[name, split], name, limits)
            rho = run.results["methods"][name].get(f"mi_spearman_{split}")
            rho_text = "n/a — constant MI" if rho is None else f"Spearman ρ = {rho:.3f}"
            ax.set_title(f"{name}, {split_names[split]}\n{rho_text}")
    figure.suptitle(
        f"Per-example MI, student vs ensemble (floored at {MI_FLOOR:g} nats; "
        "shade: number of examples, log; dotted: equal MI)"
    )
    return figure


def _mi_panel(
    ax: Axes, reference: np.ndarray, student: np.ndarray, name: str, limits: tuple[float, float]
) -> None:
    """A log–log hexbin of student MI against ensemble MI with the y = x line."""
    cmap = LinearSegmentedColormap.from_list(name, ["#e0e0e0", method_style(name).color])
    extent = (*np.log10(limits), *np.log10(limits))  # hexbin's extent is in log10 units
    ax.hexbin(
        reference,
        student,
        xscale="log",
        yscale="log",
        bins="log",
        gridsize=25,
        mincnt=1,
        cmap=cmap,
        extent=extent,
        linewidths=0.2,
    )
    ax.plot(limits, limits, ls=":", color="0.4", lw=1)
    ax.set(xlim=limits, ylim=limits, xlabel="ensemble MI (nats)", ylabel=f"{name} MI (nats)")
    # No minor ticks: unlabelled, 8 a decade over at least 5 decades, they only clutter, and
    # laying them out took a third of the whole report's time.
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


@styled
def ood_histogram_figure(run: RunDir, num_bins: int = 30) -> Figure | None:
    """Predictive entropy on the test split (filled) and the OOD set (outline) per model,
    with the entropy-based OOD AUROC in each legend; None without an OOD set."""
    if not run.ood:
        return None
    figure = new_figure(3.0 * min(4, len(run.names)), 2.8 * math.ceil(len(run.names) / 4))
    axes = panels(figure, len(run.names), 4)
    for ax, name in zip(axes, run.names, strict=True):
        inside = run.predictive(name, "test")
        edges = np.linspace(0.0, math.log(inside.probs.shape[-1]), num_bins + 1)
        color = method_style(name).color
        ax.hist(
            inside.entropy.numpy(), edges, density=True, color=color, alpha=0.45, label="in: test"
        )
        ax.hist(
            run.predictive(name, "ood").entropy.numpy(),
            edges,
            density=True,
            histtype="step",
            color=color,
            lw=1.8,
            label=f"out: {run.ood}",
        )
        auroc = run.results["methods"][name].get("ood_auroc")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.legend(
            title="AUROC n/a" if auroc is None else f"AUROC {auroc:.3f}",
            loc="upper center",
            ncols=2,
            fontsize=7,
            title_fontsize=8,
        )
    # One y range for all panels, with headroom on the log axis so the legends sit above
    # the bars instead of on them.
    low = min(ax.get_ylim()[0] for ax in axes)
    high = max(ax.get_ylim()[1] for ax in axes)
    for ax in axes:
        ax.set_ylim(low, high * (high / low) ** 0.45)
        ax.yaxis.set_minor_locator(NullLocator())  # several decades: see _mi_panel
    label_grid(axes, 4, "predictive entropy H[p̄] (nats)", "density (per nat, log)")
    return figure


@styled
def risk_coverage_figure(run: RunDir) -> Figure:
    """Risk–coverage curves on the test split (selective prediction, Geifman & El-Yaniv 2017):
    the error rate among the k most confident examples (confidence max p̄) against the
    fraction answered k/N, for the ensemble and each student, each one's AURC (the mean of
    its curve) in the legend. The risk axis is scaled to coverages from
    :data:`RISK_SCALE_FROM` on; the first few answered examples may leave it at the top."""
    labels = run.labels("test")
    figure = new_figure(7.0, 3.8)
    ax = figure.subplots()
    scaled = 0.0
    for name in ["ensemble", *run.students]:
        coverage, risk = metrics.risk_coverage(run.predictive(name, "test").probs, labels)
        style = method_style(name)
        ax.plot(
            coverage.numpy(),
            risk.numpy(),
            color=style.color,
            ls=style.linestyle,
            lw=1.4,
            label=f"{name} (AURC {float(risk.mean()):.3g})",
        )
        scaled = max(scaled, float(risk[coverage >= RISK_SCALE_FROM].max()))
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.1 * scaled if scaled > 0 else 1.0),
        xlabel="coverage: fraction of test examples answered, most confident first",
        ylabel="risk: error rate among them ↓",
        title="risk–coverage on the test split (confidence max p̄)",
    )
    # Outside the axes: the curves start high on the left, where a legend inside would sit.
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
