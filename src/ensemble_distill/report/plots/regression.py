"""Figures of a regression run (Gaussian outputs).

Predictive bands over the saved 1-D input grid, calibration curves of the central
intervals, and the epistemic and total variance on test vs OOD inputs; a single Gaussian
(no members) has no epistemic variance, which the band and variance figures note.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ensemble_distill import metrics
from ensemble_distill.evaluation import GaussianPredictive
from ensemble_distill.report.plots.style import (
    label_grid,
    log_scale,
    method_style,
    new_figure,
    panels,
    plain_number,
    styled,
)
from ensemble_distill.report.rundir import RunDir

# Half-width of the regression bands, in standard deviations (≈ a central 95 % interval).
BAND_SIGMAS = 2.0
# The OOD inputs' range in the band plots: hatched, so it reads apart from grey bands.
OOD_SPAN = {"facecolor": "none", "edgecolor": "#c9a0a0", "hatch": "///", "lw": 0}


def _is_single_gaussian(run: RunDir, name: str) -> bool:
    """True for a model with one Gaussian (no members): its epistemic variance is zero."""
    return run.gaussian(name, "test").means.shape[1] == 1


@styled
def regression_bands_figure(run: RunDir) -> Figure | None:
    """Predictive bands over the saved 1-D input grid, a panel per model (ensemble first):
    the mean, ±:data:`BAND_SIGMAS` σ of the epistemic variance (dark) and of the total
    variance (pale), the test points, the OOD inputs' range shaded, and the ensemble's total
    band dashed in every other panel. None unless the run saved a 1-D grid."""
    grid = run.inputs("grid") if run.is_regression else None
    if grid is None or grid.dim() != 2 or grid.shape[1] != 1:
        return None
    x = grid[:, 0].numpy()
    x_test, x_ood = run.inputs("test"), run.inputs("ood")
    y_test = run.targets("test").numpy()
    bands = {name: _band(run, name) for name in run.names}
    ncols = min(4, len(run.names))
    figure = new_figure(3.2 * ncols, 0.5 + 2.9 * math.ceil(len(run.names) / ncols))
    axes = panels(figure, len(run.names), ncols)
    # The test targets' range with a margin: far outside the data the bands blow up and
    # would flatten everything else.
    low, high = float(y_test.min()), float(y_test.max())
    limits = (low - 0.3 * (high - low), high + 0.3 * (high - low))
    for ax, name in zip(axes, run.names, strict=True):
        mean, epistemic_sd, total_sd = bands[name]
        color = method_style(name).color
        if x_ood is not None:
            ax.axvspan(float(x_ood.min()), float(x_ood.max()), zorder=0, **OOD_SPAN)
        if x_test is not None:
            ax.scatter(x_test[:, 0].numpy(), y_test, s=3, color="0.45", alpha=0.5, lw=0)
        k = BAND_SIGMAS
        ax.fill_between(x, mean - k * total_sd, mean + k * total_sd, color=color, alpha=0.2, lw=0)
        ax.fill_between(
            x, mean - k * epistemic_sd, mean + k * epistemic_sd, color=color, alpha=0.5, lw=0
        )
        ax.plot(x, mean, color=color, lw=1.4)
        if name != "ensemble":
            ref_mean, _, ref_sd = bands["ensemble"]
            for sign in (-1, 1):
                ax.plot(x, ref_mean + sign * k * ref_sd, color="black", ls="--", lw=0.8)
        row = run.results["methods"][name]
        rmse = row.get("rmse")
        title = f"{name}: RMSE {'n/a' if rmse is None else f'{rmse:.3g}'}"
        if _is_single_gaussian(run, name):
            title += "\nsingle Gaussian: no epistemic band"
        ax.set(title=title, ylim=limits, xlim=(float(x.min()), float(x.max())))
    label_grid(axes, ncols, "input x", "target y (original units)")
    handles = [
        Line2D([], [], color="0.3", lw=1.4, label="predictive mean (colour: model)"),
        Patch(color="0.3", alpha=0.5, label=f"±{BAND_SIGMAS:g} σ epistemic"),
        Patch(color="0.3", alpha=0.2, label=f"±{BAND_SIGMAS:g} σ total"),
        Line2D([], [], color="black", ls="--", lw=0.8, label="ensemble's ±2 σ total"),
        Line2D([], [], ls="", marker="o", ms=3, color="0.45", label="test points"),
    ]
    if x_ood is not None:
        label = "OOD gap: no training data" if run.ood == "gap" else f"OOD inputs ({run.ood})"
        handles.append(Patch(**OOD_SPAN, label=label))
    figure.legend(handles=handles, loc="outside lower center", ncols=min(6, len(handles)))
    return figure


def _band(run: RunDir, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, epistemic sd and total sd of ``name`` over the grid (original units)."""
    pred = run.gaussian(name, "grid")
    mean, aleatoric, epistemic = metrics.mixture_moments(pred.means, pred.variances)
    return mean.numpy(), epistemic.sqrt().numpy(), (aleatoric + epistemic).sqrt().numpy()


@styled
def regression_calibration_figure(run: RunDir) -> Figure | None:
    """Observed against nominal coverage of the central intervals of each model's
    moment-matched predictive (test split), and their difference; the diagonal (left) and
    zero (right) are perfect calibration. None for a classification run."""
    if not run.is_regression:
        return None
    targets = run.targets("test")
    figure = new_figure(9.0, 3.8)
    left, right = figure.subplots(1, 2)
    for ax, reference in ((left, [0, 1]), (right, [0, 0])):
        ax.plot([0, 1], reference, ls="--", color="0.5", lw=1, label="perfect calibration")
    for name in run.names:
        pred = run.gaussian(name, "test")
        mean, aleatoric, epistemic = metrics.mixture_moments(pred.means, pred.variances)
        levels, observed = metrics.calibration_curve(mean, aleatoric + epistemic, targets)
        nominal, observed = levels.numpy(), observed.numpy()
        style = method_style(name)
        kwargs = {"color": style.color, "ls": style.linestyle, "marker": style.marker, "ms": 3.5}
        left.plot(nominal, observed, label=name, **kwargs)
        right.plot(nominal, observed - nominal, **kwargs)
    left.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="nominal coverage of the central interval",
        ylabel="observed coverage (test, fraction)",
        title="interval calibration",
    )
    right.set(
        xlim=(0, 1),
        xlabel="nominal coverage of the central interval",
        ylabel="observed − nominal (> 0: under-confident)",
        title="deviation from nominal",
    )
    left.legend(loc="upper left")
    return figure


@styled
def regression_uncertainty_figure(run: RunDir) -> Figure | None:
    """Per-example epistemic and total variance on the test split (filled box) and on the OOD
    set (outlined box) per model, log scale, boxes at the quartiles and whiskers at the 5th
    and 95th percentiles; each pair topped by its AUROC. A single Gaussian has no epistemic
    variance and gets a note instead of boxes. None without an OOD set."""
    if not run.is_regression or not run.ood:
        return None
    figure = new_figure(max(7.0, 2.2 * len(run.names)), 3.9)
    pair_axes = figure.subplots(1, 2)
    scores = (("epistemic", "ood_auroc"), ("total", "ood_auroc_total"))
    for ax, (kind, key) in zip(pair_axes, scores, strict=True):
        values = {}
        for name in run.names:
            if kind == "epistemic" and _is_single_gaussian(run, name):
                continue
            values[name] = tuple(
                _variance(run.gaussian(name, split), kind) for split in ("test", "ood")
            )
        positive = [v[v > 0] for pair in values.values() for v in pair]
        top = max((float(v.max()) for v in positive if v.size), default=1.0)
        floor = top * 1e-9  # exact zeros cannot sit on a log axis
        for index, name in enumerate(run.names):
            centre = 3 * index + 0.5
            if name not in values:
                ax.annotate(
                    "≡ 0\n(single\nGaussian;\nAUROC 0.5)",
                    (centre, 0.5),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=method_style(name).color,
                )
                continue
            _variance_boxes(ax, values[name], floor, 3 * index, method_style(name).color)
            auroc = run.results["methods"][name].get(key)
            ax.annotate(
                "AUROC n/a" if auroc is None else f"AUROC {auroc:.3f}",
                (centre, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        log_scale(ax, "y", plain_number)
        ax.set_xticks([3 * i + 0.5 for i in range(len(run.names))], run.names)
        ax.set_xlim(-1, 3 * len(run.names) - 1)
        ax.tick_params(axis="x", labelrotation=30 if len(run.names) > 4 else 0)
        ax.grid(axis="x", visible=False)
        formula = "Var_m(μ_m)" if kind == "epistemic" else "mean σ_m² + Var_m(μ_m)"
        ax.set(ylabel=f"{kind} variance (target units², log)")
        ax.set_title(f"{kind} variance {formula}: test vs OOD", pad=14)
    handles = [
        Patch(facecolor="0.6", edgecolor="0.3", label="test (in-distribution)"),
        Patch(facecolor="white", edgecolor="0.3", lw=1.5, label=f"OOD ({run.ood})"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=2)
    return figure


def _variance(pred: GaussianPredictive, kind: str) -> np.ndarray:
    """Per-example ``"epistemic"`` or ``"total"`` variance as a numpy array."""
    return (pred.epistemic if kind == "epistemic" else pred.total_variance).numpy()


def _variance_boxes(
    ax: Axes, pair: tuple[np.ndarray, np.ndarray], floor: float, start: float, color: str
) -> None:
    """A filled box (test) and an outlined box (OOD) of one model's variances."""
    boxes = ax.boxplot(
        [np.maximum(pair[0], floor), np.maximum(pair[1], floor)],
        positions=[start, start + 1],
        widths=0.8,
        whis=(5, 95),
        showfliers=False,
        patch_artist=True,
        medianprops={"color": color, "lw": 1.5},
        whiskerprops={"color": color},
        capprops={"color": color},
    )
    test_box, ood_box = boxes["boxes"]
    test_box.set(facecolor=to_rgba(color, 0.45), edgecolor=color)
    ood_box.set(facecolor="white", edgecolor=color, linewidth=1.5)
    boxes["medians"][0].set_color("black")
